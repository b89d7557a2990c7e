"""`AsyncSandbox` lifecycle through the control plane."""

import asyncio
import datetime

import pytest

from e2b import (
    AsyncSandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from conftest import DOMAIN, random_sandbox_id


async def list_all(**kwargs):
    paginator = AsyncSandbox.list(**kwargs)
    out = []
    while paginator.has_next:
        out.extend(await paginator.next_items())
    return out


async def test_create_info_and_run(async_sandbox_factory, test_id):
    sbx = await async_sandbox_factory(
        metadata={"sandbox_test_id": test_id, "flavour": "async"}, envs={"AENV": "1"}, timeout=90
    )
    info = await sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.metadata == {"sandbox_test_id": test_id, "flavour": "async"}
    assert info.state == SandboxState.RUNNING
    assert abs((info.end_at - info.started_at).total_seconds() - 90) < 10
    assert (await sbx.commands.run("echo $AENV")).stdout == "1\n"
    assert await sbx.is_running() is True


async def test_many_sandboxes_concurrently(async_sandbox_factory, test_id):
    sbxs = await asyncio.gather(*(async_sandbox_factory() for _ in range(5)))
    assert len({s.sandbox_id for s in sbxs}) == 5
    outs = await asyncio.gather(
        *(s.commands.run(f"echo {i}") for i, s in enumerate(sbxs))
    )
    assert [o.stdout for o in outs] == [f"{i}\n" for i in range(5)]
    listed = await list_all(query=SandboxQuery(metadata={"sandbox_test_id": test_id}))
    assert {s.sandbox_id for s in listed} == {s.sandbox_id for s in sbxs}


async def test_connect(async_sandbox):
    await async_sandbox.files.write("/home/user/ac.txt", "async-connected")
    other = await AsyncSandbox.connect(async_sandbox.sandbox_id)
    assert other.sandbox_id == async_sandbox.sandbox_id
    assert await other.files.read("/home/user/ac.txt") == "async-connected"


async def test_connect_unknown():
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.connect(random_sandbox_id())


async def test_list_state_filter(async_sandbox, test_id):
    running = await list_all(
        query=SandboxQuery(metadata={"sandbox_test_id": test_id}, state=[SandboxState.RUNNING])
    )
    assert [s.sandbox_id for s in running] == [async_sandbox.sandbox_id]
    paused = await list_all(
        query=SandboxQuery(metadata={"sandbox_test_id": test_id}, state=[SandboxState.PAUSED])
    )
    assert paused == []


async def test_set_timeout(async_sandbox):
    await async_sandbox.set_timeout(500)
    end = (await async_sandbox.get_info()).end_at
    assert abs((end - datetime.datetime.now(datetime.timezone.utc)).total_seconds() - 500) < 15


async def test_kill(async_sandbox):
    assert await async_sandbox.kill() is True
    assert await async_sandbox.is_running() is False
    assert await AsyncSandbox.kill(async_sandbox.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.get_info(async_sandbox.sandbox_id)


async def test_get_host_and_metrics(async_sandbox):
    assert async_sandbox.get_host(3000) == f"3000-{async_sandbox.sandbox_id}.{DOMAIN}"
    metrics = await async_sandbox.get_metrics()
    assert isinstance(metrics, list)
    for m in metrics:
        assert m.cpu_count >= 1 and m.mem_total > 0


async def test_pause_and_connect(async_sandbox):
    await async_sandbox.files.write("/home/user/kept.txt", "kept")
    assert await async_sandbox.pause() is True
    assert await AsyncSandbox.pause(async_sandbox.sandbox_id) is False
    resumed = await AsyncSandbox.connect(async_sandbox.sandbox_id)
    assert await resumed.files.read("/home/user/kept.txt") == "kept"
    assert await resumed.is_running() is True

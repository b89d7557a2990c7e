"""`AsyncSandbox.commands`: the async client over the same process.Process service."""

import asyncio
import time

import pytest

from e2b import (
    CommandExitException,
    NotFoundException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    TimeoutException,
)

from conftest import async_wait_until


async def test_run(async_sandbox):
    r = await async_sandbox.commands.run("echo hi; echo there >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("hi\n", "there\n", 0)


async def test_nonzero_exit_raises(async_sandbox):
    with pytest.raises(CommandExitException) as ei:
        await async_sandbox.commands.run("echo x >&2; exit 42")
    assert ei.value.exit_code == 42
    assert ei.value.stderr == "x\n"


async def test_envs_and_cwd_and_user(async_sandbox_factory):
    sbx = await async_sandbox_factory(envs={"SBX": "s"})
    r = await sbx.commands.run('echo "$SBX $CMD $(pwd) $(id -un)"', envs={"CMD": "c"}, cwd="/tmp")
    assert r.stdout == "s c /tmp user\n"
    r = await sbx.commands.run("id -u", user="root")
    assert r.stdout == "0\n"


async def test_async_callbacks_stream_output(async_sandbox):
    out, err = [], []

    async def on_stdout(s):
        out.append(s)

    r = await async_sandbox.commands.run(
        "for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.2; done",
        on_stdout=on_stdout,
        on_stderr=err.append,
    )
    assert "".join(out) == "o1\no2\no3\n" == r.stdout
    assert "".join(err) == "e1\ne2\ne3\n" == r.stderr
    assert len(out) >= 2


async def test_background_output_arrives_before_exit(async_sandbox):
    seen = []
    h = await async_sandbox.commands.run(
        "echo first; sleep 30", background=True, on_stdout=seen.append
    )
    assert await async_wait_until(lambda: "".join(seen) == "first\n", 5)
    # The handle exposes the output so far while the command still runs.
    assert h.stdout == "first\n"
    assert h.exit_code is None
    assert await h.kill() is True


async def test_stdin(async_sandbox):
    h = await async_sandbox.commands.run("cat", background=True, stdin=True)
    await h.send_stdin("async ")
    await async_sandbox.commands.send_stdin(h.pid, b"stdin\n")
    await h.close_stdin()
    r = await h.wait()
    assert r.stdout == "async stdin\n"


async def test_stream_input_is_delivered_while_the_stream_is_open(async_sandbox):
    seen = []
    h = await async_sandbox.commands.run(
        "cat", background=True, stdin=True, on_stdout=seen.append
    )
    async with async_sandbox.commands.stream_input(h.pid) as inp:
        await inp.send(b"one ")
        await inp.send("two\n")
        # envd forwards each frame as it arrives, not when the request body ends.
        assert await async_wait_until(lambda: "".join(seen) == "one two\n", 5)
        await inp.send(b"three\n")
    await async_sandbox.commands.close_stdin(h.pid)
    assert (await h.wait()).stdout == "one two\nthree\n"


async def test_connect_and_wait(async_sandbox):
    h = await async_sandbox.commands.run("sleep 2; echo bye", background=True)
    await h.disconnect()
    h2 = await async_sandbox.commands.connect(h.pid)
    r = await h2.wait()
    assert r.exit_code == 0
    assert "bye\n" in r.stdout


async def test_connect_unknown_pid(async_sandbox):
    with pytest.raises(NotFoundException):
        await async_sandbox.commands.connect(999_999)


async def test_kill_and_list(async_sandbox):
    h = await async_sandbox.commands.run("sleep 30", background=True)
    procs = await async_sandbox.commands.list()
    assert h.pid in [p.pid for p in procs]
    assert await async_sandbox.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        await h.wait()
    assert await async_sandbox.commands.kill(h.pid) is False
    assert h.pid not in [p.pid for p in await async_sandbox.commands.list()]


async def test_timeout(async_sandbox):
    t0 = time.monotonic()
    with pytest.raises(TimeoutException) as ei:
        await async_sandbox.commands.run("sleep 10", timeout=2)
    assert not isinstance(ei.value, (SandboxNotRunningException, SandboxUnreachableException))
    assert 1.5 < time.monotonic() - t0 < 8
    assert (await async_sandbox.commands.run("echo ok")).stdout == "ok\n"


async def test_concurrent_commands(async_sandbox):
    rs = await asyncio.gather(
        *(async_sandbox.commands.run(f"sleep 0.3; echo {i}") for i in range(8))
    )
    assert [r.stdout for r in rs] == [f"{i}\n" for i in range(8)]


async def test_large_output(async_sandbox):
    r = await async_sandbox.commands.run("seq 1 100000")
    assert r.stdout == "".join(f"{i}\n" for i in range(1, 100001))

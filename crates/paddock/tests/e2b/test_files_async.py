"""`AsyncSandbox.files`: the async client, including the streaming WatchDir RPC."""

import os

import pytest

from e2b import FileNotFoundException, FileType, FilesystemEventType

from conftest import async_wait_until


async def test_write_read_text_and_bytes(async_sandbox):
    info = await async_sandbox.files.write("/home/user/a.txt", "async text")
    assert info.path == "/home/user/a.txt"
    assert await async_sandbox.files.read("/home/user/a.txt") == "async text"
    data = os.urandom(100_000)
    await async_sandbox.files.write("/home/user/a.bin", data)
    assert bytes(await async_sandbox.files.read("/home/user/a.bin", format="bytes")) == data


async def test_read_stream(async_sandbox):
    data = os.urandom(2 * 1024 * 1024)
    await async_sandbox.files.write("/tmp/s.bin", data)
    stream = await async_sandbox.files.read("/tmp/s.bin", format="stream")
    got = bytearray()
    async with stream:
        async for chunk in stream:
            got.extend(chunk)
    assert bytes(got) == data


async def test_write_files_and_async_iterable(async_sandbox):
    async def chunks():
        for i in range(100):
            yield b"%03d," % i

    infos = await async_sandbox.files.write_files(
        [
            {"path": "/home/user/af/1.txt", "data": "one"},
            {"path": "af/2.txt", "data": b"two"},
        ]
    )
    assert [i.path for i in infos] == ["/home/user/af/1.txt", "/home/user/af/2.txt"]
    await async_sandbox.files.write("/home/user/af/3.txt", chunks())
    assert await async_sandbox.files.read("/home/user/af/3.txt") == "".join(
        "%03d," % i for i in range(100)
    )
    names = sorted(e.name for e in await async_sandbox.files.list("/home/user/af"))
    assert names == ["1.txt", "2.txt", "3.txt"]


async def test_gzip_and_metadata(async_sandbox):
    text = "zip " * 50_000
    info = await async_sandbox.files.write(
        "/home/user/z.txt", text, gzip=True, metadata={"Kind": "zipped"}
    )
    assert info.metadata == {"kind": "zipped"}
    assert await async_sandbox.files.read("/home/user/z.txt", gzip=True) == text
    i = await async_sandbox.files.get_info("/home/user/z.txt")
    assert (i.size, i.metadata, i.permissions) == (len(text), {"kind": "zipped"}, "-rw-r--r--")


async def test_dirs_exists_rename_remove(async_sandbox):
    assert await async_sandbox.files.make_dir("/home/user/ad") is True
    assert await async_sandbox.files.make_dir("/home/user/ad") is False
    await async_sandbox.files.write("/home/user/ad/x.txt", "x")
    moved = await async_sandbox.files.rename("/home/user/ad/x.txt", "/home/user/ad/y.txt")
    assert moved.path == "/home/user/ad/y.txt"
    assert await async_sandbox.files.exists("/home/user/ad/x.txt") is False
    assert await async_sandbox.files.exists("/home/user/ad/y.txt") is True
    await async_sandbox.files.remove("/home/user/ad")
    assert await async_sandbox.files.exists("/home/user/ad") is False


async def test_missing_file(async_sandbox):
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.read("/home/user/absent")
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.get_info("/home/user/absent")


async def test_watch_dir_on_event(async_sandbox):
    await async_sandbox.files.make_dir("/home/user/aw")
    events = []
    exits = []
    h = await async_sandbox.files.watch_dir(
        "/home/user/aw", on_event=events.append, on_exit=exits.append
    )
    await async_sandbox.files.write("/home/user/aw/n.txt", "1")
    await async_sandbox.files.remove("/home/user/aw/n.txt")
    want = {("n.txt", FilesystemEventType.CREATE), ("n.txt", FilesystemEventType.REMOVE)}
    assert await async_wait_until(lambda: want <= {(e.name, e.type) for e in events}, 5), events
    await h.stop()
    assert exits == [None]


async def test_watch_dir_recursive_with_entries(async_sandbox):
    await async_sandbox.files.make_dir("/home/user/awr/deep")
    events = []

    async def on_event(e):
        events.append(e)

    h = await async_sandbox.files.watch_dir(
        "/home/user/awr", on_event=on_event, recursive=True, include_entry=True
    )
    await async_sandbox.files.write("/home/user/awr/deep/f.txt", "deep")
    assert await async_wait_until(
        lambda: any(
            e.name == "deep/f.txt" and e.type == FilesystemEventType.WRITE for e in events
        ),
        5,
    ), events
    w = next(e for e in events if e.name == "deep/f.txt" and e.type == FilesystemEventType.WRITE)
    assert w.entry is not None
    assert (w.entry.path, w.entry.type) == ("/home/user/awr/deep/f.txt", FileType.FILE)
    await h.stop()


async def test_watch_missing_dir(async_sandbox):
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.watch_dir("/home/user/nowhere", on_event=lambda e: None)


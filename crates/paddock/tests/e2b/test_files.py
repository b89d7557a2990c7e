"""`Sandbox.files` (filesystem.Filesystem over Connect plus GET/POST /files): reads,
writes, uploads in every encoding, metadata, listing, stat, directories, rename, remove,
watches, path resolution and errors."""

import datetime
import gzip
import hashlib
import io
import os
import time

import pytest

from e2b import (
    FileNotFoundException,
    FileType,
    FilesystemEventType,
    InvalidArgumentException,
)

from conftest import wait_until


# --- write and read ---


def test_write_then_read_text(sandbox):
    info = sandbox.files.write("/home/user/hello.txt", "hello world")
    assert info.path == "/home/user/hello.txt"
    assert info.name == "hello.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.read("/home/user/hello.txt") == "hello world"
    # The bytes really are in the sandbox's filesystem.
    assert sandbox.commands.run("cat /home/user/hello.txt").stdout == "hello world"


def test_written_file_belongs_to_user(sandbox):
    sandbox.files.write("/home/user/mine.txt", "x")
    assert sandbox.commands.run("stat -c '%U:%G %a' /home/user/mine.txt").stdout == "user:user 644\n"


def test_write_as_root(sandbox):
    info = sandbox.files.write("/root/secret.txt", "root only", user="root")
    assert info.path == "/root/secret.txt"
    assert sandbox.files.read("/root/secret.txt", user="root") == "root only"
    assert sandbox.files.get_info("/root/secret.txt", user="root").owner == "root"


def test_write_overwrites_and_truncates(sandbox):
    sandbox.files.write("/home/user/over.txt", "a much longer first version")
    sandbox.files.write("/home/user/over.txt", "short")
    assert sandbox.files.read("/home/user/over.txt") == "short"
    assert sandbox.files.get_info("/home/user/over.txt").size == 5


def test_write_creates_parent_directories(sandbox):
    info = sandbox.files.write("/home/user/deep/er/file.txt", "nested")
    assert info.path == "/home/user/deep/er/file.txt"
    assert sandbox.files.get_info("/home/user/deep/er").type == FileType.DIR
    assert sandbox.files.read("/home/user/deep/er/file.txt") == "nested"


def test_write_and_read_bytes(sandbox):
    data = bytes(range(256)) * 64
    sandbox.files.write("/tmp/data.bin", data)
    got = sandbox.files.read("/tmp/data.bin", format="bytes")
    assert isinstance(got, bytearray)
    assert bytes(got) == data
    r = sandbox.commands.run("sha256sum /tmp/data.bin")
    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_write_empty_file(sandbox):
    sandbox.files.write("/home/user/empty.txt", "")
    assert sandbox.files.read("/home/user/empty.txt") == ""
    assert sandbox.files.get_info("/home/user/empty.txt").size == 0


def test_read_stream(sandbox):
    data = os.urandom(3 * 1024 * 1024)
    sandbox.files.write("/tmp/big.bin", data)
    with sandbox.files.read("/tmp/big.bin", format="stream") as stream:
        got = b"".join(stream)
    assert len(got) == len(data)
    assert got == data


def test_read_with_gzip_accept_encoding(sandbox):
    text = "compress me " * 10000
    sandbox.files.write("/home/user/gz-read.txt", text)
    assert sandbox.files.read("/home/user/gz-read.txt", gzip=True) == text


def test_file_written_by_a_command_is_readable(sandbox):
    sandbox.commands.run("printf 'from\\ncommand' > /home/user/cmd.txt")
    assert sandbox.files.read("/home/user/cmd.txt") == "from\ncommand"


def test_write_files_multipart(sandbox):
    infos = sandbox.files.write_files(
        [
            {"path": "/home/user/multi/one.txt", "data": "first"},
            {"path": "/home/user/multi/two.bin", "data": b"\x00\x01second"},
            {"path": "multi/three.txt", "data": "third"},
        ]
    )
    assert [i.path for i in infos] == [
        "/home/user/multi/one.txt",
        "/home/user/multi/two.bin",
        "/home/user/multi/three.txt",
    ]
    assert [i.name for i in infos] == ["one.txt", "two.bin", "three.txt"]
    assert sandbox.files.read("/home/user/multi/one.txt") == "first"
    assert bytes(sandbox.files.read("/home/user/multi/two.bin", format="bytes")) == b"\x00\x01second"
    assert sandbox.files.read("/home/user/multi/three.txt") == "third"


def test_write_octet_stream(sandbox):
    data = os.urandom(256 * 1024)
    info = sandbox.files.write("/home/user/octet.bin", data, use_octet_stream=True)
    assert info.path == "/home/user/octet.bin"
    assert bytes(sandbox.files.read("/home/user/octet.bin", format="bytes")) == data


def test_write_octet_stream_gzip(sandbox):
    text = "gzipped upload\n" * 20000
    info = sandbox.files.write("/home/user/gz.txt", text, gzip=True)
    assert info.path == "/home/user/gz.txt"
    # Stored decompressed.
    assert sandbox.files.read("/home/user/gz.txt") == text
    assert sandbox.files.get_info("/home/user/gz.txt").size == len(text)


def test_write_file_like_object_streams(sandbox):
    data = os.urandom(1024 * 1024)
    info = sandbox.files.write("/home/user/from-io.bin", io.BytesIO(data))
    assert info.path == "/home/user/from-io.bin"
    assert bytes(sandbox.files.read("/home/user/from-io.bin", format="bytes")) == data


def test_write_iterable_of_chunks(sandbox):
    chunks = [b"chunk-%d;" % i for i in range(1000)]
    sandbox.files.write("/home/user/chunks.txt", iter(chunks))
    assert sandbox.files.read("/home/user/chunks.txt") == b"".join(chunks).decode()


def test_gzip_file_content_is_stored_verbatim(sandbox):
    # Bytes that happen to be gzip data are a file's content, not a transfer encoding.
    payload = gzip.compress(b"already gzipped bytes")
    sandbox.files.write("/home/user/raw.gz", payload)
    assert bytes(sandbox.files.read("/home/user/raw.gz", format="bytes")) == payload
    r = sandbox.commands.run(
        "python3 -c \"import gzip,sys; sys.stdout.write(gzip.open('/home/user/raw.gz').read().decode())\""
    )
    assert r.stdout == "already gzipped bytes"


# --- metadata (X-Metadata-* upload headers) ---


def test_metadata_on_write_is_returned_and_stored(sandbox):
    info = sandbox.files.write(
        "/home/user/meta.txt", "m", metadata={"Owner": "me", "stage": "test-1"}
    )
    assert info.metadata == {"owner": "me", "stage": "test-1"}
    assert sandbox.files.get_info("/home/user/meta.txt").metadata == {
        "owner": "me",
        "stage": "test-1",
    }
    listed = {e.name: e for e in sandbox.files.list("/home/user")}
    assert listed["meta.txt"].metadata == {"owner": "me", "stage": "test-1"}


def test_metadata_is_replaced_by_a_new_write(sandbox):
    sandbox.files.write("/home/user/meta2.txt", "1", metadata={"a": "1", "b": "2"})
    sandbox.files.write("/home/user/meta2.txt", "2", metadata={"c": "3"})
    assert sandbox.files.get_info("/home/user/meta2.txt").metadata == {"c": "3"}
    assert sandbox.files.read("/home/user/meta2.txt") == "2"


def test_metadata_on_multi_file_and_octet_stream_writes(sandbox):
    infos = sandbox.files.write_files(
        [{"path": "/home/user/mm/a.txt", "data": "a"}, {"path": "/home/user/mm/b.txt", "data": "b"}],
        metadata={"batch": "7"},
    )
    assert [i.metadata for i in infos] == [{"batch": "7"}, {"batch": "7"}]
    info = sandbox.files.write("/home/user/mm/c.txt", b"c", use_octet_stream=True, metadata={"k": "v"})
    assert info.metadata == {"k": "v"}
    assert sandbox.files.get_info("/home/user/mm/c.txt").metadata == {"k": "v"}
    assert sandbox.files.get_info("/home/user/mm/a.txt").metadata == {"batch": "7"}


def test_file_without_metadata_has_none(sandbox):
    info = sandbox.files.write("/home/user/plain.txt", "p")
    assert info.metadata is None
    assert sandbox.files.get_info("/home/user/plain.txt").metadata is None


# --- list, stat, exists ---


def make_tree(sandbox):
    sandbox.files.write_files(
        [
            {"path": "/home/user/tree/a.txt", "data": "a"},
            {"path": "/home/user/tree/d1/b.txt", "data": "bb"},
            {"path": "/home/user/tree/d1/d2/c.txt", "data": "ccc"},
        ]
    )


def test_list_depth_one(sandbox):
    make_tree(sandbox)
    entries = sandbox.files.list("/home/user/tree")
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {"/home/user/tree/a.txt", "/home/user/tree/d1"}
    assert by_path["/home/user/tree/a.txt"].type == FileType.FILE
    assert by_path["/home/user/tree/a.txt"].name == "a.txt"
    assert by_path["/home/user/tree/a.txt"].size == 1
    assert by_path["/home/user/tree/d1"].type == FileType.DIR
    assert by_path["/home/user/tree/d1"].name == "d1"


def test_list_with_depth(sandbox):
    make_tree(sandbox)
    two = {e.path for e in sandbox.files.list("/home/user/tree", depth=2)}
    assert two == {
        "/home/user/tree/a.txt",
        "/home/user/tree/d1",
        "/home/user/tree/d1/b.txt",
        "/home/user/tree/d1/d2",
    }
    three = sandbox.files.list("/home/user/tree", depth=3)
    assert {e.path for e in three} == two | {"/home/user/tree/d1/d2/c.txt"}
    for e in three:
        assert e.name == e.path.rsplit("/", 1)[1]


def test_list_sees_files_created_by_commands(sandbox):
    sandbox.commands.run("mkdir -p /tmp/ls && touch /tmp/ls/x /tmp/ls/y && mkdir /tmp/ls/z")
    entries = sandbox.files.list("/tmp/ls")
    assert sorted((e.name, e.type) for e in entries) == [
        ("x", FileType.FILE),
        ("y", FileType.FILE),
        ("z", FileType.DIR),
    ]


def test_list_missing_directory(sandbox):
    with pytest.raises(FileNotFoundException):
        sandbox.files.list("/home/user/no-such-dir")


def test_list_a_file_is_invalid(sandbox):
    sandbox.files.write("/home/user/not-a-dir.txt", "x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list("/home/user/not-a-dir.txt")


def test_get_info_of_a_file(sandbox):
    before = datetime.datetime.now(datetime.timezone.utc)
    sandbox.files.write("/home/user/info.txt", "test")
    i = sandbox.files.get_info("/home/user/info.txt")
    assert i.name == "info.txt"
    assert i.type == FileType.FILE
    assert i.path == "/home/user/info.txt"
    assert i.size == 4
    assert i.mode == 0o644
    assert i.permissions == "-rw-r--r--"
    assert i.owner == "user"
    assert i.group == "user"
    assert i.symlink_target is None
    assert i.modified_time.tzinfo is not None
    assert abs((i.modified_time - before).total_seconds()) < 60


def test_get_info_of_a_directory(sandbox):
    assert sandbox.files.make_dir("/home/user/info-dir")
    i = sandbox.files.get_info("/home/user/info-dir")
    assert i.type == FileType.DIR
    assert i.name == "info-dir"
    assert i.path == "/home/user/info-dir"
    assert i.owner == "user"
    assert i.mode & 0o777 == 0o755


def test_get_info_of_a_symlink(sandbox):
    sandbox.files.write("/home/user/target.txt", "t")
    sandbox.commands.run("ln -s /home/user/target.txt /home/user/link")
    i = sandbox.files.get_info("/home/user/link")
    assert i.type == FileType.SYMLINK
    assert i.symlink_target == "/home/user/target.txt"


def test_get_info_missing(sandbox):
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info("/home/user/missing.txt")


def test_exists(sandbox):
    sandbox.files.write("/home/user/there.txt", "x")
    assert sandbox.files.exists("/home/user/there.txt") is True
    assert sandbox.files.exists("/home/user") is True
    assert sandbox.files.exists("/home/user/not-there.txt") is False


# --- directories, rename, remove ---


def test_make_dir_true_then_false(sandbox):
    assert sandbox.files.make_dir("/home/user/newdir/with/parents") is True
    assert sandbox.files.make_dir("/home/user/newdir/with/parents") is False
    assert sandbox.files.get_info("/home/user/newdir/with/parents").type == FileType.DIR
    assert sandbox.commands.run("stat -c %U /home/user/newdir/with").stdout == "user\n"


def test_make_dir_over_a_file_is_invalid(sandbox):
    sandbox.files.write("/home/user/occupied", "file")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.make_dir("/home/user/occupied")


def test_rename(sandbox):
    sandbox.files.write("/home/user/old.txt", "moving")
    info = sandbox.files.rename("/home/user/old.txt", "/home/user/new.txt")
    assert info.path == "/home/user/new.txt"
    assert info.name == "new.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.exists("/home/user/old.txt") is False
    assert sandbox.files.read("/home/user/new.txt") == "moving"


def test_rename_directory(sandbox):
    sandbox.files.write("/home/user/dir-a/f.txt", "inside")
    info = sandbox.files.rename("/home/user/dir-a", "/home/user/dir-b")
    assert info.type == FileType.DIR
    assert sandbox.files.read("/home/user/dir-b/f.txt") == "inside"
    assert not sandbox.files.exists("/home/user/dir-a")


def test_rename_missing(sandbox):
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename("/home/user/ghost.txt", "/home/user/ghost2.txt")


def test_remove_file_and_directory_tree(sandbox):
    sandbox.files.write("/home/user/rm.txt", "x")
    sandbox.files.remove("/home/user/rm.txt")
    assert sandbox.files.exists("/home/user/rm.txt") is False
    sandbox.files.write("/home/user/rmdir/a/b.txt", "x")
    sandbox.files.remove("/home/user/rmdir")
    assert sandbox.files.exists("/home/user/rmdir") is False
    assert sandbox.commands.run("ls /home/user").stdout.split().count("rmdir") == 0


# --- paths and errors ---


def test_relative_paths_resolve_to_home(sandbox):
    info = sandbox.files.write("rel.txt", "relative")
    assert info.path == "/home/user/rel.txt"
    assert sandbox.files.read("/home/user/rel.txt") == "relative"
    assert sandbox.files.read("rel.txt") == "relative"
    assert sandbox.files.get_info("rel.txt").path == "/home/user/rel.txt"
    assert sandbox.files.exists("rel.txt")
    assert sandbox.files.make_dir("rel-dir") is True
    assert sandbox.files.get_info("/home/user/rel-dir").type == FileType.DIR
    assert sandbox.files.rename("rel.txt", "rel-dir/moved.txt").path == "/home/user/rel-dir/moved.txt"
    assert {e.path for e in sandbox.files.list("rel-dir")} == {"/home/user/rel-dir/moved.txt"}


def test_tilde_paths_resolve_to_home(sandbox):
    sandbox.files.write("/home/user/tilde.txt", "~")
    assert sandbox.files.get_info("~/tilde.txt").path == "/home/user/tilde.txt"
    assert sandbox.files.read("~/tilde.txt") == "~"


def test_read_missing_file(sandbox):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("/home/user/nope.txt")
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("/home/user/nope.txt", format="bytes")
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("/home/user/nope.txt", format="stream")


def test_read_a_directory_is_invalid(sandbox):
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/home/user")


# --- watch (sync: CreateWatcher / GetWatcherEvents / RemoveWatcher) ---


def collect_events(handle, want, timeout=5.0):
    """Drains `handle` until every (name, type) in `want` was seen."""
    events = []

    def seen_all():
        events.extend(handle.get_new_events())
        got = {(e.name, e.type) for e in events}
        return want <= got

    assert wait_until(seen_all, timeout, 0.1), f"wanted {want}, got {events}"
    return events


def test_watch_dir_sync(sandbox):
    sandbox.files.make_dir("/home/user/watched")
    h = sandbox.files.watch_dir("/home/user/watched")
    sandbox.files.write("/home/user/watched/new.txt", "1")
    sandbox.commands.run("echo more >> /home/user/watched/new.txt")
    sandbox.files.remove("/home/user/watched/new.txt")
    events = collect_events(
        h,
        {
            ("new.txt", FilesystemEventType.CREATE),
            ("new.txt", FilesystemEventType.WRITE),
            ("new.txt", FilesystemEventType.REMOVE),
        },
    )
    # Events arrive in order: the create comes first, the remove last.
    names_types = [(e.name, e.type) for e in events]
    assert names_types.index(("new.txt", FilesystemEventType.CREATE)) < names_types.index(
        ("new.txt", FilesystemEventType.REMOVE)
    )
    # get_new_events drains: nothing is repeated.
    assert h.get_new_events() == []
    h.stop()


def test_watch_dir_rename_and_chmod(sandbox):
    sandbox.files.write("/home/user/w2/f.txt", "x")
    h = sandbox.files.watch_dir("/home/user/w2")
    sandbox.files.rename("/home/user/w2/f.txt", "/home/user/w2/g.txt")
    sandbox.commands.run("chmod 600 /home/user/w2/g.txt")
    collect_events(
        h,
        {
            ("f.txt", FilesystemEventType.RENAME),
            ("g.txt", FilesystemEventType.CHMOD),
        },
    )
    h.stop()


def test_watch_dir_recursive(sandbox):
    sandbox.files.make_dir("/home/user/wr/sub")
    h = sandbox.files.watch_dir("/home/user/wr", recursive=True)
    sandbox.files.write("/home/user/wr/sub/inner.txt", "x")
    collect_events(h, {("sub/inner.txt", FilesystemEventType.CREATE)})
    h.stop()


def test_watch_dir_non_recursive_ignores_subdirectories(sandbox):
    sandbox.files.make_dir("/home/user/wn/sub")
    h = sandbox.files.watch_dir("/home/user/wn")
    sandbox.files.write("/home/user/wn/sub/inner.txt", "x")
    sandbox.files.write("/home/user/wn/top.txt", "x")
    events = collect_events(h, {("top.txt", FilesystemEventType.CREATE)})
    time.sleep(0.3)
    events += h.get_new_events()
    assert not any(e.name.startswith("sub/") for e in events), events
    h.stop()


def test_watch_dir_include_entry(sandbox):
    sandbox.files.make_dir("/home/user/we")
    h = sandbox.files.watch_dir("/home/user/we", include_entry=True)
    sandbox.files.write("/home/user/we/e.txt", "entry")
    events = collect_events(h, {("e.txt", FilesystemEventType.WRITE)})
    write = next(e for e in events if e.type == FilesystemEventType.WRITE)
    assert write.entry is not None
    assert write.entry.path == "/home/user/we/e.txt"
    assert write.entry.type == FileType.FILE
    h.stop()


def test_watch_missing_dir(sandbox):
    with pytest.raises(FileNotFoundException):
        sandbox.files.watch_dir("/home/user/not-a-watched-dir")

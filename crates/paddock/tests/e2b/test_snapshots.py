"""Snapshots and fork through the SDK: `create_snapshot`, `Sandbox.create(snapshot_id)`,
`list_snapshots`, `delete_snapshot`, `fork(count)` (docs/persistence.md)."""

import pytest

from e2b import Sandbox
from e2b.exceptions import InvalidArgumentException, SandboxException


def _kill_all(sandboxes):
    for s in sandboxes:
        if isinstance(s, Sandbox):
            s.kill()


def test_create_snapshot_then_create_from_it_list_and_delete(sandbox, test_id):
    sandbox.files.write("/home/user/snap.txt", "from the parent")
    info = sandbox.create_snapshot()
    assert info.snapshot_id and info.names == [info.snapshot_id]
    # Written after the snapshot: not in it.
    sandbox.files.write("/home/user/after.txt", "later")
    child = Sandbox.create(info.snapshot_id, metadata={"sandbox_test_id": test_id})
    try:
        assert child.files.read("/home/user/snap.txt") == "from the parent"
        assert not child.files.exists("/home/user/after.txt")
        # The child's user owns and can change what the parent's wrote.
        child.files.write("/home/user/snap.txt", "the child's")
        assert sandbox.files.read("/home/user/snap.txt") == "from the parent"
        listed = Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items()
        assert [s.snapshot_id for s in listed] == [info.snapshot_id]
        assert [s.snapshot_id for s in sandbox.list_snapshots().next_items()] == [info.snapshot_id]
        # In use: refused.
        with pytest.raises(SandboxException):
            Sandbox.delete_snapshot(info.snapshot_id)
    finally:
        child.kill()
    assert Sandbox.delete_snapshot(info.snapshot_id) is True
    assert Sandbox.delete_snapshot(info.snapshot_id) is False
    assert Sandbox.list_snapshots(sandbox_id=sandbox.sandbox_id).next_items() == []


def test_memory_snapshot_is_refused_with_the_reason(sandbox):
    with pytest.raises(SandboxException) as e:
        sandbox.create_snapshot(mode="full")
    assert "CRIU" in str(e.value)
    # The filesystem mode is what works.
    info = sandbox.create_snapshot(mode="filesystem")
    assert Sandbox.delete_snapshot(info.snapshot_id) is True


def test_fork_children_are_independent(sandbox):
    sandbox.files.write("/home/user/shared.txt", "base")
    kids = sandbox.fork(count=2)
    try:
        assert len(kids) == 2 and all(isinstance(k, Sandbox) for k in kids), kids
        for i, k in enumerate(kids):
            assert k.files.read("/home/user/shared.txt") == "base"
            k.files.write("/home/user/shared.txt", f"child {i}")
        sandbox.files.write("/home/user/shared.txt", "parent")
        assert [k.files.read("/home/user/shared.txt") for k in kids] == ["child 0", "child 1"]
        assert sandbox.files.read("/home/user/shared.txt") == "parent"
        assert sandbox.is_running()
    finally:
        _kill_all(kids)


def test_fork_count_out_of_range(sandbox):
    # The SDK checks the count itself; the server's own 400 is tested over REST.
    with pytest.raises((InvalidArgumentException, SandboxException)):
        sandbox.fork(count=21)

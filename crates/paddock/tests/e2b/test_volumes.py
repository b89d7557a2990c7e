"""Volumes through the SDK: `Volume.create`, `list`, `get_info`, `destroy`, and
`volume_mounts` at create (docs/volumes.md). The volume content API (the SDK's volume file
operations) is not served; files are reached through the sandboxes that mount a volume."""

import uuid

import pytest

from e2b import Sandbox, Volume
from e2b.exceptions import SandboxException, VolumeException, VolumeNotFoundException


def test_volume_is_shared_outlives_its_writer_and_is_destroyed(test_id):
    name = f"v-{uuid.uuid4().hex[:12]}"
    vol = Volume.create(name)
    assert vol.name == name and vol.volume_id
    assert name in [v.name for v in Volume.list()]
    assert Volume.get_info(vol.volume_id).name == name
    meta = {"sandbox_test_id": test_id}
    a = Sandbox.create(volume_mounts={"/data": vol}, metadata=meta)
    try:
        a.files.write("/data/note.txt", "written by a")
        b = Sandbox.create(volume_mounts={"/mnt/v": name}, metadata=meta)
        try:
            assert b.files.read("/mnt/v/note.txt") == "written by a"
            b.files.write("/mnt/v/note.txt", "and b")
            assert a.files.read("/data/note.txt") == "and b"
            # Mounted: not destroyed.
            with pytest.raises((VolumeException, SandboxException)):
                Volume.destroy(vol.volume_id)
        finally:
            b.kill()
    finally:
        a.kill()
    c = Sandbox.create(volume_mounts={"/data": vol}, metadata=meta)
    try:
        assert c.files.read("/data/note.txt") == "and b"
    finally:
        c.kill()
    assert Volume.destroy(vol.volume_id) is True
    with pytest.raises(VolumeNotFoundException):
        Volume.get_info(vol.volume_id)


def test_volume_mount_over_a_system_path_is_refused():
    name = f"v-{uuid.uuid4().hex[:12]}"
    vol = Volume.create(name)
    try:
        for path in ["/", "/etc", "/proc", "/usr/lib", "/run/secrets"]:
            with pytest.raises(SandboxException):
                Sandbox.create(volume_mounts={path: vol})
        with pytest.raises(SandboxException):
            Sandbox.create(volume_mounts={"/data": "no-such-volume"})
    finally:
        assert Volume.destroy(vol.volume_id) is True

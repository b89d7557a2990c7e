"""Volumes through the SDK: `Volume.create`, `list`, `get_info`, `destroy`,
`volume_mounts` at create, and the volume content API (the SDK's volume file operations,
with the volume's token; docs/volumes.md)."""

import io
import os
import uuid

import httpx
import pytest

from e2b import Sandbox, Volume
from e2b.exceptions import (
    SandboxException,
    VolumeException,
    VolumeNotFoundException,
    VolumePathNotFoundException,
)


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


def test_volume_content_api_files_directories_owners_and_sandboxes_see_them(test_id):
    vol = Volume.create(f"v-{uuid.uuid4().hex[:12]}")
    try:
        # Write (str, bytes, a file object), read back in each format.
        e = vol.write_file("/notes/a.txt", "hello", force=True)
        assert e.type.value == "file" and e.path == "/notes/a.txt" and e.size == 5
        assert e.uid == 1000 and e.gid == 1000 and e.mode == 0o644
        assert vol.read_file("/notes/a.txt") == "hello"
        blob = os.urandom(3 << 20)
        vol.write_file("/notes/blob.bin", io.BytesIO(blob))
        assert vol.read_file("/notes/blob.bin", format="bytes") == blob
        assert b"".join(vol.read_file("/notes/blob.bin", format="stream")) == blob
        # Overwrite keeps owner and mode unless given.
        vol.write_file("/notes/a.txt", b"again", mode=0o600)
        info = vol.get_info("/notes/a.txt")
        assert info.size == 5 and info.mode == 0o600 and info.mtime.tzinfo is not None
        vol.write_file("/notes/a.txt", "third")
        assert vol.get_info("/notes/a.txt").mode == 0o600
        # Directories: without force a missing parent is not found; with force, made.
        with pytest.raises(VolumePathNotFoundException):
            vol.write_file("/no/such/dir/x", "x")
        with pytest.raises(VolumePathNotFoundException):
            vol.make_dir("/deep/er")
        d = vol.make_dir("/deep/er", force=True)
        assert d.type.value == "directory" and d.uid == 1000
        vol.make_dir("/deep/er", force=True)  # exists: fine with force
        with pytest.raises(VolumeException):
            vol.make_dir("/deep/er")  # exists: a conflict without
        names = sorted(x.path for x in vol.list("/"))
        assert names == ["/deep", "/notes"], names
        deep = sorted(x.path for x in vol.list("/", depth=3))
        assert "/deep/er" in deep and "/notes/blob.bin" in deep
        assert vol.exists("/notes/a.txt") and not vol.exists("/notes/nope")
        # Owner and mode.
        u = vol.update_metadata("/notes/a.txt", uid=0, gid=0, mode=0o640)
        assert (u.uid, u.gid, u.mode) == (0, 0, 0o640)
        # A sandbox mounting the volume sees the API's files with the right owners, and
        # the API sees what the sandbox writes, symlinks included.
        sbx = Sandbox.create(volume_mounts={"/data": vol}, metadata={"sandbox_test_id": test_id})
        try:
            assert sbx.files.read("/data/notes/blob.bin", format="bytes") == blob
            r = sbx.commands.run("stat -c '%U %a' /data/notes/a.txt /data/deep/er")
            assert r.stdout.split("\n")[:2] == ["root 640", "user 755"], r.stdout
            sbx.commands.run("echo from-sandbox > /data/s.txt && ln -s /etc/passwd /data/link")
        finally:
            sbx.kill()
        assert vol.read_file("/s.txt") == "from-sandbox\n"
        link = vol.get_info("/link")
        assert link.type.value == "symlink" and link.target == "/etc/passwd"
        # The symlink is followed inside the volume only: /etc/passwd is not in it.
        with pytest.raises(VolumePathNotFoundException):
            vol.read_file("/link")
        # Writing at a symlink replaces the symlink; the host file is untouched.
        vol.write_file("/link", "not passwd")
        assert vol.get_info("/link").type.value == "file"
        with open("/etc/passwd") as f:
            assert "root" in f.read()
        # Remove a file, a whole directory; then they are gone.
        vol.remove("/notes/a.txt")
        vol.remove("/deep")
        assert not vol.exists("/deep") and not vol.exists("/notes/a.txt")
        with pytest.raises(VolumePathNotFoundException):
            vol.remove("/deep")
    finally:
        assert Volume.destroy(vol.volume_id) is True


def test_volume_content_api_needs_the_volumes_own_token_and_refuses_bad_input():
    a = Volume.create(f"v-{uuid.uuid4().hex[:12]}")
    b = Volume.create(f"v-{uuid.uuid4().hex[:12]}")
    base = os.environ["E2B_VOLUME_API_URL"]
    try:
        a.write_file("/x", "secret")
        url = f"{base}/volumecontent/{a.volume_id}/file"
        # No token, another volume's token, a made-up one: 401, nothing read.
        for headers in ({}, {"Authorization": f"Bearer {b.token}"}, {"Authorization": "Bearer 00"}):
            r = httpx.get(url, params={"path": "/x"}, headers=headers)
            assert r.status_code == 401 and "secret" not in r.text, r.text
            assert r.json()["code"] == "unauthorized"
        auth = {"Authorization": f"Bearer {a.token}"}
        # Bad input: clear 400s with string codes, nothing changed.
        for params in ({"path": "/../etc/passwd"}, {}, {"path": "/x", "bogus": "1"}):
            r = httpx.get(url, params=params, headers=auth)
            assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
        r = httpx.get(f"{base}/volumecontent/{a.volume_id}/dir", params={"path": "/", "depth": 0}, headers=auth)
        assert r.status_code == 400, r.text
        r = httpx.put(url, params={"path": "/x", "mode": 0o4755}, headers=auth, content=b"y")
        assert r.status_code == 400 and "mode" in r.json()["message"], r.text
        r = httpx.put(url, params={"path": "/x", "uid": 70000}, headers=auth, content=b"y")
        assert r.status_code == 400, r.text
        r = httpx.delete(f"{base}/volumecontent/{a.volume_id}/path", params={"path": "/"}, headers=auth)
        assert r.status_code == 400, r.text
        assert a.read_file("/x") == "secret"
        # A directory read as a file, a file listed as a directory.
        a.make_dir("/d")
        with pytest.raises(VolumeException):
            a.read_file("/d")
        with pytest.raises(VolumeException):
            a.list("/x")
        # The quota holds through the API, and a refused write keeps the old file: a
        # 2 MiB volume made through the native API (E2B's create takes no size).
        r = httpx.post(
            f"{os.environ['E2B_API_URL']}/v1/volumes",
            json={"name": f"small-{uuid.uuid4().hex[:8]}", "size": 2 << 20},
            headers={"Authorization": f"Bearer {os.environ['E2B_API_KEY']}"},
        )
        assert r.status_code == 201, r.text
        small = Volume.connect(r.json()["id"])
        try:
            small.write_file("/keep", "kept")
            with pytest.raises(VolumeException):
                small.write_file("/keep", os.urandom(4 << 20))
            assert small.read_file("/keep") == "kept"
            assert [x.name for x in small.list("/")] == ["keep"]
        finally:
            Volume.destroy(small.volume_id)
    finally:
        Volume.destroy(a.volume_id)
        Volume.destroy(b.volume_id)
    # A destroyed volume's token reaches nothing.
    r = httpx.get(
        f"{base}/volumecontent/{a.volume_id}/path",
        params={"path": "/"},
        headers={"Authorization": f"Bearer {a.token}"},
    )
    assert r.status_code == 404, r.text

//! The writable layers of all sandboxes: one btrfs filesystem, one subvolume per sandbox,
//! each with a qgroup limit, which is how the disk limit "really holds".
//!
//! The kernel on the dev and CI machines is built without `CONFIG_QUOTA`, so ext4 and XFS
//! project quotas are unavailable; btrfs qgroups are independent of it and are enforced for
//! every writer, root included. Unless the data directory already sits on btrfs, Paddock
//! creates a sparse image file (`layers.img`) and loop-mounts it at `layers/`. Subvolume
//! create/delete and the limit are single ioctls (tens of microseconds), so they add nothing
//! measurable to sandbox start.

use std::fs;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, RuntimeError};
use crate::sys::btrfs::{self, SNAP_NAME_MAX, VOL_NAME_MAX};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// The layer filesystem mounted at `root`.
#[derive(Debug)]
pub struct Layers {
    root: PathBuf,
    image: PathBuf,
}

impl Layers {
    /// Makes sure a quota-enabled btrfs is mounted at `dir`, creating and loop-mounting a
    /// sparse image of `image_size` bytes at `image` when needed.
    pub fn open(dir: &Path, image: &Path, image_size: u64) -> Result<Layers> {
        fs::create_dir_all(dir).map_err(RuntimeError::io("creating layers dir"))?;
        if !is_btrfs(dir) {
            if !image.exists() {
                // Formatted under a temporary name and renamed once mkfs succeeded, so a
                // failed first start (mkfs.btrfs missing, disk full) never leaves an
                // unformatted image that later starts would try to mount.
                let tmp = image.with_extension("img.partial");
                let f =
                    fs::File::create(&tmp).map_err(RuntimeError::io("creating layers image"))?;
                f.set_len(image_size)
                    .map_err(RuntimeError::io("sizing layers image"))?;
                drop(f);
                let made = run(Command::new("mkfs.btrfs")
                    .args(["-q", "-f", "-m", "single", "-d", "single"])
                    .arg(&tmp));
                if let Err(e) = made {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                fs::rename(&tmp, image).map_err(RuntimeError::io("naming layers image"))?;
            }
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(dir))?;
        }
        run(Command::new("btrfs").args(["quota", "enable"]).arg(dir))?;
        let sbx = dir.join("sandboxes");
        fs::create_dir_all(&sbx).map_err(RuntimeError::io("creating sandboxes dir"))?;
        Ok(Layers {
            root: dir.to_owned(),
            image: image.to_owned(),
        })
    }

    /// The layer directory `dir` as it is, mounting and enabling nothing: the layers of a
    /// [`crate::Runtime::detached`] runtime, which never makes a subvolume.
    pub(crate) fn detached(dir: &Path) -> Result<Layers> {
        fs::create_dir_all(dir.join("sandboxes"))
            .map_err(RuntimeError::io("creating sandboxes dir"))?;
        Ok(Layers {
            root: dir.to_owned(),
            image: dir.join("no-image"),
        })
    }

    /// Unmounts the loop-mounted image (if the layers are one, not a btrfs data directory)
    /// and detaches its loop device. Only for a runtime that is closing with no sandbox left.
    pub(crate) fn unmount_image(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        if !self.image.exists() {
            return Ok(());
        }
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
        let parent = self.root.parent().unwrap_or(Path::new("/"));
        if dev(&self.root).is_some() && dev(&self.root) != dev(parent) {
            // `mount -o loop` marks the device autoclear: unmounting also detaches it.
            run(Command::new("umount").arg(&self.root))?;
        }
        // A device left over (an older version, or a mount made by hand without autoclear).
        let out = Command::new("losetup")
            .arg("-j")
            .arg(&self.image)
            .output()
            .map_err(|e| RuntimeError::Unsupported {
                resource: "loop device",
                reason: format!("running losetup: {e}"),
            })?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((loopdev, _)) = line.split_once(':') {
                run(Command::new("losetup").arg("-d").arg(loopdev))?;
            }
        }
        Ok(())
    }

    /// Directory holding one subvolume per sandbox.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// Directory `dir` opened for an ioctl on subvolume `id` in it, once `id` is checked.
    fn parent_of(&self, dir: &Path, id: &str) -> Result<fs::File> {
        if id.is_empty() || id.len() > VOL_NAME_MAX || id.contains(['/', '\0']) {
            return Err(RuntimeError::InvalidArgument {
                what: "subvolume name",
                reason: format!("bad subvolume name {id:?}"),
            });
        }
        fs::File::open(dir).map_err(RuntimeError::io("opening subvolume parent"))
    }

    /// Creates the subvolume for sandbox `id` with a limit of `bytes` on what it references.
    pub fn create(&self, id: &str, bytes: u64) -> Result<PathBuf> {
        let parent = self.parent_of(&self.sandboxes_dir(), id)?;
        btrfs::subvol_create(parent.as_fd(), id)
            .map_err(RuntimeError::io(format!("creating subvolume {id}")))?;
        let path = self.sandboxes_dir().join(id);
        if let Err(e) = self.limit(&path, bytes) {
            let _ = self.destroy(id);
            return Err(e);
        }
        Ok(path)
    }

    fn limit(&self, path: &Path, bytes: u64) -> Result<()> {
        let dir = fs::File::open(path).map_err(RuntimeError::io("opening subvolume"))?;
        btrfs::qgroup_limit_referenced(dir.as_fd(), bytes)
            .map_err(RuntimeError::io("setting disk limit"))?;
        Ok(())
    }

    /// Deletes the subvolume of sandbox `id` and everything in it. Missing is not an error.
    pub fn destroy(&self, id: &str) -> Result<()> {
        self.destroy_in(&self.sandboxes_dir(), id)
    }

    /// Deletes subvolume `id` of directory `dir`. Missing is not an error.
    fn destroy_in(&self, dir: &Path, id: &str) -> Result<()> {
        let path = dir.join(id);
        if !path.exists() {
            return Ok(());
        }
        let parent = self.parent_of(dir, id)?;
        let mut tries = 0;
        loop {
            let Err(e) = btrfs::subvol_destroy(parent.as_fd(), id) else {
                return Ok(());
            };
            // EBUSY while the sandbox's mount namespace is still being torn down.
            if e.raw_os_error() == Some(libc::EBUSY) && tries < 500 {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
                continue;
            }
            return Err(RuntimeError::io(format!("deleting subvolume {id}"))(e));
        }
    }

    /// Directory holding one read-only subvolume per snapshot.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Takes a read-only snapshot of sandbox `id`'s subvolume as `snapshots/<name>`: one
    /// ioctl, constant time, nothing copied (the extents are shared until either side
    /// writes). Returns the snapshot's path.
    pub fn snapshot(&self, id: &str, name: &str) -> Result<PathBuf> {
        let dir = self.snapshots_dir();
        fs::create_dir_all(&dir).map_err(RuntimeError::io("creating snapshots dir"))?;
        if name.is_empty() || name.len() > SNAP_NAME_MAX || name.contains(['/', '\0']) {
            return Err(RuntimeError::InvalidArgument {
                what: "snapshot name",
                reason: format!("bad snapshot name {name:?}"),
            });
        }
        let src = fs::File::open(self.sandboxes_dir().join(id))
            .map_err(RuntimeError::io("opening the sandbox's subvolume"))?;
        let parent = fs::File::open(&dir).map_err(RuntimeError::io("opening snapshots dir"))?;
        btrfs::snapshot_readonly(parent.as_fd(), src.as_fd(), name)
            .map_err(RuntimeError::io(format!("snapshotting subvolume {id}")))?;
        Ok(dir.join(name))
    }

    /// Deletes snapshot `name`. Missing is not an error.
    pub fn destroy_snapshot(&self, name: &str) -> Result<()> {
        self.destroy_in(&self.snapshots_dir(), name)
    }

    /// Directory holding one subvolume per volume.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Creates the subvolume of volume `id` with a limit of `bytes` on what it references.
    pub fn create_volume(&self, id: &str, bytes: u64) -> Result<PathBuf> {
        let dir = self.volumes_dir();
        fs::create_dir_all(&dir).map_err(RuntimeError::io("creating volumes dir"))?;
        let parent = self.parent_of(&dir, id)?;
        btrfs::subvol_create(parent.as_fd(), id)
            .map_err(RuntimeError::io(format!("creating volume {id}")))?;
        let path = dir.join(id);
        if let Err(e) = self.limit(&path, bytes) {
            let _ = self.destroy_volume(id);
            return Err(e);
        }
        Ok(path)
    }

    /// Deletes volume `id` and everything in it. Missing is not an error.
    pub fn destroy_volume(&self, id: &str) -> Result<()> {
        self.destroy_in(&self.volumes_dir(), id)
    }

    /// Names that have a snapshot subvolume.
    pub fn snapshots(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.snapshots_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// Ids that have a subvolume.
    pub fn existing(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.sandboxes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// Bytes referenced by sandbox `id`'s subvolume, from its qgroup.
    pub fn usage(&self, id: &str) -> Option<u64> {
        qgroup_usage(&self.sandboxes_dir().join(id))
    }

    /// Bytes referenced by sandbox `id`'s subvolume as of the last transaction commit (at
    /// most 30 s old, or current after a `sync` in the sandbox), read from the qgroup's sysfs
    /// file: two ioctls and one small read, no process, so cheap enough for every sampling
    /// round (unlike [`Layers::usage`]). None when the kernel has no qgroup sysfs files.
    pub fn referenced(&self, id: &str) -> Option<u64> {
        let dir = fs::File::open(self.sandboxes_dir().join(id)).ok()?;
        let treeid = btrfs::subvolume_id(dir.as_fd()).ok()?;
        let fsid = btrfs::fsid(dir.as_fd()).ok()?;
        let path = format!(
            "/sys/fs/btrfs/{}/qgroups/0_{}/referenced",
            uuid(&fsid),
            treeid
        );
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// The writable subvolume of sandbox `id`.
    pub fn subvolume(&self, id: &str) -> PathBuf {
        self.sandboxes_dir().join(id)
    }
}

/// Bytes referenced by the subvolume at `subvol`, from its qgroup (committing the current
/// transaction first, so the figure is current).
pub(crate) fn qgroup_usage(subvol: &Path) -> Option<u64> {
    let out = Command::new("btrfs")
        .args(["qgroup", "show", "-rf", "--raw", "--sync"])
        .arg(subvol)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("0/"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// A filesystem UUID as sysfs names it: lowercase, 8-4-4-4-12.
fn uuid(b: &[u8]) -> String {
    let h = hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_btrfs(p: &Path) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type == BTRFS_SUPER_MAGIC)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| RuntimeError::Unsupported {
        resource: "btrfs",
        reason: format!(
            "running {:?}: {e} (is btrfs-progs installed?)",
            cmd.get_program()
        ),
    })?;
    if !out.status.success() {
        return Err(RuntimeError::Unsupported {
            resource: "btrfs",
            reason: format!(
                "{:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

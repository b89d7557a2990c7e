//! Volumes: named persistent directories, each a btrfs subvolume of the layer filesystem with
//! a qgroup limit (`<data>/layers/volumes/<id>`), mounted into sandboxes at create
//! (`docs/volumes.md`).
//!
//! A volume's files are kept in template id space (the sandbox's user 1000 is 1000 on disk)
//! and every sandbox mounts it id-mapped onto its own uid range, like a template layer, so
//! sandboxes with different ranges share it with the right owners and nothing is chowned.

use std::fs;
use std::path::PathBuf;

use super::{Runtime, VolumeMount};
use crate::error::{Result, RuntimeError};

/// The on-disk owner of a new volume's root: the templates' default user (`user`, 1000).
const VOLUME_OWNER: u32 = 1000;

/// Smallest volume quota.
pub(super) const MIN_VOLUME_BYTES: u64 = 1 << 20;

impl Runtime {
    /// The directory of volume `id` that sandboxes mount.
    pub(super) fn volume_data(&self, id: &str) -> PathBuf {
        self.layers.volumes_dir().join(id).join("data")
    }

    /// Creates volume `id` (1 to 63 of `[a-z0-9._-]`) with a quota of `bytes` (at least
    /// [`MIN_VOLUME_BYTES`]): a subvolume with a qgroup limit, its root owned by the
    /// sandboxes' default user.
    pub fn create_volume(&self, id: &str, bytes: u64) -> Result<()> {
        if !crate::template::valid_name(id) {
            return Err(RuntimeError::InvalidArgument {
                what: "volume id",
                reason: format!("invalid volume id {id:?}"),
            });
        }
        if bytes < MIN_VOLUME_BYTES {
            return Err(RuntimeError::InvalidArgument {
                what: "volume size",
                reason: format!("a volume's size must be at least {MIN_VOLUME_BYTES} bytes"),
            });
        }
        if self.layers.volumes_dir().join(id).exists() {
            return Err(RuntimeError::InvalidArgument {
                what: "volume id",
                reason: format!("volume {id} already exists"),
            });
        }
        let dir = self.layers.create_volume(id, bytes)?;
        let res = (|| {
            let data = dir.join("data");
            fs::create_dir(&data).map_err(RuntimeError::io("creating volume data dir"))?;
            std::os::unix::fs::chown(&data, Some(VOLUME_OWNER), Some(VOLUME_OWNER))
                .map_err(RuntimeError::io("chown of volume data dir"))
        })();
        if res.is_err() {
            let _ = self.layers.destroy_volume(id);
        }
        res
    }

    /// The sandboxes (running or paused) that mount volume `id`.
    pub fn volume_users(&self, id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self.list().iter().map(|s| s.id.to_string()).collect();
        for (p, _) in self.paused() {
            if !ids.contains(&p) {
                ids.push(p);
            }
        }
        ids.into_iter()
            .filter(|s| {
                self.read_record(s)
                    .is_some_and(|r| r.volumes.iter().any(|v| v.volume == id))
            })
            .collect()
    }

    /// Deletes volume `id` and its files; refused while sandboxes mount it. Missing is not an
    /// error.
    pub fn remove_volume(&self, id: &str) -> Result<()> {
        let users = self.volume_users(id);
        if !users.is_empty() {
            return Err(RuntimeError::VolumeInUse {
                volume: id.to_owned(),
                sandboxes: users,
            });
        }
        self.layers.destroy_volume(id)
    }

    /// Volume `id`'s files, for the volume content API (`crate::volfs`); an unknown id is
    /// [`crate::volfs::VolFsError::NotFound`].
    pub fn volume_files(
        &self,
        id: &str,
    ) -> std::result::Result<crate::volfs::VolumeFiles, crate::volfs::VolFsError> {
        if !crate::template::valid_name(id) {
            return Err(crate::volfs::VolFsError::NotFound(format!("volume {id:?}")));
        }
        crate::volfs::VolumeFiles::open(&self.volume_data(id)).map_err(|e| match e {
            crate::volfs::VolFsError::NotFound(_) => {
                crate::volfs::VolFsError::NotFound(format!("volume {id}"))
            }
            e => e,
        })
    }

    /// Bytes volume `id` holds, from its qgroup.
    pub fn volume_usage(&self, id: &str) -> Option<u64> {
        crate::layers::qgroup_usage(&self.layers.volumes_dir().join(id))
    }

    /// Ids that have a volume subvolume.
    pub fn volume_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.layers.volumes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// Checks a create's volumes: each exists, each path is allowed, no path twice.
    pub(super) fn check_volumes(&self, vols: &[VolumeMount]) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for v in vols {
            let path = paddock_core::check_mount_path(&v.path).map_err(|reason| {
                RuntimeError::InvalidArgument {
                    what: "volume mount path",
                    reason,
                }
            })?;
            if path != v.path {
                return Err(RuntimeError::InvalidArgument {
                    what: "volume mount path",
                    reason: format!("mount path {:?} has a trailing slash", v.path),
                });
            }
            if !seen.insert(path.clone()) {
                return Err(RuntimeError::InvalidArgument {
                    what: "volume mount path",
                    reason: format!("two volumes are mounted at {path}"),
                });
            }
            if !crate::template::valid_name(&v.volume) || !self.volume_data(&v.volume).is_dir() {
                return Err(RuntimeError::InvalidArgument {
                    what: "volume",
                    reason: format!("unknown volume {:?}", v.volume),
                });
            }
        }
        Ok(())
    }
}

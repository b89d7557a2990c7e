//! Snapshots: a read-only btrfs snapshot of a sandbox's writable layer, usable as a template
//! (`docs/persistence.md`).
//!
//! A snapshot's files are owned by the host ids of the sandbox it was taken of. Sandboxes
//! made from it have other ranges, so nothing is chowned: the snapshot is one more lower
//! layer whose id mapping starts at that sandbox's base (`SetupConfig::lower_id_bases`), an
//! id-mapped mount onto the new sandbox's range. Taking one is a single ioctl, whatever the
//! sandbox wrote.

use std::fs;
use std::path::PathBuf;

use paddock_core::Isolation;

use super::{ID_BASE, ID_COUNT, Runtime};
use crate::error::{Result, RuntimeError};
use crate::template::{self, SnapshotDef, Template};

impl Runtime {
    /// Where snapshot definitions are kept.
    pub(super) fn snapshot_defs_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("templates/snapshots")
    }

    /// The layer of snapshot `name`: the writable layer's upper directory in its snapshot.
    pub(super) fn snapshot_layer(&self, name: &str) -> PathBuf {
        self.layers.snapshots_dir().join(name).join("upper")
    }

    /// Takes a `filesystem` snapshot of sandbox `id` (running or paused) named `name` (a
    /// template name no template has) and registers it as a template. Constant time: one
    /// btrfs snapshot ioctl and a definition file.
    pub fn snapshot(&self, id: &str, name: &str) -> Result<Template> {
        if !template::valid_name(name) || name == "base" || name.starts_with("build-") {
            return Err(RuntimeError::InvalidArgument {
                what: "snapshot name",
                reason: format!(
                    "invalid snapshot name {name:?}: 1 to 63 of [a-z0-9._-], starting with a \
                     letter or digit, not base or build-*"
                ),
            });
        }
        let rec = self
            .read_record(id)
            .filter(|_| self.get(id).is_ok() || self.paused_mode(id).is_some())
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_owned() })?;
        let mut all = self.templates.write().expect("templates poisoned");
        let parent =
            all.get(&rec.template)
                .cloned()
                .ok_or_else(|| RuntimeError::UnknownTemplate {
                    name: rec.template.clone(),
                })?;
        if all.contains_key(name) || self.layers.snapshots_dir().join(name).exists() {
            return Err(RuntimeError::InvalidArgument {
                what: "snapshot name",
                reason: format!("a template named {name} already exists"),
            });
        }
        let def = SnapshotDef {
            name: name.to_owned(),
            parent: parent.name.clone(),
            sandbox: id.to_owned(),
            // A gVisor sandbox's layer holds its own ids (no uid range: module `gvisor`), so
            // its snapshot is in template id space, like an image layer.
            id_base: match rec.isolation {
                Isolation::Native => ID_BASE + rec.slot * ID_COUNT,
                Isolation::Gvisor => 0,
            },
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        self.layers.snapshot(id, name)?;
        let res = (|| {
            let t = template::load_snapshot(def.clone(), self.snapshot_layer(name), &parent)?;
            let defs = self.snapshot_defs_dir();
            fs::create_dir_all(&defs).map_err(RuntimeError::io("creating snapshot defs dir"))?;
            let tmp = defs.join(format!(".{name}.tmp"));
            let json =
                serde_json::to_vec_pretty(&def).map_err(RuntimeError::encode("snapshot def"))?;
            fs::write(&tmp, json).map_err(RuntimeError::io("writing snapshot definition"))?;
            fs::rename(&tmp, defs.join(format!("{name}.json")))
                .map_err(RuntimeError::io("installing snapshot definition"))?;
            Ok(t)
        })();
        match res {
            Ok(t) => {
                all.insert(name.to_owned(), t.clone());
                Ok(t)
            }
            Err(e) => {
                let _ = self.layers.destroy_snapshot(name);
                Err(e)
            }
        }
    }

    /// The environment sandbox `id` was created with (its own variables, not the
    /// template's), for forks.
    pub fn env_of(&self, id: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.read_record(id).map(|r| r.env)
    }

    /// Every snapshot, by name.
    pub fn snapshots(&self) -> Vec<Template> {
        self.templates()
            .into_iter()
            .filter(|t| t.snapshot.is_some())
            .collect()
    }

    /// Deletes snapshot `name` (its template and its subvolume); refused while sandboxes use
    /// it or snapshots stand on it.
    pub(super) fn remove_snapshot_locked(
        &self,
        all: &mut std::collections::BTreeMap<String, Template>,
        name: &str,
    ) -> Result<()> {
        self.check_unused(name)?;
        let _ = fs::remove_file(self.snapshot_defs_dir().join(format!("{name}.json")));
        all.remove(name);
        self.layers.destroy_snapshot(name)
    }

    /// Snapshots standing on template `name`.
    pub(super) fn snapshots_of(
        all: &std::collections::BTreeMap<String, Template>,
        name: &str,
    ) -> Vec<String> {
        all.values()
            .filter(|t| t.snapshot.as_ref().is_some_and(|s| s.parent == name))
            .map(|t| t.name.clone())
            .collect()
    }

    /// Snapshot subvolumes no snapshot template names (left by a crash between the snapshot
    /// and its definition, or by a definition that no longer loads), removed; their names.
    pub(super) fn prune_snapshots(
        &self,
        all: &std::collections::BTreeMap<String, Template>,
    ) -> Vec<String> {
        let mut gone = Vec::new();
        for name in self.layers.snapshots() {
            if all.get(&name).is_none_or(|t| t.snapshot.is_none())
                && self.layers.destroy_snapshot(&name).is_ok()
            {
                gone.push(name);
            }
        }
        gone
    }
}

/// Loads every snapshot definition of `dir` whose parent is in `templates` (parents first,
/// so snapshots of sandboxes made from snapshots load too), adding them to `templates`.
pub(super) fn load_all(
    dir: &std::path::Path,
    snapshots: &std::path::Path,
    templates: &mut std::collections::BTreeMap<String, Template>,
) {
    let mut defs: Vec<SnapshotDef> = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<SnapshotDef>(&b).ok())
        {
            Some(d) => defs.push(d),
            None => tracing::warn!(file = %p.display(), "skipping unreadable snapshot definition"),
        }
    }
    loop {
        let before = defs.len();
        defs.retain(|d| {
            let Some(parent) = templates.get(&d.parent) else {
                return true;
            };
            match template::load_snapshot(d.clone(), snapshots.join(&d.name).join("upper"), parent)
            {
                Ok(t) => {
                    templates.insert(t.name.clone(), t);
                }
                Err(e) => tracing::warn!(snapshot = %d.name, "skipping snapshot: {e}"),
            }
            false
        });
        if defs.len() == before {
            break;
        }
    }
    for d in defs {
        tracing::warn!(snapshot = %d.name, parent = %d.parent, "skipping snapshot: its template is gone");
    }
}

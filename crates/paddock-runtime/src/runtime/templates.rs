//! Templates and the layer store: adding and removing templates, listing and pruning
//! layers, and `commit_layer` for template builds.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_core::SandboxId;

use super::{ID_COUNT, Runtime, Sandbox};
use crate::error::{Result, RuntimeError};
use crate::template::{self, Template};

impl Runtime {
    /// The template `name`, if it exists.
    pub fn template(&self, name: &str) -> Option<Template> {
        self.templates
            .read()
            .expect("templates poisoned")
            .get(name)
            .cloned()
    }

    /// Every template, by name.
    pub fn templates(&self) -> Vec<Template> {
        self.templates
            .read()
            .expect("templates poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// The root of the content-addressed layer store.
    pub fn layers_root(&self) -> PathBuf {
        self.cfg.data_dir.join("templates/layers")
    }

    /// Registers a template whose layers are in the layer store, replacing one of the same
    /// name unless running sandboxes use it. The definition is written before it is visible.
    pub fn add_template(&self, def: template::TemplateDef) -> Result<Template> {
        let mut all = self.templates.write().expect("templates poisoned");
        let base = all
            .get("base")
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownTemplate {
                name: "base".into(),
            })?;
        let t = template::load(def.clone(), &self.layers_root(), &base)?;
        if let Some(old) = all.get(&t.name) {
            if old.snapshot.is_some() {
                return Err(RuntimeError::InvalidArgument {
                    what: "template name",
                    reason: format!("{} is a snapshot", t.name),
                });
            }
            self.check_unused(&t.name)?;
            let snaps = Self::snapshots_of(&all, &t.name);
            if !snaps.is_empty() {
                return Err(RuntimeError::TemplateHasSnapshots {
                    template: t.name.clone(),
                    snapshots: snaps,
                });
            }
        }
        let defs = self.cfg.data_dir.join("templates/defs");
        fs::create_dir_all(&defs).map_err(RuntimeError::io("creating template defs dir"))?;
        let tmp = defs.join(format!(".{}.tmp", t.name));
        let json =
            serde_json::to_vec_pretty(&def).map_err(RuntimeError::encode("template definition"))?;
        fs::write(&tmp, json).map_err(RuntimeError::io("writing template definition"))?;
        fs::rename(&tmp, defs.join(format!("{}.json", t.name)))
            .map_err(RuntimeError::io("installing template definition"))?;
        all.insert(t.name.clone(), t.clone());
        Ok(t)
    }

    pub(super) fn check_unused(&self, name: &str) -> Result<()> {
        let mut users: Vec<String> = self
            .list()
            .iter()
            .filter(|s| s.template == name)
            .map(|s| s.id.to_string())
            .collect();
        // A `filesystem`-paused sandbox starts from its template again at resume.
        for (id, _) in self.paused() {
            if !users.contains(&id) && self.read_record(&id).is_some_and(|r| r.template == name) {
                users.push(id);
            }
        }
        if users.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::TemplateInUse {
                template: name.to_owned(),
                sandboxes: users,
            })
        }
    }

    /// Deletes template `name` (refused while running sandboxes use it, and for `base`) and,
    /// with `gc`, every layer of it no other template uses. Returns how many layers went.
    pub fn remove_template(&self, name: &str, gc: bool) -> Result<usize> {
        if name == "base" {
            return Err(RuntimeError::InvalidArgument {
                what: "template",
                reason: "the built-in template base cannot be removed".into(),
            });
        }
        let mut all = self.templates.write().expect("templates poisoned");
        let Some(t) = all.get(name).cloned() else {
            return Err(RuntimeError::UnknownTemplate {
                name: name.to_owned(),
            });
        };
        self.check_unused(name)?;
        let snaps = Self::snapshots_of(&all, name);
        if !snaps.is_empty() {
            return Err(RuntimeError::TemplateHasSnapshots {
                template: name.to_owned(),
                snapshots: snaps,
            });
        }
        if t.snapshot.is_some() {
            self.remove_snapshot_locked(&mut all, name)?;
            return Ok(0);
        }
        let def = self
            .cfg
            .data_dir
            .join(format!("templates/defs/{name}.json"));
        fs::remove_file(&def).map_err(RuntimeError::io("removing template definition"))?;
        all.remove(name);
        let still: BTreeSet<&String> = all.values().flat_map(|o| o.layer_ids.iter()).collect();
        let store = crate::layerstore::LayerStore::open(self.layers_root())?;
        let mut freed = 0;
        for (id, dir) in t.layer_ids.iter().zip(&t.layers) {
            if gc && !still.contains(id) {
                // Renamed first so a half-removed layer is never taken for a complete one.
                let gone = dir.with_extension("removing");
                if fs::rename(dir, &gone).is_ok() {
                    store.forget_digest(id);
                    let _ = fs::remove_dir_all(&gone);
                    freed += 1;
                }
            }
        }
        Ok(freed)
    }

    /// Every layer of the store with its disk usage in bytes and the templates using it
    /// (empty: an orphan, from a replaced template or a failed build, kept as build cache
    /// until [`Runtime::prune_layers`]).
    pub fn layers(&self) -> Result<Vec<(String, u64, Vec<String>)>> {
        let store = crate::layerstore::LayerStore::open(self.layers_root())?;
        let all = self.templates.read().expect("templates poisoned");
        Ok(store
            .list()?
            .into_iter()
            .map(|(id, bytes)| {
                let users = all
                    .values()
                    .filter(|t| t.layer_ids.contains(&id))
                    .map(|t| t.name.clone())
                    .collect();
                (id, bytes, users)
            })
            .collect())
    }

    /// Removes every layer no template uses, and every snapshot subvolume no snapshot names,
    /// and returns the removed ones with their sizes.
    /// The caller makes sure no build, pull or import is running: their new layers belong
    /// to no template until they finish. Templates cannot be added meanwhile (the template
    /// lock is held), and a template's layers are never touched, so running sandboxes keep
    /// theirs (a template cannot be removed while sandboxes use it).
    pub fn prune_layers(&self) -> Result<Vec<(String, u64)>> {
        let store = crate::layerstore::LayerStore::open(self.layers_root())?;
        let all = self.templates.read().expect("templates poisoned");
        let used: BTreeSet<&String> = all.values().flat_map(|t| t.layer_ids.iter()).collect();
        let mut removed = Vec::new();
        // Only unused layers are measured: walking every layer would hold the template lock
        // for the size of the whole store.
        for id in store.ids()? {
            if !used.contains(&id) {
                let bytes = store.size(&id);
                store.remove(&id)?;
                removed.push((id, bytes));
            }
        }
        // Snapshot subvolumes no snapshot names (a crash between the snapshot and its
        // definition) go too, as `snapshot:<name>` (their extents are shared: size 0).
        for name in self.prune_snapshots(&all) {
            removed.push((format!("snapshot:{name}"), 0));
        }
        Ok(removed)
    }

    /// Turns what sandbox `sbx` wrote (its overlay upper directory) into layer `key` (64 hex
    /// characters) of the layer store, for template builds. Ownership is shifted from the
    /// sandbox's host uid range back to template ids (ids outside it become 65534); overlay
    /// whiteouts and opaque markers are kept, so the layer stacks like the upper did.
    /// Paddock's own files in the sandbox (the sudo shim's mount point and socket, the
    /// generated `resolv.conf`) are left out. The sandbox should be idle; an existing layer
    /// `key` is kept as it is.
    pub fn commit_layer(&self, sbx: &Sandbox, key: &str) -> Result<String> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RuntimeError::InvalidArgument {
                what: "layer key",
                reason: format!("bad layer key {key:?}"),
            });
        }
        let root = self.layers_root();
        let dst = root.join(key);
        let id = format!("sha256:{key}");
        if dst.is_dir() {
            return Ok(id);
        }
        fs::create_dir_all(&root).map_err(RuntimeError::io("creating layer store"))?;
        let tmp = root.join(format!(".build-commit-{}", SandboxId::random()));
        let st = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(sbx.dir.join("upper"))
            .arg(&tmp)
            .status()
            .map_err(RuntimeError::io("copying the sandbox's changes"))?;
        let res = (|| -> Result<()> {
            if !st.success() {
                return Err(RuntimeError::Command {
                    what: "copying the sandbox's changes",
                    status: st,
                });
            }
            for p in ["opt/paddock", "run/paddock", "etc/resolv.conf"] {
                let q = tmp.join(p);
                match q.symlink_metadata() {
                    Ok(m) if m.is_dir() => {
                        let _ = fs::remove_dir_all(&q);
                    }
                    Ok(_) => {
                        let _ = fs::remove_file(&q);
                    }
                    Err(_) => {}
                }
            }
            shift_owners(&tmp, sbx.uid_base, ID_COUNT)
                .map_err(RuntimeError::io("shifting layer ownership"))?;
            fs::rename(&tmp, &dst).map_err(RuntimeError::io("installing layer"))?;
            // Its transfer digest, for copies to peer nodes (`crate::layerexport`).
            crate::layerstore::LayerStore::open(&root)?.record_digest(&id)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res.map(|()| id)
    }
}

/// Rewrites the owner of every entry under `dir` (not following symlinks) from the host range
/// `[base, base + count)` to `[0, count)`; ids outside the range become 65534 (nobody).
fn shift_owners(dir: &Path, base: u32, count: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let shift = |id: u32| {
        if (base..base + count).contains(&id) {
            id - base
        } else {
            65534
        }
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let m = p.symlink_metadata()?;
        std::os::unix::fs::lchown(&p, Some(shift(m.uid())), Some(shift(m.gid())))?;
        // chown clears setuid/setgid bits; the layer keeps the mode it had.
        if !m.file_type().is_symlink() {
            fs::set_permissions(
                &p,
                std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
            )?;
        }
        strip_overlay_xattrs(&p)?;
        if m.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// Removes overlayfs's own bookkeeping (`trusted.overlay.origin`, `impure`, `uuid`, ...) that
/// an upper directory carries, keeping only `trusted.overlay.opaque`, which a layer needs.
fn strip_overlay_xattrs(p: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut buf = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(p, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => {
            buf = vec![0u8; 65536];
            rustix::fs::llistxattr(p, &mut buf)?
        }
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") && name != b"trusted.overlay.opaque" {
            let name = std::ffi::OsStr::from_bytes(name);
            rustix::fs::lremovexattr(p, name)?;
        }
    }
    Ok(())
}

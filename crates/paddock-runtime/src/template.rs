//! Templates: the read-only lower layers of a sandbox's root, plus host directories bound in,
//! and the defaults of its processes (env, working directory, user).
//!
//! The built-in `base` template is the host's `/usr` (read-only, id-mapped) under a small
//! generated root with its own `/etc`, users `root` and `user`, and the host's `/etc` pieces
//! that programs from `/usr` need (`alternatives`, the dynamic linker cache, CA
//! certificates). It needs no download and is rebuilt when its generator version changes.
//!
//! Every other template is a definition file `<data>/templates/defs/<name>.json`
//! ([`TemplateDef`]) naming layers of the content-addressed layer store
//! (`<data>/templates/layers/<hex>`, [`crate::layerstore`]), bottom first. Two templates on the
//! same base share its layers on disk. Layers are in overlayfs lower-layer format and are
//! stacked by the setup stage, each id-mapped on its own, so a sandbox starts from any
//! template as fast as from `base`: nothing is copied per sandbox. A definition with no
//! layers stands on `base` (its generated root and the host's `/usr`) with defaults of its
//! own: what a build file with only `FROM base` and default-setting instructions (`ENV`,
//! `USER`, `START`, `READY`, ...) makes.
//!
//! A template may have a start command ([`StartCommand`]) that runs as a background process
//! when a sandbox starts, and a ready check ([`ReadyCheck`]) that must pass before the create
//! answers; the server runs them (`docs/templates.md`).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_core::SetupMount;

use crate::error::{Result, RuntimeError};

/// Bumped whenever the generated content changes, so old copies are rebuilt.
const BASE_VERSION: &str = "2";

/// A template on disk.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    /// The layer directories, bottom first (the overlay's lower layers).
    pub layers: Vec<PathBuf>,
    /// Layer ids (`sha256:<hex>`, or `snapshot:<name>` for a snapshot's layer), bottom
    /// first; empty for `base`.
    pub layer_ids: Vec<String>,
    /// For each of `layers`, the host uid its owners are based at: 0 for template ids, the
    /// snapshotted sandbox's first host uid for a snapshot's layer (`SetupConfig::lower_id_bases`).
    pub id_bases: Vec<u32>,
    /// Host directories bound read-only into the root.
    pub binds: Vec<SetupMount>,
    /// Users the template defines, by name.
    pub users: Vec<String>,
    /// Defaults of the template's processes.
    pub config: TemplateConfig,
    /// Where it came from (`built-in`, `image 127.0.0.1:5000/app:1@sha256:...`, `build`, ...).
    pub source: String,
    pub created_unix_ms: u64,
    /// What the template is a snapshot of (None: not a snapshot).
    pub snapshot: Option<SnapshotDef>,
}

/// A snapshot: a read-only btrfs snapshot of a sandbox's writable layer
/// (`<data>/layers/snapshots/<name>`) standing on the layers of the template that sandbox was
/// made from, usable as a template. Its definition is `<data>/templates/snapshots/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDef {
    /// The snapshot's (and its template's) name.
    pub name: String,
    /// The template the snapshotted sandbox was made from (itself possibly a snapshot).
    pub parent: String,
    /// The sandbox it was taken of.
    pub sandbox: String,
    /// The first host uid of that sandbox's range: the owners of the snapshot's files.
    pub id_base: u32,
    pub created_unix_ms: u64,
}

/// The template of snapshot `def`, whose layer is `dir`, on top of template `parent`.
pub fn load_snapshot(def: SnapshotDef, dir: PathBuf, parent: &Template) -> Result<Template> {
    if !valid_name(&def.name) || def.name == "base" {
        return Err(RuntimeError::InvalidArgument {
            what: "snapshot name",
            reason: format!("invalid snapshot name {:?}", def.name),
        });
    }
    if !dir.is_dir() {
        return Err(RuntimeError::InvalidArgument {
            what: "snapshot",
            reason: format!(
                "snapshot {}: its layer {} is missing",
                def.name,
                dir.display()
            ),
        });
    }
    let mut layers = parent.layers.clone();
    layers.push(dir);
    let mut id_bases = parent.id_bases.clone();
    id_bases.push(def.id_base);
    let mut layer_ids = parent.layer_ids.clone();
    layer_ids.push(format!("snapshot:{}", def.name));
    let users = users_of(&layers);
    Ok(Template {
        name: def.name.clone(),
        layers,
        layer_ids,
        id_bases,
        binds: parent.binds.clone(),
        users,
        config: parent.config.clone(),
        source: format!(
            "snapshot of sandbox {} (template {})",
            def.sandbox, def.parent
        ),
        created_unix_ms: def.created_unix_ms,
        snapshot: Some(def),
    })
}

/// Defaults a template gives its sandboxes (from an image config or a build file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConfig {
    /// Environment of every process, before the sandbox's own env vars.
    pub env: std::collections::BTreeMap<String, String>,
    /// Default working directory of processes.
    pub workdir: Option<String>,
    /// Default user of processes (must exist in the template).
    pub user: Option<String>,
    /// The image's (or the build file's) `ENTRYPOINT` and `CMD`. An image's are kept as
    /// information only and never run; a build file's make [`TemplateConfig::start`].
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Ports the template's programs listen on (documentation, like `EXPOSE`).
    pub ports: Vec<u16>,
    /// What runs in the background when a sandbox of this template starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<StartCommand>,
    /// What must succeed before a create of this template answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyCheck>,
    /// The isolation backend of sandboxes that ask for none (a build file's `ISOLATION`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<paddock_core::Isolation>,
    /// Resource limits a sandbox of this template gets when its create names none (the
    /// build file's `LIMITS`); the server's defaults otherwise.
    #[serde(skip_serializing_if = "TemplateLimits::is_empty")]
    pub limits: TemplateLimits,
}

/// A template's default limits: each `None` leaves the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl TemplateLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == TemplateLimits::default()
    }

    /// `defaults` with this template's limits in place of the server's.
    pub fn apply(&self, defaults: &paddock_core::Limits) -> paddock_core::Limits {
        paddock_core::Limits {
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes),
            pids: self.pids.unwrap_or(defaults.pids),
            disk_bytes: self.disk_bytes.unwrap_or(defaults.disk_bytes),
            ..defaults.clone()
        }
    }
}

/// A template's start command: an argv (a build file's shell form is `/bin/sh -c ...`), run
/// as `user` in `cwd` (the build file's `USER` and `WORKDIR` where it was set; `None`: the
/// sandbox's defaults), with the sandbox's environment (the template's `ENV`, then the
/// sandbox's own variables).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartCommand {
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Default time a ready check may take.
pub const READY_TIMEOUT_DEFAULT_MS: u64 = 30_000;
/// Longest time a ready check may take.
pub const READY_TIMEOUT_MAX_MS: u64 = 600_000;

/// A template's ready check: exactly one of a shell command polled until it exits 0, or a
/// TCP port on the sandbox's own `127.0.0.1` that must accept a connection, within
/// `timeout_ms` (1 to [`READY_TIMEOUT_MAX_MS`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "ready_timeout_default")]
    pub timeout_ms: u64,
}

fn ready_timeout_default() -> u64 {
    READY_TIMEOUT_DEFAULT_MS
}

impl ReadyCheck {
    /// Checks the fields: exactly one of `cmd` (non-empty) and `port` (not 0), a timeout in
    /// range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match (&self.cmd, self.port) {
            (Some(c), None) if !c.trim().is_empty() => {}
            (None, Some(p)) if p > 0 => {}
            (Some(_), None) => return Err("the ready command is empty".into()),
            (None, Some(_)) => return Err("the ready port must be 1 to 65535".into()),
            _ => return Err("a ready check has exactly one of a command and a port".into()),
        }
        if self.timeout_ms == 0 || self.timeout_ms > READY_TIMEOUT_MAX_MS {
            return Err(format!(
                "the ready timeout must be more than 0 and at most {} s",
                READY_TIMEOUT_MAX_MS / 1000
            ));
        }
        Ok(())
    }
}

impl TemplateConfig {
    /// Checks the start command and the ready check.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(s) = &self.start
            && s.cmd.first().is_none_or(String::is_empty)
        {
            return Err("the start command is empty".into());
        }
        if let Some(r) = &self.ready {
            r.validate()?;
        }
        Ok(())
    }
}

/// A template definition file: `<data>/templates/defs/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    pub name: String,
    /// Layer ids, bottom first.
    pub layers: Vec<String>,
    #[serde(default)]
    pub config: TemplateConfig,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub created_unix_ms: u64,
}

/// Whether `name` can name a template: 1 to 63 of `[a-z0-9._-]`, starting with a letter or
/// digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// The directory of layer `id` (`sha256:<hex>`) in the layer store under `layers`.
pub fn layer_dir(layers: &Path, id: &str) -> Option<PathBuf> {
    let hex = id.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| layers.join(hex))
}

/// Users in the top-most `etc/passwd` of the layers (bottom first).
pub fn users_of(layers: &[PathBuf]) -> Vec<String> {
    for l in layers.iter().rev() {
        if let Ok(text) = fs::read_to_string(l.join("etc/passwd")) {
            return text
                .lines()
                .filter_map(|line| line.split(':').next())
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
        }
    }
    Vec::new()
}

/// The uid and gid of `name` in the top-most `etc/passwd` of the layers (bottom first).
pub fn user_ids(layers: &[PathBuf], name: &str) -> Option<(u32, u32)> {
    for l in layers.iter().rev() {
        if let Ok(text) = fs::read_to_string(l.join("etc/passwd")) {
            return text.lines().find_map(|line| {
                let mut f = line.split(':');
                (f.next()? == name).then_some(())?;
                let _password = f.next()?;
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            });
        }
    }
    None
}

/// Loads a definition into a [`Template`], checking that its layers exist. A definition
/// without layers stands on `base` (its root and binds).
pub fn load(def: TemplateDef, layers_root: &Path, base: &Template) -> Result<Template> {
    if !valid_name(&def.name) || def.name == "base" {
        return Err(RuntimeError::InvalidArgument {
            what: "template name",
            reason: format!("invalid template name {:?}", def.name),
        });
    }
    if let Err(e) = def.config.validate() {
        return Err(RuntimeError::InvalidArgument {
            what: "template",
            reason: format!("template {}: {e}", def.name),
        });
    }
    if def.layers.is_empty() {
        check_users(&def, &base.users)?;
        return Ok(Template {
            name: def.name,
            layers: base.layers.clone(),
            layer_ids: Vec::new(),
            id_bases: base.id_bases.clone(),
            binds: base.binds.clone(),
            users: base.users.clone(),
            config: def.config,
            source: def.source,
            created_unix_ms: def.created_unix_ms,
            snapshot: None,
        });
    }
    let mut dirs = Vec::new();
    for id in &def.layers {
        let d = layer_dir(layers_root, id)
            .filter(|d| d.is_dir())
            .ok_or_else(|| RuntimeError::InvalidArgument {
                what: "template",
                reason: format!(
                    "template {}: layer {id} is not in the layer store",
                    def.name
                ),
            })?;
        dirs.push(d);
    }
    let users = users_of(&dirs);
    check_users(&def, &users)?;
    Ok(Template {
        name: def.name,
        id_bases: vec![0; dirs.len()],
        layers: dirs,
        layer_ids: def.layers,
        binds: Vec::new(),
        users,
        config: def.config,
        source: def.source,
        created_unix_ms: def.created_unix_ms,
        snapshot: None,
    })
}

/// Checks that the users a definition names (its default user, its start command's) exist
/// in the template. Image configs may name a user as `name`, `uid` or `uid:gid`; names must
/// exist.
fn check_users(def: &TemplateDef, users: &[String]) -> Result<()> {
    let start_user = def.config.start.as_ref().and_then(|s| s.user.as_ref());
    for (what, u) in [
        ("user", def.config.user.as_ref()),
        ("start command's user", start_user),
    ] {
        let named = u
            .map(|u| u.split(':').next().unwrap_or(u))
            .filter(|u| u.parse::<u32>().is_err());
        if let Some(u) = named.filter(|u| !users.iter().any(|x| x == u)) {
            return Err(RuntimeError::InvalidArgument {
                what: "template",
                reason: format!(
                    "template {}: its {what} {u:?} is not in its /etc/passwd",
                    def.name
                ),
            });
        }
    }
    Ok(())
}

/// Host `/etc` entries copied into `base` as they are.
const HOST_ETC: &[&str] = &[
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "bash.bashrc",
    "inputrc",
    "localtime",
    "timezone",
    "os-release",
    "debian_version",
    "mime.types",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "networks",
    "python3",
    "python3.11",
    "login.defs",
    "locale.alias",
    "magic",
    "magic.mime",
    "skel",
    "profile.d",
    "environment",
    "perl",
    "gitconfig",
];

/// Returns the `base` template under `dir`, generating it first if missing or outdated.
pub fn base(dir: &Path) -> Result<Template> {
    let root = dir.join("base");
    let stamp = root.join("version");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(BASE_VERSION) {
        let tmp = dir.join(".base.tmp");
        let _ = fs::remove_dir_all(&tmp);
        build_base(&tmp.join("rootfs")).map_err(RuntimeError::io("generating base template"))?;
        fs::write(tmp.join("version"), BASE_VERSION)
            .map_err(RuntimeError::io("writing template stamp"))?;
        let _ = fs::remove_dir_all(&root);
        fs::rename(&tmp, &root).map_err(RuntimeError::io("installing base template"))?;
    }
    Ok(base_unbuilt(dir))
}

/// The `base` template of templates directory `dir` without making its root filesystem
/// (a detached runtime lists it and never starts a sandbox on it).
pub fn base_unbuilt(dir: &Path) -> Template {
    let rootfs = dir.join("base").join("rootfs");
    Template {
        name: "base".into(),
        layers: vec![rootfs],
        layer_ids: Vec::new(),
        binds: vec![SetupMount {
            source: "/usr".into(),
            target: "/usr".into(),
        }],
        users: vec!["root".into(), "user".into()],
        config: TemplateConfig::default(),
        source: "built-in: the host's /usr".into(),
        created_unix_ms: 0,
        id_bases: vec![0],
        snapshot: None,
    }
}

fn build_base(r: &Path) -> std::io::Result<()> {
    for d in [
        "usr",
        "etc",
        "home",
        "root",
        "tmp",
        "var/tmp",
        "var/log",
        "var/cache",
        "var/lib",
        "run",
        "proc",
        "dev",
        "sys",
        "opt",
        "srv",
        "mnt",
        "media",
    ] {
        fs::create_dir_all(r.join(d))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("lib32", "usr/lib32"),
        ("libx32", "usr/libx32"),
    ] {
        if Path::new("/").join(target).exists() {
            symlink(target, r.join(link))?;
        }
    }
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(r.join("var/tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(r.join("root"), fs::Permissions::from_mode(0o700))?;
    let etc = r.join("etc");
    for name in HOST_ETC {
        let src = Path::new("/etc").join(name);
        if src.symlink_metadata().is_ok() {
            let st = Command::new("cp")
                .arg("-a")
                .arg(&src)
                .arg(etc.join(name))
                .status()?;
            if !st.success() {
                return Err(std::io::Error::other(format!("copying /etc/{name}")));
            }
        }
    }
    let profile = format!(
        "export PATH={}\nif [ -d /etc/profile.d ]; then\n  for i in /etc/profile.d/*.sh; do\n    [ -r \"$i\" ] && . \"$i\"\n  done\n  unset i\nfi\n",
        paddock_core::SANDBOX_PATH
    );
    let files = [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        (
            "group",
            "root:x:0:\nsudo:x:27:user\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n",
        ),
        (
            "shadow",
            "root:*:19000:0:99999:7:::\nuser:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        ),
        ("hostname", "sandbox\n"),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        (
            "resolv.conf",
            "# No network: this sandbox has loopback only.\n",
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
        ),
        ("profile", profile.as_str()),
    ];
    for (name, content) in files {
        let _ = fs::remove_file(etc.join(name));
        fs::write(etc.join(name), content)?;
    }
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640))?;
    let home = r.join("home/user");
    fs::create_dir_all(&home)?;
    for f in [".bashrc", ".profile", ".bash_logout"] {
        let src = Path::new("/etc/skel").join(f);
        if src.exists() {
            fs::copy(&src, home.join(f))?;
            std::os::unix::fs::chown(home.join(f), Some(1000), Some(1000))?;
        }
    }
    std::os::unix::fs::chown(&home, Some(1000), Some(1000))?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

//! The `debian` template: a minimal Debian root filesystem made with `debootstrap`.
//!
//! The release is chosen by the caller (`suite`, default [`DEFAULT_SUITE`], the current
//! Debian stable), not taken from the host, so a template is the same on every host; the
//! mirror is the host's first configured Debian mirror, else `http://deb.debian.org/debian`.
//! debootstrap verifies the release with the host's `debian-archive-keyring`, which must know
//! the suite's signing key (bookworm's keyring package knows trixie's).
//!
//! Everything the tools print (debootstrap's stdout and stderr, the setup script in the
//! chroot) goes to the build's events and so to its log, never to the server's own stderr.
//! Both pipes are read at once, so neither can fill up and stall debootstrap.

use std::process::Stdio;
use std::sync::Arc;

use paddock_runtime::Runtime;
use paddock_runtime::template::{TemplateConfig, TemplateDef};
use tokio::io::AsyncBufReadExt as _;

use super::BuildEvent;

/// The Debian release `bootstrap` makes unless told otherwise: the current stable.
pub const DEFAULT_SUITE: &str = "trixie";

/// A Debian suite name that this host's debootstrap has a script for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite(String);

impl Suite {
    /// Checks `name`: 1 to 32 of `a-z`, `0-9`, `-`, and a script in
    /// `/usr/share/debootstrap/scripts/` (so a typo is a clear 400, not a failed bootstrap).
    pub fn parse(name: &str) -> Result<Suite, String> {
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "suite {name:?} is not a Debian release name (e.g. {DEFAULT_SUITE})"
            ));
        }
        let scripts = std::path::Path::new("/usr/share/debootstrap/scripts");
        if scripts.is_dir() && !scripts.join(name).exists() {
            return Err(format!(
                "this server's debootstrap does not know the suite {name:?} (it knows those in {})",
                scripts.display()
            ));
        }
        Ok(Suite(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Suite {
    fn default() -> Self {
        Suite(DEFAULT_SUITE.to_owned())
    }
}

/// Makes the `debian` template: a minimal Debian `suite` root filesystem from the host's
/// configured Debian mirror with `debootstrap --variant=minbase`, plus the user `user` (uid
/// 1000, group `sudo`) that E2B clients expect, as one layer. Everything the tools print goes
/// to `tx` as `Output` events of step 1.
pub async fn bootstrap_debian(
    rt: &Arc<Runtime>,
    name: &str,
    suite: &Suite,
    tx: &tokio::sync::mpsc::Sender<BuildEvent>,
) -> Result<TemplateDef, BuildEvent> {
    let started = std::time::Instant::now();
    let fail = |message: String| BuildEvent::Error {
        step: Some(1),
        line: None,
        message,
    };
    let suite = suite.as_str();
    let mirror = host_mirror();
    let _ = tx
        .send(BuildEvent::Step {
            step: 1,
            of: 1,
            line: 0,
            instruction: format!("debootstrap --variant=minbase {suite} {mirror}"),
            cached: false,
        })
        .await;
    let root = rt.layers_root();
    tokio::fs::create_dir_all(&root)
        .await
        .map_err(|e| fail(format!("creating the layer store: {e}")))?;
    let tmp = root.join(format!(
        ".build-debootstrap-{}",
        paddock_core::SandboxId::random()
    ));
    let mut child = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", "--include=sudo,ca-certificates", suite])
        .arg(&tmp)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            fail(format!(
                "running debootstrap: {e} (apt-get install debootstrap)"
            ))
        })?;
    // Both pipes at once: reading one to its end first could leave debootstrap blocked on
    // a full other one.
    let out = forward_lines(child.stdout.take(), tx.clone());
    let err = forward_lines(child.stderr.take(), tx.clone());
    let (_, err_lines) = tokio::join!(out, err);
    let st = child
        .wait()
        .await
        .map_err(|e| fail(format!("waiting for debootstrap: {e}")))?;
    let finish = async {
        if !st.success() {
            let log = tokio::fs::read_to_string(tmp.join("debootstrap/debootstrap.log"))
                .await
                .unwrap_or_default();
            let mut tail: Vec<&str> = log.lines().rev().take(15).collect();
            tail.reverse();
            if tail.is_empty() {
                tail = err_lines
                    .iter()
                    .rev()
                    .take(15)
                    .rev()
                    .map(String::as_str)
                    .collect();
            }
            return Err(fail(format!(
                "debootstrap {suite} from {mirror} failed ({st}):\n{}",
                tail.join("\n")
            )));
        }
        // The host's own CAs (a corporate or egress proxy's) are trusted in the template too,
        // or package managers inside it could not reach what the host reaches.
        let local_cas = std::path::Path::new("/usr/local/share/ca-certificates");
        if local_cas.is_dir() {
            let mut cmd = tokio::process::Command::new("cp");
            cmd.arg("-a")
                .arg(format!("{}/.", local_cas.display()))
                .arg(tmp.join("usr/local/share/ca-certificates"));
            run_logged(cmd, tx)
                .await
                .map_err(|e| fail(format!("copying the host's CAs: {e}")))?;
        }
        let script = "set -e
update-ca-certificates
useradd --create-home --uid 1000 --shell /bin/bash user
usermod -aG sudo user
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
printf '# No network: this sandbox has loopback only.\\n' > /etc/resolv.conf";
        let mut cmd = tokio::process::Command::new("chroot");
        cmd.arg(&tmp).args(["/bin/sh", "-c", script]);
        run_logged(cmd, tx)
            .await
            .map_err(|e| fail(format!("adding the user: {e}")))?;
        // Content address: the hash of the suite, mirror and day is not content, so hash the
        // tree's listing (paths, sizes, modes) instead: two bootstraps that differ land apart.
        let listing = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("find . -xdev -printf '%p %s %m %U %G\\n' | sort | sha256sum")
            .current_dir(&tmp)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| fail(format!("hashing the root filesystem: {e}")))?;
        let key = String::from_utf8_lossy(&listing.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if key.len() != 64 {
            return Err(fail(format!(
                "hashing the root filesystem failed: {}",
                String::from_utf8_lossy(&listing.stderr).trim()
            )));
        }
        let dst = root.join(&key);
        if dst.exists() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        } else {
            tokio::fs::rename(&tmp, &dst)
                .await
                .map_err(|e| fail(format!("installing the layer: {e}")))?;
        }
        Ok(TemplateDef {
            name: name.to_owned(),
            layers: vec![format!("sha256:{key}")],
            config: TemplateConfig {
                user: Some("user".into()),
                workdir: Some("/home/user".into()),
                ..Default::default()
            },
            source: format!("debootstrap {suite} {mirror}"),
            created_unix_ms: crate::now_unix_ms(),
        })
    }
    .await;
    if finish.is_err() {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
    }
    let def = finish?;
    let _ = tx
        .send(BuildEvent::Done {
            template: name.to_owned(),
            layers: 1,
            steps: 1,
            cached_steps: 0,
            seconds: started.elapsed().as_secs_f64(),
        })
        .await;
    Ok(def)
}

/// Sends each line of `pipe` as an `Output` event of step 1; returns the last 50 lines.
async fn forward_lines<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    tx: tokio::sync::mpsc::Sender<BuildEvent>,
) -> Vec<String> {
    let mut tail = std::collections::VecDeque::new();
    let Some(pipe) = pipe else {
        return Vec::new();
    };
    let mut r = tokio::io::BufReader::new(pipe).lines();
    while let Ok(Some(l)) = r.next_line().await {
        if tail.len() == 50 {
            tail.pop_front();
        }
        tail.push_back(l.clone());
        let _ = tx
            .send(BuildEvent::Output {
                step: 1,
                text: format!("{l}\n"),
            })
            .await;
    }
    tail.into()
}

/// Runs `cmd` with its output (both streams) sent to the build's events; an error names the
/// exit status and the output's last lines.
async fn run_logged(
    mut cmd: tokio::process::Command,
    tx: &tokio::sync::mpsc::Sender<BuildEvent>,
) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !text.is_empty() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = tx
            .send(BuildEvent::Output {
                step: 1,
                text: text.clone(),
            })
            .await;
    }
    if out.status.success() {
        Ok(())
    } else {
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        Err(format!(
            "{}:\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// The host's first configured Debian mirror (deb822 `debian.sources`, else the classic
/// `sources.list`), else `http://deb.debian.org/debian`.
fn host_mirror() -> String {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("URIs:")
                    .map(|u| u.split_whitespace().next().unwrap_or("").to_owned())
            })
        });
    let classic = || {
        std::fs::read_to_string("/etc/apt/sources.list")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some("deb"))
                        .then(|| w.find(|x| x.starts_with("http")).map(str::to_owned))
                        .flatten()
                })
            })
    };
    deb822
        .or_else(classic)
        .filter(|m| m.starts_with("http") && !m.contains("security"))
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

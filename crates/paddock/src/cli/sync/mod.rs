//! `paddock sync LOCAL ID:REMOTE` and `paddock sync ID:REMOTE LOCAL`: make a directory on
//! one side match the other, sending only what changed.
//!
//! 1. List both sides: the local tree by walking it ([`tree::walk_local`]), the remote one
//!    with one `find -printf` exec ([`remote::list`]). The ignore rules
//!    (`.paddockignore`, `.gitignore`, `--exclude`, `.git`) filter both lists, so ignored
//!    files are neither sent nor deleted.
//! 2. Compare type, size and mtime; files of equal size but different mtime are hashed on
//!    both sides (SHA-256 locally, `sha256sum` in the sandbox) and sent only if different.
//! 3. Uploads: check every file to send for credentials ([`secrets`]) and refuse (exit 3,
//!    nothing sent) unless each is `--allow-secret`ed or `--exclude`d.
//! 4. Apply: remove what `--delete` (or a type change) asks for, then one tar stream through
//!    the archive route: `PUT .../archive` of the changed files for uploads; for downloads
//!    the changed files are hard-linked into a staging directory in the sandbox, fetched
//!    with `GET .../archive` and extracted locally (the staging directory is removed).
//!
//! `--watch` (uploads only) then re-syncs on every local change ([`watch`]).
//! The rules, limits and exit codes are in `docs/sync.md`.

mod remote;
mod secrets;
mod tree;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use super::api::Api;
use super::files;
use super::{Conn, format, write_stdout};
use tree::{Kind, Plan, Rules, Tree};

/// Exit code when files that look like credentials stop an upload.
pub(crate) const EXIT_SECRETS: i32 = 3;
/// Remote ignore files larger than this are an error (downloads read them into memory).
const MAX_IGNORE_FILE: u64 = 1 << 20;

/// `paddock sync`.
#[derive(Args, Debug)]
#[command(
    after_help = "Ignored: what .paddockignore and .gitignore files in the tree name, --exclude paths, .git.\n\
                  Uploads refuse files that look like credentials (named on stderr, nothing sent).\n\
                  Exit codes: 0 synced, 1 error, 3 credentials found. Details: docs/sync.md."
)]
pub(crate) struct SyncArgs {
    /// Source: a local directory, or ID:REMOTE_DIR (a local path with a colon: write ./a:b).
    pub(crate) src: String,
    /// Destination: ID:REMOTE_DIR, or a local directory (created if missing).
    pub(crate) dst: String,
    /// Also remove destination files that are not in the source (ignored files are kept).
    #[arg(long)]
    pub(crate) delete: bool,
    /// Print what would be sent and deleted; change nothing.
    #[arg(long, short = 'n')]
    pub(crate) dry_run: bool,
    /// After the first sync, re-sync on every local change (LOCAL → sandbox only).
    #[arg(long)]
    pub(crate) watch: bool,
    /// Skip this path (relative to the local directory; a directory skips all below it).
    #[arg(long, value_name = "PATH")]
    pub(crate) exclude: Vec<String>,
    /// Send this file even though it looks like a credential.
    #[arg(long, value_name = "PATH")]
    pub(crate) allow_secret: Vec<String>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// One sync, fully resolved.
pub(crate) struct Job {
    api: Api,
    id: String,
    local: PathBuf,
    remote: String,
    upload: bool,
    delete: bool,
    dry_run: bool,
    exclude: Vec<String>,
    allow_secret: Vec<String>,
}

/// How a sync ended.
pub(crate) enum Report {
    Done(Plan),
    /// Files that look like credentials, with why; nothing was sent.
    Refused(Vec<(String, String)>),
}

/// `ID:PATH` as (id, path); `None` for a local path.
fn split_remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some((id, path))
}

/// (upload?, local, id, remote) from the two ends.
fn ends(src: &str, dst: &str) -> Result<(bool, PathBuf, String, String)> {
    let (up, local, id, remote) = match (split_remote(src), split_remote(dst)) {
        (None, Some((id, r))) => (true, src, id, r),
        (Some((id, r)), None) => (false, dst, id, r),
        (Some(_), Some(_)) => bail!("both ends are in a sandbox; one must be a local directory"),
        (None, None) => bail!(
            "neither end is in a sandbox: write the remote one as ID:PATH (e.g. {src} ID:/home/user/project)"
        ),
    };
    if remote.is_empty() {
        bail!("the remote path after {id}: is empty");
    }
    if local.is_empty() {
        bail!("the local path is empty");
    }
    Ok((up, PathBuf::from(local), id.to_owned(), remote.to_owned()))
}

/// Runs `paddock sync`; the exit code is 0, or [`EXIT_SECRETS`] when credentials stopped it.
pub(crate) async fn run(a: SyncArgs) -> Result<i32> {
    let (upload, local, id, remote) = ends(&a.src, &a.dst)?;
    if a.watch && !upload {
        bail!("--watch syncs a local directory into a sandbox only (LOCAL ID:REMOTE)");
    }
    if a.watch && a.dry_run {
        bail!("--watch and --dry-run do not go together");
    }
    let rel = |v: &[String]| -> Result<Vec<String>> {
        v.iter().map(|x| tree::relative_arg(&local, x)).collect()
    };
    let job = Job {
        api: Api::new(&a.conn)?,
        exclude: rel(&a.exclude)?,
        allow_secret: rel(&a.allow_secret)?,
        id,
        local,
        remote,
        upload,
        delete: a.delete,
        dry_run: a.dry_run,
    };
    let code = print_report(&job, job.sync().await?, false)?;
    if a.watch {
        return watch::watch(&job).await;
    }
    Ok(code)
}

/// Prints a sync's outcome; returns its exit code. In `quiet` mode (watching) an
/// up-to-date sync prints nothing.
fn print_report(job: &Job, report: Report, quiet: bool) -> Result<i32> {
    match report {
        Report::Done(plan) => {
            if !(quiet && plan.is_empty()) {
                write_stdout(&describe(&plan, job.upload, job.dry_run))?;
            }
            Ok(0)
        }
        Report::Refused(found) => {
            let mut s = format!(
                "paddock: refusing to send {} that look{} like credentials:\n",
                plural(found.len(), "file"),
                if found.len() == 1 { "s" } else { "" }
            );
            for (rel, why) in &found {
                s.push_str(&format!("  {rel}: {why}\n"));
            }
            s.push_str(
                "Nothing was sent. Skip a file with --exclude PATH, or send it anyway with --allow-secret PATH.\n",
            );
            eprint!("{s}");
            Ok(EXIT_SECRETS)
        }
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The summary (and, for a dry run, the list of actions).
pub(crate) fn describe(plan: &Plan, upload: bool, dry_run: bool) -> String {
    let mut out = String::new();
    if dry_run {
        for r in &plan.replace {
            out.push_str(&format!("replace {r}\n"));
        }
        for r in &plan.delete {
            out.push_str(&format!("delete {r}\n"));
        }
        for r in &plan.mkdir {
            out.push_str(&format!("mkdir {r}/\n"));
        }
        for r in &plan.send {
            out.push_str(&format!(
                "{} {r}\n",
                if upload { "send" } else { "receive" }
            ));
        }
    }
    if plan.is_empty() {
        out.push_str(&format!(
            "up to date ({} unchanged)\n",
            plural(plan.unchanged, "file")
        ));
        return out;
    }
    let would = if dry_run { "would " } else { "" };
    let verb = match (upload, dry_run) {
        (true, false) => "sent",
        (true, true) => "send",
        (false, false) => "received",
        (false, true) => "receive",
    };
    let mut parts = vec![format!(
        "{would}{verb} {} ({})",
        plural(plan.send.len(), "file"),
        format::bytes(plan.bytes)
    )];
    if !plan.mkdir.is_empty() {
        parts.push(format!(
            "{}{} {}",
            would,
            if dry_run { "create" } else { "created" },
            plural(plan.mkdir.len(), "directory").replace("directorys", "directories")
        ));
    }
    if !plan.delete.is_empty() {
        parts.push(format!(
            "{}{} {}",
            would,
            if dry_run { "delete" } else { "deleted" },
            plan.delete.len()
        ));
    }
    parts.push(format!("{} unchanged", plan.unchanged));
    out.push_str(&parts.join(", "));
    out.push('\n');
    out
}

/// Whether `rel` is `p` or below it.
fn covered(rel: &str, list: &[String]) -> bool {
    list.iter().any(|p| {
        rel == p
            || rel
                .strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with('/'))
    })
}

/// Local SHA-256 of `paths` under `root`, on a blocking thread.
async fn local_hashes(root: &Path, paths: &[String]) -> Result<HashMap<String, String>> {
    let root = root.to_path_buf();
    let paths = paths.to_vec();
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|p| {
                let h = tree::sha256_file(&root.join(&p))
                    .with_context(|| format!("hashing {}", root.join(&p).display()))?;
                Ok((p, h))
            })
            .collect()
    })
    .await
    .map_err(|e| anyhow!("hashing: {e}"))?
}

impl Job {
    /// One sync in this job's direction.
    pub(crate) async fn sync(&self) -> Result<Report> {
        if self.upload {
            self.sync_up().await
        } else {
            self.sync_down().await
        }
    }

    /// Walks the local directory with `rules` on a blocking thread.
    async fn walk(&self, rules: Rules) -> Result<(Tree, Rules)> {
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || {
            let mut rules = rules;
            tree::walk_local(&local, &mut rules).map(|t| (t, rules))
        })
        .await
        .map_err(|e| anyhow!("listing: {e}"))?
    }

    async fn sync_up(&self) -> Result<Report> {
        let meta =
            std::fs::metadata(&self.local).with_context(|| format!("{}", self.local.display()))?;
        if !meta.is_dir() {
            bail!(
                "{} is not a directory (sync copies directories; use paddock upload for a file)",
                self.local.display()
            );
        }
        let (src, rules) = self.walk(Rules::new(self.exclude.clone())).await?;
        let dst = remote::list(&self.api, &self.id, &self.remote)
            .await?
            .map(|t| rules.filter(t))
            .unwrap_or_default();
        let (mut plan, to_hash) = tree::compare(&src, &dst, self.delete);
        if !to_hash.is_empty() {
            let mine = local_hashes(&self.local, &to_hash).await?;
            let theirs = remote::hashes(&self.api, &self.id, &self.remote, &to_hash).await?;
            let changed = tree::differing(&to_hash, &mine, &theirs);
            plan.resolve(&src, &to_hash, &changed);
        }
        let found = self.credentials(&src, &plan).await?;
        if !found.is_empty() {
            return Ok(Report::Refused(found));
        }
        if self.dry_run {
            return Ok(Report::Done(plan));
        }
        let mut gone = plan.replace.clone();
        gone.extend(plan.delete.iter().cloned());
        if !gone.is_empty() {
            remote::remove(&self.api, &self.id, &self.remote, &gone).await?;
        }
        let mut items: Vec<(String, bool)> = plan
            .mkdir
            .iter()
            .map(|r| (r.clone(), true))
            .chain(plan.send.iter().map(|r| (r.clone(), false)))
            .collect();
        if !items.is_empty() {
            // Sorted, every directory comes before what is in it.
            items.sort();
            let estimate = 1024
                + items.len() as u64 * 512
                + plan
                    .send
                    .iter()
                    .map(|r| src.get(r).map_or(0, |e| e.size.div_ceil(512) * 512))
                    .sum::<u64>();
            let local = self.local.clone();
            let what = self.local.display().to_string();
            files::put_tar(
                &self.api,
                &self.id,
                &self.remote,
                &files::display_name(&self.local),
                &what,
                estimate,
                move |w| {
                    let mut b = tar::Builder::new(w);
                    b.follow_symlinks(false);
                    for (rel, is_dir) in &items {
                        let path = local.join(rel);
                        if *is_dir {
                            b.append_dir(rel, &path)?;
                        } else {
                            b.append_path_with_name(&path, rel)?;
                        }
                    }
                    b.into_inner()
                },
            )
            .await?;
        }
        Ok(Report::Done(plan))
    }

    /// The files to send that look like credentials and are not `--allow-secret`ed.
    async fn credentials(&self, src: &Tree, plan: &Plan) -> Result<Vec<(String, String)>> {
        let files: Vec<String> = plan
            .send
            .iter()
            .filter(|r| src.get(*r).is_some_and(|e| e.kind == Kind::File))
            .filter(|r| !covered(r, &self.allow_secret))
            .cloned()
            .collect();
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for rel in files {
                let path = local.join(&rel);
                if let Some(why) = secrets::check_file(&path, &rel)
                    .with_context(|| format!("reading {}", path.display()))?
                {
                    found.push((rel, why));
                }
            }
            Ok(found)
        })
        .await
        .map_err(|e| anyhow!("checking for credentials: {e}"))?
    }

    /// The rules of a download: `--exclude`, then the remote tree's ignore files (read from
    /// the sandbox), then, while walking, the local ones.
    async fn remote_rules(&self, raw: &Tree) -> Result<Rules> {
        let mut rules = Rules::new(self.exclude.clone());
        let mut files: Vec<(String, usize, String)> = Vec::new();
        for (rel, e) in raw {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            if let Some(i) = tree::IGNORE_FILES.iter().position(|f| *f == name)
                && e.kind == Kind::File
            {
                if e.size > MAX_IGNORE_FILE {
                    bail!(
                        "{}/{rel} is larger than {} bytes",
                        self.remote,
                        MAX_IGNORE_FILE
                    );
                }
                files.push((tree::parent(rel).to_owned(), i, rel.clone()));
            }
        }
        files.sort();
        for (dir, i, rel) in files {
            let resp = self
                .api
                .send(
                    self.api
                        .request(
                            reqwest::Method::GET,
                            self.api.url(&["v1", "sandboxes", &self.id, "files"]),
                        )
                        .query(&[("path", format!("{}/{rel}", self.remote))]),
                )
                .await?;
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.api.transport_error(e))?;
            rules.add(&dir, tree::IGNORE_FILES[i], &String::from_utf8_lossy(&body))?;
        }
        Ok(rules)
    }

    async fn sync_down(&self) -> Result<Report> {
        if self.local.exists() && !self.local.is_dir() {
            bail!("{} exists and is not a directory", self.local.display());
        }
        let raw = remote::list(&self.api, &self.id, &self.remote)
            .await?
            .ok_or_else(|| anyhow!("{} does not exist in sandbox {}", self.remote, self.id))?;
        let rules = self.remote_rules(&raw).await?;
        let (dst, rules) = if self.local.is_dir() {
            self.walk(rules).await?
        } else {
            (Tree::new(), rules)
        };
        let src = rules.filter(raw);
        let (mut plan, to_hash) = tree::compare(&src, &dst, self.delete);
        if !to_hash.is_empty() {
            let theirs = remote::hashes(&self.api, &self.id, &self.remote, &to_hash).await?;
            let mine = local_hashes(&self.local, &to_hash).await?;
            let changed = tree::differing(&to_hash, &theirs, &mine);
            plan.resolve(&src, &to_hash, &changed);
        }
        if self.dry_run {
            return Ok(Report::Done(plan));
        }
        std::fs::create_dir_all(&self.local)
            .with_context(|| format!("creating {}", self.local.display()))?;
        // Removed first: what --delete asks for, paths whose type changes, and local
        // symlinks about to be replaced (so nothing is written through them).
        let mut gone: Vec<&String> = plan.replace.iter().chain(&plan.delete).collect();
        gone.extend(
            plan.send
                .iter()
                .filter(|r| dst.get(*r).is_some_and(|e| matches!(e.kind, Kind::Link(_)))),
        );
        for rel in gone {
            if !files::safe_entry_path(Path::new(rel)) {
                bail!("refusing remote path {rel:?}");
            }
            let p = self.local.join(rel);
            let res = match p.symlink_metadata() {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => Ok(()),
            };
            res.with_context(|| format!("removing {}", p.display()))?;
        }
        for rel in &plan.mkdir {
            if !files::safe_entry_path(Path::new(rel)) {
                bail!("refusing remote path {rel:?}");
            }
            let p = self.local.join(rel);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        if !plan.send.is_empty() {
            let stage = remote::stage(&self.api, &self.id, &self.remote, &plan.send).await?;
            let fetched = files::download_dir(
                &self.api,
                &self.id,
                &format!("{}/{stage}", self.remote),
                &self.local,
            )
            .await;
            let cleaned = remote::remove(&self.api, &self.id, &self.remote, &[stage]).await;
            fetched?;
            cleaned?;
        }
        Ok(Report::Done(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_told_apart() {
        let (up, l, id, r) = ends("./proj", "abc123:/home/user/proj").unwrap();
        assert!(up);
        assert_eq!(
            (l.to_str().unwrap(), id.as_str(), r.as_str()),
            ("./proj", "abc123", "/home/user/proj")
        );
        let (up, l, id, r) = ends("abc123:proj", "out").unwrap();
        assert!(!up);
        assert_eq!(
            (l.to_str().unwrap(), id.as_str(), r.as_str()),
            ("out", "abc123", "proj")
        );
        assert!(ends("a", "b").is_err());
        assert!(ends("x:a", "y:b").is_err());
        assert!(
            ends("./x:a", "y:b").is_ok(),
            "./ makes a path with a colon local"
        );
        assert!(ends("dir", "id:").is_err());
    }

    #[test]
    fn summaries() {
        let mut p = Plan {
            unchanged: 4,
            ..Plan::default()
        };
        assert_eq!(
            describe(&p, true, false),
            "up to date (4 files unchanged)\n"
        );
        p.send = vec!["a".into(), "b/c".into()];
        p.bytes = 2048;
        p.delete = vec!["old".into()];
        assert_eq!(
            describe(&p, true, false),
            "sent 2 files (2 KiB), deleted 1, 4 unchanged\n"
        );
        assert_eq!(
            describe(&p, false, false),
            "received 2 files (2 KiB), deleted 1, 4 unchanged\n"
        );
        p.mkdir = vec!["d".into()];
        assert_eq!(
            describe(&p, true, true),
            "delete old\nmkdir d/\nsend a\nsend b/c\nwould send 2 files (2 KiB), would create 1 directory, would delete 1, 4 unchanged\n"
        );
    }

    #[test]
    fn allowed_paths_cover_their_subtrees() {
        let l = vec!["keys".to_owned(), ".env".to_owned()];
        assert!(covered(".env", &l));
        assert!(covered("keys/id_rsa", &l));
        assert!(!covered("keys2/id_rsa", &l));
        assert!(!covered("sub/.env", &l));
    }
}

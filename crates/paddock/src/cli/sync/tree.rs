//! Trees to compare, the ignore rules that filter them, and the plan that turns a source
//! tree into a destination tree.
//!
//! A tree maps `/`-separated paths relative to the synced directory to entries (regular
//! files, directories, symlinks; other file types are skipped). Paths sort so that a
//! directory comes before everything below it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};

/// The ignore files read in every directory of the synced tree, highest precedence first.
pub(crate) const IGNORE_FILES: [&str; 2] = [".paddockignore", ".gitignore"];
/// Directory names never synced (version-control metadata).
pub(crate) const ALWAYS_SKIPPED: [&str; 1] = [".git"];
/// Prefix of the staging directory a download uses inside the remote tree.
pub(crate) const STAGING_PREFIX: &str = ".paddock-sync.";

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Link(String),
}

/// One path of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    /// Bytes (files only; 0 otherwise).
    pub(crate) size: u64,
    /// Modification time, whole seconds since the epoch (what a tar header keeps).
    pub(crate) mtime: i64,
}

pub(crate) type Tree = BTreeMap<String, Entry>;

/// The ignore rules of a synced tree: `.paddockignore` and `.gitignore` files per
/// directory (gitignore syntax, relative to their directory, deeper files and
/// `.paddockignore` first), `--exclude` paths, and `.git`.
#[derive(Default)]
pub(crate) struct Rules {
    /// Directory (relative, "" for the top) → its matchers, highest precedence first.
    dirs: HashMap<String, Vec<Gitignore>>,
    /// `--exclude` paths (a directory excludes everything below it).
    excluded: Vec<String>,
}

/// An absolute stand-in root for the matchers, so relative paths are never confused with
/// the current directory.
fn anchor(rel: &str) -> PathBuf {
    let root = Path::new("/paddock-sync-root");
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The parent directory of a relative path ("" for a top-level name).
pub(crate) fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Rules {
    pub(crate) fn new(excluded: Vec<String>) -> Rules {
        Rules {
            dirs: HashMap::new(),
            excluded,
        }
    }

    /// Adds the ignore file `name` of directory `dir` with its `contents`. Files are added
    /// in [`IGNORE_FILES`] order within a directory.
    pub(crate) fn add(&mut self, dir: &str, name: &str, contents: &str) -> Result<()> {
        let mut b = GitignoreBuilder::new(anchor(dir));
        let from = anchor(dir).join(name);
        for line in contents.lines() {
            b.add_line(Some(from.clone()), line)
                .map_err(|e| anyhow!("{}: {e}", display_rel(dir, name)))?;
        }
        let gi = b
            .build()
            .map_err(|e| anyhow!("{}: {e}", display_rel(dir, name)))?;
        self.dirs.entry(dir.to_owned()).or_default().push(gi);
        Ok(())
    }

    /// Whether `rel` is ignored by the rules themselves (not counting its parents: callers
    /// drop everything below an ignored directory).
    pub(crate) fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if is_dir && ALWAYS_SKIPPED.contains(&name) {
            return true;
        }
        if self.excluded.iter().any(|x| {
            rel == x
                || rel
                    .strip_prefix(x.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        }) {
            return true;
        }
        let path = anchor(rel);
        let mut dir = parent(rel);
        loop {
            if let Some(ms) = self.dirs.get(dir) {
                for m in ms {
                    match m.matched(&path, is_dir) {
                        Match::Ignore(_) => return true,
                        Match::Whitelist(_) => return false,
                        Match::None => {}
                    }
                }
            }
            if dir.is_empty() {
                return false;
            }
            dir = parent(dir);
        }
    }

    /// `tree` without its ignored entries and everything below an ignored directory.
    pub(crate) fn filter(&self, tree: Tree) -> Tree {
        let mut dropped: BTreeSet<String> = BTreeSet::new();
        let mut out = Tree::new();
        for (rel, e) in tree {
            let p = parent(&rel);
            if (!p.is_empty() && (dropped.contains(p) || !out.contains_key(p)))
                || self.ignored(&rel, e.kind == Kind::Dir)
            {
                dropped.insert(rel);
                continue;
            }
            out.insert(rel, e);
        }
        out
    }
}

fn display_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The entry of a local path (not following a final symlink); `None` for other types.
fn local_entry(path: &Path) -> Result<Option<Entry>> {
    let m = path
        .symlink_metadata()
        .with_context(|| format!("{}", path.display()))?;
    let kind = if m.is_file() {
        Kind::File
    } else if m.is_dir() {
        Kind::Dir
    } else if m.file_type().is_symlink() {
        let t = std::fs::read_link(path).with_context(|| format!("{}", path.display()))?;
        Kind::Link(
            t.to_str()
                .ok_or_else(|| anyhow!("{}: the link target is not UTF-8", path.display()))?
                .to_owned(),
        )
    } else {
        return Ok(None);
    };
    Ok(Some(Entry {
        size: if kind == Kind::File { m.len() } else { 0 },
        kind,
        mtime: m.mtime(),
    }))
}

/// Lists the local directory `root`, reading the ignore files of each directory into
/// `rules` as it enters it and skipping what they ignore.
pub(crate) fn walk_local(root: &Path, rules: &mut Rules) -> Result<Tree> {
    let mut tree = Tree::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        for name in IGNORE_FILES {
            let f = abs.join(name);
            if f.is_file() {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                rules.add(&dir, name, &text)?;
            }
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(&abs).with_context(|| format!("reading {}", abs.display()))? {
            let e = e.with_context(|| format!("reading {}", abs.display()))?;
            let n = e.file_name();
            let n = n
                .to_str()
                .ok_or_else(|| anyhow!("{}: the name is not UTF-8", e.path().display()))?;
            names.push(n.to_owned());
        }
        names.sort();
        for n in names {
            let rel = if dir.is_empty() {
                n.clone()
            } else {
                format!("{dir}/{n}")
            };
            let Some(entry) = local_entry(&abs.join(&n))? else {
                continue;
            };
            if rules.ignored(&rel, entry.kind == Kind::Dir) {
                continue;
            }
            if entry.kind == Kind::Dir {
                stack.push(rel.clone());
            }
            tree.insert(rel, entry);
        }
    }
    Ok(tree)
}

/// Hex SHA-256 of a local file.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What a sync does to the destination.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Files and symlinks to copy (their bytes are in `bytes`).
    pub(crate) send: Vec<String>,
    /// Directories to create.
    pub(crate) mkdir: Vec<String>,
    /// Destination paths to remove first because the source has another type there.
    pub(crate) replace: Vec<String>,
    /// Destination paths to remove (`--delete`), top-most only.
    pub(crate) delete: Vec<String>,
    /// Bytes of the files in `send`.
    pub(crate) bytes: u64,
    /// Files compared equal.
    pub(crate) unchanged: usize,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.send.is_empty() && self.mkdir.is_empty() && self.delete.is_empty()
    }
}

/// Compares the trees by type, size and mtime. Files of equal size but different mtime
/// are returned as the second value: their hashes decide ([`Plan::resolve`]).
pub(crate) fn compare(src: &Tree, dst: &Tree, delete: bool) -> (Plan, Vec<String>) {
    let mut plan = Plan::default();
    let mut to_hash = Vec::new();
    for (rel, s) in src {
        match (dst.get(rel), &s.kind) {
            (None, Kind::Dir) => plan.mkdir.push(rel.clone()),
            (None, _) => plan.send.push(rel.clone()),
            (Some(d), Kind::Dir) if d.kind == Kind::Dir => {}
            (Some(d), _) if std::mem::discriminant(&d.kind) != std::mem::discriminant(&s.kind) => {
                plan.replace.push(rel.clone());
                if s.kind == Kind::Dir {
                    plan.mkdir.push(rel.clone());
                } else {
                    plan.send.push(rel.clone());
                }
            }
            (Some(d), Kind::Link(t)) => {
                if d.kind == Kind::Link(t.clone()) {
                    plan.unchanged += 1;
                } else {
                    plan.send.push(rel.clone());
                }
            }
            (Some(d), _) => {
                if d.size != s.size {
                    plan.send.push(rel.clone());
                } else if d.mtime == s.mtime {
                    plan.unchanged += 1;
                } else {
                    to_hash.push(rel.clone());
                }
            }
        }
    }
    if delete {
        let mut gone: BTreeSet<&str> = plan.replace.iter().map(String::as_str).collect();
        for rel in dst.keys() {
            let p = parent(rel);
            if src.contains_key(rel) || (!p.is_empty() && gone.contains(p)) {
                if !src.contains_key(rel) {
                    gone.insert(rel);
                }
                continue;
            }
            gone.insert(rel);
            plan.delete.push(rel.clone());
        }
    }
    for rel in &plan.send {
        plan.bytes += src.get(rel).map_or(0, |e| e.size);
    }
    (plan, to_hash)
}

impl Plan {
    /// Adds the files whose hashes differ (`changed`) to the plan; the others of `hashed`
    /// are unchanged.
    pub(crate) fn resolve(&mut self, src: &Tree, hashed: &[String], changed: &[String]) {
        self.unchanged += hashed.len() - changed.len();
        for rel in changed {
            self.bytes += src.get(rel).map_or(0, |e| e.size);
            self.send.push(rel.clone());
        }
        self.send.sort();
    }
}

/// Which of `paths` have different hashes on both sides (a missing hash counts as
/// different).
pub(crate) fn differing(
    paths: &[String],
    a: &HashMap<String, String>,
    b: &HashMap<String, String>,
) -> Vec<String> {
    paths
        .iter()
        .filter(|p| match (a.get(*p), b.get(*p)) {
            (Some(x), Some(y)) => x != y,
            _ => true,
        })
        .cloned()
        .collect()
}

/// A `--exclude`/`--allow-secret` path as a path relative to the synced directory: given
/// relative to it, or as a path (absolute or from the current directory) inside it.
pub(crate) fn relative_arg(root: &Path, arg: &str) -> Result<String> {
    let p = Path::new(arg);
    let inside = |abs: &Path| -> Option<String> {
        let root = std::fs::canonicalize(root).ok()?;
        let abs = if abs.exists() {
            std::fs::canonicalize(abs).ok()?
        } else {
            abs.to_path_buf()
        };
        abs.strip_prefix(&root)
            .ok()
            .and_then(|r| r.to_str())
            .map(str::to_owned)
    };
    let rel = if p.is_absolute() {
        inside(p).ok_or_else(|| anyhow!("{arg} is not inside {}", root.display()))?
    } else if let Some(r) = Path::new(".").join(p).exists().then(|| inside(p)).flatten() {
        r
    } else {
        arg.to_owned()
    };
    let rel = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/");
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        bail!("{arg:?} does not name a path inside the synced directory");
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry { kind, size, mtime }
    }

    #[test]
    fn rules_follow_gitignore_semantics() {
        let mut r = Rules::new(vec!["secrets".into(), "a/b.txt".into()]);
        r.add("", ".gitignore", "target/\n*.log\n!keep.log\n/only-top\n")
            .unwrap();
        r.add("sub", ".gitignore", "local.txt\n!deep.log\n")
            .unwrap();
        r.add("sub", ".paddockignore", "*.tmp\n").unwrap();
        assert!(r.ignored("target", true));
        assert!(
            !r.ignored("target", false),
            "target/ names a directory only"
        );
        assert!(r.ignored("x.log", false));
        assert!(r.ignored("sub/x.log", false));
        assert!(!r.ignored("keep.log", false));
        assert!(!r.ignored("sub/deep.log", false), "a deeper file wins");
        assert!(r.ignored("only-top", false));
        assert!(!r.ignored("sub/only-top", false));
        assert!(r.ignored("sub/local.txt", false));
        assert!(!r.ignored("local.txt", false));
        assert!(r.ignored("sub/a.tmp", false));
        assert!(r.ignored(".git", true));
        assert!(r.ignored("sub/.git", true));
        assert!(r.ignored("secrets", true));
        assert!(r.ignored("secrets/x", false));
        assert!(!r.ignored("secretsx", false));
        assert!(r.ignored("a/b.txt", false));
        let mut t = Tree::new();
        for (p, k) in [
            ("target", Kind::Dir),
            ("target/x", Kind::File),
            ("src", Kind::Dir),
            ("src/a.rs", Kind::File),
            ("src/b.log", Kind::File),
        ] {
            t.insert(p.into(), e(k, 1, 1));
        }
        let f = r.filter(t);
        assert_eq!(f.keys().collect::<Vec<_>>(), ["src", "src/a.rs"]);
    }

    #[test]
    fn compare_by_size_mtime_then_hash() {
        let mut src = Tree::new();
        let mut dst = Tree::new();
        src.insert("same".into(), e(Kind::File, 3, 10));
        dst.insert("same".into(), e(Kind::File, 3, 10));
        src.insert("grown".into(), e(Kind::File, 4, 10));
        dst.insert("grown".into(), e(Kind::File, 3, 10));
        src.insert("touched".into(), e(Kind::File, 3, 11));
        dst.insert("touched".into(), e(Kind::File, 3, 10));
        src.insert("new".into(), e(Kind::File, 5, 1));
        src.insert("d".into(), e(Kind::Dir, 0, 1));
        src.insert("was-dir".into(), e(Kind::File, 1, 1));
        dst.insert("was-dir".into(), e(Kind::Dir, 0, 1));
        dst.insert("was-dir/x".into(), e(Kind::File, 1, 1));
        src.insert("l".into(), e(Kind::Link("a".into()), 0, 1));
        dst.insert("l".into(), e(Kind::Link("b".into()), 0, 1));
        dst.insert("old".into(), e(Kind::Dir, 0, 1));
        dst.insert("old/x".into(), e(Kind::File, 1, 1));
        let (mut plan, to_hash) = compare(&src, &dst, true);
        assert_eq!(to_hash, ["touched"]);
        assert_eq!(plan.send, ["grown", "l", "new", "was-dir"]);
        assert_eq!(plan.mkdir, ["d"]);
        assert_eq!(plan.replace, ["was-dir"]);
        assert_eq!(plan.delete, ["old"], "was-dir/x goes with was-dir");
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.bytes, 4 + 5 + 1);
        let h = |v: &str| HashMap::from([("touched".to_owned(), v.to_owned())]);
        assert!(differing(&to_hash, &h("x"), &h("x")).is_empty());
        let changed = differing(&to_hash, &h("x"), &h("y"));
        plan.resolve(&src, &to_hash, &changed);
        assert_eq!(plan.send, ["grown", "l", "new", "touched", "was-dir"]);
        assert_eq!(plan.bytes, 13);
        let (plan, _) = compare(&src, &dst, false);
        assert!(plan.delete.is_empty());
        let (plan, to_hash) = compare(&src, &src, true);
        assert!(plan.is_empty() && to_hash.is_empty());
    }

    #[test]
    fn walks_honour_ignore_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("src/gen")).unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::create_dir_all(root.join("node_modules/x")).unwrap();
        std::fs::write(root.join(".gitignore"), "node_modules/\n*.o\n").unwrap();
        std::fs::write(root.join("src/.paddockignore"), "gen/\n").unwrap();
        std::fs::write(root.join("src/a.c"), "int x;").unwrap();
        std::fs::write(root.join("src/a.o"), "obj").unwrap();
        std::fs::write(root.join("src/gen/g.c"), "").unwrap();
        std::fs::write(root.join("node_modules/x/i.js"), "").unwrap();
        std::os::unix::fs::symlink("src/a.c", root.join("link")).unwrap();
        let mut rules = Rules::default();
        let t = walk_local(root, &mut rules).unwrap();
        assert_eq!(
            t.keys().collect::<Vec<_>>(),
            [".gitignore", "link", "src", "src/.paddockignore", "src/a.c"]
        );
        assert_eq!(t["link"].kind, Kind::Link("src/a.c".into()));
        assert_eq!(t["src/a.c"].size, 6);
        assert!(
            rules.ignored("node_modules", true),
            "rules apply to remote paths"
        );
        assert_eq!(
            sha256_file(&root.join("src/a.c")).unwrap(),
            "e13e332bd08e13cbe2aee094e130ed23878b3b554be5b9a665a83e63caa987ae"
        );
    }

    #[test]
    fn exclude_args_are_relative() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/.env"), "").unwrap();
        assert_eq!(relative_arg(d.path(), "sub/.env").unwrap(), "sub/.env");
        assert_eq!(relative_arg(d.path(), "./sub/.env/").unwrap(), "sub/.env");
        let abs = d.path().join("sub/.env");
        assert_eq!(
            relative_arg(d.path(), abs.to_str().unwrap()).unwrap(),
            "sub/.env"
        );
        assert!(relative_arg(d.path(), "/etc/passwd").is_err());
        assert!(relative_arg(d.path(), "../x").is_err());
        assert!(relative_arg(d.path(), ".").is_err());
    }
}

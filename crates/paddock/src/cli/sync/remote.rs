//! The sandbox side of `paddock sync`, through the existing exec route: listing a tree
//! (`find -printf`), hashing files (`sha256sum -z`), removing paths (`rm -rf`) and staging
//! the files of a download (`cp -al --parents`). Each runs as one exec per batch of at most
//! [`ARGV_BATCH`] bytes of paths; output is read from the NDJSON stream.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use serde_json::json;

use super::tree::{Entry, Kind, STAGING_PREFIX, Tree};
use crate::cli::api::Api;
use crate::cli::exec::{Frame, LineSplitter};

/// Bytes of path arguments per exec (well under the kernel's argument limit and the
/// server's request size).
pub(crate) const ARGV_BATCH: usize = 96 * 1024;
/// Most stdout one listing or hashing exec may produce.
pub(crate) const MAX_OUTPUT: usize = 256 << 20;

/// What a command printed and how it ended.
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Output {
    fn err_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// Runs `cmd` in the sandbox (no time limit of its own; the sandbox's applies) and
/// collects its output.
pub(crate) async fn run(api: &Api, id: &str, cmd: &[String]) -> Result<Output> {
    let resp = api
        .send(
            api.request(
                reqwest::Method::POST,
                api.url(&["v1", "sandboxes", id, "exec"]),
            )
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .json(&json!({ "cmd": cmd, "timeout": 0 })),
        )
        .await?;
    let mut body = resp.bytes_stream();
    let mut lines = LineSplitter::default();
    let mut out = Output {
        code: 1,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let handle = |line: &[u8], out: &mut Output| -> Result<bool> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(false);
        }
        let frame: Frame =
            serde_json::from_slice(line).context("the server sent an invalid exec stream line")?;
        match frame {
            Frame::Stdout(c) | Frame::Pty(c) => {
                out.stdout.extend_from_slice(&c.bytes()?);
                if out.stdout.len() > MAX_OUTPUT {
                    bail!("the sandbox's listing is larger than {MAX_OUTPUT} bytes");
                }
            }
            Frame::Stderr(c) if out.stderr.len() < 64 << 10 => {
                out.stderr.extend_from_slice(&c.bytes()?);
            }
            Frame::End(e) => {
                out.code = e.exit_code();
                return Ok(true);
            }
            _ => {}
        }
        Ok(false)
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| api.transport_error(e))?;
        for line in lines.push(&chunk) {
            if handle(&line, &mut out)? {
                return Ok(out);
            }
        }
    }
    if let Some(line) = lines.finish()
        && handle(&line, &mut out)?
    {
        return Ok(out);
    }
    bail!("the connection closed before the command finished")
}

/// A shell script run as `sh -c SCRIPT sh ARGS...`.
fn sh(script: &str, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "sh".to_owned(),
    ];
    v.extend(args);
    v
}

/// A failed helper command as an error, with a hint when the tool is missing.
fn failed(what: &str, o: &Output) -> anyhow::Error {
    if o.code == 127 {
        return anyhow!(
            "{what} failed: the sandbox needs /bin/sh, GNU find, sha256sum and cp (coreutils) for sync: {}",
            o.err_text()
        );
    }
    anyhow!("{what} failed (exit {}): {}", o.code, o.err_text())
}

/// Lists the remote directory `root` (`None` when it does not exist). `.git` directories and
/// download staging directories are not descended into.
pub(crate) async fn list(api: &Api, id: &str, root: &str) -> Result<Option<Tree>> {
    let script = format!(
        r#"[ -e "$1" ] || [ -L "$1" ] || exit 3
[ -d "$1" ] || {{ echo "$1 is not a directory" >&2; exit 2; }}
exec find -H "$1" -mindepth 1 \( -name .git -o -name '{STAGING_PREFIX}*' \) -prune -o \( -type f -o -type d -o -type l \) -printf '%y %s %T@ %P\0%l\0'"#
    );
    let o = run(api, id, &sh(&script, [root.to_owned()])).await?;
    match o.code {
        0 => parse_listing(&o.stdout).map(Some),
        3 => Ok(None),
        _ => Err(failed(&format!("listing {root}"), &o)),
    }
}

/// Parses `find -printf '%y %s %T@ %P\0%l\0'` output.
pub(crate) fn parse_listing(out: &[u8]) -> Result<Tree> {
    let mut tree = Tree::new();
    if out.is_empty() {
        return Ok(tree);
    }
    let truncated = || anyhow!("the sandbox's listing is truncated");
    let body = out.strip_suffix(&[0]).ok_or_else(truncated)?;
    let fields: Vec<&[u8]> = body.split(|&b| b == 0).collect();
    if !fields.len().is_multiple_of(2) {
        return Err(truncated());
    }
    for pair in fields.chunks(2) {
        let (head, link) = (pair[0], pair[1]);
        let head = std::str::from_utf8(head).map_err(|_| {
            anyhow!(
                "a remote file name is not UTF-8: {}",
                String::from_utf8_lossy(head)
            )
        })?;
        let bad = || anyhow!("unexpected listing line {head:?}");
        let mut parts = head.splitn(4, ' ');
        let (Some(y), Some(size), Some(t), Some(rel)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let kind = match y {
            "f" => Kind::File,
            "d" => Kind::Dir,
            "l" => Kind::Link(
                std::str::from_utf8(link)
                    .map_err(|_| anyhow!("{rel}: the link target is not UTF-8"))?
                    .to_owned(),
            ),
            _ => continue,
        };
        let mtime: i64 = t
            .split('.')
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| bad())?;
        let size: u64 = size.parse().map_err(|_| bad())?;
        tree.insert(
            rel.to_owned(),
            Entry {
                size: if kind == Kind::File { size } else { 0 },
                kind,
                mtime,
            },
        );
    }
    Ok(tree)
}

/// `paths` in batches of at most [`ARGV_BATCH`] bytes.
fn batches(paths: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut size = 0;
    for p in paths {
        if out.is_empty() || size + p.len() + 1 > ARGV_BATCH {
            out.push(Vec::new());
            size = 0;
        }
        size += p.len() + 1;
        out.last_mut().expect("a batch").push(p.clone());
    }
    out
}

/// SHA-256 of remote files, relative to `root`.
pub(crate) async fn hashes(
    api: &Api,
    id: &str,
    root: &str,
    paths: &[String],
) -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    for batch in batches(paths) {
        let args = std::iter::once(root.to_owned()).chain(batch);
        let o = run(
            api,
            id,
            &sh(r#"cd -- "$1" && shift && exec sha256sum -z -- "$@""#, args),
        )
        .await?;
        if o.code != 0 {
            return Err(failed("hashing remote files", &o));
        }
        map.extend(parse_hashes(&o.stdout)?);
    }
    Ok(map)
}

/// Parses `sha256sum -z` output (`<64 hex>  <name>\0`).
pub(crate) fn parse_hashes(out: &[u8]) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for rec in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let rec = std::str::from_utf8(rec).map_err(|_| anyhow!("unexpected sha256sum output"))?;
        if rec.len() < 67 || !rec.is_char_boundary(64) || !rec.is_char_boundary(66) {
            bail!("unexpected sha256sum output {rec:?}");
        }
        v.push((rec[66..].to_owned(), rec[..64].to_owned()));
    }
    Ok(v)
}

/// Removes remote paths (relative to `root`) with `rm -rf`.
pub(crate) async fn remove(api: &Api, id: &str, root: &str, paths: &[String]) -> Result<()> {
    for batch in batches(paths) {
        let args = std::iter::once(root.to_owned()).chain(batch);
        let o = run(
            api,
            id,
            &sh(r#"cd -- "$1" && shift && exec rm -rf -- "$@""#, args),
        )
        .await?;
        if o.code != 0 {
            return Err(failed("removing remote files", &o));
        }
    }
    Ok(())
}

/// Makes a staging directory in `root` holding hard links (or copies) of `paths` under
/// their relative paths; returns its name (relative to `root`).
pub(crate) async fn stage(api: &Api, id: &str, root: &str, paths: &[String]) -> Result<String> {
    let o = run(
        api,
        id,
        &sh(
            &format!(r#"cd -- "$1" && exec mktemp -d '{STAGING_PREFIX}XXXXXXXX'"#),
            [root.to_owned()],
        ),
    )
    .await?;
    if o.code != 0 {
        return Err(failed("making a staging directory", &o));
    }
    let dir = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    if !dir.starts_with(STAGING_PREFIX) || dir.contains('/') {
        bail!("unexpected staging directory name {dir:?}");
    }
    for batch in batches(paths) {
        let args = [root.to_owned(), dir.clone()].into_iter().chain(batch);
        let o = run(
            api,
            id,
            &sh(
                r#"cd -- "$1" && d=$2 && shift 2 && { cp -al --parents -- "$@" "$d/" 2>/dev/null || cp -a --parents -- "$@" "$d/"; }"#,
                args,
            ),
        )
        .await?;
        if o.code != 0 {
            let _ = remove(api, id, root, std::slice::from_ref(&dir)).await;
            return Err(failed("staging remote files", &o));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse() {
        let out = b"d 4096 1700000000.5 src\0\0f 12 1700000001.9999 src/a b.txt\0\0l 5 1700000002.0 ln\0a.txt\0p 0 1.0 fifo\0\0";
        let t = parse_listing(out).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t["src"].kind, Kind::Dir);
        assert_eq!(t["src"].size, 0);
        assert_eq!(
            t["src/a b.txt"],
            Entry {
                kind: Kind::File,
                size: 12,
                mtime: 1700000001
            }
        );
        assert_eq!(t["ln"].kind, Kind::Link("a.txt".into()));
        assert!(parse_listing(b"").unwrap().is_empty());
        assert!(parse_listing(b"f x 1 a\0\0").is_err());
        assert!(parse_listing(b"f 1 1 a\0").is_err());
    }

    #[test]
    fn hashes_parse() {
        let h = "a".repeat(64);
        let out = format!("{h}  dir/a b\0{h}  c\0");
        let v = parse_hashes(out.as_bytes()).unwrap();
        assert_eq!(v, [("dir/a b".to_owned(), h.clone()), ("c".to_owned(), h)]);
        assert!(parse_hashes(b"abc  x\0").is_err());
    }

    #[test]
    fn batches_stay_small() {
        let paths: Vec<String> = (0..50_000).map(|i| format!("dir/file-{i}")).collect();
        let b = batches(&paths);
        assert!(b.len() > 1);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), paths.len());
        for batch in b {
            assert!(batch.iter().map(|p| p.len() + 1).sum::<usize>() <= ARGV_BATCH);
        }
        assert!(batches(&[]).is_empty());
    }
}

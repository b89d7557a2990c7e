//! `paddock code ID [CODE]`: runs code in a sandbox's code interpreter
//! (`POST /v1/sandboxes/{id}/code`, a sandbox of template `code-interpreter`). stdout and
//! stderr are copied as they arrive, results are printed as text, PNG results are saved to
//! files (`--out-dir`, default the current directory) with a note on stderr; the exit code
//! is 1 when the code raised, else 0.
//!
//! Without CODE (and stdin a terminal or a pipe) it is a REPL in one context: each input runs
//! when complete. An input continues on the next line when the line ends with `\` (kept: it
//! is Python's and bash's own line continuation),
//! or, after a line ending with `:` or `{` (a Python block, a JavaScript body), until a blank
//! line. No line editing. `CODE` `-` reads the code from stdin.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use super::api::Api;
use super::exec::LineSplitter;
use super::{Conn, parse_timeout};

/// `paddock code`.
#[derive(Args, Debug)]
pub(crate) struct CodeArgs {
    /// The sandbox (created from template code-interpreter).
    pub(crate) id: String,
    /// The code; `-` reads it from stdin; none starts a REPL.
    pub(crate) code: Option<String>,
    /// python (default), javascript (js) or bash.
    #[arg(long, short = 'l')]
    pub(crate) language: Option<String>,
    /// Run in this context (an id from `POST /v1/sandboxes/{id}/code/contexts`).
    #[arg(long)]
    pub(crate) context: Option<String>,
    /// Interrupt the code after this long (90, 90s, 5m).
    #[arg(long, value_parser = parse_timeout)]
    pub(crate) timeout: Option<Duration>,
    /// Where PNG results are saved.
    #[arg(long, default_value = ".")]
    pub(crate) out_dir: PathBuf,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Counts the files written, for their names.
struct Saver {
    dir: PathBuf,
    n: usize,
}

impl Saver {
    fn save_png(&mut self, id: &str, b64: &str) -> Result<PathBuf> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .context("a PNG result that is not base64")?;
        loop {
            self.n += 1;
            let p = self.dir.join(format!("{id}-result-{}.png", self.n));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(mut f) => {
                    f.write_all(&bytes)
                        .with_context(|| format!("writing {}", p.display()))?;
                    return Ok(p);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
            }
        }
    }
}

/// Runs one piece of code; returns whether it raised.
async fn run_one(api: &Api, a: &CodeArgs, code: &str, saver: &mut Saver) -> Result<bool> {
    let mut body = json!({"code": code});
    if let Some(l) = &a.language {
        body["language"] = json!(l);
    }
    if let Some(c) = &a.context {
        body["context_id"] = json!(c);
    }
    if let Some(t) = a.timeout {
        body["timeout"] = json!(t.as_secs_f64());
    }
    let resp = api
        .send(
            api.request(
                reqwest::Method::POST,
                api.url(&["v1", "sandboxes", &a.id, "code"]),
            )
            .json(&body),
        )
        .await?;
    let mut stream = resp.bytes_stream();
    let mut lines = LineSplitter::default();
    let mut failed = false;
    let mut ended = false;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| api.transport_error(e))?;
        for line in lines.push(&chunk) {
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match ev["type"].as_str().unwrap_or("") {
                "stdout" => {
                    out.write_all(ev["text"].as_str().unwrap_or("").as_bytes())?;
                    out.flush()?;
                }
                "stderr" => {
                    err.write_all(ev["text"].as_str().unwrap_or("").as_bytes())?;
                    err.flush()?;
                }
                "result" => {
                    if let Some(png) = ev["png"].as_str() {
                        let p = saver.save_png(&a.id, png)?;
                        eprintln!("paddock: saved a PNG result to {}", p.display());
                    } else if let Some(t) = ev["text"].as_str() {
                        writeln!(out, "{t}")?;
                    } else {
                        let kinds: Vec<&str> = ev
                            .as_object()
                            .map(|o| {
                                o.keys()
                                    .map(String::as_str)
                                    .filter(|k| !["type", "is_main_result"].contains(k))
                                    .collect()
                            })
                            .unwrap_or_default();
                        writeln!(out, "[result: {}]", kinds.join(", "))?;
                    }
                }
                "error" => {
                    failed = true;
                    let tb = ev["traceback"].as_str().unwrap_or("");
                    if tb.is_empty() {
                        writeln!(
                            err,
                            "{}: {}",
                            ev["name"].as_str().unwrap_or("Error"),
                            ev["value"].as_str().unwrap_or("")
                        )?;
                    } else {
                        writeln!(err, "{tb}")?;
                    }
                }
                "end" => ended = true,
                _ => {}
            }
        }
    }
    if !ended {
        bail!("the code interpreter's stream ended early");
    }
    Ok(failed)
}

/// Whether `buf` (the lines so far) is a complete input.
fn complete(buf: &[String]) -> bool {
    let Some(last) = buf.last() else {
        return false;
    };
    if last.ends_with('\\') {
        return false;
    }
    let opens_block = buf
        .first()
        .map(|l| l.trim_end())
        .is_some_and(|l| l.ends_with(':') || l.ends_with('{'));
    !opens_block || buf.len() > 1 && last.trim().is_empty()
}

/// Joins the lines of an input as typed: a trailing backslash stays, as Python's and bash's
/// own line continuation.
fn join(buf: &[String]) -> String {
    buf.join("\n")
}

pub(crate) async fn run(a: CodeArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let mut saver = Saver {
        dir: a.out_dir.clone(),
        n: 0,
    };
    match a.code.as_deref() {
        Some("-") => {
            let mut code = String::new();
            std::io::stdin()
                .read_to_string(&mut code)
                .context("reading the code from stdin")?;
            Ok(i32::from(run_one(&api, &a, &code, &mut saver).await?))
        }
        Some(code) => Ok(i32::from(run_one(&api, &a, code, &mut saver).await?)),
        None => repl(&api, &a, &mut saver).await,
    }
}

async fn repl(api: &Api, a: &CodeArgs, saver: &mut Saver) -> Result<i32> {
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!(
            "paddock code: {} in sandbox {}; end a line with \\ to continue it, a block \
             (a line ending in : or {{) ends at a blank line; Ctrl-D quits",
            a.language.as_deref().unwrap_or("python"),
            a.id
        );
    }
    let stdin = std::io::stdin();
    let mut buf: Vec<String> = Vec::new();
    let mut last_failed = false;
    let mut lines = stdin.lock().lines();
    loop {
        if tty {
            eprint!("{}", if buf.is_empty() { ">>> " } else { "... " });
        }
        let Some(line) = lines.next() else {
            if !buf.is_empty() {
                last_failed = run_one(api, a, &join(&buf), saver).await?;
            }
            break;
        };
        let line = line.context("reading stdin")?;
        if buf.is_empty() && line.trim().is_empty() {
            continue;
        }
        buf.push(line);
        if complete(&buf) {
            let code = join(&buf);
            buf.clear();
            last_failed = run_one(api, a, &code, saver).await?;
        }
    }
    Ok(i32::from(last_failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repl_inputs_end_where_documented() {
        assert!(complete(&v(&["print(1)"])));
        assert!(!complete(&v(&["x = 1 + \\"])));
        assert!(complete(&v(&["x = 1 + \\", "2"])));
        assert_eq!(join(&v(&["x = 1 + \\", "2"])), "x = 1 + \\\n2");
        assert!(!complete(&v(&["for i in range(2):"])));
        assert!(!complete(&v(&["for i in range(2):", "    print(i)"])));
        assert!(complete(&v(&["for i in range(2):", "    print(i)", ""])));
        assert!(!complete(&v(&["function f() {"])));
    }
}

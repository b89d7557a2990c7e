//! Printing a template build's progress (the server's NDJSON [`BuildEvent`] stream) on stderr.
//!
//! One line per step: `[3/7] RUN apt-get ...`, with ` (cached)` when the step needed no work.
//! On a terminal a running step is a spinner with its elapsed time, replaced by
//! `[3/7] RUN ... (12.3 s)` when it ends; elsewhere (logs, CI) the step's line is printed when
//! it starts and `[3/7] done in 12.3 s` when it ends, with no control characters. The steps'
//! output (apt's thousands of lines) is printed only with `--verbose`; the server keeps it in
//! the build log either way (`paddock template log NAME`). The last line is the summary, or
//! `paddock: <build|pull|bootstrap> failed ...` with the server's message.
//!
//! [`BuildEvent`]: the `event` objects documented in docs/templates.md

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::cli::api::{Api, check};

/// Longest instruction shown on a step line (the log has all of it).
const MAX_SHOWN: usize = 100;

/// The step that is running.
struct Running {
    label: String,
    started: Instant,
    spinner: Option<ProgressBar>,
}

/// Prints a build's events as they come.
struct Printer {
    tty: bool,
    verbose: bool,
    running: Option<Running>,
}

impl Printer {
    fn step(&mut self, ev: &Value) {
        self.end_step();
        let label = format!(
            "[{}/{}] {}",
            ev["step"],
            ev["of"],
            shorten(ev["instruction"].as_str().unwrap_or(""))
        );
        if ev["cached"] == true {
            eprintln!("{label} (cached)");
            return;
        }
        let spinner = if self.tty {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_message(label.clone());
            pb.enable_steady_tick(Duration::from_millis(120));
            Some(pb)
        } else {
            eprintln!("{label}");
            None
        };
        self.running = Some(Running {
            label,
            started: Instant::now(),
            spinner,
        });
    }

    /// The running step (if any) has ended: its line with the time it took.
    fn end_step(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        let secs = r.started.elapsed().as_secs_f64();
        match r.spinner {
            Some(pb) => {
                pb.finish_and_clear();
                eprintln!("{} ({secs:.1} s)", r.label);
            }
            None => {
                let n = r.label.split(']').next().unwrap_or("[?").to_owned();
                eprintln!("{n}] done in {secs:.1} s");
            }
        }
    }

    fn output(&self, text: &str) {
        if !self.verbose {
            return;
        }
        match self.running.as_ref().and_then(|r| r.spinner.as_ref()) {
            Some(pb) => pb.suspend(|| eprint!("{text}")),
            None => eprint!("{text}"),
        }
    }

    /// A failed step keeps its line, without a time.
    fn fail_step(&mut self) {
        if let Some(Running {
            label,
            spinner: Some(pb),
            ..
        }) = self.running.take()
        {
            pb.finish_and_clear();
            eprintln!("{label} (failed)");
        }
    }
}

/// `s` cut to [`MAX_SHOWN`] characters on one line.
fn shorten(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_SHOWN {
        return one_line;
    }
    let mut out: String = one_line.chars().take(MAX_SHOWN - 3).collect();
    out.push_str("...");
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The summary line of a `done` event.
pub(crate) fn summary(ev: &Value) -> String {
    let steps = ev["steps"].as_u64().unwrap_or(0);
    let cached = ev["cached_steps"].as_u64().unwrap_or(0);
    let layers = ev["layers"].as_u64().unwrap_or(0);
    format!(
        "paddock: template {} ready: {} ({cached} cached), {}, {:.1} s",
        ev["template"].as_str().unwrap_or(""),
        plural(steps, "step", "steps"),
        plural(layers, "layer", "layers"),
        ev["seconds"].as_f64().unwrap_or(0.0)
    )
}

/// Sends a build, pull or bootstrap request (`verb` names it in messages) for template
/// `name` and prints its events as they come; 0 when it ends `done`.
pub(crate) async fn follow(
    api: &Api,
    rb: reqwest::RequestBuilder,
    verb: &str,
    name: &str,
    verbose: bool,
) -> Result<i32> {
    let resp = async { check(api.send(rb).await?).await }
        .await
        .with_context(|| format!("{verb} failed"))?;
    let mut p = Printer {
        tty: std::io::stderr().is_terminal(),
        verbose,
        running: None,
    };
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut outcome: Option<i32> = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                p.fail_step();
                return Err(anyhow::Error::from(e)
                    .context(format!("{verb} failed: lost the server's progress")));
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match ev["event"].as_str() {
                Some("step") => p.step(&ev),
                Some("output") => p.output(ev["text"].as_str().unwrap_or("")),
                Some("error") => {
                    p.fail_step();
                    eprintln!(
                        "paddock: {verb} failed{}: {}",
                        ev["line"]
                            .as_u64()
                            .map(|l| format!(" at line {l}"))
                            .unwrap_or_default(),
                        ev["message"].as_str().unwrap_or("")
                    );
                    eprintln!("paddock: the full log: paddock template log {name}");
                    outcome = Some(1);
                }
                Some("done") => {
                    p.end_step();
                    eprintln!("{}", summary(&ev));
                    outcome = Some(0);
                }
                _ => {}
            }
        }
    }
    p.fail_step();
    Ok(outcome.unwrap_or_else(|| {
        eprintln!(
            "paddock: {verb} failed: the server ended the stream without a result (see paddock template log {name})"
        );
        1
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_and_pluralise() {
        let ev = serde_json::json!({"event": "done", "template": "py", "layers": 3, "steps": 4,
            "cached_steps": 2, "seconds": 46.04});
        assert_eq!(
            summary(&ev),
            "paddock: template py ready: 4 steps (2 cached), 3 layers, 46.0 s"
        );
        let ev = serde_json::json!({"event": "done", "template": "debian", "layers": 1,
            "steps": 1, "cached_steps": 0, "seconds": 104.5});
        assert_eq!(
            summary(&ev),
            "paddock: template debian ready: 1 step (0 cached), 1 layer, 104.5 s"
        );
    }

    #[test]
    fn long_instructions_are_cut_on_one_line() {
        assert_eq!(shorten("RUN a \\\n   b"), "RUN a \\ b");
        let s = shorten(&"x".repeat(300));
        assert_eq!(s.chars().count(), MAX_SHOWN);
        assert!(s.ends_with("..."));
    }
}

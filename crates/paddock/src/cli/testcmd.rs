//! `paddock test`: runs a project's tests in a sandbox through `POST
//! /v1/sandboxes/{id}/tests` and prints the failures and a summary; exits 0 when nothing
//! failed, else 1.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::api::Api;
use super::format;
use super::{Conn, parse_timeout, write_stdout};

/// Test frameworks the server knows.
pub(crate) const FRAMEWORKS: [&str; 6] = ["pytest", "jest", "vitest", "go", "cargo", "node"];

/// Lines of a failure's output printed.
const OUTPUT_LINES: usize = 30;

/// `paddock test`.
#[derive(Args, Debug)]
pub(crate) struct TestArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// The test command (default: the framework's, detected from the project).
    #[arg(long)]
    pub(crate) cmd: Option<String>,
    /// The project directory.
    #[arg(long)]
    pub(crate) cwd: Option<String>,
    /// The framework (default: detected).
    #[arg(long, value_parser = FRAMEWORKS)]
    pub(crate) framework: Option<String>,
    /// Kill the tests after this long (90, 90s, 5m, 2h, 1d).
    #[arg(long, value_parser = parse_timeout)]
    pub(crate) timeout: Option<Duration>,
    /// Print the server's JSON result instead of the summary (same exit code).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// The request body: only the flags given.
pub(crate) fn test_body(a: &TestArgs) -> Value {
    let mut b = json!({});
    if let Some(c) = &a.cmd {
        b["cmd"] = c.clone().into();
    }
    if let Some(c) = &a.cwd {
        b["cwd"] = c.clone().into();
    }
    if let Some(f) = &a.framework {
        b["framework"] = f.clone().into();
    }
    if let Some(t) = a.timeout {
        b["timeout"] = t.as_secs().into();
    }
    b
}

fn count(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Whether the run failed: failures, errors, a timeout, or a non-zero exit.
pub(crate) fn failed(v: &Value) -> bool {
    count(v, "failed") > 0
        || count(v, "errors") > 0
        || v["timed_out"].as_bool() == Some(true)
        || v["exit_code"].as_i64().is_some_and(|c| c != 0)
        || (v["exit_code"].is_null() && !v["status"].is_null())
}

/// Indents every line of `text` by `pad`, keeping the last `max` lines.
fn indented(text: &str, pad: &str, max: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let skip = lines.len().saturating_sub(max);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("{pad}... ({skip} lines above)\n"));
    }
    for l in &lines[skip..] {
        out.push_str(pad);
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The failures, the output tails of an unstructured failed run, and a summary line.
pub(crate) fn summary(v: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let failures = v["failures"].as_array().unwrap_or(&empty);
    for f in failures {
        let name = f["name"].as_str().unwrap_or("(unnamed test)");
        // `classname::name`, unless the name already starts with the class name.
        let qualified = |c: &str| {
            name.strip_prefix(c).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(|ch: char| !ch.is_alphanumeric() && ch != '_')
            })
        };
        let title = match f["classname"].as_str() {
            Some(c) if !c.is_empty() && !qualified(c) => format!("{c}::{name}"),
            _ => name.to_owned(),
        };
        out.push_str(&format!("FAILED {}", format::one_line(&title)));
        if let Some(file) = f["file"].as_str().filter(|s| !s.is_empty()) {
            out.push_str(&format!(" ({})", format::one_line(file)));
        }
        out.push('\n');
        for k in ["message", "output"] {
            if let Some(t) = f[k].as_str().filter(|s| !s.trim().is_empty()) {
                out.push_str(&indented(t, "    ", OUTPUT_LINES));
            }
        }
        out.push('\n');
    }
    let structured = v["structured"].as_bool() == Some(true);
    if failed(v) && (!structured || failures.is_empty()) {
        for (k, label) in [("stdout_tail", "stdout"), ("stderr_tail", "stderr")] {
            if let Some(t) = v[k].as_str().filter(|s| !s.trim().is_empty()) {
                out.push_str(&format!("--- {label} (end) ---\n"));
                out.push_str(&indented(t, "", usize::MAX));
            }
        }
    }
    if let Some(c) = v["command"].as_str() {
        out.push_str(&format!("$ {}\n", format::one_line(c)));
    }
    let mut line = format!(
        "{}: {} passed, {} failed, {} skipped, {} errors ({} total)",
        v["framework"].as_str().unwrap_or("tests"),
        count(v, "passed"),
        count(v, "failed"),
        count(v, "skipped"),
        count(v, "errors"),
        count(v, "total"),
    );
    if let Some(ms) = v["duration_ms"].as_u64() {
        line.push_str(&format!(" in {}", super::logs::duration_ms(ms)));
    }
    if v["timed_out"].as_bool() == Some(true) {
        line.push_str(", timed out");
    } else if let Some(s) = v["status"].as_str().filter(|_| failed(v)) {
        line.push_str(&format!(", {}", format::one_line(s)));
    }
    if !structured {
        line.push_str(" [counts parsed from the output]");
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Runs the tests; exit code 0 when nothing failed, else 1.
pub(crate) async fn run(a: TestArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let v: Value = api
        .post_json(&["v1", "sandboxes", &a.id, "tests"], &test_body(&a))
        .await?;
    if a.json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        write_stdout(&summary(&v))?;
    }
    Ok(if failed(&v) { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_run() {
        let v = json!({
            "framework": "pytest", "command": "python -m pytest", "exit_code": 0,
            "status": "exit status 0", "passed": 12, "failed": 0, "skipped": 1, "errors": 0,
            "total": 13, "duration_ms": 3400, "structured": true, "failures": [],
            "stdout_tail": "....", "stderr_tail": "", "timed_out": false,
        });
        assert!(!failed(&v));
        assert_eq!(
            summary(&v),
            "$ python -m pytest\npytest: 12 passed, 0 failed, 1 skipped, 0 errors (13 total) in 3.4s\n"
        );
    }

    #[test]
    fn failing_run() {
        let v = json!({
            "framework": "pytest", "command": "python -m pytest", "exit_code": 1,
            "status": "exit status 1", "passed": 1, "failed": 1, "skipped": 0, "errors": 0,
            "total": 2, "duration_ms": 800, "structured": true,
            "failures": [{"name": "test_add", "classname": "tests.test_math",
                          "file": "tests/test_math.py", "message": "assert 1 == 2",
                          "output": "def test_add():\n>   assert 1 == 2\nE   assert 1 == 2\n"}],
            "stdout_tail": "F.", "stderr_tail": "", "timed_out": false,
        });
        assert!(failed(&v));
        assert_eq!(
            summary(&v),
            "FAILED tests.test_math::test_add (tests/test_math.py)\n\
             \x20   assert 1 == 2\n\
             \x20   def test_add():\n\
             \x20   >   assert 1 == 2\n\
             \x20   E   assert 1 == 2\n\
             \n\
             $ python -m pytest\n\
             pytest: 1 passed, 1 failed, 0 skipped, 0 errors (2 total) in 800ms, exit status 1\n"
        );
    }

    #[test]
    fn unstructured_timeout() {
        let v = json!({
            "framework": "go", "command": "go test ./...", "exit_code": null,
            "status": "signal: killed", "passed": 0, "failed": 0, "skipped": 0, "errors": 0,
            "total": 0, "duration_ms": 60000, "structured": false, "failures": [],
            "stdout_tail": "=== RUN TestSlow\n", "stderr_tail": "", "timed_out": true,
        });
        assert!(failed(&v));
        assert_eq!(
            summary(&v),
            "--- stdout (end) ---\n=== RUN TestSlow\n$ go test ./...\n\
             go: 0 passed, 0 failed, 0 skipped, 0 errors (0 total) in 1m, timed out [counts parsed from the output]\n"
        );
    }

    #[test]
    fn failure_titles() {
        let v = json!({"failed": 2, "structured": true, "failures": [
            {"name": "t.py::test_x", "classname": "t.py"},
            {"name": "adds", "classname": "math", "message": ""},
        ]});
        let s = summary(&v);
        assert!(
            s.starts_with("FAILED t.py::test_x\n\nFAILED math::adds\n\n"),
            "{s}"
        );
    }

    #[test]
    fn failure_when_only_the_exit_code_says_so() {
        let v = json!({"exit_code": 2, "failed": 0, "errors": 0, "structured": false});
        assert!(failed(&v));
        let v = json!({"exit_code": 0, "failed": 0, "errors": 1});
        assert!(failed(&v));
    }

    #[test]
    fn long_output_is_cut() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let out = indented(&text, "  ", 3);
        assert_eq!(
            out,
            "  ... (97 lines above)\n  line 97\n  line 98\n  line 99\n"
        );
    }
}

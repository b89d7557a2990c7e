//! jest: its `--json` report and its default reporter's text.

use std::collections::BTreeSet;

use super::{Parsed, message_before_stack, parse_counts, relative, strip_ansi};
use crate::TestFailure;

/// Parses jest's `--json` output: one entry per test file with its assertion results; a file
/// that failed without a failing test (it did not load) counts as an error.
pub(crate) fn parse_jest_json(json: &str, cwd: &str) -> Option<Parsed> {
    use serde_json::Value;

    let v: Value = serde_json::from_str(json).ok()?;
    let results = v.get("testResults")?.as_array()?;
    let mut p = Parsed::default();
    for tr in results {
        let file = tr
            .get("name")
            .and_then(Value::as_str)
            .map(|n| relative(n, cwd));
        let mut failed_here = 0;
        for a in tr
            .get("assertionResults")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let title = a.get("title").and_then(Value::as_str).unwrap_or_default();
            match a.get("status").and_then(Value::as_str).unwrap_or_default() {
                "passed" => p.passed += 1,
                "failed" => {
                    failed_here += 1;
                    let mut parts: Vec<&str> = a
                        .get("ancestorTitles")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    parts.push(title);
                    let msgs: Vec<&str> = a
                        .get("failureMessages")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let output = msgs.join("\n\n");
                    p.fail(TestFailure {
                        name: parts.join(" › "),
                        classname: file.clone(),
                        file: file.clone(),
                        message: msgs.first().and_then(|m| message_before_stack(m)),
                        output,
                    });
                }
                "pending" | "skipped" | "todo" | "disabled" => p.skipped += 1,
                _ => {}
            }
        }
        let suite_failed = tr.get("status").and_then(Value::as_str) == Some("failed")
            || tr.get("testExecError").is_some_and(|e| !e.is_null());
        if suite_failed && failed_here == 0 {
            let message = tr
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| {
                    tr.get("testExecError")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                })
                .unwrap_or_default();
            p.error(TestFailure {
                name: file.clone().unwrap_or_else(|| "test suite".into()),
                classname: None,
                file: file.clone(),
                message: jest_suite_message(message),
                output: message.to_owned(),
            });
        }
    }
    Some(p)
}

/// The reason in a jest suite message: the first line after `● Test suite failed to run`.
fn jest_suite_message(message: &str) -> Option<String> {
    message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('●'))
        .map(str::to_owned)
}

/// Parses jest's default reporter: the `Tests:` summary line and the `● suite › test`
/// headings of failures; `● Test suite failed to run` under `FAIL file` is an error.
pub(crate) fn parse_jest_text(text: &str) -> Option<Parsed> {
    let text = strip_ansi(text);
    let mut p = Parsed::default();
    let mut found = false;
    let mut names = BTreeSet::new();
    let mut file: Option<String> = None;
    let mut fails = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("FAIL ") {
            file = Some(rest.trim().to_owned());
        } else if let Some(name) = t.strip_prefix("● ") {
            let name = name.trim();
            if name == "Console" {
                continue;
            }
            if name == "Test suite failed to run" {
                let f = file.clone().unwrap_or_else(|| "test suite".into());
                fails.push((true, f.clone(), file.clone()));
            } else if names.insert(name.to_owned()) {
                fails.push((false, name.to_owned(), file.clone()));
            }
        } else if let Some(rest) = t.strip_prefix("Tests:") {
            let mut q = Parsed::default();
            found |= parse_counts(rest, &[','], |w, n| match w {
                "passed" => q.passed += n,
                "failed" => q.failed += n,
                "skipped" | "todo" | "pending" => q.skipped += n,
                _ => {}
            });
            p = q;
        }
    }
    if !found && fails.is_empty() {
        return None;
    }
    let (mut failed, mut errored) = (Vec::new(), Vec::new());
    for (is_error, name, file) in fails {
        let f = TestFailure {
            name,
            classname: file.clone(),
            file,
            ..Default::default()
        };
        if is_error {
            errored.push(f);
        } else {
            failed.push(f);
        }
    }
    p.failed = p.failed.max(failed.len() as u32);
    p.errors = p.errors.max(errored.len() as u32);
    p.failures = failed;
    p.errored = errored;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn jest_json() {
        let p = parse_jest_json(fixture("jest.json"), "/home/user/app").expect("parses");
        // 2 passed, 1 failed, 1 skipped + 1 todo, and bad.test.js failed to load.
        assert_eq!(counts(&p), (2, 1, 2, 1));
        assert_eq!(names(&p), ["calc › breaks", "bad.test.js"]);
        let f = &p.failures[0];
        assert_eq!(f.file.as_deref(), Some("calc.test.js"));
        assert_eq!(
            f.message.as_deref(),
            Some(
                "Error: expect(received).toBe(expected) // Object.is equality\n\nExpected: 5\nReceived: 4"
            )
        );
        assert!(f.output.contains("at Object.toBe"), "{}", f.output);
        assert_eq!(
            p.errored[0].message.as_deref(),
            Some("Cannot find module './does-not-exist' from 'bad.test.js'")
        );
        assert_eq!(parse_jest_json("{\"nope\": 1}", CWD), None);
        assert_eq!(parse_jest_json("{truncated", CWD), None);
    }

    #[test]
    fn jest_text() {
        let p = parse_jest_text(fixture("jest-text.txt")).expect("parses");
        assert_eq!(counts(&p), (2, 1, 2, 1));
        assert_eq!(names(&p), ["calc › breaks", "j/bad.test.js"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("j/calc.test.js"));
    }
}

//! `cargo test`: libtest's text output.

use std::collections::HashMap;

use super::{Parsed, keep, parse_counts, strip_ansi, strip_line_col};
use crate::TestFailure;

#[derive(Debug, Default)]
struct LibtestSection {
    binary: Option<String>,
    passed: u32,
    failed: Vec<String>,
    skipped: u32,
    summary: Option<(u32, u32, u32)>,
}

/// Parses the text output of `cargo test`: one section per test binary (`running N tests`
/// ... `test result:`), each named by the `Running`/`Doc-tests` line before it when stderr is
/// merged into stdout. Captured output comes from the `---- name stdout ----` blocks. A
/// section without a `test result:` line (the binary crashed) is an error.
pub(crate) fn parse_libtest(text: &str) -> Option<Parsed> {
    let text = strip_ansi(text);
    let mut p = Parsed::default();
    let mut binary: Option<String> = None;
    let mut section: Option<LibtestSection> = None;
    let mut outputs: HashMap<(Option<String>, String), String> = HashMap::new();
    let mut capture: Option<String> = None;
    let mut any = false;

    let finish = |p: &mut Parsed,
                  s: LibtestSection,
                  outputs: &HashMap<(Option<String>, String), String>| {
        let (passed, failed, skipped) =
            s.summary
                .unwrap_or((s.passed, s.failed.len() as u32, s.skipped));
        p.passed += passed;
        p.skipped += skipped;
        for name in &s.failed {
            let out = outputs
                .get(&(s.binary.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            p.fail(libtest_failure(name, s.binary.as_deref(), &out));
        }
        // The summary may count failures whose lines were lost (interleaved output).
        p.failed += failed.saturating_sub(s.failed.len() as u32);
        if s.summary.is_none() {
            p.error(TestFailure {
                name: s.binary.clone().unwrap_or_else(|| "test binary".into()),
                classname: None,
                file: None,
                message: Some("the test binary ended without a result (crashed or killed)".into()),
                output: String::new(),
            });
        }
    };

    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = capture.as_ref() {
            let ends = t == "failures:"
                || t.starts_with("test result:")
                || (t.starts_with("---- ") && t.ends_with(" ----"));
            if !ends {
                let key = (
                    section.as_ref().and_then(|s| s.binary.clone()),
                    name.clone(),
                );
                let buf = outputs.entry(key).or_default();
                keep(buf, line);
                keep(buf, "\n");
                continue;
            }
            capture = None;
        }
        if let Some(rest) = t.strip_prefix("Running ") {
            // `Running unittests src/lib.rs (target/debug/deps/calc-…)`
            let label = match rest.rfind(" (") {
                Some(i) if rest.ends_with(')') => &rest[..i],
                _ => rest,
            };
            binary = Some(label.to_owned());
        } else if let Some(rest) = t.strip_prefix("Doc-tests ") {
            binary = Some(format!("doc-tests {rest}"));
        } else if t.starts_with("running ") && (t.ends_with(" tests") || t.ends_with(" test")) {
            if let Some(s) = section.take() {
                finish(&mut p, s, &outputs);
            }
            any = true;
            section = Some(LibtestSection {
                binary: binary.take(),
                ..Default::default()
            });
        } else if let Some(rest) = t.strip_prefix("test result:") {
            if let Some(s) = section.as_mut() {
                let (mut passed, mut failed, mut ignored) = (0, 0, 0);
                parse_counts(
                    rest.split_once('.').map_or(rest, |(_, r)| r),
                    &[';'],
                    |w, n| match w {
                        "passed" => passed = n,
                        "failed" => failed = n,
                        "ignored" => ignored = n,
                        _ => {}
                    },
                );
                s.summary = Some((passed, failed, ignored));
            }
            if let Some(s) = section.take() {
                finish(&mut p, s, &outputs);
            }
        } else if let Some(rest) = t
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" ----"))
        {
            let name = rest
                .strip_suffix(" stdout")
                .or_else(|| rest.strip_suffix(" stderr"))
                .unwrap_or(rest);
            capture = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.rsplit_once(" ... ")
        {
            any = true;
            let s = section.get_or_insert_with(|| LibtestSection {
                binary: binary.clone(),
                ..Default::default()
            });
            let result = result.trim();
            if result == "ok" || result.starts_with("bench:") {
                s.passed += 1;
            } else if result == "FAILED" {
                s.failed.push(name.to_owned());
            } else if result.starts_with("ignored") {
                s.skipped += 1;
            }
        }
    }
    if let Some(s) = section.take() {
        finish(&mut p, s, &outputs);
    }
    any.then_some(p)
}

/// A failed libtest test, with the panic message and location from its captured output.
/// Handles both panic formats: `panicked at src/lib.rs:14:43:\nmessage` (Rust 1.73+) and
/// `panicked at 'message', src/lib.rs:14:43`.
fn libtest_failure(name: &str, binary: Option<&str>, output: &str) -> TestFailure {
    let mut message = None;
    let mut location = None;
    if let Some(i) = output.find("panicked at ") {
        let rest = &output[i + "panicked at ".len()..];
        if let Some(old) = rest.strip_prefix('\'') {
            // Old format: the message is quoted and may span lines; the location follows the
            // last `', ` before the end of the panic (the `note:` line or the end).
            let end = old.find("\nnote:").unwrap_or(old.len());
            if let Some(j) = old[..end].rfind("', ") {
                message = Some(old[..j].to_owned());
                location = old[j + 3..end].lines().next().map(str::to_owned);
            }
        } else if let Some((loc, after)) = rest.split_once('\n') {
            location = Some(loc.trim_end_matches(':').to_owned());
            let msg: Vec<&str> = after
                .lines()
                .take_while(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace:"))
                .collect();
            message = Some(msg.join("\n").trim().to_owned()).filter(|m| !m.is_empty());
        }
    }
    // `Running tests/it.rs` names the file of an integration test binary.
    let binary_file = binary
        .and_then(|b| b.split_whitespace().last())
        .filter(|f| f.ends_with(".rs"))
        .map(str::to_owned);
    TestFailure {
        name: name.to_owned(),
        classname: binary.map(str::to_owned),
        file: location
            .as_deref()
            .map(|l| strip_line_col(l.trim()).to_owned())
            .or(binary_file),
        message,
        output: output.trim_matches('\n').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn cargo_libtest_two_binaries() {
        for fx in ["cargo-old.txt", "cargo-new.txt"] {
            let p = parse_libtest(fixture(fx)).expect("parses");
            // lib: 1 ok, 1 failed, 1 ignored; tests/it.rs: the same; doc-tests: 1 ok.
            assert_eq!(counts(&p), (3, 2, 2, 0), "{fx}");
            assert_eq!(names(&p), ["tests::broken", "it_panics"], "{fx}");
            let f = &p.failures[0];
            assert_eq!(f.classname.as_deref(), Some("unittests src/lib.rs"), "{fx}");
            assert_eq!(f.file.as_deref(), Some("src/lib.rs"), "{fx}");
            assert!(f.output.contains("debug line"), "{fx}: {}", f.output);
            let m = f.message.as_deref().unwrap_or_default();
            assert!(
                m.contains("two plus two") && m.contains("left"),
                "{fx}: {m}"
            );
            let f = &p.failures[1];
            assert_eq!(f.classname.as_deref(), Some("tests/it.rs"), "{fx}");
            assert_eq!(f.file.as_deref(), Some("tests/it.rs"), "{fx}");
            assert_eq!(f.message.as_deref(), Some("boom in integration"), "{fx}");
        }
    }

    #[test]
    fn cargo_libtest_without_stderr_and_crashes() {
        // Only stdout (a custom command that does not merge stderr): no binary names.
        let stdout: String = fixture("cargo-old.txt")
            .lines()
            .filter(|l| !l.trim_start().starts_with("Running") && !l.contains("Doc-tests"))
            .map(|l| format!("{l}\n"))
            .collect();
        let p = parse_libtest(&stdout).expect("parses");
        assert_eq!(counts(&p), (3, 2, 2, 0));
        assert_eq!(p.failures[0].classname, None);
        // A binary that dies mid-run has no `test result:` line.
        let p = parse_libtest("running 2 tests\ntest a ... ok\nerror: test failed, to rerun pass `--lib`\n\nCaused by:\n  process didn't exit successfully (signal: 11, SIGSEGV)\n").unwrap();
        assert_eq!(counts(&p), (1, 0, 0, 1));
        // A build failure has no tests at all.
        assert_eq!(parse_libtest(fixture("cargo-build.txt")), None);
    }
}

//! Results: which parser reads a run (the report file first, then the framework's text
//! output), and the capped [`TestReport`] built from what it parsed.

use paddock_runtime::ExecResult;

use crate::parse::{
    Parsed, cap_head, cap_tail, parse_go, parse_jest_json, parse_jest_text, parse_junit,
    parse_libtest, parse_pytest_text, parse_tap, parse_vitest_text, strip_ansi,
};
use crate::plan::ReportKind;
use crate::{
    Framework, MAX_FAILURE_OUTPUT, MAX_FAILURES, MAX_MESSAGE, MAX_TAIL, Outcome, TestFailure,
    TestReport,
};

/// What the parsers made of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Interpretation {
    pub(crate) parsed: Option<Parsed>,
    /// From a machine-readable report.
    pub(crate) structured: bool,
    /// The human-readable output when stdout was machine-readable (`go test -json`).
    pub(crate) stdout_text: Option<String>,
}

/// Picks the parser: the report file first, then the framework's text output.
pub(crate) fn interpret(
    framework: Option<Framework>,
    kind: Option<ReportKind>,
    report: Option<&str>,
    stdout: &str,
    stderr: &str,
    cwd: &str,
) -> Interpretation {
    if let (Some(kind), Some(report)) = (kind, report) {
        let parsed = match kind {
            ReportKind::Junit => parse_junit(report, cwd),
            ReportKind::JestJson => parse_jest_json(report, cwd),
        };
        if parsed.is_some() {
            return Interpretation {
                parsed,
                structured: true,
                stdout_text: None,
            };
        }
        tracing::debug!("test report unreadable, falling back to text output");
    }
    let text = |parsed| Interpretation {
        parsed,
        ..Default::default()
    };
    match framework {
        Some(Framework::GoTest) => match parse_go(stdout, stderr) {
            Some(go) => Interpretation {
                parsed: Some(go.parsed),
                structured: go.json,
                stdout_text: go.json.then_some(go.text),
            },
            None => text(None),
        },
        Some(Framework::CargoTest) => text(parse_libtest(&format!("{stdout}\n{stderr}"))),
        Some(Framework::Pytest) => text(parse_pytest_text(stdout)),
        Some(Framework::Jest) => text(parse_jest_text(&format!("{stderr}\n{stdout}"))),
        Some(Framework::Vitest) => text(parse_vitest_text(&format!("{stdout}\n{stderr}"))),
        Some(Framework::NodeTest) => text(parse_tap(stdout, cwd)),
        None => text(None),
    }
}

pub(crate) fn build_report(
    framework: Option<Framework>,
    command: String,
    res: &ExecResult,
    parsed: Option<Parsed>,
    structured: bool,
    stdout: &str,
    stderr: &str,
) -> TestReport {
    let mut p = parsed.unwrap_or_default();
    let ok_exit = res.exit_code == Some(0);
    if framework.is_some() && !ok_exit && !res.timed_out && p.failed + p.errors == 0 {
        p.error(TestFailure {
            name: "test run".into(),
            classname: None,
            file: None,
            message: Some(first_error_line(stderr, stdout).unwrap_or_else(|| res.status.clone())),
            output: if stderr.trim().is_empty() {
                stdout.to_owned()
            } else {
                stderr.to_owned()
            },
        });
    }
    let outcome = if res.timed_out {
        Outcome::TimedOut
    } else if p.failed > 0 {
        Outcome::Failed
    } else if ok_exit && p.errors == 0 {
        Outcome::Passed
    } else {
        Outcome::Error
    };
    // Failed tests before errors, each group in report order.
    let mut failures = p.failures;
    failures.extend(p.errored);
    let omitted = failures.len().saturating_sub(MAX_FAILURES);
    failures.truncate(MAX_FAILURES);
    for f in &mut failures {
        f.name = cap_head(&strip_ansi(&f.name), MAX_MESSAGE);
        f.message = f
            .message
            .take()
            .map(|m| cap_head(strip_ansi(&m).trim(), MAX_MESSAGE))
            .filter(|m| !m.is_empty());
        f.output = cap_tail(strip_ansi(&f.output).trim_end(), MAX_FAILURE_OUTPUT);
    }
    TestReport {
        framework,
        command,
        exit_code: res.exit_code,
        status: res.status.clone(),
        outcome,
        passed: p.passed,
        failed: p.failed,
        skipped: p.skipped,
        errors: p.errors,
        total: p.passed + p.failed + p.skipped + p.errors,
        duration_ms: u64::try_from(res.duration.as_millis()).unwrap_or(u64::MAX),
        structured,
        failures,
        failures_omitted: u32::try_from(omitted).unwrap_or(u32::MAX),
        stdout_tail: cap_tail(&strip_ansi(stdout), MAX_TAIL),
        stderr_tail: cap_tail(&strip_ansi(stderr), MAX_TAIL),
        timed_out: res.timed_out,
        oom_killed: res.oom_killed,
    }
}

/// The first line that looks like an error message, for the synthetic `test run` failure.
fn first_error_line(stderr: &str, stdout: &str) -> Option<String> {
    let clean = |s: &str| strip_ansi(s);
    [clean(stderr), clean(stdout)].iter().find_map(|s| {
        s.lines()
            .map(str::trim)
            .find(|l| {
                let lower = l.to_ascii_lowercase();
                lower.starts_with("error")
                    || lower.contains("error:")
                    || lower.starts_with("fail")
                    || lower.starts_with("no tests ran")
            })
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn bad_report_falls_back_to_text_then_exit_code() {
        // Truncated JUnit from pytest: the text summary is used instead.
        let it = interpret(
            Some(Framework::Pytest),
            Some(ReportKind::Junit),
            Some("<testsuites><testsuite><testcase name="),
            fixture("pytest-text.txt"),
            "",
            CWD,
        );
        assert!(!it.structured);
        assert_eq!(counts(&it.parsed.expect("text parse")), (2, 1, 1, 2));
        // Nothing parseable anywhere: exit code only, with a synthetic error.
        let it = interpret(
            Some(Framework::Pytest),
            Some(ReportKind::Junit),
            Some("garbage"),
            "",
            "",
            CWD,
        );
        assert_eq!(it, Interpretation::default());
        let r = build_report(
            Some(Framework::Pytest),
            "cmd".into(),
            &exec_result(2, "", "ImportError: no module named x\n"),
            it.parsed,
            it.structured,
            "",
            "ImportError: no module named x\n",
        );
        assert_eq!((r.errors, r.total, r.outcome), (1, 1, Outcome::Error));
        assert_eq!(r.failures[0].name, "test run");
        assert_eq!(
            r.failures[0].message.as_deref(),
            Some("ImportError: no module named x")
        );
    }

    #[test]
    fn cargo_build_failure_report() {
        let out = fixture("cargo-build.txt");
        let it = interpret(Some(Framework::CargoTest), None, None, out, "", CWD);
        let r = build_report(
            Some(Framework::CargoTest),
            "cargo test --no-fail-fast 2>&1".into(),
            &exec_result(101, out, ""),
            it.parsed,
            it.structured,
            out,
            "",
        );
        assert_eq!((r.passed, r.failed, r.errors), (0, 0, 1));
        assert_eq!(r.outcome, Outcome::Error);
        assert_eq!(
            r.failures[0].message.as_deref(),
            Some("error[E0308]: mismatched types")
        );
    }

    #[test]
    fn report_caps_and_outcomes() {
        let mut p = Parsed::default();
        for i in 0..250 {
            p.fail(TestFailure {
                name: format!("t{i}"),
                output: "x".repeat(20_000),
                message: Some("\x1b[31mred\x1b[0m".into()),
                ..Default::default()
            });
        }
        p.error(TestFailure {
            name: "err".into(),
            ..Default::default()
        });
        let big = "é".repeat(20_000);
        let r = build_report(
            Some(Framework::Pytest),
            "c".into(),
            &exec_result(1, &big, ""),
            Some(p),
            true,
            &big,
            "",
        );
        assert_eq!((r.failed, r.errors, r.total), (250, 1, 251));
        assert_eq!(r.failures.len(), MAX_FAILURES);
        assert_eq!(r.failures_omitted, 51);
        assert!(
            r.failures
                .iter()
                .all(|f| f.output.len() <= MAX_FAILURE_OUTPUT + 40)
        );
        assert_eq!(r.failures[0].message.as_deref(), Some("red"));
        assert!(r.stdout_tail.len() <= MAX_TAIL + 40);
        assert!(r.stdout_tail.starts_with('['));
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.duration_ms, 1234);

        // No framework: exit code and tails only, no synthetic error.
        let r = build_report(
            None,
            "false".into(),
            &exec_result(1, "", "oops"),
            None,
            false,
            "",
            "oops",
        );
        assert_eq!(
            (r.total, r.failures.len(), r.outcome),
            (0, 0, Outcome::Error)
        );
        let r = build_report(
            None,
            "true".into(),
            &exec_result(0, "", ""),
            None,
            false,
            "",
            "",
        );
        assert_eq!(r.outcome, Outcome::Passed);
        let mut timed = exec_result(0, "", "");
        timed.exit_code = None;
        timed.timed_out = true;
        let r = build_report(
            Some(Framework::GoTest),
            "c".into(),
            &timed,
            None,
            false,
            "",
            "",
        );
        assert_eq!((r.outcome, r.errors), (Outcome::TimedOut, 0));
    }
}

//! pytest's text output (its JUnit report is read by `junit`).

use super::{Parsed, parse_counts, strip_ansi};
use crate::TestFailure;

/// Parses pytest's text output: the final `1 failed, 2 passed in 0.1s` line and the
/// `FAILED path::name - message` / `ERROR path::name` lines of the short summary.
pub(crate) fn parse_pytest_text(text: &str) -> Option<Parsed> {
    let text = strip_ansi(text);
    let mut p = Parsed::default();
    let mut found = false;
    for line in text.lines() {
        let t = line.trim().trim_matches('=').trim();
        if let Some((counts, _)) = t.rsplit_once(" in ")
            && !t.starts_with("FAILED")
            && !t.starts_with("ERROR")
        {
            let mut q = Parsed::default();
            let ok = parse_counts(counts, &[','], |w, n| match w {
                "passed" | "xpassed" => q.passed += n,
                "failed" => q.failed += n,
                "skipped" | "xfailed" => q.skipped += n,
                "error" | "errors" => q.errors += n,
                _ => {}
            });
            if (ok && q.total() > 0) || counts.starts_with("no tests ran") {
                found = true;
                p.passed = q.passed;
                p.failed = q.failed;
                p.skipped = q.skipped;
                p.errors = q.errors;
            }
        }
    }
    let mut failures = Vec::new();
    let mut errors = Vec::new();
    for line in text.lines() {
        let (is_error, rest) = match (line.strip_prefix("FAILED "), line.strip_prefix("ERROR ")) {
            (Some(r), _) => (false, r),
            (None, Some(r)) => (true, r),
            _ => continue,
        };
        let (nodeid, message) = match rest.split_once(" - ") {
            Some((n, m)) => (n.trim(), Some(m.trim().to_owned())),
            None => (rest.trim(), None),
        };
        let mut parts = nodeid.split("::");
        let file = parts.next().map(str::to_owned);
        let rest: Vec<&str> = parts.collect();
        let (name, classname) = match rest.split_last() {
            Some((n, cls)) => ((*n).to_owned(), (!cls.is_empty()).then(|| cls.join("."))),
            None => (nodeid.to_owned(), None),
        };
        let f = TestFailure {
            name,
            classname,
            file,
            message,
            output: String::new(),
        };
        if is_error {
            errors.push(f);
        } else {
            failures.push(f);
        }
    }
    if !found && failures.is_empty() && errors.is_empty() {
        return None;
    }
    p.failed = p.failed.max(failures.len() as u32);
    p.errors = p.errors.max(errors.len() as u32);
    p.failures = failures;
    p.errored = errors;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn pytest_text() {
        let p = parse_pytest_text(fixture("pytest-text.txt")).expect("parses");
        assert_eq!(counts(&p), (2, 1, 1, 2));
        assert_eq!(names(&p), ["test_mul", "test_err", "test_uses_broken"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("test_calc.py"));
        assert_eq!(
            p.failures[0].message.as_deref(),
            Some("AssertionError: math is broken")
        );
        assert_eq!(p.errored[0].classname.as_deref(), Some("TestThing"));
        assert_eq!(parse_pytest_text("hello\n"), None);
    }
}

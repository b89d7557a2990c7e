//! vitest's default reporter text (its JUnit report is read by `junit`).

use std::collections::BTreeSet;

use super::{Parsed, parse_counts, strip_ansi};
use crate::TestFailure;

/// Parses vitest's default reporter: the `Tests  1 failed | 2 passed (3)` summary line and
/// the `FAIL  file > suite > test` headings; `FAIL  file [ file ]` is a file that failed to
/// load (an error).
pub(crate) fn parse_vitest_text(text: &str) -> Option<Parsed> {
    let text = strip_ansi(text);
    let mut p = Parsed::default();
    let mut found = false;
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    let mut fails = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("FAIL ") {
            let rest = rest.trim();
            if !seen.insert(rest.to_owned()) {
                continue;
            }
            match rest.split_once(" > ") {
                Some((file, name)) => fails.push(TestFailure {
                    name: name.trim().to_owned(),
                    classname: Some(file.trim().to_owned()),
                    file: Some(file.trim().to_owned()),
                    ..Default::default()
                }),
                None => {
                    let file = rest.split(" [").next().unwrap_or(rest).trim().to_owned();
                    errors.push(TestFailure {
                        name: file.clone(),
                        file: Some(file),
                        ..Default::default()
                    });
                }
            }
        } else if let Some(rest) = t.strip_prefix("Tests ") {
            let rest = rest.split('(').next().unwrap_or(rest);
            let mut q = Parsed::default();
            found |= parse_counts(rest, &['|'], |w, n| match w {
                "passed" => q.passed += n,
                "failed" => q.failed += n,
                "skipped" | "todo" => q.skipped += n,
                _ => {}
            });
            p = q;
        }
    }
    if !found && fails.is_empty() && errors.is_empty() {
        return None;
    }
    p.failed = p.failed.max(fails.len() as u32);
    p.errors = p.errors.max(errors.len() as u32);
    p.failures = fails;
    p.errored = errors;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn vitest_text_with_ansi_colors() {
        let p = parse_vitest_text(fixture("vitest-text.txt")).expect("parses");
        assert_eq!(counts(&p), (2, 2, 2, 1));
        assert_eq!(names(&p), ["calc > breaks", "other fails", "bad.test.js"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("calc.test.js"));
    }
}

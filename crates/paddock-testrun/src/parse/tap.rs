//! TAP as `node --test` writes it.

use super::{Parsed, relative, strip_ansi, strip_line_col};
use crate::TestFailure;

/// Parses TAP as node's test runner writes it: nested subtests are indented and come before
/// their parent's line. Counts leaf tests (`# SKIP` and `# TODO` count as skipped); a parent
/// (a `describe` suite or a test with subtests) counts only when it failed and none of its
/// children did. Messages and locations come from the YAML block after a `not ok` line.
pub(crate) fn parse_tap(text: &str, cwd: &str) -> Option<Parsed> {
    let text = strip_ansi(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut p = Parsed::default();
    let mut any = false;
    // Test points not yet claimed by a parent: (indent, not ok).
    let mut pending: Vec<(usize, bool)> = Vec::new();
    let mut summary = Parsed::default();
    let mut has_summary = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        let (not_ok, rest) = if let Some(r) = t.strip_prefix("not ok ") {
            (true, r)
        } else if let Some(r) = t.strip_prefix("ok ") {
            (false, r)
        } else {
            if let Some(s) = t.strip_prefix("# ").or_else(|| t.strip_prefix("ℹ "))
                && let Some((k, v)) = s.split_once(' ')
                && let Ok(n) = v.trim().parse::<u32>()
            {
                has_summary = true;
                match k {
                    "pass" => summary.passed = n,
                    "fail" => summary.failed = n,
                    "skipped" | "todo" => summary.skipped += n,
                    "cancelled" => summary.errors = n,
                    _ => {}
                }
            }
            continue;
        };
        any = true;
        // `ok 3 - name # SKIP reason`
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix("- ").unwrap_or(rest);
        let (name, directive) = split_tap_directive(rest);
        // The YAML diagnostics block, indented below the test point.
        let mut yaml = Vec::new();
        if lines.get(i).map(|l| l.trim()) == Some("---") {
            i += 1;
            while i < lines.len() && lines[i].trim() != "..." {
                yaml.push(lines[i]);
                i += 1;
            }
            i += 1;
        }
        let mut children = false;
        let mut child_failed = false;
        while let Some(&(d, f)) = pending.last() {
            if d <= indent {
                break;
            }
            pending.pop();
            children = true;
            child_failed |= f;
        }
        pending.push((indent, not_ok));
        let skipped = directive.is_some_and(|d| {
            let d = d.to_ascii_uppercase();
            d.starts_with("SKIP") || d.starts_with("TODO")
        });
        if children {
            if not_ok && !child_failed {
                p.fail(tap_failure(&name, &yaml, cwd));
            }
            continue;
        }
        if skipped {
            p.skipped += 1;
        } else if not_ok {
            p.fail(tap_failure(&name, &yaml, cwd));
        } else {
            p.passed += 1;
        }
    }
    if !any {
        return has_summary.then_some(summary);
    }
    Some(p)
}

/// Splits `name # SKIP reason` into the name (with `\#` unescaped) and the directive.
fn split_tap_directive(s: &str) -> (String, Option<&str>) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == b'#' && (i == 0 || bytes[i - 1] == b' ') {
            return (
                s[..i].trim_end().replace("\\#", "#"),
                Some(s[i + 1..].trim()),
            );
        }
        i += 1;
    }
    (s.trim_end().replace("\\#", "#"), None)
}

fn tap_failure(name: &str, yaml: &[&str], cwd: &str) -> TestFailure {
    let mut message = None;
    let mut file = None;
    let mut j = 0;
    while j < yaml.len() {
        let t = yaml[j].trim_start();
        let key_indent = yaml[j].len() - t.len();
        if let Some(v) = t.strip_prefix("location: ") {
            let v = v.trim().trim_matches('\'').trim_matches('"');
            file = Some(relative(strip_line_col(v), cwd));
        } else if let Some(v) = t.strip_prefix("error: ") {
            let v = v.trim();
            if v.starts_with('|') || v.starts_with('>') {
                let mut block = Vec::new();
                while j + 1 < yaml.len() {
                    let next = yaml[j + 1];
                    let ind = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && ind <= key_indent {
                        break;
                    }
                    block.push(next.trim());
                    j += 1;
                }
                message = Some(block.join("\n").trim().to_owned());
            } else {
                message = Some(v.trim_matches('\'').trim_matches('"').to_owned());
            }
        }
        j += 1;
    }
    let indent = yaml
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    TestFailure {
        name: name.to_owned(),
        classname: None,
        file,
        message: message.filter(|m| !m.is_empty()),
        output: yaml
            .iter()
            .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn node_tap() {
        let p = parse_tap(fixture("node.tap"), CWD).expect("parses");
        // The `suite` describe block is a parent, not a test.
        assert_eq!(counts(&p), (3, 1, 2, 0));
        assert_eq!(names(&p), ["fails"]);
        let f = &p.failures[0];
        assert_eq!(f.file.as_deref(), Some("a.test.js"));
        assert_eq!(
            f.message.as_deref(),
            Some("Expected values to be strictly equal:\n\n2 !== 3")
        );
        assert!(f.output.contains("operator: 'strictEqual'"), "{}", f.output);
    }

    #[test]
    fn tap_parent_failure_and_escapes() {
        let tap = "TAP version 13\n# Subtest: outer\n    # Subtest: inner\n    ok 1 - inner\n    1..1\nnot ok 1 - outer\n  ---\n  error: 'after hook failed'\n  ...\nok 2 - a \\# b # SKIP later\n1..2\n";
        let p = parse_tap(tap, CWD).unwrap();
        assert_eq!(counts(&p), (1, 1, 1, 0));
        assert_eq!(names(&p), ["outer"]);
        assert_eq!(p.failures[0].message.as_deref(), Some("after hook failed"));
        assert_eq!(split_tap_directive("a \\# b # SKIP later").0, "a # b");
        assert_eq!(parse_tap("nothing here\n", CWD), None);
    }
}

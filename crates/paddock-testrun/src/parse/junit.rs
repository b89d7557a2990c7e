//! JUnit XML: pytest, vitest, node and custom commands.

use std::collections::HashMap;

use super::{Parsed, keep, path_in, relative};
use crate::TestFailure;

#[derive(Debug, Default)]
struct JunitCase {
    name: String,
    classname: Option<String>,
    file: Option<String>,
    /// `failure`, `error` or `skipped`, strongest first seen.
    failure: Option<(String, Option<String>)>,
    error: Option<(String, Option<String>)>,
    skipped: bool,
    system_out: String,
    system_err: String,
}

/// Which text of the current test case the reader is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JunitText {
    Failure,
    Error,
    Out,
    Err,
    Other,
}

/// Parses JUnit XML: `<testsuites>` and `<testsuite>` nested in any way, `<testcase>` with
/// `<failure>`, `<error>`, `<skipped>`, `<system-out>` and `<system-err>`. Counts come from
/// the test cases, not from the suites' attributes. `None` when the XML is malformed or
/// truncated, or has no `testsuites`/`testsuite` root.
pub(crate) fn parse_junit(xml: &str, cwd: &str) -> Option<Parsed> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(xml);
    let mut parsed = Parsed::default();
    let mut root = false;
    let mut depth = 0usize;
    let mut case: Option<JunitCase> = None;
    let mut text: Option<JunitText> = None;
    loop {
        let ev = reader.read_event().ok()?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                if !empty {
                    depth += 1;
                }
                let attrs = junit_attrs(e)?;
                let get = |k: &str| attrs.get(k).cloned().filter(|v| !v.is_empty());
                match e.name().as_ref() {
                    "testsuites" | "testsuite" => root = true,
                    "testcase" if case.is_none() => {
                        let c = JunitCase {
                            name: get("name").unwrap_or_default(),
                            classname: get("classname"),
                            file: get("file"),
                            ..Default::default()
                        };
                        if empty {
                            finish_case(&mut parsed, c, cwd);
                        } else {
                            case = Some(c);
                        }
                    }
                    name @ ("failure" | "error" | "skipped" | "system-out" | "system-err") => {
                        if let Some(c) = case.as_mut() {
                            let slot = match name {
                                "failure" => {
                                    c.failure.get_or_insert((String::new(), get("message")));
                                    JunitText::Failure
                                }
                                "error" => {
                                    c.error.get_or_insert((String::new(), get("message")));
                                    JunitText::Error
                                }
                                "skipped" => {
                                    c.skipped = true;
                                    JunitText::Other
                                }
                                "system-out" => JunitText::Out,
                                _ => JunitText::Err,
                            };
                            if !empty {
                                text = Some(slot);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::End(ref e) => {
                depth = depth.checked_sub(1)?;
                match e.name().as_ref() {
                    "testcase" => {
                        if let Some(c) = case.take() {
                            finish_case(&mut parsed, c, cwd);
                        }
                        text = None;
                    }
                    "failure" | "error" | "skipped" | "system-out" | "system-err" => text = None,
                    _ => {}
                }
            }
            Event::Text(ref t) => junit_text(&mut case, text, &t.xml10_content()),
            Event::CData(ref t) => junit_text(&mut case, text, &t.xml10_content()),
            Event::GeneralRef(ref r) => {
                let s = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(r.as_ref())
                        .unwrap_or_default()
                        .to_owned(),
                    Err(_) => return None,
                };
                junit_text(&mut case, text, &s);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (root && depth == 0).then_some(parsed)
}

fn junit_attrs(e: &quick_xml::events::BytesStart<'_>) -> Option<HashMap<String, String>> {
    let mut m = HashMap::new();
    for a in e.attributes() {
        let a = a.ok()?;
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()?;
        m.insert(a.key.as_ref().to_owned(), v.into_owned());
    }
    Some(m)
}

fn junit_text(case: &mut Option<JunitCase>, slot: Option<JunitText>, s: &str) {
    let (Some(c), Some(slot)) = (case.as_mut(), slot) else {
        return;
    };
    match slot {
        JunitText::Failure => {
            if let Some((t, _)) = c.failure.as_mut() {
                keep(t, s);
            }
        }
        JunitText::Error => {
            if let Some((t, _)) = c.error.as_mut() {
                keep(t, s);
            }
        }
        JunitText::Out => keep(&mut c.system_out, s),
        JunitText::Err => keep(&mut c.system_err, s),
        JunitText::Other => {}
    }
}

/// Captured output worth showing: empty sections (pytest writes `--- Captured Out ---`
/// headers even when nothing was captured) count as nothing.
fn meaningful(s: &str) -> bool {
    s.lines().any(|l| {
        let t = l.trim();
        let header = t.starts_with("---") && t.ends_with("---") && t.contains("Captured");
        !(t.is_empty() || header)
    })
}

fn finish_case(parsed: &mut Parsed, c: JunitCase, cwd: &str) {
    let (fail, is_error) = match (c.failure, c.error) {
        (Some(f), _) => (Some(f), false),
        (None, Some(e)) => (Some(e), true),
        (None, None) => (None, false),
    };
    let Some((body, msg)) = fail else {
        if c.skipped {
            parsed.skipped += 1;
        } else {
            parsed.passed += 1;
        }
        return;
    };
    let mut output = body.trim_matches('\n').to_owned();
    for extra in [&c.system_out, &c.system_err] {
        if meaningful(extra) {
            output.push_str("\n\n");
            output.push_str(extra.trim_matches('\n'));
        }
    }
    // vitest and others put the test file in `classname`.
    let file = c.file.or_else(|| {
        c.classname
            .as_ref()
            .filter(|cl| {
                [
                    ".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx", ".mts", ".cts", ".py",
                ]
                .iter()
                .any(|e| cl.ends_with(e))
            })
            .cloned()
    });
    // node's reporter names no file; its stack traces do.
    let file = file.or_else(|| path_in(&body, cwd));
    let message = msg.or_else(|| {
        body.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    });
    let f = TestFailure {
        name: c.name,
        classname: c.classname,
        file: file.map(|f| relative(&f, cwd)),
        message,
        output,
    };
    if is_error {
        parsed.error(f);
    } else {
        parsed.fail(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn pytest_junit() {
        let p = parse_junit(fixture("pytest.xml"), CWD).expect("parses");
        // 2 passed, 1 failed (test_mul), 1 skipped, 2 setup errors.
        assert_eq!(counts(&p), (2, 1, 1, 2));
        assert_eq!(names(&p), ["test_mul", "test_err", "test_uses_broken"]);
        let f = &p.failures[0];
        assert_eq!(f.classname.as_deref(), Some("test_calc"));
        assert_eq!(f.file.as_deref(), Some("test_calc.py"));
        assert_eq!(
            f.message.as_deref(),
            Some("AssertionError: math is broken\nassert (2 * 2) == 5")
        );
        assert!(
            f.output.contains(">       assert 2 * 2 == 5"),
            "{}",
            f.output
        );
        // Captured stdout is appended; empty capture sections are not.
        assert!(f.output.contains("computing"), "{}", f.output);
        assert!(!f.output.contains("Captured Err"), "{}", f.output);
        assert_eq!(
            p.errored[0].classname.as_deref(),
            Some("test_calc.TestThing")
        );
        assert!(
            p.errored[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("fixture 'missing_fixture' not found"))
        );
    }

    #[test]
    fn vitest_junit() {
        let p = parse_junit(fixture("vitest.xml"), "/home/user/app").expect("parses");
        // bad.test.js failed to import: vitest reports it as a failed test case.
        assert_eq!(counts(&p), (2, 3, 2, 0));
        assert_eq!(names(&p), ["bad.test.js", "calc > breaks", "other fails"]);
        let f = &p.failures[1];
        assert_eq!(f.file.as_deref(), Some("calc.test.js"));
        assert_eq!(
            f.message.as_deref(),
            Some("expected 4 to be 5 // Object.is equality")
        );
        assert!(f.output.contains("- Expected"), "{}", f.output);
        assert!(f.output.contains("dbg"), "system-out is kept: {}", f.output);
        // Entities in attributes and text are resolved.
        assert!(
            p.failures[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("Cannot find module './does-not-exist.js'"))
        );
    }

    #[test]
    fn node_junit() {
        let p = parse_junit(fixture("node.xml"), CWD).expect("parses");
        // Top-level cases and a nested `describe` suite; the todo counts as skipped.
        assert_eq!(counts(&p), (3, 1, 2, 0));
        assert_eq!(names(&p), ["fails"]);
        let f = &p.failures[0];
        assert_eq!(
            f.message.as_deref(),
            Some("Expected values to be strictly equal:2 !== 3")
        );
        // No file attribute: the first stack frame in the project names it.
        assert_eq!(f.file.as_deref(), Some("a.test.js"));
        assert!(
            f.output.contains("at TestContext.<anonymous>"),
            "{}",
            f.output
        );
    }

    #[test]
    fn junit_nesting_cdata_and_errors() {
        let xml = r#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="outer" tests="99">
    <testsuite name="inner">
      <testcase name="a" classname="pkg.A"/>
      <testcase name="b" classname="pkg.A" file="/home/user/proj/src/a_test.py">
        <failure><![CDATA[boom <here> & there]]></failure>
        <system-err>stderr text</system-err>
      </testcase>
      <testcase name="c"><error message="setup">trace</error></testcase>
      <testcase name="d"><skipped/></testcase>
    </testsuite>
  </testsuite>
</testsuites>"#;
        let p = parse_junit(xml, CWD).expect("parses");
        assert_eq!(counts(&p), (1, 1, 1, 1));
        assert_eq!(names(&p), ["b", "c"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("src/a_test.py"));
        assert_eq!(
            p.failures[0].message.as_deref(),
            Some("boom <here> & there")
        );
        assert!(p.failures[0].output.contains("stderr text"));
        assert_eq!(p.errored[0].message.as_deref(), Some("setup"));
        // A bare <testsuite> root works too.
        let p = parse_junit(r#"<testsuite><testcase name="x"/></testsuite>"#, CWD).unwrap();
        assert_eq!(counts(&p), (1, 0, 0, 0));
    }

    #[test]
    fn junit_bad_xml_is_none() {
        for bad in [
            "",
            "not xml at all",
            "<testsuites><testcase name='a'>",
            "<testsuites><testcase name='a'></testsuite></testsuites>",
            "<testsuites><testcase name='a' x=></testcase></testsuites>",
            "<html><body>no tests</body></html>",
        ] {
            assert_eq!(parse_junit(bad, CWD), None, "{bad:?}");
        }
    }
}

//! `go test`: the `test2json` event stream of `-json`, or plain text.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use super::{Parsed, keep};
use crate::TestFailure;

#[derive(Debug, Deserialize)]
struct GoEvent {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Package", default)]
    package: Option<String>,
    #[serde(rename = "Test", default)]
    test: Option<String>,
    #[serde(rename = "Output", default)]
    output: Option<String>,
    #[serde(rename = "ImportPath", default)]
    import_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoResult {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Default)]
struct GoPackage {
    result: Option<GoResult>,
    build_failed: bool,
    output: String,
}

#[derive(Debug, Default)]
struct GoTests {
    /// (package, test) in order of first appearance.
    order: Vec<(String, String)>,
    tests: HashMap<(String, String), (Option<GoResult>, String)>,
    pkgs: BTreeMap<String, GoPackage>,
    /// `build-output` events (go 1.24+) by import path.
    build_output: BTreeMap<String, String>,
}

impl GoTests {
    fn test(&mut self, pkg: &str, name: &str) -> &mut (Option<GoResult>, String) {
        let key = (pkg.to_owned(), name.to_owned());
        if !self.tests.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.tests.entry(key).or_default()
    }

    fn pkg(&mut self, pkg: &str) -> &mut GoPackage {
        self.pkgs.entry(pkg.to_owned()).or_default()
    }

    fn event(&mut self, e: GoEvent) {
        let result = match e.action.as_str() {
            "pass" => Some(GoResult::Pass),
            "fail" => Some(GoResult::Fail),
            "skip" => Some(GoResult::Skip),
            _ => None,
        };
        if e.action == "build-output" {
            if let (Some(ip), Some(out)) = (e.import_path, e.output) {
                keep(self.build_output.entry(ip).or_default(), &out);
            }
            return;
        }
        let Some(pkg) = e.package else { return };
        match (e.test, result) {
            (Some(t), Some(r)) => self.test(&pkg, &t).0 = Some(r),
            (Some(t), None) => {
                let entry = self.test(&pkg, &t);
                if let Some(out) = e.output {
                    keep(&mut entry.1, &out);
                }
            }
            (None, Some(r)) => self.pkg(&pkg).result = Some(r),
            (None, None) => {
                if let Some(out) = e.output {
                    if out.contains("[build failed]") || out.contains("[setup failed]") {
                        self.pkg(&pkg).build_failed = true;
                    }
                    keep(&mut self.pkg(&pkg).output, &out);
                }
            }
        }
    }

    /// A line of plain `go test` output (no `-json`), or a non-JSON line in `-json` mode
    /// (go before 1.24 prints `FAIL pkg [build failed]` as plain text).
    fn text_line(&mut self, line: &str, current: &mut Option<(String, String)>) {
        let t = line.trim_start();
        for (prefix, r) in [
            ("--- PASS: ", GoResult::Pass),
            ("--- FAIL: ", GoResult::Fail),
            ("--- SKIP: ", GoResult::Skip),
        ] {
            if let Some(rest) = t.strip_prefix(prefix) {
                let name = rest.split(" (").next().unwrap_or(rest).trim().to_owned();
                let entry = self.test("", &name);
                entry.0 = Some(r);
                *current = Some((String::new(), name));
                return;
            }
        }
        let pkg_line = t
            .strip_prefix("FAIL\t")
            .map(|r| (r, GoResult::Fail))
            .or_else(|| t.strip_prefix("ok  \t").map(|r| (r, GoResult::Pass)));
        if let Some((rest, r)) = pkg_line {
            let mut parts = rest.split_whitespace();
            if let Some(pkg) = parts.next() {
                let p = self.pkg(pkg);
                p.result = Some(r);
                if rest.contains("[build failed]") || rest.contains("[setup failed]") {
                    p.build_failed = true;
                    keep(&mut p.output, line);
                    keep(&mut p.output, "\n");
                }
            }
            *current = None;
            return;
        }
        if t.starts_with("=== ") || t == "FAIL" || t == "PASS" || t.starts_with("ok ") {
            *current = None;
            return;
        }
        if let Some(key) = current.as_ref()
            && let Some(entry) = self.tests.get_mut(key)
        {
            keep(&mut entry.1, line);
            keep(&mut entry.1, "\n");
        }
    }

    fn finish(self, stderr: &str) -> Parsed {
        let mut p = Parsed::default();
        let mut failed_pkgs: BTreeSet<String> = BTreeSet::new();
        let sorted: BTreeMap<&(String, String), Option<GoResult>> =
            self.tests.iter().map(|(k, (r, _))| (k, *r)).collect();
        // The results of a test's subtests: the keys with the prefix `name/`, contiguous in
        // sorted order.
        let subtests = |k: &(String, String)| -> Vec<Option<GoResult>> {
            let from = (k.0.clone(), format!("{}/", k.1));
            sorted
                .range::<&(String, String), _>(&from..)
                .take_while(|((pkg, n), _)| *pkg == from.0 && n.starts_with(&from.1))
                .map(|(_, r)| *r)
                .collect()
        };
        for key in &self.order {
            let Some((result, output)) = self.tests.get(key) else {
                continue;
            };
            let pkg_failed = self.pkgs.get(&key.0).and_then(|p| p.result) == Some(GoResult::Fail);
            // A test without a result was running when its package died (panic, timeout).
            let result = result.or(pkg_failed.then_some(GoResult::Fail));
            let subs = subtests(key);
            let parent = !subs.is_empty();
            let child_failed = subs.contains(&Some(GoResult::Fail));
            match result {
                Some(GoResult::Pass) if !parent => p.passed += 1,
                Some(GoResult::Skip) if !parent => p.skipped += 1,
                Some(GoResult::Fail) if !child_failed => {
                    failed_pkgs.insert(key.0.clone());
                    p.fail(go_failure(&key.0, &key.1, output));
                }
                _ => {}
            }
        }
        // Plain-text output does not say which package a test belongs to.
        let unknown_pkg_failed = failed_pkgs.contains("");
        for (name, pkg) in &self.pkgs {
            if pkg.result != Some(GoResult::Fail)
                || failed_pkgs.contains(name)
                || (unknown_pkg_failed && !pkg.build_failed)
            {
                continue;
            }
            let mut output = pkg.output.clone();
            for (ip, out) in &self.build_output {
                if ip == name || ip.starts_with(&format!("{name} ")) {
                    output.push_str(out);
                }
            }
            // Before go 1.24 compiler errors go to stderr, under a `# pkg` heading.
            output.push_str(&go_stderr_block(stderr, name));
            let message = if pkg.build_failed {
                output
                    .lines()
                    .find(|l| !l.starts_with('#') && !l.starts_with("FAIL") && !l.trim().is_empty())
                    .map_or_else(
                        || "build failed".to_owned(),
                        |l| format!("build failed: {}", l.trim()),
                    )
            } else {
                output
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && *l != "FAIL" && !l.starts_with("FAIL\t"))
                    .unwrap_or("package failed")
                    .to_owned()
            };
            p.error(TestFailure {
                name: name.clone(),
                classname: None,
                file: None,
                message: Some(message),
                output,
            });
        }
        p
    }
}

/// The lines of go's stderr under a `# pkg` or `# pkg [pkg.test]` heading.
fn go_stderr_block(stderr: &str, pkg: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in stderr.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            inside = h == pkg || h.starts_with(&format!("{pkg} "));
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn go_failure(pkg: &str, name: &str, output: &str) -> TestFailure {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("=== RUN") || t.starts_with("=== PAUSE") || t.starts_with("=== CONT"))
        })
        .collect();
    // `    calc_test.go:16: message`: the first such line names the file and the reason.
    let located = lines.iter().find_map(|l| {
        let t = l.trim_start();
        let (loc, msg) = t.split_once(": ")?;
        let (file, line) = loc.rsplit_once(':')?;
        (file.ends_with(".go") && line.bytes().all(|b| b.is_ascii_digit()))
            .then(|| (file.to_owned(), t.to_owned(), msg))
    });
    let message = located
        .as_ref()
        .map(|(_, whole, _)| whole.clone())
        .or_else(|| {
            lines
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("--- FAIL"))
                .map(str::to_owned)
        });
    TestFailure {
        name: name.to_owned(),
        classname: (!pkg.is_empty()).then(|| pkg.to_owned()),
        file: located.map(|(f, _, _)| f),
        message,
        output: lines.join("\n"),
    }
}

/// The result of [`parse_go`].
#[derive(Debug)]
pub(crate) struct GoRun {
    pub(crate) parsed: Parsed,
    /// Stdout held `test2json` events.
    pub(crate) json: bool,
    /// What `go test` without `-json` would have printed: the events' output, and lines
    /// that were not events.
    pub(crate) text: String,
}

/// Parses `go test -json` output (the `test2json` event stream), or plain `go test` output
/// when stdout holds no JSON events. Counts leaf tests: a test with subtests is not counted
/// itself, except when it failed and none of its subtests did. A failed package without a
/// failed test (build failure, `TestMain` exit, panic at init) is an error.
pub(crate) fn parse_go(stdout: &str, stderr: &str) -> Option<GoRun> {
    let mut acc = GoTests::default();
    let mut json = false;
    let mut current = None;
    let mut text = String::new();
    for line in stdout.lines() {
        if line.starts_with('{')
            && let Ok(e) = serde_json::from_str::<GoEvent>(line)
        {
            json = true;
            if let Some(out) = e.output.as_deref().filter(|_| e.action != "build-output") {
                text.push_str(out);
            }
            acc.event(e);
            continue;
        }
        text.push_str(line);
        text.push('\n');
        acc.text_line(line, &mut current);
    }
    if acc.tests.is_empty() && acc.pkgs.is_empty() {
        return None;
    }
    Some(GoRun {
        parsed: acc.finish(stderr),
        json,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn go_json_events() {
        let go = parse_go(fixture("go.json"), fixture("go.stderr")).expect("parses");
        assert!(go.json);
        assert!(
            go.text
                .starts_with("=== RUN   TestAdd\n--- PASS: TestAdd (0.00s)\n")
        );
        assert!(
            go.text
                .contains("FAIL\texample.com/calc/broken [build failed]\n")
        );
        let p = go.parsed;
        // Leaves: TestAdd, TestTable/1+1, TestSubOK pass; TestBroken, TestTable/2+2 fail;
        // TestSkipMe skips; the package that does not compile is an error.
        assert_eq!(counts(&p), (3, 2, 1, 1));
        assert_eq!(
            names(&p),
            ["TestBroken", "TestTable/2+2", "example.com/calc/broken"]
        );
        let f = &p.failures[0];
        assert_eq!(f.classname.as_deref(), Some("example.com/calc"));
        assert_eq!(f.file.as_deref(), Some("calc_test.go"));
        assert_eq!(
            f.message.as_deref(),
            Some("calc_test.go:16: Add(2, 2) = 4, want 5")
        );
        assert!(f.output.contains("some debug output"), "{}", f.output);
        assert!(!f.output.contains("=== RUN"), "{}", f.output);
        let b = &p.errored[0];
        assert!(
            b.message
                .as_deref()
                .is_some_and(|m| m.starts_with("build failed: broken/broken_test.go:5:40")),
            "{:?}",
            b.message
        );
    }

    #[test]
    fn go_json_new_build_events_and_parent_failures() {
        // go 1.24 reports build errors as events; a parent failing on its own is counted.
        let stream = [
            r##"{"ImportPath":"ex/a [ex/a.test]","Action":"build-output","Output":"# ex/a [ex/a.test]\n"}"##,
            r#"{"ImportPath":"ex/a [ex/a.test]","Action":"build-output","Output":"a/a_test.go:3:1: undefined: x\n"}"#,
            r#"{"ImportPath":"ex/a [ex/a.test]","Action":"build-fail"}"#,
            r#"{"Action":"start","Package":"ex/a"}"#,
            r#"{"Action":"output","Package":"ex/a","Output":"FAIL\tex/a [build failed]\n"}"#,
            r#"{"Action":"fail","Package":"ex/a","Elapsed":0,"FailedBuild":"ex/a [ex/a.test]"}"#,
            r#"{"Action":"run","Package":"ex/b","Test":"TestP"}"#,
            r#"{"Action":"run","Package":"ex/b","Test":"TestP/sub"}"#,
            r#"{"Action":"pass","Package":"ex/b","Test":"TestP/sub"}"#,
            r#"{"Action":"output","Package":"ex/b","Test":"TestP","Output":"    b_test.go:9: cleanup failed\n"}"#,
            r#"{"Action":"fail","Package":"ex/b","Test":"TestP"}"#,
            r#"{"Action":"run","Package":"ex/b","Test":"TestHang"}"#,
            r#"{"Action":"output","Package":"ex/b","Test":"TestHang","Output":"panic: test timed out after 1s\n"}"#,
            r#"{"Action":"fail","Package":"ex/b"}"#,
        ]
        .join("\n");
        let go = parse_go(&stream, "").expect("parses");
        assert!(go.json);
        let p = go.parsed;
        assert_eq!(counts(&p), (1, 2, 0, 1));
        assert_eq!(names(&p), ["TestP", "TestHang", "ex/a"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("b_test.go"));
        assert!(p.errored[0].output.contains("undefined: x"));
        assert_eq!(
            p.errored[0].message.as_deref(),
            Some("build failed: a/a_test.go:3:1: undefined: x")
        );
    }

    #[test]
    fn go_plain_text() {
        let go = parse_go(fixture("go-text.txt"), "").expect("parses");
        assert!(!go.json);
        let p = go.parsed;
        // Without -v, go prints only failures.
        assert_eq!(counts(&p), (0, 2, 0, 1));
        assert_eq!(
            names(&p),
            ["TestBroken", "TestTable/2+2", "example.com/calc/broken"]
        );
        assert_eq!(
            p.failures[1].message.as_deref(),
            Some("calc_test.go:27: got 4 want 5")
        );
    }
}

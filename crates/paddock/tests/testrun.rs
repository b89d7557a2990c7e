//! `paddock_testrun` against real sandboxes: a small project per framework, written
//! into the sandbox, its tests run with `run_tests`, exact counts and failing names checked.
//!
//! The toolchains come from the host's `/usr` (the `base` template binds it): `python3-pytest`,
//! `golang-go`, `cargo` (Debian's, not rustup's, which lives outside `/usr`) and `nodejs`.
//! `.ci/run` installs them. jest and vitest need npm packages a sandbox cannot download, so
//! they are covered by the parser unit tests in `paddock-testrun` only.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use paddock_core::Limits;
use paddock_runtime::{CreateSpec, Sandbox};
use paddock_testrun::{Framework, Outcome, TestReport, TestRequest, TestRunError, run_tests};

const PROJ: &str = "/home/user/proj";

/// Fails with an install hint when a toolchain is missing on the host.
fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (see .ci/run)"
    );
}

/// A sandbox with room for compilers.
async fn build_sandbox() -> std::sync::Arc<Sandbox> {
    create(CreateSpec {
        limits: Limits {
            memory_bytes: 1 << 30,
            ..Limits::default()
        },
        ..CreateSpec::default()
    })
    .await
}

async fn write(s: &Sandbox, files: &[(&str, &str)]) {
    for (path, content) in files {
        s.write_file(&format!("{PROJ}/{path}"), content.as_bytes().to_vec(), None)
            .await
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

fn request() -> TestRequest {
    TestRequest {
        cwd: PROJ.into(),
        timeout: Duration::from_secs(300),
        ..TestRequest::default()
    }
}

fn failing(r: &TestReport) -> Vec<&str> {
    r.failures.iter().map(|f| f.name.as_str()).collect()
}

fn counts(r: &TestReport) -> (u32, u32, u32, u32, u32) {
    (r.passed, r.failed, r.skipped, r.errors, r.total)
}

/// The report file in the sandbox's /tmp was removed.
async fn assert_no_report_left(s: &Sandbox) {
    let r = sh(s, "ls -A /tmp").await;
    assert!(
        !out(&r).contains("paddock-test-"),
        "report left behind: {}",
        out(&r)
    );
}

const PYTEST_PROJECT: &[(&str, &str)] = &[
    (
        "test_sample.py",
        r#"import pytest


def test_one():
    assert 1 + 1 == 2


def test_two():
    assert "paddock".upper() == "PADDOCK"


def test_three():
    print("about to fail")
    assert 1 == 2, "numbers differ"


@pytest.mark.skip(reason="not today")
def test_four():
    pass
"#,
    ),
    ("pytest.ini", "[pytest]\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_project() {
    require("/usr/lib/python3/dist-packages/pytest", "python3-pytest");
    let s = sandbox().await;
    write(&s, PYTEST_PROJECT).await;

    let r = run_tests(&s, &request()).await.expect("run_tests");
    assert_eq!(r.framework, Some(Framework::Pytest), "{r:#?}");
    assert!(r.structured, "{r:#?}");
    assert_eq!(counts(&r), (2, 1, 1, 0, 4), "{r:#?}");
    assert_eq!(failing(&r), ["test_three"]);
    let f = &r.failures[0];
    assert_eq!(f.classname.as_deref(), Some("test_sample"));
    assert_eq!(f.file.as_deref(), Some("test_sample.py"));
    assert!(
        f.message
            .as_deref()
            .is_some_and(|m| m.contains("numbers differ")),
        "{f:#?}"
    );
    assert!(f.output.contains("about to fail"), "{f:#?}");
    assert_eq!((r.exit_code, r.outcome), (Some(1), Outcome::Failed));
    assert!(r.command.starts_with("python3 -m pytest --junitxml=/tmp/"));
    assert!(
        r.stdout_tail.contains("1 failed, 2 passed, 1 skipped"),
        "{r:#?}"
    );
    assert_no_report_left(&s).await;

    // A custom command that writes JUnit to $PADDOCK_JUNIT_XML is parsed as structured.
    let req = TestRequest {
        cmd: Some("python3 -m pytest -q --junitxml=\"$PADDOCK_JUNIT_XML\" -k 'not three'".into()),
        ..request()
    };
    let r = run_tests(&s, &req).await.expect("run_tests custom");
    assert_eq!(r.framework, Some(Framework::Pytest));
    assert!(r.structured, "{r:#?}");
    assert_eq!(counts(&r), (2, 0, 1, 0, 3), "{r:#?}");
    assert_eq!((r.exit_code, r.outcome), (Some(0), Outcome::Passed));
    assert_no_report_left(&s).await;

    // A custom command without a report: pytest's text output is parsed.
    let req = TestRequest {
        cmd: Some("python3 -m pytest -q -p no:cacheprovider".into()),
        framework: Some(Framework::Pytest),
        ..request()
    };
    let r = run_tests(&s, &req).await.expect("run_tests text");
    assert!(!r.structured);
    assert_eq!(counts(&r), (2, 1, 1, 0, 4), "{r:#?}");
    assert_eq!(failing(&r), ["test_three"]);
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_timeout() {
    require("/usr/lib/python3/dist-packages/pytest", "python3-pytest");
    let s = sandbox().await;
    write(
        &s,
        &[(
            "test_slow.py",
            "import time\n\ndef test_fast():\n    pass\n\ndef test_slow():\n    time.sleep(60)\n",
        )],
    )
    .await;
    let req = TestRequest {
        timeout: Duration::from_secs(3),
        ..request()
    };
    let r = run_tests(&s, &req).await.expect("run_tests");
    assert!(r.timed_out, "{r:#?}");
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert_eq!(r.exit_code, None);
    assert!(r.duration_ms < 30_000, "{r:#?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_project() {
    require("/usr/bin/go", "golang-go");
    let s = build_sandbox().await;
    write(
        &s,
        &[
            ("go.mod", "module example.com/calc\n\ngo 1.19\n"),
            (
                "calc.go",
                "package calc\n\nfunc Add(a, b int) int { return a + b }\n",
            ),
            (
                "calc_test.go",
                r#"package calc

import (
	"fmt"
	"testing"
)

func TestAdd(t *testing.T) {
	if Add(1, 2) != 3 {
		t.Fatal("1+2")
	}
}

func TestWrong(t *testing.T) {
	fmt.Println("debug: computing")
	if got := Add(2, 2); got != 5 {
		t.Errorf("Add(2, 2) = %d, want 5", got)
	}
}

func TestLater(t *testing.T) {
	t.Skip("not yet")
}

func TestTable(t *testing.T) {
	for _, c := range []struct{ a, b, want int }{{1, 1, 2}, {2, 2, 5}} {
		t.Run(fmt.Sprintf("%d+%d", c.a, c.b), func(t *testing.T) {
			if got := Add(c.a, c.b); got != c.want {
				t.Errorf("got %d, want %d", got, c.want)
			}
		})
	}
}
"#,
            ),
            (
                "sub/sub_test.go",
                "package sub\n\nimport \"testing\"\n\nfunc TestSub(t *testing.T) {}\n",
            ),
        ],
    )
    .await;

    let r = run_tests(&s, &request()).await.expect("run_tests");
    assert_eq!(r.framework, Some(Framework::GoTest), "{r:#?}");
    assert!(r.structured, "{r:#?}");
    // Leaves: TestAdd, TestTable/1+1, TestSub pass; TestWrong, TestTable/2+2 fail.
    assert_eq!(counts(&r), (3, 2, 1, 0, 6), "{r:#?}");
    assert_eq!(failing(&r), ["TestWrong", "TestTable/2+2"]);
    let f = &r.failures[0];
    assert_eq!(f.classname.as_deref(), Some("example.com/calc"));
    assert_eq!(f.file.as_deref(), Some("calc_test.go"));
    assert!(
        f.message
            .as_deref()
            .is_some_and(|m| m.ends_with("Add(2, 2) = 4, want 5")),
        "{f:#?}"
    );
    assert!(f.output.contains("debug: computing"), "{f:#?}");
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.command, "go test -json ./...");
    // The tail shows what plain `go test -v` prints, not the JSON events.
    assert!(r.stdout_tail.contains("--- FAIL: TestWrong"), "{r:#?}");
    assert!(!r.stdout_tail.contains("\"Action\""), "{r:#?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_project() {
    require("/usr/bin/cargo", "cargo");
    let s = build_sandbox().await;
    write(
        &s,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
            ),
            (
                "src/lib.rs",
                r#"pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }

    #[test]
    fn broken() {
        println!("debug line");
        assert_eq!(add(2, 2), 5, "two plus two");
    }

    #[test]
    #[ignore]
    fn slow() {}
}
"#,
            ),
            (
                "tests/it.rs",
                "#[test]\nfn it_works() {\n    assert_eq!(calc::add(1, 2), 3);\n}\n\n#[test]\nfn it_fails() {\n    panic!(\"boom in integration\");\n}\n",
            ),
        ],
    )
    .await;

    let r = run_tests(&s, &request()).await.expect("run_tests");
    assert_eq!(r.framework, Some(Framework::CargoTest), "{r:#?}");
    assert!(!r.structured, "libtest text output: {r:#?}");
    // Summed over the two test binaries (and the empty doc-test run).
    assert_eq!(counts(&r), (2, 2, 1, 0, 5), "{r:#?}");
    assert_eq!(failing(&r), ["tests::broken", "it_fails"]);
    let lib = &r.failures[0];
    assert_eq!(lib.classname.as_deref(), Some("unittests src/lib.rs"));
    assert_eq!(lib.file.as_deref(), Some("src/lib.rs"));
    assert!(lib.output.contains("debug line"), "{lib:#?}");
    assert!(
        lib.message
            .as_deref()
            .is_some_and(|m| m.contains("two plus two")),
        "{lib:#?}"
    );
    let it = &r.failures[1];
    assert_eq!(it.classname.as_deref(), Some("tests/it.rs"));
    assert_eq!(it.file.as_deref(), Some("tests/it.rs"));
    assert_eq!(it.message.as_deref(), Some("boom in integration"));
    assert_eq!((r.exit_code, r.outcome), (Some(101), Outcome::Failed));

    // A compile error is one error entry with the compiler's first error line.
    write(
        &s,
        &[(
            "src/lib.rs",
            "pub fn add(a: i32, b: i32) -> i32 {\n    a + b + \"x\"\n}\n",
        )],
    )
    .await;
    let r = run_tests(&s, &request()).await.expect("run_tests");
    assert_eq!(counts(&r), (0, 0, 0, 1, 1), "{r:#?}");
    assert_eq!(r.outcome, Outcome::Error);
    assert_eq!(failing(&r), ["test run"]);
    assert!(
        r.failures[0]
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("error")),
        "{r:#?}"
    );
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_project() {
    require("/usr/bin/node", "nodejs");
    let s = sandbox().await;
    write(
        &s,
        &[
            (
                "package.json",
                r#"{ "name": "calc", "version": "1.0.0", "scripts": { "test": "node --test" } }"#,
            ),
            (
                "math.test.js",
                r#"const test = require('node:test');
const assert = require('node:assert');

test('adds', () => { assert.strictEqual(1 + 1, 2); });
test('subtracts', () => { assert.strictEqual(3 - 1, 2); });
test('multiplies', () => { assert.strictEqual(2 * 2, 5); });
test('divides', { skip: 'later' }, () => {});
"#,
            ),
        ],
    )
    .await;
    // The node in /usr decides: the junit reporter where `node:test/reporters` has it
    // (structured), TAP otherwise.
    let v = out(&sh(&s, "node --version").await);
    let junit = sh(
        &s,
        "node -e 'process.exit(require(\"node:test/reporters\").junit ? 0 : 1)'",
    )
    .await
    .exit_code
        == Some(0);

    let r = run_tests(&s, &request()).await.expect("run_tests");
    assert_eq!(r.framework, Some(Framework::NodeTest), "{r:#?}");
    assert_eq!(r.structured, junit, "node {v}: {r:#?}");
    assert_eq!(counts(&r), (2, 1, 1, 0, 4), "{r:#?}");
    assert_eq!(failing(&r), ["multiplies"]);
    assert!(
        r.failures[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Expected values to be strictly equal")),
        "{r:#?}"
    );
    assert_eq!(r.failures[0].file.as_deref(), Some("math.test.js"));
    assert_eq!(r.outcome, Outcome::Failed);
    assert_no_report_left(&s).await;

    // The TAP path, through a custom command.
    let req = TestRequest {
        cmd: Some("node --test --test-reporter=tap".into()),
        ..request()
    };
    let r = run_tests(&s, &req).await.expect("run_tests tap");
    assert_eq!(r.framework, Some(Framework::NodeTest));
    assert!(!r.structured);
    assert_eq!(counts(&r), (2, 1, 1, 0, 4), "{r:#?}");
    assert_eq!(failing(&r), ["multiplies"]);
    assert_eq!(r.failures[0].file.as_deref(), Some("math.test.js"));
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_framework() {
    let s = sandbox().await;
    write(
        &s,
        &[
            ("README.md", "nothing to test\n"),
            ("main.py", "print(1)\n"),
        ],
    )
    .await;

    match run_tests(&s, &request()).await {
        Err(TestRunError::NoFrameworkDetected { cwd }) => assert_eq!(cwd, PROJ),
        other => panic!("expected NoFrameworkDetected, got {other:?}"),
    }

    // A custom command with no framework: exit code and output tails only.
    let req = TestRequest {
        cmd: Some("echo checking; echo broken >&2; exit 3".into()),
        ..request()
    };
    let r = run_tests(&s, &req).await.expect("run_tests custom");
    assert_eq!(r.framework, None);
    assert!(!r.structured);
    assert_eq!(counts(&r), (0, 0, 0, 0, 0));
    assert!(r.failures.is_empty());
    assert_eq!((r.exit_code, r.outcome), (Some(3), Outcome::Error));
    assert_eq!(r.stdout_tail, "checking\n");
    assert_eq!(r.stderr_tail, "broken\n");

    // Bad requests are refused before anything runs.
    let bad = TestRequest {
        cwd: "relative/dir".into(),
        ..request()
    };
    assert!(matches!(
        run_tests(&s, &bad).await,
        Err(TestRunError::InvalidRequest(_))
    ));
    // A missing directory is the runtime's error.
    let missing = TestRequest {
        cwd: "/home/user/nope".into(),
        ..request()
    };
    assert!(matches!(
        run_tests(&s, &missing).await,
        Err(TestRunError::Runtime(_))
    ));
    destroy(&s).await;
}

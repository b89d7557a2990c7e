//! Fixtures and helpers of the unit tests.

use std::time::Duration;

use paddock_runtime::ExecResult;

use crate::detect::Probe;
use crate::parse::Parsed;

pub(crate) const CWD: &str = "/home/user/proj";

pub(crate) fn fixture(name: &str) -> &'static str {
    match name {
        "pytest.xml" => include_str!("../testdata/pytest.xml"),
        "pytest-text.txt" => include_str!("../testdata/pytest-text.txt"),
        "jest.json" => include_str!("../testdata/jest.json"),
        "jest-text.txt" => include_str!("../testdata/jest-text.txt"),
        "vitest.xml" => include_str!("../testdata/vitest.xml"),
        "vitest-text.txt" => include_str!("../testdata/vitest-text.txt"),
        "go.json" => include_str!("../testdata/go.json"),
        "go.stderr" => include_str!("../testdata/go.stderr"),
        "go-text.txt" => include_str!("../testdata/go-text.txt"),
        "cargo-old.txt" => include_str!("../testdata/cargo-old.txt"),
        "cargo-new.txt" => include_str!("../testdata/cargo-new.txt"),
        "cargo-build.txt" => include_str!("../testdata/cargo-build.txt"),
        "node.xml" => include_str!("../testdata/node.xml"),
        "node.tap" => include_str!("../testdata/node.tap"),
        _ => panic!("no fixture {name}"),
    }
}

pub(crate) fn counts(p: &Parsed) -> (u32, u32, u32, u32) {
    (p.passed, p.failed, p.skipped, p.errors)
}

pub(crate) fn names(p: &Parsed) -> Vec<&str> {
    p.failures
        .iter()
        .chain(&p.errored)
        .map(|f| f.name.as_str())
        .collect()
}

pub(crate) fn exec_result(code: i32, stdout: &str, stderr: &str) -> ExecResult {
    ExecResult {
        exit_code: Some(code),
        status: format!("exit status {code}"),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
        duration: Duration::from_millis(1234),
        ..Default::default()
    }
}

pub(crate) fn probe(files: &[&str], dirs: &[&str], nested: &[&str]) -> Probe {
    Probe {
        files: files.iter().map(|s| s.to_string()).collect(),
        dirs: dirs.iter().map(|s| s.to_string()).collect(),
        nested: nested.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

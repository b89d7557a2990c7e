//! Runs a project's tests inside a sandbox and reports structured results.
//!
//! [`run_tests`] finds out which framework the project uses (unless the request names one),
//! runs its test command inside the sandbox with a machine-readable reporter where the
//! framework has one (written to a temporary file in the sandbox's `/tmp`, read back with
//! [`Sandbox::read_file`] and removed), and turns the result into a [`TestReport`]: counts,
//! the failing tests with their output, and the tails of stdout and stderr.
//!
//! # Detection
//!
//! One small shell script lists the marker files of `cwd` (not of subdirectories, except the
//! entries of `test/`, `tests/` and `__tests__/`). The first rule that matches wins:
//!
//! 1. `go.mod` → [`Framework::GoTest`]
//! 2. `Cargo.toml` → [`Framework::CargoTest`]
//! 3. `package.json` that mentions `vitest` → [`Framework::Vitest`]; else one that mentions
//!    `jest` → [`Framework::Jest`]; else, if there are node test files (`*.test.js`,
//!    `*-test.js`, `*_test.js`, `test-*.js`, `test.js`, any of them also `.mjs`/`.cjs`, or
//!    `.js` files in `test/`), [`Framework::NodeTest`]; else the next rules apply.
//! 4. `pytest.ini`, `pyproject.toml`, `setup.cfg`, `conftest.py`, `test_*.py`, `*_test.py` or a
//!    `tests/` directory → [`Framework::Pytest`]
//! 5. node test files without a `package.json` → [`Framework::NodeTest`]
//!
//! # Commands and parsing
//!
//! | framework | command | parsed from |
//! |---|---|---|
//! | pytest | `python3 -m pytest --junitxml=<tmp> -o junit_family=xunit1 -o junit_logging=out-err -q`, with `.venv/bin/python` instead of `python3` when the project has a `.venv` | JUnit XML |
//! | jest | `npx --no-install jest --ci --json --outputFile=<tmp>` | jest JSON |
//! | vitest | `npx --no-install vitest run --reporter=default --reporter=junit --outputFile.junit=<tmp>` | JUnit XML |
//! | go | `go test -json ./...` | the `test2json` event stream on stdout |
//! | cargo | `cargo test --no-fail-fast 2>&1` | libtest's text output (merged, so each test binary's `Running` line precedes its results) |
//! | node | `node --test` with the `spec` reporter on stdout and `junit` to `<tmp>`; `tap` on stdout where node has no junit reporter | JUnit XML, else TAP |
//!
//! A custom command runs as given with `PADDOCK_JUNIT_XML` set to a temporary path: if it
//! writes JUnit XML there, that is used; otherwise its output is parsed as the (requested or
//! detected) framework's text output. With no framework at all, only the exit code and the
//! output tails are reported.
//!
//! Parsing never fails a run: a missing or malformed report falls back to parsing the text
//! output, and failing that to the exit code alone (`structured: false`). When a framework
//! was in play, the command failed and nothing failed in what was parsed (a build error, no
//! tests collected, a crash), the report gets one synthetic error entry named `test run`.
//!
//! # Code
//!
//! `detect` (the probe script and the rules above), `plan` (the commands of the table),
//! `parse` (one module per report format and the text helpers they share), `report` (which
//! parser reads a run, and the capped [`TestReport`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use paddock_runtime::{ExecRequest, RuntimeError, Sandbox};
use serde::{Deserialize, Serialize};

use crate::detect::{detect, run_probe};
use crate::plan::plan;
use crate::report::{build_report, interpret};

mod detect;
#[cfg(test)]
mod fixtures;
mod parse;
mod plan;
mod report;

/// Most failures listed in a report; the rest are only counted (`failures_omitted`).
pub const MAX_FAILURES: usize = 200;
/// Cap on one failure's `output` (its tail is kept).
pub const MAX_FAILURE_OUTPUT: usize = 8 << 10;
/// Cap on one failure's `message` (its head is kept).
pub const MAX_MESSAGE: usize = 2 << 10;
/// Cap on `stdout_tail` and `stderr_tail`.
pub const MAX_TAIL: usize = 16 << 10;
/// Captured output of the test command, per stream. Beyond it the output is dropped (and what
/// was parsed from it is incomplete).
const MAX_CAPTURE: usize = 32 << 20;
/// Output kept per test while parsing, before the final cap.
const MAX_KEEP: usize = 64 << 10;
/// Timeout of the helper commands (probe, cleanup).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A test framework Paddock knows how to run and parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Framework {
    #[serde(rename = "pytest")]
    Pytest,
    #[serde(rename = "jest")]
    Jest,
    #[serde(rename = "vitest")]
    Vitest,
    #[serde(rename = "go")]
    GoTest,
    #[serde(rename = "cargo")]
    CargoTest,
    #[serde(rename = "node")]
    NodeTest,
}

impl Framework {
    /// Every framework, in detection order where it matters.
    pub const ALL: [Framework; 6] = [
        Framework::GoTest,
        Framework::CargoTest,
        Framework::Vitest,
        Framework::Jest,
        Framework::NodeTest,
        Framework::Pytest,
    ];

    /// The API name (`pytest`, `jest`, `vitest`, `go`, `cargo`, `node`).
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Pytest => "pytest",
            Framework::Jest => "jest",
            Framework::Vitest => "vitest",
            Framework::GoTest => "go",
            Framework::CargoTest => "cargo",
            Framework::NodeTest => "node",
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Framework {
    type Err = TestRunError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Framework::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| TestRunError::UnknownFramework(s.to_owned()))
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRequest {
    /// A shell command to run instead of the framework's own (`/bin/bash -c`).
    pub cmd: Option<String>,
    /// Directory of the project inside the sandbox.
    pub cwd: String,
    /// `None`: detect it from the files in `cwd`.
    pub framework: Option<Framework>,
    /// The test command is killed (with everything it started) after this long.
    pub timeout: Duration,
    /// Extra environment of the test command.
    pub env: BTreeMap<String, String>,
    /// User to run as; `None`: the sandbox's default user.
    pub user: Option<String>,
}

impl Default for TestRequest {
    fn default() -> Self {
        TestRequest {
            cmd: None,
            cwd: "/home/user".into(),
            framework: None,
            timeout: Duration::from_secs(600),
            env: BTreeMap::new(),
            user: None,
        }
    }
}

/// The overall result of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit code 0 and nothing failed.
    Passed,
    /// At least one test failed.
    Failed,
    /// No test failed, but the run did not succeed: errors (a build or collection error, a
    /// suite that failed to load) or a non-zero exit code.
    Error,
    /// The command ran out of time; the counts cover what finished before.
    TimedOut,
}

/// One failing (or erroring) test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestFailure {
    pub name: String,
    /// Class, module, package, suite file or test binary, as the framework reports it.
    pub classname: Option<String>,
    /// Source file, relative to `cwd` when it is inside it.
    pub file: Option<String>,
    /// The short reason (assertion message, panic message), at most [`MAX_MESSAGE`] bytes.
    pub message: Option<String>,
    /// Traceback and captured output, the last [`MAX_FAILURE_OUTPUT`] bytes.
    pub output: String,
}

/// The result of [`run_tests`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub framework: Option<Framework>,
    /// The shell command that ran.
    pub command: String,
    /// Exit code when the command exited normally.
    pub exit_code: Option<i32>,
    /// How the command ended, e.g. `exit status 1`, `signal: killed`, `timeout`.
    pub status: String,
    pub outcome: Outcome,
    pub passed: u32,
    pub failed: u32,
    /// Skipped, ignored, pending and todo tests.
    pub skipped: u32,
    /// Tests or suites that could not run (setup errors, build failures, load errors).
    pub errors: u32,
    /// `passed + failed + skipped + errors`.
    pub total: u32,
    pub duration_ms: u64,
    /// The counts come from a machine-readable report (JUnit XML or JSON), not from text
    /// output or the exit code alone.
    pub structured: bool,
    /// Failed tests first, then errors, at most [`MAX_FAILURES`].
    pub failures: Vec<TestFailure>,
    /// Failures beyond [`MAX_FAILURES`] that are not listed.
    pub failures_omitted: u32,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub timed_out: bool,
    /// The sandbox's OOM killer fired while the tests ran.
    pub oom_killed: bool,
}

/// Why tests could not be run.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// No framework requested, no custom command, and no marker file found.
    #[error("no test framework detected in {cwd}")]
    NoFrameworkDetected { cwd: String },
    /// A framework name that is not one of `pytest`, `jest`, `vitest`, `go`, `cargo`, `node`.
    #[error("unknown test framework {0:?}")]
    UnknownFramework(String),
    /// A malformed request (relative cwd, bad env name, zero timeout).
    #[error("invalid test request: {0}")]
    InvalidRequest(String),
    /// The sandbox could not run the command.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Runs the tests of the project in `req.cwd` inside `sbx`; see the module docs.
pub async fn run_tests(sbx: &Sandbox, req: &TestRequest) -> Result<TestReport, TestRunError> {
    validate(req)?;
    let user = req.user.as_deref();
    let probe = run_probe(sbx, req).await?;
    let framework = req.framework.or_else(|| detect(&probe));
    if framework.is_none() && req.cmd.is_none() {
        return Err(TestRunError::NoFrameworkDetected {
            cwd: req.cwd.clone(),
        });
    }
    let tmp = format!("/tmp/paddock-test-{:016x}", rand::random::<u64>());
    let plan = plan(framework, req.cmd.as_deref(), &probe, &tmp);
    let mut env = req.env.clone();
    env.extend(plan.env.clone());
    let shell = if probe.bash { "/bin/bash" } else { "/bin/sh" };
    let res = sbx
        .exec(ExecRequest {
            argv: vec![shell.into(), "-c".into(), plan.script.clone()],
            env,
            cwd: Some(req.cwd.clone()),
            user: req.user.clone(),
            stdin: None,
            timeout: Some(req.timeout),
            max_output: Some(MAX_CAPTURE),
        })
        .await?;
    let report = match &plan.report {
        Some((path, _)) => {
            let data = sbx.read_file(path, user).await.ok();
            cleanup(sbx, path, user).await;
            data.filter(|d| !d.is_empty())
                .map(|d| String::from_utf8_lossy(&d).into_owned())
        }
        None => None,
    };
    let kind = plan.report.as_ref().map(|(_, k)| *k);
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let it = interpret(
        framework,
        kind,
        report.as_deref(),
        &stdout,
        &stderr,
        &req.cwd,
    );
    let shown = it.stdout_text.as_deref().unwrap_or(&stdout);
    Ok(build_report(
        framework,
        plan.script,
        &res,
        it.parsed,
        it.structured,
        shown,
        &stderr,
    ))
}

fn validate(req: &TestRequest) -> Result<(), TestRunError> {
    let bad = |m: String| Err(TestRunError::InvalidRequest(m));
    if !req.cwd.starts_with('/') || req.cwd.contains('\0') {
        return bad(format!("cwd {:?} is not an absolute path", req.cwd));
    }
    if req.timeout.is_zero() {
        return bad("timeout must be positive".into());
    }
    if req
        .cmd
        .as_deref()
        .is_some_and(|c| c.trim().is_empty() || c.contains('\0'))
    {
        return bad("cmd is empty or contains NUL".into());
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return bad(format!("invalid env entry {k:?}"));
        }
    }
    Ok(())
}

/// Removes the report file; a leftover in the sandbox's `/tmp` is harmless, so errors are
/// only logged.
async fn cleanup(sbx: &Sandbox, path: &str, user: Option<&str>) {
    let res = sbx
        .exec(ExecRequest {
            argv: vec!["/bin/rm".into(), "-f".into(), "--".into(), path.into()],
            user: user.map(str::to_owned),
            timeout: Some(HELPER_TIMEOUT),
            ..Default::default()
        })
        .await;
    if let Err(e) = res {
        tracing::debug!(sandbox = %sbx.id, "removing test report: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names() {
        let names: Vec<String> = Framework::ALL
            .iter()
            .map(|f| serde_json::to_string(f).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"go\"",
                "\"cargo\"",
                "\"vitest\"",
                "\"jest\"",
                "\"node\"",
                "\"pytest\""
            ]
        );
        for f in Framework::ALL {
            assert_eq!(f.as_str().parse::<Framework>().unwrap(), f);
            let back: Framework = serde_json::from_str(&format!("\"{f}\"")).unwrap();
            assert_eq!(back, f);
        }
        assert!("mocha".parse::<Framework>().is_err());
    }
}

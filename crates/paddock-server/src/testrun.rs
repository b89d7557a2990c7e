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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use paddock_runtime::{ExecRequest, ExecResult, RuntimeError, Sandbox};
use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------
// Detection

/// What the probe script found in `cwd`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Probe {
    /// `/bin/bash` exists.
    bash: bool,
    /// `cwd` is writable by the user.
    writable: bool,
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    /// Entries of `test/`, `tests/` and `__tests__/` as `dir/name`.
    nested: BTreeSet<String>,
    mentions_vitest: bool,
    mentions_jest: bool,
    node: Option<NodeReporter>,
    /// The project has its own virtualenv: `.venv/bin/python` is executable.
    venv: bool,
}

/// The best reporter the sandbox's node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeReporter {
    /// `node:test/reporters` has `junit` (checked at run time, not by version).
    Junit,
    /// `--test-reporter=tap` exists but not junit.
    Tap,
    /// No `--test-reporter` flag; `node --test` writes TAP when stdout is not a terminal.
    Old,
}

/// Lists marker files of the current directory, one per line: `f name`, `d name`,
/// `t dir/name`, `mentions vitest|jest`, `node junit|tap|old`, `bash`, `writable`. `$1` is
/// the requested framework, if any: node's capabilities are only probed when node may run.
const PROBE_SCRIPT: &str = r#"
[ -x /bin/bash ] && echo bash
[ -w . ] && echo writable
[ -x .venv/bin/python ] && echo venv
for f in *; do
  if [ -d "$f" ]; then echo "d $f"; elif [ -e "$f" ]; then echo "f $f"; fi
done | head -n 5000
for d in test tests __tests__; do
  [ -d "$d" ] && ls -1 "$d" 2>/dev/null | head -n 500 | sed "s|^|t $d/|"
done
if [ -f package.json ]; then
  grep -q vitest package.json && echo "mentions vitest"
  grep -q jest package.json && echo "mentions jest"
fi
if command -v node >/dev/null 2>&1; then
  if [ "$1" = node ] || { [ -z "$1" ] && [ ! -e go.mod ] && [ ! -e Cargo.toml ]; }; then
    node -e 'let r; try { r = require("node:test/reporters"); } catch (e) { console.log("node old"); process.exit(0); } console.log(r.junit ? "node junit" : "node tap");' 2>/dev/null
  fi
fi
exit 0
"#;

async fn run_probe(sbx: &Sandbox, req: &TestRequest) -> Result<Probe, TestRunError> {
    let arg = req.framework.map_or("", Framework::as_str);
    let res = sbx
        .exec(ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                PROBE_SCRIPT.into(),
                "probe".into(),
                arg.into(),
            ],
            cwd: Some(req.cwd.clone()),
            user: req.user.clone(),
            timeout: Some(HELPER_TIMEOUT),
            max_output: Some(1 << 20),
            ..Default::default()
        })
        .await?;
    Ok(parse_probe(&String::from_utf8_lossy(&res.stdout)))
}

fn parse_probe(out: &str) -> Probe {
    let mut p = Probe::default();
    for line in out.lines() {
        match line.split_once(' ') {
            None if line == "bash" => p.bash = true,
            None if line == "writable" => p.writable = true,
            None if line == "venv" => p.venv = true,
            Some(("f", name)) => {
                p.files.insert(name.to_owned());
            }
            Some(("d", name)) => {
                p.dirs.insert(name.to_owned());
            }
            Some(("t", name)) => {
                p.nested.insert(name.to_owned());
            }
            Some(("mentions", "vitest")) => p.mentions_vitest = true,
            Some(("mentions", "jest")) => p.mentions_jest = true,
            Some(("node", "junit")) => p.node = Some(NodeReporter::Junit),
            Some(("node", "tap")) => p.node = Some(NodeReporter::Tap),
            Some(("node", "old")) => p.node = Some(NodeReporter::Old),
            _ => {}
        }
    }
    p
}

/// Whether `name` is a file node's test runner picks up by default.
fn is_node_test_file(name: &str) -> bool {
    let Some(stem) = [".js", ".mjs", ".cjs"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
    else {
        return false;
    };
    stem == "test"
        || stem.ends_with(".test")
        || stem.ends_with("-test")
        || stem.ends_with("_test")
        || stem.starts_with("test-")
}

fn has_node_tests(p: &Probe) -> bool {
    p.files.iter().any(|f| is_node_test_file(f))
        || p.nested.iter().any(|f| {
            f.starts_with("test/") && [".js", ".mjs", ".cjs"].iter().any(|e| f.ends_with(e))
        })
}

fn has_pytest_markers(p: &Probe) -> bool {
    ["pytest.ini", "pyproject.toml", "setup.cfg", "conftest.py"]
        .iter()
        .any(|f| p.files.contains(*f))
        || p.dirs.contains("tests")
        || p.files
            .iter()
            .any(|f| f.ends_with(".py") && (f.starts_with("test_") || f.ends_with("_test.py")))
}

/// The detection rules of the module docs, in order.
fn detect(p: &Probe) -> Option<Framework> {
    if p.files.contains("go.mod") {
        return Some(Framework::GoTest);
    }
    if p.files.contains("Cargo.toml") {
        return Some(Framework::CargoTest);
    }
    if p.files.contains("package.json") {
        if p.mentions_vitest {
            return Some(Framework::Vitest);
        }
        if p.mentions_jest {
            return Some(Framework::Jest);
        }
        if has_node_tests(p) {
            return Some(Framework::NodeTest);
        }
    }
    if has_pytest_markers(p) {
        return Some(Framework::Pytest);
    }
    if has_node_tests(p) {
        return Some(Framework::NodeTest);
    }
    None
}

// ---------------------------------------------------------------------------------------
// Commands

/// A machine-readable report file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportKind {
    Junit,
    JestJson,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    script: String,
    env: BTreeMap<String, String>,
    /// Where the command writes its report, and in which format.
    report: Option<(String, ReportKind)>,
}

fn plan(framework: Option<Framework>, cmd: Option<&str>, probe: &Probe, tmp: &str) -> Plan {
    let mut env = BTreeMap::new();
    if let Some(cmd) = cmd {
        let path = format!("{tmp}.xml");
        env.insert("PADDOCK_JUNIT_XML".to_owned(), path.clone());
        return Plan {
            script: cmd.to_owned(),
            env,
            report: Some((path, ReportKind::Junit)),
        };
    }
    let xml = format!("{tmp}.xml");
    let (script, report) = match framework {
        Some(Framework::Pytest) => (
            format!(
                "{} -m pytest --junitxml={xml} -o junit_family=xunit1 -o junit_logging=out-err -q",
                if probe.venv {
                    ".venv/bin/python"
                } else {
                    "python3"
                }
            ),
            Some((xml, ReportKind::Junit)),
        ),
        Some(Framework::Jest) => {
            let json = format!("{tmp}.json");
            (
                format!("npx --no-install jest --ci --json --outputFile={json}"),
                Some((json, ReportKind::JestJson)),
            )
        }
        Some(Framework::Vitest) => (
            format!(
                "npx --no-install vitest run --reporter=default --reporter=junit --outputFile.junit={xml}"
            ),
            Some((xml, ReportKind::Junit)),
        ),
        Some(Framework::GoTest) => ("go test -json ./...".to_owned(), None),
        Some(Framework::CargoTest) => {
            // A read-only project directory cannot hold `target/`; build in /tmp instead.
            if !probe.writable {
                env.insert(
                    "CARGO_TARGET_DIR".to_owned(),
                    "/tmp/paddock-cargo-target".to_owned(),
                );
            }
            ("cargo test --no-fail-fast 2>&1".to_owned(), None)
        }
        Some(Framework::NodeTest) => match probe.node {
            Some(NodeReporter::Junit) => (
                format!(
                    "node --test --test-reporter=spec --test-reporter-destination=stdout --test-reporter=junit --test-reporter-destination={xml}"
                ),
                Some((xml, ReportKind::Junit)),
            ),
            Some(NodeReporter::Tap) => ("node --test --test-reporter=tap".to_owned(), None),
            Some(NodeReporter::Old) | None => ("node --test".to_owned(), None),
        },
        None => ("true".to_owned(), None),
    };
    Plan {
        script,
        env,
        report,
    }
}

// ---------------------------------------------------------------------------------------
// Results

/// Counts and failures from one parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Parsed {
    passed: u32,
    failed: u32,
    skipped: u32,
    errors: u32,
    /// Failed tests, uncapped, in report order.
    failures: Vec<TestFailure>,
    /// Errors (tests that could not run, suites that did not load), in report order.
    errored: Vec<TestFailure>,
}

impl Parsed {
    fn fail(&mut self, f: TestFailure) {
        self.failed += 1;
        self.failures.push(f);
    }

    fn error(&mut self, f: TestFailure) {
        self.errors += 1;
        self.errored.push(f);
    }

    fn total(&self) -> u32 {
        self.passed + self.failed + self.skipped + self.errors
    }
}

/// What the parsers made of a run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Interpretation {
    parsed: Option<Parsed>,
    /// From a machine-readable report.
    structured: bool,
    /// The human-readable output when stdout was machine-readable (`go test -json`).
    stdout_text: Option<String>,
}

/// Picks the parser: the report file first, then the framework's text output.
fn interpret(
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

fn build_report(
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

// ---------------------------------------------------------------------------------------
// Text helpers

/// The last `max` bytes of `s` (on a char boundary), marked when something was cut.
fn cap_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[{start} bytes omitted]\n{}", &s[start..])
}

/// The first `max` bytes of `s` (on a char boundary), marked when something was cut.
fn cap_head(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [truncated]", &s[..end])
}

/// Appends `line` to a per-test buffer, keeping it bounded.
fn keep(buf: &mut String, line: &str) {
    buf.push_str(line);
    if buf.len() > 2 * MAX_KEEP {
        let mut cut = buf.len() - MAX_KEEP;
        while !buf.is_char_boundary(cut) {
            cut += 1;
        }
        buf.drain(..cut);
    }
}

/// Removes ANSI escape sequences (CSI and OSC) and other control characters but newlines
/// and tabs.
fn strip_ansi(s: &str) -> String {
    if !s.contains(['\x1b', '\r']) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.peek() {
                Some('[') => {
                    it.next();
                    // Parameters and intermediates, then one final byte in @..~.
                    for c in it.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    it.next();
                    // Until BEL or ST (ESC \).
                    while let Some(c) = it.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            it.next();
                            break;
                        }
                    }
                }
                _ => {
                    it.next();
                }
            },
            '\r' => {
                if it.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `path` relative to `cwd` when it is inside it.
fn relative(path: &str, cwd: &str) -> String {
    let base = cwd.trim_end_matches('/');
    path.strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty())
        .unwrap_or(path)
        .to_owned()
}

/// The first path under `cwd` mentioned in `text` (a stack frame, usually) that is not in
/// `node_modules`.
fn path_in(text: &str, cwd: &str) -> Option<String> {
    let base = format!("{}/", cwd.trim_end_matches('/'));
    let mut rest = text;
    while let Some(i) = rest.find(&base) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c == ':' || c == ')' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        let path = &tail[..end];
        let name = path.rsplit('/').next().unwrap_or_default();
        if !path.contains("/node_modules/") && name.contains('.') {
            return Some(relative(path, cwd));
        }
        rest = &tail[end..];
    }
    None
}

/// Strips a trailing `:line` or `:line:col` from a location.
fn strip_line_col(loc: &str) -> &str {
    let mut s = loc;
    for _ in 0..2 {
        match s.rsplit_once(':') {
            Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                s = head;
            }
            _ => break,
        }
    }
    s
}

/// The message part of a failure text: everything before the first stack frame line.
fn message_before_stack(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| {
            let t = l.trim_start();
            !(t.starts_with("at ") || t.starts_with("❯ "))
        })
        .collect();
    let m = lines.join("\n").trim().to_owned();
    (!m.is_empty()).then_some(m)
}

/// Parses `N word, N word` counts (`1 failed, 2 passed`, `1 failed | 2 passed`), calling
/// `f(word, n)` for each; returns whether any count was found.
fn parse_counts(s: &str, seps: &[char], mut f: impl FnMut(&str, u32)) -> bool {
    let mut any = false;
    for part in s.split(seps) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(word)) = (words.next(), words.next())
            && let Ok(n) = n.parse::<u32>()
        {
            f(word, n);
            any = true;
        }
    }
    any
}

// ---------------------------------------------------------------------------------------
// JUnit XML (pytest, vitest, node, custom commands)

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
fn parse_junit(xml: &str, cwd: &str) -> Option<Parsed> {
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

// ---------------------------------------------------------------------------------------
// jest

/// Parses jest's `--json` output: one entry per test file with its assertion results; a file
/// that failed without a failing test (it did not load) counts as an error.
fn parse_jest_json(json: &str, cwd: &str) -> Option<Parsed> {
    use serde_json::Value;

    let v: Value = serde_json::from_str(json).ok()?;
    let results = v.get("testResults")?.as_array()?;
    let mut p = Parsed::default();
    for tr in results {
        let file = tr
            .get("name")
            .and_then(Value::as_str)
            .map(|n| relative(n, cwd));
        let mut failed_here = 0;
        for a in tr
            .get("assertionResults")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let title = a.get("title").and_then(Value::as_str).unwrap_or_default();
            match a.get("status").and_then(Value::as_str).unwrap_or_default() {
                "passed" => p.passed += 1,
                "failed" => {
                    failed_here += 1;
                    let mut parts: Vec<&str> = a
                        .get("ancestorTitles")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    parts.push(title);
                    let msgs: Vec<&str> = a
                        .get("failureMessages")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let output = msgs.join("\n\n");
                    p.fail(TestFailure {
                        name: parts.join(" › "),
                        classname: file.clone(),
                        file: file.clone(),
                        message: msgs.first().and_then(|m| message_before_stack(m)),
                        output,
                    });
                }
                "pending" | "skipped" | "todo" | "disabled" => p.skipped += 1,
                _ => {}
            }
        }
        let suite_failed = tr.get("status").and_then(Value::as_str) == Some("failed")
            || tr.get("testExecError").is_some_and(|e| !e.is_null());
        if suite_failed && failed_here == 0 {
            let message = tr
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| {
                    tr.get("testExecError")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                })
                .unwrap_or_default();
            p.error(TestFailure {
                name: file.clone().unwrap_or_else(|| "test suite".into()),
                classname: None,
                file: file.clone(),
                message: jest_suite_message(message),
                output: message.to_owned(),
            });
        }
    }
    Some(p)
}

/// The reason in a jest suite message: the first line after `● Test suite failed to run`.
fn jest_suite_message(message: &str) -> Option<String> {
    message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('●'))
        .map(str::to_owned)
}

/// Parses jest's default reporter: the `Tests:` summary line and the `● suite › test`
/// headings of failures; `● Test suite failed to run` under `FAIL file` is an error.
fn parse_jest_text(text: &str) -> Option<Parsed> {
    let text = strip_ansi(text);
    let mut p = Parsed::default();
    let mut found = false;
    let mut names = BTreeSet::new();
    let mut file: Option<String> = None;
    let mut fails = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("FAIL ") {
            file = Some(rest.trim().to_owned());
        } else if let Some(name) = t.strip_prefix("● ") {
            let name = name.trim();
            if name == "Console" {
                continue;
            }
            if name == "Test suite failed to run" {
                let f = file.clone().unwrap_or_else(|| "test suite".into());
                fails.push((true, f.clone(), file.clone()));
            } else if names.insert(name.to_owned()) {
                fails.push((false, name.to_owned(), file.clone()));
            }
        } else if let Some(rest) = t.strip_prefix("Tests:") {
            let mut q = Parsed::default();
            found |= parse_counts(rest, &[','], |w, n| match w {
                "passed" => q.passed += n,
                "failed" => q.failed += n,
                "skipped" | "todo" | "pending" => q.skipped += n,
                _ => {}
            });
            p = q;
        }
    }
    if !found && fails.is_empty() {
        return None;
    }
    let (mut failed, mut errored) = (Vec::new(), Vec::new());
    for (is_error, name, file) in fails {
        let f = TestFailure {
            name,
            classname: file.clone(),
            file,
            ..Default::default()
        };
        if is_error {
            errored.push(f);
        } else {
            failed.push(f);
        }
    }
    p.failed = p.failed.max(failed.len() as u32);
    p.errors = p.errors.max(errored.len() as u32);
    p.failures = failed;
    p.errored = errored;
    Some(p)
}

/// Parses vitest's default reporter: the `Tests  1 failed | 2 passed (3)` summary line and
/// the `FAIL  file > suite > test` headings; `FAIL  file [ file ]` is a file that failed to
/// load (an error).
fn parse_vitest_text(text: &str) -> Option<Parsed> {
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

// ---------------------------------------------------------------------------------------
// go test

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
struct GoRun {
    parsed: Parsed,
    /// Stdout held `test2json` events.
    json: bool,
    /// What `go test` without `-json` would have printed: the events' output, and lines
    /// that were not events.
    text: String,
}

/// Parses `go test -json` output (the `test2json` event stream), or plain `go test` output
/// when stdout holds no JSON events. Counts leaf tests: a test with subtests is not counted
/// itself, except when it failed and none of its subtests did. A failed package without a
/// failed test (build failure, `TestMain` exit, panic at init) is an error.
fn parse_go(stdout: &str, stderr: &str) -> Option<GoRun> {
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

// ---------------------------------------------------------------------------------------
// cargo test (libtest)

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
fn parse_libtest(text: &str) -> Option<Parsed> {
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

// ---------------------------------------------------------------------------------------
// pytest text

/// Parses pytest's text output: the final `1 failed, 2 passed in 0.1s` line and the
/// `FAILED path::name - message` / `ERROR path::name` lines of the short summary.
fn parse_pytest_text(text: &str) -> Option<Parsed> {
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

// ---------------------------------------------------------------------------------------
// TAP (node --test)

/// Parses TAP as node's test runner writes it: nested subtests are indented and come before
/// their parent's line. Counts leaf tests (`# SKIP` and `# TODO` count as skipped); a parent
/// (a `describe` suite or a test with subtests) counts only when it failed and none of its
/// children did. Messages and locations come from the YAML block after a `not ok` line.
fn parse_tap(text: &str, cwd: &str) -> Option<Parsed> {
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

    const CWD: &str = "/home/user/proj";

    fn fixture(name: &str) -> &'static str {
        match name {
            "pytest.xml" => include_str!("../testdata/testrun/pytest.xml"),
            "pytest-text.txt" => include_str!("../testdata/testrun/pytest-text.txt"),
            "jest.json" => include_str!("../testdata/testrun/jest.json"),
            "jest-text.txt" => include_str!("../testdata/testrun/jest-text.txt"),
            "vitest.xml" => include_str!("../testdata/testrun/vitest.xml"),
            "vitest-text.txt" => include_str!("../testdata/testrun/vitest-text.txt"),
            "go.json" => include_str!("../testdata/testrun/go.json"),
            "go.stderr" => include_str!("../testdata/testrun/go.stderr"),
            "go-text.txt" => include_str!("../testdata/testrun/go-text.txt"),
            "cargo-old.txt" => include_str!("../testdata/testrun/cargo-old.txt"),
            "cargo-new.txt" => include_str!("../testdata/testrun/cargo-new.txt"),
            "cargo-build.txt" => include_str!("../testdata/testrun/cargo-build.txt"),
            "node.xml" => include_str!("../testdata/testrun/node.xml"),
            "node.tap" => include_str!("../testdata/testrun/node.tap"),
            _ => panic!("no fixture {name}"),
        }
    }

    fn counts(p: &Parsed) -> (u32, u32, u32, u32) {
        (p.passed, p.failed, p.skipped, p.errors)
    }

    fn names(p: &Parsed) -> Vec<&str> {
        p.failures
            .iter()
            .chain(&p.errored)
            .map(|f| f.name.as_str())
            .collect()
    }

    fn exec_result(code: i32, stdout: &str, stderr: &str) -> ExecResult {
        ExecResult {
            exit_code: Some(code),
            status: format!("exit status {code}"),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            duration: Duration::from_millis(1234),
            ..Default::default()
        }
    }

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
    fn jest_json() {
        let p = parse_jest_json(fixture("jest.json"), "/home/user/app").expect("parses");
        // 2 passed, 1 failed, 1 skipped + 1 todo, and bad.test.js failed to load.
        assert_eq!(counts(&p), (2, 1, 2, 1));
        assert_eq!(names(&p), ["calc › breaks", "bad.test.js"]);
        let f = &p.failures[0];
        assert_eq!(f.file.as_deref(), Some("calc.test.js"));
        assert_eq!(
            f.message.as_deref(),
            Some(
                "Error: expect(received).toBe(expected) // Object.is equality\n\nExpected: 5\nReceived: 4"
            )
        );
        assert!(f.output.contains("at Object.toBe"), "{}", f.output);
        assert_eq!(
            p.errored[0].message.as_deref(),
            Some("Cannot find module './does-not-exist' from 'bad.test.js'")
        );
        assert_eq!(parse_jest_json("{\"nope\": 1}", CWD), None);
        assert_eq!(parse_jest_json("{truncated", CWD), None);
    }

    #[test]
    fn jest_text() {
        let p = parse_jest_text(fixture("jest-text.txt")).expect("parses");
        assert_eq!(counts(&p), (2, 1, 2, 1));
        assert_eq!(names(&p), ["calc › breaks", "j/bad.test.js"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("j/calc.test.js"));
    }

    #[test]
    fn vitest_text_with_ansi_colors() {
        let p = parse_vitest_text(fixture("vitest-text.txt")).expect("parses");
        assert_eq!(counts(&p), (2, 2, 2, 1));
        assert_eq!(names(&p), ["calc > breaks", "other fails", "bad.test.js"]);
        assert_eq!(p.failures[0].file.as_deref(), Some("calc.test.js"));
    }

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

    fn probe(files: &[&str], dirs: &[&str], nested: &[&str]) -> Probe {
        Probe {
            files: files.iter().map(|s| s.to_string()).collect(),
            dirs: dirs.iter().map(|s| s.to_string()).collect(),
            nested: nested.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn detection_order() {
        use Framework::*;
        let d = |p: Probe| detect(&p);
        assert_eq!(
            d(probe(&["go.mod", "Cargo.toml", "package.json"], &[], &[])),
            Some(GoTest)
        );
        assert_eq!(
            d(probe(&["Cargo.toml", "pyproject.toml"], &[], &[])),
            Some(CargoTest)
        );
        let mut p = probe(&["package.json", "pytest.ini"], &[], &[]);
        p.mentions_jest = true;
        assert_eq!(d(p.clone()), Some(Jest));
        p.mentions_vitest = true;
        assert_eq!(d(p), Some(Vitest));
        assert_eq!(
            d(probe(&["package.json", "a.test.mjs"], &[], &[])),
            Some(NodeTest)
        );
        assert_eq!(
            d(probe(&["package.json"], &["test"], &["test/x.js"])),
            Some(NodeTest)
        );
        // A package.json without tests falls through to pytest markers.
        assert_eq!(
            d(probe(&["package.json", "setup.cfg"], &[], &[])),
            Some(Pytest)
        );
        assert_eq!(d(probe(&["test_x.py"], &[], &[])), Some(Pytest));
        assert_eq!(d(probe(&["x_test.py"], &[], &[])), Some(Pytest));
        assert_eq!(d(probe(&[], &["tests"], &[])), Some(Pytest));
        assert_eq!(d(probe(&["conftest.py"], &[], &[])), Some(Pytest));
        assert_eq!(d(probe(&["test.js"], &[], &[])), Some(NodeTest));
        assert_eq!(
            d(probe(
                &["README.md", "main.py", "testing.js"],
                &["src"],
                &[]
            )),
            None
        );
    }

    #[test]
    fn probe_output() {
        let p = parse_probe(
            "bash\nwritable\nf go.mod\nf my file.txt\nd src\nt tests/test_a.py\nmentions jest\nnode junit\n",
        );
        assert!(p.bash && p.writable && p.mentions_jest && !p.mentions_vitest);
        assert!(p.files.contains("my file.txt") && p.dirs.contains("src"));
        assert!(p.nested.contains("tests/test_a.py"));
        assert_eq!(p.node, Some(NodeReporter::Junit));
    }

    #[test]
    fn plans() {
        let mut p = probe(&[], &[], &[]);
        p.node = Some(NodeReporter::Tap);
        let pl = plan(Some(Framework::NodeTest), None, &p, "/tmp/t");
        assert_eq!(pl.script, "node --test --test-reporter=tap");
        assert_eq!(pl.report, None);
        p.node = Some(NodeReporter::Junit);
        let pl = plan(Some(Framework::NodeTest), None, &p, "/tmp/t");
        assert_eq!(pl.report, Some(("/tmp/t.xml".into(), ReportKind::Junit)));
        let pl = plan(Some(Framework::CargoTest), None, &p, "/tmp/t");
        assert_eq!(
            pl.env.get("CARGO_TARGET_DIR").map(String::as_str),
            Some("/tmp/paddock-cargo-target")
        );
        let pl = plan(None, Some("make test"), &p, "/tmp/t");
        assert_eq!(pl.script, "make test");
        assert_eq!(
            pl.env.get("PADDOCK_JUNIT_XML").map(String::as_str),
            Some("/tmp/t.xml")
        );
        let pl = plan(Some(Framework::Jest), None, &p, "/tmp/t");
        assert_eq!(
            pl.report,
            Some(("/tmp/t.json".into(), ReportKind::JestJson))
        );
        // pytest runs under the project's own virtualenv when it has one.
        let pl = plan(Some(Framework::Pytest), None, &p, "/tmp/t");
        assert!(pl.script.starts_with("python3 -m pytest "), "{}", pl.script);
        assert!(parse_probe("venv\nf test_a.py\n").venv);
        p.venv = true;
        let pl = plan(Some(Framework::Pytest), None, &p, "/tmp/t");
        assert!(
            pl.script.starts_with(".venv/bin/python -m pytest "),
            "{}",
            pl.script
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

    #[test]
    fn text_helpers() {
        assert_eq!(
            strip_ansi("\x1b[1m\x1b[31mA\x1b[39m\x1b]8;;url\x07B\r\n"),
            "AB\n"
        );
        assert_eq!(
            relative("/home/user/proj/a/b.py", "/home/user/proj/"),
            "a/b.py"
        );
        assert_eq!(relative("/elsewhere/b.py", CWD), "/elsewhere/b.py");
        assert_eq!(strip_line_col("src/lib.rs:14:43"), "src/lib.rs");
        assert_eq!(
            path_in("at x (/home/user/proj/node_modules/a/b.js:1:2)\n at y (/home/user/proj/src/c.mjs:3:4)", CWD).as_deref(),
            Some("src/c.mjs")
        );
        assert_eq!(path_in("at /home/user/proj/ nothing", CWD), None);
        assert_eq!(strip_line_col("/p/a.test.js:4:1"), "/p/a.test.js");
        assert_eq!(cap_head("ééé", 3), "é [truncated]");
        assert_eq!(cap_tail("ééé", 3), "[4 bytes omitted]\né");
    }
}

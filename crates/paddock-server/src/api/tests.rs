//! `POST /v1/sandboxes/{id}/tests`: run a project's tests and return structured results
//! (see [`paddock_testrun`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use paddock_testrun::{
    Framework, Outcome, TestFailure, TestReport, TestRequest, TestRunError, run_tests,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::typed_response;
use paddock_service::state::AppState;

/// Default and maximum time a test run may take.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 600;
pub const MAX_TEST_TIMEOUT_SECS: u64 = 3600;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/sandboxes/{id}/tests", post(tests))
}

/// What to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RunTests)]
pub(crate) struct TestsBody {
    /// Custom shell command; JUnit XML written to $PADDOCK_JUNIT_XML is parsed
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    #[schema(default = "/home/user")]
    cwd: Option<String>,
    /// The framework; detected from the files in `cwd` when absent.
    #[serde(default)]
    #[schema(inline, value_type = Option<FrameworkWire>)]
    framework: Option<Framework>,
    /// Seconds, 1 to 3600 (default 600).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600, default = 600)]
    timeout: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    user: Option<String>,
}

/// A test framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FrameworkWire {
    Pytest,
    Jest,
    Vitest,
    Go,
    Cargo,
    Node,
}

impl From<Framework> for FrameworkWire {
    fn from(f: Framework) -> FrameworkWire {
        match f {
            Framework::Pytest => FrameworkWire::Pytest,
            Framework::Jest => FrameworkWire::Jest,
            Framework::Vitest => FrameworkWire::Vitest,
            Framework::GoTest => FrameworkWire::Go,
            Framework::CargoTest => FrameworkWire::Cargo,
            Framework::NodeTest => FrameworkWire::Node,
        }
    }
}

/// The overall result of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeWire {
    /// Exit code 0 and nothing failed.
    Passed,
    /// At least one test failed.
    Failed,
    /// No test failed, but the run did not succeed (a build or collection error, or a
    /// non-zero exit code).
    Error,
    /// The command ran out of time; the counts cover what finished before.
    TimedOut,
}

impl From<Outcome> for OutcomeWire {
    fn from(o: Outcome) -> OutcomeWire {
        match o {
            Outcome::Passed => OutcomeWire::Passed,
            Outcome::Failed => OutcomeWire::Failed,
            Outcome::Error => OutcomeWire::Error,
            Outcome::TimedOut => OutcomeWire::TimedOut,
        }
    }
}

/// One failing (or erroring) test.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TestFailure)]
pub struct TestFailureView {
    pub name: String,
    /// Class, module, package, suite file or test binary, as the framework reports it.
    pub classname: Option<String>,
    /// Source file, relative to `cwd` when it is inside it.
    pub file: Option<String>,
    /// The short reason (assertion message, panic message).
    pub message: Option<String>,
    /// Traceback and captured output (its tail).
    pub output: String,
}

impl From<TestFailure> for TestFailureView {
    fn from(f: TestFailure) -> TestFailureView {
        TestFailureView {
            name: f.name,
            classname: f.classname,
            file: f.file,
            message: f.message,
            output: f.output,
        }
    }
}

/// A test run's report.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TestReport)]
pub struct TestReportView {
    #[schema(inline)]
    pub framework: Option<FrameworkWire>,
    /// The shell command that ran.
    pub command: String,
    /// Exit code when the command exited normally.
    pub exit_code: Option<i32>,
    /// How the command ended, e.g. `exit status 1`, `signal: killed`, `timeout`.
    pub status: String,
    #[schema(inline)]
    pub outcome: OutcomeWire,
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
    /// Failed tests first, then errors, at most 200.
    pub failures: Vec<TestFailureView>,
    /// Failures beyond those listed.
    pub failures_omitted: u32,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub timed_out: bool,
    /// The sandbox's OOM killer fired while the tests ran.
    pub oom_killed: bool,
}

impl From<TestReport> for TestReportView {
    fn from(r: TestReport) -> TestReportView {
        TestReportView {
            framework: r.framework.map(FrameworkWire::from),
            command: r.command,
            exit_code: r.exit_code,
            status: r.status,
            outcome: r.outcome.into(),
            passed: r.passed,
            failed: r.failed,
            skipped: r.skipped,
            errors: r.errors,
            total: r.total,
            duration_ms: r.duration_ms,
            structured: r.structured,
            failures: r.failures.into_iter().map(TestFailureView::from).collect(),
            failures_omitted: r.failures_omitted,
            stdout_tail: r.stdout_tail,
            stderr_tail: r.stderr_tail,
            timed_out: r.timed_out,
            oom_killed: r.oom_killed,
        }
    }
}

/// Run a project's tests and return structured results
///
/// Detects pytest, jest, vitest, go test, cargo test or node's test runner from the files
/// in `cwd` (or uses `framework`), prefers JUnit XML or JSON reports, and returns counts
/// and failing tests with their output. Default timeout 600 s, at most 3600 s.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/tests",
    tag = "tests",
    operation_id = "run_tests",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = TestsBody,
    responses(
        (status = 200, description = "The report", body = TestReportView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn tests(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<TestsBody>,
) -> ApiResult<Response> {
    let detail = Some(format!(
        "cwd={} framework={} cmd={}",
        body.cwd.as_deref().unwrap_or("/home/user"),
        body.framework.map_or("auto", |f| f.as_str()),
        body.cmd.as_deref().unwrap_or("")
    ));
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let secs = body.timeout.unwrap_or(DEFAULT_TEST_TIMEOUT_SECS);
        if secs == 0 || secs > MAX_TEST_TIMEOUT_SECS {
            return Err(ApiError::BadRequest(format!(
                "timeout must be between 1 and {MAX_TEST_TIMEOUT_SECS} seconds"
            )));
        }
        let req = TestRequest {
            cmd: body.cmd.clone(),
            cwd: body.cwd.clone().unwrap_or_else(|| "/home/user".into()),
            framework: body.framework,
            timeout: Duration::from_secs(secs),
            env: body.env.clone(),
            user: body.user.clone(),
        };
        run_tests(&sbx, &req).await.map_err(|e| match e {
            TestRunError::Runtime(r) => ApiError::from(r),
            other => ApiError::BadRequest(other.to_string()),
        })
    }
    .await;
    let report = state
        .audited(&caller, "tests.run", Some(&id), detail, res)
        .await?;
    Ok(typed_response(
        StatusCode::OK,
        &TestReportView::from(report),
    ))
}

#[cfg(test)]
mod unit {
    use super::*;

    /// The wire report is the runner's report, field for field (what clients saw before).
    #[test]
    fn the_wire_report_serialises_as_the_runners_report() {
        for (framework, outcome) in [
            (Some(Framework::GoTest), Outcome::TimedOut),
            (None, Outcome::Error),
            (Some(Framework::CargoTest), Outcome::Passed),
        ] {
            let r = TestReport {
                framework,
                command: "go test ./...".into(),
                exit_code: None,
                status: "timeout".into(),
                outcome,
                passed: 3,
                failed: 1,
                skipped: 2,
                errors: 0,
                total: 6,
                duration_ms: 1200,
                structured: true,
                failures: vec![TestFailure {
                    name: "TestX".into(),
                    classname: Some("pkg".into()),
                    file: None,
                    message: Some("boom".into()),
                    output: "trace".into(),
                }],
                failures_omitted: 0,
                stdout_tail: "out".into(),
                stderr_tail: String::new(),
                timed_out: true,
                oom_killed: false,
            };
            assert_eq!(
                serde_json::to_value(TestReportView::from(r.clone())).unwrap(),
                serde_json::to_value(&r).unwrap()
            );
        }
    }
}

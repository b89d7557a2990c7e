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
use paddock_testrun::{Framework, TestRequest, TestRunError, run_tests};
use serde::Deserialize;

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::json_response;

/// Default and maximum time a test run may take.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 600;
pub const MAX_TEST_TIMEOUT_SECS: u64 = 3600;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/sandboxes/{id}/tests", post(tests))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsBody {
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    framework: Option<Framework>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    user: Option<String>,
}

async fn tests(
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
    let v = serde_json::to_value(&report)
        .map_err(|e| ApiError::Internal(format!("serialising the report: {e}")))?;
    Ok(json_response(StatusCode::OK, v))
}

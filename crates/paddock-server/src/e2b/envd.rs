//! The E2B data plane: requests for a sandbox's envd, checked and streamed to its agent.
//!
//! A request belongs here when it names a sandbox: the `E2b-Sandbox-Id` header (clients
//! with `E2B_SANDBOX_URL`, port from `E2b-Sandbox-Port`, default 49983), or a Host
//! `{port}-{id}.{domain}` under the configured domain. [`route`] runs before the REST router,
//! so such a request never reaches a REST route, the admin API included.
//!
//! Any other port goes to the port proxy ([`crate::proxy::host`]).
//!
//! Checks, in order: the sandbox runs on this host (else 502 "... was not found", which the
//! SDK reads as "not running"); the request carries the sandbox's access
//! token in `X-Access-Token`, or is a `/files` request with a valid, unexpired URL
//! signature; `GET /health` alone is open; the request is within the data-plane rate
//! (`--data-rate`, `--data-rate-burst`) of the key that created the sandbox (`/health`: of
//! the sandbox itself), else 429 in E2B's shape with `Retry-After`. Then the request goes to
//! the agent with its body streamed both ways; hop-by-hop headers, the token and the routing
//! headers are dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::target::{Target, target};
use super::{ENVD_PORT, access_token, ct_eq, e2b_error};
use crate::auth::DataBucket;
use paddock_service::state::AppState;

/// Longest a data-plane request body may pause between chunks. Longer than the REST idle
/// timeout because `StreamInput` bodies follow a human or a program feeding stdin; they are
/// authenticated before any of it is read.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Middleware in front of the REST router: data-plane requests are answered here.
pub async fn route(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match target(req.headers(), req.uri(), &state.cfg.domain) {
        None => next.run(req).await,
        // Every other port is the port proxy's.
        Some(t) if t.port != ENVD_PORT => crate::proxy::host(&state, &t.id, t.port, req).await,
        Some(t) => serve(&state, t, req).await,
    }
}

const UNAUTHORIZED: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

async fn serve(state: &Arc<AppState>, t: Target, req: Request) -> Response {
    let valid = t.id.parse::<paddock_core::SandboxId>().is_ok();
    // A paused sandbox answers once the caller is authenticated: resumed first when it
    // was created with auto-resume, else a clear 502 (E2B's "sandbox unavailable").
    // One read of the record per request: whether it is paused, and whose rate it spends.
    let rec = if valid {
        state.store.get_sandbox(&t.id).await.ok().flatten()
    } else {
        None
    };
    let owner = match &rec {
        Some(r) => DataBucket::Key(r.key_id.clone()),
        None => DataBucket::Sandbox(t.id.clone()),
    };
    let paused = rec.filter(|r| r.state == paddock_store::SandboxState::Paused);
    let sbx = match state.runtime.get(&t.id) {
        _ if paused.is_some() => None,
        Ok(s) if valid => Some(s),
        _ => {
            // The id is echoed only if it looks like one, so odd input never reaches a body.
            let msg = if t.id.parse::<paddock_core::SandboxId>().is_ok() {
                format!("the sandbox {} was not found", t.id)
            } else {
                "the sandbox was not found".to_owned()
            };
            return e2b_error(StatusCode::BAD_GATEWAY, &msg);
        }
    };
    let open = req.method() == Method::GET && req.uri().path() == "/health";
    let bucket = if open {
        DataBucket::Sandbox(t.id.clone())
    } else {
        owner
    };
    if !open {
        let token = access_token(state, &t.id);
        let presented = req
            .headers()
            .get("x-access-token")
            .map(|v| v.as_bytes().to_owned());
        let ok = match presented {
            Some(p) => ct_eq(&p, token.as_bytes()),
            None if req.uri().path() == "/files" => match check_signature(&req, &token) {
                Ok(()) => true,
                Err(msg) => return e2b_error(StatusCode::UNAUTHORIZED, msg),
            },
            None => false,
        };
        if !ok {
            return e2b_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED);
        }
    }
    // Charged once authenticated, so a stranger's requests cannot spend the owner's rate.
    if let Err(e) = crate::auth::data_bucket(state, &bucket) {
        return super::E2bError(e).into_response();
    }
    let sbx = match (sbx, paused) {
        (Some(s), _) => s,
        // An unauthenticated `/health` never wakes a sandbox.
        (None, Some(r)) if paddock_service::pausing::auto_resume(&r) && !open => {
            match paddock_service::pausing::resume(state, &t.id, false, None).await {
                Ok(_) => match state.runtime.get(&t.id) {
                    Ok(s) => s,
                    Err(e) => return super::E2bError(e.into()).into_response(),
                },
                Err(e) => return super::E2bError(e.into()).into_response(),
            }
        }
        _ => {
            return e2b_error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the sandbox {} is paused: resume it with connect (Sandbox.connect)",
                    t.id
                ),
            );
        }
    };
    forward(&sbx, req).await
}

/// Checks the `signature` (and `signature_expiration`) of a `/files` URL:
/// `v1_` + base64(sha256("{path}:{read|write}:{username}:{token}[:{expiration}]")).
fn check_signature(req: &Request, token: &str) -> Result<(), &'static str> {
    let mut path = String::new();
    let mut user = String::new();
    let mut sig = None;
    let mut exp = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*k {
            "path" => path = v.into_owned(),
            "username" => user = v.into_owned(),
            "signature" => sig = Some(v.into_owned()),
            "signature_expiration" => exp = Some(v.into_owned()),
            _ => {}
        }
    }
    let sig = sig.ok_or(UNAUTHORIZED)?;
    let op = match *req.method() {
        Method::GET => "read",
        Method::POST => "write",
        _ => return Err(UNAUTHORIZED),
    };
    let mut raw = format!("{path}:{op}:{user}:{token}");
    if let Some(e) = &exp {
        let at: i64 = e.parse().map_err(|_| "invalid signature expiration")?;
        if at < paddock_store::now_ms() / 1000 {
            return Err("signature is already expired");
        }
        raw.push(':');
        raw.push_str(e);
    }
    let want = format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    );
    if ct_eq(want.as_bytes(), sig.as_bytes()) {
        Ok(())
    } else {
        Err(UNAUTHORIZED)
    }
}

async fn forward(sbx: &paddock_runtime::Sandbox, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut b = http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://agent{pq}"));
    // Hop-by-hop headers (and those `Connection` names), and the data plane's own routing
    // and credential headers, stay here: the proxy's rule.
    let listed = crate::proxy::connection_listed(&parts.headers);
    for (k, v) in &parts.headers {
        if !crate::proxy::hop_or_ours(k) && !listed.iter().any(|l| l == k.as_str()) {
            b = b.header(k, v);
        }
    }
    // `/files` downloads and sized raw uploads take the raw (spliced) path (`transfer`).
    let raw_len = crate::transfer::raw_upload_length(&parts.headers);
    let multipart = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if parts.uri.path() == "/files"
        && (parts.method == Method::GET
            || (parts.method == Method::POST && raw_len.is_some() && !multipart))
    {
        if let Some(h) = b.headers_mut() {
            h.remove(http::header::CONTENT_LENGTH);
        }
        let Ok(raw_req) = b.body(http_body_util::Empty::new()) else {
            return e2b_error(StatusCode::BAD_REQUEST, "invalid request target");
        };
        let slot = parts.extensions.get::<crate::splice::SpliceSlot>();
        return raw_files(sbx, raw_req, body, raw_len, slot).await;
    }
    let Ok(agent_req) = b.body(body) else {
        return e2b_error(StatusCode::BAD_REQUEST, "invalid request target");
    };
    let resp = match sbx.agent_request(agent_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(sandbox = %sbx.id, "e2b data plane: {e}");
            return e2b_error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the sandbox {} was not found or its agent is not answering",
                    sbx.id
                ),
            );
        }
    };
    answered(resp)
}

/// The agent's ordinary answer, its hop-by-hop headers dropped.
fn answered(resp: http::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = resp.into_parts();
    let mut out = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if !crate::proxy::hop_or_ours(k) {
            out = out.header(k, v);
        }
    }
    out.body(Body::new(body)).unwrap_or_default()
}

/// `/files` through the raw path: a download (`len` none) or a sized upload of `body`.
async fn raw_files(
    sbx: &paddock_runtime::Sandbox,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
    body: Body,
    len: Option<u64>,
    slot: Option<&crate::splice::SpliceSlot>,
) -> Response {
    use crate::transfer::{Download, Failure, Upload};
    let failed = |e: Failure| match e {
        Failure::Client(m) => e2b_error(StatusCode::BAD_REQUEST, &m),
        Failure::Agent(e) => {
            tracing::warn!(sandbox = %sbx.id, "e2b data plane: {e}");
            e2b_error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the sandbox {} was not found or its agent is not answering",
                    sbx.id
                ),
            )
        }
    };
    match len {
        None => match crate::transfer::download(sbx, req, slot).await {
            Ok(Download::Raw(r)) => r,
            Ok(Download::Answered(r)) => answered(r),
            Err(e) => failed(e),
        },
        Some(n) => match crate::transfer::upload(sbx, req, body, n).await {
            Ok(Upload::Done { status, body }) => Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap_or_default(),
            Ok(Upload::Answered(r)) => answered(r),
            Err(e) => failed(e),
        },
    }
}

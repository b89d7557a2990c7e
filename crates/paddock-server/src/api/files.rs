//! Files: raw streaming transfer (`/files`), filesystem operations (`/fs/*`) and tar
//! archives (`/archive`). Every operation runs inside the sandbox, through its agent, as the
//! requested user (default: the sandbox's user), so a symlink planted by sandbox code can
//! never lead to a host path. Bodies are streamed both ways and never held whole in memory.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use paddock_envd::filesystem::{
    EntryInfo, FileType, ListDirRequest, MakeDirRequest, MoveRequest, RemoveRequest, StatRequest,
};
use paddock_runtime::{RuntimeError, Sandbox};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::Json;
use super::sandbox_view::SandboxIdPath;
use super::template_view::Binary;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use crate::wire::{no_content, rfc3339, typed_response};
use paddock_service::state::{AppState, truncate};

/// Deepest listing `fs/list` returns.
pub const MAX_LIST_DEPTH: u32 = 16;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/sandboxes/{id}/files",
            get(download).put(upload).delete(remove),
        )
        .route("/v1/sandboxes/{id}/fs/list", get(list))
        .route("/v1/sandboxes/{id}/fs/stat", get(stat))
        .route("/v1/sandboxes/{id}/fs/mkdir", post(mkdir))
        .route("/v1/sandboxes/{id}/fs/move", post(mv))
        .route(
            "/v1/sandboxes/{id}/archive",
            get(archive_get).put(archive_put),
        )
}

/// The query of a file route: `path` (required), `user`, and route-specific extras.
#[derive(Debug, Default)]
struct FileQuery {
    path: String,
    user: Option<String>,
    depth: Option<u32>,
    format: Option<String>,
}

/// The query of a file route, for the OpenAPI document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PathQuery {
    /// Absolute path, or relative to the user's home (at most 4096 bytes)
    path: String,
    /// User to act as (default: the sandbox's user); `username` is accepted too
    user: Option<String>,
}

/// The extra query of `GET .../fs/list`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct DepthQuery {
    /// 1 to 16, default 1
    #[param(minimum = 1, maximum = 16)]
    depth: Option<u32>,
}

/// The extra query of `GET .../archive`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct FormatQuery {
    /// tar (default), tar.gz or tar.zst
    format: Option<String>,
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Other,
}

/// A file, directory or symlink in a sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FileEntry)]
pub struct EntryView {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub size: i64,
    /// Unix mode bits
    pub mode: u32,
    /// Such as `-rw-r--r--`
    pub permissions: String,
    pub owner: String,
    pub group: String,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub modified_at: Value,
    #[schema(required = true)]
    pub symlink_target: Option<String>,
}

/// A directory's entries.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FileEntryList)]
pub struct EntryList {
    pub entries: Vec<EntryView>,
}

/// A file, written.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FileWritten)]
pub struct Written {
    pub path: String,
    pub size: i64,
}

/// An archive, extracted (the agent's count).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ArchiveExtracted)]
pub struct Extracted {
    /// Entries extracted
    pub entries: u64,
    /// Bytes written
    pub bytes: u64,
}

fn check_path(p: &str) -> ApiResult<()> {
    if p.is_empty() {
        return Err(ApiError::BadRequest("path must not be empty".into()));
    }
    if p.contains('\0') {
        return Err(ApiError::BadRequest("path must not contain NUL".into()));
    }
    if p.len() > MAX_PATH {
        return Err(ApiError::BadRequest(format!(
            "path is longer than {MAX_PATH} bytes"
        )));
    }
    Ok(())
}

fn parse_query(q: Option<&str>, extras: &[&str]) -> ApiResult<FileQuery> {
    let mut f = FileQuery::default();
    let mut have_path = false;
    for (k, v) in form_urlencoded_pairs(q.unwrap_or("")) {
        match k.as_str() {
            "path" => {
                f.path = v;
                have_path = true;
            }
            "user" | "username" => f.user = Some(v),
            "depth" if extras.contains(&"depth") => {
                f.depth = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|d| (1..=MAX_LIST_DEPTH).contains(d))
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!("depth must be 1 to {MAX_LIST_DEPTH}"))
                        })?,
                )
            }
            "format" if extras.contains(&"format") => f.format = Some(v),
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    if !have_path {
        return Err(ApiError::BadRequest(
            "the query parameter `path` is required".into(),
        ));
    }
    check_path(&f.path)?;
    Ok(f)
}

/// `path` (and `username`, `format`) as the agent's query string.
fn agent_uri(route: &str, sbx: &Sandbox, f: &FileQuery) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("path", &f.path);
    q.append_pair("username", f.user.as_deref().unwrap_or(&sbx.user));
    if let Some(fmt) = &f.format {
        q.append_pair("format", fmt);
    }
    format!("http://agent{route}?{}", q.finish())
}

fn basic_auth(sbx: &Sandbox, user: Option<&str>) -> String {
    let u = user.unwrap_or(&sbx.user);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:"))
    )
}

/// Maps an agent error response (JSON `{"message"}`) to the API's error.
async fn agent_error(resp: http::Response<hyper::body::Incoming>) -> ApiError {
    let status = resp.status();
    // Error bodies are small; cap what is read anyway.
    let body = http_body_util::Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    agent_error_from(status, &body)
}

/// Maps an agent error (its status and JSON `{"message"}` body) to the API's error.
fn agent_error_from(status: StatusCode, body: &[u8]) -> ApiError {
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    match status.as_u16() {
        404 => ApiError::NotFound(msg),
        400 => ApiError::BadRequest(msg),
        401 => ApiError::BadRequest(format!("unknown user: {msg}")),
        403 => ApiError::BadRequest(format!("permission denied: {msg}")),
        409 => ApiError::Conflict(msg),
        413 => ApiError::BadRequest(format!("too large: {msg}")),
        415 => ApiError::UnsupportedMediaType(msg),
        507 => ApiError::InsufficientStorage(msg),
        _ => {
            tracing::warn!(%status, %msg, "agent file error");
            ApiError::Agent("the sandbox's agent failed".into())
        }
    }
}

fn transfer_err(e: crate::transfer::Failure) -> ApiError {
    match e {
        crate::transfer::Failure::Agent(e) => ApiError::from(e),
        crate::transfer::Failure::Client(m) => ApiError::BadRequest(m),
    }
}

/// The agent request of a raw transfer: `method` on `/files` as the query's user.
fn raw_request(
    sbx: &Sandbox,
    method: http::Method,
    f: &FileQuery,
) -> ApiResult<http::Request<http_body_util::Empty<bytes::Bytes>>> {
    http::Request::builder()
        .method(method)
        .uri(agent_uri("/files", sbx, f))
        .header(header::AUTHORIZATION, basic_auth(sbx, f.user.as_deref()))
        .body(http_body_util::Empty::new())
        .map_err(|e| ApiError::BadRequest(format!("bad path: {e}")))
}

/// Streams the agent's response body to the client, with selected headers.
fn stream_back(resp: http::Response<hyper::body::Incoming>, status: StatusCode) -> Response {
    let mut b = Response::builder().status(status);
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = resp.headers().get(&h) {
            b = b.header(h, v);
        }
    }
    b.body(Body::new(resp.into_body())).unwrap_or_default()
}

fn rt_err(e: connectrpc::ConnectError) -> ApiError {
    ApiError::from(RuntimeError::from(e))
}

/// The wire form of a directory entry.
fn entry_view(e: &EntryInfo) -> EntryView {
    let kind = match e.r#type.as_known() {
        Some(FileType::FILE_TYPE_DIRECTORY) => EntryType::Dir,
        Some(FileType::FILE_TYPE_SYMLINK) => EntryType::Symlink,
        Some(FileType::FILE_TYPE_FILE) => EntryType::File,
        _ => EntryType::Other,
    };
    let modified = e
        .modified_time
        .as_option()
        .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000);
    EntryView {
        name: e.name.clone(),
        path: e.path.clone(),
        kind: if e.is_symlink {
            EntryType::Symlink
        } else {
            kind
        },
        size: e.size,
        mode: e.mode,
        permissions: e.permissions.clone(),
        owner: e.owner.clone(),
        group: e.group.clone(),
        modified_at: rfc3339(modified),
        symlink_target: e.symlink_target.clone(),
    }
}

/// Sends `method route` to the agent as the query's user, with `body` and the `copy`
/// headers of the client's request; answers the agent's response if it succeeded.
async fn forward<B>(
    sbx: &Sandbox,
    method: http::Method,
    route: &str,
    f: &FileQuery,
    headers: &http::HeaderMap,
    copy: &[header::HeaderName],
    body: B,
) -> ApiResult<http::Response<hyper::body::Incoming>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut req = http::Request::builder()
        .method(method)
        .uri(agent_uri(route, sbx, f))
        .header(header::AUTHORIZATION, basic_auth(sbx, f.user.as_deref()));
    for h in copy {
        if let Some(v) = headers.get(h) {
            req = req.header(h, v);
        }
    }
    let req = req
        .body(body)
        .map_err(|e| ApiError::BadRequest(format!("bad path: {e}")))?;
    let resp = sbx.agent_request(req).await?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    Ok(resp)
}

/// Download a file (raw, streamed)
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files",
    operation_id = "download_file",
    tag = "files",
    params(SandboxIdPath, PathQuery),
    responses(
        (status = 200, description = "The file", content(
            (inline(Binary) = "application/octet-stream"),
        )),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn download(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    slot: Option<axum::Extension<crate::splice::SpliceSlot>>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let f = parse_query(q.as_deref(), &[])?;
    let req = raw_request(&sbx, http::Method::GET, &f)?;
    let slot = slot.as_ref().map(|s| &s.0);
    let resp = match crate::transfer::download(&sbx, req, slot)
        .await
        .map_err(transfer_err)?
    {
        crate::transfer::Download::Raw(resp) => return Ok(resp),
        crate::transfer::Download::Answered(r) if !r.status().is_success() => {
            return Err(agent_error(r).await);
        }
        crate::transfer::Download::Answered(r) => r,
    };
    let mut out = stream_back(resp, StatusCode::OK);
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(out)
}

/// Upload a file (raw body, streamed; parents created)
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{id}/files",
    operation_id = "upload_file",
    tag = "files",
    params(SandboxIdPath, PathQuery),
    request_body(content(
        (inline(Binary) = "application/octet-stream"),
    )),
    responses(
        (status = 201, description = "Written", body = Written),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
        (status = 507, description = "The sandbox's disk is full"),
    )
)]
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult<Response> {
    let parsed = parse_query(q.as_deref(), &[]);
    let detail = parsed
        .as_ref()
        .ok()
        .map(|f| format!("path={}", truncate(&f.path, 256)));
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let f = parsed?;
        // The agent takes a raw body as octet-stream whatever the client called it.
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        // The agent never sees a client's Content-Encoding here, so any sized body goes raw.
        headers.remove(header::CONTENT_ENCODING);
        if let Some(len) = crate::transfer::raw_upload_length(&headers) {
            let req = raw_request(&sbx, http::Method::POST, &f)?;
            match crate::transfer::upload(&sbx, req, body, len)
                .await
                .map_err(transfer_err)?
            {
                crate::transfer::Upload::Done { status, body } if !status.is_success() => {
                    return Err(agent_error_from(status, &body));
                }
                crate::transfer::Upload::Done { .. } => {}
                crate::transfer::Upload::Answered(r) if !r.status().is_success() => {
                    return Err(agent_error(r).await);
                }
                crate::transfer::Upload::Answered(r) => {
                    let _ = r.into_body().collect().await;
                }
            }
        } else {
            let resp = forward(
                &sbx,
                http::Method::POST,
                "/files",
                &f,
                &headers,
                &[header::CONTENT_TYPE, header::CONTENT_LENGTH],
                body,
            )
            .await?;
            let _ = resp.into_body().collect().await;
        }
        let st = sbx
            .agent
            .filesystem
            .stat_with_options(
                StatRequest {
                    path: f.path.clone(),
                    ..Default::default()
                },
                sbx.call_options(f.user.as_deref()),
            )
            .await
            .map_err(rt_err)?
            .into_owned();
        let e = st.entry.as_option().cloned().unwrap_or_default();
        Ok(Written {
            path: e.path,
            size: e.size,
        })
    }
    .await;
    let v = state
        .audited(&caller, "files.write", Some(&id), detail, res)
        .await?;
    Ok(typed_response(StatusCode::CREATED, &v))
}

/// Remove a file or directory
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/files",
    operation_id = "delete_file",
    tag = "files",
    params(SandboxIdPath, PathQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let parsed = parse_query(q.as_deref(), &[]);
    let detail = parsed
        .as_ref()
        .ok()
        .map(|f| format!("path={}", truncate(&f.path, 256)));
    let res: ApiResult<_> = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let f = parsed?;
        sbx.agent
            .filesystem
            .remove_with_options(
                RemoveRequest {
                    path: f.path,
                    ..Default::default()
                },
                sbx.call_options(f.user.as_deref()),
            )
            .await
            .map_err(rt_err)?;
        Ok(())
    }
    .await;
    state
        .audited(&caller, "files.delete", Some(&id), detail, res)
        .await?;
    Ok(no_content())
}

/// List a directory
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/fs/list",
    operation_id = "list_dir",
    tag = "files",
    params(SandboxIdPath, PathQuery, DepthQuery),
    responses(
        (status = 200, description = "Entries", body = EntryList),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let f = parse_query(q.as_deref(), &["depth"])?;
    let r = sbx
        .agent
        .filesystem
        .list_dir_with_options(
            ListDirRequest {
                path: f.path,
                depth: f.depth.unwrap_or(1),
                ..Default::default()
            },
            sbx.call_options(f.user.as_deref()),
        )
        .await
        .map_err(rt_err)?
        .into_owned();
    let entries = r.entries.iter().map(entry_view).collect();
    Ok(typed_response(StatusCode::OK, &EntryList { entries }))
}

/// Stat a path
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/fs/stat",
    operation_id = "stat_path",
    tag = "files",
    params(SandboxIdPath, PathQuery),
    responses(
        (status = 200, description = "The entry", body = EntryView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn stat(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let f = parse_query(q.as_deref(), &[])?;
    let r = sbx
        .agent
        .filesystem
        .stat_with_options(
            StatRequest {
                path: f.path,
                ..Default::default()
            },
            sbx.call_options(f.user.as_deref()),
        )
        .await
        .map_err(rt_err)?
        .into_owned();
    let e = r.entry.as_option().cloned().unwrap_or_default();
    Ok(typed_response(StatusCode::OK, &entry_view(&e)))
}

/// `POST .../fs/mkdir`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Mkdir)]
pub(crate) struct MkdirBody {
    path: String,
    #[serde(default)]
    #[schema(nullable = false)]
    user: Option<String>,
}

/// Make a directory (and parents)
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/fs/mkdir",
    operation_id = "make_dir",
    tag = "files",
    params(SandboxIdPath),
    request_body = MkdirBody,
    responses(
        (status = 201, description = "The entry", body = EntryView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn mkdir(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<MkdirBody>,
) -> ApiResult<Response> {
    let detail = Some(format!("path={}", truncate(&body.path, 256)));
    let res: ApiResult<_> = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        check_path(&body.path)?;
        let r = sbx
            .agent
            .filesystem
            .make_dir_with_options(
                MakeDirRequest {
                    path: body.path.clone(),
                    ..Default::default()
                },
                sbx.call_options(body.user.as_deref()),
            )
            .await
            .map_err(rt_err)?
            .into_owned();
        Ok(entry_view(
            &r.entry.as_option().cloned().unwrap_or_default(),
        ))
    }
    .await;
    let v = state
        .audited(&caller, "files.mkdir", Some(&id), detail, res)
        .await?;
    Ok(typed_response(StatusCode::CREATED, &v))
}

/// `POST .../fs/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Move)]
pub(crate) struct MoveBody {
    from: String,
    to: String,
    #[serde(default)]
    #[schema(nullable = false)]
    user: Option<String>,
}

/// Move or rename
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/fs/move",
    operation_id = "move_path",
    tag = "files",
    params(SandboxIdPath),
    request_body = MoveBody,
    responses(
        (status = 200, description = "The entry at its new path", body = EntryView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn mv(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<MoveBody>,
) -> ApiResult<Response> {
    let detail = Some(format!(
        "from={} to={}",
        truncate(&body.from, 256),
        truncate(&body.to, 256)
    ));
    let res: ApiResult<_> = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        check_path(&body.from)?;
        check_path(&body.to)?;
        let r = sbx
            .agent
            .filesystem
            .move_with_options(
                MoveRequest {
                    source: body.from.clone(),
                    destination: body.to.clone(),
                    ..Default::default()
                },
                sbx.call_options(body.user.as_deref()),
            )
            .await
            .map_err(rt_err)?
            .into_owned();
        Ok(entry_view(
            &r.entry.as_option().cloned().unwrap_or_default(),
        ))
    }
    .await;
    let v = state
        .audited(&caller, "files.move", Some(&id), detail, res)
        .await?;
    Ok(typed_response(StatusCode::OK, &v))
}

/// Download a directory as a tar stream
///
/// `GET .../archive?path=P[&format=tar|tar.gz|tar.zst]`.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/archive",
    operation_id = "download_archive",
    tag = "files",
    params(SandboxIdPath, PathQuery, FormatQuery),
    responses(
        (status = 200, description = "The archive", content(
            (inline(Binary) = "application/x-tar"),
        )),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn archive_get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let f = parse_query(q.as_deref(), &["format"])?;
    let none = http::HeaderMap::new();
    let resp = forward(
        &sbx,
        http::Method::GET,
        "/archive",
        &f,
        &none,
        &[],
        http_body_util::Empty::<bytes::Bytes>::new(),
    )
    .await?;
    Ok(stream_back(resp, StatusCode::OK))
}

/// Extract a tar, tar.gz or tar.zst into a directory, inside the sandbox as the user
///
/// `PUT .../archive?path=DIR` (see the agent's `archive` module for the limits and policy).
/// Entries with `..` or absolute paths, device nodes and FIFOs are refused; setuid bits are
/// stripped; files are owned by the user. Limits: 1,000,000 entries, 16 GiB, ratio 1000:1.
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{id}/archive",
    operation_id = "extract_archive",
    tag = "files",
    params(SandboxIdPath, PathQuery),
    request_body(content(
        (inline(Binary) = "application/x-tar"),
        (inline(Binary) = "application/gzip"),
        (inline(Binary) = "application/zstd"),
    )),
    responses(
        (status = 201, description = "Extracted", body = Extracted),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox, or no such path"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
        (status = 413, description = "Over the archive limits"),
        (status = 415, description = "Not a tar, tar.gz or tar.zst"),
        (status = 507, description = "The sandbox's disk is full"),
    )
)]
pub(crate) async fn archive_put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult<Response> {
    let parsed = parse_query(q.as_deref(), &[]);
    let detail = parsed
        .as_ref()
        .ok()
        .map(|f| format!("path={}", truncate(&f.path, 256)));
    let res: ApiResult<_> = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let f = parsed?;
        let (parts, body) = req.into_parts();
        let resp = forward(
            &sbx,
            http::Method::POST,
            "/archive",
            &f,
            &parts.headers,
            &[header::CONTENT_TYPE, header::CONTENT_LENGTH],
            body,
        )
        .await?;
        let body = http_body_util::Limited::new(resp.into_body(), 64 << 10)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // The agent's `{"entries", "bytes"}`; null (as before) if it sent anything else.
        Ok(serde_json::from_slice::<Extracted>(&body).ok())
    }
    .await;
    let v = state
        .audited(&caller, "files.archive_extract", Some(&id), detail, res)
        .await?;
    Ok(typed_response(StatusCode::CREATED, &v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The wire forms are those the `json!` bodies had: `type` named so, `modified_at` and
    /// `symlink_target` null when unknown, the extraction count as the agent's.
    #[test]
    fn entries_and_transfers_serialise_as_before() {
        let e = EntryView {
            name: "a".into(),
            path: "/home/user/a".into(),
            kind: EntryType::Dir,
            size: 4096,
            mode: 0o755,
            permissions: "drwxr-xr-x".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_at: Value::Null,
            symlink_target: None,
        };
        let before = json!({"name": "a", "path": "/home/user/a", "type": "dir", "size": 4096,
            "mode": 0o755, "permissions": "drwxr-xr-x", "owner": "user", "group": "user",
            "modified_at": null, "symlink_target": null});
        assert_eq!(serde_json::to_value(&e).unwrap(), before);
        assert_eq!(
            serde_json::to_value(EntryList { entries: vec![e] }).unwrap(),
            json!({ "entries": [before] })
        );
        assert_eq!(
            serde_json::to_value(Written {
                path: "/tmp/x".into(),
                size: 3
            })
            .unwrap()
            .to_string(),
            r#"{"path":"/tmp/x","size":3}"#
        );
        // Before, the agent's body was passed through a `Value`.
        let agent = br#"{"entries":2,"bytes":10}"#;
        let before = serde_json::from_slice::<Value>(agent).unwrap().to_string();
        let x = serde_json::from_slice::<Extracted>(agent).ok();
        assert_eq!(serde_json::to_value(&x).unwrap().to_string(), before);
        let none: Option<Extracted> = serde_json::from_slice(b"oops").ok();
        assert_eq!(serde_json::to_value(none).unwrap(), Value::Null);
        for (k, s) in [
            (EntryType::File, "file"),
            (EntryType::Symlink, "symlink"),
            (EntryType::Other, "other"),
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), s);
        }
    }
}

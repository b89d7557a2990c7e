//! The E2B volume content API (SDK 2.63's `Volume.read_file`, `write_file`, `list`,
//! `make_dir`, `get_info`, `exists`, `update_metadata`, `remove`) on Paddock's volumes, as
//! the SDK calls it (`docs/volumes.md` has the table):
//!
//! | route | answer |
//! |---|---|
//! | `GET /volumecontent/{id}/path?path=` | 200 entry |
//! | `GET /volumecontent/{id}/dir?path=&depth=` | 200 `[entry]` (depth 1 by default) |
//! | `POST /volumecontent/{id}/dir?path=&uid=&gid=&mode=&force=` | 201 entry |
//! | `GET /volumecontent/{id}/file?path=` | 200 the bytes |
//! | `PUT /volumecontent/{id}/file?path=&uid=&gid=&mode=&force=` (body: the bytes) | 201 entry |
//! | `PATCH /volumecontent/{id}/path?path=` `{"uid"?, "gid"?, "mode"?}` | 200 entry |
//! | `DELETE /volumecontent/{id}/path?path=` | 204 |
//!
//! An entry is `{"name", "type": "file"|"directory"|"symlink"|"unknown", "path", "size",
//! "mode", "uid", "gid", "atime", "mtime", "ctime", "target"?}`; errors are
//! `{"code": "<stable code>", "message"}` (this API's codes are strings).
//!
//! **Authorisation** is the volume's token, `Authorization: Bearer <token>`, which
//! `Volume.create`/`get_info` return: `HMAC(server secret, "volume:<id>")`, so it names one
//! volume and cannot be forged or used for another. No API key is needed (the SDK sends
//! none). The files are reached on the host through [`paddock_runtime::volfs`], which never
//! follows a sandbox's symlink out of the volume.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use paddock_runtime::volfs::{Attrs, VolFsError, VolumeFiles};
use serde::Deserialize;

use super::wire::{ContentErrorBody, VolumeEntry};
use paddock_service::state::AppState;

/// Largest JSON body of `PATCH` (three numbers).
const MAX_PATCH_BODY: usize = 4096;
/// Bytes per chunk of a download.
const READ_CHUNK: usize = 256 * 1024;

/// An error of this API: a status and a string code.
#[derive(Debug)]
pub(super) struct ContentError(StatusCode, &'static str, String);

impl IntoResponse for ContentError {
    fn into_response(self) -> Response {
        let message = if self.0 == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(detail = %self.2, "volume content");
            "internal error"
        } else {
            &self.2
        };
        let body = ContentErrorBody {
            code: self.1,
            message,
        };
        match serde_json::to_value(&body) {
            Ok(v) => (self.0, axum::Json(v)).into_response(),
            Err(_) => self.0.into_response(),
        }
    }
}

impl From<VolFsError> for ContentError {
    fn from(e: VolFsError) -> Self {
        let msg = e.to_string();
        match e {
            VolFsError::NotFound(_) => ContentError(StatusCode::NOT_FOUND, "not_found", msg),
            VolFsError::Exists(_) => ContentError(StatusCode::CONFLICT, "conflict", msg),
            VolFsError::Invalid(_) => ContentError(StatusCode::BAD_REQUEST, "invalid_request", msg),
            VolFsError::Full => ContentError(StatusCode::INSUFFICIENT_STORAGE, "volume_full", msg),
            VolFsError::Io { .. } => {
                ContentError(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}

type CResult<T> = Result<T, ContentError>;

fn bad(msg: impl Into<String>) -> ContentError {
    ContentError(StatusCode::BAD_REQUEST, "invalid_request", msg.into())
}

/// The query every route takes. Unknown parameters are refused so a typo is not ignored.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    path: Option<String>,
    depth: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    force: Option<bool>,
}

impl Params {
    fn path(&self) -> CResult<&str> {
        self.path
            .as_deref()
            .ok_or_else(|| bad("the query parameter path is required"))
    }
    fn attrs(&self) -> Attrs {
        Attrs {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        }
    }
}

/// Checks the bearer token against volume `id`'s and opens its files.
async fn open(state: &AppState, headers: &HeaderMap, id: &str) -> CResult<VolumeFiles> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ContentError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the volume content API needs the volume's token as Authorization: Bearer <token> (Volume.create or Volume.get_info returns it)".into(),
        ));
    };
    let want = super::access_token(state, &format!("volume:{id}"));
    if !super::ct_eq(presented.as_bytes(), want.as_bytes()) {
        return Err(ContentError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "the token is not volume {}'s",
                paddock_service::state::truncate(id, 64)
            ),
        ));
    }
    let rt = state.runtime.clone();
    let id = id.to_owned();
    blocking(move || rt.volume_files(&id)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolFsError> + Send + 'static,
) -> CResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ContentError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("volume task: {e}"),
            )
        })?
        .map_err(ContentError::from)
}

/// `body` as JSON with `status`, through `serde_json::Value` (keys sorted, as the `json!`
/// bodies the wire types replaced).
fn json_at<T: serde::Serialize>(status: StatusCode, body: &T) -> CResult<Response> {
    let v = serde_json::to_value(body).map_err(|e| {
        ContentError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("response body: {e}"),
        )
    })?;
    Ok((status, axum::Json(v)).into_response())
}

fn query(q: Result<Query<Params>, axum::extract::rejection::QueryRejection>) -> CResult<Params> {
    q.map(|Query(p)| p)
        .map_err(|e| bad(format!("bad query: {}", e.body_text())))
}

/// `GET /volumecontent/{id}/path`: one entry's metadata.
pub(super) async fn stat(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path()?.to_owned();
    let vf = open(&state, &headers, &id).await?;
    let e = blocking(move || vf.stat(&path)).await?;
    json_at(StatusCode::OK, &VolumeEntry::from(&e))
}

/// `GET /volumecontent/{id}/dir`: a directory's entries, `depth` levels down.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path.clone().unwrap_or_else(|| "/".into());
    let depth = p.depth.unwrap_or(1);
    let vf = open(&state, &headers, &id).await?;
    let entries = blocking(move || vf.list(&path, depth)).await?;
    json_at(
        StatusCode::OK,
        &entries.iter().map(VolumeEntry::from).collect::<Vec<_>>(),
    )
}

/// `POST /volumecontent/{id}/dir`: makes a directory (`force`: with its parents, and an
/// existing one is no error).
pub(super) async fn make_dir(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path()?.to_owned();
    let (attrs, force) = (p.attrs(), p.force.unwrap_or(false));
    let vf = open(&state, &headers, &id).await?;
    let e = blocking(move || vf.make_dir(&path, attrs, force)).await?;
    json_at(StatusCode::CREATED, &VolumeEntry::from(&e))
}

/// `GET /volumecontent/{id}/file`: a file's bytes, streamed.
pub(super) async fn read(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path()?.to_owned();
    let vf = open(&state, &headers, &id).await?;
    let (file, size) = blocking(move || vf.open_file(&path)).await?;
    let file = tokio::fs::File::from_std(file);
    let stream = futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; READ_CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .body(Body::from_stream(stream))
        .expect("static headers are valid"))
}

/// `PUT /volumecontent/{id}/file`: writes the body as the file (created or replaced whole;
/// `force`: missing directories are made). The old file stays until the body is complete.
pub(super) async fn write(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path()?.to_owned();
    let (attrs, force) = (p.attrs(), p.force.unwrap_or(false));
    let vf = open(&state, req.headers(), &id).await?;
    let mut upload = blocking(move || vf.begin_write(&path, attrs, force)).await?;
    // Chunks go to a blocking writer through a small queue, so a slow disk slows the client
    // rather than filling memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            upload.write(&chunk)?;
        }
        Ok::<_, VolFsError>(upload)
    });
    let mut body = req.into_body().into_data_stream();
    let mut failed: Option<ContentError> = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // The writer stopped on an error, which it returns below.
                }
            }
            Err(e) => {
                failed = Some(bad(format!("reading the request body: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let upload = writer
        .await
        .map_err(|e| {
            ContentError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("volume task: {e}"),
            )
        })?
        .map_err(ContentError::from)?;
    if let Some(e) = failed {
        return Err(e); // Dropping the upload removes its file; the old one is untouched.
    }
    let e = blocking(move || upload.commit()).await?;
    json_at(StatusCode::CREATED, &VolumeEntry::from(&e))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAttrs {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

/// `PATCH /volumecontent/{id}/path`: sets owner and mode.
pub(super) async fn patch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path()?.to_owned();
    let vf = open(&state, req.headers(), &id).await?;
    let raw = axum::body::to_bytes(req.into_body(), MAX_PATCH_BODY)
        .await
        .map_err(|_| {
            bad(format!(
                "the body is at most {MAX_PATCH_BODY} bytes of JSON"
            ))
        })?;
    let b: NewAttrs = if raw.iter().all(u8::is_ascii_whitespace) {
        NewAttrs {
            uid: None,
            gid: None,
            mode: None,
        }
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            bad(format!(
                "the body must be {{\"uid\"?, \"gid\"?, \"mode\"?}}: {e}"
            ))
        })?
    };
    let attrs = Attrs {
        uid: b.uid,
        gid: b.gid,
        mode: b.mode,
    };
    let e = blocking(move || vf.set_attrs(&path, attrs)).await?;
    json_at(StatusCode::OK, &VolumeEntry::from(&e))
}

/// `DELETE /volumecontent/{id}/path`: removes a file, a symlink or a whole directory.
pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> CResult<Response> {
    let p = query(q)?;
    let path = p.path()?.to_owned();
    if paddock_runtime::volfs::is_root(&path) {
        return Err(bad(
            "the volume's root cannot be removed (destroy the volume)",
        ));
    }
    let vf = open(&state, &headers, &id).await?;
    blocking(move || vf.remove(&path)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

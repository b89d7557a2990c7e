//! The HTTP API: `/execute` (NDJSON stream), `/contexts` (create, list, restart, interrupt,
//! delete) and `/health`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex as AsyncMutex, Notify, OwnedMutexGuard, mpsc, watch};
use tokio::time::Instant;

use crate::kernel::{Kernel, Outcome, Sink};
use crate::wire::{Event, now_ns};
use crate::{Error, LANGUAGES, Language, MAX_CODE_BYTES, MAX_CONTEXTS, MAX_ENV_VARS};

/// Most bytes of a request body: the code's limit plus room for JSON escapes and fields.
const MAX_BODY: usize = 2 * MAX_CODE_BYTES + 64 * 1024;

/// Server options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The working directory of contexts created without one.
    pub default_cwd: String,
    /// Whether to start the default Python context's kernel at once.
    pub prestart_python: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_cwd: "/home/user".to_string(),
            prestart_python: true,
        }
    }
}

struct Context {
    id: String,
    language: Language,
    cwd: String,
    kernel: Arc<AsyncMutex<Option<Kernel>>>,
    /// Interrupts the running execution (restart, delete, `/interrupt`).
    cancel: Arc<Notify>,
}

struct Shared {
    opts: Options,
    contexts: Mutex<HashMap<String, Arc<Context>>>,
    defaults: Mutex<HashMap<Language, String>>,
    /// The outcome of the default Python kernel's start at the server's start (`GET /ready`):
    /// `None` while it starts, then `Ok` or the error. `Some(Ok)` at once without a prestart.
    prestarted: watch::Sender<Option<Result<(), String>>>,
}

type St = State<Arc<Shared>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A 4xx/5xx answer: `{"code", "message"}`.
struct Fail(StatusCode, &'static str, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.1, "message": self.2});
        (self.0, axum::Json(body)).into_response()
    }
}

#[derive(Serialize)]
struct ContextView {
    id: String,
    language: &'static str,
    cwd: String,
}

impl Context {
    fn view(&self) -> ContextView {
        ContextView {
            id: self.id.clone(),
            language: self.language.name(),
            cwd: self.cwd.clone(),
        }
    }
}

impl Shared {
    fn create(&self, language: Language, cwd: Option<String>) -> Result<Arc<Context>, Fail> {
        let mut all = lock(&self.contexts);
        if all.len() >= MAX_CONTEXTS {
            return Err(Fail(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_contexts",
                format!("at most {MAX_CONTEXTS} contexts; delete one first"),
            ));
        }
        let ctx = Arc::new(Context {
            id: uuid::Uuid::new_v4().to_string(),
            language,
            cwd: cwd.unwrap_or_else(|| self.opts.default_cwd.clone()),
            kernel: Arc::new(AsyncMutex::new(None)),
            cancel: Arc::new(Notify::new()),
        });
        all.insert(ctx.id.clone(), ctx.clone());
        Ok(ctx)
    }

    fn get(&self, id: &str) -> Result<Arc<Context>, Fail> {
        lock(&self.contexts).get(id).cloned().ok_or_else(|| {
            Fail(
                StatusCode::NOT_FOUND,
                "context_not_found",
                format!("context {id:?} not found"),
            )
        })
    }

    /// The default context of `language`, created on first use.
    fn default_for(&self, language: Language) -> Result<Arc<Context>, Fail> {
        let mut defaults = lock(&self.defaults);
        if let Some(id) = defaults.get(&language)
            && let Some(c) = lock(&self.contexts).get(id)
        {
            return Ok(c.clone());
        }
        let ctx = self.create(language, None)?;
        defaults.insert(language, ctx.id.clone());
        Ok(ctx)
    }
}

/// Locks a context's kernel, starting it if it is not running.
async fn ready(ctx: &Context) -> Result<OwnedMutexGuard<Option<Kernel>>, Error> {
    let mut guard = ctx.kernel.clone().lock_owned().await;
    if guard.is_none() {
        *guard = Some(Kernel::start(ctx.language, &ctx.cwd).await?);
    }
    Ok(guard)
}

/// The API's routes, with the default Python context created (and its kernel starting when
/// `opts.prestart_python`).
pub fn router(opts: Options) -> Router {
    let shared = Arc::new(Shared {
        opts,
        contexts: Mutex::new(HashMap::new()),
        defaults: Mutex::new(HashMap::new()),
        prestarted: watch::Sender::new(None),
    });
    match shared.default_for(Language::Python) {
        Ok(ctx) if shared.opts.prestart_python => {
            let done = shared.prestarted.clone();
            tokio::spawn(async move {
                let outcome = ready(&ctx).await.map(drop).map_err(|e| {
                    tracing::warn!("default python context: {e}");
                    e.to_string()
                });
                done.send_replace(Some(outcome));
            });
        }
        _ => {
            shared.prestarted.send_replace(Some(Ok(())));
        }
    }
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(prestarted))
        .route("/execute", post(execute))
        .route("/contexts", get(list).post(create))
        .route("/contexts/{id}", delete(remove))
        .route("/contexts/{id}/restart", post(restart))
        .route("/contexts/{id}/interrupt", post(interrupt))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// `GET /ready`: answers once the default Python kernel started with the server has started
/// (`200 OK`) or failed to (`200` naming the error: the server itself is up, and executions
/// report the kernel's failure). The template's ready check polls it, so a sandbox, pooled or
/// not, is ready only when its first execution need not wait for a kernel.
async fn prestarted(State(s): St) -> String {
    let mut rx = s.prestarted.subscribe();
    match rx.wait_for(Option::is_some).await.map(|v| v.clone()) {
        Ok(Some(Err(e))) => format!("OK (the default python kernel did not start: {e})"),
        _ => "OK".to_string(),
    }
}

/// Serves the API on `0.0.0.0:port` until the process ends.
///
/// Returns `Ok` on SIGTERM or SIGINT without waiting for running executions: the caller then
/// drops the runtime, which drops every context and so kills its kernel (`kill_on_drop`), so
/// no kernel outlives the server.
pub async fn serve(port: u16, opts: Options) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            what: format!("binding {addr}"),
            source,
        })?;
    let watch = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|source| Error::Io {
            what: format!("watching {name}"),
            source,
        })
    };
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    tokio::select! {
        r = axum::serve(listener, router(opts)).into_future() => r.map_err(|source| Error::Io {
            what: "serving".to_string(),
            source,
        }),
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Fail> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "code_too_large",
                format!(
                    "request body over {MAX_BODY} bytes (code is limited to {MAX_CODE_BYTES} bytes)"
                ),
            )
        } else {
            Fail(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| Fail(StatusCode::BAD_REQUEST, "bad_request", e.to_string()));
    }
    serde_json::from_slice(&body).map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        )
    })
}

fn bad_language(name: &str) -> Fail {
    Fail(
        StatusCode::BAD_REQUEST,
        "unknown_language",
        format!("unknown language {name:?}; supported: {LANGUAGES}"),
    )
}

#[derive(Deserialize)]
struct ExecuteBody {
    code: Option<String>,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    env_vars: Option<HashMap<String, String>>,
    /// Seconds; not sent by the E2B SDKs (they time out on their side, which closes the
    /// stream and so interrupts the kernel too).
    #[serde(default)]
    timeout: Option<f64>,
}

fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

async fn execute(State(s): St, body: Result<Bytes, BytesRejection>) -> Response {
    match execute_inner(s, body).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn execute_inner(
    s: Arc<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Fail> {
    let req: ExecuteBody = parse_body(body)?;
    let Some(code) = req.code else {
        return Err(Fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "\"code\" is required".into(),
        ));
    };
    if code.len() > MAX_CODE_BYTES {
        return Err(Fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "code_too_large",
            format!(
                "code is {} bytes, over the limit of {MAX_CODE_BYTES}",
                code.len()
            ),
        ));
    }
    let env = req.env_vars.unwrap_or_default();
    if env.len() > MAX_ENV_VARS {
        return Err(Fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("at most {MAX_ENV_VARS} env_vars"),
        ));
    }
    if let Some(k) = env.keys().find(|k| !valid_env_name(k)) {
        return Err(Fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid environment variable name {k:?}"),
        ));
    }
    let timeout = match req.timeout {
        Some(t) if !t.is_finite() || !(0.0..=86_400.0).contains(&t) => {
            return Err(Fail(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "timeout must be between 0 and 86400 seconds (0: none)".into(),
            ));
        }
        Some(t) if t > 0.0 => Some(Duration::from_secs_f64(t)),
        _ => None,
    };
    let language = match req.language.as_deref() {
        Some(l) if !l.is_empty() => Some(Language::parse(Some(l)).ok_or_else(|| bad_language(l))?),
        _ => None,
    };
    let ctx = match req.context_id.as_deref() {
        Some(id) if !id.is_empty() => {
            let ctx = s.get(id)?;
            if let Some(l) = language
                && l != ctx.language
            {
                return Err(Fail(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "context {id:?} is {}, not {}",
                        ctx.language.name(),
                        l.name()
                    ),
                ));
            }
            ctx
        }
        _ => s.default_for(language.unwrap_or(Language::Python))?,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut guard = ready(&ctx).await.map_err(|e| {
        Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "kernel_unavailable",
            e.to_string(),
        )
    })?;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let language = ctx.language;
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        let mut sink = Sink::new(tx);
        let Some(kernel) = guard.as_mut() else { return };
        let mut outcome = Outcome::Done;
        let restore = if env.is_empty() {
            None
        } else {
            let (set, restore) = env_code(language, &env);
            outcome = kernel.execute(&set, true, &mut sink, None, &cancel).await;
            Some(restore)
        };
        if matches!(outcome, Outcome::Done) {
            outcome = kernel
                .execute(&code, false, &mut sink, deadline, &cancel)
                .await;
        }
        if let (Some(restore), Outcome::Done) = (restore, &outcome) {
            outcome = kernel
                .execute(&restore, true, &mut sink, None, &cancel)
                .await;
        }
        if let Outcome::Broken(reason) = outcome {
            if let Some(k) = guard.take() {
                k.shutdown().await;
            }
            sink.send(Event::Stderr {
                text: format!(
                    "paddock: {reason}; the kernel was restarted and its state is lost\n"
                ),
                timestamp: now_ns(),
            })
            .await;
            // Start the new kernel now, so the context is usable at once.
            match Kernel::start(language, &ctx.cwd).await {
                Ok(k) => *guard = Some(k),
                Err(e) => tracing::warn!("restarting a kernel: {e}"),
            }
        }
        sink.send(Event::EndOfExecution).await;
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|ev| {
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Code that sets `env` in the kernel, and code that restores what it replaced.
fn env_code(language: Language, env: &HashMap<String, String>) -> (String, String) {
    // A JSON object is a valid Python dict and JavaScript object literal.
    let json = serde_json::to_string(env).unwrap_or_else(|_| "{}".into());
    match language {
        Language::Python => (
            format!(
                "import os as __pdk_os\n__pdk_saved = {{k: __pdk_os.environ.get(k) for k in {json}}}\n__pdk_os.environ.update({json})"
            ),
            "for __pdk_k, __pdk_v in __pdk_saved.items():\n    if __pdk_v is None: __pdk_os.environ.pop(__pdk_k, None)\n    else: __pdk_os.environ[__pdk_k] = __pdk_v\ndel __pdk_saved".to_string(),
        ),
        Language::JavaScript => (
            format!(
                "globalThis.__pdkSaved = {{}}; for (const [k, v] of Object.entries({json})) {{ globalThis.__pdkSaved[k] = process.env[k]; process.env[k] = v; }}"
            ),
            "for (const [k, v] of Object.entries(globalThis.__pdkSaved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; } delete globalThis.__pdkSaved;".to_string(),
        ),
        Language::Bash => {
            let quote = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
            let mut set = String::new();
            let mut restore = String::new();
            for (k, v) in env {
                set.push_str(&format!("__pdk_old_{k}=\"${{{k}+set:${k}}}\"; export {k}={}\n", quote(v)));
                restore.push_str(&format!(
                    "if [ -n \"$__pdk_old_{k}\" ]; then export {k}=\"${{__pdk_old_{k}#set:}}\"; else unset {k}; fi; unset __pdk_old_{k}\n"
                ));
            }
            (set, restore)
        }
    }
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
}

async fn create(State(s): St, body: Result<Bytes, BytesRejection>) -> Response {
    let run = async {
        let req: CreateBody = parse_body(body)?;
        let language = Language::parse(req.language.as_deref())
            .ok_or_else(|| bad_language(req.language.as_deref().unwrap_or_default()))?;
        if let Some(cwd) = &req.cwd
            && !cwd.starts_with('/')
        {
            return Err(Fail(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cwd {cwd:?} must be an absolute path"),
            ));
        }
        let ctx = s.create(language, req.cwd.filter(|c| !c.is_empty()))?;
        if let Err(e) = ready(&ctx).await {
            lock(&s.contexts).remove(&ctx.id);
            return Err(Fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "kernel_unavailable",
                e.to_string(),
            ));
        }
        Ok(axum::Json(ctx.view()))
    };
    match run.await {
        Ok(r) => r.into_response(),
        Err(f) => f.into_response(),
    }
}

async fn list(State(s): St) -> Response {
    let all: Vec<ContextView> = lock(&s.contexts).values().map(|c| c.view()).collect();
    axum::Json(all).into_response()
}

async fn remove(State(s): St, Path(id): Path<String>) -> Response {
    let Some(ctx) = lock(&s.contexts).remove(&id) else {
        return s
            .get(&id)
            .err()
            .map(IntoResponse::into_response)
            .unwrap_or_default();
    };
    lock(&s.defaults).retain(|_, v| *v != id);
    ctx.cancel.notify_waiters();
    if let Some(k) = ctx.kernel.lock().await.take() {
        k.shutdown().await;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn restart(State(s): St, Path(id): Path<String>) -> Response {
    let ctx = match s.get(&id) {
        Ok(c) => c,
        Err(f) => return f.into_response(),
    };
    ctx.cancel.notify_waiters();
    let mut guard = ctx.kernel.clone().lock_owned().await;
    if let Some(k) = guard.take() {
        k.shutdown().await;
    }
    match Kernel::start(ctx.language, &ctx.cwd).await {
        Ok(k) => {
            *guard = Some(k);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "kernel_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

/// Interrupts the context's running execution, if any (its stream gets a `KeyboardInterrupt`
/// or the language's equivalent, then ends).
async fn interrupt(State(s): St, Path(id): Path<String>) -> Response {
    match s.get(&id) {
        Ok(ctx) => {
            ctx.cancel.notify_waiters();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(f) => f.into_response(),
    }
}

use futures::StreamExt as _;

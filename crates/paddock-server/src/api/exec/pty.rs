//! `GET /v1/sandboxes/{id}/pty`: an interactive shell on a PTY over WebSocket. Closing the
//! socket kills the shell.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse as _, Response};
use connectrpc::ConnectError;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::__buffa::oneof::process_input::Input;
use paddock_envd::process::{
    PTY, ProcessConfig, ProcessInput, SendInputRequest, SendSignalRequest, Signal, StartRequest,
    UpdateRequest,
};
use paddock_runtime::Sandbox;
use paddock_store::{ExecRecord, SandboxRecord, now_ms};
use serde_json::Value;
use tokio::sync::mpsc;

use super::stream::to_end;
use super::wire::{ProcessEvent, PtyQuery};
use super::{Ended, command_line, record_end, selector};
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use paddock_service::state::AppState;

/// Interactive terminal over WebSocket
///
/// Query: `cmd` (default an interactive login bash), `cols`, `rows`, `user`, `cwd`, and
/// `api_key` for browsers that cannot set headers on a WebSocket (keys in URLs end up in
/// logs; prefer the header or the console's session cookie, which needs the server's own
/// `Origin`). Closing the socket kills the shell.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/pty",
    operation_id = "pty",
    tag = "exec",
    params(crate::api::sandbox_view::SandboxIdPath, PtyQuery),
    responses(
        (status = 101, description = "WebSocket: binary frames carry terminal bytes both ways; client text frames {type:resize,cols,rows} or {type:input,data}; the server ends with a text frame {type:exit,exit_code,status,error} (or {type:error,message} when the shell cannot start)", body = ProcessEvent),
        (status = 400, description = "Bad input (cols or rows outside 1 to 1000)"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn pty(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    RawQuery(q): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let params: BTreeMap<String, String> = form_urlencoded_pairs(q.as_deref().unwrap_or(""))
        .into_iter()
        .collect();
    let header_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            let a = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = a.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let key = header_key.or(params.get("api_key").map(String::as_str));
    // The console's session cookie when no key is given; a WebSocket is a GET, so its
    // Origin must be our own (cross-site WebSocket hijacking).
    let caller = match key {
        Some(_) => authenticate(&state, key).await?,
        None => match crate::session::from_cookie(&state, &axum::http::Method::GET, &headers, true)
            .await
        {
            Some(r) => r?,
            None => authenticate(&state, None).await?,
        },
    };
    // The role is checked before anything else is (even the upgrade headers).
    crate::roles::admit(&extensions, &caller)?;
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let (rec, sbx) = state.sandbox_for(&caller, &id).await?;
    let num = |k: &str, d: u32| -> ApiResult<u32> {
        match params.get(k) {
            None => Ok(d),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::BadRequest(format!("{k} must be 1 to 1000"))),
        }
    };
    let (cols, rows) = (num("cols", 80)?, num("rows", 24)?);
    let argv: Vec<String> = match params.get("cmd") {
        Some(c) if !c.is_empty() => vec!["/bin/bash".into(), "-l".into(), "-c".into(), c.clone()],
        _ => vec!["/bin/bash".into(), "-l".into()],
    };
    let user = params.get("user").cloned();
    let cwd = params.get("cwd").cloned();
    state
        .audit(
            Some(&caller),
            "pty.open",
            Some(&id),
            "ok",
            Some(command_line(&argv)),
        )
        .await;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = run_pty(state, rec, sbx, socket, argv, user, cwd, cols, rows).await {
            tracing::debug!("pty session: {e}");
        }
    }))
}

#[allow(clippy::too_many_arguments)] // The session's parameters, parsed once in `pty`.
async fn run_pty(
    state: Arc<AppState>,
    rec: SandboxRecord,
    sbx: Arc<Sandbox>,
    mut socket: WebSocket,
    argv: Vec<String>,
    user: Option<String>,
    cwd: Option<String>,
    cols: u32,
    rows: u32,
) -> Result<(), String> {
    let size = |cols, rows| PTY {
        size: paddock_envd::process::pty::Size {
            cols,
            rows,
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let req = StartRequest {
        process: ProcessConfig {
            cmd: argv[0].clone(),
            args: argv[1..].to_vec(),
            envs: [("TERM".to_owned(), "xterm-256color".to_owned())]
                .into_iter()
                .collect(),
            cwd,
            ..Default::default()
        }
        .into(),
        pty: Some(size(cols, rows)).into(),
        stdin: Some(true),
        ..Default::default()
    };
    let opts = sbx.call_options(user.as_deref());
    let stream = match sbx.agent.process.start_with_options(req, opts).await {
        Ok(s) => s,
        Err(e) => {
            let msg = ProcessEvent::Error {
                message: e.message.clone().unwrap_or_default(),
            };
            let _ = socket.send(Message::text(msg.to_value().to_string())).await;
            return Err(e.to_string());
        }
    };
    let mut rx = pump!(stream);
    let pid = match rx.recv().await {
        Some(Ok(Event::Start(s))) => s.pid,
        _ => return Err("the shell did not start".into()),
    };
    let history_id = state
        .store
        .insert_exec(&ExecRecord {
            id: 0,
            sandbox_id: rec.id.clone(),
            at: now_ms(),
            command: format!("[pty] {}", command_line(&argv)),
            pid: Some(pid),
            exit_code: None,
            status: "running".into(),
            duration_ms: None,
        })
        .await
        .ok();
    let started = Instant::now();
    let mut end = Ended::default();
    let mut seq = 0;
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { break };
                match item {
                    Ok(Event::Data(d)) => {
                        if let Some(Output::Pty(b) | Output::Stdout(b) | Output::Stderr(b)) = d.output
                            && socket.send(Message::binary(b)).await.is_err()
                        {
                            break;
                        }
                    }
                    other => {
                        if let (Some(ProcessEvent::End(line)), Some(e)) = to_end(other, &mut seq) {
                            let v = ProcessEvent::Exit(line).to_value();
                            let _ = socket.send(Message::text(v.to_string())).await;
                            let _ = socket.send(Message::Close(None)).await;
                            end = e;
                            break;
                        }
                    }
                }
            }
            msg = socket.recv() => {
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        let req = SendInputRequest {
                            process: selector(pid).into(),
                            input: ProcessInput { input: Some(Input::Pty(b.to_vec())), ..Default::default() }.into(),
                            ..Default::default()
                        };
                        if let Err(e) = sbx.agent.process.send_input_with_options(req, sbx.call_options(user.as_deref())).await {
                            tracing::debug!("pty input: {e}");
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        if v["type"] == "resize" {
                            let c = v["cols"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(cols).clamp(1, 1000);
                            let r = v["rows"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(rows).clamp(1, 1000);
                            let req = UpdateRequest { process: selector(pid).into(), pty: Some(size(c, r)).into(), ..Default::default() };
                            let _ = sbx.agent.process.update_with_options(req, sbx.call_options(user.as_deref())).await;
                        } else if v["type"] == "input" && let Some(s) = v["data"].as_str() {
                            let req = SendInputRequest {
                                process: selector(pid).into(),
                                input: ProcessInput { input: Some(Input::Pty(s.as_bytes().to_vec())), ..Default::default() }.into(),
                                ..Default::default()
                            };
                            let _ = sbx.agent.process.send_input_with_options(req, sbx.call_options(user.as_deref())).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    // The client left: the shell goes with it.
                    Some(Err(_)) | None => {
                        let req = SendSignalRequest { process: selector(pid).into(), signal: Signal::SIGNAL_SIGKILL.into(), ..Default::default() };
                        let _ = sbx.agent.process.send_signal_with_options(req, sbx.call_options(user.as_deref())).await;
                        end.status = "signal: killed (client disconnected)".into();
                        break;
                    }
                }
            }
        }
    }
    record_end(
        &state,
        &rec,
        history_id,
        "",
        Some(pid),
        &end,
        started.elapsed(),
        false,
    )
    .await;
    Ok(())
}

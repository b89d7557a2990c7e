//! `paddock shell`: an interactive terminal in a sandbox over the PTY WebSocket.
//!
//! The local terminal is put in raw mode for the session and restored on every way out: a
//! normal end, an error, SIGTERM/SIGHUP, and a panic (a drop guard plus a panic hook). Binary
//! frames carry terminal bytes both ways; window size changes (SIGWINCH) are sent as text
//! `{"type":"resize","cols","rows"}`; the server ends with text
//! `{"type":"exit","exit_code","status"}` and closes.

use std::io::{IsTerminal, Read};
use std::sync::{Mutex, Once};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};

use super::Conn;
use super::api::{Api, ApiError, USER_AGENT};
use super::exec::End;

/// `paddock shell`.
#[derive(Args, Debug)]
pub(crate) struct ShellArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// Run as this user.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// The command to run in the terminal.
    #[arg(long, default_value = "/bin/bash -l")]
    pub(crate) cmd: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// The WebSocket URL of a sandbox's terminal: `ws(s)://.../v1/sandboxes/{id}/pty?...`.
pub(crate) fn pty_url(
    base: &Url,
    id: &str,
    cmd: &str,
    cols: u16,
    rows: u16,
    user: Option<&str>,
) -> Result<Url> {
    let mut url = super::api::join_url(base, &["v1", "sandboxes", id, "pty"]);
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| anyhow!("cannot make a WebSocket URL of {base}"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("cmd", cmd);
        q.append_pair("cols", &cols.to_string());
        q.append_pair("rows", &rows.to_string());
        if let Some(u) = user {
            q.append_pair("user", u);
        }
    }
    Ok(url)
}

/// The resize message.
pub(crate) fn resize_message(cols: u16, rows: u16) -> String {
    serde_json::json!({ "type": "resize", "cols": cols, "rows": rows }).to_string()
}

/// A text message from the server.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Control {
    Exit(End),
    Error {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    #[serde(other)]
    Unknown,
}

/// The local terminal's size (columns, rows), if stdout or stdin is a terminal.
fn term_size() -> Option<(u16, u16)> {
    let ws = tcgetwinsize(std::io::stdout())
        .or_else(|_| tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The terminal settings to put back, shared with the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

/// Puts the saved terminal settings back (once; later calls do nothing).
fn restore_terminal() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &t);
    }
}

/// Raw mode of the local terminal while it lives.
struct RawMode;

impl RawMode {
    /// Enters raw mode if stdin is a terminal (`None` otherwise).
    fn enter() -> Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let orig = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut raw = orig.clone();
        raw.make_raw();
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(orig);
        PANIC_HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                prev(info);
            }));
        });
        let guard = RawMode;
        tcsetattr(&stdin, OptionalActions::Now, &raw).context("setting raw mode")?;
        Ok(Some(guard))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled) into a channel;
/// the channel closes at end of input.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    rx
}

/// A failed WebSocket handshake as a readable error (the API's error body when there is
/// one).
fn handshake_error(e: tungstenite::Error, base: &Url) -> anyhow::Error {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            ApiError::from_body(status, body).into()
        }
        tungstenite::Error::Io(e) => anyhow!("cannot connect to {base}: {e}"),
        other => anyhow!("opening a terminal on {base} failed: {other}"),
    }
}

/// Opens the terminal; the result is the shell's exit code.
pub(crate) async fn run(a: ShellArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let (cols, rows) = term_size().unwrap_or((80, 24));
    let url = pty_url(api.base(), &a.id, &a.cmd, cols, rows, a.user.as_deref())?;
    let mut req = url
        .as_str()
        .into_client_request()
        .context("building the WebSocket request")?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", api.key()))
        .context("the API key is not a valid header value")?;
    req.headers_mut().insert(header::AUTHORIZATION, auth);
    req.headers_mut()
        .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| handshake_error(e, api.base()))?;
    let (mut tx, mut rx) = ws.split();

    let mut winch = signal(SignalKind::window_change()).context("SIGWINCH handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let interactive = std::io::stdin().is_terminal();
    let raw = RawMode::enter()?;
    let mut input = stdin_reader();
    let mut input_open = true;
    let mut out = tokio::io::stdout();
    let mut exit: Option<i32> = None;
    let mut server_error: Option<anyhow::Error> = None;

    let res: Result<()> = async {
        loop {
            tokio::select! {
                chunk = input.recv(), if input_open => match chunk {
                    Some(b) => tx.send(Message::binary(b)).await.context("sending input")?,
                    None => {
                        input_open = false;
                        if !interactive {
                            // End of piped input: ^D, so the remote shell sees end of input.
                            tx.send(Message::binary(vec![4u8])).await.context("sending input")?;
                        }
                    }
                },
                _ = winch.recv() => {
                    if let Some((c, r)) = term_size() {
                        tx.send(Message::text(resize_message(c, r))).await.context("sending resize")?;
                    }
                }
                _ = term.recv() => bail!("terminated"),
                _ = hup.recv() => bail!("hung up"),
                msg = rx.next() => match msg {
                    None | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Err(e)) => {
                        if exit.is_some() {
                            return Ok(());
                        }
                        return Err(anyhow!("the terminal connection broke: {e}"));
                    }
                    Some(Ok(Message::Binary(b))) => {
                        // A closed stdout ends the session like a closed terminal would.
                        out.write_all(&b).await.context("writing to stdout")?;
                        out.flush().await.context("writing to stdout")?;
                    }
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<Control>(&t) {
                        Ok(Control::Exit(end)) => exit = Some(end.exit_code()),
                        Ok(Control::Error { code, message }) => {
                            server_error = Some(ApiError {
                                status: 0,
                                code: code.unwrap_or_else(|| "error".into()),
                                message: message.unwrap_or_else(|| "the terminal failed".into()),
                            }.into());
                        }
                        Ok(Control::Unknown) | Err(_) => {}
                    },
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    .await;
    drop(raw);
    let _ = tx.close().await;
    res?;
    if let Some(e) = server_error {
        return Err(e);
    }
    exit.ok_or_else(|| anyhow!("the connection closed before the shell exited"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let base = Url::parse("http://127.0.0.1:7070").unwrap();
        let u = pty_url(&base, "sbx_1", "/bin/bash -l", 120, 40, Some("root")).unwrap();
        assert_eq!(
            u.as_str(),
            "ws://127.0.0.1:7070/v1/sandboxes/sbx_1/pty?cmd=%2Fbin%2Fbash+-l&cols=120&rows=40&user=root"
        );
        let base = Url::parse("https://p.example/x/").unwrap();
        let u = pty_url(&base, "sbx_1", "sh", 80, 24, None).unwrap();
        assert_eq!(
            u.as_str(),
            "wss://p.example/x/v1/sandboxes/sbx_1/pty?cmd=sh&cols=80&rows=24"
        );
    }

    #[test]
    fn messages() {
        let v: serde_json::Value = serde_json::from_str(&resize_message(100, 30)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "resize", "cols": 100, "rows": 30})
        );
        let c: Control =
            serde_json::from_str(r#"{"type":"exit","exit_code":3,"status":"exit status 3"}"#)
                .unwrap();
        let Control::Exit(e) = c else { panic!() };
        assert_eq!(e.exit_code(), 3);
        let c: Control =
            serde_json::from_str(r#"{"type":"exit","exit_code":null,"status":"signal: hangup"}"#)
                .unwrap();
        let Control::Exit(e) = c else { panic!() };
        assert_eq!(e.exit_code(), 129);
        let c: Control = serde_json::from_str(r#"{"type":"hello"}"#).unwrap();
        assert_eq!(c, Control::Unknown);
    }

    #[test]
    fn restore_without_raw_mode_is_harmless() {
        restore_terminal();
        restore_terminal();
    }
}

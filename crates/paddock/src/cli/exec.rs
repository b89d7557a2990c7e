//! `paddock exec`: runs one command in a sandbox over the NDJSON exec stream, copying its
//! stdout and stderr to ours as they arrive and exiting with its exit code (124 when it
//! timed out, 128+N when signal N ended it, 127 or 126 when it could not start).
//!
//! SIGINT, SIGTERM or SIGHUP to `paddock exec` kills the remote command (SIGKILL to its
//! process group) before exiting 128+N; otherwise the server would keep it running, as it
//! does for any client that leaves. A failure to resolve a name in a sandbox without network
//! gets a hint (`network::hint_if_offline`).

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::api::Api;
use super::{Conn, kv_map, parse_kv, parse_timeout};

/// Largest stdin `--stdin` sends. The whole request must also fit in the server's JSON body
/// limit (`--max-json-body`, 1 MiB by default).
pub(crate) const MAX_STDIN: usize = 1024 * 1024;

/// `paddock exec`.
#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_kv)]
    pub(crate) env: Vec<(String, String)>,
    /// Working directory.
    #[arg(long)]
    pub(crate) cwd: Option<String>,
    /// Run as this user.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Kill the command after this long (90, 90s, 5m, 2h, 1d, at most 24h); exit code 124
    /// then. Without it the command has no time limit of its own (unlike the REST API's
    /// default of 60 s); the sandbox's timeout still ends it.
    #[arg(long, value_parser = parse_timeout)]
    pub(crate) timeout: Option<Duration>,
    /// Send our stdin (a file or pipe, UTF-8, at most 1 MiB) as the command's stdin.
    /// Without it the command's stdin is empty, and a pipe or file with data on ours gets
    /// a warning on stderr.
    #[arg(long)]
    pub(crate) stdin: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
    /// The command and its arguments (after `--` if they start with `-`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub(crate) cmd: Vec<String>,
}

/// The `POST /v1/sandboxes/{id}/exec` body: only the flags given.
pub(crate) fn exec_body(a: &ExecArgs, stdin: Option<String>) -> Value {
    let mut b = json!({ "cmd": a.cmd });
    if !a.env.is_empty() {
        b["env"] = json!(kv_map(&a.env));
    }
    if let Some(c) = &a.cwd {
        b["cwd"] = c.clone().into();
    }
    if let Some(u) = &a.user {
        b["user"] = u.clone().into();
    }
    // `0`: no limit of its own (the REST default would cut it off after 60 s).
    b["timeout"] = a.timeout.map_or(0, |t| t.as_secs()).into();
    if let Some(s) = stdin {
        b["stdin"] = s.into();
    }
    b
}

/// Reads our stdin for `--stdin`: refuses a terminal, more than [`MAX_STDIN`] bytes, and
/// anything but UTF-8 (the API takes stdin as a JSON string).
fn read_stdin() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("--stdin needs stdin to be a file or a pipe, not a terminal");
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading stdin")?;
    if buf.len() > MAX_STDIN {
        bail!(
            "stdin is larger than {} bytes; upload it with `paddock upload` instead",
            MAX_STDIN
        );
    }
    String::from_utf8(buf).map_err(|_| anyhow::anyhow!("stdin is not UTF-8 text"))
}

/// One line of the exec stream.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Frame {
    Start {
        #[serde(default)]
        pid: Option<u64>,
    },
    Stdout(Chunk),
    Stderr(Chunk),
    Pty(Chunk),
    Keepalive,
    End(End),
    #[serde(other)]
    Unknown,
}

/// Output bytes, as text (`data`) or base64 (`data_b64`).
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct Chunk {
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    #[serde(default)]
    pub(crate) data: Option<String>,
    #[serde(default)]
    pub(crate) data_b64: Option<String>,
}

impl Chunk {
    /// The chunk's bytes.
    pub(crate) fn bytes(&self) -> Result<Vec<u8>> {
        match (&self.data, &self.data_b64) {
            (Some(d), _) => Ok(d.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .context("the server sent invalid base64 output"),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// How the command ended.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub(crate) struct End {
    #[serde(default)]
    pub(crate) exit_code: Option<i64>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) duration_ms: Option<u64>,
    #[serde(default)]
    pub(crate) timed_out: bool,
}

impl End {
    /// Our exit code: 124 on timeout, 128+N for signal N, else the command's (1 if unknown).
    pub(crate) fn exit_code(&self) -> i32 {
        if self.timed_out {
            return 124;
        }
        if let Some(sig) = self.status.as_deref().and_then(signal_number) {
            return 128 + sig;
        }
        match self.exit_code {
            Some(c) if (0..=255).contains(&c) => c as i32,
            Some(c) if c < 0 => 1,
            Some(c) => (c & 0xff) as i32,
            None => 1,
        }
    }
}

/// The signal number of a status such as `signal: killed` (Go's wording) or `signal: 9`.
pub(crate) fn signal_number(status: &str) -> Option<i32> {
    let s = status.trim().strip_prefix("signal")?;
    let s = s.trim_start_matches(':').trim();
    let s = s.strip_suffix("(core dumped)").unwrap_or(s).trim();
    let s = s.to_ascii_lowercase();
    let name = s
        .strip_prefix("signal ")
        .or_else(|| s.strip_prefix("sig"))
        .unwrap_or(&s);
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let n = match name {
        "hangup" | "hup" => 1,
        "interrupt" | "int" => 2,
        "quit" => 3,
        "illegal instruction" | "ill" => 4,
        "trace/breakpoint trap" | "trap" => 5,
        "aborted" | "abrt" => 6,
        "bus error" | "bus" => 7,
        "floating point exception" | "fpe" => 8,
        "killed" | "kill" => 9,
        "user defined signal 1" | "usr1" => 10,
        "segmentation fault" | "segv" => 11,
        "user defined signal 2" | "usr2" => 12,
        "broken pipe" | "pipe" => 13,
        "alarm clock" | "alrm" => 14,
        "terminated" | "term" => 15,
        "cpu time limit exceeded" | "xcpu" => 24,
        "file size limit exceeded" | "xfsz" => 25,
        _ => return None,
    };
    Some(n)
}

/// Splits a byte stream into lines, keeping an incomplete last line for the next chunk.
#[derive(Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the complete lines (without `\n` or `\r\n`).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + i];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            lines.push(line.to_vec());
            start += i + 1;
        }
        self.buf.drain(..start);
        lines
    }

    /// What is left after the stream ended (a last line without `\n`).
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        let t = rest.strip_suffix(b"\r").unwrap_or(&rest);
        (!t.iter().all(u8::is_ascii_whitespace)).then(|| t.to_vec())
    }
}

/// Bytes of the end of stderr kept to look for a name resolution failure.
const STDERR_TAIL: usize = 8 << 10;

/// A local output that stops being written after its first failure (e.g. a closed pipe),
/// so the command still runs to its end and its exit code is kept. Keeps the last
/// [`STDERR_TAIL`] bytes written.
struct Sink<W> {
    w: W,
    broken: bool,
    tail: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Sink<W> {
    fn new(w: W) -> Self {
        Sink {
            w,
            broken: false,
            tail: Vec::new(),
        }
    }

    async fn write(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > STDERR_TAIL {
            self.tail.drain(..self.tail.len() - STDERR_TAIL);
        }
        if self.broken || data.is_empty() {
            return;
        }
        if self.w.write_all(data).await.is_err() || self.w.flush().await.is_err() {
            self.broken = true;
        }
    }
}

/// Handles one stream line; returns the end when it is the last one.
async fn handle_line<O, E>(
    line: &[u8],
    out: &mut Sink<O>,
    err: &mut Sink<E>,
    pid: &AtomicU64,
) -> Result<Option<End>>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let frame: Frame =
        serde_json::from_slice(line).context("the server sent an invalid exec stream line")?;
    match frame {
        Frame::Stdout(c) | Frame::Pty(c) => out.write(&c.bytes()?).await,
        Frame::Stderr(c) => err.write(&c.bytes()?).await,
        Frame::End(e) => return Ok(Some(e)),
        Frame::Start { pid: Some(p) } => pid.store(p, Ordering::Relaxed),
        Frame::Start { .. } | Frame::Keepalive | Frame::Unknown => {}
    }
    Ok(None)
}

/// Reads the stream to its `end` line, writing output to `out` and `err`.
#[cfg(test)]
pub(crate) async fn consume<S, B, O, E>(body: S, out: O, err: E) -> Result<End>
where
    S: futures::Stream<Item = Result<B>> + Unpin,
    B: AsRef<[u8]>,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    Ok(consume_tail(body, out, err, &AtomicU64::new(0)).await?.0)
}

/// [`consume`], also storing the pid (from the `start` line) in `pid` as soon as it is
/// known, and returning the end of stderr.
async fn consume_tail<S, B, O, E>(
    mut body: S,
    out: O,
    err: E,
    pid: &AtomicU64,
) -> Result<(End, Vec<u8>)>
where
    S: futures::Stream<Item = Result<B>> + Unpin,
    B: AsRef<[u8]>,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut out = Sink::new(out);
    let mut err = Sink::new(err);
    let mut lines = LineSplitter::default();
    while let Some(chunk) = body.next().await {
        for line in lines.push(chunk?.as_ref()) {
            if let Some(end) = handle_line(&line, &mut out, &mut err, pid).await? {
                return Ok((end, err.tail));
            }
        }
    }
    if let Some(line) = lines.finish()
        && let Some(end) = handle_line(&line, &mut out, &mut err, pid).await?
    {
        return Ok((end, err.tail));
    }
    bail!("the connection closed before the command finished")
}

/// Warns when our stdin is a pipe or file with data but `--stdin` was not given: the
/// command's stdin is empty then, and the data is not read.
fn warn_unsent_stdin() {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return;
    }
    let fd = stdin.as_fd();
    let has_data = match rustix::fs::fstat(fd) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::RegularFile =>
        {
            st.st_size > 0
        }
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
                || rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Socket =>
        {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            rustix::event::poll(
                &mut fds,
                Some(&rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
            )
            .is_ok_and(|n| n > 0 && fds[0].revents().contains(rustix::event::PollFlags::IN))
        }
        _ => false,
    };
    if has_data {
        eprintln!(
            "paddock: warning: stdin is not sent to the command without --stdin; the command's stdin is empty"
        );
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP, with the signal's number.
async fn stop_signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
        _ = hup.recv() => 1,
    }
}

/// Runs the command; the result is its exit code.
pub(crate) async fn run(a: ExecArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let stdin = if a.stdin {
        Some(read_stdin()?)
    } else {
        warn_unsent_stdin();
        None
    };
    let body = exec_body(&a, stdin);
    let resp = api
        .send(
            api.request(
                reqwest::Method::POST,
                api.url(&["v1", "sandboxes", &a.id, "exec"]),
            )
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .json(&body),
        )
        .await?;
    let stream = resp
        .bytes_stream()
        .map(|r| r.map_err(|e| api.transport_error(e)));
    let pid = AtomicU64::new(0);
    let consumed = consume_tail(stream, tokio::io::stdout(), tokio::io::stderr(), &pid);
    let (end, tail) = tokio::select! {
        r = consumed => r?,
        sig = stop_signal() => {
            // The command would outlive us (the server keeps it running for a client that
            // left); end it with its whole process group, as a terminal would.
            let p = pid.load(Ordering::Relaxed);
            if p != 0 {
                let killed = api
                    .post_json::<Value>(
                        &["v1", "sandboxes", &a.id, "processes", &p.to_string(), "signal"],
                        &json!({ "signal": "SIGKILL" }),
                    )
                    .await;
                if let Err(e) = killed {
                    eprintln!("paddock: could not stop the remote command (pid {p}): {e:#}");
                }
            }
            return Ok(128 + sig);
        }
    };
    if end.timed_out {
        eprintln!("paddock: command timed out");
    }
    let code = end.exit_code();
    if code != 0 && super::network::resolution_failed(&tail) {
        super::network::hint_if_offline(&api, &a.id).await;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(exit_code: Option<i64>, status: &str, timed_out: bool) -> End {
        End {
            exit_code,
            status: Some(status.into()),
            duration_ms: None,
            timed_out,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(end(Some(0), "exit status 0", false).exit_code(), 0);
        assert_eq!(end(Some(3), "exit status 3", false).exit_code(), 3);
        assert_eq!(end(Some(-1), "signal: killed", false).exit_code(), 137);
        assert_eq!(end(None, "signal: terminated", false).exit_code(), 143);
        assert_eq!(end(None, "signal: killed", true).exit_code(), 124);
        assert_eq!(
            end(None, "signal: segmentation fault (core dumped)", false).exit_code(),
            139
        );
        assert_eq!(end(None, "signal: signal 34", false).exit_code(), 162);
        assert_eq!(end(None, "signal: 2", false).exit_code(), 130);
        assert_eq!(
            end(None, "signal: CPU time limit exceeded", false).exit_code(),
            152
        );
        assert_eq!(end(None, "lost", false).exit_code(), 1);
        assert_eq!(End::default().exit_code(), 1);
        assert_eq!(end(Some(256 + 7), "exit status 263", false).exit_code(), 7);
        assert_eq!(signal_number("exit status 9"), None);
        assert_eq!(signal_number("signal: SIGKILL"), Some(9));
        assert_eq!(signal_number("signal: bogus"), None);
    }

    #[test]
    fn frames() {
        let f: Frame = serde_json::from_str(r#"{"type":"start","pid":42}"#).unwrap();
        assert_eq!(f, Frame::Start { pid: Some(42) });
        let f: Frame = serde_json::from_str(r#"{"type":"stdout","seq":1,"data":"hi\n"}"#).unwrap();
        let Frame::Stdout(c) = f else { panic!() };
        assert_eq!(c.bytes().unwrap(), b"hi\n");
        let f: Frame =
            serde_json::from_str(r#"{"type":"stderr","seq":2,"data_b64":"/wA="}"#).unwrap();
        let Frame::Stderr(c) = f else { panic!() };
        assert_eq!(c.bytes().unwrap(), [0xff, 0]);
        let f: Frame = serde_json::from_str(r#"{"type":"keepalive"}"#).unwrap();
        assert_eq!(f, Frame::Keepalive);
        let f: Frame = serde_json::from_str(r#"{"type":"future","x":1}"#).unwrap();
        assert_eq!(f, Frame::Unknown);
        let f: Frame = serde_json::from_str(
            r#"{"type":"end","exit_code":0,"status":"exit status 0","duration_ms":5,"timed_out":false}"#,
        )
        .unwrap();
        let mut want = end(Some(0), "exit status 0", false);
        want.duration_ms = Some(5);
        assert_eq!(f, Frame::End(want));
        let bad = Chunk {
            seq: None,
            data: None,
            data_b64: Some("!!".into()),
        };
        assert!(bad.bytes().is_err());
    }

    #[test]
    fn lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab"), Vec::<Vec<u8>>::new());
        assert_eq!(
            s.push(b"c\r\nd\n\ne"),
            vec![b"abc".to_vec(), b"d".to_vec(), vec![]]
        );
        assert_eq!(s.finish(), Some(b"e".to_vec()));
        assert_eq!(s.finish(), None);
        assert_eq!(s.push(b"  "), Vec::<Vec<u8>>::new());
        assert_eq!(s.finish(), None);
    }

    fn chunks(parts: &[&str]) -> impl futures::Stream<Item = Result<Vec<u8>>> + Unpin {
        let v: Vec<Result<Vec<u8>>> = parts.iter().map(|p| Ok(p.as_bytes().to_vec())).collect();
        futures::stream::iter(v)
    }

    #[tokio::test]
    async fn streams_output_in_order() {
        let stream = chunks(&[
            "{\"type\":\"start\",\"pid\":7}\n{\"type\":\"stdout\",\"seq\":1,\"da",
            "ta\":\"one\\n\"}\n{\"type\":\"keepalive\"}\n",
            "{\"type\":\"stderr\",\"seq\":2,\"data_b64\":\"ZXJy\"}\n",
            "{\"type\":\"stdout\",\"seq\":3,\"data\":\"two\"}\n",
            "{\"type\":\"end\",\"exit_code\":null,\"status\":\"signal: killed\",\"duration_ms\":9,\"timed_out\":false}",
        ]);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let end = consume(stream, &mut out, &mut err).await.unwrap();
        assert_eq!(out, b"one\ntwo");
        assert_eq!(err, b"err");
        assert_eq!(end.exit_code(), 137);
    }

    #[tokio::test]
    async fn stream_errors() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let e = consume(
            chunks(&["{\"type\":\"stdout\",\"data\":\"x\"}\n"]),
            &mut out,
            &mut err,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the connection closed before the command finished"
        );
        assert!(
            consume(chunks(&["not json\n"]), &mut out, &mut err)
                .await
                .is_err()
        );
        let broken: Vec<Result<Vec<u8>>> = vec![
            Ok(b"{\"type\":\"keepalive\"}\n".to_vec()),
            Err(anyhow::anyhow!("reset")),
        ];
        let e = consume(futures::stream::iter(broken), &mut out, &mut err)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "reset");
    }
}

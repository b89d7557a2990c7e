//! `paddock desktop ID`: the live view of a desktop sandbox (template `desktop`,
//! `docs/desktop.md`). Starts in the sandbox whatever of the view is not running yet (Xvfb on
//! `:0`, XFCE, x11vnc on 5900, noVNC on 6080; the same commands and ports as E2B's desktop
//! SDKs, so a stream an SDK started is reused), then prints the noVNC page's URL through the
//! port proxy, with the access token when port 6080 is private; `--open` opens it in the
//! local browser.

use anyhow::{Result, bail};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::Api;
use super::{Conn, write_stdout};

/// The noVNC port (E2B's desktop SDKs' `stream` port).
pub(crate) const NOVNC_PORT: u16 = 6080;
/// The longest the start script may take (it waits at most 10 s for Xvfb and 20 s for noVNC).
const START_TIMEOUT_S: u64 = 60;

/// Starts what is missing, each piece only when it is not running; `$1` is the screen size
/// of a new Xvfb. Errors go to stderr with exit code 1 (2: not a desktop template).
const START_SCRIPT: &str = r#"
for t in Xvfb xdpyinfo startxfce4 x11vnc netstat /opt/noVNC/utils/novnc_proxy; do
  command -v "$t" >/dev/null 2>&1 || { echo "this sandbox has no $t: make it from the desktop template (paddock template ready desktop)" >&2; exit 2; }
done
export DISPLAY="${DISPLAY:-:0}"
if ! xdpyinfo >/dev/null 2>&1; then
  setsid Xvfb "$DISPLAY" -ac -screen 0 "$1x24" -retro -dpi 96 -nolisten tcp -nolisten unix </dev/null >/tmp/xvfb.log 2>&1 &
  i=0
  until xdpyinfo >/dev/null 2>&1; do
    i=$((i+1)); [ "$i" -le 100 ] || { echo "Xvfb did not start on $DISPLAY: $(tail -n 3 /tmp/xvfb.log)" >&2; exit 1; }
    sleep 0.1
  done
fi
pgrep -x xfce4-session >/dev/null || setsid startxfce4 </dev/null >/tmp/xfce4.log 2>&1 &
if ! pgrep -x x11vnc >/dev/null; then
  x11vnc -bg -display "$DISPLAY" -forever -wait 50 -shared -rfbport 5900 -nopw </dev/null >/dev/null 2>/tmp/x11vnc_stderr.log || { echo "x11vnc did not start: $(tail -n 3 /tmp/x11vnc_stderr.log)" >&2; exit 1; }
fi
if ! netstat -tln | grep -q ':6080 '; then
  (cd /opt/noVNC/utils && setsid ./novnc_proxy --vnc localhost:5900 --listen 6080 --web /opt/noVNC </dev/null >/tmp/novnc.log 2>&1 &)
  i=0
  until netstat -tln | grep -q ':6080 '; do
    i=$((i+1)); [ "$i" -le 200 ] || { echo "noVNC did not start: $(tail -n 3 /tmp/novnc.log)" >&2; exit 1; }
    sleep 0.1
  done
fi
"#;

/// `paddock desktop`.
#[derive(Args, Debug)]
pub(crate) struct DesktopArgs {
    /// The sandbox (made from the desktop template).
    pub(crate) id: String,
    /// Open the URL in the local browser (xdg-open, or open on macOS) instead of printing it.
    #[arg(long)]
    pub(crate) open: bool,
    /// Only print the URL: start nothing in the sandbox.
    #[arg(long)]
    pub(crate) no_start: bool,
    /// The screen size of the display when it has to be started, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    pub(crate) size: String,
    /// A view that sends no input (noVNC's view_only).
    #[arg(long)]
    pub(crate) view_only: bool,
    /// The path-routed URL ({server}/proxy/{id}/6080/...), which needs no wildcard DNS.
    #[arg(long)]
    pub(crate) path: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `WxH` with each side 64 to 8192 pixels.
fn parse_size(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not WIDTHxHEIGHT with sides of 64 to 8192 pixels");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let ok = |v: &str| v.parse::<u32>().ok().filter(|n| (64..=8192).contains(n));
    match (ok(w), ok(h)) {
        (Some(w), Some(h)) => Ok(format!("{w}x{h}")),
        _ => Err(bad()),
    }
}

/// The noVNC page's URL: `base` (the port's proxy URL, ending in `/`) with `vnc.html` and
/// noVNC's settings; path routing also needs the WebSocket's path, which noVNC otherwise
/// takes from the server's root.
pub(crate) fn view_url(
    base: &str,
    id: &str,
    path_routed: bool,
    view_only: bool,
    token: Option<&str>,
) -> String {
    let mut q = vec!["autoconnect=true".to_owned(), "resize=scale".to_owned()];
    if view_only {
        q.push("view_only=true".into());
    }
    if path_routed {
        q.push(format!("path=proxy/{id}/{NOVNC_PORT}/websockify"));
    }
    let url = format!("{base}vnc.html?{}", q.join("&"));
    match token {
        Some(t) => format!("{url}&paddock_token={t}"),
        None => url,
    }
}

/// Starts the view if needed and prints (or opens) its URL.
pub(crate) async fn run(a: DesktopArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    if !a.no_start {
        let url = api.url(&["v1", "sandboxes", a.id.as_str(), "exec"]);
        let body = json!({
            "cmd": ["/bin/sh", "-c", START_SCRIPT, "paddock-desktop", a.size],
            "timeout": START_TIMEOUT_S,
        });
        let v: Value = api.json(api.request(Method::POST, url).json(&body)).await?;
        let code = v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1);
        if code != 0 {
            let err = v.get("stderr").and_then(Value::as_str).unwrap_or_default();
            bail!(
                "the live view of {} did not start (exit code {code}): {}",
                a.id,
                err.trim()
            );
        }
    }
    let port = NOVNC_PORT.to_string();
    let v: Value = api
        .get_json(&["v1", "sandboxes", a.id.as_str(), "ports", port.as_str()])
        .await?;
    let key = if a.path { "path_url" } else { "url" };
    let Some(base) = v.get(key).and_then(Value::as_str) else {
        bail!("the server did not give the URL of port {NOVNC_PORT}");
    };
    let public = v.get("public").and_then(Value::as_bool).unwrap_or(false);
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|_| !public);
    let url = view_url(base, &a.id, a.path, a.view_only, token);
    if v.get("listening").and_then(Value::as_bool) == Some(false) {
        eprintln!(
            "paddock: note: nothing listens on port {NOVNC_PORT} in {} (started with --no-start?)",
            a.id
        );
    }
    if a.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        let st = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => return Ok(0),
            Ok(s) => eprintln!("paddock: {opener} failed ({s}); the URL:"),
            Err(e) => eprintln!("paddock: cannot run {opener} ({e}); the URL:"),
        }
    }
    write_stdout(&format!("{url}\n"))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_urls() {
        assert_eq!(parse_size("1280x720").unwrap(), "1280x720");
        for bad in ["1280", "10x10", "1280x", "x720", "99999x720", "axb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            view_url("http://6080-abc.localhost:7070/", "abc", false, false, None),
            "http://6080-abc.localhost:7070/vnc.html?autoconnect=true&resize=scale"
        );
        assert_eq!(
            view_url(
                "http://h:7070/proxy/abc/6080/",
                "abc",
                true,
                true,
                Some("tok")
            ),
            "http://h:7070/proxy/abc/6080/vnc.html?autoconnect=true&resize=scale&view_only=true\
             &path=proxy/abc/6080/websockify&paddock_token=tok"
        );
    }
}

//! End-to-end tests of the port proxy against the real `paddock serve`: a `python3 -m
//! http.server` and a stdlib WebSocket/HTTP echo server run inside a sandbox and are reached
//! through `{port}-{id}.{domain}` and `/proxy/{id}/{port}/`; and the proxy rows (G) of the
//! security battery: Host spoofing, absolute-form and CONNECT, duplicate Host, smuggling,
//! slow clients, the agent's port. Loopback only.

mod server;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A stdlib-only server on 127.0.0.1:8765: WebSocket echo for upgrades, and for any other
/// request a JSON description of what arrived (method, target, headers, body digest), with
/// hop-by-hop and cookie headers in the answer that the proxy must filter.
const ECHO_PY: &str = r#"
import socket, threading, hashlib, base64, struct, json

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class Conn:
    def __init__(self, s):
        self.s, self.buf = s, b""
    def fill(self):
        x = self.s.recv(65536)
        if not x:
            raise EOFError()
        self.buf += x
    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out
    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

def ws(c, key):
    acc = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    c.s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + "\r\n\r\n").encode())
    while True:
        b0, b1 = c.exact(2)
        op, n = b0 & 15, b1 & 127
        if n == 126:
            n = struct.unpack(">H", c.exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", c.exact(8))[0]
        mask = c.exact(4) if b1 & 128 else b"\0\0\0\0"
        raw = c.exact(n)
        m = (mask * (n // 4 + 1))[:n]
        data = (int.from_bytes(raw, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")
        if op == 8:
            c.s.sendall(b"\x88\x00")
            return
        if op == 9:
            op = 10
        h = bytes([128 | op])
        if n < 126:
            h += bytes([n])
        elif n < 65536:
            h += bytes([126]) + struct.pack(">H", n)
        else:
            h += bytes([127]) + struct.pack(">Q", n)
        c.s.sendall(h + data)

def handle(s):
    c = Conn(s)
    try:
        head = c.until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [[k.strip().lower(), v.strip()] for k, _, v in (l.partition(":") for l in lines[1:])]
        h = dict(headers)
        if h.get("upgrade", "").lower() == "websocket":
            return ws(c, h["sec-websocket-key"])
        body = b""
        if "chunked" in h.get("transfer-encoding", ""):
            while True:
                size = int(c.until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    c.until(b"\r\n")
                    break
                body += c.exact(size)
                c.exact(2)
        elif "content-length" in h:
            body = c.exact(int(h["content-length"]))
        out = json.dumps({"method": method, "target": target, "headers": headers,
                          "body_len": len(body),
                          "body_sum": sum(body)}).encode()
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(out)).encode()
                  + b"\r\nConnection: close, X-Hop-Secret\r\nX-Hop-Secret: 1\r\n"
                  + b"Keep-Alive: timeout=5\r\nSet-Cookie: app=1\r\n"
                  + b"Set-Cookie: paddock_token_other_1=x; Path=/\r\n\r\n" + out)
    except Exception:
        pass
    finally:
        s.close()

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8765))
srv.listen(64)
while True:
    s, _ = srv.accept()
    threading.Thread(target=handle, args=(s,), daemon=True).start()
"#;

const HELLO: &str = "hello from inside the sandbox\n";

/// A sandbox serving `/home/user/www` on 8000 (http.server) and the echo server on 8765.
/// Returns (id, access token).
async fn serving_sandbox(s: &Server) -> (String, String) {
    let id = s.create(json!({"timeout": 600})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (path, body) in [
        ("/home/user/www/hello.txt", HELLO),
        ("/home/user/echo.py", ECHO_PY),
    ] {
        let (st, v) = call(
            s.req(
                Method::PUT,
                &format!("/v1/sandboxes/{id}/files?path={path}"),
            )
            .header("content-type", "application/octet-stream")
            .body(body),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    for cmd in [
        "python3 -m http.server 8000 --bind 127.0.0.1 --directory /home/user/www",
        "python3 /home/user/echo.py",
    ] {
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"command": cmd, "background": true})),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    }
    // Both listen within a few seconds.
    let token = eventually(
        Duration::from_secs(20),
        "servers listening on 8000 and 8765",
        || async {
            let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports"))).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let ports: Vec<u64> = v["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .filter(|p| p["listening"] == true)
                .filter_map(|p| p["port"].as_u64())
                .collect();
            if ports.contains(&8000) && ports.contains(&8765) {
                Ok(v["access_token"].as_str().expect("token").to_owned())
            } else {
                Err(v)
            }
        },
    )
    .await;
    (id, token)
}

/// The server's `host:port`.
fn authority(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

fn port_of(s: &Server) -> u16 {
    authority(s)
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("server port")
}

/// The Host of sandbox `id`'s `port`.
fn host(s: &Server, id: &str, port: u16) -> String {
    format!("{port}-{id}.localhost:{}", port_of(s))
}

/// A client that does not follow redirects.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A request for `path` on the server, sent with Host `host`.
fn via_host(s: &Server, host: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, format!("{}{path}", s.url))
        .header("host", host)
}

fn via_path(s: &Server, id: &str, port: u16, rest: &str) -> reqwest::RequestBuilder {
    client().get(format!("{}/proxy/{id}/{port}/{rest}", s.url))
}

async fn text(rb: reqwest::RequestBuilder) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let r = rb.send().await.expect("request");
    let st = r.status();
    let h = r.headers().clone();
    (st, r.text().await.unwrap_or_default(), h)
}

/// The echo server's view of a request: header values by (lower-case) name.
fn seen(v: &Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|p| p[0] == name)
        .map(|p| p[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_through_both_url_forms_with_tokens_cookies_and_public_ports() {
    let s = Server::start(&[]);
    let (id, token) = serving_sandbox(&s).await;
    let h8000 = host(&s, &id, 8000);

    // Host routing and path routing serve the uploaded file.
    let (st, body, _) =
        text(via_host(&s, &h8000, Method::GET, "/hello.txt").header("x-access-token", &token))
            .await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));
    let (st, body, _) =
        text(via_path(&s, &id, 8000, "hello.txt").header("x-access-token", &token)).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));
    // The other token headers, and an API key of the tenant for path routing.
    for h in ["x-paddock-token", "e2b-traffic-access-token"] {
        let (st, _, _) =
            text(via_host(&s, &h8000, Method::GET, "/hello.txt").header(h, &token)).await;
        assert_eq!(st, StatusCode::OK, "{h}");
    }
    let (st, body, _) = text(via_path(&s, &id, 8000, "hello.txt").bearer_auth(&s.admin_key)).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));
    // E2B's header routing with a port other than envd's.
    let (st, body, _) = text(
        client()
            .get(format!("{}/hello.txt", s.url))
            .header("e2b-sandbox-id", &id)
            .header("e2b-sandbox-port", "8000")
            .header("x-access-token", &token),
    )
    .await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));

    // /proxy/ID/PORT redirects to the directory form, keeping the query.
    let (st, _, h) = text(client().get(format!("{}/proxy/{id}/8000?a=1", s.url))).await;
    assert_eq!(st, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], format!("/proxy/{id}/8000/?a=1").as_str());

    // ?paddock_token= works, sets a scoped HttpOnly cookie, and the cookie alone works after.
    let (st, body, h) = text(via_path(
        &s,
        &id,
        8000,
        &format!("hello.txt?paddock_token={token}"),
    ))
    .await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));
    let cookie = h["set-cookie"].to_str().expect("cookie");
    assert_eq!(
        cookie,
        format!("paddock_token_{id}_8000={token}; HttpOnly; SameSite=Lax; Path=/proxy/{id}/8000/")
    );
    let (st, _, _) = text(
        via_path(&s, &id, 8000, "hello.txt")
            .header("cookie", format!("paddock_token_{id}_8000={token}")),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, h) = text(via_host(
        &s,
        &h8000,
        Method::GET,
        &format!("/hello.txt?paddock_token={token}"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        h["set-cookie"].to_str().unwrap_or("").ends_with("; Path=/"),
        "{h:?}"
    );

    // What reaches the sandbox: prefix and token stripped, X-Forwarded-* set by the proxy,
    // hop-by-hop and Paddock's credentials dropped; and what comes back is filtered too.
    let (st, body, h) = text(
        via_path(
            &s,
            &id,
            8765,
            &format!("echo/x?a=1&paddock_token={token}&b=%20"),
        )
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "gopher")
        .header("forwarded", "for=6.6.6.6")
        .header("connection", "x-client-hop")
        .header("x-client-hop", "1")
        .header("keep-alive", "timeout=1")
        .header("proxy-authorization", "Basic eA==")
        .header("x-api-key", &s.admin_key)
        .header(
            "cookie",
            format!("a=1; paddock_token_{id}_8765=bad; paddock_token_x_1=y; b=2"),
        )
        .header("x-app", "kept"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("echo json");
    assert_eq!(v["target"], "/echo/x?a=1&b=%20");
    assert_eq!(seen(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&v, "x-forwarded-host"), [authority(&s)]);
    assert_eq!(seen(&v, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        seen(&v, "x-forwarded-prefix"),
        [format!("/proxy/{id}/8765")]
    );
    assert_eq!(seen(&v, "cookie"), ["a=1; b=2"]);
    assert_eq!(seen(&v, "x-app"), ["kept"]);
    for gone in [
        "forwarded",
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "x-api-key",
        "x-access-token",
        "authorization",
    ] {
        assert!(seen(&v, gone).is_empty(), "{gone} reached the sandbox: {v}");
    }
    assert!(
        !body.contains(&token),
        "the token reached the sandbox: {body}"
    );
    assert!(h.get("x-hop-secret").is_none() && h.get("keep-alive").is_none());
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert!(
        cookies.iter().any(|c| *c == "app=1")
            && !cookies
                .iter()
                .any(|c| c.to_str().unwrap_or("").starts_with("paddock_token_other")),
        "{cookies:?}"
    );
    // The bearer API key that authorized a path-routed request is not forwarded either.
    let (_, body, _) = text(via_path(&s, &id, 8765, "k").bearer_auth(&s.admin_key)).await;
    assert!(!body.contains(&s.admin_key), "{body}");
    // Host routing keeps the Host, and an app's own Authorization header passes.
    let (_, body, _) = text(
        via_host(&s, &host(&s, &id, 8765), Method::GET, "/h")
            .header("x-access-token", &token)
            .header("authorization", "Bearer app-secret"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("echo json");
    assert_eq!(seen(&v, "host"), [host(&s, &id, 8765)]);
    assert_eq!(seen(&v, "authorization"), ["Bearer app-secret"]);
    assert!(seen(&v, "x-forwarded-prefix").is_empty());
    // Request bodies are streamed up, sized and chunked.
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let (st, body, _) = text(
        client()
            .post(format!("{}/proxy/{id}/8765/up", s.url))
            .header("x-access-token", &token)
            .body(data.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("echo json");
    assert_eq!(
        (v["body_len"].as_u64(), v["body_sum"].as_u64()),
        (Some(5_000_000), Some(sum))
    );
    let stream = futures::stream::iter(
        data.chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let (st, body, _) = text(
        via_host(&s, &host(&s, &id, 8765), Method::POST, "/up")
            .header("x-access-token", &token)
            .body(reqwest::Body::wrap_stream(stream)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("echo json");
    assert_eq!(
        (v["body_len"].as_u64(), v["body_sum"].as_u64()),
        (Some(5_000_000), Some(sum))
    );

    // Private by default: no token 401, wrong token 403, another sandbox's token 403.
    let (other, other_token) = {
        let v = s.create(json!({"timeout": 600})).await;
        let oid = v["id"].as_str().expect("id").to_owned();
        let (_, p) = call(s.req(Method::GET, &format!("/v1/sandboxes/{oid}/ports"))).await;
        (oid, p["access_token"].as_str().expect("token").to_owned())
    };
    assert_ne!(other_token, token);
    for rb in [
        via_host(&s, &h8000, Method::GET, "/hello.txt"),
        via_path(&s, &id, 8000, "hello.txt"),
    ] {
        let (st, body, _) = text(rb).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
        let v: Value = serde_json::from_str(&body).expect("error json");
        assert_eq!(v["code"], "unauthorized");
        assert!(
            v["message"].as_str().unwrap_or("").contains("private"),
            "{v}"
        );
    }
    for bad in ["wrong", other_token.as_str()] {
        for rb in [
            via_host(&s, &h8000, Method::GET, "/hello.txt").header("x-access-token", bad),
            via_path(&s, &id, 8000, "hello.txt").header("x-access-token", bad),
            via_path(&s, &id, 8000, &format!("hello.txt?paddock_token={bad}")),
            via_path(&s, &id, 8000, "hello.txt")
                .header("cookie", format!("paddock_token_{id}_8000={bad}")),
        ] {
            let (st, body, _) = text(rb).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{bad}: {body}");
            assert!(!body.contains(HELLO.trim()));
        }
    }
    // A wrong token is not outvoted by a right one elsewhere in the request.
    let (st, _, _) = text(
        via_path(&s, &id, 8000, &format!("hello.txt?paddock_token={token}"))
            .header("x-access-token", "wrong"),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Another tenant's API key: the sandbox does not exist for it.
    let (_, other_key) = s.new_key(json!({"name": "t2"})).await;
    let (st, body, _) = text(via_path(&s, &id, 8000, "hello.txt").bearer_auth(&other_key)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, missing, _) = text(via_path(&s, "aaaaaaaaaaaaaaaaaaaa", 8000, "hello.txt")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        body.replace(&id, "X"),
        missing.replace("aaaaaaaaaaaaaaaaaaaa", "X"),
        "another tenant's sandbox must look missing"
    );
    let (st, body, _) = text(via_host(
        &s,
        &host(&s, "aaaaaaaaaaaaaaaaaaaa", 8000),
        Method::GET,
        "/",
    ))
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    // The other sandbox's Host with this sandbox's token.
    let (st, _, _) = text(
        via_host(&s, &host(&s, &other, 8000), Method::GET, "/hello.txt")
            .header("x-access-token", &token),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Nothing listening: 502 with a clear message. The agent's port: 403 by path.
    let (st, body, _) = text(via_path(&s, &id, 8001, "").header("x-access-token", &token)).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{body}");
    let v: Value = serde_json::from_str(&body).expect("error json");
    assert_eq!(v["code"], "port_closed");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("port 8001 is not open in sandbox {id}")),
        "{v}"
    );
    let (st, _, _) =
        text(via_path(&s, &id, 49983, "health").header("x-access-token", &token)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = text(via_path(&s, &id, 0, "")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Public ports need no token; private again after DELETE.
    let (st, v) = call(s.req(
        Method::POST,
        &format!("/v1/sandboxes/{id}/ports/8000/public"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["public"].as_bool(), v["listening"].as_bool()),
        (Some(true), Some(true))
    );
    for rb in [
        via_host(&s, &h8000, Method::GET, "/hello.txt"),
        via_path(&s, &id, 8000, "hello.txt"),
    ] {
        let (st, body, _) = text(rb).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));
    }
    // Only that port.
    let (st, _, _) = text(via_path(&s, &id, 8765, "x")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports"))).await;
    let p8000 = v["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == 8000)
        .cloned()
        .expect("8000 listed");
    assert_eq!(p8000["public"], true);
    assert_eq!(p8000["address"], "127.0.0.1");
    assert_eq!(p8000["url"], format!("http://{h8000}/"));
    assert_eq!(p8000["path_url"], format!("{}/proxy/{id}/8000/", s.url));
    // Another tenant cannot change it; bad ports are refused.
    let (st, _) = call(s.req_as(
        &other_key,
        Method::DELETE,
        &format!("/v1/sandboxes/{id}/ports/8000/public"),
    ))
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for bad in ["0", "49983", "70000", "x"] {
        let (st, _) = call(s.req(
            Method::POST,
            &format!("/v1/sandboxes/{id}/ports/{bad}/public"),
        ))
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (st, v) = call(s.req(
        Method::DELETE,
        &format!("/v1/sandboxes/{id}/ports/8000/public"),
    ))
    .await;
    assert_eq!((st, v["public"].as_bool()), (StatusCode::OK, Some(false)));
    let (st, _, _) = text(via_path(&s, &id, 8000, "hello.txt")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // `paddock url` prints URLs that work as printed (host form resolved to the server, as a
    // wildcard DNS entry or a browser's *.localhost would).
    for extra in [&[][..], &["--path"][..]] {
        let mut args = vec!["url", id.as_str(), "8000"];
        args.extend_from_slice(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(&args)
            .env("PADDOCK_URL", &s.url)
            .env("PADDOCK_API_KEY", &s.admin_key)
            .output()
            .expect("paddock url");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let url = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        assert!(url.contains(&format!("paddock_token={token}")), "{url}");
        let c = reqwest::Client::builder()
            .resolve(
                &format!("8000-{id}.localhost"),
                format!("127.0.0.1:{}", port_of(&s)).parse().expect("addr"),
            )
            .build()
            .expect("client");
        let r = c.get(&url).send().await.expect("GET the printed URL");
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        assert!(r.text().await.unwrap_or_default().contains("hello.txt"));
    }

    // A stopped sandbox's URLs stop working.
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) =
        text(via_path(&s, &id, 8000, "hello.txt").header("x-access-token", &token)).await;
    assert_eq!(st, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_both_url_forms() {
    let s = Server::start(&[]);
    let (id, token) = serving_sandbox(&s).await;
    let forms = [
        (format!("ws://{}/ws", host(&s, &id, 8765)), "host"),
        (format!("ws://{}/proxy/{id}/8765/ws", authority(&s)), "path"),
    ];
    for (url, form) in forms {
        let mut req = url.as_str().into_client_request().expect("ws request");
        req.headers_mut()
            .insert("x-access-token", token.parse().expect("header"));
        let tcp = tokio::net::TcpStream::connect(authority(&s))
            .await
            .expect("connect");
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .unwrap_or_else(|e| panic!("{form}: websocket handshake: {e}"));
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("hello")).await.expect("send");
        let m = ws.next().await.expect("echo").expect("echo ok");
        assert_eq!(m, Message::text("hello"), "{form}");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        ws.send(Message::binary(big.clone())).await.expect("send");
        let m = ws.next().await.expect("echo").expect("echo ok");
        assert_eq!(m.into_data().to_vec(), big, "{form}");
        for i in 0..50 {
            ws.send(Message::text(format!("m{i}"))).await.expect("send");
        }
        for i in 0..50 {
            let m = ws.next().await.expect("echo").expect("echo ok");
            assert_eq!(m, Message::text(format!("m{i}")));
        }
        ws.close(None).await.expect("close");
    }
    // Without the token the upgrade is refused before anything reaches the sandbox.
    let req = format!("ws://{}/ws", host(&s, &id, 8765))
        .into_client_request()
        .expect("ws request");
    let tcp = tokio::net::TcpStream::connect(authority(&s))
        .await
        .expect("connect");
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("upgrade without token: {:?}", other.map(|x| x.1)),
    }
}

/// Writes `req` on a fresh connection and reads until the server closes it (or 10 s).
/// Returns what was read and whether the server closed the connection.
fn raw(s: &Server, req: &[u8]) -> (String, bool) {
    let mut c = TcpStream::connect(authority(s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(req).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn status_lines(resp: &str) -> usize {
    resp.matches("HTTP/1.1 ").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused_and_slow_clients_cut_off() {
    let s = Server::start(&["--header-timeout", "2s"]);
    let (id, token) = serving_sandbox(&s).await;
    let server = authority(&s);
    let h8000 = host(&s, &id, 8000);
    let key = s.admin_key.clone();

    // G2: absolute-form targets, naming the admin API, with a sandbox's Host or the server's.
    for h in [h8000.as_str(), server.as_str(), "localhost"] {
        let (resp, closed) = raw(
            &s,
            format!(
                "GET http://{server}/v1/keys HTTP/1.1\r\nHost: {h}\r\nAuthorization: Bearer {key}\r\nX-Access-Token: {token}\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 400"), "{h}: {resp}");
        assert!(
            resp.contains("absolute-form") && !resp.contains("\"keys\""),
            "{resp}"
        );
        assert!(
            closed,
            "connection left open after an absolute-form request"
        );
    }
    // CONNECT, to the admin API or anywhere.
    for target in [server.as_str(), "127.0.0.1:22", "8000-x.localhost:80"] {
        let (resp, closed) = raw(
            &s,
            format!(
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nX-Access-Token: {token}\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(closed);
    }
    // G1: duplicate Host (either order), and a Host naming the sandbox with a path of the
    // admin API goes to the sandbox, never to the API.
    let other = s.create(json!({"timeout": 600})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ho = host(&s, &other, 8000);
    for (a, b) in [(&h8000, &ho), (&ho, &h8000), (&h8000, &server)] {
        let (resp, closed) = raw(
            &s,
            format!("GET /hello.txt HTTP/1.1\r\nHost: {a}\r\nHost: {b}\r\nX-Access-Token: {token}\r\n\r\n").as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("Host") && !resp.contains(HELLO.trim()));
        assert!(closed);
    }
    let (resp, _) = raw(
        &s,
        format!("GET /v1/keys HTTP/1.1\r\nHost: {h8000}\r\nAuthorization: Bearer {key}\r\nX-Access-Token: {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 404") && resp.contains("SimpleHTTP"),
        "the sandbox's server must answer, not the API: {resp}"
    );
    // X-Forwarded-Host is never used for routing.
    let (resp, _) = raw(
        &s,
        format!("GET /hello.txt HTTP/1.1\r\nHost: {server}\r\nX-Forwarded-Host: {h8000}\r\nX-Access-Token: {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 404") && !resp.contains(HELLO.trim()),
        "{resp}"
    );
    // G4: the agent's port is never reached through the proxy paths; E2B header routing to
    // it is envd's data plane with its own token check.
    let (resp, _) = raw(
        &s,
        format!("GET /proxy/{id}/49983/health HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");

    // Smuggling: Content-Length with Transfer-Encoding, in either order, first on the
    // connection or after a good request: 400, the connection closed, and the request hidden
    // behind the chunked body never served.
    for (first, second) in [
        ("Content-Length: 200", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 200"),
    ] {
        for before in [
            String::new(),
            format!(
                "GET /proxy/{id}/8765/ok HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\n\r\n"
            ),
        ] {
            let smuggled = format!(
                "GET /proxy/{id}/8765/smuggled HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\n\r\n"
            );
            let (resp, closed) = raw(
                &s,
                format!(
                    "{before}POST /proxy/{id}/8765/front HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\n{smuggled}"
                )
                .as_bytes(),
            );
            assert!(resp.contains("HTTP/1.1 400"), "{resp}");
            assert!(resp.contains("Transfer-Encoding"), "{resp}");
            assert!(
                !resp.contains("smuggled") && !resp.contains("/front"),
                "{resp}"
            );
            assert!(status_lines(&resp) <= 2, "{resp}");
            assert!(closed, "connection left open after CL+TE");
        }
    }
    // Transfer-Encoding other than chunked, and conflicting Content-Lengths: 400 (hyper).
    for bad in [
        "Transfer-Encoding: gzip\r\n",
        "Content-Length: 1\r\nContent-Length: 2\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
    ] {
        let (resp, closed) = raw(
            &s,
            format!("POST /proxy/{id}/8765/x HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\n{bad}\r\nab").as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 400"), "{bad}: {resp}");
        assert!(closed);
    }
    // A proxied HTTP/1.1 keep-alive connection serves requests one after another.
    let (resp, closed) = raw(
        &s,
        format!(
            "GET /proxy/{id}/8000/hello.txt HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\n\r\n\
             GET /proxy/{id}/8000/hello.txt HTTP/1.1\r\nHost: {server}\r\nX-Access-Token: {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
    assert!(closed);

    // Slowloris: half a request head, then nothing. Cut off by the 2 s header timeout.
    for head in [
        format!("GET /proxy/{id}/8000/hello.txt HTTP/1.1\r\nHost: {server}\r\nX-Acc"),
        format!("GET /hello.txt HTTP/1.1\r\nHost: {h8000}\r\n"),
    ] {
        let t = Instant::now();
        let (resp, closed) = raw(&s, head.as_bytes());
        let took = t.elapsed();
        assert!(closed, "slow client not cut off: {resp}");
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "cut off after {took:?}"
        );
        assert!(!resp.contains(HELLO.trim()));
    }
    // The server still serves after all that.
    let (st, body, _) =
        text(via_path(&s, &id, 8000, "hello.txt").header("x-access-token", &token)).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, HELLO));
}

/// HTTP/2 from the client side (h2c with prior knowledge, by curl), forwarded as HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_served_through_both_url_forms() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no curl");
        return;
    }
    let s = Server::start(&[]);
    let (id, token) = serving_sandbox(&s).await;
    let port = port_of(&s);
    let host_url = format!("http://8000-{id}.localhost:{port}/hello.txt");
    let path_url = format!("{}/proxy/{id}/8000/hello.txt", s.url);
    let resolve = format!("8000-{id}.localhost:{port}:127.0.0.1");
    for (url, extra) in [
        (&host_url, vec!["--resolve", resolve.as_str()]),
        (&path_url, vec![]),
    ] {
        let o = std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-w",
                "\n%{http_version} %{http_code}",
            ])
            .args(&extra)
            .args(["-H", &format!("x-access-token: {token}"), url.as_str()])
            .output()
            .expect("curl");
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            out,
            format!("{HELLO}\n2 200"),
            "{url}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Without the token: refused over HTTP/2 too.
        let o = std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(&extra)
            .arg(url.as_str())
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "401", "{url}");
    }
}

/// A bulk download through the proxy is spliced from the sandbox's socket into the client's
/// (`splice`, `proxy::upstream`): the bytes arrive whole, the client's keep-alive connection
/// serves ordinary answers afterwards, answers without a body pass through, and a sandbox
/// deleted mid-download cuts the body off with an error instead of ending it short.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_downloads_are_spliced_whole_and_the_connection_stays_usable() {
    use sha2::{Digest, Sha256};
    let s = Server::start(&[]);
    let (id, token) = serving_sandbox(&s).await;
    let mut x = 0x9e37_79b9u32;
    let data: Vec<u8> = (0..(24 << 20) + 4321)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let (st, v) = call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/www/big.bin"),
        )
        .body(data.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let c = client();
    let url = |rest: &str| format!("{}/proxy/{id}/8000/{rest}", s.url);
    let get = |rest: &str| c.get(url(rest)).header("x-access-token", &token);
    for round in 0..2 {
        let r = get("big.bin").send().await.expect("download");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(data.len() as u64));
        let body = r.bytes().await.expect("body");
        assert_eq!(
            Sha256::digest(&body),
            Sha256::digest(&data),
            "round {round}"
        );
        // The same keep-alive connection answers the next request correctly.
        let r = get("hello.txt").send().await.expect("hello");
        assert_eq!(r.text().await.expect("text"), HELLO);
    }
    // A 404 with a body, and HEAD (no body) pass through.
    let r = get("missing").send().await.expect("404");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.expect("text").contains("404"));
    let r = c
        .head(url("big.bin"))
        .header("x-access-token", &token)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(data.len().to_string().as_str())
    );

    // Deleted mid-download: an error, never a short body that looks complete.
    let r = get("big.bin").send().await.expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let mut got = body.next().await.expect("first").expect("chunk").len();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success(), "{st}");
    let mut broke = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => got += b.len(),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke || got == data.len(), "ended short at {got} bytes");
    let (st, _) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK);
}

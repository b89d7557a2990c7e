//! HTTPS: with `--tls-cert`/`--tls-key` the server speaks TLS only, HTTP/2 and HTTP/1.1 by
//! ALPN, for the API and for the port proxy's host and path URLs. The certificates are made
//! here with `openssl` (a test CA and a leaf for `paddock.test`, `*.paddock.test` and
//! 127.0.0.1); every name is resolved to loopback by the client itself, or, for the code
//! interpreter SDK, by Paddock's DNS responder.

mod server;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::{StatusCode, Version};
use serde_json::{Value, json};
use server::Server;
use server::venv::prepare_venv;

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running openssl");
    assert!(st.success(), "openssl {args:?} failed");
}

/// A CA and a leaf certificate signed by it, in `dir`: `ca.pem`, `cert.pem`, `key.pem`.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:paddock.test,DNS:*.paddock.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    for args in [
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ][..],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=Paddock test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "ca.pem",
        ][..],
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "leaf.key",
        ][..],
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key", "-out", "key.pem",
        ][..],
        &[
            "req",
            "-new",
            "-key",
            "leaf.key",
            "-subj",
            "/CN=paddock.test",
            "-out",
            "leaf.csr",
        ][..],
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ][..],
    ] {
        openssl(dir, args);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_api_and_proxy_speak_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let (cert, key) = (p("cert.pem"), p("key.pem"));
    let s = Server::start(&[
        "--domain",
        "paddock.test",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let addr: std::net::SocketAddr = s.url.trim_start_matches("https://").parse().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(p("ca.pem")).unwrap()).unwrap();
    let client = |h1: bool| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(30));
        if h1 {
            b = b.http1_only();
        }
        b
    };
    let h2 = client(false).build().unwrap();
    let h1 = client(true).build().unwrap();

    // The API, both protocols.
    for (c, v) in [(&h2, Version::HTTP_2), (&h1, Version::HTTP_11)] {
        let r = c.get(format!("{}/v1/health", s.url)).send().await.unwrap();
        assert_eq!((r.status(), r.version()), (StatusCode::OK, v));
    }
    let r = h2
        .post(format!("{}/v1/sandboxes", s.url))
        .bearer_auth(&s.admin_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let sbx: Value = r.json().await.unwrap();
    let id = sbx["id"].as_str().unwrap().to_owned();
    let r = h2
        .post(format!("{}/v1/sandboxes/{id}/exec", s.url))
        .bearer_auth(&s.admin_key)
        .json(&json!({"cmd": ["bash", "-c", "mkdir -p /tmp/site && echo 'over tls' > /tmp/site/index.html && cd /tmp/site && exec python3 -m http.server 8000 --bind 127.0.0.1"], "background": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = h2
        .post(format!("{}/v1/sandboxes/{id}/ports/8000/public", s.url))
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);

    // The proxy by host name (the client resolves the wildcard name to the server) and by
    // path, over HTTP/2.
    let host = format!("8000-{id}.paddock.test");
    let by_host = client(false).resolve(&host, addr).build().unwrap();
    let host_url = format!("https://{host}:{}/", addr.port());
    let path_url = format!("{}/proxy/{id}/8000/", s.url);
    for (c, url) in [(&by_host, &host_url), (&h2, &path_url)] {
        let mut last = None;
        for _ in 0..100 {
            let r = c.get(url.as_str()).send().await.unwrap();
            if r.status() == StatusCode::OK {
                last = Some((r.version(), r.text().await.unwrap()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            last,
            Some((Version::HTTP_2, "over tls\n".to_owned())),
            "{url}"
        );
    }

    // Plain HTTP to the TLS port gets nothing; a client that never finishes its handshake is
    // cut off by the header timeout.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v1/health"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), stalled.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

/// The code interpreter SDKs build `https://49999-{id}.{domain}` themselves when no
/// `E2B_SANDBOX_URL` is set: with a certificate for `*.{domain}` and names that resolve to
/// Paddock (here its DNS responder, in a mount namespace whose resolv.conf names only it),
/// the unmodified Python SDK creates a sandbox, reaches envd and runs code on port 49999,
/// all over TLS (a stand-in interpreter: this test does not build the template).
#[tokio::test(flavor = "multi_thread")]
async fn code_interpreter_sdk_builds_its_https_url() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let sdk = tests.join("code-interpreter");
    let python = tokio::task::spawn_blocking({
        let sdk = sdk.clone();
        move || prepare_venv("/var/tmp/paddock-code-interpreter-venv", &sdk)
    })
    .await
    .expect("venv task");
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    // A loopback address of its own per run, so concurrent runs never share port 53.
    let dns_ip = format!("127.0.54.{}", 1 + std::process::id() % 250);
    let s = Server::start(&[
        "--domain",
        "paddock.test",
        "--tls-cert",
        &p("cert.pem"),
        "--tls-key",
        &p("key.pem"),
        "--dns-listen",
        &format!("{dns_ip}:53"),
    ]);
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {dns_ip}\noptions timeout:2 attempts:2\n"),
    )
    .unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
            resolv.display()
        ))
        .arg(&python)
        .arg(sdk.join("over_https.py"))
        .arg(tests.join("mcp/fake_interpreter.py"))
        .env("E2B_API_URL", &s.url)
        .env("E2B_API_KEY", &s.admin_key)
        .env("SSL_CERT_FILE", p("ca.pem"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for var in [
        "E2B_SANDBOX_URL",
        "E2B_DOMAIN",
        "E2B_DEBUG",
        "E2B_ACCESS_TOKEN",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("running the SDK"))
        .await
        .expect("SDK task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("code interpreter over https ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = s.url.rsplit(':').next().unwrap().to_owned();
    assert!(
        stdout.contains("interpreter url https://49999-"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(".paddock.test:{port}")),
        "{stdout}"
    );
}

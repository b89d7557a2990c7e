//! The fake internet shared by the network tests and the network benchmark.
//!
//! A network namespace made here, `pdkfake`, linked to the host by a veth pair that plays
//! the host's uplink: the host end has 198.51.100.254/25 (a public subnet directly connected
//! to the host, like a server's LAN), the fake side 198.51.100.129 (the uplink's router,
//! through which the host reaches the "internet") and 198.51.100.130 (a neighbour on the
//! uplink). The internet is 198.51.100.1, .2 and .77 (TEST-NET-2), routed through .129, and
//! 169.254.169.254 (a "metadata service", routed there too). It runs HTTP servers, a DNS
//! server that answers over UDP and TCP (logging every name it is asked, TCP ones as
//! `tcp <name>`; the addresses per name are in `FAKE_DNS`), and a bulk TCP sender on port
//! 9000. A probe listens on every host address (port 18765), on the router and on the
//! neighbour (port 80): no sandbox may reach any of them. Nothing is sent anywhere else.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const FAKE_NS: &str = "pdkfake";
const FAKE_LINK: &str = "pdkfakeh";

pub fn sh_host(script: &str) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("running bash");
    assert!(
        o.status.success(),
        "host command failed: {script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The fake DNS server (python3, stdlib only).
const FAKE_DNS: &str = r#"
import socket, struct, sys, threading
log = open(sys.argv[1], "a", buffering=1)
# A records per name (every other name: 198.51.100.2). The `*.wild.test` names below
# `www` answer what no sandbox may reach: metadata, loopback, private, the host's uplink.
ANSWERS = {
    "allowed.test": ["198.51.100.1"],
    "www.wild.test": ["198.51.100.1"],
    "meta.wild.test": ["169.254.169.254"],
    "lo.wild.test": ["127.0.0.1"],
    "gw.wild.test": ["198.51.100.129"],
    "lan.wild.test": ["198.51.100.130"],
    "mixed.wild.test": ["10.0.0.5", "198.51.100.1", "198.51.100.130"],
}
def name_of(q):
    i, labels = 12, []
    while q[i]:
        labels.append(q[i+1:i+1+q[i]].decode()); i += 1 + q[i]
    return ".".join(labels).lower(), i + 5
def reply(q, how):
    name, end = name_of(q)
    qtype = struct.unpack(">H", q[end-4:end-2])[0]
    log.write(how + name + "\n")
    ips = ANSWERS.get(name, ["198.51.100.2"]) if qtype == 1 else []
    hdr = q[:2] + b"\x81\x80" + q[4:6] + struct.pack(">H", len(ips)) + b"\x00\x00\x00\x00"
    ans = b"".join(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(ip) for ip in ips)
    return hdr + q[12:end] + ans
def serve(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 53))
    while True:
        q, peer = s.recvfrom(512)
        s.sendto(reply(q, ""), peer)
def exactly(c, n):
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k: raise EOFError
        b += k
    return b
def serve_conn(c):
    try:
        while True:
            q = exactly(c, struct.unpack(">H", exactly(c, 2))[0])
            r = reply(q, "tcp ")
            c.sendall(struct.pack(">H", len(r)) + r)
    except Exception:
        c.close()
def serve_tcp(addr):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 53)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=serve_conn, args=(c,), daemon=True).start()
for a in ("198.51.100.1", "198.51.100.2"):
    threading.Thread(target=serve, args=(a,), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(a,), daemon=True).start()
threading.Event().wait()
"#;

/// A tiny HTTP server answering `host <its address>` and logging requests.
const FAKE_HTTP: &str = r#"
import http.server, sys, threading
log = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        me = self.server.server_address[0]
        log.write(me + " " + self.path + "\n")
        body = ("host " + me + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
for a in sys.argv[2:]:
    addr, port = a.rsplit(":", 1)
    srv = http.server.ThreadingHTTPServer((addr, int(port)), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
threading.Event().wait()
"#;

/// A bulk TCP sender: reads a decimal byte count and a newline, sends that many bytes.
const FAKE_BULK: &str = r#"
import socket, threading
buf = b"x" * (1 << 20)
def serve(c):
    n = int(c.makefile().readline())
    while n > 0:
        k = c.send(buf[:min(n, len(buf))]); n -= k
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.1", 9000)); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The fake internet; torn down on drop (also when a test fails).
pub struct FakeNet {
    pub dir: PathBuf,
    pids: Vec<u32>,
}

impl FakeNet {
    pub fn up() -> FakeNet {
        Self::teardown_objects();
        let dir = PathBuf::from("/var/tmp/paddock-test-fakenet");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dns.py"), FAKE_DNS).unwrap();
        std::fs::write(dir.join("fakeweb.py"), FAKE_HTTP).unwrap();
        std::fs::write(dir.join("bulk.py"), FAKE_BULK).unwrap();
        sh_host(&format!(
            "ip netns add {FAKE_NS}
             ip link add {FAKE_LINK} type veth peer name eth0 netns {FAKE_NS}
             ip addr add 198.51.100.254/25 dev {FAKE_LINK}; ip link set {FAKE_LINK} up
             ip -n {FAKE_NS} addr add 198.51.100.129/25 dev eth0
             ip -n {FAKE_NS} addr add 198.51.100.130/25 dev eth0
             for a in 198.51.100.1 198.51.100.2 198.51.100.77 169.254.169.254; do
               ip -n {FAKE_NS} addr add $a/32 dev eth0
             done
             ip -n {FAKE_NS} link set eth0 up; ip -n {FAKE_NS} link set lo up
             ip route add 198.51.100.0/25 via 198.51.100.129 dev {FAKE_LINK}
             ip route add 169.254.169.254/32 via 198.51.100.129 dev {FAKE_LINK}"
        ));
        let py = "/usr/bin/python3";
        let d = dir.display();
        let spawn = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting fake service")
                .id()
        };
        let dns_log = format!("{d}/dns.log");
        let web_log = format!("{d}/web.log");
        let probe_log = format!("{d}/probe.log");
        let pids = vec![
            spawn(&[
                "ip",
                "netns",
                "exec",
                FAKE_NS,
                py,
                &format!("{d}/dns.py"),
                &dns_log,
            ]),
            spawn(&[
                "ip",
                "netns",
                "exec",
                FAKE_NS,
                py,
                &format!("{d}/fakeweb.py"),
                &web_log,
                "198.51.100.1:80",
                "198.51.100.2:80",
                "198.51.100.77:80",
            ]),
            // The metadata service (routed like any internet address) and a probe on every
            // host address (the host's own services): neither may log a sandbox's request.
            spawn(&[
                "ip",
                "netns",
                "exec",
                FAKE_NS,
                py,
                &format!("{d}/fakeweb.py"),
                &probe_log,
                "169.254.169.254:80",
                "198.51.100.129:80",
                "198.51.100.130:80",
            ]),
            spawn(&[py, &format!("{d}/fakeweb.py"), &probe_log, "0.0.0.0:18765"]),
            spawn(&["ip", "netns", "exec", FAKE_NS, py, &format!("{d}/bulk.py")]),
        ];
        let f = FakeNet { dir, pids };
        // Wait until the services answer (from the host).
        for _ in 0..100 {
            let ok = Command::new("bash")
                .arg("-c")
                .arg("exec 3<>/dev/tcp/198.51.100.1/80 && exec 4<>/dev/tcp/169.254.169.254/80 && exec 5<>/dev/tcp/127.0.0.1/18765 && exec 8<>/dev/tcp/198.51.100.130/80 && exec 6<>/dev/tcp/198.51.100.1/9000 && exec 7<>/dev/tcp/198.51.100.2/53")
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Warm-up requests from the host are not sandbox traffic.
        std::fs::write(f.dir.join("probe.log"), "").unwrap();
        std::fs::write(f.dir.join("web.log"), "").unwrap();
        f
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn teardown_objects() {
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ip route del 169.254.169.254/32; ip route del 198.51.100.0/25; ip netns del {FAKE_NS}; ip link del {FAKE_LINK}"
            ))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for FakeNet {
    fn drop(&mut self) {
        for pid in &self.pids {
            // Only the processes this test started, by pid.
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        // `ip netns exec` children: kill what still runs inside the namespace.
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "for p in $(ip netns pids {FAKE_NS} 2>/dev/null); do kill $p; done"
            ))
            .status();
        Self::teardown_objects();
    }
}

//! A real PostgreSQL for tests: Debian's `postgresql` package (major version 15), started by
//! `initdb` and `pg_ctl` in a fresh directory under `/var/tmp` as the `postgres` user (when
//! the tests run as root), listening on 127.0.0.1 on a free port with its socket inside that
//! directory. The system cluster and service of the package are never touched.
//!
//! [`shared`] is one server per test binary, started on first use; a test gets its own
//! database from [`shared_db`] (`CREATE DATABASE` of a fresh name, dropped with the guard).
//! [`PgServer::start`] is a server of the caller's own, for tests that stop and start it
//! underneath Paddock.
//!
//! Cleanup does not rely on destructors (a static is never dropped, a test binary may be
//! killed): each server has a reaper, a `sh` in its own process group whose stdin is a pipe
//! only the test process holds. When that closes (the [`PgServer`] is dropped, on panic
//! too, or the test process exits or is killed), the reaper stops the server (`SIGQUIT`,
//! immediate shutdown) and removes its directory.

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where Debian's package installs the server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How long the server may take to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Where a server lives and who runs it.
#[derive(Debug, Clone)]
pub struct PgPlace {
    /// `/var/tmp/paddock-pg<tag>-<pid>-<n>`: `data/` (the cluster), `sock/`, `log`.
    pub dir: PathBuf,
    pub port: u16,
    /// Run the server's tools as this user (the `postgres` user when we are root).
    owner: Option<(u32, u32)>,
}

/// A PostgreSQL server of the tests; stopped and removed when dropped.
#[derive(Debug)]
pub struct PgServer {
    pub place: PgPlace,
    /// The reaper's stdin: closing it stops and removes the server.
    reaper: Mutex<Option<ChildStdin>>,
}

fn prefix() -> String {
    let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
    format!("paddock-pg{tag}-")
}

/// The uid and gid of the `postgres` user, when we are root (PostgreSQL refuses to run as
/// root); None otherwise (the server runs as whoever runs the tests).
fn owner() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no `postgres` user: install Debian's postgresql package");
    let f: Vec<&str> = line.split(':').collect();
    Some((
        f[2].parse().expect("postgres uid"),
        f[3].parse().expect("postgres gid"),
    ))
}

/// Fails loudly, naming the package, when PostgreSQL is not installed.
fn require_postgres() {
    let pg_ctl = Path::new(PG_BIN).join("pg_ctl");
    assert!(
        pg_ctl.exists(),
        "{} missing: install Debian's `postgresql` package (apt-get install postgresql; .ci/run does)",
        pg_ctl.display()
    );
}

/// A port nothing listens on now (the kernel's choice for port 0).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// Starts the reaper of the server in `dir`: it waits for its stdin to close, then stops
/// the postmaster (its pid is the first line of `postmaster.pid`) with `SIGQUIT`, waits up
/// to 30 s for it to exit, and removes `dir`.
// Nobody waits for the reaper: it ends after its work, after the test process has closed
// the pipe, and init reaps it.
#[allow(clippy::zombie_processes)]
fn reaper(dir: &Path) -> ChildStdin {
    use std::os::unix::process::CommandExt as _;
    let script = r#"cat >/dev/null
pidfile="$1/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pid=$(head -n1 "$pidfile")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -rf "$1""#;
    let mut child = Command::new("sh")
        .args(["-c", script, "reaper"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting the PostgreSQL reaper");
    child.stdin.take().expect("reaper stdin")
}

impl PgPlace {
    /// A command running tool `name` of the server as its owner.
    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(Path::new(PG_BIN).join(name));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            c.uid(uid).gid(gid);
        }
        if self.port != 0 {
            c.env("PGPORT", self.port.to_string());
        }
        c.env("PGHOST", self.dir.join("sock"))
            .env("PGUSER", "postgres")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    fn try_start(&self) -> bool {
        let opts = format!("-p {} -k {}", self.port, self.dir.join("sock").display());
        self.tool("pg_ctl")
            .args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &opts])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs one SQL statement with `psql` in database `postgres`.
    pub fn psql(&self, sql: &str) -> Result<(), String> {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL statement with `psql` in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> Result<(), String> {
        let out = self
            .tool("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The URL of database `db` (over TCP on loopback, as a remote server would be).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl PgServer {
    /// Initialises and starts a new server of the caller's own.
    pub fn start() -> PgServer {
        static N: AtomicU32 = AtomicU32::new(0);
        require_postgres();
        let dir = PathBuf::from(format!(
            "/var/tmp/{}{}-{}",
            prefix(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).expect("creating the PostgreSQL directory");
        let owner = owner();
        if let Some((uid, gid)) = owner {
            for p in [dir.clone(), dir.join("sock")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        let s = PgServer {
            reaper: Mutex::new(Some(reaper(&dir))),
            place: PgPlace {
                dir,
                port: 0,
                owner,
            },
        };
        let out = s
            .place
            .tool("initdb")
            .arg("-D")
            .arg(s.place.dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Tests need speed, not durability (the server dies with the test run anyway).
        let conf = "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                    max_connections = 300\nshared_buffers = 32MB\nlisten_addresses = '127.0.0.1'\n";
        let conf_path = s.place.dir.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("reading postgresql.conf");
        text.push_str(conf);
        std::fs::write(&conf_path, text).expect("writing postgresql.conf");
        let mut s = s;
        // Another process may take the port between our look and the server's bind: retry.
        for attempt in 0.. {
            s.place.port = free_port();
            if s.place.try_start() {
                break;
            }
            assert!(
                attempt < 5,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(s.place.dir.join("log")).unwrap_or_default()
            );
        }
        s
    }

    pub fn port(&self) -> u16 {
        self.place.port
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        self.place.url(db)
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, the server shuts down cleanly.
    pub fn stop_fast(&self) {
        let st = self
            .place
            .tool("pg_ctl")
            .args(["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "fast", "-D"])
            .arg(self.place.dir.join("data"))
            .stdout(Stdio::null())
            .status()
            .expect("running pg_ctl stop");
        assert!(st.success(), "pg_ctl stop failed");
    }

    /// Starts the server again after [`PgServer::stop_fast`], on the same port.
    pub fn start_again(&self) {
        assert!(
            self.place.try_start(),
            "PostgreSQL did not start again: {}",
            std::fs::read_to_string(self.place.dir.join("log")).unwrap_or_default()
        );
    }

    /// A new empty database; dropped with the guard.
    pub fn create_db(&self) -> PgDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.place
            .psql(&format!("CREATE DATABASE {name}"))
            .expect("creating a database");
        PgDb {
            place: self.place.clone(),
            url: self.place.url(&name),
            name,
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing the reaper's stdin makes it stop the server and remove the directory.
        let reaper = self.reaper.lock().map(|mut r| r.take());
        drop(reaper);
    }
}

/// A database of its own on a server; dropped (connections and all) with the guard.
#[derive(Debug)]
pub struct PgDb {
    place: PgPlace,
    pub name: String,
    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub url: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Kept for a look; the server goes with the test binary anyway.
            return;
        }
        let _ = self.place.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// The test binary's one shared server, started on first use, stopped and removed when the
/// binary exits (by its reaper).
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let started = Instant::now();
        let s = PgServer::start();
        eprintln!(
            "PostgreSQL for this test binary on 127.0.0.1:{} ({} ms to start)",
            s.port(),
            started.elapsed().as_millis()
        );
        s
    })
}

/// A fresh database on the shared server.
pub fn shared_db() -> PgDb {
    shared().create_db()
}

/// Waits until the server takes connections.
pub fn wait_ready(s: &PgServer, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = s
            .place
            .tool("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &s.port().to_string()])
            .status()
            .is_ok_and(|st| st.success());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL not ready in {within:?}"
        );
        std::thread::sleep(super::POLL_EVERY);
    }
}

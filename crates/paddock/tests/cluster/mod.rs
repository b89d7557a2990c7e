//! Test harness of the fleet: `paddock control` and `paddock node` processes, each with
//! its own data directory under a fresh directory in `/var/tmp`, on one shared store: a
//! fresh database on the test binary's PostgreSQL (`support/pg.rs`), or on a PostgreSQL of
//! the fleet's own (`Db::OwnPostgres`, for tests that stop it), or a shared SQLite file
//! (`Db::Sqlite`; `PADDOCK_FLEET_DB=sqlite` makes it the default, for the bench's
//! comparison).

#![allow(dead_code, unreachable_pub)] // The test and the bench use different subsets.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{self, call, pg, require_root};

pub const TOKEN: &str = "fleet-test-token-0123456789abcdef0123456789";

/// One `paddock control` or `paddock node` process.
pub struct Proc {
    child: Option<Child>,
    pub url: String,
    pub args: Vec<String>,
    pub data: Option<PathBuf>,
}

impl Proc {
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if server::wait_or_kill(&mut c, Duration::from_secs(30)).is_none() {
            eprintln!("a fleet process did not stop in 30 s; killed");
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let (child, url, _) = spawn(&self.args, TOKEN);
        self.child = Some(child);
        self.url = url;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = &self.data {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(d.join("layers"))
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Starts a process with `args`; returns it, its URL and the admin key it printed.
// The child is waited for by `Proc::stop`/`kill9`/`Drop`.
#[allow(clippy::zombie_processes)]
pub fn spawn(args: &[String], token: &str) -> (Child, String, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_AGENT_BIN", env!("CARGO_BIN_EXE_paddock-agent"))
        .env("PADDOCK_FLEET_TOKEN", token)
        .env("PADDOCK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning paddock");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut key = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("paddock did not print its address within 60 s");
        if let Some(k) = line.strip_prefix("PADDOCK_API_KEY=") {
            key = Some(k.to_owned());
        }
        if let Some(u) = line
            .strip_prefix("paddock: listening on ")
            .or_else(|| line.strip_prefix("paddock: control plane listening on "))
        {
            return (child, u.to_owned(), key);
        }
    }
}

/// Which store a fleet shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// A fresh database on the test binary's PostgreSQL.
    SharedPostgres,
    /// A PostgreSQL of the fleet's own (`Fleet::pg_server`), which the test may stop.
    OwnPostgres,
    /// One SQLite file in the fleet's directory.
    Sqlite,
}

impl Db {
    /// `SharedPostgres`, unless `PADDOCK_FLEET_DB=sqlite`.
    pub fn default_for_tests() -> Db {
        match std::env::var("PADDOCK_FLEET_DB").as_deref() {
            Ok("sqlite") => Db::Sqlite,
            _ => Db::SharedPostgres,
        }
    }
}

/// Control planes and nodes on one store in a fresh directory.
pub struct Fleet {
    pub dir: PathBuf,
    /// The `--database-url` of every process.
    pub db: String,
    /// The PostgreSQL of `Db::OwnPostgres`.
    pub pg_server: Option<pg::PgServer>,
    /// The PostgreSQL database (dropped after the processes).
    pg_db: Option<pg::PgDb>,
    pub admin_key: String,
    pub controls: Vec<Proc>,
    pub nodes: Vec<Proc>,
    pub control_extra: Vec<String>,
    pub node_extra: Vec<String>,
    pub http: reqwest::Client,
}

impl Fleet {
    pub fn start(controls: usize, nodes: &[&[&str]]) -> Fleet {
        Fleet::start_with(controls, nodes, &[], &[])
    }

    /// Like `start`, with extra flags for every control plane and every node.
    pub fn start_with(
        controls: usize,
        nodes: &[&[&str]],
        control_extra: &[&str],
        node_extra: &[&str],
    ) -> Fleet {
        Fleet::start_on(
            Db::default_for_tests(),
            controls,
            nodes,
            control_extra,
            node_extra,
        )
    }

    /// Like `start_with`, on the store `on`.
    pub fn start_on(
        on: Db,
        controls: usize,
        nodes: &[&[&str]],
        control_extra: &[&str],
        node_extra: &[&str],
    ) -> Fleet {
        require_root("the fleet tests (real nodes)");
        let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
        let id = paddock_core::SandboxId::random();
        let dir = PathBuf::from(format!("/var/tmp/paddock-fleet{tag}-{}", &id.as_str()[..8]));
        std::fs::create_dir_all(&dir).expect("fleet dir");
        let (db, pg_server, pg_db) = match on {
            Db::Sqlite => (
                format!("sqlite:{}", dir.join("fleet.db").display()),
                None,
                None,
            ),
            Db::SharedPostgres => {
                let d = pg::shared_db();
                (d.url.clone(), None, Some(d))
            }
            Db::OwnPostgres => {
                let s = pg::PgServer::start();
                let d = s.create_db();
                (d.url.clone(), Some(s), Some(d))
            }
        };
        let mut f = Fleet {
            dir,
            db,
            pg_server,
            pg_db,
            admin_key: String::new(),
            controls: Vec::new(),
            nodes: Vec::new(),
            control_extra: control_extra.iter().map(|s| (*s).to_owned()).collect(),
            node_extra: node_extra.iter().map(|s| (*s).to_owned()).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
        };
        for _ in 0..controls {
            f.add_control();
        }
        for labels in nodes {
            f.add_node(labels);
        }
        f
    }

    pub fn add_control(&mut self) {
        let mut args: Vec<String> = [
            "control",
            "--database-url",
            &self.db,
            "--listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(self.control_extra.iter().cloned());
        let (child, url, key) = spawn(&args, TOKEN);
        if let Some(k) = key {
            self.admin_key = k;
        }
        assert!(
            !self.admin_key.is_empty(),
            "the first control plane prints the admin key"
        );
        self.controls.push(Proc {
            child: Some(child),
            url,
            args,
            data: None,
        });
    }

    pub fn node_args(&self, n: usize, labels: &[&str]) -> (Vec<String>, PathBuf) {
        let data = self.dir.join(format!("node{n}"));
        let mut args: Vec<String> = [
            "node",
            "--data-dir",
            &data.display().to_string(),
            "--database-url",
            &self.db,
            "--listen",
            "127.0.0.1:0",
            "--name",
            &format!("node{n}"),
            "--on-shutdown",
            "destroy",
        ]
        .map(|s| s.to_owned())
        .to_vec();
        for l in labels {
            args.extend(["--label".to_owned(), (*l).to_owned()]);
        }
        args.extend(self.node_extra.iter().cloned());
        (args, data)
    }

    pub fn add_node(&mut self, labels: &[&str]) {
        let (args, data) = self.node_args(self.nodes.len() + 1, labels);
        let (child, url, _) = spawn(&args, TOKEN);
        // A restarted node listens on a new port; it registers its new address.
        self.nodes.push(Proc {
            child: Some(child),
            url,
            args,
            data: Some(data),
        });
    }

    pub fn req(&self, control: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.req_as(&self.admin_key, control, method, path)
    }

    pub fn req_as(
        &self,
        key: &str,
        control: usize,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.controls[control].url))
            .bearer_auth(key)
    }

    pub async fn create(&self, control: usize, body: Value) -> Value {
        let (st, v) = call(self.req(control, Method::POST, "/v1/sandboxes").json(&body)).await;
        assert_eq!(st, StatusCode::CREATED, "create: {v}");
        v
    }

    pub async fn nodes(&self) -> Vec<Value> {
        let (st, v) = call(self.req(0, Method::GET, "/v1/nodes")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["nodes"].as_array().expect("nodes").clone()
    }

    pub async fn node_id(&self, name: &str) -> String {
        let n = self.nodes().await;
        let n = n.iter().find(|n| n["name"] == name).expect("node listed");
        n["id"].as_str().expect("id").to_owned()
    }

    pub async fn exec(&self, control: usize, id: &str, cmd: &str) -> Value {
        let (st, v) = call(
            self.req(control, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"command": cmd})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "exec: {v}");
        v
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Nodes first: they destroy their sandboxes on the way down; the database last.
        self.nodes.clear();
        self.controls.clear();
        self.pg_db = None;
        self.pg_server = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

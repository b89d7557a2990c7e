//! The runner of one rollout: starts targets in `seq` order, at most `concurrency` at once;
//! after `max_failures` failures (or a cancel) starts no more and marks the rest `skipped`;
//! after a stop by failures runs the rollback on every target whose command or upload was
//! started (succeeded or failed: a failed command may have changed the sandbox halfway).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use paddock_runtime::{ExecRequest, Sandbox};
use paddock_store::{RolloutRecord, RolloutTarget, now_ms};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, watch};

use super::TAIL_BYTES;
use super::spec::{Action, Spec, Upload};
use super::view::{Progress, ProgressKind, RolloutView};
use crate::state::AppState;
use crate::text::rfc3339;

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
        if self.0.len() > TAIL_BYTES {
            let cut = self.0.len() - TAIL_BYTES;
            self.0.drain(..cut);
        }
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// How one command, upload or rollback in one sandbox went.
struct Outcome {
    ok: bool,
    exit_code: Option<i32>,
    status: String,
    stdout: String,
    stderr: String,
    error: Option<String>,
    started_at: i64,
    duration: Duration,
}

impl Outcome {
    fn json(&self) -> Value {
        json!({
            "exit_code": self.exit_code,
            "status": self.status,
            "stdout_tail": self.stdout,
            "stderr_tail": self.stderr,
            "error": self.error,
            "started_at": rfc3339(Some(self.started_at)),
            "finished_at": rfc3339(Some(self.started_at + self.duration.as_millis() as i64)),
            "duration_ms": self.duration.as_millis() as u64,
        })
    }

    fn failed(started_at: i64, t0: Instant, status: &str, error: String) -> Outcome {
        Outcome {
            ok: false,
            exit_code: None,
            status: status.into(),
            stdout: String::new(),
            stderr: String::new(),
            error: Some(error),
            started_at,
            duration: t0.elapsed(),
        }
    }
}

/// Runs `argv` in the sandbox to the end, keeping the tails of its output.
async fn command(sbx: &Sandbox, argv: &[String], spec: &Spec) -> Outcome {
    let started_at = now_ms();
    let t0 = Instant::now();
    let (mut out, mut err) = (Tail::default(), Tail::default());
    let r = sbx
        .exec_with(
            ExecRequest {
                argv: argv.to_vec(),
                env: Default::default(),
                cwd: None,
                user: spec.user.clone(),
                stdin: None,
                timeout: Some(spec.timeout),
                // Nothing is collected whole: the callback keeps the tails.
                max_output: Some(0),
            },
            |is_err, b| if is_err { err.push(b) } else { out.push(b) },
        )
        .await;
    match r {
        Ok(r) => Outcome {
            ok: r.exit_code == Some(0) && !r.timed_out,
            exit_code: r.exit_code,
            status: if r.timed_out {
                format!("timeout after {} s", spec.timeout.as_secs())
            } else {
                r.status
            },
            stdout: out.text(),
            stderr: err.text(),
            error: None,
            started_at,
            duration: r.duration,
        },
        Err(e) => Outcome::failed(started_at, t0, "failed to start", e.to_string()),
    }
}

/// Puts the upload into the sandbox.
async fn upload(sbx: &Sandbox, up: &Upload, spec: &Spec) -> Outcome {
    let started_at = now_ms();
    let t0 = Instant::now();
    let r = tokio::time::timeout(spec.timeout, put(sbx, up, spec.user.as_deref())).await;
    let r = r.unwrap_or_else(|_| Err(format!("timeout after {} s", spec.timeout.as_secs())));
    match r {
        Ok(status) => Outcome {
            ok: true,
            exit_code: None,
            status,
            stdout: String::new(),
            stderr: String::new(),
            error: None,
            started_at,
            duration: t0.elapsed(),
        },
        Err(e) => Outcome::failed(started_at, t0, "upload failed", e),
    }
}

async fn put(sbx: &Sandbox, up: &Upload, user: Option<&str>) -> Result<String, String> {
    match up {
        Upload::Files(files) => {
            for (path, data) in files {
                sbx.write_file(path, data.to_vec(), user)
                    .await
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            Ok(format!("wrote {} files", files.len()))
        }
        Upload::Tar { dir, data } => {
            use base64::Engine as _;
            use http_body_util::BodyExt as _;
            let u = user.unwrap_or(&sbx.user);
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("path", dir)
                .append_pair("username", u)
                .finish();
            let req = http::Request::post(format!("http://agent/archive?{query}"))
                .header(
                    http::header::AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:"))
                    ),
                )
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(http_body_util::Full::new(data.clone()))
                .map_err(|e| format!("bad path: {e}"))?;
            let resp = sbx.agent_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), 64 << 10)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(format!("extracted into {dir}"))
            } else {
                let msg = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| status.to_string());
                Err(msg)
            }
        }
    }
}

/// The shared state of one run.
struct Run {
    state: Arc<AppState>,
    spec: Spec,
    progress: broadcast::Sender<Progress>,
    failures: AtomicU32,
}

impl Run {
    /// Writes a target's new state to the store, then tells the subscribers.
    async fn update(&self, t: &RolloutTarget) {
        if let Err(e) = self.state.store.update_rollout_target(t).await {
            tracing::error!(rollout = %t.rollout_id, "storing a rollout target: {e}");
        }
        let _ = self.progress.send(Progress::sandbox(t));
    }

    fn stopped_by_failures(&self) -> bool {
        self.failures.load(Ordering::SeqCst) >= self.spec.max_failures
    }

    /// One target's command or upload.
    async fn work(&self, mut t: RolloutTarget) -> RolloutTarget {
        let sbx = match self.state.runtime.get(&t.sandbox_id) {
            Ok(s) if s.is_alive() => s,
            _ => {
                t.state = "skipped".into();
                t.result = json!({ "error": "the sandbox is no longer running on this server" });
                self.update(&t).await;
                return t;
            }
        };
        t.state = "running".into();
        t.result = json!({ "started_at": rfc3339(Some(now_ms())) });
        self.update(&t).await;
        let o = match &self.spec.action {
            Action::Command(argv) => command(&sbx, argv, &self.spec).await,
            Action::Upload(up) => upload(&sbx, up, &self.spec).await,
        };
        t.state = if o.ok { "succeeded" } else { "failed" }.into();
        t.result = o.json();
        if !o.ok {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        self.update(&t).await;
        t
    }

    /// The rollback of one changed target.
    async fn roll_back(&self, mut t: RolloutTarget, argv: &[String]) -> RolloutTarget {
        let o = match self.state.runtime.get(&t.sandbox_id) {
            Ok(sbx) if sbx.is_alive() => command(&sbx, argv, &self.spec).await,
            _ => Outcome::failed(
                now_ms(),
                Instant::now(),
                "not run",
                "the sandbox is no longer running on this server".into(),
            ),
        };
        t.result["outcome_before_rollback"] = json!(t.state);
        t.result["rollback"] = o.json();
        t.result["rollback"]["ok"] = json!(o.ok);
        t.state = "rolled_back".into();
        self.update(&t).await;
        t
    }
}

/// Runs the rollout to its end and records how it ended.
pub(super) async fn run(
    state: &Arc<AppState>,
    mut rec: RolloutRecord,
    targets: Vec<RolloutTarget>,
    spec: Spec,
    progress: broadcast::Sender<Progress>,
    mut cancelled: watch::Receiver<bool>,
) {
    let sem = Arc::new(Semaphore::new(spec.concurrency as usize));
    let run = Arc::new(Run {
        state: state.clone(),
        spec,
        progress: progress.clone(),
        failures: AtomicU32::new(0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut left = targets.into_iter();
    let mut was_cancelled = false;
    let mut not_started = Vec::new();
    for t in left.by_ref() {
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p,
            _ = cancelled.wait_for(|c| *c) => {
                was_cancelled = true;
                not_started.push(t);
                break;
            }
        };
        let Ok(permit) = permit else { break };
        if *cancelled.borrow() {
            was_cancelled = true;
        }
        if was_cancelled || run.stopped_by_failures() {
            not_started.push(t);
            break;
        }
        let r = run.clone();
        tasks.spawn(async move {
            let t = r.work(t).await;
            drop(permit);
            t
        });
    }
    not_started.extend(left);
    let mut done: Vec<RolloutTarget> = tasks.join_all().await;
    let failures = run.failures.load(Ordering::SeqCst);
    let stopped = run.stopped_by_failures() && !not_started.is_empty();
    let skip_reason = if was_cancelled {
        "the rollout was cancelled".to_owned()
    } else {
        format!("the rollout stopped after {failures} failures")
    };
    for mut t in not_started {
        t.state = "skipped".into();
        t.result = json!({ "error": skip_reason });
        run.update(&t).await;
        done.push(t);
    }

    // The rollback: after a stop by failures, on every target that was started.
    let mut rollback_failures = 0;
    let rolled = run.stopped_by_failures() && !was_cancelled;
    if rolled && let Some(argv) = run.spec.rollback.clone() {
        let argv = Arc::new(argv);
        let mut tasks = tokio::task::JoinSet::new();
        for t in done
            .iter()
            .filter(|t| t.state == "succeeded" || t.state == "failed")
        {
            let (r, t, argv, sem) = (run.clone(), t.clone(), argv.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                r.roll_back(t, &argv).await
            });
        }
        for t in tasks.join_all().await {
            if t.result["rollback"]["ok"] != json!(true) {
                rollback_failures += 1;
            }
        }
    }

    rec.finished_at = Some(now_ms());
    let (st, reason) = if was_cancelled {
        ("cancelled", Some("cancelled by a client".to_owned()))
    } else if rolled {
        let mut why = format!(
            "{failures} failures reached max_failures {}",
            run.spec.max_failures
        );
        if stopped {
            why.push_str("; the remaining sandboxes were skipped");
        }
        match &run.spec.rollback {
            Some(_) if rollback_failures > 0 => {
                why.push_str(&format!("; {rollback_failures} rollbacks failed"));
            }
            Some(_) => why.push_str("; rolled back"),
            None => why.push_str("; no rollback command"),
        }
        ("failed", Some(why))
    } else if failures > 0 {
        ("failed", Some(format!("{failures} sandboxes failed")))
    } else {
        ("succeeded", None)
    };
    rec.state = st.into();
    rec.reason = reason;
    if let Err(e) = state.store.update_rollout(&rec).await {
        tracing::error!(rollout = %rec.id, "storing a rollout's end: {e}");
    }
    let end = match state.store.get_rollout(&rec.id).await {
        Ok(Some((r, ts))) => RolloutView::of(&r, Some(&ts)),
        _ => RolloutView::of(&rec, None),
    };
    let _ = progress.send(Progress::rollout(ProgressKind::End, end));
}

//! Delivery of alert messages to their rule's webhook: JSON or a Slack-compatible
//! `{"text": ...}` body, signed like event webhooks when a secret is configured, retried
//! with a doubling pause, in order per rule and subject (a `resolved` never overtakes its
//! `firing`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_store::{AlertFiring, AlertRule};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Pauses before each attempt: 8 attempts over about two minutes.
pub const ATTEMPT_DELAYS_SECS: [u64; 8] = [0, 1, 2, 4, 8, 16, 32, 60];
/// Time limit of one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most deliveries in flight (retrying included); more are dropped and logged.
pub const MAX_IN_FLIGHT: usize = 1024;

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
    /// `paddock alerts test ID`: a message that changes nothing.
    Test,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
            Status::Test => "test",
        }
    }
}

/// The stable key a receiver deduplicates on: the rule and the subject.
pub fn dedup_key(rule_id: &str, subject: &str) -> String {
    format!("{rule_id}/{subject}")
}

/// The message body for `rule`'s format.
pub fn body(rule: &AlertRule, f: &AlertFiring, status: Status) -> Value {
    let key = dedup_key(&rule.id, &f.subject);
    if rule.format == "slack" {
        let tag = match status {
            Status::Firing => "[FIRING]",
            Status::Resolved => "[RESOLVED]",
            Status::Test => "[TEST]",
        };
        return json!({
            "text": format!("{tag} {} ({}, alert {key})", f.summary, rule.kind),
        });
    }
    json!({
        "status": status.as_str(),
        "dedup_key": key,
        "rule_id": rule.id,
        "kind": rule.kind,
        "tenant": f.tenant,
        "subject": f.subject,
        "sandbox_id": f.subject.strip_prefix("sandbox:"),
        "summary": f.summary,
        "data": f.data,
        "firing_id": f.id,
        "started_at": crate::text::rfc3339(Some(f.started_at)),
        "resolved_at": crate::text::rfc3339(f.resolved_at),
    })
}

/// The delivery side: an HTTP client, the in-flight bound and one lock per dedup key.
#[derive(Debug)]
pub struct Delivery {
    client: reqwest::Client,
    secret: Option<String>,
    slots: Arc<Semaphore>,
    order: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Delivery {
    pub fn new(secret: Option<String>) -> Delivery {
        Delivery {
            client: reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            secret,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            order: Mutex::new(HashMap::new()),
        }
    }

    /// One attempt: Ok(status) when the receiver answered 2xx.
    pub async fn attempt(&self, url: &str, body: &str) -> Result<u16, String> {
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(key) = &self.secret {
            let ts = (paddock_store::now_ms() / 1000).to_string();
            req = req
                .header("x-paddock-timestamp", &ts)
                .header("x-paddock-signature", crate::webhooks::sign(key, &ts, body));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err(format!("the receiver answered {}", r.status())),
            Err(e) => Err(format!("sending: {e}")),
        }
    }

    /// Queues `body` for `url`, after every earlier message of the same dedup key.
    pub fn send(self: &Arc<Self>, key: String, url: String, body: Value) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%key, "too many alert deliveries in flight; message dropped");
            return;
        };
        let lock = self
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _in_order = lock.lock().await;
            let body = body.to_string();
            let mut last = String::new();
            for delay in ATTEMPT_DELAYS_SECS {
                tokio::time::sleep(Duration::from_secs(delay)).await;
                match me.attempt(&url, &body).await {
                    Ok(_) => {
                        last.clear();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%key, "alert delivery: {e}");
                        last = e;
                    }
                }
            }
            if !last.is_empty() {
                tracing::error!(%key, "alert delivery gave up after {} attempts: {last}", ATTEMPT_DELAYS_SECS.len());
            }
            drop(_in_order);
            // Forget the key's lock when nobody else waits on it.
            let mut order = me
                .order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if order.get(&key).is_some_and(|l| Arc::strong_count(l) == 2) {
                order.remove(&key);
            }
        });
    }
}

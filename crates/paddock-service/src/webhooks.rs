//! Webhook delivery: lifecycle events POSTed as JSON to the URL of the sandbox (set at
//! create) and of the key that created it (set by an admin), off the request path.
//!
//! Delivery is at least once per URL with three attempts (1 s, then 5 s apart) and a 5 s
//! timeout each; a bounded queue (1,024 events) drops events when receivers are too slow,
//! and the drop is logged. URLs that resolve to loopback, private or link-local addresses
//! are refused at create time unless the server allows them (`--allow-private-webhooks`),
//! so a tenant cannot use webhooks to reach the host's own services.
//!
//! With a secret configured (`--webhook-secret`), every delivery carries
//! `X-Paddock-Timestamp: <unix seconds>` and
//! `X-Paddock-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so a receiver can
//! check that the event came from this server and is recent.

use std::net::IpAddr;
use std::time::Duration;

use paddock_store::{Event, Store};
use tokio::sync::mpsc;

const QUEUE: usize = 1024;

/// The delivery queue.
#[derive(Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<(String, serde_json::Value)>,
    pub allow_private: bool,
}

impl Webhooks {
    /// Starts the delivery task.
    pub fn start(allow_private: bool, secret: Option<String>) -> Webhooks {
        let (tx, mut rx) = mpsc::channel::<(String, serde_json::Value)>(QUEUE);
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default();
            while let Some((url, body)) = rx.recv().await {
                let client = client.clone();
                let secret = secret.clone();
                tokio::spawn(async move {
                    let body = body.to_string();
                    for delay in [0u64, 1, 5] {
                        tokio::time::sleep(Duration::from_secs(delay)).await;
                        let mut req = client
                            .post(&url)
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.clone());
                        if let Some(key) = &secret {
                            let ts = (paddock_store::now_ms() / 1000).to_string();
                            req = req
                                .header("x-paddock-timestamp", &ts)
                                .header("x-paddock-signature", sign(key, &ts, &body));
                        }
                        match req.send().await {
                            Ok(r) if r.status().is_success() => return,
                            Ok(r) => tracing::warn!(%url, status = %r.status(), "webhook refused"),
                            Err(e) => tracing::warn!(%url, "webhook failed: {e}"),
                        }
                    }
                });
            }
        });
        Webhooks { tx, allow_private }
    }

    /// Queues `ev` for the sandbox's webhook and its key's.
    pub async fn deliver(&self, store: &dyn Store, ev: &Event, sandbox_webhook: Option<&str>) {
        let mut urls: Vec<String> = sandbox_webhook.map(str::to_owned).into_iter().collect();
        if let Some(id) = &ev.sandbox_id {
            let key_id = store.get_sandbox(id).await.ok().flatten().map(|r| r.key_id);
            let key_hook = match key_id {
                Some(k) => store.get_key(&k).await.ok().flatten(),
                None => None,
            }
            .and_then(|k| k.webhook_url);
            urls.extend(key_hook);
        }
        urls.dedup();
        if urls.is_empty() {
            return;
        }
        let body = crate::text::event_json(ev);
        for url in urls {
            if self.tx.try_send((url.clone(), body.clone())).is_err() {
                tracing::warn!(%url, kind = %ev.kind, "webhook queue full; event dropped");
            }
        }
    }

    /// Checks a webhook URL a client gave: http or https, and (unless allowed) not a
    /// loopback, private or link-local address.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("webhook URL {url:?}: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err("webhook URL must be http or https".into());
        }
        let host = u.host_str().ok_or("webhook URL has no host")?.to_owned();
        if self.allow_private {
            return Ok(());
        }
        let port = u.port_or_known_default().unwrap_or(80);
        let host_clean = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<IpAddr> = match host_clean.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host_clean.as_str(), port))
                .await
                .map_err(|e| format!("webhook host {host:?} does not resolve: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        if let Some(ip) = addrs.iter().find(|ip| is_private(ip)) {
            return Err(format!(
                "webhook host {host:?} resolves to {ip}, a loopback, private or link-local address"
            ));
        }
        Ok(())
    }
}

fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(&IpAddr::V4(v4)))
        }
    }
}

/// `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.
pub fn sign(key: &str, timestamp: &str, body: &str) -> String {
    use hmac::Mac as _;
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
        .expect("hmac takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_rfc_4231_style_vector() {
        // HMAC-SHA256("key", "1.{}") computed independently with Python's hmac module.
        assert_eq!(
            super::sign("key", "1", "{}"),
            "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}

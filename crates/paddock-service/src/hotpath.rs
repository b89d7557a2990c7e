//! What keeps the store off the exec round trip (`POST /v1/sandboxes/{id}/exec`, issue 17's
//! ≤ 1 ms): a short-lived cache of API keys by hash, and writes done behind the answer.
//!
//! - [`KeyCache`]: a key looked up by its hash is kept [`KEY_TTL`], so back-to-back
//!   requests of one key read the store once. Revoked and expired keys are still refused at
//!   once: expiry is checked on every use, and a revoke through this server empties the
//!   cache (a generation counter keeps a lookup that raced the revoke from putting the old
//!   key back). Only a server that alone writes its keys caches: not a fleet node and not a
//!   server on PostgreSQL, where another process may revoke a key.
//! - [`Behind`]: store writes whose outcome the answer does not carry (an exec's history
//!   row and its audit entry) run as tasks after the answer is on its way. A one-shot JSON
//!   exec that ends within `HISTORY_RUNNING_AFTER` (200 ms) writes both in one transaction
//!   (`Store::insert_exec_audited`); a longer one writes its `running` row then, so it is
//!   listed while it runs, and its outcome and audit entry at the end. The routes that
//!   read those rows (`GET /v1/audit`, `GET /v1/sandboxes/{id}/logs`) first wait for the
//!   writes in flight ([`Behind::settled`], at most [`SETTLE_MAX`]), so a client reads its
//!   own writes. The price: a crash in the moment between the answer and the write loses
//!   that row (SQLite commits it in microseconds; nothing else is lost).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_store::ApiKey;
use tokio::sync::Notify;

/// How long a key read from the store is used without reading it again.
pub const KEY_TTL: Duration = Duration::from_secs(1);
/// Most keys cached; a full cache is emptied (the keys in use come back on their next use).
pub const KEY_CACHE_MAX: usize = 10_000;
/// Longest a reader waits for the writes behind answers.
pub const SETTLE_MAX: Duration = Duration::from_secs(5);

/// API keys by hash, for [`KEY_TTL`] (module docs).
#[derive(Debug)]
pub struct KeyCache {
    enabled: bool,
    keys: Mutex<HashMap<String, (ApiKey, Instant)>>,
    /// Bumped by [`KeyCache::clear`].
    generation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeyCache {
    /// A cache that holds keys only when `enabled` (a server that alone writes its keys).
    pub fn new(enabled: bool) -> KeyCache {
        KeyCache {
            enabled,
            keys: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The generation to pass to [`KeyCache::put`] after a store read begun now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The key with this hash, if read from the store within [`KEY_TTL`].
    pub fn get(&self, hash: &str) -> Option<ApiKey> {
        if !self.enabled {
            return None;
        }
        let keys = lock(&self.keys);
        let (k, at) = keys.get(hash)?;
        (at.elapsed() < KEY_TTL).then(|| k.clone())
    }

    /// Keeps a key read from the store, unless the cache was cleared since `generation`.
    pub fn put(&self, hash: String, key: ApiKey, generation: u64) {
        if !self.enabled {
            return;
        }
        let mut keys = lock(&self.keys);
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if keys.len() >= KEY_CACHE_MAX {
            keys.clear();
        }
        keys.insert(hash, (key, Instant::now()));
    }

    /// Forgets every key (a key was revoked).
    pub fn clear(&self) {
        let mut keys = lock(&self.keys);
        self.generation.fetch_add(1, Ordering::SeqCst);
        keys.clear();
    }
}

/// Store writes done behind answers (module docs).
#[derive(Debug, Clone, Default)]
pub struct Behind {
    inner: Arc<BehindInner>,
}

#[derive(Debug, Default)]
struct BehindInner {
    pending: AtomicUsize,
    idle: Notify,
}

/// Counts one write in flight while it lives.
struct Pending(Arc<BehindInner>);

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Behind {
    /// Runs `write` as a task, counted until it ends (or panics).
    pub fn spawn<T: Send + 'static>(
        &self,
        write: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.inner.pending.fetch_add(1, Ordering::SeqCst);
        let guard = Pending(self.inner.clone());
        tokio::spawn(async move {
            let out = write.await;
            drop(guard);
            out
        })
    }

    /// Writes in flight.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::SeqCst)
    }

    /// Waits until no write is in flight, at most [`SETTLE_MAX`].
    pub async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + SETTLE_MAX;
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            tenant: "t".into(),
            name: "n".into(),
            role: paddock_store::Role::Admin,
            hash: "h".into(),
            prefix: "pdk_".into(),
            created_at: 0,
            revoked_at: None,
            expires_at: None,
            max_sandboxes: None,
            webhook_url: None,
        }
    }

    #[test]
    fn keys_are_kept_until_cleared_and_a_racing_lookup_does_not_put_one_back() {
        let c = KeyCache::new(true);
        let g = c.generation();
        c.put("h1".into(), key("k1"), g);
        assert_eq!(c.get("h1").map(|k| k.id), Some("k1".into()));
        // A lookup that began before a revoke cleared the cache.
        let g = c.generation();
        c.clear();
        c.put("h1".into(), key("k1"), g);
        assert!(
            c.get("h1").is_none(),
            "a stale key came back after a revoke"
        );
        let off = KeyCache::new(false);
        off.put("h1".into(), key("k1"), off.generation());
        assert!(off.get("h1").is_none(), "a disabled cache kept a key");
    }

    #[tokio::test]
    async fn settled_waits_for_the_writes_in_flight() {
        let b = Behind::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let h = b.spawn(async move {
            let _ = rx.await;
            d.store(true, Ordering::SeqCst);
        });
        assert_eq!(b.pending(), 1);
        let waiter = {
            let b = b.clone();
            let done = done.clone();
            tokio::spawn(async move {
                b.settled().await;
                done.load(Ordering::SeqCst)
            })
        };
        tx.send(()).expect("send");
        assert!(
            waiter.await.expect("waiter"),
            "settled before the write ended"
        );
        h.await.expect("write");
        assert_eq!(b.pending(), 0);
    }
}

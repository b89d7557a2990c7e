//! Token buckets: the REST rate per key and the data plane's rate per key or sandbox.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::Error;

/// Buckets kept before full ones are dropped.
const PRUNE_AT: usize = 4096;

/// Token buckets, one per key: `rate` requests per second on average, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // A full bucket is the same as none: drop them once the map grows, so buckets of
        // sandboxes long gone do not pile up.
        if b.len() >= PRUNE_AT && !b.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (t, l)| *t + now.duration_since(*l).as_secs_f64() * rate < burst);
        }
        let (tokens, last) = b.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.rate).ceil() as u64;
            Err(Error::RateLimited(wait.max(1)))
        }
    }
}

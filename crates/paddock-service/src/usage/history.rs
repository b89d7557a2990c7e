//! The samples of the running sandboxes (held by the server's state), the last
//! [`MAX_SAMPLES`] of each.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use super::MAX_SAMPLES;

/// One sample: when (unix ms), cumulative CPU time (ns), memory in use (bytes), what its
/// layer references (bytes, as of btrfs's last commit) and the bytes it has sent out of its
/// network link (cumulative; 0 without a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub at_ms: i64,
    pub cpu_ns: u64,
    pub mem_bytes: u64,
    pub disk_bytes: u64,
    pub egress_bytes: u64,
}

/// The samples of the running sandboxes, oldest first.
#[derive(Debug, Default)]
pub struct UsageHistory(Mutex<HashMap<String, VecDeque<Sample>>>);

impl UsageHistory {
    /// Adds one round of samples (sandbox id, sample) and forgets sandboxes not in it
    /// (they ended).
    pub fn record_round(&self, round: Vec<(String, Sample)>) {
        let mut all = self.0.lock().expect("usage poisoned");
        let live: HashSet<&str> = round.iter().map(|(id, _)| id.as_str()).collect();
        all.retain(|id, _| live.contains(id.as_str()));
        for (id, s) in round {
            let q = all.entry(id).or_default();
            if q.len() == MAX_SAMPLES {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    /// What the running sandboxes use together, from each one's last two samples: CPU in
    /// cores (CPU time over wall time between them; a sandbox with one sample counts 0)
    /// and memory in bytes (the last sample).
    pub fn totals(&self) -> (f64, u64) {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cores = 0.0;
        let mut mem = 0u64;
        for q in all.values() {
            let mut last_two = q.iter().rev();
            let Some(last) = last_two.next() else {
                continue;
            };
            mem = mem.saturating_add(last.mem_bytes);
            if let Some(prev) = last_two.next() {
                let wall_ns = (last.at_ms - prev.at_ms).max(1) as f64 * 1e6;
                cores += last.cpu_ns.saturating_sub(prev.cpu_ns) as f64 / wall_ns;
            }
        }
        ((cores * 100.0).round() / 100.0, mem)
    }

    /// The last sample of every sandbox (what the next round is metered against).
    pub fn last_samples(&self) -> std::collections::BTreeMap<String, Sample> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter()
            .filter_map(|(id, q)| Some((id.clone(), *q.back()?)))
            .collect()
    }

    /// The samples of sandbox `id`, oldest first.
    pub fn series(&self, id: &str) -> Vec<Sample> {
        self.0
            .lock()
            .expect("usage poisoned")
            .get(id)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }
}

//! CPU and memory of every running sandbox, sampled every `ServerConfig::sample_interval`
//! (5 s by default, E2B's interval) and kept for the last [`MAX_SAMPLES`] samples, so
//! `GET /sandboxes/{id}/metrics` answers a time series like E2B's rather than one point.
//!
//! A sample reads two cgroup files per sandbox, its qgroup's `referenced` file in sysfs
//! (after two ioctls naming the subvolume and the filesystem) and its link's `rx_bytes`: no
//! process is started. The exact disk figure of the stats route (`btrfs qgroup show --sync`)
//! is measured only when metrics are requested.

use std::sync::Arc;

use crate::state::AppState;

pub mod history;

pub use self::history::{Sample, UsageHistory};

/// Samples kept per sandbox: one hour at the default interval.
pub const MAX_SAMPLES: usize = 720;

/// Samples every running sandbox forever, once per interval (a round that falls behind is
/// skipped, not caught up).
pub async fn run(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.cfg.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let rt = state.runtime.clone();
        let round = tokio::task::spawn_blocking(move || {
            let at_ms = paddock_store::now_ms();
            rt.list()
                .iter()
                .map(|s| {
                    let (cpu_ns, mem_bytes) = s.cpu_and_memory();
                    let (disk_bytes, egress_bytes) = s.disk_and_egress(&rt);
                    (
                        s.id.to_string(),
                        Sample {
                            at_ms,
                            cpu_ns,
                            mem_bytes,
                            disk_bytes,
                            egress_bytes,
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .await;
        match round {
            Ok(round) => {
                // Cost metering: what each sandbox used since its previous sample.
                crate::cost::meter(&state, &state.usage.last_samples(), &round).await;
                state.usage.record_round(round)
            }
            Err(e) => tracing::warn!("usage sampling task failed: {e}"),
        }
    }
}

/// CPU use in percent of the sandbox's CPU allowance (`cpu_millis`, 1000 = one core)
/// between two points: CPU time used over wall time times cores.
pub fn cpu_pct(cpu_ns: u64, wall_ms: i64, cpu_millis: u64) -> f64 {
    let wall_ns = u128::try_from(wall_ms).unwrap_or(0).max(1) * 1_000_000;
    let pct =
        (u128::from(cpu_ns) * 100 * 1000) as f64 / (wall_ns * u128::from(cpu_millis.max(1))) as f64;
    (pct * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_ms: i64) -> Sample {
        Sample {
            at_ms,
            ..Default::default()
        }
    }

    #[test]
    fn totals_add_cpu_cores_and_memory_of_the_last_samples() {
        let h = UsageHistory::default();
        assert_eq!(h.totals(), (0.0, 0));
        let at = |at_ms, cpu_ns, mem_bytes| Sample {
            at_ms,
            cpu_ns,
            mem_bytes,
            ..Default::default()
        };
        // a: half a core over the last second; b: one sample only (no CPU figure yet).
        h.record_round(vec![("a".into(), at(0, 0, 10)), ("b".into(), at(0, 5, 7))]);
        h.record_round(vec![
            ("a".into(), at(1000, 100, 20)),
            ("b".into(), at(1000, 9, 7)),
        ]);
        h.record_round(vec![
            ("a".into(), at(2000, 500_000_100, 30)),
            ("b".into(), at(2000, 2_000_000_009, 8)),
        ]);
        assert_eq!(h.totals(), (2.5, 38));
    }

    #[test]
    fn rounds_are_bounded_and_forget_ended_sandboxes() {
        let h = UsageHistory::default();
        for i in 0..(MAX_SAMPLES as i64 + 5) {
            h.record_round(vec![("a".into(), s(i)), ("b".into(), s(i))]);
        }
        let a = h.series("a");
        assert_eq!(a.len(), MAX_SAMPLES);
        assert_eq!(a[0].at_ms, 5);
        h.record_round(vec![("a".into(), s(1000))]);
        assert!(h.series("b").is_empty());
        assert_eq!(h.series("a").last().unwrap().at_ms, 1000);
    }

    #[test]
    fn cpu_percent_of_the_allowance() {
        // One core busy for a second, on a two-core allowance: 50 %.
        assert_eq!(cpu_pct(1_000_000_000, 1000, 2000), 50.0);
        assert_eq!(cpu_pct(500_000_000, 1000, 1000), 50.0);
        assert_eq!(cpu_pct(0, 0, 0), 0.0);
    }
}

//! What `/metrics` exports besides the lifecycle counters: HTTP requests by route and
//! status, their latency as histograms, sandbox create latency and the body bytes moved,
//! each labelled by the surface that served it (REST, the E2B data plane, the port proxy).
//!
//! Route labels are bounded: a REST route's pattern (`/v1/sandboxes/{id}`), the E2B data
//! plane's method (`envd /process.Process/Start`, `envd /files`, or `envd other`), `proxy`
//! for every proxied port, `unmatched` for the rest, so client-chosen paths never become
//! label values.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of `name{labels}` to `out`
    /// (`labels` is empty or `k="v",...`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut acc = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            acc += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {acc}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Which part of the server answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    Rest,
    Envd,
    Proxy,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Rest => "rest",
            Surface::Envd => "envd",
            Surface::Proxy => "proxy",
        }
    }

    const ALL: [Surface; 3] = [Surface::Rest, Surface::Envd, Surface::Proxy];
}

/// Request counts, latencies and bytes, by route label.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<HashMap<(String, u16), u64>>,
    latency: Mutex<HashMap<String, Arc<Histogram>>>,
    /// Request and response body bytes per surface, in [`Surface::ALL`] order.
    bytes_in: [Arc<AtomicU64>; 3],
    bytes_out: [Arc<AtomicU64>; 3],
}

impl HttpMetrics {
    /// Records one answered request: its route label, status and time to the response head.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let h = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.to_owned())
            .or_default()
            .clone();
        h.observe(took);
    }

    /// The counters that body bytes of `surface` are added to (request, response).
    pub fn byte_counters(&self, surface: Surface) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        let i = Surface::ALL.iter().position(|s| *s == surface).unwrap_or(0);
        (self.bytes_in[i].clone(), self.bytes_out[i].clone())
    }

    /// Appends the request counter, the latency histograms and the byte counters.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP paddock_http_requests_total HTTP requests by route and status.\n# TYPE paddock_http_requests_total counter"
        );
        let mut reqs: Vec<_> = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        reqs.sort();
        for ((route, status), n) in reqs {
            let _ = writeln!(
                out,
                "paddock_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP paddock_http_request_duration_seconds Time from a request to its response head, by route.\n# TYPE paddock_http_request_duration_seconds histogram"
        );
        let mut hs: Vec<_> = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        hs.sort_by(|a, b| a.0.cmp(&b.0));
        for (route, h) in hs {
            h.render(
                out,
                "paddock_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        for (name, help, counters) in [
            (
                "paddock_http_request_bytes_total",
                "Request body bytes received, by surface.",
                &self.bytes_in,
            ),
            (
                "paddock_http_response_bytes_total",
                "Response body bytes sent, by surface.",
                &self.bytes_out,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (s, c) in Surface::ALL.iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "{name}{{surface=\"{}\"}} {}",
                    s.as_str(),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// The route label of an E2B data-plane path: the envd method or file route, else `other`.
pub fn envd_route(path: &str) -> String {
    let known = |svc: &str| {
        path.strip_prefix(svc).is_some_and(|m| {
            !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic())
        })
    };
    if matches!(path, "/files" | "/health" | "/metrics" | "/envs" | "/init")
        || known("/process.Process/")
        || known("/filesystem.Filesystem/")
    {
        format!("envd {path}")
    } else {
        "envd other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"r\"");
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.025\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{route=\"r\",le=\"30\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{route=\"r\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{route=\"r\"} 100.0205\n"), "{out}");
        let mut out = String::new();
        Histogram::default().render(&mut out, "y", "");
        assert!(
            out.contains("y_bucket{le=\"+Inf\"} 0\ny_sum 0\ny_count 0\n"),
            "{out}"
        );
    }

    #[test]
    fn envd_routes_are_bounded() {
        assert_eq!(
            envd_route("/process.Process/Start"),
            "envd /process.Process/Start"
        );
        assert_eq!(envd_route("/files"), "envd /files");
        for p in [
            "/x",
            "/process.Process/",
            "/process.Process/a\"b",
            "/files/../etc",
        ] {
            assert_eq!(envd_route(p), "envd other", "{p}");
        }
    }
}

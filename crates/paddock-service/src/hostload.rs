//! The host's load as `GET /v1/status` reports it: load averages, CPUs, memory and the
//! space left on the sandboxes' filesystem, read from `/proc` and `statvfs` at the request
//! (a few small reads; nothing is kept).

use std::path::Path;

/// The host's load; a figure the host does not give is `None` (answered as null).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct HostLoad {
    /// 1, 5 and 15 minute load averages (`/proc/loadavg`).
    pub load_avg: Option<[f64; 3]>,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// Size and free space of the filesystem holding the sandboxes' writable layers.
    pub disk_total_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
}

impl HostLoad {
    /// Reads the load now; `layers` is a directory on the sandboxes' filesystem.
    pub fn read(layers: &Path) -> HostLoad {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let disk = rustix::fs::statvfs(layers).ok();
        HostLoad {
            load_avg: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| parse_loadavg(&s)),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal"),
            memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable"),
            disk_total_bytes: disk.as_ref().map(|d| d.f_blocks.saturating_mul(d.f_frsize)),
            disk_free_bytes: disk.as_ref().map(|d| d.f_bavail.saturating_mul(d.f_frsize)),
        }
    }
}

/// `0.52 0.40 0.31 1/123 4567` → the three averages.
fn parse_loadavg(s: &str) -> Option<[f64; 3]> {
    let mut it = s.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// `MemTotal:       24567890 kB` → bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(
            parse_loadavg("0.52 0.40 0.31 1/123 4567\n"),
            Some([0.52, 0.40, 0.31])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        let m = "MemTotal:       24567890 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_bytes(m, "MemTotal"), Some(24_567_890 * 1024));
        assert_eq!(meminfo_bytes(m, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(m, "Mem"), None);
        assert_eq!(meminfo_bytes(m, "SwapTotal"), None);
    }

    #[test]
    fn this_host_reports_its_load() {
        let l = HostLoad::read(Path::new("/"));
        assert!(l.cpus >= 1);
        assert!(l.load_avg.is_some());
        assert!(l.memory_total_bytes.unwrap_or(0) >= l.memory_available_bytes.unwrap_or(0));
        assert!(l.disk_total_bytes.unwrap_or(0) > 0);
    }
}

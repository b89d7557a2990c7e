//! Placement: which node gets a new sandbox.
//!
//! A node can take it when it is `ready`, heartbeated within [`super::DEAD_AFTER`], carries
//! every label of the `node_selector`, and has room: memory (sum of the memory limits of its
//! sandboxes, no overcommit), CPU (sum of CPU limits within its CPUs times its overcommit),
//! disk (free space at least the sandbox's disk limit) and its sandbox cap. Among those the
//! nodes already holding the template win (a node without it fetches it from a peer first,
//! `super::layers`), then the least loaded (sandboxes over cap, then reserved memory),
//! counting the placements this control plane made since the node's last heartbeat.
//! Nothing fits: `no_capacity`, naming what each node lacked.

use std::collections::BTreeMap;

use paddock_store::{Millis, NodeRecord, NodeState};
use serde_json::Value;

/// What a create asks of a node.
#[derive(Debug, Clone, Default)]
pub struct Want {
    pub template: String,
    pub memory_bytes: u64,
    pub cpu_millis: u64,
    pub disk_bytes: u64,
    pub selector: BTreeMap<String, String>,
}

/// Placements not yet visible in a node's heartbeat: (heartbeat they count from, sandboxes,
/// memory, cpu).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pending {
    pub since_heartbeat: Millis,
    pub sandboxes: u64,
    pub memory_bytes: u64,
    pub cpu_millis: u64,
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Picks the node for `want`, or says why none fits.
pub fn choose<'a>(
    nodes: &'a [NodeRecord],
    pending: &dyn Fn(&NodeRecord) -> Pending,
    want: &Want,
    now: Millis,
) -> Result<&'a NodeRecord, String> {
    let fresh = i64::try_from(super::DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
    let mut short: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
    let mut best: Option<(&NodeRecord, (bool, u128, u64))> = None;
    for n in nodes {
        let why = if n.state != NodeState::Ready || now - n.heartbeat_at > fresh {
            Some("not ready")
        } else if want
            .selector
            .iter()
            .any(|(k, v)| n.labels.get(k) != Some(v))
        {
            Some("node_selector")
        } else {
            None
        };
        if let Some(w) = why {
            short.entry(w).or_default().push(&n.name);
            continue;
        }
        let p = pending(n);
        let (cap, used) = (&n.capacity, &n.usage);
        let sandboxes = u64::from(n.sandboxes) + p.sandboxes;
        let mem = num(used, "memory_reserved_bytes") + p.memory_bytes;
        let cpu = num(used, "cpu_reserved_millis") + p.cpu_millis;
        let why = if sandboxes >= num(cap, "max_sandboxes") {
            Some("sandbox cap")
        } else if mem + want.memory_bytes > num(cap, "memory_bytes") {
            Some("memory")
        } else if cpu + want.cpu_millis > num(cap, "cpu_millis") {
            Some("cpu")
        } else if num(used, "disk_free_bytes") < want.disk_bytes {
            Some("disk")
        } else {
            None
        };
        if let Some(w) = why {
            short.entry(w).or_default().push(&n.name);
            continue;
        }
        // Holding the template first (no fetch), then load as a fraction of the cap, in
        // millionths, then reserved memory.
        let lacks = !n.templates.contains(&want.template);
        let load = u128::from(sandboxes) * 1_000_000 / u128::from(num(cap, "max_sandboxes").max(1));
        if best.is_none_or(|(_, l)| (lacks, load, mem) < l) {
            best = Some((n, (lacks, load, mem)));
        }
    }
    if let Some((n, _)) = best {
        return Ok(n);
    }
    if nodes.is_empty() {
        return Err("no node has registered with the fleet".into());
    }
    let parts: Vec<String> = short
        .iter()
        .map(|(why, names)| {
            let what = match *why {
                "not ready" => "not ready (draining or dead)".to_owned(),
                "node_selector" => format!(
                    "no match for node_selector {}",
                    selector_text(&want.selector)
                ),
                "memory" => format!("not enough memory for {} bytes", want.memory_bytes),
                "cpu" => format!("not enough CPU for {} millicores", want.cpu_millis),
                "disk" => format!("less than {} bytes of disk free", want.disk_bytes),
                other => format!("at its {other}"),
            };
            format!("{what}: {}", names.join(", "))
        })
        .collect();
    Err(format!(
        "no node can take this sandbox; {}",
        parts.join("; ")
    ))
}

fn selector_text(s: &BTreeMap<String, String>) -> String {
    let v: Vec<String> = s.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", v.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, sandboxes: u32, mem: u64) -> NodeRecord {
        NodeRecord {
            id: format!("id-{name}"),
            name: name.into(),
            address: String::new(),
            state: NodeState::Ready,
            labels: [("zone".to_owned(), name.to_owned())].into(),
            capacity: json!({"memory_bytes": 1000, "cpu_millis": 4000, "max_sandboxes": 10}),
            usage: json!({"memory_reserved_bytes": mem, "cpu_reserved_millis": 0, "disk_free_bytes": 100}),
            sandboxes,
            templates: vec!["base".into()],
            registered_at: 0,
            heartbeat_at: 1000,
        }
    }

    fn want(mem: u64) -> Want {
        Want {
            template: "base".into(),
            memory_bytes: mem,
            cpu_millis: 1000,
            disk_bytes: 10,
            selector: BTreeMap::new(),
        }
    }

    #[test]
    fn least_loaded_with_room_wins() {
        let none = |_: &NodeRecord| Pending::default();
        let nodes = [node("a", 3, 300), node("b", 1, 100), node("c", 1, 50)];
        assert_eq!(choose(&nodes, &none, &want(100), 2000).unwrap().name, "c");
        // Pending placements count.
        let busy_c = |n: &NodeRecord| Pending {
            sandboxes: if n.name == "c" { 5 } else { 0 },
            ..Pending::default()
        };
        assert_eq!(choose(&nodes, &busy_c, &want(100), 2000).unwrap().name, "b");
        // Memory: only a has... none has 960 free.
        let e = choose(&nodes, &none, &want(960), 2000).unwrap_err();
        assert!(
            e.contains("not enough memory for 960 bytes: a, b, c"),
            "{e}"
        );
    }

    #[test]
    fn state_selector_template_and_staleness() {
        let none = |_: &NodeRecord| Pending::default();
        let mut nodes = [node("a", 0, 0), node("b", 0, 0)];
        nodes[0].state = NodeState::Draining;
        assert_eq!(choose(&nodes, &none, &want(1), 2000).unwrap().name, "b");
        // b's heartbeat is 11 s old.
        let e = choose(&nodes, &none, &want(1), 12_001).unwrap_err();
        assert!(e.contains("not ready (draining or dead): a, b"), "{e}");
        let mut w = want(1);
        w.selector.insert("zone".into(), "x".into());
        let e = choose(&nodes, &none, &w, 2000).unwrap_err();
        assert!(e.contains("no match for node_selector {zone=x}: b"), "{e}");
        w.selector.insert("zone".into(), "b".into());
        assert_eq!(choose(&nodes, &none, &w, 2000).unwrap().name, "b");
        // A node holding the template wins over a less loaded one without it; without any
        // holder, the least loaded.
        let mut w = want(1);
        w.template = "py".into();
        let mut nodes = [node("a", 0, 0), node("b", 5, 500), node("c", 1, 0)];
        nodes[1].templates.push("py".into());
        assert_eq!(choose(&nodes, &none, &w, 2000).unwrap().name, "b");
        nodes[1].templates.clear();
        assert_eq!(choose(&nodes, &none, &w, 2000).unwrap().name, "a");
        // A full holder: the others.
        nodes[1].templates.push("py".into());
        let mut w = want(600);
        w.template = "py".into();
        assert_eq!(choose(&nodes, &none, &w, 2000).unwrap().name, "a");
        assert!(
            choose(&[], &none, &w, 2000)
                .unwrap_err()
                .contains("no node")
        );
    }
}

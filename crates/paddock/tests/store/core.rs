//! Tenants, keys, templates, sandboxes, events, audit, exec history.

use std::collections::BTreeSet;
use std::sync::Arc;

use paddock_store::{
    AuditEntry, AuditFilter, Event, EventFilter, ExecRecord, Role, SandboxFilter, SandboxState,
    Store, TemplateRecord,
};

use super::{assert_conflict, key, pairs, sandbox, tenant};

pub async fn tenants_insert_get_list(s: Arc<dyn Store>) {
    assert!(s.list_tenants().await.unwrap().is_empty());
    assert_eq!(s.get_tenant("t1").await.unwrap(), None);
    s.insert_tenant(&tenant("t2", 5)).await.unwrap();
    s.insert_tenant(&tenant("t1", 5)).await.unwrap();
    s.insert_tenant(&tenant("t0", 9)).await.unwrap();
    assert_conflict(s.insert_tenant(&tenant("t1", 7)).await);
    assert_eq!(s.get_tenant("t1").await.unwrap(), Some(tenant("t1", 5)));
    // By creation, then id.
    let ids: Vec<String> = s
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["t1", "t2", "t0"]);
}

pub async fn keys_conflicts_lookup_revoke_count(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t", 1)).await.unwrap();
    s.insert_tenant(&tenant("u", 1)).await.unwrap();
    assert_eq!(s.count_keys().await.unwrap(), 0);
    let k = key("key_1", "t", "h1", 1);
    s.insert_key(&k).await.unwrap();
    // A taken id, a taken hash: conflicts.
    assert_conflict(s.insert_key(&key("key_1", "t", "h9", 1)).await);
    assert_conflict(s.insert_key(&key("key_2", "t", "h1", 1)).await);
    // A key of a tenant that does not exist: refused the same way.
    assert_conflict(s.insert_key(&key("key_x", "nope", "hx", 1)).await);
    s.insert_key(&key("key_3", "u", "h3", 3)).await.unwrap();
    s.insert_key(&key("key_2", "t", "h2", 3)).await.unwrap();
    assert_eq!(s.count_keys().await.unwrap(), 3);
    assert_eq!(s.key_by_hash("h1").await.unwrap(), Some(k.clone()));
    assert_eq!(s.key_by_hash("nope").await.unwrap(), None);
    assert_eq!(s.get_key("key_1").await.unwrap(), Some(k.clone()));
    assert_eq!(s.get_key("nope").await.unwrap(), None);
    let ids = |v: Vec<paddock_store::ApiKey>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_keys(None).await.unwrap()),
        ["key_1", "key_2", "key_3"]
    );
    assert_eq!(
        ids(s.list_keys(Some("t")).await.unwrap()),
        ["key_1", "key_2"]
    );
    assert!(ids(s.list_keys(Some("none")).await.unwrap()).is_empty());
    // Revoking keeps the first time.
    assert!(s.revoke_key("key_1", 5).await.unwrap());
    assert!(s.revoke_key("key_1", 9).await.unwrap());
    assert_eq!(
        s.get_key("key_1").await.unwrap().unwrap().revoked_at,
        Some(5)
    );
    assert!(!s.revoke_key("nope", 5).await.unwrap());
}

pub async fn keys_keep_every_role_and_field(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t", 1)).await.unwrap();
    for (i, role) in Role::ALL.iter().enumerate() {
        let mut k = key(&format!("key_{i}"), "t", &format!("h{i}"), i as i64);
        k.role = *role;
        k.expires_at = Some(1_700_000_000_000 + i as i64);
        k.max_sandboxes = Some(u32::MAX - i as u32);
        k.webhook_url = Some(format!("https://hooks.example/{i}"));
        s.insert_key(&k).await.unwrap();
        assert_eq!(s.get_key(&k.id).await.unwrap(), Some(k));
    }
}

pub async fn templates_upsert_list_delete(s: Arc<dyn Store>) {
    assert!(s.list_templates().await.unwrap().is_empty());
    let mut t = TemplateRecord {
        name: "python".into(),
        source: "build FROM debian".into(),
        layers: vec!["sha256:aa".into(), "sha256:bb".into()],
        config: serde_json::json!({"user": "user", "env": {"A": "1"}}),
        created_at: 5,
        created_by: Some("key_1".into()),
    };
    s.upsert_template(&t).await.unwrap();
    t.layers.push("sha256:cc".into());
    t.created_by = None;
    s.upsert_template(&t).await.unwrap();
    let mut b = t.clone();
    b.name = "Base".into();
    s.upsert_template(&b).await.unwrap();
    let mut a = t.clone();
    a.name = "alpine".into();
    s.upsert_template(&a).await.unwrap();
    // By name, bytewise (upper case first).
    assert_eq!(s.list_templates().await.unwrap(), vec![b, a, t]);
    assert!(s.delete_template("python").await.unwrap());
    assert!(!s.delete_template("python").await.unwrap());
    assert_eq!(s.list_templates().await.unwrap().len(), 2);
}

async fn ids(s: &dyn Store, f: SandboxFilter) -> Vec<String> {
    s.list_sandboxes(&f)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

pub async fn sandboxes_round_trip_filter_and_page(s: Arc<dyn Store>) {
    let s = s.as_ref();
    let a = sandbox(
        "a",
        "t1",
        1,
        &[("k", "v"), ("we\"ird.key", "x"), ("$.k", "y")],
    );
    s.insert_sandbox(&a).await.unwrap();
    assert_conflict(s.insert_sandbox(&a).await);
    assert_eq!(s.get_sandbox("a").await.unwrap(), Some(a.clone()));
    s.insert_sandbox(&sandbox("b", "t1", 2, &[("k", "w")]))
        .await
        .unwrap();
    s.insert_sandbox(&sandbox("c", "t2", 3, &[("k", "v")]))
        .await
        .unwrap();
    // Same creation time: by id.
    s.insert_sandbox(&sandbox("B", "t2", 3, &[])).await.unwrap();
    let all = ids(s, SandboxFilter::default()).await;
    assert_eq!(all, ["a", "b", "B", "c"]);
    let f = |meta: &[(&str, &str)]| SandboxFilter {
        metadata: pairs(meta),
        ..Default::default()
    };
    assert_eq!(ids(s, f(&[("k", "v")])).await, ["a", "c"]);
    assert_eq!(ids(s, f(&[("we\"ird.key", "x")])).await, ["a"]);
    assert_eq!(ids(s, f(&[("$.k", "y")])).await, ["a"]);
    assert_eq!(ids(s, f(&[("k", "v"), ("$.k", "y")])).await, ["a"]);
    assert!(ids(s, f(&[("k", "nope")])).await.is_empty());
    assert!(ids(s, f(&[("missing", "v")])).await.is_empty());
    let tenant = |t: &str| SandboxFilter {
        tenant: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(ids(s, tenant("t1")).await, ["a", "b"]);
    assert!(ids(s, tenant("t9")).await.is_empty());
    let page = |after: Option<&str>, limit: Option<u32>| SandboxFilter {
        after: after.map(Into::into),
        limit,
        ..Default::default()
    };
    assert_eq!(ids(s, page(None, Some(2))).await, ["a", "b"]);
    assert_eq!(ids(s, page(Some("b"), Some(1))).await, ["B"]);
    assert_eq!(ids(s, page(Some("B"), None)).await, ["c"]);
    assert!(ids(s, page(Some("c"), None)).await.is_empty());
    assert!(ids(s, page(None, Some(0))).await.is_empty());
    // Paging after an id that does not exist gives nothing (not everything).
    assert!(ids(s, page(Some("zzz"), None)).await.is_empty());
    let mut b = s.get_sandbox("b").await.unwrap().unwrap();
    b.state = SandboxState::Stopped;
    b.stop_reason = Some(paddock_store::StopReason::Killed);
    b.stopped_at = Some(9);
    assert!(s.update_sandbox(&b).await.unwrap());
    assert_eq!(s.get_sandbox("b").await.unwrap(), Some(b));
    let states = |st: Vec<SandboxState>| SandboxFilter {
        states: st,
        ..Default::default()
    };
    assert_eq!(ids(s, states(vec![SandboxState::Stopped])).await, ["b"]);
    assert_eq!(
        ids(
            s,
            states(vec![SandboxState::Stopped, SandboxState::Running])
        )
        .await,
        ["a", "b", "B", "c"]
    );
    assert!(ids(s, states(vec![SandboxState::Paused])).await.is_empty());
    let mut other = sandbox("d", "t1", 4, &[]);
    other.key_id = "key_b".into();
    other.state = SandboxState::Starting;
    s.insert_sandbox(&other).await.unwrap();
    let by_key = SandboxFilter {
        key_id: Some("key_b".into()),
        ..Default::default()
    };
    assert_eq!(ids(s, by_key).await, ["d"]);
    let combined = SandboxFilter {
        tenant: Some("t1".into()),
        states: vec![SandboxState::Running, SandboxState::Starting],
        limit: Some(5),
        ..Default::default()
    };
    assert_eq!(ids(s, combined).await, ["a", "d"]);
    // Starting and running count, stopped does not.
    assert_eq!(s.count_active_by_key("key_a").await.unwrap(), 3);
    assert_eq!(s.count_active_by_key("key_b").await.unwrap(), 1);
    assert_eq!(s.count_active_by_key("nope").await.unwrap(), 0);
}

pub async fn sandboxes_missing_rows_and_updates(s: Arc<dyn Store>) {
    assert_eq!(s.get_sandbox("nope").await.unwrap(), None);
    assert!(
        !s.update_sandbox(&sandbox("nope", "t", 1, &[]))
            .await
            .unwrap()
    );
    let mut r = sandbox("a", "t", 1, &[]);
    r.spec.user = Some("é✓".into());
    r.spec.network = Some(paddock_core::NetworkPolicy::all());
    r.spec.public_ports = vec![3000, 8080];
    r.spec.paused_mode = Some(paddock_core::PauseMode::Filesystem);
    r.spec.secrets.insert(
        "TOKEN".into(),
        paddock_store::SpecSecret {
            secret: "gh".into(),
            file: true,
        },
    );
    r.env_keys = vec![];
    r.expires_at = Some(i64::MAX);
    r.warnings_sent = u32::MAX;
    r.webhook_url = Some("http://h/".into());
    s.insert_sandbox(&r).await.unwrap();
    assert_eq!(s.get_sandbox("a").await.unwrap(), Some(r.clone()));
    r.metadata = pairs(&[("new", "value")]);
    r.ready_at = None;
    assert!(s.update_sandbox(&r).await.unwrap());
    assert_eq!(s.get_sandbox("a").await.unwrap(), Some(r));
}

pub async fn sandboxes_concurrent_inserts_of_one_id(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.insert_sandbox(&sandbox("same", &format!("t{i}"), i, &[]))
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(paddock_store::StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(ids(s.as_ref(), SandboxFilter::default()).await, ["same"]);
}

fn event(tenant: &str, sandbox: Option<&str>, kind: &str) -> Event {
    Event {
        seq: 0,
        at: 1,
        tenant: tenant.into(),
        sandbox_id: sandbox.map(Into::into),
        kind: kind.into(),
        data: serde_json::json!({"x": 1, "s": "é"}),
    }
}

pub async fn events_sequence_filters_limits(s: Arc<dyn Store>) {
    assert!(
        s.list_events(&EventFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let e1 = s
        .insert_event(&event("t", Some("a"), "created"))
        .await
        .unwrap();
    let e2 = s
        .insert_event(&event("t", Some("b"), "created"))
        .await
        .unwrap();
    let e3 = s
        .insert_event(&event("u", None, "node.dead"))
        .await
        .unwrap();
    assert!(e1.seq < e2.seq && e2.seq < e3.seq);
    assert_eq!(e1.data, serde_json::json!({"x": 1, "s": "é"}));
    let list = async |f: EventFilter| s.list_events(&f).await.unwrap();
    assert_eq!(
        list(EventFilter::default()).await,
        vec![e1.clone(), e2.clone(), e3.clone()]
    );
    assert_eq!(
        list(EventFilter {
            after_seq: Some(e1.seq),
            ..Default::default()
        })
        .await,
        vec![e2.clone(), e3.clone()]
    );
    assert_eq!(
        list(EventFilter {
            tenant: Some("t".into()),
            ..Default::default()
        })
        .await,
        vec![e1.clone(), e2.clone()]
    );
    assert_eq!(
        list(EventFilter {
            sandbox_id: Some("b".into()),
            ..Default::default()
        })
        .await,
        vec![e2.clone()]
    );
    assert_eq!(
        list(EventFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await,
        vec![e1.clone()]
    );
    assert!(
        list(EventFilter {
            after_seq: Some(e3.seq),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

/// Concurrent writers: every event gets its own `seq`, and a reader paging by `seq` sees
/// them all, in order.
pub async fn events_concurrent_inserts_keep_order(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let e = s
                    .insert_event(&event("t", None, &format!("w{w}-{i}")))
                    .await
                    .unwrap();
                seqs.push(e.seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's are increasing"
        );
        all.extend(seqs);
    }
    assert_eq!(all.len(), 100);
    let listed: Vec<i64> = s
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(listed, all.into_iter().collect::<Vec<_>>());
}

pub async fn audit_newest_first_filters_paging(s: Arc<dyn Store>) {
    let a = |i: i64, actor: &str, tenant: Option<&str>, sb: Option<&str>| AuditEntry {
        id: 0,
        at: i,
        actor: actor.into(),
        tenant: tenant.map(Into::into),
        action: format!("a{i}"),
        sandbox_id: sb.map(Into::into),
        outcome: "ok".into(),
        detail: (i % 2 == 0).then(|| format!("detail {i}")),
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            s.insert_audit(&a(i, "key_1", Some("t"), Some("sb")))
                .await
                .unwrap(),
        );
    }
    ids.push(s.insert_audit(&a(4, "system", None, None)).await.unwrap());
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let list = async |f: AuditFilter| -> Vec<String> {
        s.list_audit(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    };
    assert_eq!(
        list(AuditFilter::default()).await,
        ["a4", "a3", "a2", "a1", "a0"]
    );
    assert_eq!(
        list(AuditFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        ["a4", "a3"]
    );
    assert_eq!(
        list(AuditFilter {
            before_id: Some(ids[3]),
            limit: Some(2),
            ..Default::default()
        })
        .await,
        ["a2", "a1"]
    );
    assert_eq!(
        list(AuditFilter {
            actor: Some("system".into()),
            ..Default::default()
        })
        .await,
        ["a4"]
    );
    assert_eq!(
        list(AuditFilter {
            tenant: Some("t".into()),
            sandbox_id: Some("sb".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await,
        ["a3"]
    );
    let full = s.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(full[0].id, ids[4]);
    assert_eq!(full[0].tenant, None);
    assert_eq!(full[2].detail.as_deref(), Some("detail 2"));
}

pub async fn execs_last_n_in_order(s: Arc<dyn Store>) {
    assert!(s.list_execs("a", 10).await.unwrap().is_empty());
    for i in 0..5 {
        let rec = ExecRecord {
            id: 0,
            sandbox_id: "a".into(),
            at: i,
            command: format!("c{i}"),
            pid: None,
            exit_code: None,
            status: "running".into(),
            duration_ms: None,
        };
        let id = s.insert_exec(&rec).await.unwrap();
        s.insert_exec(&ExecRecord {
            sandbox_id: "other".into(),
            ..rec.clone()
        })
        .await
        .unwrap();
        if i != 4 {
            s.update_exec(&ExecRecord {
                id,
                pid: Some(7),
                exit_code: Some(-1 - i as i32),
                status: "exit status 0".into(),
                duration_ms: Some(3),
                ..rec
            })
            .await
            .unwrap();
        }
    }
    let last = s.list_execs("a", 2).await.unwrap();
    assert_eq!(
        last.iter().map(|e| e.command.as_str()).collect::<Vec<_>>(),
        ["c3", "c4"]
    );
    assert_eq!(last[0].exit_code, Some(-4));
    assert_eq!(last[0].pid, Some(7));
    assert_eq!(last[1].status, "running");
    assert_eq!(last[1].exit_code, None);
    assert_eq!(s.list_execs("a", 100).await.unwrap().len(), 5);
    assert!(s.list_execs("a", 0).await.unwrap().is_empty());
}

/// A finished exec's history row and its audit entry, written together.
pub async fn execs_with_their_audit_entry_in_one_write(s: Arc<dyn Store>) {
    let rec = ExecRecord {
        id: 0,
        sandbox_id: "sx".into(),
        at: 10,
        command: "true".into(),
        pid: Some(3),
        exit_code: Some(0),
        status: "exit status 0".into(),
        duration_ms: Some(1),
    };
    let audit = AuditEntry {
        id: 0,
        at: 11,
        actor: "key_1".into(),
        tenant: Some("t1".into()),
        action: "exec".into(),
        sandbox_id: Some("sx".into()),
        outcome: "ok".into(),
        detail: Some("true".into()),
    };
    let first = s.insert_exec_audited(&rec, &audit).await.unwrap();
    let second = s
        .insert_exec_audited(
            &ExecRecord {
                command: "false".into(),
                exit_code: Some(1),
                ..rec.clone()
            },
            &audit,
        )
        .await
        .unwrap();
    assert!(
        second > first,
        "ids are assigned in order: {first} {second}"
    );
    let execs = s.list_execs("sx", 10).await.unwrap();
    assert_eq!(
        execs
            .iter()
            .map(|e| (e.id, e.exit_code))
            .collect::<Vec<_>>(),
        [(first, Some(0)), (second, Some(1))]
    );
    assert_eq!(execs[0], ExecRecord { id: first, ..rec });
    let entries = s
        .list_audit(&AuditFilter {
            sandbox_id: Some("sx".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| e.action == "exec" && e.actor == "key_1" && e.at == 11),
        "{entries:?}"
    );
}

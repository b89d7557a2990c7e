//! Alert rules, firings and budget crossings.

use std::sync::Arc;

use paddock_store::{AlertFiring, AlertRule, FiringFilter, Store};

use super::assert_conflict;

fn rule(id: &str, tenant: &str, at: i64) -> AlertRule {
    AlertRule {
        id: id.into(),
        tenant: tenant.into(),
        fleet: id.ends_with('f'),
        kind: "sandbox_failed".into(),
        params: serde_json::json!({"oom_only": true}),
        url: "http://example.com/hook".into(),
        format: "json".into(),
        created_at: at,
        created_by: Some("key".into()),
    }
}

fn fire(rule_id: &str, subject: &str, at: i64) -> AlertFiring {
    AlertFiring {
        id: 0,
        rule_id: rule_id.into(),
        tenant: "t".into(),
        subject: subject.into(),
        summary: "s".into(),
        data: serde_json::json!({"n": 1}),
        started_at: at,
        last_seen_at: at,
        resolved_at: None,
    }
}

fn all(limit: u32) -> FiringFilter {
    FiringFilter {
        limit,
        ..Default::default()
    }
}

pub async fn alerts_one_open_firing_per_rule_and_subject(s: Arc<dyn Store>) {
    s.insert_alert_rule(&rule("r1", "t", 2)).await.unwrap();
    s.insert_alert_rule(&rule("r2f", "u", 1)).await.unwrap();
    assert_conflict(s.insert_alert_rule(&rule("r1", "t", 3)).await);
    assert_eq!(s.list_alert_rules(Some("t")).await.unwrap().len(), 1);
    let ids: Vec<String> = s
        .list_alert_rules(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r2f", "r1"], "oldest first");
    assert_eq!(
        s.get_alert_rule("r1").await.unwrap(),
        Some(rule("r1", "t", 2))
    );
    assert_eq!(
        s.get_alert_rule("r2f").await.unwrap().map(|r| r.fleet),
        Some(true)
    );
    assert_eq!(s.get_alert_rule("nope").await.unwrap(), None);

    let first = s.open_firing(&fire("r1", "sandbox:a", 10)).await.unwrap();
    let first = first.expect("opened");
    assert!(first.id > 0);
    assert!(
        s.open_firing(&fire("r1", "sandbox:a", 20))
            .await
            .unwrap()
            .is_none()
    );
    // An older sighting does not move `last_seen_at` back.
    assert!(
        s.open_firing(&fire("r1", "sandbox:a", 15))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.open_firing(&fire("r1", "sandbox:b", 20))
            .await
            .unwrap()
            .is_some()
    );
    let open = s
        .list_firings(&FiringFilter {
            open_only: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    let a = open.iter().find(|f| f.subject == "sandbox:a").unwrap();
    assert_eq!((a.last_seen_at, a.started_at, a.id), (20, 10, first.id));
    let r = s.resolve_firing("r1", "sandbox:a", 30).await.unwrap();
    assert_eq!(r.as_ref().and_then(|f| f.resolved_at), Some(30));
    assert_eq!(r.map(|f| f.id), Some(first.id));
    assert!(
        s.resolve_firing("r1", "sandbox:a", 31)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.resolve_firing("r9", "x", 31).await.unwrap().is_none());
    // A new episode after the resolution.
    assert!(
        s.open_firing(&fire("r1", "sandbox:a", 40))
            .await
            .unwrap()
            .is_some()
    );
    let since = s
        .list_firings(&FiringFilter {
            since: Some(35),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2, "{since:?}");
    // Newest first; the limit applies (0 counts as 1).
    let newest = s.list_firings(&all(1)).await.unwrap();
    assert_eq!((newest.len(), newest[0].started_at), (1, 40));
    assert_eq!(s.list_firings(&all(0)).await.unwrap().len(), 1);
    let by_tenant = s
        .list_firings(&FiringFilter {
            tenant: Some("other".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(by_tenant.is_empty());
    assert!(s.delete_alert_rule("r1").await.unwrap());
    assert!(!s.delete_alert_rule("r1").await.unwrap());
    assert!(s.list_firings(&all(10)).await.unwrap().is_empty());
}

/// Several servers seeing the same condition open one episode between them.
pub async fn alerts_concurrent_openers_open_once(s: Arc<dyn Store>) {
    s.insert_alert_rule(&rule("r1", "t", 1)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.open_firing(&fire("r1", "host", 10 + i)).await.unwrap()
        }));
    }
    let mut opened = 0;
    for t in tasks {
        opened += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(opened, 1);
    let open = s.list_firings(&all(10)).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].last_seen_at, 17);
}

pub async fn budget_crossings_are_recorded_once(s: Arc<dyn Store>) {
    assert!(
        s.record_budget_crossing("t", "2026-12", "warning", 1)
            .await
            .unwrap()
    );
    assert!(
        !s.record_budget_crossing("t", "2026-12", "warning", 2)
            .await
            .unwrap()
    );
    assert!(
        s.record_budget_crossing("t", "2026-12", "exceeded", 2)
            .await
            .unwrap()
    );
    assert!(
        s.record_budget_crossing("t", "2027-01", "warning", 3)
            .await
            .unwrap()
    );
    assert!(
        s.record_budget_crossing("u", "2026-12", "warning", 3)
            .await
            .unwrap()
    );
    s.clear_budget_crossing("t", "2026-12", "warning")
        .await
        .unwrap();
    s.clear_budget_crossing("t", "2026-12", "never")
        .await
        .unwrap();
    assert!(
        s.record_budget_crossing("t", "2026-12", "warning", 4)
            .await
            .unwrap()
    );
    assert!(
        !s.record_budget_crossing("t", "2026-12", "exceeded", 4)
            .await
            .unwrap()
    );
}

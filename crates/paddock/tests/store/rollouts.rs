//! Rollouts and their targets.

use std::sync::Arc;

use paddock_store::{RolloutRecord, RolloutTarget, Store};
use serde_json::json;

use super::{assert_conflict, tenant};

fn rollout(id: &str, key: &str, at: i64, runner: Option<&str>) -> RolloutRecord {
    RolloutRecord {
        id: id.into(),
        tenant: "t".into(),
        key_id: key.into(),
        runner: runner.map(str::to_owned),
        kind: "command".into(),
        spec: json!({"selector": {"env": "prod"}, "cmd": ["true"]}),
        state: "running".into(),
        reason: None,
        created_at: at,
        finished_at: None,
    }
}

fn tgt(id: &str, seq: u32, state: &str) -> RolloutTarget {
    RolloutTarget {
        rollout_id: id.into(),
        seq,
        sandbox_id: format!("sbx{seq}"),
        state: state.into(),
        result: json!({}),
    }
}

pub async fn rollouts_round_trip_list_and_interrupt(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t", 0)).await.unwrap();
    assert!(s.get_rollout("ro_1").await.unwrap().is_none());
    s.insert_rollout(
        &rollout("ro_1", "k1", 1, None),
        &[tgt("ro_1", 0, "pending"), tgt("ro_1", 1, "pending")],
    )
    .await
    .unwrap();
    assert_conflict(s.insert_rollout(&rollout("ro_1", "k1", 1, None), &[]).await);
    s.insert_rollout(
        &rollout("ro_2", "k2", 2, None),
        &[tgt("ro_2", 0, "pending")],
    )
    .await
    .unwrap();
    s.insert_rollout(
        &rollout("ro_3", "k1", 3, Some("node-b")),
        &[tgt("ro_3", 0, "running")],
    )
    .await
    .unwrap();

    let mut t = tgt("ro_1", 1, "succeeded");
    t.result = json!({"exit_code": 0, "stdout_tail": "ok\n"});
    assert!(s.update_rollout_target(&t).await.unwrap());
    assert!(
        !s.update_rollout_target(&tgt("ro_9", 0, "failed"))
            .await
            .unwrap()
    );
    let mut done = rollout("ro_2", "k2", 2, None);
    done.state = "succeeded".into();
    done.finished_at = Some(5);
    done.reason = Some("fine".into());
    assert!(s.update_rollout(&done).await.unwrap());
    assert!(
        !s.update_rollout(&rollout("ro_9", "k", 1, None))
            .await
            .unwrap()
    );

    let (r, ts) = s.get_rollout("ro_1").await.unwrap().unwrap();
    assert_eq!(r, rollout("ro_1", "k1", 1, None));
    assert_eq!(ts.len(), 2);
    assert_eq!((ts[0].seq, ts[1].seq), (0, 1), "in seq order");
    assert_eq!(ts[1], t);
    let (r, _) = s.get_rollout("ro_2").await.unwrap().unwrap();
    assert_eq!(r, done);

    let ids = |v: Vec<RolloutRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_rollouts(Some("t"), None, 10).await.unwrap()),
        ["ro_3", "ro_2", "ro_1"],
        "newest first"
    );
    assert_eq!(
        ids(s.list_rollouts(None, Some("k1"), 10).await.unwrap()),
        ["ro_3", "ro_1"]
    );
    assert_eq!(ids(s.list_rollouts(None, None, 1).await.unwrap()), ["ro_3"]);
    assert!(
        s.list_rollouts(Some("x"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Only the runner's own running rollouts, and their unfinished targets.
    assert_eq!(s.interrupt_rollouts(None, 9, "restart").await.unwrap(), 1);
    let (r, ts) = s.get_rollout("ro_1").await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.finished_at, r.reason.as_deref()),
        ("interrupted", Some(9), Some("restart"))
    );
    assert_eq!(
        (ts[0].state.as_str(), ts[1].state.as_str()),
        ("interrupted", "succeeded")
    );
    let (r, ts) = s.get_rollout("ro_3").await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), ts[0].state.as_str()),
        ("running", "running")
    );
    assert_eq!(
        s.interrupt_rollouts(Some("node-b"), 10, "restart")
            .await
            .unwrap(),
        1
    );
    let (r, ts) = s.get_rollout("ro_3").await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), ts[0].state.as_str()),
        ("interrupted", "interrupted")
    );
    let (r, _) = s.get_rollout("ro_2").await.unwrap().unwrap();
    assert_eq!(r.state, "succeeded", "a finished rollout is left alone");
}

//! The web console's sessions.

use std::sync::Arc;

use paddock_store::{SessionRecord, Store};

use super::{assert_conflict, key, tenant};

fn session(hash: &str, key_id: &str, created_at: i64, expires_at: i64) -> SessionRecord {
    SessionRecord {
        token_hash: hash.into(),
        key_id: key_id.into(),
        created_at,
        expires_at,
    }
}

pub async fn sessions_live_expire_end_and_die_with_their_key(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t1", 1)).await.unwrap();
    s.insert_key(&key("key_a", "t1", "ha", 1)).await.unwrap();
    s.insert_key(&key("key_b", "t1", "hb", 2)).await.unwrap();
    assert_eq!(s.session_key("s1", 1_000).await.unwrap(), None);
    s.insert_session(&session("s1", "key_a", 1_000, 5_000), 10)
        .await
        .unwrap();
    assert_conflict(
        s.insert_session(&session("s1", "key_b", 1_001, 5_000), 10)
            .await,
    );
    // Live until expires_at, with its key.
    let k = s.session_key("s1", 4_999).await.unwrap().expect("live");
    assert_eq!((k.id.as_str(), k.tenant.as_str()), ("key_a", "t1"));
    assert_eq!(s.session_key("s1", 5_000).await.unwrap(), None);
    assert_eq!(s.session_key("nope", 1_000).await.unwrap(), None);
    // Logout deletes the row, once.
    s.insert_session(&session("s2", "key_a", 1_000, 9_000), 10)
        .await
        .unwrap();
    assert!(s.delete_session("s2").await.unwrap());
    assert!(!s.delete_session("s2").await.unwrap());
    assert_eq!(s.session_key("s2", 1_000).await.unwrap(), None);
    // Purged once expired (s1 expired at 5,000); a login purges too.
    assert_eq!(s.count_sessions().await.unwrap(), 1);
    assert_eq!(s.purge_sessions(4_999).await.unwrap(), 0);
    assert_eq!(s.purge_sessions(5_000).await.unwrap(), 1);
    s.insert_session(&session("s3", "key_b", 6_000, 7_000), 10)
        .await
        .unwrap();
    s.insert_session(&session("s4", "key_b", 8_000, 20_000), 10)
        .await
        .unwrap();
    assert_eq!(
        s.count_sessions().await.unwrap(),
        1,
        "s3 purged at s4's login"
    );
    // Revoking a key ends its sessions, and only its.
    for i in 0..3 {
        s.insert_session(&session(&format!("a{i}"), "key_a", 9_000 + i, 20_000), 10)
            .await
            .unwrap();
    }
    assert_eq!(s.count_sessions().await.unwrap(), 4);
    assert!(s.revoke_key("key_a", 10_000).await.unwrap());
    assert_eq!(s.session_key("a0", 10_000).await.unwrap(), None);
    assert_eq!(s.count_sessions().await.unwrap(), 1);
    assert!(s.session_key("s4", 10_000).await.unwrap().is_some());
    assert_eq!(s.delete_key_sessions("key_b").await.unwrap(), 1);
    assert_eq!(s.delete_key_sessions("key_b").await.unwrap(), 0);
    assert_eq!(s.session_key("s4", 10_000).await.unwrap(), None);
}

/// A key keeps its newest `max_per_key` sessions; a login beyond ends the oldest.
pub async fn sessions_per_key_are_capped_oldest_first(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t1", 1)).await.unwrap();
    s.insert_key(&key("key_a", "t1", "ha", 1)).await.unwrap();
    s.insert_key(&key("key_b", "t1", "hb", 2)).await.unwrap();
    s.insert_session(&session("b0", "key_b", 100, 1_000_000), 3)
        .await
        .unwrap();
    for i in 0..5 {
        s.insert_session(&session(&format!("a{i}"), "key_a", 100 + i, 1_000_000), 3)
            .await
            .unwrap();
    }
    for (h, live) in [
        ("a0", false),
        ("a1", false),
        ("a2", true),
        ("a3", true),
        ("a4", true),
        ("b0", true),
    ] {
        assert_eq!(
            s.session_key(h, 200).await.unwrap().is_some(),
            live,
            "session {h}"
        );
    }
    assert_eq!(s.count_sessions().await.unwrap(), 4);
}

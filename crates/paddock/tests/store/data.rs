//! Secrets, usage, volumes.

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_store::{SealedVersion, SecretRecord, Store, UsageFilter, UsageRow, VolumeRecord};

use super::{assert_conflict, pairs, tenant};

fn sealed(id: &str, version: i64) -> SealedVersion {
    SealedVersion {
        secret_id: id.into(),
        version,
        key_id: "k1".into(),
        nonce: vec![0; 12],
        ciphertext: vec![version as u8; 20],
        created_at: version,
    }
}

fn secret(id: &str, tenant: &str, name: &str) -> SecretRecord {
    SecretRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: name.into(),
        current_version: 1,
        metadata: BTreeMap::new(),
        created_at: 0,
        updated_at: 0,
    }
}

pub async fn secrets_versions_capped_and_deleted(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t", 0)).await.unwrap();
    let rec = secret("sec_1", "t", "db");
    s.insert_secret(&rec, &sealed("sec_1", 1)).await.unwrap();
    assert_conflict(
        s.insert_secret(&secret("sec_2", "t", "db"), &sealed("sec_2", 1))
            .await,
    );
    // Nothing of the refused one is left.
    assert!(s.secret_version("sec_2", 1).await.unwrap().is_none());
    for v in 2..=5 {
        let meta = (v == 3).then(|| pairs(&[("owner", "ops")]));
        assert!(
            s.add_secret_version(&sealed("sec_1", v), meta.as_ref(), 3)
                .await
                .unwrap()
        );
    }
    let got = s.get_secret("t", "db").await.unwrap().unwrap();
    assert_eq!((got.current_version, got.updated_at), (5, 5));
    // Metadata replaced at version 3 and kept after (None keeps it).
    assert_eq!(got.metadata, pairs(&[("owner", "ops")]));
    assert_eq!(
        s.get_secret("t", "sec_1").await.unwrap().unwrap().name,
        "db"
    );
    assert!(s.get_secret("other", "db").await.unwrap().is_none());
    assert!(
        s.secret_version("sec_1", 2).await.unwrap().is_none(),
        "pruned"
    );
    assert_eq!(
        s.secret_version("sec_1", 3).await.unwrap(),
        Some(sealed("sec_1", 3))
    );
    assert_eq!(s.all_secret_versions().await.unwrap().len(), 3);
    assert!(s.delete_secret("sec_1").await.unwrap());
    assert!(!s.delete_secret("sec_1").await.unwrap());
    assert!(s.all_secret_versions().await.unwrap().is_empty());
    assert!(
        !s.add_secret_version(&sealed("sec_1", 6), None, 3)
            .await
            .unwrap()
    );
}

pub async fn secrets_list_page_count_reseal(s: Arc<dyn Store>) {
    s.insert_tenant(&tenant("t", 0)).await.unwrap();
    s.insert_tenant(&tenant("u", 0)).await.unwrap();
    for (id, name) in [("s1", "b"), ("s2", "a"), ("s3", "C"), ("s4", "c")] {
        s.insert_secret(&secret(id, "t", name), &sealed(id, 1))
            .await
            .unwrap();
    }
    s.insert_secret(&secret("s5", "u", "a"), &sealed("s5", 1))
        .await
        .unwrap();
    // A secret of a tenant that does not exist is refused.
    assert_conflict(
        s.insert_secret(&secret("s6", "nope", "a"), &sealed("s6", 1))
            .await,
    );
    // A name that is another secret's id: the id wins.
    s.insert_secret(&secret("s7", "t", "s1"), &sealed("s7", 1))
        .await
        .unwrap();
    assert_eq!(s.get_secret("t", "s1").await.unwrap().unwrap().id, "s1");
    let names = |v: Vec<SecretRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_secrets("t", None, 10).await.unwrap()),
        ["C", "a", "b", "c", "s1"]
    );
    assert_eq!(
        names(s.list_secrets("t", Some("a"), 2).await.unwrap()),
        ["b", "c"]
    );
    assert!(s.list_secrets("t", Some("s1"), 2).await.unwrap().is_empty());
    assert!(s.list_secrets("t", None, 0).await.unwrap().is_empty());
    assert_eq!(s.count_secrets("t").await.unwrap(), 5);
    assert_eq!(s.count_secrets("u").await.unwrap(), 1);
    assert_eq!(s.count_secrets("none").await.unwrap(), 0);
    let mut all = s.all_secret_versions().await.unwrap();
    assert_eq!(all.len(), 6);
    for v in &mut all {
        v.key_id = "k2".into();
        v.nonce = vec![9; 12];
        v.ciphertext.push(1);
    }
    s.reseal_secret_versions(&all).await.unwrap();
    let v = s.secret_version("s3", 1).await.unwrap().unwrap();
    assert_eq!((v.key_id.as_str(), v.nonce[0]), ("k2", 9));
    assert_eq!(v.ciphertext.len(), 21);
    s.reseal_secret_versions(&[]).await.unwrap();
}

fn delta(id: &str, hour: i64, tenant: &str, cpu: f64) -> UsageRow {
    UsageRow {
        sandbox_id: id.into(),
        hour,
        tenant: tenant.into(),
        key_id: format!("key_{tenant}"),
        template: "base".into(),
        cpu_seconds: cpu,
        memory_gib_hours: 0.5,
        disk_gib_hours: 0.25,
        egress_bytes: 10,
    }
}

fn range(from: i64, to: i64) -> UsageFilter {
    UsageFilter {
        from_hour: from,
        to_hour: to,
        ..Default::default()
    }
}

pub async fn usage_adds_up_filters_orders(s: Arc<dyn Store>) {
    s.add_usage(&[]).await.unwrap();
    assert!(s.list_usage(&range(0, 10)).await.unwrap().is_empty());
    s.add_usage(&[delta("b", 1, "u", 2.0), delta("a", 1, "t", 1.0)])
        .await
        .unwrap();
    s.add_usage(&[delta("a", 1, "t", 1.5), delta("a", 2, "t", 4.0)])
        .await
        .unwrap();
    let all = s.list_usage(&range(0, 10)).await.unwrap();
    let keys: Vec<(i64, &str)> = all
        .iter()
        .map(|r| (r.hour, r.sandbox_id.as_str()))
        .collect();
    assert_eq!(keys, [(1, "a"), (1, "b"), (2, "a")]);
    assert_eq!(all[0].cpu_seconds, 2.5);
    assert_eq!(all[0].memory_gib_hours, 1.0);
    assert_eq!(all[0].disk_gib_hours, 0.5);
    assert_eq!(all[0].egress_bytes, 20);
    assert_eq!(
        (all[1].tenant.as_str(), all[1].key_id.as_str()),
        ("u", "key_u")
    );
    let t = s
        .list_usage(&UsageFilter {
            tenant: Some("t".into()),
            from_hour: 2,
            to_hour: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].cpu_seconds, 4.0);
    let k = s
        .list_usage(&UsageFilter {
            key_id: Some("key_u".into()),
            from_hour: 0,
            to_hour: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(k.len(), 1);
    // `to_hour` is exclusive.
    assert!(s.list_usage(&range(0, 1)).await.unwrap().is_empty());
}

/// Concurrent sampling rounds over the same rows, in different orders: every delta counts
/// (and no deadlock).
pub async fn usage_concurrent_rounds_add_up(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let mut round = vec![delta("a", 1, "t", 1.0), delta("b", 1, "t", 1.0)];
                if w % 2 == 1 {
                    round.reverse();
                }
                s.add_usage(&round).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = s.list_usage(&range(0, 10)).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|r| r.cpu_seconds == 40.0 && r.egress_bytes == 400)
    );
}

pub async fn volumes_per_tenant_unique_and_deleted(s: Arc<dyn Store>) {
    for t in ["a", "b"] {
        s.insert_tenant(&tenant(t, 0)).await.unwrap();
    }
    let v = |id: &str, tenant: &str, name: &str, at: i64| VolumeRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: name.into(),
        size_bytes: u64::MAX >> 1,
        created_at: at,
        created_by: (at % 2 == 0).then(|| "key_1".to_owned()),
    };
    assert!(s.list_volumes(None).await.unwrap().is_empty());
    s.insert_volume(&v("vol-1", "a", "data", 2)).await.unwrap();
    s.insert_volume(&v("vol-2", "b", "data", 1)).await.unwrap();
    s.insert_volume(&v("vol-0", "a", "more", 2)).await.unwrap();
    assert_conflict(s.insert_volume(&v("vol-3", "a", "data", 3)).await);
    assert_conflict(s.insert_volume(&v("vol-1", "b", "other", 3)).await);
    assert_conflict(s.insert_volume(&v("vol-4", "nope", "x", 3)).await);
    assert_eq!(
        s.get_volume("a", "data").await.unwrap(),
        Some(v("vol-1", "a", "data", 2))
    );
    assert_eq!(
        s.get_volume("a", "vol-1").await.unwrap().unwrap().name,
        "data"
    );
    assert!(s.get_volume("b", "vol-1").await.unwrap().is_none());
    let ids = |l: Vec<VolumeRecord>| l.into_iter().map(|v| v.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_volumes(Some("a")).await.unwrap()),
        ["vol-0", "vol-1"]
    );
    assert_eq!(
        ids(s.list_volumes(None).await.unwrap()),
        ["vol-2", "vol-0", "vol-1"]
    );
    assert!(s.delete_volume("vol-1").await.unwrap());
    assert!(!s.delete_volume("vol-1").await.unwrap());
    assert!(s.get_volume("a", "data").await.unwrap().is_none());
}

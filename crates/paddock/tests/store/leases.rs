//! Leases of fleet-wide duties.

use std::sync::Arc;
use std::time::Duration;

use paddock_store::Store;

pub async fn leases_acquire_renew_expire_release(s: Arc<dyn Store>) {
    assert_eq!(s.get_lease("duty").await.unwrap(), None);
    assert!(!s.release_lease("duty", "a").await.unwrap());
    assert!(s.acquire_lease("duty", "a", 60_000).await.unwrap());
    let first = s.get_lease("duty").await.unwrap().unwrap();
    assert_eq!((first.name.as_str(), first.holder.as_str()), ("duty", "a"));
    assert!(first.expires_at >= first.acquired_at + 60_000);
    // Held: another cannot take it; the holder renews, keeping its acquisition time.
    assert!(!s.acquire_lease("duty", "b", 60_000).await.unwrap());
    assert!(s.acquire_lease("duty", "a", 60_000).await.unwrap());
    let renewed = s.get_lease("duty").await.unwrap().unwrap();
    assert_eq!(renewed.acquired_at, first.acquired_at);
    assert!(renewed.expires_at >= first.expires_at);
    // Another name is another lease.
    assert!(s.acquire_lease("other", "b", 60_000).await.unwrap());
    // Only the holder releases; then anyone takes it at once.
    assert!(!s.release_lease("duty", "b").await.unwrap());
    assert!(s.release_lease("duty", "a").await.unwrap());
    assert_eq!(s.get_lease("duty").await.unwrap(), None);
    assert!(s.acquire_lease("duty", "b", 200).await.unwrap());
    assert!(!s.acquire_lease("duty", "a", 200).await.unwrap());
    // Expired: taken over.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s.acquire_lease("duty", "a", 60_000).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "not taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = s.get_lease("duty").await.unwrap().unwrap();
    assert_eq!(taken.holder, "a");
    assert!(!s.acquire_lease("duty", "b", 60_000).await.unwrap());
}

/// Of several callers racing for a free lease, exactly one gets it.
pub async fn leases_one_winner_under_concurrency(s: Arc<dyn Store>) {
    for round in 0..5 {
        let name = format!("duty{round}");
        let mut tasks = Vec::new();
        for i in 0..6 {
            let s = s.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                s.acquire_lease(&name, &format!("h{i}"), 60_000)
                    .await
                    .unwrap()
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "round {round}");
    }
}

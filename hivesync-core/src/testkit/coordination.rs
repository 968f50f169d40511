//! Conformance suites for `WorkerRegistry` and `Locks`. Both adapters under test must read time
//! from the given [`ManualClock`].

use std::time::Duration;

use crate::clock::{Clock, ManualClock};
use crate::domain::JobId;
use crate::ports::{Locks, Queue, WorkerRegistry, WorkerRole, WorkerStatus};

fn status(id: &str, role: WorkerRole, clock: &ManualClock) -> WorkerStatus {
    WorkerStatus {
        id: id.to_owned(),
        role,
        queues: role.default_queues(),
        hostname: "test-host".to_owned(),
        pid: 4242,
        version: "0.0.0-test".to_owned(),
        concurrency: 2,
        active_jobs: Vec::new(),
        draining: false,
        started_at: clock.now(),
        heartbeat_at: clock.now(),
        heartbeat_interval_ms: 10_000,
    }
}

/// Runs every point of [`WorkerRegistry`]'s `# Behavior` list.
pub async fn registry(registry: &dyn WorkerRegistry, clock: &ManualClock) {
    assert!(
        registry.list().await.unwrap().is_empty(),
        "a fresh registry is empty"
    );
    let cpu = status("worker-b", WorkerRole::Cpu, clock);
    let cleanup = status("worker-a", WorkerRole::Cleanup, clock);
    registry.heartbeat(&cpu).await.unwrap();
    registry.heartbeat(&cleanup).await.unwrap();
    assert_eq!(
        registry.list().await.unwrap(),
        [cleanup.clone(), cpu.clone()],
        "sorted by id"
    );

    clock.advance(Duration::from_secs(15));
    let busy = WorkerStatus {
        active_jobs: vec![JobId::new(), JobId::new()],
        queues: vec![Queue::PreviewBuild],
        heartbeat_at: clock.now(),
        ..cpu.clone()
    };
    registry.heartbeat(&busy).await.unwrap();
    let listed = registry.list().await.unwrap();
    assert_eq!(listed[1], busy, "a heartbeat replaces the status");
    assert!(listed[1].is_responsive(clock.now()));
    assert_eq!(
        listed[1].gone_after(),
        Duration::from_secs(30),
        "the registry keeps the heartbeat interval: three of them make a worker gone"
    );

    clock.advance(Duration::from_secs(121));
    let listed = registry.list().await.unwrap();
    assert!(
        listed.iter().all(|w| !w.is_responsive(clock.now())),
        "silent for 121 s: unresponsive"
    );

    registry.deregister("worker-a").await.unwrap();
    registry.deregister("never-existed").await.unwrap();
    assert_eq!(
        registry
            .list()
            .await
            .unwrap()
            .iter()
            .map(|w| w.id.as_str())
            .collect::<Vec<_>>(),
        ["worker-b"]
    );

    clock.advance(Duration::from_secs(24 * 3600));
    assert!(
        registry.list().await.unwrap().is_empty(),
        "workers silent for a day are forgotten"
    );
}

/// Runs every point of [`Locks`]'s `# Behavior` list.
pub async fn locks(locks: &dyn Locks, clock: &ManualClock) {
    let ttl = Duration::from_secs(30);
    assert_eq!(locks.holder("cleanup").await.unwrap(), None);
    assert!(locks.acquire("cleanup", "a", ttl).await.unwrap());
    assert!(
        !locks.acquire("cleanup", "b", ttl).await.unwrap(),
        "held by another owner"
    );
    assert!(
        locks.acquire("reconciler", "b", ttl).await.unwrap(),
        "names are independent"
    );
    assert_eq!(locks.holder("cleanup").await.unwrap().as_deref(), Some("a"));

    // The holder extends its lock past the first expiry.
    clock.advance(Duration::from_secs(20));
    assert!(
        locks.acquire("cleanup", "a", ttl).await.unwrap(),
        "the holder extends"
    );
    clock.advance(Duration::from_secs(20));
    assert!(
        !locks.acquire("cleanup", "b", ttl).await.unwrap(),
        "still held after the extension"
    );

    // Unextended, it expires and another owner may take it.
    clock.advance(Duration::from_secs(11));
    assert_eq!(locks.holder("cleanup").await.unwrap(), None, "expired");
    assert!(locks.acquire("cleanup", "b", ttl).await.unwrap());
    assert!(
        !locks.release("cleanup", "a").await.unwrap(),
        "only the holder releases"
    );
    assert_eq!(locks.holder("cleanup").await.unwrap().as_deref(), Some("b"));
    assert!(locks.release("cleanup", "b").await.unwrap());
    assert_eq!(locks.holder("cleanup").await.unwrap(), None);
    assert!(
        !locks.release("cleanup", "b").await.unwrap(),
        "released twice"
    );
    assert!(
        locks.acquire("cleanup", "a", ttl).await.unwrap(),
        "free again"
    );
}

//! The `JobQueue` conformance suite.
//!
//! The adapter under test must read its time from the [`ManualClock`] passed in, so schedules
//! (delays, backoff, lease expiry) are tested by moving the clock, never by waiting. It must also
//! be empty: each adapter test gives it a fresh database or key prefix.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, ManualClock};
use crate::domain::JobId;
use crate::ports::{
    CancelOutcome, Enqueued, FailOutcome, Failure, JobQueue, LeaseStatus, NewQueuedJob, Queue,
    ReleaseOutcome,
};

const LEASE: Duration = Duration::from_secs(30);

/// Runs every point of [`JobQueue`]'s `# Behavior` list.
pub async fn run(queue: Arc<dyn JobQueue>, clock: ManualClock) {
    let q = &*queue;
    queue.ping().await.expect("ping");
    push_and_consume_in_order(q).await;
    queues_are_isolated(q).await;
    leases_are_exclusive_while_renewed(q, &clock).await;
    retries_back_off_then_dead_letter(q, &clock).await;
    non_retryable_failures_dead_letter_at_once(q).await;
    dead_letters_can_be_retried_and_purged(q).await;
    delayed_jobs_wait_for_their_time(q, &clock).await;
    dedup_holds_while_unfinished(q).await;
    dedup_survives_expiry_and_is_freed_by_death(q, &clock).await;
    cancellation(q, &clock).await;
    release_does_not_count_an_attempt(q).await;
    complete_and_reserve_chains_jobs(q).await;
    expiry_on_the_last_attempt_dead_letters(q, &clock).await;
    an_expired_lease_comes_back_at_the_front(q, &clock).await;
    a_gone_workers_jobs_come_back_at_once(q, &clock).await;
    stats_count_every_state(q, &clock).await;
    concurrent_reservers_never_share_a_job(queue.clone()).await;
    queue
        .wait_for_work(&[Queue::AiJobs], Duration::from_millis(20))
        .await
        .expect("wait_for_work returns after its timeout");
}

fn job(queue: Queue, kind: &str) -> NewQueuedJob {
    NewQueuedJob {
        job_id: JobId::new(),
        queue,
        kind: kind.to_owned(),
        payload: serde_json::json!({"kind": kind, "n": [1, 2, 3]}),
        delay: None,
        dedup_key: None,
        max_attempts: None,
    }
}

async fn add(queue: &dyn JobQueue, new: NewQueuedJob) -> JobId {
    match queue.enqueue(new).await.expect("enqueue") {
        Enqueued::Added(id) => id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn retryable(after: Duration) -> Failure {
    Failure {
        retryable: true,
        code: "PREVIEW_BUILD_FAILED".to_owned(),
        message: "bundler crashed".to_owned(),
        retry_after: after,
    }
}

async fn push_and_consume_in_order(queue: &dyn JobQueue) {
    let first = add(queue, job(Queue::AiJobs, "first")).await;
    let second = add(queue, job(Queue::AiJobs, "second")).await;
    let third = add(queue, job(Queue::AiJobs, "third")).await;
    for (expected, kind) in [(first, "first"), (second, "second"), (third, "third")] {
        let delivery = queue
            .reserve(Queue::AiJobs, "worker-a", LEASE)
            .await
            .unwrap()
            .expect("a job is due");
        assert_eq!(delivery.job_id(), expected, "oldest first");
        assert_eq!(delivery.kind, kind);
        assert_eq!(
            delivery.payload,
            serde_json::json!({"kind": kind, "n": [1, 2, 3]})
        );
        assert_eq!(
            (delivery.attempt, delivery.max_attempts),
            (1, Queue::AiJobs.policy().max_attempts)
        );
        assert_eq!(delivery.lease.queue, Queue::AiJobs);
        assert!(queue.contains(expected).await.unwrap());
        assert!(
            queue.complete(&delivery.lease).await.unwrap(),
            "complete with a live lease"
        );
        assert!(
            !queue.contains(expected).await.unwrap(),
            "completed jobs are gone"
        );
        assert!(
            !queue.complete(&delivery.lease).await.unwrap(),
            "completing twice does nothing"
        );
    }
    assert!(
        queue
            .reserve(Queue::AiJobs, "worker-a", LEASE)
            .await
            .unwrap()
            .is_none(),
        "empty"
    );
}

async fn queues_are_isolated(queue: &dyn JobQueue) {
    let preview = add(queue, job(Queue::PreviewBuild, "build")).await;
    assert!(
        queue
            .reserve(Queue::AiJobs, "w", LEASE)
            .await
            .unwrap()
            .is_none(),
        "not from another queue"
    );
    let delivery = queue
        .reserve(Queue::PreviewBuild, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.job_id(), preview);
    assert_eq!(
        delivery.max_attempts,
        Queue::PreviewBuild.policy().max_attempts
    );
    queue.complete(&delivery.lease).await.unwrap();
}

async fn leases_are_exclusive_while_renewed(queue: &dyn JobQueue, clock: &ManualClock) {
    let id = add(queue, job(Queue::AiJobs, "slow")).await;
    let held = queue
        .reserve(Queue::AiJobs, "worker-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        held.lease_expires_at,
        clock.now() + chrono::Duration::from_std(LEASE).unwrap()
    );
    for _ in 0..4 {
        // Each renewal pushes the expiry; time passes well beyond the first lease.
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            queue.renew(&held.lease, LEASE).await.unwrap(),
            LeaseStatus::Held
        );
        assert!(
            queue
                .reserve(Queue::AiJobs, "worker-b", LEASE)
                .await
                .unwrap()
                .is_none(),
            "a renewed lease is never handed to another worker"
        );
    }
    // The worker dies: no renewal. Past the lease, another worker gets the job.
    clock.advance(LEASE + Duration::from_secs(1));
    let again = queue
        .reserve(Queue::AiJobs, "worker-b", LEASE)
        .await
        .unwrap()
        .expect("re-delivered");
    assert_eq!(again.job_id(), id);
    assert_eq!(again.attempt, 2, "an expired lease counts as an attempt");
    assert_ne!(again.lease.token, held.lease.token);
    // The first worker's stale lease can do nothing.
    assert_eq!(
        queue.renew(&held.lease, LEASE).await.unwrap(),
        LeaseStatus::Lost
    );
    assert!(!queue.complete(&held.lease).await.unwrap());
    assert_eq!(
        queue
            .fail(&held.lease, retryable(Duration::ZERO))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert_eq!(
        queue.release(&held.lease).await.unwrap(),
        ReleaseOutcome::LeaseLost
    );
    assert!(queue.complete(&again.lease).await.unwrap());
}

async fn retries_back_off_then_dead_letter(queue: &dyn JobQueue, clock: &ManualClock) {
    let id = add(
        queue,
        NewQueuedJob {
            max_attempts: Some(3),
            ..job(Queue::AiJobs, "flaky")
        },
    )
    .await;
    let policy = Queue::AiJobs.policy();
    let mut last_wait = Duration::ZERO;
    for attempt in 1..=2u32 {
        let delivery = queue
            .reserve(Queue::AiJobs, "w", LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((delivery.job_id(), delivery.attempt), (id, attempt));
        // The wait the worker runtime asks for: the queue policy's backoff.
        let wait = policy.backoff(delivery.attempt, 0.5);
        assert!(
            wait > last_wait,
            "backoff order: retry {attempt} waits longer than the one before"
        );
        last_wait = wait;
        let outcome = queue.fail(&delivery.lease, retryable(wait)).await.unwrap();
        assert_eq!(
            outcome,
            FailOutcome::Retrying {
                at: clock.now() + chrono::Duration::from_std(wait).unwrap()
            }
        );
        // Not before its time.
        clock.advance(wait - Duration::from_millis(1));
        assert!(
            queue
                .reserve(Queue::AiJobs, "w", LEASE)
                .await
                .unwrap()
                .is_none(),
            "retry {attempt} waits"
        );
        assert!(
            queue.find_dead(id).await.unwrap().is_none(),
            "waiting is not dead"
        );
        clock.advance(Duration::from_millis(1));
    }
    let last = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(last.is_last_attempt());
    assert_eq!(
        queue
            .fail(&last.lease, retryable(Duration::from_secs(5)))
            .await
            .unwrap(),
        FailOutcome::DeadLettered
    );
    clock.advance(Duration::from_secs(60));
    assert!(
        queue
            .reserve(Queue::AiJobs, "w", LEASE)
            .await
            .unwrap()
            .is_none(),
        "dead jobs are not delivered"
    );
    let dead = queue.dead_letters(Queue::AiJobs, 10).await.unwrap();
    let letter = dead
        .iter()
        .find(|d| d.job_id == id)
        .expect("in the dead letters");
    assert_eq!((letter.attempts, letter.kind.as_str()), (3, "flaky"));
    assert_eq!(
        (letter.error_code.as_str(), letter.error_message.as_str()),
        ("PREVIEW_BUILD_FAILED", "bundler crashed")
    );
    assert_eq!(letter.payload["kind"], "flaky");
    assert_eq!(
        queue.find_dead(id).await.unwrap().as_ref(),
        Some(letter),
        "find_dead finds the same letter"
    );
    assert!(
        queue.contains(id).await.unwrap(),
        "dead letters are still held"
    );
    assert_eq!(queue.purge_dead(Queue::AiJobs, Some(id)).await.unwrap(), 1);
    assert!(queue.find_dead(id).await.unwrap().is_none());
}

async fn non_retryable_failures_dead_letter_at_once(queue: &dyn JobQueue) {
    let id = add(queue, job(Queue::AiJobs, "hopeless")).await;
    let delivery = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    let failure = Failure {
        retryable: false,
        ..retryable(Duration::ZERO)
    };
    assert_eq!(
        queue.fail(&delivery.lease, failure).await.unwrap(),
        FailOutcome::DeadLettered
    );
    let dead = queue.dead_letters(Queue::AiJobs, 10).await.unwrap();
    assert_eq!(
        dead.iter()
            .filter(|d| d.job_id == id)
            .map(|d| d.attempts)
            .collect::<Vec<_>>(),
        [1]
    );
    queue.purge_dead(Queue::AiJobs, Some(id)).await.unwrap();
}

async fn dead_letters_can_be_retried_and_purged(queue: &dyn JobQueue) {
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = add(
            queue,
            NewQueuedJob {
                max_attempts: Some(1),
                ..job(Queue::Cleanup, &format!("dead-{n}"))
            },
        )
        .await;
        let delivery = queue
            .reserve(Queue::Cleanup, "w", LEASE)
            .await
            .unwrap()
            .unwrap();
        queue
            .fail(&delivery.lease, retryable(Duration::ZERO))
            .await
            .unwrap();
        ids.push(id);
    }
    let dead: Vec<JobId> = queue
        .dead_letters(Queue::Cleanup, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.job_id)
        .collect();
    assert_eq!(dead, ids, "oldest first");
    assert_eq!(
        queue.dead_letters(Queue::Cleanup, 2).await.unwrap().len(),
        2,
        "limit"
    );
    assert!(
        queue
            .dead_letters(Queue::AiJobs, 10)
            .await
            .unwrap()
            .is_empty(),
        "per queue"
    );

    assert!(queue.retry_dead(ids[0]).await.unwrap());
    assert!(!queue.retry_dead(ids[0]).await.unwrap(), "no longer dead");
    let revived = queue
        .reserve(Queue::Cleanup, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (revived.job_id(), revived.attempt),
        (ids[0], 1),
        "fresh attempts"
    );
    queue.complete(&revived.lease).await.unwrap();

    assert_eq!(queue.purge_dead(Queue::Cleanup, None).await.unwrap(), 2);
    assert!(
        queue
            .dead_letters(Queue::Cleanup, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!queue.contains(ids[1]).await.unwrap());
    assert!(!queue.retry_dead(ids[1]).await.unwrap());
}

async fn delayed_jobs_wait_for_their_time(queue: &dyn JobQueue, clock: &ManualClock) {
    let later = add(
        queue,
        NewQueuedJob {
            delay: Some(Duration::from_secs(60)),
            ..job(Queue::SystemEvents, "later")
        },
    )
    .await;
    let now = add(queue, job(Queue::SystemEvents, "now")).await;
    let first = queue
        .reserve(Queue::SystemEvents, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.job_id(), now, "a delayed job does not block others");
    queue.complete(&first.lease).await.unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(
        queue
            .reserve(Queue::SystemEvents, "w", LEASE)
            .await
            .unwrap()
            .is_none(),
        "not yet"
    );
    clock.advance(Duration::from_secs(1));
    let due = queue
        .reserve(Queue::SystemEvents, "w", LEASE)
        .await
        .unwrap()
        .expect("due now");
    assert_eq!(due.job_id(), later);
    queue.complete(&due.lease).await.unwrap();
}

async fn dedup_holds_while_unfinished(queue: &dyn JobQueue) {
    let keyed = |key: &str| NewQueuedJob {
        dedup_key: Some(key.to_owned()),
        ..job(Queue::PreviewBuild, "dedup")
    };
    let original = add(queue, keyed("tree:abc:ios")).await;
    assert_eq!(
        queue.enqueue(keyed("tree:abc:ios")).await.unwrap(),
        Enqueued::Duplicate(original),
        "while waiting"
    );
    let other = add(queue, keyed("tree:abc:android")).await;
    let on_other_queue = add(
        queue,
        NewQueuedJob {
            queue: Queue::AiJobs,
            ..keyed("tree:abc:ios")
        },
    )
    .await;
    assert_ne!(on_other_queue, original, "keys are per queue");

    let running = queue
        .reserve(Queue::PreviewBuild, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.job_id(), original);
    assert_eq!(
        queue.enqueue(keyed("tree:abc:ios")).await.unwrap(),
        Enqueued::Duplicate(original),
        "while running"
    );
    queue.complete(&running.lease).await.unwrap();
    let fresh = add(queue, keyed("tree:abc:ios")).await;
    assert_ne!(fresh, original, "completion frees the key");

    // Held while delayed, and across a lease that expired and re-queued the job; freed by
    // dead-lettering and by cancellation.
    let delayed = add(
        queue,
        NewQueuedJob {
            delay: Some(Duration::from_secs(30)),
            ..keyed("delayed")
        },
    )
    .await;
    assert_eq!(
        queue.enqueue(keyed("delayed")).await.unwrap(),
        Enqueued::Duplicate(delayed),
        "while delayed"
    );
    assert_eq!(queue.cancel(delayed).await.unwrap(), CancelOutcome::Removed);
    let _ = add(queue, keyed("delayed")).await;

    // Drain what this check added (the job keyed "delayed" waits in the queue until the end of
    // this check).
    for _ in 0..2 {
        let d = queue
            .reserve(Queue::PreviewBuild, "w", LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!([other, fresh].contains(&d.job_id()));
        queue.complete(&d.lease).await.unwrap();
    }
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), on_other_queue);
    queue.complete(&d.lease).await.unwrap();
    let d = queue
        .reserve(Queue::PreviewBuild, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    queue.complete(&d.lease).await.unwrap();
}

async fn dedup_survives_expiry_and_is_freed_by_death(queue: &dyn JobQueue, clock: &ManualClock) {
    let keyed = |key: &str, max: u32| NewQueuedJob {
        dedup_key: Some(key.to_owned()),
        max_attempts: Some(max),
        ..job(Queue::Cleanup, "dedup")
    };
    let id = add(queue, keyed("k", 2)).await;
    queue
        .reserve(Queue::Cleanup, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    clock.advance(LEASE + Duration::from_secs(1));
    let again = queue
        .reserve(Queue::Cleanup, "w2", LEASE)
        .await
        .unwrap()
        .expect("re-delivered");
    assert_eq!(again.job_id(), id);
    assert_eq!(
        queue.enqueue(keyed("k", 2)).await.unwrap(),
        Enqueued::Duplicate(id),
        "held after expiry"
    );
    let failure = Failure {
        retryable: false,
        ..retryable(Duration::ZERO)
    };
    assert_eq!(
        queue.fail(&again.lease, failure).await.unwrap(),
        FailOutcome::DeadLettered
    );
    let fresh = add(queue, keyed("k", 2)).await;
    assert_ne!(fresh, id, "a dead letter frees its key");
    let d = queue
        .reserve(Queue::Cleanup, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), fresh);
    queue.complete(&d.lease).await.unwrap();
    queue.purge_dead(Queue::Cleanup, None).await.unwrap();
}

async fn cancellation(queue: &dyn JobQueue, clock: &ManualClock) {
    // Waiting and delayed jobs are removed at once, and free their dedup key.
    let waiting = add(
        queue,
        NewQueuedJob {
            dedup_key: Some("c1".to_owned()),
            ..job(Queue::AiJobs, "w")
        },
    )
    .await;
    let delayed = add(
        queue,
        NewQueuedJob {
            delay: Some(Duration::from_secs(5)),
            ..job(Queue::AiJobs, "d")
        },
    )
    .await;
    assert_eq!(queue.cancel(waiting).await.unwrap(), CancelOutcome::Removed);
    assert_eq!(queue.cancel(delayed).await.unwrap(), CancelOutcome::Removed);
    assert!(!queue.contains(waiting).await.unwrap() && !queue.contains(delayed).await.unwrap());
    assert_eq!(
        queue.cancel(waiting).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        queue.cancel(JobId::new()).await.unwrap(),
        CancelOutcome::NotFound
    );
    let reuse = add(
        queue,
        NewQueuedJob {
            dedup_key: Some("c1".to_owned()),
            ..job(Queue::AiJobs, "w")
        },
    )
    .await;
    clock.advance(Duration::from_secs(10));
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), reuse, "cancelled jobs are never delivered");
    queue.complete(&d.lease).await.unwrap();

    // A running job: its worker learns at the next renewal, then completes the delivery.
    let running = add(queue, job(Queue::AiJobs, "r")).await;
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        queue.cancel(running).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        queue.renew(&d.lease, LEASE).await.unwrap(),
        LeaseStatus::CancelRequested
    );
    assert!(queue.complete(&d.lease).await.unwrap());
    assert!(!queue.contains(running).await.unwrap());

    // A running job whose worker dies after cancellation was requested is dropped, not
    // re-delivered.
    let orphan = add(queue, job(Queue::AiJobs, "o")).await;
    queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        queue.cancel(orphan).await.unwrap(),
        CancelOutcome::Requested
    );
    clock.advance(LEASE + Duration::from_secs(1));
    assert!(
        queue
            .reserve(Queue::AiJobs, "w2", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!queue.contains(orphan).await.unwrap());

    // A retryable failure of a job whose cancellation was requested ends it instead of retrying.
    let flagged = add(queue, job(Queue::AiJobs, "f")).await;
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        queue.cancel(flagged).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        queue
            .fail(&d.lease, retryable(Duration::ZERO))
            .await
            .unwrap(),
        FailOutcome::DeadLettered
    );
    // Retrying that dead letter clears the old cancellation request.
    assert!(queue.retry_dead(flagged).await.unwrap());
    let revived = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revived.job_id(), flagged);
    assert_eq!(
        queue.renew(&revived.lease, LEASE).await.unwrap(),
        LeaseStatus::Held
    );
    // A release of a job whose cancellation was requested drops it.
    assert_eq!(
        queue.cancel(flagged).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        queue.release(&revived.lease).await.unwrap(),
        ReleaseOutcome::Dropped
    );
    assert!(!queue.contains(flagged).await.unwrap());

    // A dead job can be cancelled too.
    let dead = add(
        queue,
        NewQueuedJob {
            max_attempts: Some(1),
            ..job(Queue::AiJobs, "x")
        },
    )
    .await;
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    queue
        .fail(&d.lease, retryable(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(queue.cancel(dead).await.unwrap(), CancelOutcome::Removed);
    assert!(
        queue
            .dead_letters(Queue::AiJobs, 10)
            .await
            .unwrap()
            .iter()
            .all(|l| l.job_id != dead)
    );
}

async fn complete_and_reserve_chains_jobs(queue: &dyn JobQueue) {
    let first = add(queue, job(Queue::SystemEvents, "one")).await;
    let second = add(queue, job(Queue::AiJobs, "two")).await;
    let d = queue
        .reserve(Queue::SystemEvents, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), first);
    let (done, next) = queue
        .complete_and_reserve(&d.lease, Queue::AiJobs, "w", LEASE)
        .await
        .unwrap();
    assert!(done, "the first is completed");
    assert!(!queue.contains(first).await.unwrap());
    let next = next.expect("the next job, from the queue asked for");
    assert_eq!(
        (next.job_id(), next.kind.as_str(), next.attempt),
        (second, "two", 1)
    );
    assert_eq!(next.payload["kind"], "two");
    // A stale lease completes nothing but still hands out work; an empty queue hands out none.
    let third = add(queue, job(Queue::AiJobs, "three")).await;
    let (done, stale_next) = queue
        .complete_and_reserve(&d.lease, Queue::AiJobs, "w", LEASE)
        .await
        .unwrap();
    assert!(!done);
    assert_eq!(stale_next.as_ref().map(|n| n.job_id()), Some(third));
    let (done, none) = queue
        .complete_and_reserve(&next.lease, Queue::AiJobs, "w", LEASE)
        .await
        .unwrap();
    assert!(done && none.is_none());
    assert!(queue.complete(&stale_next.unwrap().lease).await.unwrap());
}

async fn release_does_not_count_an_attempt(queue: &dyn JobQueue) {
    let first = add(queue, job(Queue::AiJobs, "first")).await;
    let second = add(queue, job(Queue::AiJobs, "second")).await;
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), first);
    assert_eq!(
        queue.release(&d.lease).await.unwrap(),
        ReleaseOutcome::Released
    );
    let again = queue
        .reserve(Queue::AiJobs, "w2", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.job_id(), again.attempt),
        (first, 1),
        "back at the front, attempt not counted"
    );
    queue.complete(&again.lease).await.unwrap();
    let d = queue
        .reserve(Queue::AiJobs, "w2", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), second);
    queue.complete(&d.lease).await.unwrap();
}

async fn expiry_on_the_last_attempt_dead_letters(queue: &dyn JobQueue, clock: &ManualClock) {
    let id = add(
        queue,
        NewQueuedJob {
            max_attempts: Some(1),
            ..job(Queue::AiJobs, "crasher")
        },
    )
    .await;
    queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    clock.advance(LEASE + Duration::from_secs(1));
    assert!(
        queue
            .reserve(Queue::AiJobs, "w", LEASE)
            .await
            .unwrap()
            .is_none(),
        "not re-delivered"
    );
    let dead = queue.dead_letters(Queue::AiJobs, 10).await.unwrap();
    let letter = dead
        .iter()
        .find(|d| d.job_id == id)
        .expect("dead-lettered after its last lease expired");
    assert_eq!(letter.attempts, 1);
    queue.purge_dead(Queue::AiJobs, None).await.unwrap();
}

async fn an_expired_lease_comes_back_at_the_front(queue: &dyn JobQueue, clock: &ManualClock) {
    let crashed = add(queue, job(Queue::AiJobs, "crashed")).await;
    queue
        .reserve(Queue::AiJobs, "dead", LEASE)
        .await
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let later = add(queue, job(Queue::AiJobs, "later")).await;
    clock.advance(LEASE);
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.job_id(), d.attempt),
        (crashed, 2),
        "a job whose lease expired is next in line, not behind the jobs that came after it"
    );
    queue.complete(&d.lease).await.unwrap();
    let d = queue
        .reserve(Queue::AiJobs, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.job_id(), later);
    queue.complete(&d.lease).await.unwrap();
}

async fn a_gone_workers_jobs_come_back_at_once(queue: &dyn JobQueue, clock: &ManualClock) {
    let take = |queue_name: Queue, worker: &'static str| async move {
        queue
            .reserve(queue_name, worker, LEASE)
            .await
            .unwrap()
            .expect("a job to take")
    };
    let running = add(queue, job(Queue::AiJobs, "running")).await;
    let on_its_last_attempt = add(
        queue,
        NewQueuedJob {
            max_attempts: Some(1),
            ..job(Queue::AiJobs, "last attempt")
        },
    )
    .await;
    let cancelled = add(queue, job(Queue::SystemEvents, "cancelled")).await;
    let elsewhere = add(queue, job(Queue::AiJobs, "elsewhere")).await;
    let gone_running = take(Queue::AiJobs, "gone").await;
    let gone_last = take(Queue::AiJobs, "gone").await;
    let gone_cancelled = take(Queue::SystemEvents, "gone").await;
    let alive = take(Queue::AiJobs, "alive").await;
    assert_eq!(
        [
            gone_running.job_id(),
            gone_last.job_id(),
            gone_cancelled.job_id(),
            alive.job_id()
        ],
        [running, on_its_last_attempt, cancelled, elsewhere]
    );
    assert_eq!(
        queue.cancel(cancelled).await.unwrap(),
        CancelOutcome::Requested
    );
    clock.advance(Duration::from_secs(2));
    let later = add(queue, job(Queue::AiJobs, "later")).await;

    let mut taken = queue.reclaim_worker("gone").await.unwrap();
    taken.sort();
    let mut expected = vec![running, on_its_last_attempt, cancelled];
    expected.sort();
    assert_eq!(taken, expected, "every job of that worker, and only those");
    for stale in [&gone_running, &gone_last, &gone_cancelled] {
        assert_eq!(
            queue.renew(&stale.lease, LEASE).await.unwrap(),
            LeaseStatus::Lost,
            "the gone worker's lease tokens are stale"
        );
    }
    assert_eq!(
        queue.renew(&alive.lease, LEASE).await.unwrap(),
        LeaseStatus::Held,
        "another worker's lease is untouched"
    );
    let again = take(Queue::AiJobs, "w").await;
    assert_eq!(
        (again.job_id(), again.attempt),
        (running, 2),
        "at once (no lease ran out), at the front, the attempt counted"
    );
    let dead = queue
        .find_dead(on_its_last_attempt)
        .await
        .unwrap()
        .expect("dead on its last attempt");
    assert_eq!(dead.attempts, 1);
    assert!(
        !queue.contains(cancelled).await.unwrap(),
        "dropped: its cancellation was requested"
    );
    assert!(
        queue.reclaim_worker("gone").await.unwrap().is_empty(),
        "nothing is taken twice"
    );
    assert!(queue.reclaim_worker("nobody").await.unwrap().is_empty());

    queue.complete(&again.lease).await.unwrap();
    queue.complete(&alive.lease).await.unwrap();
    let d = take(Queue::AiJobs, "w").await;
    assert_eq!(d.job_id(), later);
    queue.complete(&d.lease).await.unwrap();
    queue.purge_dead(Queue::AiJobs, None).await.unwrap();
}

async fn stats_count_every_state(queue: &dyn JobQueue, clock: &ManualClock) {
    let q = Queue::GpuAiJobs;
    assert_eq!(
        queue.stats(q).await.unwrap(),
        Default::default(),
        "a fresh queue is empty"
    );
    add(queue, job(q, "a")).await;
    clock.advance(Duration::from_secs(3));
    add(queue, job(q, "b")).await;
    add(
        queue,
        NewQueuedJob {
            delay: Some(Duration::from_secs(30)),
            ..job(q, "c")
        },
    )
    .await;
    let dead = add(
        queue,
        NewQueuedJob {
            max_attempts: Some(1),
            ..job(q, "d")
        },
    )
    .await;
    let stats = queue.stats(q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.running, stats.dead),
        (3, 1, 0, 0)
    );
    assert_eq!(stats.depth(), 4);
    assert_eq!(stats.oldest_ready_ms, Some(3_000), "the oldest waited 3 s");
    let running = queue.reserve(q, "w", LEASE).await.unwrap().unwrap();
    let stats = queue.stats(q).await.unwrap();
    assert_eq!((stats.ready, stats.running), (2, 1));
    queue.complete(&running.lease).await.unwrap();
    for _ in 0..2 {
        let d = queue.reserve(q, "w", LEASE).await.unwrap().unwrap();
        if d.job_id() == dead {
            queue
                .fail(&d.lease, retryable(Duration::ZERO))
                .await
                .unwrap();
        } else {
            queue.complete(&d.lease).await.unwrap();
        }
    }
    let stats = queue.stats(q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.running, stats.dead),
        (0, 1, 0, 1)
    );
    assert_eq!(stats.oldest_ready_ms, None);
    queue.purge_dead(q, None).await.unwrap();
    clock.advance(Duration::from_secs(30));
    let d = queue.reserve(q, "w", LEASE).await.unwrap().unwrap();
    queue.complete(&d.lease).await.unwrap();
}

async fn concurrent_reservers_never_share_a_job(queue: Arc<dyn JobQueue>) {
    let mut ids = HashSet::new();
    for n in 0..40 {
        ids.insert(add(&*queue, job(Queue::PreviewBuild, &format!("c{n}"))).await);
    }
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(d) = queue
                    .reserve(Queue::PreviewBuild, &format!("w{w}"), LEASE)
                    .await
                    .unwrap()
                {
                    got.push(d.job_id());
                    assert!(queue.complete(&d.lease).await.unwrap());
                }
                got
            })
        })
        .collect();
    let mut seen = Vec::new();
    for worker in workers {
        seen.extend(worker.await.unwrap());
    }
    assert_eq!(
        seen.len(),
        ids.len(),
        "every job delivered exactly once: {} of {}",
        seen.len(),
        ids.len()
    );
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
}

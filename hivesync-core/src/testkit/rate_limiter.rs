//! The `RateLimiter` conformance suite.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::ports::{Quota, RateLimiter};

/// Moves the limiter's clock forward: `tokio::time::advance` under paused time for the in-process
/// adapter, or a real wait for adapters whose clock is a server's.
pub type Advance<'a> = &'a (dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Sync);

/// Runs every point of [`RateLimiter`]'s `# Behavior` list. `namespace` keeps the keys of
/// different runs apart when the limiter's state is shared.
pub async fn run(limiter: &dyn RateLimiter, namespace: &str, advance: Advance<'_>) {
    let quota = Quota::new(3, Duration::from_millis(600)).unwrap();
    let interval = quota.emission_interval();
    let key = format!("{namespace}:burst");

    // Peeking counts nothing.
    for _ in 0..5 {
        let peeked = limiter.peek(&key, quota).await.unwrap();
        assert!(
            peeked.allowed && peeked.remaining == 2,
            "peek must not count: {peeked:?}"
        );
    }
    // A fresh key allows a whole burst, counting down.
    for expected_remaining in [2, 1, 0] {
        let decision = limiter.check(&key, quota).await.unwrap();
        assert!(decision.allowed, "within the burst");
        assert_eq!(decision.remaining, expected_remaining);
        assert_eq!(decision.retry_after, Duration::ZERO);
    }
    // Then refuses, saying to come back after about one emission interval.
    let refused = limiter.check(&key, quota).await.unwrap();
    assert!(!refused.allowed, "past the burst");
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= interval,
        "retry_after {:?} must be in (0, {interval:?}]",
        refused.retry_after
    );
    let peeked = limiter.peek(&key, quota).await.unwrap();
    assert!(
        !peeked.allowed && peeked.retry_after <= refused.retry_after,
        "peek sees the refusal"
    );
    // Refusals do not count: a second refusal asks for no longer a wait.
    let again = limiter.check(&key, quota).await.unwrap();
    assert!(!again.allowed);
    assert!(again.retry_after <= refused.retry_after);

    // Other keys are unaffected.
    let other = limiter
        .check(&format!("{namespace}:other"), quota)
        .await
        .unwrap();
    assert!(
        other.allowed && other.remaining == 2,
        "keys are independent"
    );

    // Waiting retry_after is enough for one more request, and only one.
    advance(again.retry_after + Duration::from_millis(5)).await;
    assert!(
        limiter.check(&key, quota).await.unwrap().allowed,
        "allowed after retry_after"
    );
    assert!(
        !limiter.check(&key, quota).await.unwrap().allowed,
        "only one was earned"
    );

    // After a quiet period, a full burst again.
    advance(quota.period + Duration::from_millis(5)).await;
    for _ in 0..3 {
        assert!(
            limiter.check(&key, quota).await.unwrap().allowed,
            "a full burst after a quiet period"
        );
    }
    assert!(!limiter.check(&key, quota).await.unwrap().allowed);
}

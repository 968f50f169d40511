//! The `RateLimiter` port.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

/// `limit` requests per `period`, of which all `limit` may come at once (a burst) after a quiet
/// spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    pub fn per_minute(limit: u32) -> Result<Self> {
        Self::new(limit, Duration::from_secs(60))
    }

    pub fn new(limit: u32, period: Duration) -> Result<Self> {
        if limit == 0 || period.is_zero() {
            return Err(Error::validation(
                "a quota needs a positive limit and period",
            ));
        }
        Ok(Quota { limit, period })
    }

    /// The time one request "costs": `period / limit`.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.limit
    }
}

/// The outcome of one [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// How many more requests would be allowed right now.
    pub remaining: u32,
    /// When refused: how long until one request would be allowed. Zero when allowed.
    pub retry_after: Duration,
}

/// Counts requests per key against a [`Quota`] (GCRA: a token bucket without a background
/// refill).
///
/// Adapters: in-process (embedded default) and Redis (shared by every server replica).
///
/// # Behavior
///
/// - A fresh key allows `quota.limit` requests at once, then refuses with a `retry_after` of about
///   one emission interval (`period / limit`).
/// - A refused request does not count: waiting `retry_after` is always enough to be allowed again.
/// - Keys are independent: exhausting one never affects another.
/// - After a quiet `period`, a key allows a full burst again.
/// - `peek` answers what `check` would, without counting anything.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request against `key` if the quota allows it.
    async fn check(&self, key: &str, quota: Quota) -> Result<RateDecision>;
    /// What [`RateLimiter::check`] would decide now, without counting a request.
    async fn peek(&self, key: &str, quota: Quota) -> Result<RateDecision>;
}

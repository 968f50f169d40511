//! The in-process `RateLimiter`: GCRA over a map of "theoretical arrival times".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::ports::{Quota, RateDecision, RateLimiter};

/// Rate limits kept in this process's memory: right for one server; several replicas need the
/// Redis adapter so that they share counts.
#[derive(Debug, Default)]
pub struct InProcessRateLimiter {
    /// Per key, the time at which the key's bucket will be empty again (GCRA's TAT).
    /// A plain mutex is enough: the critical section is a map lookup and two additions.
    state: Mutex<HashMap<String, Instant>>,
}

/// Above this many keys, entries whose bucket is already full again are dropped.
const PRUNE_THRESHOLD: usize = 10_000;

impl InProcessRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }
}

/// One GCRA step: given the key's theoretical arrival time, decide and return the new one.
pub(crate) fn gcra(
    tat: Option<Instant>,
    now: Instant,
    quota: Quota,
) -> (RateDecision, Option<Instant>) {
    let interval = quota.emission_interval();
    let tat = tat.map_or(now, |t| t.max(now));
    let new_tat = tat + interval;
    // The burst allowance: the bucket may run `period` ahead of now.
    let allow_until = now + quota.period;
    if new_tat > allow_until {
        let retry_after = new_tat - allow_until;
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after,
        };
        return (decision, None);
    }
    let headroom = allow_until - new_tat;
    let remaining = (headroom.as_nanos() / interval.as_nanos().max(1)) as u32;
    let decision = RateDecision {
        allowed: true,
        remaining,
        retry_after: Duration::ZERO,
    };
    (decision, Some(new_tat))
}

#[async_trait]
impl RateLimiter for InProcessRateLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<RateDecision> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::internal("rate limiter state is poisoned"))?;
        let (decision, new_tat) = gcra(state.get(key).copied(), now, quota);
        if let Some(new_tat) = new_tat {
            if state.len() >= PRUNE_THRESHOLD && !state.contains_key(key) {
                state.retain(|_, tat| *tat > now);
            }
            state.insert(key.to_owned(), new_tat);
        }
        Ok(decision)
    }
}

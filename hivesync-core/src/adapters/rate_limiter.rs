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
///
/// Memory is bounded: keys whose bucket has refilled are dropped (amortised, when the map has
/// doubled since the last sweep), and past [`InProcessRateLimiter::MAX_KEYS`] live keys a new key
/// is refused rather than stored — under a flood of distinct keys the limiter fails closed instead
/// of growing without bound.
#[derive(Debug)]
pub struct InProcessRateLimiter {
    /// A plain mutex is enough: the critical section is a map lookup and two additions.
    state: Mutex<State>,
    max_keys: usize,
}

#[derive(Debug)]
struct State {
    /// Per key, the time at which the key's bucket is full again (GCRA's TAT).
    tats: HashMap<String, Instant>,
    /// Sweep refilled keys once the map reaches this size.
    next_sweep: usize,
    /// When the map is full, sweeps happen at most once per [`FULL_SWEEP_INTERVAL`], so a flood
    /// of new keys cannot make every request scan the whole map.
    last_sweep: Option<Instant>,
}

const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The map is not swept below this many keys.
const SWEEP_FLOOR: usize = 10_000;

impl Default for InProcessRateLimiter {
    fn default() -> Self {
        Self::with_max_keys(Self::MAX_KEYS)
    }
}

impl InProcessRateLimiter {
    /// Live keys kept at most (about 100 bytes each).
    pub const MAX_KEYS: usize = 200_000;

    pub fn new() -> Self {
        Self::default()
    }

    /// A limiter that keeps at most `max_keys` live keys.
    pub fn with_max_keys(max_keys: usize) -> Self {
        InProcessRateLimiter {
            state: Mutex::new(State {
                tats: HashMap::new(),
                next_sweep: SWEEP_FLOOR.min(max_keys),
                last_sweep: None,
            }),
            max_keys,
        }
    }

    fn decide(&self, key: &str, quota: Quota, consume: bool) -> Result<RateDecision> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::internal("rate limiter state is poisoned"))?;
        let known = state.tats.get(key).copied();
        let (decision, new_tat) = gcra(known, now, quota);
        let Some(new_tat) = new_tat.filter(|_| consume) else {
            return Ok(decision);
        };
        if known.is_none() && state.tats.len() >= state.next_sweep {
            let full = state.tats.len() >= self.max_keys;
            let swept_recently = state
                .last_sweep
                .is_some_and(|at| now.duration_since(at) < FULL_SWEEP_INTERVAL);
            if !(full && swept_recently) {
                state.tats.retain(|_, tat| *tat > now);
                state.last_sweep = Some(now);
                state.next_sweep =
                    (state.tats.len() * 2).clamp(SWEEP_FLOOR.min(self.max_keys), self.max_keys);
            }
            if state.tats.len() >= self.max_keys {
                return Ok(RateDecision {
                    allowed: false,
                    remaining: 0,
                    retry_after: quota.emission_interval(),
                });
            }
        }
        state.tats.insert(key.to_owned(), new_tat);
        Ok(decision)
    }
}

/// One GCRA step: given the key's theoretical arrival time, decide, and return the new TAT when
/// the request is allowed.
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
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after: new_tat - allow_until,
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
        self.decide(key, quota, true)
    }

    async fn peek(&self, key: &str, quota: Quota) -> Result<RateDecision> {
        self.decide(key, quota, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_refilled_keys_are_dropped() {
        let limiter = InProcessRateLimiter::with_max_keys(100);
        let quota = Quota::new(1, Duration::from_secs(10)).unwrap();
        for i in 0..100 {
            assert!(
                limiter
                    .check(&format!("k{i}"), quota)
                    .await
                    .unwrap()
                    .allowed
            );
        }
        // Full of live keys: a new key is refused, known keys keep their own state.
        let refused = limiter.check("newcomer", quota).await.unwrap();
        assert!(!refused.allowed);
        assert!(
            !limiter.check("k0", quota).await.unwrap().allowed,
            "k0 used its one request"
        );
        // Once the old keys have refilled, they are swept and new keys fit again.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(limiter.check("newcomer", quota).await.unwrap().allowed);
        assert!(limiter.state.lock().unwrap().tats.len() <= 2);
    }
}

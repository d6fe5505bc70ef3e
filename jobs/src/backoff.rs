//! Retry backoff: exponential with full jitter, capped (the AWS architecture blog's
//! "full jitter"), so retries of many failed jobs spread out instead of stampeding.

use std::time::Duration;

/// How long to wait before each retry of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's delay.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay after failed attempt `attempt` (1-based):
    /// `min(cap, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << exp)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before the retry that follows failed attempt `attempt`: uniform in
    /// `[ceiling/2, ceiling]`. Half of the window is jitter, so the delays of one job
    /// still grow from attempt to attempt while many jobs spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }

    /// [`RetryPolicy::delay`] with the random draw `unit` (in `[0, 1)`) given, for tests.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        ceiling.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.ceiling(4), Duration::from_millis(800));
        assert_eq!(policy.ceiling(5), Duration::from_secs(1));
        assert_eq!(policy.ceiling(500), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_the_jitter_window_and_grow() {
        let policy = RetryPolicy::default();
        for attempt in 1..10 {
            let low = policy.delay_with(attempt, 0.0);
            let high = policy.delay_with(attempt, 1.0);
            assert_eq!(high, policy.ceiling(attempt));
            assert_eq!(low, policy.ceiling(attempt) / 2);
            // The smallest next delay is never below the largest previous one.
            if policy.ceiling(attempt + 1) < policy.cap {
                assert!(policy.delay_with(attempt + 1, 0.0) >= high);
            }
        }
    }
}

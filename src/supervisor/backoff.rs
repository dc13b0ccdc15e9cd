//! Restart delays: pure, no clock. The caller says how long the last run lasted.
//!
//! The first restart waits `initial`; every crash after that doubles the delay up to `max`.
//! A run that lasted at least `reset_after` counts as stable: the next delay is `initial`
//! again. The smallest delay is `initial` (validated > 0), so a crash loop cannot spin.

use std::time::Duration;

/// The restart policy of one service (`restart = { ... }`, defaults 1 s → 30 s, 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff state of one service.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RestartPolicy,
    /// The delay the next crash gets (unless the run was stable).
    next: Duration,
}

impl Backoff {
    pub fn new(policy: RestartPolicy) -> Backoff {
        Backoff {
            policy,
            next: policy.initial,
        }
    }

    /// A crash after a run of `ran_for`: how long to wait before the next start.
    pub fn on_crash(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.next = self.policy.initial;
        }
        let delay = self.next.min(self.policy.max);
        self.next = delay.saturating_mul(2).min(self.policy.max);
        delay
    }

    /// A deliberate stop (gate closed, operator restart): start fresh next time.
    pub fn reset(&mut self) {
        self.next = self.policy.initial;
    }

    /// A new policy after a reload; keeps the position only if it still fits.
    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
        self.next = self.next.clamp(policy.initial, policy.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_to_the_cap() {
        let mut b = Backoff::new(RestartPolicy::default());
        let got: Vec<u64> = (0..8).map(|_| b.on_crash(MS(50)).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_stable_run_resets() {
        let mut b = Backoff::new(RestartPolicy::default());
        for _ in 0..4 {
            b.on_crash(MS(10));
        }
        assert_eq!(b.on_crash(MS(59_999)), Duration::from_secs(16));
        assert_eq!(b.on_crash(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(b.on_crash(MS(10)), Duration::from_secs(2));
    }

    #[test]
    fn reset_and_new_policy() {
        let mut b = Backoff::new(RestartPolicy::default());
        b.on_crash(MS(1));
        b.on_crash(MS(1));
        b.reset();
        assert_eq!(b.on_crash(MS(1)), Duration::from_secs(1));
        for _ in 0..6 {
            b.on_crash(MS(1));
        }
        b.set_policy(RestartPolicy {
            initial: MS(100),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        });
        assert_eq!(b.on_crash(MS(1)), Duration::from_secs(5));
    }

    #[test]
    fn odd_initial_never_exceeds_max() {
        let mut b = Backoff::new(RestartPolicy {
            initial: MS(700),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        });
        let got: Vec<u128> = (0..4).map(|_| b.on_crash(MS(1)).as_millis()).collect();
        assert_eq!(got, [700, 1400, 2000, 2000]);
    }
}

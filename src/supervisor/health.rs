//! Rise/fall counting for one running child: pure, no clock. Time is the offset since the
//! child was spawned.
//!
//! - **Starting**: the first passing check makes the child healthy at once (fast promotion).
//!   Failing checks do not count yet; if no check passed by `start_period`, it is unhealthy.
//! - **Healthy**: `fall` consecutive failures make it unhealthy.
//! - **Unhealthy**: `rise` consecutive passes make it healthy again.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No check has passed yet; unhealthy at `until` (offset since spawn).
    Starting {
        until: Duration,
    },
    Healthy {
        fails: u32,
    },
    Unhealthy {
        oks: u32,
    },
}

/// What a check result or a timeout changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub fall: u32,
    pub rise: u32,
    pub start_period: Duration,
}

impl Health {
    pub fn new(c: Counts) -> Health {
        Health::Starting {
            until: c.start_period,
        }
    }

    /// When `on_timeout` must be called (only while starting).
    pub fn deadline(&self) -> Option<Duration> {
        match *self {
            Health::Starting { until } => Some(until),
            _ => None,
        }
    }

    pub fn on_timeout(&mut self, now: Duration) -> Option<Transition> {
        match *self {
            Health::Starting { until } if now >= until => {
                *self = Health::Unhealthy { oks: 0 };
                Some(Transition::BecameUnhealthy)
            }
            _ => None,
        }
    }

    pub fn observe(&mut self, c: Counts, ok: bool) -> Option<Transition> {
        let (next, t) = match (*self, ok) {
            (Health::Starting { .. }, true) => (
                Health::Healthy { fails: 0 },
                Some(Transition::BecameHealthy),
            ),
            (Health::Starting { until }, false) => (Health::Starting { until }, None),
            (Health::Healthy { .. }, true) => (Health::Healthy { fails: 0 }, None),
            (Health::Healthy { fails }, false) if fails + 1 >= c.fall => (
                Health::Unhealthy { oks: 0 },
                Some(Transition::BecameUnhealthy),
            ),
            (Health::Healthy { fails }, false) => (Health::Healthy { fails: fails + 1 }, None),
            (Health::Unhealthy { oks }, true) if oks + 1 >= c.rise => (
                Health::Healthy { fails: 0 },
                Some(Transition::BecameHealthy),
            ),
            (Health::Unhealthy { oks }, true) => (Health::Unhealthy { oks: oks + 1 }, None),
            (Health::Unhealthy { .. }, false) => (Health::Unhealthy { oks: 0 }, None),
        };
        *self = next;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Transition::*;

    const C: Counts = Counts {
        fall: 3,
        rise: 2,
        start_period: Duration::from_secs(30),
    };

    fn feed(h: &mut Health, oks: &[bool]) -> Vec<Option<Transition>> {
        oks.iter().map(|&ok| h.observe(C, ok)).collect()
    }

    #[test]
    fn first_pass_while_starting_is_healthy() {
        let mut h = Health::new(C);
        assert_eq!(
            feed(&mut h, &[false, false, false, false, true]).last(),
            Some(&Some(BecameHealthy))
        );
        assert_eq!(h, Health::Healthy { fails: 0 });
    }

    #[test]
    fn start_period_expires() {
        let mut h = Health::new(C);
        assert_eq!(h.deadline(), Some(Duration::from_secs(30)));
        assert_eq!(h.on_timeout(Duration::from_secs(29)), None);
        assert_eq!(h.on_timeout(Duration::from_secs(30)), Some(BecameUnhealthy));
        assert_eq!(h.deadline(), None);
        assert_eq!(feed(&mut h, &[true, true]), [None, Some(BecameHealthy)]);
    }

    #[test]
    fn fall_and_rise() {
        let mut h = Health::Healthy { fails: 0 };
        assert_eq!(feed(&mut h, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(feed(&mut h, &[false]), [Some(BecameUnhealthy)]);
        assert_eq!(feed(&mut h, &[true, false, true]), [None; 3]);
        assert_eq!(feed(&mut h, &[true]), [Some(BecameHealthy)]);
    }

    #[test]
    fn fall_one_rise_one() {
        let c = Counts {
            fall: 1,
            rise: 1,
            ..C
        };
        let mut h = Health::Healthy { fails: 0 };
        assert_eq!(h.observe(c, false), Some(BecameUnhealthy));
        assert_eq!(h.observe(c, true), Some(BecameHealthy));
    }
}

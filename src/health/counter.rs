//! The pure rise/fall counter (pingora-style): consecutive results flip the state.

/// A change of health state reported by [`RiseFall::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// Counts consecutive check results: `rise` successes bring a down target up, `fall`
/// failures take an up target down. Anything else resets the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with `up`.
    run: u32,
}

impl RiseFall {
    /// A counter that starts in state `up`. `rise` and `fall` are clamped to at least 1.
    pub fn new(rise: u32, fall: u32, up: bool) -> RiseFall {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up,
            run: 0,
        }
    }

    /// A counter that starts down, but whose first success brings it up (haproxy's
    /// `init-state down`): a server gets no traffic before its first check passes, and no
    /// longer than that.
    pub fn new_pending(rise: u32, fall: u32) -> RiseFall {
        let mut c = RiseFall::new(rise, fall, false);
        c.run = c.rise - 1;
        c
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one check result; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.up {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.run < needed {
            return None;
        }
        self.up = ok;
        self.run = 0;
        Some(if ok { Transition::Up } else { Transition::Down })
    }

    /// Passive health: takes the target down at once (a refused connect). It comes back only
    /// after `rise` consecutive successful checks.
    pub fn force_down(&mut self) -> Option<Transition> {
        self.run = 0;
        if !self.up {
            return None;
        }
        self.up = false;
        Some(Transition::Down)
    }

    /// Changes rise/fall (on reload) keeping the state.
    pub fn set_limits(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
        self.run = self.run.min(self.rise.max(self.fall) - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        let mut c = RiseFall::new(2, 3, true);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None, "a success resets the run");
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), Some(Transition::Down));
        assert!(!c.is_up());
        assert_eq!(c.observe(false), None);
    }

    #[test]
    fn rises_after_rise_successes_in_a_row() {
        let mut c = RiseFall::new(2, 3, false);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(Transition::Up));
        assert!(c.is_up());
    }

    #[test]
    fn pending_comes_up_on_first_success_only() {
        let mut c = RiseFall::new_pending(3, 3);
        assert!(!c.is_up());
        assert_eq!(c.observe(false), None);
        // A failure resets the run: now it needs the full rise.
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(Transition::Up));
        let mut c = RiseFall::new_pending(3, 3);
        assert_eq!(c.observe(true), Some(Transition::Up));
    }

    #[test]
    fn force_down_needs_a_full_rise() {
        let mut c = RiseFall::new(2, 3, true);
        assert_eq!(c.force_down(), Some(Transition::Down));
        assert_eq!(c.force_down(), None);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(Transition::Up));
    }

    #[test]
    fn rise_fall_of_one_flip_at_once() {
        let mut c = RiseFall::new(1, 1, true);
        assert_eq!(c.observe(false), Some(Transition::Down));
        assert_eq!(c.observe(true), Some(Transition::Up));
    }
}

//! Health checks: a pure rise/fall counter and the probes (tcp, http, exec).
//!
//! - [`RiseFall`] is the pure core: feed it each result with [`RiseFall::observe`], and it says
//!   when the state flips. It never reads a clock.
//! - [`Probe`] runs one check: a TCP connect, an HTTP GET compared with an expected status, or a
//!   command that must exit 0. [`Probe::from_url`] builds an HTTP probe from a URL, for the
//!   supervisor's `check = { type = "http", url = ... }`.
//! - [`run_checks`] is the loop: probe every `interval`, feed the counter, report each result.
//!
//! Checks run on both nodes: they do not depend on the pair role.

mod counter;
mod probe;

pub use counter::{RiseFall, Transition};
pub use probe::{probe_exec, probe_http, probe_tcp, Probe, ProbeError};

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Timing of an active check, as in haproxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Runs `probe` every `timing.interval` until `cancel` fires. The first probe runs at once.
/// Each result is passed to `on_result`, which typically feeds a [`RiseFall`].
pub async fn run_checks<F>(
    probe: Probe,
    timing: CheckTiming,
    cancel: CancellationToken,
    mut on_result: F,
) where
    F: FnMut(Result<(), ProbeError>),
{
    let mut tick = tokio::time::interval(timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe.run(timing.timeout) => r,
        };
        on_result(r);
    }
}

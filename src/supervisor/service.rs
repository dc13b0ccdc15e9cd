//! The task that owns one service: starts its child when [`Desired::Run`], restarts it after
//! a crash with backoff, runs its checks, and stops it (stop_signal, stop_timeout, SIGKILL).

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::backoff::Backoff;
use super::check;
use super::child::{self, Child};
use super::config::{ActiveCheck, CheckConfig, Probe, ServiceConfig};
use super::health::{Counts, Health, Transition};
use super::{CheckStatus, Desired, ServiceState, Shared, SupervisorError};
use crate::events::unix_ms;

/// A service without a check counts as up (ready for its dependents, no longer failing)
/// once it has stayed up this long.
const SETTLE_WITHOUT_CHECK: Duration = Duration::from_secs(1);
/// Check period while starting (http and tcp), so a promotion is not held up by `interval`.
const FAST_CHECK: Duration = Duration::from_millis(100);

pub(crate) enum Cmd {
    Restart(oneshot::Sender<Result<(), SupervisorError>>),
}

type Reply = oneshot::Sender<Result<(), SupervisorError>>;

/// Why a running child is no longer supervised.
enum End {
    Crashed {
        how: String,
        ran_for: Duration,
    },
    Stopped,
    /// Operator restart or a respawning reload: start again at once.
    Again(Option<Reply>),
    /// The manager is gone.
    Closed,
}

/// Aborts a helper task (checks) when the child it watches is gone.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Task {
    shared: Arc<Shared>,
    name: String,
    cfg: watch::Receiver<Arc<ServiceConfig>>,
    desired: watch::Receiver<Desired>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    cfg: watch::Receiver<Arc<ServiceConfig>>,
    desired: watch::Receiver<Desired>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let name = cfg.borrow().name.clone();
    let t = Task {
        shared,
        name,
        cfg,
        desired,
        cmds,
    };
    t.main().await;
}

impl Task {
    fn set(&self, f: impl FnOnce(&mut super::ServiceStatus)) {
        self.shared.update(&self.name, f);
    }

    async fn main(mut self) {
        let mut backoff = Backoff::new(self.cfg.borrow().restart);
        // Earliest next start after a crash.
        let mut not_before: Option<Instant> = None;
        // A start that skips the backoff and the `after` wait (operator restart, respawn).
        let mut forced: Option<Option<Reply>> = None;
        let mut restarting = false;
        // After a crash the next run must stay up this long (its restart delay) before
        // its weight is removed, so a crash loop keeps the node's priority down instead
        // of flapping it every time a short-lived copy passes one check.
        let mut probation = Duration::ZERO;
        loop {
            // Idle: wait until we should start.
            loop {
                let d = *self.desired.borrow_and_update();
                if matches!(d, Desired::Stop | Desired::Keep) {
                    backoff.reset();
                    not_before = None;
                    restarting = false;
                    probation = Duration::ZERO;
                    if let Some(Some(r)) = forced.take() {
                        let _ = r.send(Err(SupervisorError::NotRunningHere(self.name.clone())));
                    }
                    // `failing` is kept: a service that was failing when the gate
                    // closed still counts (its weight keeps this node from
                    // preempting back into the same crash loop) until it runs
                    // healthy again or an operator restarts it.
                    self.set(|r| r.state = ServiceState::Stopped);
                }
                let due = not_before.map_or(true, |t| t <= Instant::now());
                if (d == Desired::Run && due)
                    || (d != Desired::Stop && d != Desired::Keep && forced.is_some())
                {
                    break;
                }
                tokio::select! {
                    r = self.desired.changed() => if r.is_err() { return },
                    _ = sleep_until(not_before.unwrap_or_else(Instant::now)), if !due => {}
                    c = self.cmds.recv() => match c {
                        None => return,
                        Some(Cmd::Restart(reply)) => {
                            if matches!(d, Desired::Stop | Desired::Keep) {
                                // The operator's restart clears a remembered failure.
                                self.set(|r| r.failing = false);
                                let _ = reply.send(Err(SupervisorError::NotRunningHere(self.name.clone())));
                            } else {
                                forced = Some(Some(reply));
                                not_before = None;
                            }
                        }
                    },
                    r = self.cfg.changed() => {
                        if r.is_err() { return }
                        let c = self.cfg.borrow_and_update().clone();
                        backoff.set_policy(c.restart);
                        self.set(|r| { r.weight = c.weight; r.run = c.run; });
                    }
                }
            }
            let reply = forced.take().flatten();
            not_before = None;
            // Start.
            let cfg = self.cfg.borrow_and_update().clone();
            self.set(|r| {
                r.state = ServiceState::Starting;
                r.pid = None;
                if restarting {
                    r.restarts += 1;
                }
            });
            restarting = true;
            let spec = child::Spec {
                name: &cfg.name,
                command: &cfg.command,
                env: &cfg.env,
                user: cfg.user.as_deref(),
            };
            let mut ch = match child::spawn(&spec).await {
                Ok(c) => c,
                Err(e) => {
                    let delay = backoff.on_crash(Duration::ZERO);
                    let msg = format!("cannot start {:?}: {e}", cfg.command[0]);
                    tracing::error!(service = %self.name, "{msg}; retrying in {delay:?}");
                    self.shared
                        .event(format!("{}: {msg}; retrying in {delay:?}", self.name));
                    self.set(|r| {
                        r.state = ServiceState::Backoff;
                        r.failing = true;
                        r.last_exit = Some(msg.clone());
                    });
                    if let Some(r) = reply {
                        let _ = r.send(Err(SupervisorError::Spawn(
                            self.name.clone(),
                            e.to_string(),
                        )));
                    }
                    not_before = Some(Instant::now() + delay);
                    continue;
                }
            };
            let pid = ch.pid();
            tracing::info!(service = %self.name, pid, "started {:?}", cfg.command);
            self.shared
                .event(format!("{}: started, pid {pid}", self.name));
            self.set(|r| r.pid = Some(pid));
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            match self.supervise(&mut ch, cfg, probation).await {
                End::Closed => return,
                End::Stopped => {
                    backoff.reset();
                    restarting = false;
                    probation = Duration::ZERO;
                }
                End::Again(reply) => {
                    backoff.reset();
                    forced = Some(reply);
                    probation = Duration::ZERO;
                }
                End::Crashed { how, ran_for } => {
                    // `supervise` consumed any reload; pick up its restart policy.
                    backoff.set_policy(self.cfg.borrow().restart);
                    let delay = backoff.on_crash(ran_for);
                    let msg = format!(
                        "{}: pid {pid} {how} after {}; restarting in {}",
                        self.name,
                        fmt_dur(ran_for),
                        fmt_dur(delay)
                    );
                    tracing::warn!(service = %self.name, "{msg}");
                    self.shared.event(msg);
                    self.set(|r| {
                        r.state = ServiceState::Backoff;
                        r.pid = None;
                        r.failing = true;
                        r.last_exit = Some(how);
                    });
                    not_before = Some(Instant::now() + delay);
                    probation = delay;
                }
            }
        }
    }

    /// Watch a running child until it exits or must stop.
    async fn supervise(
        &mut self,
        ch: &mut Child,
        mut cfg: Arc<ServiceConfig>,
        probation: Duration,
    ) -> End {
        let started = Instant::now();
        let probation_end = started + probation;
        let mut on_probation = !probation.is_zero();
        let (tx, mut rx) = mpsc::channel::<check::Outcome>(4);
        let mut health = cfg.check.as_ref().map(|c| Health::new(counts(c)));
        let mut settled = false;
        let mut checker = cfg
            .check
            .clone()
            .map(|c| AbortOnDrop(tokio::spawn(check_loop(c, tx.clone()))));
        let mut active = cfg.active_check.clone().map(|a| self.spawn_active(a));
        let end = loop {
            let deadline = match (&health, settled) {
                (Some(h), _) => h.deadline().map(|d| started + d),
                (None, false) => Some(started + SETTLE_WITHOUT_CHECK),
                (None, true) => None,
            };
            tokio::select! {
                st = ch.wait() => {
                    break End::Crashed { how: child::describe(st), ran_for: started.elapsed() };
                }
                Some(o) = rx.recv() => {
                    let Some(c) = cfg.check.as_ref() else { continue };
                    let Some(h) = health.as_mut() else { continue };
                    let t = h.observe(counts(c), o.ok);
                    self.set(|r| r.last_check = Some(CheckStatus { at: unix_ms(), ok: o.ok, detail: o.detail.clone() }));
                    self.health_changed(t, &o.detail, on_probation);
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    match health.as_mut() {
                        Some(h) => {
                            let t = h.on_timeout(started.elapsed());
                            self.health_changed(t, "no check passed within start_period", on_probation);
                        }
                        None => {
                            settled = true;
                            self.set(|r| { r.state = ServiceState::Running; r.failing &= on_probation; });
                        }
                    }
                }
                _ = sleep_until(probation_end), if on_probation => {
                    on_probation = false;
                    let up = match &health {
                        Some(h) => matches!(h, Health::Healthy { .. }),
                        None => settled,
                    };
                    if up {
                        let msg = format!("{}: up for {} after a crash; its weight is removed", self.name, fmt_dur(probation));
                        tracing::info!(service = %self.name, "{msg}");
                        self.shared.event(msg);
                        self.set(|r| r.failing = false);
                    }
                }
                r = self.desired.changed() => {
                    if r.is_err() { break End::Closed }
                    if *self.desired.borrow_and_update() == Desired::Stop {
                        self.stop(ch, &cfg, "stopping").await;
                        break End::Stopped;
                    }
                }
                c = self.cmds.recv() => match c {
                    None => break End::Closed,
                    Some(Cmd::Restart(reply)) => {
                        self.stop(ch, &cfg, "restart requested").await;
                        break End::Again(Some(reply));
                    }
                },
                r = self.cfg.changed() => {
                    if r.is_err() { break End::Closed }
                    let new = self.cfg.borrow_and_update().clone();
                    if cfg.needs_respawn(&new) {
                        self.stop(ch, &cfg, "config changed").await;
                        break End::Again(None);
                    }
                    if new.check != cfg.check {
                        health = new.check.as_ref().map(|c| Health::new(counts(c)));
                        settled = false;
                        checker = new.check.clone().map(|c| AbortOnDrop(tokio::spawn(check_loop(c, tx.clone()))));
                        self.set(|r| { r.state = ServiceState::Starting; r.last_check = None; });
                    }
                    if new.active_check != cfg.active_check {
                        active = new.active_check.clone().map(|a| self.spawn_active(a));
                        self.set(|r| r.active = None);
                    }
                    cfg = new;
                }
            }
        };
        drop((checker, active));
        if !matches!(end, End::Crashed { .. } | End::Closed) {
            self.set(|r| {
                r.state = ServiceState::Stopped;
                r.pid = None;
                r.active = None;
            });
        } else {
            self.set(|r| r.active = None);
        }
        if let (End::Crashed { how, .. }, _) = (&end, ()) {
            self.set(|r| r.last_exit = Some(how.clone()));
        }
        end
    }

    /// `hold_failing`: the child is on probation after a crash; becoming healthy makes it
    /// ready for its dependents but its weight stays until the probation ends.
    fn health_changed(&self, t: Option<Transition>, detail: &str, hold_failing: bool) {
        match t {
            None => {}
            Some(Transition::BecameHealthy) => {
                tracing::info!(service = %self.name, "healthy ({detail})");
                self.shared
                    .event(format!("{}: healthy ({detail})", self.name));
                self.set(|r| {
                    r.state = ServiceState::Healthy;
                    r.failing &= hold_failing;
                });
            }
            Some(Transition::BecameUnhealthy) => {
                tracing::warn!(service = %self.name, "unhealthy: {detail}");
                self.shared
                    .event(format!("{}: unhealthy: {detail}", self.name));
                self.set(|r| {
                    r.state = ServiceState::Unhealthy;
                    r.failing = true;
                });
            }
        }
    }

    /// stop_signal to the group, SIGKILL after stop_timeout; returns once reaped.
    async fn stop(&self, ch: &mut Child, cfg: &ServiceConfig, why: &str) {
        let pid = ch.pid();
        self.set(|r| r.state = ServiceState::Stopping);
        tracing::info!(service = %self.name, pid, "{why}: sending {}", cfg.stop_signal.as_str());
        ch.signal(cfg.stop_signal);
        let st = match tokio::time::timeout(cfg.stop_timeout, ch.wait()).await {
            Ok(st) => st,
            Err(_) => {
                let msg = format!(
                    "{}: pid {pid} still running {} after {}; sending SIGKILL",
                    self.name,
                    fmt_dur(cfg.stop_timeout),
                    cfg.stop_signal.as_str()
                );
                tracing::warn!(service = %self.name, "{msg}");
                self.shared.event(msg);
                ch.signal(Signal::SIGKILL);
                ch.wait().await
            }
        };
        let how = child::describe(st);
        self.shared
            .event(format!("{}: stopped ({why}), pid {pid} {how}", self.name));
        self.set(|r| r.last_exit = Some(how));
    }

    fn spawn_active(&self, a: ActiveCheck) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(active_loop(
            self.shared.clone(),
            self.name.clone(),
            a,
        )))
    }
}

fn counts(c: &CheckConfig) -> Counts {
    Counts {
        fall: c.fall,
        rise: c.rise,
        start_period: c.start_period,
    }
}

/// Probe every `interval`; while no check has passed yet, every 100 ms (not for exec).
async fn check_loop(c: CheckConfig, tx: mpsc::Sender<check::Outcome>) {
    let fast = match c.probe {
        Probe::Exec(_) => c.interval,
        _ => c.interval.min(FAST_CHECK),
    };
    let mut passed = false;
    loop {
        let o = check::run(&c.probe, c.timeout).await;
        passed |= o.ok;
        if tx.send(o).await.is_err() {
            return;
        }
        tokio::time::sleep(if passed { c.interval } else { fast }).await;
    }
}

/// Observe Impala's native HA status; never acts on it.
async fn active_loop(shared: Arc<Shared>, name: String, a: ActiveCheck) {
    let mut last: Option<bool> = None;
    let timeout = a.interval.min(Duration::from_secs(2));
    loop {
        let now = match check::http_get(&a.url, timeout).await {
            Ok((200, body)) => check::active_status(&a.url, &body),
            _ => None,
        };
        if now != last {
            if let Some(v) = now {
                let what = if v { "active" } else { "standby" };
                shared.event(format!("{name}: reports itself {what} (native HA)"));
            }
            shared.update(&name, |r| r.active = now);
            last = now;
        }
        tokio::time::sleep(a.interval).await;
    }
}

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

//! Supervision of the cluster's singleton daemons (statestored, catalogd) that follows the
//! pair's role.
//!
//! - `run = "always"` services run on both nodes (warm standby, or Impala's native HA).
//! - `run = "master"` services run only while the `gate` is true: the lead computes it as
//!   "this node is master and the peer runs no copy". Closing the gate stops them
//!   (`stop_signal`, then SIGKILL after `stop_timeout`); [`Supervisor::master_running`]
//!   turns false only once every such process has been reaped.
//! - `after` orders start-up (a service starts once the ones it is after pass their check)
//!   and, reversed, stopping.
//! - Crashes restart with exponential backoff ([`backoff`]); a failing service adds its
//!   `weight` to [`Supervisor::weight`] until it is healthy again.
//!
//! Layout: one *manager* task decides what each service should do ([`Desired`]) from the
//! gate, the ordering and the commands; one *service* task per service owns its child and
//! checks ([`service`]). Both publish into one shared table, from which the snapshot, the
//! weight and `master_running` are derived synchronously with every change.

pub mod backoff;
pub mod check;
pub mod child;
pub mod config;
pub mod health;
mod service;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::events::{unix_ms, EventLog};
pub use config::{Run, ServiceConfig};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no service is named `{0}`")]
    UnknownService(String),
    #[error("service `{0}` is not supposed to run on this node now")]
    NotRunningHere(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    #[error("service `{0}`: cannot start: {1}")]
    Spawn(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Stopped,
    /// Spawned; no check has passed yet (or, without a check, up for less than 1 s).
    Starting,
    /// Up, and it has no check.
    Running,
    Healthy,
    Unhealthy,
    /// Crashed; waiting for the restart delay.
    Backoff,
    /// Stop signal sent; waiting for it to exit.
    Stopping,
}

impl ServiceState {
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            ServiceState::Starting
                | ServiceState::Running
                | ServiceState::Healthy
                | ServiceState::Unhealthy
                | ServiceState::Stopping
        )
    }
    /// Services that are `after` this one may start.
    pub fn is_ready(self) -> bool {
        matches!(self, ServiceState::Running | ServiceState::Healthy)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckStatus {
    /// Unix milliseconds.
    pub at: u64,
    pub ok: bool,
    pub detail: String,
}

/// One row of [`Supervisor::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub run: Run,
    pub state: ServiceState,
    pub pid: Option<u32>,
    /// Starts after the first (crash restarts, operator restarts, config respawns).
    pub restarts: u32,
    /// How the previous process ended: "exit code 1", "killed by SIGKILL".
    pub last_exit: Option<String>,
    /// Unix milliseconds of the last state change.
    pub since: u64,
    /// Native Impala HA: whether this copy reports itself active (`active_check`).
    pub active: Option<bool>,
    pub last_check: Option<CheckStatus>,
    /// Crashed and not back, or its check failing: `weight` counts.
    pub failing: bool,
    pub weight: i32,
}

/// What the manager wants a service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Desired {
    /// Start (when the backoff allows) and keep running.
    Run,
    /// Allowed here, but the services it is `after` are not ready: do not start; keep a
    /// running process.
    Wait,
    /// Must stop, but services `after` it are still stopping: keep a running process.
    Keep,
    Stop,
}

/// State shared by the manager, the service tasks and the handles.
pub(crate) struct Shared {
    /// One row per service, in config order.
    table: Mutex<Vec<ServiceStatus>>,
    /// Sum of the weights of failing services; derived from `table` on every update.
    weight_tx: watch::Sender<i32>,
    /// Any `run = "master"` process alive; derived from `table` on every update.
    master_tx: watch::Sender<bool>,
    /// Wakes the manager after a table update (a permit is kept if it is busy).
    wake: Notify,
    events: EventLog,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ServiceStatus>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change one row, then republish the derived values and wake the manager.
    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut ServiceStatus)) {
        let mut t = self.lock();
        if let Some(row) = t.iter_mut().find(|r| r.name == name) {
            let before = row.state;
            f(row);
            if row.state != before {
                row.since = unix_ms();
                tracing::debug!(service = %name, "state={:?}=>{:?}", before, row.state);
            }
        }
        self.publish(&t);
        drop(t);
        self.wake.notify_one();
    }

    fn publish(&self, t: &[ServiceStatus]) {
        let w: i32 = t.iter().filter(|r| r.failing).map(|r| r.weight).sum();
        let m = t.iter().any(|r| r.run == Run::Master && r.state.is_alive());
        self.weight_tx
            .send_if_modified(|v| std::mem::replace(v, w) != w);
        self.master_tx
            .send_if_modified(|v| std::mem::replace(v, m) != m);
    }

    fn state(&self, name: &str) -> Option<ServiceState> {
        self.lock().iter().find(|r| r.name == name).map(|r| r.state)
    }

    pub(crate) fn event(&self, message: String) {
        self.events.push("service", message);
    }
}

enum MgrCmd {
    Reload(Vec<ServiceConfig>),
    Restart(String, oneshot::Sender<Result<(), SupervisorError>>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the supervisor; cheap to clone. When the last handle is dropped, the
/// supervisor shuts down as if [`Supervisor::shutdown`] had been called.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    /// Commands to the manager task.
    cmds: mpsc::UnboundedSender<MgrCmd>,
}

impl Supervisor {
    /// Start supervising on the current tokio runtime. `gate`: true while this node may run
    /// `run = "master"` services. A closed gate channel counts as false.
    pub fn start(
        services: Vec<ServiceConfig>,
        gate: watch::Receiver<bool>,
        events: EventLog,
    ) -> Supervisor {
        let shared = Arc::new(Shared {
            table: Mutex::new(Vec::new()),
            weight_tx: watch::channel(0).0,
            master_tx: watch::channel(false).0,
            wake: Notify::new(),
            events,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut mgr = Manager {
            shared: shared.clone(),
            services: Vec::new(),
            gate,
            shutting_down: false,
        };
        mgr.apply(services);
        tokio::spawn(mgr.run(rx));
        Supervisor { shared, cmds: tx }
    }

    /// Sum of `weight` of the services currently failing.
    pub fn weight(&self) -> watch::Receiver<i32> {
        self.shared.weight_tx.subscribe()
    }

    /// True while any `run = "master"` service process is alive (until it is reaped).
    pub fn master_running(&self) -> watch::Receiver<bool> {
        self.shared.master_tx.subscribe()
    }

    /// Stop (stop_signal, stop_timeout) and start again at once, skipping any backoff.
    /// Returns once the new process is spawned.
    pub async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(MgrCmd::Restart(name.to_string(), tx))
            .map_err(|_| SupervisorError::ShuttingDown)?;
        rx.await.map_err(|_| SupervisorError::ShuttingDown)?
    }

    pub fn snapshot(&self) -> Vec<ServiceStatus> {
        self.shared.lock().clone()
    }

    /// Apply a new set of services, by name: unchanged ones keep running; a changed
    /// command, user or env respawns; other changes (checks, weight, run, after, stop and
    /// restart settings) apply in place; removed ones stop; new ones start.
    pub fn reload(&self, services: Vec<ServiceConfig>) {
        let _ = self.cmds.send(MgrCmd::Reload(services));
    }

    /// Stop everything, services `after` others first, each honouring its stop_timeout.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(MgrCmd::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The manager's view of one service.
struct Managed {
    cfg: Arc<ServiceConfig>,
    /// New configs for the service task (soft changes apply in place).
    cfg_tx: watch::Sender<Arc<ServiceConfig>>,
    /// What the service should do; recomputed on every wake-up.
    desired_tx: watch::Sender<Desired>,
    /// Operator restarts for the service task.
    cmd_tx: mpsc::UnboundedSender<service::Cmd>,
    /// Removed by a reload: stopping, then dropped.
    retired: bool,
}

struct Manager {
    shared: Arc<Shared>,
    services: Vec<Managed>,
    gate: watch::Receiver<bool>,
    shutting_down: bool,
}

impl Manager {
    /// Reconcile `self.services` with a new list (also the initial start).
    fn apply(&mut self, new: Vec<ServiceConfig>) {
        for m in &mut self.services {
            let was = m.retired;
            m.retired = !new.iter().any(|c| c.name == m.cfg.name);
            if m.retired && !was {
                self.shared
                    .event(format!("{}: removed from the config; stopping", m.cfg.name));
            }
        }
        for cfg in new {
            let cfg = Arc::new(cfg);
            if let Some(m) = self.services.iter_mut().find(|m| m.cfg.name == cfg.name) {
                if m.cfg != cfg {
                    m.cfg = cfg.clone();
                    self.shared.update(&cfg.name, |r| {
                        r.run = cfg.run;
                        r.weight = cfg.weight;
                    });
                    let _ = m.cfg_tx.send(cfg);
                }
                continue;
            }
            self.shared.lock().push(ServiceStatus {
                name: cfg.name.clone(),
                run: cfg.run,
                state: ServiceState::Stopped,
                pid: None,
                restarts: 0,
                last_exit: None,
                since: unix_ms(),
                active: None,
                last_check: None,
                failing: false,
                weight: cfg.weight,
            });
            let (cfg_tx, cfg_rx) = watch::channel(cfg.clone());
            let (desired_tx, desired_rx) = watch::channel(Desired::Wait);
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            tokio::spawn(service::run(
                self.shared.clone(),
                cfg_rx,
                desired_rx,
                cmd_rx,
            ));
            self.services.push(Managed {
                cfg,
                cfg_tx,
                desired_tx,
                cmd_tx,
                retired: false,
            });
        }
    }

    fn allowed(&self, m: &Managed, gate: bool) -> bool {
        !self.shutting_down && !m.retired && (m.cfg.run == Run::Always || gate)
    }

    /// Recompute what every service should do; drop retired services that have stopped.
    fn reconcile(&mut self) {
        let gate = *self.gate.borrow();
        let alive = |name: &str| self.shared.state(name).is_some_and(|s| s.is_alive());
        let mut out = Vec::with_capacity(self.services.len());
        for s in &self.services {
            let d = if self.allowed(s, gate) {
                let ready = s.cfg.after.iter().all(|dep| {
                    // A name that is not (or no longer) configured does not block.
                    self.shared.state(dep).map_or(true, |st| st.is_ready())
                });
                if ready {
                    Desired::Run
                } else {
                    Desired::Wait
                }
            } else {
                let dependents_stopping = self.services.iter().any(|d| {
                    !self.allowed(d, gate)
                        && d.cfg.after.contains(&s.cfg.name)
                        && alive(&d.cfg.name)
                });
                if dependents_stopping {
                    Desired::Keep
                } else {
                    Desired::Stop
                }
            };
            out.push(d);
        }
        for (m, d) in self.services.iter().zip(out) {
            m.desired_tx
                .send_if_modified(|v| std::mem::replace(v, d) != d);
        }
        let mut gone = Vec::new();
        self.services.retain(|m| {
            let done = m.retired && self.shared.state(&m.cfg.name) == Some(ServiceState::Stopped);
            if done {
                gone.push(m.cfg.name.clone());
            }
            !done
        });
        if !gone.is_empty() {
            let mut t = self.shared.lock();
            t.retain(|r| !gone.contains(&r.name));
            self.shared.publish(&t);
        }
    }

    fn all_stopped(&self) -> bool {
        self.shared.lock().iter().all(|r| !r.state.is_alive())
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<MgrCmd>) {
        let mut gate_open = true;
        let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            self.reconcile();
            if self.shutting_down && self.all_stopped() {
                break;
            }
            tokio::select! {
                r = self.gate.changed(), if gate_open => {
                    if r.is_err() {
                        // Nobody says we may run master services any more.
                        gate_open = false;
                        let (tx, rx) = watch::channel(false);
                        drop(tx);
                        self.gate = rx;
                    }
                }
                _ = self.shared.wake.notified() => {}
                c = cmds.recv() => match c {
                    None => {
                        if !self.shutting_down {
                            self.shared.event("supervisor handle dropped: stopping every service".into());
                        }
                        self.shutting_down = true;
                    }
                    Some(MgrCmd::Shutdown(tx)) => {
                        if !self.shutting_down {
                            self.shared.event("shutdown: stopping every service".into());
                        }
                        self.shutting_down = true;
                        waiters.push(tx);
                    }
                    Some(MgrCmd::Reload(new)) => {
                        if !self.shutting_down {
                            self.apply(new);
                        }
                    }
                    Some(MgrCmd::Restart(name, tx)) => {
                        if self.shutting_down {
                            let _ = tx.send(Err(SupervisorError::ShuttingDown));
                            continue;
                        }
                        match self.services.iter().find(|m| m.cfg.name == name && !m.retired) {
                            Some(m) => {
                                if let Err(e) = m.cmd_tx.send(service::Cmd::Restart(tx)) {
                                    let service::Cmd::Restart(tx) = e.0;
                                    let _ = tx.send(Err(SupervisorError::ShuttingDown));
                                }
                            }
                            None => {
                                let _ = tx.send(Err(SupervisorError::UnknownService(name)));
                            }
                        }
                    }
                },
            }
        }
        // Every service has stopped: dropping `self.services` closes the service tasks.
        drop(self.services);
        while let Ok(c) = cmds.try_recv() {
            match c {
                MgrCmd::Shutdown(tx) => waiters.push(tx),
                MgrCmd::Restart(_, tx) => {
                    let _ = tx.send(Err(SupervisorError::ShuttingDown));
                }
                MgrCmd::Reload(_) => {}
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

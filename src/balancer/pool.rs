//! Servers, their state and counters, and the pool that picks among them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{Balance, CheckConfig, ServerConfig};
use super::pick::{self, Cand, ServerView};
use crate::health::{RiseFall, Transition};

/// Without an active check, a passive failure (refused or timed-out connect) keeps a server
/// out of rotation for this long; then it gets traffic again.
pub const PASSIVE_HOLD: Duration = Duration::from_secs(2);

/// Counters of a listener or a server. Relaxed atomics: they are read only for display.
#[derive(Debug, Default)]
pub struct Counters {
    pub active: AtomicU64,
    pub total: AtomicU64,
    /// Bytes from clients to servers.
    pub bytes_in: Striped,
    /// Bytes from servers to clients.
    pub bytes_out: Striped,
    pub connect_failures: AtomicU64,
    pub retries: AtomicU64,
}

/// A counter that connection threads add to at every chunk they move. One atomic shared by
/// all threads would bounce its cache line between CPUs at every request; each thread adds
/// to its own stripe instead, and a read sums them.
#[derive(Debug, Default)]
pub struct Striped([Stripe; STRIPES]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

const STRIPES: usize = 4;

thread_local! {
    /// This thread's stripe: its connection thread number (see `shards`), else 0.
    static STRIPE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Striped {
    pub fn add(&self, n: u64) {
        self.0[STRIPE.with(|s| s.get())].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }

    /// Makes the calling thread add to stripe `i` (modulo the stripe count).
    pub(crate) fn use_stripe(i: usize) {
        STRIPE.with(|s| s.set(i % STRIPES));
    }
}

/// What an operator set with `drain`, `disable` and `enable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    Ready = 0,
    /// No new connections; existing ones are kept.
    Drain = 1,
    /// Maintenance: no new connections; existing ones are kept; checks keep running.
    Maint = 2,
}

impl Admin {
    fn from_u8(v: u8) -> Admin {
        match v {
            1 => Admin::Drain,
            2 => Admin::Maint,
            _ => Admin::Ready,
        }
    }
}

/// The state shown for a server: admin state first, then health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Up,
    Down,
    Drain,
    Maint,
}

/// The result of the last active check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastCheck {
    pub ok: bool,
    /// Why it failed; empty when ok.
    pub detail: String,
    pub at_unix_ms: u64,
}

#[derive(Debug)]
struct Health {
    /// `None` when the listener has no active check.
    counter: Option<RiseFall>,
    /// The same rise/fall over the active checks alone, never forced down by a failed
    /// connect: what the pair compares between the nodes (see [`Server::checks_pass`]).
    checks: Option<RiseFall>,
    /// Without a check: the end of a passive hold.
    hold_until: Option<Instant>,
    last_check: Option<LastCheck>,
    last_change_unix_ms: u64,
}

/// One backend server of one listener.
#[derive(Debug)]
pub struct Server {
    pub cfg: ServerConfig,
    /// `pick::name_key(name)`, for `source`.
    pub key: u64,
    /// Weight and backup may change on reload without replacing the server.
    weight: AtomicU32,
    backup: AtomicBool,
    admin: AtomicU8,
    /// The health verdict read on every pick, so picking takes no per-server lock.
    healthy: AtomicBool,
    /// Set when the server has no check, so a pick knows to look at the passive hold.
    unchecked: AtomicBool,
    /// The verdict of the active checks alone (true without a check).
    checks_up: AtomicBool,
    /// The rise/fall counter and the last results; written by checks and passive failures.
    health: Mutex<Health>,
    pub counters: Counters,
    /// Stops this server's check task (child of the listener's check token).
    pub(crate) check_cancel: Mutex<Option<CancellationToken>>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Server {
    /// A new server: down until its first check passes, or up if there is no check.
    pub fn new(cfg: ServerConfig, check: Option<&CheckConfig>) -> Server {
        let counter = check.map(|c| RiseFall::new_pending(c.rise, c.fall));
        Server {
            key: pick::name_key(&cfg.name),
            weight: AtomicU32::new(cfg.weight),
            backup: AtomicBool::new(cfg.backup),
            admin: AtomicU8::new(Admin::Ready as u8),
            healthy: AtomicBool::new(check.is_none()),
            unchecked: AtomicBool::new(check.is_none()),
            checks_up: AtomicBool::new(check.is_none()),
            health: Mutex::new(Health {
                checks: counter.clone(),
                counter,
                hold_until: None,
                last_check: None,
                last_change_unix_ms: unix_ms(),
            }),
            counters: Counters::default(),
            check_cancel: Mutex::new(None),
            cfg,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub fn backup(&self) -> bool {
        self.backup.load(Relaxed)
    }

    pub(crate) fn set_weight_backup(&self, weight: u32, backup: bool) {
        self.weight.store(weight, Relaxed);
        self.backup.store(backup, Relaxed);
    }

    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Relaxed))
    }

    pub fn set_admin(&self, a: Admin) {
        let old = Admin::from_u8(self.admin.swap(a as u8, Relaxed));
        if old != a {
            tracing::info!(server = %self.cfg.name, "admin state={old:?}=>{a:?}");
            self.lock_health().last_change_unix_ms = unix_ms();
        }
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Healthy by checks and passive health (ignores the admin state).
    pub fn is_healthy(&self) -> bool {
        if self.healthy.load(Relaxed) {
            return true;
        }
        if !self.unchecked.load(Relaxed) {
            return false;
        }
        // No check: a passive hold ends by itself.
        let mut h = self.lock_health();
        match h.hold_until {
            Some(t) if Instant::now() >= t => {
                h.hold_until = None;
                h.last_change_unix_ms = unix_ms();
                self.healthy.store(true, Relaxed);
                tracing::info!(server = %self.cfg.name, "health state=down=>up (passive hold over)");
                true
            }
            _ => false,
        }
    }

    /// Up by its active checks alone: passive failures (this node's failed connects) left
    /// out. The backup carries no traffic and so sees none; comparing the nodes on this keeps
    /// one client's failed connects on the master from moving the VIP to a node whose checks
    /// of the same servers merely look better. True without a check.
    pub fn checks_pass(&self) -> bool {
        self.checks_up.load(Relaxed)
    }

    /// May take new connections.
    pub fn is_usable(&self) -> bool {
        self.admin() == Admin::Ready && self.is_healthy()
    }

    pub fn state(&self) -> ServerState {
        match self.admin() {
            Admin::Maint => ServerState::Maint,
            Admin::Drain => ServerState::Drain,
            Admin::Ready if self.is_healthy() => ServerState::Up,
            Admin::Ready => ServerState::Down,
        }
    }

    /// Feeds an active check result.
    pub fn observe_check(&self, result: Result<(), String>) {
        let mut h = self.lock_health();
        let ok = result.is_ok();
        let now = unix_ms();
        h.last_check = Some(LastCheck {
            ok,
            detail: result.err().unwrap_or_default(),
            at_unix_ms: now,
        });
        if let Some(c) = h.checks.as_mut() {
            c.observe(ok);
            self.checks_up.store(c.is_up(), Relaxed);
        }
        let Some(c) = h.counter.as_mut() else { return };
        let t = c.observe(ok);
        if let Some(t) = t {
            self.apply(&mut h, t, "check");
        }
    }

    /// Passive health: a connect to this server failed.
    pub fn passive_failure(&self, why: &str) {
        let mut h = self.lock_health();
        match h.counter.as_mut() {
            Some(c) => {
                if let Some(t) = c.force_down() {
                    self.apply(&mut h, t, why);
                }
            }
            None => {
                h.hold_until = Some(Instant::now() + PASSIVE_HOLD);
                if self.healthy.swap(false, Relaxed) {
                    h.last_change_unix_ms = unix_ms();
                    tracing::warn!(server = %self.cfg.name, "health state=up=>down ({why}; no check: held down {PASSIVE_HOLD:?})");
                }
            }
        }
    }

    fn apply(&self, h: &mut Health, t: Transition, why: &str) {
        let up = t == Transition::Up;
        self.healthy.store(up, Relaxed);
        h.last_change_unix_ms = unix_ms();
        if up {
            tracing::info!(server = %self.cfg.name, "health state=down=>up ({why})");
        } else {
            tracing::warn!(server = %self.cfg.name, "health state=up=>down ({why})");
        }
    }

    /// Installs a new check config (reload), keeping the current health verdict.
    pub(crate) fn set_check(&self, check: Option<&CheckConfig>) {
        // Read through is_healthy so that a passive hold that has run out counts as over.
        let up = self.is_healthy();
        let mut h = self.lock_health();
        match (check, h.counter.as_mut()) {
            (Some(c), Some(counter)) => {
                counter.set_limits(c.rise, c.fall);
                if let Some(checks) = h.checks.as_mut() {
                    checks.set_limits(c.rise, c.fall);
                }
            }
            (Some(c), None) => {
                h.counter = Some(RiseFall::new(c.rise, c.fall, up));
                // The checks have said nothing bad yet; a passive hold must not seed them.
                h.checks = Some(RiseFall::new(c.rise, c.fall, true));
                self.checks_up.store(true, Relaxed);
            }
            (None, _) => {
                h.counter = None;
                h.checks = None;
                h.hold_until = None;
                self.healthy.store(true, Relaxed);
                self.checks_up.store(true, Relaxed);
            }
        }
        self.unchecked.store(check.is_none(), Relaxed);
    }

    pub fn last_check(&self) -> Option<LastCheck> {
        self.lock_health().last_check.clone()
    }

    pub fn last_change_unix_ms(&self) -> u64 {
        self.lock_health().last_change_unix_ms
    }

    /// Stops this server's check task, if any.
    pub(crate) fn stop_check(&self) {
        if let Some(t) = self
            .check_cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.cancel();
        }
    }
}

/// Algorithm state, behind the pool's pick lock.
#[derive(Debug)]
struct PickState {
    /// Smooth WRR current weights, by slot.
    wrr: Vec<i64>,
    /// leastconn's round-robin cursor (a slot).
    last: usize,
    /// Scratch candidate list, kept to avoid an allocation per pick.
    cands: Vec<Cand>,
}

impl Default for PickState {
    fn default() -> PickState {
        // leastconn's first tie goes to slot 0.
        PickState {
            wrr: Vec::new(),
            last: usize::MAX,
            cands: Vec::new(),
        }
    }
}

/// The servers of one listener and the pick state.
#[derive(Debug, Default)]
pub struct Pool {
    /// Swapped whole on reload; connections hold their own `Arc<Server>`.
    servers: RwLock<Arc<[Arc<Server>]>>,
    /// Serialises picks: the algorithms' state, and `active` counts that leastconn reads.
    pick: Mutex<PickState>,
}

impl Pool {
    pub fn new(servers: Vec<Arc<Server>>) -> Pool {
        Pool {
            servers: RwLock::new(servers.into()),
            pick: Mutex::default(),
        }
    }

    pub fn servers(&self) -> Arc<[Arc<Server>]> {
        self.servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_servers(&self, servers: Vec<Arc<Server>>) {
        let mut p = self.pick.lock().unwrap_or_else(|p| p.into_inner());
        *self.servers.write().unwrap_or_else(|p| p.into_inner()) = servers.into();
        p.wrr.clear();
        p.last = usize::MAX;
    }

    /// Picks a server for a new connection from `client`, skipping `exclude`, and counts it
    /// active. The caller decrements `counters.active` when the connection ends or fails.
    pub fn pick(
        &self,
        balance: Balance,
        client: IpAddr,
        exclude: &[Arc<Server>],
    ) -> Option<Arc<Server>> {
        let servers = self.servers();
        let mut st = self.pick.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *st;
        let views = servers
            .iter()
            .enumerate()
            .filter(|(_, s)| !exclude.iter().any(|e| Arc::ptr_eq(e, s)))
            .map(|(slot, s)| ServerView {
                slot,
                weight: s.weight(),
                backup: s.backup(),
                usable: s.is_usable(),
                active: s.counters.active.load(Relaxed),
                key: s.key,
            });
        pick::eligible(views, &mut st.cands);
        let i = match balance {
            Balance::RoundRobin => pick::smooth_wrr(&st.cands, &mut st.wrr),
            Balance::LeastConn => pick::leastconn(&st.cands, &mut st.last),
            Balance::Source => pick::source(&st.cands, client),
        }?;
        let s = servers[st.cands[i].slot].clone();
        s.counters.active.fetch_add(1, Relaxed);
        Some(s)
    }

    /// Servers that pass their checks (admin state ignored).
    pub fn healthy(&self) -> usize {
        self.servers().iter().filter(|s| s.is_healthy()).count()
    }

    /// Servers that pass their active checks, passive failures left out (see
    /// [`Server::checks_pass`]).
    pub fn checks_pass(&self) -> usize {
        self.servers().iter().filter(|s| s.checks_pass()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::config::CheckKind;

    #[test]
    fn a_check_added_on_reload_is_not_seeded_by_a_passive_hold() {
        let cfg = ServerConfig {
            name: "impala1".into(),
            addr_text: "127.0.0.1:21050".into(),
            addr: "127.0.0.1:21050".parse().unwrap(),
            weight: 1,
            backup: false,
        };
        let s = Server::new(cfg, None);
        s.passive_failure("Connection refused");
        assert!(!s.is_usable());
        let check = CheckConfig {
            kind: CheckKind::Tcp,
            port: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 2,
        };
        s.set_check(Some(&check));
        // Routing still keeps it out (its hold is not over), but the pair's view, which only
        // the checks feed, has heard nothing bad: it stays up until `fall` checks fail.
        assert!(!s.is_usable());
        assert!(s.checks_pass());
        s.observe_check(Err("refused".into()));
        assert!(s.checks_pass());
        s.observe_check(Err("refused".into()));
        assert!(!s.checks_pass());
    }
}

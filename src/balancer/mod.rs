//! The embedded layer-4 balancer.
//!
//! - `config`: the `[[listen]]` section, raw and validated.
//! - `pick`: the balance algorithms, pure.
//! - `pool`: servers, their state and counters.
//! - `listener`: binding, accept loop, connect with retries.
//! - `proxy`: the byte pump (splice or copy), half-close, idle timeouts.
//!
//! [`Balancer`] is the handle the daemon keeps: start, reload, control, snapshot.

pub mod config;
pub mod listener;
pub mod pick;
pub mod pool;
pub mod proxy;
mod shards;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    Balance, CheckConfig, CheckKind, ConfigError, ListenConfig, RawListen, ServerConfig,
};
pub use pool::{Admin, LastCheck, ServerState};
pub use proxy::Mode;

use crate::health::{self, CheckTiming, Probe};
use listener::{Acceptor, Ctx, ListenSock, Listener};
use pool::Server;

/// Errors from start and reload. Nothing is changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    #[error("listen {name:?}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Errors from the runtime control functions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no listener named {0:?}")]
    NoListener(String),
    #[error("no server named {0:?}")]
    NoServer(String),
}

/// Options that are not part of the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub mode: Mode,
}

/// The balancer: every listener, its pool and its checks.
///
/// Dropping the last clone of the handle stops everything, connections included.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

struct Inner {
    /// The running listeners, in config order; changed only by reload.
    listeners: Mutex<Vec<Arc<Listener>>>,
    /// Parent of every task (accept loops, checks, connections): cancelled on drop.
    root: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    tracker: TaskTracker,
    opts: Options,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

/// Counters and state of the whole balancer, for the admin page and `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct BalancerStatus {
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub bind: String,
    pub balance: Balance,
    pub maxconn: usize,
    pub active: u64,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_failures: u64,
    pub retries: u64,
    /// Clients closed because no server could take them.
    pub no_server: u64,
    pub servers: Vec<ServerStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub name: String,
    pub addr: String,
    pub weight: u32,
    pub backup: bool,
    pub state: ServerState,
    pub active: u64,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_failures: u64,
    pub retries: u64,
    pub last_check: Option<LastCheck>,
    /// When the state (health or admin) last changed, unix time in ms.
    pub last_change_unix_ms: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Balancer {
    /// Binds every listener, then starts accepting and checking. When this returns `Ok`, every
    /// listener is bound (the pair may claim the VIP). On error nothing keeps running.
    pub async fn start(listens: Vec<ListenConfig>) -> Result<Balancer, BalancerError> {
        Balancer::start_with(listens, Options::default()).await
    }

    pub async fn start_with(
        listens: Vec<ListenConfig>,
        opts: Options,
    ) -> Result<Balancer, BalancerError> {
        let b = Balancer {
            inner: Arc::new(Inner {
                listeners: Mutex::new(Vec::new()),
                root: CancellationToken::new(),
                tracker: TaskTracker::new(),
                opts,
            }),
        };
        b.reload(listens).await?;
        Ok(b)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            mode: self.inner.opts.mode,
            kill: self.inner.root.child_token(),
            tracker: self.inner.tracker.clone(),
        }
    }

    /// Applies a new set of listeners as a diff by name. Unchanged listeners and servers keep
    /// their sockets, connections, counters and state. A listener whose `bind` changed gets a
    /// new socket; a server whose address changed is replaced (it starts as a new server, with
    /// the old one's drain/maint). A renamed listener (same `bind`) keeps socket and servers.
    /// Removed listeners stop accepting and removed servers get no new connections; their
    /// existing connections finish. New sockets are bound before anything changes, so a bind
    /// error leaves the old set running untouched.
    pub async fn reload(&self, new: Vec<ListenConfig>) -> Result<(), BalancerError> {
        let mut cur = lock(&self.inner.listeners);
        // 1. Sockets: keep the one a listener of the same name has on the same configured
        //    address; else take over one bound to that address by another (renamed or
        //    removed) listener, unless the port is 0 (ephemeral, never shared); else bind.
        let sock_of = |l: &Listener| {
            let a = lock(&l.acceptor);
            (a.configured, a.sock.clone())
        };
        let sock_of = |l: &Listener| match sock_of(l) {
            (addr, Some(s)) => Some((addr, s)),
            (_, None) => None,
        };
        let mut socks: Vec<Arc<ListenSock>> = Vec::with_capacity(new.len());
        for cfg in &new {
            let same_name = cur
                .iter()
                .find(|l| l.name == cfg.name)
                .and_then(|l| sock_of(l));
            let reuse = match same_name {
                Some((addr, s)) if addr == cfg.bind => Some(s),
                _ if cfg.bind.port() == 0 => None,
                _ => cur
                    .iter()
                    .filter(|l| !new.iter().any(|n| n.name == l.name && n.bind == cfg.bind))
                    .filter_map(|l| sock_of(l))
                    .find(|(addr, _)| *addr == cfg.bind)
                    .map(|(_, s)| s),
            };
            if let Some(s) = reuse {
                socks.push(s);
                continue;
            }
            let err = |source| BalancerError::Bind {
                name: cfg.name.clone(),
                addr: cfg.bind,
                source,
            };
            socks.push(Arc::new(
                listener::bind(cfg.bind, cfg.backlog).map_err(err)?,
            ));
        }
        // 2. Apply.
        let mut retired: Vec<Arc<ListenSock>> = Vec::new();
        let mut next: Vec<Arc<Listener>> = Vec::with_capacity(new.len());
        let names: Vec<String> = new.iter().map(|c| c.name.clone()).collect();
        for (cfg, sock) in new.into_iter().zip(socks) {
            let old = cur
                .iter()
                .position(|l| l.name == cfg.name)
                .map(|i| cur.remove(i));
            let l = match old {
                Some(l) => {
                    self.update_listener(&l, cfg, sock, &mut retired);
                    l
                }
                None => {
                    // A listener that is going away and whose socket this one took over
                    // was renamed: its servers carry over.
                    let renamed = cur.iter().find(|l| {
                        !names.contains(&l.name)
                            && lock(&l.acceptor)
                                .sock
                                .as_ref()
                                .is_some_and(|k| Arc::ptr_eq(k, &sock))
                    });
                    self.new_listener(cfg, sock, renamed)
                }
            };
            next.push(l);
        }
        // 3. Whatever is left was removed: stop accepting and checking.
        for l in cur.drain(..) {
            tracing::info!(listener = %l.name, "listener removed: stops accepting; open connections finish");
            let mut a = lock(&l.acceptor);
            a.stop.cancel();
            retired.extend(a.sock.take());
            lock(&l.checks).cancel();
        }
        // 4. A socket no listener took over stops listening now, not when the last connection
        //    thread's accept loop lets go of it: once reload returns, its port refuses.
        for s in retired {
            if !next.iter().any(|l| {
                lock(&l.acceptor)
                    .sock
                    .as_ref()
                    .is_some_and(|k| Arc::ptr_eq(k, &s))
            }) {
                listener::stop_listening(&s);
            }
        }
        *cur = next;
        Ok(())
    }

    /// Starts a listener. `renamed`: the listener it replaces under another name, whose
    /// servers with the same name and address it keeps, with their health, drain/maint and
    /// counters (new servers would take no traffic until their first check passes).
    fn new_listener(
        &self,
        cfg: ListenConfig,
        sock: Arc<ListenSock>,
        renamed: Option<&Arc<Listener>>,
    ) -> Arc<Listener> {
        let was = renamed.map(|l| (l.pool.servers(), l.config().check.clone()));
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|sc| {
                let kept = was.as_ref().and_then(|(ss, check)| {
                    let s = ss
                        .iter()
                        .find(|s| s.cfg.name == sc.name && s.cfg.addr == sc.addr)?;
                    s.set_weight_backup(sc.weight, sc.backup);
                    if *check != cfg.check {
                        s.set_check(cfg.check.as_ref());
                    }
                    Some(s.clone())
                });
                kept.unwrap_or_else(|| Arc::new(Server::new(sc.clone(), cfg.check.as_ref())))
            })
            .collect();
        let stop = self.inner.root.child_token();
        let checks = self.inner.root.child_token();
        let acceptor = Acceptor {
            sock: Some(sock.clone()),
            configured: cfg.bind,
            stop: stop.clone(),
        };
        let check = cfg.check.clone();
        tracing::info!(listener = %cfg.name, bind = %cfg.bind, balance = cfg.balance.as_str(), servers = servers.len(), "listener started");
        let l = Arc::new(Listener::new(
            cfg,
            servers.clone(),
            acceptor,
            checks.clone(),
        ));
        for s in &servers {
            start_check(s, check.as_ref(), &checks);
        }
        listener::start_accepting(&l, &sock, &stop, &self.ctx());
        l
    }

    /// Applies `cfg` to a listener that keeps its name. A socket it gives up goes to
    /// `retired`.
    fn update_listener(
        &self,
        l: &Arc<Listener>,
        cfg: ListenConfig,
        sock: Arc<ListenSock>,
        retired: &mut Vec<Arc<ListenSock>>,
    ) {
        let old = l.config();
        if *old == cfg {
            return;
        }
        tracing::info!(listener = %l.name, "listener changed");
        // Socket.
        {
            let mut a = lock(&l.acceptor);
            if a.configured != cfg.bind || !a.sock.as_ref().is_some_and(|s| Arc::ptr_eq(s, &sock)) {
                a.stop.cancel();
                retired.extend(a.sock.take());
                let stop = self.inner.root.child_token();
                *a = Acceptor {
                    sock: Some(sock.clone()),
                    configured: cfg.bind,
                    stop: stop.clone(),
                };
                listener::start_accepting(l, &sock, &stop, &self.ctx());
            }
        }
        if old.backlog != cfg.backlog {
            l.set_backlog(cfg.backlog);
        }
        if old.maxconn != cfg.maxconn {
            l.set_maxconn(cfg.maxconn);
        }
        // Servers: keep those with the same name and address.
        let check_changed = old.check != cfg.check;
        let current = l.pool.servers();
        let mut servers = Vec::with_capacity(cfg.servers.len());
        for sc in &cfg.servers {
            match current
                .iter()
                .find(|s| s.cfg.name == sc.name && s.cfg.addr == sc.addr)
            {
                Some(s) => {
                    s.set_weight_backup(sc.weight, sc.backup);
                    if check_changed {
                        s.set_check(cfg.check.as_ref());
                    }
                    servers.push(s.clone());
                }
                None => {
                    let s = Arc::new(Server::new(sc.clone(), cfg.check.as_ref()));
                    // The same name and host whose name now resolves elsewhere: a new server
                    // (health and counters start over), but drain or maint set by an
                    // operator stays.
                    if let Some(was) = current
                        .iter()
                        .find(|o| o.cfg.name == sc.name && o.cfg.addr_text == sc.addr_text)
                    {
                        tracing::info!(listener = %l.name, server = s.name(),
                            "address changed: {} => {}", was.cfg.addr, sc.addr);
                        s.set_admin(was.admin());
                    }
                    servers.push(s);
                }
            }
        }
        for s in current
            .iter()
            .filter(|s| !servers.iter().any(|n| Arc::ptr_eq(n, s)))
        {
            tracing::info!(listener = %l.name, server = s.name(), "server removed: open connections finish");
            s.stop_check();
        }
        // Checks: restart all when the check changed, else only start the new servers'.
        let mut checks = lock(&l.checks);
        if check_changed {
            checks.cancel();
            *checks = self.inner.root.child_token();
        }
        for s in &servers {
            let running = lock(&s.check_cancel)
                .as_ref()
                .is_some_and(|t| !t.is_cancelled());
            if check_changed || !running {
                start_check(s, cfg.check.as_ref(), &checks);
            }
        }
        drop(checks);
        l.pool.set_servers(servers);
        *l.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
    }

    /// Stops accepting and checking, waits up to `grace` for open connections, then ends them.
    pub async fn shutdown(&self, grace: Duration) {
        for l in lock(&self.inner.listeners).iter() {
            lock(&l.acceptor).stop.cancel();
            lock(&l.checks).cancel();
        }
        self.inner.tracker.close();
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
        self.inner.root.cancel();
        // Let the connections that were cut close their sockets and log the cut.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.inner.tracker.wait()).await;
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        lock(&self.inner.listeners)
            .iter()
            .find(|l| l.name == listener)
            .and_then(|l| l.local_addr())
    }

    fn set_admin(
        &self,
        listener: Option<&str>,
        server: &str,
        a: Admin,
    ) -> Result<(), ControlError> {
        let ls = lock(&self.inner.listeners);
        if let Some(name) = listener {
            if !ls.iter().any(|l| l.name == name) {
                return Err(ControlError::NoListener(name.to_string()));
            }
        }
        let mut found = false;
        for l in ls.iter().filter(|l| listener.is_none_or_eq(&l.name)) {
            for s in l.pool.servers().iter().filter(|s| s.name() == server) {
                s.set_admin(a);
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(ControlError::NoServer(server.to_string()))
        }
    }

    /// Drain: the server gets no new connections; open ones continue. `listener = None`
    /// applies to the server of that name in every listener.
    pub fn drain(&self, listener: Option<&str>, server: &str) -> Result<(), ControlError> {
        self.set_admin(listener, server, Admin::Drain)
    }

    /// Maintenance: no new connections; open ones continue; checks keep running.
    pub fn disable(&self, listener: Option<&str>, server: &str) -> Result<(), ControlError> {
        self.set_admin(listener, server, Admin::Maint)
    }

    /// Back in rotation (if its checks pass).
    pub fn enable(&self, listener: Option<&str>, server: &str) -> Result<(), ControlError> {
        self.set_admin(listener, server, Admin::Ready)
    }

    /// State and counters of every listener and server.
    pub fn snapshot(&self) -> BalancerStatus {
        let ls = lock(&self.inner.listeners);
        let listeners = ls
            .iter()
            .map(|l| {
                let cfg = l.config();
                let c = &l.counters;
                ListenerStatus {
                    name: l.name.clone(),
                    bind: l.local_addr().unwrap_or(cfg.bind).to_string(),
                    balance: cfg.balance,
                    maxconn: cfg.maxconn,
                    active: c.active.load(Relaxed),
                    total: c.total.load(Relaxed),
                    bytes_in: c.bytes_in.get(),
                    bytes_out: c.bytes_out.get(),
                    connect_failures: c.connect_failures.load(Relaxed),
                    retries: c.retries.load(Relaxed),
                    no_server: l.no_server.load(Relaxed),
                    servers: l
                        .pool
                        .servers()
                        .iter()
                        .map(|s| {
                            let c = &s.counters;
                            ServerStatus {
                                name: s.cfg.name.clone(),
                                addr: s.cfg.addr_text.clone(),
                                weight: s.weight(),
                                backup: s.backup(),
                                state: s.state(),
                                active: c.active.load(Relaxed),
                                total: c.total.load(Relaxed),
                                bytes_in: c.bytes_in.get(),
                                bytes_out: c.bytes_out.get(),
                                connect_failures: c.connect_failures.load(Relaxed),
                                retries: c.retries.load(Relaxed),
                                last_check: s.last_check(),
                                last_change_unix_ms: s.last_change_unix_ms(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        BalancerStatus { listeners }
    }

    /// Servers that pass their health checks, summed over all listeners (a host in three
    /// listeners counts three times). Admin state is ignored: it is an operator's choice on
    /// this node, not a sign that the node cannot serve.
    pub fn healthy_servers(&self) -> usize {
        lock(&self.inner.listeners)
            .iter()
            .map(|l| l.pool.healthy())
            .sum()
    }

    /// True when there is at least one listener and no listener has a server that passes
    /// its active checks: the pair then lowers this node's priority. Passive failures are
    /// left out: they steer this node's connections, but only the master sees them.
    pub fn all_pools_down(&self) -> bool {
        let ls = lock(&self.inner.listeners);
        !ls.is_empty() && ls.iter().all(|l| l.pool.checks_pass() == 0)
    }
}

trait OptEq {
    fn is_none_or_eq(&self, v: &str) -> bool;
}

impl OptEq for Option<&str> {
    fn is_none_or_eq(&self, v: &str) -> bool {
        self.map_or(true, |x| x == v)
    }
}

/// Starts the active check of one server under `parent`, if the listener has one.
fn start_check(s: &Arc<Server>, check: Option<&CheckConfig>, parent: &CancellationToken) {
    s.stop_check();
    let Some(c) = check else { return };
    let token = parent.child_token();
    *lock(&s.check_cancel) = Some(token.clone());
    let target = c.target(s.cfg.addr);
    let probe = match &c.kind {
        CheckKind::Tcp => Probe::Tcp { addr: target },
        CheckKind::Http { path, expect } => Probe::Http {
            host: target.ip().to_string(),
            port: target.port(),
            path: path.clone(),
            expect: *expect,
        },
    };
    let timing = CheckTiming {
        interval: c.interval,
        timeout: c.timeout,
    };
    let server = s.clone();
    tokio::spawn(health::run_checks(probe, timing, token, move |r| {
        server.observe_check(r.map_err(|e| e.to_string()));
    }));
}

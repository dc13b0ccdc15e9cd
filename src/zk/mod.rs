//! ZooKeeper service discovery in the HiveServer2 dynamic-discovery format.
//!
//! Hive JDBC and beeline clients with `serviceDiscoveryMode=zooKeeper` list the children of
//! `/<namespace>`, pick one, and read host and port from its data. impalad never registers
//! itself there; hapair does it for the coordinators it already health-checks, and the pair
//! keeps the registrar alive:
//!
//! - `register = "servers"`: while this node is master, one EPHEMERAL_SEQUENTIAL znode per
//!   up (healthy and enabled) server of each published listener.
//! - `register = "vip"`: while master, one znode per published listener at `VIP:port`.
//!
//! - `config`: the `[zookeeper]` section.
//! - `format`: znode names and data, and the Hive reader's parsing rules.
//! - `plan`: the entries to publish, from a balancer snapshot (pure).
//! - [`Registrar`]: the task that keeps ZooKeeper in line with the plan.
//!
//! **ZooKeeper can never block the pair, the balancer or the services.** The registrar is one
//! task of its own. It reads the role from a `watch` channel and polls the balancer's snapshot
//! every [`POLL`]: no queue grows while ZooKeeper is slow. Every ZooKeeper call has a
//! deadline. The registrar keeps its session while backup too, so a promotion registers at
//! once. A demotion deletes the znodes; if that cannot be confirmed, the session is dropped
//! (closed), and ZooKeeper removes the znodes when the session ends or expires. After a
//! session expiry the registrar connects again with backoff and registers again.

pub mod config;
pub mod format;
pub mod plan;
pub mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zookeeper_client as zk;

use crate::balancer::Balancer;
use crate::events::EventLog;
use crate::pair::Role;
pub use config::{RawZk, Register, ZkConfig};
use format::{Entry, Publish};

/// How often the registrar compares the balancer with what is registered. A health change
/// reaches ZooKeeper at most this much after the balancer sees it.
pub const POLL: Duration = Duration::from_millis(100);
/// First wait after a failed connect; doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The version written into znode names.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One registered znode, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZnodeStatus {
    /// Full path, chroot included.
    pub path: String,
    pub listener: String,
    /// The server's name (`servers` mode); null in `vip` mode.
    pub server: Option<String>,
    pub host: String,
    pub port: u16,
    /// `binary` or `http`.
    pub transport: &'static str,
    pub since_unix_ms: u64,
}

/// The registrar's state for the page, `/status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ZkStatus {
    pub quorum: String,
    /// Namespace path, chroot included (e.g. `/impala/impala-ha`).
    pub namespace: String,
    pub register: String,
    /// `connecting` | `connected` | `disconnected` | `backoff` | `stopped`.
    pub state: String,
    /// When `state` last changed, unix ms.
    pub state_since_unix_ms: u64,
    /// The ZooKeeper session id in hex, while there is a session.
    pub session_id: Option<String>,
    pub session_timeout_ms: u64,
    /// Sessions established since start (1 + reconnects after expiry or close).
    pub sessions: u64,
    /// Sessions that ZooKeeper expired.
    pub expirations: u64,
    /// Failed or timed-out ZooKeeper operations and connects.
    pub errors: u64,
    pub last_error: Option<String>,
    /// The znodes this node holds now.
    pub znodes: Vec<ZnodeStatus>,
}

/// Handle to the registrar task. Cheap to clone.
#[derive(Clone)]
pub struct Registrar {
    status: Arc<Mutex<ZkStatus>>,
    stop: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registrar {
    /// Starts the registrar task on the current runtime.
    pub fn start(
        cfg: ZkConfig,
        vips: Vec<IpAddr>,
        role: watch::Receiver<Role>,
        balancer: Balancer,
        events: EventLog,
    ) -> Registrar {
        let base = format!("{}/{}", cfg.chroot, cfg.namespace);
        let status = Arc::new(Mutex::new(ZkStatus {
            quorum: cfg.quorum.clone(),
            namespace: base.clone(),
            register: cfg.register.as_str().to_string(),
            state: "connecting".into(),
            state_since_unix_ms: crate::events::unix_ms(),
            session_timeout_ms: cfg.session_timeout.as_millis() as u64,
            ..ZkStatus::default()
        }));
        let stop = CancellationToken::new();
        let task = Task {
            op_timeout: (cfg.session_timeout / 2)
                .clamp(Duration::from_millis(500), Duration::from_secs(5)),
            connect_string: cfg.hosts.join(","),
            base,
            cfg,
            vips,
            role,
            balancer,
            events,
            status: status.clone(),
            stop: stop.clone(),
            conn: None,
        };
        let handle = tokio::spawn(task.run());
        Registrar {
            status,
            stop,
            task: Arc::new(Mutex::new(Some(handle))),
        }
    }

    pub fn status(&self) -> ZkStatus {
        lock(&self.status).clone()
    }

    /// Deletes this node's znodes and closes the session, waiting at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        let Some(h) = lock(&self.task).take() else {
            return;
        };
        let abort = h.abort_handle();
        if tokio::time::timeout(grace, h).await.is_err() {
            warn!("zookeeper: shutdown did not finish within {grace:?}; the session will expire");
            abort.abort();
        }
    }
}

/// A live session and what it holds.
struct Conn {
    client: zk::Client,
    states: zk::StateWatcher,
    /// Node name prefix (up to `sequence=`) → (full path, entry, since).
    held: BTreeMap<String, (String, Entry, u64)>,
    /// An operation's outcome is unknown (timeout, connection loss): list the namespace and
    /// adopt or delete what this session owns before the next change.
    dirty: bool,
}

struct Task {
    cfg: ZkConfig,
    /// `cfg.hosts` joined: the chroot is applied by hand so that it can be created.
    connect_string: String,
    /// `<chroot>/<namespace>`.
    base: String,
    op_timeout: Duration,
    vips: Vec<IpAddr>,
    role: watch::Receiver<Role>,
    balancer: Balancer,
    events: EventLog,
    status: Arc<Mutex<ZkStatus>>,
    stop: CancellationToken,
    conn: Option<Conn>,
}

/// What went wrong with one ZooKeeper call.
#[derive(Debug)]
enum OpError {
    /// No answer in time, or the connection was lost: the outcome is unknown.
    Unknown(String),
    /// The session is gone (expired or closed): start a new one.
    Session(String),
    /// A definite failure (e.g. no permission).
    Failed(zk::Error),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Unknown(s) | OpError::Session(s) => f.write_str(s),
            OpError::Failed(e) => write!(f, "{e}"),
        }
    }
}

async fn op<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, zk::Error>>,
) -> Result<T, OpError> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(OpError::Unknown(format!(
            "{what}: no answer within {limit:?}"
        ))),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e {
            zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed => {
                OpError::Session(format!("{what}: {e}"))
            }
            zk::Error::ConnectionLoss | zk::Error::Timeout => {
                OpError::Unknown(format!("{what}: {e}"))
            }
            e => OpError::Failed(e),
        }),
    }
}

impl Task {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        info!(quorum = %self.cfg.quorum, namespace = %self.base, register = self.cfg.register.as_str(), "zookeeper: registrar started");
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            if self.conn.is_none() {
                match self.connect().await {
                    Some(c) => {
                        self.conn = Some(c);
                        backoff = BACKOFF_MIN;
                    }
                    None => {
                        if self.stop.is_cancelled() {
                            break;
                        }
                        self.set_state("backoff", None);
                        let wait = jitter(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        tokio::select! {
                            _ = self.stop.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                }
            }
            self.step().await;
            self.publish_status();
            let Some(c) = self.conn.as_mut() else {
                continue;
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.role.changed() => {}
                _ = c.states.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        self.unregister_all().await;
        // Dropping the last client closes the session.
        self.conn = None;
        self.set_state("stopped", None);
        self.publish_status();
        info!("zookeeper: registrar stopped");
    }

    fn set_state(&self, state: &str, session: Option<String>) {
        let mut s = lock(&self.status);
        if s.state != state {
            debug!(from = %s.state, to = state, "zookeeper: state");
            s.state = state.to_string();
            s.state_since_unix_ms = crate::events::unix_ms();
        }
        s.session_id = session;
    }

    fn error(&self, msg: String) {
        warn!("zookeeper: {msg}");
        let mut s = lock(&self.status);
        s.errors += 1;
        s.last_error = Some(msg);
    }

    fn publish_status(&self) {
        let znodes = self
            .conn
            .as_ref()
            .map(|c| {
                c.held
                    .values()
                    .map(|(path, e, since)| ZnodeStatus {
                        path: path.clone(),
                        listener: e.listener.clone(),
                        server: e.server.clone(),
                        host: e.host.clone(),
                        port: e.port,
                        transport: if e.http { "http" } else { "binary" },
                        since_unix_ms: *since,
                    })
                    .collect()
            })
            .unwrap_or_default();
        lock(&self.status).znodes = znodes;
    }

    /// Opens a session and makes sure the namespace node exists.
    async fn connect(&mut self) -> Option<Conn> {
        self.set_state("connecting", None);
        let connector = zk::Client::connector()
            .with_session_timeout(self.cfg.session_timeout)
            // The plain Create request: accepted by 3.4 servers as well as newer ones.
            .with_server_version(3, 4, 0);
        let limit = self.cfg.session_timeout + self.op_timeout;
        let res = tokio::select! {
            _ = self.stop.cancelled() => return None,
            r = tokio::time::timeout(limit, connector.connect(&self.connect_string)) => r,
        };
        let client = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.error(format!("connect to {}: {e}", self.cfg.quorum));
                return None;
            }
            Err(_) => {
                self.error(format!(
                    "connect to {}: no session within {limit:?}",
                    self.cfg.quorum
                ));
                return None;
            }
        };
        let dir = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        if let Err(e) = op(
            self.op_timeout,
            "create the namespace",
            client.mkdir(&self.base, &dir),
        )
        .await
        {
            self.error(format!("{e} ({})", self.base));
            return None;
        }
        let session = client.session_id().to_string();
        info!(session = %session, timeout = ?client.session_timeout(), "zookeeper: session established");
        {
            let mut s = lock(&self.status);
            s.sessions += 1;
            s.session_timeout_ms = client.session_timeout().as_millis() as u64;
        }
        self.set_state("connected", Some(session));
        let states = client.state_watcher();
        Some(Conn {
            client,
            states,
            held: BTreeMap::new(),
            // A session is new: nothing to adopt.
            dirty: false,
        })
    }

    /// Drops the session; ZooKeeper deletes its znodes when it closes or expires.
    fn drop_session(&mut self, why: &str) {
        if let Some(c) = self.conn.take() {
            if !c.held.is_empty() {
                self.events.push(
                    "zookeeper",
                    format!(
                        "session dropped ({why}): {} znodes go with it",
                        c.held.len()
                    ),
                );
            }
            warn!(held = c.held.len(), "zookeeper: session dropped: {why}");
        }
        self.set_state("disconnected", None);
    }

    /// One reconciliation.
    async fn step(&mut self) {
        let Some(c) = self.conn.as_ref() else { return };
        let state = c.client.state();
        let id = c.client.session_id().to_string();
        let holding = !c.held.is_empty();
        match state {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                self.set_state("connected", Some(id));
            }
            zk::SessionState::Disconnected => {
                self.set_state("disconnected", Some(id));
                let master = *self.role.borrow() == Role::Master;
                // Not master and holding znodes that cannot be deleted now: close the
                // session so that they go as soon as ZooKeeper notices.
                if !master && holding {
                    self.drop_session("demoted while ZooKeeper is unreachable");
                }
                return;
            }
            zk::SessionState::Expired => {
                lock(&self.status).expirations += 1;
                self.events
                    .push("zookeeper", "session expired; registering again");
                self.drop_session("session expired");
                return;
            }
            other => {
                self.drop_session(&format!("session {other}"));
                return;
            }
        }
        let master = *self.role.borrow() == Role::Master;
        let want: Vec<Entry> = if master {
            plan::desired(&self.cfg, &self.balancer.snapshot(), &self.vips)
        } else {
            vec![]
        };
        if let Err(e) = self.reconcile(want, master).await {
            match e {
                OpError::Session(m) => {
                    self.error(m);
                    self.drop_session("session lost");
                }
                OpError::Unknown(m) => {
                    self.error(m);
                    if let Some(c) = self.conn.as_mut() {
                        c.dirty = true;
                    }
                    if !master {
                        self.drop_session("demoted and the deletes are unconfirmed");
                    }
                }
                OpError::Failed(e) => self.error(e.to_string()),
            }
        }
    }

    /// Makes the held set equal to `want`: deletes first, then creates.
    async fn reconcile(&mut self, want: Vec<Entry>, master: bool) -> Result<(), OpError> {
        let limit = self.op_timeout;
        let publish = Publish {
            version: VERSION,
            authentication: &self.cfg.authentication,
            principal: self.cfg.principal.as_deref(),
            http_path: &self.cfg.http_path,
        };
        let want: BTreeMap<String, Entry> = want
            .into_iter()
            .map(|e| (format::name_prefix(&e, VERSION), e))
            .collect();
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        if c.dirty {
            adopt(c, &self.base, limit).await?;
            c.dirty = false;
            // Adopted znodes carry only host and port: take the rest from the plan.
            for (k, (_, e, _)) in c.held.iter_mut() {
                if let Some(w) = want.get(k) {
                    *e = w.clone();
                }
            }
        }
        let gone: Vec<String> = c
            .held
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            let Some((path, e, _)) = c.held.get(&k).cloned() else {
                continue;
            };
            match op(limit, "delete", c.client.delete(&path, None)).await {
                Ok(()) | Err(OpError::Failed(zk::Error::NoNode)) => {
                    c.held.remove(&k);
                    let why = if master { "not up" } else { "not master" };
                    info!(path = %path, "zookeeper: unregistered ({why})");
                    self.events.push(
                        "zookeeper",
                        format!(
                            "unregistered {} ({})",
                            format::host_port(&e.host, e.port),
                            why
                        ),
                    );
                }
                Err(err) => return Err(err),
            }
        }
        for (k, e) in want {
            if c.held.contains_key(&k) {
                continue;
            }
            let prefix = format!("{}/{k}", self.base);
            let data = format::data(&e, &publish);
            let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
            let (_, seq) = op(
                limit,
                "create",
                c.client.create(&prefix, data.as_bytes(), &mode),
            )
            .await?;
            let path = format!("{prefix}{seq}");
            info!(path = %path, "zookeeper: registered");
            self.events.push(
                "zookeeper",
                format!("registered {}", format::host_port(&e.host, e.port)),
            );
            c.held.insert(k, (path, e, crate::events::unix_ms()));
        }
        Ok(())
    }

    /// On stop: delete what is held (bounded), so the peer's registration is the only one.
    async fn unregister_all(&mut self) {
        let limit = self.op_timeout;
        let Some(c) = self.conn.as_mut() else { return };
        for (path, _, _) in std::mem::take(&mut c.held).into_values() {
            if let Err(e) = op(limit, "delete", c.client.delete(&path, None)).await {
                warn!(path = %path, "zookeeper: delete on stop: {e}; the session close removes it");
                break;
            }
        }
    }
}

/// Rebuilds `held` from the namespace: the znodes whose ephemeral owner is this session.
/// Duplicates (an unconfirmed create that did happen) are deleted.
async fn adopt(c: &mut Conn, base: &str, limit: Duration) -> Result<(), OpError> {
    let me = c.client.session_id().0;
    let (children, _) = op(limit, "list the namespace", c.client.get_children(base)).await?;
    let mut held: BTreeMap<String, (String, Entry, u64)> = BTreeMap::new();
    for name in children {
        let Some((prefix, _)) = format::split_sequence(&name) else {
            continue;
        };
        let path = format!("{base}/{name}");
        let Some(stat) = op(limit, "stat", c.client.check_stat(&path)).await? else {
            continue;
        };
        if stat.ephemeral_owner != me {
            continue;
        }
        let prefix = prefix.to_string();
        let known = c
            .held
            .get(&prefix)
            .map(|(p, _, _)| p == &path)
            .unwrap_or(false);
        if held.contains_key(&prefix) && !known {
            op(limit, "delete a duplicate", c.client.delete(&path, None)).await?;
            continue;
        }
        let (entry, since) = match c.held.get(&prefix) {
            Some((_, e, s)) => (e.clone(), *s),
            None => {
                // Created by an unconfirmed request: recover the entry from the data.
                let (data, _) = op(limit, "get", c.client.get_data(&path)).await?;
                let text = String::from_utf8_lossy(&data);
                let Some(h) = format::parse_hive(&text) else {
                    continue;
                };
                let e = Entry {
                    listener: String::new(),
                    server: None,
                    host: h.host,
                    port: h.port,
                    http: h.transport_mode == "http",
                };
                (e, crate::events::unix_ms())
            }
        };
        if let Some((old, _, _)) = held.insert(prefix, (path.clone(), entry, since)) {
            // The new one is the known one; the other is a duplicate.
            op(limit, "delete a duplicate", c.client.delete(&old, None)).await?;
        }
    }
    c.held = held;
    Ok(())
}

/// `d` ± 20 %, so that many proxies do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::getrandom(&mut b)
        .map(|_| u16::from_le_bytes(b))
        .unwrap_or(0);
    let f = 0.8 + 0.4 * (f64::from(r) / f64::from(u16::MAX));
    d.mul_f64(f)
}

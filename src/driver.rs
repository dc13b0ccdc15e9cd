//! The pair driver: the only code that feeds the pure `pair::Machine` with
//! real packets and real time, and carries out its actions (UDP, netlink,
//! gratuitous ARP, witness pings, notify script).
//!
//! It runs on its own thread with a current-thread runtime, so proxy load on
//! the main runtime can never delay an advert.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::events::EventLog;
use crate::net;
use crate::pair::machine::{Action, Command, Machine, Settings};
use crate::pair::{Heartbeat, Role};
use crate::wire::{self, KeyRing, ReplayGuard};

/// Requests from the rest of the daemon to the pair thread.
#[derive(Debug)]
pub enum Request {
    Command(Command),
    /// A validated new config (and its key ring): apply what changed.
    Reload(Box<Config>, KeyRing),
    /// Shutdown: hand over, then answer when done.
    Shutdown(oneshot::Sender<()>),
}

/// What the pair thread publishes for `status`, the admin page and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairStatus {
    pub name: String,
    pub role: String,
    pub priority: u8,
    pub configured_priority: u8,
    pub weight: i32,
    pub interface: String,
    pub vips: Vec<String>,
    pub vips_held: bool,
    pub peer: Option<PeerStatus>,
    pub sent: u64,
    pub received: u64,
    pub dropped: BTreeMap<String, u64>,
    pub late_adverts: u64,
    pub max_late_ms: u64,
    pub failovers: u64,
    pub role_since_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub addr: String,
    pub role: String,
    pub priority: u8,
    pub last_heard_ms_ago: u64,
    pub alive: bool,
}

/// Handle held by the daemon.
#[derive(Clone)]
pub struct PairHandle {
    pub tx: mpsc::UnboundedSender<Request>,
    pub status: Arc<Mutex<PairStatus>>,
}

/// What the pair exchanges with the supervisor and the balancer.
pub struct Links {
    /// Open while this node may run `run = "master"` services: master, not
    /// preparing a handover, and the peer runs no copy.
    pub gate: watch::Sender<bool>,
    /// Sum of the weights of failing services.
    pub service_weight: watch::Receiver<i32>,
    /// Some `run = "master"` service is alive here (advertised to the peer).
    pub master_running: watch::Receiver<bool>,
    /// For "every pool has no healthy server".
    pub balancer: Option<crate::balancer::Balancer>,
    /// Senders kept alive when nothing feeds the receivers above, so that
    /// `changed()` waits instead of failing in a loop.
    pub idle: Option<(watch::Sender<i32>, watch::Sender<bool>)>,
}

impl Links {
    /// No services and no balancer (tests, the bare pair).
    pub fn none() -> Links {
        let (wt, wr) = watch::channel(0);
        let (mt, mr) = watch::channel(false);
        Links {
            gate: watch::channel(false).0,
            service_weight: wr,
            master_running: mr,
            balancer: None,
            idle: Some((wt, mt)),
        }
    }
}

/// How long a master's pools must all be down before it gives way.
const POOLS_DOWN_GRACE: Duration = Duration::from_secs(2);
/// The weight that makes a node with no healthy backend lose to any healthy peer.
const POOLS_DOWN_WEIGHT: i32 = -254;
/// Longest wait for the master-only services to stop before a handover.
const SERVICE_STOP_WAIT: Duration = Duration::from_secs(30);

/// Start the pair thread. Returns once the socket is bound and stale VIPs are
/// removed, or with the error that prevented it.
pub fn spawn(
    cfg: &Config,
    keys: KeyRing,
    events: EventLog,
    role_tx: tokio::sync::watch::Sender<Role>,
    links: Links,
) -> anyhow::Result<(PairHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(PairStatus::default()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cfg = cfg.clone();
    let st = status.clone();
    let join = std::thread::Builder::new()
        .name("hapair-pair".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("pair runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                match Driver::start(cfg, keys, events, st, role_tx, links).await {
                    Ok(d) => {
                        let _ = ready_tx.send(Ok(()));
                        d.run(rx).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((PairHandle { tx, status }, join)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!("pair thread died during start-up")),
    }
}

struct Driver {
    cfg: Config,
    keys: KeyRing,
    machine: Machine,
    origin: Instant,
    sock: tokio::net::UdpSocket,
    vips: net::vip::Vips,
    ifindex: u32,
    /// Shared with the burst tasks, which space frames 10 ms apart off the pair loop.
    announcer: Option<Arc<Mutex<net::announce::Announcer>>>,
    link: tokio::sync::watch::Receiver<bool>,
    guard: ReplayGuard,
    epoch: u64,
    seq: u64,
    addr: IpAddr,
    held: bool,
    /// Mirrors `held` for the GARP burst tasks: a burst stops as soon as the
    /// VIPs are released, so a late frame never points clients back at us.
    held_flag: Arc<std::sync::atomic::AtomicBool>,
    events: EventLog,
    status: Arc<Mutex<PairStatus>>,
    role_tx: tokio::sync::watch::Sender<Role>,
    witness_tx: mpsc::UnboundedSender<bool>,
    witness_rx: mpsc::UnboundedReceiver<bool>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    counters: PairStatus,
    links: Links,
    /// The peer's last `FLAG_*` bits.
    peer_flags: u8,
    /// A step-down or shutdown waiting for the master-only services to stop
    /// (so there are never two catalogds), with its give-up time.
    pending: Option<(Command, Instant)>,
    /// Since when every pool has had no healthy server.
    pools_down_since: Option<Instant>,
    /// Shutdown has started: master-only services stay stopped.
    stopping: bool,
}

/// Settings for the pure machine from the config.
pub fn settings(cfg: &Config, addr: IpAddr) -> Settings {
    let p = &cfg.pair;
    Settings {
        name: cfg.node.name.clone(),
        addr,
        priority: cfg.node.priority,
        advert_interval: p.advert_interval,
        dead_after: p.dead_after,
        preempt: p.preempt,
        preempt_delay: p.preempt_delay,
        witness: !p.witness.is_empty(),
        vip_digest: wire::vip_digest(&p.vips),
        garp_repeat_after: p.garp_repeat_after,
        garp_refresh: p.garp_refresh,
    }
}

/// Our own address on the heartbeat interface, in the peer's family, that is
/// not a VIP: the election tie-break and the heartbeat source.
fn own_addr(cfg: &Config) -> anyhow::Result<IpAddr> {
    let want_v4 = cfg.pair.peers.first().map(|p| p.is_ipv4()).unwrap_or(true);
    crate::config::local_addrs()
        .into_iter()
        .filter(|(n, a)| {
            *n == cfg.pair.interface
                && a.is_ipv4() == want_v4
                && !cfg.pair.vips.iter().any(|v| v.addr() == *a)
                && !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
        })
        .map(|(_, a)| a)
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "interface {} has no {} address of its own to send heartbeats from",
                cfg.pair.interface,
                if want_v4 { "IPv4" } else { "IPv6" }
            )
        })
}

impl Driver {
    async fn start(
        cfg: Config,
        keys: KeyRing,
        events: EventLog,
        status: Arc<Mutex<PairStatus>>,
        role_tx: tokio::sync::watch::Sender<Role>,
        links: Links,
    ) -> anyhow::Result<Driver> {
        let addr = own_addr(&cfg)?;
        let vips = net::vip::Vips::new()?;
        let ifindex = vips.link_index(&cfg.pair.interface).await?;
        // A crashed earlier run may have left our VIPs behind.
        let stale = vips.remove_stale(ifindex, &cfg.pair.vips).await?;
        for v in &stale {
            warn!(vip = %v, "removed stale VIP left by an earlier run");
            events.push(
                "vip",
                format!("removed stale VIP {v} left by an earlier run"),
            );
        }
        let sock = net::udp::bind_heartbeat(
            &cfg.pair.interface,
            cfg.pair.port,
            net::udp::Family::of(&addr),
        )?;
        let announcer = match net::announce::Announcer::open(&cfg.pair.interface) {
            Ok(a) => Some(Arc::new(Mutex::new(a))),
            Err(e) => {
                warn!(error = %e, "cannot open a packet socket: VIPs will not be announced");
                None
            }
        };
        let link = net::link::link_watch(&cfg.pair.interface).await?;
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let origin = Instant::now();
        let machine = Machine::new(settings(&cfg, addr), Duration::ZERO);
        let (witness_tx, witness_rx) = mpsc::unbounded_channel();
        info!(
            node = %cfg.node.name, %addr, interface = %cfg.pair.interface,
            port = cfg.pair.port, priority = cfg.node.priority,
            "pair started: asking the peer for its state"
        );
        Ok(Driver {
            keys,
            machine,
            origin,
            sock,
            vips,
            ifindex,
            announcer,
            link,
            guard: ReplayGuard::default(),
            epoch,
            seq: 0,
            addr,
            held: false,
            held_flag: Arc::default(),
            events,
            status,
            role_tx,
            witness_tx,
            witness_rx,
            shutdown_waiters: vec![],
            counters: PairStatus::default(),
            links,
            peer_flags: 0,
            pending: None,
            pools_down_since: None,
            stopping: false,
            cfg,
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut buf = vec![0u8; 2048];
        // The link may already be down at start.
        if !*self.link.borrow() {
            let now = self.now();
            self.machine.handle_command(now, Command::LinkDown);
        }
        self.execute().await;
        loop {
            let deadline = self.machine.poll_timeout().map(|t| self.origin + t);
            tokio::select! {
                // Timers first: a packet flood must not delay an advert.
                biased;
                _ = sleep_until_opt(deadline) => {
                    let now = self.now();
                    if let Some(d) = deadline {
                        self.note_lateness(Instant::now().saturating_duration_since(d));
                    }
                    self.machine.handle_timeout(now);
                }
                changed = self.link.changed() => {
                    if changed.is_err() { error!("link watch ended"); }
                    let up = *self.link.borrow_and_update();
                    let now = self.now();
                    info!(up, interface = %self.cfg.pair.interface, "link state changed");
                    self.events.push("link", format!("{} {}", self.cfg.pair.interface, if up { "up" } else { "down" }));
                    self.machine.handle_command(now, if up { Command::LinkUp } else { Command::LinkDown });
                }
                _ = self.links.master_running.changed() => {}
                _ = self.links.service_weight.changed() => {}
                Some(ok) = self.witness_rx.recv() => {
                    let now = self.now();
                    self.machine.handle_command(now, Command::WitnessResult(ok));
                }
                req = rx.recv() => match req {
                    None => return,
                    Some(r) => self.request(r).await,
                },
                r = self.sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.packet(&buf[..n], from),
                    Err(e) => debug!(error = %e, "heartbeat recv"),
                },
            }
            self.follow_links();
            let done = self.execute().await;
            self.follow_links();
            self.publish();
            if done {
                for w in self.shutdown_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }
    }

    /// A step-down or shutdown that would hand the VIPs to a live peer first
    /// stops the master-only services here, so the peer's copy starts only
    /// after ours is gone (never two catalogds).
    fn prepare_handover(&mut self, now: Duration, cmd: Command) {
        let stop_first = self.machine.role() == Role::Master
            && self.machine.peer_alive(now)
            && *self.links.master_running.borrow();
        if stop_first {
            info!("stopping master-only services before handing over");
            self.pending = Some((cmd, Instant::now() + SERVICE_STOP_WAIT));
        } else {
            self.machine.handle_command(now, cmd);
        }
    }

    /// Sync the gate, the pending handover and the weight with the machine.
    fn follow_links(&mut self) {
        let now = self.now();
        if let Some((cmd, give_up)) = self.pending {
            if !*self.links.master_running.borrow() || Instant::now() >= give_up {
                self.pending = None;
                self.machine.handle_command(now, cmd);
            }
        }
        let peer_runs = self.machine.peer_alive(now)
            && self.peer_flags & crate::pair::types::FLAG_SERVICES_ACTIVE != 0;
        // Closed while a handover is being prepared or is under way, and for
        // good once shutdown starts: the peer starts its copy after ours stops.
        let open = self.machine.role() == Role::Master
            && self.pending.is_none()
            && !self.machine.handover_pending()
            && !self.stopping
            && !peer_runs;
        self.links
            .gate
            .send_if_modified(|g| std::mem::replace(g, open) != open);

        self.update_weight(false);
    }

    /// Feed the machine the sum of failing-service weights and the pools
    /// penalty. `peer_heard`: a heartbeat from the peer is being handled.
    fn update_weight(&mut self, peer_heard: bool) {
        let now = self.now();
        let services = *self.links.service_weight.borrow();
        let weight = services + self.pools_weight(now, peer_heard);
        if weight != self.machine.weight() {
            info!(weight, "effective priority weight changed");
            self.machine.handle_command(now, Command::SetWeight(weight));
        }
    }

    /// Every pool here has no healthy server (or none checked yet, right
    /// after a start), while the live peer's pools are fine: give way.
    /// A backup gives way at once, so a restarted or reconnected node does not
    /// preempt before its backends pass their checks. A master gives way after
    /// `POOLS_DOWN_GRACE`, so two nodes whose first checks finish a few ms
    /// apart do not trade the VIP at start-up.
    fn pools_weight(&mut self, now: Duration, peer_heard: bool) -> i32 {
        let down = self
            .links
            .balancer
            .as_ref()
            .is_some_and(|b| b.all_pools_down());
        match (down, self.pools_down_since) {
            (false, _) => self.pools_down_since = None,
            (true, None) => self.pools_down_since = Some(Instant::now()),
            _ => {}
        }
        let peer_ok = (peer_heard || self.machine.peer_alive(now))
            && self.peer_flags & crate::pair::types::FLAG_POOLS_DOWN == 0;
        let long = self
            .pools_down_since
            .is_some_and(|t| t.elapsed() >= POOLS_DOWN_GRACE);
        let master = self.machine.role() == Role::Master;
        if down && peer_ok && (!master || long) {
            POOLS_DOWN_WEIGHT
        } else {
            0
        }
    }

    fn own_flags(&self) -> u8 {
        let mut f = 0;
        if *self.links.master_running.borrow() {
            f |= crate::pair::types::FLAG_SERVICES_ACTIVE;
        }
        if self
            .links
            .balancer
            .as_ref()
            .is_some_and(|b| b.all_pools_down())
        {
            f |= crate::pair::types::FLAG_POOLS_DOWN;
        }
        f
    }

    fn note_lateness(&mut self, late: Duration) {
        // A timer that fires well after its deadline means this thread was
        // starved: say so, because it explains a false failover.
        let ms = late.as_millis() as u64;
        if late > self.cfg.pair.advert_interval / 4 && ms >= 5 {
            self.counters.late_adverts += 1;
            self.counters.max_late_ms = self.counters.max_late_ms.max(ms);
            warn!(late_ms = ms, "heartbeat timer late by {ms} ms");
        }
    }

    fn packet(&mut self, buf: &[u8], from: SocketAddr) {
        let hb = match wire::decode(buf, &self.keys, self.cfg.pair.router_id) {
            Ok(hb) => hb,
            Err(reason) => return self.dropped(reason.label(), from),
        };
        if hb.addr == self.addr {
            return; // our own, looped
        }
        // The replay guard goes first: a captured packet re-sent from anywhere
        // is a replay, whatever its source address.
        if let Err(reason) = self.guard.check(&hb) {
            return self.dropped(reason.label(), from);
        }
        if !self.cfg.pair.peers.contains(&from.ip()) {
            return self.dropped("unknown_source", from);
        }
        self.counters.received += 1;
        self.peer_flags = hb.flags;
        // Apply what this packet says about the peer's pools before the
        // machine decides on it (a reconnecting node must not preempt with
        // no healthy backend).
        self.update_weight(true);
        let now = self.now();
        self.machine.handle_heartbeat(now, &hb);
    }

    fn dropped(&mut self, label: &str, from: SocketAddr) {
        *self.counters.dropped.entry(label.to_string()).or_default() += 1;
        // Duplicates over redundant links are normal: not worth a warning.
        if label != "duplicate" {
            let n = self.counters.dropped[label];
            if n.is_power_of_two() {
                warn!(%from, reason = label, count = n, "dropped heartbeat");
            }
        }
    }

    async fn request(&mut self, r: Request) {
        let now = self.now();
        match r {
            Request::Command(Command::StepDown) => self.prepare_handover(now, Command::StepDown),
            Request::Command(c) => self.machine.handle_command(now, c),
            Request::Shutdown(done) => {
                self.stopping = true;
                self.shutdown_waiters.push(done);
                self.prepare_handover(now, Command::Shutdown);
            }
            Request::Reload(cfg, keys) => self.reload(*cfg, keys).await,
        }
    }

    async fn reload(&mut self, cfg: Config, keys: KeyRing) {
        let old = &self.cfg.pair;
        let new = &cfg.pair;
        if old.interface != new.interface || old.port != new.port || old.router_id != new.router_id
        {
            warn!("reload: interface, port and router_id changes need a restart; keeping the old ones for those");
        }
        let mut cfg = cfg;
        cfg.pair.interface = old.interface.clone();
        cfg.pair.port = old.port;
        cfg.pair.router_id = old.router_id;
        // VIP set changes apply at once while we hold them.
        if self.held {
            for v in old.vips.iter().filter(|v| !cfg.pair.vips.contains(v)) {
                let _ = self.vips.del(self.ifindex, *v).await;
            }
            for v in cfg.pair.vips.iter().filter(|v| !old.vips.contains(v)) {
                if let Err(e) = self.vips.add(self.ifindex, *v).await {
                    error!(vip = %v, error = %e, "reload: cannot add VIP");
                }
            }
        }
        self.keys = keys;
        let now = self.now();
        self.machine.reconfigure(now, settings(&cfg, self.addr));
        let vips_changed = self.cfg.pair.vips != cfg.pair.vips;
        self.cfg = cfg;
        if self.held && vips_changed {
            self.announce();
        }
    }

    /// Carry out every queued action, in order. Returns true once shutdown may complete.
    async fn execute(&mut self) -> bool {
        let mut done = false;
        while let Some(a) = self.machine.poll_action() {
            match a {
                Action::Send {
                    kind,
                    role,
                    priority,
                } => self.send(kind, role, priority).await,
                Action::ClaimVips => self.claim().await,
                Action::ReleaseVips => self.release().await,
                Action::Announce => self.announce(),
                Action::RoleChanged { from, to, reason } => self.role_changed(from, to, reason),
                Action::ProbeWitness => self.probe_witness(),
                Action::Warn(w) => {
                    warn!("{w}");
                    self.events.push("warn", w);
                }
                Action::Done => done = true,
            }
        }
        done
    }

    async fn send(&mut self, kind: crate::pair::Kind, role: Role, priority: u8) {
        self.seq += 1;
        let hb = Heartbeat {
            kind,
            router_id: self.cfg.pair.router_id,
            priority,
            role,
            advert_interval_ms: self.cfg.pair.advert_interval.as_millis() as u32,
            addr: self.addr,
            epoch: self.epoch,
            seq: self.seq,
            vip_digest: wire::vip_digest(&self.cfg.pair.vips),
            name: self.cfg.node.name.clone(),
            flags: self.own_flags(),
        };
        let pkt = wire::encode(&hb, &self.keys);
        for peer in &self.cfg.pair.peers {
            match self
                .sock
                .send_to(&pkt, SocketAddr::new(*peer, self.cfg.pair.port))
                .await
            {
                Ok(_) => self.counters.sent += 1,
                Err(e) => debug!(%peer, error = %e, "heartbeat send failed"),
            }
        }
    }

    async fn claim(&mut self) {
        for v in self.cfg.pair.vips.clone() {
            if let Err(e) = self.vips.add(self.ifindex, v).await {
                error!(vip = %v, error = %e, "cannot add VIP");
                self.events.push("warn", format!("cannot add VIP {v}: {e}"));
            }
        }
        self.held = true;
        self.held_flag
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.events
            .push("vip", format!("claimed {}", vip_list(&self.cfg.pair.vips)));
    }

    async fn release(&mut self) {
        self.held_flag
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for v in self.cfg.pair.vips.clone() {
            if let Err(e) = self.vips.del(self.ifindex, v).await {
                error!(vip = %v, error = %e, "cannot remove VIP");
            }
        }
        self.held = false;
        self.events
            .push("vip", format!("released {}", vip_list(&self.cfg.pair.vips)));
    }

    /// One burst of `garp_count` announcements, 10 ms apart, off the pair loop.
    fn announce(&mut self) {
        let Some(a) = self.announcer.clone() else {
            return;
        };
        let ips: Vec<IpAddr> = self.cfg.pair.vips.iter().map(|v| v.addr()).collect();
        let count = self.cfg.pair.garp_count;
        let held = self.held_flag.clone();
        // The first frame goes out now, before any action queued after this
        // one (a handover ack): the new master announces, then acknowledges.
        if let Ok(mut an) = a.lock() {
            if let Err(e) = an.send(&ips) {
                warn!(error = %e, "gratuitous ARP send failed");
            }
        }
        tokio::spawn(async move {
            for _ in 1..count {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if !held.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let sent = a
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))
                    .and_then(|mut a| a.send(&ips));
                if let Err(e) = sent {
                    warn!(error = %e, "gratuitous ARP send failed");
                }
            }
        });
    }

    fn role_changed(&mut self, from: Role, to: Role, reason: crate::pair::machine::Reason) {
        info!(%from, %to, %reason, "role {from} => {to}");
        self.events
            .push("role", format!("{from} => {to}: {reason}"));
        if to == Role::Master && from != Role::Init {
            self.counters.failovers += 1;
        }
        self.counters.role_since_ms = crate::events::unix_ms();
        let _ = self.role_tx.send(to);
        if let Some(script) = self.cfg.pair.notify.clone() {
            run_notify(script, to, self.cfg.node.name.clone());
        }
    }

    fn probe_witness(&self) {
        let targets = self.cfg.pair.witness.clone();
        let tx = self.witness_tx.clone();
        let timeout = (self.cfg.pair.advert_interval * 2).max(Duration::from_millis(200));
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for t in targets {
                set.spawn(net::witness::ping(t, timeout));
            }
            let mut ok = false;
            while let Some(r) = set.join_next().await {
                if matches!(r, Ok(true)) {
                    ok = true;
                    break;
                }
            }
            info!(ok, "witness probe");
            let _ = tx.send(ok);
        });
    }

    fn publish(&mut self) {
        let now = self.now();
        let m = &self.machine;
        let mut s = self.counters.clone();
        s.name = self.cfg.node.name.clone();
        s.role = m.role().to_string();
        s.priority = m.priority();
        s.configured_priority = self.cfg.node.priority;
        s.weight = m.weight();
        s.interface = self.cfg.pair.interface.clone();
        s.vips = self.cfg.pair.vips.iter().map(|v| v.to_string()).collect();
        s.vips_held = self.held;
        s.peer = m.peer().map(|p| PeerStatus {
            name: p.name.clone(),
            addr: p.addr.to_string(),
            role: p.role.to_string(),
            priority: p.priority,
            last_heard_ms_ago: now.saturating_sub(p.last_heard).as_millis() as u64,
            alive: m.peer_alive(now),
        });
        if let Ok(mut st) = self.status.lock() {
            *st = s;
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn vip_list(v: &[IpNet]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run `notify <role> <node>` with a timeout, never blocking the pair loop.
fn run_notify(script: PathBuf, role: Role, node: String) {
    tokio::spawn(async move {
        let child = tokio::process::Command::new(&script)
            .arg(role.as_str())
            .arg(&node)
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                return warn!(script = %script.display(), error = %e, "notify script failed to start")
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(st)) if st.success() => debug!(script = %script.display(), "notify ok"),
            Ok(Ok(st)) => warn!(script = %script.display(), status = %st, "notify script failed"),
            Ok(Err(e)) => warn!(error = %e, "notify wait"),
            Err(_) => {
                warn!(script = %script.display(), "notify script timed out after 10 s: killed");
                let _ = child.kill().await;
            }
        }
    });
}

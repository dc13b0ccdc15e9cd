//! The pair state machine. Pure: it is fed heartbeats, commands and the
//! current time, and returns actions. It never touches a socket or a clock,
//! so every transition is tested with simulated time (see `sim` tests).
//!
//! Roles: Init → (Backup | Master), Backup ⇄ Master, any → Fault on link down.
//! Every role change goes through `set_role`, which emits `RoleChanged`.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::types::{Heartbeat, Kind, Role, Time};

/// What the machine needs to know about this node. Built from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub addr: IpAddr,
    pub priority: u8,
    pub advert_interval: Duration,
    pub dead_after: u32,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// A witness is configured: claim alone only after one answers.
    pub witness: bool,
    pub vip_digest: [u8; 8],
    /// Second GARP burst after claiming; zero = off.
    pub garp_repeat_after: Duration,
    /// Periodic re-announce while master; zero = off.
    pub garp_refresh: Duration,
}

/// Why a role changed. Shown in logs, the event log and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The peer answered our start-up query and we rank below it.
    PeerAnswered,
    /// Nothing heard during start-up for `dead_after` adverts.
    NoPeerAtStartup,
    /// `dead_after` adverts missed from the master.
    PeerDead,
    /// We outrank the master and preempt is on.
    Preempt,
    /// The peer is not master and we outrank it.
    NoMaster,
    /// The peer asked us to take over (step-down or shutdown).
    HandoverRequested,
    /// The peer took over; we released the VIPs.
    HandedOver,
    /// Two masters heard each other; the lower one yields.
    DualMaster,
    /// Our effective priority fell below the live peer's.
    PriorityDropped,
    /// Alone and no witness answers: do not hold the VIPs.
    WitnessLost,
    LinkDown,
    LinkUp,
    /// Shutting down with no live peer.
    Shutdown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::PeerAnswered => "peer answered start-up query",
            Reason::NoPeerAtStartup => "no peer heard at start-up",
            Reason::PeerDead => "peer adverts missed",
            Reason::Preempt => "preempting lower-priority master",
            Reason::NoMaster => "peer is not master and ranks lower",
            Reason::HandoverRequested => "peer asked us to take over",
            Reason::HandedOver => "peer took over",
            Reason::DualMaster => "two masters: peer outranks us",
            Reason::PriorityDropped => "effective priority fell below peer",
            Reason::WitnessLost => "alone and no witness answers",
            Reason::LinkDown => "interface down",
            Reason::LinkUp => "interface up",
            Reason::Shutdown => "shutting down",
        })
    }
}

/// Inputs other than heartbeats and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Operator step-down: hand the VIPs to the peer, make-before-break.
    StepDown,
    /// SIGTERM: hand over if the peer is alive, then `Action::Done`.
    Shutdown,
    LinkDown,
    LinkUp,
    /// Sum of the weights of the failing checks (usually ≤ 0).
    SetWeight(i32),
    /// Answer to `Action::ProbeWitness`.
    WitnessResult(bool),
}

/// What the driver must do. Executed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a heartbeat of this kind carrying this role and priority.
    Send {
        kind: Kind,
        role: Role,
        priority: u8,
    },
    /// Add the VIPs to the interface.
    ClaimVips,
    /// Remove the VIPs from the interface.
    ReleaseVips,
    /// One burst of gratuitous ARP / unsolicited NA for every VIP.
    Announce,
    RoleChanged {
        from: Role,
        to: Role,
        reason: Reason,
    },
    /// Ping the witnesses and answer with `Command::WitnessResult`.
    ProbeWitness,
    /// Something the operator should read in the log.
    Warn(String),
    /// Shutdown may complete now (handover acknowledged, timed out, or not needed).
    Done,
}

/// What we last heard from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub name: String,
    pub addr: IpAddr,
    pub priority: u8,
    pub role: Role,
    pub advert_interval: Duration,
    pub last_heard: Time,
    pub vip_digest: [u8; 8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandoverWhy {
    StepDown,
    Shutdown,
    PriorityDropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handover {
    why: HandoverWhy,
    /// Re-send the request at this time (the request may be lost).
    resend_at: Time,
    /// Give up at this time.
    deadline: Time,
}

/// Per-state data: each state carries only the deadlines valid in it, and the
/// next wake-up is derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Init {
        /// Re-send the query.
        next_query: Time,
        /// Nobody answered: claim alone.
        give_up_at: Time,
    },
    Backup(BackupState),
    Master(MasterState),
    Fault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BackupState {
    next_advert: Time,
    /// The master counts as dead after this time.
    master_down_at: Time,
    /// Preempt the lower-priority master at this time.
    preempt_at: Option<Time>,
    /// Waiting for the witness before claiming alone; re-probe at this time.
    witness_retry_at: Option<Time>,
    /// Still holding the VIPs after a handover or a yield, so that SYNs a
    /// client sent before it saw the new master's announcement still land.
    release_at: Option<Time>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MasterState {
    next_advert: Time,
    garp_repeat_at: Option<Time>,
    garp_refresh_at: Option<Time>,
    handover: Option<Handover>,
    /// Alone with a witness configured: re-check it at this time.
    witness_check_at: Option<Time>,
}

/// The pair state machine (quinn-style: handle_* in, poll_* out).
#[derive(Debug)]
pub struct Machine {
    cfg: Settings,
    state: State,
    weight: i32,
    peer: Option<PeerView>,
    /// Set by an operator step-down: do not preempt back until restart or
    /// until the peer fails.
    stepped_down: bool,
    /// A shutdown was asked for: no more claims, `Done` once handed over.
    shutting_down: bool,
    /// A witness probe is in flight.
    probing: bool,
    actions: VecDeque<Action>,
    warned_digest: Option<[u8; 8]>,
}

impl Machine {
    /// A machine that starts by asking the peer for its state.
    pub fn new(cfg: Settings, now: Time) -> Machine {
        let mut m = Machine {
            state: State::Fault,
            weight: 0,
            peer: None,
            stepped_down: false,
            shutting_down: false,
            probing: false,
            actions: VecDeque::new(),
            warned_digest: None,
            cfg,
        };
        m.enter_init(now, None);
        m
    }

    pub fn role(&self) -> Role {
        match self.state {
            State::Init { .. } => Role::Init,
            State::Backup(_) => Role::Backup,
            State::Master(_) => Role::Master,
            State::Fault => Role::Fault,
        }
    }

    /// Configured priority plus the weights of failing checks, kept in 1..=254
    /// (0 is reserved for "leaving").
    pub fn priority(&self) -> u8 {
        (i32::from(self.cfg.priority) + self.weight).clamp(1, 254) as u8
    }

    pub fn weight(&self) -> i32 {
        self.weight
    }

    pub fn peer(&self) -> Option<&PeerView> {
        self.peer.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.cfg
    }

    /// Is the peer alive (heard within its dead interval)?
    pub fn peer_alive(&self, now: Time) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|p| now < p.last_heard + self.dead_interval_of(p))
    }

    /// Does this node hold the VIPs (master, or lingering after a handover)?
    pub fn holds_vips(&self) -> bool {
        match &self.state {
            State::Master(_) => true,
            State::Backup(b) => b.release_at.is_some(),
            _ => false,
        }
    }

    pub fn handover_pending(&self) -> bool {
        matches!(&self.state, State::Master(m) if m.handover.is_some())
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next time `handle_timeout` must be called, derived from the state.
    pub fn poll_timeout(&self) -> Option<Time> {
        let times: Vec<Option<Time>> = match &self.state {
            State::Init {
                next_query,
                give_up_at,
            } => vec![Some(*next_query), Some(*give_up_at)],
            State::Backup(b) => vec![
                Some(b.next_advert),
                Some(b.master_down_at),
                b.preempt_at,
                b.witness_retry_at,
                b.release_at,
            ],
            State::Master(m) => vec![
                Some(m.next_advert),
                m.garp_repeat_at,
                m.garp_refresh_at,
                m.handover.map(|h| h.resend_at.min(h.deadline)),
                m.witness_check_at,
            ],
            State::Fault => vec![],
        };
        times.into_iter().flatten().min()
    }

    // ---- inputs -------------------------------------------------------------

    /// A heartbeat that passed authentication and the replay guard.
    pub fn handle_heartbeat(&mut self, now: Time, hb: &Heartbeat) {
        if hb.addr == self.cfg.addr || matches!(self.state, State::Fault) {
            return; // our own packet looped back, or we are cut off
        }
        self.note_peer(now, hb);
        match hb.kind {
            Kind::Query => {
                self.send(Kind::Reply);
                self.on_peer_state(now, hb);
            }
            Kind::Advert | Kind::Reply => self.on_peer_state(now, hb),
            Kind::Handover => self.on_handover_request(now),
            Kind::HandoverAck => {
                if self.handover_pending() {
                    self.finish_handover(now);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        match self.state.clone() {
            State::Init {
                next_query,
                give_up_at,
            } => {
                if now >= give_up_at {
                    self.claim_alone(now, Reason::NoPeerAtStartup);
                } else if now >= next_query {
                    self.send(Kind::Query);
                    let iv = self.cfg.advert_interval;
                    if let State::Init { next_query, .. } = &mut self.state {
                        *next_query = now + iv;
                    }
                }
            }
            State::Backup(b) => self.backup_timeout(now, b),
            State::Master(m) => self.master_timeout(now, m),
            State::Fault => {}
        }
    }

    fn backup_timeout(&mut self, now: Time, b: BackupState) {
        let iv = self.cfg.advert_interval;
        if b.release_at.is_some_and(|t| now >= t) {
            self.backup_mut(|s| s.release_at = None);
            self.push(Action::ReleaseVips);
            if self.shutting_down {
                self.push(Action::Done);
            }
        }
        if now >= b.next_advert {
            self.send(Kind::Advert);
            self.backup_mut(|s| s.next_advert = now + iv);
        }
        if b.preempt_at.is_some_and(|t| now >= t) {
            self.backup_mut(|s| s.preempt_at = None);
            if self.should_preempt(now) {
                self.become_master(now, Reason::Preempt);
                return;
            }
        }
        let witness_due = b.witness_retry_at.is_some_and(|t| now >= t);
        if witness_due {
            self.backup_mut(|s| s.witness_retry_at = None);
        }
        if (now >= b.master_down_at || witness_due) && !self.peer_alive(now) {
            // Push the dead deadline out so it does not re-fire every tick.
            let later = now + self.dead_interval();
            self.backup_mut(|s| s.master_down_at = later);
            self.claim_alone(now, Reason::PeerDead);
        }
    }

    fn master_timeout(&mut self, now: Time, m: MasterState) {
        let iv = self.cfg.advert_interval;
        if now >= m.next_advert {
            self.send(Kind::Advert);
            self.master_mut(|s| s.next_advert = now + iv);
        }
        if m.garp_repeat_at.is_some_and(|t| now >= t) {
            self.push(Action::Announce);
            self.master_mut(|s| s.garp_repeat_at = None);
        }
        if m.garp_refresh_at.is_some_and(|t| now >= t) {
            self.push(Action::Announce);
            let every = self.cfg.garp_refresh;
            self.master_mut(|s| s.garp_refresh_at = Some(now + every));
        }
        if let Some(h) = m.handover {
            if now >= h.deadline {
                self.handover_timed_out(h);
                return;
            }
            if now >= h.resend_at {
                self.send(Kind::Handover);
                self.master_mut(|s| {
                    if let Some(h) = &mut s.handover {
                        h.resend_at = now + iv;
                    }
                });
            }
        }
        if m.witness_check_at.is_some_and(|t| now >= t) {
            self.master_mut(|s| s.witness_check_at = None);
            if !self.peer_alive(now) && !self.probing {
                self.probing = true;
                self.push(Action::ProbeWitness);
            }
        }
        self.arm_master_witness_check(now);
    }

    pub fn handle_command(&mut self, now: Time, cmd: Command) {
        match cmd {
            Command::StepDown => self.start_handover(now, HandoverWhy::StepDown),
            Command::Shutdown => {
                self.shutting_down = true;
                if self.role() == Role::Master && self.peer_alive(now) {
                    self.start_handover(now, HandoverWhy::Shutdown);
                } else if self.holds_vips() && self.role() == Role::Backup {
                    // Lingering after a handover: `Done` comes with the release.
                } else {
                    if self.role() == Role::Master {
                        self.push(Action::ReleaseVips);
                        self.set_role(State::Fault, Reason::Shutdown);
                    }
                    self.push(Action::Done);
                }
            }
            Command::LinkDown => {
                if matches!(self.state, State::Fault) {
                    return;
                }
                if self.holds_vips() {
                    self.push(Action::ReleaseVips);
                }
                self.probing = false;
                self.set_role(State::Fault, Reason::LinkDown);
            }
            Command::LinkUp => {
                if matches!(self.state, State::Fault) && !self.shutting_down {
                    self.peer = None;
                    self.enter_init(now, Some(Reason::LinkUp));
                }
            }
            Command::SetWeight(w) => {
                let before = self.priority();
                self.weight = w;
                self.priority_changed(now, before);
            }
            Command::WitnessResult(ok) => self.on_witness(now, ok),
        }
    }

    /// A reload: new settings take effect without a role change unless the
    /// election result changes (a reload never flaps the role by itself).
    pub fn reconfigure(&mut self, now: Time, cfg: Settings) {
        let before = self.priority();
        self.cfg = cfg;
        self.priority_changed(now, before);
    }

    fn priority_changed(&mut self, now: Time, before: u8) {
        if self.priority() == before {
            return;
        }
        // Tell the peer at once: its election depends on it.
        if matches!(self.state, State::Backup(_) | State::Master(_)) {
            self.send(Kind::Advert);
        }
        let peer_wins =
            self.peer_alive(now) && self.peer.as_ref().is_some_and(|p| !self.outranks(p));
        if self.role() == Role::Master && peer_wins {
            self.start_handover(now, HandoverWhy::PriorityDropped);
        } else if self.role() == Role::Backup && self.should_preempt(now) {
            self.arm_preempt(now);
        }
    }

    // ---- peer handling -----------------------------------------------------

    fn note_peer(&mut self, now: Time, hb: &Heartbeat) {
        if self.role() == Role::Master && !self.peer_alive(now) {
            // The peer is back (restart or healed partition): clients may
            // still point at it, so announce again.
            self.push(Action::Announce);
        }
        if hb.vip_digest != self.cfg.vip_digest && self.warned_digest != Some(hb.vip_digest) {
            self.warned_digest = Some(hb.vip_digest);
            self.push(Action::Warn(format!(
                "peer {} ({}) has a different VIP set (digest {} vs ours {}): check both configs",
                hb.name,
                hb.addr,
                hex8(&hb.vip_digest),
                hex8(&self.cfg.vip_digest)
            )));
        }
        self.peer = Some(PeerView {
            name: hb.name.clone(),
            addr: hb.addr,
            priority: hb.priority,
            role: hb.role,
            advert_interval: Duration::from_millis(u64::from(hb.advert_interval_ms.max(1))),
            last_heard: now,
            vip_digest: hb.vip_digest,
        });
    }

    fn on_peer_state(&mut self, now: Time, hb: &Heartbeat) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let we_win = self.outranks(&peer) && !self.shutting_down;
        match &self.state {
            State::Init { .. } => {
                if peer.role == Role::Master {
                    // Follow it; preempt (after the delay) from backup.
                    self.enter_backup(now, Reason::PeerAnswered);
                    if self.should_preempt(now) {
                        self.arm_preempt(now);
                    }
                } else if we_win {
                    self.become_master(now, Reason::NoMaster);
                } else {
                    self.enter_backup(now, Reason::PeerAnswered);
                }
            }
            State::Backup(_) => {
                let down_at = now + self.dead_interval_of(&peer);
                self.backup_mut(|s| s.master_down_at = down_at);
                match peer.role {
                    Role::Master if hb.priority == 0 => {
                        self.become_master(now, Reason::HandoverRequested)
                    }
                    Role::Master if self.should_preempt(now) => self.arm_preempt(now),
                    Role::Master => self.backup_mut(|s| s.preempt_at = None),
                    // No master: the higher of two backups claims at once.
                    _ if we_win => self.become_master(now, Reason::NoMaster),
                    _ => {}
                }
            }
            State::Master(m) => {
                if peer.role != Role::Master {
                    return;
                }
                if m.handover.is_some() {
                    // The peer is master already: as good as an ack.
                    self.finish_handover(now);
                } else if self.outranks(&peer) {
                    // We keep it; make sure clients point at us.
                    self.push(Action::Announce);
                    self.send(Kind::Advert);
                } else {
                    self.enter_backup(now, Reason::DualMaster);
                    self.linger(now);
                }
            }
            State::Fault => {}
        }
    }

    fn on_handover_request(&mut self, now: Time) {
        match &self.state {
            State::Init { .. } | State::Backup(_) if !self.shutting_down => {
                // become_master queues claim + announce before the ack, and
                // the driver runs actions in order: make-before-break.
                self.become_master(now, Reason::HandoverRequested);
                self.send(Kind::HandoverAck);
            }
            State::Master(m) if m.handover.is_none() => self.send(Kind::HandoverAck),
            _ => {}
        }
    }

    // ---- handover -----------------------------------------------------------

    fn start_handover(&mut self, now: Time, why: HandoverWhy) {
        if self.role() != Role::Master || self.handover_pending() {
            return;
        }
        if !self.peer_alive(now) {
            self.push(Action::Warn(
                "handover refused: no live peer to take the VIPs; keeping them".into(),
            ));
            return;
        }
        if why == HandoverWhy::StepDown {
            self.stepped_down = true;
        }
        let h = Handover {
            why,
            resend_at: now + self.cfg.advert_interval,
            deadline: now + self.dead_interval().max(Duration::from_secs(1)),
        };
        self.master_mut(|s| s.handover = Some(h));
        self.send(Kind::Handover);
    }

    fn finish_handover(&mut self, now: Time) {
        let State::Master(MasterState {
            handover: Some(h), ..
        }) = &self.state
        else {
            return;
        };
        let _ = h.why; // a shutdown completes (`Done`) when the linger ends
        self.enter_backup(now, Reason::HandedOver);
        self.linger(now);
    }

    /// Keep the VIPs a little after handing them over (see `release_at`).
    fn linger(&mut self, now: Time) {
        let at = now + self.linger_time();
        self.backup_mut(|s| s.release_at = Some(at));
    }

    /// Long enough for the new master's first announcement to reach clients.
    pub fn linger_time(&self) -> Duration {
        self.cfg.advert_interval.min(Duration::from_millis(100))
    }

    fn handover_timed_out(&mut self, h: Handover) {
        self.master_mut(|s| s.handover = None);
        if h.why == HandoverWhy::Shutdown {
            self.push(Action::Warn(
                "peer did not acknowledge the handover: releasing the VIPs anyway".into(),
            ));
            self.push(Action::ReleaseVips);
            self.set_role(State::Fault, Reason::Shutdown);
            self.push(Action::Done);
        } else {
            self.stepped_down = false;
            self.push(Action::Warn(
                "peer did not acknowledge the handover: keeping the VIPs".into(),
            ));
        }
    }

    // ---- claims -------------------------------------------------------------

    /// Claim with no live peer: only if a witness answers, when one is configured.
    fn claim_alone(&mut self, now: Time, reason: Reason) {
        if self.shutting_down {
            return;
        }
        if !self.cfg.witness {
            self.become_master(now, reason);
            return;
        }
        if !matches!(self.state, State::Backup(_)) {
            self.enter_backup(now, reason);
        }
        if !self.probing {
            self.probing = true;
            self.push(Action::ProbeWitness);
        }
    }

    fn on_witness(&mut self, now: Time, ok: bool) {
        self.probing = false;
        let alone = !self.peer_alive(now);
        let retry = now + self.cfg.advert_interval;
        match &self.state {
            State::Backup(_) if alone && ok && !self.shutting_down => {
                self.become_master(now, Reason::PeerDead)
            }
            State::Backup(_) if alone => self.backup_mut(|s| s.witness_retry_at = Some(retry)),
            State::Master(_) if alone && !ok => {
                self.push(Action::Warn(
                    "peer silent and no witness answers: releasing the VIPs".into(),
                ));
                self.push(Action::ReleaseVips);
                self.enter_backup(now, Reason::WitnessLost);
                self.backup_mut(|s| s.witness_retry_at = Some(retry));
            }
            _ => {}
        }
    }

    fn become_master(&mut self, now: Time, reason: Reason) {
        if self.role() == Role::Master {
            return;
        }
        self.stepped_down = false;
        self.push(Action::ClaimVips);
        self.push(Action::Announce);
        let st = State::Master(MasterState {
            next_advert: now + self.cfg.advert_interval,
            garp_repeat_at: nonzero(self.cfg.garp_repeat_after).map(|d| now + d),
            garp_refresh_at: nonzero(self.cfg.garp_refresh).map(|d| now + d),
            handover: None,
            witness_check_at: None,
        });
        self.set_role(st, reason);
        self.send(Kind::Advert);
        self.arm_master_witness_check(now);
    }

    fn enter_backup(&mut self, now: Time, reason: Reason) {
        let down = match &self.peer {
            Some(p) if self.peer_alive(now) => p.last_heard + self.dead_interval_of(p),
            _ => now + self.dead_interval(),
        };
        let st = State::Backup(BackupState {
            next_advert: now + self.cfg.advert_interval,
            master_down_at: down,
            preempt_at: None,
            witness_retry_at: None,
            release_at: None,
        });
        self.set_role(st, reason);
        self.send(Kind::Advert);
    }

    fn enter_init(&mut self, now: Time, reason: Option<Reason>) {
        let st = State::Init {
            next_query: now + self.cfg.advert_interval,
            give_up_at: now + self.dead_interval(),
        };
        match reason {
            Some(r) => self.set_role(st, r),
            None => self.state = st,
        }
        self.send(Kind::Query);
    }

    /// The one place where the role changes.
    fn set_role(&mut self, st: State, reason: Reason) {
        let from = self.role();
        self.state = st;
        let to = self.role();
        if from != to {
            self.push(Action::RoleChanged { from, to, reason });
        }
    }

    // ---- helpers ------------------------------------------------------------

    fn should_preempt(&self, now: Time) -> bool {
        self.cfg.preempt
            && !self.stepped_down
            && !self.shutting_down
            && self.peer_alive(now)
            && self
                .peer
                .as_ref()
                .is_some_and(|p| p.role == Role::Master && self.outranks(p))
    }

    fn arm_preempt(&mut self, now: Time) {
        let State::Backup(b) = &self.state else {
            return;
        };
        if b.preempt_at.is_some() {
            return;
        }
        if self.cfg.preempt_delay.is_zero() {
            self.become_master(now, Reason::Preempt);
        } else {
            let at = now + self.cfg.preempt_delay;
            self.backup_mut(|s| s.preempt_at = Some(at));
        }
    }

    /// While master with a witness and no live peer, re-check the witness
    /// once per dead interval.
    fn arm_master_witness_check(&mut self, now: Time) {
        if !self.cfg.witness || self.peer_alive(now) {
            return;
        }
        let dead = self.dead_interval();
        self.master_mut(|s| {
            s.witness_check_at.get_or_insert(now + dead);
        });
    }

    /// Higher effective priority wins; a tie goes to the higher address.
    fn outranks(&self, p: &PeerView) -> bool {
        (self.priority(), self.cfg.addr) > (p.priority, p.addr)
    }

    fn dead_interval(&self) -> Duration {
        self.cfg.advert_interval * self.cfg.dead_after
    }

    fn dead_interval_of(&self, p: &PeerView) -> Duration {
        p.advert_interval * self.cfg.dead_after
    }

    fn send(&mut self, kind: Kind) {
        // While handing over we advertise priority 0, VRRP's "I am leaving",
        // so the peer's dual-master rule lets the new master keep the VIPs.
        let priority = if self.handover_pending() {
            0
        } else {
            self.priority()
        };
        let role = self.role();
        self.push(Action::Send {
            kind,
            role,
            priority,
        });
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn backup_mut(&mut self, f: impl FnOnce(&mut BackupState)) {
        if let State::Backup(b) = &mut self.state {
            f(b);
        }
    }

    fn master_mut(&mut self, f: impl FnOnce(&mut MasterState)) {
        if let State::Master(m) = &mut self.state {
            f(m);
        }
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn hex8(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

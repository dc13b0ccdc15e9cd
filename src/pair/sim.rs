//! A simulated pair on a virtual clock (quinn-style): two machines exchange
//! heartbeats through in-memory queues with latency, loss and partitions.
//! Tests read as timelines: "at 1000 ms A goes silent, by 1300 ms B holds the VIP".

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::machine::{Action, Command, Machine, Reason, Settings};
use super::types::{Heartbeat, Role, Time};

pub const A: usize = 0;
pub const B: usize = 1;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn settings(name: &str, last_octet: u8, priority: u8) -> Settings {
    Settings {
        name: name.into(),
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last_octet)),
        priority,
        advert_interval: ms(100),
        dead_after: 3,
        preempt: true,
        preempt_delay: Duration::ZERO,
        witness: false,
        vip_digest: [0xab; 8],
        garp_repeat_after: Duration::from_secs(5),
        garp_refresh: Duration::ZERO,
    }
}

pub struct Node {
    pub m: Option<Machine>,
    pub cfg: Settings,
    pub holds_vips: bool,
    pub done: bool,
    pub announces: Vec<Time>,
    pub roles: Vec<(Time, Role, Reason)>,
    pub warnings: Vec<String>,
    pub witness_ok: bool,
    pub claims: Vec<Time>,
    pub releases: Vec<Time>,
    seq: u64,
}

pub struct Sim {
    pub now: Time,
    pub nodes: [Node; 2],
    /// `link[i]` false: packets sent by node i are lost.
    pub link: [bool; 2],
    pub latency: Duration,
    /// Drop one packet in `loss_every` (0 = none), deterministically.
    pub loss_every: u64,
    sent: u64,
    in_flight: Vec<(Time, usize, Heartbeat)>,
    pending_cmds: Vec<(Time, usize, Command)>,
    /// Moments when neither node held the VIPs while at least one had before.
    pub gaps: Vec<(Time, Time)>,
    gap_start: Option<Time>,
    /// Total time both held the VIPs.
    pub both_held: Duration,
}

impl Sim {
    pub fn new(a: Settings, b: Settings) -> Sim {
        let node = |cfg: Settings| Node {
            m: None,
            cfg,
            holds_vips: false,
            done: false,
            announces: vec![],
            roles: vec![],
            warnings: vec![],
            witness_ok: true,
            claims: vec![],
            releases: vec![],
            seq: 0,
        };
        Sim {
            now: Duration::ZERO,
            nodes: [node(a), node(b)],
            link: [true, true],
            latency: ms(1),
            loss_every: 0,
            sent: 0,
            in_flight: vec![],
            pending_cmds: vec![],
            gaps: vec![],
            gap_start: None,
            both_held: Duration::ZERO,
        }
    }

    pub fn start(&mut self, i: usize) {
        let m = Machine::new(self.nodes[i].cfg.clone(), self.now);
        self.nodes[i].m = Some(m);
        self.nodes[i].seq = 0;
        self.flush(i);
    }

    /// The node dies: no more packets, it keeps whatever it held (like kill -9,
    /// except the VIP goes with the host here).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].m = None;
        self.set_holds(i, false);
    }

    pub fn command(&mut self, i: usize, c: Command) {
        if let Some(m) = self.nodes[i].m.as_mut() {
            m.handle_command(self.now, c);
        }
        self.flush(i);
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.nodes[i].m.as_ref().map(|m| m.role())
    }

    pub fn machine(&self, i: usize) -> &Machine {
        self.nodes[i].m.as_ref().expect("node running")
    }

    /// Run until `until` (absolute).
    pub fn run_until(&mut self, until: Time) {
        loop {
            let next = self.next_event();
            match next {
                Some(t) if t <= until => {
                    self.advance(t);
                    self.step();
                }
                _ => {
                    self.advance(until);
                    return;
                }
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Run until `pred` holds, at most `limit` from now; returns the time it held.
    pub fn run_until_true(&mut self, limit: Duration, pred: impl Fn(&Sim) -> bool) -> Option<Time> {
        let until = self.now + limit;
        loop {
            if pred(self) {
                return Some(self.now);
            }
            match self.next_event() {
                Some(t) if t <= until => {
                    self.advance(t);
                    self.step();
                }
                _ => {
                    self.advance(until);
                    return pred(self).then_some(self.now);
                }
            }
        }
    }

    fn advance(&mut self, t: Time) {
        if t < self.now {
            return;
        }
        if self.nodes[A].holds_vips && self.nodes[B].holds_vips {
            self.both_held += t - self.now;
        }
        self.now = t;
    }

    fn next_event(&self) -> Option<Time> {
        let mut t: Vec<Time> = self.in_flight.iter().map(|p| p.0).collect();
        t.extend(self.pending_cmds.iter().map(|c| c.0));
        for n in &self.nodes {
            if let Some(m) = &n.m {
                t.extend(m.poll_timeout());
            }
        }
        t.into_iter().min().map(|x| x.max(self.now))
    }

    fn step(&mut self) {
        let now = self.now;
        let due: Vec<_> = self
            .in_flight
            .iter()
            .filter(|p| p.0 <= now)
            .cloned()
            .collect();
        self.in_flight.retain(|p| p.0 > now);
        for (_, to, hb) in due {
            if let Some(m) = self.nodes[to].m.as_mut() {
                m.handle_heartbeat(now, &hb);
                self.flush(to);
            }
        }
        let cmds: Vec<_> = self
            .pending_cmds
            .iter()
            .filter(|c| c.0 <= now)
            .cloned()
            .collect();
        self.pending_cmds.retain(|c| c.0 > now);
        for (_, i, c) in cmds {
            self.command(i, c);
        }
        for i in [A, B] {
            let due = self.nodes[i]
                .m
                .as_ref()
                .and_then(|m| m.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(m) = self.nodes[i].m.as_mut() {
                    m.handle_timeout(now);
                }
                self.flush(i);
            }
        }
    }

    fn set_holds(&mut self, i: usize, v: bool) {
        self.nodes[i].holds_vips = v;
        let any = self.nodes.iter().any(|n| n.holds_vips);
        let ever = self.nodes.iter().any(|n| !n.claims.is_empty());
        match (any, self.gap_start) {
            (false, None) if ever => self.gap_start = Some(self.now),
            (true, Some(s)) => {
                self.gaps.push((s, self.now));
                self.gap_start = None;
            }
            _ => {}
        }
    }

    fn flush(&mut self, i: usize) {
        let now = self.now;
        loop {
            let Some(a) = self.nodes[i].m.as_mut().and_then(|m| m.poll_action()) else {
                return;
            };
            match a {
                Action::Send {
                    kind,
                    role,
                    priority,
                } => {
                    self.nodes[i].seq += 1;
                    let cfg = &self.nodes[i].cfg;
                    let hb = Heartbeat {
                        kind,
                        router_id: 51,
                        priority,
                        role,
                        advert_interval_ms: cfg.advert_interval.as_millis() as u32,
                        addr: cfg.addr,
                        epoch: 1,
                        seq: self.nodes[i].seq,
                        vip_digest: cfg.vip_digest,
                        name: cfg.name.clone(),
                        flags: 0,
                    };
                    self.sent += 1;
                    let lost = self.loss_every > 0 && self.sent % self.loss_every == 0;
                    if self.link[i] && !lost {
                        self.in_flight.push((now + self.latency, 1 - i, hb));
                    }
                }
                Action::ClaimVips => {
                    self.nodes[i].claims.push(now);
                    self.set_holds(i, true);
                }
                Action::ReleaseVips => {
                    self.nodes[i].releases.push(now);
                    self.set_holds(i, false);
                }
                Action::Announce => self.nodes[i].announces.push(now),
                Action::RoleChanged { to, reason, .. } => {
                    self.nodes[i].roles.push((now, to, reason))
                }
                Action::ProbeWitness => {
                    let ok = self.nodes[i].witness_ok;
                    self.pending_cmds
                        .push((now + ms(2), i, Command::WitnessResult(ok)));
                }
                Action::Warn(w) => self.nodes[i].warnings.push(w),
                Action::Done => self.nodes[i].done = true,
            }
        }
    }

    pub fn masters(&self) -> usize {
        (0..2)
            .filter(|&i| self.role(i) == Some(Role::Master))
            .count()
    }
}

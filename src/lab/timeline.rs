//! One timeline of everything a lab run saw: role changes from both proxies, gratuitous ARPs
//! from the sniffer, link events from the switch, and every client connect; all in ms since
//! one shared origin.
//!
//! [`Timeline::render`] prints it as an aligned table and collapses runs of identical
//! connect results into one line; [`Timeline::drills`] summarises each drill window as the
//! client saw it; the whole timeline serialises to JSON.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::client::{self, Attempt, FailReason, Outage, Outcome};
use super::sniff::{Mac, Sighting};

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventKind {
    /// A node changed role (`"backup"` → `"master"`; the pair's `Role::as_str` names).
    RoleChange {
        from: String,
        to: String,
    },
    /// A gratuitous ARP or unsolicited NA announced `ip` at `mac`.
    Garp {
        mac: Mac,
        ip: IpAddr,
    },
    LinkDown,
    LinkUp,
    ConnectFail {
        reason: FailReason,
    },
    /// A connect succeeded; `host` is the banner (which proxy's backend answered), if read.
    ConnectOk {
        host: Option<String>,
    },
    Note(String),
    DrillStart(String),
    DrillEnd(String),
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the run's shared origin.
    pub at_ms: f64,
    /// Who saw or did it: `"proxy1"`, `"client"`, `"switch"`, ...
    pub source: String,
    pub kind: EventKind,
}

/// Events sorted by time; events with equal times keep the order they were added in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline {
    events: Vec<Event>,
}

/// How one drill looked from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    pub name: String,
    pub start_ms: f64,
    /// The drill's end event, or the last event of the timeline if it has none.
    pub end_ms: f64,
    /// Connect attempts that started inside the drill.
    pub attempts: usize,
    pub failed_connects: usize,
    /// The longest outage that began inside the drill (0 if none), measured from the last
    /// success before it to the first success after it, even if that is after the drill.
    pub outage_ms: f64,
    /// The longest time without a successful connect around the drill (0 without attempts).
    pub longest_gap_ms: f64,
    /// First failed connect, in ms after the drill start.
    pub first_failed_ms: Option<f64>,
    /// First successful connect after the first failure, in ms after the drill start.
    pub first_ok_after_ms: Option<f64>,
    /// The host that served the last successful connect before the drill.
    pub host_before: Option<String>,
    /// The host that served the last successful connect of the drill.
    pub host_after: Option<String>,
    pub outages: Vec<Outage>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Add an event, keeping the timeline sorted.
    pub fn push(&mut self, at_ms: f64, source: impl Into<String>, kind: EventKind) {
        let i = self.events.partition_point(|e| e.at_ms <= at_ms);
        self.events.insert(
            i,
            Event {
                at_ms,
                source: source.into(),
                kind,
            },
        );
    }

    /// Add an event that happens now, timed against `origin`.
    pub fn push_now(&mut self, origin: Instant, source: impl Into<String>, kind: EventKind) {
        self.push(client::ms_between(origin, Instant::now()), source, kind);
    }

    /// Add many events (any order).
    pub fn extend(&mut self, events: impl IntoIterator<Item = Event>) {
        self.events.extend(events);
        self.events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    }

    /// Merge another timeline in; at equal times this one's events come first.
    pub fn merge(&mut self, other: Timeline) {
        self.extend(other.events);
    }

    /// Add a client's connect attempts as `ConnectOk` / `ConnectFail` events.
    pub fn add_attempts(&mut self, source: &str, attempts: &[Attempt]) {
        self.extend(attempts.iter().map(|a| Event {
            at_ms: a.at_ms,
            source: source.to_string(),
            kind: match &a.outcome {
                Outcome::Ok { host } => EventKind::ConnectOk { host: host.clone() },
                Outcome::Fail { reason } => EventKind::ConnectFail {
                    reason: reason.clone(),
                },
            },
        }));
    }

    /// Add a sniffer's sightings as `Garp` events.
    pub fn add_sightings(&mut self, source: &str, sightings: &[Sighting]) {
        self.extend(sightings.iter().map(|s| Event {
            at_ms: s.at_ms,
            source: source.to_string(),
            kind: EventKind::Garp {
                mac: s.announcement.mac,
                ip: s.announcement.ip,
            },
        }));
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The connect events (of `source`, or of every source) as attempts, for the analysis
    /// functions in [`client`]. `took_ms` is not kept in the timeline and reads 0.
    pub fn attempts(&self, source: Option<&str>) -> Vec<Attempt> {
        self.events
            .iter()
            .filter(|e| source.map_or(true, |s| s == e.source))
            .filter_map(|e| {
                let outcome = match &e.kind {
                    EventKind::ConnectOk { host } => Outcome::Ok { host: host.clone() },
                    EventKind::ConnectFail { reason } => Outcome::Fail {
                        reason: reason.clone(),
                    },
                    _ => return None,
                };
                Some(Attempt {
                    at_ms: e.at_ms,
                    took_ms: 0.0,
                    outcome,
                })
            })
            .collect()
    }

    /// Every drill (a `DrillStart(name)` up to the next `DrillEnd(name)`), summarised from
    /// the connects of every source.
    pub fn drills(&self) -> Vec<DrillSummary> {
        self.drills_for(None)
    }

    /// Like [`Timeline::drills`], using only the connects of `source` if given.
    pub fn drills_for(&self, source: Option<&str>) -> Vec<DrillSummary> {
        let attempts = self.attempts(source);
        let last_ms = self.events.last().map_or(0.0, |e| e.at_ms);
        let mut out = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            let EventKind::DrillStart(name) = &e.kind else {
                continue;
            };
            let end_ms = self.events[i + 1..]
                .iter()
                .find(|x| matches!(&x.kind, EventKind::DrillEnd(n) if n == name))
                .map_or(last_ms, |x| x.at_ms);
            out.push(summarise(name, e.at_ms, end_ms, &attempts));
        }
        out
    }

    /// The timeline as an aligned table; runs of identical connect results by one source
    /// are collapsed into one line.
    pub fn render(&self) -> String {
        let width = self
            .events
            .iter()
            .map(|e| e.source.len())
            .max()
            .unwrap_or(0)
            .max("source".len());
        let mut out = format!("{:>10}  {:<width$}  event\n", "t (ms)", "source");
        let mut i = 0;
        while i < self.events.len() {
            let e = &self.events[i];
            let mut j = i + 1;
            // Runs of successes collapse whichever host answered (a balancer
            // alternates them); runs of failures collapse by reason.
            let same = |a: &EventKind, b: &EventKind| match (a, b) {
                (EventKind::ConnectOk { .. }, EventKind::ConnectOk { .. }) => true,
                _ => a == b,
            };
            if is_connect(&e.kind) {
                while j < self.events.len()
                    && self.events[j].source == e.source
                    && same(&self.events[j].kind, &e.kind)
                {
                    j += 1;
                }
            }
            let n = j - i;
            let text = if n > 1 {
                let until = self.events[j - 1].at_ms;
                match &e.kind {
                    EventKind::ConnectOk { .. } => {
                        let mut hosts: Vec<&str> = self.events[i..j]
                            .iter()
                            .filter_map(|x| match &x.kind {
                                EventKind::ConnectOk { host } => host.as_deref(),
                                _ => None,
                            })
                            .collect();
                        hosts.sort_unstable();
                        hosts.dedup();
                        let via = if hosts.is_empty() {
                            String::new()
                        } else {
                            format!(" via {}", hosts.join(", "))
                        };
                        format!("{n} connects ok{via} (until {until:.1})")
                    }
                    EventKind::ConnectFail { reason } => {
                        format!("{n} connects failed: {reason} (until {until:.1})")
                    }
                    _ => describe(&e.kind),
                }
            } else {
                describe(&e.kind)
            };
            let _ = writeln!(out, "{:>10.1}  {:<width$}  {text}", e.at_ms, e.source);
            i = j;
        }
        out
    }

    /// One line per drill.
    pub fn render_summary(&self) -> String {
        let mut out = String::new();
        for d in self.drills() {
            let _ = writeln!(out, "{}", d.line());
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "[]".into())
    }

    pub fn from_json(s: &str) -> serde_json::Result<Timeline> {
        let mut t: Timeline = serde_json::from_str(s)?;
        t.events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        Ok(t)
    }
}

impl DrillSummary {
    /// A one-line human summary.
    pub fn line(&self) -> String {
        let hosts = match (&self.host_before, &self.host_after) {
            (Some(a), Some(b)) if a != b => format!(", served by {a} then {b}"),
            (_, Some(b)) => format!(", served by {b}"),
            _ => String::new(),
        };
        let span = format!(
            "drill {} [{:.1} .. {:.1} ms]",
            self.name, self.start_ms, self.end_ms
        );
        if self.failed_connects == 0 {
            return format!(
                "{span}: 0 failed connects of {}, longest gap {:.1} ms{hosts}",
                self.attempts, self.longest_gap_ms
            );
        }
        let rel = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("+{v:.1} ms"));
        format!(
            "{span}: outage {:.1} ms, {} failed connects of {}, first failed {}, first ok after {}{hosts}",
            self.outage_ms,
            self.failed_connects,
            self.attempts,
            rel(self.first_failed_ms),
            rel(self.first_ok_after_ms),
        )
    }
}

fn summarise(name: &str, start_ms: f64, end_ms: f64, all: &[Attempt]) -> DrillSummary {
    // The slice around the drill: from the last success before it to the first success
    // after it, so outages at either edge are measured from success to success.
    let first_in = all.partition_point(|a| a.at_ms < start_ms);
    let after_end = all.partition_point(|a| a.at_ms <= end_ms);
    let lo = all[..first_in]
        .iter()
        .rposition(|a| a.is_ok())
        .unwrap_or(first_in);
    let hi = all[after_end..]
        .iter()
        .position(|a| a.is_ok())
        .map_or(all.len(), |p| after_end + p + 1);
    let around = &all[lo..hi];
    let inside = &all[first_in..after_end.max(first_in)];

    let outages: Vec<Outage> = client::outages(around)
        .into_iter()
        .filter(|o| o.first_failed_ms >= start_ms && o.first_failed_ms <= end_ms)
        .collect();
    let first_failed = client::first_failed_after(inside, start_ms);
    let first_ok_after = first_failed.and_then(|f| client::first_ok_after(around, f.at_ms));
    DrillSummary {
        name: name.to_string(),
        start_ms,
        end_ms,
        attempts: inside.len(),
        failed_connects: client::failed_count(inside),
        outage_ms: outages.iter().map(|o| o.duration_ms).fold(0.0, f64::max),
        longest_gap_ms: client::longest_gap(around),
        first_failed_ms: first_failed.map(|a| a.at_ms - start_ms),
        first_ok_after_ms: first_ok_after.map(|a| a.at_ms - start_ms),
        host_before: all[..first_in]
            .iter()
            .rev()
            .find_map(|a| a.host().map(str::to_string)),
        host_after: inside
            .iter()
            .rev()
            .find_map(|a| a.host().map(str::to_string)),
        outages,
    }
}

fn is_connect(k: &EventKind) -> bool {
    matches!(
        k,
        EventKind::ConnectOk { .. } | EventKind::ConnectFail { .. }
    )
}

fn via(host: &Option<String>) -> String {
    host.as_ref().map_or(String::new(), |h| format!(" via {h}"))
}

/// One event as text.
pub fn describe(k: &EventKind) -> String {
    match k {
        EventKind::RoleChange { from, to } => format!("role {from} -> {to}"),
        EventKind::Garp { mac, ip } => format!("announce {ip} is-at {mac}"),
        EventKind::LinkDown => "link down".into(),
        EventKind::LinkUp => "link up".into(),
        EventKind::ConnectFail { reason } => format!("connect failed: {reason}"),
        EventKind::ConnectOk { host } => format!("connect ok{}", via(host)),
        EventKind::Note(s) => s.clone(),
        EventKind::DrillStart(n) => format!("=== drill {n} starts ==="),
        EventKind::DrillEnd(n) => format!("=== drill {n} ends ==="),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(host: &str) -> EventKind {
        EventKind::ConnectOk {
            host: Some(host.into()),
        }
    }
    fn refused() -> EventKind {
        EventKind::ConnectFail {
            reason: FailReason::Refused,
        }
    }

    /// A crash drill: proxy1 serves, the link drops at 100 ms, connects fail from 102 to
    /// 298 ms, proxy2 claims at 290 ms and serves from 305 ms.
    fn crash_drill() -> Timeline {
        let mut t = Timeline::new();
        let mut ms = 0.0;
        while ms < 100.0 {
            t.push(ms, "client", ok("proxy1"));
            ms += 7.0;
        }
        t.push(95.0, "lab", EventKind::DrillStart("crash".into()));
        t.push(100.0, "switch", EventKind::LinkDown);
        let mut ms = 102.0;
        while ms < 300.0 {
            t.push(ms, "client", refused());
            ms += 28.0;
        }
        t.push(
            290.0,
            "proxy2",
            EventKind::RoleChange {
                from: "backup".into(),
                to: "master".into(),
            },
        );
        t.push(
            291.0,
            "client",
            EventKind::Garp {
                mac: Mac([2, 0, 0, 0, 0, 2]),
                ip: "192.0.2.100".parse().unwrap(),
            },
        );
        let mut ms = 305.0;
        while ms < 400.0 {
            t.push(ms, "client", ok("proxy2"));
            ms += 7.0;
        }
        t.push(400.0, "lab", EventKind::DrillEnd("crash".into()));
        t
    }

    #[test]
    fn render_collapses_runs() {
        let t = crash_drill();
        let r = t.render();
        assert!(r.contains("14 connects ok via proxy1 (until 91.0)"), "{r}");
        // Runs break at any other event: the role change and the GARP split the failures.
        assert!(
            r.contains("7 connects failed: refused (until 270.0)"),
            "{r}"
        );
        assert!(r.contains("connect failed: refused\n"), "{r}");
        assert!(r.contains("role backup -> master"), "{r}");
        assert!(
            r.contains("announce 192.0.2.100 is-at 02:00:00:00:00:02"),
            "{r}"
        );
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines.len() < 15, "{r}");
        // Columns line up: every line has the source column at the same offset.
        assert!(
            lines.iter().all(|l| l.len() > 12 && &l[10..12] == "  "),
            "{r}"
        );
    }

    #[test]
    fn drill_summary() {
        let t = crash_drill();
        let d = t.drills();
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.name, "crash");
        assert_eq!(d.failed_connects, 8);
        // Last ok before: 98 ms; first ok after: 305 ms.
        assert_eq!(d.outages.len(), 1);
        assert!((d.outage_ms - 207.0).abs() < 1e-9, "{d:?}");
        assert!((d.longest_gap_ms - 207.0).abs() < 1e-9, "{d:?}");
        assert_eq!(d.first_failed_ms, Some(7.0));
        assert_eq!(d.first_ok_after_ms, Some(210.0));
        assert_eq!(d.host_before.as_deref(), Some("proxy1"));
        assert_eq!(d.host_after.as_deref(), Some("proxy2"));
        let s = t.render_summary();
        assert!(s.contains("outage 207.0 ms, 8 failed connects"), "{s}");
        assert!(s.contains("served by proxy1 then proxy2"), "{s}");
    }

    #[test]
    fn clean_handover_summary() {
        let mut t = Timeline::new();
        t.push(0.0, "lab", EventKind::DrillStart("handover".into()));
        for i in 0..10 {
            let h = if i < 5 { "proxy1" } else { "proxy2" };
            t.push(f64::from(i) * 6.0 + 1.0, "client", ok(h));
        }
        t.push(70.0, "lab", EventKind::DrillEnd("handover".into()));
        let d = &t.drills()[0];
        assert_eq!((d.failed_connects, d.attempts), (0, 10));
        assert_eq!(d.outage_ms, 0.0);
        assert!(
            d.line()
                .contains("0 failed connects of 10, longest gap 6.0 ms"),
            "{}",
            d.line()
        );
    }

    #[test]
    fn merge_sorts_and_json_round_trips() {
        let mut a = Timeline::new();
        a.push(10.0, "proxy1", EventKind::Note("a".into()));
        a.push(30.0, "proxy1", EventKind::LinkUp);
        let mut b = Timeline::new();
        b.push(20.0, "proxy2", refused());
        b.push(10.0, "proxy2", EventKind::Note("b".into()));
        a.merge(b);
        let order: Vec<(f64, &str)> = a
            .events()
            .iter()
            .map(|e| (e.at_ms, e.source.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (10.0, "proxy1"),
                (10.0, "proxy2"),
                (20.0, "proxy2"),
                (30.0, "proxy1")
            ]
        );
        let json = crash_drill().to_json();
        assert!(json.contains(r#""kind": "role_change""#), "{json}");
        assert!(json.contains(r#""mac": "02:00:00:00:00:02""#), "{json}");
        let back = Timeline::from_json(&json).unwrap();
        assert_eq!(back, crash_drill());
    }

    #[test]
    fn attempts_and_sightings_become_events() {
        let mut t = Timeline::new();
        t.add_attempts(
            "client",
            &[
                Attempt {
                    at_ms: 1.0,
                    took_ms: 0.2,
                    outcome: Outcome::Ok {
                        host: Some("p1".into()),
                    },
                },
                Attempt {
                    at_ms: 2.0,
                    took_ms: 20.0,
                    outcome: Outcome::Fail {
                        reason: FailReason::Timeout,
                    },
                },
            ],
        );
        assert_eq!(t.attempts(Some("client")).len(), 2);
        assert_eq!(t.attempts(Some("other")).len(), 0);
        assert_eq!(client::failed_count(&t.attempts(None)), 1);
    }
}

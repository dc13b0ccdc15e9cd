//! The `/status` document: one snapshot that the page, the JSON and the metrics all render.
//! The schema is documented in `docs/status.md`; add fields, never rename them.

use serde::Serialize;

use crate::balancer::ListenerStatus;
use crate::driver::PairStatus;
use crate::events::Event;

/// How many events the page and `/status` carry.
pub const EVENTS: usize = 50;

/// Everything an operator sees, taken at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// hapair's version.
    pub version: String,
    /// This node's name (`node.name`).
    pub node: String,
    /// When the snapshot was taken, ms since the Unix epoch (ages on the page are from here).
    pub now_ms: u64,
    /// The pair: role, priority and why, peer, VIPs, heartbeat counters.
    pub pair: PairStatus,
    /// The balancer: every listener with its servers and counters.
    pub listeners: Vec<ListenerStatus>,
    /// Supervised services (statestored, catalogd). Always empty until the supervisor lands;
    /// each entry will be an object with at least `name`, `state`, `pid`, `restarts`, `active`.
    pub services: Vec<serde_json::Value>,
    /// ZooKeeper discovery: connection state and the znodes this node holds; null when
    /// `[zookeeper]` is not configured.
    pub zookeeper: Option<crate::zk::ZkStatus>,
    /// Whether the control endpoints accept a token (false: no `node.admin_token_file`).
    pub control_enabled: bool,
    /// The newest events, oldest first, at most [`EVENTS`].
    pub events: Vec<Event>,
}

impl Status {
    /// Human summary of the effective priority: "150 = configured 150, weight -20".
    pub fn priority_reason(&self) -> String {
        let p = &self.pair;
        let why = if p.weight == 0 {
            "no failing checks".to_string()
        } else {
            "failing checks lower it".to_string()
        };
        format!(
            "{} = configured {} {} weight {} ({why})",
            p.priority,
            p.configured_priority,
            if p.weight < 0 { "-" } else { "+" },
            p.weight.unsigned_abs()
        )
    }
}

/// "1.2s", "3m04s", "2h05m", "3d04h": a compact age for tables.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// RFC 3339 UTC time with milliseconds from ms since the epoch.
pub fn timestamp(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_compact() {
        assert_eq!(age(1234), "1.2s");
        assert_eq!(age(42_000), "42s");
        assert_eq!(age(184_000), "3m04s");
        assert_eq!(age(7_500_000), "2h05m");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(1_500), "1970-01-01T00:00:01.500Z");
    }
}

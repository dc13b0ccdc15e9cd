//! `/metrics` in the Prometheus text format (0.0.4), encoded by `prometheus-client`.
//!
//! The counters live where the work happens (the pair thread's `PairStatus`, the balancer's
//! atomics), so a scrape builds a fresh registry from one [`Status`] snapshot rather than
//! mirroring every counter into a second set of atomics. A scrape costs a few dozen small
//! allocations. Names are documented in `docs/status.md`; counters get `_total` appended by
//! the encoder.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::page::server_state;
use super::status::Status;

/// The `Content-Type` Prometheus expects for this format.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A counter family set from snapshot values.
struct Counters(Family<Labels, Counter>);

impl Counters {
    fn new(reg: &mut Registry, name: &str, help: &str) -> Counters {
        let f = Family::<Labels, Counter>::default();
        reg.register(name, help, f.clone());
        Counters(f)
    }
    fn set(&self, l: &[(&str, &str)], v: u64) {
        self.0.get_or_create(&labels(l)).inc_by(v);
    }
}

/// A gauge family set from snapshot values.
struct Gauges(Family<Labels, Gauge>);

impl Gauges {
    fn new(reg: &mut Registry, name: &str, help: &str) -> Gauges {
        let f = Family::<Labels, Gauge>::default();
        reg.register(name, help, f.clone());
        Gauges(f)
    }
    fn set(&self, l: &[(&str, &str)], v: i64) {
        self.0.get_or_create(&labels(l)).set(v);
    }
}

/// Every role a node can be in: `hapair_role` has one series per role, 1 for the current.
pub const ROLES: [&str; 4] = ["init", "backup", "master", "fault"];
/// Every server state: `hapair_server_state` has one series per state.
pub const SERVER_STATES: [&str; 4] = ["up", "down", "drain", "maint"];

/// Every registrar state: `hapair_zookeeper_state` has one series per state.
pub const ZK_STATES: [&str; 5] = [
    "connecting",
    "connected",
    "disconnected",
    "backoff",
    "stopped",
];

/// Encode `s` as Prometheus text.
pub fn render(s: &Status) -> String {
    let mut reg = Registry::default();
    let p = &s.pair;
    let n = |v: u64| v as i64;

    let info = Gauges::new(
        &mut reg,
        "hapair_info",
        "Build and node information (always 1)",
    );
    info.set(&[("version", &s.version), ("node", &s.node)], 1);

    let role = Gauges::new(
        &mut reg,
        "hapair_role",
        "1 for this node's current pair role, 0 for the others",
    );
    let current = p.role.to_lowercase();
    for r in ROLES {
        role.set(&[("role", r)], i64::from(current == r));
    }
    Gauges::new(
        &mut reg,
        "hapair_priority",
        "Effective priority (configured priority plus the weights of failing checks)",
    )
    .set(&[], i64::from(p.priority));
    Gauges::new(&mut reg, "hapair_priority_configured", "node.priority")
        .set(&[], i64::from(p.configured_priority));
    Gauges::new(
        &mut reg,
        "hapair_priority_weight",
        "Sum of the weights of the failing checks",
    )
    .set(&[], i64::from(p.weight));
    Gauges::new(
        &mut reg,
        "hapair_vips_held",
        "1 while this node holds the VIPs",
    )
    .set(&[], i64::from(p.vips_held));
    Gauges::new(
        &mut reg,
        "hapair_peer_alive",
        "1 while the peer is heard within its dead interval",
    )
    .set(&[], i64::from(p.peer.as_ref().is_some_and(|x| x.alive)));
    if let Some(peer) = &p.peer {
        Gauges::new(
            &mut reg,
            "hapair_peer_last_heard_ms",
            "Milliseconds since the peer's last accepted heartbeat",
        )
        .set(&[("peer", &peer.name)], n(peer.last_heard_ms_ago));
        Gauges::new(
            &mut reg,
            "hapair_peer_priority",
            "The peer's advertised priority",
        )
        .set(&[("peer", &peer.name)], i64::from(peer.priority));
    }
    Counters::new(&mut reg, "hapair_heartbeats_sent", "Heartbeats sent").set(&[], p.sent);
    Counters::new(
        &mut reg,
        "hapair_heartbeats_received",
        "Heartbeats accepted from the peer",
    )
    .set(&[], p.received);
    let dropped = Counters::new(
        &mut reg,
        "hapair_heartbeats_dropped",
        "Heartbeats dropped, by reason (malformed, bad_version, foreign_router, unknown_key, bad_mac, replay, duplicate, unknown_source)",
    );
    for (reason, v) in &p.dropped {
        dropped.set(&[("reason", reason)], *v);
    }
    Counters::new(
        &mut reg,
        "hapair_late_adverts",
        "Heartbeat timers that fired late (the pair thread was starved)",
    )
    .set(&[], p.late_adverts);
    Gauges::new(
        &mut reg,
        "hapair_late_advert_max_ms",
        "The largest heartbeat timer lateness seen, in ms",
    )
    .set(&[], n(p.max_late_ms));
    Counters::new(
        &mut reg,
        "hapair_failovers",
        "Times this node became master after having been backup or fault",
    )
    .set(&[], p.failovers);

    let l_active = Gauges::new(
        &mut reg,
        "hapair_listener_connections_active",
        "Open client connections of a listener",
    );
    let l_total = Counters::new(
        &mut reg,
        "hapair_listener_connections",
        "Client connections accepted by a listener",
    );
    let l_noserver = Counters::new(
        &mut reg,
        "hapair_listener_no_server",
        "Client connections closed because no server could take them",
    );
    let s_active = Gauges::new(
        &mut reg,
        "hapair_server_connections_active",
        "Open connections to a server",
    );
    let s_total = Counters::new(
        &mut reg,
        "hapair_server_connections",
        "Connections proxied to a server",
    );
    let s_in = Counters::new(
        &mut reg,
        "hapair_server_bytes_in",
        "Bytes from clients to a server",
    );
    let s_out = Counters::new(
        &mut reg,
        "hapair_server_bytes_out",
        "Bytes from a server to clients",
    );
    let s_fail = Counters::new(
        &mut reg,
        "hapair_server_connect_failures",
        "Refused or timed-out connects to a server",
    );
    let s_retries = Counters::new(
        &mut reg,
        "hapair_server_retries",
        "Connects to a server that were retried",
    );
    let s_up = Gauges::new(
        &mut reg,
        "hapair_server_up",
        "1 when a server takes new connections (healthy and not drained or disabled)",
    );
    let s_check = Gauges::new(
        &mut reg,
        "hapair_server_check_ok",
        "1 when the server's last active check passed (absent without a check)",
    );
    let s_state = Gauges::new(
        &mut reg,
        "hapair_server_state",
        "1 for the server's current state (up, down, drain, maint), 0 for the others",
    );
    for l in &s.listeners {
        let ll = [("listener", l.name.as_str())];
        l_active.set(&ll, n(l.active));
        l_total.set(&ll, l.total);
        l_noserver.set(&ll, l.no_server);
        for sv in &l.servers {
            let sl = [("listener", l.name.as_str()), ("server", sv.name.as_str())];
            s_active.set(&sl, n(sv.active));
            s_total.set(&sl, sv.total);
            s_in.set(&sl, sv.bytes_in);
            s_out.set(&sl, sv.bytes_out);
            s_fail.set(&sl, sv.connect_failures);
            s_retries.set(&sl, sv.retries);
            let state = server_state(sv);
            s_up.set(&sl, i64::from(state == "up"));
            if let Some(c) = &sv.last_check {
                s_check.set(&sl, i64::from(c.ok));
            }
            for st in SERVER_STATES {
                s_state.set(
                    &[
                        ("listener", l.name.as_str()),
                        ("server", sv.name.as_str()),
                        ("state", st),
                    ],
                    i64::from(state == st),
                );
            }
        }
    }
    if !s.services.is_empty() {
        let restarts = Counters::new(
            &mut reg,
            "hapair_service_restarts",
            "Times a supervised service was restarted",
        );
        for sv in &s.services {
            let name = sv.get("name").and_then(|v| v.as_str()).unwrap_or("");
            let r = sv.get("restarts").and_then(|v| v.as_u64()).unwrap_or(0);
            restarts.set(&[("service", name)], r);
        }
    }

    if let Some(z) = &s.zookeeper {
        let st = Gauges::new(
            &mut reg,
            "hapair_zookeeper_state",
            "1 for the ZooKeeper registrar's current state, 0 for the others",
        );
        for x in ZK_STATES {
            st.set(&[("state", x)], i64::from(z.state == x));
        }
        Gauges::new(
            &mut reg,
            "hapair_zookeeper_znodes",
            "Znodes this node holds in the discovery namespace",
        )
        .set(&[], z.znodes.len() as i64);
        Counters::new(
            &mut reg,
            "hapair_zookeeper_sessions",
            "ZooKeeper sessions established",
        )
        .set(&[], z.sessions);
        Counters::new(
            &mut reg,
            "hapair_zookeeper_expirations",
            "ZooKeeper sessions that expired",
        )
        .set(&[], z.expirations);
        Counters::new(
            &mut reg,
            "hapair_zookeeper_errors",
            "Failed or timed-out ZooKeeper connects and operations",
        )
        .set(&[], z.errors);
    }

    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::PairStatus;

    #[test]
    fn role_is_one_hot_and_counters_have_total() {
        let s = Status {
            version: "0.1.0".into(),
            node: "proxy1".into(),
            now_ms: 0,
            pair: PairStatus {
                role: "backup".into(),
                sent: 7,
                dropped: [("bad_mac".to_string(), 3u64)].into_iter().collect(),
                ..Default::default()
            },
            listeners: vec![],
            services: vec![],
            zookeeper: None,
            control_enabled: false,
            events: vec![],
        };
        let m = render(&s);
        assert!(m.contains("hapair_role{role=\"backup\"} 1\n"), "{m}");
        assert!(m.contains("hapair_role{role=\"master\"} 0\n"), "{m}");
        assert!(m.contains("hapair_heartbeats_sent_total 7\n"), "{m}");
        assert!(
            m.contains("hapair_heartbeats_dropped_total{reason=\"bad_mac\"} 3\n"),
            "{m}"
        );
        assert!(!m.contains("hapair_service_restarts"), "{m}");
    }
}

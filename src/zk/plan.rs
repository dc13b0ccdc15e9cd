//! What the master should have registered, from a balancer snapshot. Pure.

use std::net::{IpAddr, SocketAddr};

use super::config::{Register, ZkConfig};
use super::format::Entry;
use crate::balancer::{BalancerStatus, ServerState, ServerStatus};

/// Splits a server's `addr` as written (`host:port`, `[v6]:port`) into host and port.
pub fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The servers of a listener that clients may be sent to: up (healthy and enabled), and not
/// a backup or weight-0 server unless no regular server is up (as the balancer picks).
fn publishable(servers: &[ServerStatus]) -> Vec<&ServerStatus> {
    let up: Vec<&ServerStatus> = servers
        .iter()
        .filter(|s| s.state == ServerState::Up)
        .collect();
    let regular: Vec<&ServerStatus> = up
        .iter()
        .copied()
        .filter(|s| !s.backup && s.weight > 0)
        .collect();
    if regular.is_empty() {
        up
    } else {
        regular
    }
}

/// The entries this node publishes while it is master, sorted and without duplicates.
pub fn desired(cfg: &ZkConfig, snap: &BalancerStatus, vips: &[IpAddr]) -> Vec<Entry> {
    let mut out = vec![];
    for p in &cfg.published {
        let Some(l) = snap.listeners.iter().find(|l| l.name == p.listener) else {
            continue;
        };
        let servers = publishable(&l.servers);
        match cfg.register {
            Register::Servers => {
                for s in servers {
                    let Some((host, port)) = split_addr(&s.addr) else {
                        continue;
                    };
                    out.push(Entry {
                        listener: l.name.clone(),
                        server: Some(s.name.clone()),
                        host,
                        port,
                        http: p.http,
                    });
                }
            }
            Register::Vip => {
                // A listener with no server up is not advertised: a client picking it would
                // be refused, while another HiveServer2 in the namespace may serve it.
                if servers.is_empty() {
                    continue;
                }
                let Ok(bind) = l.bind.parse::<SocketAddr>() else {
                    continue;
                };
                let host = match &cfg.advertise {
                    Some(a) => a.clone(),
                    None => {
                        let Some(ip) = vip_for(bind.ip(), vips) else {
                            continue;
                        };
                        ip.to_string()
                    }
                };
                out.push(Entry {
                    listener: l.name.clone(),
                    server: None,
                    host,
                    port: bind.port(),
                    http: p.http,
                });
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.host == b.host && a.port == b.port);
    out
}

/// The VIP a listener bound to `bind` serves: the bind address itself when it is a VIP,
/// else the first VIP of the same family, else the first VIP.
fn vip_for(bind: IpAddr, vips: &[IpAddr]) -> Option<IpAddr> {
    if vips.contains(&bind) {
        return Some(bind);
    }
    vips.iter()
        .find(|v| v.is_ipv4() == bind.is_ipv4())
        .or(vips.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::{Balance, ListenerStatus};
    use crate::zk::config::{Published, Register};

    fn server(name: &str, addr: &str, state: ServerState, backup: bool) -> ServerStatus {
        ServerStatus {
            name: name.into(),
            addr: addr.into(),
            weight: 1,
            backup,
            state,
            active: 0,
            total: 0,
            bytes_in: 0,
            bytes_out: 0,
            connect_failures: 0,
            retries: 0,
            last_check: None,
            last_change_unix_ms: 0,
        }
    }

    fn snap(servers: Vec<ServerStatus>) -> BalancerStatus {
        BalancerStatus {
            listeners: vec![ListenerStatus {
                name: "hs2".into(),
                bind: "0.0.0.0:21050".into(),
                balance: Balance::LeastConn,
                maxconn: 1,
                active: 0,
                total: 0,
                bytes_in: 0,
                bytes_out: 0,
                connect_failures: 0,
                retries: 0,
                no_server: 0,
                servers,
            }],
        }
    }

    fn cfg(register: Register) -> ZkConfig {
        ZkConfig {
            quorum: "zk".into(),
            hosts: vec!["zk:2181".into()],
            chroot: String::new(),
            namespace: "hiveserver2".into(),
            session_timeout: std::time::Duration::from_secs(10),
            register,
            published: vec![Published {
                listener: "hs2".into(),
                http: false,
            }],
            http_path: "cliservice".into(),
            authentication: "NONE".into(),
            principal: None,
            advertise: None,
        }
    }

    #[test]
    fn servers_mode_publishes_up_servers_only() {
        let s = snap(vec![
            server("a", "h1.example.org:21050", ServerState::Up, false),
            server("b", "h2:21050", ServerState::Down, false),
            server("c", "h3:21050", ServerState::Drain, false),
            server("d", "h4:21050", ServerState::Maint, false),
            server("e", "[2001:db8::5]:21050", ServerState::Up, false),
            server("f", "h6:21050", ServerState::Up, true),
        ]);
        let d = desired(&cfg(Register::Servers), &s, &[]);
        let hosts: Vec<&str> = d.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["h1.example.org", "2001:db8::5"]);
    }

    #[test]
    fn backups_are_published_when_nothing_else_is_up() {
        let s = snap(vec![
            server("a", "h1:21050", ServerState::Down, false),
            server("f", "h6:21050", ServerState::Up, true),
        ]);
        let d = desired(&cfg(Register::Servers), &s, &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].host, "h6");
    }

    #[test]
    fn vip_mode_publishes_one_entry_at_the_vip() {
        let s = snap(vec![
            server("a", "h1:21050", ServerState::Up, false),
            server("b", "h2:21050", ServerState::Up, false),
        ]);
        let vips = ["192.0.2.100".parse().unwrap()];
        let d = desired(&cfg(Register::Vip), &s, &vips);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].host.as_str(), d[0].port), ("192.0.2.100", 21050));
        // Nothing up: nothing published.
        let s = snap(vec![server("a", "h1:21050", ServerState::Down, false)]);
        assert!(desired(&cfg(Register::Vip), &s, &vips).is_empty());
    }
}

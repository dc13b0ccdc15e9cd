//! `[node]` and `[pair]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{duration, local_addrs, Diags, Host};

pub const DEFAULT_PORT: u16 = 5405;
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub priority: u8,
    pub admin: SocketAddr,
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PairConfig {
    pub interface: String,
    pub router_id: u8,
    /// One or more peer addresses (several = redundant links).
    pub peers: Vec<IpAddr>,
    pub port: u16,
    pub advert_interval: Duration,
    pub dead_after: u32,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub auth_key_file: PathBuf,
    pub vips: Vec<IpNet>,
    pub garp_count: u32,
    pub garp_repeat_after: Duration,
    pub garp_refresh: Duration,
    pub witness: Vec<IpAddr>,
    pub notify: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    name: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
    admin: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPair {
    interface: Option<Spanned<String>>,
    router_id: Option<Spanned<i64>>,
    peer: Option<Spanned<toml::Value>>,
    port: Option<Spanned<i64>>,
    advert_interval: Option<Spanned<String>>,
    dead_after: Option<Spanned<i64>>,
    preempt: Option<bool>,
    preempt_delay: Option<Spanned<String>>,
    auth_key_file: Option<Spanned<String>>,
    vips: Option<Spanned<Vec<Spanned<String>>>>,
    garp_count: Option<Spanned<i64>>,
    garp_repeat_after: Option<Spanned<String>>,
    garp_refresh: Option<Spanned<String>>,
    witness: Option<Spanned<Vec<Spanned<String>>>>,
    notify: Option<Spanned<String>>,
}

fn int_in<T: TryFrom<i64>>(
    d: &mut Diags,
    v: &Option<Spanned<i64>>,
    key: &str,
    lo: i64,
    hi: i64,
    default: T,
) -> T {
    let Some(v) = v else { return default };
    let n = *v.get_ref();
    if n < lo || n > hi {
        d.error(
            Some(v.span()),
            format!("{key} = {n} is out of range {lo}..={hi}"),
        );
        return default;
    }
    T::try_from(n).unwrap_or(default)
}

fn dur_in(
    d: &mut Diags,
    v: &Option<Spanned<String>>,
    key: &str,
    min: Duration,
    max: Duration,
    default: Duration,
) -> Duration {
    let Some(v) = v else { return default };
    match duration(v.get_ref()) {
        Ok(x) if x.is_zero() && min.is_zero() => x,
        Ok(x) if x < min || x > max => {
            d.error(
                Some(v.span()),
                format!(
                    "{key} = \"{}\" is out of range {min:?}..={max:?}",
                    v.get_ref()
                ),
            );
            default
        }
        Ok(x) => x,
        Err(e) => {
            d.error(Some(v.span()), format!("{key}: {e}"));
            default
        }
    }
}

fn rel(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn node(raw: RawNode, base: &Path, d: &mut Diags) -> Option<NodeConfig> {
    let name = match &raw.name {
        Some(n) if n.get_ref().trim().is_empty() || n.get_ref().len() > 64 => {
            d.error(Some(n.span()), "name must be 1 to 64 bytes");
            String::new()
        }
        Some(n) => n.get_ref().clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "hapair".into()),
    };
    let priority = int_in(d, &raw.priority, "priority", 1, 254, 100u8);
    let admin = match &raw.admin {
        None => DEFAULT_ADMIN,
        Some(a) => match a.get_ref().parse::<SocketAddr>() {
            Ok(x) => x,
            Err(_) => {
                d.error(
                    Some(a.span()),
                    format!(
                        "admin = \"{}\" is not an address:port like \"127.0.0.1:9180\"",
                        a.get_ref()
                    ),
                );
                DEFAULT_ADMIN
            }
        },
    };
    let admin_token_file = raw.admin_token_file.map(|p| rel(base, p.get_ref()));
    Some(NodeConfig {
        name,
        priority,
        admin,
        admin_token_file,
    })
}

pub(super) fn pair(
    raw: Spanned<RawPair>,
    base: &Path,
    host: Host,
    d: &mut Diags,
) -> Option<PairConfig> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let mut missing =
        |key: &str| d.error(Some(table_span.clone()), format!("[pair] needs `{key}`"));
    if raw.interface.is_none() {
        missing("interface");
    }
    if raw.router_id.is_none() {
        missing("router_id");
    }
    if raw.peer.is_none() {
        missing("peer");
    }
    if raw.auth_key_file.is_none() {
        missing("auth_key_file (create one with `hapair keygen FILE`)");
    }
    if raw.vips.is_none() {
        missing("vips");
    }

    let router_id = int_in(d, &raw.router_id, "router_id", 1, 255, 1u8);
    let port = int_in(d, &raw.port, "port", 1, 65535, DEFAULT_PORT);
    let advert_interval = dur_in(
        d,
        &raw.advert_interval,
        "advert_interval",
        Duration::from_millis(10),
        Duration::from_secs(10),
        Duration::from_millis(100),
    );
    let dead_after = int_in(d, &raw.dead_after, "dead_after", 2, 100, 3u32);
    let preempt_delay = dur_in(
        d,
        &raw.preempt_delay,
        "preempt_delay",
        Duration::ZERO,
        Duration::from_secs(3600),
        Duration::ZERO,
    );
    let garp_count = int_in(d, &raw.garp_count, "garp_count", 1, 100, 5u32);
    let garp_repeat_after = dur_in(
        d,
        &raw.garp_repeat_after,
        "garp_repeat_after",
        Duration::ZERO,
        Duration::from_secs(3600),
        Duration::from_secs(5),
    );
    let garp_refresh = dur_in(
        d,
        &raw.garp_refresh,
        "garp_refresh",
        Duration::from_secs(1),
        Duration::from_secs(86400),
        Duration::ZERO,
    );

    // The interface: it must exist when we run; `check` elsewhere only warns.
    let locals = local_addrs();
    let interface = raw
        .interface
        .as_ref()
        .map(|i| i.get_ref().clone())
        .unwrap_or_default();
    let if_addrs: Vec<IpAddr> = locals
        .iter()
        .filter(|(n, _)| *n == interface)
        .map(|(_, a)| *a)
        .collect();
    let if_exists = nix::net::if_::if_nametoindex(interface.as_str()).is_ok();
    if let Some(i) = &raw.interface {
        if i.get_ref().is_empty() || i.get_ref().len() > 15 {
            d.error(
                Some(i.span()),
                "interface must be an interface name of 1 to 15 bytes",
            );
        } else if !if_exists {
            let msg = format!("interface `{}` does not exist on this host", i.get_ref());
            match host {
                Host::Strict => d.error(Some(i.span()), msg),
                Host::Lenient => d.warn(Some(i.span()), msg),
            }
        }
    }

    // VIPs.
    let mut vips: Vec<IpNet> = vec![];
    if let Some(list) = &raw.vips {
        if list.get_ref().is_empty() {
            d.error(
                Some(list.span()),
                "vips must list at least one address, e.g. [\"192.0.2.100/24\"]",
            );
        }
        for v in list.get_ref() {
            let s = v.get_ref().trim();
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
            match net {
                Err(_) => d.error(
                    Some(v.span()),
                    format!("`{s}` is not an address with prefix, like \"192.0.2.100/24\""),
                ),
                Ok(n)
                    if n.addr().is_unspecified()
                        || n.addr().is_multicast()
                        || n.addr().is_loopback() =>
                {
                    d.error(
                        Some(v.span()),
                        format!(
                            "VIP {} cannot be unspecified, multicast or loopback",
                            n.addr()
                        ),
                    )
                }
                Ok(n) if vips.iter().any(|x| x.addr() == n.addr()) => {
                    d.error(Some(v.span()), format!("VIP {} is listed twice", n.addr()))
                }
                Ok(n) => {
                    // The VIP must fit the interface's family.
                    let fam_ok = if_addrs.iter().any(|a| {
                        a.is_ipv4() == n.addr().is_ipv4()
                            && !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
                    });
                    if if_exists && !fam_ok {
                        let fam = if n.addr().is_ipv4() { "IPv4" } else { "IPv6" };
                        let msg = format!(
                            "VIP {n} is {fam} but interface `{interface}` has no {fam} address"
                        );
                        match host {
                            Host::Strict => d.error(Some(v.span()), msg),
                            Host::Lenient => d.warn(Some(v.span()), msg),
                        }
                    }
                    vips.push(n);
                }
            }
        }
    }

    // Peers: one address or a list (redundant links).
    let mut peers = vec![];
    if let Some(p) = &raw.peer {
        let items: Vec<Option<&str>> = match p.get_ref() {
            toml::Value::String(s) => vec![Some(s.as_str())],
            toml::Value::Array(a) if !a.is_empty() => a.iter().map(|v| v.as_str()).collect(),
            _ => vec![None],
        };
        for it in items {
            match it.and_then(|s| s.trim().parse::<IpAddr>().ok()) {
                None => d.error(
                    Some(p.span()),
                    "peer must be an IP address or a list of them, e.g. \"192.0.2.12\"",
                ),
                Some(a) if locals.iter().any(|(_, l)| *l == a) => d.error(
                    Some(p.span()),
                    format!("peer {a} is one of this host's own addresses: set the other node's address"),
                ),
                Some(a) if vips.iter().any(|v| v.addr() == a) => {
                    d.error(Some(p.span()), format!("peer {a} is also a VIP"))
                }
                Some(a) => peers.push(a),
            }
        }
    }

    let mut witness = vec![];
    if let Some(w) = &raw.witness {
        for a in w.get_ref() {
            match a.get_ref().trim().parse::<IpAddr>() {
                Ok(ip) => witness.push(ip),
                Err(_) => d.error(
                    Some(a.span()),
                    format!("witness `{}` is not an IP address", a.get_ref()),
                ),
            }
        }
    }

    let auth_key_file = raw
        .auth_key_file
        .as_ref()
        .map(|p| rel(base, p.get_ref()))
        .unwrap_or_default();

    let notify = raw.notify.as_ref().map(|n| {
        let p = rel(base, n.get_ref());
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o111 == 0 => d.error(
                Some(n.span()),
                format!("notify script {} is not executable (chmod +x)", p.display()),
            ),
            Ok(_) => {}
            Err(e) => {
                let msg = format!("notify script {}: {e}", p.display());
                match host {
                    Host::Strict => d.error(Some(n.span()), msg),
                    Host::Lenient => d.warn(Some(n.span()), msg),
                }
            }
        }
        p
    });

    Some(PairConfig {
        interface,
        router_id,
        peers,
        port,
        advert_interval,
        dead_after,
        preempt: raw.preempt.unwrap_or(true),
        preempt_delay,
        auth_key_file,
        vips,
        garp_count,
        garp_repeat_after,
        garp_refresh,
        witness,
        notify,
    })
}

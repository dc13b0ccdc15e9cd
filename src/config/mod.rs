//! Configuration: raw serde types (with spans) → validated types.
//!
//! Every problem is reported as `file:line:col: message`, all at once, so an
//! operator fixes a config in one pass. Unknown keys are errors.

mod diag;
mod pair;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use diag::{Diag, Diags};
pub use pair::{NodeConfig, PairConfig};

/// A fully validated configuration. Nothing is bound before this exists.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub node: NodeConfig,
    pub pair: PairConfig,
    pub listen: Vec<crate::balancer::config::ListenConfig>,
    pub services: Vec<crate::supervisor::config::ServiceConfig>,
    /// `[zookeeper]`: HiveServer2-style service discovery, kept by the master.
    pub zookeeper: Option<crate::zk::ZkConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Option<pair::RawNode>,
    pair: Spanned<pair::RawPair>,
    #[serde(default)]
    listen: Vec<crate::balancer::config::RawListen>,
    #[serde(default)]
    service: Vec<crate::supervisor::config::RawService>,
    #[serde(default)]
    zookeeper: Option<crate::zk::RawZk>,
}

/// How strictly to check things that depend on the host we run on
/// (interfaces, local addresses, files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `hapair run`: the interface must exist here.
    Strict,
    /// `hapair check` on another machine: host-specific problems are warnings.
    Lenient,
}

/// The outcome of a load: the config plus warnings, or every error.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diag>,
}

pub fn load(path: &Path, host: Host) -> Result<Loaded, Diags> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diags::one(Diag::file(path, format!("cannot read config: {e}"))))?;
    parse(path, &text, host)
}

pub fn parse(path: &Path, text: &str, host: Host) -> Result<Loaded, Diags> {
    let mut d = Diags::new(path, text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            d.error(e.span(), e.message().to_string());
            return Err(d);
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let node = pair::node(raw.node.unwrap_or_default(), base, &mut d);
    let pair = pair::pair(raw.pair, base, host, &mut d);
    let mut listen_warnings = vec![];
    let listen = match crate::balancer::config::validate_all_with(
        &raw.listen,
        &mut listen_warnings,
        host == Host::Lenient,
    ) {
        Ok(l) => l,
        Err(errs) => {
            for (span, msg) in errs {
                d.error(span, msg);
            }
            vec![]
        }
    };
    for (span, msg) in listen_warnings {
        d.warn(span, msg);
    }
    // `user` must exist where the services run; elsewhere it is not checked.
    let services = match crate::supervisor::config::validate_all(&raw.service, host == Host::Strict)
    {
        Ok(s) => s,
        Err(errs) => {
            for (span, msg) in errs {
                d.error(span, msg);
            }
            vec![]
        }
    };
    // Listener names are checked only against valid listen sections.
    let zookeeper = raw.zookeeper.as_ref().and_then(|z| {
        let names: Vec<&str> = listen.iter().map(|l| l.name.as_str()).collect();
        if names.is_empty() && !raw.listen.is_empty() {
            return None;
        }
        match z.validate(&names) {
            Ok(c) => Some(c),
            Err(errs) => {
                for (span, msg) in errs {
                    d.error(span, format!("zookeeper: {msg}"));
                }
                None
            }
        }
    });
    if d.has_errors() {
        return Err(d);
    }
    let (Some(node), Some(pair)) = (node, pair) else {
        return Err(d);
    };
    let warnings = d.take_warnings();
    Ok(Loaded {
        config: Config {
            path: path.to_path_buf(),
            node,
            pair,
            listen,
            services,
            zookeeper,
        },
        warnings,
    })
}

/// The longest duration a config may give, haproxy's limit too (2^31-1 ms, 24.8 days).
/// Much longer ones would overflow the monotonic clock when a timer adds them to it.
pub(crate) const MAX_DURATION: Duration = Duration::from_millis(i32::MAX as u64);

/// The error for a duration over [`MAX_DURATION`].
pub(crate) fn too_long(s: &str) -> String {
    format!("`{s}` is longer than the limit of 24.8 days (2^31-1 ms, as in haproxy)")
}

/// Parse "100ms", "5s", "1m30s".
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"100ms\" or \"5s\""))?;
    if d > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(d)
}

/// Addresses configured on this host, for "peer must not be ours".
pub(crate) fn local_addrs() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    addrs
        .filter_map(|a| {
            let sa = a.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            Some((a.interface_name, ip))
        })
        .collect()
}

impl Config {
    /// One-paragraph summary printed by `hapair check`.
    pub fn summary(&self) -> String {
        let p = &self.pair;
        let mut s = format!(
            "node {} priority {} admin {}\npair router_id {} on {} port {} peer {} advert {:?} dead after {} (= {:?}) preempt {}{}\nvips {}\n",
            self.node.name,
            self.node.priority,
            self.node.admin,
            p.router_id,
            p.interface,
            p.port,
            p.peers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
            p.advert_interval,
            p.dead_after,
            p.advert_interval * p.dead_after,
            p.preempt,
            if p.preempt_delay.is_zero() { String::new() } else { format!(" after {:?}", p.preempt_delay) },
            p.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
        );
        if !p.witness.is_empty() {
            s += &format!(
                "witness {}\n",
                p.witness
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for l in &self.listen {
            s += &format!(
                "listen {} on {} balance {} ({} servers)\n",
                l.name,
                l.bind,
                l.balance.as_str(),
                l.servers.len()
            );
        }
        for sv in &self.services {
            s += &format!("service {} ({:?})\n", sv.name, sv.run);
        }
        if let Some(z) = &self.zookeeper {
            s += &format!(
                "zookeeper {}{} namespace {} register {} ({})\n",
                z.hosts.join(","),
                z.chroot,
                z.namespace,
                z.register.as_str(),
                z.published
                    .iter()
                    .map(|p| if p.http {
                        format!("{} (http)", p.listener)
                    } else {
                        p.listener.clone()
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        s
    }

    pub fn admin(&self) -> SocketAddr {
        self.node.admin
    }
}

#[cfg(test)]
mod tests;

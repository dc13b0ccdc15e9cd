//! One `[[listen]]` section: the raw serde form and the validated form.
//!
//! The raw form keeps the byte span of every value it validates ([`toml::Spanned`]), so the
//! config loader can print `file:line:col: message` for each error that [`RawListen::validate`]
//! returns. Spans are offsets into the whole document that was handed to `toml::from_str`.
//!
//! Defaults (what a haproxy user expects, tuned for Impala's long queries):
//!
//! | key | default | note |
//! |---|---|---|
//! | `balance` | `roundrobin` | smooth weighted |
//! | `maxconn` | 4096 | per listener; past it, connections wait in the kernel backlog |
//! | `backlog` | 1024 | passed to listen(2); the kernel caps it at `net.core.somaxconn` |
//! | `connect_timeout` | 5s | per connect attempt |
//! | `client_timeout`, `server_timeout` | 3600s | idle timeouts; queries run long |
//! | `retries` | 3 | connect attempts after the first |
//! | `redispatch` | true | a retry goes to another server |
//! | `check.type` | `tcp` | `tcp` or `http` |
//! | `check.port` | the server's port | |
//! | `check.path` | `/healthz` | Impala's readiness endpoint |
//! | `check.expect` | 200 | HTTP status |
//! | `check.interval` | 2s | haproxy's `inter` |
//! | `check.timeout` | the interval | as haproxy without `timeout check` |
//! | `check.fall`, `check.rise` | 3, 2 | as haproxy |
//! | server `weight` | 1 | 0..=256; 0 = only when no other server is up |
//! | server `backup` | false | only when no other server is up |

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A config error: the byte span of the offending value (if known) and a message.
pub type ConfigError = (Option<Range<usize>>, String);

/// The largest weight a server may have, as in haproxy.
pub const MAX_WEIGHT: u32 = 256;

const DEFAULT_MAXCONN: usize = 4096;
const DEFAULT_BACKLOG: u32 = 1024;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_FALL: u32 = 3;
const DEFAULT_RISE: u32 = 2;
const DEFAULT_HTTP_PATH: &str = "/healthz";
const DEFAULT_HTTP_EXPECT: u16 = 200;

/// One `[[listen]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    #[serde(default)]
    pub balance: Option<Spanned<String>>,
    #[serde(default)]
    pub maxconn: Option<Spanned<i64>>,
    #[serde(default)]
    pub backlog: Option<Spanned<i64>>,
    #[serde(default)]
    pub connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub client_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub server_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub retries: Option<Spanned<i64>>,
    #[serde(default)]
    pub redispatch: Option<bool>,
    #[serde(default)]
    pub check: Option<RawCheck>,
    pub servers: Spanned<Vec<RawServer>>,
}

/// The `check = { ... }` table of a listen section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(default, rename = "type")]
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<i64>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub expect: Option<Spanned<i64>>,
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub fall: Option<Spanned<i64>>,
    #[serde(default)]
    pub rise: Option<Spanned<i64>>,
}

/// One entry of `servers = [ ... ]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub name: Spanned<String>,
    pub addr: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub backup: Option<bool>,
}

/// How a listener picks a server for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Smooth weighted round-robin (nginx style): honours weights without bursts.
    RoundRobin,
    /// Fewest active connections (relative to weight); ties broken round-robin.
    LeastConn,
    /// Rendezvous hash of the client IP: one client sticks to one server.
    Source,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "roundrobin",
            Balance::LeastConn => "leastconn",
            Balance::Source => "source",
        }
    }
}

/// A validated listen section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub balance: Balance,
    pub maxconn: usize,
    pub backlog: u32,
    pub connect_timeout: Duration,
    pub client_timeout: Duration,
    pub server_timeout: Duration,
    pub retries: u32,
    pub redispatch: bool,
    pub check: Option<CheckConfig>,
    pub servers: Vec<ServerConfig>,
}

/// A validated server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    /// The address as written (may be `host:port`); shown on the status page.
    pub addr_text: String,
    /// The address resolved at validation time (start or reload).
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
}

/// A validated active check of a listen section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Port to check; `None` = the server's own port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http { path: String, expect: u16 },
}

impl CheckConfig {
    /// The address the check of `server` connects to.
    pub fn target(&self, server: SocketAddr) -> SocketAddr {
        match self.port {
            Some(p) => SocketAddr::new(server.ip(), p),
            None => server,
        }
    }
}

/// Collects errors so that one pass reports all of them.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push<T>(&mut self, s: &Spanned<T>, msg: impl Into<String>) {
        self.0.push((Some(s.span()), msg.into()));
    }
}

fn duration(
    errs: &mut Errors,
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
) -> Duration {
    let Some(v) = v else { return default };
    match humantime::parse_duration(v.get_ref().trim()) {
        Ok(d) if d > crate::config::MAX_DURATION => {
            errs.push(
                v,
                format!("{key}: {}", crate::config::too_long(v.get_ref())),
            );
            default
        }
        Ok(d) => d,
        Err(e) => {
            errs.push(
                v,
                format!(
                    "{key}: invalid duration {:?}: {e} (write e.g. \"100ms\", \"5s\")",
                    v.get_ref()
                ),
            );
            default
        }
    }
}

fn int_in<T: TryFrom<i64> + Copy>(
    errs: &mut Errors,
    v: &Option<Spanned<i64>>,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
    default: T,
) -> T {
    let Some(v) = v else { return default };
    let n = *v.get_ref();
    if !range.contains(&n) {
        errs.push(
            v,
            format!(
                "{key}: {n} is out of range {}..={}",
                range.start(),
                range.end()
            ),
        );
        return default;
    }
    T::try_from(n).unwrap_or(default)
}

/// Resolves `host:port` or `ip:port` to one address (the first IPv4 one if any).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

impl RawListen {
    /// Validates this section and resolves its server names (blocking DNS lookups).
    pub fn validate(&self) -> Result<ListenConfig, Vec<ConfigError>> {
        self.validate_with(&mut Vec::new(), false)
    }

    /// Like [`RawListen::validate`]. With `lenient` (`hapair check` on a
    /// machine that is not a proxy), a server name that does not resolve here
    /// is a warning pushed to `warnings`, not an error.
    pub fn validate_with(
        &self,
        warnings: &mut Vec<ConfigError>,
        lenient: bool,
    ) -> Result<ListenConfig, Vec<ConfigError>> {
        let mut errs = Errors::default();
        let name = self.name.get_ref().trim().to_string();
        if name.is_empty() {
            errs.push(&self.name, "name: must not be empty");
        }
        let bind = match self.bind.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                errs.push(&self.bind, format!("bind: {:?} has port 0, which would listen on a random port; give the port clients connect to", self.bind.get_ref()));
                a
            }
            Ok(a) => a,
            Err(_) => {
                errs.push(&self.bind, format!("bind: {:?} is not an address:port (e.g. \"0.0.0.0:21050\", \"[::]:21050\")", self.bind.get_ref()));
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        let balance = match self.balance.as_ref().map(|b| (b, b.get_ref().as_str())) {
            None | Some((_, "roundrobin")) => Balance::RoundRobin,
            Some((_, "leastconn")) => Balance::LeastConn,
            Some((_, "source")) => Balance::Source,
            Some((b, other)) => {
                errs.push(
                    b,
                    format!(
                        "balance: unknown algorithm {other:?} (roundrobin | leastconn | source)"
                    ),
                );
                Balance::RoundRobin
            }
        };
        let maxconn = int_in(
            &mut errs,
            &self.maxconn,
            "maxconn",
            1..=1_000_000,
            DEFAULT_MAXCONN,
        );
        let backlog = int_in(
            &mut errs,
            &self.backlog,
            "backlog",
            1..=65535,
            DEFAULT_BACKLOG,
        );
        let connect_timeout = duration(
            &mut errs,
            &self.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        );
        let client_timeout = duration(
            &mut errs,
            &self.client_timeout,
            "client_timeout",
            DEFAULT_IDLE_TIMEOUT,
        );
        let server_timeout = duration(
            &mut errs,
            &self.server_timeout,
            "server_timeout",
            DEFAULT_IDLE_TIMEOUT,
        );
        for (d, v, key) in [
            (connect_timeout, &self.connect_timeout, "connect_timeout"),
            (client_timeout, &self.client_timeout, "client_timeout"),
            (server_timeout, &self.server_timeout, "server_timeout"),
        ] {
            if let (true, Some(v)) = (d.is_zero(), v) {
                errs.push(v, format!("{key}: must be greater than 0"));
            }
        }
        let retries = int_in(
            &mut errs,
            &self.retries,
            "retries",
            0..=100,
            DEFAULT_RETRIES,
        );
        let redispatch = self.redispatch.unwrap_or(true);
        let check = self.check.as_ref().map(|c| c.validate(&mut errs));

        let mut servers: Vec<ServerConfig> = Vec::new();
        if self.servers.get_ref().is_empty() {
            errs.push(
                &self.servers,
                "servers: a listen section needs at least one server",
            );
        }
        for s in self.servers.get_ref() {
            let sname = s.name.get_ref().trim().to_string();
            if sname.is_empty() {
                errs.push(&s.name, "server name: must not be empty");
            } else if servers.iter().any(|o| o.name == sname) {
                errs.push(
                    &s.name,
                    format!("server name: {sname:?} appears twice in listen {name:?}"),
                );
            }
            let addr = match resolve(s.addr.get_ref()) {
                Ok(a) if a.port() != 0 => a,
                Ok(_) => {
                    errs.push(&s.addr, "server addr: port must not be 0");
                    continue;
                }
                Err(e) => {
                    match unresolved_port(s.addr.get_ref()) {
                        Some(port) if lenient => {
                            warnings.push((
                            Some(s.addr.span()),
                            format!("server addr: {e} on this host (hapair run resolves it at start)"),
                        ));
                            SocketAddr::from(([0, 0, 0, 0], port))
                        }
                        _ => {
                            errs.push(&s.addr, format!("server addr: {e} (write host:port)"));
                            continue;
                        }
                    }
                }
            };
            let weight = int_in(&mut errs, &s.weight, "weight", 0..=MAX_WEIGHT as i64, 1u32);
            servers.push(ServerConfig {
                name: sname,
                addr_text: s.addr.get_ref().clone(),
                addr,
                weight,
                backup: s.backup.unwrap_or(false),
            });
        }
        if !errs.0.is_empty() {
            return Err(errs.0);
        }
        Ok(ListenConfig {
            name,
            bind,
            balance,
            maxconn,
            backlog,
            connect_timeout,
            client_timeout,
            server_timeout,
            retries,
            redispatch,
            check,
            servers,
        })
    }
}

impl RawCheck {
    fn validate(&self, errs: &mut Errors) -> CheckConfig {
        let http = match self.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            None | Some((_, "tcp")) => false,
            Some((_, "http")) => true,
            Some((k, other)) => {
                errs.push(
                    k,
                    format!("check.type: unknown check {other:?} (tcp | http)"),
                );
                false
            }
        };
        if !http {
            if let Some(p) = &self.path {
                errs.push(p, "check.path: only an http check has a path");
            }
            if let Some(e) = &self.expect {
                errs.push(e, "check.expect: only an http check has an expected status");
            }
        }
        let port = self
            .port
            .as_ref()
            .map(|_| int_in(errs, &self.port, "check.port", 1..=65535, 1u16));
        let path = match &self.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                errs.push(p, "check.path: must start with '/'");
                DEFAULT_HTTP_PATH.to_string()
            }
            Some(p)
                if p.get_ref()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()) =>
            {
                errs.push(
                    p,
                    "check.path: must not contain spaces or control characters",
                );
                DEFAULT_HTTP_PATH.to_string()
            }
            Some(p) => p.get_ref().clone(),
            None => DEFAULT_HTTP_PATH.to_string(),
        };
        let expect = int_in(
            errs,
            &self.expect,
            "check.expect",
            100..=599,
            DEFAULT_HTTP_EXPECT,
        );
        let interval = duration(
            errs,
            &self.interval,
            "check.interval",
            DEFAULT_CHECK_INTERVAL,
        );
        if let (true, Some(v)) = (interval < Duration::from_millis(10), &self.interval) {
            errs.push(v, "check.interval: must be at least 10ms");
        }
        let timeout = duration(errs, &self.timeout, "check.timeout", interval);
        if let (true, Some(v)) = (timeout.is_zero(), &self.timeout) {
            errs.push(v, "check.timeout: must be greater than 0");
        }
        let fall = int_in(errs, &self.fall, "check.fall", 1..=1000, DEFAULT_FALL);
        let rise = int_in(errs, &self.rise, "check.rise", 1..=1000, DEFAULT_RISE);
        CheckConfig {
            kind: if http {
                CheckKind::Http { path, expect }
            } else {
                CheckKind::Tcp
            },
            port,
            interval,
            timeout,
            fall,
            rise,
        }
    }
}

/// `host:port` whose host is a name (not an address) with a valid port.
fn unresolved_port(addr: &str) -> Option<u16> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let name_like = !host.is_empty()
        && host.parse::<std::net::IpAddr>().is_err()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    name_like.then_some(port)
}

/// Validates several listen sections and the rules that span them: unique names and
/// distinct bind addresses.
pub fn validate_all(raw: &[RawListen]) -> Result<Vec<ListenConfig>, Vec<ConfigError>> {
    validate_all_with(raw, &mut Vec::new(), false)
}

/// [`validate_all`] with the lenient name resolution of [`RawListen::validate_with`].
pub fn validate_all_with(
    raw: &[RawListen],
    warnings: &mut Vec<ConfigError>,
    lenient: bool,
) -> Result<Vec<ListenConfig>, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut out: Vec<ListenConfig> = Vec::new();
    for r in raw {
        match r.validate_with(warnings, lenient) {
            Ok(l) => {
                if out.iter().any(|o| o.name == l.name) {
                    errs.push((
                        Some(r.name.span()),
                        format!("name: listen {:?} is defined twice", l.name),
                    ));
                } else if let Some(o) = out.iter().find(|o| o.bind == l.bind) {
                    errs.push((
                        Some(r.bind.span()),
                        format!("bind: {} is already bound by listen {:?}", l.bind, o.name),
                    ));
                }
                out.push(l);
            }
            Err(mut e) => errs.append(&mut e),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        listen: Vec<RawListen>,
    }

    fn parse(s: &str) -> Result<Vec<ListenConfig>, Vec<ConfigError>> {
        let d: Doc = toml::from_str(s).map_err(|e| vec![(e.span(), e.message().to_string())])?;
        validate_all(&d.listen)
    }

    #[test]
    fn design_example_parses() {
        let l = parse(
            r#"
[[listen]]
name = "impala_hs2"
bind = "0.0.0.0:21050"
balance = "leastconn"
maxconn = 65536
backlog = 2048
connect_timeout = "5s"
client_timeout = "3600s"
server_timeout = "3600s"
retries = 3
redispatch = true
check = { type = "http", port = 25000, path = "/healthz", interval = "1s", timeout = "500ms", fall = 2, rise = 2 }
servers = [
  { name = "impala1", addr = "127.0.0.1:21050" },
  { name = "impala2", addr = "localhost:21050", weight = 2 },
]
"#,
        )
        .unwrap();
        let l = &l[0];
        assert_eq!(l.balance, Balance::LeastConn);
        assert_eq!(l.maxconn, 65536);
        let c = l.check.as_ref().unwrap();
        assert_eq!(
            c.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                expect: 200
            }
        );
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.target(l.servers[0].addr).port(), 25000);
        assert_eq!(l.servers[1].weight, 2);
        assert_eq!(l.servers[1].addr.port(), 21050);
    }

    #[test]
    fn defaults() {
        let l = parse("[[listen]]\nname='a'\nbind='127.0.0.1:1'\nservers=[{name='s',addr='127.0.0.1:2'}]\ncheck={}\n").unwrap();
        let l = &l[0];
        assert_eq!(l.balance, Balance::RoundRobin);
        assert!(l.redispatch);
        assert_eq!(l.retries, 3);
        assert_eq!(l.connect_timeout, Duration::from_secs(5));
        assert_eq!(l.client_timeout, Duration::from_secs(3600));
        let c = l.check.as_ref().unwrap();
        assert_eq!(
            (c.kind.clone(), c.interval, c.timeout, c.fall, c.rise),
            (
                CheckKind::Tcp,
                Duration::from_secs(2),
                Duration::from_secs(2),
                3,
                2
            )
        );
    }

    #[test]
    fn errors_point_at_the_value() {
        let src = "[[listen]]\nname='a'\nbind='nope'\nbalance='random'\nconnect_timeout='5 parsecs'\nservers=[{name='s',addr='127.0.0.1:2',weight=999},{name='s',addr='127.0.0.1:3'}]\n";
        let errs = parse(src).unwrap_err();
        let at = |needle: &str| {
            errs.iter()
                .find(|(_, m)| m.contains(needle))
                .and_then(|(s, _)| s.clone())
                .map(|s| &src[s])
        };
        assert_eq!(at("bind:"), Some("'nope'"));
        assert_eq!(at("balance:"), Some("'random'"));
        assert_eq!(at("connect_timeout:"), Some("'5 parsecs'"));
        assert_eq!(at("weight:"), Some("999"));
        assert_eq!(at("appears twice"), Some("'s'"));
    }

    #[test]
    fn unknown_keys_and_duplicates_are_errors() {
        assert!(parse("[[listen]]\nname='a'\nbind='127.0.0.1:1'\nmode='tcp'\nservers=[{name='s',addr='127.0.0.1:2'}]\n").is_err());
        assert!(parse("[[listen]]\nname='a'\nbind='127.0.0.1:1'\nservers=[{name='s',addr='127.0.0.1:2',check=true}]\n").is_err());
        let e = parse("[[listen]]\nname='a'\nbind='127.0.0.1:1'\nservers=[{name='s',addr='127.0.0.1:2'}]\n[[listen]]\nname='a'\nbind='127.0.0.1:3'\nservers=[{name='s',addr='127.0.0.1:2'}]\n").unwrap_err();
        assert!(e[0].1.contains("defined twice"), "{e:?}");
        let e = parse("[[listen]]\nname='a'\nbind='127.0.0.1:1'\nservers=[{name='s',addr='no-such-host.invalid:2'}]\n").unwrap_err();
        assert!(e[0].1.contains("cannot resolve"), "{e:?}");
    }
}

//! The `[zookeeper]` section: raw serde form (with spans) and the validated [`ZkConfig`].
//!
//! | key | default | note |
//! |---|---|---|
//! | `quorum` | required | `"zk1:2181,zk2,zk3:2182/chroot"`; a host without a port gets 2181 |
//! | `namespace` | `hiveserver2` | the znode under which servers are listed (`zooKeeperNamespace=`) |
//! | `session_timeout` | `10s` | also how long a crashed master's znodes outlive it |
//! | `register` | `servers` | `servers`: one znode per healthy server; `vip`: one per listener at VIP:port |
//! | `listeners` | `[]` | `[[listen]]` names published in binary (HS2 Thrift over TCP) mode |
//! | `http_listeners` | `[]` | `[[listen]]` names published in HTTP mode (HS2 over HTTP) |
//! | `http_path` | `cliservice` | `hive.server2.thrift.http.path` for the HTTP listeners |
//! | `authentication` | `NONE` | `hive.server2.authentication`: NONE, NOSASL, KERBEROS, LDAP, PAM, CUSTOM, SAML, JWT |
//! | `principal` | none | `hive.server2.authentication.kerberos.principal`; only with KERBEROS |
//! | `advertise` | the VIP | `vip` mode: the host name published instead of the VIP address |
//!
//! At least one of `listeners` and `http_listeners` must name a listener.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A config error: the byte span of the offending value (if known) and a message.
pub type ConfigError = (Option<Range<usize>>, String);

pub const DEFAULT_NAMESPACE: &str = "hiveserver2";
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HTTP_PATH: &str = "cliservice";
pub const DEFAULT_PORT: u16 = 2181;
/// Values of `hive.server2.authentication` that HiveServer2 knows.
pub const AUTHENTICATIONS: [&str; 8] = [
    "NONE", "NOSASL", "KERBEROS", "LDAP", "PAM", "CUSTOM", "SAML", "JWT",
];

/// `[zookeeper]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZk {
    pub quorum: Spanned<String>,
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub session_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub register: Option<Spanned<String>>,
    #[serde(default)]
    pub listeners: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub http_listeners: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub http_path: Option<Spanned<String>>,
    #[serde(default)]
    pub authentication: Option<Spanned<String>>,
    #[serde(default)]
    pub principal: Option<Spanned<String>>,
    #[serde(default)]
    pub advertise: Option<Spanned<String>>,
}

/// What the master publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Register {
    /// One znode per healthy, enabled server of each published listener.
    Servers,
    /// One znode per published listener, at VIP:listener port.
    Vip,
}

impl Register {
    pub fn as_str(self) -> &'static str {
        match self {
            Register::Servers => "servers",
            Register::Vip => "vip",
        }
    }
}

/// A published listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The `[[listen]]` name.
    pub listener: String,
    /// HS2 over HTTP (`http_listeners`) rather than binary Thrift.
    pub http: bool,
}

/// The validated `[zookeeper]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// The connect string as written (hosts, ports and chroot), given to the client.
    pub quorum: String,
    /// `host:port` of every server of the quorum, for display.
    pub hosts: Vec<String>,
    /// The chroot suffix, e.g. `/impala`; empty when none.
    pub chroot: String,
    /// The namespace znode name, without slashes.
    pub namespace: String,
    pub session_timeout: Duration,
    pub register: Register,
    pub published: Vec<Published>,
    pub http_path: String,
    pub authentication: String,
    pub principal: Option<String>,
    pub advertise: Option<String>,
}

impl ZkConfig {
    /// The namespace node's path as the client sees it (below the chroot).
    pub fn namespace_path(&self) -> String {
        format!("/{}", self.namespace)
    }
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

/// Splits `zk1:2181,zk2/chroot` into `host:port` entries and the chroot.
pub fn parse_quorum(q: &str) -> Result<(Vec<String>, String), String> {
    let q = q.trim();
    let (hosts, chroot) = match q.find('/') {
        Some(i) => (&q[..i], &q[i..]),
        None => (q, ""),
    };
    if chroot.len() > 1 && (chroot.ends_with('/') || chroot.contains("//")) {
        return Err(format!(
            "chroot {chroot:?} must look like \"/path\" (no empty segments, no trailing slash)"
        ));
    }
    let chroot = if chroot == "/" { "" } else { chroot };
    let mut out = vec![];
    for h in hosts.split(',') {
        let h = h.trim();
        if h.is_empty() {
            return Err("empty host in the quorum; write e.g. \"zk1:2181,zk2:2181\"".into());
        }
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            let Some((host, tail)) = rest.split_once(']') else {
                return Err(format!("{h:?}: missing ']'"));
            };
            let port = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| format!("{h:?}: bad port"))?,
                ),
            };
            (host, port)
        } else {
            match h.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{h:?}: empty host name"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{h:?}: {p:?} is not a port (1..=65535)")),
            },
        };
        if host.contains(':') {
            out.push(format!("[{host}]:{port}"));
        } else {
            out.push(format!("{host}:{port}"));
        }
    }
    Ok((out, chroot.to_string()))
}

impl RawZk {
    /// Validates the section against the names of the `[[listen]]` sections.
    pub fn validate(&self, listen_names: &[&str]) -> Result<ZkConfig, Vec<ConfigError>> {
        let mut errs: Vec<ConfigError> = vec![];
        let (hosts, chroot) = match parse_quorum(self.quorum.get_ref()) {
            Ok(x) => x,
            Err(e) => {
                errs.push((span(&self.quorum), format!("quorum: {e}")));
                (vec![], String::new())
            }
        };
        let namespace = match &self.namespace {
            None => DEFAULT_NAMESPACE.to_string(),
            Some(n) => {
                let v = n.get_ref().trim().trim_start_matches('/').to_string();
                if v.is_empty() || v.contains('/') || v == "zookeeper" {
                    errs.push((
                        span(n),
                        format!(
                            "namespace: {:?} must be one znode name without '/', e.g. \"impala-ha\"",
                            n.get_ref()
                        ),
                    ));
                }
                v
            }
        };
        let session_timeout = match &self.session_timeout {
            None => DEFAULT_SESSION_TIMEOUT,
            Some(s) => match humantime::parse_duration(s.get_ref().trim()) {
                Ok(d) if d > crate::config::MAX_DURATION => {
                    let msg = crate::config::too_long(s.get_ref());
                    errs.push((span(s), format!("session_timeout: {msg}")));
                    DEFAULT_SESSION_TIMEOUT
                }
                Ok(d) if d >= Duration::from_millis(100) => d,
                Ok(_) => {
                    errs.push((span(s), "session_timeout: must be at least 100ms".into()));
                    DEFAULT_SESSION_TIMEOUT
                }
                Err(e) => {
                    errs.push((
                        span(s),
                        format!(
                            "session_timeout: invalid duration {:?}: {e} (write e.g. \"10s\")",
                            s.get_ref()
                        ),
                    ));
                    DEFAULT_SESSION_TIMEOUT
                }
            },
        };
        let register = match self.register.as_ref().map(|r| (r, r.get_ref().as_str())) {
            None | Some((_, "servers")) => Register::Servers,
            Some((_, "vip")) => Register::Vip,
            Some((r, other)) => {
                errs.push((
                    span(r),
                    format!("register: unknown mode {other:?} (servers | vip)"),
                ));
                Register::Servers
            }
        };
        let mut published: Vec<Published> = vec![];
        for (list, http, key) in [
            (&self.listeners, false, "listeners"),
            (&self.http_listeners, true, "http_listeners"),
        ] {
            let Some(list) = list else { continue };
            for name in list.get_ref() {
                let n = name.get_ref().as_str();
                if !listen_names.contains(&n) {
                    let known = if listen_names.is_empty() {
                        "there are no [[listen]] sections".to_string()
                    } else {
                        format!("known: {}", listen_names.join(", "))
                    };
                    errs.push((
                        span(name),
                        format!("{key}: no [[listen]] named {n:?} ({known})"),
                    ));
                } else if published.iter().any(|p| p.listener == n) {
                    errs.push((
                        span(name),
                        format!("{key}: listener {n:?} is published twice"),
                    ));
                } else {
                    published.push(Published {
                        listener: n.to_string(),
                        http,
                    });
                }
            }
        }
        if published.is_empty() && errs.is_empty() {
            errs.push((
                span(&self.quorum),
                "listeners: name at least one [[listen]] section to publish (listeners or http_listeners)".into(),
            ));
        }
        let http_path = match &self.http_path {
            None => DEFAULT_HTTP_PATH.to_string(),
            Some(p) => {
                let v = p.get_ref().trim().trim_start_matches('/').to_string();
                if v.is_empty() || v.contains(';') || v.contains('=') {
                    errs.push((
                        span(p),
                        "http_path: must be a non-empty path without ';' or '='".into(),
                    ));
                }
                v
            }
        };
        let authentication = match &self.authentication {
            None => "NONE".to_string(),
            Some(a) => {
                let v = a.get_ref().trim().to_ascii_uppercase();
                if !AUTHENTICATIONS.contains(&v.as_str()) {
                    errs.push((
                        span(a),
                        format!(
                            "authentication: unknown {:?} ({})",
                            a.get_ref(),
                            AUTHENTICATIONS.join(" | ")
                        ),
                    ));
                }
                v
            }
        };
        let principal = match &self.principal {
            None => None,
            Some(p) => {
                let v = p.get_ref().trim().to_string();
                if v.is_empty() || v.contains(';') || v.contains('=') {
                    errs.push((
                        span(p),
                        "principal: must be e.g. \"impala/_HOST@EXAMPLE.ORG\" (no ';' or '=')"
                            .into(),
                    ));
                } else if authentication != "KERBEROS" {
                    errs.push((
                        span(p),
                        "principal: is published only with authentication = \"KERBEROS\"".into(),
                    ));
                }
                Some(v)
            }
        };
        let advertise = match &self.advertise {
            None => None,
            Some(a) => {
                let v = a.get_ref().trim().to_string();
                if v.is_empty() || v.contains([';', '=', '/', ':']) {
                    errs.push((
                        span(a),
                        "advertise: must be a host name or an IPv4 address".into(),
                    ));
                } else if register != Register::Vip {
                    errs.push((
                        span(a),
                        "advertise: applies only to register = \"vip\"".into(),
                    ));
                }
                Some(v)
            }
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(ZkConfig {
            quorum: self.quorum.get_ref().trim().to_string(),
            hosts,
            chroot,
            namespace,
            session_timeout,
            register,
            published,
            http_path,
            authentication,
            principal,
            advertise,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        zookeeper: RawZk,
    }

    fn parse(text: &str) -> Result<ZkConfig, Vec<ConfigError>> {
        let d: Doc = toml::from_str(text).expect("toml");
        d.zookeeper.validate(&["impala_hs2", "impala_http"])
    }

    #[test]
    fn defaults() {
        let c =
            parse("[zookeeper]\nquorum = \"zk1,zk2:2182/impala\"\nlisteners = [\"impala_hs2\"]\n")
                .unwrap();
        assert_eq!(c.hosts, ["zk1:2181", "zk2:2182"]);
        assert_eq!(c.chroot, "/impala");
        assert_eq!(c.namespace, "hiveserver2");
        assert_eq!(c.session_timeout, Duration::from_secs(10));
        assert_eq!(c.register, Register::Servers);
        assert_eq!(c.authentication, "NONE");
        assert_eq!(
            c.published,
            [Published {
                listener: "impala_hs2".into(),
                http: false
            }]
        );
    }

    #[test]
    fn unknown_listener_is_an_error_at_its_position() {
        let text = "[zookeeper]\nquorum = \"zk1\"\nlisteners = [\"impala_hs2\", \"nope\"]\n";
        let errs = parse(text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let (sp, msg) = &errs[0];
        assert_eq!(&text[sp.clone().unwrap()], "\"nope\"");
        assert!(msg.contains("no [[listen]] named \"nope\""), "{msg}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let r: Result<Doc, _> =
            toml::from_str("[zookeeper]\nquorum = \"zk1\"\nlisteners = []\nfoo = 1\n");
        assert!(r.is_err());
    }

    #[test]
    fn bad_values_are_reported_together() {
        let errs = parse(
            "[zookeeper]\nquorum = \"zk1:99999\"\nregister = \"both\"\nauthentication = \"magic\"\n\
             principal = \"impala/_HOST@R\"\nlisteners = [\"impala_hs2\"]\nhttp_listeners = [\"impala_hs2\"]\n",
        )
        .unwrap_err();
        let msgs: Vec<&str> = errs.iter().map(|(_, m)| m.as_str()).collect();
        assert!(msgs.iter().any(|m| m.starts_with("quorum:")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("register:")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.starts_with("authentication:")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.starts_with("principal:")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("published twice")),
            "{msgs:?}"
        );
    }

    #[test]
    fn quorum_forms() {
        assert_eq!(
            parse_quorum("[::1]:2181,[fe80::1]").unwrap(),
            (
                vec!["[::1]:2181".into(), "[fe80::1]:2181".into()],
                String::new()
            )
        );
        assert!(parse_quorum("zk1,,zk2").is_err());
        assert!(parse_quorum("zk1/a/").is_err());
        assert_eq!(parse_quorum("zk1/").unwrap().1, "");
    }
}

//! `hapair status` and `hapair ctl`: a small blocking client of the admin API.
//!
//! The admin address and the token file come from the config (`node.admin`,
//! `node.admin_token_file`), unless `--admin` / `--token-file` override them. Errors say what
//! to do next: whether the daemon runs, which token file to check.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::http::percent_encode;
use super::status::age;
use crate::config::{self, Host};

/// Connect and whole-exchange deadline.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (the status of a big balancer is well under this).
const MAX_ANSWER: u64 = 8 << 20;

/// Where to reach the admin API, and with which token.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// The config it came from, for messages.
    pub config: Option<PathBuf>,
}

impl Target {
    /// From the config file, with optional overrides. The config is read leniently (this is not
    /// the daemon's host check); with `--admin` a missing or broken config is not an error.
    pub fn resolve(
        config: &Path,
        admin: Option<SocketAddr>,
        token_file: Option<PathBuf>,
    ) -> Result<Target, String> {
        match config::load(config, Host::Lenient) {
            Ok(l) => Ok(Target {
                addr: admin.unwrap_or(l.config.node.admin),
                token_file: token_file.or(l.config.node.admin_token_file),
                config: Some(config.to_path_buf()),
            }),
            Err(d) => match admin {
                Some(addr) => Ok(Target {
                    addr,
                    token_file,
                    config: None,
                }),
                None => Err(format!(
                    "{}\n(pass -c FILE for another config, or --admin ADDR to skip the config)",
                    d.to_string().trim_end()
                )),
            },
        }
    }
}

/// A failed exchange, worded for an operator.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One HTTP/1.1 exchange; returns the status code and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> Result<(u16, String), ClientError> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| {
        ClientError(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => format!(
                "is hapair running? admin at {addr} refused the connection \
                 (check `systemctl status hapair` and node.admin)"
            ),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("admin at {addr} did not answer within {TIMEOUT:?}: is the address right?")
            }
            _ => format!("cannot reach the admin at {addr}: {e}"),
        })
    })?;
    let io = |e: std::io::Error| ClientError(format!("admin at {addr}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hapair-cli/{}\r\n\
         Connection: close\r\nContent-Length: 0\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = token {
        let _ = write!(head, "Authorization: Bearer {t}\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut buf).map_err(|e| {
        ClientError(match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("admin at {addr} did not answer within {TIMEOUT:?}")
            }
            _ => format!("admin at {addr}: {e}"),
        })
    })?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        ClientError(format!(
            "admin at {addr} sent no HTTP answer: is it hapair?"
        ))
    })?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError(format!("admin at {addr} sent a bad status line")))?;
    Ok((code, body.to_string()))
}

/// Fetch `/status` as JSON.
pub fn fetch_status(addr: SocketAddr) -> Result<Value, ClientError> {
    let (code, body) = request(addr, "GET", "/status", None)?;
    if code != 200 {
        return Err(ClientError(format!(
            "admin at {addr} answered {code}: {}",
            body.trim()
        )));
    }
    serde_json::from_str(&body)
        .map_err(|e| ClientError(format!("admin at {addr}: /status is not JSON: {e}")))
}

/// `hapair status`.
pub fn status(t: &Target, json: bool) -> ExitCode {
    match fetch_status(t.addr) {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", table(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hapair status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `hapair ctl` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    StepDown,
    Drain(String),
    Enable(String),
    Disable(String),
    Restart(String),
}

impl Action {
    /// The request target.
    pub fn target(&self, listener: Option<&str>) -> String {
        let server = |verb: &str, s: &str| {
            let mut t = format!("/control/{verb}?server={}", percent_encode(s));
            if let Some(l) = listener {
                let _ = write!(t, "&listener={}", percent_encode(l));
            }
            t
        };
        match self {
            Action::StepDown => "/control/step-down".into(),
            Action::Drain(s) => server("drain", s),
            Action::Enable(s) => server("enable", s),
            Action::Disable(s) => server("disable", s),
            Action::Restart(s) => format!("/control/restart?service={}", percent_encode(s)),
        }
    }
}

/// `hapair ctl`.
pub fn ctl(t: &Target, action: &Action, listener: Option<&str>) -> ExitCode {
    match run_ctl(t, action, listener) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hapair ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_ctl(t: &Target, action: &Action, listener: Option<&str>) -> Result<String, ClientError> {
    let where_ = t
        .config
        .as_ref()
        .map(|c| format!(" in {}", c.display()))
        .unwrap_or_default();
    let Some(file) = &t.token_file else {
        return Err(ClientError(format!(
            "no admin token: set node.admin_token_file{where_} (or pass --token-file FILE)"
        )));
    };
    let token = std::fs::read_to_string(file).map_err(|e| {
        ClientError(format!(
            "cannot read the admin token {}: {e} (run as root, or pass --token-file FILE)",
            file.display()
        ))
    })?;
    let (code, body) = request(t.addr, "POST", &action.target(listener), Some(token.trim()))?;
    let msg = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    match code {
        200 => Ok(msg),
        401 => Err(ClientError(format!(
            "401: wrong admin token (see node.admin_token_file{where_}: {} must match the daemon's)",
            file.display()
        ))),
        403 => Err(ClientError(format!("403: {msg}"))),
        _ => Err(ClientError(format!("{code}: {msg}"))),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// The compact table `hapair status` prints.
pub fn table(v: &Value) -> String {
    let mut o = String::new();
    let p = &v["pair"];
    let now = u(v, "now_ms");
    let since = u(p, "role_since_ms");
    let since = if since > 0 {
        format!(" for {}", age(now.saturating_sub(since)))
    } else {
        String::new()
    };
    let w = p["weight"].as_i64().unwrap_or(0);
    let _ = writeln!(
        o,
        "node      {}  {}{}  priority {} (configured {}, weight {w:+})",
        s(v, "node"),
        s(p, "role").to_uppercase(),
        since,
        u(p, "priority"),
        u(p, "configured_priority"),
    );
    match p["peer"].as_object() {
        None => {
            let _ = writeln!(o, "peer      none heard");
        }
        Some(_) => {
            let peer = &p["peer"];
            let _ = writeln!(
                o,
                "peer      {} {}  {}  priority {}  heard {} ago  {}",
                s(peer, "name"),
                s(peer, "addr"),
                s(peer, "role").to_uppercase(),
                u(peer, "priority"),
                age(u(peer, "last_heard_ms_ago")),
                if peer["alive"].as_bool() == Some(true) {
                    "alive"
                } else {
                    "DEAD"
                },
            );
        }
    }
    let vips: Vec<&str> = p["vips"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "vips      {}  ({})",
        vips.join(", "),
        if p["vips_held"].as_bool() == Some(true) {
            "held here"
        } else {
            "not held here"
        }
    );
    let _ = writeln!(
        o,
        "heartbeat sent {} received {} late {} failovers {}",
        u(p, "sent"),
        u(p, "received"),
        u(p, "late_adverts"),
        u(p, "failovers")
    );
    for l in v["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\nlisten {} {} {}  active {} total {}",
            s(l, "name"),
            s(l, "bind"),
            s(l, "balance"),
            u(l, "active"),
            u(l, "total")
        );
        let mut rows = vec![[
            "SERVER".to_string(),
            "ADDRESS".into(),
            "STATE".into(),
            "ACTIVE".into(),
            "TOTAL".into(),
            "FAILS".into(),
            "CHECK".into(),
        ]];
        for sv in l["servers"].as_array().into_iter().flatten() {
            let check = match sv["last_check"].as_object() {
                None => "-".to_string(),
                Some(c) if c.get("ok").and_then(Value::as_bool) == Some(true) => "ok".into(),
                Some(c) => format!(
                    "failed: {}",
                    c.get("detail").and_then(Value::as_str).unwrap_or("")
                ),
            };
            rows.push([
                s(sv, "name").into(),
                s(sv, "addr").into(),
                s(sv, "state").into(),
                u(sv, "active").to_string(),
                u(sv, "total").to_string(),
                u(sv, "connect_failures").to_string(),
                check,
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                let _ = write!(line, "  {:w$}", cell, w = widths[i]);
            }
            let _ = writeln!(o, "{}", line.trim_end());
        }
    }
    let services = v["services"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if services.is_empty() {
        let _ = writeln!(o, "\nservices  none supervised");
    } else {
        let _ = writeln!(o, "\nservices");
        for sv in services {
            let _ = writeln!(
                o,
                "  {} {} pid {} restarts {}",
                s(sv, "name"),
                s(sv, "state"),
                sv["pid"],
                u(sv, "restarts")
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_targets_encode_names() {
        assert_eq!(Action::StepDown.target(None), "/control/step-down");
        assert_eq!(
            Action::Drain("impala 1".into()).target(Some("hs2")),
            "/control/drain?server=impala%201&listener=hs2"
        );
        assert_eq!(
            Action::Restart("catalogd".into()).target(Some("ignored")),
            "/control/restart?service=catalogd"
        );
    }

    #[test]
    fn refused_connection_says_what_to_do() {
        // Bind then drop to find a port that refuses.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = request(addr, "GET", "/status", None).unwrap_err();
        assert!(e.0.contains("is hapair running?"), "{e}");
        assert!(e.0.contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn table_shows_roles_servers_and_services() {
        let v = serde_json::json!({
            "node": "proxy1", "now_ms": 10_000,
            "pair": {"role": "master", "priority": 150, "configured_priority": 150, "weight": 0,
                     "vips": ["192.0.2.100/24"], "vips_held": true, "role_since_ms": 4_000,
                     "peer": {"name": "proxy2", "addr": "192.0.2.12", "role": "backup",
                              "priority": 100, "last_heard_ms_ago": 80, "alive": true}},
            "listeners": [{"name": "hs2", "bind": "0.0.0.0:21050", "balance": "leastconn",
                "active": 1, "total": 9, "servers": [
                {"name": "impala1", "addr": "h1:21050", "state": "up", "active": 1, "total": 5,
                 "connect_failures": 0, "last_check": {"ok": true, "detail": "", "at_unix_ms": 9_000}},
                {"name": "impala2", "addr": "h2:21050", "state": "drain", "active": 0, "total": 4,
                 "connect_failures": 2, "last_check": null}]}],
            "services": []
        });
        let t = table(&v);
        assert!(t.contains("proxy1  MASTER for 6.0s  priority 150"), "{t}");
        assert!(t.contains("peer      proxy2 192.0.2.12  BACKUP"), "{t}");
        assert!(t.contains("192.0.2.100/24  (held here)"), "{t}");
        assert!(t.contains("impala2  h2:21050  drain"), "{t}");
        assert!(t.contains("services  none supervised"), "{t}");
    }
}

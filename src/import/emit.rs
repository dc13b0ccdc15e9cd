//! The converted config as data, and its TOML text with comments.
//!
//! The TOML is written by hand rather than serialised, because the comments (`# TODO`,
//! `# unsupported: ...`, hints) are the point of an import: the operator reads them.

use std::time::Duration;

use super::{fmt_duration, toml_str, Diag, Severity};

/// One `[[listen]]` section to write.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    pub name: String,
    pub bind: String,
    pub balance: Option<&'static str>,
    pub maxconn: Option<u64>,
    pub backlog: Option<u64>,
    pub connect_timeout: Option<Duration>,
    pub client_timeout: Option<Duration>,
    pub server_timeout: Option<Duration>,
    pub retries: Option<u64>,
    /// Only `Some(false)` is written: hapair redispatches by default.
    pub redispatch: Option<bool>,
    pub check: Option<Check>,
    pub servers: Vec<Server>,
    /// Explanations written above the keys (not diagnostics).
    pub comments: Vec<String>,
    /// Line ranges (file, first, last) of the sections this listen came from: diagnostics in
    /// them are written into this listen.
    pub ranges: Vec<(String, usize, usize)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// `Some(path)` for an http check (haproxy `option httpchk`).
    pub http_path: Option<String>,
    pub expect: Option<u16>,
    pub port: Option<u16>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub fall: Option<u64>,
    pub rise: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub addr: String,
    pub weight: Option<u64>,
    pub backup: bool,
}

/// `[node]` and `[pair]` as read from a keepalived `vrrp_instance`.
#[derive(Debug, Clone, Default)]
pub struct Pair {
    pub node_name: Option<String>,
    pub priority: Option<u64>,
    pub interface: Option<String>,
    pub router_id: Option<u64>,
    pub peers: Vec<String>,
    pub advert_interval: Option<Duration>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<Duration>,
    pub vips: Vec<String>,
    pub garp_count: Option<u64>,
    pub garp_repeat_after: Option<Duration>,
    pub garp_refresh: Option<Duration>,
    pub notify: Option<String>,
    /// The instance had an `authentication` block: its password is not carried over.
    pub had_auth: bool,
    /// The keepalived file's display name, for comments.
    pub file: String,
}

/// Placeholders from the documentation ranges, so that a skeleton passes `hapair check`.
const TODO_INTERFACE: &str = "eth1";
const TODO_PEER: &str = "192.0.2.12";
const TODO_VIP: &str = "192.0.2.100/24";
const TODO_ROUTER_ID: u64 = 51;
const KEY_FILE: &str = "/etc/hapair/pair.key";

fn comment_diag(out: &mut String, d: &Diag) {
    let kind = match d.severity {
        Severity::Warning => "unsupported",
        Severity::Note => "note",
    };
    out.push_str(&format!("# {kind}: {}:{}: {}\n", d.file, d.line, d.message));
}

pub fn document(
    sources: &[&str],
    listens: &[Listen],
    pair: Option<&Pair>,
    diags: &[Diag],
) -> String {
    let in_listen = |d: &Diag, l: &Listen| {
        l.ranges
            .iter()
            .any(|(f, a, b)| *f == d.file && (*a..=*b).contains(&d.line))
    };
    let pair_file = pair.map(|p| p.file.as_str());
    let mut out = String::new();
    out.push_str(&format!(
        "# Written by `hapair import` from {}.\n",
        sources.join(" and ")
    ));
    out.push_str(
        "# Review every `# TODO` and `# unsupported:` line, then: hapair check -c THIS_FILE\n\n",
    );
    // Diagnostics that belong to no emitted section (global, defaults, dropped sections).
    let top: Vec<&Diag> = diags
        .iter()
        .filter(|d| Some(d.file.as_str()) != pair_file && !listens.iter().any(|l| in_listen(d, l)))
        .collect();
    for d in &top {
        comment_diag(&mut out, d);
    }
    if !top.is_empty() {
        out.push('\n');
    }

    node_and_pair(&mut out, pair, diags);

    for l in listens {
        out.push('\n');
        listen(&mut out, l, diags.iter().filter(|d| in_listen(d, l)));
    }
    out
}

fn node_and_pair(out: &mut String, pair: Option<&Pair>, diags: &[Diag]) {
    let Some(p) = pair else {
        out.push_str(
            "# No keepalived.conf was given: [node] and [pair] are a skeleton. Fill in every TODO.\n",
        );
        out.push_str("[node]\n");
        out.push_str("# name = \"proxy1\"                 # TODO: default: the hostname\n");
        out.push_str("priority = 150                     # TODO: 100 on the other proxy; the higher one is master\n");
        out.push_str(
            "admin = \"127.0.0.1:9180\"           # status page, /status, /metrics, control\n",
        );
        out.push_str(
            "# admin_token_file = \"/etc/hapair/admin.token\"   # TODO: needed by hapair ctl\n\n",
        );
        out.push_str("[pair]\n");
        out.push_str(&format!(
            "interface = {}                 # TODO: heartbeats flow here; VIPs are added here\n",
            toml_str(TODO_INTERFACE)
        ));
        out.push_str(&format!(
            "router_id = {TODO_ROUTER_ID}                     # TODO: the same on both proxies, unique on the LAN\n"
        ));
        out.push_str(&format!(
            "peer = {}                # TODO: the other proxy's address (placeholder from the documentation range)\n",
            toml_str(TODO_PEER)
        ));
        out.push_str(&format!(
            "auth_key_file = {}   # TODO: hapair keygen {KEY_FILE}, then copy it to the peer\n",
            toml_str(KEY_FILE)
        ));
        out.push_str(&format!(
            "vips = [{}]          # TODO: the address clients connect to\n",
            toml_str(TODO_VIP)
        ));
        return;
    };

    out.push_str(&format!("# [node] and [pair] from {}.\n", p.file));
    for d in diags.iter().filter(|d| d.file == p.file) {
        comment_diag(out, d);
    }
    out.push_str("[node]\n");
    match &p.node_name {
        Some(n) => out.push_str(&format!("name = {}\n", toml_str(n))),
        None => out.push_str("# name = \"proxy1\"                 # default: the hostname\n"),
    }
    match p.priority {
        Some(n) => out.push_str(&format!("priority = {n}\n")),
        None => out.push_str("priority = 100                     # TODO: keepalived's default; 1..=254, the higher one is master\n"),
    }
    out.push_str(
        "admin = \"127.0.0.1:9180\"           # status page, /status, /metrics, control\n",
    );
    out.push_str(
        "# admin_token_file = \"/etc/hapair/admin.token\"   # TODO: needed by hapair ctl\n\n",
    );

    out.push_str("[pair]\n");
    match &p.interface {
        Some(i) => out.push_str(&format!("interface = {}\n", toml_str(i))),
        None => out.push_str(&format!(
            "interface = {}    # TODO: keepalived named no interface\n",
            toml_str(TODO_INTERFACE)
        )),
    }
    match p.router_id {
        Some(n) => out.push_str(&format!("router_id = {n}\n")),
        None => out.push_str(&format!(
            "router_id = {TODO_ROUTER_ID}    # TODO: keepalived named no virtual_router_id\n"
        )),
    }
    match p.peers.as_slice() {
        [] => out.push_str(&format!(
            "peer = {}    # TODO: keepalived used multicast; hapair needs the other proxy's address\n",
            toml_str(TODO_PEER)
        )),
        [one] => out.push_str(&format!("peer = {}\n", toml_str(one))),
        many => out.push_str(&format!(
            "peer = [{}]    # redundant links to the same peer\n",
            many.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ")
        )),
    }
    if let Some(a) = p.advert_interval {
        if a != Duration::from_millis(100) {
            out.push_str(&format!(
                "# keepalived advertised every {}; hapair's default is 100ms (the backup takes over\n# after 3 missed adverts, ~300 ms). Delete the next line to use the default.\n",
                fmt_duration(a)
            ));
        }
        out.push_str(&format!(
            "advert_interval = {}\n",
            toml_str(&fmt_duration(a))
        ));
    }
    if let Some(b) = p.preempt {
        out.push_str(&format!("preempt = {b}\n"));
    }
    if let Some(d) = p.preempt_delay {
        out.push_str(&format!("preempt_delay = {}\n", toml_str(&fmt_duration(d))));
    }
    if p.had_auth {
        out.push_str(&format!(
            "# keepalived's authentication password is not carried over: hapair signs every heartbeat\n# with HMAC-SHA256. Create a new key: hapair keygen {KEY_FILE}, and copy it to the peer.\n"
        ));
    }
    out.push_str(&format!(
        "auth_key_file = {}    # TODO: hapair keygen {KEY_FILE}\n",
        toml_str(KEY_FILE)
    ));
    if p.vips.is_empty() {
        out.push_str(&format!(
            "vips = [{}]    # TODO: keepalived listed no virtual_ipaddress\n",
            toml_str(TODO_VIP)
        ));
    } else {
        out.push_str(&format!(
            "vips = [{}]\n",
            p.vips
                .iter()
                .map(|s| toml_str(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(n) = p.garp_count {
        out.push_str(&format!("garp_count = {n}\n"));
    }
    if let Some(d) = p.garp_repeat_after {
        out.push_str(&format!(
            "garp_repeat_after = {}\n",
            toml_str(&fmt_duration(d))
        ));
    }
    if let Some(d) = p.garp_refresh {
        out.push_str(&format!("garp_refresh = {}\n", toml_str(&fmt_duration(d))));
    }
    if let Some(n) = &p.notify {
        out.push_str("# hapair runs it as: notify <new-role> <node-name> (keepalived passed: <type> <instance> <state> <priority>)\n");
        out.push_str(&format!("notify = {}\n", toml_str(n)));
    }
}

fn listen<'a>(out: &mut String, l: &Listen, diags: impl Iterator<Item = &'a Diag>) {
    for d in diags {
        comment_diag(out, d);
    }
    for c in &l.comments {
        out.push_str(&format!("# {c}\n"));
    }
    out.push_str("[[listen]]\n");
    out.push_str(&format!("name = {}\n", toml_str(&l.name)));
    out.push_str(&format!("bind = {}\n", toml_str(&l.bind)));
    if let Some(b) = l.balance {
        out.push_str(&format!("balance = {}\n", toml_str(b)));
    }
    if let Some(n) = l.maxconn {
        out.push_str(&format!("maxconn = {n}\n"));
    }
    if let Some(n) = l.backlog {
        out.push_str(&format!("backlog = {n}\n"));
    }
    for (key, v) in [
        ("connect_timeout", l.connect_timeout),
        ("client_timeout", l.client_timeout),
        ("server_timeout", l.server_timeout),
    ] {
        if let Some(d) = v {
            out.push_str(&format!("{key} = {}\n", toml_str(&fmt_duration(d))));
        }
    }
    if let Some(n) = l.retries {
        out.push_str(&format!("retries = {n}\n"));
    }
    if l.redispatch == Some(false) {
        out.push_str("redispatch = false\n");
    }
    if let Some(c) = &l.check {
        let mut parts = vec![];
        match &c.http_path {
            Some(p) => {
                parts.push("type = \"http\"".to_string());
                if let Some(port) = c.port {
                    parts.push(format!("port = {port}"));
                }
                parts.push(format!("path = {}", toml_str(p)));
                if let Some(e) = c.expect {
                    parts.push(format!("expect = {e}"));
                }
            }
            None => {
                parts.push("type = \"tcp\"".to_string());
                if let Some(port) = c.port {
                    parts.push(format!("port = {port}"));
                }
            }
        }
        if let Some(d) = c.interval {
            parts.push(format!("interval = {}", toml_str(&fmt_duration(d))));
        }
        if let Some(d) = c.timeout {
            parts.push(format!("timeout = {}", toml_str(&fmt_duration(d))));
        }
        if let Some(n) = c.fall {
            parts.push(format!("fall = {n}"));
        }
        if let Some(n) = c.rise {
            parts.push(format!("rise = {n}"));
        }
        out.push_str(&format!("check = {{ {} }}\n", parts.join(", ")));
    }
    out.push_str("servers = [\n");
    for s in &l.servers {
        let mut parts = vec![
            format!("name = {}", toml_str(&s.name)),
            format!("addr = {}", toml_str(&s.addr)),
        ];
        if let Some(w) = s.weight {
            parts.push(format!("weight = {w}"));
        }
        if s.backup {
            parts.push("backup = true".into());
        }
        out.push_str(&format!("  {{ {} }},\n", parts.join(", ")));
    }
    out.push_str("]\n");
}

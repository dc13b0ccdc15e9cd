//! haproxy.cfg → `[[listen]]` sections.
//!
//! Read: `global maxconn`; `defaults` (mode, balance, maxconn, backlog, timeouts, retries,
//! `option redispatch`, `option httpchk`, `http-check expect status`, `default-server`);
//! `listen`; `frontend` with `bind`, `default_backend` or an unconditional `use_backend`, joined
//! with its `backend`. Everything else is reported with its line and dropped.

use std::time::Duration;

use super::emit::{Check, Listen, Server};
use super::{Diag, Severity, Source};

/// One logical line: its 1-based number and its words, unquoted.
struct Line {
    no: usize,
    words: Vec<String>,
}

impl Line {
    fn text(&self) -> String {
        self.words.join(" ")
    }
}

/// Splits a haproxy config into words: `#` starts a comment, quotes group, `\` escapes.
fn lines(text: &str) -> Vec<Line> {
    let mut out = vec![];
    for (i, raw) in text.lines().enumerate() {
        let mut words = vec![];
        let mut cur = String::new();
        let mut in_word = false;
        let mut quote: Option<char> = None;
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, '#') => break,
                (None, '\\') | (Some('"'), '\\') => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                        in_word = true;
                    }
                }
                (None, '"' | '\'') => {
                    quote = Some(c);
                    in_word = true;
                }
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                (_, c) => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        if !words.is_empty() {
            out.push(Line { no: i + 1, words });
        }
    }
    out
}

/// A haproxy time: a number with an optional unit (us, ms, s, m, h, d); the default unit is ms.
fn time(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let per_ms = match unit {
        "" | "ms" => 1,
        "us" => return Some(Duration::from_millis(n.div_ceil(1000))),
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    // An absurd count (haproxy itself refuses over 2^31-1 ms) is not understood, not wrapped.
    Some(Duration::from_millis(n.checked_mul(per_ms)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tcp,
    Http,
}

/// Server options, from `server` lines and `default-server`.
#[derive(Debug, Clone, Default)]
struct SrvOpts {
    check: bool,
    weight: Option<u64>,
    backup: bool,
    port: Option<u16>,
    inter: Option<Duration>,
    fall: Option<u64>,
    rise: Option<u64>,
}

impl SrvOpts {
    fn over(&self, base: &SrvOpts) -> SrvOpts {
        SrvOpts {
            check: self.check || base.check,
            weight: self.weight.or(base.weight),
            backup: self.backup || base.backup,
            port: self.port.or(base.port),
            inter: self.inter.or(base.inter),
            fall: self.fall.or(base.fall),
            rise: self.rise.or(base.rise),
        }
    }
}

/// The settings a `defaults` section can give and a proxy section can override. Each value
/// keeps the line it came from, for diagnostics.
#[derive(Debug, Clone, Default)]
struct Settings {
    mode: Option<(Mode, usize)>,
    balance: Option<&'static str>,
    maxconn: Option<u64>,
    backlog: Option<u64>,
    connect: Option<Duration>,
    client: Option<Duration>,
    server: Option<Duration>,
    check_timeout: Option<Duration>,
    retries: Option<u64>,
    redispatch: Option<bool>,
    httpchk: Option<(String, usize)>,
    expect: Option<u16>,
    default_server: SrvOpts,
}

impl Settings {
    fn over(&self, base: &Settings) -> Settings {
        Settings {
            mode: self.mode.or(base.mode),
            balance: self.balance.or(base.balance),
            maxconn: self.maxconn.or(base.maxconn),
            backlog: self.backlog.or(base.backlog),
            connect: self.connect.or(base.connect),
            client: self.client.or(base.client),
            server: self.server.or(base.server),
            check_timeout: self.check_timeout.or(base.check_timeout),
            retries: self.retries.or(base.retries),
            redispatch: self.redispatch.or(base.redispatch),
            httpchk: self.httpchk.clone().or(base.httpchk.clone()),
            expect: self.expect.or(base.expect),
            default_server: self.default_server.over(&base.default_server),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Listen,
    Frontend,
    Backend,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Listen => "listen",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
        }
    }
}

struct SrvLine {
    name: String,
    addr: String,
    line: usize,
    opts: SrvOpts,
}

struct Proxy {
    kind: Kind,
    name: String,
    first: usize,
    last: usize,
    /// The `defaults` in force where this section was defined.
    defaults: Settings,
    own: Settings,
    binds: Vec<(String, usize)>,
    servers: Vec<SrvLine>,
    backend: Option<(String, usize)>,
}

/// Collects diagnostics for one file.
struct Report<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diag>,
}

impl Report<'_> {
    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.diags.push(Diag {
            file: self.file.to_string(),
            line,
            severity: Severity::Warning,
            message: message.into(),
        });
    }
    fn note(&mut self, line: usize, message: impl Into<String>) {
        self.diags.push(Diag {
            file: self.file.to_string(),
            line,
            severity: Severity::Note,
            message: message.into(),
        });
    }
    /// `'acl is_api path_beg /api' is not supported (hapair is layer 4); dropped`.
    fn unsupported(&mut self, l: &Line) {
        let why = hint(&l.words);
        self.warn(
            l.no,
            format!("'{}' is not supported{why}; dropped", l.text()),
        );
    }
}

/// Why a directive has no hapair equivalent, for the warning.
fn hint(words: &[String]) -> &'static str {
    let w0 = words[0].as_str();
    let w1 = words.get(1).map(String::as_str).unwrap_or("");
    match (w0, w1) {
        ("log", _) | ("option", "tcplog" | "httplog" | "dontlognull" | "log-health-checks") => {
            " (hapair logs to stderr or the journal)"
        }
        ("stats", _) => " (hapair serves a status page on node.admin)",
        ("chroot" | "pidfile" | "user" | "group" | "daemon" | "nbproc" | "nbthread", _)
        | ("ulimit-n" | "master-worker" | "cpu-map", _) => {
            " (the systemd unit covers process settings)"
        }
        ("option", "tcpka") => " (no TCP keepalive option)",
        ("mode", _)
        | ("acl" | "http-request" | "http-response" | "http-check" | "http-reuse", _)
        | ("tcp-request" | "tcp-response" | "redirect" | "capture" | "cookie", _)
        | ("compression" | "errorfile" | "use_backend" | "reqadd" | "rspadd", _)
        | ("option", "forwardfor" | "http-server-close" | "httpclose" | "http-keep-alive")
        | ("timeout", "http-request" | "http-keep-alive" | "tunnel" | "queue") => {
            " (hapair is layer 4)"
        }
        ("stick-table" | "stick" | "hash-type", _) => " (use balance = \"source\" for persistence)",
        (w, _) if w.starts_with("ssl-") || w.starts_with("tune.") => " (hapair passes TLS through)",
        _ => " (no hapair equivalent)",
    }
}

pub(super) fn convert(src: &Source<'_>, diags: &mut Vec<Diag>) -> Vec<Listen> {
    let mut r = Report {
        file: src.name,
        diags,
    };
    let mut global_maxconn: Option<(u64, usize)> = None;
    let mut defaults = Settings::default();
    let mut proxies: Vec<Proxy> = vec![];

    enum Sec {
        None,
        Global,
        Defaults,
        Proxy,
        Other,
    }
    let mut sec = Sec::None;
    for l in lines(src.text) {
        let w: Vec<&str> = l.words.iter().map(String::as_str).collect();
        // Section headers.
        match w[0] {
            "global" => {
                sec = Sec::Global;
                continue;
            }
            "defaults" => {
                // A new defaults section replaces the previous one for what follows.
                defaults = Settings::default();
                if w.len() > 1 {
                    r.note(
                        l.no,
                        format!("named defaults '{}' are read as plain defaults", l.text()),
                    );
                }
                sec = Sec::Defaults;
                continue;
            }
            "listen" | "frontend" | "backend" => {
                let kind = match w[0] {
                    "listen" => Kind::Listen,
                    "frontend" => Kind::Frontend,
                    _ => Kind::Backend,
                };
                let Some(name) = w.get(1) else {
                    r.warn(l.no, format!("'{}' has no name; section dropped", l.text()));
                    sec = Sec::Other;
                    continue;
                };
                let mut p = Proxy {
                    kind,
                    name: name.to_string(),
                    first: l.no,
                    last: l.no,
                    defaults: defaults.clone(),
                    own: Settings::default(),
                    binds: vec![],
                    servers: vec![],
                    backend: None,
                };
                // Old syntax: `listen NAME ADDR:PORT`.
                if let Some(addr) = w.get(2) {
                    if kind == Kind::Backend {
                        r.unsupported(&l);
                    } else {
                        add_binds(&mut p, addr, l.no);
                    }
                }
                proxies.push(p);
                sec = Sec::Proxy;
                continue;
            }
            "userlist" | "peers" | "resolvers" | "mailers" | "program" | "http-errors" | "ring"
            | "cache" | "fcgi-app" | "crt-store" | "traces" => {
                r.warn(
                    l.no,
                    format!(
                        "section '{}' is not supported (no hapair equivalent); dropped with its contents",
                        l.text()
                    ),
                );
                sec = Sec::Other;
                continue;
            }
            _ => {}
        }
        match sec {
            Sec::None => r.unsupported(&l),
            Sec::Other => {}
            Sec::Global => match (w[0], w.get(1).and_then(|n| n.parse::<u64>().ok())) {
                ("maxconn", Some(n)) => global_maxconn = Some((n, l.no)),
                _ => r.unsupported(&l),
            },
            Sec::Defaults => {
                if w == ["mode", "http"] {
                    r.note(
                        l.no,
                        "'mode http' in defaults: sections that keep it become TCP listeners (hapair is layer 4)",
                    );
                }
                if !setting(&mut defaults, &l, &mut r) {
                    r.unsupported(&l);
                }
            }
            Sec::Proxy => {
                let Some(p) = proxies.last_mut() else {
                    continue;
                };
                p.last = l.no;
                proxy_line(p, &l, &mut r);
            }
        }
    }

    // Join frontends with their backends, and turn each into listens.
    let mut out: Vec<Listen> = vec![];
    let mut used_backends: Vec<String> = vec![];
    for p in proxies.iter().filter(|p| p.kind != Kind::Backend) {
        let front = p.own.over(&p.defaults);
        let (back, backend) = match p.kind {
            Kind::Listen => (front.clone(), p),
            _ => {
                let Some((bname, bline)) = &p.backend else {
                    r.warn(
                        p.first,
                        format!(
                            "frontend '{}' has no default_backend (or use_backend without a condition); dropped",
                            p.name
                        ),
                    );
                    continue;
                };
                let Some(b) = proxies
                    .iter()
                    .find(|b| b.kind == Kind::Backend && b.name == *bname)
                else {
                    r.warn(
                        *bline,
                        format!(
                            "backend '{bname}' is not defined; frontend '{}' dropped",
                            p.name
                        ),
                    );
                    continue;
                };
                used_backends.push(b.name.clone());
                // A backend setting written in the frontend (haproxy ignores it there) is
                // used when the backend does not set it: nothing is dropped silently.
                (b.own.over(&p.own.over(&b.defaults)), b)
            }
        };
        if p.binds.is_empty() {
            r.warn(
                p.first,
                format!("{} '{}' has no bind; dropped", p.kind.word(), p.name),
            );
            continue;
        }
        if backend.servers.is_empty() {
            let what = if p.kind == Kind::Listen {
                format!("listen '{}'", p.name)
            } else {
                format!("backend '{}'", backend.name)
            };
            let stats = if p.name.contains("stat") {
                " (a stats page? hapair serves one on node.admin)"
            } else {
                ""
            };
            r.warn(
                p.first,
                format!("{what} has no servers{stats}; section dropped"),
            );
            continue;
        }
        for mode in [front.mode, back.mode].into_iter().flatten() {
            if let (Mode::Http, line) = mode {
                r.warn(
                    line,
                    format!(
                        "'mode http' is not supported (hapair is layer 4): {} '{}' becomes a TCP listener, HTTP features are dropped",
                        p.kind.word(),
                        p.name
                    ),
                );
            }
        }
        let mut ranges = vec![(r.file.to_string(), p.first, p.last)];
        if backend.first != p.first {
            ranges.push((r.file.to_string(), backend.first, backend.last));
        }
        let many = p.binds.len() > 1;
        for (bind, bline) in &p.binds {
            let Some(bind) = bind_addr(bind) else {
                r.warn(
                    *bline,
                    format!("bind address '{bind}' is not supported (write ADDR:PORT); dropped"),
                );
                continue;
            };
            let port: u16 = bind
                .rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let name = if many {
                format!("{}_{port}", p.name)
            } else {
                p.name.clone()
            };
            let mut l = Listen {
                name,
                bind,
                balance: back.balance,
                maxconn: front.maxconn,
                backlog: front.backlog,
                connect_timeout: back.connect,
                client_timeout: front.client,
                server_timeout: back.server,
                retries: back.retries,
                redispatch: back.redispatch,
                ranges: ranges.clone(),
                ..Listen::default()
            };
            if l.maxconn.is_none() {
                if let Some((n, _)) = global_maxconn {
                    l.maxconn = Some(n.min(1_000_000));
                    l.comments.push(format!(
                        "maxconn from haproxy's global maxconn {n} (hapair limits each listener)"
                    ));
                }
            }
            if back.redispatch.is_none() {
                l.comments.push(
                    "haproxy had no `option redispatch`; hapair retries a failed connect on another server by default (redispatch = false to turn it off)".into(),
                );
            }
            servers(&mut l, backend, &back, port, &mut r);
            impala_hints(&mut l);
            out.push(l);
        }
    }
    for b in proxies.iter().filter(|p| p.kind == Kind::Backend) {
        if !used_backends.contains(&b.name) {
            r.warn(
                b.first,
                format!(
                    "backend '{}' is used by no frontend (without ACLs); dropped",
                    b.name
                ),
            );
        }
    }
    out
}

/// `*:8080`, `:8080`, `0.0.0.0:8080`, `[::]:8080`, `:::8080` → a socket address string.
fn bind_addr(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host {
        "" | "*" | "0.0.0.0" | "ipv4@" | "ipv4@*" => "0.0.0.0".to_string(),
        "::" | "[::]" | "ipv6@" | "ipv6@::" => "[::]".to_string(),
        h if h.parse::<std::net::Ipv4Addr>().is_ok() => h.to_string(),
        h if h.starts_with('[') && h.ends_with(']') => h.to_string(),
        h if h.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{h}]"),
        _ => return None,
    };
    Some(format!("{host}:{port}"))
}

fn add_binds(p: &mut Proxy, list: &str, line: usize) {
    for a in list.split(',').filter(|a| !a.is_empty()) {
        p.binds.push((a.to_string(), line));
    }
}

/// A line inside listen/frontend/backend.
fn proxy_line(p: &mut Proxy, l: &Line, r: &mut Report<'_>) {
    let w: Vec<&str> = l.words.iter().map(String::as_str).collect();
    match w[0] {
        "bind" if p.kind != Kind::Backend => {
            let Some(addr) = w.get(1) else {
                r.unsupported(l);
                return;
            };
            add_binds(p, addr, l.no);
            if w.len() > 2 {
                r.warn(
                    l.no,
                    format!(
                        "bind options '{}' are not supported (hapair passes TLS through); dropped",
                        w[2..].join(" ")
                    ),
                );
            }
        }
        "server" if p.kind != Kind::Frontend => server_line(p, l, r),
        "default_backend" if p.kind == Kind::Frontend && w.len() == 2 => {
            p.backend = Some((w[1].to_string(), l.no));
        }
        "use_backend" if p.kind == Kind::Frontend && w.len() == 2 => {
            if p.backend.is_none() {
                p.backend = Some((w[1].to_string(), l.no));
            } else {
                r.unsupported(l);
            }
        }
        _ => {
            if !setting(&mut p.own, l, r) {
                r.unsupported(l);
            }
        }
    }
}

/// A line that `defaults` and proxies share. Returns false if it is not one.
fn setting(s: &mut Settings, l: &Line, r: &mut Report<'_>) -> bool {
    let w: Vec<&str> = l.words.iter().map(String::as_str).collect();
    let num = |i: usize| w.get(i).and_then(|n| n.parse::<u64>().ok());
    let t = |i: usize| w.get(i).and_then(|n| time(n));
    match (w[0], w.get(1).copied()) {
        ("mode", Some("tcp")) => s.mode = Some((Mode::Tcp, l.no)),
        ("mode", Some("http")) => s.mode = Some((Mode::Http, l.no)),
        ("balance", Some(b)) => {
            s.balance = match b {
                "roundrobin" => Some("roundrobin"),
                "leastconn" => Some("leastconn"),
                "source" => Some("source"),
                "static-rr" => {
                    r.note(l.no, "'balance static-rr' is read as roundrobin");
                    Some("roundrobin")
                }
                _ => {
                    r.warn(
                        l.no,
                        format!(
                            "'{}' is not supported (roundrobin | leastconn | source); dropped",
                            l.text()
                        ),
                    );
                    None
                }
            };
            if w.len() > 2 && s.balance.is_some() {
                r.warn(
                    l.no,
                    format!(
                        "balance arguments '{}' are not supported; dropped",
                        w[2..].join(" ")
                    ),
                );
            }
        }
        ("maxconn", _) if num(1).is_some() => {
            let n = num(1).unwrap_or(0);
            if !(1..=1_000_000).contains(&n) {
                r.warn(
                    l.no,
                    format!("'{}': hapair allows 1..=1000000; dropped", l.text()),
                );
            } else {
                s.maxconn = Some(n);
            }
        }
        ("backlog", _) if num(1).is_some() => s.backlog = num(1).map(|n| n.clamp(1, 65535)),
        ("retries", _) if num(1).is_some() => s.retries = num(1).map(|n| n.min(100)),
        ("timeout", Some(k @ ("connect" | "client" | "server" | "check"))) if t(2).is_some() => {
            let d = t(2).unwrap_or_default();
            if d.is_zero() {
                r.warn(
                    l.no,
                    format!(
                        "'{}' (no timeout) is not supported; hapair's default applies",
                        l.text()
                    ),
                );
                return true;
            }
            match k {
                "connect" => s.connect = Some(d),
                "client" => s.client = Some(d),
                "server" => s.server = Some(d),
                _ => s.check_timeout = Some(d),
            }
        }
        (k @ ("contimeout" | "clitimeout" | "srvtimeout"), _) if t(1).is_some() => {
            let (new, slot) = match k {
                "contimeout" => ("timeout connect", &mut s.connect),
                "clitimeout" => ("timeout client", &mut s.client),
                _ => ("timeout server", &mut s.server),
            };
            *slot = t(1);
            r.note(
                l.no,
                format!(
                    "'{}' is haproxy 1.4 syntax (removed in 2.1); read as '{new}'",
                    l.text()
                ),
            );
        }
        ("option", Some("redispatch")) => s.redispatch = Some(true),
        ("no", Some("option")) if w.get(2) == Some(&"redispatch") => s.redispatch = Some(false),
        ("option", Some("tcp-check")) if w.len() == 2 => {}
        ("option", Some("httpchk")) => {
            // option httpchk [<uri>] | <method> <uri> [<version>]
            let (path, extra) = match &w[2..] {
                [] => ("/", &[][..]),
                [uri] => (*uri, &[][..]),
                [_method, uri, rest @ ..] => (*uri, rest),
            };
            if w.len() > 3 && w[2] != "GET" {
                r.note(l.no, format!("'{}': hapair checks with GET", l.text()));
            }
            if !extra.is_empty() {
                r.warn(
                    l.no,
                    format!(
                        "'{}': the HTTP version and headers '{}' are not supported; hapair sends GET {path} HTTP/1.1",
                        l.text(),
                        extra.join(" ")
                    ),
                );
            }
            s.httpchk = Some((path.to_string(), l.no));
        }
        ("http-check", Some("expect")) if w.get(2) == Some(&"status") => {
            match w.get(3).and_then(|n| n.parse::<u16>().ok()) {
                Some(n) if w.len() == 4 => s.expect = Some(n),
                _ => r.unsupported(l),
            }
        }
        ("default-server", _) => {
            s.default_server = srv_opts(&w[1..], l, r).over(&s.default_server);
        }
        _ => return false,
    }
    true
}

fn server_line(p: &mut Proxy, l: &Line, r: &mut Report<'_>) {
    let w: Vec<&str> = l.words.iter().map(String::as_str).collect();
    let (Some(name), Some(addr)) = (w.get(1), w.get(2)) else {
        r.unsupported(l);
        return;
    };
    let opts = srv_opts(&w[3..], l, r);
    p.servers.push(SrvLine {
        name: name.to_string(),
        addr: addr.to_string(),
        line: l.no,
        opts,
    });
}

/// Server options that take no argument; any other unknown option is assumed to take one.
const FLAGS: &[&str] = &[
    "ssl",
    "no-ssl",
    "check-ssl",
    "no-check-ssl",
    "send-proxy",
    "send-proxy-v2",
    "send-proxy-v2-ssl",
    "check-send-proxy",
    "agent-check",
    "no-agent-check",
    "disabled",
    "enabled",
    "tfo",
    "allow-0rtt",
    "non-stick",
    "no-backup",
    "no-check",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "no-tls-tickets",
    "no-verifyhost",
    "ws",
];

fn srv_opts(w: &[&str], l: &Line, r: &mut Report<'_>) -> SrvOpts {
    let mut o = SrvOpts::default();
    let mut i = 0;
    while i < w.len() {
        let arg = w.get(i + 1).copied();
        let mut take = 1;
        match (w[i], arg) {
            ("check", _) => o.check = true,
            ("backup", _) => o.backup = true,
            ("weight", Some(n)) if n.parse::<u64>().is_ok() => {
                o.weight = n.parse::<u64>().ok().map(|n| n.min(256));
                take = 2;
            }
            ("port", Some(n)) if n.parse::<u16>().is_ok() => {
                o.port = n.parse().ok();
                take = 2;
            }
            ("inter", Some(n)) if time(n).is_some() => {
                o.inter = time(n).filter(|d| !d.is_zero());
                take = 2;
            }
            ("fall", Some(n)) if n.parse::<u64>().is_ok() => {
                o.fall = n.parse::<u64>().ok().map(|n| n.clamp(1, 1000));
                take = 2;
            }
            ("rise", Some(n)) if n.parse::<u64>().is_ok() => {
                o.rise = n.parse::<u64>().ok().map(|n| n.clamp(1, 1000));
                take = 2;
            }
            (f, _) => {
                take = if FLAGS.contains(&f) || arg.is_none() {
                    1
                } else {
                    2
                };
                let what = w[i..(i + take).min(w.len())].join(" ");
                let why = match f {
                    "ssl" | "check-ssl" | "verify" | "ca-file" | "crt" | "sni" | "alpn" => {
                        " (hapair passes TLS through)"
                    }
                    "disabled" => " (use hapair ctl disable SERVER)",
                    "cookie" => " (use balance = \"source\" for persistence)",
                    "maxconn" => " (hapair limits connections per listener)",
                    _ => " (no hapair equivalent)",
                };
                r.warn(
                    l.no,
                    format!("server option '{what}' is not supported{why}; dropped"),
                );
            }
        }
        i += take;
    }
    o
}

/// Builds the servers and the one check of a listen from haproxy's per-server options.
fn servers(l: &mut Listen, backend: &Proxy, s: &Settings, bind_port: u16, r: &mut Report<'_>) {
    let mut first_checked: Option<(&SrvLine, SrvOpts)> = None;
    let mut warned_unchecked = false;
    let any_checked = backend
        .servers
        .iter()
        .any(|sv| sv.opts.over(&s.default_server).check);
    for sv in &backend.servers {
        let o = sv.opts.over(&s.default_server);
        let addr = match server_addr(&sv.addr, bind_port) {
            Some((a, false)) => a,
            Some((a, true)) => {
                r.note(
                    sv.line,
                    format!(
                        "server '{}' has no port: haproxy used the client's destination port; written as {a}",
                        sv.name
                    ),
                );
                a
            }
            None => {
                r.warn(
                    sv.line,
                    format!(
                        "server address '{}' is not supported (write HOST:PORT); server '{}' dropped",
                        sv.addr, sv.name
                    ),
                );
                continue;
            }
        };
        l.servers.push(Server {
            name: sv.name.clone(),
            addr,
            weight: o.weight.filter(|w| *w != 1),
            backup: o.backup,
        });
        if o.check {
            match &first_checked {
                None => first_checked = Some((sv, o.clone())),
                Some((f, fo))
                    if (fo.port, fo.inter, fo.fall, fo.rise)
                        != (o.port, o.inter, o.fall, o.rise) =>
                {
                    r.warn(
                        sv.line,
                        format!(
                            "server '{}' checks differently from server '{}'; hapair has one check per listen and uses the settings of '{}'",
                            sv.name, f.name, f.name
                        ),
                    );
                }
                Some(_) => {}
            }
        } else if any_checked && !warned_unchecked {
            warned_unchecked = true;
            r.warn(
                sv.line,
                format!(
                    "server '{}' has no 'check', but hapair checks every server of a listen",
                    sv.name
                ),
            );
        }
    }
    match first_checked {
        Some((_, o)) => {
            l.check = Some(Check {
                http_path: s.httpchk.as_ref().map(|(p, _)| p.clone()),
                expect: s.expect.filter(|_| s.httpchk.is_some()),
                port: o.port,
                interval: o.inter,
                timeout: s.check_timeout,
                fall: o.fall,
                rise: o.rise,
            });
        }
        None => {
            if let Some((_, line)) = &s.httpchk {
                r.warn(
                    *line,
                    "'option httpchk' without 'check' on any server: haproxy did not check, so neither does this listen",
                );
            }
            l.comments.push(
                "haproxy did not check these servers: hapair only notices failed connects (passive health). Add a check.".into(),
            );
        }
    }
}

/// `host:port` → (`host:port`, false); `host` → (`host:bind_port`, true).
fn server_addr(a: &str, bind_port: u16) -> Option<(String, bool)> {
    if a.contains('@') || a.starts_with('/') {
        return None;
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (_, port) = rest.split_once(']')?;
        return match port.strip_prefix(':') {
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok() => {
                Some((a.to_string(), false))
            }
            None if port.is_empty() => Some((format!("{a}:{bind_port}"), true)),
            _ => None,
        };
    }
    if a.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((format!("[{a}]:{bind_port}"), true));
    }
    match a.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|p| p != 0) =>
        {
            Some((a.to_string(), false))
        }
        Some(_) => None,
        None => Some((format!("{a}:{bind_port}"), true)),
    }
}

/// Impala's ports for clients: HS2, HS2 over HTTP, Beeswax.
const IMPALA_PORTS: &[u16] = &[21000, 21050, 28000];

fn impala_hints(l: &mut Listen) {
    let impala = !l.servers.is_empty()
        && l.servers.iter().all(|s| {
            s.addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| IMPALA_PORTS.contains(&p))
        });
    if !impala {
        return;
    }
    if !l.check.as_ref().is_some_and(|c| c.http_path.is_some()) {
        l.comments.push("hint: impalad answers GET /healthz on its web port when it is ready: check = { type = \"http\", port = 25000, path = \"/healthz\" }".into());
    }
    let short = |d: Option<std::time::Duration>| d.is_some_and(|d| d < Duration::from_secs(3600));
    if short(l.client_timeout) || short(l.server_timeout) {
        l.comments.push("hint: Impala queries run long; Impala recommends client and server timeouts of at least 3600s (IMPALA-6959)".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_default_to_milliseconds() {
        assert_eq!(time("5000"), Some(Duration::from_secs(5)));
        assert_eq!(time("3600s"), Some(Duration::from_secs(3600)));
        assert_eq!(time("1m"), Some(Duration::from_secs(60)));
        assert_eq!(time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(time("500us"), Some(Duration::from_millis(1)));
        assert_eq!(time("5 s"), None);
        assert_eq!(time("soon"), None);
        // Too large for a u64 of ms: not understood, and no overflow.
        assert_eq!(time("999999999999999999d"), None);
    }

    #[test]
    fn words_honour_comments_quotes_and_escapes() {
        let l = lines("  server a 1.2.3.4:5 check # the first\n\n# only a comment\noption httpchk GET \"/a b\"\nerrorfile 503 x\\ y\n");
        let w: Vec<Vec<String>> = l.iter().map(|l| l.words.clone()).collect();
        assert_eq!(w[0], ["server", "a", "1.2.3.4:5", "check"]);
        assert_eq!(l[1].no, 4);
        assert_eq!(w[1], ["option", "httpchk", "GET", "/a b"]);
        assert_eq!(w[2], ["errorfile", "503", "x y"]);
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(bind_addr(":25003").as_deref(), Some("0.0.0.0:25003"));
        assert_eq!(bind_addr("*:80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(bind_addr("0.0.0.0:8006").as_deref(), Some("0.0.0.0:8006"));
        assert_eq!(bind_addr(":::21050").as_deref(), Some("[::]:21050"));
        assert_eq!(bind_addr("[::]:21050").as_deref(), Some("[::]:21050"));
        assert_eq!(
            bind_addr("192.0.2.100:21050").as_deref(),
            Some("192.0.2.100:21050")
        );
        assert_eq!(bind_addr("/run/x.sock"), None);
        assert_eq!(bind_addr(":8000-8010"), None);
    }

    #[test]
    fn server_addresses() {
        assert_eq!(server_addr("h:21050", 1), Some(("h:21050".into(), false)));
        assert_eq!(server_addr("h", 21050), Some(("h:21050".into(), true)));
        assert_eq!(
            server_addr("[2001:db8::1]:5", 1),
            Some(("[2001:db8::1]:5".into(), false))
        );
        assert_eq!(
            server_addr("2001:db8::1", 7),
            Some(("[2001:db8::1]:7".into(), true))
        );
        assert_eq!(server_addr("unix@/x", 1), None);
        assert_eq!(server_addr("h:+1", 1), None);
    }
}

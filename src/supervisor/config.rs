//! `[[service]]`: raw serde types (with spans) → validated [`ServiceConfig`].
//!
//! Errors are `(byte span, message)` pairs; the config loader turns spans into
//! `file:line:col`. Every problem is reported, not just the first.
//!
//! ```toml
//! [[service]]
//! name = "catalogd"
//! command = ["/opt/impala/bin/catalogd", "--flagfile=/etc/impala/catalogd.flags"]
//! run = "master"                 # always (default) | master
//! user = "impala"
//! env = { JAVA_HOME = "/usr/lib/jvm/java-17" }
//! after = ["statestored"]
//! check = { type = "http", url = "http://127.0.0.1:25020/healthz", interval = "1s", fall = 3 }
//! active_check = { url = "http://127.0.0.1:25020/jsonmetrics?metric=catalog-server.active-status" }
//! stop_signal = "TERM"
//! stop_timeout = "10s"
//! weight = -100
//! restart = { backoff = "1s", max_backoff = "30s", reset_after = "60s" }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use toml::Spanned;

use super::backoff::RestartPolicy;

/// One problem: where (byte span in the file, if known) and what.
pub type Problem = (Option<Range<usize>>, String);

/// When a service runs on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Run {
    /// On both nodes (warm standby, or Impala's native HA).
    Always,
    /// Only while this node is master and the peer runs no copy (cold standby).
    Master,
}

/// A validated service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Program and arguments, never empty.
    pub command: Vec<String>,
    pub run: Run,
    pub user: Option<String>,
    /// Added to (and overriding) hapair's own environment.
    pub env: BTreeMap<String, String>,
    /// Services that must pass their check before this one starts; reversed on stop.
    pub after: Vec<String>,
    pub check: Option<CheckConfig>,
    pub active_check: Option<ActiveCheck>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    /// Added to the node priority while the service fails (usually negative).
    pub weight: i32,
    pub restart: RestartPolicy,
}

impl ServiceConfig {
    /// True when `other` needs a new process (not just new checks, weight or ordering).
    pub fn needs_respawn(&self, other: &ServiceConfig) -> bool {
        self.command != other.command || self.user != other.user || self.env != other.env
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Http(HttpUrl),
    /// `host:port`, resolved at each check.
    Tcp(String),
    /// Program and arguments; exit 0 passes.
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    /// Failing checks are not counted this long after a start (catalogd loads metadata).
    pub start_period: Duration,
}

/// Impala 4.3+/4.4+ native HA: which copy is active (observed, never acted on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    pub url: HttpUrl,
    pub interval: Duration,
}

/// A plain `http://host[:port]/path?query` URL (no TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, for connect; IPv6 hosts keep their brackets.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let Some(rest) = s.strip_prefix("http://") else {
            if s.starts_with("https://") {
                return Err(format!(
                    "`{s}`: https is not supported by the built-in probe; use a `tcp` check or an `exec` check with curl"
                ));
            }
            return Err(format!("`{s}` is not an http:// URL"));
        };
        let (auth, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if auth.is_empty() || auth.contains('@') || auth.contains(char::is_whitespace) {
            return Err(format!("`{s}`: bad host"));
        }
        let has_port = match auth.rfind(':') {
            Some(i) => !auth.starts_with('[') || auth[..i].ends_with(']'),
            None => false,
        };
        let authority = if has_port {
            let (_, port) = auth.rsplit_once(':').unwrap_or((auth, ""));
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("`{s}`: bad port `{port}`"));
            }
            auth.to_string()
        } else {
            format!("{auth}:80")
        };
        if path.contains(char::is_whitespace) {
            return Err(format!("`{s}`: spaces in the path"));
        }
        Ok(HttpUrl { authority, path })
    }
}

// ---------------------------------------------------------------------------------------
// Raw types.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Spanned<String>,
    pub command: Spanned<Vec<String>>,
    pub run: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    pub after: Option<Vec<Spanned<String>>>,
    pub check: Option<Spanned<RawCheck>>,
    pub active_check: Option<Spanned<RawActiveCheck>>,
    pub stop_signal: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
    pub restart: Option<RawRestart>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub url: Option<Spanned<String>>,
    pub addr: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<String>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub fall: Option<Spanned<i64>>,
    pub rise: Option<Spanned<i64>>,
    pub start_period: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActiveCheck {
    pub url: Spanned<String>,
    pub interval: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
    pub reset_after: Option<Spanned<String>>,
}

pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_START_PERIOD: Duration = Duration::from_secs(30);
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_RISE: u32 = 2;

/// Collects problems while validating one service.
struct P(Vec<Problem>);

impl P {
    fn err<T>(&mut self, span: Range<usize>, msg: impl Into<String>) -> Option<T> {
        self.0.push((Some(span), msg.into()));
        None
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match crate::config::duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.err::<()>(v.span(), format!("`{key}` must be more than 0"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err::<()>(v.span(), format!("`{key}`: {e}"));
                default
            }
        }
    }

    fn int(&mut self, v: &Option<Spanned<i64>>, key: &str, lo: i64, hi: i64, default: i64) -> i64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if !(lo..=hi).contains(&n) {
            self.err::<()>(v.span(), format!("`{key}` must be in {lo}..={hi}, not {n}"));
            return default;
        }
        n
    }
}

/// `TERM`, `SIGTERM`, `term`: the stop signals a service may ask for.
pub fn parse_signal(s: &str) -> Option<Signal> {
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "HUP" => Signal::SIGHUP,
        "QUIT" => Signal::SIGQUIT,
        "KILL" => Signal::SIGKILL,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return None,
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl RawService {
    /// Check this one service on its own (see [`cross_check`] for the rest).
    pub fn validate(&self) -> Result<ServiceConfig, Vec<Problem>> {
        let mut p = P(Vec::new());
        let name = self.name.get_ref().clone();
        if !valid_name(&name) {
            p.err::<()>(
                self.name.span(),
                format!("service name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"),
            );
        }
        let command = self.command.get_ref().clone();
        if command.first().map_or(true, |c| c.is_empty()) {
            p.err::<()>(
                self.command.span(),
                "`command` needs a program: [\"/path/to/program\", \"args\"...]",
            );
        }
        if command.iter().any(|a| a.contains('\0')) {
            p.err::<()>(self.command.span(), "`command` contains a NUL byte");
        }
        let run = match &self.run {
            None => Run::Always,
            Some(r) => match r.get_ref().as_str() {
                "always" => Run::Always,
                "master" => Run::Master,
                other => {
                    p.err::<()>(
                        r.span(),
                        format!("`run` is \"always\" or \"master\", not \"{other}\""),
                    );
                    Run::Always
                }
            },
        };
        let user = match &self.user {
            Some(u) if u.get_ref().is_empty() || u.get_ref().contains(['\0', ':']) => {
                p.err(u.span(), format!("bad user name `{}`", u.get_ref()))
            }
            Some(u) => Some(u.get_ref().clone()),
            None => None,
        };
        let mut env = BTreeMap::new();
        if let Some(e) = &self.env {
            for (k, v) in e.get_ref() {
                if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                    p.err::<()>(e.span(), format!("bad environment variable `{k}`"));
                } else {
                    env.insert(k.clone(), v.clone());
                }
            }
        }
        let mut after = Vec::new();
        for a in self.after.iter().flatten() {
            if a.get_ref() == &name {
                p.err::<()>(
                    a.span(),
                    format!("service `{name}` cannot start after itself"),
                );
            } else if after.contains(a.get_ref()) {
                p.err::<()>(
                    a.span(),
                    format!("`{}` is listed twice in `after`", a.get_ref()),
                );
            } else {
                after.push(a.get_ref().clone());
            }
        }
        let check = self.check.as_ref().and_then(|c| check(&mut p, c));
        let active_check = self.active_check.as_ref().and_then(|a| {
            let url = match HttpUrl::parse(a.get_ref().url.get_ref()) {
                Ok(u) => u,
                Err(e) => return p.err(a.get_ref().url.span(), format!("`active_check.url`: {e}")),
            };
            let interval = p.duration(&a.get_ref().interval, "interval", DEFAULT_INTERVAL);
            Some(ActiveCheck { url, interval })
        });
        let stop_signal = match &self.stop_signal {
            None => Signal::SIGTERM,
            Some(s) => parse_signal(s.get_ref()).unwrap_or_else(|| {
                p.err::<()>(
                    s.span(),
                    format!(
                        "`stop_signal` \"{}\": use TERM, INT, HUP, QUIT, KILL, USR1 or USR2",
                        s.get_ref()
                    ),
                );
                Signal::SIGTERM
            }),
        };
        let stop_timeout = p.duration(&self.stop_timeout, "stop_timeout", DEFAULT_STOP_TIMEOUT);
        let weight = p.int(&self.weight, "weight", -254, 254, 0) as i32;
        let mut restart = RestartPolicy::default();
        if let Some(r) = &self.restart {
            restart.initial = p.duration(&r.backoff, "restart.backoff", restart.initial);
            restart.max = p.duration(&r.max_backoff, "restart.max_backoff", restart.max);
            restart.reset_after =
                p.duration(&r.reset_after, "restart.reset_after", restart.reset_after);
            if restart.initial > restart.max {
                let span = r
                    .backoff
                    .as_ref()
                    .or(r.max_backoff.as_ref())
                    .map(|s| s.span());
                p.0.push((
                    span,
                    "`restart.backoff` is longer than `restart.max_backoff`".into(),
                ));
            }
        }
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(ServiceConfig {
            name,
            command,
            run,
            user,
            env,
            after,
            check,
            active_check,
            stop_signal,
            stop_timeout,
            weight,
            restart,
        })
    }
}

fn check(p: &mut P, c: &Spanned<RawCheck>) -> Option<CheckConfig> {
    let span = c.span();
    let c = c.get_ref();
    let kind = c.kind.get_ref().as_str();
    let (want, other): (&str, [(&str, bool); 2]) = match kind {
        "http" => (
            "url",
            [("addr", c.addr.is_some()), ("command", c.command.is_some())],
        ),
        "tcp" => (
            "addr",
            [("url", c.url.is_some()), ("command", c.command.is_some())],
        ),
        "exec" => (
            "command",
            [("url", c.url.is_some()), ("addr", c.addr.is_some())],
        ),
        other => {
            return p.err(
                c.kind.span(),
                format!("check `type` is \"http\", \"tcp\" or \"exec\", not \"{other}\""),
            )
        }
    };
    for (key, present) in other {
        if present {
            p.err::<()>(
                span.clone(),
                format!("a `{kind}` check takes `{want}`, not `{key}`"),
            );
        }
    }
    let probe = match kind {
        "http" => match &c.url {
            None => p.err(span.clone(), "an `http` check needs `url`"),
            Some(u) => match HttpUrl::parse(u.get_ref()) {
                Ok(url) => Some(Probe::Http(url)),
                Err(e) => p.err(u.span(), format!("`url`: {e}")),
            },
        },
        "tcp" => match &c.addr {
            None => p.err(span.clone(), "a `tcp` check needs `addr`"),
            Some(a) => match a.get_ref().rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                    Some(Probe::Tcp(a.get_ref().clone()))
                }
                _ => p.err(
                    a.span(),
                    format!("`addr` \"{}\" is not host:port", a.get_ref()),
                ),
            },
        },
        _ => match &c.command {
            None => p.err(span.clone(), "an `exec` check needs `command`"),
            Some(cmd) if cmd.get_ref().first().map_or(true, |c| c.is_empty()) => {
                p.err(cmd.span(), "`command` needs a program")
            }
            Some(cmd) => Some(Probe::Exec(cmd.get_ref().clone())),
        },
    };
    let interval = p.duration(&c.interval, "interval", DEFAULT_INTERVAL);
    let timeout = p.duration(&c.timeout, "timeout", interval.min(DEFAULT_INTERVAL));
    let start_period = p.duration(&c.start_period, "start_period", DEFAULT_START_PERIOD);
    let fall = p.int(&c.fall, "fall", 1, 100, DEFAULT_FALL as i64) as u32;
    let rise = p.int(&c.rise, "rise", 1, 100, DEFAULT_RISE as i64) as u32;
    Some(CheckConfig {
        probe: probe?,
        interval,
        timeout,
        fall,
        rise,
        start_period,
    })
}

/// Checks across services: duplicate names, unknown or cyclic `after`, an `always` service
/// after a `master` one (it could never start on the backup), and, with `check_users`
/// (on the host that runs them), users that do not exist.
pub fn cross_check(raw: &[RawService], check_users: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in raw.iter().enumerate() {
        // The first definition wins; later ones are errors.
        if *index.entry(s.name.get_ref()).or_insert(i) != i {
            out.push((
                Some(s.name.span()),
                format!("service `{}` is defined twice", s.name.get_ref()),
            ));
        }
    }
    let run = |s: &RawService| {
        s.run
            .as_ref()
            .map_or("always", |r| r.get_ref().as_str())
            .to_string()
    };
    for s in raw {
        for a in s.after.iter().flatten() {
            let Some(&j) = index.get(a.get_ref().as_str()) else {
                out.push((
                    Some(a.span()),
                    format!("`after`: no service is named `{}`", a.get_ref()),
                ));
                continue;
            };
            if run(s) == "always" && run(&raw[j]) == "master" {
                out.push((
                    Some(a.span()),
                    format!(
                        "`{}` runs always but starts after `{}`, which runs on the master only: it would never start on the backup",
                        s.name.get_ref(),
                        a.get_ref()
                    ),
                ));
            }
        }
        if check_users {
            if let Some(u) = &s.user {
                match nix::unistd::User::from_name(u.get_ref()) {
                    Ok(Some(_)) => {}
                    Ok(None) => out.push((
                        Some(u.span()),
                        format!("user `{}` does not exist", u.get_ref()),
                    )),
                    Err(e) => out.push((Some(u.span()), format!("user `{}`: {e}", u.get_ref()))),
                }
            }
        }
    }
    // Cycles: depth-first search, colouring 0 = new, 1 = on the path, 2 = done.
    let mut colour = vec![0u8; raw.len()];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..raw.len() {
        find_cycle(raw, &index, start, &mut colour, &mut path, &mut out);
    }
    out
}

fn find_cycle(
    raw: &[RawService],
    index: &HashMap<&str, usize>,
    i: usize,
    colour: &mut [u8],
    path: &mut Vec<usize>,
    out: &mut Vec<Problem>,
) {
    if colour[i] != 0 {
        return;
    }
    colour[i] = 1;
    path.push(i);
    for a in raw[i].after.iter().flatten() {
        let Some(&j) = index.get(a.get_ref().as_str()) else {
            continue;
        };
        if j == i {
            continue; // reported by `validate`
        }
        if colour[j] == 1 {
            let from = path.iter().position(|&k| k == j).unwrap_or(0);
            let mut names: Vec<&str> = path[from..]
                .iter()
                .map(|&k| raw[k].name.get_ref().as_str())
                .collect();
            names.push(raw[j].name.get_ref());
            out.push((
                Some(a.span()),
                format!("`after` forms a cycle: {}", names.join(" → ")),
            ));
        } else {
            find_cycle(raw, index, j, colour, path, out);
        }
    }
    path.pop();
    colour[i] = 2;
}

/// Validate every service and then [`cross_check`] them; all problems at once.
pub fn validate_all(
    raw: &[RawService],
    check_users: bool,
) -> Result<Vec<ServiceConfig>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut ok = Vec::new();
    for r in raw {
        match r.validate() {
            Ok(s) => ok.push(s),
            Err(mut e) => problems.append(&mut e),
        }
    }
    problems.extend(cross_check(raw, check_users));
    if problems.is_empty() {
        Ok(ok)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        service: Vec<RawService>,
    }

    fn parse(text: &str) -> Result<Vec<RawService>, toml::de::Error> {
        toml::from_str::<File>(text).map(|f| f.service)
    }

    /// Problems with the text each span points at.
    fn problems(text: &str, users: bool) -> Vec<(String, String)> {
        let raw = parse(text).expect("parses");
        match validate_all(&raw, users) {
            Ok(_) => vec![],
            Err(ps) => ps
                .into_iter()
                .map(|(span, m)| (span.map(|r| text[r].to_string()).unwrap_or_default(), m))
                .collect(),
        }
    }

    const DESIGN: &str = r#"
[[service]]
name = "statestored"
command = ["/opt/impala/bin/statestored", "--flagfile=/etc/impala/statestored.flags"]
run = "always"
user = "root"
check = { type = "http", url = "http://127.0.0.1:25010/healthz", interval = "1s", fall = 3 }
stop_signal = "TERM"
stop_timeout = "10s"
weight = -100

[[service]]
name = "catalogd"
command = ["/opt/impala/bin/catalogd", "--flagfile=/etc/impala/catalogd.flags"]
run = "master"
after = ["statestored"]
check = { type = "http", url = "http://127.0.0.1:25020/healthz", interval = "1s", fall = 3 }
weight = -100
"#;

    #[test]
    fn design_example_is_valid() {
        let s = validate_all(&parse(DESIGN).unwrap(), true).expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].run, Run::Always);
        assert_eq!(s[0].user.as_deref(), Some("root"));
        assert_eq!(s[1].run, Run::Master);
        assert_eq!(s[1].after, ["statestored"]);
        assert_eq!(s[1].stop_signal, Signal::SIGTERM);
        assert_eq!(s[1].stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert_eq!(s[1].weight, -100);
        assert_eq!(s[1].restart, RestartPolicy::default());
        let c = s[1].check.as_ref().unwrap();
        assert_eq!(
            c.probe,
            Probe::Http(HttpUrl {
                authority: "127.0.0.1:25020".into(),
                path: "/healthz".into()
            })
        );
        assert_eq!(
            (c.fall, c.rise, c.interval),
            (3, DEFAULT_RISE, Duration::from_secs(1))
        );
    }

    #[test]
    fn every_key() {
        let text = r#"
[[service]]
name = "catalogd"
command = ["catalogd"]
env = { JAVA_HOME = "/jvm", A = "b=c" }
check = { type = "exec", command = ["true"], interval = "250ms", timeout = "100ms", fall = 1, rise = 5, start_period = "2m" }
active_check = { url = "http://[::1]:25020/jsonmetrics?metric=catalog-server.active-status", interval = "2s" }
stop_signal = "SIGINT"
stop_timeout = "500ms"
restart = { backoff = "200ms", max_backoff = "5s", reset_after = "10s" }
"#;
        let s = validate_all(&parse(text).unwrap(), false)
            .unwrap()
            .remove(0);
        assert_eq!(s.env.get("A").map(String::as_str), Some("b=c"));
        let c = s.check.unwrap();
        assert_eq!(c.probe, Probe::Exec(vec!["true".into()]));
        assert_eq!((c.fall, c.rise), (1, 5));
        assert_eq!(c.start_period, Duration::from_secs(120));
        let a = s.active_check.unwrap();
        assert_eq!(a.url.authority, "[::1]:25020");
        assert_eq!(
            a.url.path,
            "/jsonmetrics?metric=catalog-server.active-status"
        );
        assert_eq!(s.stop_signal, Signal::SIGINT);
        assert_eq!(s.restart.initial, Duration::from_millis(200));
    }

    #[test]
    fn unknown_keys_are_errors() {
        for text in [
            "[[service]]\nname='a'\ncommand=['x']\nrestrat='1s'\n",
            "[[service]]\nname='a'\ncommand=['x']\ncheck={type='tcp', addr='h:1', inteval='1s'}\n",
            "[[service]]\nname='a'\ncommand=['x']\nactive_check={url='http://h/', x=1}\n",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let text = r#"
[[service]]
name = "a b"
command = []
run = "sometimes"
stop_signal = "STOP"
stop_timeout = "soon"
weight = -300
check = { type = "http", url = "https://h/healthz", fall = 0 }
active_check = { url = "ftp://x" }
restart = { backoff = "40s" }
"#;
        let got = problems(text, false);
        let at: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            at,
            [
                "\"a b\"",
                "[]",
                "\"sometimes\"",
                "\"https://h/healthz\"",
                "0",
                "\"ftp://x\"",
                "\"STOP\"",
                "\"soon\"",
                "-300",
                "\"40s\"",
            ],
            "{got:#?}"
        );
        assert!(got[3].1.contains("https is not supported"));
    }

    #[test]
    fn check_needs_its_target() {
        let got = problems(
            "[[service]]\nname='a'\ncommand=['x']\ncheck={type='tcp', url='http://h/'}\n",
            false,
        );
        let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "a `tcp` check takes `addr`, not `url`",
                "a `tcp` check needs `addr`"
            ]
        );
        let got = problems(
            "[[service]]\nname='a'\ncommand=['x']\ncheck={type='tcp', addr='nohost'}\n",
            false,
        );
        assert_eq!(got[0].0, "'nohost'");
        let got = problems(
            "[[service]]\nname='a'\ncommand=['x']\ncheck={type='udp'}\n",
            false,
        );
        assert_eq!(got[0].0, "'udp'");
    }

    #[test]
    fn cross_checks() {
        let text = r#"
[[service]]
name = "a"
command = ["x"]
after = ["c", "nope"]
[[service]]
name = "b"
command = ["x"]
after = ["a"]
user = "no-such-user-hapair"
[[service]]
name = "c"
command = ["x"]
after = ["b"]
[[service]]
name = "a"
command = ["x"]
[[service]]
name = "m"
command = ["x"]
run = "master"
[[service]]
name = "w"
command = ["x"]
after = ["m", "w"]
"#;
        let got = problems(text, true);
        let msgs: Vec<String> = got.iter().map(|(s, m)| format!("{s}: {m}")).collect();
        let want = [
            "\"w\": service `w` cannot start after itself",
            "\"a\": service `a` is defined twice",
            "\"nope\": `after`: no service is named `nope`",
            "\"no-such-user-hapair\": user `no-such-user-hapair` does not exist",
            "\"m\": `w` runs always but starts after `m`, which runs on the master only: it would never start on the backup",
        ];
        for w in want {
            assert!(msgs.iter().any(|m| m == w), "missing {w:?} in {msgs:#?}");
        }
        assert!(
            msgs.iter()
                .any(|m| m.contains("cycle: a → c → b → a") || m.contains("cycle: c → b → a → c")),
            "{msgs:#?}"
        );
        // Without check_users the user is not looked up.
        assert!(!problems(text, false)
            .iter()
            .any(|(_, m)| m.contains("does not exist")));
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://localhost/healthz").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("localhost:80", "/healthz")
        );
        let u = HttpUrl::parse("http://h:25020?metric=x").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("h:25020", "/?metric=x")
        );
        let u = HttpUrl::parse("http://[::1]").unwrap();
        assert_eq!(u.authority, "[::1]:80");
        assert_eq!(u.to_string(), "http://[::1]:80/");
        for bad in [
            "http://",
            "http://h:0/",
            "http://h:x/",
            "http://u@h/",
            "h:80",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("term"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGUSR2"), Some(Signal::SIGUSR2));
        assert_eq!(parse_signal("STOP"), None);
    }
}

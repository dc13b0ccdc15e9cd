//! Stand-in Impala daemons: small real TCP servers that behave like impalad, statestored and
//! catalogd as far as the proxies can tell.
//!
//! - **Client ports** (impalad 21050, 21000, 28000; statestored 24000; catalogd 26000): on
//!   accept the stand-in writes a banner line `"<name>\n"`, then echoes every byte it receives
//!   until the client half-closes, then half-closes too. A client can tell which host served
//!   it, and byte-exact tests work through the balancer.
//! - **Web port** (25000, 25010, 25020): a minimal HTTP/1.1 responder, one request per
//!   connection (`Connection: close`):
//!   - `GET /healthz`: 200 `OK` when ready, 503 `Not Available` otherwise;
//!   - `GET /jsonmetrics?metric=catalog-server.active-status` (catalogd) or
//!     `statestore.active-status` (statestored): `{"<metric>": true|false}`; without `metric`
//!     all of the stand-in's metrics; an unknown metric gives `{}`;
//!   - `GET /`: a one-line description; anything else 404; other methods 405; a malformed
//!     request 400. `HEAD` is answered without a body.
//!
//! **Readiness.** A stand-in is ready once `--ready-after` has passed since start, *and* the
//! `--unhealthy-file` (if given) does not exist, *and* it has not been forced unhealthy. In a
//! child process, SIGUSR1 toggles "forced unhealthy"; in process, [`Standin::set_unhealthy`].
//!
//! **Lifecycle.** [`run_standin`] is the child-process entry point (the hidden CLI subcommand):
//! it logs a start line to stderr, stops cleanly on SIGTERM or SIGINT (or logs and ignores
//! SIGTERM with `--ignore-sigterm`, for stop-timeout tests), and with `--crash-after` closes
//! everything and exits the process with code 1 at that time. [`Standin::start`] runs the same
//! servers in process on the current tokio runtime, in whatever network namespace the
//! runtime's threads are in; a crash there just stops the servers and [`Standin::wait`]
//! returns [`StandinExit::Crashed`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which daemon a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StandinRole {
    Impalad,
    Statestored,
    Catalogd,
}

impl StandinRole {
    pub fn as_str(self) -> &'static str {
        match self {
            StandinRole::Impalad => "impalad",
            StandinRole::Statestored => "statestored",
            StandinRole::Catalogd => "catalogd",
        }
    }
    /// Impala's default client ports for this daemon.
    pub fn default_ports(self) -> &'static [u16] {
        match self {
            StandinRole::Impalad => &[21050, 21000, 28000],
            StandinRole::Statestored => &[24000],
            StandinRole::Catalogd => &[26000],
        }
    }
    /// Impala's default web UI port for this daemon.
    pub fn default_web_port(self) -> u16 {
        match self {
            StandinRole::Impalad => 25000,
            StandinRole::Statestored => 25010,
            StandinRole::Catalogd => 25020,
        }
    }
    /// The `/jsonmetrics` key that reports whether this copy is the active one (Impala 4.3+).
    pub fn active_metric(self) -> Option<&'static str> {
        match self {
            StandinRole::Impalad => None,
            StandinRole::Statestored => Some("statestore.active-status"),
            StandinRole::Catalogd => Some("catalog-server.active-status"),
        }
    }
}

/// Options of a stand-in; also the arguments of the hidden `standin` CLI subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct StandinOpts {
    /// Which daemon to stand in for.
    #[arg(value_enum)]
    pub role: StandinRole,
    /// Name sent as the banner line on client ports [default: the hostname].
    #[arg(long)]
    pub name: Option<String>,
    /// Client ports to listen on, repeated or comma-separated [default: the role's Impala
    /// ports on 0.0.0.0].
    #[arg(long = "listen", value_delimiter = ',')]
    pub listen: Vec<SocketAddr>,
    /// Web port [default: 0.0.0.0 and the role's Impala web port].
    #[arg(long)]
    pub web: Option<SocketAddr>,
    /// /healthz answers 503 until this long after start.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub ready_after: Duration,
    /// Close everything and exit with code 1 this long after start (crash-loop tests).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub crash_after: Option<Duration>,
    /// While this file exists, /healthz answers 503.
    #[arg(long)]
    pub unhealthy_file: Option<PathBuf>,
    /// The value of the active-status metric (catalogd, statestored).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub active: bool,
    /// Log SIGTERM and keep running (stop-timeout tests; only SIGKILL ends it).
    #[arg(long)]
    pub ignore_sigterm: bool,
}

impl StandinOpts {
    /// Options with every default: the role's ports on 0.0.0.0, ready at once, active.
    pub fn new(role: StandinRole) -> StandinOpts {
        StandinOpts {
            role,
            name: None,
            listen: Vec::new(),
            web: None,
            ready_after: Duration::ZERO,
            crash_after: None,
            unhealthy_file: None,
            active: true,
            ignore_sigterm: false,
        }
    }
}

/// How a stand-in ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandinExit {
    /// Stopped on request (SIGTERM, [`Standin::stop`]).
    Stopped,
    /// `crash_after` passed.
    Crashed,
}

/// What the web port reports, shared by the servers and the controls.
#[derive(Debug)]
struct Health {
    ready_at: Instant,
    unhealthy_file: Option<PathBuf>,
    /// Set by SIGUSR1 or [`Standin::set_unhealthy`]: forces 503.
    forced_unhealthy: AtomicBool,
    /// The active-status metric.
    active: AtomicBool,
}

impl Health {
    fn ready(&self) -> bool {
        Instant::now() >= self.ready_at
            && !self.forced_unhealthy.load(Ordering::Relaxed)
            && !self.unhealthy_file.as_ref().is_some_and(|f| f.exists())
    }
}

/// Connections served at once per stand-in; more wait in the listen backlog.
const MAX_CONNS: usize = 4096;
/// Longest HTTP request head accepted.
const MAX_HEAD: usize = 8192;
/// Time a web client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A running stand-in (in process).
#[derive(Debug)]
pub struct Standin {
    role: StandinRole,
    name: String,
    listen_addrs: Vec<SocketAddr>,
    web_addr: SocketAddr,
    health: Arc<Health>,
    /// Cancelled to stop every server task (on stop, or by the crash timer).
    cancel: CancellationToken,
    /// Set by the crash timer before it cancels, so `wait` can tell a crash from a stop.
    crashed: Arc<AtomicBool>,
    /// Every server and connection task, so `wait` can let them finish.
    tracker: TaskTracker,
}

impl Standin {
    /// Bind every port and start serving on the current tokio runtime.
    pub async fn start(opts: StandinOpts) -> anyhow::Result<Standin> {
        let role = opts.role;
        let name = match opts.name {
            Some(n) => n,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| role.as_str().to_string()),
        };
        let listen = if opts.listen.is_empty() {
            role.default_ports()
                .iter()
                .map(|p| SocketAddr::from(([0, 0, 0, 0], *p)))
                .collect()
        } else {
            opts.listen
        };
        let web = opts
            .web
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], role.default_web_port())));

        let mut listeners = Vec::new();
        for a in &listen {
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("{} stand-in: bind {a}", role.as_str()))?;
            listeners.push(l);
        }
        let web_l = TcpListener::bind(web)
            .await
            .with_context(|| format!("{} stand-in: bind web {web}", role.as_str()))?;

        let health = Arc::new(Health {
            ready_at: Instant::now() + opts.ready_after,
            unhealthy_file: opts.unhealthy_file,
            forced_unhealthy: AtomicBool::new(false),
            active: AtomicBool::new(opts.active),
        });
        let cancel = CancellationToken::new();
        let crashed = Arc::new(AtomicBool::new(false));
        let tracker = TaskTracker::new();
        let conns = Arc::new(Semaphore::new(MAX_CONNS));

        let listen_addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let web_addr = web_l.local_addr()?;

        let banner: Arc<[u8]> = format!("{name}\n").into_bytes().into();
        for l in listeners {
            let (banner, cancel, tr, conns) = (
                banner.clone(),
                cancel.clone(),
                tracker.clone(),
                conns.clone(),
            );
            tracker.spawn(accept_loop(l, cancel.clone(), tr, conns, move |s| {
                serve_echo(s, banner.clone())
            }));
        }
        {
            let (health, cancel2, tr) = (health.clone(), cancel.clone(), tracker.clone());
            tracker.spawn(accept_loop(web_l, cancel2, tr, conns, move |s| {
                serve_http(s, role, health.clone())
            }));
        }
        if let Some(after) = opts.crash_after {
            let (cancel, crashed) = (cancel.clone(), crashed.clone());
            tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(after) => {
                        crashed.store(true, Ordering::SeqCst);
                        cancel.cancel();
                    }
                }
            });
        }
        tracing::info!(role = role.as_str(), %name, ?listen_addrs, %web_addr, "stand-in started");
        Ok(Standin {
            role,
            name,
            listen_addrs,
            web_addr,
            health,
            cancel,
            crashed,
            tracker,
        })
    }

    pub fn role(&self) -> StandinRole {
        self.role
    }
    /// The banner name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The bound client addresses (real ports if port 0 was asked for), in `listen` order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }
    pub fn web_addr(&self) -> SocketAddr {
        self.web_addr
    }
    /// What /healthz would answer now.
    pub fn is_ready(&self) -> bool {
        self.health.ready()
    }
    /// Force /healthz to 503 (`true`) or let it follow the other conditions (`false`).
    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.health
            .forced_unhealthy
            .store(unhealthy, Ordering::Relaxed);
    }
    /// Flip the forced-unhealthy switch (what SIGUSR1 does); returns the new value.
    pub fn toggle_unhealthy(&self) -> bool {
        !self
            .health
            .forced_unhealthy
            .fetch_xor(true, Ordering::Relaxed)
    }
    /// Set the active-status metric.
    pub fn set_active(&self, active: bool) {
        self.health.active.store(active, Ordering::Relaxed);
    }
    /// A token that stops the stand-in when cancelled (and is cancelled when it stops).
    pub fn stopper(&self) -> CancellationToken {
        self.cancel.clone()
    }
    pub fn stop(&self) {
        self.cancel.cancel();
    }
    /// Wait until the stand-in is stopped or crashes, then for its tasks to end (at most 2 s).
    pub async fn wait(self) -> StandinExit {
        self.cancel.cancelled().await;
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        if self.crashed.load(Ordering::SeqCst) {
            StandinExit::Crashed
        } else {
            StandinExit::Stopped
        }
    }
}

/// The child-process entry point (`hapair lab standin ROLE ...`): run until SIGTERM or
/// SIGINT. With `crash_after`, exits the process with code 1 at that time.
pub async fn run_standin(opts: StandinOpts) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let ignore_sigterm = opts.ignore_sigterm;
    let (ready_after, crash_after) = (opts.ready_after, opts.crash_after);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let s = Standin::start(opts).await?;
    eprintln!(
        "{} stand-in {:?} started: pid={} listen={:?} web={} ready_after={:?} crash_after={:?}{}",
        s.role().as_str(),
        s.name(),
        std::process::id(),
        s.listen_addrs(),
        s.web_addr(),
        ready_after,
        crash_after,
        if ignore_sigterm {
            " ignore_sigterm"
        } else {
            ""
        },
    );
    let stop = s.stopper();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = term.recv() => {
                if ignore_sigterm {
                    eprintln!("SIGTERM: ignored (--ignore-sigterm)");
                } else {
                    eprintln!("SIGTERM: stopping");
                    s.stop();
                }
            }
            _ = int.recv() => {
                eprintln!("SIGINT: stopping");
                s.stop();
            }
            _ = usr1.recv() => {
                let now = s.toggle_unhealthy();
                eprintln!("SIGUSR1: forced unhealthy = {now}");
            }
        }
    }
    match s.wait().await {
        StandinExit::Stopped => {
            eprintln!("stopped");
            Ok(())
        }
        StandinExit::Crashed => {
            eprintln!("crashing on purpose (--crash-after): exit 1");
            std::process::exit(1)
        }
    }
}

async fn accept_loop<F, Fut>(
    l: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
    conns: Arc<Semaphore>,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = l.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "stand-in accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let fut = serve(stream);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
            drop(permit);
        });
    }
}

/// Banner, then echo until the client half-closes; then half-close back.
async fn serve_echo(mut s: TcpStream, banner: Arc<[u8]>) {
    let _ = s.set_nodelay(true);
    if s.write_all(&banner).await.is_err() {
        return;
    }
    let (mut r, mut w) = s.split();
    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

async fn serve_http(mut s: TcpStream, role: StandinRole, health: Arc<Health>) {
    let mut buf = Vec::with_capacity(512);
    let head = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if head_end(&buf).is_some() || buf.len() >= MAX_HEAD {
                return true;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return !buf.is_empty(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if !matches!(head, Ok(true)) {
        return;
    }
    let view = WebView {
        role,
        ready: health.ready(),
        active: health.active.load(Ordering::Relaxed),
    };
    let resp = http_response(&buf, view);
    let _ = s.write_all(&resp).await;
    let _ = s.shutdown().await;
    // Lingering close: drain what the client still sends (bounded), so that closing with
    // unread data does not reset the connection before the client reads the response.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut sink = [0u8; 1024];
        let mut left = 64 * 1024;
        while left > 0 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

/// What the web port reports at one moment.
#[derive(Debug, Clone, Copy)]
pub struct WebView {
    pub role: StandinRole,
    pub ready: bool,
    pub active: bool,
}

/// The full HTTP response to a request head (pure; never panics on any input).
pub fn http_response(head: &[u8], view: WebView) -> Vec<u8> {
    let Some(req) = parse_request_line(head) else {
        return response(400, "text/plain", "Bad Request\n", true);
    };
    let with_body = match req.method {
        "GET" => true,
        "HEAD" => false,
        _ => return response(405, "text/plain", "Method Not Allowed\n", true),
    };
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let (code, ctype, body) = match path {
        "/healthz" if view.ready => (200, "text/plain", "OK\n".to_string()),
        "/healthz" => (503, "text/plain", "Not Available\n".to_string()),
        "/jsonmetrics" => (200, "application/json", json_metrics(view, query)),
        "/" => (
            200,
            "text/plain",
            format!("hapair {} stand-in\n", view.role.as_str()),
        ),
        _ => (404, "text/plain", "Not Found\n".to_string()),
    };
    response(code, ctype, &body, with_body)
}

fn json_metrics(view: WebView, query: &str) -> String {
    let wanted = query.split('&').find_map(|kv| kv.strip_prefix("metric="));
    let mut m = serde_json::Map::new();
    if let Some(key) = view.role.active_metric() {
        if wanted.map_or(true, |w| w == key) {
            m.insert(key.to_string(), serde_json::Value::Bool(view.active));
        }
    }
    serde_json::Value::Object(m).to_string()
}

struct RequestLine<'a> {
    method: &'a str,
    target: &'a str,
}

fn parse_request_line(head: &[u8]) -> Option<RequestLine<'_>> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !version.starts_with("HTTP/1.")
    {
        return None;
    }
    Some(RequestLine { method, target })
}

fn response(code: u16, ctype: &str, body: &str, with_body: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    out.into_bytes()
}

/// A one-shot `GET path` over HTTP/1.1 to `addr`, for the lab and tests: returns the status
/// code and the body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(timeout, fut)
        .await
        .with_context(|| format!("GET {addr}{path}: timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {addr}{path}: no header end"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {addr}{path}: bad status line"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    fn local(role: StandinRole, name: &str, nports: usize) -> StandinOpts {
        let mut o = StandinOpts::new(role);
        o.name = Some(name.into());
        o.listen = vec!["127.0.0.1:0".parse().unwrap(); nports];
        o.web = Some("127.0.0.1:0".parse().unwrap());
        o
    }

    #[tokio::test]
    async fn healthz_flips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unhealthy");
        let mut o = local(StandinRole::Impalad, "impala1", 1);
        o.ready_after = Duration::from_millis(150);
        o.unhealthy_file = Some(file.clone());
        let s = Standin::start(o).await.unwrap();
        let web = s.web_addr();
        assert_eq!(http_get(web, "/healthz", T).await.unwrap().0, 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            http_get(web, "/healthz", T).await.unwrap(),
            (200, "OK\n".into())
        );
        s.set_unhealthy(true);
        assert_eq!(http_get(web, "/healthz", T).await.unwrap().0, 503);
        assert!(!s.toggle_unhealthy());
        assert_eq!(http_get(web, "/healthz", T).await.unwrap().0, 200);
        std::fs::write(&file, b"").unwrap();
        assert_eq!(http_get(web, "/healthz", T).await.unwrap().0, 503);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(http_get(web, "/healthz", T).await.unwrap().0, 200);
        assert_eq!(http_get(web, "/nope", T).await.unwrap().0, 404);
        s.stop();
        assert_eq!(s.wait().await, StandinExit::Stopped);
    }

    #[tokio::test]
    async fn banner_and_echo_on_every_port() {
        let s = Standin::start(local(StandinRole::Impalad, "impala2", 3))
            .await
            .unwrap();
        assert_eq!(s.listen_addrs().len(), 3);
        for a in s.listen_addrs() {
            let mut c = TcpStream::connect(a).await.unwrap();
            let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let (mut r, mut w) = c.split();
            let send = async {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let (_, n) = tokio::join!(send, recv);
            n.unwrap();
            assert_eq!(&got[..8], b"impala2\n");
            assert_eq!(&got[8..], &payload[..]);
        }
        s.stop();
        s.wait().await;
    }

    #[tokio::test]
    async fn active_status_metric() {
        let s = Standin::start(local(StandinRole::Catalogd, "cat1", 1))
            .await
            .unwrap();
        let web = s.web_addr();
        let q = "/jsonmetrics?metric=catalog-server.active-status";
        let (code, body) = http_get(web, q, T).await.unwrap();
        assert_eq!(code, 200);
        assert_eq!(body, r#"{"catalog-server.active-status":true}"#);
        s.set_active(false);
        let (_, body) = http_get(web, q, T).await.unwrap();
        assert_eq!(body, r#"{"catalog-server.active-status":false}"#);
        let (_, body) = http_get(web, "/jsonmetrics?metric=other", T).await.unwrap();
        assert_eq!(body, "{}");
        s.stop();
        s.wait().await;

        let v = WebView {
            role: StandinRole::Statestored,
            ready: true,
            active: true,
        };
        let r = String::from_utf8(http_response(b"GET /jsonmetrics HTTP/1.1\r\n\r\n", v)).unwrap();
        assert!(r.ends_with(r#"{"statestore.active-status":true}"#), "{r}");
    }

    #[tokio::test]
    async fn crash_after_stops_everything() {
        let mut o = local(StandinRole::Statestored, "ss1", 1);
        o.crash_after = Some(Duration::from_millis(50));
        let s = Standin::start(o).await.unwrap();
        let a = s.listen_addrs()[0];
        let t0 = Instant::now();
        assert_eq!(s.wait().await, StandinExit::Crashed);
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(TcpStream::connect(a).await.is_err());
    }

    #[test]
    fn bad_requests_get_400() {
        let v = WebView {
            role: StandinRole::Impalad,
            ready: true,
            active: true,
        };
        let status = |req: &[u8]| {
            let r = http_response(req, v);
            String::from_utf8_lossy(&r[..12]).to_string()
        };
        assert_eq!(status(b"GET /healthz HTTP/1.1\r\n\r\n"), "HTTP/1.1 200");
        assert_eq!(status(b"GET /healthz HTTP/1.0\n\n"), "HTTP/1.1 200");
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /healthz\r\n\r\n",
            b"GET healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1 x\r\n\r\n",
            b"GET /healthz SPDY/3\r\n\r\n",
            b"\xff\xfe /healthz HTTP/1.1\r\n\r\n",
            b"get /healthz HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status(bad), "HTTP/1.1 400", "{bad:?}");
        }
        assert_eq!(status(b"POST /healthz HTTP/1.1\r\n\r\n"), "HTTP/1.1 405");
        let head = http_response(b"HEAD /healthz HTTP/1.1\r\n\r\n", v);
        assert!(head.ends_with(b"\r\n\r\n"));
    }

    #[tokio::test]
    async fn garbage_on_the_wire_gets_400_and_the_server_lives() {
        let s = Standin::start(local(StandinRole::Impalad, "i", 1))
            .await
            .unwrap();
        let web = s.web_addr();
        for junk in [&b"\x00\x01\x02\n\n"[..], &[b'A'; MAX_HEAD + 10][..]] {
            let mut c = TcpStream::connect(web).await.unwrap();
            c.write_all(junk).await.unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).await.unwrap();
            assert!(
                out.starts_with(b"HTTP/1.1 400"),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
        }
        // A client that connects and says nothing does not block others.
        let _idle = TcpStream::connect(web).await.unwrap();
        assert_eq!(http_get(web, "/healthz", T).await.unwrap().0, 200);
        s.stop();
        s.wait().await;
    }

    #[test]
    fn opts_parse_from_cli() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: StandinOpts,
        }
        let c = Cli::parse_from([
            "x",
            "catalogd",
            "--name",
            "c1",
            "--listen",
            "127.0.0.1:26000,127.0.0.2:26000",
            "--ready-after",
            "300ms",
            "--crash-after",
            "2s",
            "--active",
            "false",
            "--ignore-sigterm",
        ]);
        assert_eq!(c.o.role, StandinRole::Catalogd);
        assert_eq!(c.o.listen.len(), 2);
        assert_eq!(c.o.ready_after, Duration::from_millis(300));
        assert_eq!(c.o.crash_after, Some(Duration::from_secs(2)));
        assert!(!c.o.active);
        assert!(c.o.ignore_sigterm);
        let d = Cli::parse_from(["x", "impalad"]);
        assert!(d.o.active && d.o.listen.is_empty() && d.o.web.is_none());
    }

    /// The lab client reads the stand-in's banner: it knows which host answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_reads_the_banner() {
        use crate::lab::client::{failed_count, ConnectLoop};
        let s = Standin::start(local(StandinRole::Impalad, "impala7", 1))
            .await
            .unwrap();
        let cl = ConnectLoop::new(s.listen_addrs()[0])
            .read_banner(true)
            .max_attempts(20)
            .pause(Duration::from_millis(1));
        let recs = tokio::task::spawn_blocking(move || {
            cl.run(Instant::now(), &AtomicBool::new(false), None)
        })
        .await
        .unwrap();
        assert_eq!(recs.len(), 20);
        assert_eq!(failed_count(&recs), 0, "{recs:?}");
        assert!(recs.iter().all(|r| r.host() == Some("impala7")));
        s.stop();
        s.wait().await;
    }

    /// Not a test on its own: the child-process body for `child_process_lifecycle`, which
    /// re-runs this test binary with `HAPAIR_STANDIN_CHILD` set to the stand-in's arguments.
    #[test]
    fn standin_child_entry() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: StandinOpts,
        }
        let Ok(args) = std::env::var("HAPAIR_STANDIN_CHILD") else {
            return;
        };
        let cli = Cli::parse_from(std::iter::once("standin").chain(args.split(' ')));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run_standin(cli.o)).unwrap();
    }

    struct Child {
        child: std::process::Child,
        web: SocketAddr,
    }

    impl Child {
        fn start(args: &str) -> Child {
            use std::io::BufRead;
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "lab::standin::tests::standin_child_entry"])
                .args(["--nocapture", "--test-threads=1"])
                .env("HAPAIR_STANDIN_CHILD", args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
            let line = lines
                .find_map(|l| l.ok().filter(|l| l.contains(" started: ")))
                .expect("start line");
            let web = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("web="))
                .unwrap()
                .parse()
                .unwrap();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            Child { child, web }
        }
        fn signal(&self, sig: nix::sys::signal::Signal) {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            nix::sys::signal::kill(pid, sig).unwrap();
        }
        /// The exit code, if the child exits within `within`.
        fn exit_within(&mut self, within: Duration) -> Option<i32> {
            let t0 = Instant::now();
            while t0.elapsed() < within {
                if let Some(st) = self.child.try_wait().unwrap() {
                    return st.code();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn child_process_lifecycle() {
        use nix::sys::signal::Signal;
        const BASE: &str = "--listen 127.0.0.1:0 --web 127.0.0.1:0 --name c";

        // SIGUSR1 flips readiness; SIGTERM stops with exit 0.
        let mut c = Child::start(&format!("statestored {BASE}"));
        assert_eq!(http_get(c.web, "/healthz", T).await.unwrap().0, 200);
        c.signal(Signal::SIGUSR1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(http_get(c.web, "/healthz", T).await.unwrap().0, 503);
        c.signal(Signal::SIGTERM);
        assert_eq!(c.exit_within(Duration::from_secs(3)), Some(0));

        // --ignore-sigterm survives SIGTERM (the Drop kills it).
        let mut c = Child::start(&format!("catalogd {BASE} --ignore-sigterm"));
        c.signal(Signal::SIGTERM);
        assert_eq!(c.exit_within(Duration::from_millis(300)), None);
        assert_eq!(http_get(c.web, "/healthz", T).await.unwrap().0, 200);
        drop(c);

        // --crash-after exits with code 1.
        let mut c = Child::start(&format!("impalad {BASE} --crash-after 100ms"));
        assert_eq!(c.exit_within(Duration::from_secs(3)), Some(1));
    }
}

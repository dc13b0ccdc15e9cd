//! The admin HTTP server on `node.admin` (default 127.0.0.1:9180).
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the HTML status page (refreshes itself every 2 s, no JavaScript) |
//! | `GET /status` | the same as JSON (schema in `docs/status.md`) |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /control/step-down` | hand the VIPs to the peer (make-before-break) |
//! | `POST /control/drain?server=S[&listener=L]` | no new connections to S; open ones finish |
//! | `POST /control/disable?server=S[&listener=L]` | maintenance: as drain, checks keep running |
//! | `POST /control/enable?server=S[&listener=L]` | back in rotation (if its checks pass) |
//! | `POST /control/restart?service=NAME` | restart a supervised service |
//!
//! - **Control is locked.** POSTs need `Authorization: Bearer <token>`, the token being the
//!   content of `node.admin_token_file`, read once at start. Without that file, control is
//!   disabled (403 says so). A missing or wrong token gets 401 and changes nothing. The
//!   comparison is constant-time (SHA-256 of both sides, compared with `subtle`). GETs never
//!   need the token.
//! - **Bounded.** At most [`MAX_CONNS`] admin connections at once (more get 503), one request
//!   per connection, a request head of at most 8 KiB, and [`IO_TIMEOUT`] to read it and to
//!   write the answer.
//! - Control answers are JSON `{"ok": bool, "message": "..."}`.
//!
//! The HTTP layer is a small hand-written HTTP/1.1 responder over tokio with `httparse` for
//! the request head (see `http.rs` for why no full HTTP stack is needed here).

pub mod client;
pub mod http;
pub mod metrics;
pub mod page;
pub mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::balancer::{Balancer, ControlError};
use crate::driver::{PairHandle, Request as PairRequest};
use crate::events::EventLog;
use crate::pair::machine::Command;
use http::{Request, Response};
use status::Status;

/// Most admin connections served at once; more are answered 503 and closed.
pub const MAX_CONNS: usize = 32;
/// Deadline to read a request, and separately to write its answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin token, or why control is disabled.
#[derive(Clone)]
pub enum Token {
    /// SHA-256 of the token: compared in constant time, never printed.
    Enabled([u8; 32]),
    /// Why control is off, for the 403 answer.
    Disabled(String),
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Enabled(_) => f.write_str("Token::Enabled(MASKED)"),
            Token::Disabled(why) => write!(f, "Token::Disabled({why:?})"),
        }
    }
}

impl Token {
    /// A token from its text (surrounding whitespace, such as a final newline, is ignored).
    pub fn from_text(text: &str) -> Token {
        let t = text.trim();
        if t.is_empty() {
            return Token::Disabled("the admin token file is empty".into());
        }
        Token::Enabled(Sha256::digest(t.as_bytes()).into())
    }

    /// Read `node.admin_token_file`. Never fails: a problem disables control and says why.
    pub fn load(file: Option<&Path>) -> Token {
        let Some(path) = file else {
            return Token::Disabled(
                "control is disabled: set node.admin_token_file to a file holding a secret token"
                    .into(),
            );
        };
        match std::fs::read_to_string(path) {
            Ok(text) => match Token::from_text(&text) {
                Token::Disabled(why) => {
                    Token::Disabled(format!("control is disabled: {why} ({})", path.display()))
                }
                t => {
                    warn_if_readable(path);
                    t
                }
            },
            Err(e) => Token::Disabled(format!(
                "control is disabled: cannot read node.admin_token_file {}: {e}",
                path.display()
            )),
        }
    }

    pub fn is_enabled(&self) -> bool {
        matches!(self, Token::Enabled(_))
    }

    /// Does an `Authorization` header carry this token?
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Token::Enabled(want) = self else {
            return false;
        };
        let Some(h) = authorization else { return false };
        let Some(given) = strip_bearer(h) else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        bool::from(got.ct_eq(want))
    }
}

fn strip_bearer(h: &str) -> Option<&str> {
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            warn!(file = %path.display(), "the admin token file is readable by group or others; chmod 600 it");
        }
    }
}

/// What the admin server reads and drives. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// Status snapshot and the step-down command channel of the pair thread.
    pair: PairHandle,
    /// Snapshot and drain/enable/disable of the balancer.
    balancer: Balancer,
    /// Snapshot and restart of the supervised services.
    supervisor: crate::supervisor::Supervisor,
    /// Read for the page; control actions are recorded here too.
    events: EventLog,
    token: Token,
    /// The ZooKeeper registrar, set once after start when `[zookeeper]` is configured.
    zookeeper: std::sync::OnceLock<crate::zk::Registrar>,
}

impl Admin {
    pub fn new(
        node: String,
        pair: PairHandle,
        balancer: Balancer,
        supervisor: crate::supervisor::Supervisor,
        events: EventLog,
        token: Token,
    ) -> Admin {
        if let Token::Disabled(why) = &token {
            info!("admin: {why}");
        }
        Admin {
            inner: Arc::new(Inner {
                node,
                pair,
                balancer,
                supervisor,
                events,
                token,
                zookeeper: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Show this registrar's state in `/status`, the page and `/metrics`. Set once.
    pub fn set_zookeeper(&self, r: crate::zk::Registrar) {
        let _ = self.inner.zookeeper.set(r);
    }

    /// One consistent snapshot for the page, JSON and metrics.
    pub fn status(&self) -> Status {
        let i = &self.inner;
        let pair = i
            .pair
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: i.node.clone(),
            now_ms: crate::events::unix_ms(),
            pair,
            listeners: i.balancer.snapshot().listeners,
            services: i
                .supervisor
                .snapshot()
                .iter()
                .filter_map(|sv| serde_json::to_value(sv).ok())
                .collect(),
            zookeeper: i.zookeeper.get().map(|z| z.status()),
            control_enabled: i.token.is_enabled(),
            events: i.events.last(status::EVENTS),
        }
    }

    /// Answer one request. Pure routing: no socket here, so it is tested directly.
    pub fn handle(&self, req: &Request, from: SocketAddr) -> Response {
        let get = req.method == "GET" || req.method == "HEAD";
        match (req.path.as_str(), get) {
            ("/", true) => Response::new(
                200,
                "text/html; charset=utf-8",
                page::render(&self.status()),
            )
            .with_header(
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            ("/status", true) => json(200, &self.status()),
            ("/metrics", true) => {
                Response::new(200, metrics::CONTENT_TYPE, metrics::render(&self.status()))
            }
            ("/favicon.ico", true) => Response::text(404, "no favicon"),
            (p, false) if p.starts_with("/control/") && req.method == "POST" => {
                self.control(req, from)
            }
            (p, true) if p.starts_with("/control/") => {
                answer(405, false, "control endpoints take POST").with_header("Allow", "POST")
            }
            ("/" | "/status" | "/metrics", false) => {
                Response::text(405, format!("{} takes GET", req.path))
                    .with_header("Allow", "GET, HEAD")
            }
            _ => Response::text(
                404,
                format!("no such page: {}; try /, /status or /metrics", req.path),
            ),
        }
    }

    fn control(&self, req: &Request, from: SocketAddr) -> Response {
        let i = &self.inner;
        let action = req.path.trim_start_matches("/control/");
        if let Token::Disabled(why) = &i.token {
            warn!(%from, action, "admin control refused: control is disabled");
            return answer(403, false, why);
        }
        if !i.token.accepts(req.authorization.as_deref()) {
            warn!(%from, action, "admin control refused: missing or wrong token");
            let msg = if req.authorization.is_some() {
                "wrong admin token (see node.admin_token_file)"
            } else {
                "this needs Authorization: Bearer <token> (the content of node.admin_token_file)"
            };
            return answer(401, false, msg)
                .with_header("WWW-Authenticate", "Bearer realm=\"hapair\"");
        }
        let server = req.param("server").filter(|s| !s.is_empty());
        let listener = req.param("listener").filter(|s| !s.is_empty());
        let r = match action {
            "step-down" => self.step_down(),
            "drain" | "enable" | "disable" => {
                let Some(server) = server else {
                    return answer(
                        400,
                        false,
                        &format!("{action} needs ?server=NAME (and optionally &listener=NAME)"),
                    );
                };
                let b = &i.balancer;
                let done = match action {
                    "drain" => b.drain(listener, server),
                    "enable" => b.enable(listener, server),
                    _ => b.disable(listener, server),
                };
                let scope =
                    listener.map_or("every listener".to_string(), |l| format!("listener {l}"));
                match done {
                    Ok(()) => Ok(format!("{action} {server} in {scope}")),
                    Err(e @ (ControlError::NoServer(_) | ControlError::NoListener(_))) => {
                        Err((404, e.to_string()))
                    }
                }
            }
            "restart" => match req.param("service").filter(|s| !s.is_empty()) {
                None => Err((400, "restart needs ?service=NAME".to_string())),
                Some(s) if !i.supervisor.snapshot().iter().any(|sv| sv.name == s) => {
                    Err((404, format!("no such service: {s:?}")))
                }
                Some(s) => {
                    // Answer now; the restart (stop, then start) runs on.
                    let sup = i.supervisor.clone();
                    let name = s.to_string();
                    tokio::spawn(async move {
                        if let Err(e) = sup.restart(&name).await {
                            warn!(service = %name, "restart failed: {e}");
                        }
                    });
                    Ok(format!("restarting service {s}"))
                }
            },
            _ => Err((
                404,
                format!(
                    "no such control: {action:?}; try step-down, drain, enable, disable or restart"
                ),
            )),
        };
        match r {
            Ok(msg) => {
                info!(%from, "admin control: {msg}");
                i.events.push("admin", msg.clone());
                answer(200, true, &msg)
            }
            Err((code, msg)) => {
                info!(%from, action, "admin control failed: {msg}");
                answer(code, false, &msg)
            }
        }
    }

    fn step_down(&self) -> Result<String, (u16, String)> {
        let i = &self.inner;
        let (role, peer_alive) = {
            let s = i.pair.status.lock().unwrap_or_else(|p| p.into_inner());
            (
                s.role.to_lowercase(),
                s.peer.as_ref().is_some_and(|p| p.alive),
            )
        };
        if role != "master" {
            return Err((
                409,
                format!("this node is {role}, not master: nothing to step down from"),
            ));
        }
        if i.pair
            .tx
            .send(PairRequest::Command(Command::StepDown))
            .is_err()
        {
            return Err((503, "the pair thread is not running".to_string()));
        }
        Ok(if peer_alive {
            "step-down: handing the VIPs over to the peer".to_string()
        } else {
            "step-down requested, but the peer is not alive: the VIPs stay here until it is"
                .to_string()
        })
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    ok: bool,
    message: &'a str,
}

fn answer(status: u16, ok: bool, message: &str) -> Response {
    json(status, &Answer { ok, message })
}

fn json<T: Serialize>(status: u16, v: &T) -> Response {
    match serde_json::to_vec_pretty(v) {
        Ok(mut b) => {
            b.push(b'\n');
            Response::new(status, "application/json", b)
        }
        Err(e) => Response::text(500, format!("cannot encode JSON: {e}")),
    }
}

/// Bind the admin address. Done before the pair starts, so a taken port stops the start-up.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "admin listening: status page, /status, /metrics, /control");
    }
    loop {
        let (mut sock, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let busy = Response::text(503, "too many admin connections; try again");
            tokio::spawn(async move {
                http::write_response(&mut sock, &busy, false, Duration::from_secs(1)).await;
            });
            continue;
        };
        let admin = admin.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(&mut sock, from, &admin) => {}
            }
        });
    }
}

async fn connection(sock: &mut TcpStream, from: SocketAddr, admin: &Admin) {
    let req = match http::read_request(sock, IO_TIMEOUT).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%from, error = %e, "admin request not read");
            if let Some(resp) = e.response() {
                http::write_response(sock, &resp, false, IO_TIMEOUT).await;
            }
            return;
        }
    };
    let resp = admin.handle(&req, from);
    debug!(%from, method = %req.method, path = %req.path, status = resp.status, "admin");
    http::write_response(sock, &resp, req.method == "HEAD", IO_TIMEOUT).await;
}

/// Bind, then serve in a task: the daemon's one call. Returns the bound address.
pub async fn start(
    addr: SocketAddr,
    admin: Admin,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let l = bind(addr).await?;
    let local = l.local_addr()?;
    tokio::spawn(serve(l, admin, shutdown));
    Ok(local)
}

#[cfg(test)]
mod tests;

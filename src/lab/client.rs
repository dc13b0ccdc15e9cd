//! The client that measures what users see: connect to `VIP:port` in a tight loop and record
//! every attempt.
//!
//! [`ConnectLoop::run`] is plain blocking std code on the calling thread, so it measures from
//! whatever network namespace the caller's thread is in (a thread spawned from a thread that
//! did `setns` inherits its namespace). All times are milliseconds since a shared origin
//! [`Instant`], the same origin that the sniffer and the timeline use.
//!
//! The analysis functions ([`outages`], [`longest_gap`], [`failed_count`], ...) are pure and
//! work on any slice of [`Attempt`]s.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Longest banner line the client reads.
const BANNER_MAX: usize = 256;

/// Why a connect attempt failed, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The SYN was answered with a RST (nobody listens, or the VIP is held but unbound).
    Refused,
    /// No answer within the attempt timeout (connect), or no banner within the banner timeout.
    Timeout,
    /// The connection was reset after it was established (while reading the banner).
    Reset,
    /// The peer closed the connection before it sent a banner line.
    Closed,
    /// EHOSTUNREACH or ENETUNREACH: no route, or ARP for the address failed.
    Unreachable,
    /// Anything else, with the OS error text.
    Other(String),
}

impl FailReason {
    fn from_io(e: &io::Error) -> FailReason {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => return FailReason::Refused,
            Some(libc::ETIMEDOUT) | Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => {
                return FailReason::Timeout
            }
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => return FailReason::Reset,
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => return FailReason::Unreachable,
            _ => {}
        }
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailReason::Timeout,
            io::ErrorKind::ConnectionRefused => FailReason::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => FailReason::Reset,
            io::ErrorKind::UnexpectedEof => FailReason::Closed,
            _ => FailReason::Other(e.to_string()),
        }
    }
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::Refused => f.write_str("refused"),
            FailReason::Timeout => f.write_str("timeout"),
            FailReason::Reset => f.write_str("reset"),
            FailReason::Closed => f.write_str("closed"),
            FailReason::Unreachable => f.write_str("unreachable"),
            FailReason::Other(s) => write!(f, "error: {s}"),
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// Connected (and read the banner, if asked). `host` is the banner line, if read.
    Ok {
        host: Option<String>,
    },
    Fail {
        reason: FailReason,
    },
}

/// One connect attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt started, in ms since the shared origin.
    pub at_ms: f64,
    /// How long the attempt took (connect plus banner), in ms.
    pub took_ms: f64,
    pub outcome: Outcome,
}

impl Attempt {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }
    /// The host that answered, if the attempt succeeded and read a banner.
    pub fn host(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok { host } => host.as_deref(),
            Outcome::Fail { .. } => None,
        }
    }
    pub fn reason(&self) -> Option<&FailReason> {
        match &self.outcome {
            Outcome::Ok { .. } => None,
            Outcome::Fail { reason } => Some(reason),
        }
    }
}

/// A client that connects to `target` in a tight loop.
///
/// Build with [`ConnectLoop::new`] and the builder methods; run with [`ConnectLoop::run`] on
/// the current thread or [`ConnectLoop::spawn`] on a new one.
#[derive(Debug, Clone)]
pub struct ConnectLoop {
    pub target: SocketAddr,
    /// Timeout of the non-blocking connect. Default 20 ms.
    pub attempt_timeout: Duration,
    /// Pause between attempts. Default 5 ms.
    pub pause: Duration,
    /// Read a banner line (the answering host's name) after connecting. Default off.
    pub read_banner: bool,
    /// Timeout for the banner line after the connect succeeded. Default 200 ms: through the
    /// balancer the banner needs a second connect, to the backend.
    pub banner_timeout: Duration,
    /// Close with SO_LINGER 0 (RST) so that long runs leave no TIME_WAIT sockets. Default off.
    pub abort_close: bool,
    /// Hard bound on the number of attempts in one run. Default 100 000.
    pub max_attempts: usize,
}

impl ConnectLoop {
    pub fn new(target: SocketAddr) -> ConnectLoop {
        ConnectLoop {
            target,
            attempt_timeout: Duration::from_millis(20),
            pause: Duration::from_millis(5),
            read_banner: false,
            banner_timeout: Duration::from_millis(200),
            abort_close: false,
            max_attempts: 100_000,
        }
    }
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = d;
        self
    }
    pub fn pause(mut self, d: Duration) -> Self {
        self.pause = d;
        self
    }
    pub fn read_banner(mut self, on: bool) -> Self {
        self.read_banner = on;
        self
    }
    pub fn banner_timeout(mut self, d: Duration) -> Self {
        self.banner_timeout = d;
        self
    }
    pub fn abort_close(mut self, on: bool) -> Self {
        self.abort_close = on;
        self
    }
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n;
        self
    }

    /// Make one attempt, timed against `origin`.
    pub fn attempt(&self, origin: Instant) -> Attempt {
        let start = Instant::now();
        let outcome = match self.try_connect() {
            Ok(host) => Outcome::Ok { host },
            Err(e) => Outcome::Fail {
                reason: FailReason::from_io(&e),
            },
        };
        Attempt {
            at_ms: ms_between(origin, start),
            took_ms: ms(start.elapsed()),
            outcome,
        }
    }

    fn try_connect(&self) -> io::Result<Option<String>> {
        let domain = Domain::for_address(self.target);
        let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        if self.abort_close {
            sock.set_linger(Some(Duration::ZERO))?;
        }
        // socket2 connects non-blocking, polls for `attempt_timeout`, then takes SO_ERROR.
        sock.connect_timeout(&SockAddr::from(self.target), self.attempt_timeout)?;
        if !self.read_banner {
            return Ok(None);
        }
        let mut stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(self.banner_timeout.max(Duration::from_millis(1))))?;
        read_banner(&mut stream).map(Some)
    }

    /// Run until `stop` is set, `deadline` passes or `max_attempts` is reached, on the current
    /// thread. Returns every attempt, in order.
    pub fn run(
        &self,
        origin: Instant,
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Vec<Attempt> {
        let mut out = Vec::new();
        while out.len() < self.max_attempts && !stop.load(Ordering::Relaxed) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            out.push(self.attempt(origin));
            if !self.pause.is_zero() {
                thread::sleep(self.pause);
            }
        }
        out
    }

    /// Run on a new thread (which inherits the caller's network namespace).
    pub fn spawn(
        self,
        origin: Instant,
        stop: Arc<AtomicBool>,
        deadline: Option<Instant>,
    ) -> thread::JoinHandle<Vec<Attempt>> {
        thread::Builder::new()
            .name("lab-client".into())
            .spawn(move || self.run(origin, &stop, deadline))
            .expect("spawn lab-client thread")
    }
}

/// Read one line (up to `BANNER_MAX` bytes, without the newline). EOF before a newline with
/// no bytes read is `UnexpectedEof`; EOF after some bytes returns what was read.
fn read_banner(stream: &mut TcpStream) -> io::Result<String> {
    let mut buf = [0u8; BANNER_MAX];
    let mut len = 0;
    while len < BANNER_MAX {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            if len == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            break;
        }
        len += n;
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    let line = buf[..len].split(|&b| b == b'\n').next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(line)
        .trim_end_matches('\r')
        .to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds from `origin` to `t` (negative if `t` is earlier).
pub fn ms_between(origin: Instant, t: Instant) -> f64 {
    match t.checked_duration_since(origin) {
        Some(d) => ms(d),
        None => -ms(origin.duration_since(t)),
    }
}

/// A run of consecutive failed attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// Start of the last successful attempt before the run, or of the first failure if the
    /// records start failing.
    pub start_ms: f64,
    /// Start of the first successful attempt after the run, or the end of the last failure if
    /// the records end failing (then `open` is true).
    pub end_ms: f64,
    pub first_failed_ms: f64,
    pub last_failed_ms: f64,
    pub failed_attempts: usize,
    /// `end_ms - start_ms`: what the user saw as "the service was gone".
    pub duration_ms: f64,
    /// The records end inside this outage.
    pub open: bool,
}

/// Every run of consecutive failures, in order.
pub fn outages(records: &[Attempt]) -> Vec<Outage> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < records.len() {
        if records[i].is_ok() {
            i += 1;
            continue;
        }
        let first = i;
        while i < records.len() && !records[i].is_ok() {
            i += 1;
        }
        let last = &records[i - 1];
        let start_ms = match first.checked_sub(1) {
            Some(p) => records[p].at_ms,
            None => records[first].at_ms,
        };
        let (end_ms, open) = match records.get(i) {
            Some(next) => (next.at_ms, false),
            None => (last.at_ms + last.took_ms, true),
        };
        out.push(Outage {
            start_ms,
            end_ms,
            first_failed_ms: records[first].at_ms,
            last_failed_ms: last.at_ms,
            failed_attempts: i - first,
            duration_ms: end_ms - start_ms,
            open,
        });
    }
    out
}

/// The longest time without a successful connect: the largest gap between the starts of two
/// consecutive successful attempts, or an outage at either end of the records. 0 if there are
/// fewer than two attempts.
pub fn longest_gap(records: &[Attempt]) -> f64 {
    let mut best: f64 = 0.0;
    let mut prev_ok: Option<f64> = None;
    for r in records.iter().filter(|r| r.is_ok()) {
        if let Some(p) = prev_ok {
            best = best.max(r.at_ms - p);
        }
        prev_ok = Some(r.at_ms);
    }
    for o in outages(records) {
        best = best.max(o.duration_ms);
    }
    best
}

pub fn failed_count(records: &[Attempt]) -> usize {
    records.iter().filter(|r| !r.is_ok()).count()
}

/// The first failed attempt that started at or after `t_ms`.
pub fn first_failed_after(records: &[Attempt], t_ms: f64) -> Option<&Attempt> {
    records.iter().find(|r| r.at_ms >= t_ms && !r.is_ok())
}

/// The first successful attempt that started at or after `t_ms`.
pub fn first_ok_after(records: &[Attempt], t_ms: f64) -> Option<&Attempt> {
    records.iter().find(|r| r.at_ms >= t_ms && r.is_ok())
}

/// The first successful attempt at or after `t_ms` answered by a host other than `host`
/// (e.g. the first connect served by the new master).
pub fn first_ok_via_other_after<'a>(
    records: &'a [Attempt],
    t_ms: f64,
    host: &str,
) -> Option<&'a Attempt> {
    records
        .iter()
        .find(|r| r.at_ms >= t_ms && r.host().is_some_and(|h| h != host))
}

/// Attempts whose start lies in `[from_ms, to_ms)`.
pub fn window(records: &[Attempt], from_ms: f64, to_ms: f64) -> &[Attempt] {
    let a = records.partition_point(|r| r.at_ms < from_ms);
    let b = records.partition_point(|r| r.at_ms < to_ms);
    &records[a..b.max(a)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn ok(at: f64) -> Attempt {
        Attempt {
            at_ms: at,
            took_ms: 0.1,
            outcome: Outcome::Ok { host: None },
        }
    }
    fn fail(at: f64) -> Attempt {
        Attempt {
            at_ms: at,
            took_ms: 0.1,
            outcome: Outcome::Fail {
                reason: FailReason::Refused,
            },
        }
    }

    #[test]
    fn outages_from_records() {
        let r = vec![
            ok(0.0),
            ok(10.0),
            fail(20.0),
            fail(30.0),
            ok(40.0),
            fail(50.0),
        ];
        let o = outages(&r);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].failed_attempts, 2);
        assert_eq!(
            (o[0].start_ms, o[0].end_ms, o[0].duration_ms),
            (10.0, 40.0, 30.0)
        );
        assert_eq!(o[0].first_failed_ms, 20.0);
        assert!(!o[0].open);
        assert!(o[1].open);
        assert_eq!(o[1].failed_attempts, 1);
        assert_eq!(failed_count(&r), 3);
        assert_eq!(longest_gap(&r), 30.0);
        assert_eq!(first_failed_after(&r, 31.0).map(|a| a.at_ms), Some(50.0));
        assert_eq!(first_ok_after(&r, 11.0).map(|a| a.at_ms), Some(40.0));
        assert_eq!(window(&r, 10.0, 40.0).len(), 3);
        assert!(outages(&[ok(0.0), ok(1.0)]).is_empty());
        assert_eq!(longest_gap(&[]), 0.0);
    }

    #[test]
    fn leading_failures_start_at_first_failure() {
        let o = outages(&[fail(5.0), fail(6.0), ok(9.0)]);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].start_ms, o[0].end_ms), (5.0, 9.0));
    }

    /// A listener that goes away and comes back on the same port shows up as exactly one
    /// outage of refused connects, whose count matches the failed attempts.
    #[test]
    fn listener_restart_is_one_outage() {
        let origin = Instant::now();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let cl = ConnectLoop::new(addr)
            .pause(Duration::from_millis(2))
            .read_banner(true);
        let stop = Arc::new(AtomicBool::new(false));

        // Serve banners until told to stop, then drop the listener.
        let serve = |l: TcpListener, stop: Arc<AtomicBool>| {
            l.set_nonblocking(true).unwrap();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let _ = s.write_all(b"alpha\n");
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        let stop1 = Arc::new(AtomicBool::new(false));
        let srv1 = serve(l, stop1.clone());
        let client = cl.spawn(
            origin,
            stop.clone(),
            Some(Instant::now() + Duration::from_secs(5)),
        );

        thread::sleep(Duration::from_millis(60));
        stop1.store(true, Ordering::Relaxed);
        srv1.join().unwrap();
        let down_at = ms_between(origin, Instant::now());
        thread::sleep(Duration::from_millis(60));
        let up_at = ms_between(origin, Instant::now());
        let l2 = TcpListener::bind(addr).unwrap();
        let stop2 = Arc::new(AtomicBool::new(false));
        let srv2 = serve(l2, stop2.clone());
        thread::sleep(Duration::from_millis(60));
        stop.store(true, Ordering::Relaxed);
        let recs = client.join().unwrap();
        stop2.store(true, Ordering::Relaxed);
        srv2.join().unwrap();

        let o = outages(&recs);
        assert_eq!(o.len(), 1, "one outage: {o:?}");
        let o = &o[0];
        assert_eq!(o.failed_attempts, failed_count(&recs));
        assert!(o.failed_attempts >= 5, "{o:?}");
        assert!(!o.open);
        assert!(
            o.first_failed_ms >= down_at - 50.0,
            "{o:?} down at {down_at}"
        );
        assert!(o.end_ms >= up_at, "{o:?} up at {up_at}");
        assert!(o.duration_ms >= 50.0 && o.duration_ms < 1000.0, "{o:?}");
        // Refused once the listener is gone; a connect that was queued in the backlog when
        // the listener closed is reset (or closed) instead.
        let reasons: Vec<_> = recs.iter().filter_map(|r| r.reason()).collect();
        assert!(
            reasons.iter().all(|r| matches!(
                r,
                FailReason::Refused | FailReason::Reset | FailReason::Closed
            )),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| **r == FailReason::Refused),
            "{reasons:?}"
        );
        assert!(recs
            .iter()
            .filter(|r| r.is_ok())
            .all(|r| r.host() == Some("alpha")));
        assert!(longest_gap(&recs) >= o.duration_ms);
    }

    #[test]
    fn banner_eof_is_closed_and_silence_is_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = thread::spawn(move || {
            // First: accept and close at once. Second: accept and say nothing.
            let (s, _) = l.accept().unwrap();
            drop(s);
            let (s, _) = l.accept().unwrap();
            thread::sleep(Duration::from_millis(200));
            drop(s);
        });
        let origin = Instant::now();
        let cl = ConnectLoop::new(addr)
            .read_banner(true)
            .banner_timeout(Duration::from_millis(50));
        let a = cl.attempt(origin);
        assert!(
            matches!(
                a.reason(),
                Some(FailReason::Closed) | Some(FailReason::Reset)
            ),
            "{a:?}"
        );
        let b = cl.attempt(origin);
        assert_eq!(b.reason(), Some(&FailReason::Timeout), "{b:?}");
        t.join().unwrap();
    }
}

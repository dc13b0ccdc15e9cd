//! Listeners: binding, the accept loop bounded by maxconn, and one connection's life
//! (pick, connect with retries, proxy).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::ListenConfig;
use super::pool::{Counters, Pool, Server};
use super::proxy::{self, End, Meter, Mode, Timeouts};
use super::shards::Shards;

/// A bound listening socket. Every connection thread waits on it in its own epoll and
/// accepts with accept4(2), so a connection is accepted and served on one thread.
pub(crate) type ListenSock = std::net::TcpListener;

/// Binds a listening socket: SO_REUSEADDR, IP_FREEBIND (so a VIP that this node does not
/// hold yet can be bound), non-blocking, with `backlog`. TCP_NODELAY and the keepalive
/// settings are set here once: accepted sockets inherit them (Linux copies them from the
/// listener), which saves five setsockopt calls per client connection.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_freebind_ipv6(true)?;
    } else {
        s.set_freebind(true)?;
    }
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.set_tcp_keepalive(&proxy::keepalive())?;
    s.bind(&addr.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(s.into())
}

/// Stops a listening socket at once: shutdown(SHUT_RD) on a listener closes it for new
/// connections on Linux (SYNs get a reset, the backlog is dropped), while connection threads
/// may still hold the fd for a moment. Their accept loops then see an error and stop.
pub(crate) fn stop_listening(sock: &ListenSock) {
    if let Err(e) = SockRef::from(sock).shutdown(std::net::Shutdown::Read) {
        tracing::debug!("stop listening: {e}");
    }
}

/// The accepting part of a listener, swapped when `bind` changes on reload.
#[derive(Debug)]
pub(crate) struct Acceptor {
    /// Shared so a reload can hand the bound socket to a renamed listener. `None` once the
    /// listener is removed: the socket closes even while old connections still run.
    pub sock: Option<Arc<ListenSock>>,
    /// The address as configured (may have port 0); reload matches sockets on it.
    pub configured: SocketAddr,
    /// Stops this accept loop; existing connections are not affected.
    pub stop: CancellationToken,
}

/// One listen section at run time.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// The settings new connections use; replaced on reload.
    pub(crate) cfg: RwLock<Arc<ListenConfig>>,
    pub pool: Pool,
    pub counters: Counters,
    /// Clients dropped because no server could take them.
    pub(crate) no_server: std::sync::atomic::AtomicU64,
    /// Their log lines: a client retrying in a loop while every server is down must not
    /// flood the log (and journald's rate limit, which would drop the role changes too).
    no_server_log: LogGate,
    /// maxconn: a permit is taken *before* accept, so past maxconn clients wait in the backlog.
    pub(crate) sem: Arc<Semaphore>,
    /// The maxconn the semaphore currently stands for (reload adds or forgets permits).
    pub(crate) maxconn: AtomicUsize,
    pub(crate) acceptor: Mutex<Acceptor>,
    /// Parent of every server check task of this listener; replaced when the check changes.
    pub(crate) checks: Mutex<CancellationToken>,
}

impl Listener {
    pub(crate) fn new(
        cfg: ListenConfig,
        servers: Vec<Arc<Server>>,
        acceptor: Acceptor,
        checks: CancellationToken,
    ) -> Listener {
        Listener {
            name: cfg.name.clone(),
            sem: Arc::new(Semaphore::new(cfg.maxconn)),
            maxconn: AtomicUsize::new(cfg.maxconn),
            cfg: RwLock::new(Arc::new(cfg)),
            pool: Pool::new(servers),
            counters: Counters::default(),
            no_server: Default::default(),
            no_server_log: LogGate::default(),
            acceptor: Mutex::new(acceptor),
            checks: Mutex::new(checks),
        }
    }

    pub fn config(&self) -> Arc<ListenConfig> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sock
            .as_ref()
            .and_then(|s| s.local_addr().ok())
    }

    /// Changes maxconn for new connections: adds permits, or forgets them as they come free.
    pub(crate) fn set_maxconn(&self, n: usize) {
        let old = self.maxconn.swap(n, Relaxed);
        if n > old {
            self.sem.add_permits(n - old);
        } else if n < old {
            let sem = self.sem.clone();
            let k = (old - n) as u32;
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(k).await {
                    p.forget();
                }
            });
        }
    }

    pub(crate) fn set_backlog(&self, backlog: u32) {
        let a = self.acceptor.lock().unwrap_or_else(|p| p.into_inner());
        // listen(2) again on a listening socket changes its backlog on Linux.
        let Some(sock) = &a.sock else { return };
        let _ = SockRef::from(&**sock).listen(backlog.min(i32::MAX as u32) as i32);
    }
}

/// Everything a connection task needs besides its listener.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub mode: Mode,
    /// Cancelled when the balancer shuts down hard: ends every connection.
    pub kill: CancellationToken,
    pub tracker: TaskTracker,
}

/// Starts accepting on `sock` until `stop` fires: one accept loop per connection thread,
/// each waiting on the socket in its own epoll, so that the thread that accepts a
/// connection usually serves it too (see [`Shards::place`]). Without connection threads,
/// the loop runs on the caller's runtime.
pub(crate) fn start_accepting(
    l: &Arc<Listener>,
    sock: &Arc<ListenSock>,
    stop: &CancellationToken,
    ctx: &Ctx,
) {
    let shards = Shards::get().all();
    if shards.is_empty() {
        let kills = Arc::new([ctx.kill.clone()]);
        let run = accept_loop(
            l.clone(),
            sock.clone(),
            stop.clone(),
            ctx.clone(),
            None,
            kills,
        );
        tokio::spawn(run);
        return;
    }
    // A connection polls its kill token at every wake-up, and polling takes the token's
    // lock: a token per thread keeps that lock on one CPU instead of bouncing between them.
    let kills: Arc<[CancellationToken]> = shards.iter().map(|_| ctx.kill.child_token()).collect();
    for (i, s) in shards.iter().enumerate() {
        let (l, sock, stop, ctx) = (l.clone(), sock.clone(), stop.clone(), ctx.clone());
        s.handle
            .spawn(accept_loop(l, sock, stop, ctx, Some(i), kills.clone()));
    }
}

/// Accepts until `stop` fires. Each accepted connection runs in its own task holding a
/// maxconn permit, on this connection thread (`shard`) or the one it is placed on.
async fn accept_loop(
    l: Arc<Listener>,
    sock: Arc<ListenSock>,
    stop: CancellationToken,
    ctx: Ctx,
    shard: Option<usize>,
    kills: Arc<[CancellationToken]>,
) {
    // Each accept loop waits on its own dup of the listening fd. epoll keys a registration
    // on the fd: when a reload hands this socket to a renamed listener (or two listeners
    // swap ports), the new loops register while the old ones still hold theirs, and the
    // same fd would fail with EEXIST and leave the port accepting into a backlog nobody
    // serves. Closing the dup on exit deregisters it; the socket stays with the listener.
    let sock = match sock.try_clone().and_then(|dup| {
        // SAFETY: the AsyncFd owns the dup, so its fd stays open and the same while registered.
        unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = %l.name, "cannot wait on the listening socket: {e}");
            return;
        }
    };
    loop {
        // Biased: a loop stopped by a reload must not take one more connection (with the
        // old listener's servers) when it wakes for it together with its successor.
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            p = l.sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = accept(&sock) => match r {
                Ok(x) => x,
                // A client that reset while waiting in the backlog: only that one is lost.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO | libc::EINTR)) => {
                    tracing::debug!(listener = %l.name, "accept: {e}");
                    continue;
                }
                // The socket was stopped under us (reload): nothing to report.
                Err(_) if stop.is_cancelled() => return,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: back off instead of spinning.
                    tracing::warn!(listener = %l.name, "accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (l2, mode) = (l.clone(), ctx.mode);
        let run = |counted, kill: CancellationToken| async move {
            let _counted = counted;
            // Registers the socket with the epoll of the thread this runs on.
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(listener = %l2.name, %peer, "cannot register the connection: {e}");
                    return;
                }
            };
            serve(&l2, stream, peer, permit, mode, &kill).await;
        };
        match shard {
            Some(here) => {
                let shards = Shards::get();
                let (at, counted) = shards.place(here);
                let run = run(Some(counted), kills[at].clone());
                if at == here {
                    ctx.tracker.spawn(run);
                } else {
                    ctx.tracker.spawn_on(run, &shards.all()[at].handle);
                }
            }
            None => {
                ctx.tracker.spawn(run(None, kills[0].clone()));
            }
        }
    }
}

/// One accept4(2), non-blocking and close-on-exec, when the listener is readable.
async fn accept(sock: &AsyncFd<ListenSock>) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = sock.readable().await?;
        let r = ready.try_io(|s| {
            let fd = s.as_raw_fd();
            // SAFETY: accept4 writes at most `len` bytes of address into the storage that
            // try_init hands us, and sets `len` to what it wrote.
            let (fd, addr) = unsafe {
                socket2::SockAddr::try_init(|storage, len| {
                    let fd = libc::accept4(
                        fd,
                        storage.cast(),
                        len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    );
                    if fd < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(fd)
                    }
                })?
            };
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
            let peer = addr
                .as_socket()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP peer"))?;
            Ok((stream, peer))
        });
        match r {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Counts an active connection on a listener and a server until dropped.
struct Active<'a>(&'a Counters);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Counts a connection's bytes on its listener, its server, and for its own log line.
struct Both<'a> {
    l: &'a Counters,
    s: &'a Counters,
    /// This connection's bytes: client to server, server to client.
    up: AtomicU64,
    down: AtomicU64,
}

impl Meter for Both<'_> {
    fn bytes(&self, to_server: bool, n: u64) {
        let f = |c: &Counters| {
            if to_server {
                c.bytes_in.add(n)
            } else {
                c.bytes_out.add(n)
            }
        };
        f(self.l);
        f(self.s);
        if to_server { &self.up } else { &self.down }.fetch_add(n, Relaxed);
    }
}

/// The target of the per-connection log lines, haproxy's `option tcplog` in spirit: one line
/// when a connection ends (info, shown with `HAPAIR_LOG=info`), or when no server took it
/// (warn, shown by default).
pub const CONN_LOG: &str = "hapair::conn";

/// How a connection ended, for its log line. An I/O error is put on the side whose socket
/// the kernel has closed (a reset leaves it in TCP_CLOSE; the other is still open). After a
/// clean half-close both may be closed: then the line says `error:` without a side.
fn ending(
    r: Result<(), End>,
    cfg: &ListenConfig,
    client: &TcpStream,
    server: &TcpStream,
) -> String {
    match r {
        Ok(()) => "closed".into(),
        Err(End::ClientIdle) => format!("client idle for {:?}", cfg.client_timeout),
        Err(End::ServerIdle) => format!("server idle for {:?}", cfg.server_timeout),
        Err(End::Io(e)) => match (tcp_closed(client), tcp_closed(server)) {
            (true, false) => format!("client: {e}"),
            (false, true) => format!("server: {e}"),
            _ => format!("error: {e}"),
        },
    }
}

/// `TCP_CLOSE` of linux/tcp_states.h (not in libc).
const TCP_CLOSE: u8 = 7;

/// Whether the kernel holds the socket in TCP_CLOSE (after a reset, for one).
fn tcp_closed(s: &TcpStream) -> bool {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        ) == 0
            && info.tcpi_state == TCP_CLOSE
    }
}

async fn serve(
    l: &Listener,
    client: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    mode: Mode,
    kill: &CancellationToken,
) {
    l.counters.active.fetch_add(1, Relaxed);
    l.counters.total.fetch_add(1, Relaxed);
    let _la = Active(&l.counters);
    let cfg = l.config();
    let t0 = Instant::now();
    let connected = tokio::select! {
        _ = kill.cancelled() => {
            tracing::info!(target: CONN_LOG, listener = %l.name, client = %peer,
                "cut while connecting: hapair is stopping");
            return;
        }
        r = connect(l, &cfg, peer, &client) => r,
    };
    let (server, upstream, retries) = match connected {
        Ok(x) => x,
        Err(NoServer { attempts, last }) => {
            l.no_server.fetch_add(1, Relaxed);
            if let Some(held) = l.no_server_log.pass(proxy::coarse_ms()) {
                tracing::warn!(target: CONN_LOG, listener = %l.name, client = %peer, attempts,
                    more_since_last_line = held, "no server took the connection: {last}");
            }
            return;
        }
    };
    let connected = t0.elapsed();
    // `pick` counted it active; this guard undoes that at the end.
    let _sa = Active(&server.counters);
    server.counters.total.fetch_add(1, Relaxed);
    // No Nagle delay on what we pass on. The client socket inherited this from the listener;
    // keepalive comes later (see `proxy::KEEPALIVE_AFTER`).
    let _ = upstream.set_nodelay(true);
    let t = Timeouts {
        client: cfg.client_timeout,
        server: cfg.server_timeout,
    };
    let meter = Both {
        l: &l.counters,
        s: &server.counters,
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
    };
    let r = tokio::select! {
        _ = kill.cancelled() => None,
        r = proxy::pump(&client, &upstream, t, mode, &meter) => Some(r),
    };
    if tracing::enabled!(target: CONN_LOG, tracing::Level::INFO) {
        let end = match r {
            Some(r) => ending(r, &cfg, &client, &upstream),
            None => "cut: hapair is stopping".into(),
        };
        // Close first: the last FIN must not wait for the log write.
        drop(upstream);
        drop(client);
        tracing::info!(target: CONN_LOG, listener = %l.name, client = %peer,
            server = %server.name(), server_addr = %server.cfg.addr,
            connect_ms = round(connected.as_secs_f64() * 1e3, 100.0), retries,
            secs = round(t0.elapsed().as_secs_f64(), 1000.0),
            bytes_in = meter.up.load(Relaxed), bytes_out = meter.down.load(Relaxed), "{end}");
    }
}

/// `x` rounded to 1/`per` (log figures need no more).
fn round(x: f64, per: f64) -> f64 {
    (x * per).round() / per
}

/// Lets at most one log line a second through, and counts the ones it holds back.
#[derive(Debug, Default)]
struct LogGate {
    /// When the next line may pass (coarse ms).
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl LogGate {
    /// At `now_ms`: `Some(lines held back since the last one)` if this line may be written.
    fn pass(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms + 1000, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Relaxed));
        }
        self.held.fetch_add(1, Relaxed);
        None
    }
}

/// Why [`connect`] found no server: how many connects it tried, and the last failure.
struct NoServer {
    attempts: u32,
    last: String,
}

/// A server that was killed may still complete the handshake from its
/// listen backlog and then reset. While neither side has sent a byte, that is
/// as good as a refused connect: report it so the caller redispatches and the
/// client never notices. Returns as soon as the client speaks (nothing can be
/// replayed after that), the server sends data, or `limit` passes.
async fn dropped_before_first_byte(
    client: &TcpStream,
    server: &TcpStream,
    limit: std::time::Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            biased;
            // Nothing has read from the client socket yet, so its read readiness comes
            // from epoll itself: data, its FIN or its reset. None of these can be replayed
            // elsewhere, and no peek is needed to tell.
            _ = client.readable() => return None,
            r = server.readable() => {
                if let Err(e) = r {
                    return Some(format!("server failed before the first byte: {e}"));
                }
                let peeked = server.try_io(tokio::io::Interest::READABLE, || {
                    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                    socket2::SockRef::from(server).peek(&mut b)
                });
                match peeked {
                    Ok(0) => return Some("server closed before the first byte".to_string()),
                    Ok(_) => return None,
                    // Readiness without data: wait again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Some(format!("server reset before the first byte: {e}")),
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// A non-blocking connect to `addr`. Unlike tokio's `TcpStream::connect`, success is read from
/// the readiness epoll reports (writable, no error, no hang-up), which saves its
/// getsockopt(SO_ERROR) on every connection; SO_ERROR is read only for a failure's cause.
async fn connect_to(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(sock.into())?;
    let ready = stream
        .ready(tokio::io::Interest::WRITABLE | tokio::io::Interest::ERROR)
        .await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

/// A server's `active` count for a connection still connecting, undone on drop: after a
/// failed connect, and when the connect is cut because hapair is stopping (the connect
/// future is dropped mid-way).
struct Claimed(Option<Arc<Server>>);

impl Claimed {
    /// The connect succeeded: the connection keeps the count until it ends.
    fn keep(mut self) -> Arc<Server> {
        self.0.take().expect("a claim is kept once")
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.counters.active.fetch_sub(1, Relaxed);
        }
    }
}

/// Connects to a server, retrying `retries` times: on another server when `redispatch` is on
/// (the same server only if no other can take it), else on the same one. Every failure
/// feeds passive health. On success the returned server counts the connection as active.
async fn connect(
    l: &Listener,
    cfg: &ListenConfig,
    peer: SocketAddr,
    client: &TcpStream,
) -> Result<(Arc<Server>, TcpStream, u32), NoServer> {
    let mut tried: Vec<Arc<Server>> = Vec::new();
    let mut last: Option<Arc<Server>> = None;
    let mut failure = NoServer {
        attempts: 0,
        last: "no server is up".into(),
    };
    for attempt in 0..=cfg.retries {
        let fresh = match (&last, cfg.redispatch) {
            (Some(_), false) => None,
            _ => l.pool.pick(cfg.balance, peer.ip(), &tried),
        };
        let server = match (fresh, last.take()) {
            (Some(s), _) => s,
            (None, Some(prev)) => {
                // Retry the same server after a short pause, as haproxy does.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                prev.counters.active.fetch_add(1, Relaxed);
                prev
            }
            (None, None) => return Err(failure),
        };
        let claim = Claimed(Some(server.clone()));
        if attempt > 0 {
            l.counters.retries.fetch_add(1, Relaxed);
        }
        let err = match tokio::time::timeout(cfg.connect_timeout, connect_to(server.cfg.addr)).await
        {
            Ok(Ok(s)) => match dropped_before_first_byte(client, &s, cfg.connect_timeout).await {
                None => return Ok((claim.keep(), s, attempt)),
                Some(e) => e,
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("connect timeout after {:?}", cfg.connect_timeout),
        };
        drop(claim);
        server.counters.connect_failures.fetch_add(1, Relaxed);
        l.counters.connect_failures.fetch_add(1, Relaxed);
        if attempt < cfg.retries {
            server.counters.retries.fetch_add(1, Relaxed);
        }
        tracing::debug!(listener = %l.name, server = server.name(), attempt, "connect failed: {err}");
        server.passive_failure(&err);
        failure = NoServer {
            attempts: attempt + 1,
            last: format!("{}: {err}", server.name()),
        };
        if !tried.iter().any(|t| Arc::ptr_eq(t, &server)) {
            tried.push(server.clone());
        }
        last = Some(server);
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::LogGate;

    #[test]
    fn the_log_gate_passes_one_line_a_second_and_counts_the_rest() {
        let g = LogGate::default();
        assert_eq!(g.pass(5_000), Some(0));
        assert_eq!(g.pass(5_001), None);
        assert_eq!(g.pass(5_999), None);
        assert_eq!(g.pass(6_000), Some(2));
        assert_eq!(g.pass(9_000), Some(0));
    }
}

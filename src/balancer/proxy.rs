//! The proxy loop: moves bytes both ways, unchanged, passing half-closes on.
//!
//! Two data paths, chosen by [`Mode`]:
//! - `Splice` (default): socket → pipe → socket with splice(2); the bytes never enter user
//!   space, and the buffer is kernel memory, not RSS.
//! - `Copy`: read(2) into a buffer, write(2) out.
//!
//! Measured on loopback, 1 GiB through one connection, 2 shared cores, release build, median of
//! 9 (`tests/balancer_bench.rs`): with 256 KiB pipes/buffers splice 12.2 Gbit/s, copy
//! 10.2 Gbit/s (direct 15.9); with 64 KiB, splice 7.1, copy 6.2. Hence splice. Pipes are
//! now 1 MiB: in the bench lab, six interleaved 3 s rounds of iperf3 gave 10.3 Gbit/s for
//! one stream against 9.4 with 256 KiB pipes (haproxy 5.6), and 12.4 against 11.6 for four.
//! Until bytes sit in it, a 1 MiB pipe costs the kernel its 10 KiB slot array, no pages.
//!
//! Why not a sockmap (an sk_skb verdict program that redirects each socket's bytes to its
//! peer, so no thread wakes per request): tried with a C prototype on kernel 6.18 in the
//! bench lab. Keep-alive through it was 19.7–23.1 k req/s against 36–43 k for this loop and
//! for haproxy, because every redirected skb is sent by a kworker; large transfers in both
//! directions at once stalled (4 of 7 echoes of 64–256 MB); and the queue between the
//! sockets is invisible, so a FIN can only be passed on after polling TCP_INFO byte counts.
//!
//! Idle connections hold no pipe and no buffer: a direction takes one from a shared pool when
//! data arrives and gives it back when the source has nothing more to read.
//!
//! Timeouts: the client side is idle when nothing was read from or written to the client for
//! `client_timeout`; the server side likewise with `server_timeout`. Either one closes the
//! connection. Vanished peers are also caught by TCP keepalive (see [`keepalive`]).

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How bytes move between the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// splice(2) through a pipe (Linux).
    #[default]
    Splice,
    /// read(2)/write(2) through a user-space buffer.
    Copy,
}

/// Size of a copy buffer.
pub const CHUNK: usize = 256 * 1024;
/// Size asked of a pipe (F_SETPIPE_SZ); the kernel caps it at /proc/sys/fs/pipe-max-size
/// (1 MiB by default) and, for an unprivileged user past pipe-user-pages-soft, refuses it:
/// the pipe then keeps its default size.
pub const PIPE_SIZE: usize = 1024 * 1024;
/// Pipes and buffers kept for reuse; beyond this they are freed.
const POOL_MAX: usize = 256;
/// Splice mode reads up to this much into user space first (see [`Dir::splice`]).
pub const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// Each worker thread's buffer for small reads in splice mode; connections own none.
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// The two idle timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub client: Duration,
    pub server: Duration,
}

/// Why a connection ended early.
#[derive(Debug)]
pub enum End {
    ClientIdle,
    ServerIdle,
    Io(io::Error),
}

/// Called with the byte count of every chunk: `(to_server, n)`.
pub trait Meter: Sync {
    fn bytes(&self, to_server: bool, n: u64);
}

/// Keepalive on both sockets of a connection, so a peer that vanished without FIN or RST is
/// noticed within minutes, not at the idle timeout: first probe after 60 s of silence, then
/// every 10 s; dead after 6 unanswered. The client socket inherits it from the listener; the
/// server socket gets it once the connection has lived [`KEEPALIVE_AFTER`].
pub fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6)
}

/// When the server socket of a connection gets [`keepalive`]. A connection that ends sooner
/// never needs it (its first probe would come after 60 s), and most end sooner: this saves
/// four setsockopt calls on each of them.
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(1);

/// Moves bytes until both directions have seen EOF, an error occurs, or a side idles out.
pub async fn pump(
    client: &TcpStream,
    server: &TcpStream,
    t: Timeouts,
    mode: Mode,
    meter: &dyn Meter,
) -> Result<(), End> {
    let start = Instant::now();
    let act_client = AtomicU64::new(0);
    let act_server = AtomicU64::new(0);
    let one_done = AtomicBool::new(false);
    let clock = Clock {
        start_ms: coarse_ms(),
    };
    let up = Dir {
        src: client,
        dst: server,
        act_src: &act_client,
        act_dst: &act_server,
        clock: &clock,
        to_server: true,
        meter,
        one_done: &one_done,
    };
    let down = Dir {
        src: server,
        dst: client,
        act_src: &act_server,
        act_dst: &act_client,
        clock: &clock,
        to_server: false,
        meter,
        one_done: &one_done,
    };
    let both = async {
        match mode {
            Mode::Splice => tokio::try_join!(up.splice(), down.splice()),
            Mode::Copy => tokio::try_join!(up.copy(), down.copy()),
        }
    };
    let watchdog = async {
        let mut keepalive_at = Some(start + KEEPALIVE_AFTER);
        loop {
            let c = start + Duration::from_millis(act_client.load(Relaxed)) + t.client;
            let s = start + Duration::from_millis(act_server.load(Relaxed)) + t.server;
            let now = Instant::now();
            if now >= c {
                return End::ClientIdle;
            }
            if now >= s {
                return End::ServerIdle;
            }
            if keepalive_at.is_some_and(|at| now >= at) {
                let _ = SockRef::from(server).set_tcp_keepalive(&keepalive());
                keepalive_at = None;
            }
            tokio::time::sleep_until(keepalive_at.map_or(c.min(s), |at| at.min(c).min(s))).await;
        }
    };
    tokio::select! {
        r = both => r.map(|_| ()).map_err(End::Io),
        e = watchdog => Err(e),
    }
}

/// Activity stamps, in ms since the connection started, from the coarse monotonic clock:
/// several stamps per request, and the coarse clock is a plain memory read (vDSO, no
/// TSC), precise to a scheduler tick (≤ 4 ms), which is plenty for idle timeouts.
struct Clock {
    start_ms: u64,
}

impl Clock {
    fn touch(&self, a: &AtomicU64) {
        a.store(coarse_ms().saturating_sub(self.start_ms), Relaxed);
    }
}

pub(crate) fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

struct Dir<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    /// Last activity on the source's side and on the destination's side (ms since start).
    act_src: &'a AtomicU64,
    act_dst: &'a AtomicU64,
    clock: &'a Clock,
    to_server: bool,
    meter: &'a dyn Meter,
    /// Set by the first direction to reach EOF.
    one_done: &'a AtomicBool,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Dir<'_> {
    /// Passes the EOF on: shut down the write side of the destination. The second EOF
    /// needs no shutdown: both sockets are closed right after, which sends the FIN.
    fn eof(&self) -> io::Result<()> {
        if self.one_done.swap(true, Relaxed) {
            return Ok(());
        }
        match SockRef::from(self.dst).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }

    async fn copy(&self) -> io::Result<()> {
        let mut buf: Option<Box<[u8]>> = None;
        loop {
            self.src.readable().await?;
            let b = buf.get_or_insert_with(|| BUFS.take());
            let n = match self.src.try_read(b) {
                Ok(n) => n,
                Err(e) if would_block(&e) => {
                    // Nothing more for now: an idle direction holds no buffer.
                    BUFS.give(buf.take());
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                BUFS.give(buf.take());
                return self.eof();
            }
            self.clock.touch(self.act_src);
            self.meter.bytes(self.to_server, n as u64);
            let mut off = 0;
            while off < n {
                self.dst.writable().await?;
                match self.dst.try_write(&b[off..n]) {
                    Ok(m) => {
                        off += m;
                        self.clock.touch(self.act_dst);
                    }
                    Err(e) if would_block(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Reads what the source holds, up to [`SCRATCH`] bytes, into this worker thread's
    /// scratch buffer and writes it on at once; what the destination does not take now is
    /// appended to `rest`. Returns `None` if there was nothing to read, `Some(0)` at EOF,
    /// else the bytes read.
    ///
    /// A short read means the socket is drained (TCP), so the closure reports WouldBlock and
    /// tokio clears the readiness it saw *before* the read, as its own `poll_read` does: the
    /// next `readable()` waits for new data instead of costing an EAGAIN call.
    fn read_small(&self, rest: &mut Vec<u8>) -> io::Result<Option<usize>> {
        let src_fd = self.src.as_raw_fd();
        SCRATCH_BUF.with(|b| {
            let mut b = b.borrow_mut();
            let len = b.len();
            let mut got = 0usize;
            let r = self.src.try_io(Interest::READABLE, || {
                // SAFETY: reads into a buffer we hold exclusively, on an fd the caller keeps open.
                let n = unsafe { libc::recv(src_fd, b.as_mut_ptr().cast(), len, 0) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                got = n as usize;
                if got > 0 && got < len {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match r {
                Ok(()) => {}
                Err(e) if would_block(&e) && got > 0 => {}
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
            if got == 0 {
                return Ok(Some(0));
            }
            let mut off = 0;
            while off < got {
                match self.dst.try_write(&b[off..got]) {
                    Ok(m) => off += m,
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
            rest.extend_from_slice(&b[off..got]);
            Ok(Some(got))
        })
    }

    /// Small reads go through [`Dir::read_small`]: one recv and one send per message, no
    /// pipe. A read that fills the scratch buffer means bulk data: the rest of that burst is
    /// spliced, and later bursts too while each moves at least [`SCRATCH`] bytes.
    async fn splice(&self) -> io::Result<()> {
        let mut pipe: Option<Pipe> = None;
        let mut moved = false;
        let mut bulk = false;
        let mut burst = 0usize;
        let (src_fd, dst_fd) = (self.src.as_raw_fd(), self.dst.as_raw_fd());
        loop {
            let ready = self.src.ready(Interest::READABLE).await?;
            if !bulk {
                let mut rest = Vec::new();
                let n = match self.read_small(&mut rest)? {
                    None => continue,
                    Some(0) => return self.eof(),
                    Some(n) => n,
                };
                self.clock.touch(self.act_src);
                self.meter.bytes(self.to_server, n as u64);
                if rest.len() < n {
                    self.clock.touch(self.act_dst);
                }
                // Only a slow destination makes this loop (and `rest` allocate).
                let mut off = 0;
                while off < rest.len() {
                    self.dst.writable().await?;
                    match self.dst.try_write(&rest[off..]) {
                        Ok(m) => {
                            off += m;
                            self.clock.touch(self.act_dst);
                        }
                        Err(e) if would_block(&e) => continue,
                        Err(e) => return Err(e),
                    }
                }
                if n < SCRATCH {
                    // The source had sent its FIN before this read and the read came up
                    // short: that was the last of the stream. Saves a read that returns 0.
                    if ready.is_read_closed() {
                        return self.eof();
                    }
                    continue;
                }
                bulk = true;
                burst = 0;
            }
            // Bulk: the pipe is empty here, so EAGAIN can only mean the socket has nothing
            // to read.
            let p = match &mut pipe {
                Some(p) => p,
                None => pipe.insert(PIPES.take_pipe()?),
            };
            let n = match self.src.try_io(Interest::READABLE, || {
                splice(src_fd, p.w.as_raw_fd(), p.size)
            }) {
                Ok(n) => n,
                Err(e) if would_block(&e) => {
                    PIPES.give(pipe.take());
                    bulk = burst >= SCRATCH;
                    burst = 0;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !moved => {
                    // This kernel or socket cannot splice: copy instead.
                    PIPES.give(pipe.take());
                    return self.copy().await;
                }
                Err(e) => return Err(e),
            };
            moved = true;
            if n == 0 {
                PIPES.give(pipe.take());
                return self.eof();
            }
            burst += n;
            self.clock.touch(self.act_src);
            self.meter.bytes(self.to_server, n as u64);
            let mut left = n;
            while left > 0 {
                self.dst.writable().await?;
                // On error the pipe still holds data: it is dropped (closed), never reused.
                match self
                    .dst
                    .try_io(Interest::WRITABLE, || splice(p.r.as_raw_fd(), dst_fd, left))
                {
                    Ok(m) => {
                        left -= m;
                        self.clock.touch(self.act_dst);
                    }
                    Err(e) if would_block(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds that the caller keeps open for the duration of the call.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A pipe used as the splice buffer.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Capacity in bytes (what F_SETPIPE_SZ granted).
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these two fds; we own them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per syscall; the kernel caps it (pipe-max-size). Keep the
        // default if refused.
        // SAFETY: fcntl on an fd we own.
        let got =
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        let size = if got > 0 {
            got as usize
        } else {
            // SAFETY: as above.
            let cur = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if cur > 0 {
                cur as usize
            } else {
                65536
            }
        };
        Ok(Pipe { r, w, size })
    }
}

/// A bounded free list of pipes or buffers shared by all connections.
struct FreeList<T> {
    items: Mutex<Vec<T>>,
}

impl<T> FreeList<T> {
    const fn new() -> FreeList<T> {
        FreeList {
            items: Mutex::new(Vec::new()),
        }
    }

    fn pop(&self) -> Option<T> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give(&self, item: Option<T>) {
        let Some(item) = item else { return };
        let mut v = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < POOL_MAX {
            v.push(item);
        }
    }
}

impl FreeList<Pipe> {
    fn take_pipe(&self) -> io::Result<Pipe> {
        match self.pop() {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }
}

impl FreeList<Box<[u8]>> {
    fn take(&self) -> Box<[u8]> {
        self.pop()
            .unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())
    }
}

static PIPES: FreeList<Pipe> = FreeList::new();
static BUFS: FreeList<Box<[u8]>> = FreeList::new();

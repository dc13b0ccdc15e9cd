//! Behavioural tests of the balancer on loopback (127.0.0.0/8 and ::1 only, bounded loads).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hapair::balancer::{
    Balance, Balancer, CheckConfig, CheckKind, ListenConfig, ServerConfig, ServerState,
    ServerStatus,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- helpers

fn server(name: &str, addr: SocketAddr) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        addr_text: addr.to_string(),
        addr,
        weight: 1,
        backup: false,
    }
}

fn listen(name: &str, servers: Vec<ServerConfig>) -> ListenConfig {
    ListenConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        balance: Balance::RoundRobin,
        maxconn: 4096,
        backlog: 1024,
        connect_timeout: Duration::from_secs(1),
        client_timeout: Duration::from_secs(60),
        server_timeout: Duration::from_secs(60),
        retries: 3,
        redispatch: true,
        check: None,
        servers,
    }
}

fn tcp_check(interval_ms: u64, fall: u32, rise: u32) -> CheckConfig {
    CheckConfig {
        kind: CheckKind::Tcp,
        port: None,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms),
        fall,
        rise,
    }
}

/// A backend: accepts until killed. `named` backends first send `name\n`, then echo.
/// Killing it closes the listening socket (new connects are refused); open connections
/// go on.
struct Backend {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Backend {
    async fn start(ip: &str, name: Option<&str>) -> Backend {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        Backend::serve(l, name)
    }

    fn serve(l: TcpListener, name: Option<&str>) -> Backend {
        let addr = l.local_addr().unwrap();
        let name = name.map(|n| format!("{n}\n"));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    if let Some(n) = name {
                        if s.write_all(n.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Backend { addr, accept }
    }

    fn kill(&self) {
        self.accept.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// An HTTP server answering every request with the status in `status`.
async fn health_server(l: TcpListener, status: Arc<AtomicU16>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let st = status.load(Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp =
                    format!("HTTP/1.1 {st} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    })
}

/// Connects to a named backend through the balancer; returns its name and the stream.
async fn hello(addr: SocketAddr) -> (String, BufReader<TcpStream>) {
    hello_from(addr, None).await
}

async fn hello_from(addr: SocketAddr, src: Option<IpAddr>) -> (String, BufReader<TcpStream>) {
    let s = match src {
        Some(ip) => {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(ip, 0)).unwrap();
            sock.connect(addr).await.unwrap()
        }
        None => TcpStream::connect(addr).await.unwrap(),
    };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
        .await
        .expect("hello timed out")
        .unwrap();
    (line.trim().to_string(), r)
}

async fn echo_ok(s: &mut BufReader<TcpStream>, msg: &[u8]) -> bool {
    if s.get_mut().write_all(msg).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && back == msg
}

fn srv<'a>(
    b: &Balancer,
    listener: &str,
    name: &str,
    snap: &'a mut Option<hapair::balancer::BalancerStatus>,
) -> &'a ServerStatus {
    *snap = Some(b.snapshot());
    snap.as_ref()
        .unwrap()
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .unwrap()
        .servers
        .iter()
        .find(|s| s.name == name)
        .unwrap()
}

fn state(b: &Balancer, listener: &str, name: &str) -> ServerState {
    srv(b, listener, name, &mut None).state
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t0.elapsed()
}

fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A deterministic pseudo-random block.
fn block(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------- byte-exact

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_streams_through_with_the_same_sha256() {
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 1 << 20;
    // The backend hashes what it receives and, after the client's FIN, answers with the digest.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        s.write_all(&h.finalize()).await.unwrap();
    });
    let b = Balancer::start(vec![listen("big", vec![server("a", baddr)])])
        .await
        .unwrap();
    let mut c = TcpStream::connect(b.local_addr("big").unwrap())
        .await
        .unwrap();
    let mut data = block(CHUNK, 7);
    let mut h = Sha256::new();
    let t0 = Instant::now();
    for i in 0..TOTAL / CHUNK {
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        h.update(&data);
        c.write_all(&data).await.unwrap();
    }
    c.shutdown().await.unwrap();
    let mut digest = Vec::new();
    c.read_to_end(&mut digest).await.unwrap();
    eprintln!(
        "1 GiB through the balancer (with hashing, this build) in {:?}",
        t0.elapsed()
    );
    assert_eq!(digest, h.finalize().to_vec());
    let snap = b.snapshot();
    assert_eq!(snap.listeners[0].bytes_in, TOTAL as u64);
    assert_eq!(snap.listeners[0].bytes_out, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_upload_still_receives_its_response() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        // Only after the client's FIN: answer, slowly, in several pieces.
        for part in [
            format!("got {} bytes", got.len()),
            " and ".into(),
            "bye".into(),
        ] {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(part.as_bytes()).await.unwrap();
        }
    });
    let b = Balancer::start(vec![listen("hc", vec![server("a", baddr)])])
        .await
        .unwrap();
    let mut c = TcpStream::connect(b.local_addr("hc").unwrap())
        .await
        .unwrap();
    c.write_all(&block(100_000, 3)).await.unwrap();
    c.shutdown().await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp, "got 100000 bytes and bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_each_echo_their_own_data() {
    raise_nofile();
    const N: usize = 1000;
    let be = Backend::start("127.0.0.1", None).await;
    let b = Balancer::start(vec![listen("many", vec![server("a", be.addr)])])
        .await
        .unwrap();
    let addr = b.local_addr("many").unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(N + 1));
    let mut tasks = Vec::new();
    for i in 0..N {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // All connected and proxied at once before anyone talks.
            barrier.wait().await;
            let data = block(4096 + i, i as u64 + 11);
            let (mut r, mut w) = s.split();
            let mut back = vec![0u8; data.len()];
            let (wr, rd) = tokio::join!(w.write_all(&data), r.read_exact(&mut back));
            wr.unwrap();
            rd.unwrap();
            assert!(back == data, "connection {i} got someone else's bytes");
        }));
    }
    // Every connection proxied and held at once, before anyone talks.
    wait_for("all connections active", Duration::from_secs(20), || {
        b.snapshot().listeners[0].active == N as u64
    })
    .await;
    barrier.wait().await;
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    wait_for("all connections closed", Duration::from_secs(5), || {
        b.snapshot().listeners[0].active == 0
    })
    .await;
}

// ---------------------------------------------------------------- failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_no_client_connect_and_leaves_rotation_within_1s() {
    let a = Backend::start("127.0.0.1", Some("a")).await;
    let bb = Backend::start("127.0.0.1", Some("b")).await;
    let mut cfg = listen("kill", vec![server("a", a.addr), server("b", bb.addr)]);
    // Defaults apart from the check interval: retries 3, redispatch on.
    cfg.check = Some(tcp_check(1000, 3, 2));
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("kill").unwrap();
    wait_for("both up", Duration::from_secs(3), || {
        state(&b, "kill", "a") == ServerState::Up && state(&b, "kill", "b") == ServerState::Up
    })
    .await;

    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(4)); // 250 connects/s
    let t0 = Instant::now();
    let mut killed_at: Option<Instant> = None;
    let mut out_after: Option<Duration> = None;
    let mut tasks = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        tick.tick().await;
        if killed_at.is_none() && t0.elapsed() > Duration::from_secs(3) {
            a.kill();
            killed_at = Some(Instant::now());
        }
        if let (Some(k), None) = (killed_at, out_after) {
            if state(&b, "kill", "a") == ServerState::Down {
                out_after = Some(k.elapsed());
            }
        }
        let (failed, done) = (failed.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let ok = async {
                let s = TcpStream::connect(addr).await.ok()?;
                let mut r = BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).await.ok()?;
                echo_ok(&mut r, b"ping").await.then_some(())
            };
            match tokio::time::timeout(Duration::from_secs(5), ok).await {
                Ok(Some(())) => done.fetch_add(1, Relaxed),
                _ => failed.fetch_add(1, Relaxed),
            };
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Relaxed);
    eprintln!(
        "{n} connects in 10 s, {} failed, a out of rotation after {out_after:?}",
        failed.load(Relaxed)
    );
    assert!(n >= 2000, "only {n} connects");
    assert_eq!(failed.load(Relaxed), 0);
    let out = out_after.expect("a never left rotation");
    assert!(
        out <= Duration::from_secs(1),
        "a left rotation after {out:?}"
    );
    let s = srv(&b, "kill", "a", &mut None).clone();
    assert!(
        s.connect_failures >= 1 && s.state == ServerState::Down,
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_delays_no_client_beyond_connect_timeout_plus_one_retry() {
    // A listener with a full accept queue drops SYNs: connects to it hang.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let silent: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(silent)).await
        {
            fill.push(s);
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(silent))
            .await
            .is_err(),
        "the silent backend answered: cannot run this test here"
    );
    let good = Backend::start("127.0.0.1", Some("good")).await;
    let connect_timeout = Duration::from_millis(300);
    let mut cfg = listen(
        "silent",
        vec![server("silent", silent), server("good", good.addr)],
    );
    cfg.connect_timeout = connect_timeout;
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("silent").unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..12 {
        let t0 = Instant::now();
        let (name, mut s) = hello(addr).await;
        assert_eq!(name, "good");
        assert!(echo_ok(&mut s, b"x").await);
        worst = worst.max(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = srv(&b, "silent", "silent", &mut None).clone();
    eprintln!("worst wait {worst:?}; silent server: {s:?}");
    assert!(s.connect_failures >= 1, "the silent server was never tried");
    assert!(worst < connect_timeout * 2, "a client waited {worst:?}");
    drop(fill);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_reset_or_vanish_leak_nothing() {
    let be = Backend::start("127.0.0.1", None).await;
    let b = Balancer::start(vec![listen("rst", vec![server("a", be.addr)])])
        .await
        .unwrap();
    let addr = b.local_addr("rst").unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up the runtime and the pipe pool.
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"warm").await.unwrap();
        let mut x = [0u8; 4];
        s.read_exact(&mut x).await.unwrap();
    }
    wait_for("warm-up closed", Duration::from_secs(5), || {
        b.snapshot().listeners[0].active == 0
    })
    .await;
    let before = fds();
    for i in 0..100 {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut s = BufReader::new(s);
        assert!(echo_ok(&mut s, b"hello").await);
        let s = s.into_inner();
        if i % 2 == 0 {
            // RST: linger 0, then close.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        } else {
            // Unread data in our receive queue also makes close send RST.
            s.into_std().unwrap().write_all_sync(b"pending");
            continue;
        }
        drop(s);
    }
    wait_for("all connections gone", Duration::from_secs(5), || {
        let l = &b.snapshot().listeners[0];
        l.active == 0 && l.servers[0].active == 0
    })
    .await;
    wait_for(
        "fds back to where they were",
        Duration::from_secs(5),
        || fds() <= before + 2,
    )
    .await;
}

trait WriteSync {
    fn write_all_sync(self, b: &[u8]);
}

impl WriteSync for std::net::TcpStream {
    fn write_all_sync(self, b: &[u8]) {
        use std::io::Write;
        let mut s = self;
        let _ = s.set_nonblocking(false);
        let _ = s.write_all(b);
        std::thread::sleep(Duration::from_millis(5));
        // Dropped here with the echo unread.
    }
}

// ---------------------------------------------------------------- checks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_503_gets_no_connections_until_it_returns_200() {
    // Two servers on two loopback addresses share one health port, as impalads share 25000.
    let (ha, hb, hport) = loop {
        let ha = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = ha.local_addr().unwrap().port();
        if let Ok(hb) = TcpListener::bind(("127.0.0.3", port)).await {
            break (ha, hb, port);
        }
    };
    let sa = Arc::new(AtomicU16::new(503));
    let sb = Arc::new(AtomicU16::new(200));
    let _h1 = health_server(ha, sa.clone()).await;
    let _h2 = health_server(hb, sb.clone()).await;
    let a = Backend::start("127.0.0.2", Some("a")).await;
    let bb = Backend::start("127.0.0.3", Some("b")).await;
    let mut cfg = listen("http", vec![server("a", a.addr), server("b", bb.addr)]);
    cfg.check = Some(CheckConfig {
        kind: CheckKind::Http {
            path: "/healthz".into(),
            expect: 200,
        },
        port: Some(hport),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        fall: 2,
        rise: 2,
    });
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("http").unwrap();
    // Nothing gets traffic before its first check passes.
    assert_eq!(state(&b, "http", "a"), ServerState::Down);
    wait_for("b up", Duration::from_secs(2), || {
        state(&b, "http", "b") == ServerState::Up
    })
    .await;
    for _ in 0..30 {
        assert_eq!(hello(addr).await.0, "b");
    }
    let s = srv(&b, "http", "a", &mut None).clone();
    assert_eq!((s.total, s.state), (0, ServerState::Down));
    assert!(
        s.last_check
            .as_ref()
            .is_some_and(|c| !c.ok && c.detail.contains("503")),
        "{s:?}"
    );
    sa.store(200, Relaxed);
    wait_for("a up", Duration::from_secs(2), || {
        state(&b, "http", "a") == ServerState::Up
    })
    .await;
    let mut on_a = 0;
    for _ in 0..30 {
        on_a += (hello(addr).await.0 == "a") as u32;
    }
    assert!((10..=20).contains(&on_a), "{on_a} of 30 on a");
    assert!(!b.all_pools_down());
    assert_eq!(b.healthy_servers(), 2);
    // Both fail: the pair's signal flips.
    sa.store(503, Relaxed);
    sb.store(503, Relaxed);
    wait_for("all pools down", Duration::from_secs(2), || {
        b.all_pools_down()
    })
    .await;
    assert_eq!(b.healthy_servers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_steer_traffic_but_do_not_lower_the_pair_priority() {
    // The health port answers 200 while the traffic port refuses: only a node that carries
    // traffic (the master) sees the refusals, so they must not tell the pair "pools down".
    let health = TcpListener::bind("127.0.0.4:0").await.unwrap();
    let hport = health.local_addr().unwrap().port();
    let _h = health_server(health, Arc::new(AtomicU16::new(200))).await;
    let closed = TcpListener::bind("127.0.0.4:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = listen("refuse", vec![server("a", closed)]);
    cfg.retries = 0;
    cfg.check = Some(CheckConfig {
        kind: CheckKind::Http {
            path: "/healthz".into(),
            expect: 200,
        },
        port: Some(hport),
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        fall: 2,
        rise: 3,
    });
    let b = Balancer::start(vec![cfg]).await.unwrap();
    wait_for("a up", Duration::from_secs(2), || {
        state(&b, "refuse", "a") == ServerState::Up
    })
    .await;
    let mut c = TcpStream::connect(b.local_addr("refuse").unwrap())
        .await
        .unwrap();
    let mut x = Vec::new();
    let _ = c.read_to_end(&mut x).await;
    // Passive health took it out of this node's rotation at once...
    assert_eq!(state(&b, "refuse", "a"), ServerState::Down);
    assert_eq!(b.snapshot().listeners[0].no_server, 1);
    // ...but its checks still pass, so the pair's signal stays "pools fine".
    assert!(!b.all_pools_down());
    // Three passing checks bring it back.
    wait_for("a back up", Duration::from_secs(3), || {
        state(&b, "refuse", "a") == ServerState::Up
    })
    .await;
}

// ---------------------------------------------------------------- algorithms

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_sends_a_new_connection_to_the_least_loaded_server() {
    let bes = [
        Backend::start("127.0.0.1", Some("a")).await,
        Backend::start("127.0.0.1", Some("b")).await,
        Backend::start("127.0.0.1", Some("c")).await,
    ];
    let mut cfg = listen(
        "lc",
        vec![
            server("a", bes[0].addr),
            server("b", bes[1].addr),
            server("c", bes[2].addr),
        ],
    );
    cfg.balance = Balance::LeastConn;
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("lc").unwrap();
    let mut held = Vec::new();
    // Ties go round-robin: a, b, c, then a again.
    for want in ["a", "b", "c", "a", "b"] {
        let (name, s) = hello(addr).await;
        assert_eq!(name, want);
        held.push((name, s));
    }
    // Now a:2 b:2 c:1. c is least loaded, every time while we do not hold the new ones.
    for _ in 0..5 {
        let (name, s) = hello(addr).await;
        assert_eq!(name, "c");
        drop(s);
        wait_for("c back to 1", Duration::from_secs(2), || {
            srv(&b, "lc", "c", &mut None).active == 1
        })
        .await;
    }
    // Close both on a: a becomes least loaded.
    held.retain(|(n, _)| n != "a");
    wait_for("a idle", Duration::from_secs(2), || {
        srv(&b, "lc", "a", &mut None).active == 0
    })
    .await;
    assert_eq!(hello(addr).await.0, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_keeps_one_client_on_one_server() {
    let bes = [
        Backend::start("127.0.0.1", Some("a")).await,
        Backend::start("127.0.0.1", Some("b")).await,
        Backend::start("127.0.0.1", Some("c")).await,
    ];
    let mut cfg = listen(
        "src",
        vec![
            server("a", bes[0].addr),
            server("b", bes[1].addr),
            server("c", bes[2].addr),
        ],
    );
    cfg.balance = Balance::Source;
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("src").unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let first = hello_from(addr, Some(ip)).await.0;
    for _ in 0..99 {
        assert_eq!(hello_from(addr, Some(ip)).await.0, first);
    }
    // Other clients spread over the servers.
    let mut seen = std::collections::HashSet::new();
    for i in 10..40u8 {
        seen.insert(hello_from(addr, Some(IpAddr::from([127, 0, 1, i]))).await.0);
    }
    assert!(seen.len() >= 2, "30 clients all on {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_listener_serves_servers_of_both_families() {
    let six = Backend::start("::1", Some("six")).await;
    let four = Backend::start("127.0.0.1", Some("four")).await;
    let mut cfg = listen(
        "v6",
        vec![server("six", six.addr), server("four", four.addr)],
    );
    cfg.bind = "[::1]:0".parse().unwrap();
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("v6").unwrap();
    assert!(addr.is_ipv6(), "{addr}");
    let mut names = Vec::new();
    for _ in 0..4 {
        let (name, mut s) = hello(addr).await;
        assert!(echo_ok(&mut s, b"both ways").await, "{name}");
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["four", "four", "six", "six"]);
    let l = &b.snapshot().listeners[0];
    assert_eq!(l.total, 4);
    assert!(
        l.bytes_in >= 4 * 9 && l.bytes_out >= 4 * 9,
        "{} {}",
        l.bytes_in,
        l.bytes_out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hold_over_real_connections() {
    let a = Backend::start("127.0.0.1", Some("a")).await;
    let bb = Backend::start("127.0.0.1", Some("b")).await;
    let mut sb = server("b", bb.addr);
    sb.weight = 3;
    let mut bk = server("backup", a.addr);
    bk.backup = true;
    let b = Balancer::start(vec![listen("w", vec![server("a", a.addr), sb, bk])])
        .await
        .unwrap();
    let addr = b.local_addr("w").unwrap();
    let mut n_b = 0;
    for _ in 0..400 {
        n_b += (hello(addr).await.0 == "b") as u32;
    }
    assert!(
        (285..=315).contains(&n_b),
        "b got {n_b} of 400 at weight 3:1"
    );
    assert_eq!(
        srv(&b, "w", "backup", &mut None).total,
        0,
        "a backup got traffic while others were up"
    );
}

// ---------------------------------------------------------------- control

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_disable_and_enable_have_real_effects() {
    let a = Backend::start("127.0.0.1", Some("a")).await;
    let bb = Backend::start("127.0.0.1", Some("b")).await;
    let b = Balancer::start(vec![listen(
        "ctl",
        vec![server("a", a.addr), server("b", bb.addr)],
    )])
    .await
    .unwrap();
    let addr = b.local_addr("ctl").unwrap();
    let (name, mut on_a) = hello(addr).await;
    assert_eq!(name, "a");

    b.drain(Some("ctl"), "a").unwrap();
    assert_eq!(state(&b, "ctl", "a"), ServerState::Drain);
    for _ in 0..10 {
        assert_eq!(hello(addr).await.0, "b");
    }
    assert!(
        echo_ok(&mut on_a, b"still here").await,
        "drain cut an open connection"
    );
    assert_eq!(srv(&b, "ctl", "a", &mut None).active, 1);

    b.enable(None, "a").unwrap();
    let names: Vec<String> =
        futures::future::join_all((0..4).map(|_| async { hello(addr).await.0 })).await;
    assert!(names.iter().any(|n| n == "a"), "{names:?}");

    b.disable(None, "b").unwrap();
    assert_eq!(state(&b, "ctl", "b"), ServerState::Maint);
    for _ in 0..10 {
        assert_eq!(hello(addr).await.0, "a");
    }
    assert!(echo_ok(&mut on_a, b"and still").await);
    b.enable(Some("ctl"), "b").unwrap();
    assert_eq!(state(&b, "ctl", "b"), ServerState::Up);

    assert!(b.drain(Some("nope"), "a").is_err());
    assert!(b.drain(None, "nope").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closes_at_its_idle_timeout_not_before() {
    let be = Backend::start("127.0.0.1", None).await;
    let mut cfg = listen("idle", vec![server("a", be.addr)]);
    cfg.client_timeout = Duration::from_millis(400);
    cfg.server_timeout = Duration::from_millis(400);
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let s = TcpStream::connect(b.local_addr("idle").unwrap())
        .await
        .unwrap();
    let mut s = BufReader::new(s);
    // Activity resets the clock: 3 × 250 ms with traffic outlives one timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(echo_ok(&mut s, b"tick").await);
    }
    let t0 = Instant::now();
    let mut x = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut x))
        .await
        .unwrap()
        .unwrap_or(0);
    let idle = t0.elapsed();
    assert_eq!(n, 0);
    assert!(
        idle >= Duration::from_millis(380) && idle < Duration::from_millis(1200),
        "closed after {idle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_maxconn_clients_wait_in_the_backlog() {
    let be = Backend::start("127.0.0.1", Some("a")).await;
    let mut cfg = listen("max", vec![server("a", be.addr)]);
    cfg.maxconn = 2;
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let addr = b.local_addr("max").unwrap();
    let (_, c1) = hello(addr).await;
    let (_, _c2) = hello(addr).await;
    // The third is connected by the kernel but not served...
    let mut c3 = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c3.read_line(&mut line))
            .await
            .is_err()
    );
    // ...until a slot frees.
    drop(c1);
    tokio::time::timeout(Duration::from_secs(2), c3.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "a\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_servers_and_their_connections() {
    let a = Backend::start("127.0.0.1", Some("a")).await;
    let bb = Backend::start("127.0.0.1", Some("b")).await;
    let c = Backend::start("127.0.0.1", Some("c")).await;
    let cfg = listen("rl", vec![server("a", a.addr), server("b", bb.addr)]);
    let b = Balancer::start(vec![cfg.clone(), listen("gone", vec![server("a", a.addr)])])
        .await
        .unwrap();
    let addr = b.local_addr("rl").unwrap();
    let gone = b.local_addr("gone").unwrap();
    let (_, mut on_gone) = hello(gone).await;
    let (name, mut held) = hello(addr).await;
    assert_eq!(name, "a");
    b.drain(Some("rl"), "b").unwrap();

    let mut new = cfg.clone();
    new.servers = vec![
        server("a", a.addr),
        server("b", bb.addr),
        server("c", c.addr),
    ];
    new.retries = 2;
    b.reload(vec![new]).await.unwrap();
    assert_eq!(b.local_addr("rl"), Some(addr), "the socket was rebound");
    assert!(b.local_addr("gone").is_none());
    assert!(
        echo_ok(&mut held, b"kept").await,
        "reload cut a kept connection"
    );
    assert!(
        echo_ok(&mut on_gone, b"kept too").await,
        "reload cut a removed listener's connection"
    );
    assert!(
        TcpStream::connect(gone).await.is_err(),
        "a removed listener still accepts"
    );
    // b kept its admin state; c is new and up (no check).
    assert_eq!(state(&b, "rl", "b"), ServerState::Drain);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(hello(addr).await.0);
    }
    // New connections go to the new server and never to the drained one
    // (whether `a` also gets some depends on how fast each hello closes).
    assert!(seen.contains("c"), "{seen:?}");
    assert!(
        !seen.contains("b"),
        "drained server got new connections: {seen:?}"
    );
    // The held connection is still counted (a hello that has not closed yet
    // may add one).
    assert!(
        srv(&b, "rl", "a", &mut None).active >= 1,
        "a lost its counters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maint_survives_a_reload_that_resolves_the_host_elsewhere() {
    let old = Backend::start("127.0.0.1", Some("old")).await;
    let moved = Backend::start("127.0.0.1", Some("moved")).await;
    let other = Backend::start("127.0.0.1", Some("other")).await;
    // `addr_text` is what the operator wrote; `addr` what it resolved to at load time.
    let named = |addr: SocketAddr| ServerConfig {
        addr_text: "impala1.example.org:21050".into(),
        ..server("impala1", addr)
    };
    let cfg = listen("dns", vec![named(old.addr), server("impala2", other.addr)]);
    let b = Balancer::start(vec![cfg.clone()]).await.unwrap();
    b.disable(Some("dns"), "impala1").unwrap();
    let mut new = cfg;
    new.servers[0] = named(moved.addr);
    b.reload(vec![new]).await.unwrap();
    assert_eq!(state(&b, "dns", "impala1"), ServerState::Maint);
    let addr = b.local_addr("dns").unwrap();
    for _ in 0..4 {
        assert_eq!(hello(addr).await.0, "other");
    }
    b.enable(Some("dns"), "impala1").unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(hello(addr).await.0);
    }
    assert!(seen.contains("moved") && !seen.contains("old"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_renames_or_swaps_listeners_keeps_their_ports_serving() {
    let a = Backend::start("127.0.0.1", Some("a")).await;
    let bb = Backend::start("127.0.0.1", Some("b")).await;
    // Both held while their ports are read, so the two differ.
    let (h1, h2) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (p1, p2) = (h1.local_addr().unwrap(), h2.local_addr().unwrap());
    drop((h1, h2));
    let on = |name: &str, bind: SocketAddr, to: SocketAddr| {
        let mut c = listen(name, vec![server("s", to)]);
        c.bind = bind;
        c
    };
    let b = Balancer::start(vec![on("one", p1, a.addr), on("two", p2, bb.addr)])
        .await
        .unwrap();
    assert_eq!(hello(p1).await.0, "a");
    // Renamed, same port.
    b.reload(vec![on("uno", p1, a.addr), on("two", p2, bb.addr)])
        .await
        .unwrap();
    assert_eq!(b.local_addr("uno"), Some(p1));
    for _ in 0..4 {
        let (name, mut s) = tokio::time::timeout(Duration::from_secs(5), hello(p1))
            .await
            .expect("the renamed listener's port accepts but nobody serves it");
        assert_eq!(name, "a");
        assert!(echo_ok(&mut s, b"renamed").await);
    }
    // Two listeners swap their ports.
    b.reload(vec![on("uno", p2, a.addr), on("two", p1, bb.addr)])
        .await
        .unwrap();
    for _ in 0..4 {
        let t = Duration::from_secs(5);
        assert_eq!(
            tokio::time::timeout(t, hello(p2)).await.expect("p2 dead").0,
            "a"
        );
        assert_eq!(
            tokio::time::timeout(t, hello(p1)).await.expect("p1 dead").0,
            "b"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_listener_keeps_its_servers_health_drain_and_counters() {
    let a = Backend::start("127.0.0.1", Some("a")).await;
    let bb = Backend::start("127.0.0.1", Some("b")).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = listen("old", vec![server("a", a.addr), server("b", bb.addr)]);
    cfg.bind = port;
    cfg.check = Some(tcp_check(100, 2, 2));
    let b = Balancer::start(vec![cfg.clone()]).await.unwrap();
    wait_for("both up", Duration::from_secs(2), || {
        state(&b, "old", "a") == ServerState::Up && state(&b, "old", "b") == ServerState::Up
    })
    .await;
    b.drain(Some("old"), "b").unwrap();
    assert_eq!(hello(port).await.0, "a");
    cfg.name = "new".into();
    b.reload(vec![cfg]).await.unwrap();
    // At once: a new server would be pending its first check, and b would be ready again.
    assert_eq!(state(&b, "new", "a"), ServerState::Up);
    assert_eq!(state(&b, "new", "b"), ServerState::Drain);
    assert!(
        srv(&b, "new", "a", &mut None).total >= 1,
        "a's counters were reset"
    );
    for _ in 0..4 {
        assert_eq!(hello(port).await.0, "a");
    }
}

/// The proxy's two sockets of one connection, as `ss` shows them: the accepted one (source
/// port = the listener's) and the one to the server (destination port = the backend's).
fn proxy_sockets(listen_port: u16, backend_port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!(
            "( sport = :{listen_port} or dport = :{backend_port} )"
        ))
        .output()
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stays_open_gets_keepalive_on_both_sides() {
    let be = Backend::start("127.0.0.1", Some("a")).await;
    let b = Balancer::start(vec![listen("ka", vec![server("a", be.addr)])])
        .await
        .unwrap();
    let addr = b.local_addr("ka").unwrap();
    let (name, mut s) = hello(addr).await;
    assert_eq!(name, "a");
    // The client side has it from the start (inherited from the listener)...
    let socks = proxy_sockets(addr.port(), be.addr.port());
    assert_eq!(socks.len(), 2, "{socks:?}");
    let client_side: Vec<_> = socks
        .iter()
        .filter(|l| l.contains(&format!(":{} ", addr.port())))
        .collect();
    assert_eq!(client_side.len(), 1, "{socks:?}");
    assert!(client_side[0].contains("timer:(keepalive"), "{socks:?}");
    // ...the server side once the connection has lived a second, so that a backend that
    // vanishes without FIN or RST is noticed by probes, not only at server_timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let socks = proxy_sockets(addr.port(), be.addr.port());
    assert_eq!(socks.len(), 2, "{socks:?}");
    for l in &socks {
        assert!(l.contains("timer:(keepalive"), "no keepalive: {l}");
    }
    assert!(echo_ok(&mut s, b"still here").await);
}

/// The name and scheduling policy of each thread of this process, as `ps -eLo tid,class,comm`
/// would show them (sched_getscheduler: 0 = SCHED_OTHER, 3 = SCHED_BATCH). Threads that end
/// while being listed (other tests run in parallel) are skipped.
fn thread_policies() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = t.expect("task entry").path();
        let Some(tid) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        // SAFETY: plain syscall on a thread id; a vanished thread gives -1 (ESRCH).
        let policy = unsafe { libc::sched_getscheduler(tid) };
        if policy < 0 {
            continue;
        }
        out.push((comm.trim().to_string(), policy as u32));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_threads_run_as_sched_batch_and_nothing_else_does() {
    let be = Backend::start("127.0.0.1", Some("a")).await;
    let b = Balancer::start(vec![listen("sb", vec![server("a", be.addr)])])
        .await
        .unwrap();
    let addr = b.local_addr("sb").unwrap();
    let (name, mut s) = hello(addr).await;
    assert_eq!(name, "a");
    assert!(echo_ok(&mut s, b"batch").await);
    // What `ps -eLo tid,class,comm` shows an operator: B for the connection threads.
    let threads = thread_policies();
    let (conn, others): (Vec<_>, Vec<_>) = threads
        .iter()
        .partition(|(name, _)| name.starts_with("hapair-conn-"));
    assert!(!conn.is_empty(), "no connection threads: {threads:?}");
    for (name, policy) in &conn {
        assert_eq!(*policy, libc::SCHED_BATCH as u32, "{name}");
    }
    // Every other thread (the test's runtime here; the daemon's runtime and its heartbeat
    // thread in `hapair run`) keeps the default policy.
    assert!(others.len() >= 2, "{threads:?}");
    for (name, policy) in &others {
        assert_eq!(*policy, libc::SCHED_OTHER as u32, "{name}");
    }
}

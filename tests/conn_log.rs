//! The per-connection log (`hapair::conn`): one line per connection that says which server
//! served it, the bytes each way, and how it ended, on loopback with real sockets.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hapair::balancer::{Balance, Balancer, ListenConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Everything logged under `hapair::conn`, by every test of this binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let filter: tracing_subscriber::filter::Targets = "hapair::conn=info".parse().unwrap();
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || Sink(sink.clone())),
            )
            .init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first log line naming `listener`, waited for up to 5 s, with a space at its end.
async fn line_of(listener: &str) -> String {
    let tag = format!("listener={listener} ");
    let t0 = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
        if let Some(l) = text.lines().find(|l| l.contains(&tag)) {
            return format!("{l} ");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no line for {listener}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn listen(name: &str, addr: SocketAddr) -> ListenConfig {
    ListenConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        balance: Balance::RoundRobin,
        maxconn: 64,
        backlog: 64,
        connect_timeout: Duration::from_secs(1),
        client_timeout: Duration::from_secs(60),
        server_timeout: Duration::from_secs(60),
        retries: 1,
        redispatch: true,
        check: None,
        servers: vec![ServerConfig {
            name: "impala1".into(),
            addr_text: addr.to_string(),
            addr,
            weight: 1,
            backup: false,
        }],
    }
}

/// A backend that says `hi\n`, then echoes; with `reset`, it resets the connection after
/// the first bytes it reads instead.
async fn backend(reset: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(b"hi\n").await.unwrap();
                let mut b = [0u8; 64];
                loop {
                    let n = s.read(&mut b).await.unwrap_or(0);
                    if n == 0 {
                        let _ = s.shutdown().await;
                        return;
                    }
                    if reset {
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        return;
                    }
                    if s.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Connects through `b`'s listener `name`, reads the greeting, sends `hello` and reads the echo.
async fn talk(b: &Balancer, name: &str) -> TcpStream {
    let mut s = TcpStream::connect(b.local_addr(name).unwrap())
        .await
        .unwrap();
    let mut got = [0u8; 3];
    s.read_exact(&mut got).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    let _ = s.read_exact(&mut back).await;
    s
}

/// A balancer with listener `name` in front of an echoing [`backend`], logging captured.
async fn one_listener(name: &str) -> Balancer {
    logs();
    Balancer::start(vec![listen(name, backend(false).await)])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_logs_its_server_bytes_and_end() {
    let b = one_listener("log-ok").await;
    let mut s = TcpStream::connect(b.local_addr("log-ok").unwrap())
        .await
        .unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"hi\nhello");
    let line = line_of("log-ok").await;
    assert!(line.contains(" INFO hapair::conn: closed "), "{line}");
    for want in [
        "server=impala1 ".to_string(),
        format!("client={} ", s.local_addr().unwrap()),
        "retries=0".into(),
        "bytes_in=5 ".into(),
        "bytes_out=8 ".into(),
    ] {
        assert!(line.contains(&want), "{want} not in: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_put_on_the_side_that_reset() {
    logs();
    let b = Balancer::start(vec![
        listen("log-crst", backend(false).await),
        listen("log-srst", backend(true).await),
    ])
    .await
    .unwrap();
    let s = talk(&b, "log-crst").await;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let line = line_of("log-crst").await;
    assert!(
        line.contains("hapair::conn: client: Connection reset by peer"),
        "{line}"
    );

    let _s = talk(&b, "log-srst").await;
    let line = line_of("log-srst").await;
    assert!(
        line.contains("hapair::conn: server: Connection reset by peer"),
        "{line}"
    );
    assert!(
        line.contains("bytes_in=5 ") && line.contains("bytes_out=3 "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_and_a_refused_server_are_logged() {
    logs();
    let mut idle = listen("log-idle", backend(false).await);
    idle.client_timeout = Duration::from_millis(300);
    // A port where nothing listens: every connect is refused.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let b = Balancer::start(vec![idle, listen("log-refused", gone)])
        .await
        .unwrap();
    let _s = talk(&b, "log-idle").await;
    let line = line_of("log-idle").await;
    assert!(
        line.contains("hapair::conn: client idle for 300ms"),
        "{line}"
    );

    let mut s = TcpStream::connect(b.local_addr("log-refused").unwrap())
        .await
        .unwrap();
    let mut x = Vec::new();
    let _ = s.read_to_end(&mut x).await;
    let line = line_of("log-refused").await;
    assert!(
        line.contains(
            " WARN hapair::conn: no server took the connection: impala1: Connection refused"
        ),
        "{line}"
    );
    assert!(line.contains("attempts=2"), "{line}");
    // A client that retries in a loop while every server is down: counted, not logged each
    // time (one line a second per listener).
    for _ in 0..20 {
        let mut s = TcpStream::connect(b.local_addr("log-refused").unwrap())
            .await
            .unwrap();
        let _ = s.read_to_end(&mut x).await;
    }
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    let lines = text
        .lines()
        .filter(|l| l.contains("listener=log-refused "))
        .count();
    let status = b.snapshot();
    let refused = status
        .listeners
        .iter()
        .find(|l| l.name == "log-refused")
        .unwrap();
    assert_eq!(refused.no_server, 21);
    assert!(lines < 4, "{lines} lines for 21 refused clients:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_by_shutdown_says_so() {
    let b = one_listener("log-cut").await;
    let mut s = talk(&b, "log-cut").await;
    b.shutdown(Duration::from_millis(100)).await;
    let line = line_of("log-cut").await;
    assert!(
        line.contains("hapair::conn: cut: hapair is stopping"),
        "{line}"
    );
    let mut x = Vec::new();
    let _ = s.read_to_end(&mut x).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_while_connecting_leaves_no_active_count() {
    logs();
    // A server whose accept queue is full: the kernel drops its SYNs, so a connect hangs.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    full.listen(0).unwrap();
    let addr = full.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        fillers.push(s);
        assert!(fillers.len() < 16, "the accept queue never filled");
    }
    let mut cfg = listen("log-connecting", addr);
    cfg.connect_timeout = Duration::from_secs(30);
    let b = Balancer::start(vec![cfg]).await.unwrap();
    let _c = TcpStream::connect(b.local_addr("log-connecting").unwrap())
        .await
        .unwrap();
    let server_active = |b: &Balancer| b.snapshot().listeners[0].servers[0].active;
    let t0 = Instant::now();
    while server_active(&b) != 1 {
        assert!(t0.elapsed() < Duration::from_secs(5), "never connecting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.shutdown(Duration::from_millis(100)).await;
    let line = line_of("log-connecting").await;
    assert!(
        line.contains("hapair::conn: cut while connecting: hapair is stopping"),
        "{line}"
    );
    // The admin page must not show a connection that no longer exists.
    let l = &b.snapshot().listeners[0];
    assert_eq!((l.active, l.servers[0].active), (0, 0));
}

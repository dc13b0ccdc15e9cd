//! In-process tests of routing and control: a real `Balancer` on loopback and a `PairHandle`
//! whose pair thread is a bare channel (the test plays the pair: it sets the status and reads
//! the commands sent). The full daemon is tested in `tests/admin.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::balancer::{Balance, ListenConfig, ServerConfig, ServerState};
use crate::driver::PairStatus;

const TOKEN: &str = "s3cret-token";

fn from() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn listen(name: &str, servers: &[&str]) -> ListenConfig {
    ListenConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        balance: Balance::RoundRobin,
        maxconn: 16,
        backlog: 16,
        connect_timeout: Duration::from_secs(1),
        client_timeout: Duration::from_secs(5),
        server_timeout: Duration::from_secs(5),
        retries: 1,
        redispatch: true,
        check: None,
        servers: servers
            .iter()
            .map(|n| ServerConfig {
                name: n.to_string(),
                addr_text: "127.0.0.1:9".into(),
                addr: "127.0.0.1:9".parse().unwrap(),
                weight: 1,
                backup: false,
            })
            .collect(),
    }
}

struct Fixture {
    admin: Admin,
    balancer: Balancer,
    status: Arc<Mutex<PairStatus>>,
    rx: mpsc::UnboundedReceiver<PairRequest>,
}

async fn fixture(token: Token) -> Fixture {
    let balancer = Balancer::start(vec![
        listen("hs2", &["impala1", "impala2"]),
        listen("beeswax", &["impala1"]),
    ])
    .await
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(PairStatus {
        role: "master".into(),
        ..Default::default()
    }));
    let pair = PairHandle {
        tx,
        status: status.clone(),
    };
    let admin = Admin::new(
        "proxy1".into(),
        pair,
        balancer.clone(),
        crate::supervisor::Supervisor::start(
            vec![],
            tokio::sync::watch::channel(false).1,
            EventLog::default(),
        ),
        EventLog::default(),
        token,
    );
    Fixture {
        admin,
        balancer,
        status,
        rx,
    }
}

fn req(method: &str, target: &str, auth: Option<&str>) -> Request {
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{}\r\n",
        auth.map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default()
    );
    http::parse_head(raw.as_bytes()).unwrap().unwrap().1
}

fn states(b: &Balancer) -> Vec<(String, String, ServerState)> {
    b.snapshot()
        .listeners
        .iter()
        .flat_map(|l| {
            l.servers
                .iter()
                .map(|s| (l.name.clone(), s.name.clone(), s.state))
        })
        .collect()
}

fn body(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn control_without_or_with_wrong_token_is_401_and_changes_nothing() {
    let mut f = fixture(Token::from_text(TOKEN)).await;
    let before = states(&f.balancer);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-token-and-more"),
        Some("Basic czNjcmV0LXRva2Vu"),
        Some("s3cret-token"),
        Some("Bearer "),
    ] {
        for target in [
            "/control/drain?server=impala1",
            "/control/disable?server=impala2",
            "/control/step-down",
            "/control/restart?service=catalogd",
        ] {
            let r = f.admin.handle(&req("POST", target, auth), from());
            assert_eq!(r.status, 401, "{auth:?} {target}");
            assert_eq!(body(&r)["ok"], false);
            assert!(r.headers.iter().any(|(k, _)| *k == "WWW-Authenticate"));
        }
    }
    assert_eq!(states(&f.balancer), before);
    assert!(f.rx.try_recv().is_err(), "no command reached the pair");
}

#[tokio::test]
async fn control_with_token_drains_enables_and_disables() {
    let f = fixture(Token::from_text(&format!("{TOKEN}\n"))).await;
    let auth = Some("Bearer s3cret-token");
    let r = f
        .admin
        .handle(&req("POST", "/control/drain?server=impala1", auth), from());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(body(&r)["ok"], true);
    let s = states(&f.balancer);
    assert!(s
        .iter()
        .filter(|(_, n, _)| n == "impala1")
        .all(|(_, _, st)| *st == ServerState::Drain));
    // Scoped to one listener.
    let r = f.admin.handle(
        &req(
            "POST",
            "/control/enable?server=impala1&listener=beeswax",
            auth,
        ),
        from(),
    );
    assert_eq!(r.status, 200);
    let s = states(&f.balancer);
    assert!(s.contains(&("hs2".into(), "impala1".into(), ServerState::Drain)));
    assert!(s.contains(&("beeswax".into(), "impala1".into(), ServerState::Up)));
    let r = f.admin.handle(
        &req("POST", "/control/disable?server=impala2", auth),
        from(),
    );
    assert_eq!(r.status, 200);
    assert!(states(&f.balancer).contains(&("hs2".into(), "impala2".into(), ServerState::Maint)));
    // Unknown names and missing arguments.
    let r = f
        .admin
        .handle(&req("POST", "/control/drain?server=nope", auth), from());
    assert_eq!(r.status, 404);
    let r = f.admin.handle(
        &req("POST", "/control/drain?server=impala1&listener=nope", auth),
        from(),
    );
    assert_eq!(r.status, 404);
    let r = f.admin.handle(&req("POST", "/control/drain", auth), from());
    assert_eq!(r.status, 400);
    let r = f.admin.handle(
        &req("POST", "/control/restart?service=catalogd", auth),
        from(),
    );
    assert_eq!(r.status, 404);
    assert!(body(&r)["message"]
        .as_str()
        .unwrap()
        .contains("no such service"));
    // The events record what was done.
    let ev = f.admin.status().events;
    assert!(ev
        .iter()
        .any(|e| e.kind == "admin" && e.message.contains("drain impala1")));
}

#[tokio::test]
async fn step_down_reaches_the_pair_only_on_a_master() {
    let mut f = fixture(Token::from_text(TOKEN)).await;
    let auth = Some("Bearer s3cret-token");
    f.status.lock().unwrap().role = "backup".into();
    let r = f
        .admin
        .handle(&req("POST", "/control/step-down", auth), from());
    assert_eq!(r.status, 409);
    assert!(f.rx.try_recv().is_err());
    f.status.lock().unwrap().role = "master".into();
    let r = f
        .admin
        .handle(&req("POST", "/control/step-down", auth), from());
    assert_eq!(r.status, 200);
    assert!(matches!(
        f.rx.try_recv(),
        Ok(PairRequest::Command(Command::StepDown))
    ));
}

#[tokio::test]
async fn without_a_token_file_control_is_403() {
    let f = fixture(Token::load(None)).await;
    let r = f.admin.handle(
        &req("POST", "/control/drain?server=impala1", Some("Bearer x")),
        from(),
    );
    assert_eq!(r.status, 403);
    assert!(body(&r)["message"]
        .as_str()
        .unwrap()
        .contains("admin_token_file"));
    assert!(states(&f.balancer)
        .iter()
        .all(|(_, _, s)| *s == ServerState::Up));
    let missing = Token::load(Some(Path::new("/nonexistent/admin.token")));
    assert!(matches!(missing, Token::Disabled(ref w) if w.contains("cannot read")));
    assert!(!format!("{:?}", Token::from_text(TOKEN)).contains(TOKEN));
}

#[tokio::test]
async fn pages_and_methods() {
    let f = fixture(Token::from_text(TOKEN)).await;
    let r = f.admin.handle(&req("GET", "/", None), from());
    assert_eq!(r.status, 200);
    let html = String::from_utf8(r.body).unwrap();
    assert!(
        html.contains("data-server=\"impala2\" data-state=\"up\""),
        "{html}"
    );
    let r = f.admin.handle(&req("GET", "/status", None), from());
    let s = body(&r);
    assert_eq!(s["node"], "proxy1");
    assert_eq!(s["listeners"][0]["servers"][0]["state"], "up");
    assert_eq!(s["services"], serde_json::json!([]));
    let r = f.admin.handle(&req("GET", "/metrics", None), from());
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("hapair_server_up{listener=\"hs2\",server=\"impala1\"} 1"));
    assert_eq!(
        f.admin
            .handle(&req("GET", "/control/drain?server=impala1", None), from())
            .status,
        405
    );
    assert_eq!(
        f.admin.handle(&req("POST", "/status", None), from()).status,
        405
    );
    assert_eq!(
        f.admin.handle(&req("GET", "/nope", None), from()).status,
        404
    );
}

#[tokio::test]
async fn server_bounds_slow_and_oversized_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture(Token::from_text(TOKEN)).await;
    let stop = CancellationToken::new();
    let addr = start(
        "127.0.0.1:0".parse().unwrap(),
        f.admin.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    // An oversized head gets 431.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(big.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"),
        "{out:?}"
    );
    // A normal GET works while a silent client holds a slot.
    let _idle = TcpStream::connect(addr).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    stop.cancel();
}

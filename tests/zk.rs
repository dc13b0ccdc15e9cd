//! ZooKeeper discovery against a real ZooKeeper (Debian's `zookeeper` package) on loopback:
//! the registrar, the balancer and stand-in coordinators in this process, the role driven by
//! the test. With CI=true a missing ZooKeeper or java is a failure, not a skip.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hapair::balancer::{Balance, Balancer, CheckConfig, CheckKind, ListenConfig, ServerConfig};
use hapair::events::EventLog;
use hapair::lab::standin::{Standin, StandinOpts, StandinRole};
use hapair::pair::Role;
use hapair::zk::config::{Published, Register, ZkConfig};
use hapair::zk::format::{parse_hive, split_sequence};
use hapair::zk::server::{free_port, require, ZkServer};
use hapair::zk::{Registrar, VERSION};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use zookeeper_client as zkc;

/// One ZooKeeper JVM at a time: two cores are shared.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NS: &str = "impala-ha";
const INTERVAL_MS: u64 = 200;
const FALL: u32 = 2;

fn zk_server() -> ZkServer {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let mut z = ZkServer::new(addr).unwrap();
    z.start().unwrap();
    assert!(
        z.wait_ready(Duration::from_secs(30)),
        "zookeeper did not start:\n{}",
        z.log()
    );
    z
}

/// Three stand-in coordinators on 127.0.0.21..23, all on the same client and web ports.
async fn coordinators() -> (Vec<Standin>, u16, u16) {
    let port = free_port().unwrap();
    let web = free_port().unwrap();
    let mut out = vec![];
    for i in 1..=3u8 {
        let ip = IpAddr::from([127, 0, 0, 20 + i]);
        let mut o = StandinOpts::new(StandinRole::Impalad);
        o.name = Some(format!("impala{i}"));
        o.listen = vec![SocketAddr::new(ip, port)];
        o.web = Some(SocketAddr::new(ip, web));
        out.push(Standin::start(o).await.unwrap());
    }
    (out, port, web)
}

fn listen(name: &str, port: u16, web: u16) -> ListenConfig {
    ListenConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        balance: Balance::LeastConn,
        maxconn: 1024,
        backlog: 128,
        connect_timeout: Duration::from_secs(1),
        client_timeout: Duration::from_secs(60),
        server_timeout: Duration::from_secs(60),
        retries: 3,
        redispatch: true,
        check: Some(CheckConfig {
            kind: CheckKind::Http {
                path: "/healthz".into(),
                expect: 200,
            },
            port: Some(web),
            interval: Duration::from_millis(INTERVAL_MS),
            timeout: Duration::from_millis(INTERVAL_MS),
            fall: FALL,
            rise: 2,
        }),
        servers: (1..=3u8)
            .map(|i| {
                let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 20 + i]), port);
                ServerConfig {
                    name: format!("impala{i}"),
                    addr_text: addr.to_string(),
                    addr,
                    weight: 1,
                    backup: false,
                }
            })
            .collect(),
    }
}

fn zk_config(zk: SocketAddr, register: Register, published: Vec<Published>) -> ZkConfig {
    ZkConfig {
        quorum: format!("{zk}/hapair-test"),
        hosts: vec![zk.to_string()],
        chroot: "/hapair-test".into(),
        namespace: NS.into(),
        session_timeout: Duration::from_secs(2),
        register,
        published,
        http_path: "cliservice".into(),
        authentication: "NONE".into(),
        principal: None,
        advertise: None,
    }
}

fn published(name: &str, http: bool) -> Published {
    Published {
        listener: name.into(),
        http,
    }
}

/// A reader, as a Hive client would be: sees `/hapair-test/impala-ha`.
async fn reader(zk: SocketAddr) -> zkc::Client {
    zkc::Client::connector()
        .with_session_timeout(Duration::from_secs(5))
        .connect(&format!("{zk}/hapair-test"))
        .await
        .unwrap()
}

/// Children of the namespace with their data (empty if the namespace does not exist).
async fn read(r: &zkc::Client) -> Vec<(String, String)> {
    let path = format!("/{NS}");
    let Ok((children, _)) = r.get_children(&path).await else {
        return vec![];
    };
    let mut out = vec![];
    for c in children {
        if let Ok((d, _)) = r.get_data(&format!("{path}/{c}")).await {
            out.push((c, String::from_utf8_lossy(&d).into_owned()));
        }
    }
    out.sort();
    out
}

/// Host:port of every znode, sorted.
async fn endpoints(r: &zkc::Client) -> Vec<String> {
    let mut v: Vec<String> = read(r)
        .await
        .iter()
        .filter_map(|(_, d)| parse_hive(d))
        .map(|h| format!("{}:{}", h.host, h.port))
        .collect();
    v.sort();
    v
}

/// Polls until `pred` holds on the endpoints; returns how long it took.
async fn until(
    r: &zkc::Client,
    limit: Duration,
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let e = endpoints(r).await;
        if pred(&e) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; have {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ep(i: u8, port: u16) -> String {
    format!("127.0.0.{}:{port}", 20 + i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_mode_follows_health_admin_state_and_role() {
    if !require("servers_mode") {
        return;
    }
    let _g = SERIAL.lock().await;
    let zk = zk_server();
    let (coords, port, web) = coordinators().await;
    let balancer = Balancer::start(vec![listen("impala_hs2", port, web)])
        .await
        .unwrap();
    let (role_tx, role_rx) = watch::channel(Role::Master);
    let cfg = zk_config(
        zk.addr,
        Register::Servers,
        vec![published("impala_hs2", false)],
    );
    let reg = Registrar::start(cfg, vec![], role_rx, balancer.clone(), EventLog::default());
    let r = reader(zk.addr).await;

    let all: Vec<String> = (1..=3).map(|i| ep(i, port)).collect();
    let t = until(&r, Duration::from_secs(15), "three znodes", |e| e == all).await;
    eprintln!("3 znodes registered {t:?} after start");

    // The exact format, read back and parsed with the Hive driver's rules.
    let nodes = read(&r).await;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for (i, (name, data)) in nodes.iter().enumerate() {
        let host = format!("127.0.0.{}", 21 + i);
        let (prefix, seq) = split_sequence(name).expect("sequence suffix");
        assert_eq!(
            prefix,
            format!("serverUri={host}:{port};version={VERSION};sequence=")
        );
        assert_eq!(seq.len(), 10, "{name}");
        assert_eq!(
            data,
            &format!(
                "hive.server2.thrift.bind.host={host};hive.server2.thrift.port={port};\
                 hive.server2.transport.mode=binary;hive.server2.authentication=NONE"
            )
        );
        let h = parse_hive(data).unwrap();
        assert_eq!((h.host.as_str(), h.port), (host.as_str(), port));
        assert_eq!(h.transport_mode, "binary");
    }
    let st = reg.status();
    assert_eq!(st.state, "connected");
    assert_eq!(st.znodes.len(), 3);
    assert_eq!(st.namespace, format!("/hapair-test/{NS}"));

    // A coordinator fails its checks: its znode goes within the fall time (+ one poll).
    let fall_time = Duration::from_millis(INTERVAL_MS * u64::from(FALL));
    coords[0].set_unhealthy(true);
    let t = until(&r, Duration::from_secs(5), "impala1 gone", |e| {
        !e.contains(&ep(1, port))
    })
    .await;
    eprintln!("MEASURE health fail -> znode gone: {t:?} (fall time {fall_time:?})");
    assert!(
        t <= fall_time
            + Duration::from_millis(INTERVAL_MS + 2 * hapair::zk::POLL.as_millis() as u64 + 200),
        "znode removal took {t:?}"
    );
    coords[0].set_unhealthy(false);
    let t = until(&r, Duration::from_secs(5), "impala1 back", |e| e == all).await;
    eprintln!("MEASURE health back -> znode back: {t:?}");

    // A stopped coordinator (connect refused, healthz unreachable).
    coords[2].stop();
    let t = until(&r, Duration::from_secs(5), "impala3 gone", |e| {
        !e.contains(&ep(3, port))
    })
    .await;
    eprintln!("MEASURE coordinator stopped -> znode gone: {t:?}");

    // Drain and disable remove; enable restores.
    balancer.drain(None, "impala2").unwrap();
    let t = until(&r, Duration::from_secs(3), "drained gone", |e| {
        e == [ep(1, port)]
    })
    .await;
    eprintln!("MEASURE drain -> znode gone: {t:?}");
    balancer.enable(None, "impala2").unwrap();
    until(&r, Duration::from_secs(3), "enabled back", |e| {
        e == [ep(1, port), ep(2, port)]
    })
    .await;
    balancer.disable(None, "impala1").unwrap();
    until(&r, Duration::from_secs(3), "disabled gone", |e| {
        e == [ep(2, port)]
    })
    .await;
    balancer.enable(None, "impala1").unwrap();
    until(&r, Duration::from_secs(3), "enabled back", |e| e.len() == 2).await;

    // Demotion removes everything at once; promotion registers at once.
    role_tx.send(Role::Backup).unwrap();
    let t = until(&r, Duration::from_secs(3), "demoted: none", |e| {
        e.is_empty()
    })
    .await;
    eprintln!("MEASURE demotion -> znodes gone: {t:?}");
    assert_eq!(
        reg.status().state,
        "connected",
        "the session is kept while backup"
    );
    role_tx.send(Role::Master).unwrap();
    let t = until(&r, Duration::from_secs(3), "promoted: back", |e| {
        e.len() == 2
    })
    .await;
    eprintln!("MEASURE promotion -> znodes registered: {t:?}");

    // Shutdown deletes and closes.
    reg.shutdown(Duration::from_secs(3)).await;
    until(&r, Duration::from_secs(3), "stopped: none", |e| {
        e.is_empty()
    })
    .await;
    assert_eq!(reg.status().state, "stopped");
    drop(coords);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_mode_keeps_one_znode_per_listener() {
    if !require("vip_mode") {
        return;
    }
    let _g = SERIAL.lock().await;
    let zk = zk_server();
    let (_coords, port, web) = coordinators().await;
    let balancer = Balancer::start(vec![
        listen("impala_hs2", port, web),
        listen("impala_http", port, web),
    ])
    .await
    .unwrap();
    let hs2 = balancer.local_addr("impala_hs2").unwrap().port();
    let http = balancer.local_addr("impala_http").unwrap().port();
    let (_role_tx, role_rx) = watch::channel(Role::Master);
    let cfg = zk_config(
        zk.addr,
        Register::Vip,
        vec![
            published("impala_hs2", false),
            published("impala_http", true),
        ],
    );
    let vip: IpAddr = "192.0.2.100".parse().unwrap();
    let reg = Registrar::start(
        cfg,
        vec![vip],
        role_rx,
        balancer.clone(),
        EventLog::default(),
    );
    let r = reader(zk.addr).await;
    let mut want = vec![format!("{vip}:{hs2}"), format!("{vip}:{http}")];
    want.sort();
    until(&r, Duration::from_secs(15), "two vip znodes", |e| e == want).await;
    // Still exactly one per listener a while later (no duplicates from re-registration).
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(endpoints(&r).await, want);
    }
    let nodes = read(&r).await;
    let http_data = nodes
        .iter()
        .map(|(_, d)| d)
        .find(|d| d.contains("transport.mode=http"))
        .unwrap();
    assert_eq!(
        http_data,
        &format!(
            "hive.server2.thrift.bind.host={vip};hive.server2.transport.mode=http;\
             hive.server2.thrift.http.port={http};hive.server2.thrift.http.path=cliservice;\
             hive.server2.authentication=NONE"
        )
    );
    assert!(!http_data.contains("hive.server2.thrift.port="));
    reg.shutdown(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_lost_leaves_the_balancer_serving_and_registration_recovers() {
    if !require("zookeeper_lost") {
        return;
    }
    let _g = SERIAL.lock().await;
    let mut zk = zk_server();
    let (coords, port, web) = coordinators().await;
    let balancer = Balancer::start(vec![listen("impala_hs2", port, web)])
        .await
        .unwrap();
    let front = balancer.local_addr("impala_hs2").unwrap();
    let (_role_tx, role_rx) = watch::channel(Role::Master);
    let cfg = zk_config(
        zk.addr,
        Register::Servers,
        vec![published("impala_hs2", false)],
    );
    let reg = Registrar::start(cfg, vec![], role_rx, balancer.clone(), EventLog::default());
    let all: Vec<String> = (1..=3).map(|i| ep(i, port)).collect();
    {
        let r = reader(zk.addr).await;
        until(&r, Duration::from_secs(15), "three znodes", |e| e == all).await;
    }

    // ZooKeeper dies. The balancer keeps serving, and quickly.
    zk.stop();
    let t0 = Instant::now();
    for _ in 0..20 {
        let c0 = Instant::now();
        let s = tokio::net::TcpStream::connect(front)
            .await
            .expect("balancer serves");
        let mut line = String::new();
        tokio::io::BufReader::new(s)
            .read_line(&mut line)
            .await
            .unwrap();
        assert!(line.starts_with("impala"), "{line:?}");
        assert!(
            c0.elapsed() < Duration::from_millis(500),
            "{:?}",
            c0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = reg.status();
    assert_ne!(st.state, "connected", "{st:?}");
    eprintln!("zookeeper down {:?}: registrar {}", t0.elapsed(), st.state);
    // A health change while ZooKeeper is away is applied once it is back.
    coords[1].set_unhealthy(true);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Restart with its data: the session survives, the registrar catches up.
    zk.start().unwrap();
    let t0 = Instant::now();
    assert!(zk.wait_ready(Duration::from_secs(30)), "{}", zk.log());
    let ready = t0.elapsed();
    let r = reader(zk.addr).await;
    let want = vec![ep(1, port), ep(3, port)];
    until(&r, Duration::from_secs(15), "caught up", |e| e == want).await;
    eprintln!(
        "MEASURE zookeeper restart (same data) -> znodes right: {:?} after the server answered ({ready:?} to start)",
        t0.elapsed() - ready
    );
    drop(r);

    // Restart with its data wiped: the old session is unknown (expired); the registrar opens
    // a new one and registers again, without a restart of hapair.
    zk.stop();
    let sessions = reg.status().sessions;
    let mut zk2 = ZkServer::new(zk.addr).unwrap();
    drop(zk);
    zk2.start().unwrap();
    let t0 = Instant::now();
    assert!(zk2.wait_ready(Duration::from_secs(30)), "{}", zk2.log());
    let ready = t0.elapsed();
    let r = reader(zk2.addr).await;
    until(&r, Duration::from_secs(20), "re-registered", |e| e == want).await;
    eprintln!(
        "MEASURE zookeeper restart (data lost, session expired) -> re-registered: {:?} after the server answered",
        t0.elapsed() - ready
    );
    assert!(reg.status().sessions > sessions, "{:?}", reg.status());
    reg.shutdown(Duration::from_secs(3)).await;
}

#[test]
fn config_errors_point_at_the_listener_name() {
    let text = "[node]\nname = \"proxy1\"\npriority = 150\n\n[pair]\ninterface = \"lo\"\nrouter_id = 51\n\
                peer = \"192.0.2.12\"\nauth_key_file = \"pair.key\"\nvips = [\"192.0.2.100/24\"]\n\n\
                [[listen]]\nname = \"impala_hs2\"\nbind = \"0.0.0.0:21050\"\n\
                servers = [{ name = \"i1\", addr = \"127.0.0.1:21000\" }]\n\n\
                [zookeeper]\nquorum = \"zk1:2181,zk2/impala\"\nlisteners = [\"impala_hs2\", \"nope\"]\n";
    let errs = match hapair::config::parse(Path::new("t.toml"), text, hapair::config::Host::Lenient)
    {
        Ok(_) => panic!("accepted"),
        Err(d) => d.errors().map(|d| d.to_string()).collect::<Vec<_>>(),
    };
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("t.toml:19:28: zookeeper: listeners: no [[listen]] named \"nope\""),
        "{errs:?}"
    );
    let ok = text.replace(", \"nope\"", "");
    let c = hapair::config::parse(Path::new("t.toml"), &ok, hapair::config::Host::Lenient)
        .unwrap()
        .config;
    let z = c.zookeeper.clone().unwrap();
    assert_eq!(z.hosts, ["zk1:2181", "zk2:2181"]);
    assert_eq!(z.chroot, "/impala");
    assert!(c.summary().contains(
        "zookeeper zk1:2181,zk2:2181/impala namespace hiveserver2 register servers (impala_hs2)"
    ));
    let unknown = ok.replace("[zookeeper]\n", "[zookeeper]\nsession = \"1s\"\n");
    assert!(
        hapair::config::parse(Path::new("t.toml"), &unknown, hapair::config::Host::Lenient)
            .is_err()
    );
}

#[test]
fn status_page_and_metrics_show_zookeeper() {
    use hapair::admin::status::Status;
    use hapair::zk::{ZkStatus, ZnodeStatus};
    let s = Status {
        version: "0.1.0".into(),
        node: "proxy1".into(),
        now_ms: 10_000,
        pair: Default::default(),
        listeners: vec![],
        services: vec![],
        zookeeper: Some(ZkStatus {
            quorum: "zk1:2181".into(),
            namespace: "/impala-ha".into(),
            register: "servers".into(),
            state: "connected".into(),
            state_since_unix_ms: 9_000,
            session_id: Some("0x1".into()),
            sessions: 1,
            znodes: vec![ZnodeStatus {
                path: "/impala-ha/serverUri=h1:21050;version=0.1.0;sequence=0000000001".into(),
                listener: "impala_hs2".into(),
                server: Some("impala1".into()),
                host: "h1".into(),
                port: 21050,
                transport: "binary",
                since_unix_ms: 9_500,
            }],
            ..ZkStatus::default()
        }),
        control_enabled: false,
        events: vec![],
    };
    let page = hapair::admin::page::render(&s);
    assert!(
        page.contains("id=\"zookeeper\" data-state=\"connected\""),
        "{page}"
    );
    assert!(page.contains("class=\"znode\" data-path=\"/impala-ha/serverUri=h1:21050;"));
    let m = hapair::admin::metrics::render(&s);
    assert!(
        m.contains("hapair_zookeeper_state{state=\"connected\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("hapair_zookeeper_znodes 1\n"), "{m}");
    assert!(m.contains("hapair_zookeeper_sessions_total 1\n"), "{m}");
    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(j["zookeeper"]["znodes"][0]["port"], 21050);
}

//! ZooKeeper discovery across a pair failover, end to end: two `hapair run` processes in
//! namespaces, ZooKeeper and three stand-in coordinators on a host of the lab's switch.
//! Root and ZooKeeper only; with CI=true a skip is a failure.
//!
//! ```text
//!   zk host: ZooKeeper 192.0.2.5:2181, coordinators 192.0.2.6-8:21050 (web :25000)
//!   proxy1 192.0.2.11 (master), proxy2 192.0.2.12
//! ```

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hapair::lab::netns::{require_root, Netns, Proc};
use hapair::lab::pairlab::{LabOptions, PairLab, IFACE};
use hapair::zk::format::parse_hive;
use hapair::zk::server::{require, ruok, ZkServer};
use zookeeper_client as zkc;

const ZK: &str = "192.0.2.5:2181";
const COORDS: [&str; 3] = ["192.0.2.6", "192.0.2.7", "192.0.2.8"];

fn extra_config() -> String {
    let servers = COORDS
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("{{ name = \"impala{}\", addr = \"{ip}:21050\" }}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "\n[[listen]]\nname = \"impala_hs2\"\nbind = \"0.0.0.0:21051\"\nbalance = \"leastconn\"\n\
         check = {{ type = \"http\", port = 25000, path = \"/healthz\", interval = \"200ms\", fall = 2, rise = 1 }}\n\
         servers = [{servers}]\n\n\
         [zookeeper]\nquorum = \"{ZK}\"\nnamespace = \"impala-ha\"\nsession_timeout = \"2s\"\n\
         register = \"servers\"\nlisteners = [\"impala_hs2\"]\n"
    )
}

/// Every znode of the namespace: (host:port, ephemeral owner), read inside the zk host.
fn znodes(zk: &Netns) -> Vec<(String, i64)> {
    zk.block_on(|| async {
        let c = match tokio::time::timeout(
            Duration::from_secs(3),
            zkc::Client::connector()
                .with_session_timeout(Duration::from_secs(2))
                .connect(ZK),
        )
        .await
        {
            Ok(Ok(c)) => c,
            _ => return vec![],
        };
        let Ok((children, _)) = c.get_children("/impala-ha").await else {
            return vec![];
        };
        let mut out = vec![];
        for ch in children {
            let path = format!("/impala-ha/{ch}");
            if let Ok((d, stat)) = c.get_data(&path).await {
                if let Some(h) = parse_hive(&String::from_utf8_lossy(&d)) {
                    out.push((format!("{}:{}", h.host, h.port), stat.ephemeral_owner));
                }
            }
        }
        out.sort();
        out
    })
    .unwrap_or_default()
}

fn endpoints(v: &[(String, i64)]) -> Vec<String> {
    v.iter().map(|(e, _)| e.clone()).collect()
}

#[test]
fn znodes_follow_a_link_down_failover() {
    if !require_root("zk_failover") || !require("zk_failover") {
        return;
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hapair"));
    let mut l = PairLab::new(
        bin,
        LabOptions {
            service: false,
            extra_config: extra_config(),
            ..LabOptions::default()
        },
    )
    .expect("lab");
    // ZooKeeper and the coordinators share one host on the switch.
    let zk_ns = l.lab.host("zk").unwrap();
    let mut addrs = vec!["192.0.2.5/24".to_string()];
    addrs.extend(COORDS.iter().map(|ip| format!("{ip}/24")));
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    l.lab.attach(&zk_ns, IFACE, &addr_refs).unwrap();
    zk_ns.set_link("lo", true).unwrap();
    let zk_addr: SocketAddr = ZK.parse().unwrap();
    let mut zk = ZkServer::new(zk_addr).unwrap();
    zk.start_in(&zk_ns).unwrap();
    let _coords: Vec<Proc> = COORDS
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let mut cmd = Command::new(bin);
            cmd.args(["lab", "standin", "impalad", "--name"])
                .arg(format!("impala{}", i + 1))
                .arg("--listen")
                .arg(format!("{ip}:21050"))
                .arg("--web")
                .arg(format!("{ip}:25000"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            zk_ns.spawn(cmd).unwrap()
        })
        .collect();
    let ready = zk_ns
        .in_ns(|| {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if ruok(zk_addr) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
        .unwrap();
    assert!(ready, "zookeeper did not start:\n{}", zk.log());

    l.start(0).unwrap();
    l.start(1).unwrap();
    assert!(
        l.wait_role(0, "master", Duration::from_secs(10)),
        "proxy1 not master"
    );
    let want: Vec<String> = COORDS.iter().map(|ip| format!("{ip}:21050")).collect();
    let t0 = Instant::now();
    let first = loop {
        let z = znodes(&zk_ns);
        if endpoints(&z) == want {
            break z;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "proxy1 did not register: {z:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let old_owner = first[0].1;
    assert!(
        first.iter().all(|(_, o)| *o == old_owner),
        "one set: {first:?}"
    );

    // Pull the master's cable: proxy2 takes over and registers; proxy1's set stays until
    // ZooKeeper expires its session (2 s).
    let t0 = Instant::now();
    l.set_link(0, false).unwrap();
    assert!(
        l.wait_role(1, "master", Duration::from_secs(5)),
        "proxy2 not master"
    );
    let promoted = t0.elapsed();
    let (registered, expired, last) = {
        let mut registered = None;
        loop {
            let z = znodes(&zk_ns);
            let new: Vec<&(String, i64)> = z.iter().filter(|(_, o)| *o != old_owner).collect();
            if registered.is_none() && new.len() == 3 {
                registered = Some(t0.elapsed());
            }
            if let (Some(r), 3) = (registered, z.len()) {
                break (r, t0.elapsed(), z);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no single new set after the failover: {z:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    eprintln!(
        "MEASURE failover: proxy2 master {promoted:?}, its znodes registered {registered:?}, \
         old set expired (exactly one set) {expired:?} after link down"
    );
    assert_eq!(endpoints(&last), want);
    assert!(last.iter().all(|(_, o)| *o != old_owner), "{last:?}");
    // Still exactly one set a moment later.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(endpoints(&znodes(&zk_ns)), want);
    drop(l);
    drop(zk);
}

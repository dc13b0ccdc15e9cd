//! The pair, end to end, in network namespaces: two real `hapair run`
//! processes, a switch, a client connecting to the VIP in a tight loop.
//! These run as root (CI is root); with CI=true a skip is a failure.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hapair::lab::client::{failed_count, Attempt};
use hapair::lab::netns::require_root;
use hapair::lab::pairlab::{LabOptions, PairLab, IFACE, PROXY, VIP};
use hapair::lab::timeline::EventKind;
use hapair::pair::{Heartbeat, Kind, Role};
use hapair::wire::{self, KeyRing};

/// Timing-sensitive tests run one at a time on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn lab(opts: LabOptions) -> PairLab {
    PairLab::new(std::path::Path::new(env!("CARGO_BIN_EXE_hapair")), opts).expect("build lab")
}

/// Both nodes up, proxy1 master holding the VIP.
fn settled(opts: LabOptions) -> PairLab {
    let mut l = lab(opts);
    l.start(0).unwrap();
    l.start(1).unwrap();
    assert!(
        l.wait_for(Duration::from_secs(5), |l| l.holds_vip(0)
            && l.last_role(1).as_deref() == Some("backup")),
        "proxy1 master, proxy2 backup"
    );
    l
}

fn first_ok_after<'a>(a: &'a [Attempt], t_ms: f64, host: &str) -> Option<&'a Attempt> {
    a.iter().find(|x| x.at_ms >= t_ms && x.host() == Some(host))
}

#[test]
fn cold_start_master_holds_vip_and_client_sees_its_mac() {
    if !require_root("cold_start") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut l = lab(LabOptions::default());
    l.start(0).unwrap();
    let t0 = Instant::now();
    // proxy2 joins a running master: it knows its role within one round trip.
    assert!(l.wait_for(Duration::from_secs(2), |l| l.holds_vip(0)));
    l.start(1).unwrap();
    assert!(l.wait_role(1, "backup", Duration::from_secs(2)));
    let joined = l.log_lines(1, "role init => backup");
    let ready = l.log_lines(1, "ready");
    let learn_ms = joined[0].at_ms - ready[0].at_ms;
    println!("proxy2 knew it was backup {learn_ms:.1} ms after ready (advert interval 100 ms)");
    assert!(
        learn_ms < 100.0,
        "role known within one advert interval, took {learn_ms} ms"
    );
    assert!(!l.holds_vip(1));
    let _ = t0;

    let run = l.start_client().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (attempts, _) = run.finish();
    assert!(!attempts.is_empty());
    assert_eq!(failed_count(&attempts), 0, "client connects to VIP:port");
    assert!(attempts.iter().all(|a| a.host() == Some("proxy1")));
    let neigh = l
        .client_neigh_vip()
        .expect("client has a neighbour entry for the VIP");
    assert_eq!(
        neigh,
        l.mac(0).unwrap(),
        "the VIP resolves to the master's MAC"
    );
}

#[test]
fn link_pulled_on_master_backup_answers_within_350ms() {
    if !require_root("link_pulled") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = settled(LabOptions::default());
    let run = l.start_client().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t_down = l.now_ms();
    l.set_link(0, false).unwrap();
    assert!(l.wait_for(Duration::from_secs(2), |l| l.holds_vip(1)));
    std::thread::sleep(Duration::from_millis(500));
    let (attempts, sightings) = run.finish();
    let ok = first_ok_after(&attempts, t_down, "proxy2").expect("served by proxy2");
    let outage = ok.at_ms + ok.took_ms - t_down;
    println!("link pulled: client answered by proxy2 {outage:.1} ms after the link went down");
    assert!(outage < 350.0, "outage {outage:.1} ms");
    let mac2 = l.mac(1).unwrap();
    assert!(
        sightings
            .iter()
            .any(|s| s.announcement.mac.to_string() == mac2),
        "client saw proxy2's gratuitous ARP"
    );
    assert_eq!(l.client_neigh_vip().as_deref(), Some(mac2.as_str()));
    assert_eq!(l.last_role(0).as_deref(), Some("fault"));
    assert!(!l.holds_vip(0), "fault state releases the VIP");
}

#[test]
fn kill9_master_backup_takes_over_and_restart_removes_stale_vip() {
    if !require_root("kill9") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut l = settled(LabOptions::default());
    std::thread::sleep(Duration::from_millis(200));
    let t_kill = Instant::now();
    l.kill9(0).unwrap();
    assert!(l.wait_for(Duration::from_secs(2), |l| l.holds_vip(1)));
    let took = t_kill.elapsed();
    println!(
        "kill -9: proxy2 holds the VIP {} ms after the kill",
        took.as_millis()
    );
    assert!(took < Duration::from_millis(350));
    // The killed hapair could not clean up: its VIP is still on proxy1.
    assert!(l.holds_vip(0), "kill -9 leaves the VIP behind");
    // Make proxy1 lower so it comes back as backup, then restart it.
    std::fs::write(
        l.config_path(0),
        l.config_text(0).replace("priority = 150", "priority = 50"),
    )
    .unwrap();
    l.start(0).unwrap();
    assert!(l.wait_role(0, "backup", Duration::from_secs(3)));
    assert!(!l.holds_vip(0), "restart removed the stale VIP");
    let removed = l.log_lines(0, "removed stale VIP");
    assert!(!removed.is_empty(), "restart logs the stale VIP it removed");
    println!(
        "{:?}",
        removed
            .iter()
            .map(|r| r.fields.to_string())
            .collect::<Vec<_>>()
    );
    assert!(l.holds_vip(1));
}

#[test]
fn sigterm_handover_has_zero_failed_connects() {
    if !require_root("sigterm") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut l = settled(LabOptions::default());
    let run = l.start_client().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t = l.now_ms();
    l.terminate(0, Duration::from_secs(5)).unwrap();
    assert!(l.holds_vip(1));
    std::thread::sleep(Duration::from_millis(500));
    let (attempts, _) = run.finish();
    let after: Vec<_> = attempts
        .iter()
        .filter(|a| a.at_ms >= t - 100.0)
        .cloned()
        .collect();
    assert!(
        after.iter().any(|a| a.host() == Some("proxy2")),
        "proxy2 serves after"
    );
    assert_eq!(
        failed_count(&after),
        0,
        "zero failed connects during the handover"
    );
    println!(
        "graceful handover: {} connects around it, 0 failed",
        after.len()
    );
}

#[test]
fn preempt_back_and_preempt_false() {
    if !require_root("preempt") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // preempt = true (default): proxy1 comes back and takes over again.
    let mut l = settled(LabOptions::default());
    l.terminate(0, Duration::from_secs(5)).unwrap();
    assert!(l.holds_vip(1));
    l.start(0).unwrap();
    assert!(l.wait_for(Duration::from_secs(2), |l| l.holds_vip(0)
        && !l.holds_vip(1)));
    drop(l);

    // preempt = false on proxy1: it stays backup.
    let mut opts = LabOptions::default();
    opts.node_extra[0] = "preempt = false".into();
    let mut l = settled(opts);
    l.terminate(0, Duration::from_secs(5)).unwrap();
    l.start(0).unwrap();
    assert!(l.wait_role(0, "backup", Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        l.holds_vip(1) && !l.holds_vip(0),
        "no preemption with preempt = false"
    );
}

/// Capture one heartbeat proxy2 sends to proxy1, from inside proxy1's namespace.
fn capture_heartbeat(l: &PairLab) -> Vec<u8> {
    l.proxies[0]
        .in_ns(|| {
            let ni = pnet_datalink::interfaces()
                .into_iter()
                .find(|i| i.name == IFACE)
                .unwrap();
            let cfg = pnet_datalink::Config {
                read_timeout: Some(Duration::from_millis(50)),
                ..Default::default()
            };
            let pnet_datalink::Channel::Ethernet(_, mut rx) =
                pnet_datalink::channel(&ni, cfg).unwrap()
            else {
                panic!("not ethernet")
            };
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let Ok(f) = rx.next() else { continue };
                if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
                    continue;
                }
                let ihl = usize::from(f[14] & 0x0f) * 4;
                let udp = 14 + ihl;
                let src = std::net::Ipv4Addr::new(f[26], f[27], f[28], f[29]);
                let dport = u16::from_be_bytes([f[udp + 2], f[udp + 3]]);
                if src.to_string() == PROXY[1] && dport == 5405 {
                    return f[udp + 8..].to_vec();
                }
            }
            panic!("no heartbeat captured");
        })
        .unwrap()
}

fn send_from_client(l: &PairLab, pkt: Vec<u8>) {
    l.client
        .in_ns(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let to: SocketAddr = format!("{}:5405", PROXY[0]).parse().unwrap();
            s.send_to(&pkt, to).unwrap();
        })
        .unwrap();
}

fn dropped(l: &PairLab, reason: &str) -> usize {
    l.log_lines(0, "dropped heartbeat")
        .iter()
        .filter(|x| x.fields.get("reason").and_then(|r| r.as_str()) == Some(reason))
        .count()
}

/// A heartbeat claiming to be proxy2 as master with the top priority, signed
/// with a key the pair does not have.
fn forged(name: &str) -> (Heartbeat, KeyRing) {
    let hb = Heartbeat {
        kind: Kind::Advert,
        router_id: 51,
        priority: 254,
        role: Role::Master,
        advert_interval_ms: 100,
        addr: PROXY[1].parse().unwrap(),
        epoch: u64::MAX / 2,
        seq: 1,
        vip_digest: [0; 8],
        name: name.into(),
        flags: 0,
    };
    (hb, KeyRing::from_keys([(0u8, vec![0x42; 32])]).unwrap())
}

#[test]
fn forged_and_replayed_heartbeats_change_nothing_and_are_counted() {
    if !require_root("bad_packets") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = settled(LabOptions::default());
    let captured = capture_heartbeat(&l);
    std::thread::sleep(Duration::from_millis(300));

    let (forged, wrong) = forged("proxy2");
    send_from_client(&l, wire::encode(&forged, &wrong));
    // Same forgery aimed at another pair on the LAN (router id 52).
    let mut foreign = forged.clone();
    foreign.router_id = 52;
    send_from_client(&l, wire::encode(&foreign, &wrong));
    // A genuine heartbeat captured earlier, replayed.
    send_from_client(&l, captured);

    assert!(
        l.wait_for(Duration::from_secs(2), |l| dropped(l, "bad_mac") == 1
            && dropped(l, "foreign_router") == 1
            && dropped(l, "replay") == 1),
        "each bad packet dropped and counted once"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(l.holds_vip(0), "proxy1 still master");
    assert_eq!(l.last_role(0).as_deref(), Some("master"));
    assert_eq!(l.last_role(1).as_deref(), Some("backup"));
    let changes = l
        .timeline()
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RoleChange { .. }))
        .count();
    assert_eq!(changes, 2, "no role change beyond the start-up ones");
}

#[test]
fn witness_decides_who_holds_the_vip_when_the_proxies_are_cut_apart() {
    if !require_root("witness") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let opts = LabOptions {
        witness: true,
        ..LabOptions::default()
    };
    let l = settled(opts);
    // proxy1 (the master) cannot reach the witness; proxy2 can.
    l.proxies[0]
        .blackhole(hapair::lab::pairlab::WITNESS)
        .unwrap();
    l.partition(true).unwrap();
    assert!(
        l.wait_for(Duration::from_secs(3), |l| l.holds_vip(1)
            && !l.holds_vip(0)),
        "only proxy2, which reaches the witness, holds the VIP"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(l.holds_vip(1) && !l.holds_vip(0), "and it stays that way");
    assert!(!l.log_lines(0, "no witness answers").is_empty());
    // The client reaches both proxies throughout; the VIP answers via proxy2.
    let run = l.start_client().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (attempts, _) = run.finish();
    let last = attempts.last().expect("attempts");
    assert_eq!(last.host(), Some("proxy2"));
}

#[test]
fn bad_reload_keeps_the_old_config_running() {
    if !require_root("reload") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = settled(LabOptions::default());
    let good = l.config_text(0);
    std::fs::write(
        l.config_path(0),
        good.replace("router_id = 51", "router_id = 51\nbogus = 1"),
    )
    .unwrap();
    l.reload(0).unwrap();
    assert!(l.wait_for(Duration::from_secs(2), |l| !l
        .log_lines(0, "reload rejected")
        .is_empty()));
    let msg = &l.log_lines(0, "reload rejected")[0].message;
    assert!(msg.contains("unknown field `bogus`"), "{msg}");
    assert!(
        msg.contains("proxy1.toml:"),
        "error names the file and line: {msg}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(l.holds_vip(0));
    assert_eq!(l.last_role(0).as_deref(), Some("master"));
    // A good reload that lowers the priority hands the VIP over without a gap.
    std::fs::write(
        l.config_path(0),
        good.replace("priority = 150", "priority = 60"),
    )
    .unwrap();
    let run = l.start_client().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    l.reload(0).unwrap();
    assert!(l.wait_for(Duration::from_secs(2), |l| l.holds_vip(1)
        && !l.holds_vip(0)));
    std::thread::sleep(Duration::from_millis(300));
    let (attempts, sightings) = run.finish();
    if failed_count(&attempts) > 0 {
        let mut t = l.timeline();
        t.add_attempts("client", &attempts);
        t.add_sightings("client", &sightings);
        println!("{}", t.render());
    }
    assert_eq!(
        failed_count(&attempts),
        0,
        "priority change by reload is a clean handover"
    );
}

#[test]
fn namespaces_are_gone_after_a_lab() {
    if !require_root("cleanup") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let prefix;
    {
        let l = lab(LabOptions::default());
        prefix = l.lab.prefix();
        assert!(!hapair::lab::netns::list(&prefix).is_empty());
    }
    assert!(
        hapair::lab::netns::list(&prefix).is_empty(),
        "lab deleted its namespaces"
    );
    let _ = VIP;
}

#[test]
fn a_flood_of_bad_heartbeats_causes_no_false_failover() {
    if !require_root("flood") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = settled(LabOptions::default());
    let (forged, wrong) = forged("flood");
    let pkt = wire::encode(&forged, &wrong);
    // Both proxies flooded from the client for 3 s (bounded count).
    let sent = l
        .client
        .in_ns(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let targets: Vec<SocketAddr> = PROXY
                .iter()
                .map(|p| format!("{p}:5405").parse().unwrap())
                .collect();
            let until = Instant::now() + Duration::from_secs(3);
            let mut n = 0u64;
            while Instant::now() < until && n < 300_000 {
                for t in &targets {
                    let _ = s.send_to(&pkt, t);
                    n += 1;
                }
            }
            n
        })
        .unwrap();
    println!("flooded {sent} forged heartbeats in 3 s");
    assert!(sent > 10_000, "a real flood");
    std::thread::sleep(Duration::from_millis(300));
    assert!(l.holds_vip(0) && !l.holds_vip(1), "no false failover");
    assert_eq!(l.last_role(0).as_deref(), Some("master"));
    assert_eq!(l.last_role(1).as_deref(), Some("backup"));
    assert!(dropped(&l, "bad_mac") >= 1, "the flood was counted");
}

//! Namespace tests of `hapair::net` and the lab toolkit: two or three hosts joined through a
//! switch namespace, all created (and deleted, even on panic) by each test.
//!
//! As root they run; otherwise they skip with a message, unless `CI=true`, where a skip is a
//! failure. Addresses: 192.0.2.0/24, 198.51.100.0/24 and 2001:db8::/32, inside the test's own
//! namespaces only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hapair::lab::netns::{self, require_root, Lab, Netns};
use hapair::net::announce::{format_mac, Announcer, ALL_NODES, ALL_NODES_MAC, BROADCAST};
use hapair::net::link::link_watch;
use hapair::net::udp::{bind_heartbeat, Family};
use hapair::net::vip::Vips;
use hapair::net::witness::ping;
use hapair::net::Error;
use ipnet::IpNet;
use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::Packet;

/// Every name a test created; asserts after the drop that none is left.
fn assert_gone(names: &[String]) {
    let ours = netns::list(&netns::prefix());
    for n in names {
        assert!(!netns::exists(n), "namespace {n} left behind: {ours:?}");
    }
}

fn names(lab: &Lab, hosts: &[&Netns]) -> Vec<String> {
    for h in hosts {
        assert!(h.name().starts_with(&lab.prefix()), "{}", h.name());
    }
    let mut v = vec![lab.switch().name().to_string()];
    v.extend(hosts.iter().map(|h| h.name().to_string()));
    v
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Ping `addr` from `ns` with the witness pinger.
fn ping_from(ns: &Netns, addr: &str, timeout: Duration) -> bool {
    let addr: IpAddr = addr.parse().unwrap();
    ns.block_on(move || ping(addr, timeout)).unwrap()
}

/// Capture on `ifname` in `ns` until `pred` accepts a frame or `timeout` passes. Returns once
/// the capture socket is open, so nothing sent afterwards is missed.
fn capture(
    ns: &Netns,
    ifname: &str,
    timeout: Duration,
    pred: impl Fn(&[u8]) -> bool + Send + 'static,
) -> JoinHandle<Option<Vec<u8>>> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let ifname = ifname.to_string();
    let h = ns
        .spawn_thread(move || {
            let iface = pnet_datalink::interfaces()
                .into_iter()
                .find(|i| i.name == ifname)
                .expect("capture interface");
            let cfg = pnet_datalink::Config {
                read_timeout: Some(Duration::from_millis(20)),
                ..Default::default()
            };
            let mut rx = match pnet_datalink::channel(&iface, cfg).expect("capture channel") {
                pnet_datalink::Channel::Ethernet(_tx, rx) => rx,
                _ => panic!("not an Ethernet channel"),
            };
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                match rx.next() {
                    Ok(frame) if pred(frame) => return Some(frame.to_vec()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => panic!("capture: {e}"),
                }
            }
            None
        })
        .unwrap();
    ready_rx.recv().unwrap();
    h
}

/// Poll `ns`'s neighbour entry for `addr` until it shows `mac`, up to `timeout`.
fn wait_neigh(ns: &Netns, addr: &str, mac: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = ns.neigh(addr).unwrap();
        if got.as_deref() == Some(mac) || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn vip_add_del_idempotent_and_reachable() {
    if !require_root("vip_add_del_idempotent_and_reachable") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        let b = lab.host("b").unwrap();
        created = names(&lab, &[&a, &b]);
        lab.attach(&a, "eth0", &["192.0.2.1/24", "2001:db8::1/64"])
            .unwrap();
        lab.attach(&b, "eth0", &["192.0.2.2/24", "2001:db8::2/64"])
            .unwrap();
        let vip4 = net("192.0.2.100/24");
        let vip6 = net("2001:db8::100/64");
        let short = Duration::from_millis(300);

        assert!(
            !ping_from(&b, "192.0.2.100", short),
            "VIP answers before add"
        );

        a.block_on(|| async {
            let v = Vips::new().unwrap();
            assert!(matches!(
                v.link_index("nope0").await,
                Err(Error::NoSuchLink(_))
            ));
            let idx = v.link_index("eth0").await.unwrap();
            assert!(v.mac(idx).await.unwrap().is_some());
            for _ in 0..2 {
                v.add(idx, vip4).await.unwrap();
                v.add(idx, vip6).await.unwrap();
            }
            let all = v.list(idx).await.unwrap();
            assert!(all.contains(&vip4) && all.contains(&vip6), "{all:?}");
            let own = v.addresses(idx, &[vip4, vip6]).await.unwrap();
            assert!(own.contains(&net("192.0.2.1/24")), "{own:?}");
            assert!(own.contains(&net("2001:db8::1/64")), "{own:?}");
            assert!(!own
                .iter()
                .any(|n| n.addr() == vip4.addr() || n.addr() == vip6.addr()));
        })
        .unwrap();

        // IPv6 VIP is usable at once: no DAD, so not tentative.
        let shown = a.ip(["-6", "addr", "show", "dev", "eth0"]).unwrap();
        let line = shown
            .lines()
            .find(|l| l.contains("2001:db8::100/64"))
            .expect("v6 VIP shown");
        assert!(!line.contains("tentative"), "{line}");

        // B's failed ping left an INCOMPLETE entry for the VIP, whose next ARP probe is up to
        // a second away; the announcement resolves it at once, as after a real takeover.
        a.in_ns(|| {
            let mut ann = Announcer::open("eth0").unwrap();
            ann.send(&[vip4.addr(), vip6.addr()]).unwrap();
        })
        .unwrap();
        let t = Instant::now();
        assert!(ping_from(&b, "192.0.2.100", Duration::from_secs(2)));
        eprintln!("VIP v4 answered B's ping in {:?}", t.elapsed());
        let t = Instant::now();
        assert!(ping_from(&b, "2001:db8::100", Duration::from_secs(2)));
        eprintln!("VIP v6 answered B's ping in {:?}", t.elapsed());

        a.block_on(|| async {
            let v = Vips::new().unwrap();
            let idx = v.link_index("eth0").await.unwrap();
            // A crashed earlier run left the VIP, here also with another prefix length.
            v.add(idx, net("192.0.2.100/32")).await.unwrap_or(());
            let configured = [vip4, vip6, net("192.0.2.101/24")];
            let removed = v.remove_stale(idx, &configured).await.unwrap();
            assert!(
                removed
                    .iter()
                    .all(|r| r.addr() == vip4.addr() || r.addr() == vip6.addr()),
                "{removed:?}"
            );
            assert!(
                removed.contains(&vip4) && removed.contains(&vip6),
                "{removed:?}"
            );
            let left = v.list(idx).await.unwrap();
            assert!(
                !left
                    .iter()
                    .any(|n| configured.iter().any(|c| c.addr() == n.addr())),
                "{left:?}"
            );
            // Idempotent delete, and nothing stale the second time.
            v.del(idx, vip4).await.unwrap();
            v.del(idx, vip6).await.unwrap();
            assert!(v.remove_stale(idx, &configured).await.unwrap().is_empty());
            // Releasing removes the VIP whatever prefix length it was added with.
            v.add(idx, net("192.0.2.100/32")).await.unwrap();
            v.del(idx, vip4).await.unwrap();
            let left = v.list(idx).await.unwrap();
            assert!(!left.iter().any(|n| n.addr() == vip4.addr()), "{left:?}");
        })
        .unwrap();

        assert!(
            !ping_from(&b, "192.0.2.100", short),
            "VIP answers after removal"
        );
    }
    assert_gone(&created);
}

/// Three hosts: the VIP moves from C to A; B, which talked to it at C, must learn A's MAC
/// from A's gratuitous ARP.
#[test]
fn garp_moves_the_neighbour_entry() {
    if !require_root("garp_moves_the_neighbour_entry") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        let b = lab.host("b").unwrap();
        let c = lab.host("c").unwrap();
        created = names(&lab, &[&a, &b, &c]);
        lab.attach(&a, "eth0", &["192.0.2.1/24"]).unwrap();
        lab.attach(&b, "eth0", &["192.0.2.2/24"]).unwrap();
        lab.attach(&c, "eth0", &["192.0.2.3/24"]).unwrap();
        let vip = net("192.0.2.100/24");
        let vip_ip = Ipv4Addr::new(192, 0, 2, 100);
        let a_mac = a.mac("eth0").unwrap();
        let c_mac = c.mac("eth0").unwrap();

        c.block_on(|| async {
            let v = Vips::new().unwrap();
            v.add(v.link_index("eth0").await.unwrap(), vip)
                .await
                .unwrap();
        })
        .unwrap();
        assert!(ping_from(&b, "192.0.2.100", Duration::from_secs(2)));
        assert_eq!(b.neigh("192.0.2.100").unwrap(), Some(c_mac.clone()));

        // Move the VIP: C releases, A claims.
        c.block_on(|| async {
            let v = Vips::new().unwrap();
            v.del(v.link_index("eth0").await.unwrap(), vip)
                .await
                .unwrap();
        })
        .unwrap();
        a.block_on(|| async {
            let v = Vips::new().unwrap();
            v.add(v.link_index("eth0").await.unwrap(), vip)
                .await
                .unwrap();
        })
        .unwrap();

        let cap = capture(&b, "eth0", Duration::from_secs(3), move |f| {
            let Some(eth) = EthernetPacket::new(f) else {
                return false;
            };
            eth.get_ethertype() == EtherTypes::Arp
                && ArpPacket::new(eth.payload())
                    .is_some_and(|arp| arp.get_sender_proto_addr() == vip_ip)
        });
        let t = Instant::now();
        let sent_mac = a
            .in_ns(|| {
                let mut ann = Announcer::open("eth0").unwrap();
                ann.send(&[IpAddr::V4(vip_ip)]).unwrap();
                format_mac(&ann.mac())
            })
            .unwrap();
        assert_eq!(sent_mac, a_mac);
        let frame = cap.join().unwrap().expect("B saw no gratuitous ARP");
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination().octets(), BROADCAST);
        assert_eq!(format_mac(&eth.get_source().octets()), a_mac);
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(format_mac(&arp.get_sender_hw_addr().octets()), a_mac);
        assert_eq!(arp.get_sender_proto_addr(), vip_ip);
        assert_eq!(arp.get_target_proto_addr(), vip_ip);

        let got = wait_neigh(&b, "192.0.2.100", &a_mac, Duration::from_millis(500));
        eprintln!("B's neighbour entry moved C->A in {:?}", t.elapsed());
        assert_eq!(got, Some(a_mac.clone()));
        assert!(ping_from(&b, "192.0.2.100", Duration::from_secs(1)));
    }
    assert_gone(&created);
}

/// The IPv6 counterpart: an unsolicited NA, checked field by field, that moves B's entry.
#[test]
fn unsolicited_na_moves_the_neighbour_entry() {
    if !require_root("unsolicited_na_moves_the_neighbour_entry") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        let b = lab.host("b").unwrap();
        let c = lab.host("c").unwrap();
        created = names(&lab, &[&a, &b, &c]);
        lab.attach(&a, "eth0", &["2001:db8::1/64"]).unwrap();
        lab.attach(&b, "eth0", &["2001:db8::2/64"]).unwrap();
        lab.attach(&c, "eth0", &["2001:db8::3/64"]).unwrap();
        let vip = net("2001:db8::100/64");
        let vip_ip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let a_mac = a.mac("eth0").unwrap();
        let c_mac = c.mac("eth0").unwrap();

        c.block_on(|| async {
            let v = Vips::new().unwrap();
            v.add(v.link_index("eth0").await.unwrap(), vip)
                .await
                .unwrap();
        })
        .unwrap();
        assert!(ping_from(&b, "2001:db8::100", Duration::from_secs(2)));
        assert_eq!(b.neigh("2001:db8::100").unwrap(), Some(c_mac.clone()));

        c.block_on(|| async {
            let v = Vips::new().unwrap();
            v.del(v.link_index("eth0").await.unwrap(), vip)
                .await
                .unwrap();
        })
        .unwrap();
        a.block_on(|| async {
            let v = Vips::new().unwrap();
            v.add(v.link_index("eth0").await.unwrap(), vip)
                .await
                .unwrap();
        })
        .unwrap();

        let a_mac_bytes = mac_bytes(&a_mac);
        let cap = capture(&b, "eth0", Duration::from_secs(3), move |f| {
            let Some(eth) = EthernetPacket::new(f) else {
                return false;
            };
            if eth.get_ethertype() != EtherTypes::Ipv6 || eth.get_source().octets() != a_mac_bytes {
                return false;
            }
            let Some(ip6) = Ipv6Packet::new(eth.payload()) else {
                return false;
            };
            let p = ip6.payload();
            // A neighbour advertisement (0x88) for the VIP.
            p.len() >= 24 && p[0] == 0x88 && p[8..24] == vip_ip.octets()
        });
        let t = Instant::now();
        a.in_ns(|| {
            Announcer::open("eth0")
                .unwrap()
                .send(&[IpAddr::V6(vip_ip)])
                .unwrap()
        })
        .unwrap();
        let frame = cap.join().unwrap().expect("B saw no unsolicited NA");
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination().octets(), ALL_NODES_MAC);
        let ip6 = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip6.get_hop_limit(), 255);
        assert_eq!(ip6.get_destination(), ALL_NODES);
        let icmp = Icmpv6Packet::new(ip6.payload()).unwrap();
        assert_eq!(icmp.get_icmpv6_type(), Icmpv6Types::NeighborAdvert);
        assert_eq!(
            icmp.get_checksum(),
            icmpv6::checksum(&icmp, &ip6.get_source(), &ip6.get_destination())
        );
        let p = ip6.payload();
        assert_eq!(p[4] & 0x20, 0x20, "Override set");
        assert_eq!(p[4] & 0x40, 0x00, "Solicited clear");
        assert_eq!(p[24..26], [0x02, 0x01], "target link-layer address option");
        assert_eq!(p[26..32], a_mac_bytes);

        // The kernel accepted it (checksum, hop limit, flags): B's entry now points at A.
        let got = wait_neigh(&b, "2001:db8::100", &a_mac, Duration::from_millis(500));
        eprintln!("B's IPv6 neighbour entry moved C->A in {:?}", t.elapsed());
        assert_eq!(got, Some(a_mac.clone()));
    }
    assert_gone(&created);
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Set `ifname` in the calling thread's namespace up or down over rtnetlink; returns the
/// instant just before the request was sent.
fn set_link_now(ifname: &str, up: bool) -> Instant {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        let idx = Vips::new().unwrap().link_index(ifname).await.unwrap();
        let req = handle.link().set(idx);
        let req = if up { req.up() } else { req.down() };
        let t0 = Instant::now();
        req.execute().await.unwrap();
        t0
    })
}

#[test]
fn link_watch_sees_the_cable_pulled() {
    if !require_root("link_watch_sees_the_cable_pulled") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        created = names(&lab, &[&a]);
        let port = lab.attach(&a, "eth0", &["192.0.2.1/24"]).unwrap();
        let switch = lab.switch().name().to_string();

        let (down, up) = a
            .block_on(|| async move {
                let mut rx = link_watch("eth0").await.unwrap();
                assert!(*rx.borrow_and_update(), "eth0 starts up");
                assert!(matches!(
                    link_watch("nope0").await,
                    Err(Error::NoSuchLink(_))
                ));

                let mut latencies = Vec::new();
                for want in [false, true] {
                    let (sw, p) = (switch.clone(), port.clone());
                    // Pull (or plug) the cable from the switch namespace over netlink, so the
                    // measured latency is the kernel's and the watch's, not a fork of `ip`.
                    let cmd = tokio::task::spawn_blocking(move || {
                        netns::in_netns(&sw, move || set_link_now(&p, want)).unwrap()
                    });
                    tokio::time::timeout(Duration::from_millis(100), async {
                        while *rx.borrow_and_update() != want {
                            rx.changed().await.unwrap();
                        }
                    })
                    .await
                    .unwrap_or_else(|_| panic!("link_watch missed {want} within 100 ms"));
                    let noticed = Instant::now();
                    let sent = cmd.await.unwrap();
                    let latency = noticed.saturating_duration_since(sent);
                    eprintln!(
                        "link {}: noticed {:?} after the netlink request was sent",
                        if want { "up" } else { "down" },
                        latency,
                    );
                    latencies.push(latency);
                }
                (latencies[0], latencies[1])
            })
            .unwrap();
        assert!(down < Duration::from_millis(100), "{down:?}");
        assert!(up < Duration::from_millis(100), "{up:?}");
    }
    assert_gone(&created);
}

#[test]
fn witness_ping_reachable_and_blackholed() {
    if !require_root("witness_ping_reachable_and_blackholed") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        let b = lab.host("b").unwrap();
        created = names(&lab, &[&a, &b]);
        lab.attach(&a, "eth0", &["192.0.2.1/24", "2001:db8::1/64"])
            .unwrap();
        lab.attach(&b, "eth0", &["192.0.2.2/24", "2001:db8::2/64"])
            .unwrap();
        let timeout = Duration::from_millis(500);

        let t = Instant::now();
        assert!(ping_from(&b, "192.0.2.1", timeout));
        eprintln!("witness ping v4 (first, with ARP) {:?}", t.elapsed());
        assert!(ping_from(&b, "2001:db8::1", timeout));
        assert!(ping_from(&b, "127.0.0.1", timeout), "loopback answers");

        // Nobody has this on-link address: no answer within the timeout.
        let t = Instant::now();
        assert!(!ping_from(&b, "192.0.2.99", timeout));
        let waited = t.elapsed();
        assert!(waited < timeout + Duration::from_millis(300), "{waited:?}");

        // A blackholed witness fails at once, well within the timeout.
        b.blackhole("192.0.2.1/32").unwrap();
        b.blackhole("198.51.100.7/32").unwrap();
        let t = Instant::now();
        assert!(!ping_from(&b, "192.0.2.1", timeout));
        assert!(!ping_from(&b, "198.51.100.7", timeout));
        let waited = t.elapsed();
        eprintln!("two blackholed witness pings {waited:?}");
        assert!(waited < 2 * timeout, "{waited:?}");
    }
    assert_gone(&created);
}

/// Port isolation cuts A from B while both still reach C; the cable stays plugged.
#[test]
fn bridge_isolation_cuts_only_the_pair() {
    if !require_root("bridge_isolation_cuts_only_the_pair") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        let b = lab.host("b").unwrap();
        let c = lab.host("c").unwrap();
        created = names(&lab, &[&a, &b, &c]);
        let pa = lab.attach(&a, "eth0", &["198.51.100.1/24"]).unwrap();
        let pb = lab.attach(&b, "eth0", &["198.51.100.2/24"]).unwrap();
        lab.attach(&c, "eth0", &["198.51.100.3/24"]).unwrap();
        let t = Duration::from_millis(500);
        assert!(ping_from(&a, "198.51.100.2", t));

        lab.isolate(&pa, true).unwrap();
        lab.isolate(&pb, true).unwrap();
        // Forget B's MAC so A's next ping has to ARP through the bridge.
        a.ip(["neigh", "flush", "dev", "eth0"]).unwrap();
        assert!(!ping_from(&a, "198.51.100.2", Duration::from_millis(300)));
        assert!(ping_from(&a, "198.51.100.3", t));
        assert!(ping_from(&b, "198.51.100.3", t));

        lab.isolate(&pa, false).unwrap();
        assert!(ping_from(&a, "198.51.100.2", Duration::from_secs(2)));

        // Pulling B's cable cuts B from everyone.
        lab.set_port(&pb, false).unwrap();
        assert!(!ping_from(&c, "198.51.100.2", Duration::from_millis(300)));
        lab.set_port(&pb, true).unwrap();
        assert!(ping_from(&c, "198.51.100.2", Duration::from_secs(2)));
    }
    assert_gone(&created);
}

/// The heartbeat socket carries datagrams between two namespaces with CS6 and TTL 255.
#[test]
fn heartbeat_socket_options_and_delivery() {
    if !require_root("heartbeat_socket_options_and_delivery") {
        return;
    }
    let created;
    {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        let b = lab.host("b").unwrap();
        created = names(&lab, &[&a, &b]);
        lab.attach(&a, "eth0", &["192.0.2.1/24", "2001:db8::1/64"])
            .unwrap();
        lab.attach(&b, "eth0", &["192.0.2.2/24", "2001:db8::2/64"])
            .unwrap();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let receiver = b
            .spawn_thread(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let s4 = bind_heartbeat("eth0", 5405, Family::V4).unwrap();
                    let s6 = bind_heartbeat("eth0", 5405, Family::V6).unwrap();
                    ready_tx.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    let (n, from) =
                        tokio::time::timeout(Duration::from_secs(2), s4.recv_from(&mut buf))
                            .await
                            .unwrap()
                            .unwrap();
                    assert_eq!(&buf[..n], b"hb4");
                    assert_eq!(from.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
                    let (n, _) =
                        tokio::time::timeout(Duration::from_secs(2), s6.recv_from(&mut buf))
                            .await
                            .unwrap()
                            .unwrap();
                    assert_eq!(&buf[..n], b"hb6");
                })
            })
            .unwrap();
        ready_rx.recv().unwrap();
        a.block_on(|| async {
            let s4 = bind_heartbeat("eth0", 5405, Family::V4).unwrap();
            let r = socket2::SockRef::from(&s4);
            assert_eq!(r.tos().unwrap(), 0xc0);
            assert_eq!(r.ttl().unwrap(), 255);
            assert_eq!(r.device().unwrap().as_deref(), Some(&b"eth0"[..]));
            // Rebinding at once works (SO_REUSEADDR), as after a restart.
            s4.send_to(b"hb4", "192.0.2.2:5405").await.unwrap();
            let s6 = bind_heartbeat("eth0", 5405, Family::V6).unwrap();
            let r6 = socket2::SockRef::from(&s6);
            assert_eq!(r6.unicast_hops_v6().unwrap(), 255);
            s6.send_to(b"hb6", "[2001:db8::2]:5405").await.unwrap();
        })
        .unwrap();
        receiver.join().unwrap();
    }
    assert_gone(&created);
}

/// Processes spawned into a namespace run there and die with it.
#[test]
fn spawned_processes_live_in_the_namespace_and_die_with_it() {
    if !require_root("spawned_processes_live_in_the_namespace_and_die_with_it") {
        return;
    }
    let name;
    let pid;
    {
        let a = Netns::new(&format!("{}px", std::process::id() % 1000)).unwrap();
        name = a.name().to_string();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        let p = a.spawn(cmd).unwrap();
        pid = p.pid();
        let ident = netns::cmd("ip", ["netns", "identify", &pid.to_string()]).unwrap();
        assert_eq!(ident.trim(), name);
        // Hand the process to the namespace: dropping the namespace must still end it.
        std::mem::forget(p);
    }
    assert!(!netns::exists(&name));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "spawned process outlived its namespace"
    );
}

#[test]
fn cleanup_stale_leaves_live_namespaces() {
    if !require_root("cleanup_stale_leaves_live_namespaces") {
        return;
    }
    let a = Netns::new("stale-check").unwrap();
    let removed = netns::cleanup_stale();
    assert!(!removed.contains(&a.name().to_string()));
    assert!(netns::exists(a.name()));
    let name = a.name().to_string();
    drop(a);
    assert!(!netns::exists(&name));
}

/// A panic in the middle of a lab still deletes every namespace of it.
#[test]
fn panic_deletes_the_lab() {
    if !require_root("panic_deletes_the_lab") {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let lab = Lab::new().unwrap();
        let a = lab.host("a").unwrap();
        lab.attach(&a, "eth0", &["192.0.2.1/24"]).unwrap();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        let p = a.spawn(cmd).unwrap();
        tx.send((names(&lab, &[&a]), p.pid())).unwrap();
        a.in_ns(|| panic!("boom inside the namespace")).unwrap();
    });
    assert!(result.is_err());
    let (created, pid) = rx.recv().unwrap();
    assert_gone(&created);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// The processes whose parent is `pid`, read from /proc (nothing is signalled here).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            ppid == Some(pid)
        })
        .collect()
}

/// Whether `pid` still runs (a zombie has ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Ctrl-C on `hapair lab demo` in the middle of its run (SIGINT to its process group, as a
/// terminal sends it): it exits with 130, and its namespaces, the daemons it started and
/// their services are gone.
#[test]
fn interrupted_lab_demo_leaves_no_namespace_or_process() {
    if !require_root("interrupted_lab_demo_leaves_no_namespace_or_process") {
        return;
    }
    // stderr to a file: a pipe nobody reads while waiting could fill and stall the demo.
    let log = std::env::temp_dir().join(format!("hapair-demo-sigint-{}.log", std::process::id()));
    // Its own process group, as a shell gives it: Ctrl-C goes to the whole group.
    use std::os::unix::process::CommandExt;
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_hapair"))
        .args(["lab", "demo"])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = demo.id();
    let ours = format!("hp{pid}-");
    // Wait until the pair runs: namespaces made and both `hapair run` children started.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (names, kids, blocked) = loop {
        let names = netns::list(&ours);
        let daemons = children_of(pid)
            .into_iter()
            .filter(|k| {
                let cmd = std::fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
                cmd.split(|b| *b == 0).any(|a| a == b"run")
            })
            .count();
        // The daemons and what they supervise, once some service runs.
        let mut kids = children_of(pid);
        let mut i = 0;
        while i < kids.len() {
            kids.extend(children_of(kids[i]));
            i += 1;
        }
        let services = kids.len().saturating_sub(children_of(pid).len());
        if names.len() >= 3 && daemons >= 2 && services >= 1 {
            // The daemons must get SIGTERM like any process: the lab's own signal handling
            // must not leave them a blocked mask (that made the graceful drill hang).
            // Checked after the interrupt, so that a failure still ends the demo.
            let blocked: Vec<String> = children_of(pid)
                .into_iter()
                .filter_map(|k| {
                    let st = std::fs::read_to_string(format!("/proc/{k}/status")).ok()?;
                    let blk = st.lines().find(|l| l.starts_with("SigBlk:"))?.to_string();
                    (!blk.ends_with("0000000000000000")).then(|| format!("child {k}: {blk}"))
                })
                .collect();
            break (names, kids, blocked);
        }
        assert!(
            Instant::now() < deadline,
            "demo never started: {names:?}, {daemons} daemons, {services} services"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: kill(2) on the process group our own child leads; it has not been reaped.
    assert_eq!(unsafe { libc::kill(-(pid as i32), libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = demo.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = demo.kill();
            panic!("demo still running 10 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let left = netns::list(&ours);
    // Should this fail, delete what the dead demo left before saying so.
    netns::cleanup_stale();
    assert_eq!(status.code(), Some(130), "{status}; stderr: {err}");
    assert!(err.contains("SIGINT: deleting"), "stderr: {err}");
    assert_eq!(left, Vec::<String>::new(), "was {names:?}");
    // The children died with it (PR_SET_PDEATHSIG); init reaps them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while kids.iter().any(|k| running(*k)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = kids.into_iter().filter(|k| running(*k)).collect();
    assert!(left.is_empty(), "children still running: {left:?}");
    assert!(
        blocked.is_empty(),
        "signals blocked in the daemons: {blocked:?}"
    );
}

/// README's first command, `hapair lab demo`, runs to the end: exit 0, the graceful
/// step-down loses no connect, the timeline has every drill, and no namespace is left.
#[test]
fn the_lab_demo_runs_to_the_end() {
    if !require_root("the_lab_demo_runs_to_the_end") {
        return;
    }
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_hapair"))
        .args(["lab", "demo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = demo.id();
    let out = demo.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {err}", out.status);
    for drill in [
        "drill link pulled on proxy1",
        "drill link restored on proxy1",
        "drill restart proxy1",
        "drill kill -9 proxy1",
    ] {
        assert!(text.contains(drill), "no {drill:?} in:\n{text}");
    }
    let step_down = text
        .lines()
        .find(|l| l.starts_with("drill step-down (SIGTERM) proxy1"))
        .unwrap_or_else(|| panic!("no step-down drill in:\n{text}"));
    assert!(step_down.contains(": 0 failed connects"), "{step_down}");
    assert_eq!(netns::list(&format!("hp{pid}-")), Vec::<String>::new());
}

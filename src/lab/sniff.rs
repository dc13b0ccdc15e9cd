//! Watch the client's link for gratuitous ARPs and unsolicited neighbour advertisements, and
//! read the kernel's neighbour table.
//!
//! [`parse_frame`] is pure and parses a raw Ethernet frame; [`Sniffer`] feeds it from a
//! pnet datalink channel. Open the sniffer *inside* the namespace whose interface it watches
//! (the interface is looked up, and the packet socket bound, in the calling thread's network
//! namespace); after that it can be read from any thread.
//!
//! The neighbour-table helpers also act in the calling thread's namespace: IPv4 reads
//! `/proc/thread-self/net/arp` (not `/proc/net/arp`, which follows the process's main thread),
//! IPv6 runs `ip -6 neigh show IP`, which inherits the thread's namespace.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

use super::client::ms_between;

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_HTYPE_ETHERNET: u16 = 0x0001;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_OP_REQUEST: u16 = 0x0001;
const ARP_OP_REPLY: u16 = 0x0002;
const IPPROTO_ICMPV6: u8 = 0x3a;
const ICMPV6_NEIGHBOR_ADVERT: u8 = 0x88;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const NDP_OPT_TARGET_LLADDR: u8 = 0x02;
const NDP_HOP_LIMIT: u8 = 0xff;

/// An Ethernet MAC address; prints and serialises as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(|| format!("bad MAC {s:?}"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("bad MAC {s:?}"));
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Mac {
    fn from_slice(b: &[u8]) -> Option<Mac> {
        Some(Mac(b.get(..6)?.try_into().ok()?))
    }
}

/// What kind of announcement a frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnounceKind {
    /// ARP request with sender IP == target IP.
    GarpRequest,
    /// ARP reply with sender IP == target IP.
    GarpReply,
    /// ICMPv6 neighbour advertisement with the solicited flag clear.
    UnsolicitedNa { override_flag: bool },
}

/// An announcement that `ip` is at `mac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub kind: AnnounceKind,
    /// The announced link-layer address: the ARP sender hardware address, or the NA's
    /// target link-layer option (the Ethernet source if the option is absent).
    pub mac: Mac,
    pub ip: IpAddr,
    /// The Ethernet source of the frame.
    pub eth_src: Mac,
}

/// An announcement and when it was seen, in ms since the shared origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub at_ms: f64,
    #[serde(flatten)]
    pub announcement: Announcement,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Parse one Ethernet frame. Returns the announcement if the frame is a gratuitous ARP
/// (request or reply, sender IP == target IP) or an unsolicited NA, and its IP is in `vips`
/// (an empty `vips` watches every address). Never panics on short or malformed frames.
pub fn parse_frame(frame: &[u8], vips: &[IpAddr]) -> Option<Announcement> {
    let eth_src = Mac::from_slice(frame.get(6..12)?)?;
    let mut ethertype = be16(frame, 12)?;
    let mut payload = frame.get(14..)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(frame, 16)?;
        payload = frame.get(18..)?;
    }
    let ann = match ethertype {
        ETHERTYPE_ARP => parse_arp(payload, eth_src)?,
        ETHERTYPE_IPV6 => parse_na(payload, eth_src)?,
        _ => return None,
    };
    if !vips.is_empty() && !vips.contains(&ann.ip) {
        return None;
    }
    Some(ann)
}

fn parse_arp(p: &[u8], eth_src: Mac) -> Option<Announcement> {
    if p.len() < 28
        || be16(p, 0)? != ARP_HTYPE_ETHERNET
        || be16(p, 2)? != ARP_PTYPE_IPV4
        || p[4] != 6
        || p[5] != 4
    {
        return None;
    }
    let kind = match be16(p, 6)? {
        ARP_OP_REQUEST => AnnounceKind::GarpRequest,
        ARP_OP_REPLY => AnnounceKind::GarpReply,
        _ => return None,
    };
    let sha = Mac::from_slice(&p[8..14])?;
    let spa = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    let tpa = Ipv4Addr::new(p[24], p[25], p[26], p[27]);
    if spa != tpa || spa.is_unspecified() {
        // spa == 0.0.0.0 is an ARP probe (RFC 5227), not an announcement.
        return None;
    }
    Some(Announcement {
        kind,
        mac: sha,
        ip: IpAddr::V4(spa),
        eth_src,
    })
}

fn parse_na(p: &[u8], eth_src: Mac) -> Option<Announcement> {
    // IPv6 header: no extension headers are allowed before an NDP message.
    if p.len() < 40 || p[0] >> 4 != 6 || p[6] != IPPROTO_ICMPV6 || p[7] != NDP_HOP_LIMIT {
        return None;
    }
    let plen = usize::from(be16(p, 4)?);
    let icmp = p.get(40..40 + plen)?;
    // type, code, checksum, flags(4), target(16)
    if icmp.len() < 24 || icmp[0] != ICMPV6_NEIGHBOR_ADVERT || icmp[1] != 0 {
        return None;
    }
    let flags = icmp[4];
    if flags & NA_FLAG_SOLICITED != 0 {
        return None;
    }
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let mut mac = eth_src;
    let mut opts = &icmp[24..];
    while opts.len() >= 2 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == NDP_OPT_TARGET_LLADDR && len >= 8 {
            mac = Mac::from_slice(&opts[2..8])?;
        }
        opts = &opts[len..];
    }
    Some(Announcement {
        kind: AnnounceKind::UnsolicitedNa {
            override_flag: flags & NA_FLAG_OVERRIDE != 0,
        },
        mac,
        ip: IpAddr::V6(Ipv6Addr::from(target)),
        eth_src,
    })
}

/// Records announcements seen on one interface.
pub struct Sniffer {
    iface: String,
    /// Only these IPs are recorded; empty means all.
    vips: Vec<IpAddr>,
    /// The receive half of the packet socket; it times out every `POLL` so `run` can stop.
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
}

impl fmt::Debug for Sniffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sniffer")
            .field("iface", &self.iface)
            .field("vips", &self.vips)
            .finish_non_exhaustive()
    }
}

impl Sniffer {
    /// How often a blocked read wakes up to check the stop flag.
    pub const POLL: Duration = Duration::from_millis(50);

    /// Open a packet socket on `iface` (in the calling thread's network namespace).
    pub fn open(iface: &str, vips: Vec<IpAddr>) -> anyhow::Result<Sniffer> {
        let ni = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == iface)
            .ok_or_else(|| anyhow!("no interface {iface:?} in this namespace"))?;
        let cfg = pnet_datalink::Config {
            read_timeout: Some(Self::POLL),
            ..Default::default()
        };
        let rx = match pnet_datalink::channel(&ni, cfg)
            .with_context(|| format!("packet socket on {iface}"))?
        {
            pnet_datalink::Channel::Ethernet(_tx, rx) => rx,
            _ => return Err(anyhow!("{iface}: not an Ethernet channel")),
        };
        Ok(Sniffer {
            iface: iface.to_string(),
            vips,
            rx,
        })
    }

    /// Record announcements until `stop` is set or `deadline` passes. Bounded to 100 000
    /// sightings.
    pub fn run(
        &mut self,
        origin: Instant,
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Vec<Sighting> {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) && out.len() < 100_000 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            match self.rx.next() {
                Ok(frame) => {
                    if let Some(announcement) = parse_frame(frame, &self.vips) {
                        out.push(Sighting {
                            at_ms: ms_between(origin, Instant::now()),
                            announcement,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(iface = %self.iface, error = %e, "sniffer read failed; stopping");
                    break;
                }
            }
        }
        out
    }

    /// Run on a new thread.
    pub fn spawn(
        mut self,
        origin: Instant,
        stop: Arc<AtomicBool>,
        deadline: Option<Instant>,
    ) -> thread::JoinHandle<Vec<Sighting>> {
        thread::Builder::new()
            .name("lab-sniff".into())
            .spawn(move || self.run(origin, &stop, deadline))
            .expect("spawn lab-sniff thread")
    }
}

/// The MAC the kernel's neighbour table holds for `ip` in the calling thread's namespace, or
/// `None` if there is no complete entry.
pub fn neigh_mac(ip: IpAddr) -> io::Result<Option<Mac>> {
    match ip {
        IpAddr::V4(v4) => {
            let text = std::fs::read_to_string("/proc/thread-self/net/arp")
                .or_else(|_| std::fs::read_to_string("/proc/net/arp"))?;
            Ok(parse_proc_arp(&text, v4))
        }
        IpAddr::V6(_) => {
            let out = std::process::Command::new("ip")
                .args(["-6", "neigh", "show", &ip.to_string()])
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "ip neigh show {ip}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(parse_ip_neigh(&String::from_utf8_lossy(&out.stdout), ip))
        }
    }
}

/// Parse `/proc/net/arp`. Incomplete entries (flags 0x0 or an all-zero MAC) give `None`.
pub fn parse_proc_arp(text: &str, ip: Ipv4Addr) -> Option<Mac> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        let mac: Mac = f[3].parse().ok()?;
        (flags & 0x2 != 0 && mac != Mac::default()).then_some(mac)
    })
}

/// Parse `ip neigh show` output, e.g. `192.0.2.100 dev veth0 lladdr 02:00:00:00:00:01 REACHABLE`.
/// Entries without `lladdr` (INCOMPLETE, FAILED) give `None`.
pub fn parse_ip_neigh(text: &str, ip: IpAddr) -> Option<Mac> {
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        if f.next()?.parse::<IpAddr>().ok()? != ip {
            return None;
        }
        let mut f = f.skip_while(|w| *w != "lladdr");
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// Poll the neighbour entry for `ip` every `every` and record each change, as
/// `(ms since origin, mac)`. The first poll is always recorded.
pub fn watch_neigh(
    ip: IpAddr,
    every: Duration,
    origin: Instant,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Vec<(f64, Option<Mac>)> {
    let mut out: Vec<(f64, Option<Mac>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) && out.len() < 100_000 {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mac = neigh_mac(ip).ok().flatten();
        if out.last().map(|(_, m)| *m) != Some(mac) {
            out.push((ms_between(origin, Instant::now()), mac));
        }
        thread::sleep(every);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
    const VIP4: [u8; 4] = [192, 0, 2, 100];

    fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x00, 0x01, 0x08, 0x00, 0x06, 0x04];
        p.extend_from_slice(&op.to_be_bytes());
        p.extend_from_slice(&sha);
        p.extend_from_slice(&spa);
        p.extend_from_slice(&tha);
        p.extend_from_slice(&tpa);
        eth([0xff; 6], 0x0806, &p)
    }

    fn na(flags: u8, target: Ipv6Addr, lladdr: Option<[u8; 6]>) -> Vec<u8> {
        let mut icmp = vec![0x88, 0x00, 0x00, 0x00, flags, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if let Some(m) = lladdr {
            icmp.extend_from_slice(&[0x02, 0x01]);
            icmp.extend_from_slice(&m);
        }
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[0x3a, 0xff]);
        ip.extend_from_slice(&target.octets()); // src
        ip.extend_from_slice(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
        ip.extend_from_slice(&icmp);
        eth([0x33, 0x33, 0, 0, 0, 1], 0x86dd, &ip)
    }

    #[test]
    fn garp_request() {
        let f = arp(1, SRC, VIP4, [0; 6], VIP4);
        let a = parse_frame(&f, &[]).unwrap();
        assert_eq!(a.kind, AnnounceKind::GarpRequest);
        assert_eq!(a.mac, Mac(SRC));
        assert_eq!(a.ip, IpAddr::from(VIP4));
        // Filtered by the watched VIPs.
        assert!(parse_frame(&f, &["192.0.2.101".parse().unwrap()]).is_none());
        assert!(parse_frame(&f, &["192.0.2.100".parse().unwrap()]).is_some());
    }

    #[test]
    fn arp_replies() {
        // An ordinary reply (spa != tpa) is not an announcement.
        let f = arp(2, SRC, VIP4, [0x02, 0, 0, 0, 0, 9], [192, 0, 2, 50]);
        assert!(parse_frame(&f, &[]).is_none());
        // A gratuitous reply is.
        let f = arp(2, SRC, VIP4, [0xff; 6], VIP4);
        let a = parse_frame(&f, &[]).unwrap();
        assert_eq!(a.kind, AnnounceKind::GarpReply);
        assert_eq!(a.mac, Mac(SRC));
        // An ordinary request and an RFC 5227 probe are not.
        assert!(parse_frame(&arp(1, SRC, [192, 0, 2, 1], [0; 6], VIP4), &[]).is_none());
        assert!(parse_frame(&arp(1, SRC, [0; 4], [0; 6], [0; 4]), &[]).is_none());
    }

    #[test]
    fn unsolicited_na_with_override_and_lladdr() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let ll = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let f = na(0x20, vip, Some(ll));
        let a = parse_frame(&f, &[IpAddr::V6(vip)]).unwrap();
        assert_eq!(
            a.kind,
            AnnounceKind::UnsolicitedNa {
                override_flag: true
            }
        );
        assert_eq!(a.mac, Mac(ll));
        assert_eq!(a.eth_src, Mac(SRC));
        assert_eq!(a.ip, IpAddr::V6(vip));
        // Without the option the Ethernet source is the MAC.
        assert_eq!(
            parse_frame(&na(0x00, vip, None), &[]).unwrap().mac,
            Mac(SRC)
        );
        // A solicited NA is not an announcement.
        assert!(parse_frame(&na(0x60, vip, Some(ll)), &[]).is_none());
    }

    #[test]
    fn malformed_frames_do_not_panic() {
        let good = na(0x20, "2001:db8::1".parse().unwrap(), Some([1; 6]));
        for n in 0..good.len() {
            let _ = parse_frame(&good[..n], &[]);
        }
        let garp = arp(1, SRC, VIP4, [0; 6], VIP4);
        for n in 0..garp.len() {
            assert!(parse_frame(&garp[..n], &[]).is_none());
        }
        // An NDP option with length 0 must not loop.
        let mut bad = good.clone();
        let len = bad.len();
        bad[len - 7] = 0;
        assert!(parse_frame(&bad, &[]).is_none());
        // A VLAN-tagged GARP parses.
        let mut tagged = garp[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&garp[12..]);
        assert!(parse_frame(&tagged, &[]).is_some());
    }

    #[test]
    fn neighbour_tables() {
        let proc_arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
            192.0.2.100      0x1         0x2         02:00:00:00:00:01     *        veth0\n\
            192.0.2.101      0x1         0x0         00:00:00:00:00:00     *        veth0\n";
        assert_eq!(
            parse_proc_arp(proc_arp, Ipv4Addr::new(192, 0, 2, 100)),
            Some(Mac(SRC))
        );
        assert_eq!(
            parse_proc_arp(proc_arp, Ipv4Addr::new(192, 0, 2, 101)),
            None
        );
        assert_eq!(
            parse_proc_arp(proc_arp, Ipv4Addr::new(192, 0, 2, 102)),
            None
        );
        let ipn = "192.0.2.100 dev veth0 lladdr 02:00:00:00:00:01 STALE\n\
                   2001:db8::1 dev veth0 FAILED\n";
        assert_eq!(
            parse_ip_neigh(ipn, "192.0.2.100".parse().unwrap()),
            Some(Mac(SRC))
        );
        assert_eq!(parse_ip_neigh(ipn, "2001:db8::1".parse().unwrap()), None);
        assert_eq!("02:00:00:00:00:01".parse::<Mac>(), Ok(Mac(SRC)));
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert_eq!(
            serde_json::to_string(&Mac(SRC)).unwrap(),
            "\"02:00:00:00:00:01\""
        );
    }

    /// A GARP for a documentation address sent on `lo` is seen by a sniffer on `lo`. Needs
    /// CAP_NET_RAW: skipped as non-root, except under CI where that is a failure.
    #[test]
    fn sniffer_sees_a_garp_on_loopback() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            eprintln!("skipped: needs root");
            return;
        }
        let vip: IpAddr = "198.51.100.7".parse().unwrap();
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let sniffer = Sniffer::open("lo", vec![vip]).unwrap();
        let h = sniffer.spawn(
            origin,
            stop.clone(),
            Some(Instant::now() + Duration::from_secs(5)),
        );
        let lo = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == "lo")
            .unwrap();
        let Ok(pnet_datalink::Channel::Ethernet(mut tx, _rx)) =
            pnet_datalink::channel(&lo, Default::default())
        else {
            panic!("no channel on lo");
        };
        // One frame for another address first: it must be filtered out.
        let other = arp(1, SRC, [198, 51, 100, 8], [0; 6], [198, 51, 100, 8]);
        let garp = arp(1, SRC, [198, 51, 100, 7], [0; 6], [198, 51, 100, 7]);
        for f in [&other, &garp] {
            tx.send_to(f, None).unwrap().unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let seen = h.join().unwrap();
        assert!(!seen.is_empty(), "no sighting");
        assert!(seen.iter().all(|s| s.announcement.ip == vip), "{seen:?}");
        assert_eq!(seen[0].announcement.mac, Mac(SRC));
        assert!(seen[0].at_ms >= 0.0 && seen[0].at_ms < 1000.0);
    }
}

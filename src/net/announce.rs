//! Gratuitous ARP and unsolicited neighbour advertisements.
//!
//! [`garp_frame`] and [`una_frame`] build whole Ethernet frames (pure, unit-tested byte by
//! byte); [`Announcer`] writes them to a packet socket bound to nothing but the interface
//! index. The socket is opened with protocol 0, so the kernel never queues received frames on
//! it: a send-only packet socket costs nothing while the node is idle. The interface's index
//! and MAC come from `pnet_datalink`. Burst timing (how many, how often) is the driver's job.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Ethernet broadcast, the destination of a gratuitous ARP.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// 33:33:00:00:00:01, the Ethernet address of ff02::1 (all nodes).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
/// ff02::1, the all-nodes link-local multicast group.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 0x3a;
const ICMPV6_NEIGHBOR_ADVERT: u8 = 0x88;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const NDP_OPT_TARGET_LLADDR: u8 = 0x02;

/// Length of a gratuitous ARP frame: 14 Ethernet + 28 ARP.
pub const GARP_LEN: usize = 42;
/// Length of an unsolicited NA frame: 14 Ethernet + 40 IPv6 + 24 NA + 8 option.
pub const UNA_LEN: usize = 86;

/// A broadcast ARP request announcing `ip` at `mac` (sender IP = target IP = `ip`).
///
/// A request, not a reply, because every host processes broadcast requests and updates an
/// existing neighbour entry from them, and RFC 5227 recommends it for announcements.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(GARP_LEN);
    // Ethernet
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // ARP: Ethernet/IPv4, request
    f.extend_from_slice(&0x0001u16.to_be_bytes()); // htype Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // ptype IPv4
    f.push(0x06); // hlen
    f.push(0x04); // plen
    f.extend_from_slice(&0x0001u16.to_be_bytes()); // oper request
    f.extend_from_slice(&mac); // sender hardware address
    f.extend_from_slice(&ip.octets()); // sender protocol address
    f.extend_from_slice(&[0x00; 6]); // target hardware address: unknown
    f.extend_from_slice(&ip.octets()); // target protocol address
    debug_assert_eq!(f.len(), GARP_LEN);
    f
}

/// An unsolicited neighbour advertisement for `ip` at `mac`, to ff02::1 (RFC 4861 7.2.6):
/// hop limit 255, Override set, Solicited clear, with a target link-layer address option.
/// The source address is `ip` itself, which is on the interface when the VIP is claimed.
pub fn una_frame(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.push(ICMPV6_NEIGHBOR_ADVERT);
    icmp.push(0x00); // code
    icmp.extend_from_slice(&[0x00, 0x00]); // checksum, filled below
    icmp.extend_from_slice(&[NA_FLAG_OVERRIDE, 0x00, 0x00, 0x00]);
    icmp.extend_from_slice(&ip.octets()); // target address
    icmp.push(NDP_OPT_TARGET_LLADDR);
    icmp.push(0x01); // option length in units of 8 octets
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&ip, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(UNA_LEN);
    // Ethernet
    f.extend_from_slice(&ALL_NODES_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    // IPv6
    f.extend_from_slice(&[0x60, 0x00, 0x00, 0x00]); // version 6, traffic class 0, flow 0
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(IPPROTO_ICMPV6);
    f.push(0xff); // hop limit 255: receivers drop ND with any other value
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    debug_assert_eq!(f.len(), UNA_LEN);
    f
}

/// The ICMPv6 checksum (RFC 4443 2.3) of `msg` with the IPv6 pseudo-header.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = match pair {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                [hi] => u16::from_be_bytes([*hi, 0]),
                _ => 0,
            };
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0x00, 0x00, 0x00, IPPROTO_ICMPV6]);
    add(msg);
    fold(sum)
}

/// Fold a 32-bit one's complement sum into the final 16-bit checksum.
pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A send-only packet socket on one interface, for VIP announcements.
pub struct Announcer {
    /// AF_PACKET/SOCK_RAW with protocol 0: sends whole frames, receives nothing.
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
    ifname: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("mac", &format_mac(&self.mac))
            .finish()
    }
}

impl Announcer {
    /// Open an announcer on `ifname` in the calling thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<Announcer> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == ifname)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}"))
            })?;
        let mac = iface.mac.map(|m| m.octets()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ifname} has no hardware address"),
            )
        })?;
        // SAFETY: plain socket(2); the result is checked before it is wrapped.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                0, // protocol 0: the kernel delivers no received frames to this socket
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A full transmit queue must not stall the driver: give up on a frame after 20 ms.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // SAFETY: setsockopt with a correctly sized timeval.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Announcer {
            fd,
            ifindex: iface.index,
            mac,
            ifname: ifname.to_string(),
        })
    }

    /// The interface's MAC, which every announcement carries.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface index the socket sends on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Send one announcement per VIP: a gratuitous ARP for IPv4, an unsolicited NA for IPv6.
    ///
    /// Every VIP is tried; the last error, if any, is returned.
    pub fn send(&mut self, vips: &[IpAddr]) -> io::Result<()> {
        let mut result = Ok(());
        for vip in vips {
            let (frame, dst, proto) = match vip {
                IpAddr::V4(ip) => (garp_frame(self.mac, *ip), BROADCAST, ETHERTYPE_ARP),
                IpAddr::V6(ip) => (una_frame(self.mac, *ip), ALL_NODES_MAC, ETHERTYPE_IPV6),
            };
            if let Err(e) = self.send_frame(&frame, dst, proto) {
                tracing::warn!(ifname = %self.ifname, %vip, error = %e, "announcement failed");
                result = Err(e);
            }
        }
        result
    }

    /// Write one whole Ethernet frame.
    pub fn send_frame(&self, frame: &[u8], dst: [u8; 6], ethertype: u16) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst);
        // SAFETY: the buffer and address pointers and lengths are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short frame write",
            ));
        }
        Ok(())
    }
}

/// `aa:bb:cc:dd:ee:ff`, as `ip` prints it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::arp::{ArpOperations, ArpPacket};
    use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
    use pnet_packet::icmpv6::{self, Icmpv6Packet};
    use pnet_packet::ipv6::Ipv6Packet;
    use pnet_packet::Packet;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn garp_bytes() {
        let f = garp_frame(MAC, Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let want: [u8; GARP_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst broadcast
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // src
            0x08, 0x06,                         // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet/IPv4, 6/4
            0x00, 0x01,                         // request
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // sender MAC
            0xc0, 0x00, 0x02, 0x64,             // sender IP
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC
            0xc0, 0x00, 0x02, 0x64,             // target IP
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn garp_parses_with_pnet() {
        let ip = Ipv4Addr::new(198, 51, 100, 7);
        let f = garp_frame(MAC, ip);
        let eth = EthernetPacket::new(&f).unwrap();
        assert_eq!(eth.get_ethertype(), EtherTypes::Arp);
        assert_eq!(eth.get_source().octets(), MAC);
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(arp.get_sender_hw_addr().octets(), MAC);
        assert_eq!(arp.get_sender_proto_addr(), ip);
        assert_eq!(arp.get_target_proto_addr(), ip);
    }

    #[test]
    fn una_bytes() {
        let ip: Ipv6Addr = "2001:db8::64".parse().unwrap();
        let f = una_frame(MAC, ip);
        assert_eq!(f.len(), UNA_LEN);
        assert_eq!(f[0..6], ALL_NODES_MAC);
        assert_eq!(f[6..12], MAC);
        assert_eq!(f[12..14], [0x86, 0xdd]);
        assert_eq!(f[14], 0x60);
        assert_eq!(f[18..20], [0x00, 0x20]); // payload length 32
        assert_eq!(f[20], 0x3a); // ICMPv6
        assert_eq!(f[21], 0xff); // hop limit
        assert_eq!(f[22..38], ip.octets()); // source = VIP
        assert_eq!(f[38..54], ALL_NODES.octets());
        assert_eq!(f[54], 0x88); // NA
        assert_eq!(f[55], 0x00);
        assert_eq!(f[58], 0x20); // Override, not Solicited, not Router
        assert_eq!(f[59..62], [0x00; 3]);
        assert_eq!(f[62..78], ip.octets()); // target
        assert_eq!(f[78..80], [0x02, 0x01]); // target lladdr option, 8 octets
        assert_eq!(f[80..86], MAC);
    }

    #[test]
    fn una_checksum_matches_pnet_and_verifies() {
        let ip: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let f = una_frame(MAC, ip);
        let eth = EthernetPacket::new(&f).unwrap();
        let ip6 = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip6.get_hop_limit(), 255);
        let icmp = Icmpv6Packet::new(ip6.payload()).unwrap();
        let theirs = icmpv6::checksum(&icmp, &ip6.get_source(), &ip6.get_destination());
        assert_eq!(icmp.get_checksum(), theirs);
        // Summing a message including its own checksum gives 0 after complement.
        let mut sum = 0u32;
        for part in [&ip.octets()[..], &ALL_NODES.octets()[..]] {
            for w in part.chunks(2) {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
            }
        }
        sum += 32 + 0x3a;
        for w in ip6.payload().chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(fold(sum), 0);
    }

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(&MAC), "02:00:5e:10:20:30");
    }
}

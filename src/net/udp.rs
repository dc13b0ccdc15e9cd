//! The heartbeat socket.
//!
//! Bound to the pair interface (SO_BINDTODEVICE) so heartbeats never leave by another route,
//! marked CS6 like VRRP so switches queue them ahead of bulk traffic, and sent with TTL (hop
//! limit) 255 so a receiver can tell they were not routed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// DSCP CS6 (network control) in the TOS / traffic-class byte.
pub const TOS_CS6: u32 = 0xc0;
/// TTL / hop limit of every heartbeat.
pub const HEARTBEAT_TTL: u32 = 255;

/// The address family of a heartbeat socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `addr` (the peer's address decides which socket to use).
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A nonblocking UDP socket on `port` of every address of `family`, bound to `ifname`.
///
/// SO_REUSEADDR lets a restarted daemon bind at once. IPv6 sockets are IPv6-only, so a V4 and
/// a V6 socket can share the port. Must be called from inside a tokio runtime.
pub fn bind_heartbeat(
    ifname: &str,
    port: u16,
    family: Family,
) -> io::Result<tokio::net::UdpSocket> {
    let (domain, any) = match family {
        Family::V4 => (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Family::V6 => (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    };
    let sock = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.bind_device(Some(ifname.as_bytes()))?;
    match family {
        Family::V4 => {
            sock.set_tos(TOS_CS6)?;
            sock.set_ttl(HEARTBEAT_TTL)?;
        }
        Family::V6 => {
            sock.set_only_v6(true)?;
            sock.set_tclass_v6(TOS_CS6)?;
            sock.set_unicast_hops_v6(HEARTBEAT_TTL)?;
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::new(any, port).into())?;
    tokio::net::UdpSocket::from_std(sock.into())
}

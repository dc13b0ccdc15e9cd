//! ICMP echo to a witness, for the split-brain guard.
//!
//! A node that would claim the VIPs alone first checks that at least one witness answers: if
//! none does, the node is probably the one cut off. [`ping`] sends one echo request over a raw
//! socket, connected to the witness so the kernel only hands back packets from it, and waits
//! for the reply with the same identifier, sequence number and payload. It never blocks the
//! runtime: the socket is nonblocking and driven by tokio's reactor.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::announce::fold;

const ICMP_ECHO_REQUEST: u8 = 0x08;
const ICMP_ECHO_REPLY: u8 = 0x00;
const ICMPV6_ECHO_REQUEST: u8 = 0x80;
const ICMPV6_ECHO_REPLY: u8 = 0x81;
const PAYLOAD_LEN: usize = 24;

/// Sequence numbers, shared by every ping of this process.
static SEQ: AtomicU16 = AtomicU16::new(1);

/// Whether `addr` answers one ICMP (or ICMPv6) echo request within `timeout`.
///
/// Any error (no route, a blackhole route, an unreachable neighbour, a raw socket that cannot
/// be opened) counts as "no answer", and is logged at debug level. Needs CAP_NET_RAW. Must be
/// called from inside a tokio runtime.
pub async fn ping(addr: IpAddr, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, echo(addr)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "witness ping failed");
            false
        }
        Err(_) => {
            tracing::debug!(%addr, ?timeout, "witness ping timed out");
            false
        }
    }
}

/// Send one echo request to `addr` and wait for its reply.
async fn echo(addr: IpAddr) -> io::Result<()> {
    let (domain, proto, request, reply) = match addr {
        IpAddr::V4(_) => (
            Domain::IPV4,
            Protocol::ICMPV4,
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
        ),
        IpAddr::V6(_) => (
            Domain::IPV6,
            Protocol::ICMPV6,
            ICMPV6_ECHO_REQUEST,
            ICMPV6_ECHO_REPLY,
        ),
    };
    let sock = Socket::new(domain, Type::RAW.cloexec(), Some(proto))?;
    sock.set_nonblocking(true)?;
    sock.connect(&SocketAddr::new(addr, 0).into())?;
    // tokio's UdpSocket only calls send(2)/recv(2) on the descriptor, which is what a
    // connected raw socket needs; it registers the fd with the reactor safely.
    let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))?;

    let mut ident = [0u8; 2 + PAYLOAD_LEN];
    getrandom::getrandom(&mut ident).map_err(|e| io::Error::other(e.to_string()))?;
    let id = u16::from_be_bytes([ident[0], ident[1]]);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let payload = &ident[2..];

    let mut msg = Vec::with_capacity(8 + PAYLOAD_LEN);
    msg.extend_from_slice(&[request, 0x00, 0x00, 0x00]);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(payload);
    if addr.is_ipv4() {
        // The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets, not the ICMP one.
        let sum = inet_checksum(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    sock.send(&msg).await?;

    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf).await?;
        let pkt = &buf[..n];
        let icmp = match addr {
            // Raw IPv4 sockets receive the IP header; skip it (IHL is in 32-bit words).
            IpAddr::V4(_) => match pkt.first() {
                Some(b) => pkt.get(usize::from(b & 0x0f) * 4..).unwrap_or(&[]),
                None => continue,
            },
            IpAddr::V6(_) => pkt,
        };
        if is_reply(icmp, reply, id, seq, payload) {
            return Ok(());
        }
    }
}

/// Whether `icmp` is the echo reply to our request.
fn is_reply(icmp: &[u8], reply: u8, id: u16, seq: u16, payload: &[u8]) -> bool {
    icmp.len() == 8 + payload.len()
        && icmp[0] == reply
        && icmp[1] == 0x00
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
        && &icmp[8..] == payload
}

/// The Internet checksum (RFC 1071) of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in data.chunks(2) {
        let hi = w[0];
        let lo = w.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&data), !0xddf2);
    }

    #[test]
    fn checksum_odd_length() {
        assert_eq!(inet_checksum(&[0xab]), !0xab00);
    }

    #[test]
    fn reply_must_match_everything() {
        let payload = [7u8; PAYLOAD_LEN];
        let mut r = vec![ICMP_ECHO_REPLY, 0, 0xde, 0xad, 0x12, 0x34, 0x00, 0x05];
        r.extend_from_slice(&payload);
        assert!(is_reply(&r, ICMP_ECHO_REPLY, 0x1234, 5, &payload));
        assert!(!is_reply(&r, ICMP_ECHO_REPLY, 0x1235, 5, &payload));
        assert!(!is_reply(&r, ICMP_ECHO_REPLY, 0x1234, 6, &payload));
        assert!(!is_reply(&r, ICMPV6_ECHO_REPLY, 0x1234, 5, &payload));
        let mut other = r.clone();
        other[10] ^= 1;
        assert!(!is_reply(&other, ICMP_ECHO_REPLY, 0x1234, 5, &payload));
        assert!(!is_reply(&r[..20], ICMP_ECHO_REPLY, 0x1234, 5, &payload));
    }
}

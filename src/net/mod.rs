//! The pair's side effects on the network, and nothing else.
//!
//! - [`vip`]: add, remove and list VIPs over rtnetlink; read the interface's MAC and addresses.
//! - [`link`]: watch an interface's carrier/operstate through netlink multicast (fault state).
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements on a packet socket.
//! - [`udp`]: the heartbeat socket (CS6, TTL 255, bound to the pair interface).
//! - [`witness`]: ICMP/ICMPv6 echo to a witness address, for the split-brain guard.
//!
//! Every function here acts on the network namespace of the calling thread; sockets keep the
//! namespace they were created in.

pub mod announce;
pub mod link;
pub mod udp;
pub mod vip;
pub mod witness;

use std::io;

/// Errors from the netlink side of `net` (VIPs and link state).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No interface with that name exists in this network namespace.
    #[error("no such interface: {0}")]
    NoSuchLink(String),
    /// No interface with that index exists in this network namespace.
    #[error("no such interface index: {0}")]
    NoSuchIndex(u32),
    /// The kernel refused a netlink request.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// Opening the netlink socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The errno of a kernel refusal, if this is one (positive, as in `libc::EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink(rtnetlink::Error::NetlinkError(msg)) => msg.code.map(|c| c.get().abs()),
            Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

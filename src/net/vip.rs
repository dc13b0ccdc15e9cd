//! VIPs over rtnetlink: add, remove, list, and the start-up sweep of stale VIPs.
//!
//! Add and remove are idempotent: adding a VIP that is already there and removing one that is
//! not are both `Ok`, so the driver can repeat an action after a lost race or a restart.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlag, AddressMessage, AddressScope,
};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;

use super::Error;

/// A cheap handle for VIP changes on this network namespace.
///
/// `Vips::new` spawns the netlink connection on the current tokio runtime; the connection task
/// ends when the last clone of the handle is dropped.
#[derive(Clone)]
pub struct Vips {
    /// Requests go through this handle to the spawned netlink connection task.
    handle: Handle,
}

impl Vips {
    /// Open a netlink connection in the calling thread's network namespace.
    ///
    /// Must be called from inside a tokio runtime.
    pub fn new() -> Result<Vips, Error> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Vips { handle })
    }

    /// The index of the interface called `name`.
    pub async fn link_index(&self, name: &str) -> Result<u32, Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(Error::NoSuchLink(name.to_string())),
            Err(e) if is_errno(&e, libc::ENODEV) => Err(Error::NoSuchLink(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// The hardware (MAC) address of the interface, if it has a 6-byte one.
    pub async fn mac(&self, ifindex: u32) -> Result<Option<[u8; 6]>, Error> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Err(Error::NoSuchIndex(ifindex)),
            Err(e) if is_errno(&e, libc::ENODEV) => return Err(Error::NoSuchIndex(ifindex)),
            Err(e) => return Err(e.into()),
        };
        for attr in link.attributes {
            if let LinkAttribute::Address(bytes) = attr {
                return Ok(<[u8; 6]>::try_from(bytes.as_slice()).ok());
            }
        }
        Ok(None)
    }

    /// Add `vip` to the interface. `Ok` if it is already there (EEXIST).
    ///
    /// IPv6 VIPs are added with `IFA_F_NODAD`, so they are usable at once: a VIP is claimed
    /// because the peer is gone, and waiting a second for duplicate address detection would
    /// only lengthen the outage.
    pub async fn add(&self, ifindex: u32, vip: IpNet) -> Result<(), Error> {
        let mut req = self
            .handle
            .address()
            .add(ifindex, vip.addr(), vip.prefix_len());
        if vip.addr().is_ipv6() {
            req.message_mut()
                .header
                .flags
                .push(AddressHeaderFlag::Nodad);
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove `vip` from the interface, whatever prefix length it has there. `Ok` if it is
    /// not there (EADDRNOTAVAIL, ENOENT).
    ///
    /// The kernel matches IPv4 deletes on the prefix length too, so a VIP added by hand or by
    /// an older config with another prefix would survive an exact delete; releasing must
    /// really release, so a miss falls back to deleting every entry with the same address.
    pub async fn del(&self, ifindex: u32, vip: IpNet) -> Result<(), Error> {
        if self.del_exact(ifindex, vip).await? {
            return Ok(());
        }
        for net in self.list(ifindex).await? {
            if net.addr() == vip.addr() {
                self.del_exact(ifindex, net).await?;
            }
        }
        Ok(())
    }

    /// Delete exactly `net`; `Ok(false)` if the kernel had no such address.
    async fn del_exact(&self, ifindex: u32, net: IpNet) -> Result<bool, Error> {
        let msg = address_message(ifindex, net);
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EADDRNOTAVAIL) || is_errno(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every address on the interface, with its prefix length, in the kernel's order.
    pub async fn list(&self, ifindex: u32) -> Result<Vec<IpNet>, Error> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await? {
            if let Some(net) = address_of(&msg) {
                out.push(net);
            }
        }
        Ok(out)
    }

    /// The interface's own addresses: every address whose IP is not one of `vips`.
    ///
    /// This includes IPv6 link-local addresses; callers that want a routable node address
    /// filter them out.
    pub async fn addresses(&self, ifindex: u32, vips: &[IpNet]) -> Result<Vec<IpNet>, Error> {
        let all = self.list(ifindex).await?;
        Ok(all
            .into_iter()
            .filter(|a| !vips.iter().any(|v| v.addr() == a.addr()))
            .collect())
    }

    /// Remove every configured VIP that is already on the interface (left by a crashed
    /// earlier run), whatever its prefix length there. Returns what it removed.
    pub async fn remove_stale(&self, ifindex: u32, vips: &[IpNet]) -> Result<Vec<IpNet>, Error> {
        let present = self.list(ifindex).await?;
        let mut removed = Vec::new();
        for net in present {
            if !vips.iter().any(|v| v.addr() == net.addr()) {
                continue;
            }
            self.del_exact(ifindex, net).await?;
            tracing::info!(vip = %net, ifindex, "removed stale VIP");
            removed.push(net);
        }
        Ok(removed)
    }
}

/// True when `e` is the kernel's refusal with `errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()) == Some(errno),
        _ => false,
    }
}

/// The message that names one address on one interface (for RTM_DELADDR).
fn address_message(ifindex: u32, net: IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = ifindex;
    msg.header.prefix_len = net.prefix_len();
    msg.header.scope = AddressScope::Universe;
    msg.header.family = match net.addr() {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.attributes.push(AddressAttribute::Local(net.addr()));
    msg.attributes.push(AddressAttribute::Address(net.addr()));
    msg
}

/// The address a RTM_NEWADDR message describes: IFA_LOCAL if present (the interface's own
/// address on point-to-point links), else IFA_ADDRESS.
fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => addr = Some(*a),
            AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
            _ => {}
        }
    }
    IpNet::new(addr?, msg.header.prefix_len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_of_prefers_local() {
        let mut msg = AddressMessage::default();
        msg.header.prefix_len = 24;
        msg.attributes
            .push(AddressAttribute::Address("192.0.2.9".parse().unwrap()));
        msg.attributes
            .push(AddressAttribute::Local("192.0.2.1".parse().unwrap()));
        assert_eq!(address_of(&msg), Some("192.0.2.1/24".parse().unwrap()));
    }

    #[test]
    fn address_of_v6_uses_address() {
        let mut msg = AddressMessage::default();
        msg.header.prefix_len = 64;
        msg.attributes
            .push(AddressAttribute::Address("2001:db8::1".parse().unwrap()));
        assert_eq!(address_of(&msg), Some("2001:db8::1/64".parse().unwrap()));
    }

    #[test]
    fn delete_message_names_the_address() {
        let msg = address_message(7, "2001:db8::64/64".parse().unwrap());
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.header.prefix_len, 64);
        assert_eq!(msg.header.family, AddressFamily::Inet6);
    }
}

//! Link state from netlink multicast: the pair's fault input.
//!
//! [`link_watch`] subscribes to RTNLGRP_LINK before it reads the initial state, so no change
//! between the two is lost, and then reports every change of "usable" for one interface. A
//! veth whose peer end is set down loses carrier at once, and the kernel multicasts the new
//! operstate (LOWERLAYERDOWN) in the same call, so the notice takes microseconds, not a poll
//! interval.

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkMessage, State};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket, SocketAddr};
use tokio::sync::watch;

use super::Error;

/// Whether a link can carry traffic: administratively up, and operstate UP (or UNKNOWN, which
/// is what drivers without carrier reporting such as dummy and loopback say), with carrier.
pub fn is_usable(msg: &LinkMessage) -> bool {
    let admin_up = msg.header.flags.contains(&LinkFlag::Up);
    let lower_up = msg.header.flags.contains(&LinkFlag::LowerUp);
    let mut oper_ok = msg.header.flags.contains(&LinkFlag::Running);
    let mut carrier = lower_up;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::OperState(s) => oper_ok = matches!(s, State::Up | State::Unknown),
            LinkAttribute::Carrier(c) => carrier = *c != 0,
            _ => {}
        }
    }
    admin_up && oper_ok && carrier
}

/// Watch `ifname` in the calling thread's network namespace.
///
/// The receiver holds the current state (`true` = usable) from the start, and changes when the
/// kernel reports a change. Deleting the interface reports `false`. The watch task ends when
/// every receiver is dropped. Must be called from inside a tokio runtime.
pub async fn link_watch(ifname: &str) -> Result<watch::Receiver<bool>, Error> {
    let (mut conn, handle, mut messages) = rtnetlink::new_connection()?;
    // Join the link group before the initial dump, so no change falls between the two.
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
    let conn = tokio::spawn(conn);

    let mut links = handle.link().get().match_name(ifname.to_string()).execute();
    let first = match futures::TryStreamExt::try_next(&mut links).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            conn.abort();
            return Err(Error::NoSuchLink(ifname.to_string()));
        }
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get().abs()) == Some(libc::ENODEV) =>
        {
            conn.abort();
            return Err(Error::NoSuchLink(ifname.to_string()));
        }
        Err(e) => {
            conn.abort();
            return Err(e.into());
        }
    };
    drop(links);
    let index = first.header.index;
    let (tx, rx) = watch::channel(is_usable(&first));
    tracing::debug!(ifname, index, up = *rx.borrow(), "link watch started");

    let name = ifname.to_string();
    tokio::spawn(async move {
        // A multicast socket that overflows (ENOBUFS under a storm of link events) loses
        // messages silently; re-reading the state now and then bounds how long a lost one
        // can leave the watch wrong.
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            let up = tokio::select! {
                _ = tx.closed() => break,
                _ = resync.tick() => match current(&handle, index).await {
                    Some(up) => up,
                    None => continue,
                },
                m = messages.next() => {
                    let Some((msg, _)) = m else {
                        tracing::warn!(ifname = %name, "link watch: netlink stream ended");
                        break;
                    };
                    let NetlinkPayload::InnerMessage(inner) = msg.payload else {
                        continue;
                    };
                    match inner {
                        RouteNetlinkMessage::NewLink(l) if l.header.index == index => {
                            is_usable(&l)
                        }
                        RouteNetlinkMessage::DelLink(l) if l.header.index == index => false,
                        _ => continue,
                    }
                }
            };
            tx.send_if_modified(|cur| {
                if *cur == up {
                    return false;
                }
                tracing::info!(ifname = %name, up, "link state changed");
                *cur = up;
                true
            });
        }
        conn.abort();
    });
    Ok(rx)
}

/// How often the watch re-reads the link state, in case a multicast message was lost.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(1);

/// The link's state now: `Some(false)` if it is gone, `None` if netlink failed.
async fn current(handle: &rtnetlink::Handle, index: u32) -> Option<bool> {
    let mut links = handle.link().get().match_index(index).execute();
    match futures::TryStreamExt::try_next(&mut links).await {
        Ok(Some(link)) => Some(is_usable(&link)),
        Ok(None) => Some(false),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get().abs()) == Some(libc::ENODEV) =>
        {
            Some(false)
        }
        Err(e) => {
            tracing::warn!(index, error = %e, "link watch: re-reading the link failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(flags: &[LinkFlag], oper: State, carrier: u8) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.flags = flags.to_vec();
        m.attributes.push(LinkAttribute::OperState(oper));
        m.attributes.push(LinkAttribute::Carrier(carrier));
        m
    }

    #[test]
    fn up_with_carrier_is_usable() {
        let m = link(
            &[LinkFlag::Up, LinkFlag::Running, LinkFlag::LowerUp],
            State::Up,
            1,
        );
        assert!(is_usable(&m));
    }

    #[test]
    fn peer_down_is_lowerlayerdown() {
        let m = link(&[LinkFlag::Up], State::LowerLayerDown, 0);
        assert!(!is_usable(&m));
    }

    #[test]
    fn admin_down_is_not_usable() {
        let m = link(&[], State::Down, 0);
        assert!(!is_usable(&m));
    }

    #[test]
    fn unknown_operstate_with_carrier_is_usable() {
        let m = link(
            &[LinkFlag::Up, LinkFlag::Running, LinkFlag::LowerUp],
            State::Unknown,
            1,
        );
        assert!(is_usable(&m));
    }
}

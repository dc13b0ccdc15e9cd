//! The heartbeat packet: a versioned, big-endian binary format signed with HMAC-SHA256.
//!
//! Layout of version 1 (all integers big-endian; `docs/protocol.md` has the full story):
//!
//! ```text
//!  offset  size  field
//!   0x00     2   magic 0x48 0x50 ("HP")
//!   0x02     1   version 0x01
//!   0x03     1   kind (Kind::to_wire)
//!   0x04     1   router_id
//!   0x05     1   priority
//!   0x06     1   role (Role::to_wire)
//!   0x07     1   flags: 0x01 master-only services running, 0x02 every pool down
//!   0x08     4   advert_interval_ms
//!   0x0c     1   key_id: the key the MAC was made with
//!   0x0d     1   address family: 0x04 (IPv4) or 0x06 (IPv6)
//!   0x0e     1   name length N, at most 64
//!   0x0f     1   reserved: sent as 0x00, ignored on receive
//!   0x10     8   epoch
//!   0x18     8   seq
//!   0x20     8   vip_digest
//!   0x28   4|16  address (IPv4 or IPv6, by family)
//!    ..      N   name, UTF-8
//!    ..     32   HMAC-SHA256 over every byte before it
//! ```
//!
//! The MAC is always the last 32 bytes of the datagram, so a receiver authenticates the
//! packet before it trusts any length or variable field in it.
//!
//! The style is smoltcp's: [`Packet`] is a checked view over a byte buffer (use
//! [`Packet::new_checked`] for anything from the network), and [`parse`] / [`emit`] /
//! [`buffer_len`] convert between it and the [`Heartbeat`] the machine sees. Nothing here
//! panics on input from the network.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::keys::{Key, KeyRing};
use crate::pair::{Heartbeat, Kind, Role};

type HmacSha256 = Hmac<Sha256>;

/// The first two bytes of every heartbeat: "HP".
pub const MAGIC: [u8; 2] = [0x48, 0x50];
/// The only version this codec speaks.
pub const VERSION: u8 = 0x01;
/// The default UDP port for heartbeats (`[pair] port`).
pub const DEFAULT_PORT: u16 = 5405;
/// HMAC-SHA256, untruncated.
pub const MAC_LEN: usize = 0x20;
/// The longest node name carried, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 0x40;
/// Bytes before the variable part (address, name).
pub const HEADER_LEN: usize = field::ADDR_START;
/// The shortest valid packet: IPv4, empty name.
pub const MIN_LEN: usize = HEADER_LEN + 4 + MAC_LEN;
/// The longest valid packet: IPv6, 64-byte name.
pub const MAX_LEN: usize = HEADER_LEN + 16 + MAX_NAME_LEN + MAC_LEN;

const FAMILY_V4: u8 = 0x04;
const FAMILY_V6: u8 = 0x06;

mod field {
    pub type Field = std::ops::Range<usize>;

    pub const MAGIC: Field = 0x00..0x02;
    pub const VERSION: usize = 0x02;
    pub const KIND: usize = 0x03;
    pub const ROUTER_ID: usize = 0x04;
    pub const PRIORITY: usize = 0x05;
    pub const ROLE: usize = 0x06;
    pub const FLAGS: usize = 0x07;
    pub const ADVERT_INTERVAL: Field = 0x08..0x0c;
    pub const KEY_ID: usize = 0x0c;
    pub const FAMILY: usize = 0x0d;
    pub const NAME_LEN: usize = 0x0e;
    pub const RESERVED: usize = 0x0f;
    pub const EPOCH: Field = 0x10..0x18;
    pub const SEQ: Field = 0x18..0x20;
    pub const VIP_DIGEST: Field = 0x20..0x28;
    pub const ADDR_START: usize = 0x28;
}

/// Why a received heartbeat was dropped. Each reason is counted under [`DropReason::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Too short, too long, bad magic, or a field with an impossible value.
    #[error("malformed heartbeat: {0}")]
    Malformed(&'static str),
    /// A version this node does not speak.
    #[error("unsupported heartbeat version")]
    BadVersion,
    /// A heartbeat of another pair on the same LAN (different router id).
    #[error("heartbeat of another router id (another pair on this LAN)")]
    ForeignRouter,
    /// Signed with a key id this node does not hold.
    #[error("heartbeat signed with an unknown key id")]
    UnknownKey,
    /// The MAC does not match: a wrong key, or the packet was altered.
    #[error("heartbeat with a bad MAC (wrong key or altered packet)")]
    BadMac,
    /// Older than the last accepted heartbeat of that sender.
    #[error("replayed heartbeat (older epoch or sequence number)")]
    Replay,
    /// The very same heartbeat again, e.g. over a redundant link. Not alarming.
    #[error("duplicate heartbeat (same epoch and sequence number)")]
    Duplicate,
}

impl DropReason {
    /// Every label [`DropReason::label`] returns, so metrics can start every counter at 0.
    pub const LABELS: [&'static str; 7] = [
        "malformed",
        "bad_version",
        "foreign_router",
        "unknown_key",
        "bad_mac",
        "replay",
        "duplicate",
    ];

    /// A stable snake_case label for the `reason` label of the drop counter.
    pub fn label(&self) -> &'static str {
        match self {
            DropReason::Malformed(_) => "malformed",
            DropReason::BadVersion => "bad_version",
            DropReason::ForeignRouter => "foreign_router",
            DropReason::UnknownKey => "unknown_key",
            DropReason::BadMac => "bad_mac",
            DropReason::Replay => "replay",
            DropReason::Duplicate => "duplicate",
        }
    }
}

/// A read/write view of a heartbeat packet in a byte buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks: the accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check`]: every fixed-offset accessor is then in
    /// bounds, and the MAC is the last [`MAC_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DropReason> {
        let packet = Packet::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks, in order: magic, version, then that the length is within the bounds of a
    /// version 1 packet. The variable fields are checked by [`parse`], after the MAC.
    pub fn check(&self) -> Result<(), DropReason> {
        let buf = self.buffer.as_ref();
        let Some(magic) = buf.get(field::MAGIC) else {
            return Err(DropReason::Malformed("truncated"));
        };
        if magic != MAGIC {
            return Err(DropReason::Malformed("bad magic"));
        }
        match buf.get(field::VERSION) {
            None => return Err(DropReason::Malformed("truncated")),
            Some(&VERSION) => {}
            Some(_) => return Err(DropReason::BadVersion),
        }
        if buf.len() < MIN_LEN {
            return Err(DropReason::Malformed("truncated"));
        }
        if buf.len() > MAX_LEN {
            return Err(DropReason::Malformed("too long"));
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref()[at]
    }

    fn be_u64(&self, at: field::Field) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[at]);
        u64::from_be_bytes(b)
    }

    pub fn magic(&self) -> [u8; 2] {
        [
            self.byte(field::MAGIC.start),
            self.byte(field::MAGIC.start + 1),
        ]
    }
    pub fn version(&self) -> u8 {
        self.byte(field::VERSION)
    }
    pub fn kind(&self) -> u8 {
        self.byte(field::KIND)
    }
    pub fn router_id(&self) -> u8 {
        self.byte(field::ROUTER_ID)
    }
    pub fn priority(&self) -> u8 {
        self.byte(field::PRIORITY)
    }
    pub fn role(&self) -> u8 {
        self.byte(field::ROLE)
    }
    pub fn flags(&self) -> u8 {
        self.byte(field::FLAGS)
    }
    pub fn advert_interval_ms(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::ADVERT_INTERVAL]);
        u32::from_be_bytes(b)
    }
    pub fn key_id(&self) -> u8 {
        self.byte(field::KEY_ID)
    }
    pub fn family(&self) -> u8 {
        self.byte(field::FAMILY)
    }
    pub fn name_len(&self) -> u8 {
        self.byte(field::NAME_LEN)
    }
    pub fn epoch(&self) -> u64 {
        self.be_u64(field::EPOCH)
    }
    pub fn seq(&self) -> u64 {
        self.be_u64(field::SEQ)
    }
    pub fn vip_digest(&self) -> [u8; 8] {
        let mut d = [0u8; 8];
        d.copy_from_slice(&self.buffer.as_ref()[field::VIP_DIGEST]);
        d
    }

    /// The bytes the MAC covers: everything but the last [`MAC_LEN`].
    pub fn signed_part(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[..buf.len() - MAC_LEN]
    }

    /// The MAC: the last [`MAC_LEN`] bytes.
    pub fn mac(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[buf.len() - MAC_LEN..]
    }

    /// The bytes between the fixed header and the MAC: address, then name.
    fn body(&self) -> &[u8] {
        &self.signed_part()[HEADER_LEN..]
    }

    /// Verifies the MAC with `key`, in constant time.
    pub fn verify(&self, key: &Key) -> Result<(), DropReason> {
        let mut mac = hmac_for(key);
        mac.update(self.signed_part());
        mac.verify_slice(self.mac()).map_err(|_| DropReason::BadMac)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_byte(&mut self, at: usize, value: u8) {
        self.buffer.as_mut()[at] = value;
    }

    pub fn set_magic(&mut self, value: [u8; 2]) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&value);
    }
    pub fn set_version(&mut self, value: u8) {
        self.set_byte(field::VERSION, value)
    }
    pub fn set_kind(&mut self, value: u8) {
        self.set_byte(field::KIND, value)
    }
    pub fn set_router_id(&mut self, value: u8) {
        self.set_byte(field::ROUTER_ID, value)
    }
    pub fn set_priority(&mut self, value: u8) {
        self.set_byte(field::PRIORITY, value)
    }
    pub fn set_role(&mut self, value: u8) {
        self.set_byte(field::ROLE, value)
    }
    pub fn set_flags(&mut self, value: u8) {
        self.set_byte(field::FLAGS, value)
    }
    pub fn set_advert_interval_ms(&mut self, value: u32) {
        self.buffer.as_mut()[field::ADVERT_INTERVAL].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_key_id(&mut self, value: u8) {
        self.set_byte(field::KEY_ID, value)
    }
    pub fn set_family(&mut self, value: u8) {
        self.set_byte(field::FAMILY, value)
    }
    pub fn set_name_len(&mut self, value: u8) {
        self.set_byte(field::NAME_LEN, value)
    }
    pub fn set_epoch(&mut self, value: u64) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_seq(&mut self, value: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_vip_digest(&mut self, value: [u8; 8]) {
        self.buffer.as_mut()[field::VIP_DIGEST].copy_from_slice(&value);
    }

    /// The bytes between the fixed header and the MAC, writable.
    fn body_mut(&mut self) -> &mut [u8] {
        let buf = self.buffer.as_mut();
        let end = buf.len() - MAC_LEN;
        &mut buf[HEADER_LEN..end]
    }

    /// Computes the MAC over the signed part with `key` and writes it into the last bytes.
    pub fn fill_mac(&mut self, key: &Key) {
        let mut mac = hmac_for(key);
        mac.update(self.signed_part());
        let tag = mac.finalize().into_bytes();
        let buf = self.buffer.as_mut();
        let at = buf.len() - MAC_LEN;
        buf[at..].copy_from_slice(&tag);
    }
}

fn hmac_for(key: &Key) -> HmacSha256 {
    // HMAC accepts a key of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key.secret.expose())
        .expect("HMAC-SHA256 takes a key of any length")
}

/// The name as carried on the wire: at most [`MAX_NAME_LEN`] bytes, cut at a character
/// boundary.
fn wire_name(name: &str) -> &str {
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    let mut end = MAX_NAME_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn addr_len(addr: &IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

/// The length of the packet [`emit`] writes for `hb`.
pub fn buffer_len(hb: &Heartbeat) -> usize {
    HEADER_LEN + addr_len(&hb.addr) + wire_name(&hb.name).len() + MAC_LEN
}

/// Writes `hb` into `packet`, whose buffer must be exactly [`buffer_len`] bytes long, and
/// signs it with `key`. A name longer than [`MAX_NAME_LEN`] bytes is cut.
pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(hb: &Heartbeat, key: &Key, packet: &mut Packet<T>) {
    let name = wire_name(&hb.name);
    packet.set_magic(MAGIC);
    packet.set_version(VERSION);
    packet.set_kind(hb.kind.to_wire());
    packet.set_router_id(hb.router_id);
    packet.set_priority(hb.priority);
    packet.set_role(hb.role.to_wire());
    packet.set_flags(hb.flags);
    packet.set_advert_interval_ms(hb.advert_interval_ms);
    packet.set_key_id(key.id);
    // `wire_name` keeps the name within MAX_NAME_LEN (0x40), so it fits a byte.
    packet.set_name_len(name.len() as u8);
    packet.set_byte(field::RESERVED, 0x00);
    packet.set_epoch(hb.epoch);
    packet.set_seq(hb.seq);
    packet.set_vip_digest(hb.vip_digest);
    let alen = addr_len(&hb.addr);
    match hb.addr {
        IpAddr::V4(a) => {
            packet.set_family(FAMILY_V4);
            packet.body_mut()[..alen].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            packet.set_family(FAMILY_V6);
            packet.body_mut()[..alen].copy_from_slice(&a.octets());
        }
    }
    packet.body_mut()[alen..].copy_from_slice(name.as_bytes());
    packet.fill_mac(key);
}

/// Reads the fields of an authenticated packet. Checks the address family, the name
/// length against the packet length, kind, role and UTF-8. Never panics on a packet that
/// passed [`Packet::check`].
pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Heartbeat, DropReason> {
    let kind = Kind::from_wire(packet.kind()).ok_or(DropReason::Malformed("unknown kind"))?;
    let role = Role::from_wire(packet.role()).ok_or(DropReason::Malformed("unknown role"))?;
    let alen = match packet.family() {
        FAMILY_V4 => 4,
        FAMILY_V6 => 16,
        _ => return Err(DropReason::Malformed("unknown address family")),
    };
    let name_len = usize::from(packet.name_len());
    if name_len > MAX_NAME_LEN {
        return Err(DropReason::Malformed("name too long"));
    }
    let body = packet.body();
    if body.len() != alen + name_len {
        return Err(DropReason::Malformed("length does not match fields"));
    }
    let (addr_bytes, name_bytes) = body.split_at(alen);
    let addr = if let Ok(b) = <[u8; 4]>::try_from(addr_bytes) {
        IpAddr::V4(Ipv4Addr::from(b))
    } else if let Ok(b) = <[u8; 16]>::try_from(addr_bytes) {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        return Err(DropReason::Malformed("bad address length"));
    };
    let name = std::str::from_utf8(name_bytes)
        .map_err(|_| DropReason::Malformed("name is not UTF-8"))?
        .to_owned();
    Ok(Heartbeat {
        kind,
        router_id: packet.router_id(),
        priority: packet.priority(),
        role,
        advert_interval_ms: packet.advert_interval_ms(),
        addr,
        epoch: packet.epoch(),
        seq: packet.seq(),
        vip_digest: packet.vip_digest(),
        name,
        flags: packet.flags(),
    })
}

/// Serialises `hb` and signs it with the ring's active key, whose id it carries.
/// A name longer than [`MAX_NAME_LEN`] bytes is cut at a character boundary.
pub fn encode(hb: &Heartbeat, keys: &KeyRing) -> Vec<u8> {
    let mut buf = vec![0u8; buffer_len(hb)];
    let mut packet = Packet::new_unchecked(&mut buf[..]);
    emit(hb, keys.active(), &mut packet);
    buf
}

/// Checks and reads one received datagram, in this order: length, magic and version;
/// router id (`ForeignRouter`); key id (`UnknownKey`); the MAC, in constant time
/// (`BadMac`); then the fields (`Malformed`). Replay is checked separately by a
/// [`ReplayGuard`], once the packet is known to be authentic.
pub fn decode(buf: &[u8], keys: &KeyRing, router_id: u8) -> Result<Heartbeat, DropReason> {
    let packet = Packet::new_checked(buf)?;
    if packet.router_id() != router_id {
        return Err(DropReason::ForeignRouter);
    }
    let key = keys.get(packet.key_id()).ok_or(DropReason::UnknownKey)?;
    packet.verify(key)?;
    parse(&packet)
}

/// Drops replayed and duplicate heartbeats, per sender.
///
/// Each sender (keyed by the authenticated [`Heartbeat::addr`]) stamps its heartbeats with
/// an `epoch` and a `seq`. The epoch is the wall-clock time at the sender's start, in
/// microseconds since the Unix epoch, so it grows across reboots without stable storage;
/// `seq` counts up from 1 within an epoch. A heartbeat is accepted when its epoch is newer
/// than the last accepted one (the sender restarted), or the epoch is the same and the
/// sequence number is higher. The same epoch and sequence number again is a
/// [`DropReason::Duplicate`] (the same packet over a redundant link); anything older is a
/// [`DropReason::Replay`]. State changes only on accept.
///
/// A sender whose clock stepped back across a restart starts an epoch older than the one
/// remembered, and is dropped as a replay until [`ReplayGuard::forget`] is called for it
/// (or the receiver restarts).
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    /// Last accepted `(epoch, seq)` per sender. Only authenticated senders get an entry.
    last: HashMap<IpAddr, (u64, u64)>,
}

impl ReplayGuard {
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// Accepts `hb` and remembers its `(epoch, seq)`, or says why it is dropped.
    pub fn check(&mut self, hb: &Heartbeat) -> Result<(), DropReason> {
        let now = (hb.epoch, hb.seq);
        if let Some(&last) = self.last.get(&hb.addr) {
            if now == last {
                return Err(DropReason::Duplicate);
            }
            // Tuples compare by epoch, then seq: exactly the acceptance rule.
            if now < last {
                return Err(DropReason::Replay);
            }
        }
        self.last.insert(hb.addr, now);
        Ok(())
    }

    /// The last accepted `(epoch, seq)` of a sender.
    pub fn last(&self, addr: &IpAddr) -> Option<(u64, u64)> {
        self.last.get(addr).copied()
    }

    /// Forgets a sender, so its next heartbeat is accepted whatever its epoch.
    pub fn forget(&mut self, addr: &IpAddr) {
        self.last.remove(addr);
    }
}

/// A digest of a VIP set: the first 8 bytes of SHA-256 over the sorted, de-duplicated
/// list, each entry written as family (0x04/0x06), address octets and prefix length.
/// The order of `vips` does not matter.
pub fn vip_digest(vips: &[IpNet]) -> [u8; 8] {
    let mut sorted = vips.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut hash = Sha256::new();
    for net in &sorted {
        match net {
            IpNet::V4(n) => {
                hash.update([FAMILY_V4]);
                hash.update(n.addr().octets());
            }
            IpNet::V6(n) => {
                hash.update([FAMILY_V6]);
                hash.update(n.addr().octets());
            }
        }
        hash.update([net.prefix_len()]);
    }
    let full = hash.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [Kind; 5] = [
        Kind::Advert,
        Kind::Query,
        Kind::Reply,
        Kind::Handover,
        Kind::HandoverAck,
    ];
    const ROLES: [Role; 4] = [Role::Init, Role::Backup, Role::Master, Role::Fault];

    fn k1() -> (u8, Vec<u8>) {
        (1, vec![0x11; 32])
    }
    fn k2() -> (u8, Vec<u8>) {
        (2, vec![0x22; 32])
    }
    fn ring(keys: &[(u8, Vec<u8>)]) -> KeyRing {
        KeyRing::from_keys(keys.iter().cloned()).unwrap()
    }

    fn sample() -> Heartbeat {
        Heartbeat {
            kind: Kind::Advert,
            router_id: 51,
            priority: 150,
            role: Role::Master,
            advert_interval_ms: 100,
            addr: "192.0.2.11".parse().unwrap(),
            epoch: 1_700_000_000_000_000,
            seq: 42,
            vip_digest: vip_digest(&["192.0.2.100/24".parse().unwrap()]),
            name: "proxy1".into(),
            flags: 0,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(HEADER_LEN, 0x28);
        assert_eq!(MIN_LEN, 76);
        assert_eq!(MAX_LEN, 152);
        let keys = ring(&[k1()]);
        let hb = sample();
        let buf = encode(&hb, &keys);
        assert_eq!(buf.len(), 0x28 + 4 + 6 + 32);
        assert_eq!(
            &buf[..0x10],
            &[
                0x48, 0x50, 0x01, 0x01, 51, 150, 0x02, 0x00, 0x00, 0x00, 0x00, 100, 0x01, 0x04, 6,
                0x00
            ]
        );
        assert_eq!(&buf[0x10..0x18], &hb.epoch.to_be_bytes());
        assert_eq!(&buf[0x18..0x20], &42u64.to_be_bytes());
        assert_eq!(&buf[0x20..0x28], &hb.vip_digest);
        assert_eq!(&buf[0x28..0x2c], &[192, 0, 2, 11]);
        assert_eq!(&buf[0x2c..0x32], b"proxy1");
        let mut mac = HmacSha256::new_from_slice(&[0x11; 32]).unwrap();
        mac.update(&buf[..0x32]);
        assert_eq!(&buf[0x32..], &mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn round_trip_every_kind_role_and_family() {
        let keys = ring(&[k1()]);
        let addrs: [IpAddr; 2] = [
            "192.0.2.12".parse().unwrap(),
            "2001:db8::12".parse().unwrap(),
        ];
        for kind in KINDS {
            for role in ROLES {
                for addr in addrs {
                    let hb = Heartbeat {
                        kind,
                        role,
                        addr,
                        ..sample()
                    };
                    let buf = encode(&hb, &keys);
                    assert_eq!(buf.len(), buffer_len(&hb));
                    assert_eq!(decode(&buf, &keys, 51), Ok(hb));
                }
            }
        }
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let keys = ring(&[k1()]);
        let hb = Heartbeat {
            name: "é".repeat(40), // 80 bytes
            ..sample()
        };
        let got = decode(&encode(&hb, &keys), &keys, 51).unwrap();
        assert_eq!(got.name, "é".repeat(32));
        let hb = Heartbeat {
            name: format!("a{}", "é".repeat(40)), // cut falls inside a character
            ..sample()
        };
        let got = decode(&encode(&hb, &keys), &keys, 51).unwrap();
        assert_eq!(got.name.len(), 63);
        assert!(got.name.len() <= MAX_NAME_LEN);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let keys = ring(&[k1()]);
        for hb in [
            sample(),
            Heartbeat {
                addr: "2001:db8::1".parse().unwrap(),
                name: "x".repeat(64),
                ..sample()
            },
        ] {
            let buf = encode(&hb, &keys);
            for len in 0..buf.len() {
                assert!(decode(&buf[..len], &keys, 51).is_err(), "len {len}");
            }
            let mut longer = buf.clone();
            longer.push(0x00);
            assert!(decode(&longer, &keys, 51).is_err());
        }
    }

    #[test]
    fn wrong_key_is_bad_mac() {
        let buf = encode(&sample(), &ring(&[(1, vec![0x33; 32])]));
        assert_eq!(decode(&buf, &ring(&[k1()]), 51), Err(DropReason::BadMac));
    }

    #[test]
    fn other_router_id_is_foreign() {
        let keys = ring(&[k1()]);
        let buf = encode(&sample(), &keys);
        assert_eq!(decode(&buf, &keys, 52), Err(DropReason::ForeignRouter));
    }

    #[test]
    fn header_checks_come_first() {
        let keys = ring(&[k1()]);
        let mut buf = encode(&sample(), &keys);
        buf[2] = 0x02;
        assert_eq!(decode(&buf, &keys, 51), Err(DropReason::BadVersion));
        // A future version may be of any length: still BadVersion, not Malformed.
        assert_eq!(
            decode(&[0x48, 0x50, 0x02], &keys, 51),
            Err(DropReason::BadVersion)
        );
        buf[0] = 0x00;
        assert_eq!(
            decode(&buf, &keys, 51),
            Err(DropReason::Malformed("bad magic"))
        );
        assert_eq!(
            decode(&[0u8; 300], &keys, 51),
            Err(DropReason::Malformed("bad magic"))
        );
        let mut long = vec![0u8; MAX_LEN + 1];
        long[..3].copy_from_slice(&[0x48, 0x50, 0x01]);
        assert_eq!(
            decode(&long, &keys, 51),
            Err(DropReason::Malformed("too long"))
        );
    }

    /// Builds a packet with raw field values and a valid MAC, to test `parse`.
    fn forge(edit: impl Fn(&mut Packet<&mut [u8]>), extra: isize) -> Vec<u8> {
        let keys = ring(&[k1()]);
        let mut buf = encode(&sample(), &keys);
        let len = (buf.len() as isize + extra) as usize;
        buf.resize(len, 0x61);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        edit(&mut p);
        p.fill_mac(keys.active());
        buf
    }

    #[test]
    fn authentic_but_malformed_fields() {
        let keys = ring(&[k1()]);
        let cases: [(Vec<u8>, &str); 6] = [
            (forge(|p| p.set_kind(0x00), 0), "unknown kind"),
            (forge(|p| p.set_kind(0x06), 0), "unknown kind"),
            (forge(|p| p.set_role(0x04), 0), "unknown role"),
            (forge(|p| p.set_family(0x05), 0), "unknown address family"),
            (
                forge(|p| p.set_family(FAMILY_V6), 0),
                "length does not match fields",
            ),
            (forge(|p| p.set_name_len(65), 59), "name too long"),
        ];
        for (buf, what) in cases {
            assert_eq!(decode(&buf, &keys, 51), Err(DropReason::Malformed(what)));
        }
        let bad_utf8 = forge(
            |p| {
                let body = p.body_mut();
                body[4] = 0xff;
            },
            0,
        );
        assert_eq!(
            decode(&bad_utf8, &keys, 51),
            Err(DropReason::Malformed("name is not UTF-8"))
        );
        // Flags are carried as they are; the reserved byte is ignored (both
        // are covered by the MAC).
        let flagged = forge(
            |p| {
                p.set_flags(0x80);
                p.set_byte(field::RESERVED, 0x01);
            },
            0,
        );
        let mut want = sample();
        want.flags = 0x80;
        assert_eq!(decode(&flagged, &keys, 51), Ok(want));
    }

    #[test]
    fn key_rotation() {
        let sender = ring(&[k2(), k1()]);
        let buf = encode(&sample(), &sender);
        assert_eq!(Packet::new_checked(&buf[..]).unwrap().key_id(), 2);
        assert_eq!(decode(&buf, &ring(&[k1(), k2()]), 51), Ok(sample()));
        assert_eq!(
            decode(&buf, &ring(&[k1()]), 51),
            Err(DropReason::UnknownKey)
        );
        // Same id, different secret: the MAC catches it.
        assert_eq!(
            decode(&buf, &ring(&[(2, vec![0x99; 32])]), 51),
            Err(DropReason::BadMac)
        );
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let keys = ring(&[k1(), k2()]);
        let buf = encode(&sample(), &keys);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad, &keys, 51).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn labels_are_stable() {
        let all = [
            DropReason::Malformed("x"),
            DropReason::BadVersion,
            DropReason::ForeignRouter,
            DropReason::UnknownKey,
            DropReason::BadMac,
            DropReason::Replay,
            DropReason::Duplicate,
        ];
        let labels: Vec<_> = all.iter().map(DropReason::label).collect();
        assert_eq!(labels, DropReason::LABELS);
        assert_eq!(
            DropReason::Malformed("truncated").to_string(),
            "malformed heartbeat: truncated"
        );
    }

    fn at(epoch: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            epoch,
            seq,
            ..sample()
        }
    }

    #[test]
    fn replay_guard() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.check(&at(100, 1)), Ok(()));
        assert_eq!(g.check(&at(100, 2)), Ok(()));
        assert_eq!(g.check(&at(100, 2)), Err(DropReason::Duplicate));
        assert_eq!(g.check(&at(100, 1)), Err(DropReason::Replay));
        assert_eq!(g.check(&at(99, 1000)), Err(DropReason::Replay));
        assert_eq!(g.last(&sample().addr), Some((100, 2)));
        // Gaps are fine (lost packets).
        assert_eq!(g.check(&at(100, 10)), Ok(()));
        // The peer restarted: new epoch, seq from 1.
        assert_eq!(g.check(&at(200, 1)), Ok(()));
        assert_eq!(g.check(&at(100, 11)), Err(DropReason::Replay));
        assert_eq!(g.last(&sample().addr), Some((200, 1)));
        // Senders are independent.
        let other = Heartbeat {
            addr: "2001:db8::2".parse().unwrap(),
            ..at(1, 1)
        };
        assert_eq!(g.check(&other), Ok(()));
        assert_eq!(g.check(&at(200, 2)), Ok(()));
        // Forgetting a sender accepts an older epoch (clock stepped back).
        g.forget(&sample().addr);
        assert_eq!(g.check(&at(50, 1)), Ok(()));
    }

    #[test]
    fn vip_digest_ignores_order_and_duplicates() {
        let a: IpNet = "192.0.2.100/24".parse().unwrap();
        let b: IpNet = "2001:db8::100/64".parse().unwrap();
        let c: IpNet = "192.0.2.101/24".parse().unwrap();
        assert_eq!(vip_digest(&[a, b, c]), vip_digest(&[c, b, a]));
        assert_eq!(vip_digest(&[a, b]), vip_digest(&[b, a, b]));
        assert_ne!(vip_digest(&[a, b]), vip_digest(&[a, c]));
        assert_ne!(vip_digest(&[a]), vip_digest(&[]));
        // The prefix length is part of the set.
        assert_ne!(
            vip_digest(&[a]),
            vip_digest(&["192.0.2.100/25".parse().unwrap()])
        );
    }

    fn arb_heartbeat() -> impl Strategy<Value = Heartbeat> {
        let addr = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        (
            (
                prop::sample::select(KINDS.to_vec()),
                any::<u8>(),
                any::<u8>(),
                prop::sample::select(ROLES.to_vec()),
                any::<u32>(),
            ),
            (
                addr,
                any::<u64>(),
                any::<u64>(),
                any::<[u8; 8]>(),
                "\\PC{0,20}".prop_map(|s| wire_name(&s).to_owned()),
                any::<u8>(),
            ),
        )
            .prop_map(
                |((kind, router_id, priority, role, advert_interval_ms), rest)| {
                    let (addr, epoch, seq, vip_digest, name, flags) = rest;
                    Heartbeat {
                        kind,
                        router_id,
                        priority,
                        role,
                        advert_interval_ms,
                        addr,
                        epoch,
                        seq,
                        vip_digest,
                        name,
                        flags,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(hb in arb_heartbeat(), secret in prop::collection::vec(any::<u8>(), 32..80), id in any::<u8>()) {
            let keys = KeyRing::from_keys([(id, secret)]).unwrap();
            let buf = encode(&hb, &keys);
            prop_assert!(buf.len() >= MIN_LEN && buf.len() <= MAX_LEN);
            prop_assert_eq!(decode(&buf, &keys, hb.router_id), Ok(hb));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..200), router_id in any::<u8>()) {
            let keys = ring(&[k1()]);
            let _ = decode(&buf, &keys, router_id);
        }

        #[test]
        fn prop_valid_prefix_then_noise_never_panics(hb in arb_heartbeat(), cut in 0usize..160, noise in prop::collection::vec(any::<u8>(), 0..80)) {
            let keys = ring(&[k1()]);
            let mut buf = encode(&hb, &keys);
            buf.truncate(cut);
            buf.extend_from_slice(&noise);
            let _ = decode(&buf, &keys, hb.router_id);
        }

        #[test]
        fn prop_any_flipped_bit_is_rejected(hb in arb_heartbeat(), bit in any::<prop::sample::Index>()) {
            let keys = ring(&[k1(), k2()]);
            let mut buf = encode(&hb, &keys);
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&buf, &keys, hb.router_id).is_err());
        }
    }
}

//! Types shared by the pure pair machine and the wire codec.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Monotonic time as an offset from an arbitrary origin chosen by the driver.
/// The machine never reads a clock: every input carries `now`.
pub type Time = Duration;

/// The role a node plays in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Just started: asking the peer for its state, holding nothing.
    Init,
    Backup,
    Master,
    /// The heartbeat interface is down: hold nothing, send nothing.
    Fault,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Backup => "backup",
            Role::Master => "master",
            Role::Fault => "fault",
        }
    }
    pub fn to_wire(self) -> u8 {
        match self {
            Role::Init => 0x00,
            Role::Backup => 0x01,
            Role::Master => 0x02,
            Role::Fault => 0x03,
        }
    }
    pub fn from_wire(b: u8) -> Option<Role> {
        Some(match b {
            0x00 => Role::Init,
            0x01 => Role::Backup,
            0x02 => Role::Master,
            0x03 => Role::Fault,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a heartbeat packet asks or says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Periodic advertisement of role and priority.
    Advert,
    /// Sent at start-up: "tell me your state now".
    Query,
    /// Answer to a query: same content as an advert, sent at once.
    Reply,
    /// The master asks the peer to take over (step-down or SIGTERM).
    Handover,
    /// The peer holds and has announced the VIPs; the old master may release.
    HandoverAck,
}

impl Kind {
    pub fn to_wire(self) -> u8 {
        match self {
            Kind::Advert => 0x01,
            Kind::Query => 0x02,
            Kind::Reply => 0x03,
            Kind::Handover => 0x04,
            Kind::HandoverAck => 0x05,
        }
    }
    pub fn from_wire(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Advert,
            0x02 => Kind::Query,
            0x03 => Kind::Reply,
            0x04 => Kind::Handover,
            0x05 => Kind::HandoverAck,
            _ => return None,
        })
    }
}

/// The content of one heartbeat, as the machine sees it (already authenticated).
/// `epoch` and `seq` are filled in by the sender's driver, and checked by the
/// receiver's replay guard before the machine sees the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub kind: Kind,
    pub router_id: u8,
    /// Effective priority (configured priority plus failing-check weights), 0..=255.
    /// 0 means "I am leaving, take over" as in VRRP.
    pub priority: u8,
    pub role: Role,
    /// The sender's advert interval, so the receiver derives the dead interval from it.
    pub advert_interval_ms: u32,
    /// The sender's primary address: the election tie-break.
    pub addr: IpAddr,
    /// Per-boot epoch (microseconds since the Unix epoch at start).
    pub epoch: u64,
    /// Sequence number within the epoch, starting at 1.
    pub seq: u64,
    /// First 8 bytes of SHA-256 over the sorted VIP set: a config mismatch shows here.
    pub vip_digest: [u8; 8],
    /// Node name, for logs (at most 64 bytes of UTF-8).
    pub name: String,
    /// `FLAG_*` bits: facts the driver shares that the election does not use.
    pub flags: u8,
}

/// The sender runs its `run = "master"` services (catalogd): the new master
/// starts its copy only once this is clear, so there are never two.
pub const FLAG_SERVICES_ACTIVE: u8 = 0x01;
/// Every balancer pool of the sender has no healthy server.
pub const FLAG_POOLS_DOWN: u8 = 0x02;

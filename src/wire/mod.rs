//! The heartbeat wire format and the pair keys.
//!
//! - [`heartbeat`]: the versioned binary heartbeat, its HMAC-SHA256, the replay guard and
//!   the VIP digest. `docs/protocol.md` describes the protocol.
//! - [`keys`]: the pair key file, the key ring (rotation without failover) and `keygen`.

pub mod heartbeat;
pub mod keys;

pub use heartbeat::{
    decode, encode, vip_digest, DropReason, Packet, ReplayGuard, DEFAULT_PORT, MAX_LEN,
    MAX_NAME_LEN, MIN_LEN,
};
pub use keys::{keygen, Key, KeyError, KeyRing, Secret};

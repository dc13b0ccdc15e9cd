//! Fuzzes `wire::decode` with arbitrary datagrams and a fixed key ring.
//!
//! Each input is decoded twice: as received (exercises the header checks and the MAC),
//! and re-signed with the ring's key so that it passes the MAC (exercises the field
//! parser behind it, which random bytes would otherwise never reach).
#![no_main]

use std::sync::OnceLock;

use hapair::wire::{decode, encode, KeyRing};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: [u8; 32] = [0x42; 32];
const KEY_ID: u8 = 0x07;
const ROUTER_ID: u8 = 51;
const MAC_LEN: usize = 32;

fn keys() -> &'static KeyRing {
    static KEYS: OnceLock<KeyRing> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeyRing::from_keys([(KEY_ID, SECRET.to_vec()), (0x01, vec![0x17; 32])])
            .expect("a valid fixed key ring")
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let _ = decode(data, keys, ROUTER_ID);

    if data.len() < MAC_LEN {
        return;
    }
    let mut signed = data.to_vec();
    let end = signed.len() - MAC_LEN;
    let mut mac = Hmac::<Sha256>::new_from_slice(&SECRET).expect("any key length");
    mac.update(&signed[..end]);
    signed[end..].copy_from_slice(&mac.finalize().into_bytes());
    if let Ok(hb) = decode(&signed, keys, ROUTER_ID) {
        // Whatever parses must encode back to the same heartbeat.
        let again = encode(&hb, keys);
        assert_eq!(decode(&again, keys, ROUTER_ID).as_ref(), Ok(&hb));
    }
});

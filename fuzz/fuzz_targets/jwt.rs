//! Token text as a caller hands it to ValidateToken (and RefreshToken, Logout): `KeyRing::verify`,
//! everything that reads the token before any store look-up — compact-form split, base64url, the
//! JOSE header, the signature, and the claims.
//!
//! The ring holds one fixed key (`tessera_fuzz::fixed_ring`), so seeds signed with it stay valid from run to run. The
//! first input byte picks what the rest is:
//! - 0: token text, verified as is;
//! - 1: a claims set (JSON): signed with the ring's key under our header, so the fuzzer reaches the
//!   claims parser behind a valid signature;
//! - 2: a header and a claims set, split at the first NUL byte, signed the same way.
//!
//! A token the ring accepts must carry the ring's kid and its claims must serialise back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p256::ecdsa::SigningKey;
use tessera::token::keys::KeyRing;
use tessera_fuzz::{fixed_ring, jws_header, sign_jws};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let (ring, key) = ring();
    let token = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
        1 => sign_jws(key, jws_header(key).as_bytes(), rest),
        _ => {
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(nul) => (&rest[..nul], &rest[nul + 1..]),
                None => (rest, &[][..]),
            };
            sign_jws(key, header, claims)
        }
    };
    if let Ok((claims, kid)) = ring.verify(&token) {
        assert_eq!(kid, ring.active().kid());
        let _ = serde_json::to_string(&claims).unwrap();
    }
});

/// Made once: loading a ring reads a key file and self-tests the key.
fn ring() -> &'static (KeyRing, SigningKey) {
    static RING: OnceLock<(KeyRing, SigningKey)> = OnceLock::new();
    RING.get_or_init(|| fixed_ring().unwrap())
}

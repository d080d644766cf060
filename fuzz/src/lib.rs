//! Helpers shared by the fuzz targets and the seed-corpus generator (`examples/seeds.rs`), so the
//! seeds are made by the very code that reads them: how one input carries a sequence of messages
//! ([`frames`]), the PIV session the hostile-card target drives ([`drive_piv`]) and the fixed key ring
//! the token target verifies against ([`fixed_ring`]).
//!
//! An input is a run of frames, each a 2-byte big-endian length and that many bytes (the framing of
//! vpcd, so a recorded vpcd session is already a valid input). A last frame that claims more bytes
//! than remain gets what remains, so every input means something and the fuzzer wastes no runs.

#![forbid(unsafe_code)]

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePrivateKey;
use tessera::piv::cert;
use tessera::piv::{Pin, Piv, Slot, TAG_CHUID};
use tessera::token::jwk_thumbprint;
use tessera::token::keys::KeyRing;
use tessera::transport::CardTransport;
use tessera::verify::challenge::Challenge;

/// Splits `data` into frames; see the crate documentation.
pub fn frames(data: &[u8]) -> Frames<'_> {
    Frames { rest: data }
}

/// Encodes `messages` as frames, the inverse of [`frames`] for messages of at most 65535 bytes
/// (longer ones are cut there: a seed, not a protocol).
pub fn encode_frames<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&message[..usize::from(len)]);
    }
    out
}

/// Iterator over the frames of one input.
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let [hi, lo, body @ ..] = self.rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(body.len());
        let (frame, rest) = body.split_at(len);
        self.rest = rest;
        Some(frame)
    }
}

/// Every PIV operation the daemon uses, in the order of an enrollment and an authentication, on
/// `card`: SELECT, PIN status and VERIFY, GET DATA (CHUID, each slot's certificate), GENERAL
/// AUTHENTICATE with each slot, PIN change and unblock. The certificates and signatures go on to
/// `cert::summarize` and `Challenge::verify`, as in the daemon. Errors are the card's business: the
/// session goes on with the next operation, as far as the card answers.
pub fn drive_piv<T: CardTransport + ?Sized>(card: &mut T) -> Result<(), tessera::Error> {
    let mut piv = Piv::new(card);
    let pin = Pin::new("123456")?;
    let new_pin = Pin::new("654321")?;
    let _ = piv.select();
    let _ = piv.pin_status();
    let _ = piv.verify_pin(&pin);
    let _ = piv.chuid();
    let _ = piv.get_data(TAG_CHUID);
    let mut key = None;
    for slot in Slot::ALL {
        if let Ok(Some(der)) = piv.certificate(slot) {
            if let Ok(summary) = cert::summarize(&der) {
                key = Some(summary.public_key);
            }
        }
    }
    let challenge = Challenge::new()?;
    for slot in Slot::ALL {
        if let Ok(signature) = piv.sign_p256(slot, &challenge.digest()) {
            if let Some(key) = &key {
                let _ = challenge.verify(key, &signature);
            }
        }
    }
    let _ = piv.change_pin(&pin, &new_pin);
    let _ = piv.unblock_pin(&pin, &new_pin);
    let _ = piv.reset_pin_status();
    Ok(())
}

/// The private scalar of [`fixed_ring`]'s key: fixed, so seed tokens verify run after run. A fuzzing
/// key, never a real one.
const RING_SCALAR: [u8; 32] = [0x5E; 32];

/// A key ring holding one fixed key, loaded the way the daemon loads its ring (from a key directory,
/// made in the temp directory and removed again), and that key for signing test tokens.
pub fn fixed_ring() -> Result<(KeyRing, SigningKey), Box<dyn std::error::Error>> {
    let secret = p256::SecretKey::from_slice(&RING_SCALAR)?;
    let kid = jwk_thumbprint(&secret.public_key());
    let dir = std::env::temp_dir().join(format!("tessera-fuzz-ring-{}", std::process::id()));
    let keys = dir.join("keys");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys)?;
    let der = secret.to_pkcs8_der()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(keys.join(format!("{kid}.p8")))?;
    std::io::Write::write_all(&mut file, der.as_bytes())?;
    drop(file);
    let ring = KeyRing::load_or_create(&dir, 0);
    // The ring holds the key in memory now; leave nothing behind.
    std::fs::remove_dir_all(&dir)?;
    let ring = ring?;
    if ring.active().kid() != kid {
        return Err("the ring did not load the fixed key".into());
    }
    Ok((ring, SigningKey::from(secret)))
}

/// The protected header `KeyRing::sign` writes, for `key`.
pub fn jws_header(key: &SigningKey) -> String {
    let kid = jwk_thumbprint(&p256::PublicKey::from(key.verifying_key()));
    format!(r#"{{"typ":"JWT","alg":"ES256","kid":"{kid}"}}"#)
}

/// A compact JWS (RFC 7515 §7.1) over the given header and payload bytes, with a low-S ES256
/// signature by `key`.
pub fn sign_jws(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature: Signature = key.sign(input.as_bytes());
    let signature = signature.normalize_s().unwrap_or(signature);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncate() {
        let input = encode_frames([&b"ab"[..], b"", b"xyz"]);
        assert_eq!(
            frames(&input).collect::<Vec<_>>(),
            [&b"ab"[..], b"", b"xyz"]
        );
        assert_eq!(frames(&[0, 9, 1, 2]).collect::<Vec<_>>(), [&[1u8, 2][..]]);
        assert_eq!(frames(&[7]).count(), 0);
    }

    /// The `jwt` target's modes 1 and 2 only reach the claims parser if what they sign verifies.
    #[test]
    fn tokens_signed_with_the_fixed_key_verify() {
        let (ring, key) = fixed_ring().unwrap();
        let claims = br#"{"iss":"tesserad","sub":"alice","aud":"tessera","iat":1,"nbf":1,"exp":2,
            "jti":"j","amr":["hwk"],"cnf":{"jkt":"t"},"sid":"s","enr":"e"}"#;
        let token = sign_jws(&key, jws_header(&key).as_bytes(), claims);
        let (claims, kid) = ring.verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), kid.as_str()),
            ("alice", ring.active().kid())
        );
        assert!(ring.verify(&token.replacen("eyJ", "eyK", 1)).is_err());
    }
}

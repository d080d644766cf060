//! The challenge-response check: a fresh random nonce, the digest the card signs, and verification of
//! the card's ECDSA P-256 signature against the key enrolled for the user (FIPS 186-5 §6.4,
//! SEC 1 §4.1.4). Talking to the card is [`crate::piv`]'s job.

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{CryptoRngCore, OsRng};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Length of the nonce; 256 bits make a repeat across the daemon's lifetime negligible.
pub const NONCE_LEN: usize = 32;

/// One authentication attempt's nonce. Use each challenge once: a signature over it proves the card
/// holds the enrolled key *now*, not that it did before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    nonce: [u8; NONCE_LEN],
}

impl Challenge {
    /// A fresh nonce from the operating system's CSPRNG.
    pub fn new() -> Result<Self> {
        Self::from_rng(&mut OsRng)
    }

    /// A nonce from `rng`, for tests that need a deterministic source. Errors (rather than panics,
    /// as `fill_bytes` would) when the generator fails.
    pub fn from_rng(rng: &mut impl CryptoRngCore) -> Result<Self> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.try_fill_bytes(&mut nonce).map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "random generator failed: {e}"
            )))
        })?;
        Ok(Self { nonce })
    }

    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// SHA-256 of the nonce: the 32 bytes the card signs with GENERAL AUTHENTICATE. PIV cards sign a
    /// caller-computed hash (SP 800-73-4 Part 2 §3.2.4), so hashing happens here, not on the card.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.nonce).into()
    }

    /// Checks a DER ECDSA signature (RFC 3279 §2.2.3) over [`Challenge::digest`] with the enrolled
    /// key. Any failure — malformed DER, wrong key, other digest — is [`Error::SignatureInvalid`].
    ///
    /// High-S signatures are accepted: cards emit them, and ECDSA verification per FIPS 186-5 takes
    /// both forms (the `s`/`n - s` malleability does not matter for a single-use nonce). A test pins
    /// this.
    ///
    /// Verification uses aws-lc (already linked for the token signatures): it is about five times
    /// faster than the pure-Rust `p256` here, and it sits on every authentication's path. It hashes
    /// the nonce itself, so the card's signature over [`Challenge::digest`] is checked as is.
    pub fn verify(&self, enrolled: &p256::PublicKey, der_signature: &[u8]) -> Result<()> {
        // Parsed here too only to tell a malformed signature from a wrong one; aws-lc says neither.
        p256::ecdsa::Signature::from_der(der_signature)
            .map_err(|_| Error::SignatureInvalid("malformed DER signature"))?;
        let point = enrolled.to_encoded_point(false);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point.as_bytes())
            .verify(&self.nonce, der_signature)
            .map_err(|_| Error::SignatureInvalid("signature does not match the enrolled key"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::{Signature, SigningKey};
    use rand_core::{CryptoRng, RngCore};

    use super::*;

    fn sign(key: &SigningKey, challenge: &Challenge) -> Signature {
        key.sign_prehash(&challenge.digest()).unwrap()
    }

    fn invalid(r: Result<()>) -> &'static str {
        match r {
            Err(Error::SignatureInvalid(why)) => why,
            other => panic!("expected SignatureInvalid, got {other:?}"),
        }
    }

    #[test]
    fn digest_is_sha256_of_the_nonce() {
        // FIPS 180-4 test vector: SHA-256 of 32 zero bytes.
        let zero = Challenge {
            nonce: [0; NONCE_LEN],
        };
        assert_eq!(
            hex::encode(zero.digest()),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let a = Challenge::new().unwrap();
        let b = Challenge::new().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.nonce(), &[0; NONCE_LEN]);
    }

    #[test]
    fn a_valid_signature_verifies() {
        let key = SigningKey::random(&mut OsRng);
        let enrolled = p256::PublicKey::from(key.verifying_key());
        let challenge = Challenge::new().unwrap();
        let sig = sign(&key, &challenge);
        challenge
            .verify(&enrolled, sig.to_der().as_bytes())
            .unwrap();
    }

    #[test]
    fn low_and_high_s_forms_both_verify() {
        let key = SigningKey::random(&mut OsRng);
        let enrolled = p256::PublicKey::from(key.verifying_key());
        let challenge = Challenge::new().unwrap();
        // p256 signs with either S; build both forms (r, s) and (r, n - s) explicitly.
        let sig = sign(&key, &challenge);
        let low = sig.normalize_s().unwrap_or(sig);
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r, -*s).unwrap();
        assert!(low.normalize_s().is_none(), "low-S form");
        assert!(high.normalize_s().is_some(), "high-S form");
        for form in [low, high] {
            challenge
                .verify(&enrolled, form.to_der().as_bytes())
                .unwrap();
        }
    }

    #[test]
    fn wrong_key_wrong_nonce_and_bad_encodings_are_rejected() {
        let key = SigningKey::random(&mut OsRng);
        let enrolled = p256::PublicKey::from(key.verifying_key());
        let challenge = Challenge::new().unwrap();
        let good = sign(&key, &challenge).to_der().as_bytes().to_vec();

        let other_key = SigningKey::random(&mut OsRng);
        let from_other_key = sign(&other_key, &challenge).to_der();
        assert_eq!(
            invalid(challenge.verify(&enrolled, from_other_key.as_bytes())),
            "signature does not match the enrolled key"
        );

        let other_nonce = sign(&key, &Challenge::new().unwrap()).to_der();
        assert_eq!(
            invalid(challenge.verify(&enrolled, other_nonce.as_bytes())),
            "signature does not match the enrolled key"
        );

        // The signature checked against the wrong enrolled key.
        let other_enrolled = p256::PublicKey::from(other_key.verifying_key());
        assert_eq!(
            invalid(challenge.verify(&other_enrolled, &good)),
            "signature does not match the enrolled key"
        );

        for len in 0..good.len() {
            assert_eq!(
                invalid(challenge.verify(&enrolled, &good[..len])),
                "malformed DER signature",
                "prefix {len}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        invalid(challenge.verify(&enrolled, &trailing));
        // Raw r||s instead of DER, and r = s = 0.
        let raw = sign(&key, &challenge).to_bytes();
        invalid(challenge.verify(&enrolled, &raw));
        invalid(challenge.verify(&enrolled, &hex::decode("3006020100020100").unwrap()));
    }

    /// A generator that always fails, as `getrandom` can on a broken system.
    struct BrokenRng;
    impl RngCore for BrokenRng {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, _: &mut [u8]) {}
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> std::result::Result<(), rand_core::Error> {
            Err(rand_core::Error::new("broken"))
        }
    }
    impl CryptoRng for BrokenRng {}

    #[test]
    fn a_failing_rng_is_an_error() {
        assert!(matches!(
            Challenge::from_rng(&mut BrokenRng),
            Err(Error::Io(_))
        ));
    }
}

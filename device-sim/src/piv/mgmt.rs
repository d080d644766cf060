//! PIV Card Application Administration Key (9B) authentication with 3DES: the witness/challenge
//! exchanges of GENERAL AUTHENTICATE (SP 800-73-4 Part 2 Appendix A.1 and A.2, tags 80, 81, 82 of
//! Table 7).

use des::cipher::{BlockEncrypt, KeyInit};
use des::TdesEde3;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// 3DES block size.
pub const BLOCK: usize = 8;

/// What the card remembers between the two commands of one authentication.
#[derive(Default)]
pub enum Pending {
    /// No exchange in progress.
    #[default]
    None,
    /// Mutual authentication: the card sent E(K, witness) and waits for the witness in clear.
    Witness(Zeroizing<[u8; BLOCK]>),
    /// External authentication: the card sent a challenge and waits for E(K, challenge).
    Challenge(Zeroizing<[u8; BLOCK]>),
}

/// A fresh random block.
pub fn random_block() -> Zeroizing<[u8; BLOCK]> {
    let mut block = Zeroizing::new([0u8; BLOCK]);
    OsRng.fill_bytes(block.as_mut_slice());
    block
}

/// E(K, block) with 3DES-EDE3 in ECB mode (one block, as SP 800-73-4 Appendix A prescribes).
pub fn encrypt(key: &[u8; 24], block: &[u8; BLOCK]) -> [u8; BLOCK] {
    let cipher = TdesEde3::new(key.into());
    let mut out = *block;
    cipher.encrypt_block((&mut out).into());
    out
}

/// Compares two byte strings without an early exit, so timing says nothing about where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdes_known_answer() {
        // With K1 = K2 = K3 the EDE cascade is single DES; FIPS 81 / the classic DES test vector:
        // key 0123456789ABCDEF, plaintext "Now is t" (4E6F772069732074) → 3FA40E8A984D4815.
        let k = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF];
        let mut key = [0u8; 24];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&k);
        }
        let out = encrypt(&key, b"Now is t");
        assert_eq!(out, [0x3F, 0xA4, 0x0E, 0x8A, 0x98, 0x4D, 0x48, 0x15]);
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

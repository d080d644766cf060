//! PIN/UV auth protocols one and two, authenticator side (CTAP 2.1 §6.5.4, §6.5.6, §6.5.7): the
//! key agreement key, decapsulating the platform's key into a shared secret, and encrypt,
//! decrypt and verify under that secret or under a pinUvAuthToken.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::cbor::{self, Value};
use super::status::Status;

/// COSE algorithm of the key agreement keys: ECDH-ES+HKDF-256 (CTAP 2.1 §6.5.6: "-25, although
/// this is not the algorithm actually used").
const ALG_ECDH_ES_HKDF_256: i64 = -25;
const AES_BLOCK: usize = 16;

/// A PIN/UV auth protocol the key supports (getInfo pinUvAuthProtocols [2, 1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    One,
    Two,
}

impl Protocol {
    /// The protocol a request names; another number → CTAP1_ERR_INVALID_PARAMETER (§6.5.5.1).
    pub(super) fn from_number(number: u64) -> Result<Protocol, Status> {
        match number {
            1 => Ok(Protocol::One),
            2 => Ok(Protocol::Two),
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Protocol::One => 0,
            Protocol::Two => 1,
        }
    }

    /// decapsulate(peerCoseKey) (§6.5.6, §6.5.7): ECDH with the platform's P-256 key, then the
    /// protocol's KDF. Any defect in the platform key is an error (→ INVALID_PARAMETER).
    pub(super) fn decapsulate(
        self,
        ours: &p256::SecretKey,
        platform: Vec<(Value, Value)>,
    ) -> Result<Zeroizing<Vec<u8>>, Status> {
        let peer = platform_key(&platform).ok_or(Status::INVALID_PARAMETER)?;
        let shared = p256::ecdh::diffie_hellman(ours.to_nonzero_scalar(), peer.as_affine());
        let z = shared.raw_secret_bytes();
        match self {
            // §6.5.6 kdf(Z) = SHA-256(Z).
            Protocol::One => Ok(Zeroizing::new(Sha256::digest(z).to_vec())),
            // §6.5.7 kdf(Z) = HKDF-SHA-256(salt = 32 zero bytes, Z, "CTAP2 HMAC key", 32) ‖
            // HKDF-SHA-256(salt = 32 zero bytes, Z, "CTAP2 AES key", 32).
            Protocol::Two => {
                let hkdf = Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                let mut secret = Zeroizing::new(vec![0u8; 64]);
                let (hmac_key, aes_key) = secret.split_at_mut(32);
                hkdf.expand(b"CTAP2 HMAC key", hmac_key)
                    .map_err(|_| Status::OTHER)?;
                hkdf.expand(b"CTAP2 AES key", aes_key)
                    .map_err(|_| Status::OTHER)?;
                Ok(secret)
            }
        }
    }

    /// encrypt(key, demPlaintext): protocol one AES-256-CBC with a zero IV; protocol two a random
    /// IV, prepended, under the AES half of the secret. No padding: `plain` is whole blocks.
    pub(super) fn encrypt(self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, Status> {
        if plain.len() % AES_BLOCK != 0 {
            return Err(Status::OTHER);
        }
        let (aes_key, iv) = match self {
            Protocol::One => (key, [0u8; AES_BLOCK]),
            Protocol::Two => {
                let mut iv = [0u8; AES_BLOCK];
                OsRng.fill_bytes(&mut iv);
                (key.get(32..64).ok_or(Status::OTHER)?, iv)
            }
        };
        let cipher = cbc::Encryptor::<aes::Aes256>::new_from_slices(aes_key, &iv)
            .map_err(|_| Status::OTHER)?;
        let sealed = cipher.encrypt_padded_vec_mut::<NoPadding>(plain);
        Ok(match self {
            Protocol::One => sealed,
            Protocol::Two => [&iv[..], &sealed].concat(),
        })
    }

    /// decrypt(key, demCiphertext); `None` when the ciphertext is not whole blocks (after the IV
    /// of protocol two).
    pub(super) fn decrypt(self, key: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (aes_key, iv, body) = match self {
            Protocol::One => (key.get(..32)?, &[0u8; AES_BLOCK][..], sealed),
            Protocol::Two => {
                if sealed.len() < AES_BLOCK {
                    return None;
                }
                let (iv, body) = sealed.split_at(AES_BLOCK);
                (key.get(32..64)?, iv, body)
            }
        };
        if body.is_empty() || body.len() % AES_BLOCK != 0 {
            return None;
        }
        let cipher = cbc::Decryptor::<aes::Aes256>::new_from_slices(aes_key, iv).ok()?;
        cipher
            .decrypt_padded_vec_mut::<NoPadding>(body)
            .ok()
            .map(Zeroizing::new)
    }

    /// verify(key, message, signature): HMAC-SHA-256 under the HMAC half of a shared secret or
    /// under a whole pinUvAuthToken; protocol one compares its first 16 bytes and takes only a
    /// 16-byte signature, protocol two all 32 (§6.5.6, §6.5.7).
    pub(super) fn verify(self, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let Some(hmac_key) = key.get(..32) else {
            return false;
        };
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key) else {
            return false;
        };
        mac.update(message);
        match self {
            Protocol::One => signature.len() == 16 && mac.verify_truncated_left(signature).is_ok(),
            Protocol::Two => signature.len() == 32 && mac.verify_slice(signature).is_ok(),
        }
    }
}

/// A fresh key agreement key (§6.5.4 initialize/regenerate).
pub(super) fn new_key_agreement_key() -> p256::SecretKey {
    p256::SecretKey::random(&mut OsRng)
}

/// getKeyAgreement's COSE_Key of our public key (§6.5.6 getPublicKey).
pub(super) fn cose_key(ours: &p256::SecretKey) -> Result<Value, Status> {
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&ours.public_key(), false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(Status::OTHER);
    };
    Ok(cbor::int_map(vec![
        (1, cbor::integer(2)), // kty: EC2
        (3, cbor::integer(ALG_ECDH_ES_HKDF_256)),
        (-1, cbor::integer(1)), // crv: P-256
        (-2, Value::Bytes(x.to_vec())),
        (-3, Value::Bytes(y.to_vec())),
    ]))
}

/// The platform's public key from its COSE_Key: EC2, P-256, x and y of 32 bytes that make a point
/// on the curve, and alg -25 if alg is given.
fn platform_key(entries: &[(Value, Value)]) -> Option<p256::PublicKey> {
    let int = |k: i64| cbor::int_key(entries, k).and_then(|v| cbor::int(v).ok());
    let coordinate = |k: i64| match cbor::int_key(entries, k) {
        Some(Value::Bytes(b)) if b.len() == 32 => Some(b.clone()),
        _ => None,
    };
    if int(1)? != 2 || int(-1)? != 1 {
        return None;
    }
    if cbor::int_key(entries, 3).is_some() && int(3)? != ALG_ECDH_ES_HKDF_256 {
        return None;
    }
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&coordinate(-2)?);
    sec1.extend_from_slice(&coordinate(-3)?);
    p256::PublicKey::from_sec1_bytes(&sec1).ok()
}

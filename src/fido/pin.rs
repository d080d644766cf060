//! The platform side of the PIN/UV auth protocols (CTAP 2.1 §6.5.4-7): key agreement with the
//! authenticator, the shared secret, encrypting the PIN hash and new PINs, decrypting the
//! pinUvAuthToken and computing pinUvAuthParam.
//!
//! Protocol 1 (§6.5.6): shared secret = SHA-256(Z.x), AES-256-CBC with a zero IV, HMAC-SHA-256
//! truncated to 16 bytes. Protocol 2 (§6.5.7): HKDF-SHA-256 (salt 32 zero bytes) gives a 32-byte
//! HMAC key ("CTAP2 HMAC key") and a 32-byte AES key ("CTAP2 AES key"), a random IV travels in
//! front of each ciphertext, and the full 32-byte HMAC is sent. Every secret is zeroized on drop.

use std::fmt;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use coset::iana;
use coset::CoseKey;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRngCore, OsRng};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::fido::cose::{ec2_p256, p256_to_cose};
use crate::{Error, Result, Secret};

/// The AES block size; PIN protocol ciphertexts are whole blocks (no padding, §6.5.6).
const BLOCK: usize = 16;
/// newPinEnc pads the PIN with zeros to 64 bytes (§6.5.5.5), so a PIN has at most 63 bytes.
const PADDED_PIN_LEN: usize = 64;
/// Shortest PIN, in Unicode code points (§6.5.1: minPINLength defaults to 4).
pub const MIN_PIN_CODE_POINTS: usize = 4;
/// Longest PIN, in UTF-8 bytes (§6.5.1).
pub const MAX_PIN_BYTES: usize = 63;

/// Permission bits of getPinUvAuthTokenUsing…WithPermissions (§6.5.5.7).
pub mod permissions {
    /// mc: authenticatorMakeCredential.
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    /// ga: authenticatorGetAssertion.
    pub const GET_ASSERTION: u8 = 0x02;
    /// cm: authenticatorCredentialManagement.
    pub const CREDENTIAL_MANAGEMENT: u8 = 0x04;
    /// be: authenticatorBioEnrollment.
    pub const BIO_ENROLLMENT: u8 = 0x08;
    /// lbw: largeBlobs write.
    pub const LARGE_BLOB_WRITE: u8 = 0x10;
    /// acfg: authenticatorConfig.
    pub const AUTHENTICATOR_CONFIG: u8 = 0x20;
}

/// A PIN/UV auth protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinProtocol {
    /// PIN/UV auth protocol 1 (§6.5.6), the only one of CTAP 2.0 keys.
    One,
    /// PIN/UV auth protocol 2 (§6.5.7), preferred when offered.
    Two,
}

/// The shared secret of one key agreement: 32 bytes (protocol 1) or HMAC key ‖ AES key, 64 bytes
/// (protocol 2). Zeroized on drop, never printed.
#[derive(Clone)]
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// The secret's bytes (the `key` of [`PinProtocol::authenticate`] for setPIN and changePIN).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

/// A decrypted pinUvAuthToken (§6.5.2) and the protocol that obtained it. Zeroized on drop.
#[derive(Clone)]
pub struct PinUvAuthToken {
    protocol: PinProtocol,
    token: Zeroizing<Vec<u8>>,
}

impl PinUvAuthToken {
    /// The protocol the token belongs to (sent as pinUvAuthProtocol beside each use).
    pub fn protocol(&self) -> PinProtocol {
        self.protocol
    }

    /// pinUvAuthParam for a command: authenticate(token, message) (§6.5.5.7; for makeCredential
    /// and getAssertion the message is the clientDataHash, §6.1.1 and §6.2.1).
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        self.protocol.authenticate(&self.token, message)
    }
}

impl fmt::Debug for PinUvAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinUvAuthToken({:?}, ..)", self.protocol)
    }
}

impl PinProtocol {
    /// The protocol's number on the wire (pinUvAuthProtocol).
    pub fn number(self) -> u8 {
        match self {
            PinProtocol::One => 1,
            PinProtocol::Two => 2,
        }
    }

    /// The protocol with this number, if Tessera speaks it.
    pub fn from_number(n: u64) -> Option<PinProtocol> {
        match n {
            1 => Some(PinProtocol::One),
            2 => Some(PinProtocol::Two),
            _ => None,
        }
    }

    /// The protocol to use with a key offering `offered` (getInfo pinUvAuthProtocols, in the key's
    /// order of preference, §6.4): 2 when offered, else 1; `None` when neither is. A CTAP 2.0 key
    /// that lists nothing but has clientPin speaks 1: the caller passes `&[1]` for it.
    pub fn choose(offered: &[u64]) -> Option<PinProtocol> {
        if offered.contains(&2) {
            Some(PinProtocol::Two)
        } else if offered.contains(&1) {
            Some(PinProtocol::One)
        } else {
            None
        }
    }

    /// encapsulate(peerCoseKey) (§6.5.6, §6.5.7) with randomness from the OS: a fresh ephemeral
    /// P-256 key, the platform's COSE key to send (alg -25, ECDH-ES+HKDF-256, as §6.5.6 says for
    /// both protocols) and the shared secret.
    pub fn encapsulate(
        self,
        authenticator_key: &p256::PublicKey,
    ) -> Result<(CoseKey, SharedSecret)> {
        self.encapsulate_with(authenticator_key, &mut OsRng)
    }

    /// [`Self::encapsulate`] with the randomness passed in (tests).
    pub fn encapsulate_with(
        self,
        authenticator_key: &p256::PublicKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(CoseKey, SharedSecret)> {
        let ephemeral = p256::ecdh::EphemeralSecret::random(rng);
        let platform = p256_to_cose(&ephemeral.public_key(), iana::Algorithm::ECDH_ES_HKDF_256);
        let z = ephemeral.diffie_hellman(authenticator_key);
        let shared = self.kdf(z.raw_secret_bytes())?;
        Ok((platform, shared))
    }

    /// kdf(Z) (§6.5.6: SHA-256(Z); §6.5.7: HKDF-SHA-256 with a salt of 32 zero bytes and the
    /// infos "CTAP2 HMAC key" and "CTAP2 AES key", 32 bytes each, concatenated). `z` is the
    /// x-coordinate of the ECDH point. Public so an authenticator side can be checked against it.
    pub fn kdf(self, z: &[u8]) -> Result<SharedSecret> {
        match self {
            PinProtocol::One => Ok(SharedSecret(Zeroizing::new(Sha256::digest(z).to_vec()))),
            PinProtocol::Two => {
                let hk = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                let mut okm = Zeroizing::new(vec![0u8; 64]);
                let (hmac_key, aes_key) = okm.split_at_mut(32);
                hk.expand(b"CTAP2 HMAC key", hmac_key)
                    .and_then(|()| hk.expand(b"CTAP2 AES key", aes_key))
                    .map_err(|_| Error::Internal("HKDF output length".into()))?;
                Ok(SharedSecret(okm))
            }
        }
    }

    /// encrypt(key, demPlaintext) (§6.5.6: AES-256-CBC, IV of zeros; §6.5.7: the AES half of the
    /// key, a random IV prepended to the ciphertext). The plaintext must be whole 16-byte blocks.
    pub fn encrypt(self, shared: &SharedSecret, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.encrypt_with(shared, plaintext, &mut OsRng)
    }

    /// [`Self::encrypt`] with the randomness passed in (tests).
    pub fn encrypt_with(
        self,
        shared: &SharedSecret,
        plaintext: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>> {
        if plaintext.is_empty() || plaintext.len() % BLOCK != 0 {
            return Err(Error::Internal(
                "PIN protocol plaintext is not whole blocks".into(),
            ));
        }
        let (key, iv) = match self {
            PinProtocol::One => (shared.as_bytes(), [0u8; BLOCK]),
            PinProtocol::Two => {
                let mut iv = [0u8; BLOCK];
                rng.fill_bytes(&mut iv);
                (shared.as_bytes().get(32..).unwrap_or_default(), iv)
            }
        };
        let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| Error::Internal("PIN protocol AES key length".into()))?;
        let ct = enc.encrypt_padded_vec_mut::<NoPadding>(plaintext);
        Ok(match self {
            PinProtocol::One => ct,
            PinProtocol::Two => [iv.as_slice(), &ct].concat(),
        })
    }

    /// decrypt(key, demCiphertext) (§6.5.6, §6.5.7). Errors: [`Error::Device`] for a ciphertext
    /// of the wrong length.
    pub fn decrypt(self, shared: &SharedSecret, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (key, iv, ct) = match self {
            PinProtocol::One => (shared.as_bytes(), [0u8; BLOCK], ciphertext),
            PinProtocol::Two => {
                let (iv, ct) = ciphertext
                    .split_first_chunk::<BLOCK>()
                    .ok_or_else(|| bad_ciphertext("shorter than its IV"))?;
                (shared.as_bytes().get(32..).unwrap_or_default(), *iv, ct)
            }
        };
        if ct.is_empty() || ct.len() % BLOCK != 0 {
            return Err(bad_ciphertext("not whole AES blocks"));
        }
        let dec = cbc::Decryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| Error::Internal("PIN protocol AES key length".into()))?;
        dec.decrypt_padded_vec_mut::<NoPadding>(ct)
            .map(Zeroizing::new)
            .map_err(|_| bad_ciphertext("not whole AES blocks"))
    }

    /// authenticate(key, message) (§6.5.6: the first 16 bytes of HMAC-SHA-256; §6.5.7: all 32,
    /// with a key longer than 32 bytes cut to its first 32, the HMAC half of a shared secret).
    pub fn authenticate(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let key = match self {
            PinProtocol::One => key,
            PinProtocol::Two => key.get(..32).unwrap_or(key),
        };
        let mac = match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            // HMAC takes keys of any length, so this cannot happen; an empty tag never verifies.
            Err(_) => Vec::new(),
        };
        match self {
            PinProtocol::One => mac.get(..16).map(<[u8]>::to_vec).unwrap_or_default(),
            PinProtocol::Two => mac,
        }
    }

    /// pinHashEnc = encrypt(shared, LEFT(SHA-256(PIN), 16)) (§6.5.5.7.2).
    /// Errors: [`Error::PinFormat`] for a PIN outside the CTAP rules ([`check_pin`]).
    pub fn pin_hash_enc(self, shared: &SharedSecret, pin: &Secret) -> Result<Vec<u8>> {
        check_pin(pin)?;
        let hash = Zeroizing::new(Sha256::digest(pin.expose().as_bytes()));
        self.encrypt(shared, hash.get(..16).unwrap_or_default())
    }

    /// newPinEnc = encrypt(shared, PIN padded with zeros to 64 bytes) (§6.5.5.5, §6.5.5.6).
    /// Errors: [`Error::PinFormat`].
    pub fn new_pin_enc(self, shared: &SharedSecret, pin: &Secret) -> Result<Vec<u8>> {
        check_pin(pin)?;
        let mut padded = Zeroizing::new(vec![0u8; PADDED_PIN_LEN]);
        let bytes = pin.expose().as_bytes();
        padded
            .get_mut(..bytes.len())
            .ok_or(Error::PinFormat("longer than 63 bytes"))?
            .copy_from_slice(bytes);
        self.encrypt(shared, &padded)
    }

    /// Decrypts the pinUvAuthToken of a getPinToken / getPinUvAuthTokenUsing… answer (§6.5.5.7):
    /// 16 or 32 bytes under protocol 1, 32 under protocol 2. Errors: [`Error::Device`].
    pub fn decrypt_token(self, shared: &SharedSecret, encrypted: &[u8]) -> Result<PinUvAuthToken> {
        let token = self.decrypt(shared, encrypted)?;
        let ok = match self {
            PinProtocol::One => token.len() == 16 || token.len() == 32,
            PinProtocol::Two => token.len() == 32,
        };
        if !ok {
            return Err(bad_ciphertext("pinUvAuthToken of an unexpected length"));
        }
        Ok(PinUvAuthToken {
            protocol: self,
            token,
        })
    }
}

/// The authenticator's key-agreement key from a getKeyAgreement answer (§6.5.5.4): an EC2 P-256
/// COSE key. Its `alg` is not checked: §6.5.6 prescribes -25 for both protocols, but some keys
/// send other values or none, and the key itself is all that matters.
pub fn authenticator_key(cose: &CoseKey) -> Result<p256::PublicKey> {
    ec2_p256(cose)
}

/// Checks a PIN against the CTAP rules (§6.5.1): valid UTF-8 (a `Secret` always is), at least
/// 4 code points, at most 63 bytes. A key may demand more (minPINLength); it then answers
/// CTAP2_ERR_PIN_POLICY_VIOLATION.
pub fn check_pin(pin: &Secret) -> Result<()> {
    let s = pin.expose();
    if s.chars().count() < MIN_PIN_CODE_POINTS {
        return Err(Error::PinFormat(
            "a security key PIN has at least 4 characters",
        ));
    }
    if s.len() > MAX_PIN_BYTES {
        return Err(Error::PinFormat("a security key PIN has at most 63 bytes"));
    }
    Ok(())
}

fn bad_ciphertext(why: &str) -> Error {
    Error::Device(format!(
        "PIN protocol ciphertext from the security key is {why}"
    ))
}

#[cfg(test)]
#[path = "pin_test.rs"]
mod tests;

//! Credential keys and credential ids. The key is non-resident only, so a credential id carries its
//! own private key: AES-256-CBC of (algorithm ‖ private key) under a key derived from the master
//! secret, and an HMAC-SHA-256 tag over the whole id and the rpIdHash it was made for. An id from
//! another key, another RP or altered in one bit does not unwrap (CTAP 2.1 §6.2.2 step 7: such
//! ids are skipped). A U2F key handle (U2F raw message formats §4.3) is the same wrap, with the
//! application parameter as the rpIdHash: both are SHA-256 of the RP identity.
//!
//! Id layout, 81 bytes (getInfo maxCredentialIdLength is 128):
//! `01` ‖ IV (16) ‖ AES-256-CBC-PKCS#7(alg (1) ‖ secret (32)) (48) ‖ LEFT(HMAC, 16).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ed25519_dalek::Signer as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::cbor::{self, Value};
use super::status::Status;
use super::{ALG_EDDSA, ALG_ES256};

const VERSION: u8 = 0x01;
const IV_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// alg byte + 32-byte secret, padded to three AES blocks.
const SEALED_LEN: usize = 48;
/// Length of every credential id this key makes.
pub(super) const CREDENTIAL_ID_LEN: usize = 1 + IV_LEN + SEALED_LEN + TAG_LEN;

/// Algorithm codes inside the sealed part.
const CODE_ES256: u8 = 1;
const CODE_EDDSA: u8 = 2;

/// A credential's private key.
pub(super) enum CredentialKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

impl CredentialKey {
    /// A fresh key for COSE algorithm `alg`, if this key supports it.
    pub(super) fn generate(alg: i64) -> Option<CredentialKey> {
        match alg {
            ALG_ES256 => Some(CredentialKey::Es256(p256::ecdsa::SigningKey::random(
                &mut OsRng,
            ))),
            ALG_EDDSA => Some(CredentialKey::EdDsa(ed25519_dalek::SigningKey::generate(
                &mut OsRng,
            ))),
            _ => None,
        }
    }

    /// The COSE algorithm identifier.
    pub(super) fn algorithm(&self) -> i64 {
        match self {
            CredentialKey::Es256(_) => ALG_ES256,
            CredentialKey::EdDsa(_) => ALG_EDDSA,
        }
    }

    /// The public key as a COSE_Key (RFC 9052 §7, RFC 9053 §7.1.1 EC2 and §7.2 OKP), as it appears
    /// in attested credential data (CTAP 2.1 §6.1, WebAuthn §6.5.1.2).
    pub(super) fn cose_public_key(&self) -> Result<Value, Status> {
        match self {
            CredentialKey::Es256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                let (Some(x), Some(y)) = (point.x(), point.y()) else {
                    return Err(Status::OTHER);
                };
                Ok(cbor::int_map(vec![
                    (1, cbor::integer(2)), // kty: EC2
                    (3, cbor::integer(ALG_ES256)),
                    (-1, cbor::integer(1)), // crv: P-256
                    (-2, Value::Bytes(x.to_vec())),
                    (-3, Value::Bytes(y.to_vec())),
                ]))
            }
            CredentialKey::EdDsa(key) => Ok(cbor::int_map(vec![
                (1, cbor::integer(1)), // kty: OKP
                (3, cbor::integer(ALG_EDDSA)),
                (-1, cbor::integer(6)), // crv: Ed25519
                (-2, Value::Bytes(key.verifying_key().to_bytes().to_vec())),
            ])),
        }
    }

    /// The public key as U2F's 65-byte uncompressed P-256 point (raw message formats §4.3); U2F
    /// knows no other algorithm.
    pub(super) fn u2f_public_key(&self) -> Option<Vec<u8>> {
        match self {
            CredentialKey::Es256(key) => Some(
                key.verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
            ),
            CredentialKey::EdDsa(_) => None,
        }
    }

    /// Signs `message`: ES256 as an ASN.1 DER ECDSA signature over SHA-256(message) (WebAuthn
    /// §6.5.6, U2F §4.3), EdDSA as the raw 64-byte Ed25519 signature (RFC 8032).
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Status> {
        match self {
            CredentialKey::Es256(key) => {
                let signature: p256::ecdsa::Signature =
                    key.try_sign(message).map_err(|_| Status::OTHER)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            CredentialKey::EdDsa(key) => Ok(key.sign(message).to_bytes().to_vec()),
        }
    }

    fn sealed(&self) -> Zeroizing<Vec<u8>> {
        let mut plain = Zeroizing::new(Vec::with_capacity(33));
        match self {
            CredentialKey::Es256(key) => {
                plain.push(CODE_ES256);
                let scalar = Zeroizing::new(key.to_bytes());
                plain.extend_from_slice(&scalar);
            }
            CredentialKey::EdDsa(key) => {
                plain.push(CODE_EDDSA);
                plain.extend_from_slice(key.as_bytes());
            }
        }
        plain
    }
}

/// The credential id of `key`, made for `rp_id_hash`, under `master`.
pub(super) fn wrap(
    master: &[u8; 32],
    key: &CredentialKey,
    rp_id_hash: &[u8; 32],
) -> Result<Vec<u8>, Status> {
    let keys = WrapKeys::derive(master)?;
    let mut iv = [0u8; IV_LEN];
    OsRng.fill_bytes(&mut iv);
    let sealed = cbc::Encryptor::<aes::Aes256>::new(keys.enc.as_ref().into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(&key.sealed());
    if sealed.len() != SEALED_LEN {
        return Err(Status::OTHER);
    }
    let mut id = Vec::with_capacity(CREDENTIAL_ID_LEN);
    id.push(VERSION);
    id.extend_from_slice(&iv);
    id.extend_from_slice(&sealed);
    let tag = keys.tag(&id, rp_id_hash)?;
    id.extend_from_slice(tag.get(..TAG_LEN).ok_or(Status::OTHER)?);
    Ok(id)
}

/// The credential key inside `id`, if `id` is one of ours made for `rp_id_hash`.
pub(super) fn unwrap(master: &[u8; 32], id: &[u8], rp_id_hash: &[u8; 32]) -> Option<CredentialKey> {
    if id.len() != CREDENTIAL_ID_LEN || id.first() != Some(&VERSION) {
        return None;
    }
    let (body, tag) = id.split_at(CREDENTIAL_ID_LEN - TAG_LEN);
    let keys = WrapKeys::derive(master).ok()?;
    let mac = keys.mac(body, rp_id_hash).ok()?;
    mac.verify_truncated_left(tag).ok()?;
    let iv = body.get(1..1 + IV_LEN)?;
    let sealed = body.get(1 + IV_LEN..)?;
    let plain = Zeroizing::new(
        cbc::Decryptor::<aes::Aes256>::new(keys.enc.as_ref().into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(sealed)
            .ok()?,
    );
    let (&code, secret) = plain.split_first()?;
    match code {
        CODE_ES256 => p256::ecdsa::SigningKey::from_slice(secret)
            .ok()
            .map(CredentialKey::Es256),
        CODE_EDDSA => {
            let secret: &[u8; 32] = secret.try_into().ok()?;
            Some(CredentialKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(
                secret,
            )))
        }
        _ => None,
    }
}

/// The two keys of the wrap, derived from the master secret with HKDF-SHA-256 (RFC 5869) under
/// distinct labels, so the encryption key never doubles as a MAC key.
struct WrapKeys {
    enc: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

impl WrapKeys {
    fn derive(master: &[u8; 32]) -> Result<WrapKeys, Status> {
        let hkdf = Hkdf::<Sha256>::new(None, master);
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        hkdf.expand(b"tessera-sim credential id encryption", enc.as_mut())
            .map_err(|_| Status::OTHER)?;
        hkdf.expand(b"tessera-sim credential id authentication", mac.as_mut())
            .map_err(|_| Status::OTHER)?;
        Ok(WrapKeys { enc, mac })
    }

    fn mac(&self, body: &[u8], rp_id_hash: &[u8; 32]) -> Result<Hmac<Sha256>, Status> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.mac.as_ref()).map_err(|_| Status::OTHER)?;
        mac.update(body);
        mac.update(rp_id_hash);
        Ok(mac)
    }

    fn tag(&self, body: &[u8], rp_id_hash: &[u8; 32]) -> Result<Vec<u8>, Status> {
        Ok(self.mac(body, rp_id_hash)?.finalize().into_bytes().to_vec())
    }
}

//! The credential public keys FIDO authenticators return, as COSE keys (RFC 9052 §7, RFC 9053
//! §7.1-2; WebAuthn §6.5.1.1): ES256 on P-256 and EdDSA on Ed25519. Others are refused, as are
//! keys whose `alg` and curve disagree. Also their stored forms and RFC 7638 thumbprints.
//! Tested with the authenticator data that carries them, in `authdata_test.rs`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ciborium::value::Value;
use coset::iana::{self, EnumI64 as _};
use coset::{CoseKey, KeyType, Label, RegisteredLabelWithPrivate};
use ed25519_dalek::Verifier as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::{Digest, Sha256};

use crate::token::jwk_thumbprint;
use crate::{Error, Result};

/// COSE algorithm ES256: ECDSA with SHA-256 (RFC 9053 §2.1).
pub const COSE_ES256: i64 = -7;
/// COSE algorithm EdDSA (RFC 9053 §2.2); with Ed25519 keys only here.
pub const COSE_EDDSA: i64 = -8;

/// A credential's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialPublicKey {
    /// ES256: ECDSA over P-256 with SHA-256; signatures are DER (WebAuthn §6.5.6).
    Es256(p256::PublicKey),
    /// EdDSA over Ed25519; signatures are the 64 raw bytes of RFC 8032.
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl CredentialPublicKey {
    /// Reads a COSE key: EC2/P-256 with alg -7, or OKP/Ed25519 with alg -8 (WebAuthn §6.5.1.1
    /// requires `alg`). Everything else is refused with [`Error::Device`].
    pub fn from_cose(key: &CoseKey) -> Result<Self> {
        let alg = match &key.alg {
            Some(RegisteredLabelWithPrivate::Assigned(a)) => a.to_i64(),
            Some(RegisteredLabelWithPrivate::PrivateUse(a)) => *a,
            Some(RegisteredLabelWithPrivate::Text(_)) | None => {
                return Err(bad_key("no integer alg"));
            }
        };
        match (&key.kty, alg) {
            (KeyType::Assigned(iana::KeyType::EC2), COSE_ES256) => Ok(Self::Es256(ec2_p256(key)?)),
            (KeyType::Assigned(iana::KeyType::OKP), COSE_EDDSA) => {
                if param(key, iana::OkpKeyParameter::Crv.to_i64())
                    != Some(&cbor_int(iana::EllipticCurve::Ed25519.to_i64()))
                {
                    return Err(bad_key("EdDSA key not on Ed25519"));
                }
                let x = param_bytes(key, iana::OkpKeyParameter::X.to_i64())?;
                let x: [u8; 32] = x
                    .try_into()
                    .map_err(|_| bad_key("Ed25519 x is not 32 bytes"))?;
                Ok(Self::EdDsa(ed25519(&x)?))
            }
            (kty, alg) => Err(bad_key(&format!(
                "unsupported key type {kty:?} with algorithm {alg}"
            ))),
        }
    }

    /// The COSE key (for tests and for simulated answers inside this crate's tests).
    pub fn to_cose(&self) -> CoseKey {
        match self {
            Self::Es256(key) => p256_to_cose(key, iana::Algorithm::ES256),
            Self::EdDsa(key) => CoseKey {
                kty: KeyType::Assigned(iana::KeyType::OKP),
                alg: Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA)),
                params: vec![
                    (
                        Label::Int(iana::OkpKeyParameter::Crv.to_i64()),
                        cbor_int(iana::EllipticCurve::Ed25519.to_i64()),
                    ),
                    (
                        Label::Int(iana::OkpKeyParameter::X.to_i64()),
                        Value::Bytes(key.to_bytes().to_vec()),
                    ),
                ],
                ..CoseKey::default()
            },
        }
    }

    /// The COSE algorithm identifier (-7 or -8).
    pub fn cose_algorithm(&self) -> i64 {
        match self {
            Self::Es256(_) => COSE_ES256,
            Self::EdDsa(_) => COSE_EDDSA,
        }
    }

    /// The algorithm's JOSE name in lower case, as enrollments record it: "es256" or "eddsa".
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Es256(_) => "es256",
            Self::EdDsa(_) => "eddsa",
        }
    }

    /// Checks `signature` over `message` (for an assertion: authenticatorData ‖ clientDataHash,
    /// WebAuthn §6.3.3 step 11; for U2F the same bytes, CTAP 2.1 §10.3). ES256 signatures are
    /// ASN.1 DER (WebAuthn §6.5.6), EdDSA signatures 64 raw bytes, checked strictly (RFC 8032
    /// §5.1.7 with canonical S and no small-order keys).
    /// Errors: [`Error::SignatureInvalid`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        match self {
            Self::Es256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| Error::SignatureInvalid("not a DER ECDSA signature"))?;
                p256::ecdsa::VerifyingKey::from(key)
                    .verify(message, &sig)
                    .map_err(|_| Error::SignatureInvalid("ES256 signature does not verify"))
            }
            Self::EdDsa(key) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| Error::SignatureInvalid("not a 64-byte Ed25519 signature"))?;
                key.verify_strict(message, &sig)
                    .map_err(|_| Error::SignatureInvalid("EdDSA signature does not verify"))
            }
        }
    }

    /// The RFC 7638 JWK thumbprint: of the EC JWK for ES256 ([`jwk_thumbprint`]), of the OKP JWK
    /// `{"crv":"Ed25519","kty":"OKP","x":…}` for EdDSA (RFC 8037 §2, §A.3).
    pub fn thumbprint(&self) -> String {
        match self {
            Self::Es256(key) => jwk_thumbprint(key),
            Self::EdDsa(key) => {
                let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
                let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
            }
        }
    }

    /// The form an enrollment stores: SEC1 uncompressed point (65 bytes) for ES256, the 32 raw
    /// bytes for EdDSA.
    pub fn to_stored(&self) -> Vec<u8> {
        match self {
            Self::Es256(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            Self::EdDsa(key) => key.to_bytes().to_vec(),
        }
    }

    /// Reads a stored key back; `algorithm` is the enrollment's ("es256" or "eddsa").
    /// Errors: [`Error::Storage`] for a key that does not parse, [`Error::InvalidArgument`] for an
    /// unknown algorithm.
    pub fn from_stored(algorithm: &str, bytes: &[u8]) -> Result<Self> {
        match algorithm {
            "es256" => {
                if bytes.first() != Some(&0x04) {
                    return Err(Error::Storage(
                        "stored ES256 key is not an uncompressed point".into(),
                    ));
                }
                p256::PublicKey::from_sec1_bytes(bytes)
                    .map(Self::Es256)
                    .map_err(|_| Error::Storage("stored ES256 key is not on P-256".into()))
            }
            "eddsa" => {
                let raw: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| Error::Storage("stored Ed25519 key is not 32 bytes".into()))?;
                ed25519(&raw)
                    .map(Self::EdDsa)
                    .map_err(|_| Error::Storage("stored Ed25519 key is invalid".into()))
            }
            other => Err(Error::InvalidArgument(format!(
                "unknown credential algorithm {other:?}"
            ))),
        }
    }
}

/// The P-256 public key of an EC2 COSE key (crv 1, x and y of 32 bytes each; RFC 9053 §7.1.1).
/// Also used for the key-agreement keys of the PIN protocols (§6.5.6).
pub fn ec2_p256(key: &CoseKey) -> Result<p256::PublicKey> {
    if key.kty != KeyType::Assigned(iana::KeyType::EC2) {
        return Err(bad_key("not an EC2 key"));
    }
    if param(key, iana::Ec2KeyParameter::Crv.to_i64())
        != Some(&cbor_int(iana::EllipticCurve::P_256.to_i64()))
    {
        return Err(bad_key("EC2 key not on P-256"));
    }
    let x = param_bytes(key, iana::Ec2KeyParameter::X.to_i64())?;
    let y = param_bytes(key, iana::Ec2KeyParameter::Y.to_i64())?;
    if x.len() != 32 || y.len() != 32 {
        return Err(bad_key("P-256 coordinates are not 32 bytes"));
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| bad_key("point not on P-256"))
}

/// An EC2 P-256 COSE key with the given `alg` (-7 for credentials, -25 for key agreement).
pub fn p256_to_cose(key: &p256::PublicKey, alg: iana::Algorithm) -> CoseKey {
    let point = key.to_encoded_point(false);
    let x = point.x().map(|x| x.to_vec()).unwrap_or_default();
    let y = point.y().map(|y| y.to_vec()).unwrap_or_default();
    let mut cose = coset::CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, x, y).build();
    cose.alg = Some(RegisteredLabelWithPrivate::Assigned(alg));
    cose
}

fn ed25519(raw: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(raw)
        .map_err(|_| bad_key("Ed25519 x is not a curve point"))?;
    if key.is_weak() {
        return Err(bad_key("Ed25519 key of small order"));
    }
    Ok(key)
}

fn param(key: &CoseKey, label: i64) -> Option<&Value> {
    key.params
        .iter()
        .find(|(l, _)| *l == Label::Int(label))
        .map(|(_, v)| v)
}

fn param_bytes(key: &CoseKey, label: i64) -> Result<&[u8]> {
    match param(key, label) {
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(bad_key(&format!("parameter {label} is not a byte string"))),
        None => Err(bad_key(&format!("parameter {label} missing"))),
    }
}

fn cbor_int(n: i64) -> Value {
    Value::Integer(n.into())
}

fn bad_key(why: &str) -> Error {
    Error::Device(format!("unusable COSE key from the security key: {why}"))
}

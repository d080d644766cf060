//! Authenticator data (WebAuthn §6.1): what a FIDO key signs, byte by byte.
//!
//! ```text
//! rpIdHash (32) ‖ flags (1) ‖ signCount (4, big-endian)
//!   [‖ attestedCredentialData: aaguid (16) ‖ L (2, big-endian) ‖ credentialId (L) ‖ COSE key]  if AT
//!   [‖ extensions (one CBOR map)]                                                              if ED
//! ```
//! Parsing is strict (trailing bytes and flag/content mismatches are errors), because the
//! daemon's verification reads the flags and counter from here.

use ciborium::value::Value;
use coset::AsCborValue as _;
use sha2::{Digest, Sha256};

pub use crate::fido::cose::CredentialPublicKey;
use crate::fido::ctap2::cbor;
use crate::{Error, Result};

/// Longest credential id accepted (WebAuthn §4, "Credential ID": at most 1023 bytes).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// The flags byte (WebAuthn §6.1, table "flags").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// Bit 0, UP: the user was present (touched the key).
    pub const UP: u8 = 0x01;
    /// Bit 2, UV: the user was verified (PIN or built-in UV).
    pub const UV: u8 = 0x04;
    /// Bit 3, BE: backup eligibility (WebAuthn Level 3).
    pub const BE: u8 = 0x08;
    /// Bit 4, BS: backup state (WebAuthn Level 3).
    pub const BS: u8 = 0x10;
    /// Bit 6, AT: attested credential data follows.
    pub const AT: u8 = 0x40;
    /// Bit 7, ED: extension data follows.
    pub const ED: u8 = 0x80;

    /// User present.
    pub fn up(self) -> bool {
        self.0 & Self::UP != 0
    }
    /// User verified.
    pub fn uv(self) -> bool {
        self.0 & Self::UV != 0
    }
    /// Attested credential data included.
    pub fn at(self) -> bool {
        self.0 & Self::AT != 0
    }
    /// Extension data included.
    pub fn ed(self) -> bool {
        self.0 & Self::ED != 0
    }
}

/// The attested credential data (WebAuthn §6.5.2), present in makeCredential answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredentialData {
    /// The authenticator model's AAGUID.
    pub aaguid: [u8; 16],
    /// The new credential's id (at most [`MAX_CREDENTIAL_ID_LEN`] bytes).
    pub credential_id: Vec<u8>,
    /// Its public key.
    pub public_key: CredentialPublicKey,
}

/// Parsed authenticator data.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatorData {
    /// SHA-256 of the relying-party id the key used ([`rp_id_hash`]).
    pub rp_id_hash: [u8; 32],
    /// The flags byte.
    pub flags: Flags,
    /// The signature counter (0 for keys without one).
    pub sign_count: u32,
    /// Present exactly when the AT flag is set.
    pub attested_credential: Option<AttestedCredentialData>,
    /// The extension outputs map, present exactly when the ED flag is set.
    pub extensions: Option<Value>,
}

impl AuthenticatorData {
    /// Parses `bytes` (WebAuthn §6.1). Errors: [`Error::Device`] saying what is wrong (too short,
    /// a flag without its data or data without its flag, a bad COSE key, trailing bytes).
    pub fn parse(bytes: &[u8]) -> Result<AuthenticatorData> {
        let mut rest = bytes;
        let rp_id_hash: [u8; 32] = take_array(&mut rest, "rpIdHash")?;
        let [flags] = take_array::<1>(&mut rest, "flags")?;
        let flags = Flags(flags);
        let sign_count = u32::from_be_bytes(take_array(&mut rest, "signCount")?);
        let attested_credential = if flags.at() {
            let aaguid: [u8; 16] = take_array(&mut rest, "aaguid")?;
            let len = usize::from(u16::from_be_bytes(take_array(
                &mut rest,
                "credentialIdLength",
            )?));
            if len > MAX_CREDENTIAL_ID_LEN {
                return Err(bad(&format!("credential id of {len} bytes")));
            }
            let (id, tail) = rest
                .split_at_checked(len)
                .ok_or_else(|| bad("credential id beyond the end"))?;
            rest = tail;
            let value = cbor::item(&mut rest, "credential public key")?;
            let cose = coset::CoseKey::from_cbor_value(value)
                .map_err(|e| bad(&format!("credential public key: {e:?}")))?;
            Some(AttestedCredentialData {
                aaguid,
                credential_id: id.to_vec(),
                public_key: CredentialPublicKey::from_cose(&cose)?,
            })
        } else {
            None
        };
        let extensions = if flags.ed() {
            let value = cbor::item(&mut rest, "authenticator data extensions")?;
            if !matches!(value, Value::Map(_)) {
                return Err(bad("extensions are not a map"));
            }
            Some(value)
        } else {
            None
        };
        if !rest.is_empty() {
            return Err(bad(&format!("{} trailing bytes", rest.len())));
        }
        Ok(AuthenticatorData {
            rp_id_hash,
            flags,
            sign_count,
            attested_credential,
            extensions,
        })
    }

    /// The byte form (WebAuthn §6.1), for tests and simulated answers: the AT and ED flags are
    /// set from the content, whatever `flags` says.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut flags = self.flags.0 & !(Flags::AT | Flags::ED);
        if self.attested_credential.is_some() {
            flags |= Flags::AT;
        }
        if self.extensions.is_some() {
            flags |= Flags::ED;
        }
        let mut out = Vec::with_capacity(37);
        out.extend_from_slice(&self.rp_id_hash);
        out.push(flags);
        out.extend_from_slice(&self.sign_count.to_be_bytes());
        if let Some(att) = &self.attested_credential {
            out.extend_from_slice(&att.aaguid);
            let len = u16::try_from(att.credential_id.len())
                .ok()
                .filter(|l| usize::from(*l) <= MAX_CREDENTIAL_ID_LEN)
                .ok_or_else(|| Error::InvalidArgument("credential id too long".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&att.credential_id);
            let key = att
                .public_key
                .to_cose()
                .to_cbor_value()
                .map_err(|e| Error::Internal(format!("encoding a COSE key: {e:?}")))?;
            out.extend(cbor::to_vec(key)?);
        }
        if let Some(ext) = &self.extensions {
            out.extend(cbor::to_vec(ext.clone())?);
        }
        Ok(out)
    }
}

/// SHA-256 of a relying-party id (WebAuthn §6.1 "rpIdHash"; for U2F the application parameter).
pub fn rp_id_hash(rp_id: &str) -> [u8; 32] {
    Sha256::digest(rp_id.as_bytes()).into()
}

/// The message an assertion signature covers: authenticatorData ‖ clientDataHash (WebAuthn
/// §6.3.3 step 11; CTAP 2.1 §6.2.2).
pub fn signed_message(auth_data_raw: &[u8], client_data_hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(auth_data_raw.len() + 32);
    m.extend_from_slice(auth_data_raw);
    m.extend_from_slice(client_data_hash);
    m
}

fn take_array<const N: usize>(rest: &mut &[u8], name: &str) -> Result<[u8; N]> {
    let (head, tail) = rest
        .split_first_chunk::<N>()
        .ok_or_else(|| bad(&format!("too short for {name}")))?;
    *rest = tail;
    Ok(*head)
}

fn bad(why: &str) -> Error {
    Error::Device(format!(
        "malformed authenticator data from the security key: {why}"
    ))
}

#[cfg(test)]
#[path = "authdata_test.rs"]
mod tests;

//! CTAP1/U2F raw messages (FIDO U2F Raw Message Formats v1.2 §4-5; CTAP 2.1 §10-11): REGISTER
//! and AUTHENTICATE as extended-length ISO 7816-4 command APDUs, and their answers parsed.
//!
//! The answer of AUTHENTICATE is laid out so that `application ‖ UP ‖ counter` is exactly the
//! head of CTAP2 authenticator data without extensions, and the signature covers that followed by
//! the challenge, as a CTAP2 assertion covers `authData ‖ clientDataHash` (CTAP 2.1 §10.3):
//! [`AuthenticateResponse::authenticator_data`] builds it, and the same verification applies.

use p256::elliptic_curve::sec1::ToEncodedPoint;

use crate::fido::authdata::{AuthenticatorData, Flags};
use crate::{Error, Result};

/// INS U2F_REGISTER (§4.1).
pub const INS_REGISTER: u8 = 0x01;
/// INS U2F_AUTHENTICATE (§5.1).
pub const INS_AUTHENTICATE: u8 = 0x02;
/// INS U2F_VERSION (§6.1).
pub const INS_VERSION: u8 = 0x03;

/// SW_NO_ERROR.
pub const SW_NO_ERROR: u16 = 0x9000;
/// SW_CONDITIONS_NOT_SATISFIED: test of user presence required (§4.3, §5.3); for a check-only
/// AUTHENTICATE it means "this key handle is mine" (§5.1).
pub const SW_CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
/// SW_WRONG_DATA: bad key handle (§5.3).
pub const SW_WRONG_DATA: u16 = 0x6A80;
/// SW_WRONG_LENGTH.
pub const SW_WRONG_LENGTH: u16 = 0x6700;
/// SW_CLA_NOT_SUPPORTED.
pub const SW_CLA_NOT_SUPPORTED: u16 = 0x6E00;
/// SW_INS_NOT_SUPPORTED.
pub const SW_INS_NOT_SUPPORTED: u16 = 0x6D00;

/// The reserved first byte of a registration answer (§4.3).
const REGISTER_RESERVED: u8 = 0x05;
/// An uncompressed P-256 point (§4.3 "user public key").
const POINT_LEN: usize = 65;

/// The outcome of a U2F command that may need a touch first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum U2fAnswer<T> {
    /// The command succeeded.
    Done(T),
    /// 6985, "test-of-user-presence-required": the key waits for a touch; send the same command
    /// again shortly (the caller retries every ~100 ms and shows "touch-needed").
    TouchNeeded,
}

/// The control byte (P1) of AUTHENTICATE (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthenticateMode {
    /// 0x03 enforce-user-presence-and-sign.
    EnforceUserPresence,
    /// 0x07 check-only: does this key hold the key handle for this application? No touch.
    CheckOnly,
    /// 0x08 dont-enforce-user-presence-and-sign.
    DontEnforceUserPresence,
}

impl AuthenticateMode {
    /// The P1 byte.
    pub fn p1(self) -> u8 {
        match self {
            AuthenticateMode::EnforceUserPresence => 0x03,
            AuthenticateMode::CheckOnly => 0x07,
            AuthenticateMode::DontEnforceUserPresence => 0x08,
        }
    }
}

/// U2F_REGISTER (§4.1): challenge parameter (the clientDataHash) and application parameter
/// (SHA-256 of the relying-party id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    pub challenge: [u8; 32],
    pub application: [u8; 32],
}

impl RegisterRequest {
    /// The extended APDU `00 01 00 00 00 00 40 challenge application 00 00` (§4.1: P1 and P2
    /// zero; Le always present, as some keys refuse a case-3 APDU).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&self.challenge);
        data.extend_from_slice(&self.application);
        extended_apdu(INS_REGISTER, 0x00, &data)
    }
}

/// A registration answer (§4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterResponse {
    /// The new credential's public key.
    pub public_key: p256::PublicKey,
    /// The key handle (the credential id), 1 to 255 bytes.
    pub key_handle: Vec<u8>,
    /// The attestation certificate, X.509 DER (not checked: Tessera keeps no attestation roots).
    pub attestation_certificate: Vec<u8>,
    /// The attestation signature over [`RegisterResponse::signed_message`], DER.
    pub signature: Vec<u8>,
}

impl RegisterResponse {
    /// Parses `data ‖ SW1 SW2`: 9000 with `05 ‖ point ‖ L ‖ key handle ‖ certificate ‖ signature`,
    /// or 6985 ([`U2fAnswer::TouchNeeded`]); other status words are errors ([`status_error`]).
    pub fn decode(data_and_sw: &[u8]) -> Result<U2fAnswer<RegisterResponse>> {
        let data = match split_sw(data_and_sw)? {
            (data, SW_NO_ERROR) => data,
            (_, SW_CONDITIONS_NOT_SATISFIED) => return Ok(U2fAnswer::TouchNeeded),
            (_, sw) => return Err(status_error(sw)),
        };
        let [reserved, rest @ ..] = data else {
            return Err(bad("empty registration answer"));
        };
        if *reserved != REGISTER_RESERVED {
            return Err(bad("registration answer without its 0x05 byte"));
        }
        let (point, rest) = rest
            .split_at_checked(POINT_LEN)
            .ok_or_else(|| bad("registration answer too short for the public key"))?;
        if point.first() != Some(&0x04) {
            return Err(bad("public key is not an uncompressed point"));
        }
        let public_key = p256::PublicKey::from_sec1_bytes(point)
            .map_err(|_| bad("public key is not on P-256"))?;
        let [kh_len, rest @ ..] = rest else {
            return Err(bad(
                "registration answer too short for the key handle length",
            ));
        };
        if *kh_len == 0 {
            return Err(bad("empty key handle"));
        }
        let (key_handle, rest) = rest
            .split_at_checked(usize::from(*kh_len))
            .ok_or_else(|| bad("key handle beyond the end"))?;
        let cert_len = der_length(rest)?;
        let (cert, signature) = rest
            .split_at_checked(cert_len)
            .ok_or_else(|| bad("attestation certificate beyond the end"))?;
        if signature.is_empty() {
            return Err(bad("registration answer without a signature"));
        }
        Ok(U2fAnswer::Done(RegisterResponse {
            public_key,
            key_handle: key_handle.to_vec(),
            attestation_certificate: cert.to_vec(),
            signature: signature.to_vec(),
        }))
    }

    /// What the attestation signature covers (§4.3): `00 ‖ application ‖ challenge ‖ key handle ‖
    /// public key`.
    pub fn signed_message(&self, request: &RegisterRequest) -> Vec<u8> {
        let mut m = Vec::with_capacity(1 + 64 + self.key_handle.len() + POINT_LEN);
        m.push(0x00);
        m.extend_from_slice(&request.application);
        m.extend_from_slice(&request.challenge);
        m.extend_from_slice(&self.key_handle);
        m.extend_from_slice(self.public_key.to_encoded_point(false).as_bytes());
        m
    }
}

/// U2F_AUTHENTICATE (§5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateRequest {
    pub mode: AuthenticateMode,
    /// The challenge parameter: the clientDataHash.
    pub challenge: [u8; 32],
    /// The application parameter: SHA-256 of the relying-party id.
    pub application: [u8; 32],
    /// The key handle from registration (at most 255 bytes).
    pub key_handle: Vec<u8>,
}

impl AuthenticateRequest {
    /// The extended APDU `00 02 P1 00 00 Lc(2) challenge application L key-handle 00 00`.
    /// Errors: [`Error::InvalidArgument`] for an empty key handle or one over 255 bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let kh_len = u8::try_from(self.key_handle.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| Error::InvalidArgument("a U2F key handle has 1 to 255 bytes".into()))?;
        let mut data = Vec::with_capacity(65 + self.key_handle.len());
        data.extend_from_slice(&self.challenge);
        data.extend_from_slice(&self.application);
        data.push(kh_len);
        data.extend_from_slice(&self.key_handle);
        extended_apdu(INS_AUTHENTICATE, self.mode.p1(), &data)
    }
}

/// An authentication answer (§5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateResponse {
    /// The user-presence byte: bit 0 set when the user touched the key; the other bits are
    /// reserved and kept as sent (they are signed).
    pub user_presence: u8,
    /// The signature counter.
    pub counter: u32,
    /// ECDSA P-256 signature, DER, over [`AuthenticateResponse::signed_message`].
    pub signature: Vec<u8>,
}

impl AuthenticateResponse {
    /// Parses `data ‖ SW1 SW2`: 9000 with `UP ‖ counter(4) ‖ signature`, or 6985
    /// ([`U2fAnswer::TouchNeeded`]); 6A80 is [`Error::NotEnrolled`] (the key does not hold this
    /// key handle for this application); other words are errors ([`status_error`]).
    pub fn decode(data_and_sw: &[u8]) -> Result<U2fAnswer<AuthenticateResponse>> {
        let data = match split_sw(data_and_sw)? {
            (data, SW_NO_ERROR) => data,
            (_, SW_CONDITIONS_NOT_SATISFIED) => return Ok(U2fAnswer::TouchNeeded),
            (_, sw) => return Err(status_error(sw)),
        };
        let [user_presence, c0, c1, c2, c3, signature @ ..] = data else {
            return Err(bad("authentication answer too short"));
        };
        if signature.is_empty() {
            return Err(bad("authentication answer without a signature"));
        }
        Ok(U2fAnswer::Done(AuthenticateResponse {
            user_presence: *user_presence,
            counter: u32::from_be_bytes([*c0, *c1, *c2, *c3]),
            signature: signature.to_vec(),
        }))
    }

    /// Whether the user touched the key (bit 0 of the user-presence byte).
    pub fn user_present(&self) -> bool {
        self.user_presence & Flags::UP != 0
    }

    /// What the signature covers (§5.4): `application ‖ UP ‖ counter ‖ challenge`, which is
    /// [`Self::authenticator_data`] followed by the challenge.
    pub fn signed_message(&self, request: &AuthenticateRequest) -> Vec<u8> {
        let mut m = self.authenticator_data_bytes(&request.application);
        m.extend_from_slice(&request.challenge);
        m
    }

    /// The answer as CTAP2 authenticator data (CTAP 2.1 §10.3): rpIdHash = application, flags =
    /// the user-presence byte, signCount = counter.
    pub fn authenticator_data(&self, application: &[u8; 32]) -> AuthenticatorData {
        AuthenticatorData {
            rp_id_hash: *application,
            flags: Flags(self.user_presence & !(Flags::AT | Flags::ED)),
            sign_count: self.counter,
            attested_credential: None,
            extensions: None,
        }
    }

    /// The 37 bytes of [`Self::authenticator_data`] exactly as signed (the user-presence byte
    /// as the key sent it).
    pub fn authenticator_data_bytes(&self, application: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(37 + 32);
        m.extend_from_slice(application);
        m.push(self.user_presence);
        m.extend_from_slice(&self.counter.to_be_bytes());
        m
    }
}

/// Reads the answer to a check-only AUTHENTICATE (§5.1): 6985 means the key holds the key
/// handle for this application, 6A80 that it does not. Anything else is an error (a 9000 would
/// be a key that signed without being asked to: refused as a protocol violation).
pub fn holds(data_and_sw: &[u8]) -> Result<bool> {
    match split_sw(data_and_sw)? {
        (_, SW_CONDITIONS_NOT_SATISFIED) => Ok(true),
        (_, SW_WRONG_DATA) => Ok(false),
        (_, SW_NO_ERROR) => Err(bad(
            "a check-only authentication was answered with a signature",
        )),
        (_, sw) => Err(status_error(sw)),
    }
}

/// The error for a U2F status word other than 9000 and 6985 (§3.3).
pub fn status_error(sw: u16) -> Error {
    match sw {
        SW_WRONG_DATA => {
            Error::NotEnrolled("the security key does not hold this credential".into())
        }
        SW_INS_NOT_SUPPORTED | SW_CLA_NOT_SUPPORTED => Error::Device(format!(
            "the security key does not speak U2F (status {sw:04X})"
        )),
        SW_WRONG_LENGTH => Error::Device("the security key refused the U2F message length".into()),
        _ => Error::Device(format!("the security key answered U2F status {sw:04X}")),
    }
}

/// `00 INS P1 00 ‖ 00 Lc(2) ‖ data ‖ 00 00` (§2.4 extended length encoding; Le 00 00 = up to 65536).
/// `data` is at most 64 + 1 + 255 bytes here; the check keeps a future caller honest.
fn extended_apdu(ins: u8, p1: u8, data: &[u8]) -> Result<Vec<u8>> {
    let lc = u16::try_from(data.len())
        .ok()
        .filter(|lc| *lc > 0)
        .ok_or_else(|| Error::Internal("U2F command data of an impossible length".into()))?;
    let mut apdu = Vec::with_capacity(4 + 3 + data.len() + 2);
    apdu.extend_from_slice(&[0x00, ins, p1, 0x00, 0x00]);
    apdu.extend_from_slice(&lc.to_be_bytes());
    apdu.extend_from_slice(data);
    apdu.extend_from_slice(&[0x00, 0x00]);
    Ok(apdu)
}

fn split_sw(data_and_sw: &[u8]) -> Result<(&[u8], u16)> {
    match data_and_sw {
        [data @ .., sw1, sw2] => Ok((data, u16::from_be_bytes([*sw1, *sw2]))),
        _ => Err(bad("answer shorter than a status word")),
    }
}

/// The length of the DER element at the front of `bytes` (tag, length and content; X.690 §8.1),
/// for finding where the attestation certificate ends. Only a SEQUENCE with a definite length is
/// accepted.
fn der_length(bytes: &[u8]) -> Result<usize> {
    let [0x30, first, rest @ ..] = bytes else {
        return Err(bad("attestation certificate is not a DER SEQUENCE"));
    };
    let (header, content) = match *first {
        n @ 0x00..=0x7F => (2, usize::from(n)),
        0x81..=0x83 => {
            let n = usize::from(*first & 0x7F);
            let len_bytes = rest
                .get(..n)
                .ok_or_else(|| bad("attestation certificate length truncated"))?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (2 + n, len)
        }
        _ => return Err(bad("attestation certificate length form not accepted")),
    };
    Ok(header + content)
}

fn bad(why: &str) -> Error {
    Error::Device(format!("malformed U2F answer from the security key: {why}"))
}

#[cfg(test)]
#[path = "u2f_test.rs"]
mod tests;

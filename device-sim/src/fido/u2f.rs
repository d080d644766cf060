//! U2F raw messages (FIDO U2F Raw Message Formats v1.2, "raw" below): VERSION, REGISTER and
//! AUTHENTICATE as ISO 7816-4 APDUs in short or extended form (raw §2.4, §3), answered with data
//! ‖ SW1 SW2. A key handle is a credential id of [`super::key`], so a credential registered here
//! signs CTAP2 assertions for the RP whose rpIdHash is this application parameter, and back.

use std::str::FromStr;
use std::time::Duration;

use der::Encode;
use hkdf::Hkdf;
use p256::ecdsa::{DerSignature, SigningKey};
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;
use zeroize::Zeroizing;

use super::get_assertion::next_counter;
use super::key::{self, CredentialKey};
use super::{FidoKey, Presence};

/// Instructions (raw §4.1, §5.1, §6.1).
const INS_REGISTER: u8 = 0x01;
const INS_AUTHENTICATE: u8 = 0x02;
const INS_VERSION: u8 = 0x03;

/// AUTHENTICATE control bytes (raw §5.1).
const CHECK_ONLY: u8 = 0x07;
const ENFORCE_USER_PRESENCE: u8 = 0x03;
const DONT_ENFORCE_USER_PRESENCE: u8 = 0x08;

/// Status words (raw §3.3).
const SW_NO_ERROR: u16 = 0x9000;
const SW_CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
const SW_WRONG_DATA: u16 = 0x6A80;
const SW_WRONG_LENGTH: u16 = 0x6700;
const SW_CLA_NOT_SUPPORTED: u16 = 0x6E00;
const SW_INS_NOT_SUPPORTED: u16 = 0x6D00;
/// ISO 7816-4 "incorrect parameters P1-P2": a control byte raw §5.1 does not define.
const SW_WRONG_P1P2: u16 = 0x6A86;
/// ISO 7816-4 "no precise diagnosis": the key failed inside.
const SW_UNKNOWN: u16 = 0x6F00;

/// REGISTER's reserved first byte (raw §4.3) and the byte before its signed data.
const REGISTER_RESERVED: u8 = 0x05;
/// AUTHENTICATE's user-presence byte (raw §5.4).
const USER_PRESENT: u8 = 0x01;

type Answer = Result<Vec<u8>, u16>;

pub(super) fn dispatch(key: &mut FidoKey, apdu: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
    let answer = answer(key, apdu, presence);
    if key.pulled {
        return Vec::new();
    }
    let (mut data, sw) = match answer {
        Ok(data) => (data, SW_NO_ERROR),
        Err(sw) => (Vec::new(), sw),
    };
    data.extend_from_slice(&sw.to_be_bytes());
    data
}

fn answer(key: &mut FidoKey, apdu: &[u8], presence: &mut dyn Presence) -> Answer {
    let Some(&[cla, ins, p1, _p2]) = apdu.get(..4) else {
        return Err(SW_WRONG_LENGTH);
    };
    if cla != 0x00 {
        return Err(SW_CLA_NOT_SUPPORTED);
    }
    if ![INS_REGISTER, INS_AUTHENTICATE, INS_VERSION].contains(&ins) {
        return Err(SW_INS_NOT_SUPPORTED);
    }
    let data = command_data(apdu.get(4..).unwrap_or(&[])).ok_or(SW_WRONG_LENGTH)?;
    match ins {
        INS_REGISTER => register(key, p1, data, presence),
        INS_AUTHENTICATE => authenticate(key, p1, data, presence),
        _ => {
            // raw §6.1: VERSION has no request data.
            if !data.is_empty() {
                return Err(SW_WRONG_LENGTH);
            }
            Ok(b"U2F_V2".to_vec())
        }
    }
}

/// The command data of an APDU body (everything after the header), ISO 7816-4 §5.1: nothing;
/// Le alone; Lc ‖ data ‖ Le?, short (one-byte lengths) or extended (raw §2.4: a zero byte, then
/// two-byte lengths). `None` when the lengths do not add up.
fn command_data(body: &[u8]) -> Option<&[u8]> {
    match body {
        [] | [_] | [0x00, _, _] => Some(&[]),
        [0x00, hi, lo, rest @ ..] => {
            let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
            let data = rest.get(..lc)?;
            // Lc 00 00 with Le is what python-fido2 sends for VERSION: no data.
            matches!(rest.len() - lc, 0 | 2).then_some(data)
        }
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            let data = rest.get(..lc)?;
            matches!(rest.len() - lc, 0 | 1).then_some(data)
        }
    }
}

/// REGISTER (raw §4): challenge parameter (32) ‖ application parameter (32). P1 is 00 in the
/// specification; 03 ("enforce user presence and sign", as browsers send it) is taken too, as
/// real keys do. Needs a touch pending now (6985 otherwise: the platform retries).
fn register(key: &mut FidoKey, p1: u8, data: &[u8], presence: &mut dyn Presence) -> Answer {
    if data.len() != 64 {
        return Err(SW_WRONG_LENGTH);
    }
    if p1 != 0x00 && p1 != ENFORCE_USER_PRESENCE {
        return Err(SW_WRONG_P1P2);
    }
    let (challenge, application) = data.split_at(32);
    let application: &[u8; 32] = application.try_into().map_err(|_| SW_WRONG_LENGTH)?;
    if !presence.touched_now() {
        return Err(SW_CONDITIONS_NOT_SATISFIED);
    }
    let master = key.state.master_secret().ok_or(SW_UNKNOWN)?;
    let credential = CredentialKey::generate(super::ALG_ES256).ok_or(SW_UNKNOWN)?;
    let handle = key::wrap(&master, &credential, application).map_err(|_| SW_UNKNOWN)?;
    let handle_len = u8::try_from(handle.len()).map_err(|_| SW_UNKNOWN)?;
    let public_key = credential.u2f_public_key().ok_or(SW_UNKNOWN)?;
    let (attestation_key, certificate) = attestation(&master)?;
    // raw §4.3: the attestation signature covers 00 ‖ application ‖ challenge ‖ key handle ‖
    // user public key.
    let signed = [&[0x00][..], application, challenge, &handle, &public_key].concat();
    let signature = CredentialKey::Es256(attestation_key)
        .sign(&signed)
        .map_err(|_| SW_UNKNOWN)?;
    Ok([
        &[REGISTER_RESERVED][..],
        &public_key,
        &[handle_len],
        &handle,
        &certificate,
        &signature,
    ]
    .concat())
}

/// AUTHENTICATE (raw §5): challenge (32) ‖ application (32) ‖ L ‖ key handle (L).
fn authenticate(key: &mut FidoKey, p1: u8, data: &[u8], presence: &mut dyn Presence) -> Answer {
    let (Some(challenge), Some(application), Some(&handle_len)) =
        (data.get(..32), data.get(32..64), data.get(64))
    else {
        return Err(SW_WRONG_LENGTH);
    };
    let handle = data.get(65..).ok_or(SW_WRONG_LENGTH)?;
    if handle.len() != usize::from(handle_len) {
        return Err(SW_WRONG_LENGTH);
    }
    let application: &[u8; 32] = application.try_into().map_err(|_| SW_WRONG_LENGTH)?;
    let master = key.state.master_secret().ok_or(SW_UNKNOWN)?;
    // U2F knows only P-256 keys: an Ed25519 credential of CTAP2 is not a key handle here.
    let credential = match key::unwrap(&master, handle, application) {
        Some(c @ CredentialKey::Es256(_)) => Some(c),
        _ => None,
    };
    let user_present = match p1 {
        // raw §5.1: "check-only": 6985 for our own key handle (it would sign after a touch),
        // 6A80 for any other.
        CHECK_ONLY => {
            return Err(if credential.is_some() {
                SW_CONDITIONS_NOT_SATISFIED
            } else {
                SW_WRONG_DATA
            })
        }
        ENFORCE_USER_PRESENCE => true,
        DONT_ENFORCE_USER_PRESENCE => false,
        _ => return Err(SW_WRONG_P1P2),
    };
    let credential = credential.ok_or(SW_WRONG_DATA)?;
    if user_present && !presence.touched_now() {
        return Err(SW_CONDITIONS_NOT_SATISFIED);
    }
    // The signing faults act on user-present signatures only, as in getAssertion.
    if user_present && key.pull_if_removed_on_sign() {
        return Err(SW_UNKNOWN);
    }
    if user_present {
        key.stall_before_signing();
    }
    let counter = next_counter(key).map_err(|_| SW_UNKNOWN)?.to_be_bytes();
    let flags = if user_present { USER_PRESENT } else { 0x00 };
    // raw §5.4: the signature covers application ‖ user presence ‖ counter ‖ challenge.
    let signed = [application, &[flags][..], &counter, challenge].concat();
    let signature = credential.sign(&signed).map_err(|_| SW_UNKNOWN)?;
    Ok([&[flags][..], &counter, &signature].concat())
}

/// The attestation key and its self-signed certificate (raw §4.3: an X.509 DER certificate). The
/// key is derived from the master secret, so it is the same for every registration of this key
/// (a batch of one) and needs no room in the state file.
fn attestation(master: &[u8; 32]) -> Result<(SigningKey, Vec<u8>), u16> {
    let mut scalar = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, master)
        .expand(b"tessera-sim U2F attestation key", scalar.as_mut())
        .map_err(|_| SW_UNKNOWN)?;
    let signing_key = SigningKey::from_slice(scalar.as_ref()).map_err(|_| SW_UNKNOWN)?;
    let certificate = self_signed(&signing_key).map_err(|e| {
        tracing::error!("U2F attestation certificate: {e:#}");
        SW_UNKNOWN
    })?;
    Ok((signing_key, certificate))
}

fn self_signed(key: &SigningKey) -> anyhow::Result<Vec<u8>> {
    let serial = SerialNumber::new(&[0x01])?;
    let validity = Validity::from_now(Duration::from_secs(10 * 365 * 24 * 3600))?;
    let subject = Name::from_str("CN=Tessera simulated FIDO key U2F attestation,O=Tessera")?;
    let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key())?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, key)?;
    Ok(builder.build::<DerSignature>()?.to_der()?)
}

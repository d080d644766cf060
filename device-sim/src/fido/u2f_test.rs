//! Tests of the U2F raw messages (FIDO U2F Raw Message Formats v1.2): VERSION, REGISTER,
//! AUTHENTICATE in its three modes, APDU forms and errors, and credentials shared with CTAP2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;
use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::platform_test::*;
use super::{FidoKey, FidoOptions, ALG_EDDSA, ALG_ES256};

fn key() -> FidoKey {
    FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    })
}

/// An extended-length APDU as U2F raw §2.4 writes it: Lc in three bytes, Le 00 00.
fn apdu(ins: u8, p1: u8, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap().to_be_bytes();
    [
        &[0x00, ins, p1, 0x00, 0x00, len[0], len[1]][..],
        data,
        &[0x00, 0x00],
    ]
    .concat()
}

fn split(answer: &[u8]) -> (&[u8], u16) {
    let (data, sw) = answer.split_at(answer.len() - 2);
    (data, u16::from_be_bytes([sw[0], sw[1]]))
}

fn app() -> [u8; 32] {
    Sha256::digest(RP.as_bytes()).into()
}

struct Registered {
    public_key: Vec<u8>,
    handle: Vec<u8>,
}

fn register(key: &mut FidoKey, p1: u8) -> Registered {
    let challenge = [0x11u8; 32];
    let answer = key.u2f(
        &apdu(0x01, p1, &[&challenge[..], &app()].concat()),
        &mut Script::touching(),
    );
    let (data, sw) = split(&answer);
    assert_eq!(sw, 0x9000);
    assert_eq!(data[0], 0x05);
    let public_key = data[1..66].to_vec();
    let len = usize::from(data[66]);
    let handle = data[67..67 + len].to_vec();
    let rest = &data[67 + len..];
    // The certificate is one DER item; the signature follows it.
    let mut reader = der::SliceReader::new(rest).unwrap();
    let cert = x509_cert::Certificate::decode(&mut reader).unwrap();
    let cert_len = usize::try_from(der::Reader::position(&reader)).unwrap();
    assert_eq!(cert.to_der().unwrap().len(), cert_len);
    let signature = Signature::from_der(&rest[cert_len..]).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let attestation = VerifyingKey::from_sec1_bytes(spki).unwrap();
    let signed = [&[0x00][..], &app(), &challenge, &handle, &public_key].concat();
    attestation.verify(&signed, &signature).unwrap();
    Registered { public_key, handle }
}

fn authenticate(key: &mut FidoKey, p1: u8, handle: &[u8], presence: &mut Script) -> (Vec<u8>, u16) {
    let challenge = [0x22u8; 32];
    let len = u8::try_from(handle.len()).unwrap();
    let answer = key.u2f(
        &apdu(0x02, p1, &[&challenge[..], &app(), &[len], handle].concat()),
        presence,
    );
    let (data, sw) = split(&answer);
    (data.to_vec(), sw)
}

fn check_signature(public_key: &[u8], data: &[u8]) {
    let signed = [&app()[..], &data[..5], &[0x22u8; 32]].concat();
    let key = VerifyingKey::from_sec1_bytes(public_key).unwrap();
    key.verify(&signed, &Signature::from_der(&data[5..]).unwrap())
        .unwrap();
}

#[test]
fn version() {
    let mut key = key();
    let p = &mut Script::touching();
    assert_eq!(key.u2f(&[0x00, 0x03, 0x00, 0x00], p), b"U2F_V2\x90\x00");
    assert_eq!(
        key.u2f(&[0x00, 0x03, 0x00, 0x00, 0x00], p),
        b"U2F_V2\x90\x00",
        "short Le"
    );
    assert_eq!(
        key.u2f(&[0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00], p),
        b"U2F_V2\x90\x00",
        "extended Le"
    );
    assert_eq!(
        key.u2f(&apdu(0x03, 0, &[]), p),
        b"U2F_V2\x90\x00",
        "Lc 0 and Le, as python-fido2 sends it"
    );
    assert_eq!(key.u2f(&apdu(0x03, 0, &[1]), p), [0x67, 0x00]);
}

#[test]
fn apdu_errors() {
    let mut key = key();
    let p = &mut Script::touching();
    assert_eq!(key.u2f(&[0x00, 0x03], p), [0x67, 0x00]);
    assert_eq!(key.u2f(&[0x80, 0x03, 0x00, 0x00], p), [0x6E, 0x00]);
    assert_eq!(key.u2f(&[0x00, 0x04, 0x00, 0x00], p), [0x6D, 0x00]);
    assert_eq!(key.u2f(&apdu(0x01, 0, &[0; 63]), p), [0x67, 0x00]);
    assert_eq!(key.u2f(&apdu(0x01, 0, &[0; 65]), p), [0x67, 0x00]);
    // Lc says more than there is; bytes after Le.
    assert_eq!(
        key.u2f(&[0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01], p),
        [0x67, 0x00]
    );
    assert_eq!(
        key.u2f(&[&apdu(0x01, 0, &[0; 64])[..], &[0]].concat(), p),
        [0x67, 0x00]
    );
    assert_eq!(key.u2f(&apdu(0x01, 0x07, &[0; 64]), p), [0x6A, 0x86]);
    assert_eq!(p.asked, 0);
    // Handle length byte disagreeing with the data.
    let mut data = vec![0u8; 64];
    data.push(5);
    data.extend_from_slice(&[1, 2, 3]);
    assert_eq!(key.u2f(&apdu(0x02, 0x03, &data), p), [0x67, 0x00]);
}

#[test]
fn register_needs_a_touch_now() {
    let mut key = key();
    let p = &mut Script::untouched();
    assert_eq!(key.u2f(&apdu(0x01, 0x00, &[0; 64]), p), [0x69, 0x85]);
    let registered = register(&mut key, 0x00);
    assert_eq!(registered.public_key.len(), 65);
    assert_eq!(registered.handle.len(), 81);
    register(&mut key, 0x03);
}

#[test]
fn authenticate_modes() {
    let mut key = key();
    let r = register(&mut key, 0x00);
    let other = register(&mut super::platform_test::make_key(), 0x00);
    // Check-only.
    assert_eq!(
        authenticate(&mut key, 0x07, &r.handle, &mut Script::touching()).1,
        0x6985
    );
    assert_eq!(
        authenticate(&mut key, 0x07, &other.handle, &mut Script::touching()).1,
        0x6A80
    );
    // Enforce: 6985 until touched, 6A80 for another key's handle.
    assert_eq!(
        authenticate(&mut key, 0x03, &r.handle, &mut Script::untouched()).1,
        0x6985
    );
    assert_eq!(
        authenticate(&mut key, 0x03, &other.handle, &mut Script::touching()).1,
        0x6A80
    );
    let (data, sw) = authenticate(&mut key, 0x03, &r.handle, &mut Script::touching());
    assert_eq!(sw, 0x9000);
    assert_eq!(data[0], 0x01);
    assert_eq!(u32::from_be_bytes(data[1..5].try_into().unwrap()), 1);
    check_signature(&r.public_key, &data);
    // Don't-enforce: no touch, presence byte 0.
    let p = &mut Script::untouched();
    let (data, sw) = authenticate(&mut key, 0x08, &r.handle, p);
    assert_eq!(sw, 0x9000);
    assert_eq!(p.asked, 0);
    assert_eq!(data[0], 0x00);
    assert_eq!(u32::from_be_bytes(data[1..5].try_into().unwrap()), 2);
    check_signature(&r.public_key, &data);
    assert_eq!(
        authenticate(&mut key, 0x04, &r.handle, &mut Script::touching()).1,
        0x6A86
    );
}

#[test]
fn credentials_cross_between_u2f_and_ctap2() {
    let mut key = FidoKey::in_memory(FidoOptions {
        pin: None,
        algorithms: vec![ALG_ES256, ALG_EDDSA],
        ..FidoOptions::default()
    });
    // U2F REGISTER, then CTAP2 getAssertion for the RP whose hash is the application.
    let r = register(&mut key, 0x00);
    let cdh = client_data_hash();
    let (status, body) = call(
        &mut key,
        0x02,
        ga_params(&cdh, &[&r.handle], vec![]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0);
    let body = body.unwrap();
    let auth_data = field(&body, 2).unwrap().as_bytes().unwrap();
    let signature = Signature::from_der(field(&body, 3).unwrap().as_bytes().unwrap()).unwrap();
    VerifyingKey::from_sec1_bytes(&r.public_key)
        .unwrap()
        .verify(&[&auth_data[..], &cdh].concat(), &signature)
        .unwrap();
    // CTAP2 makeCredential, then U2F AUTHENTICATE.
    let made = make(&mut key);
    let x = field(&made.public_key, -2).unwrap().as_bytes().unwrap();
    let y = field(&made.public_key, -3).unwrap().as_bytes().unwrap();
    let (data, sw) = authenticate(&mut key, 0x03, &made.id, &mut Script::touching());
    assert_eq!(sw, 0x9000);
    check_signature(&[&[4u8][..], x, y].concat(), &data);
    // An Ed25519 credential is not a U2F key handle.
    let algs = Value::Array(vec![tmap(vec![
        ("alg", int(-8)),
        ("type", text("public-key")),
    ])]);
    let (_, body) = call(
        &mut key,
        0x01,
        mc_params(&cdh, vec![(4, algs)]),
        &mut Script::touching(),
    );
    let ed = parse_made(field(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    assert_eq!(
        authenticate(&mut key, 0x07, &ed.id, &mut Script::touching()).1,
        0x6A80
    );
}

#[test]
fn short_apdus_work_too() {
    let mut key = key();
    let mut short = vec![0x00, 0x01, 0x00, 0x00, 64];
    short.extend_from_slice(&[0x11; 32]);
    short.extend_from_slice(&app());
    short.push(0x00);
    let (_, sw) = split(&key.u2f(&short, &mut Script::touching()).clone());
    assert_eq!(sw, 0x9000);
}

#[test]
fn remove_on_sign_in_u2f() {
    let mut key = FidoKey::in_memory(FidoOptions {
        pin: None,
        fault: Some(super::FidoFault::RemoveOnSign),
        ..FidoOptions::default()
    });
    let r = register(&mut key, 0x00);
    assert_eq!(
        authenticate(&mut key, 0x08, &r.handle, &mut Script::touching()).1,
        0x9000
    );
    assert!(key
        .u2f(
            &apdu(
                0x02,
                0x03,
                &[&[0x22u8; 32][..], &app(), &[81], &r.handle].concat()
            ),
            &mut Script::touching()
        )
        .is_empty());
    assert!(key.pulled());
}

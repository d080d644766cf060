#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use p256::ecdsa::signature::Signer as _;

use super::*;
use crate::fido::authdata::{rp_id_hash, CredentialPublicKey};

fn key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x31; 32]).unwrap()
}

fn with_sw(mut data: Vec<u8>, sw: u16) -> Vec<u8> {
    data.extend_from_slice(&sw.to_be_bytes());
    data
}

fn register_request() -> RegisterRequest {
    RegisterRequest {
        challenge: [0xCC; 32],
        application: rp_id_hash("pam://tessera"),
    }
}

/// A certificate-shaped DER SEQUENCE with a `len`-byte body.
fn fake_cert(len: usize) -> Vec<u8> {
    let mut c = vec![0x30];
    match len {
        0..=0x7F => c.push(len as u8),
        0x80..=0xFF => c.extend_from_slice(&[0x81, len as u8]),
        _ => c.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    c.extend(std::iter::repeat_n(0xEE, len));
    c
}

fn register_answer(cert: &[u8], kh: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let sk = key();
    let point = sk.verifying_key().to_encoded_point(false);
    let mut data = vec![0x05];
    data.extend_from_slice(point.as_bytes());
    data.push(kh.len() as u8);
    data.extend_from_slice(kh);
    data.extend_from_slice(cert);
    let sig: p256::ecdsa::Signature = sk.sign(b"attestation");
    let der = sig.to_der().as_bytes().to_vec();
    data.extend_from_slice(&der);
    (with_sw(data, 0x9000), der)
}

#[test]
fn register_request_bytes() {
    let apdu = register_request().encode().unwrap();
    assert_eq!(hex::encode(&apdu[..7]), "00010000000040");
    assert_eq!(&apdu[7..39], &[0xCC; 32]);
    assert_eq!(&apdu[39..71], &rp_id_hash("pam://tessera"));
    assert_eq!(&apdu[71..], &[0x00, 0x00]);
    assert_eq!(apdu.len(), 73);
}

#[test]
fn authenticate_request_bytes() {
    for (mode, p1) in [
        (AuthenticateMode::EnforceUserPresence, 0x03),
        (AuthenticateMode::CheckOnly, 0x07),
        (AuthenticateMode::DontEnforceUserPresence, 0x08),
    ] {
        let req = AuthenticateRequest {
            mode,
            challenge: [0x01; 32],
            application: [0x02; 32],
            key_handle: vec![0x03; 64],
        };
        let apdu = req.encode().unwrap();
        assert_eq!(&apdu[..7], &[0x00, 0x02, p1, 0x00, 0x00, 0x00, 0x81]);
        assert_eq!(&apdu[7..39], &[0x01; 32]);
        assert_eq!(&apdu[39..71], &[0x02; 32]);
        assert_eq!(apdu[71], 64);
        assert_eq!(&apdu[72..136], &[0x03; 64]);
        assert_eq!(&apdu[136..], &[0x00, 0x00]);
    }
    let mut req = AuthenticateRequest {
        mode: AuthenticateMode::CheckOnly,
        challenge: [0; 32],
        application: [0; 32],
        key_handle: vec![],
    };
    assert!(req.encode().is_err());
    req.key_handle = vec![0; 256];
    assert!(req.encode().is_err());
    req.key_handle = vec![0; 255];
    assert!(req.encode().is_ok());
}

#[test]
fn register_answer_parses_with_each_certificate_length_form() {
    for cert_len in [0x20, 0xF0, 0x1F0] {
        let cert = fake_cert(cert_len);
        let kh = vec![0x4B; 70];
        let (answer, sig) = register_answer(&cert, &kh);
        let U2fAnswer::Done(r) = RegisterResponse::decode(&answer).unwrap() else {
            panic!("touch needed?")
        };
        assert_eq!(r.key_handle, kh);
        assert_eq!(r.attestation_certificate, cert);
        assert_eq!(r.signature, sig);
        assert_eq!(r.public_key, p256::PublicKey::from(key().verifying_key()));
        let m = r.signed_message(&register_request());
        assert_eq!(m[0], 0x00);
        assert_eq!(&m[1..33], &register_request().application);
        assert_eq!(&m[33..65], &[0xCC; 32]);
        assert_eq!(&m[65..135], kh.as_slice());
        assert_eq!(m.len(), 1 + 64 + 70 + 65);
    }
}

#[test]
fn register_answer_refusals() {
    let cert = fake_cert(0x40);
    let (good, _) = register_answer(&cert, &[1; 16]);
    let data = &good[..good.len() - 2];
    let mut wrong_reserved = good.clone();
    wrong_reserved[0] = 0x04;
    let mut zero_kh = good.clone();
    zero_kh[66] = 0;
    let mut not_seq = good.clone();
    not_seq[67 + 16] = 0x31;
    let mut bad_point = good.clone();
    bad_point[1] = 0x02;
    let no_sig = with_sw(data[..67 + 16 + cert.len()].to_vec(), 0x9000);
    let mut long_cert = data[..67 + 16].to_vec();
    long_cert.extend_from_slice(&[0x30, 0x82, 0xFF, 0xFF, 0x00]);
    for (name, answer) in [
        ("reserved byte", wrong_reserved),
        ("zero key handle", zero_kh),
        ("not a SEQUENCE", not_seq),
        ("compressed point marker", bad_point),
        ("no signature", no_sig),
        ("certificate beyond the end", with_sw(long_cert, 0x9000)),
        ("empty", with_sw(vec![], 0x9000)),
        ("truncated", with_sw(data[..40].to_vec(), 0x9000)),
        ("no status word", vec![0x90]),
    ] {
        assert!(RegisterResponse::decode(&answer).is_err(), "{name}");
    }
    assert_eq!(
        RegisterResponse::decode(&[0x69, 0x85]).unwrap(),
        U2fAnswer::TouchNeeded
    );
    assert!(matches!(
        RegisterResponse::decode(&[0x6D, 0x00]),
        Err(Error::Device(_))
    ));
}

#[test]
fn authenticate_answer_verifies_as_authenticator_data() {
    let sk = key();
    let req = AuthenticateRequest {
        mode: AuthenticateMode::EnforceUserPresence,
        challenge: [0x5C; 32],
        application: rp_id_hash("pam://tessera"),
        key_handle: vec![9; 32],
    };
    let mut signed = req.application.to_vec();
    signed.push(0x01);
    signed.extend_from_slice(&[0, 0, 0, 42]);
    signed.extend_from_slice(&req.challenge);
    let sig: p256::ecdsa::Signature = sk.sign(&signed);
    let der = sig.to_der().as_bytes().to_vec();
    let mut data = vec![0x01, 0, 0, 0, 42];
    data.extend_from_slice(&der);
    let U2fAnswer::Done(r) = AuthenticateResponse::decode(&with_sw(data, 0x9000)).unwrap() else {
        panic!()
    };
    assert!(r.user_present());
    assert_eq!(r.counter, 42);
    assert_eq!(r.signed_message(&req), signed);
    let pk = CredentialPublicKey::Es256(p256::PublicKey::from(sk.verifying_key()));
    pk.verify(&r.signed_message(&req), &r.signature).unwrap();
    // The same bytes are CTAP2 authenticator data followed by the clientDataHash.
    let ad_raw = r.authenticator_data_bytes(&req.application);
    let ad = crate::fido::authdata::AuthenticatorData::parse(&ad_raw).unwrap();
    assert_eq!(ad, r.authenticator_data(&req.application));
    assert!(ad.flags.up());
    assert_eq!(ad.sign_count, 42);
    pk.verify(
        &crate::fido::authdata::signed_message(&ad_raw, &req.challenge),
        &r.signature,
    )
    .unwrap();
}

#[test]
fn authenticate_status_words() {
    assert_eq!(
        AuthenticateResponse::decode(&[0x69, 0x85]).unwrap(),
        U2fAnswer::TouchNeeded
    );
    assert!(matches!(
        AuthenticateResponse::decode(&[0x6A, 0x80]),
        Err(Error::NotEnrolled(_))
    ));
    assert!(AuthenticateResponse::decode(&with_sw(vec![1, 0, 0, 0, 1], 0x9000)).is_err());
    assert!(AuthenticateResponse::decode(&with_sw(vec![1, 0, 0], 0x9000)).is_err());
    assert!(AuthenticateResponse::decode(&[0x90]).is_err());
    assert!(holds(&[0x69, 0x85]).unwrap());
    assert!(!holds(&[0x6A, 0x80]).unwrap());
    assert!(holds(&[0x01, 0x90, 0x00]).is_err());
    assert!(holds(&[0x67, 0x00]).is_err());
}

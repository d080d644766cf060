#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ciborium::value::Value;
use coset::iana;
use coset::{AsCborValue as _, CoseKey, KeyType, Label, RegisteredLabelWithPrivate};
use ed25519_dalek::Signer as _;

use super::*;
use crate::fido::ctap2::cbor;

fn es256_key() -> (p256::ecdsa::SigningKey, CredentialPublicKey) {
    let sk = p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap();
    let pk = CredentialPublicKey::Es256(p256::PublicKey::from(sk.verifying_key()));
    (sk, pk)
}

fn eddsa_key() -> (ed25519_dalek::SigningKey, CredentialPublicKey) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[0x22; 32]);
    let pk = CredentialPublicKey::EdDsa(sk.verifying_key());
    (sk, pk)
}

fn with_credential(public_key: CredentialPublicKey) -> AuthenticatorData {
    AuthenticatorData {
        rp_id_hash: rp_id_hash("pam://tessera"),
        flags: Flags(Flags::UP | Flags::UV | Flags::AT),
        sign_count: 0x0102_0304,
        attested_credential: Some(AttestedCredentialData {
            aaguid: [0xAA; 16],
            credential_id: vec![0xC1; 48],
            public_key,
        }),
        extensions: None,
    }
}

fn cose_bytes(key: CoseKey) -> Vec<u8> {
    cbor::to_vec(key.to_cbor_value().unwrap()).unwrap()
}

/// authData with attested credential data whose COSE key is `key` (bytes as given).
fn raw_with_key(key: &[u8]) -> Vec<u8> {
    let mut raw = vec![0x55; 32];
    raw.push(Flags::UP | Flags::AT);
    raw.extend_from_slice(&[0, 0, 0, 1]);
    raw.extend_from_slice(&[0; 16]);
    raw.extend_from_slice(&[0, 2, 0xAB, 0xCD]);
    raw.extend_from_slice(key);
    raw
}

#[test]
fn layout_of_an_assertion_without_credential() {
    let mut raw = vec![0x42; 32];
    raw.push(0x05); // UP | UV
    raw.extend_from_slice(&[0x00, 0x00, 0x01, 0x00]);
    let ad = AuthenticatorData::parse(&raw).unwrap();
    assert_eq!(ad.rp_id_hash, [0x42; 32]);
    assert!(ad.flags.up() && ad.flags.uv() && !ad.flags.at() && !ad.flags.ed());
    assert_eq!(ad.sign_count, 256);
    assert!(ad.attested_credential.is_none() && ad.extensions.is_none());
    assert_eq!(ad.to_bytes().unwrap(), raw);
}

#[test]
fn round_trips_with_attested_credential_both_algorithms() {
    for pk in [es256_key().1, eddsa_key().1] {
        let ad = with_credential(pk);
        let raw = ad.to_bytes().unwrap();
        assert_eq!(raw[32], Flags::UP | Flags::UV | Flags::AT);
        assert_eq!(&raw[33..37], &[1, 2, 3, 4]);
        assert_eq!(&raw[53..55], &[0, 48]);
        let parsed = AuthenticatorData::parse(&raw).unwrap();
        assert_eq!(parsed, ad);
    }
}

#[test]
fn the_cose_key_is_canonical() {
    let (_, pk) = es256_key();
    let bytes = cose_bytes(pk.to_cose());
    // {1: 2, 3: -7, -1: 1, -2: x, -3: y}
    assert_eq!(&bytes[..7], &[0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01]);
    assert_eq!(&bytes[7..10], &[0x21, 0x58, 0x20]);
    assert_eq!(&bytes[42..45], &[0x22, 0x58, 0x20]);
    assert_eq!(bytes.len(), 77);
    let (_, pk) = eddsa_key();
    let bytes = cose_bytes(pk.to_cose());
    // {1: 1, 3: -8, -1: 6, -2: x}
    assert_eq!(
        &bytes[..10],
        &[0xA4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20]
    );
}

#[test]
fn with_extensions() {
    let mut ad = with_credential(es256_key().1);
    ad.flags.0 |= Flags::ED;
    ad.extensions = Some(Value::Map(vec![(cbor::text("credProtect"), cbor::int(1))]));
    let raw = ad.to_bytes().unwrap();
    assert_eq!(raw[32] & Flags::ED, Flags::ED);
    assert_eq!(AuthenticatorData::parse(&raw).unwrap(), ad);
    // ED set but extensions not a map.
    let mut bad = raw[..37].to_vec();
    bad[32] = Flags::UP | Flags::ED;
    bad.push(0x01);
    assert!(AuthenticatorData::parse(&bad).is_err());
    // ED set, nothing there.
    bad.pop();
    assert!(AuthenticatorData::parse(&bad).is_err());
}

#[test]
fn strict_about_lengths() {
    let raw = with_credential(es256_key().1).to_bytes().unwrap();
    for cut in [0, 31, 32, 36, 40, 54, 60, raw.len() - 1] {
        assert!(
            AuthenticatorData::parse(&raw[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut long = raw.clone();
    long.push(0);
    assert!(AuthenticatorData::parse(&long).is_err());
    // AT set on a bare 37 bytes.
    let mut bare = raw[..37].to_vec();
    assert!(AuthenticatorData::parse(&bare).is_err());
    // Attested data present but AT clear: trailing bytes.
    bare[32] = Flags::UP;
    bare.extend_from_slice(&raw[37..]);
    assert!(AuthenticatorData::parse(&bare).is_err());
    // A credential id over 1023 bytes.
    let mut ad = with_credential(es256_key().1);
    ad.attested_credential.as_mut().unwrap().credential_id = vec![0; 1024];
    assert!(ad.to_bytes().is_err());
    let mut raw = raw_with_key(&[]);
    raw[53] = 0x04;
    raw[54] = 0x00;
    assert!(AuthenticatorData::parse(&raw).is_err());
}

#[test]
fn refuses_other_and_mismatched_keys() {
    let (_, es) = es256_key();
    let good = es.to_cose();
    assert!(AuthenticatorData::parse(&raw_with_key(&cose_bytes(good.clone()))).is_ok());

    let mut eddsa_alg_on_ec2 = good.clone();
    eddsa_alg_on_ec2.alg = Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA));
    let mut no_alg = good.clone();
    no_alg.alg = None;
    let mut p384 = good.clone();
    p384.params[0].1 = cbor::int(iana::EllipticCurve::P_384 as i64);
    let mut short_x = good.clone();
    short_x.params[1].1 = Value::Bytes(vec![1; 31]);
    let mut off_curve = good.clone();
    off_curve.params[2].1 = Value::Bytes(vec![1; 32]);
    let mut rs256 = good.clone();
    rs256.kty = KeyType::Assigned(iana::KeyType::RSA);
    rs256.alg = Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::RS256));
    let (_, ed) = eddsa_key();
    let mut es256_alg_on_okp = ed.to_cose();
    es256_alg_on_okp.alg = Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256));
    let mut x25519 = ed.to_cose();
    x25519.params[0].1 = cbor::int(iana::EllipticCurve::X25519 as i64);
    let mut small_order = ed.to_cose();
    // The identity point (y = 1) has small order.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    small_order.params[1] = (
        Label::Int(iana::OkpKeyParameter::X as i64),
        Value::Bytes(identity.to_vec()),
    );
    for (name, key) in [
        ("eddsa alg on EC2", eddsa_alg_on_ec2),
        ("no alg", no_alg),
        ("P-384", p384),
        ("short x", short_x),
        ("off curve", off_curve),
        ("RSA", rs256),
        ("es256 alg on OKP", es256_alg_on_okp),
        ("X25519", x25519),
        ("small order", small_order),
    ] {
        let raw = raw_with_key(&cose_bytes(key));
        assert!(AuthenticatorData::parse(&raw).is_err(), "{name}");
    }
    // Not CBOR at all, and a COSE key that is not a map.
    assert!(AuthenticatorData::parse(&raw_with_key(&[0xFF])).is_err());
    assert!(AuthenticatorData::parse(&raw_with_key(&[0x01])).is_err());
}

#[test]
fn verifies_es256_and_eddsa_signatures() {
    let cdh = [0x33; 32];
    let raw = [0x44; 37];
    let message = signed_message(&raw, &cdh);
    assert_eq!(message.len(), 69);

    let (sk, pk) = es256_key();
    let sig: p256::ecdsa::Signature = sk.sign(&message);
    let der = sig.to_der();
    pk.verify(&message, der.as_bytes()).unwrap();
    assert!(matches!(
        pk.verify(&message[1..], der.as_bytes()),
        Err(Error::SignatureInvalid(_))
    ));
    assert!(
        pk.verify(&message, &sig.to_bytes()).is_err(),
        "raw r||s is not DER"
    );

    let (sk, pk) = eddsa_key();
    let sig = sk.sign(&message).to_bytes();
    pk.verify(&message, &sig).unwrap();
    let mut flipped = sig;
    flipped[0] ^= 1;
    assert!(pk.verify(&message, &flipped).is_err());
    assert!(pk.verify(&message, &sig[..63]).is_err());
    // An ES256 signature is not accepted for an EdDSA key and the other way round.
    assert!(es256_key().1.verify(&message, &sig).is_err());
}

/// RFC 8037 §A.3: the thumbprint of the Ed25519 key of §A.1.
#[test]
fn okp_thumbprint_matches_rfc8037() {
    let x = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap();
    let key = CredentialPublicKey::from_stored("eddsa", &x).unwrap();
    assert_eq!(
        key.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn es256_thumbprint_is_the_jwk_one() {
    let (_, pk) = es256_key();
    let CredentialPublicKey::Es256(p) = &pk else {
        panic!()
    };
    assert_eq!(pk.thumbprint(), crate::token::jwk_thumbprint(p));
}

#[test]
fn stored_forms_round_trip() {
    for pk in [es256_key().1, eddsa_key().1] {
        let stored = pk.to_stored();
        let back = CredentialPublicKey::from_stored(pk.algorithm(), &stored).unwrap();
        assert_eq!(back, pk);
    }
    assert_eq!(es256_key().1.to_stored().len(), 65);
    assert_eq!(es256_key().1.to_stored()[0], 0x04);
    assert_eq!(eddsa_key().1.to_stored().len(), 32);
    assert_eq!(es256_key().1.algorithm(), "es256");
    assert_eq!(eddsa_key().1.cose_algorithm(), -8);
    assert!(CredentialPublicKey::from_stored("es256", &[0x04; 10]).is_err());
    assert!(CredentialPublicKey::from_stored("eddsa", &[0x01; 31]).is_err());
    assert!(matches!(
        CredentialPublicKey::from_stored("rs256", &[]),
        Err(Error::InvalidArgument(_))
    ));
    // A compressed ES256 point is not the stored form.
    let CredentialPublicKey::Es256(p) = es256_key().1 else {
        panic!()
    };
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let compressed = p.to_encoded_point(true);
    assert!(CredentialPublicKey::from_stored("es256", compressed.as_bytes()).is_err());
}

#[test]
fn rp_id_hash_is_sha256() {
    // SHA-256("") and a known value.
    assert_eq!(
        hex::encode(rp_id_hash("")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex::encode(rp_id_hash("abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

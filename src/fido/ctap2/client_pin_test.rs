#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;
use coset::iana;

use super::*;
use crate::fido::cose::p256_to_cose;
use crate::fido::ctap2::cbor::{int, text};

fn platform_key() -> CoseKey {
    let sk = p256::SecretKey::from_slice(&[0x21; 32]).unwrap();
    p256_to_cose(&sk.public_key(), iana::Algorithm::ECDH_ES_HKDF_256)
}

#[test]
fn small_subcommands_byte_by_byte() {
    let hex = |c: ClientPin| hex::encode(c.encode().unwrap());
    assert_eq!(
        hex(ClientPin::GetPinRetries {
            protocol: Some(PinProtocol::Two)
        }),
        "06a201020201"
    );
    assert_eq!(hex(ClientPin::GetPinRetries { protocol: None }), "06a10201");
    assert_eq!(
        hex(ClientPin::GetKeyAgreement {
            protocol: PinProtocol::One
        }),
        "06a201010202"
    );
    assert_eq!(hex(ClientPin::GetUvRetries), "06a10207");
}

#[test]
fn token_with_permissions_in_canonical_order() {
    let key = platform_key();
    let req = ClientPin::GetPinUvAuthTokenUsingPinWithPermissions {
        protocol: PinProtocol::Two,
        key_agreement: key.clone(),
        pin_hash_enc: vec![0xEE; 32],
        permissions: crate::fido::pin::permissions::GET_ASSERTION,
        rp_id: Some("a".into()),
    };
    let bytes = req.encode().unwrap();
    let cose = hex::encode(cbor::to_vec(key.to_cbor_value().unwrap()).unwrap());
    // The COSE key itself: {1: 2, 3: -25, -1: 1, -2: x, -3: y}.
    assert!(cose.starts_with("a5010203381820012158"), "{cose}");
    let expected = format!(
        "06a60102020903{cose}065820{ee}0902 0a6161",
        ee = "ee".repeat(32)
    )
    .replace(' ', "");
    assert_eq!(hex::encode(bytes), expected);
    assert_eq!(req.subcommand(), 0x09);
    assert_eq!(format!("{req:?}"), "ClientPin(subcommand 0x09, ..)");
}

#[test]
fn every_subcommand_encodes_its_members() {
    let key = platform_key();
    let cases = [
        (
            ClientPin::SetPin {
                protocol: PinProtocol::One,
                key_agreement: key.clone(),
                new_pin_enc: vec![1; 64],
                pin_uv_auth_param: vec![2; 16],
            },
            vec![1, 2, 3, 4, 5],
        ),
        (
            ClientPin::ChangePin {
                protocol: PinProtocol::One,
                key_agreement: key.clone(),
                pin_hash_enc: vec![3; 16],
                new_pin_enc: vec![1; 64],
                pin_uv_auth_param: vec![2; 16],
            },
            vec![1, 2, 3, 4, 5, 6],
        ),
        (
            ClientPin::GetPinToken {
                protocol: PinProtocol::One,
                key_agreement: key.clone(),
                pin_hash_enc: vec![3; 16],
            },
            vec![1, 2, 3, 6],
        ),
        (
            ClientPin::GetPinUvAuthTokenUsingUvWithPermissions {
                protocol: PinProtocol::Two,
                key_agreement: key.clone(),
                permissions: 0x03,
                rp_id: None,
            },
            vec![1, 2, 3, 9],
        ),
    ];
    for (req, keys) in cases {
        let bytes = req.encode().unwrap();
        assert_eq!(bytes[0], 0x06);
        let Value::Map(map) = cbor::from_slice(&bytes[1..], "x").unwrap() else {
            panic!()
        };
        let got: Vec<i64> = map
            .iter()
            .map(|(k, _)| cbor::integer(k.clone(), "x", "k").unwrap())
            .collect();
        assert_eq!(got, keys, "{req:?}");
    }
    let zero = ClientPin::GetPinUvAuthTokenUsingUvWithPermissions {
        protocol: PinProtocol::Two,
        key_agreement: key,
        permissions: 0,
        rp_id: None,
    };
    assert!(zero.encode().is_err());
}

fn answer(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(cbor::to_vec(Value::Map(map)).unwrap());
    out
}

#[test]
fn decodes_responses() {
    let sk = p256::SecretKey::from_slice(&[0x22; 32]).unwrap();
    // Some keys send alg -25, some other values: the key is what counts.
    let mut cose = p256_to_cose(&sk.public_key(), iana::Algorithm::ECDH_ES_HKDF_256);
    cose.alg = None;
    let r =
        ClientPinResponse::decode(&answer(vec![(int(1), cose.to_cbor_value().unwrap())])).unwrap();
    assert_eq!(r.need_key_agreement().unwrap(), sk.public_key());
    assert!(r.need_pin_retries().is_err());

    let r = ClientPinResponse::decode(&answer(vec![(int(3), int(7)), (int(4), Value::Bool(true))]))
        .unwrap();
    assert_eq!(r.need_pin_retries().unwrap(), 7);
    assert_eq!(r.power_cycle_state, Some(true));
    let r = ClientPinResponse::decode(&answer(vec![(int(2), Value::Bytes(vec![9; 48]))])).unwrap();
    assert_eq!(r.need_pin_uv_auth_token().unwrap(), &[9; 48]);
    assert!(format!("{r:?}").contains("pin_uv_auth_token: true"));
    assert!(!format!("{r:?}").contains('9'));
    let r = ClientPinResponse::decode(&answer(vec![(int(5), int(3))])).unwrap();
    assert_eq!(r.need_uv_retries().unwrap(), 3);
    // setPIN answers with the status alone.
    assert_eq!(
        ClientPinResponse::decode(&[0x00]).unwrap(),
        ClientPinResponse::default()
    );
}

#[test]
fn refuses_malformed_responses() {
    let ed = crate::fido::cose::CredentialPublicKey::EdDsa(
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(),
    );
    for (name, map) in [
        ("retries text", vec![(int(3), text("8"))]),
        ("retries over 255", vec![(int(3), int(256))]),
        ("token not bytes", vec![(int(2), int(1))]),
        ("power cycle not bool", vec![(int(4), int(1))]),
        ("key agreement not a key", vec![(int(1), int(1))]),
        (
            "key agreement not EC2",
            vec![(int(1), ed.to_cose().to_cbor_value().unwrap())],
        ),
    ] {
        assert!(ClientPinResponse::decode(&answer(map)).is_err(), "{name}");
    }
    assert!(matches!(
        ClientPinResponse::decode(&[0x31]),
        Err(crate::Error::PinInvalid { retries: 0 })
    ));
    assert!(matches!(
        ClientPinResponse::decode(&[0x32]),
        Err(crate::Error::PinBlocked)
    ));
    match ClientPinResponse::decode(&[0x34]) {
        Err(crate::Error::Device(m)) => assert!(m.contains("unplug")),
        other => panic!("{other:?}"),
    }
}

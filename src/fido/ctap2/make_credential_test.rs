#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;

use super::*;
use crate::fido::authdata::{rp_id_hash, CredentialPublicKey, Flags};
use crate::fido::ctap2::cbor::{int, text};
use crate::fido::pin::PinProtocol;

fn request() -> MakeCredential {
    MakeCredential {
        client_data_hash: [0; 32],
        rp_id: "a".into(),
        rp_name: None,
        user_id: vec![0x07],
        user_name: None,
        user_display_name: None,
        algorithms: vec![-7],
        exclude_list: vec![vec![0x01]],
        rk: false,
        uv: None,
        pin_uv_auth: None,
    }
}

const PUBLIC_KEY_HEX: &str = "6a7075626c69632d6b6579";

/// The exact canonical bytes, written out by hand from RFC 8949 §3 and CTAP 2.1 §8.
#[test]
fn canonical_bytes_of_a_small_request() {
    let expected = format!(
        "01a5\
         015820{zeros}\
         02a162696461 61\
         03a16269644107\
         0481a263616c67266474797065{pk}\
         0581a26269644101 6474797065{pk}",
        zeros = "00".repeat(32),
        pk = PUBLIC_KEY_HEX
    )
    .replace(' ', "");
    assert_eq!(hex::encode(request().encode().unwrap()), expected);
}

#[test]
fn options_pin_and_user_names() {
    let mut req = request();
    req.exclude_list.clear();
    req.user_name = Some("alice".into());
    req.user_display_name = Some("Alice".into());
    req.rp_name = Some("T".into());
    req.algorithms = vec![-7, -8];
    req.uv = Some(true);
    req.rk = true;
    req.pin_uv_auth = Some(PinUvAuth {
        protocol: PinProtocol::Two,
        param: vec![0xAB; 32],
    });
    let hex = hex::encode(req.encode().unwrap());
    let expected = format!(
        "01a7\
         015820{zeros}\
         02a26269646161646e616d656154\
         03a36269644107646e616d6565616c6963656b646973706c61794e616d6565416c696365\
         0482a263616c67266474797065{pk}a263616c67276474797065{pk}\
         07a262726bf5627576f5\
         085820{ab}\
         0902",
        zeros = "00".repeat(32),
        ab = "ab".repeat(32),
        pk = PUBLIC_KEY_HEX
    );
    assert_eq!(hex, expected);
}

#[test]
fn refuses_bad_requests() {
    let mut req = request();
    req.user_id = vec![];
    assert!(req.encode().is_err());
    req.user_id = vec![0; 65];
    assert!(req.encode().is_err());
    let mut req = request();
    req.algorithms.clear();
    assert!(req.encode().is_err());
}

fn auth_data(with_credential: bool) -> Vec<u8> {
    let sk = p256::SecretKey::from_slice(&[0x44; 32]).unwrap();
    AuthenticatorData {
        rp_id_hash: rp_id_hash("a"),
        flags: Flags(Flags::UP),
        sign_count: 1,
        attested_credential: with_credential.then(|| AttestedCredentialData {
            aaguid: [0; 16],
            credential_id: vec![0xC0; 16],
            public_key: CredentialPublicKey::Es256(sk.public_key()),
        }),
        extensions: None,
    }
    .to_bytes()
    .unwrap()
}

fn answer(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(cbor::to_vec(Value::Map(map)).unwrap());
    out
}

#[test]
fn decodes_an_attestation_object() {
    let raw = auth_data(true);
    let att_stmt = Value::Map(vec![
        (text("alg"), int(-7)),
        (text("sig"), Value::Bytes(vec![1])),
    ]);
    let r = MakeCredentialResponse::decode(&answer(vec![
        (int(1), text("packed")),
        (int(2), Value::Bytes(raw.clone())),
        (int(3), att_stmt.clone()),
        (int(4), Value::Bool(false)),
        (int(5), Value::Bytes(vec![0; 32])),
    ]))
    .unwrap();
    assert_eq!(r.fmt, "packed");
    assert_eq!(r.auth_data_raw, raw);
    assert_eq!(r.att_stmt, att_stmt);
    assert_eq!(r.enterprise_attestation, Some(false));
    let c = r.credential().unwrap();
    assert_eq!(c.credential_id, vec![0xC0; 16]);
    assert_eq!(c.public_key.algorithm(), "es256");
}

#[test]
fn refuses_malformed_attestation_objects() {
    let good = |raw: Vec<u8>| {
        vec![
            (int(1), text("none")),
            (int(2), Value::Bytes(raw)),
            (int(3), Value::Map(vec![])),
        ]
    };
    assert!(MakeCredentialResponse::decode(&answer(good(auth_data(true)))).is_ok());
    let mut no_fmt = good(auth_data(true));
    no_fmt.remove(0);
    let mut fmt_int = good(auth_data(true));
    fmt_int[0].1 = int(1);
    let mut stmt_array = good(auth_data(true));
    stmt_array[2].1 = Value::Array(vec![]);
    let mut auth_text = good(auth_data(true));
    auth_text[1].1 = text("x");
    for (name, map) in [
        ("no credential", good(auth_data(false))),
        ("no fmt", no_fmt),
        ("fmt an int", fmt_int),
        ("attStmt an array", stmt_array),
        ("authData text", auth_text),
    ] {
        assert!(
            MakeCredentialResponse::decode(&answer(map)).is_err(),
            "{name}"
        );
    }
    assert!(matches!(
        MakeCredentialResponse::decode(&[0x19]),
        Err(crate::Error::InvalidArgument(_))
    ));
    assert!(matches!(
        MakeCredentialResponse::decode(&[0x36]),
        Err(crate::Error::PinRequired)
    ));
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;

use super::*;
use crate::fido::authdata::{rp_id_hash, Flags};
use crate::fido::ctap2::cbor::{int, text};
use crate::fido::pin::PinProtocol;

fn request() -> GetAssertion {
    GetAssertion {
        rp_id: "a".into(),
        client_data_hash: [0; 32],
        allow_list: vec![vec![0x01]],
        up: false,
        uv: None,
        pin_uv_auth: None,
    }
}

/// The silent pre-flight, written out by hand (RFC 8949 §3, CTAP 2.1 §8).
#[test]
fn canonical_bytes_of_the_pre_flight() {
    let expected = format!(
        "02a4\
         016161\
         025820{}\
         0381a2626964410164747970656a7075626c69632d6b6579\
         05a1627570f4",
        "00".repeat(32)
    );
    assert_eq!(hex::encode(request().encode().unwrap()), expected);
}

#[test]
fn with_touch_uv_and_pin() {
    let mut req = request();
    req.up = true;
    req.uv = Some(false);
    req.allow_list.push(vec![0x02, 0x03]);
    req.pin_uv_auth = Some(PinUvAuth {
        protocol: PinProtocol::One,
        param: vec![0xAB; 16],
    });
    let expected = format!(
        "02a6\
         016161\
         025820{}\
         0382a262696441016474797065{pk}a2626964420203 6474797065{pk}\
         05a1627576f4\
         0650{}\
         0701",
        "00".repeat(32),
        "ab".repeat(16),
        pk = "6a7075626c69632d6b6579"
    )
    .replace(' ', "");
    assert_eq!(hex::encode(req.encode().unwrap()), expected);
    req.up = true;
    req.uv = None;
    req.pin_uv_auth = None;
    // No options map at all when up is true and uv unset.
    assert!(!hex::encode(req.encode().unwrap()).contains("05a1"));
    req.allow_list.clear();
    assert!(req.encode().is_err());
    assert_eq!(GetNextAssertion.encode().unwrap(), vec![0x08]);
}

fn raw_auth_data() -> Vec<u8> {
    let mut raw = rp_id_hash("a").to_vec();
    raw.push(Flags::UP);
    raw.extend_from_slice(&[0, 0, 0, 9]);
    raw
}

fn descriptor(id: &[u8], ty: &str) -> Value {
    Value::Map(vec![
        (text("id"), Value::Bytes(id.to_vec())),
        (text("type"), text(ty)),
    ])
}

fn answer(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(cbor::to_vec(Value::Map(map)).unwrap());
    out
}

#[test]
fn decodes_an_assertion() {
    let r = GetAssertionResponse::decode(&answer(vec![
        (int(1), descriptor(&[0x02, 0x03], "public-key")),
        (int(2), Value::Bytes(raw_auth_data())),
        (int(3), Value::Bytes(vec![0x30, 0x00])),
        (
            int(4),
            Value::Map(vec![(text("id"), Value::Bytes(vec![0x55]))]),
        ),
        (int(5), int(2)),
        (int(6), Value::Bool(true)),
        (int(7), Value::Bytes(vec![0; 32])),
    ]))
    .unwrap();
    assert_eq!(r.credential_id.as_deref(), Some(&[0x02, 0x03][..]));
    assert_eq!(r.auth_data_raw, raw_auth_data());
    assert_eq!(r.auth_data.sign_count, 9);
    assert!(r.auth_data.flags.up());
    assert_eq!(r.signature, vec![0x30, 0x00]);
    assert_eq!(r.user_id, Some(vec![0x55]));
    assert_eq!(r.number_of_credentials, Some(2));
    assert_eq!(r.user_selected, Some(true));
    let list = vec![vec![0x01], vec![0x02, 0x03]];
    assert_eq!(r.credential(&list).unwrap(), &[0x02, 0x03]);
    assert!(r.credential(&[vec![0x01]]).is_err(), "not asked for");
}

#[test]
fn a_missing_credential_is_the_single_allowed_one() {
    let r = GetAssertionResponse::decode(&answer(vec![
        (int(2), Value::Bytes(raw_auth_data())),
        (int(3), Value::Bytes(vec![1])),
    ]))
    .unwrap();
    assert_eq!(r.credential_id, None);
    assert_eq!(r.credential(&[vec![0x09]]).unwrap(), &[0x09]);
    assert!(r.credential(&[vec![0x09], vec![0x0A]]).is_err());
}

#[test]
fn refuses_malformed_assertions() {
    let good = || {
        vec![
            (int(1), descriptor(&[1], "public-key")),
            (int(2), Value::Bytes(raw_auth_data())),
            (int(3), Value::Bytes(vec![1])),
        ]
    };
    let mut no_sig = good();
    no_sig.remove(2);
    let mut no_auth = good();
    no_auth.remove(1);
    let mut wrong_type = good();
    wrong_type[0].1 = descriptor(&[1], "password");
    let mut id_text = good();
    id_text[0].1 = Value::Map(vec![
        (text("id"), text("x")),
        (text("type"), text("public-key")),
    ]);
    let mut short_auth = good();
    short_auth[1].1 = Value::Bytes(vec![0; 36]);
    let mut sig_text = good();
    sig_text[2].1 = text("sig");
    let mut count_negative = good();
    count_negative.push((int(5), int(-1)));
    let mut user_no_id = good();
    user_no_id.push((int(4), Value::Map(vec![(text("name"), text("x"))])));
    for (name, map) in [
        ("no signature", no_sig),
        ("no authData", no_auth),
        ("credential type", wrong_type),
        ("credential id text", id_text),
        ("short authData", short_auth),
        ("signature text", sig_text),
        ("negative count", count_negative),
        ("user without id", user_no_id),
    ] {
        assert!(
            GetAssertionResponse::decode(&answer(map)).is_err(),
            "{name}"
        );
    }
    assert!(matches!(
        GetAssertionResponse::decode(&[0x2E]),
        Err(crate::Error::NotEnrolled(_))
    ));
    assert!(matches!(
        GetAssertionResponse::decode(&[0x27]),
        Err(crate::Error::Device(_))
    ));
}

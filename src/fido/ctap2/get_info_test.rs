#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;

use super::*;
use crate::fido::ctap2::cbor::{int, text};
use crate::Error;

fn answer(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(cbor::to_vec(Value::Map(map)).unwrap());
    out
}

fn minimal() -> Vec<(Value, Value)> {
    vec![
        (int(1), Value::Array(vec![text("FIDO_2_0")])),
        (int(3), Value::Bytes(vec![0xA1; 16])),
    ]
}

#[test]
fn request_is_the_command_byte() {
    assert_eq!(GetInfo.encode().unwrap(), vec![0x04]);
}

/// A CTAP 2.0 key's answer, written out byte by byte (RFC 8949 §3): versions, aaguid, options.
#[test]
fn decodes_a_hand_written_answer() {
    let bytes = hex::decode(concat!(
        "00",
        "a3",
        "01",
        "82",
        "66",
        "5532465f5632",
        "68",
        "4649444f5f325f30",
        "03",
        "50",
        "000102030405060708090a0b0c0d0e0f",
        "04",
        "a2",
        "62",
        "726b",
        "f4",
        "69",
        "636c69656e7450696e",
        "f5",
    ))
    .unwrap();
    let info = Info::decode(&bytes).unwrap();
    assert_eq!(info.versions, ["U2F_V2", "FIDO_2_0"]);
    assert!(info.has_version("U2F_V2") && !info.is_ctap21());
    assert_eq!(
        info.aaguid,
        *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
    );
    assert_eq!(info.option("rk"), Some(false));
    assert_eq!(info.option("clientPin"), Some(true));
    assert_eq!(info.option("up"), Some(true), "default");
    assert_eq!(info.option("uv"), None, "default: absent");
    assert_eq!(info.option("plat"), Some(false), "default");
    assert_eq!(info.max_msg_size(), 1024, "default");
    assert!(info.pin_uv_auth_protocols.is_empty() && info.algorithms.is_empty());
}

#[test]
fn decodes_every_member() {
    let mut map = minimal();
    map[0].1 = Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")]);
    map.extend([
        (int(2), Value::Array(vec![text("credProtect")])),
        (
            int(4),
            Value::Map(vec![
                (text("clientPin"), Value::Bool(false)),
                (text("pinUvAuthToken"), Value::Bool(true)),
                (text("uv"), Value::Bool(true)),
                (text("up"), Value::Bool(false)),
            ]),
        ),
        (int(5), int(7609)),
        (int(6), Value::Array(vec![int(2), int(1)])),
        (int(7), int(8)),
        (int(8), int(128)),
        (int(9), Value::Array(vec![text("usb"), text("nfc")])),
        (
            int(0x0A),
            Value::Array(vec![
                Value::Map(vec![
                    (text("alg"), int(-8)),
                    (text("type"), text("public-key")),
                ]),
                Value::Map(vec![
                    (text("alg"), int(-7)),
                    (text("type"), text("public-key")),
                ]),
                Value::Map(vec![(text("alg"), int(-7)), (text("type"), text("future"))]),
            ]),
        ),
        (int(0x0C), Value::Bool(false)),
        (int(0x0D), int(6)),
        (int(0x0E), int(0x050403)),
        (int(0x11), int(3)),
        (int(0x12), int(2)),
        // Unknown members are ignored, whatever their type.
        (int(0x13), Value::Map(vec![(text("FIPS-CMVP-2"), int(2))])),
        (int(0x7F), Value::Null),
        (text("vendor"), Value::Null),
    ]);
    let info = Info::decode(&answer(map)).unwrap();
    assert!(info.is_ctap21());
    assert_eq!(info.extensions, ["credProtect"]);
    assert_eq!(info.option("clientPin"), Some(false));
    assert_eq!(info.option("up"), Some(false));
    assert_eq!(info.option("uv"), Some(true));
    assert_eq!(info.max_msg_size(), 7609);
    assert_eq!(info.pin_uv_auth_protocols, [2, 1]);
    assert_eq!(info.max_credential_count_in_list, Some(8));
    assert_eq!(info.max_credential_id_length, Some(128));
    assert_eq!(info.transports, ["usb", "nfc"]);
    assert_eq!(info.algorithms, [-8, -7]);
    assert_eq!(info.force_pin_change, Some(false));
    assert_eq!(info.min_pin_length, Some(6));
    assert_eq!(info.firmware_version, Some(0x050403));
    assert_eq!(info.preferred_platform_uv_attempts, Some(3));
    assert_eq!(info.uv_modality, Some(2));
}

#[test]
fn wrong_types_and_missing_members_are_refused() {
    let cases: Vec<(&str, Vec<(Value, Value)>)> = vec![
        ("no versions", vec![(int(3), Value::Bytes(vec![0; 16]))]),
        ("no aaguid", vec![(int(1), Value::Array(vec![]))]),
        ("short aaguid", {
            let mut m = minimal();
            m[1].1 = Value::Bytes(vec![0; 15]);
            m
        }),
        ("versions not text", {
            let mut m = minimal();
            m[0].1 = Value::Array(vec![int(2)]);
            m
        }),
        ("option not bool", {
            let mut m = minimal();
            m.push((int(4), Value::Map(vec![(text("rk"), int(1))])));
            m
        }),
        ("option key not text", {
            let mut m = minimal();
            m.push((int(4), Value::Map(vec![(int(1), Value::Bool(true))])));
            m
        }),
        ("negative maxMsgSize", {
            let mut m = minimal();
            m.push((int(5), int(-1)));
            m
        }),
        ("maxMsgSize text", {
            let mut m = minimal();
            m.push((int(5), text("7609")));
            m
        }),
        ("protocols not array", {
            let mut m = minimal();
            m.push((int(6), int(2)));
            m
        }),
        ("algorithm without alg", {
            let mut m = minimal();
            m.push((
                int(0x0A),
                Value::Array(vec![Value::Map(vec![(text("type"), text("public-key"))])]),
            ));
            m
        }),
        ("duplicate key", {
            let mut m = minimal();
            m.push((int(1), Value::Array(vec![])));
            m
        }),
    ];
    for (name, map) in cases {
        assert!(
            matches!(Info::decode(&answer(map)), Err(Error::Device(_))),
            "{name}"
        );
    }
    // Not a map, trailing bytes, empty body, a status error.
    assert!(Info::decode(&[0x00, 0x80]).is_err());
    let mut trailing = answer(minimal());
    trailing.push(0x00);
    assert!(Info::decode(&trailing).is_err());
    assert!(Info::decode(&[0x00]).is_err());
    assert!(matches!(Info::decode(&[0x01]), Err(Error::Device(_))));
}

//! Tests of the canonical CBOR encoder and the strict request decoder (CTAP 2.1 §8), with byte
//! dumps written out by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::cbor::{self, Value};
use super::status::Status;

#[test]
fn map_keys_in_canonical_order() {
    let value = Value::Map(vec![
        (Value::Text("clientPin".into()), Value::Bool(true)),
        (Value::Text("up".into()), Value::Bool(true)),
        (cbor::integer(24), Value::Null),
        (Value::Bytes(vec![0]), Value::Null),
        (cbor::integer(-1), Value::Null),
        (Value::Text("rk".into()), Value::Bool(false)),
        (cbor::integer(10), Value::Null),
        (cbor::integer(1), Value::Null),
    ]);
    let expected = [
        0xA8, // map of 8
        0x01, 0xF6, // 1: null
        0x0A, 0xF6, // 10
        0x18, 0x18, 0xF6, // 24 (two bytes: after the one-byte integers)
        0x20, 0xF6, // -1 (major type 1 after 0)
        0x41, 0x00, 0xF6, // h'00' (major type 2)
        0x62, b'r', b'k', 0xF4, // "rk" before "up": same length, bytewise
        0x62, b'u', b'p', 0xF5, //
        0x69, b'c', b'l', b'i', b'e', b'n', b't', b'P', b'i', b'n', 0xF5, // longer text last
    ];
    assert_eq!(cbor::encode(value).unwrap(), expected);
}

#[test]
fn nested_maps_are_sorted_too() {
    let value = cbor::int_map(vec![(
        1,
        Value::Array(vec![cbor::text_map(vec![
            ("type", Value::Text("public-key".into())),
            ("alg", cbor::integer(-7)),
        ])]),
    )]);
    let bytes = cbor::encode(value).unwrap();
    assert_eq!(
        &bytes[..9],
        &[0xA1, 0x01, 0x81, 0xA2, 0x63, b'a', b'l', b'g', 0x26]
    );
}

#[test]
fn canonical_requests_parse_and_others_do_not() {
    // {1: h'0102', 2: {"id": "x"}}
    let good = [
        0xA2, 0x01, 0x42, 0x01, 0x02, 0x02, 0xA1, 0x62, b'i', b'd', 0x61, b'x',
    ];
    let mut params = cbor::parameters(&good).unwrap();
    assert_eq!(cbor::bytes(params.require(1).unwrap()).unwrap(), [1, 2]);
    assert!(params.take(1).is_none(), "taken once");
    assert_eq!(params.require(3).err(), Some(Status::MISSING_PARAMETER));
    for bad in [
        &[0xA2, 0x02, 0x00, 0x01, 0x00][..],         // keys descending
        &[0xA1, 0x01, 0x59, 0x00, 0x01, 0xAA],       // byte string with a long length form
        &[0xA1, 0x01, 0x5F, 0x41, 0xAA, 0xFF],       // indefinite byte string
        &[0xA1, 0x01, 0xA2, 0x01, 0x00, 0x01, 0x00], // duplicate key in a nested map
    ] {
        assert_eq!(
            cbor::parameters(bad).err(),
            Some(Status::INVALID_CBOR),
            "{bad:02x?}"
        );
    }
    // A float in its shortest form (half precision 1.0) is canonical; a longer form is not.
    assert!(cbor::parameters(&[0xA1, 0x01, 0xF9, 0x3C, 0x00]).is_ok());
    let single = [0xA1, 0x01, 0xFA, 0x3F, 0x80, 0x00, 0x00];
    assert_eq!(cbor::parameters(&single).err(), Some(Status::INVALID_CBOR));
    // Negative and text keys are no parameters.
    assert_eq!(
        cbor::parameters(&[0xA1, 0x20, 0x00]).err(),
        Some(Status::CBOR_UNEXPECTED_TYPE)
    );
}

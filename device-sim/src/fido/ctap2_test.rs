//! Tests of the CTAP2 command layer: getInfo, selection, reset, getNextAssertion, and the strict
//! CBOR of requests (CTAP 2.1 §8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ciborium::value::Value;

use super::platform_test::*;
use super::{FidoKey, FidoOptions, Touch, ALG_EDDSA, ALG_ES256};

fn no_pin() -> FidoKey {
    FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    })
}

#[test]
fn get_info_lists_what_the_key_does() {
    let mut key = FidoKey::in_memory(FidoOptions {
        algorithms: vec![ALG_ES256, ALG_EDDSA],
        ..FidoOptions::default()
    });
    let answer = key.cbor(&[0x04], &mut Script::touching());
    assert_eq!(answer[0], 0x00);
    let info = decode(&answer[1..]);
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_text().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        texts(field(&info, 1).unwrap()),
        ["U2F_V2", "FIDO_2_0", "FIDO_2_1"]
    );
    assert_eq!(field(&info, 2), Some(&Value::Array(vec![])));
    assert_eq!(
        field(&info, 3).unwrap().as_bytes().unwrap(),
        &super::DEFAULT_AAGUID
    );
    let options = field(&info, 4).unwrap().as_map().unwrap();
    let names: Vec<_> = options.iter().map(|(k, _)| k.as_text().unwrap()).collect();
    assert_eq!(names, ["rk", "up", "clientPin", "pinUvAuthToken"]);
    let values: Vec<_> = options.iter().map(|(_, v)| v.as_bool().unwrap()).collect();
    assert_eq!(values, [false, true, true, true]);
    assert_eq!(field(&info, 5), Some(&int(1200)));
    assert_eq!(field(&info, 6), Some(&Value::Array(vec![int(2), int(1)])));
    assert_eq!(field(&info, 7), Some(&int(8)));
    assert_eq!(field(&info, 8), Some(&int(128)));
    assert_eq!(texts(field(&info, 9).unwrap()), ["usb", "nfc"]);
    let algs = field(&info, 0x0A).unwrap().as_array().unwrap();
    assert_eq!(algs.len(), 2);
    assert_eq!(text_field(&algs[0], "alg"), Some(&int(-7)));
    assert_eq!(text_field(&algs[1], "alg"), Some(&int(-8)));
    assert_eq!(text_field(&algs[1], "type"), Some(&text("public-key")));
    // Canonical: "alg" before "type", keys ascending; the bytes are what a canonical encoder writes.
    let keys: Vec<_> = algs[0]
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_text().unwrap())
        .collect();
    assert_eq!(keys, ["alg", "type"]);
    assert_eq!(request(0, info)[1..], answer[1..]);
}

#[test]
fn get_info_of_a_key_without_pin_says_client_pin_false() {
    let mut key = no_pin();
    let info = decode(&key.cbor(&[0x04], &mut Script::touching())[1..]);
    let options = field(&info, 4).unwrap();
    assert_eq!(text_field(options, "clientPin"), Some(&Value::Bool(false)));
    // ES256 only by default.
    assert_eq!(field(&info, 0x0A).unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn u2f_only_key_knows_no_cbor() {
    let mut key = FidoKey::in_memory(FidoOptions {
        u2f_only: true,
        ..FidoOptions::default()
    });
    assert!(!key.speaks_cbor());
    assert_eq!(key.cbor(&[0x04], &mut Script::touching()), [0x01]);
    assert_eq!(
        key.u2f(&[0, 3, 0, 0], &mut Script::touching()),
        b"U2F_V2\x90\x00"
    );
}

#[test]
fn malformed_requests_are_refused_as_such() {
    let mut key = no_pin();
    let p = &mut Script::touching();
    assert_eq!(key.cbor(&[], p), [0x03], "empty request: invalid length");
    assert_eq!(key.cbor(&[0x42], p), [0x01], "unknown command");
    assert_eq!(
        key.cbor(&[0x04, 0xA0], p),
        [0x03],
        "getInfo takes no parameters"
    );
    // Top level not a map.
    assert_eq!(key.cbor(&[0x02, 0x80], p), [0x11]);
    // Truncated, trailing bytes, map keys out of order, duplicate keys, non-shortest integer,
    // indefinite length: all CTAP2_ERR_INVALID_CBOR.
    for body in [
        &[0xA1, 0x01][..],
        &[0xA1, 0x01, 0x01, 0x00],
        &[0xA2, 0x02, 0x01, 0x01, 0x01],
        &[0xA2, 0x01, 0x01, 0x01, 0x01],
        &[0xA1, 0x18, 0x01, 0x01],
        &[0xBF, 0x01, 0x01, 0xFF],
    ] {
        assert_eq!(
            key.cbor(&[&[0x02][..], body].concat(), p),
            [0x12],
            "{body:02x?}"
        );
    }
    // Text keys at the top level are not parameters.
    assert_eq!(key.cbor(&[0x02, 0xA1, 0x61, b'a', 0x01], p), [0x11]);
    // Nesting deeper than four levels.
    let deep = imap(vec![(
        5,
        Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::Array(
            vec![],
        )])])]),
    )]);
    assert_eq!(key.cbor(&request(0x02, deep), p), [0x12]);
    // More than maxMsgSize.
    let big = imap(vec![(1, bytes(&[0u8; 1300]))]);
    assert_eq!(key.cbor(&request(0x01, big), p), [0x03]);
    assert_eq!(p.asked, 0, "nothing malformed asks for a touch");
}

#[test]
fn selection_waits_for_the_touch() {
    let mut key = no_pin();
    assert_eq!(key.cbor(&[0x0B], &mut Script::touching()), [0x00]);
    assert_eq!(
        key.cbor(&[0x0B], &mut Script::always(Touch::Cancelled)),
        [0x2D]
    );
    assert_eq!(
        key.cbor(&[0x0B], &mut Script::always(Touch::TimedOut)),
        [0x2F]
    );
}

#[test]
fn get_next_assertion_is_not_allowed() {
    let mut key = no_pin();
    assert_eq!(key.cbor(&[0x08], &mut Script::touching()), [0x30]);
}

#[test]
fn reset_wipes_the_key_within_ten_seconds_of_power_up() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let made = make_with_pin(&mut key);
    assert_eq!(key.sign_count(), 1);
    assert_eq!(
        key.cbor(&[0x07], &mut Script::always(Touch::Cancelled)),
        [0x2D]
    );
    assert_eq!(
        key.cbor(&[0x07], &mut Script::always(Touch::TimedOut)),
        [0x2F]
    );
    assert_eq!(key.cbor(&[0x07], &mut Script::touching()), [0x00]);
    assert_eq!(key.sign_count(), 0);
    let info = decode(&key.cbor(&[0x04], &mut Script::touching())[1..]);
    assert_eq!(
        text_field(field(&info, 4).unwrap(), "clientPin"),
        Some(&Value::Bool(false))
    );
    // The master secret is new: the old credential is not ours any more.
    let (status, _) = call(
        &mut key,
        0x02,
        ga_params(&client_data_hash(), &[&made.id], vec![]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0x2E);
}

#[test]
fn reset_later_than_ten_seconds_is_not_allowed_until_a_power_cycle() {
    let mut key = no_pin();
    key.pretend_powered_up(Duration::from_secs(11));
    let p = &mut Script::touching();
    assert_eq!(key.cbor(&[0x07], p), [0x30]);
    assert_eq!(p.asked, 0);
    key.power_cycle();
    assert_eq!(key.cbor(&[0x07], p), [0x00]);
}

#[test]
fn fault_spellings_parse() {
    use super::FidoFault;
    assert_eq!(
        "stall-on-sign=250".parse::<FidoFault>().unwrap(),
        FidoFault::StallOnSign(250)
    );
    assert_eq!(
        "remove-on-sign".parse::<FidoFault>().unwrap(),
        FidoFault::RemoveOnSign
    );
    assert_eq!(
        "counter-regression".parse::<FidoFault>().unwrap(),
        FidoFault::CounterRegression
    );
    assert_eq!(
        "malformed-cbor".parse::<FidoFault>().unwrap(),
        FidoFault::MalformedCbor
    );
    assert_eq!(
        "truncated-message".parse::<FidoFault>().unwrap(),
        FidoFault::TruncatedMessage
    );
    assert_eq!(
        "oversized-message".parse::<FidoFault>().unwrap(),
        FidoFault::OversizedMessage
    );
    assert!("stall-on-sign=x".parse::<FidoFault>().is_err());
    assert!("nope".parse::<FidoFault>().is_err());
}

#[test]
fn algorithms_in_the_order_given_without_unknown_or_repeated_ones() {
    let mut key = FidoKey::in_memory(FidoOptions {
        algorithms: vec![ALG_EDDSA, -257, ALG_EDDSA, ALG_ES256],
        ..FidoOptions::default()
    });
    let info = decode(&key.cbor(&[0x04], &mut Script::touching())[1..]);
    let algs: Vec<_> = field(&info, 0x0A)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| text_field(a, "alg").unwrap().clone())
        .collect();
    assert_eq!(algs, [int(-8), int(-7)]);
    let mut none = FidoKey::in_memory(FidoOptions {
        algorithms: vec![],
        ..FidoOptions::default()
    });
    let info = decode(&none.cbor(&[0x04], &mut Script::touching())[1..]);
    assert_eq!(field(&info, 0x0A).unwrap().as_array().unwrap().len(), 1);
}

//! Tests of authenticatorClientPIN (CTAP 2.1 §6.5) with both PIN/UV auth protocols: retries,
//! key agreement, setPIN, changePIN, tokens and permissions, blocking and power cycles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;

use super::platform_test::*;
use super::{FidoKey, FidoOptions};

fn client_pin(key: &mut FidoKey, params: Vec<(i64, Value)>) -> (u8, Option<Value>) {
    call(key, 0x06, imap(params), &mut Script::touching())
}

fn retries(key: &mut FidoKey) -> (i64, bool) {
    let (status, body) = client_pin(key, vec![(1, int(2)), (2, int(1))]);
    assert_eq!(status, 0);
    let body = body.unwrap();
    let n = i64::try_from(i128::from(field(&body, 3).unwrap().as_integer().unwrap())).unwrap();
    (n, field(&body, 4).unwrap().as_bool().unwrap())
}

#[test]
fn get_pin_retries_and_key_agreement() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    assert_eq!(retries(&mut key), (8, false));
    // getPINRetries needs no protocol.
    assert_eq!(client_pin(&mut key, vec![(2, int(1))]).0, 0);
    // Key agreement for both protocols (the COSE key is checked by the platform helper).
    key_agreement(&mut key, 1);
    key_agreement(&mut key, 2);
    assert_eq!(client_pin(&mut key, vec![(2, int(2))]).0, 0x14);
    assert_eq!(client_pin(&mut key, vec![(1, int(3)), (2, int(2))]).0, 0x02);
    assert_eq!(
        client_pin(&mut key, vec![(1, int(2))]).0,
        0x14,
        "no subcommand"
    );
    assert_eq!(
        client_pin(&mut key, vec![(1, int(2)), (2, int(0x42))]).0,
        0x3E
    );
    assert_eq!(
        client_pin(&mut key, vec![(1, int(2)), (2, int(6))]).0,
        0x3E,
        "no built-in UV"
    );
    assert_eq!(client_pin(&mut key, vec![(1, int(2)), (2, int(7))]).0, 0x3E);
    assert_eq!(
        client_pin(&mut key, vec![(1, text("2")), (2, int(1))]).0,
        0x11
    );
    assert_eq!(
        client_pin(&mut key, vec![(1, int(2)), (2, int(3)), (3, bytes(&[1]))]).0,
        0x11
    );
}

#[test]
fn set_pin_with_either_protocol() {
    for protocol in [1u8, 2] {
        let mut key = FidoKey::in_memory(FidoOptions {
            pin: None,
            ..FidoOptions::default()
        });
        assert_eq!(token(&mut key, protocol, "1234", Some(1), None), Err(0x35));
        assert_eq!(
            set_pin(&mut key, protocol, b"123"),
            0x37,
            "three code points are too few"
        );
        assert_eq!(
            set_pin(&mut key, protocol, &[b'1'; 64]),
            0x37,
            "64 bytes leave no padding"
        );
        assert_eq!(
            set_pin(&mut key, protocol, "ÄÖÜß".as_bytes()),
            0x00,
            "four code points, eight bytes"
        );
        assert_eq!(
            set_pin(&mut key, protocol, b"5678"),
            0x33,
            "already set: §6.5.5.5 step 3"
        );
        assert!(token(&mut key, protocol, "ÄÖÜß", Some(1), None).is_ok());
        let info = decode(&key.cbor(&[0x04], &mut Script::touching())[1..]);
        assert_eq!(
            text_field(field(&info, 4).unwrap(), "clientPin"),
            Some(&Value::Bool(true))
        );
    }
}

#[test]
fn set_pin_checks_its_parameters_in_order() {
    let mut key = FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    });
    let shared = key_agreement(&mut key, 2);
    let enc = shared.new_pin_enc(b"1234");
    let param = shared.authenticate(&enc);
    let base = |p: Vec<(i64, Value)>| [vec![(1, int(2)), (2, int(3))], p].concat();
    assert_eq!(
        client_pin(
            &mut key,
            base(vec![(3, shared.platform_key.clone()), (4, bytes(&param))])
        )
        .0,
        0x14
    );
    // A platform key that is not a point on P-256.
    let bad_point = imap(vec![
        (1, int(2)),
        (3, int(-25)),
        (-1, int(1)),
        (-2, bytes(&[1; 32])),
        (-3, bytes(&[2; 32])),
    ]);
    assert_eq!(
        client_pin(
            &mut key,
            base(vec![(3, bad_point), (4, bytes(&param)), (5, bytes(&enc))])
        )
        .0,
        0x02
    );
    let mut wrong = param.clone();
    wrong[0] ^= 1;
    assert_eq!(
        client_pin(
            &mut key,
            base(vec![
                (3, shared.platform_key.clone()),
                (4, bytes(&wrong)),
                (5, bytes(&enc))
            ])
        )
        .0,
        0x33
    );
    // A 32-byte padded PIN.
    let short = shared.encrypt(&[b'1', b'2', b'3', b'4', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let short_param = shared.authenticate(&short);
    assert_eq!(
        client_pin(
            &mut key,
            base(vec![
                (3, shared.platform_key.clone()),
                (4, bytes(&short_param)),
                (5, bytes(&short))
            ])
        )
        .0,
        0x02
    );
    assert_eq!(
        client_pin(
            &mut key,
            base(vec![
                (3, shared.platform_key.clone()),
                (4, bytes(&param)),
                (5, bytes(&enc))
            ])
        )
        .0,
        0x00
    );
}

#[test]
fn change_pin_then_only_the_new_one_works() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let old = token(&mut key, 2, "1234", Some(1), None).unwrap();
    assert_eq!(change_pin(&mut key, 2, "1234", b"12"), 0x37);
    assert_eq!(change_pin(&mut key, 1, "1234", b"98765"), 0x00);
    assert_eq!(retries(&mut key).0, 8);
    assert_eq!(token(&mut key, 2, "1234", Some(1), None), Err(0x31));
    assert!(token(&mut key, 2, "98765", Some(1), None).is_ok());
    // The old token died with the old PIN.
    let cdh = client_data_hash();
    let (status, _) = call(
        &mut key,
        0x01,
        mc_params(
            &cdh,
            vec![(8, bytes(&authenticate(2, &old, &cdh))), (9, int(2))],
        ),
        &mut Script::touching(),
    );
    assert_eq!(status, 0x33);
    // Without a PIN there is nothing to change.
    let mut bare = FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    });
    assert_eq!(change_pin(&mut bare, 2, "1234", b"5678"), 0x35);
}

#[test]
fn wrong_pins_block_the_key_for_the_power_cycle_and_then_for_good() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    assert_eq!(token(&mut key, 2, "0000", Some(1), None), Err(0x31));
    assert_eq!(retries(&mut key), (7, false));
    // The key agreement key is new after a wrong PIN: the old shared secret no longer works.
    let stale = key_agreement(&mut key, 2);
    assert_eq!(token(&mut key, 2, "0000", Some(1), None), Err(0x31));
    let (status, _) = client_pin(
        &mut key,
        vec![
            (1, int(2)),
            (2, int(9)),
            (3, stale.platform_key.clone()),
            (6, bytes(&stale.pin_hash_enc("1234"))),
            (9, int(1)),
        ],
    );
    assert_eq!(
        status, 0x34,
        "third wrong in a row (undecryptable counts as wrong)"
    );
    assert_eq!(retries(&mut key), (5, true));
    // Even the right PIN waits for the power cycle, without spending a retry.
    assert_eq!(token(&mut key, 2, "1234", Some(1), None), Err(0x34));
    assert_eq!(retries(&mut key).0, 5);
    key.power_cycle();
    assert_eq!(retries(&mut key), (5, false));
    assert!(token(&mut key, 2, "1234", Some(1), None).is_ok());
    assert_eq!(retries(&mut key).0, 8);
    // Eight wrong PINs, power cycles between: blocked for good.
    for n in 0..8 {
        if n % 3 == 0 {
            key.power_cycle();
        }
        let status = token(&mut key, 1, "0000", None, None).unwrap_err();
        assert!(
            status == 0x31 || status == 0x34 || (n == 7 && status == 0x32),
            "{n}: {status:#x}"
        );
    }
    assert_eq!(retries(&mut key).0, 0);
    key.power_cycle();
    assert_eq!(token(&mut key, 2, "1234", Some(1), None), Err(0x32));
    assert_eq!(change_pin(&mut key, 2, "1234", b"5678"), 0x32);
}

#[test]
fn a_power_cycle_ends_the_token() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let made = make_with_pin(&mut key);
    let token = token(&mut key, 2, "1234", Some(2), Some(RP)).unwrap();
    key.power_cycle();
    let cdh = client_data_hash();
    let params = ga_params(
        &cdh,
        &[&made.id],
        vec![(6, bytes(&authenticate(2, &token, &cdh))), (7, int(2))],
    );
    assert_eq!(
        call(&mut key, 0x02, params, &mut Script::touching()).0,
        0x33
    );
}

#[test]
fn token_permissions() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    assert_eq!(token(&mut key, 2, "1234", Some(0), None), Err(0x02));
    for unsupported in [0x04, 0x08, 0x10, 0x20, 0x03 | 0x04] {
        assert_eq!(
            token(&mut key, 2, "1234", Some(unsupported), None),
            Err(0x40),
            "{unsupported:#x}"
        );
    }
    assert_eq!(
        retries(&mut key).0,
        8,
        "refused before the PIN was looked at"
    );
    // Bits CTAP 2.1 does not define are ignored.
    let token = token(&mut key, 2, "1234", Some(0x40 | 0x01), Some(RP)).unwrap();
    let cdh = client_data_hash();
    let params = mc_params(
        &cdh,
        vec![(8, bytes(&authenticate(2, &token, &cdh))), (9, int(2))],
    );
    assert_eq!(call(&mut key, 0x01, params, &mut Script::touching()).0, 0);
    // getPinToken takes no permissions or rpId.
    let shared = key_agreement(&mut key, 2);
    let params = vec![
        (1, int(2)),
        (2, int(5)),
        (3, shared.platform_key.clone()),
        (6, bytes(&shared.pin_hash_enc("1234"))),
        (9, int(1)),
    ];
    assert_eq!(client_pin(&mut key, params).0, 0x02);
    // Missing permissions for subcommand 9, missing pinHashEnc for 5.
    let shared = key_agreement(&mut key, 2);
    assert_eq!(
        client_pin(
            &mut key,
            vec![
                (1, int(2)),
                (2, int(9)),
                (3, shared.platform_key.clone()),
                (6, bytes(&shared.pin_hash_enc("1234")))
            ]
        )
        .0,
        0x14
    );
    assert_eq!(
        client_pin(
            &mut key,
            vec![(1, int(2)), (2, int(5)), (3, shared.platform_key.clone())]
        )
        .0,
        0x14
    );
}

#[test]
fn retries_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    let mut key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    assert_eq!(token(&mut key, 2, "0000", Some(1), None), Err(0x31));
    drop(key);
    let mut key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    assert_eq!(retries(&mut key), (7, false));
    assert_eq!(change_pin(&mut key, 2, "1234", b"24680"), 0);
    let mut key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    assert!(token(&mut key, 2, "24680", Some(1), None).is_ok());
}

#[test]
fn a_token_unused_for_30_s_or_in_use_for_10_min_expires() {
    use std::time::Duration;
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let made = make_with_pin(&mut key);
    let ga_with = |key: &mut FidoKey, token: &[u8], up: bool| {
        let cdh = client_data_hash();
        let mut extra = vec![(6, bytes(&authenticate(2, token, &cdh))), (7, int(2))];
        if !up {
            extra.push((5, tmap(vec![("up", Value::Bool(false))])));
        }
        call(
            key,
            0x02,
            ga_params(&cdh, &[&made.id], extra),
            &mut Script::touching(),
        )
        .0
    };
    let token = token(&mut key, 2, "1234", Some(2), Some(RP)).unwrap();
    key.pin.age_token(Duration::from_secs(31));
    assert_eq!(
        ga_with(&mut key, &token, true),
        0x33,
        "not used within 30 s"
    );
    let token = super::platform_test::token(&mut key, 2, "1234", Some(2), Some(RP)).unwrap();
    key.pin.age_token(Duration::from_secs(29));
    assert_eq!(
        ga_with(&mut key, &token, false),
        0x00,
        "used in time (silent pre-flight)"
    );
    key.pin.age_token(Duration::from_secs(60));
    assert_eq!(
        ga_with(&mut key, &token, true),
        0x00,
        "in use: good for 10 minutes"
    );
    let token = super::platform_test::token(&mut key, 2, "1234", Some(2), Some(RP)).unwrap();
    assert_eq!(ga_with(&mut key, &token, false), 0x00);
    key.pin.age_token(Duration::from_secs(601));
    assert_eq!(
        ga_with(&mut key, &token, false),
        0x33,
        "past the maximum usage period"
    );
}

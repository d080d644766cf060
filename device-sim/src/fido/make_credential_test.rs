//! Tests of authenticatorMakeCredential (CTAP 2.1 §6.1): the attestation, the flags, the counter,
//! and each check in the order of §6.1.2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;

use super::platform_test::*;
use super::{FidoKey, FidoOptions, Touch, ALG_EDDSA, ALG_ES256};

fn no_pin() -> FidoKey {
    FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    })
}

fn mc(key: &mut FidoKey, params: Value, presence: &mut Script) -> u8 {
    call(key, 0x01, params, presence).0
}

#[test]
fn a_credential_with_packed_self_attestation() {
    let mut key = no_pin();
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    let (status, body) = call(&mut key, 0x01, mc_params(&cdh, vec![]), p);
    assert_eq!(status, 0);
    assert_eq!(p.asked, 1, "one touch");
    let body = body.unwrap();
    assert_eq!(field(&body, 1), Some(&text("packed")));
    let auth_data = field(&body, 2).unwrap().as_bytes().unwrap();
    let made = parse_made(auth_data);
    assert_eq!(made.flags, 0x41, "UP and AT");
    assert_eq!(made.counter, 1);
    assert_eq!(made.id.len(), 81);
    assert_eq!(field(&made.public_key, 1), Some(&int(2)));
    assert_eq!(field(&made.public_key, -1), Some(&int(1)));
    let stmt = field(&body, 3).unwrap();
    assert_eq!(text_field(stmt, "alg"), Some(&int(-7)));
    assert!(text_field(stmt, "x5c").is_none(), "self attestation");
    let sig = text_field(stmt, "sig").unwrap().as_bytes().unwrap();
    verify(&made.public_key, &[auth_data, &cdh[..]].concat(), sig);
    // Each credential gets a new key and id.
    assert_ne!(make(&mut key).id, made.id);
    assert_eq!(key.sign_count(), 2);
}

#[test]
fn eddsa_when_the_key_offers_it_and_the_platform_prefers_it() {
    let mut key = FidoKey::in_memory(FidoOptions {
        pin: None,
        algorithms: vec![ALG_ES256, ALG_EDDSA],
        ..FidoOptions::default()
    });
    let cdh = client_data_hash();
    let algs = Value::Array(vec![
        tmap(vec![("alg", int(-8)), ("type", text("public-key"))]),
        tmap(vec![("alg", int(-7)), ("type", text("public-key"))]),
    ]);
    let (status, body) = call(
        &mut key,
        0x01,
        mc_params(&cdh, vec![(4, algs)]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0);
    let body = body.unwrap();
    let auth_data = field(&body, 2).unwrap().as_bytes().unwrap();
    let made = parse_made(auth_data);
    assert_eq!(field(&made.public_key, 3), Some(&int(-8)));
    let stmt = field(&body, 3).unwrap();
    assert_eq!(text_field(stmt, "alg"), Some(&int(-8)));
    verify(
        &made.public_key,
        &[auth_data, &cdh[..]].concat(),
        text_field(stmt, "sig").unwrap().as_bytes().unwrap(),
    );
}

#[test]
fn unsupported_algorithms() {
    let mut key = no_pin();
    let cdh = client_data_hash();
    let only = |alg: i64, kind: &str| {
        Value::Array(vec![tmap(vec![("alg", int(alg)), ("type", text(kind))])])
    };
    // EdDSA not enabled on this key; RS256 never; ES256 of another credential type skipped.
    for algs in [
        only(-8, "public-key"),
        only(-257, "public-key"),
        only(-7, "password"),
        Value::Array(vec![]),
    ] {
        assert_eq!(
            mc(
                &mut key,
                mc_params(&cdh, vec![(4, algs)]),
                &mut Script::touching()
            ),
            0x26
        );
    }
}

#[test]
fn missing_and_mistyped_parameters() {
    let mut key = no_pin();
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    for missing in [1, 2, 3, 4] {
        let Value::Map(mut entries) = mc_params(&cdh, vec![]) else {
            unreachable!()
        };
        entries.retain(|(k, _)| *k != int(missing));
        assert_eq!(
            mc(&mut key, Value::Map(entries), p),
            0x14,
            "without {missing}"
        );
    }
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![(1, text("hash"))]), p),
        0x11
    );
    assert_eq!(mc(&mut key, mc_params(&cdh, vec![(2, text(RP))]), p), 0x11);
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(2, tmap(vec![("name", text("x"))]))]),
            p
        ),
        0x14
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(2, tmap(vec![("id", bytes(b"x"))]))]),
            p
        ),
        0x11
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(3, tmap(vec![("id", text("alice"))]))]),
            p
        ),
        0x11
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(3, tmap(vec![("id", bytes(&[1; 65]))]))]),
            p
        ),
        0x03
    );
    let no_alg = Value::Array(vec![tmap(vec![("type", text("public-key"))])]);
    assert_eq!(mc(&mut key, mc_params(&cdh, vec![(4, no_alg)]), p), 0x14);
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![(5, tmap(vec![]))]), p),
        0x11
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(6, Value::Array(vec![]))]),
            p
        ),
        0x11
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(7, tmap(vec![("up", int(1))]))]),
            p
        ),
        0x11
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(8, text("x")), (9, int(2))]),
            p
        ),
        0x11
    );
    assert_eq!(p.asked, 0);
}

#[test]
fn options_rk_up_uv_and_enterprise_attestation() {
    let mut key = no_pin();
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    let opt = |name: &str, v: bool| (7, tmap(vec![(name, Value::Bool(v))]));
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![opt("rk", true)]), p),
        0x2B
    );
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![opt("up", false)]), p),
        0x2C
    );
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![opt("uv", true)]), p),
        0x2C
    );
    assert_eq!(mc(&mut key, mc_params(&cdh, vec![(0x0A, int(1))]), p), 0x02);
    assert_eq!(p.asked, 0);
    // rk false, up true, uv false and unknown options are fine.
    let fine = tmap(vec![
        ("rk", Value::Bool(false)),
        ("up", Value::Bool(true)),
        ("uv", Value::Bool(false)),
        ("zz", Value::Bool(true)),
    ]);
    assert_eq!(mc(&mut key, mc_params(&cdh, vec![(7, fine)]), p), 0x00);
}

#[test]
fn the_touch_cancelled_or_missed() {
    let mut key = no_pin();
    let cdh = client_data_hash();
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![]),
            &mut Script::always(Touch::Cancelled)
        ),
        0x2D
    );
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![]),
            &mut Script::always(Touch::TimedOut)
        ),
        0x2F
    );
    assert_eq!(key.sign_count(), 0, "no credential made");
}

#[test]
fn exclude_list_hit_after_a_touch() {
    let mut key = no_pin();
    let made = make(&mut key);
    let cdh = client_data_hash();
    let exclude = Value::Array(vec![descriptor(&[9; 81]), descriptor(&made.id)]);
    let p = &mut Script::touching();
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![(5, exclude.clone())]), p),
        0x19
    );
    assert_eq!(p.asked, 1);
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(5, exclude.clone())]),
            &mut Script::always(Touch::Cancelled)
        ),
        0x2D
    );
    // §6.1.2 step 12: excluded whether or not the touch comes.
    let timed_out = &mut Script::always(Touch::TimedOut);
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![(5, exclude)]), timed_out),
        0x19
    );
    // Another key's credential in the list does not stop it.
    let other = make(&mut no_pin());
    assert_eq!(
        mc(
            &mut key,
            mc_params(&cdh, vec![(5, Value::Array(vec![descriptor(&other.id)]))]),
            p
        ),
        0x00
    );
    // Nine entries are more than maxCredentialCountInList.
    let nine = Value::Array((0..9).map(|i| descriptor(&[i; 16])).collect());
    assert_eq!(mc(&mut key, mc_params(&cdh, vec![(5, nine)]), p), 0x15);
}

#[test]
fn a_key_with_a_pin_wants_a_token() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    assert_eq!(mc(&mut key, mc_params(&cdh, vec![]), p), 0x36);
    assert_eq!(p.asked, 0);
    for protocol in [1u8, 2] {
        let token = token(&mut key, protocol, "1234", Some(0x01), Some(RP)).unwrap();
        let param = authenticate(protocol, &token, &cdh);
        let (status, body) = call(
            &mut key,
            0x01,
            mc_params(&cdh, vec![(8, bytes(&param)), (9, int(protocol.into()))]),
            p,
        );
        assert_eq!(status, 0);
        let made = parse_made(field(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
        assert_eq!(made.flags, 0x45, "UP, UV and AT");
        // One token, one credential (clearPinUvAuthTokenPermissionsExceptLbw).
        assert_eq!(
            mc(
                &mut key,
                mc_params(&cdh, vec![(8, bytes(&param)), (9, int(protocol.into()))]),
                p
            ),
            0x33
        );
    }
}

#[test]
fn the_token_must_verify_and_fit() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    let with =
        |param: &[u8], protocol: i64| mc_params(&cdh, vec![(8, bytes(param)), (9, int(protocol))]);
    // Zero-length pinUvAuthParam: touch, then PIN_INVALID (a PIN is set).
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![(8, bytes(&[]))]), p),
        0x31
    );
    assert_eq!(p.asked, 1);
    // No protocol; an unknown protocol.
    assert_eq!(
        mc(&mut key, mc_params(&cdh, vec![(8, bytes(&[1; 32]))]), p),
        0x14
    );
    assert_eq!(mc(&mut key, with(&[1; 32], 3), p), 0x02);
    // No token yet; a wrong MAC; a token of the other protocol.
    assert_eq!(mc(&mut key, with(&[1; 32], 2), p), 0x33);
    let token = token(&mut key, 2, "1234", Some(0x03), Some(RP)).unwrap();
    assert_eq!(
        mc(&mut key, with(&authenticate(2, &token, &[0; 32]), 2), p),
        0x33
    );
    assert_eq!(
        mc(&mut key, with(&authenticate(1, &token, &cdh), 1), p),
        0x33
    );
    // Permission ga only; another RP.
    let ga_only = super::platform_test::token(&mut key, 2, "1234", Some(0x02), None).unwrap();
    assert_eq!(
        mc(&mut key, with(&authenticate(2, &ga_only, &cdh), 2), p),
        0x33
    );
    let other_rp =
        super::platform_test::token(&mut key, 2, "1234", Some(0x01), Some("other")).unwrap();
    assert_eq!(
        mc(&mut key, with(&authenticate(2, &other_rp, &cdh), 2), p),
        0x33
    );
    // A token bound to no RP binds to the first it is used for (getPinToken, CTAP 2.0).
    let legacy = super::platform_test::token(&mut key, 1, "1234", None, None).unwrap();
    assert_eq!(
        mc(&mut key, with(&authenticate(1, &legacy, &cdh), 1), p),
        0x00
    );
    // A key without a PIN answers a touch request with PIN_NOT_SET, and ignores a
    // pinUvAuthParam otherwise (§6.1.2 step 11 applies to protected keys only): no UV.
    let mut bare = no_pin();
    assert_eq!(
        mc(&mut bare, mc_params(&cdh, vec![(8, bytes(&[]))]), p),
        0x35
    );
    let (status, body) = call(&mut bare, 0x01, with(&[1; 32], 2), p);
    assert_eq!(status, 0);
    let made = parse_made(field(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    assert_eq!(made.flags, 0x41);
}

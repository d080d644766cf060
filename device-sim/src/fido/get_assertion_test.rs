//! Tests of authenticatorGetAssertion (CTAP 2.1 §6.2): signatures, flags, the counter, the
//! allowList rules, tokens, and the signing faults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ciborium::value::Value;
use sha2::{Digest, Sha256};

use super::platform_test::*;
use super::{FidoFault, FidoKey, FidoOptions, Touch, ALG_EDDSA, ALG_ES256};

fn no_pin() -> FidoKey {
    FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    })
}

fn with_fault(fault: FidoFault) -> FidoKey {
    FidoKey::in_memory(FidoOptions {
        pin: None,
        fault: Some(fault),
        ..FidoOptions::default()
    })
}

/// authenticatorData, signature and the whole response of an assertion.
type Asserted = (Vec<u8>, Vec<u8>, Value);

/// getAssertion; the status, and authData, signature, response when it worked.
fn ga(key: &mut FidoKey, params: Value, p: &mut Script) -> (u8, Option<Asserted>) {
    let (status, body) = call(key, 0x02, params, p);
    let parts = body.map(|b| {
        (
            field(&b, 2).unwrap().as_bytes().unwrap().clone(),
            field(&b, 3).unwrap().as_bytes().unwrap().clone(),
            b,
        )
    });
    (status, parts)
}

#[test]
fn an_assertion_verifies_and_counts() {
    let mut key = no_pin();
    let made = make(&mut key);
    for expected in [2u32, 3] {
        let cdh = client_data_hash();
        let p = &mut Script::touching();
        let (status, parts) = ga(&mut key, ga_params(&cdh, &[&[7; 81], &made.id], vec![]), p);
        assert_eq!(status, 0);
        assert_eq!(p.asked, 1);
        let (auth_data, signature, body) = parts.unwrap();
        assert_eq!(auth_data.len(), 37, "no attested data, no extensions");
        assert_eq!(&auth_data[..32], &Sha256::digest(RP.as_bytes())[..]);
        assert_eq!(auth_data[32], 0x01, "UP only");
        assert_eq!(
            u32::from_be_bytes(auth_data[33..37].try_into().unwrap()),
            expected
        );
        verify(
            &made.public_key,
            &[&auth_data[..], &cdh].concat(),
            &signature,
        );
        let credential = field(&body, 1).unwrap();
        assert_eq!(
            text_field(credential, "id").unwrap().as_bytes().unwrap(),
            &made.id
        );
        assert_eq!(text_field(credential, "type"), Some(&text("public-key")));
        assert!(
            field(&body, 4).is_none(),
            "no user for a non-resident credential"
        );
        assert!(
            field(&body, 5).is_none(),
            "numberOfCredentials omitted for an allowList"
        );
    }
    assert_eq!(key.sign_count(), 3);
}

#[test]
fn eddsa_assertions() {
    let mut key = FidoKey::in_memory(FidoOptions {
        pin: None,
        algorithms: vec![ALG_EDDSA, ALG_ES256],
        ..FidoOptions::default()
    });
    let cdh = client_data_hash();
    let algs = Value::Array(vec![tmap(vec![
        ("alg", int(-8)),
        ("type", text("public-key")),
    ])]);
    let (_, body) = call(
        &mut key,
        0x01,
        mc_params(&cdh, vec![(4, algs)]),
        &mut Script::touching(),
    );
    let made = parse_made(field(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    let (status, parts) = ga(
        &mut key,
        ga_params(&cdh, &[&made.id], vec![]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0);
    let (auth_data, signature, _) = parts.unwrap();
    assert_eq!(signature.len(), 64);
    verify(
        &made.public_key,
        &[&auth_data[..], &cdh].concat(),
        &signature,
    );
}

#[test]
fn silent_pre_flight_with_up_false() {
    let mut key = no_pin();
    let made = make(&mut key);
    let p = &mut Script::untouched();
    let up_false = (5, tmap(vec![("up", Value::Bool(false))]));
    let (status, parts) = ga(
        &mut key,
        ga_params(&client_data_hash(), &[&made.id], vec![up_false]),
        p,
    );
    assert_eq!(status, 0);
    assert_eq!(p.asked, 0, "no touch");
    assert_eq!(parts.unwrap().0[32], 0x00, "UP clear");
}

#[test]
fn no_credentials() {
    let mut key = no_pin();
    let made = make(&mut key);
    let other = make(&mut no_pin());
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    // No allowList, an empty one, another key's, a tampered id, the right id for another RP.
    assert_eq!(
        call(
            &mut key,
            0x02,
            imap(vec![(1, text(RP)), (2, bytes(&cdh))]),
            p
        )
        .0,
        0x2E
    );
    assert_eq!(ga(&mut key, ga_params(&cdh, &[], vec![]), p).0, 0x2E);
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[&other.id], vec![]), p).0,
        0x2E
    );
    let mut tampered = made.id.clone();
    tampered[40] ^= 1;
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[&tampered], vec![]), p).0,
        0x2E
    );
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[&made.id[..80]], vec![]), p).0,
        0x2E
    );
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], vec![(1, text("pam://other"))]),
            p
        )
        .0,
        0x2E
    );
    assert_eq!(p.asked, 0, "no touch for a key that holds nothing");
}

#[test]
fn checks_before_the_touch() {
    let mut key = no_pin();
    let made = make(&mut key);
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    assert_eq!(
        call(&mut key, 0x02, imap(vec![(2, bytes(&cdh))]), p).0,
        0x14
    );
    assert_eq!(call(&mut key, 0x02, imap(vec![(1, text(RP))]), p).0, 0x14);
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], vec![(1, bytes(b"x"))]),
            p
        )
        .0,
        0x11
    );
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], vec![(3, tmap(vec![]))]),
            p
        )
        .0,
        0x11
    );
    let no_id = Value::Array(vec![tmap(vec![("type", text("public-key"))])]);
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[], vec![(3, no_id)]), p).0,
        0x14
    );
    let rk = (5, tmap(vec![("rk", Value::Bool(false))]));
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[&made.id], vec![rk]), p).0,
        0x2B
    );
    let uv = (5, tmap(vec![("uv", Value::Bool(true))]));
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[&made.id], vec![uv]), p).0,
        0x2C
    );
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], vec![(6, bytes(&[]))]),
            p
        )
        .0,
        0x35
    );
    assert_eq!(
        p.asked, 1,
        "only the zero-length pinUvAuthParam asked for a touch"
    );
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], vec![]),
            &mut Script::always(Touch::Cancelled)
        )
        .0,
        0x2D
    );
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], vec![]),
            &mut Script::always(Touch::TimedOut)
        )
        .0,
        0x2F
    );
}

#[test]
fn user_verification_with_a_token() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let made = make_with_pin(&mut key);
    let cdh = client_data_hash();
    let p = &mut Script::touching();
    // A key with a PIN still answers without one: UV clear.
    let (status, parts) = ga(&mut key, ga_params(&cdh, &[&made.id], vec![]), p);
    assert_eq!(status, 0);
    assert_eq!(parts.unwrap().0[32], 0x01);
    let token = token(&mut key, 2, "1234", Some(0x02), Some(RP)).unwrap();
    let param = authenticate(2, &token, &cdh);
    let with = vec![(6, bytes(&param)), (7, int(2))];
    // The silent pre-flight does not use the token up.
    let up_false = (5, tmap(vec![("up", Value::Bool(false))]));
    let (status, parts) = ga(
        &mut key,
        ga_params(&cdh, &[&made.id], [with.clone(), vec![up_false]].concat()),
        p,
    );
    assert_eq!(status, 0);
    assert_eq!(parts.unwrap().0[32], 0x04, "UV without UP");
    let (status, parts) = ga(&mut key, ga_params(&cdh, &[&made.id], with.clone()), p);
    assert_eq!(status, 0);
    assert_eq!(parts.unwrap().0[32], 0x05, "UP and UV");
    assert_eq!(
        ga(&mut key, ga_params(&cdh, &[&made.id], with), p).0,
        0x33,
        "used up"
    );
    // A token with permission mc only.
    let mc_only = super::platform_test::token(&mut key, 1, "1234", Some(0x01), Some(RP)).unwrap();
    let with = vec![(6, bytes(&authenticate(1, &mc_only, &cdh))), (7, int(1))];
    assert_eq!(ga(&mut key, ga_params(&cdh, &[&made.id], with), p).0, 0x33);
}

#[test]
fn counter_regression_goes_back() {
    let mut key = with_fault(FidoFault::CounterRegression);
    let made = make(&mut key);
    assert_eq!(made.counter, 1);
    let (_, parts) = ga(
        &mut key,
        ga_params(&client_data_hash(), &[&made.id], vec![]),
        &mut Script::touching(),
    );
    assert_eq!(
        u32::from_be_bytes(parts.unwrap().0[33..37].try_into().unwrap()),
        0
    );
    assert_eq!(key.sign_count(), 0);
}

#[test]
fn malformed_cbor_after_ok() {
    let mut key = with_fault(FidoFault::MalformedCbor);
    let made = make(&mut key);
    let answer = key.cbor(
        &request(0x02, ga_params(&client_data_hash(), &[&made.id], vec![])),
        &mut Script::touching(),
    );
    assert_eq!(answer[0], 0x00);
    let mut body = &answer[1..];
    assert!(ciborium::de::from_reader::<Value, _>(&mut body).is_err());
}

#[test]
fn remove_on_sign_pulls_the_key_out() {
    let mut key = with_fault(FidoFault::RemoveOnSign);
    let made = make(&mut key);
    // The silent pre-flight still works: it identifies the key.
    let up_false = (5, tmap(vec![("up", Value::Bool(false))]));
    assert_eq!(
        ga(
            &mut key,
            ga_params(&client_data_hash(), &[&made.id], vec![up_false]),
            &mut Script::touching()
        )
        .0,
        0
    );
    let answer = key.cbor(
        &request(0x02, ga_params(&client_data_hash(), &[&made.id], vec![])),
        &mut Script::touching(),
    );
    assert!(answer.is_empty());
    assert!(key.pulled());
    assert_eq!(key.fault(), Some(&FidoFault::RemoveOnSign));
    assert!(
        key.cbor(&[0x04], &mut Script::touching()).is_empty(),
        "gone for good"
    );
}

#[test]
fn stall_on_sign_waits_after_the_touch() {
    let mut key = with_fault(FidoFault::StallOnSign(150));
    let made = make(&mut key);
    let start = Instant::now();
    assert_eq!(
        ga(
            &mut key,
            ga_params(&client_data_hash(), &[&made.id], vec![]),
            &mut Script::touching()
        )
        .0,
        0
    );
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[test]
fn the_state_file_keeps_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    let made = {
        let mut key = FidoKey::open(
            &path,
            FidoOptions {
                pin: None,
                ..FidoOptions::default()
            },
        )
        .unwrap();
        make(&mut key)
    };
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"counter\": 1"), "{text}");
    // Options of a new key do not apply to an existing one.
    let mut key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    assert_eq!(key.sign_count(), 1);
    let (status, _) = ga(
        &mut key,
        ga_params(&client_data_hash(), &[&made.id], vec![]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0);
    let key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    assert_eq!(key.sign_count(), 2);
    // The counter is rewritten in place: same inode, same padded size. No temporary files.
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&path).unwrap();
    assert_eq!(before.len(), 1024);
    drop(key);
    let mut key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    let params = ga_params(&client_data_hash(), &[&made.id], vec![]);
    assert_eq!(ga(&mut key, params, &mut Script::touching()).0, 0);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!((after.ino(), after.len()), (before.ino(), 1024));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A file of another size (not padded, as written by hand) is replaced whole instead.
    let compact = serde_json::to_vec(
        &serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(&path, &compact).unwrap();
    let mut key = FidoKey::open(&path, FidoOptions::default()).unwrap();
    let params = ga_params(&client_data_hash(), &[&made.id], vec![]);
    assert_eq!(ga(&mut key, params, &mut Script::touching()).0, 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
    assert_eq!(
        FidoKey::open(&path, FidoOptions::default())
            .unwrap()
            .sign_count(),
        4
    );
    // A bad PIN for a new key is refused.
    assert!(FidoKey::open(
        &dir.path().join("b.json"),
        FidoOptions {
            pin: Some("123".into()),
            ..FidoOptions::default()
        }
    )
    .is_err());
    assert!(FidoKey::open(
        &dir.path().join("c.json"),
        FidoOptions {
            retries: 9,
            ..FidoOptions::default()
        }
    )
    .is_err());
    std::fs::write(dir.path().join("d.json"), "{}").unwrap();
    assert!(FidoKey::open(&dir.path().join("d.json"), FidoOptions::default()).is_err());
}

/// Measures an assertion with and without the state file (`--ignored --nocapture`).
#[test]
#[ignore]
fn timing_of_a_persisted_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = FidoKey::open(
        &dir.path().join("k.json"),
        FidoOptions {
            pin: None,
            ..FidoOptions::default()
        },
    )
    .unwrap();
    let made = make(&mut key);
    let cdh = client_data_hash();
    let req = request(0x02, ga_params(&cdh, &[&made.id], vec![]));
    let start = Instant::now();
    for _ in 0..50 {
        key.cbor(&req, &mut Script::touching());
    }
    eprintln!("per assertion: {:?}", start.elapsed() / 50);
    let mut mem = no_pin();
    let made = make(&mut mem);
    let req = request(0x02, ga_params(&cdh, &[&made.id], vec![]));
    let start = Instant::now();
    for _ in 0..50 {
        mem.cbor(&req, &mut Script::touching());
    }
    eprintln!("in memory: {:?}", start.elapsed() / 50);
}

#[test]
fn any_user_present_assertion_ends_the_token() {
    let mut key = FidoKey::in_memory(FidoOptions::default());
    let made = make_with_pin(&mut key);
    let token = token(&mut key, 2, "1234", Some(0x02), Some(RP)).unwrap();
    // Without the token, with a touch: the token's permissions go (§6.2.2 step 9).
    assert_eq!(
        ga(
            &mut key,
            ga_params(&client_data_hash(), &[&made.id], vec![]),
            &mut Script::touching()
        )
        .0,
        0
    );
    let cdh = client_data_hash();
    let with = vec![(6, bytes(&authenticate(2, &token, &cdh))), (7, int(2))];
    assert_eq!(
        ga(
            &mut key,
            ga_params(&cdh, &[&made.id], with),
            &mut Script::touching()
        )
        .0,
        0x33
    );
}

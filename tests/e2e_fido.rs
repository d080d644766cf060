//! End-to-end tests of a FIDO security key over USB HID, over real parts: `tessera-sim fido` on a
//! Unix socket in the daemon's `[device] simulated_hid_dir` (each message one 64-byte HID report,
//! as on a hidraw node), the real `tesserad` on a private bus, and an in-process client. The story
//! of issue 8 §4: enroll with a touch, authenticate with PIN and touch, validate, pull the key and
//! watch the token die; the same with an old U2F-only key.
//!
//! NFC is in `e2e_fido_nfc.rs`, touches that never come in `e2e_fido_touch.rs`, PINs in
//! `e2e_fido_pin.rs`, policy in `e2e_fido_policy.rs`, hostile keys in `e2e_fido_hostile.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_fido_flow;
mod e2e_requests_client;

use std::collections::HashMap;

use common::fido::{KeyOptions, FIDO_RETRIES};
use e2e_fido_flow::{authenticate, enroll, enrolled, jti, plugged, Pins, Revocations};
use e2e_requests_client::Signal;

/// The `amr` claim as strings.
fn amr(claims: &serde_json::Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .unwrap_or_else(|| panic!("no amr array in {claims}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_enrolled_with_a_touch_gives_a_token_for_pin_and_touch_that_dies_when_it_is_pulled() {
    let (mut stack, key, device, mut client) = plugged(&KeyOptions::manual(), "").await;
    assert_eq!(device.kind, "fido", "{device:?}");
    assert_eq!(device.transport, "sim", "{device:?}");

    // Enrollment: makeCredential wants the PIN (the key has one) and a touch.
    let run = enroll(&mut client, "", &device.path, Pins::right(), Some(&key)).await;
    let enrollment = run.result().to_owned();
    let touches = run.all("touch-needed");
    assert_eq!(touches.len(), 1, "{:?}", run.signals);
    assert_eq!(touches[0].str_detail("device"), device.path);
    let listed = stack.ok(&["--json", "enrollments"], "");
    let row: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(row["id"], enrollment.as_str(), "{listed}");
    assert_eq!(row["kind"], "fido", "{listed}");
    assert_eq!(row["algorithm"], "es256", "{listed}");

    // Authentication: the PIN prompt speaks of the key's own counter, then the touch.
    let mut revoked = Revocations::subscribe(&client).await;
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), Some(&key)).await;
    let token = run.token().to_owned();
    let prompt = run.all("pin-needed");
    assert_eq!(prompt.len(), 1, "{:?}", run.signals);
    assert_eq!(prompt[0].str_detail("kind"), "fido", "{prompt:?}");
    assert_eq!(prompt[0].u32_detail("retries"), FIDO_RETRIES, "{prompt:?}");
    assert_eq!(prompt[0].str_detail("device"), device.path, "{prompt:?}");
    let states = run.states();
    let pin_at = states.iter().position(|s| *s == "pin-needed").unwrap();
    let touch_at = states.iter().position(|s| *s == "touch-needed").unwrap();
    assert!(pin_at < touch_at, "the PIN before the touch: {states:?}");

    let claims = stack.validate(&token).unwrap();
    assert_eq!(claims["sub"], "root", "{claims}");
    let methods = amr(&claims);
    for m in ["hwk", "pin", "user"] {
        assert!(methods.iter().any(|a| a == m), "amr {methods:?} lacks {m}");
    }
    assert!(
        claims["cnf"]["jkt"].is_string(),
        "no cnf thumbprint: {claims}"
    );

    // Pull the key: the token is revoked and the device unpublished.
    let id = jti(&token);
    let name = key.name.clone();
    let attach = key.attach.clone();
    key.pull();
    assert_eq!(revoked.reason_of(&id).await, "device-removed");
    stack.wait_key_gone(&name, &attach);
    let (err, msg) = stack.validate(&token).unwrap_err();
    assert_eq!(err, "TokenRevoked", "{msg}");
    stack.stop_daemon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_plugged_in_again_authenticates_and_its_counter_rises() {
    let (mut stack, key, device, mut client, _) = enrolled(&KeyOptions::default(), "").await;
    let first = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    first.token();
    let counter = |key: &common::fido::SimKey| key.state_json()["counter"].as_u64().unwrap();
    let before = counter(&key);
    assert!(before > 0, "the key counts its signatures");
    let name = key.name.clone();
    let attach = key.attach.clone();
    let state = key.pull();
    stack.wait_key_gone(&name, &attach);

    let key = stack.plug_key_with_state(&name, &state, &KeyOptions::default());
    let again = stack.wait_key(&key);
    assert_eq!(
        again.path, device.path,
        "the same socket gives the same device path"
    );
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    let claims = stack.validate(run.token()).unwrap();
    assert_eq!(claims["sub"], "root");
    assert!(counter(&key) > before, "the counter went on from its state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u2f_only_key_enrolls_and_authenticates_with_a_touch_alone() {
    let options = KeyOptions {
        u2f_only: true,
        ..KeyOptions::manual()
    };
    let (mut stack, key, device, mut client) = plugged(&options, "").await;
    assert_eq!(device.kind, "fido", "{device:?}");
    let run = enroll(&mut client, "", &device.path, Pins::None, Some(&key)).await;
    run.result();
    assert!(run.saw("touch-needed"), "{:?}", run.signals);

    let mut revoked = Revocations::subscribe(&client).await;
    let run = authenticate(&mut client, "", HashMap::new(), Pins::None, Some(&key)).await;
    let token = run.token().to_owned();
    assert!(!run.saw("pin-needed"), "U2F has no PIN: {:?}", run.signals);
    let touches: Vec<&Signal> = run.all("touch-needed");
    assert!(!touches.is_empty(), "{:?}", run.signals);
    let claims = stack.validate(&token).unwrap();
    let methods = amr(&claims);
    assert!(methods.iter().any(|a| a == "user"), "{methods:?}");
    assert!(!methods.iter().any(|a| a == "pin"), "{methods:?}");

    let id = jti(&token);
    key.pull();
    assert_eq!(revoked.reason_of(&id).await, "device-removed");
    stack.stop_daemon();
}

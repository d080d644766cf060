//! End-to-end tests of a FIDO key over NFC, over real parts: `tessera-sim fido --vpcd` as a
//! contactless card in vpcd reader 1 behind pcscd (CTAP 2.1 §11.3: SELECT of the FIDO AID,
//! NFCCTAP_MSG, GET RESPONSE polling while the key waits for its touch), the real `tesserad` and an
//! in-process client: enroll, authenticate with PIN and touch, validate, take the key off the
//! reader and watch the token die; and an old U2F-only key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_fido_flow;
mod e2e_requests_client;

use std::collections::HashMap;

use common::fido::{KeyOptions, SimKey};
use common::stack::Stack;
use common::VPCD_READER_1;
use e2e_fido_flow::{authenticate, enroll, jti, Pins, Revocations};
use e2e_requests_client::Client;

/// A stack with the key `options` on NFC reader 1 and the daemon publishing it.
async fn tapped(options: &KeyOptions) -> (Stack, SimKey, common::fido::Published, Client) {
    let mut stack = Stack::new();
    let key = stack.tap_nfc_key("nfc", options);
    stack.start_daemon("");
    let device = stack.wait_key(&key);
    let client = Client::connect(stack.bus_address()).await;
    (stack, key, device, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nfc_key_enrolls_authenticates_with_pin_and_touch_and_its_removal_revokes_the_token() {
    let (mut stack, key, device, mut client) = tapped(&KeyOptions::manual()).await;
    assert_eq!(device.kind, "fido", "{device:?}");
    assert_eq!(device.transport, "nfc", "{device:?}");
    assert_eq!(device.reader, VPCD_READER_1, "{device:?}");

    let run = enroll(&mut client, "", &device.path, Pins::right(), Some(&key)).await;
    run.result();
    assert!(run.saw("touch-needed"), "{:?}", run.signals);

    let mut revoked = Revocations::subscribe(&client).await;
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), Some(&key)).await;
    let token = run.token().to_owned();
    assert_eq!(run.all("pin-needed").len(), 1, "{:?}", run.signals);
    let touches = run.all("touch-needed");
    assert!(!touches.is_empty(), "{:?}", run.signals);
    assert_eq!(touches[0].str_detail("device"), device.path);
    let claims = stack.validate(&token).unwrap();
    assert_eq!(claims["sub"], "root");

    let id = jti(&token);
    let (name, attach) = (key.name.clone(), key.attach.clone());
    key.pull();
    assert_eq!(revoked.reason_of(&id).await, "device-removed");
    stack.wait_key_gone(&name, &attach);
    stack.stop_daemon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u2f_only_nfc_key_authenticates_with_a_touch() {
    let options = KeyOptions {
        u2f_only: true,
        ..KeyOptions::default()
    };
    let (stack, _key, device, mut client) = tapped(&options).await;
    enroll(&mut client, "", &device.path, Pins::None, None)
        .await
        .result();
    let run = authenticate(&mut client, "", HashMap::new(), Pins::None, None).await;
    assert!(!run.saw("pin-needed"), "{:?}", run.signals);
    let claims = stack.validate(run.token()).unwrap();
    assert_eq!(claims["sub"], "root");
}

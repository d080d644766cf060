//! End-to-end tests of a FIDO key's PIN (CTAP 2.1 §6.5) over real parts: wrong PINs down to the
//! keep-last-retry guard, and PIN_AUTH_BLOCKED after three wrong PINs in a row, which only
//! unplugging the key clears (`tessera-sim power-cycle`). The key's counters are checked on the
//! next prompt, which the daemon fills from getPINRetries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_fido_flow;
mod e2e_requests_client;

use std::collections::HashMap;

use zbus::zvariant::OwnedObjectPath;

use common::fido::{KeyOptions, FIDO_PIN};
use e2e_fido_flow::{authenticate, enrolled, error, follow, Pins};
use e2e_requests_client::{error_name, Client, Signal};

const WRONG_PIN: &str = "999999";
/// So that the daemon's own lockout (`[auth]`) does not end these runs before the key's guard.
const NO_LOCKOUT: &str = "[auth]\nmax_failures = 50\n";

/// Asserts a FIDO "pin-needed" prompt of `device` with `retries` left.
fn assert_prompt(s: &Signal, device: &str, retries: u32, last_error: Option<&str>, last_try: bool) {
    assert_eq!(s.name(), "pin-needed", "{s:?}");
    assert_eq!(s.str_detail("device"), device, "{s:?}");
    assert_eq!(s.str_detail("kind"), "fido", "{s:?}");
    assert_eq!(s.u32_detail("retries"), retries, "{s:?}");
    // CTAP 2.1 §6.5.1: at least 4 code points, at most 63 bytes.
    assert_eq!(s.u32_detail("min_length"), 4, "{s:?}");
    assert_eq!(s.u32_detail("max_length"), 63, "{s:?}");
    assert_eq!(s.bool_detail("last_try"), last_try, "{s:?}");
    match last_error {
        Some(e) => assert_eq!(s.str_detail("last_error"), e, "{s:?}"),
        None => assert!(!s.has_detail("last_error"), "{s:?}"),
    }
}

/// Starts an authentication of root and returns it at its first PIN prompt.
async fn at_prompt(client: &mut Client) -> (OwnedObjectPath, Signal) {
    let path = client.start_auth("", HashMap::new()).await.unwrap();
    let first = client.next_after_work(&path).await;
    (path, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_count_down_to_the_guard_which_keeps_the_last_try() {
    let options = KeyOptions {
        retries: Some(3),
        ..KeyOptions::default()
    };
    let (_stack, _key, device, mut client, _) = enrolled(&options, NO_LOCKOUT).await;
    let (path, first) = at_prompt(&mut client).await;
    assert_prompt(&first, &device.path, 3, None, false);
    let request = client.request(&path).await;

    request.submit_pin(WRONG_PIN).await.unwrap();
    let s = client.next_after_work(&path).await;
    assert_prompt(&s, &device.path, 2, Some("PinInvalid"), false);
    request.submit_pin(WRONG_PIN).await.unwrap();
    let s = client.next_after_work(&path).await;
    assert_prompt(&s, &device.path, 1, Some("PinInvalid"), true);

    // The last try is not spent by SubmitPin, even with the right PIN; the request keeps waiting.
    let (name, msg) = error_name(request.submit_pin(FIDO_PIN).await);
    assert_eq!(name, error("PinWouldBlock"), "{msg}");
    assert_eq!(request.state().await.unwrap(), "pin-needed");
    request.submit_last_try_pin(FIDO_PIN).await.unwrap();
    let run = follow(&mut client, path, Pins::None, None).await;
    run.token();

    // The right PIN gave the key its tries back.
    let (path, first) = at_prompt(&mut client).await;
    assert_prompt(&first, &device.path, 3, None, false);
    client.request(&path).await.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_pins_block_pin_auth_until_the_key_is_replugged() {
    let (_stack, key, device, mut client, _) = enrolled(&KeyOptions::default(), NO_LOCKOUT).await;
    let (path, first) = at_prompt(&mut client).await;
    assert_prompt(&first, &device.path, 8, None, false);
    let request = client.request(&path).await;
    request.submit_pin(WRONG_PIN).await.unwrap();
    assert_prompt(
        &client.next_after_work(&path).await,
        &device.path,
        7,
        Some("PinInvalid"),
        false,
    );
    request.submit_pin(WRONG_PIN).await.unwrap();
    assert_prompt(
        &client.next_after_work(&path).await,
        &device.path,
        6,
        Some("PinInvalid"),
        false,
    );
    request.submit_pin(WRONG_PIN).await.unwrap();
    let run = follow(&mut client, path, Pins::None, None).await;
    let (name, msg) = run.failure();
    assert_eq!(name, error("DeviceError"), "{msg}");
    assert!(
        msg.contains("unplug") && msg.contains("plug it in again"),
        "the message must say what to do: {msg}"
    );

    // Even the right PIN is refused until the key is power-cycled; no try is spent by it.
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    let (name, msg) = run.failure();
    assert_eq!(name, error("DeviceError"), "{msg}");
    key.power_cycle();
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    run.token();
    let prompt = run.all("pin-needed");
    assert_eq!(prompt[0].u32_detail("retries"), 5, "{prompt:?}");
}

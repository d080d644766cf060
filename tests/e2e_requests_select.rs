//! End-to-end test of "selecting-device" over real parts: two simulated cards (vpcd readers 0 and
//! 1 behind pcscd), both enrolled for root, the real `tesserad` on a private bus. With no device
//! named, the request names both and waits; when one card is pulled, it goes on with the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_requests_client;

use std::process::Command;
use std::time::Duration;

use zbus::zvariant::Value;

use common::stack::{Stack, DEVICE_PATH, PIN};
use common::{bin, wait_until, Child, VPCD_ADDR_1};
use e2e_requests_client::{with_pin, Client, Signal};

/// The device object of the card in reader 1 (`Virtual PCD 00 01`).
const DEVICE_PATH_1: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2001";
const WAIT: Duration = Duration::from_secs(10);

/// The object paths in the "devices" detail of a Progress signal, sorted.
fn devices_detail(s: &Signal) -> Vec<String> {
    let mut paths: Vec<String> = match &**s.detail("devices") {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::ObjectPath(p) => p.as_str().to_owned(),
                other => panic!("not an object path: {other:?}"),
            })
            .collect(),
        other => panic!("devices is not an array: {other:?}"),
    };
    paths.sort();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_enrolled_cards_ask_for_a_choice_and_the_one_left_is_used() {
    let (stack, _card0) = Stack::with_card(&[], "");
    stack.enroll(PIN, &[]);
    let state1 = stack.path("card1.json");
    let mut sim1 = Child::spawn(
        "sim1",
        Command::new(bin("tessera-sim"))
            .args(["piv", "--vpcd", VPCD_ADDR_1, "--state"])
            .arg(&state1),
        &stack.path(""),
    );
    sim1.wait_for_line("ready", WAIT);
    let listed = |present: bool| {
        wait_until(WAIT, || {
            common::stdout(&stack.cli(&["status"], "")).contains(DEVICE_PATH_1) == present
        })
    };
    assert!(listed(true), "the card in reader 1 was not listed");
    stack.enroll(PIN, &["--device", DEVICE_PATH_1]);

    let mut client = Client::connect(stack.bus_address()).await;
    let path = client.start_auth("", with_pin(PIN)).await.unwrap();
    let first = client.next(&path).await;
    assert_eq!(first.name(), "selecting-device", "{first:?}");
    assert_eq!(
        devices_detail(&first),
        vec![DEVICE_PATH.to_owned(), DEVICE_PATH_1.to_owned()]
    );
    // Nothing is tried while both cards could be meant.
    assert!(
        client
            .next_within(&path, Duration::from_millis(500))
            .await
            .is_none(),
        "the request went on with two candidate cards"
    );

    sim1.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sim1.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert!(listed(false), "the card in reader 1 was not removed");
    let working = client.next(&path).await;
    assert_eq!(working.name(), "working", "{working:?}");
    assert_eq!(working.str_detail("device"), DEVICE_PATH, "{working:?}");
    match client.next_after_work(&path).await {
        Signal::Completed(token) => {
            let claims = stack.validate(&token).expect("the token validates");
            assert_eq!(claims["sub"], "root", "{claims}");
        }
        other => panic!("expected Completed, got {other:?}"),
    }
}

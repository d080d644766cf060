//! End-to-end tests of the touch a FIDO key waits for, over real parts (simulated keys on HID
//! sockets in `--touch manual`, the real `tesserad`, an in-process client): a request cancelled
//! while the key waits, a caller that leaves the bus meanwhile, a touch that never comes; and which
//! key is asked at all when two are plugged in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_fido_flow;
mod e2e_requests_client;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zbus::zvariant::{OwnedObjectPath, Value};

use common::fido::{KeyOptions, FIDO_PIN};
use e2e_fido_flow::{
    authenticate, enroll, enrolled, error, follow, plugged_device, Pins, CANCELLED,
};
use e2e_requests_client::{exported, with_pin, Client, Signal};

/// Reads the signals of `path` until the state `state`; panics if the request ends first.
async fn until_state(client: &mut Client, path: &OwnedObjectPath, state: &str) -> Vec<Signal> {
    let mut seen = Vec::new();
    loop {
        let s = client.next(path).await;
        seen.push(s.clone());
        match s.name() {
            n if n == state => return seen,
            "Completed" | "Failed" => panic!("the request ended before {state}: {seen:?}"),
            _ => {}
        }
    }
}

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
async fn a_cancel_while_the_key_waits_for_a_touch_ends_the_request_and_the_key_works_right_after() {
    let (_stack, key, device, mut client, _) = enrolled(&KeyOptions::manual(), "").await;
    let path = client.start_auth("", with_pin(FIDO_PIN)).await.unwrap();
    let request = client.request(&path).await;
    let seen = until_state(&mut client, &path, "touch-needed").await;
    assert_eq!(seen.last().unwrap().str_detail("device"), device.path);

    let cancelled_at = Instant::now();
    request.cancel().await.unwrap();
    match client.next_after_work(&path).await {
        Signal::Failed(e, _) => assert_eq!(e, CANCELLED),
        other => panic!("expected Failed Cancelled, got {other:?}"),
    }
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(1), "Cancel took {took:?}");

    // The key heard CTAPHID_CANCEL and is free: the next request needs exactly one touch.
    let run = authenticate(&mut client, "", with_pin(FIDO_PIN), Pins::None, Some(&key)).await;
    run.token();
    assert_eq!(run.all("touch-needed").len(), 1, "{:?}", run.signals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_leaving_the_bus_mid_touch_ends_its_request_and_frees_the_key() {
    let (stack, key, _device, mut client, _) = enrolled(&KeyOptions::manual(), "").await;
    let mut gone = Client::connect(stack.bus_address()).await;
    let path = gone.start_auth("", with_pin(FIDO_PIN)).await.unwrap();
    until_state(&mut gone, &path, "touch-needed").await;
    drop(gone);
    let deadline = Instant::now() + Duration::from_secs(2);
    while exported(&client.conn, &path).await {
        assert!(
            Instant::now() < deadline,
            "the request of a caller that left is still exported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No orphaned operation takes the next touch: one touch completes the next request.
    let run = authenticate(&mut client, "", with_pin(FIDO_PIN), Pins::None, Some(&key)).await;
    run.token();
    assert_eq!(run.all("touch-needed").len(), 1, "{:?}", run.signals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_that_never_comes_times_out_and_the_key_works_right_after() {
    let (_stack, key, device, mut client) =
        plugged_device(&KeyOptions::manual(), "touch_timeout = \"1s\"", "").await;
    enroll(&mut client, "", &device.path, Pins::right(), Some(&key))
        .await
        .result();

    let started = Instant::now();
    let run = authenticate(&mut client, "", with_pin(FIDO_PIN), Pins::None, None).await;
    assert!(run.saw("touch-needed"), "{:?}", run.signals);
    assert_eq!(run.failure().0, error("Timeout"), "{:?}", run.signals);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a 1 s touch timeout took {took:?}"
    );

    let run = authenticate(&mut client, "", with_pin(FIDO_PIN), Pins::None, Some(&key)).await;
    run.token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_keys_plugged_in_only_the_enrolled_one_is_asked_for_a_touch() {
    let (mut stack, alpha, alpha_dev, mut client, _) = enrolled(&KeyOptions::manual(), "").await;
    let bravo = stack.plug_key("bravo", &KeyOptions::manual());
    let bravo_dev = stack.wait_key(&bravo);
    assert_ne!(alpha_dev.path, bravo_dev.path);

    let run = authenticate(
        &mut client,
        "",
        with_pin(FIDO_PIN),
        Pins::None,
        Some(&alpha),
    )
    .await;
    run.token();
    assert!(!run.saw("selecting-device"), "{:?}", run.signals);
    for s in run.all("touch-needed") {
        assert_eq!(s.str_detail("device"), alpha_dev.path, "{s:?}");
    }
    for s in &run.signals {
        if let Signal::Progress(_, d) = s {
            if d.contains_key("device") {
                assert_ne!(s.str_detail("device"), bravo_dev.path, "{s:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_enrolled_keys_the_touched_one_is_used() {
    let (mut stack, alpha, alpha_dev, mut client, _) = enrolled(&KeyOptions::manual(), "").await;
    let bravo = stack.plug_key("bravo", &KeyOptions::manual());
    let bravo_dev = stack.wait_key(&bravo);
    enroll(
        &mut client,
        "",
        &bravo_dev.path,
        Pins::right(),
        Some(&bravo),
    )
    .await
    .result();

    let path = client.start_auth("", with_pin(FIDO_PIN)).await.unwrap();
    let seen = until_state(&mut client, &path, "selecting-device").await;
    let mut both = vec![alpha_dev.path.clone(), bravo_dev.path.clone()];
    both.sort();
    assert_eq!(devices_detail(seen.last().unwrap()), both);
    // authenticatorSelection on both keys; bravo is touched, alpha is told to stop waiting.
    tokio::task::block_in_place(|| bravo.touch());
    let run = follow(&mut client, path, Pins::None, Some(&bravo)).await;
    let token = run.token().to_owned();
    for s in run.all("touch-needed") {
        assert_eq!(s.str_detail("device"), bravo_dev.path, "{s:?}");
    }
    let sessions = stack.ok(&["--json", "sessions"], "");
    assert!(
        sessions.contains(&bravo_dev.reader) || sessions.contains(&bravo_dev.name),
        "the session is not bravo's ({bravo_dev:?}): {sessions}"
    );
    assert!(stack.validate(&token).is_ok());
    // alpha is free again: a request naming it needs one touch of alpha.
    let mut opts: HashMap<&str, Value> = with_pin(FIDO_PIN);
    opts.extend(e2e_fido_flow::on_device(&alpha_dev.path));
    let run = authenticate(&mut client, "", opts, Pins::None, Some(&alpha)).await;
    run.token();
}

//! Tests of `presence.rs`: the key thread, its touches, cancel and power cycle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::presence::{Activity, KeyHandle, Outcome, Request};
use super::touch::{TouchMode, TouchSource};
use super::{FidoKey, FidoOptions};

/// authenticatorSelection (CTAP 2.1 §6.9): waits for a touch, answers CTAP2_OK or KEEPALIVE_CANCEL.
fn selection() -> Request {
    Request::Cbor(Zeroizing::new(vec![0x0B]))
}

fn spawn(mode: TouchMode) -> (KeyHandle, TouchSource) {
    let touch = TouchSource::new(mode);
    let key = FidoKey::in_memory(FidoOptions::default());
    let (handle, _) =
        KeyHandle::spawn(key, touch.clone(), Arc::new(AtomicBool::new(false))).unwrap();
    (handle, touch)
}

fn wait_for(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !flag.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "flag never set");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_waiting_request_raises_up_needed_and_a_touch_ends_it() {
    let (key, touch) = spawn(TouchMode::Manual);
    let activity = Activity::default();
    let (tx, rx) = mpsc::channel();
    assert!(key.submit(selection(), activity.clone(), move |o| tx.send(o).unwrap()));
    wait_for(&activity.up_needed);
    assert!(touch.touch(Duration::from_secs(5)));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        Outcome::Reply(vec![0x00])
    );
    assert!(!activity.up_needed.load(Ordering::Relaxed));
}

#[test]
fn a_power_cycle_cancels_the_waiting_request() {
    let (key, _) = spawn(TouchMode::Manual);
    let activity = Activity::default();
    let (tx, rx) = mpsc::channel();
    assert!(key.submit(selection(), activity.clone(), move |o| tx.send(o).unwrap()));
    wait_for(&activity.up_needed);
    let start = Instant::now();
    key.power_cycle().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "power cycle waited for the touch"
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        Outcome::Reply(vec![0x2D])
    );
    // The key works after it.
    let auto = key.call(
        Request::Cbor(Zeroizing::new(vec![0x04])),
        Activity::default(),
    );
    assert!(matches!(auto, Some(Outcome::Reply(r)) if r.first() == Some(&0x00)));
}

#[test]
fn signing_requests_are_recognised() {
    assert!(Request::Cbor(Zeroizing::new(vec![0x02, 0xA0])).is_sign());
    assert!(!Request::Cbor(Zeroizing::new(vec![0x01, 0xA0])).is_sign());
    assert!(Request::U2f(Zeroizing::new(vec![0x00, 0x02, 0x03, 0x00])).is_sign());
    assert!(!Request::U2f(Zeroizing::new(vec![0x00, 0x02, 0x07, 0x00])).is_sign());
    assert!(!Request::U2f(Zeroizing::new(vec![0x00, 0x01, 0x03, 0x00])).is_sign());
    assert_eq!(format!("{:?}", selection()), "Cbor(cmd Some(0b), 1 bytes)");
}

//! End-to-end tests of interactive requests (`StartAuthentication`, `StartUnblock` and the
//! `org.tessera.Tessera1.Request` objects) over real parts: `tessera-sim piv` behind pcscd and vpcd,
//! the real `tesserad` on a private bus, and an in-process client that reads the request's signals
//! in the order the bus delivered them. The card's retry counters are read from the simulator's
//! state file, not from the daemon.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_requests_client;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use zbus::zvariant::Value;

use common::stack::{Stack, DEVICE_PATH, PIN};
use e2e_requests_client::{
    card_state, error_name, exported, pin_retries_left, with_pin, Client, Signal,
};
use tessera_client::RequestProxy;
use zbus::zvariant::OwnedObjectPath;

const WRONG_PIN: &str = "999999";
const PUK: &str = "12345678";
const NEW_PIN: &str = "24681357";
const CANCELLED: &str = "org.tessera.Tessera1.Error.Cancelled";

/// A stack with a fresh card (simulator flags `sim_args`), the daemon on `config`, and the card
/// enrolled for root; plus a client connected to the stack's bus.
async fn enrolled(sim_args: &[&str], config: &str) -> (Stack, std::path::PathBuf, Client) {
    let (stack, card) = Stack::with_card(sim_args, config);
    stack.enroll(PIN, &[]);
    let client = Client::connect(stack.bus_address()).await;
    (stack, card, client)
}

/// Asserts a "pin-needed" prompt for the card in reader 0 with `retries` left.
fn assert_pin_prompt(s: &Signal, retries: u32, last_error: Option<&str>, last_try: bool) {
    assert_eq!(s.name(), "pin-needed", "{s:?}");
    assert_eq!(s.str_detail("device"), DEVICE_PATH, "{s:?}");
    assert_eq!(s.str_detail("kind"), "piv", "{s:?}");
    assert_eq!(s.u32_detail("retries"), retries, "{s:?}");
    // PIV PINs are 6 to 8 bytes (SP 800-73-4 Part 2 §2.4.3).
    assert_eq!(s.u32_detail("min_length"), 6, "{s:?}");
    assert_eq!(s.u32_detail("max_length"), 8, "{s:?}");
    assert_eq!(s.bool_detail("last_try"), last_try, "{s:?}");
    match last_error {
        Some(e) => assert_eq!(s.str_detail("last_error"), e, "{s:?}"),
        None => assert!(!s.has_detail("last_error"), "{s:?}"),
    }
}

/// Starts an authentication of root and checks its first prompt: `retries` left, no error yet.
async fn start_prompted(
    client: &mut Client,
    retries: u32,
) -> (OwnedObjectPath, RequestProxy<'static>) {
    let path = client.start_auth("", HashMap::new()).await.unwrap();
    let request = client.request(&path).await;
    // The card is asked who it is ("working") before its PIN is.
    let first = client.next_after_work(&path).await;
    assert_pin_prompt(&first, retries, None, false);
    (path, request)
}

/// Submits a wrong PIN and checks the prompt that follows: `retries` left, "PinInvalid".
async fn submit_wrong_pin(
    client: &mut Client,
    (path, request): &(OwnedObjectPath, RequestProxy<'static>),
    retries: u32,
    last_try: bool,
) {
    request.submit_pin(WRONG_PIN).await.unwrap();
    let prompt = client.next_after_work(path).await;
    assert_pin_prompt(&prompt, retries, Some("PinInvalid"), last_try);
}

fn assert_token(s: &Signal) -> String {
    match s {
        Signal::Completed(token) => {
            assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
            token.clone()
        }
        other => panic!("expected Completed, got {other:?}"),
    }
}

fn assert_failed(s: &Signal, name: &str) {
    match s {
        Signal::Failed(e, _) => assert_eq!(e, name, "{s:?}"),
        other => panic!("expected Failed {name}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_authentication_goes_working_pin_needed_working_completed() {
    let (stack, card, mut client) = enrolled(&[], "").await;
    let path = client.start_auth("", HashMap::new()).await.unwrap();
    assert!(
        path.as_str().starts_with("/org/tessera/Tessera1/requests/"),
        "{path}"
    );
    let request = client.request(&path).await;
    let mut states = Vec::new();
    let token = loop {
        let s = client.next(&path).await;
        match s.name() {
            "pin-needed" => {
                assert_pin_prompt(&s, 3, None, false);
                assert_eq!(request.state().await.unwrap(), "pin-needed");
                request.submit_pin(PIN).await.unwrap();
            }
            "Completed" => break assert_token(&s),
            _ => assert_eq!(s.str_detail("device"), DEVICE_PATH, "{s:?}"),
        }
        states.push(s.name().to_owned());
    };
    // The card is identified and its 9E key checked before the PIN is asked, then asked to sign.
    assert_eq!(
        states,
        ["working", "pin-needed", "working"],
        "the Progress states in order"
    );
    let claims = stack.validate(&token).unwrap();
    assert_eq!(claims["sub"], "root");
    assert_eq!(pin_retries_left(&card), 3);

    // The object is gone once the outcome was sent, and no further signal comes.
    assert!(
        common::wait_until(Duration::from_secs(2), || !futures_block(exported(
            &client.conn,
            &path
        ))),
        "request object still exported after Completed"
    );
    let (name, _) = error_name(request.state().await);
    assert_eq!(name, "org.freedesktop.DBus.Error.UnknownObject");
    assert!(client.drain().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_goes_back_to_pin_needed_and_the_right_one_completes() {
    let (_stack, card, mut client) = enrolled(&[], "").await;
    let req = start_prompted(&mut client, 3).await;
    submit_wrong_pin(&mut client, &req, 2, false).await;
    assert_eq!(pin_retries_left(&card), 2);

    req.1.submit_pin(PIN).await.unwrap();
    assert_token(&client.next_after_work(&req.0).await);
    assert_eq!(
        pin_retries_left(&card),
        3,
        "the right PIN resets the counter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lockout_guard_ends_a_request_instead_of_asking_again() {
    // Two failed attempts lock the user out; the card has tries to spare.
    let config = "[auth]\nmax_failures = 2\nfailure_window = \"5m\"\nlockout = \"1m\"\n";
    let (_stack, card, mut client) = enrolled(&["--pin-retries", "8"], config).await;
    let req = start_prompted(&mut client, 8).await;
    submit_wrong_pin(&mut client, &req, 7, false).await;
    req.1.submit_pin(WRONG_PIN).await.unwrap();
    assert_failed(
        &client.next_after_work(&req.0).await,
        "org.tessera.Tessera1.Error.RateLimited",
    );
    assert_eq!(pin_retries_left(&card), 6);
    // And a new request is refused at once.
    let (name, msg) = error_name(client.start_auth("", HashMap::new()).await);
    assert_eq!(name, "org.tessera.Tessera1.Error.RateLimited", "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_try_is_spent_only_by_submit_last_try_pin() {
    let (_stack, card, mut client) = enrolled(&[], "").await;
    let req = start_prompted(&mut client, 3).await;
    submit_wrong_pin(&mut client, &req, 2, false).await;
    submit_wrong_pin(&mut client, &req, 1, true).await;
    assert_eq!(pin_retries_left(&card), 1);
    let (path, request) = &req;

    // SubmitPin refuses the last try, even with the right PIN: the card is not touched and the
    // request keeps waiting.
    let (name, msg) = error_name(request.submit_pin(PIN).await);
    assert_eq!(name, "org.tessera.Tessera1.Error.PinWouldBlock", "{msg}");
    assert_eq!(pin_retries_left(&card), 1);
    assert_eq!(request.state().await.unwrap(), "pin-needed");
    assert!(
        client
            .next_within(path, Duration::from_millis(300))
            .await
            .is_none(),
        "a refused SubmitPin changes nothing"
    );

    request.submit_last_try_pin(PIN).await.unwrap();
    assert_token(&client.next_after_work(path).await);
    assert_eq!(pin_retries_left(&card), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_card_is_unblocked_with_the_puk_and_the_new_pin_works() {
    let (mut stack, card, mut client) = enrolled(&[], "").await;
    // Block the PIN on the card itself, with the card out of the reader.
    stack.stop_sim();
    stack.wait_device(false);
    let mut state = card_state(&card);
    state["pin_retries_left"] = Json::from(0);
    std::fs::write(&card, serde_json::to_vec(&state).unwrap()).unwrap();
    stack.start_sim(&card, &[]);
    stack.wait_device(true);
    let path = client.start_auth("", with_pin(PIN)).await.unwrap();
    assert_failed(
        &client.next_after_work(&path).await,
        "org.tessera.Tessera1.Error.PinBlocked",
    );

    let path = client
        .start_unblock(DEVICE_PATH, HashMap::new())
        .await
        .unwrap();
    let request = client.request(&path).await;
    let puk = client.next_after_work(&path).await;
    assert_eq!(puk.name(), "puk-needed", "{puk:?}");
    assert_eq!(puk.str_detail("device"), DEVICE_PATH);
    // "retries" only when known: the card tells the PUK's counter only when a PUK is tried.
    if puk.has_detail("retries") {
        assert_eq!(puk.u32_detail("retries"), 3, "the PUK's own tries: {puk:?}");
    }
    assert!(!puk.bool_detail("last_try"), "{puk:?}");
    request.submit_pin(PUK).await.unwrap();
    let new_pin = client.next_after_work(&path).await;
    assert_eq!(new_pin.name(), "new-pin-needed", "{new_pin:?}");
    assert_eq!(new_pin.u32_detail("min_length"), 6);
    assert_eq!(new_pin.u32_detail("max_length"), 8);
    request.submit_pin(NEW_PIN).await.unwrap();
    let done = client.next_after_work(&path).await;
    assert!(matches!(done, Signal::Completed(_)), "{done:?}");
    let state = card_state(&card);
    assert_eq!(state["pin_retries_left"], 3);
    assert_eq!(state["puk_retries_left"], 3);

    // The new PIN works, the old one no longer does.
    let path = client.start_auth("", with_pin(NEW_PIN)).await.unwrap();
    assert_token(&client.next_after_work(&path).await);
    let path = client.start_auth("", with_pin(PIN)).await.unwrap();
    let wrong = client.next_after_work(&path).await;
    assert_pin_prompt(&wrong, 2, Some("PinInvalid"), false);
    client.request(&path).await.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_the_card_to_be_inserted() {
    let (mut stack, card, mut client) = enrolled(&[], "").await;
    stack.stop_sim();
    stack.wait_device(false);

    let path = client.start_auth("", with_pin(PIN)).await.unwrap();
    let request = client.request(&path).await;
    let first = client.next(&path).await;
    assert_eq!(first.name(), "waiting-for-device", "{first:?}");
    assert_eq!(request.state().await.unwrap(), "waiting-for-device");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.start_sim(&card, &[]);

    let mut states = vec![first.name().to_owned()];
    let token = loop {
        let s = client.next(&path).await;
        match s {
            Signal::Progress(ref state, _) => states.push(state.clone()),
            _ => break assert_token(&s),
        }
    };
    assert_eq!(states, ["waiting-for-device", "working"]);
    assert_eq!(stack.validate(&token).unwrap()["sub"], "root");
}

/// Starts an authentication with `options` while no card is in: it waits for one, and fails with
/// Timeout after `after` (and not much later).
async fn times_out_waiting(
    client: &mut Client,
    options: HashMap<&str, Value<'_>>,
    after: Duration,
) {
    let started = Instant::now();
    let path = client.start_auth("", options).await.unwrap();
    assert_eq!(client.next(&path).await.name(), "waiting-for-device");
    assert_failed(
        &client.next(&path).await,
        "org.tessera.Tessera1.Error.Timeout",
    );
    let took = started.elapsed();
    assert!(
        took >= after - Duration::from_millis(100) && took < after * 2,
        "timed out after {took:?}, not {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_card_ends_in_timeout() {
    let config = "[device]\ninsert_timeout = \"2s\"\n";
    let (mut stack, _card, mut client) = enrolled(&[], config).await;
    stack.stop_sim();
    stack.wait_device(false);

    // The request's own timeout, then the configured insert_timeout.
    let one_second = HashMap::from([("timeout", Value::from(1u32))]);
    times_out_waiting(&mut client, one_second, Duration::from_secs(1)).await;
    times_out_waiting(&mut client, HashMap::new(), Duration::from_secs(2)).await;

    // Without waiting, no card is the method's answer at once: no request object is made.
    let options = HashMap::from([("wait", Value::from(false))]);
    let started = Instant::now();
    match client.start_auth("", options).await {
        Err(zbus::Error::MethodError(name, _, _)) => {
            assert_eq!(name.as_str(), "org.tessera.Tessera1.Error.NoDevice")
        }
        other => panic!("expected NoDevice, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_pin_needed_fails_at_once_and_spends_no_try() {
    let (stack, card, mut client) = enrolled(&[], "").await;
    let (path, request) = start_prompted(&mut client, 3).await;

    let asked = Instant::now();
    request.cancel().await.unwrap();
    assert_failed(&client.next(&path).await, CANCELLED);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(pin_retries_left(&card), 3);
    // Cancel is idempotent while the object lives; afterwards the object is gone.
    let _ = request.cancel().await;
    assert!(common::wait_until(Duration::from_secs(2), || {
        !futures_block(exported(&client.conn, &path))
    }));
    // The device is usable right after.
    stack.authenticate(&[]);
    assert_eq!(pin_retries_left(&card), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_stalled_signature_fails_at_once_and_issues_nothing() {
    let (stack, card, mut client) = enrolled(&["--fault", "stall-on-sign=3000"], "").await;
    let path = client.start_auth("", with_pin(PIN)).await.unwrap();
    let request = client.request(&path).await;
    let working = client.next(&path).await;
    assert_eq!(working.name(), "working", "{working:?}");
    // Let the signature request reach the card, which now sits on it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    request.cancel().await.unwrap();
    assert_failed(&client.next(&path).await, CANCELLED);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );

    // The card's late answer is dropped: no token is issued for the cancelled request.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.token_rows(), 0);
    assert_eq!(pin_retries_left(&card), 3);
    // The device serves the next request (which the simulator stalls too).
    let token = stack.authenticate(&[]);
    assert!(stack.validate(&token).is_ok());
    assert_eq!(stack.token_rows(), 1);
}

/// Runs a future to completion from synchronous code inside a multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_enrollment_asks_for_the_pin_and_completes_with_the_enrollment_id() {
    let (stack, card) = Stack::with_card(&[], "");
    let mut client = Client::connect(stack.bus_address()).await;
    let path = client
        .start_enroll("", DEVICE_PATH, HashMap::new())
        .await
        .unwrap();
    let request = client.request(&path).await;
    assert_pin_prompt(&client.next_after_work(&path).await, 3, None, false);
    request.submit_pin(WRONG_PIN).await.unwrap();
    let again = client.next_after_work(&path).await;
    assert_pin_prompt(&again, 2, Some("PinInvalid"), false);
    request.submit_pin(PIN).await.unwrap();
    let id = match client.next_after_work(&path).await {
        Signal::Completed(id) => id,
        other => panic!("expected Completed, got {other:?}"),
    };
    assert_eq!(pin_retries_left(&card), 3);
    // The same id v1 Enroll gives for the same key, and the enrollment authenticates.
    assert_eq!(stack.enroll(PIN, &[]), id);
    stack.authenticate(&[]);
}

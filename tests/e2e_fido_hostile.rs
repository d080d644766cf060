//! End-to-end tests of FIDO keys that lie or break, over real parts: a cloned key whose signature
//! counter goes back (refused, the enrollment's live tokens revoked "cloned"), a key pulled in the
//! middle of signing, and hostile simulated keys answering malformed CBOR, a truncated CTAPHID
//! message or one longer than CTAPHID allows. Each must end the request with a clear error, leave
//! the daemon running and the next honest key usable.
//!
//! The pattern: enroll an honest key, pull it, plug the same key (its state file) in again with a
//! `--fault`, so the enrolled credential is there and only the fault differs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_fido_flow;
mod e2e_requests_client;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zbus::zvariant::Value;

use common::fido::{KeyOptions, SimKey};
use common::stack::Stack;
use e2e_fido_flow::{authenticate, enrolled, error, jti, Pins, Revocations, Run};
use e2e_requests_client::Client;

/// Longest a hostile key may hold a request (the daemon's default device timeout is 10 s).
const HOSTILE_BOUND: Duration = Duration::from_secs(12);

/// Pulls `key` and plugs the same key in again with `fault`; waits until it is published.
fn replug_with(stack: &mut Stack, key: SimKey, fault: &str) -> SimKey {
    let name = key.name.clone();
    let attach = key.attach.clone();
    let state = key.pull();
    stack.wait_key_gone(&name, &attach);
    let key = stack.plug_key_with_state(&name, &state, &KeyOptions::fault(fault));
    stack.wait_key(&key);
    key
}

/// Asserts the daemon is still running and an honest copy of `key` authenticates again.
async fn daemon_and_key_still_fine(stack: &mut Stack, key: SimKey, client: &mut Client) {
    let daemon = stack.daemon.as_mut().expect("a daemon");
    assert!(
        daemon.try_wait().is_none(),
        "tesserad exited:\n{}",
        daemon.stderr_text()
    );
    assert!(
        !stack.daemon_log().contains("panicked"),
        "tesserad panicked:\n{}",
        stack.daemon_log()
    );
    let name = key.name.clone();
    let attach = key.attach.clone();
    let state = key.pull();
    stack.wait_key_gone(&name, &attach);
    let key = stack.plug_key_with_state(&name, &state, &KeyOptions::default());
    stack.wait_key(&key);
    let run = authenticate(client, "", HashMap::new(), Pins::right(), None).await;
    run.token();
}

/// Authenticates root with the PIN (the request bounded to 10 s, so a key that is never found to
/// hold the credential ends it as well); returns the run and how long it took.
async fn timed_auth(client: &mut Client) -> (Run, Duration) {
    let started = Instant::now();
    let options = HashMap::from([("timeout", Value::from(10u32))]);
    let run = authenticate(client, "", options, Pins::right(), None).await;
    (run, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_key_whose_counter_goes_back_is_refused_and_its_tokens_revoked_cloned() {
    // Tokens survive the pull here, so the revocation seen is the clone's.
    let config = "[token]\nrevoke_on_removal = false\n";
    let (mut stack, key, _device, mut client, _) = enrolled(&KeyOptions::default(), config).await;
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    let token = run.token().to_owned();
    let mut revoked = Revocations::subscribe(&client).await;

    let _clone = replug_with(&mut stack, key, "counter-regression");
    let (run, _) = timed_auth(&mut client).await;
    let (name, msg) = run.failure();
    assert_eq!(name, error("SignatureInvalid"), "{msg}");
    assert_eq!(revoked.reason_of(&jti(&token)).await, "cloned");
    let (err, msg) = stack.validate(&token).unwrap_err();
    assert_eq!(err, "TokenRevoked", "{msg}");
    assert!(
        stack.daemon_log().contains("clone"),
        "no log line about the cloned key:\n{}",
        stack.daemon_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sign_count_off_accepts_a_counter_that_goes_back() {
    let config = "[fido]\ncheck_sign_count = false\n";
    let (mut stack, key, _device, mut client, _) = enrolled(&KeyOptions::default(), config).await;
    authenticate(&mut client, "", HashMap::new(), Pins::right(), None)
        .await
        .token();
    let _clone = replug_with(&mut stack, key, "counter-regression");
    let (run, _) = timed_auth(&mut client).await;
    run.token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pulled_while_signing_ends_the_request_with_device_removed() {
    let (mut stack, key, _device, mut client, _) = enrolled(&KeyOptions::default(), "").await;
    let _gone = replug_with(&mut stack, key, "remove-on-sign");
    let (run, took) = timed_auth(&mut client).await;
    let (name, msg) = run.failure();
    assert_eq!(name, error("DeviceRemoved"), "{msg}");
    assert!(took < HOSTILE_BOUND, "took {took:?}");
}

/// One hostile CTAPHID/CBOR fault: the request fails with one of `names`, in bounded time; the
/// daemon survives and the honest key works after.
async fn hostile(fault: &str, names: &[&str]) {
    let (mut stack, key, _device, mut client, _) = enrolled(&KeyOptions::default(), "").await;
    let hostile = replug_with(&mut stack, key, fault);
    let (run, took) = timed_auth(&mut client).await;
    let (name, msg) = run.failure();
    assert!(
        names.iter().any(|n| error(n) == name),
        "{fault}: {name}: {msg} (expected one of {names:?})"
    );
    assert!(!msg.is_empty(), "{fault}: an error without a message");
    assert!(took < HOSTILE_BOUND, "{fault}: took {took:?}");
    daemon_and_key_still_fine(&mut stack, hostile, &mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cbor_from_a_key_is_a_device_error() {
    hostile("malformed-cbor", &["DeviceError"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_ctaphid_message_is_a_device_error_or_a_timeout() {
    hostile("truncated-message", &["DeviceError", "Timeout"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_ctaphid_message_is_a_device_error() {
    hostile("oversized-message", &["DeviceError"]).await;
}

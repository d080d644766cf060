//! End-to-end tests of what survives a `tesserad` restart (SIGTERM and SIGKILL): issued tokens,
//! revocations, enrollments, the signing key, and cards that left while the daemon was not watching.
//! Real processes throughout: `tessera-sim piv` behind pcscd and vpcd, `tesserad` on a private bus and
//! the `tessera` CLI. The other foundation scenarios are in `e2e_piv.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use common::stack::{wait_card, Stack, DEVICE_PATH, PIN, WAIT};
use common::{stdout, wait_until, VPCD_READER_0};

/// Every enrollment and token here is root's.
const ROOT: &[&str] = &["--user", "root"];

#[test]
fn restart_keeps_tokens_revocations_enrollments_and_signing_key() {
    let (mut env, _) = Stack::with_card(&[], "");
    let enrollment = env.enroll(PIN, ROOT);
    let token_a = env.authenticate(ROOT);
    let token_b = env.authenticate(ROOT);
    env.ok(&["revoke", "-"], &format!("{token_b}\n"));
    assert_eq!(env.validate(&token_b).unwrap_err().0, "TokenRevoked");
    let claims_a = env.validate(&token_a).expect("A is live");
    let jwks = env.ok(&["jwks"], "");
    let kid = header_kid(&token_a);

    env.stop_daemon();
    // The card stays in; only the daemon restarts.
    env.start_daemon("");
    env.wait_device(true);

    let again = env.validate(&token_a).expect("A survives a restart");
    assert_eq!(again, claims_a, "same claims after the restart");
    let (name, msg) = env.validate(&token_b).unwrap_err();
    assert_eq!(name, "TokenRevoked", "B after restart: {msg}");
    assert!(msg.contains("logout"), "{msg}");
    assert_eq!(env.ok(&["jwks"], ""), jwks, "the signing keys changed");

    // The enrollment is kept: authentication works without enrolling again, with the same key.
    let token_c = env.authenticate(ROOT);
    let claims_c = env.validate(&token_c).unwrap();
    assert_eq!(claims_c["enr"], enrollment.as_str());
    assert_eq!(claims_c["sid"], claims_a["sid"], "same card insertion");
    assert_eq!(header_kid(&token_c), kid);
    // Enrolling the same key again gives the same enrollment.
    assert_eq!(env.enroll(PIN, ROOT), enrollment);
}

#[test]
fn card_removed_while_the_daemon_was_down_revokes_its_tokens() {
    let (mut env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, ROOT);
    let token_c = env.authenticate(ROOT);
    let claims_c = env.validate(&token_c).unwrap();

    // Pulled and put back while nobody watched: a new insertion, even of the same card.
    env.stop_daemon();
    // Let pcscd see the card leave: a swap faster than its polling is no removal at all (see
    // `card_swapped_while_the_daemon_was_down_is_picked_up`).
    env.reinsert_unwatched(&card);
    env.start_daemon("");
    env.wait_device(true);
    let (name, msg) = env.validate(&token_c).unwrap_err();
    assert_eq!(name, "TokenRevoked", "C: {msg}");
    assert!(msg.contains("device-removed"), "{msg}");
    let daemon = env.daemon.as_mut().unwrap();
    daemon.wait_for_stderr_line("card removed while the daemon was not watching", WAIT);

    // The card itself is fine.
    let token_d = env.authenticate(ROOT);
    let claims_d = env.validate(&token_d).unwrap();
    assert_ne!(claims_d["sid"], claims_c["sid"], "a new device session");

    // Pulled while the daemon was down and still out when it starts.
    env.stop_daemon();
    env.stop_sim();
    env.start_daemon("");
    let mut last = None;
    let revoked = wait_until(WAIT, || {
        last = Some(env.validate(&token_d));
        matches!(&last, Some(Err((name, _))) if name == "TokenRevoked")
    });
    assert!(revoked, "D with its card gone: {last:?}");
    assert!(!env.ok(&["status"], "").contains(DEVICE_PATH));
}

/// A daemon that starts while the card it issued tokens for is gone must not accept those tokens,
/// not even in the moment before it has looked at the readers.
#[test]
fn tokens_of_a_vanished_card_are_never_valid_after_a_restart() {
    let (mut env, _) = Stack::with_card(&[], "");
    env.enroll(PIN, ROOT);
    let token = env.authenticate(ROOT);

    // Gone while the daemon is down, no card at the restart.
    env.stop_daemon();
    env.stop_sim();
    env.start_daemon("");
    // Immediately: the first answer the restarted daemon gives already counts.
    let first = env.validate(&token);
    assert!(
        matches!(&first, Err((name, _)) if name == "TokenRevoked"),
        "first validation after the restart, no card: {first:?}"
    );
}

/// As above, with the same card re-inserted (a new insertion) before the daemon comes back: the
/// daemon needs a moment to read the card, and must not call the old token valid meanwhile.
#[test]
fn tokens_of_a_reinserted_card_are_never_valid_after_a_restart() {
    let (mut env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, ROOT);
    let token = env.authenticate(ROOT);

    env.stop_daemon();
    env.reinsert_unwatched(&card);
    env.start_daemon("");
    let first = env.validate(&token);
    assert!(
        matches!(&first, Err((name, _)) if name == "TokenRevoked"),
        "first validation after the restart, card re-inserted: {first:?}"
    );
    env.wait_device(true);
    assert_eq!(env.validate(&token).unwrap_err().0, "TokenRevoked");
}

/// A card whose first exchanges fail at insertion must not be ignored for good. Reproduced with a
/// card pulled and re-inserted while the daemon is down, faster than pcscd polls: pcscd never reports
/// a removal and vpcd fails the first APDU (SCARD_E_NOT_TRANSACTED) while it takes the new connection.
/// Before e848e15 the card stayed invisible until it was pulled and re-inserted.
#[test]
fn card_swapped_while_the_daemon_was_down_is_picked_up() {
    let (mut env, card) = Stack::with_card(&[], "");
    // Three rounds, as the swap must beat pcscd's polling (before the fix it failed 4 times in 5 single rounds).
    for round in 1..=3 {
        env.stop_daemon();
        env.stop_sim();
        env.start_sim(&card, &[]);
        env.start_daemon("");
        let mut last = String::new();
        let present = wait_until(Duration::from_secs(10), || {
            last = stdout(&env.cli(&["status"], ""));
            last.contains(DEVICE_PATH)
        });
        assert!(
            present,
            "round {round}: the card never appeared; status: {last}\n--- tesserad ---\n{}",
            env.daemon_log()
        );
    }
}

#[test]
fn sigkill_after_acknowledged_issue_and_revoke_loses_neither() {
    let (mut env, _) = Stack::with_card(&[], "");
    env.enroll(PIN, ROOT);
    let kept = env.authenticate(ROOT);
    let revoked = env.authenticate(ROOT);
    let jwks = env.ok(&["jwks"], "");
    assert_eq!(env.ok(&["revoke", "-"], &format!("{revoked}\n")), "revoked");
    // No grace: the revocation was acknowledged, so it must already be on disk.
    env.kill_daemon();

    env.start_daemon("");
    env.wait_device(true);
    let (name, msg) = env.validate(&revoked).unwrap_err();
    assert_eq!(name, "TokenRevoked", "{msg}");
    assert!(msg.contains("logout"), "{msg}");
    assert!(
        env.validate(&kept).is_ok(),
        "an acknowledged token was lost by SIGKILL"
    );
    assert_eq!(env.ok(&["jwks"], ""), jwks);

    // And once more: a token handed out right before SIGKILL.
    let last = env.authenticate(ROOT);
    env.kill_daemon();
    env.start_daemon("");
    env.wait_device(true);
    assert!(env.validate(&last).is_ok(), "token issued before SIGKILL");
    assert_eq!(env.validate(&revoked).unwrap_err().0, "TokenRevoked");
}

/// The `kid` of a JWT's protected header, decoded here.
fn header_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().expect("kid").to_owned()
}

/// §6: a token, then tesserad stops, the card is pulled, pcscd restarts, the same card goes back
/// in and tesserad starts. pcscd counts insertions afresh from its start, so the reader's event
/// count is the same as at the token's insertion; only pcscd's identity, recorded with the device
/// session, tells that the card left. Before the fix the old session was adopted and the token
/// stayed valid.
#[test]
fn card_removed_across_a_pcscd_restart_revokes_its_tokens() {
    removed_across_a_pcscd_restart(false);
}

/// The same with a card that has no 9E key (nothing proves it at insertion; the old session was
/// adopted on the public certificates alone).
#[test]
fn card_without_9e_removed_across_a_pcscd_restart_revokes_its_tokens() {
    removed_across_a_pcscd_restart(true);
}

fn removed_across_a_pcscd_restart(without_9e: bool) {
    let mut env = Stack::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.stop_sim();
    if without_9e {
        remove_card_authentication_key(&card);
    }
    // A fresh pcscd at both insertions, so that it counts them alike.
    env.pcsc.restart_pcscd();
    env.start_sim(&card, &[]);
    env.start_daemon("");
    env.wait_device(true);
    let count_then = reader_event_count();
    env.enroll(PIN, ROOT);
    let token = env.authenticate(ROOT);
    env.validate(&token).expect("live before the restart");

    env.stop_daemon();
    env.stop_sim();
    wait_card(false);
    env.pcsc.restart_pcscd();
    env.start_sim(&card, &[]);
    wait_card(true);
    assert_eq!(
        reader_event_count(),
        count_then,
        "precondition: the new pcscd's count equals the one recorded with the session"
    );
    env.start_daemon("");
    env.wait_device(true);
    let (name, msg) = env.validate(&token).unwrap_err();
    assert_eq!(name, "TokenRevoked", "token across a pcscd restart: {msg}");
    assert!(msg.contains("device-removed"), "{msg}");
    // The card itself is fine, in a new device session.
    let again = env.authenticate(ROOT);
    env.validate(&again)
        .expect("a new token from the same card");
}

/// Takes the Card Authentication (9E) key and its certificate out of the simulator's card file.
fn remove_card_authentication_key(card: &std::path::Path) {
    let mut state: Value = serde_json::from_slice(&std::fs::read(card).unwrap()).unwrap();
    let keys = state["keys"].as_object_mut().expect("keys");
    assert!(
        keys.remove("9e").is_some(),
        "no 9E key in {}",
        card.display()
    );
    let objects = state["objects"].as_object_mut().expect("objects");
    assert!(objects.remove("5fc101").is_some(), "no 9E certificate");
    std::fs::write(card, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

/// pcscd's event count for reader 0, read without connecting to the card.
fn reader_event_count() -> u32 {
    let reader = std::ffi::CString::new(VPCD_READER_0).unwrap();
    let ctx = pcsc::Context::establish(pcsc::Scope::User).unwrap();
    let mut states = [pcsc::ReaderState::new(reader, pcsc::State::UNAWARE)];
    ctx.get_status_change(Duration::ZERO, &mut states).unwrap();
    states[0].event_count()
}

/// Fail closed: when tesserad cannot tell which pcscd it talks to (here a second root process named
/// pcscd beside the real one), no device session from before its start is adopted, even with the
/// card still in the same reader under the same pcscd.
#[test]
fn no_session_is_adopted_when_pcscd_cannot_be_identified() {
    let (mut env, _) = Stack::with_card(&[], "");
    env.enroll(PIN, ROOT);
    let token = env.authenticate(ROOT);
    env.stop_daemon();

    let impostor = env.path("pcscd");
    std::fs::copy("/bin/sleep", &impostor).unwrap();
    let mut cmd = std::process::Command::new(&impostor);
    cmd.arg("60");
    let _impostor = common::Child::spawn("impostor-pcscd", &mut cmd, &env.path(""));
    env.start_daemon("");
    env.wait_device(true);
    let (name, msg) = env.validate(&token).unwrap_err();
    assert_eq!(name, "TokenRevoked", "pcscd unknown: {msg}");
    let daemon = env.daemon.as_mut().unwrap();
    daemon.wait_for_stderr_line("cannot tell which pcscd this is", WAIT);
}

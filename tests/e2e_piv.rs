//! End-to-end tests of the PIV foundation over real processes: `tessera-sim piv` behind pcscd and vpcd,
//! `tesserad` on a private bus, and the `tessera` CLI (plus `busctl`, `gdbus` and `yubico-piv-tool`
//! where an independent view is needed). Daemon restarts live in `e2e_restart.rs`.
//!
//! Every test takes the machine-wide pcsc lock first and stops everything it started (the harness
//! guards do that on drop, even when the test fails). JWTs are decoded and checked here with base64
//! and p256, independently of the daemon's own token code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::stack::{
    parse_err, saw_all, Stack, BUS_NAME, CLI_TIMEOUT, DEVICE_ID, DEVICE_PATH, MANAGER_PATH, PIN,
    WAIT,
};
use common::{run, stderr, stdout, test_user, Child};

const WRONG_PIN: &str = "654321";
/// Simulator flags for tests that use yubico-piv-tool as a witness: it selects PIV with the RID alone
/// and sends SELECT and GET DATA without Le, which YubiKeys accept and the simulator's default
/// (strict) profile refuses.
const YUBIKEY: &[&str] = &["--profile", "yubikey"];

// ---------------------------------------------------------------------------------------------
// 1. Happy path and the D-Bus contract
// ---------------------------------------------------------------------------------------------

#[test]
fn happy_path_enroll_authenticate_validate_verify_revoke() {
    let (mut env, card) = Stack::with_card(&[], "");

    // Our CLI's view of the device.
    let status = env.ok(&["status"], "");
    assert!(status.contains(DEVICE_PATH), "status: {status}");
    assert!(status.contains("kind: piv"), "status: {status}");
    assert!(status.contains("transport: pcsc"), "status: {status}");
    assert!(
        status.contains("reader: Virtual PCD 00 00"),
        "status: {status}"
    );
    assert!(
        status.contains("name: CN=Tessera simulated PIV Authentication"),
        "status: {status}"
    );

    // The same through busctl and gdbus: the contract, not our proxy.
    for (prop, want) in [
        ("Kind", "s \"piv\""),
        ("Transport", "s \"pcsc\""),
        ("Reader", "s \"Virtual PCD 00 00\""),
    ] {
        let got = env.busctl(&[
            "get-property",
            BUS_NAME,
            DEVICE_PATH,
            "org.tessera.Tessera1.Device",
            prop,
        ]);
        assert_eq!(got.trim(), want, "property {prop}");
    }
    let name = env.busctl(&[
        "get-property",
        BUS_NAME,
        DEVICE_PATH,
        "org.tessera.Tessera1.Device",
        "Name",
    ]);
    assert!(name.starts_with("s \"") && name.trim().len() > 4, "{name}");
    let root = env.busctl(&["introspect", BUS_NAME, "/org/tessera/Tessera1"]);
    assert!(
        root.contains("org.freedesktop.DBus.ObjectManager"),
        "root object: {root}"
    );
    let managed = env.gdbus_call(
        "/org/tessera/Tessera1",
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
        &[],
    );
    assert!(
        managed.status.success() && stdout(&managed).contains(DEVICE_PATH),
        "GetManagedObjects: {managed:?}"
    );
    let manager = env.busctl(&[
        "introspect",
        BUS_NAME,
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager",
    ]);
    for (member, sig) in [
        (".Enroll", "method    soa{sv}"),
        (".Authenticate", "method    sa{sv}"),
        (".ValidateToken", "method    s"),
        (".RevokeToken", "method    s"),
        (".Jwks", "property  s"),
        (".TokenRevoked", "signal    sss"),
    ] {
        let line = manager
            .lines()
            .find(|l| l.starts_with(&format!("{member} ")))
            .unwrap_or_else(|| panic!("{member} missing from the Manager interface:\n{manager}"));
        let squeezed = line.split_whitespace().collect::<Vec<_>>().join(" ");
        let want = sig.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(squeezed.contains(&want), "{member}: {line}");
    }
    assert!(
        manager
            .lines()
            .any(|l| l.starts_with(".ValidateToken") && l.contains("a{sv}")),
        "ValidateToken must return a{{sv}}:\n{manager}"
    );

    let enrollment = env.enroll(PIN, &["--user", "root"]);
    assert!(is_b64url(&enrollment), "enrollment id {enrollment:?}");

    let mut watch = env.start_watch();
    let token = env.authenticate(&["--user", "root"]);
    let claims = env.validate(&token).expect("fresh token validates");

    assert_eq!(claims["sub"], "root", "{claims}");
    assert_eq!(claims["aud"], "tessera", "{claims}");
    assert_eq!(claims["enr"], enrollment.as_str(), "{claims}");
    assert!(
        claims["iss"].as_str().is_some_and(|s| !s.is_empty()),
        "{claims}"
    );
    for method in ["hwk", "sc", "pin"] {
        assert!(amr(&claims).iter().any(|m| m == method), "amr: {claims}");
    }
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert_eq!(exp - iat, 900, "default lifetime 15m: {claims}");
    assert_eq!(claims["nbf"].as_u64(), Some(iat), "{claims}");
    let now = unix_now();
    assert!(iat <= now && now <= iat + 60, "iat {iat} vs now {now}");
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    assert!(
        jti.len() >= 22 && is_b64url(&jti),
        "jti needs >= 128 bits: {jti}"
    );
    assert!(
        URL_SAFE_NO_PAD
            .decode(&jti)
            .expect("jti is base64url")
            .len()
            >= 16
    );
    // cnf.jkt is the RFC 7638 thumbprint of the card's 9A key, computed here from the simulator's
    // own state file.
    assert_eq!(
        claims["cnf"]["jkt"].as_str().expect("cnf.jkt"),
        card_key_thumbprint(&card, "9a"),
        "{claims}"
    );
    assert!(claims["sid"].as_str().is_some_and(|s| !s.is_empty()));

    // The JWT itself: the daemon's claims are exactly the payload, and the signature verifies with
    // the JWKS key named by the header's kid.
    let jwt = Jwt::parse(&token);
    assert_eq!(jwt.header["alg"], "ES256", "{}", jwt.header);
    assert_eq!(jwt.header["typ"], "JWT", "{}", jwt.header);
    for key in [
        "sub", "aud", "iss", "iat", "nbf", "exp", "jti", "amr", "cnf", "sid", "enr",
    ] {
        assert_eq!(jwt.payload[key], claims[key], "claim {key}");
    }
    let kid = jwt.header["kid"].as_str().expect("kid").to_owned();
    let jwks: Value = serde_json::from_str(&env.ok(&["jwks"], "")).expect("jwks is JSON");
    let jwk = jwk_by_kid(&jwks, &kid).unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    let key = verifying_key(jwk);
    assert!(jwt.verifies_with(&key), "signature does not verify");
    // The check above can fail: one changed byte of the signed input does not verify.
    let mut tampered = jwt.clone();
    tampered.signing_input.push('x');
    assert!(!tampered.verifies_with(&key));
    // And the JWKS agrees with the Jwks property read by busctl.
    let prop = env.busctl(&[
        "get-property",
        BUS_NAME,
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager",
        "Jwks",
    ]);
    assert!(prop.contains(&kid), "Jwks property: {prop}");

    // Logout.
    assert_eq!(env.ok(&["revoke", "-"], &format!("{token}\n")), "revoked");
    let (name, msg) = env.validate(&token).expect_err("revoked token");
    assert_eq!(name, "TokenRevoked", "{msg}");
    assert!(msg.contains("logout"), "{msg}");
    watch.wait_for_line(
        &format!("TokenRevoked jti={jti} user=root reason=logout"),
        WAIT,
    );
    // Revoking again is not an error, and announces nothing new.
    assert_eq!(env.ok(&["revoke", "-"], &format!("{token}\n")), "revoked");
    assert_eq!(env.validate(&token).unwrap_err().0, "TokenRevoked");
}

// ---------------------------------------------------------------------------------------------
// 2. PIN handling
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_pins_count_down_and_the_last_retry_is_never_spent() {
    // 9E may be enrolled; the PINs refused below count toward the lockout, which must not end
    // the test before its last step.
    let (env, card) = Stack::with_card(
        YUBIKEY,
        "[users.root.piv]\nallow_pinless = true\n[auth]\nmax_failures = 10\n",
    );
    env.enroll(PIN, &["--user", "root"]);
    assert_eq!(pin_retries_left(&card), 3);

    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "PinInvalid", "{msg}");
    assert!(msg.contains("2 retries"), "{msg}");
    assert_eq!(pin_retries_left(&card), 2);

    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "PinInvalid", "{msg}");
    assert!(msg.contains("1 retr"), "{msg}");
    assert_eq!(pin_retries_left(&card), 1);

    // The last retry is kept, whether the PIN offered is right or wrong.
    for pin in [PIN, WRONG_PIN] {
        let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], pin);
        assert_eq!(name, "PinWouldBlock", "{msg}");
        assert_eq!(
            pin_retries_left(&card),
            1,
            "the daemon spent the last retry"
        );
    }
    // Enrollment keeps it too.
    let (name, msg) = env.err(
        &["enroll", "--user", "root", "--slot", "9e", "--pin-stdin"],
        PIN,
    );
    assert_eq!(name, "PinWouldBlock", "{msg}");
    assert_eq!(pin_retries_left(&card), 1);

    // No PIN for a 9A enrollment.
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--no-pin"], "");
    assert_eq!(name, "PinRequired", "{msg}");

    // Empty PIN: the CLI refuses it before calling ...
    let out = env.cli(&["authenticate", "--user", "root", "--pin-stdin"], "\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("empty PIN"), "{out:?}");
    // ... and the daemon refuses it from any other client, as it does a PIN longer than 8.
    for (pin, why) in [("", "empty"), ("123456789", "longer than 8")] {
        let out = env.gdbus_call(
            MANAGER_PATH,
            "org.tessera.Tessera1.Manager.Authenticate",
            &["root", &format!("{{'pin': <'{pin}'>}}")],
        );
        assert!(!out.status.success(), "{out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("org.tessera.Tessera1.Error.PinFormat") && err.contains(why),
            "PIN {pin:?}: {err}"
        );
    }
    assert_eq!(
        pin_retries_left(&card),
        1,
        "malformed PINs reached the card"
    );

    // Independently of Tessera: the card is not blocked, the right PIN still verifies (and resets
    // the counter), after which Tessera authenticates again.
    yubico_verify_pin(PIN).expect("the card must not be blocked");
    assert_eq!(pin_retries_left(&card), 3);
    let token = env.authenticate(&["--user", "root"]);
    assert!(env.validate(&token).is_ok());
}

/// Another PC/SC client that resets the card when it disconnects (yubico-piv-tool does) must not
/// leave the daemon's shared connection failing with SCARD_W_RESET_CARD (fixed in e848e15).
#[test]
fn card_reset_by_another_application_does_not_break_the_device() {
    let (env, _) = Stack::with_card(YUBIKEY, "");
    env.enroll(PIN, &["--user", "root"]);
    env.authenticate(&["--user", "root"]);

    yubico_verify_pin(PIN).expect("yubico-piv-tool verify-pin");
    // The card is still in the reader; a reset only drops its security status.
    for attempt in 1..=2 {
        let out = env.cli(
            &["authenticate", "--user", "root", "--pin-stdin"],
            &format!("{PIN}\n"),
        );
        assert!(
            out.status.success(),
            "attempt {attempt} after a card reset: {}",
            stderr(&out)
        );
    }
}

#[test]
fn card_with_a_single_retry_is_never_tried() {
    let (mut env, card) = Stack::with_card(&["--pin-retries", "1"], "");
    assert_eq!(pin_retries_left(&card), 1);

    let (name, msg) = env.err(&["enroll", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "PinWouldBlock", "enroll: {msg}");
    assert_eq!(pin_retries_left(&card), 1);

    // Enroll under a daemon allowed to spend the last retry (the right PIN does not use it up), then
    // authenticate under the default policy again.
    env.stop_daemon();
    env.start_daemon("[pin]\nkeep_last_retry = false\n");
    env.wait_device(true);
    env.enroll(PIN, &["--user", "root"]);
    assert_eq!(pin_retries_left(&card), 1);
    env.stop_daemon();
    env.start_daemon("");
    env.wait_device(true);

    for pin in [PIN, WRONG_PIN] {
        let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], pin);
        assert_eq!(name, "PinWouldBlock", "{msg}");
        assert_eq!(
            pin_retries_left(&card),
            1,
            "the daemon spent the only retry"
        );
    }
}

#[test]
fn blocked_card_is_pin_blocked() {
    // The guard is off, so wrong PINs may block the card.
    let (mut env, card) = Stack::with_card(YUBIKEY, "[pin]\nkeep_last_retry = false\n");
    env.enroll(PIN, &["--user", "root"]);

    for left in [2, 1] {
        let (name, msg) = env.err(
            &["authenticate", "--user", "root", "--pin-stdin"],
            WRONG_PIN,
        );
        assert_eq!(name, "PinInvalid", "{msg}");
        assert_eq!(pin_retries_left(&card), left);
    }
    // The third wrong PIN blocks the card (reported as 0 retries left or as blocked).
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert!(
        (name == "PinInvalid" && msg.contains("0 retries")) || name == "PinBlocked",
        "{name}: {msg}"
    );
    assert_eq!(pin_retries_left(&card), 0);

    // The right PIN cannot help any more.
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "PinBlocked", "{msg}");
    // And under the default policy too.
    env.stop_daemon();
    env.start_daemon("");
    env.wait_device(true);
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "PinBlocked", "{msg}");
    let (name, msg) = env.err(&["enroll", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "PinBlocked", "enroll: {msg}");
    assert_eq!(pin_retries_left(&card), 0);
    // Independently of Tessera: the right PIN no longer verifies.
    let err = yubico_verify_pin(PIN).expect_err("a blocked card verified its PIN");
    assert!(err.to_lowercase().contains("block"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 3. Which device, which user
// ---------------------------------------------------------------------------------------------

#[test]
fn no_device_not_enrolled_and_no_such_user() {
    let mut env = Stack::new();
    let card_a = env.path("card-a.json");
    let card_b = env.path("card-b.json");
    env.start_sim(&card_a, &[]);
    env.start_daemon("");
    env.wait_device(true);

    // Root has not enrolled anything yet.
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "NotEnrolled", "{msg}");

    for args in [
        &[
            "authenticate",
            "--user",
            "tessera-nosuchuser",
            "--pin-stdin",
        ][..],
        &["enroll", "--user", "tessera-nosuchuser", "--pin-stdin"][..],
    ] {
        let (name, msg) = env.err(args, PIN);
        assert_eq!(name, "NoSuchUser", "{args:?}: {msg}");
        assert!(msg.contains("tessera-nosuchuser"), "{msg}");
    }

    env.enroll(PIN, &["--user", "root"]);
    env.authenticate(&["--user", "root"]);

    // Card out: nothing to talk to.
    env.stop_sim();
    env.wait_device(false);
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "NoDevice", "{msg}");
    for (verb, what) in [("authenticate", "named device"), ("enroll", "enroll")] {
        let (name, msg) = env.err(
            &[verb, "--user", "root", "--device", DEVICE_ID, "--pin-stdin"],
            PIN,
        );
        assert_eq!(name, "NoDevice", "{what}: {msg}");
    }

    // Another card (a new state file: other keys) in the same reader.
    env.start_sim(&card_b, &[]);
    env.wait_device(true);
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "NotEnrolled", "{msg}");
    assert_eq!(
        pin_retries_left(&card_b),
        3,
        "the foreign card was PIN-tried"
    );

    // The enrolled card again: it still works, so the failures above were about the card.
    env.stop_sim();
    env.wait_device(false);
    env.start_sim(&card_a, &[]);
    env.wait_device(true);
    env.authenticate(&["--user", "root", "--device", DEVICE_ID]);
}

// ---------------------------------------------------------------------------------------------
// 4. Faults: card pulled mid-signature, card that does not answer
// ---------------------------------------------------------------------------------------------

#[test]
fn card_pulled_during_signature_issues_nothing() {
    let mut env = Stack::new();
    let card = env.path("card.json");
    let mut watch = enrolled_card_that_leaves_on_sign(&mut env, &card);
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "DeviceRemoved", "{msg}");
    let status = env.sim.as_mut().unwrap().wait_exit(WAIT);
    assert!(status.is_some_and(|s| s.success()), "simulator: {status:?}");
    env.sim = None;
    env.wait_device(false);
    watch.wait_for_line(&format!("DeviceRemoved {DEVICE_PATH}"), WAIT);

    // Re-insert: the DeviceAdded line orders the watch output, so every signal the removal caused
    // is before it.
    env.start_sim(&card, &[]);
    env.wait_device(true);
    watch.wait_for_line(&format!("DeviceAdded {DEVICE_PATH}"), WAIT);
    let lines = watch.stdout_lines();
    assert!(
        !lines.iter().any(|l| l.contains("TokenRevoked")),
        "a token was issued and revoked: {lines:?}"
    );
    assert_eq!(
        env.token_rows(),
        0,
        "a token row was written for an aborted authentication"
    );

    // The card was not harmed: authentication works now.
    let token = env.authenticate(&["--user", "root"]);
    assert!(env.validate(&token).is_ok());
    assert_eq!(env.token_rows(), 1);
}

#[test]
fn card_that_does_not_answer_times_out() {
    let (mut env, card) = Stack::with_card(&[], "[device]\ntimeout = \"1s\"\n");
    env.enroll(PIN, &["--user", "root"]);
    env.stop_sim();
    env.wait_device(false);

    env.start_sim(&card, &["--fault", "stall-on-sign=4000"]);
    env.wait_device(true);
    let started = Instant::now();
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    let took = started.elapsed();
    assert_eq!(name, "Timeout", "{msg}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "Timeout after {took:?}; configured 1 s, card stalls 4 s"
    );
    // The daemon still answers other callers at once.
    let started = Instant::now();
    env.ok(&["jwks"], "");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(env.token_rows(), 0, "a token was issued after the timeout");

    // The stalled card, pulled and re-inserted without the fault, works again: a timed-out exchange
    // does not wedge the reader or the daemon.
    env.stop_sim();
    env.wait_device(false);
    env.start_sim(&card, &[]);
    env.wait_device(true);
    let token = env.authenticate(&["--user", "root"]);
    assert!(env.validate(&token).is_ok());
    assert_eq!(env.token_rows(), 1);
    assert_eq!(pin_retries_left(&card), 3);
}

/// Enrolls root with the card in `card`, then re-inserts the same card with the `remove-on-sign`
/// fault; returns a `tessera watch` started after the re-insertion.
fn enrolled_card_that_leaves_on_sign(env: &mut Stack, card: &Path) -> Child {
    env.start_sim(card, &[]);
    env.start_daemon("");
    env.wait_device(true);
    env.enroll(PIN, &["--user", "root"]);
    env.stop_sim();
    env.wait_device(false);
    env.start_sim(card, &["--fault", "remove-on-sign"]);
    env.wait_device(true);
    env.start_watch()
}

// ---------------------------------------------------------------------------------------------
// 5. Removal revokes
// ---------------------------------------------------------------------------------------------

#[test]
fn pulling_the_card_revokes_its_tokens_and_reinsertion_does_not_revive_them() {
    let (mut env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    let claims = env.validate(&token).unwrap();
    let jti = claims["jti"].as_str().unwrap().to_owned();

    let mut watch = env.start_watch();
    // A second witness that is not our code: tells a daemon that never signalled from a CLI that
    // missed the signal.
    let mut monitor = env.start_monitor();
    env.stop_sim();
    monitor.wait_for_line(&format!("string \"{jti}\""), WAIT);
    revoked_by_removal(&env, &watch, &token, &jti);
    assert!(!env.ok(&["status"], "").contains(DEVICE_PATH));

    // The same card back in.
    env.start_sim(&card, &[]);
    watch.wait_for_line(&format!("DeviceAdded {DEVICE_PATH}"), WAIT);
    env.wait_device(true);
    assert_eq!(env.validate(&token).unwrap_err().0, "TokenRevoked");
    let fresh = env.authenticate(&["--user", "root"]);
    let fresh_claims = env.validate(&fresh).expect("new token after re-insertion");
    assert_ne!(fresh_claims["jti"], claims["jti"]);
    assert_ne!(
        fresh_claims["sid"], claims["sid"],
        "a new insertion is a new device session"
    );
    assert_eq!(fresh_claims["cnf"], claims["cnf"], "same card, same key");
    // Only the one token was revoked.
    let revoked: Vec<String> = watch
        .stdout_lines()
        .into_iter()
        .filter(|l| l.starts_with("TokenRevoked"))
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
}

/// Waits until `watch` has shown the device leave and root's `token` (id `jti`) revoked for it (in
/// either order), then checks that the daemon calls the token revoked for that reason.
#[track_caller]
fn revoked_by_removal(env: &Stack, watch: &Child, token: &str, jti: &str) {
    saw_all(
        watch,
        &[
            &format!("DeviceRemoved {DEVICE_PATH}"),
            &format!("TokenRevoked jti={jti} user=root reason=device-removed"),
        ],
        WAIT,
    );
    let (name, msg) = env.validate(token).unwrap_err();
    assert_eq!(name, "TokenRevoked", "{msg}");
    assert!(msg.contains("device-removed"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// 7. Authorization
// ---------------------------------------------------------------------------------------------

#[test]
fn users_act_only_for_themselves_but_anyone_may_validate() {
    let alice = test_user("tessera-alice");
    let bob = test_user("tessera-bob");
    let (env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "tessera-alice"]);

    // Bob may not act for Alice, with or without her PIN.
    for args in [
        &["authenticate", "--user", "tessera-alice", "--pin-stdin"][..],
        &["enroll", "--user", "tessera-alice", "--pin-stdin"][..],
    ] {
        let out = env.cli_as(bob, args, PIN);
        let (name, msg) = parse_err(&out);
        assert_eq!(name, "AccessDenied", "{args:?}: {msg}");
    }
    assert_eq!(pin_retries_left(&card), 3);
    // Bob for himself is allowed to ask, he just has nothing enrolled.
    let (name, msg) = parse_err(&env.cli_as(bob, &["authenticate", "--pin-stdin"], PIN));
    assert_eq!(name, "NotEnrolled", "{msg}");
    // Root may act for bob: bob exists, so it is NotEnrolled too (not NoSuchUser, not AccessDenied).
    let (name, msg) = env.err(
        &["authenticate", "--user", "tessera-bob", "--pin-stdin"],
        PIN,
    );
    assert_eq!(name, "NotEnrolled", "{msg}");

    // Alice for herself works (so the denial above is about bob, not about non-root callers).
    let out = env.cli_as(alice, &["authenticate", "--pin-stdin"], PIN);
    assert!(out.status.success(), "alice: {out:?}");
    let alice_token = stdout(&out).trim().to_owned();
    // Explicitly naming herself works too.
    let out = env.cli_as(
        alice,
        &["authenticate", "--user", "tessera-alice", "--pin-stdin"],
        PIN,
    );
    assert!(out.status.success(), "alice naming herself: {out:?}");

    // Whoever holds the token may validate it; the token travels on stdin, never in argv.
    let out = env.cli_as(
        bob,
        &["validate", "--json", "-"],
        &format!("{alice_token}\n"),
    );
    assert!(out.status.success(), "bob validating: {out:?}");
    let claims: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(claims["sub"], "tessera-alice");
    // Root's token for alice is alice's too.
    let root_for_alice = env.authenticate(&["--user", "tessera-alice"]);
    assert_eq!(
        env.validate(&root_for_alice).unwrap()["sub"],
        "tessera-alice"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Forgery and expiry
// ---------------------------------------------------------------------------------------------

#[test]
fn forged_and_malformed_tokens_are_invalid() {
    let (env, _) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    let jwt = Jwt::parse(&token);
    let [h, p, _] = jwt.segments();

    // One payload character changed (a middle one: every bit of it is significant).
    let mut payload: Vec<char> = p.chars().collect();
    let mid = payload.len() / 2;
    payload[mid] = if payload[mid] == 'A' { 'B' } else { 'A' };
    let payload: String = payload.into_iter().collect();
    let changed_payload = format!("{h}.{payload}.{}", jwt.segments()[2]);

    // The same header (kid) and claims, signed by another key.
    let other_key = SigningKey::random(&mut rand_core::OsRng);
    let input = format!("{h}.{p}");
    let sig: Signature = other_key.sign(input.as_bytes());
    let other_signer = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    // And with a fresh jti, so no index look-up can recognise it.
    let mut claims = jwt.payload.clone();
    claims["jti"] = Value::from(URL_SAFE_NO_PAD.encode([7u8; 16]));
    let p2 = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input2 = format!("{h}.{p2}");
    let sig2: Signature = other_key.sign(input2.as_bytes());
    let other_signer_new_jti = format!("{input2}.{}", URL_SAFE_NO_PAD.encode(sig2.to_bytes()));

    // alg=none, with and without a signature segment.
    let mut none_header = jwt.header.clone();
    none_header["alg"] = Value::from("none");
    let hn = URL_SAFE_NO_PAD.encode(none_header.to_string());
    let alg_none = format!("{hn}.{p}.");
    let alg_none_sig = format!("{hn}.{p}.{}", jwt.segments()[2]);
    // The real signature moved onto other claims.
    let moved_sig = format!("{h}.{p2}.{}", jwt.segments()[2]);

    let huge = "A".repeat(100 * 1024);
    let cases: Vec<(&str, String)> = vec![
        ("payload character changed", changed_payload.clone()),
        ("other key, same kid", other_signer),
        ("other key, same kid, new jti", other_signer_new_jti),
        ("signature moved to other claims", moved_sig),
        ("alg=none", alg_none),
        ("alg=none with signature", alg_none_sig),
        ("garbage", "this is not a token".into()),
        ("three garbage segments", "a.b.c".into()),
        ("header only", h.to_owned()),
        ("empty", String::new()),
        ("100 KB", huge.clone()),
        ("token with trailing junk", format!("{token}x")),
    ];
    for (what, forged) in &cases {
        assert_ne!(forged, &token);
        let (name, msg) = env
            .validate(forged)
            .expect_err(&format!("{what} validated"));
        assert_eq!(name, "TokenInvalid", "{what}: {msg}");
    }
    // Revocation does not take forgeries either.
    for (what, forged) in [("payload changed", &changed_payload), ("100 KB", &huge)] {
        let (name, msg) = env.err(&["revoke", "-"], &format!("{forged}\n"));
        assert_eq!(name, "TokenInvalid", "revoke {what}: {msg}");
    }
    // The empty token through the bus directly (the CLI reads it from stdin above).
    let out = env.gdbus_call(
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager.ValidateToken",
        &[""],
    );
    assert!(
        stderr(&out).contains("org.tessera.Tessera1.Error.TokenInvalid"),
        "{out:?}"
    );

    // None of that disturbed the real token.
    assert_eq!(env.validate(&token).unwrap()["jti"], jwt.payload["jti"]);
}

#[test]
fn expired_token_is_token_expired() {
    let (env, _) = Stack::with_card(&[], "[token]\nlifetime = \"1s\"\n");
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    let jwt = Jwt::parse(&token);
    let iat = jwt.payload["iat"].as_u64().unwrap();
    let exp = jwt.payload["exp"].as_u64().unwrap();
    assert_eq!(exp - iat, 1, "configured lifetime: {}", jwt.payload);
    // The one sleep of the suite: let the token outlive its second.
    std::thread::sleep(Duration::from_millis(2100));
    let (name, msg) = env.validate(&token).unwrap_err();
    assert_eq!(name, "TokenExpired", "{msg}");
    let (name, msg) = env.err(&["revoke", "-"], &format!("{token}\n"));
    assert_eq!(name, "TokenExpired", "revoke: {msg}");
    // A forgery of an expired token is still a forgery, not "expired".
    let [h, p, s] = jwt.segments();
    let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
    sig[10] ^= 0x01;
    let forged = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(env.validate(&forged).unwrap_err().0, "TokenInvalid");
}

// ---------------------------------------------------------------------------------------------
// 9. pcscd restart
// ---------------------------------------------------------------------------------------------

#[test]
fn daemon_survives_pcscd_restart_and_revokes_card_tokens() {
    let (mut env, _) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    let jti = env.validate(&token).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch = env.start_watch();

    env.pcsc.restart_pcscd();
    let daemon = env.daemon.as_mut().unwrap();
    daemon.wait_for_stderr_line("lost pcscd", WAIT);
    revoked_by_removal(&env, &watch, &token, &jti);

    // The simulator reconnects to the new pcscd by itself; the daemon finds pcscd and the card again.
    let daemon = env.daemon.as_mut().unwrap();
    daemon.wait_for_stderr_line("pcscd is reachable again", Duration::from_secs(40));
    saw_all(
        &watch,
        &[&format!("DeviceAdded {DEVICE_PATH}")],
        Duration::from_secs(40),
    );
    env.wait_device(true);
    assert!(
        env.daemon.as_mut().unwrap().try_wait().is_none(),
        "tesserad exited"
    );
    assert!(
        env.sim.as_mut().unwrap().try_wait().is_none(),
        "the simulator exited"
    );
    let fresh = env.authenticate(&["--user", "root"]);
    assert!(env.validate(&fresh).is_ok());
    assert_eq!(env.validate(&token).unwrap_err().0, "TokenRevoked");
}

// ---------------------------------------------------------------------------------------------
// 10. Slot 9E
// ---------------------------------------------------------------------------------------------

#[test]
fn slot_9e_needs_the_pin_to_enroll_but_not_to_authenticate() {
    let (env, card) = Stack::with_card(&[], "[users.root.piv]\nallow_pinless = true\n");

    // Only 9A and 9E can be enrolled; unknown options are refused, not ignored.
    for slot in ["9c", "9d", "82", "x"] {
        let (name, msg) = env.err(
            &["enroll", "--user", "root", "--slot", slot, "--pin-stdin"],
            PIN,
        );
        assert_eq!(name, "InvalidArgument", "slot {slot}: {msg}");
    }
    let out = env.gdbus_call(
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager.Authenticate",
        &["root", "{'pin': <'123456'>, 'remember-me': <true>}"],
    );
    assert!(
        stderr(&out).contains("org.tessera.Tessera1.Error.InvalidArgument"),
        "{out:?}"
    );
    assert_eq!(pin_retries_left(&card), 3);

    let (name, msg) = env.err(
        &["enroll", "--user", "root", "--slot", "9e", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "PinInvalid", "9E enrollment checks the PIN: {msg}");
    assert_eq!(pin_retries_left(&card), 2);
    // Nothing was enrolled by the failed attempt.
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--no-pin"], "");
    assert_eq!(name, "NotEnrolled", "{msg}");

    env.enroll(PIN, &["--user", "root", "--slot", "9e"]);
    assert_eq!(pin_retries_left(&card), 3);
    let token = env.authenticate_no_pin(&["--user", "root"]);
    let claims = env.validate(&token).unwrap();
    let amr = amr(&claims);
    assert!(amr.iter().any(|m| m == "hwk"), "{claims}");
    assert!(amr.iter().any(|m| m == "sc"), "{claims}");
    assert!(!amr.iter().any(|m| m == "pin"), "{claims}");
    assert_eq!(
        claims["cnf"]["jkt"].as_str().unwrap(),
        card_key_thumbprint(&card, "9e"),
        "token bound to the 9E key"
    );
    assert_ne!(
        card_key_thumbprint(&card, "9e"),
        card_key_thumbprint(&card, "9a")
    );
    // The PIN is never tried for a 9E login; one given is refused, not silently dropped.
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "InvalidArgument", "{msg}");
    assert_eq!(pin_retries_left(&card), 3);
}

// ---------------------------------------------------------------------------------------------
// Secrets stay secret
// ---------------------------------------------------------------------------------------------

/// PINs and tokens never reach the daemon's log (at debug level) nor its state directory, whose files
/// are owner-only.
#[test]
fn secrets_are_not_logged_or_stored() {
    // Distinctive PINs: eight digits never occur in a log timestamp.
    const CARD_PIN: &str = "86427531";
    const BAD_PIN: &str = "97531864";
    let (mut env, _) = Stack::with_card(&["--pin", CARD_PIN], "");
    env.enroll(CARD_PIN, &["--user", "root"]);
    let (name, _) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], BAD_PIN);
    assert_eq!(name, "PinInvalid");
    let out = env.cli(
        &["authenticate", "--user", "root", "--pin-stdin"],
        &format!("{CARD_PIN}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let token = stdout(&out).trim().to_owned();
    assert!(env.validate(&token).is_ok());
    env.ok(&["revoke", "-"], &format!("{token}\n"));
    let signature = Jwt::parse(&token).segments()[2].to_owned();
    env.stop_daemon();

    let state = env.path("state");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::metadata(&path).unwrap();
        if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [CARD_PIN, BAD_PIN, token.as_str(), signature.as_str()] {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
        seen.push(path);
    }
    assert!(!seen.is_empty(), "empty state directory");
    let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "state directory mode {dir_mode:o}");

    let log = std::fs::read(env.path("2-tesserad.stderr.log")).unwrap();
    assert!(contains(&log, b"enrolled"), "not the daemon's log");
    for secret in [CARD_PIN, BAD_PIN, token.as_str(), signature.as_str()] {
        assert!(
            !contains(&log, secret.as_bytes()),
            "the daemon logged a secret"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Helpers: JWT, the simulator's state file
// ---------------------------------------------------------------------------------------------

fn amr(claims: &Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .unwrap_or_else(|| panic!("amr not an array: {claims}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn is_b64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A compact JWS, decoded here without the daemon's code.
#[derive(Clone)]
struct Jwt {
    text: String,
    header: Value,
    payload: Value,
    signature: Vec<u8>,
    /// `header.payload` as signed.
    signing_input: String,
}

impl Jwt {
    fn parse(token: &str) -> Jwt {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
        let json = |s: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url")).expect("JSON")
        };
        Jwt {
            text: token.to_owned(),
            header: json(parts[0]),
            payload: json(parts[1]),
            signature: URL_SAFE_NO_PAD
                .decode(parts[2])
                .expect("signature base64url"),
            signing_input: format!("{}.{}", parts[0], parts[1]),
        }
    }

    fn segments(&self) -> [&str; 3] {
        let mut it = self.text.split('.');
        [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
    }

    /// ES256 (RFC 7518 §3.4): P-256 ECDSA over SHA-256, signature as r || s (64 bytes).
    fn verifies_with(&self, key: &VerifyingKey) -> bool {
        let Ok(sig) = Signature::from_slice(&self.signature) else {
            return false;
        };
        key.verify(self.signing_input.as_bytes(), &sig).is_ok()
    }
}

fn jwk_by_kid<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"].as_array()?.iter().find(|k| k["kid"] == kid)
}

/// The P-256 key of an RFC 7517 JWK.
fn verifying_key(jwk: &Value) -> VerifyingKey {
    let coord = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (x, y) = (coord("x"), coord("y"));
    assert_eq!((x.len(), y.len()), (32, 32), "{jwk}");
    // SEC 1 uncompressed point: 0x04 || x || y.
    let sec1: Vec<u8> = [&[0x04][..], &x, &y].concat();
    VerifyingKey::from_sec1_bytes(&sec1).expect("JWK is a P-256 point")
}

/// `yubico-piv-tool -a verify-pin` on reader 0: a PIV client that is not Tessera. Its stderr on failure.
fn yubico_verify_pin(pin: &str) -> Result<(), String> {
    // yubico-piv-tool only takes the PIN as an argument; this is the test card's well-known PIN.
    let out = run(
        Command::new("yubico-piv-tool").args([
            "-r",
            common::VPCD_READER_0,
            "-a",
            "verify-pin",
            "-P",
            pin,
        ]),
        b"",
        CLI_TIMEOUT,
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", stdout(&out), stderr(&out)))
    }
}

/// The simulator's state file (JSON), read behind the simulator's back.
fn card_state(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read card state {}: {e}", path.display()));
    serde_json::from_str(&text).expect("card state JSON")
}

fn pin_retries_left(card: &Path) -> u64 {
    card_state(card)["pin_retries_left"]
        .as_u64()
        .expect("pin_retries_left")
}

/// RFC 7638 thumbprint of the public key of `slot` ("9a", "9e"), from the card's private key.
fn card_key_thumbprint(card: &Path, slot: &str) -> String {
    let state = card_state(card);
    let hex_key = state["keys"][slot]["private_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in slot {slot}"));
    let key = SigningKey::from_slice(&hex::decode(hex_key).unwrap()).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        URL_SAFE_NO_PAD.encode(point.y().unwrap())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

//! End-to-end tests of who may spend a card's PIN tries, and of the checks that keep a PIN from
//! reaching a card other than the enrolled one: the card's owner (or root) only; one wrong PIN per
//! caller on a card enrolled for nobody, remembered across restarts; a bounded share of a device's
//! queue per caller; one device or an explicit choice; the enrolled card's GUID and 9E key; PIN-less
//! 9E logins only where the administrator allows them; enrollments bound to the account's uid.
//! Real processes throughout: `tessera-sim piv` behind pcscd and vpcd, `tesserad` on a private bus,
//! the `tessera` CLI run as other local users.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use common::stack::{parse_err, Stack, DEVICE_PATH, PIN, WAIT};
use common::{bin, run, stderr, test_user, wait_until, Child, VPCD_ADDR_1};

const WRONG_PIN: &str = "999999";
/// The device object of a card in reader 1 (`Virtual PCD 00 01`).
const DEVICE_PATH_1: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2001";
/// Lets root enroll 9E keys.
const PINLESS_FOR_ROOT: &str = "[users.root.piv]\nallow_pinless = true\n";

fn card_state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pin_retries_left(card: &Path) -> u64 {
    card_state(card)["pin_retries_left"].as_u64().unwrap()
}

fn amr(claims: &Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// `tessera enroll --pin-stdin` as `user` with `pin`: (error name, message) or "ok".
fn enroll_as(env: &Stack, user: (u32, u32), pin: &str) -> (String, String) {
    outcome(&env.cli_as(user, &["enroll", "--pin-stdin"], pin))
}

fn outcome(out: &Output) -> (String, String) {
    if out.status.success() {
        ("ok".into(), String::new())
    } else {
        parse_err(out)
    }
}

/// Writes a card state file by starting a simulator on it in reader 1 and pulling it again.
fn make_card(env: &Stack, state: &Path, extra: &[&str]) {
    let mut sim = start_sim_1(env, state, extra);
    sim.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sim.wait_exit(WAIT).is_some_and(|s| s.success()));
}

/// A simulated card in reader 1, removed when the guard drops.
fn start_sim_1(env: &Stack, state: &Path, extra: &[&str]) -> Child {
    let name = format!(
        "sim1-{}",
        state
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_")
    );
    let mut sim = Child::spawn(
        &name,
        Command::new(bin("tessera-sim"))
            .args(["piv", "--vpcd", VPCD_ADDR_1, "--state"])
            .arg(state)
            .args(extra),
        &env.path(""),
    );
    sim.wait_for_line("ready", WAIT);
    sim
}

fn wait_device_1(env: &Stack, present: bool) {
    let ok = wait_until(WAIT, || {
        common::stdout(&env.cli(&["status"], "")).contains(DEVICE_PATH_1) == present
    });
    assert!(ok, "device in reader 1 present={present} not reached");
}

// ---------------------------------------------------------------------------------------------
// Item 4: nobody spends the PIN tries of someone else's card
// ---------------------------------------------------------------------------------------------

#[test]
fn only_the_owner_or_root_may_send_the_pin_of_an_enrolled_card() {
    let alice = test_user("tessera-alice");
    let bob = test_user("tessera-bob");
    let (env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "tessera-alice"]);
    assert_eq!(pin_retries_left(&card), 3);

    // Bob tries to enroll Alice's card for himself, twice: nothing reaches the card.
    for _ in 0..2 {
        let (name, msg) = enroll_as(&env, bob, WRONG_PIN);
        assert_eq!(name, "AccessDenied", "{msg}");
    }
    assert_eq!(pin_retries_left(&card), 3, "bob spent alice's PIN tries");
    // Not even with the right PIN.
    assert_eq!(enroll_as(&env, bob, PIN).0, "AccessDenied");

    // Alice and root still may.
    let (name, msg) = enroll_as(&env, alice, WRONG_PIN);
    assert_eq!(name, "PinInvalid", "{msg}");
    assert_eq!(pin_retries_left(&card), 2);
    env.enroll(PIN, &["--user", "tessera-alice"]);
    assert_eq!(pin_retries_left(&card), 3);
}

#[test]
fn a_card_enrolled_for_nobody_takes_one_wrong_pin_per_caller_even_across_restarts() {
    let alice = test_user("tessera-alice");
    let bob = test_user("tessera-bob");
    let (mut env, card) = Stack::with_card(&["--pin-retries", "8"], "");

    let (name, msg) = enroll_as(&env, alice, WRONG_PIN);
    assert_eq!(name, "PinInvalid", "{msg}");
    assert_eq!(pin_retries_left(&card), 7);
    for pin in [WRONG_PIN, PIN] {
        let (name, msg) = enroll_as(&env, alice, pin);
        assert_eq!(name, "AccessDenied", "{msg}");
        assert!(msg.contains("wrong PIN"), "the message says why: {msg}");
    }
    assert_eq!(pin_retries_left(&card), 7);

    // The count is durable: a restart does not give Alice another try.
    env.stop_daemon();
    env.start_daemon("");
    env.wait_device(true);
    assert_eq!(enroll_as(&env, alice, WRONG_PIN).0, "AccessDenied");
    assert_eq!(pin_retries_left(&card), 7);

    // Each caller has a try of its own.
    assert_eq!(enroll_as(&env, bob, WRONG_PIN).0, "PinInvalid");
    assert_eq!(enroll_as(&env, bob, WRONG_PIN).0, "AccessDenied");
    assert_eq!(pin_retries_left(&card), 6);

    // Root, who can reach the card through pcscd anyway, enrolls it for Alice; from then on it is
    // hers, and Bob's PINs are refused for that reason.
    env.enroll(PIN, &["--user", "tessera-alice"]);
    let (name, msg) = enroll_as(&env, bob, PIN);
    assert_eq!(name, "AccessDenied", "{msg}");
    assert!(msg.contains("enrolled for another account"), "{msg}");
}

#[test]
fn a_pin_not_tried_to_spare_the_last_retry_costs_the_caller_no_try() {
    let alice = test_user("tessera-alice");
    let (env, card) = Stack::with_card(&["--pin-retries", "1"], "");
    for _ in 0..2 {
        let (name, msg) = enroll_as(&env, alice, WRONG_PIN);
        assert_eq!(name, "PinWouldBlock", "{msg}");
    }
    assert_eq!(pin_retries_left(&card), 1);
}

#[test]
fn concurrent_wrong_pins_of_one_caller_reach_the_card_once() {
    let alice = test_user("tessera-alice");
    let (env, card) = Stack::with_card(&[], "");
    let outcomes: Vec<(String, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| s.spawn(|| enroll_as(&env, alice, WRONG_PIN)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(pin_retries_left(&card), 2, "outcomes: {outcomes:?}");
    let wrong = outcomes.iter().filter(|(n, _)| n == "PinInvalid").count();
    assert_eq!(wrong, 1, "{outcomes:?}");
    for (name, msg) in &outcomes {
        assert!(
            ["PinInvalid", "AccessDenied", "Busy"].contains(&name.as_str()),
            "{name}: {msg}"
        );
    }
}

#[test]
fn one_caller_may_queue_at_most_two_operations_on_a_device() {
    // Each signature takes 4 s, so the three calls are all at the device at once; the device timeout
    // leaves room for two of them in turn.
    let (env, _card) = Stack::with_card(
        &["--fault", "stall-on-sign=4000"],
        "[device]\ntimeout = \"20s\"\n",
    );
    env.enroll(PIN, &["--user", "root"]);
    let outcomes: Vec<(String, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    outcome(&env.cli(
                        &["authenticate", "--user", "root", "--pin-stdin"],
                        &format!("{PIN}\n"),
                    ))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let busy: Vec<_> = outcomes.iter().filter(|(n, _)| n == "Busy").collect();
    let ok = outcomes.iter().filter(|(n, _)| n == "ok").count();
    assert_eq!((busy.len(), ok), (1, 2), "{outcomes:?}");
    // The full D-Bus name, as gdbus shows it.
    let out = env.gdbus_call(
        "/org/tessera/Tessera1/Manager",
        "org.tessera.Tessera1.Manager.Authenticate",
        &["root", "{'pin': <'123456'>}"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Item 5: the PIN goes only to the right card
// ---------------------------------------------------------------------------------------------

#[test]
fn two_enrolled_cards_present_is_ambiguous_without_a_device() {
    let (env, card_0) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let card_1 = env.path("card1.json");
    let _sim = start_sim_1(&env, &card_1, &[]);
    wait_device_1(&env, true);
    env.enroll(PIN, &["--user", "root", "--device", DEVICE_PATH_1]);

    let out = env.gdbus_call(
        "/org/tessera/Tessera1/Manager",
        "org.tessera.Tessera1.Manager.Authenticate",
        &["root", "{'pin': <'123456'>}"],
    );
    let text = stderr(&out);
    assert!(
        text.contains("org.tessera.Tessera1.Error.DeviceAmbiguous"),
        "{out:?}"
    );
    assert!(
        text.contains(DEVICE_PATH) && text.contains(DEVICE_PATH_1),
        "lists both devices: {text}"
    );
    assert_eq!(pin_retries_left(&card_0), 3);
    assert_eq!(pin_retries_left(&card_1), 3);
    // Naming one works.
    env.authenticate(&["--user", "root", "--device", DEVICE_PATH_1]);
}

/// Replaces the GUID (and the CHUID holding it) of the card state `to` by those of `from`.
fn copy_guid(from: &Value, to: &mut Value) {
    to["guid"] = from["guid"].clone();
    to["objects"]["5fc102"] = from["objects"]["5fc102"].clone();
}

fn write_state(path: &Path, state: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_card_with_the_enrolled_keys_but_another_guid_never_gets_the_pin() {
    let (mut env, card) = Stack::with_card(&[], "[auth]\nmax_failures = 2\n");
    env.enroll(PIN, &["--user", "root"]);
    let other = env.path("other.json");
    make_card(&env, &other, &[]);
    // The enrolled card's keys and certificates, another card's GUID.
    let mut forged = card_state(&card);
    copy_guid(&card_state(&other), &mut forged);
    let forged_path = env.path("forged.json");
    write_state(&forged_path, &forged);

    env.stop_sim();
    env.wait_device(false);
    env.start_sim(&forged_path, &[]);
    env.wait_device(true);
    for pin in [WRONG_PIN, PIN] {
        let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], pin);
        assert_eq!(name, "SignatureInvalid", "{msg}");
    }
    assert_eq!(
        pin_retries_left(&forged_path),
        3,
        "the PIN reached the card"
    );
    // Both count as failures: the user is locked out now.
    let (name, msg) = env.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "RateLimited", "{msg}");
}

#[test]
fn a_card_with_copied_certificates_that_fails_the_9e_challenge_never_gets_the_pin() {
    let (mut env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let other = env.path("other.json");
    make_card(&env, &other, &[]);
    // Another card's private keys behind the enrolled card's certificates and GUID.
    let genuine = card_state(&card);
    let mut forged = card_state(&other);
    copy_guid(&genuine, &mut forged);
    for tag in ["5fc105", "5fc101"] {
        forged["objects"][tag] = genuine["objects"][tag].clone();
    }
    let forged_path = env.path("forged.json");
    write_state(&forged_path, &forged);

    env.stop_sim();
    env.wait_device(false);
    env.start_sim(&forged_path, &[]);
    env.wait_device(true);
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "SignatureInvalid", "{msg}");
    assert_eq!(
        pin_retries_left(&forged_path),
        3,
        "the PIN reached the card"
    );
}

#[test]
fn with_9a_and_9e_enrolled_a_pin_means_9a_and_no_pin_means_9e() {
    let (env, card) = Stack::with_card(&[], PINLESS_FOR_ROOT);
    env.enroll(PIN, &["--user", "root"]);
    env.enroll(PIN, &["--user", "root", "--slot", "9e"]);

    // A wrong PIN is a wrong PIN, not a 9E login.
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "PinInvalid", "{msg}");
    assert_eq!(pin_retries_left(&card), 2);

    let with_pin = env
        .validate(&env.authenticate(&["--user", "root"]))
        .unwrap();
    assert!(amr(&with_pin).contains(&"pin".to_owned()), "{with_pin}");
    let without = env
        .validate(&env.authenticate_no_pin(&["--user", "root"]))
        .unwrap();
    let methods = amr(&without);
    assert!(
        !methods.contains(&"pin".to_owned()) && !methods.contains(&"mfa".to_owned()),
        "{without}"
    );
    assert_ne!(with_pin["cnf"], without["cnf"], "two different keys");
}

#[test]
fn a_pin_given_for_a_9e_only_enrollment_is_refused_not_dropped() {
    let (env, card) = Stack::with_card(&[], PINLESS_FOR_ROOT);
    env.enroll(PIN, &["--user", "root", "--slot", "9e"]);
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "InvalidArgument", "{msg}");
    assert_eq!(pin_retries_left(&card), 3);
    env.authenticate_no_pin(&["--user", "root"]);
}

#[test]
fn pinless_enrollment_needs_the_administrators_permission() {
    let (mut env, card) = Stack::with_card(&[], "");
    let (name, msg) = env.err(
        &["enroll", "--user", "root", "--slot", "9e", "--pin-stdin"],
        PIN,
    );
    assert_eq!(name, "AccessDenied", "{msg}");
    assert!(msg.contains("allow_pinless"), "says how to allow it: {msg}");
    assert_eq!(pin_retries_left(&card), 3);
    env.enroll(PIN, &["--user", "root"]);

    // Allowed for root's group, denied again for root alone: the user's table wins.
    env.stop_daemon();
    env.start_daemon("[groups.root.piv]\nallow_pinless = true\n");
    env.wait_device(true);
    env.enroll(PIN, &["--user", "root", "--slot", "9e"]);
    env.stop_daemon();
    env.start_daemon(
        "[groups.root.piv]\nallow_pinless = true\n[users.root.piv]\nallow_pinless = false\n",
    );
    env.wait_device(true);
    let (name, msg) = env.err(
        &["enroll", "--user", "root", "--slot", "9e", "--pin-stdin"],
        PIN,
    );
    assert_eq!(name, "AccessDenied", "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Item 8: enrollments belong to a uid
// ---------------------------------------------------------------------------------------------

const REBORN: &str = "tessera-h2-reborn";

fn userdel(name: &str) {
    let out = run(
        Command::new("/usr/sbin/userdel").arg(name),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "userdel: {out:?}");
}

#[test]
fn an_account_recreated_with_another_uid_does_not_inherit_enrollments() {
    if nix::unistd::User::from_name(REBORN).unwrap().is_some() {
        userdel(REBORN);
    }
    let (old_uid, _) = test_user(REBORN);
    let (env, _card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", REBORN]);
    env.authenticate(&["--user", REBORN]);

    userdel(REBORN);
    let new_uid = (old_uid + 1..60_000)
        .find(|u| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*u))
                .unwrap()
                .is_none()
        })
        .unwrap();
    let out = run(
        Command::new("/usr/sbin/useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--uid",
            &new_uid.to_string(),
            REBORN,
        ]),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "useradd: {out:?}");
    // Account look-ups are cached for `LOOKUP_CACHE_TTL` (README): the daemon sees the new
    // account once that has passed.
    std::thread::sleep(tessera::policy::users::LOOKUP_CACHE_TTL + Duration::from_millis(500));

    let (name, msg) = env.err(&["authenticate", "--user", REBORN, "--pin-stdin"], PIN);
    userdel(REBORN);
    assert_eq!(name, "NotEnrolled", "{msg}");
    assert!(
        env.daemon_log().contains("another uid"),
        "the daemon logs why"
    );
}

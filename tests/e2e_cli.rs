//! The `tessera` command line as a person meets it: the one error format and its hints, the version
//! and help texts, completions, and — under a pseudo-terminal — the PIN prompt without echo, the
//! last-try confirmation and Ctrl-C cancelling a request (exit 130, the request gone on the bus).
//!
//! The terminal is driven by a small Python `pty` script (python3 is on every machine the suite
//! runs on), so the CLI gets a real controlling terminal: echo, line discipline and the SIGINT that
//! Ctrl-C raises are the kernel's, not simulated.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_cli_pty;

use std::process::Command;

use common::stack::{parse_err, saw_all, Stack, CLI_TIMEOUT, DEVICE_PATH, PIN, WAIT};
use common::{bin, run, stderr, stdout, wait_until, Bus};
use e2e_cli_pty::tessera_in_pty;

const WRONG_PIN: &str = "654321";

/// The request objects the daemon serves now.
fn live_requests(env: &Stack) -> Vec<String> {
    env.busctl(&["tree", "--list", "org.tessera.Tessera1"])
        .lines()
        .filter(|l| l.starts_with("/org/tessera/Tessera1/requests/"))
        .map(str::to_owned)
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Errors and hints (no card needed).

#[test]
fn no_bus_says_the_cause_once_and_hints_at_the_address() {
    let out = run(
        Command::new(bin("tessera")).args([
            "--bus",
            "unix:path=/nonexistent/tessera-bus",
            "status",
        ]),
        b"",
        CLI_TIMEOUT,
    );
    let (name, msg) = parse_err(&out);
    assert_eq!(name, "NoBus", "{msg}");
    assert!(
        msg.starts_with("connecting to the bus at unix:path=/nonexistent/tessera-bus failed: "),
        "{msg}"
    );
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("\nhint: is the bus address right?"), "{err}");

    // tesserad reads TESSERA_BUS too, and says its cause once as well.
    let out = run(
        Command::new(bin("tesserad"))
            .env("TESSERA_BUS", "unix:path=/nonexistent/tessera-bus")
            .args(["--state-dir", "/nonexistent/tessera-state"]),
        b"",
        CLI_TIMEOUT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connecting to the bus at unix:path=/nonexistent/tessera-bus failed"),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn no_daemon_asks_whether_tesserad_runs() {
    let bus = Bus::start();
    let out = run(
        Command::new(bin("tessera")).args(["--bus", bus.address(), "status"]),
        b"",
        CLI_TIMEOUT,
    );
    let (name, _) = parse_err(&out);
    assert_eq!(name, "ServiceUnknown", "{out:?}");
    assert!(
        stderr(&out).ends_with("\nhint: is tesserad running?\n"),
        "{}",
        stderr(&out)
    );
    // The same through TESSERA_BUS, for a token command.
    let out = run(
        Command::new(bin("tessera"))
            .env("TESSERA_BUS", bus.address())
            .args(["validate", "-"]),
        b"x\n",
        CLI_TIMEOUT,
    );
    assert_eq!(parse_err(&out).0, "ServiceUnknown");
}

#[test]
fn version_help_and_completions() {
    let out = run(
        Command::new(bin("tessera")).arg("--version"),
        b"",
        CLI_TIMEOUT,
    );
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("tessera "), "{}", stdout(&out));

    for sub in [
        vec!["--help"],
        vec!["enroll", "--help"],
        vec!["authenticate", "--help"],
        vec!["unblock", "--help"],
        vec!["revoke", "--help"],
        vec!["sessions", "--help"],
        vec!["enrollments", "--help"],
        vec!["validate", "--help"],
        vec!["policy", "show", "--help"],
    ] {
        let out = run(Command::new(bin("tessera")).args(&sub), b"", CLI_TIMEOUT);
        assert!(out.status.success(), "{sub:?}");
        let help = stdout(&out);
        // Each option is one line of the short help; clap's own "[default: ...]" must not come
        // beside one written in the doc comment, nor show an empty default.
        for line in help.lines() {
            assert!(
                line.matches("[default:").count() <= 1,
                "{sub:?}: doubled default in {line:?}"
            );
            assert!(!line.contains("[default: ]"), "{sub:?}: {line:?}");
        }
    }

    for shell in ["bash", "zsh", "fish"] {
        let out = run(
            Command::new(bin("tessera")).args(["completions", shell]),
            b"",
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = stdout(&out);
        assert!(script.contains("tessera"), "{shell}");
        assert!(script.contains("authenticate"), "{shell}");
    }
}

#[test]
fn validate_without_a_token_says_what_it_waits_for() {
    let bus = Bus::start();
    let args = ["validate"];
    let s = tessera_in_pty(
        bus.address(),
        &args,
        serde_json::json!([["expect", "standard input"], ["send", "\u{4}"]]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert!(
        s.transcript.contains("paste it and press Enter"),
        "{}",
        s.transcript
    );
}

// ------------------------------------------------------------------------------------------------
// Requests under a terminal (need the daemon's request API).

#[test]
fn pin_prompt_without_echo_then_a_token() {
    let (env, _card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let args = ["authenticate", "--user", "root"];
    let s = tessera_in_pty(
        env.bus_address(),
        &args,
        serde_json::json!([
            ["expect", "PIN for root on "],
            ["send", format!("{WRONG_PIN}\r")],
            ["expect", "(2 tries left): "],
            ["send", format!("{PIN}\r")],
        ]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    assert!(
        s.transcript.contains("(3 tries left): "),
        "{}",
        s.transcript
    );
    assert!(s.transcript.contains("Wrong PIN."), "{}", s.transcript);
    assert!(!s.transcript.contains(PIN), "PIN echoed: {}", s.transcript);
    assert!(
        !s.transcript.contains(WRONG_PIN),
        "PIN echoed: {}",
        s.transcript
    );
    let token = s
        .transcript
        .lines()
        .map(str::trim)
        .find(|l| l.split('.').count() == 3 && l.len() > 100)
        .unwrap_or_else(|| panic!("no token in {}", s.transcript));
    assert!(env.validate(token).is_ok());
    assert!(live_requests(&env).is_empty());
}

#[test]
fn last_try_asks_for_confirmation_then_spends_it() {
    let (env, _card) = Stack::with_card(&[], "[auth]\nmax_failures = 10\n");
    env.enroll(PIN, &["--user", "root"]);
    for _ in 0..2 {
        let (name, _) = env.err(
            &["authenticate", "--user", "root", "--pin-stdin"],
            WRONG_PIN,
        );
        assert_eq!(name, "PinInvalid");
    }
    let args = ["authenticate", "--user", "root"];
    let s = tessera_in_pty(
        env.bus_address(),
        &args,
        serde_json::json!([
            ["expect", "(1 try left): "],
            ["send", format!("{PIN}\r")],
            [
                "expect",
                "Last try before the card blocks — type the PIN again to use it:"
            ],
            ["send", format!("{PIN}\r")],
        ]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    assert!(!s.transcript.contains(PIN), "PIN echoed: {}", s.transcript);
    // Back at 3 tries: the next prompt says so.
    let s = tessera_in_pty(
        env.bus_address(),
        &args,
        serde_json::json!([["expect", "(3 tries left): "], ["interrupt"]]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
}

#[test]
fn ctrl_c_at_the_prompt_cancels_the_request() {
    let (env, _card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let args = ["authenticate", "--user", "root"];
    let s = tessera_in_pty(
        env.bus_address(),
        &args,
        serde_json::json!([["expect", "PIN for root on "], ["interrupt"]]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(130), "{}", s.transcript);
    assert!(
        s.transcript.contains("tessera: Cancelled: "),
        "{}",
        s.transcript
    );
    assert!(
        wait_until(WAIT, || live_requests(&env).is_empty()),
        "request still on the bus: {:?}",
        live_requests(&env)
    );
    // No PIN try was spent (a wrong one next would leave 2), and the card works right away.
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "PinInvalid", "{msg}");
    assert!(msg.contains("2 retries"), "{msg}");
    env.authenticate(&["--user", "root"]);
}

#[test]
fn insert_your_card_while_waiting() {
    let (mut env, card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    env.stop_sim();
    env.wait_device(false);
    let args = ["authenticate", "--user", "root"];
    let s = tessera_in_pty(
        env.bus_address(),
        &args,
        serde_json::json!([["expect", "Insert your card or key…"], ["interrupt"]]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(130), "{}", s.transcript);
    // No PIN is asked before the daemon knows a device is there.
    assert!(!s.transcript.contains("PIN"), "{}", s.transcript);
    env.start_sim(&card, &[]);
    env.wait_device(true);
    assert!(live_requests(&env).is_empty());
}

#[test]
fn watch_follows_the_daemon_and_its_events() {
    let mut env = Stack::new();
    let card = env.path("card.json");
    let mut watch = env.start_watch();
    saw_all(&watch, &["DaemonAbsent"], WAIT);
    env.start_sim(&card, &[]);
    env.start_daemon("");
    env.wait_device(true);
    saw_all(&watch, &["DaemonBack owner=:"], WAIT);

    let id = env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    let claims = env.validate(&token).unwrap();
    let jti = claims["jti"].as_str().unwrap();
    saw_all(
        &watch,
        &[
            &format!("EnrollmentAdded id={id} user=root"),
            &format!("TokenIssued jti={jti} user=root"),
        ],
        WAIT,
    );
    // The token never shows.
    assert!(
        !watch.stdout_lines().iter().any(|l| l.contains(&token)),
        "{:?}",
        watch.stdout_lines()
    );

    env.stop_daemon();
    saw_all(&watch, &["DaemonLeft"], WAIT);
    watch.kill();

    // Started while the daemon runs, watch first lists the devices present.
    env.start_daemon("");
    env.wait_device(true);
    let watch = env.start_watch();
    saw_all(
        &watch,
        &[&format!("DevicePresent path={DEVICE_PATH} name=")],
        WAIT,
    );
}

#[test]
fn status_names_the_enrolled_and_json_is_json() {
    let (env, _card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "root"]);
    let status = env.ok(&["status"], "");
    assert!(status.contains("enrolled: root"), "{status}");
    let line = env.ok(&["status", "--json"], "");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], DEVICE_PATH);
    assert_eq!(v["enrolled"], serde_json::json!(["root"]));

    // --device takes the reader name as well as the id.
    let token = env.authenticate(&["--user", "root", "--device", "Virtual PCD 00 00"]);
    // Text by default: local times, not epoch seconds.
    let text = env.ok(&["validate", &token], "");
    let exp = text.lines().find(|l| l.starts_with("exp ")).unwrap();
    assert!(
        exp.chars().filter(|c| *c == ':').count() >= 2 && exp.contains('-'),
        "{text}"
    );
    let sessions = env.ok(&["sessions", "--json"], "");
    let v: serde_json::Value = serde_json::from_str(&sessions).unwrap();
    assert_eq!(v["user"], "root");

    assert_eq!(env.ok(&["revoke", "--all"], ""), "revoked 1 session");
    // A key is rotated at most once a second (its id is its creation time).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rotated = env.ok(&["rotate-key"], "");
    let jwks: serde_json::Value = serde_json::from_str(&env.ok(&["jwks"], "")).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.iter()
            .any(|k| rotated == format!("rotated: new tokens are signed with key {k}")),
        "{rotated} / {kids:?}"
    );
}

#[test]
fn the_simulator_says_it_waits_for_vpcd() {
    let dir = common::TestDir::new();
    // Nothing listens on port 1: the simulator waits, and says for what.
    let mut sim = common::Child::spawn(
        "sim",
        Command::new(bin("tessera-sim"))
            .args(["piv", "--vpcd", "127.0.0.1:1", "--state"])
            .arg(dir.path().join("card.json")),
        dir.path(),
    );
    sim.wait_for_stderr_line("waiting for vpcd at 127.0.0.1:1 (is pcscd running?)", WAIT);
    sim.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(sim.wait_exit(WAIT).is_some_and(|s| s.success()));
}

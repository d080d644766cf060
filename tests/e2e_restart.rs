//! End-to-end tests of what survives a `tesserad` restart (SIGTERM and SIGKILL): issued tokens,
//! revocations, enrollments, the signing key, and cards that left while the daemon was not watching.
//! Real processes throughout: `tessera-sim piv` behind pcscd and vpcd, `tesserad` on a private bus and
//! the `tessera` CLI. The other foundation scenarios are in `e2e_piv.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::Value;

use common::{bin, pcsc_lock, run, wait_until, Bus, Child, PcscGuard, TestDir};

const PIN: &str = "123456";
const BUS_NAME: &str = "org.tessera.Tessera1";
const DEVICE_PATH: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";
/// Upper bound of any single wait for a process or an event.
const WAIT: Duration = Duration::from_secs(20);
/// Upper bound of one CLI call (the daemon's default device timeout is 10 s).
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn restart_keeps_tokens_revocations_enrollments_and_signing_key() {
    let mut env = Env::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.start_daemon();
    env.wait_device(true);
    let enrollment = env.enroll();
    let token_a = env.authenticate();
    let token_b = env.authenticate();
    env.ok(&["revoke", "-"], &format!("{token_b}\n"));
    assert_eq!(env.validate(&token_b).unwrap_err().0, "TokenRevoked");
    let claims_a = env.validate(&token_a).expect("A is live");
    let jwks = env.ok(&["jwks"], "");
    let kid = header_kid(&token_a);

    env.stop_daemon();
    // The card stays in; only the daemon restarts.
    env.start_daemon();
    env.wait_device(true);

    let again = env.validate(&token_a).expect("A survives a restart");
    assert_eq!(again, claims_a, "same claims after the restart");
    let (name, msg) = env.validate(&token_b).unwrap_err();
    assert_eq!(name, "TokenRevoked", "B after restart: {msg}");
    assert!(msg.contains("logout"), "{msg}");
    assert_eq!(env.ok(&["jwks"], ""), jwks, "the signing keys changed");

    // The enrollment is kept: authentication works without enrolling again, with the same key.
    let token_c = env.authenticate();
    let claims_c = env.validate(&token_c).unwrap();
    assert_eq!(claims_c["enr"], enrollment.as_str());
    assert_eq!(claims_c["sid"], claims_a["sid"], "same card insertion");
    assert_eq!(header_kid(&token_c), kid);
    // Enrolling the same key again gives the same enrollment.
    assert_eq!(env.enroll(), enrollment);
}

#[test]
fn card_removed_while_the_daemon_was_down_revokes_its_tokens() {
    let mut env = Env::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.start_daemon();
    env.wait_device(true);
    env.enroll();
    let token_c = env.authenticate();
    let claims_c = env.validate(&token_c).unwrap();

    // Pulled and put back while nobody watched: a new insertion, even of the same card.
    env.stop_daemon();
    env.stop_sim();
    // Let pcscd see the card leave: a swap faster than its polling is no removal at all (see
    // `card_swapped_while_the_daemon_was_down_is_picked_up`).
    wait_card(false);
    env.start_sim(&card, &[]);
    wait_card(true);
    env.start_daemon();
    env.wait_device(true);
    let (name, msg) = env.validate(&token_c).unwrap_err();
    assert_eq!(name, "TokenRevoked", "C: {msg}");
    assert!(msg.contains("device-removed"), "{msg}");
    let daemon = env.daemon.as_mut().unwrap();
    daemon.wait_for_stderr_line("card removed while the daemon was not watching", WAIT);

    // The card itself is fine.
    let token_d = env.authenticate();
    let claims_d = env.validate(&token_d).unwrap();
    assert_ne!(claims_d["sid"], claims_c["sid"], "a new device session");

    // Pulled while the daemon was down and still out when it starts.
    env.stop_daemon();
    env.stop_sim();
    env.start_daemon();
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
    let mut env = Env::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.start_daemon();
    env.wait_device(true);
    env.enroll();
    let token = env.authenticate();

    // Gone while the daemon is down, no card at the restart.
    env.stop_daemon();
    env.stop_sim();
    env.start_daemon();
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
    let mut env = Env::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.start_daemon();
    env.wait_device(true);
    env.enroll();
    let token = env.authenticate();

    env.stop_daemon();
    env.stop_sim();
    wait_card(false);
    env.start_sim(&card, &[]);
    wait_card(true);
    env.start_daemon();
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
    let mut env = Env::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.start_daemon();
    env.wait_device(true);
    // Three rounds, as the swap must beat pcscd's polling (before the fix it failed 4 times in 5 single rounds).
    for round in 1..=3 {
        env.stop_daemon();
        env.stop_sim();
        env.start_sim(&card, &[]);
        env.start_daemon();
        let mut last = String::new();
        let present = wait_until(Duration::from_secs(10), || {
            last = stdout(&env.cli(&["status"], ""));
            last.contains(DEVICE_PATH)
        });
        assert!(
            present,
            "round {round}: the card never appeared; status: {last}\n--- tesserad ---\n{}",
            env.daemon
                .as_ref()
                .map(Child::stderr_text)
                .unwrap_or_default()
        );
    }
}

#[test]
fn sigkill_after_acknowledged_issue_and_revoke_loses_neither() {
    let mut env = Env::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.start_daemon();
    env.wait_device(true);
    env.enroll();
    let kept = env.authenticate();
    let revoked = env.authenticate();
    let jwks = env.ok(&["jwks"], "");
    assert_eq!(env.ok(&["revoke", "-"], &format!("{revoked}\n")), "revoked");
    // No grace: the revocation was acknowledged, so it must already be on disk.
    env.kill_daemon();

    env.start_daemon();
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
    let last = env.authenticate();
    env.kill_daemon();
    env.start_daemon();
    env.wait_device(true);
    assert!(env.validate(&last).is_ok(), "token issued before SIGKILL");
    assert_eq!(env.validate(&revoked).unwrap_err().0, "TokenRevoked");
}

// ---------------------------------------------------------------------------------------------
// The world of one test (the same shape as in e2e_piv.rs; test files cannot share private code
// without a module of their own)
// ---------------------------------------------------------------------------------------------

/// One test's processes. Field order is drop order: daemon, card, bus, files, and the pcsc lock last.
struct Env {
    daemon: Option<Child>,
    sim: Option<Child>,
    bus: Bus,
    dir: TestDir,
    _pcsc: PcscGuard,
    started: u32,
}

impl Env {
    fn new() -> Env {
        let pcsc = pcsc_lock();
        let bus = Bus::start();
        Env {
            daemon: None,
            sim: None,
            bus,
            dir: TestDir::new(),
            _pcsc: pcsc,
            started: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn label(&mut self, what: &str) -> String {
        self.started += 1;
        format!("{}-{what}", self.started)
    }

    fn start_sim(&mut self, state: &Path, extra: &[&str]) {
        assert!(self.sim.is_none(), "a simulator is already running");
        let label = self.label("sim");
        let mut child = Child::spawn(
            &label,
            Command::new(bin("tessera-sim"))
                .args(["piv", "--vpcd", common::VPCD_ADDR_0, "--state"])
                .arg(state)
                .args(extra),
            self.dir.path(),
        );
        child.wait_for_line("ready", WAIT);
        self.sim = Some(child);
    }

    fn stop_sim(&mut self) {
        let mut sim = self.sim.take().expect("no simulator running");
        sim.signal(Signal::SIGTERM);
        let status = sim.wait_exit(WAIT);
        assert!(
            status.is_some_and(|s| s.success()),
            "simulator exit: {status:?}"
        );
    }

    /// Starts tesserad (default configuration) on this test's state directory.
    fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "tesserad is already running");
        let label = self.label("tesserad");
        let config = self.path("tessera.toml");
        std::fs::write(&config, "").unwrap();
        let mut child = Child::spawn(
            &label,
            Command::new(bin("tesserad"))
                .env("TESSERA_LOG", "debug")
                .args(["--bus", self.bus.address(), "--state-dir"])
                .arg(self.path("state"))
                .arg("--config")
                .arg(&config),
            self.dir.path(),
        );
        let ok = wait_until(WAIT, || {
            child.try_wait().is_some() || self.bus.has_owner(BUS_NAME)
        });
        if let Some(status) = child.try_wait() {
            panic!("tesserad exited with {status}:\n{}", child.stderr_text());
        }
        assert!(ok, "tesserad did not take {BUS_NAME} within {WAIT:?}");
        self.daemon = Some(child);
    }

    fn stop_daemon(&mut self) {
        let mut daemon = self.daemon.take().expect("tesserad not running");
        daemon.signal(Signal::SIGTERM);
        let status = daemon.wait_exit(WAIT);
        assert!(
            status.is_some_and(|s| s.success()),
            "tesserad exit: {status:?}\n{}",
            daemon.stderr_text()
        );
        self.wait_name_released();
    }

    /// SIGKILL: no shutdown code runs.
    fn kill_daemon(&mut self) {
        let mut daemon = self.daemon.take().expect("tesserad not running");
        daemon.signal(Signal::SIGKILL);
        assert!(
            daemon.wait_exit(WAIT).is_some(),
            "tesserad survived SIGKILL"
        );
        self.wait_name_released();
    }

    fn wait_name_released(&self) {
        assert!(
            wait_until(WAIT, || !self.bus.has_owner(BUS_NAME)),
            "{BUS_NAME} still owned after tesserad exited"
        );
    }

    fn wait_device(&self, present: bool) {
        let mut last = String::new();
        let ok = wait_until(WAIT, || {
            last = stdout(&self.cli(&["status"], ""));
            last.contains(DEVICE_PATH) == present
        });
        assert!(
            ok,
            "device present={present} not reached within {WAIT:?}; status: {last}"
        );
    }

    fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run(
            Command::new(bin("tessera"))
                .args(["--bus", self.bus.address()])
                .args(args),
            stdin.as_bytes(),
            CLI_TIMEOUT,
        )
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "tessera {args:?} failed: {}\n--- tesserad ---\n{}",
            stderr(&out),
            self.daemon
                .as_ref()
                .map(Child::stderr_text)
                .unwrap_or_default()
        );
        stdout(&out).trim().to_owned()
    }

    fn enroll(&self) -> String {
        self.ok(
            &["enroll", "--user", "root", "--pin-stdin"],
            &format!("{PIN}\n"),
        )
    }

    fn authenticate(&self) -> String {
        let token = self.ok(
            &["authenticate", "--user", "root", "--pin-stdin"],
            &format!("{PIN}\n"),
        );
        assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
        token
    }

    /// `tessera validate -` with the token on stdin: the claims, or the error (name, message).
    fn validate(&self, token: &str) -> Result<Value, (String, String)> {
        let out = self.cli(&["validate", "-"], &format!("{token}\n"));
        if out.status.success() {
            return Ok(serde_json::from_str(stdout(&out).trim()).expect("claims JSON"));
        }
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = stderr(&out);
        let (name, msg) = err
            .trim()
            .strip_prefix("tessera: ")
            .and_then(|rest| rest.split_once(": "))
            .unwrap_or_else(|| panic!("unexpected stderr: {err:?}"));
        Err((name.to_owned(), msg.to_owned()))
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until pcscd sees a card in reader 0 (`present`: a shared connection succeeds, left without
/// resetting the card) or sees none. Needed when no daemon watches: `tessera-sim` says `ready` as soon
/// as vpcd accepted it, and a card pulled and re-inserted faster than pcscd polls is never seen to
/// leave at all.
fn wait_card(present: bool) {
    let reader = std::ffi::CString::new(common::VPCD_READER_0).unwrap();
    let mut last = String::new();
    let ok = wait_until(WAIT, || {
        let attempt = pcsc::Context::establish(pcsc::Scope::User)
            .and_then(|ctx| ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY));
        match attempt {
            Ok(card) => {
                let _ = card.disconnect(pcsc::Disposition::LeaveCard);
                last = "card present".into();
                present
            }
            Err(e @ (pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard)) => {
                last = e.to_string();
                !present
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    assert!(
        ok,
        "reader {:?} never showed present={present}: {last}",
        common::VPCD_READER_0
    );
}

/// The `kid` of a JWT's protected header, decoded here.
fn header_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().expect("kid").to_owned()
}

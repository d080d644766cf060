//! The simulated FIDO key (`tessera-sim fido`) against a client nobody here wrote: python-fido2 2.2
//! from PyPI (in a venv made by `scripts/python-venv.sh`) runs `tests/python/*.py` over the key's
//! HID socket and over pcscd + vpcd as an NFC card: getInfo, makeCredential and getAssertion with PIN
//! tokens of PIN/UV auth protocols 2 and 1 (signatures verified by python-fido2), wrong PINs down to
//! PIN_AUTH_BLOCKED and a power cycle, U2F register/authenticate on a CTAP2 key and a U2F-only one.
//! If these pass, the simulator is a security key as far as the outside world can tell.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::{bin, pcsc_lock, run, stderr, stdout, Child, TestDir, VPCD_ADDR_1, VPCD_READER_1};

/// pip may build pyscard from source on a first run.
const VENV_TIMEOUT: Duration = Duration::from_secs(600);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The venv's python, made once per test process (the script serialises concurrent processes).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-venv.sh");
        let out = run(&mut Command::new(script), b"", VENV_TIMEOUT);
        assert!(
            out.status.success(),
            "scripts/python-venv.sh failed: {}",
            stderr(&out)
        );
        PathBuf::from(stdout(&out).trim())
    })
}

/// A running `tessera-sim fido` with its HID socket and control socket in `dir`.
struct Key {
    child: Child,
    control: PathBuf,
    hid: PathBuf,
}

fn start_key(dir: &TestDir, extra: &[&str]) -> Key {
    let hid = dir.path().join("key.sock");
    let control = dir.path().join("key.control");
    let mut cmd = Command::new(bin("tessera-sim"));
    cmd.arg("fido")
        .arg("--state")
        .arg(dir.path().join("key.json"))
        .arg("--control")
        .arg(&control)
        .args(extra);
    if !extra.contains(&"--vpcd") {
        cmd.arg("--hid-socket").arg(&hid);
    }
    let mut child = Child::spawn("tessera-sim", &mut cmd, dir.path());
    child.wait_for_line("ready", READY_TIMEOUT);
    Key {
        child,
        control,
        hid,
    }
}

impl Key {
    fn power_cycle(&self) {
        let out = run(
            Command::new(bin("tessera-sim"))
                .arg("power-cycle")
                .arg("--control")
                .arg(&self.control),
            b"",
            SCRIPT_TIMEOUT,
        );
        assert!(out.status.success(), "power-cycle: {}", stderr(&out));
    }

    /// SIGTERM: the key is pulled out, exits 0 and leaves no socket behind.
    fn unplug(mut self) {
        let status = self.child.kill();
        assert!(status.success(), "tessera-sim fido exited {status}");
        assert!(!self.hid.exists(), "HID socket left behind");
        assert!(!self.control.exists(), "control socket left behind");
    }
}

/// Runs `tests/python/<script>` with `args`; panics with its output unless it exits 0.
fn python_check(script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = run(
        Command::new(python()).arg(&path).args(args),
        b"",
        SCRIPT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn python_fido2_over_the_hid_socket() {
    let dir = TestDir::new();
    let key = start_key(&dir, &[]);
    let hid = key.hid.to_str().unwrap().to_owned();
    let out = python_check("ctap2_flow.py", &["--hid", &hid]);
    assert!(stdout(&out).contains("protocol 1: makeCredential and getAssertion verified"));
    python_check("u2f_flow.py", &["--hid", &hid]);
    python_check("pin_errors.py", &["--hid", &hid, "--protocol", "2"]);
    // Blocked until the key is replugged; then the right PIN works (5 retries left) and restores 8.
    key.power_cycle();
    python_check("ctap2_flow.py", &["--hid", &hid, "--retries", "5"]);
    python_check("pin_errors.py", &["--hid", &hid, "--protocol", "1"]);
    key.unplug();
}

#[test]
fn python_fido2_u2f_only_key_over_the_hid_socket() {
    let dir = TestDir::new();
    let key = start_key(&dir, &["--u2f-only"]);
    let hid = key.hid.to_str().unwrap().to_owned();
    python_check("u2f_flow.py", &["--hid", &hid, "--u2f-only"]);
    key.unplug();
}

#[test]
fn python_fido2_over_pcscd_and_vpcd() {
    let _pcsc = pcsc_lock();
    let dir = TestDir::new();
    let key = start_key(&dir, &["--vpcd", VPCD_ADDR_1]);
    python_check("ctap2_flow.py", &["--pcsc", VPCD_READER_1]);
    python_check("u2f_flow.py", &["--pcsc", VPCD_READER_1]);
    python_check("pin_errors.py", &["--pcsc", VPCD_READER_1, "--protocol", "2"]);
    key.power_cycle();
    python_check("ctap2_flow.py", &["--pcsc", VPCD_READER_1, "--retries", "5"]);
    key.unplug();
}

#[test]
fn python_fido2_u2f_only_key_over_pcscd_and_vpcd() {
    let _pcsc = pcsc_lock();
    let dir = TestDir::new();
    let key = start_key(&dir, &["--vpcd", VPCD_ADDR_1, "--u2f-only"]);
    python_check("u2f_flow.py", &["--pcsc", VPCD_READER_1]);
    key.unplug();
}

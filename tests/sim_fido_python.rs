//! The simulated FIDO key (`tessera-sim fido`) against a client nobody here wrote: python-fido2 2.2
//! from PyPI (in a venv made by `scripts/python-venv.sh`) runs `tests/python/*.py` over the key's
//! HID socket and over pcscd + vpcd as an NFC card: getInfo, makeCredential and getAssertion with PIN
//! tokens of PIN/UV auth protocols 2 and 1 (signatures verified by python-fido2), wrong PINs down to
//! PIN_AUTH_BLOCKED and a power cycle, U2F register/authenticate on a CTAP2 key and a U2F-only one,
//! EdDSA credentials, and keepalive, cancel and touch on a `--touch manual` key.
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

/// One key on both transports at once, without pcscd: a fake vpcd (the driver's side of its TCP
/// protocol) and the HID socket; `ready` comes once both are up, and SIGTERM closes both.
#[test]
fn one_key_on_both_transports() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::net::UnixStream;

    fn send(s: &mut std::net::TcpStream, payload: &[u8]) {
        let mut frame = u16::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        s.write_all(&frame).unwrap();
    }
    fn recv(s: &mut std::net::TcpStream) -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let mut b = vec![0u8; usize::from(u16::from_be_bytes(h))];
        s.read_exact(&mut b).unwrap();
        b
    }

    let dir = TestDir::new();
    let vpcd = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = vpcd.local_addr().unwrap().to_string();
    let hid = dir.path().join("key.sock");
    let mut child = Child::spawn(
        "tessera-sim",
        Command::new(bin("tessera-sim"))
            .arg("fido")
            .arg("--state")
            .arg(dir.path().join("key.json"))
            .arg("--hid-socket")
            .arg(&hid)
            .args(["--vpcd", &addr]),
        dir.path(),
    );
    let (mut card, _) = vpcd.accept().unwrap();
    card.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
    send(&mut card, &[0x04]);
    let atr = recv(&mut card);
    assert_eq!(
        &atr[..4],
        &[0x3B, atr[1], 0x80, 0x01],
        "PC/SC Part 3 contactless ATR"
    );
    assert_eq!(atr[1] & 0xF0, 0x80);
    child.wait_for_line("ready", READY_TIMEOUT);
    assert_eq!(
        child
            .stdout_lines()
            .iter()
            .filter(|l| *l == "ready")
            .count(),
        1
    );

    let mut select = vec![0x00, 0xA4, 0x04, 0x00, 0x08];
    select.extend_from_slice(&[0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01, 0x00]);
    send(&mut card, &select);
    assert_eq!(recv(&mut card), b"FIDO_2_0\x90\x00");

    let mut report = [0u8; 64];
    report[..5].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x86]);
    report[6] = 8;
    let mut key = UnixStream::connect(&hid).unwrap();
    key.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
    key.write_all(&report).unwrap();
    let mut answer = [0u8; 64];
    key.read_exact(&mut answer).unwrap();
    assert_eq!(answer[4], 0x86);
    assert_eq!(answer[23] & 0x04, 0x04, "CAPABILITY_CBOR");

    let status = child.kill();
    assert!(status.success(), "{status}");
    assert!(!hid.exists());
    let mut buf = [0u8; 1];
    assert_eq!(card.read(&mut buf).unwrap(), 0, "vpcd connection closed");
    assert_eq!(key.read(&mut buf).unwrap(), 0, "HID connection closed");
}

#[test]
fn python_fido2_over_the_hid_socket() {
    let dir = TestDir::new();
    let key = start_key(&dir, &["--algorithms", "es256,eddsa"]);
    let hid = key.hid.to_str().unwrap().to_owned();
    let out = python_check("ctap2_flow.py", &["--hid", &hid]);
    assert!(stdout(&out).contains("protocol 1: makeCredential and getAssertion verified"));
    assert!(stdout(&out).contains("eddsa: makeCredential and getAssertion verified"));
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
fn python_fido2_touch_and_cancel_over_the_hid_socket() {
    let dir = TestDir::new();
    let key = start_key(&dir, &["--touch", "manual"]);
    let (hid, sim, control) = (
        key.hid.to_str().unwrap().to_owned(),
        bin("tessera-sim"),
        key.control.to_str().unwrap().to_owned(),
    );
    let sim = sim.to_str().unwrap();
    python_check(
        "cancel_flow.py",
        &["--hid", &hid, "--sim", sim, "--control", &control],
    );
    key.unplug();
}

#[test]
fn remove_on_sign_pulls_the_key_mid_operation() {
    let dir = TestDir::new();
    let mut key = start_key(&dir, &["--no-pin", "--fault", "remove-on-sign"]);
    let hid = key.hid.to_str().unwrap().to_owned();
    python_check("remove_on_sign.py", &["--hid", &hid]);
    let status = key.child.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "the pulled key did not exit 0: {status:?}"
    );
    assert!(!key.hid.exists(), "HID socket left behind");
}

#[test]
fn python_fido2_over_pcscd_and_vpcd() {
    let _pcsc = pcsc_lock();
    let dir = TestDir::new();
    let key = start_key(&dir, &["--vpcd", VPCD_ADDR_1]);
    python_check("ctap2_flow.py", &["--pcsc", VPCD_READER_1]);
    python_check("u2f_flow.py", &["--pcsc", VPCD_READER_1]);
    python_check(
        "pin_errors.py",
        &["--pcsc", VPCD_READER_1, "--protocol", "2"],
    );
    key.power_cycle();
    python_check(
        "ctap2_flow.py",
        &["--pcsc", VPCD_READER_1, "--retries", "5"],
    );
    key.unplug();
}

#[test]
fn python_fido2_touch_and_cancel_over_pcscd_and_vpcd() {
    let _pcsc = pcsc_lock();
    let dir = TestDir::new();
    let key = start_key(&dir, &["--vpcd", VPCD_ADDR_1, "--touch", "manual"]);
    let sim = bin("tessera-sim");
    let control = key.control.to_str().unwrap().to_owned();
    python_check(
        "cancel_flow.py",
        &[
            "--pcsc",
            VPCD_READER_1,
            "--sim",
            sim.to_str().unwrap(),
            "--control",
            &control,
        ],
    );
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

//! End to end: bad configuration files stop both `tessera config check` and `tesserad` with a
//! message naming the file, the key and the problem; good ones pass. Runs the built binaries
//! (`cargo build --workspace` first); needs no bus, card or pcscd: `tesserad` reads its
//! configuration before it touches anything else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long either binary may take to reject a file. Rejecting is a file read; the margin is for a
/// loaded machine.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A workspace binary next to this test's profile directory: `target/<profile>/deps/<test>` →
/// `target/<profile>/<name>`.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap();
    if !path.is_file() {
        panic!(
            "{} not found: run cargo build --workspace first",
            path.display()
        );
    }
    path
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` to its end with stdin closed; kills it and fails the test after [`EXIT_TIMEOUT`].
fn run(mut cmd: Command) -> Outcome {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("TESSERA_LOG", "info")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "{cmd:?} still running after {EXIT_TIMEOUT:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    }
}

fn config_check(file: &Path) -> Outcome {
    let mut cmd = Command::new(bin("tessera"));
    cmd.arg("config").arg("check").arg(file);
    run(cmd)
}

fn daemon(file: &Path, state_dir: &Path) -> Outcome {
    let mut cmd = Command::new(bin("tesserad"));
    cmd.args(["--bus", "unix:path=/nonexistent", "--state-dir"])
        .arg(state_dir)
        .arg("--config")
        .arg(file);
    run(cmd)
}

/// The message after "configuration error: " on stderr (both binaries prefix their own name).
fn message(stderr: &str) -> &str {
    stderr
        .split_once("configuration error: ")
        .map(|(_, m)| m.trim_end())
        .unwrap_or_else(|| panic!("no configuration error on stderr:\n{stderr}"))
}

/// Writes `text` as a configuration file, then checks that both binaries refuse it with one message
/// naming the file, `key` and `problem`.
fn refused(text: &str, key: &str, problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(&file, text).unwrap();
    refused_file(&file, dir.path(), key, problem);
}

fn refused_file(file: &Path, dir: &Path, key: &str, problem: &str) {
    let head = format!("{}: {key}", file.display());

    let check = config_check(file);
    assert_eq!(
        check.code,
        Some(1),
        "tessera config check, stderr:\n{}",
        check.stderr
    );
    assert_eq!(check.stdout, "", "nothing on stdout for a bad file");
    let check_msg = message(&check.stderr);
    assert!(
        check_msg.starts_with(&head),
        "want {head:?}...:\n{check_msg}"
    );
    assert!(
        check_msg.contains(problem),
        "want {problem:?}:\n{check_msg}"
    );

    let state = dir.join("state");
    let d = daemon(file, &state);
    assert!(
        matches!(d.code, Some(c) if c != 0),
        "tesserad exit {:?}, stderr:\n{}",
        d.code,
        d.stderr
    );
    assert!(
        d.took < Duration::from_secs(5),
        "tesserad took {:?} to refuse the file",
        d.took
    );
    assert_eq!(message(&d.stderr), check_msg, "both binaries say the same");
    // It stopped before touching anything: no state directory, no bus.
    assert!(
        !state.exists(),
        "tesserad created {} before checking its config",
        state.display()
    );
    assert!(
        !d.stderr.contains("bus"),
        "tesserad got to the bus:\n{}",
        d.stderr
    );
}

#[test]
fn the_example_file_is_ok_for_both_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tessera.toml.example");
    std::fs::copy(&example, &file).unwrap();

    let check = config_check(&file);
    assert_eq!(check.code, Some(0), "stderr:\n{}", check.stderr);
    assert_eq!(check.stdout, format!("{}: ok\n", file.display()));

    // tesserad accepts it and goes on to the (missing) bus: the failure is about the bus, not the file.
    let d = daemon(&file, &dir.path().join("state"));
    assert_ne!(d.code, Some(0), "stderr:\n{}", d.stderr);
    assert!(
        !d.stderr.contains("configuration error"),
        "stderr:\n{}",
        d.stderr
    );
    assert!(
        d.stderr.contains("connecting to the bus"),
        "stderr:\n{}",
        d.stderr
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    refused_file(
        &dir.path().join("absent.toml"),
        dir.path(),
        "cannot read",
        "No such file or directory",
    );
}

#[test]
fn syntax_error() {
    refused(
        "[token\nlifetime = \"5m\"\n",
        "TOML parse error at line 1",
        "invalid table header",
    );
}

#[test]
fn unknown_key() {
    refused(
        "[token]\nlifetim = \"5m\"\n",
        "token.lifetim",
        "unknown key; expected one of `lifetime`",
    );
}

#[test]
fn unknown_section() {
    refused(
        "[tokens]\nlifetime = \"5m\"\n",
        "tokens",
        "unknown key; expected one of `token`",
    );
}

#[test]
fn only_token_under_a_user() {
    refused(
        "[users.alice.pin]\nkeep_last_retry = false\n",
        "users.alice.pin",
        "only `token`, `piv`, `fido` and `session` are allowed under [users.alice]",
    );
}

#[test]
fn wrong_type() {
    refused(
        "[groups.wheel.token]\nsingle_use = \"yes\"\n",
        "groups.wheel.token.single_use",
        "expected true or false, found string \"yes\"",
    );
}

#[test]
fn unparseable_duration() {
    refused(
        "[auth]\nlockout = \"a while\"\n",
        "auth.lockout",
        "write it like \"90s\", \"15m\", \"8h\" or \"30d\"",
    );
}

#[test]
fn zero_duration() {
    refused(
        "[device]\ntimeout = \"0s\"\n",
        "device.timeout",
        "must be longer than 0s",
    );
}

#[test]
fn lifetime_longer_than_max_lifetime() {
    refused(
        "[token]\nmax_lifetime = \"1h\"\n[users.alice.token]\nlifetime = \"2h\"\n",
        "users.alice.token.lifetime",
        "lifetime 2h (users.alice.token.lifetime) is longer than max_lifetime 1h (token.max_lifetime)",
    );
}

#[test]
fn no_live_tokens_allowed() {
    refused(
        "[token]\nmax_live_per_user = 0\n",
        "token.max_live_per_user",
        "must be at least 1 (0 would revoke every token as it is issued)",
    );
}

#[test]
fn no_failures_allowed() {
    refused(
        "[auth]\nmax_failures = 0\n",
        "auth.max_failures",
        "must be at least 1 (0 would lock every user out",
    );
}

#[test]
fn negative_count() {
    refused(
        "[auth]\nmax_failures = -1\n",
        "auth.max_failures",
        "-1 is negative",
    );
}

#[test]
fn empty_audience() {
    refused(
        "[token]\naudience = \"\"\n",
        "token.audience",
        "must not be empty",
    );
}

#[test]
fn absurd_duration() {
    refused(
        "[keys]\nrotate_every = \"20y\"\n",
        "keys.rotate_every",
        "\"20y\" is absurdly long; the limit is 10 years (3650d)",
    );
}

#[test]
fn absurd_count() {
    refused(
        "[token]\nmax_live_per_user = 5000000\n",
        "token.max_live_per_user",
        "5000000 is absurdly large; the limit is 1000000",
    );
}

//! The suite leaves the machine as it found it: a pcscd that ran before a test restarted pcscd runs
//! again after, with the same command line, whether the test ends normally (the guard's `Drop`) or
//! is killed (`scripts/test-cleanup.sh`, which `make test` runs at the end). That the accounts and
//! files are gone after `make test` is checked by `scripts/check-clean.sh`, which the Makefile runs
//! after the suite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::restore::harness_pcscd;
use common::{pcsc_lock, pcscd_processes, run, Child, PcscGuard, TestDir};
use nix::sys::signal::Signal;

/// Arguments of the stand-in for the machine's pcscd when the machine runs none: unlike the
/// harness's own (`-f`), so a pcscd started again with other arguments is told apart.
const MACHINE_ARGS: &[&str] = &["--foreground", "--error", "--max-thread", "150"];
/// Set for the child process of [`a_killed_test_is_put_right_by_the_cleanup_script`].
const HELPER_ENV: &str = "TESSERA_E2E_CLEANUP_HELPER";
/// The two tests let go of the pcsc lock in the middle; they must not do it for each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_pcscd_running_before_a_restart_runs_again_after_with_the_same_command_line() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut guard = pcsc_lock();
    let stand_in = machine_pcscd(&mut guard);
    let before = pcscd_processes();
    assert_eq!(before.len(), 1, "{before:?}");

    guard.restart_pcscd();
    let ours = guard.pcscd_pid().expect("the guard runs pcscd now");
    assert!(before.iter().all(|(pid, _)| *pid != ours as i32));
    drop(guard);

    // Read before anyone else takes the lock (which would also repair a missing pcscd).
    let after = pcscd_processes();
    assert_eq!(
        argvs(&after),
        argvs(&before),
        "pcscd after the test: {after:?}"
    );
    assert_ne!(after[0].0, before[0].0, "the same process, never stopped?");
    let mut guard = pcsc_lock();
    assert!(
        !guard.owns_pcscd(),
        "the next test had to start pcscd itself"
    );
    if stand_in {
        guard.stop_every_pcscd();
    }
}

#[test]
fn a_killed_test_is_put_right_by_the_cleanup_script() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut guard = pcsc_lock();
    let stand_in = machine_pcscd(&mut guard);
    let before = pcscd_processes();
    assert_eq!(before.len(), 1, "{before:?}");
    drop(guard);

    // A test process that restarts pcscd, makes a test directory and is then killed, so no Drop
    // runs: its pcscd keeps running, the machine's stays stopped.
    let logs = TestDir::new();
    let mut helper = Child::spawn(
        "helper",
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_restarts_pcscd_and_hangs",
                "--ignored",
                "--nocapture",
            ])
            .env(HELPER_ENV, "1"),
        logs.path(),
    );
    let line = helper.wait_for_line("restarted", Duration::from_secs(900));
    let helper_dir = PathBuf::from(line.trim_start_matches("restarted ").trim());
    assert!(helper_dir.is_dir(), "{line}");
    helper.signal(Signal::SIGKILL);
    helper.wait_exit(Duration::from_secs(10)).expect("killed");
    let leftover = harness_pcscd().expect("the killed test's pcscd is recorded");
    assert!(
        pcscd_processes().iter().any(|(pid, _)| *pid == leftover),
        "the killed test's pcscd should still run"
    );

    let out = run(
        Command::new(script("test-cleanup.sh")).args(["pcscd", "files"]),
        b"",
        Duration::from_secs(960),
    );
    assert!(out.status.success(), "test-cleanup.sh: {out:?}");
    let after = pcscd_processes();
    assert_eq!(
        argvs(&after),
        argvs(&before),
        "pcscd after the cleanup: {after:?}"
    );
    assert!(after.iter().all(|(pid, _)| *pid != leftover));
    assert!(!helper_dir.exists(), "{} left behind", helper_dir.display());
    assert_eq!(harness_pcscd(), None);

    let mut guard = pcsc_lock();
    assert!(!guard.owns_pcscd());
    if stand_in {
        guard.stop_every_pcscd();
    }
}

/// The child of [`a_killed_test_is_put_right_by_the_cleanup_script`]; does nothing unless run by it.
#[test]
#[ignore = "run by a_killed_test_is_put_right_by_the_cleanup_script"]
fn helper_restarts_pcscd_and_hangs() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let mut guard = pcsc_lock();
    guard.restart_pcscd();
    let dir = TestDir::new();
    println!("restarted {}", dir.path().display());
    std::thread::sleep(Duration::from_secs(600));
    drop(guard);
}

/// Makes sure a pcscd runs that the guard did not start: the machine's own, or, when the machine
/// runs none, a stand-in (true) that the test stops at its end.
fn machine_pcscd(guard: &mut PcscGuard) -> bool {
    if guard.owns_pcscd() {
        guard.start_machine_pcscd(MACHINE_ARGS);
        true
    } else {
        false
    }
}

fn argvs(processes: &[(i32, Vec<OsString>)]) -> Vec<Vec<OsString>> {
    let mut argvs: Vec<_> = processes.iter().map(|(_, argv)| argv.clone()).collect();
    argvs.sort();
    argvs
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// The accounts the harness creates carry the mark by which `scripts/test-cleanup.sh` finds them.
#[test]
fn accounts_the_harness_creates_are_marked_for_the_cleanup() {
    let name = "tessera-cleanup";
    let (uid, _) = common::test_user(name);
    let entry = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .expect("the account exists");
    assert_eq!(entry.name, name);
    assert_eq!(
        entry.gecos.to_str().unwrap(),
        common::restore::ACCOUNT_COMMENT
    );
}

//! Self-test of the end-to-end harness in `tests/common`: if these fail, the e2e failures that follow
//! are about the machine, not about Tessera.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pcsc_lock, run, test_user, wait_until, Bus, Child, TestDir};

fn dbus_list_names(bus: &Bus, as_user: Option<(u32, u32)>) -> std::process::Output {
    let mut cmd = Command::new("dbus-send");
    cmd.arg(format!("--bus={}", bus.address())).args([
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.ListNames",
    ]);
    if let Some((uid, gid)) = as_user {
        cmd.uid(uid).gid(gid);
    }
    run(&mut cmd, b"", Duration::from_secs(10))
}

#[test]
fn private_bus_is_reachable_by_root_and_by_another_user() {
    let bus = Bus::start();
    assert!(
        bus.address().starts_with("unix:path="),
        "address: {}",
        bus.address()
    );

    let out = dbus_list_names(&bus, None);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("org.freedesktop.DBus"));

    // The e2e tests run clients as other users to check the daemon's authorisation; the bus itself
    // (socket directory permissions and policy) must let them in.
    let alice = test_user("tessera-alice");
    assert_ne!(alice.0, 0);
    let out = dbus_list_names(&bus, Some(alice));
    assert!(out.status.success(), "as tessera-alice: {out:?}");

    assert!(!bus.has_owner("org.tessera.HarnessSelfTest"));
}

#[test]
fn bus_reports_owners_and_delivers_signals() {
    let bus = Bus::start();
    let dir = TestDir::new();
    assert!(bus.has_owner("org.freedesktop.DBus"));
    assert!(!bus.has_owner("org.tessera.HarnessSelfTest"));

    // `tessera watch` depends on the policy letting broadcast signals through.
    let mut monitor = Child::spawn(
        "dbus-monitor",
        Command::new("dbus-monitor")
            .args(["--address", bus.address()])
            .arg("type='signal',interface='org.tessera.HarnessSelfTest'"),
        dir.path(),
    );
    let send_ping = || {
        let out = run(
            Command::new("dbus-send")
                .arg(format!("--bus={}", bus.address()))
                .args([
                    "/org/tessera/Test",
                    "org.tessera.HarnessSelfTest.Ping",
                    "string:hello",
                ]),
            b"",
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "{out:?}");
    };
    // dbus-monitor subscribes only after it has connected, so repeat the signal until it shows.
    let seen = wait_until(Duration::from_secs(10), || {
        send_ping();
        monitor
            .stdout_lines()
            .iter()
            .any(|l| l.contains("\"hello\""))
    });
    assert!(seen, "dbus-monitor saw: {:?}", monitor.stdout_lines());
    monitor.wait_for_line("member=Ping", Duration::from_secs(1));
}

#[test]
fn child_captures_lines_and_is_killed() {
    let dir = TestDir::new();
    let mut child = Child::spawn(
        "sh",
        Command::new("sh").args([
            "-c",
            "echo starting; echo oops >&2; echo ready 1; echo ready 2; exec sleep 300",
        ]),
        dir.path(),
    );
    assert_eq!(
        child.wait_for_line("ready", Duration::from_secs(5)),
        "ready 1"
    );
    // The cursor moved past the first match.
    assert_eq!(
        child.wait_for_line("ready", Duration::from_secs(5)),
        "ready 2"
    );
    child.wait_for_stderr_line("oops", Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(child.log_path()).unwrap_or_default() == "oops\n"
    }));
    assert!(child.try_wait().is_none());

    let started = Instant::now();
    let status = child.kill();
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "sleep should die on SIGTERM"
    );
}

#[test]
fn run_feeds_stdin_and_captures_output() {
    let out = run(
        Command::new("sh").args(["-c", "read pin; echo \"got $pin\"; echo err >&2; exit 3"]),
        b"123456\n",
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got 123456\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn bin_finds_workspace_binaries() {
    for name in ["tesserad", "tessera", "tessera-sim"] {
        let path = common::bin(name);
        assert!(path.ends_with(name), "{}", path.display());
    }
}

#[test]
fn pcsc_lock_is_exclusive_and_lists_vpcd_readers() {
    let mut guard = pcsc_lock();
    let readers = guard.readers();
    assert!(
        readers.iter().any(|r| r == common::VPCD_READER_0),
        "{readers:?}"
    );
    assert!(
        readers.iter().any(|r| r == common::VPCD_READER_1),
        "{readers:?}"
    );

    // Another process cannot take the lock while we hold it (the same flock `make demo` takes).
    let other = run(
        Command::new("flock").args(["-n", common::PCSC_LOCK_PATH, "true"]),
        b"",
        Duration::from_secs(5),
    );
    assert_eq!(other.status.code(), Some(1), "{other:?}");

    // Restarting kills whichever pcscd runs; only do that to a pcscd we started ourselves, so a
    // developer's or another helper's pcscd is left alone. On CI there is none, so this runs there.
    if guard.owns_pcscd() {
        guard.restart_pcscd();
        assert!(guard.owns_pcscd());
        let readers = guard.readers();
        assert!(
            readers.iter().any(|r| r == common::VPCD_READER_0),
            "{readers:?}"
        );
    } else {
        eprintln!("pcscd was already running: not testing restart_pcscd");
    }
    let ours = guard.pcscd_pid();
    drop(guard);
    // Another waiting test may take the lock and start its own pcscd at once, so check our
    // pcscd by pid and the lock by our own descriptors, not by what the machine shows next. (This is
    // the only test in this binary that takes the lock, so no other thread holds it open.)
    if let Some(pid) = ours {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "our pcscd {pid} outlived the guard"
        );
    }
    let still_open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t == std::path::Path::new(common::PCSC_LOCK_PATH))
        });
    assert!(
        !still_open,
        "the lock file is still open after the guard dropped"
    );
}

//! The shipped system-bus policy (`dbus/org.tessera.Tessera1.conf`) under a real `dbus-daemon` that
//! runs with the system bus's default-deny rules (a copy of Debian's system.conf, on a private
//! socket): root's tesserad may own the name, any user may call it, and no other user may take the
//! name over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dbus/org.tessera.Tessera1.conf"
);

/// Debian's system-bus configuration with its socket, user, pid file and syslog replaced, plus our
/// policy file.
fn system_config(socket: &Path) -> String {
    let stock = std::fs::read_to_string("/usr/share/dbus-1/system.conf")
        .expect("dbus-daemon's /usr/share/dbus-1/system.conf (package dbus-daemon or dbus)");
    let mut out = String::new();
    for line in stock.lines() {
        let t = line.trim();
        if t.starts_with("<user>")
            || t == "<fork/>"
            || t.starts_with("<pidfile>")
            || t == "<syslog/>"
            || t.starts_with("<servicehelper>")
            || t.starts_with("<includedir>")
            || t.starts_with("<include ")
        {
            continue;
        }
        if t.starts_with("<listen>") {
            out.push_str(&format!(
                "  <listen>unix:path={}</listen>\n",
                socket.display()
            ));
            continue;
        }
        if t == "</busconfig>" {
            out.push_str(&format!("  <include>{POLICY}</include>\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn cli_as(user: &str, address: &str, args: &[&str]) -> std::process::Output {
    common::run(
        Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(common::bin("tessera"))
            .args(["--bus", address])
            .args(args),
        b"",
        Duration::from_secs(20),
    )
}

#[test]
fn root_owns_the_name_and_any_user_may_call() {
    let (bob_uid, bob_gid) = common::test_user("tessera-bob");
    let dir = common::TestDir::new();
    let socket = dir.path().join("system_bus");
    let conf = dir.path().join("system.conf");
    std::fs::write(&conf, system_config(&socket)).unwrap();
    let mut bus = common::Child::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"]),
        dir.path(),
    );
    let address = bus
        .wait_for_line("unix:", Duration::from_secs(10))
        .trim()
        .to_owned();

    // Another user cannot take the name: tesserad run as tessera-bob fails to start.
    let state_bob = dir.path().join("state-bob");
    std::fs::create_dir(&state_bob).unwrap();
    nix::unistd::chown(
        &state_bob,
        Some(nix::unistd::Uid::from_raw(bob_uid)),
        Some(nix::unistd::Gid::from_raw(bob_gid)),
    )
    .unwrap();
    let out = common::run(
        Command::new("setpriv")
            .args([
                "--reuid=tessera-bob",
                "--regid=tessera-bob",
                "--clear-groups",
            ])
            .arg(common::bin("tesserad"))
            .args(["--bus", &address, "--state-dir"])
            .arg(dir.path().join("state-bob/state")),
        b"",
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "tessera-bob must not own the name");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.tessera.Tessera1") || err.contains("AccessDenied"),
        "{err}"
    );

    let mut daemon = common::Child::spawn(
        "tesserad",
        Command::new(common::bin("tesserad"))
            .args(["--bus", &address, "--state-dir"])
            .arg(dir.path().join("state")),
        dir.path(),
    );
    common::wait_until(Duration::from_secs(20), || {
        cli_as("root", &address, &["jwks"]).status.success()
    });
    // Method calls from an ordinary user reach the daemon, which answers for itself.
    let out = cli_as("tessera-bob", &address, &["jwks"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"keys\""));
    // Root-only and other-account calls are refused by the daemon, whatever the bus allows.
    for args in [
        &["rotate-key"][..],
        &["reload"],
        &["sessions", "root"],
        &["revoke", "--all", "--user", "root"],
        &["policy", "show", "root"],
    ] {
        let out = cli_as("tessera-bob", &address, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("AccessDenied"),
            "{args:?}: {out:?}"
        );
    }
    // A user's own sessions and policy are theirs to see.
    let out = cli_as("tessera-bob", &address, &["sessions"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli_as("tessera-bob", &address, &["policy", "show"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lifetime"));
    daemon.kill();
    bus.kill();
}

//! The shipped system-bus policy (`dbus/org.tessera.Tessera1.conf`) under a real `dbus-daemon` that
//! runs with the system bus's default-deny rules (a copy of Debian's system.conf, on a private
//! socket): root's tesserad may own the name, any user may call it, and no other user may take the
//! name over; another user can neither use someone's request nor watch its signals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/e2e_requests_client/mod.rs"]
mod e2e_requests_client;

use common::system_stack::{stock_system_config, Activation};
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
    stock_system_config(socket, &[Path::new(POLICY)], Activation::Standard)
}

fn cli_as(user: &str, address: &str, args: &[&str]) -> std::process::Output {
    cli_as_with(user, address, args, b"")
}

fn cli_as_with(user: &str, address: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    common::run(
        Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(common::bin("tessera"))
            .args(["--bus", address])
            .args(args),
        stdin,
        Duration::from_secs(20),
    )
}

/// A private bus run with the system bus's configuration and our policy; returns it and its address.
fn system_bus(dir: &Path) -> (common::Child, String) {
    let socket = dir.join("system_bus");
    let conf = dir.join("system.conf");
    std::fs::write(&conf, system_config(&socket)).unwrap();
    let mut bus = common::Child::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"]),
        dir,
    );
    let address = bus
        .wait_for_line("unix:", Duration::from_secs(10))
        .trim()
        .to_owned();
    (bus, address)
}

/// `cmd` run as tessera-bob (no supplementary groups).
fn as_bob(cmd: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=tessera-bob",
        "--regid=tessera-bob",
        "--clear-groups",
        cmd,
    ]);
    c
}

#[test]
fn root_owns_the_name_and_any_user_may_call() {
    let (bob_uid, bob_gid) = common::test_user("tessera-bob");
    let dir = common::TestDir::new();
    let (mut bus, address) = system_bus(dir.path());

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_use_nor_watch_a_request() {
    use e2e_requests_client::{Client, Signal};
    let _pcsc = common::pcsc_lock();
    common::test_user("tessera-bob");
    let dir = common::TestDir::new();
    let (mut bus, address) = system_bus(dir.path());
    let mut sim = common::Child::spawn(
        "sim",
        Command::new(common::bin("tessera-sim"))
            .args(["piv", "--vpcd", common::VPCD_ADDR_0, "--state"])
            .arg(dir.path().join("card.json")),
        dir.path(),
    );
    sim.wait_for_line("ready", Duration::from_secs(20));
    let mut daemon = common::Child::spawn(
        "tesserad",
        Command::new(common::bin("tesserad"))
            .args(["--bus", &address, "--state-dir"])
            .arg(dir.path().join("state")),
        dir.path(),
    );
    assert!(common::wait_until(Duration::from_secs(20), || {
        cli_as_with("root", &address, &["enroll", "--pin-stdin"], b"123456\n")
            .status
            .success()
    }));

    // Bob listens to everything the daemon sends that the bus lets him see.
    let mut monitor = common::Child::spawn(
        "bob-gdbus-monitor",
        as_bob("gdbus").args([
            "monitor",
            "--address",
            &address,
            "--dest",
            "org.tessera.Tessera1",
        ]),
        dir.path(),
    );
    // "The name org.tessera.Tessera1 is owned by :1.n": its match rules are in place.
    monitor.wait_for_line("is owned by", Duration::from_secs(20));

    // Root's interactive authentication, until its PIN prompt.
    let mut root = Client::connect(&address).await;
    let path = root
        .start_auth("", std::collections::HashMap::new())
        .await
        .unwrap();
    let prompt = root.next_after_work(&path).await;
    assert_eq!(prompt.name(), "pin-needed", "{prompt:?}");

    // Bob can neither answer it, cancel it nor read it.
    let busctl = |args: &[&str]| {
        common::run(
            as_bob("busctl")
                .arg(format!("--address={address}"))
                .args(args),
            b"",
            Duration::from_secs(20),
        )
    };
    let (dest, iface) = ("org.tessera.Tessera1", "org.tessera.Tessera1.Request");
    for args in [
        vec![
            "call",
            dest,
            path.as_str(),
            iface,
            "SubmitPin",
            "s",
            "123456",
        ],
        vec!["call", dest, path.as_str(), iface, "Cancel"],
        vec!["get-property", dest, path.as_str(), iface, "State"],
        // The list of live requests is not his either (the bus refuses it).
        vec!["introspect", dest, "/org/tessera/Tessera1/requests"],
    ] {
        let out = busctl(&args);
        assert!(!out.status.success(), "{args:?} succeeded for bob: {out:?}");
        let err = common::stderr(&out);
        assert!(
            err.contains("Access denied")
                || err.contains("AccessDenied")
                || err.contains("another connection"),
            "{args:?}: {err}"
        );
    }
    let mine = root.request(&path).await;
    assert_eq!(mine.state().await.unwrap(), "pin-needed");
    mine.submit_pin("123456").await.unwrap();
    let done = root.next_after_work(&path).await;
    assert!(matches!(done, Signal::Completed(_)), "{done:?}");

    // A broadcast Bob may see, to know his monitor was listening: a token's revocation.
    let out = cli_as_with(
        "root",
        &address,
        &["authenticate", "--pin-stdin"],
        b"123456\n",
    );
    assert!(out.status.success(), "{out:?}");
    let token = common::stdout(&out).trim().to_owned();
    let out = common::run(
        Command::new(common::bin("tessera")).args(["--bus", &address, "revoke", "-"]),
        format!("{token}\n").as_bytes(),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{out:?}");
    monitor.wait_for_line("TokenRevoked", Duration::from_secs(20));
    let leaked: Vec<String> = monitor
        .stdout_lines()
        .into_iter()
        .filter(|l| l.contains("/org/tessera/Tessera1/requests") || l.contains("Tessera1.Request"))
        .collect();
    assert!(leaked.is_empty(), "bob saw root's request: {leaked:?}");
    daemon.kill();
    sim.kill();
    bus.kill();
}

//! Configuration reload over real processes: SIGHUP makes `tesserad` read its file again; a bad file
//! keeps the policy in force and the log says why. Checked through the `tessera` command line
//! (`policy show`), as an administrator would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

fn policy(bus: &common::Bus) -> String {
    let out = common::run(
        Command::new(common::bin("tessera"))
            .args(["--bus", bus.address()])
            .args(["policy", "show", "root"]),
        b"",
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn lifetime_line(policy: &str) -> String {
    policy
        .lines()
        .find(|l| l.starts_with("lifetime "))
        .unwrap_or_else(|| panic!("no lifetime in {policy}"))
        .to_owned()
}

#[test]
fn sighup_reloads_and_a_bad_file_keeps_the_old_policy() {
    let dir = common::TestDir::new();
    let config = dir.path().join("tessera.toml");
    std::fs::write(&config, "[token]\nlifetime = \"10m\"\n").unwrap();
    let bus = common::Bus::start();
    let mut daemon = common::Child::spawn(
        "tesserad",
        Command::new(common::bin("tesserad"))
            .args(["--bus", bus.address(), "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(&config),
        dir.path(),
    );
    bus.wait_for_name("org.tessera.Tessera1", Duration::from_secs(20));
    let before = lifetime_line(&policy(&bus));
    assert!(
        before.contains("10m") && before.contains("[token]"),
        "{before}"
    );

    std::fs::write(
        &config,
        "[token]\nlifetime = \"10m\"\n[users.root.token]\nlifetime = \"3m\"\n",
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_stderr_line("configuration reloaded", Duration::from_secs(10));
    let after = lifetime_line(&policy(&bus));
    assert!(
        after.contains("3m") && after.contains("[users.root.token]"),
        "{after}"
    );

    std::fs::write(&config, "[token]\nlifetime = \"forever\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    let line = daemon.wait_for_stderr_line("not reloaded", Duration::from_secs(10));
    assert!(line.contains("forever") || daemon.stderr_text().contains("forever"));
    assert_eq!(
        lifetime_line(&policy(&bus)),
        after,
        "a bad file must change nothing"
    );
    assert!(daemon.try_wait().is_none(), "tesserad must keep running");
    daemon.kill();
}

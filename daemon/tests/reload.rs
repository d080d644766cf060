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

/// The line of `policy show` for `key`, with the padding of the key column trimmed.
fn line_of(policy: &str, key: &str) -> Option<String> {
    policy
        .lines()
        .find(|l| l.split_once(' ').is_some_and(|(k, _)| k == key))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn lifetime_line(policy: &str) -> String {
    line_of(policy, "lifetime").unwrap_or_else(|| panic!("no lifetime in {policy}"))
}

/// Each line is `KEY = VALUE # SOURCE`, the `=` and the `#` of every line in one column each.
fn assert_aligned(policy: &str) {
    for sep in [" = ", " # "] {
        let columns: Vec<Option<usize>> = policy.lines().map(|l| l.find(sep)).collect();
        assert!(
            columns.iter().all(|c| c.is_some() && *c == columns[0]),
            "{sep:?}: {policy}"
        );
    }
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

    // The other tables are reloaded and shown too, with their sources.
    assert_eq!(
        line_of(&policy(&bus), "session.on_removal").as_deref(),
        Some("session.on_removal = \"lock\" # default")
    );
    assert_eq!(line_of(&policy(&bus), "pam.services.sudo.max_age"), None);
    std::fs::write(
        &config,
        "[token]\nlifetime = \"10m\"\n[users.root.token]\nlifetime = \"3m\"\n\
         [pam.services.sudo]\nmax_age = \"1m\"\n[users.root.session]\non_removal = \"none\"\n",
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_stderr_line("configuration reloaded", Duration::from_secs(10));
    let after = policy(&bus);
    assert_eq!(
        line_of(&after, "session.on_removal").as_deref(),
        Some("session.on_removal = \"none\" # [users.root.session]")
    );
    assert_eq!(
        line_of(&after, "pam.services.sudo.max_age").as_deref(),
        Some("pam.services.sudo.max_age = 1m # [pam.services.sudo]")
    );
    assert_eq!(
        line_of(&after, "pam.services.sudo.reuse").as_deref(),
        Some("pam.services.sudo.reuse = true # default")
    );
    assert_aligned(&after);

    std::fs::write(&config, "[token]\nlifetime = \"forever\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    let line = daemon.wait_for_stderr_line("not reloaded", Duration::from_secs(10));
    assert!(line.contains("forever") || daemon.stderr_text().contains("forever"));
    assert_eq!(policy(&bus), after, "a bad file must change nothing");
    assert!(daemon.try_wait().is_none(), "tesserad must keep running");
    daemon.kill();
}

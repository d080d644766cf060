//! End-to-end tests of the daemon's state on disk and of "one daemon, one state", over real
//! processes: `tesserad` refusing state files others could control, refusing a bus it cannot trust,
//! refusing to share its bus name or its state directory, leaving nothing behind when it cannot
//! serve; and enrollments listed and removed with the `tessera` CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::stack::{parse_err, saw_all, Stack, BUS_NAME, CLI_TIMEOUT, PIN, WAIT};
use common::{bin, bus_config, run, stderr, stdout, test_user, Bus, Child, TestDir};

// ---------------------------------------------------------------------------------------------
// State on disk
// ---------------------------------------------------------------------------------------------

/// What is wrong with a state file, and the words the refusal must use for it.
#[derive(Debug, Clone, Copy)]
enum Problem {
    Symlink,
    GroupWritable,
    OtherWritable,
    Owner,
}

impl Problem {
    fn says(self) -> &'static str {
        match self {
            Problem::Symlink => "is a symbolic link",
            Problem::GroupWritable | Problem::OtherWritable => "is writable by group or others",
            Problem::Owner => "is owned by uid",
        }
    }
}

#[test]
fn state_files_others_could_control_are_refused_by_name() {
    let alice = test_user("tessera-alice");
    // A daemon that wrongly started would watch pcscd: hold the lock like every daemon test.
    let stack = Stack::new();
    let mut n = 0;
    for target in ["", "tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        for problem in [
            Problem::Symlink,
            Problem::GroupWritable,
            Problem::OtherWritable,
            Problem::Owner,
        ] {
            n += 1;
            let state = good_state(&stack, &format!("state-{n}"));
            let path = if target.is_empty() {
                state.clone()
            } else {
                state.join(target)
            };
            let mode = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777;
            match problem {
                Problem::Symlink => {
                    // The link points at a good file (or directory): the link itself is the fault.
                    let real = stack.path(&format!("real-{n}"));
                    fs::rename(&path, &real).unwrap();
                    std::os::unix::fs::symlink(&real, &path).unwrap();
                }
                Problem::GroupWritable => chmod(&path, mode | 0o020),
                Problem::OtherWritable => chmod(&path, mode | 0o002),
                Problem::Owner => {
                    std::os::unix::fs::chown(&path, Some(alice.0), Some(alice.1)).unwrap()
                }
            }
            let label = format!("{n}-tesserad-{problem:?}");
            let log = refused(spawn_daemon(
                &stack,
                &label,
                stack.bus_address(),
                &state,
                &[],
            ));
            let named = format!("{} {}", path.display(), problem.says());
            assert!(
                log.contains(&named),
                "{target:?} {problem:?}: expected {named:?} in:\n{log}"
            );
            assert!(!stack_has_owner(&stack), "a refused daemon took the name");
        }
    }
}

/// A state directory as a daemon leaves it: 0700, with the database and its WAL/SHM files 0600
/// (empty, which SQLite reads as an empty database and journal).
fn good_state(stack: &Stack, name: &str) -> PathBuf {
    let state = stack.path(name);
    fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
    chmod(&state, 0o700);
    for f in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        let p = state.join(f);
        fs::write(&p, b"").unwrap();
        chmod(&p, 0o600);
    }
    state
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn as_root_a_bus_run_by_another_user_is_refused_unless_insecure() {
    let alice = test_user("tessera-alice");
    let stack = Stack::new();
    // Alice's own dbus-daemon, in a directory she owns.
    let dir = stack.path("alice-bus");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(alice.0), Some(alice.1)).unwrap();
    let config = dir.join("bus.conf");
    fs::write(&config, bus_config(&dir.join("bus"))).unwrap();
    let mut bus = Child::spawn(
        "alice-dbus-daemon",
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .uid(alice.0)
            .gid(alice.1),
        &stack.path(""),
    );
    let address = bus.wait_for_line("unix:", WAIT).trim().to_owned();

    let state = stack.path("state");
    let log = refused(spawn_daemon(
        &stack,
        "tesserad-refused",
        &address,
        &state,
        &[],
    ));
    assert!(
        log.contains(&format!("runs as uid {}, neither root nor", alice.0)),
        "{log}"
    );
    assert!(log.contains("could claim uid 0"), "{log}");
    assert!(log.contains("--insecure-bus"), "{log}");
    assert!(!state.exists(), "a refused daemon left {}", state.display());

    // For tests, --insecure-bus serves it anyway.
    let mut daemon = spawn_daemon(
        &stack,
        "tesserad-insecure",
        &address,
        &state,
        &["--insecure-bus"],
    );
    daemon.wait_for_stderr_line("serving org.tessera.Tessera1", WAIT);
    drop(daemon);
    drop(bus);

    // A bus shaped like the system bus: started by root, then run as the messagebus account (its
    // `<user>`), which is what the bus reports for itself. That one is root's and is served.
    let dir = stack.path("system-like-bus");
    fs::create_dir(&dir).unwrap();
    let config = dir.join("bus.conf");
    let socket = dir.join("bus");
    let text = bus_config(&socket).replace("<busconfig>", "<busconfig>\n  <user>messagebus</user>");
    fs::write(&config, text).unwrap();
    let mut bus = Child::spawn(
        "system-like-dbus-daemon",
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"]),
        &stack.path(""),
    );
    let address = bus.wait_for_line("unix:", WAIT).trim().to_owned();
    let mut daemon = spawn_daemon(&stack, "tesserad-system-like", &address, &state, &[]);
    daemon.wait_for_stderr_line("serving org.tessera.Tessera1", WAIT);
}

// ---------------------------------------------------------------------------------------------
// One daemon, one state
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_daemon_on_the_same_bus_exits_and_the_first_keeps_serving() {
    let mut stack = Stack::new();
    stack.start_daemon("");
    let first = stack.daemon.as_ref().unwrap().pid();
    let jwks = stack.ok(&["jwks"], "");
    // On the first daemon's state directory, then on a fresh one: the name is asked about before
    // any state is touched, so the fresh directory is never created.
    let fresh = stack.path("fresh");
    for (i, state) in [stack.path("state"), fresh.clone()].iter().enumerate() {
        let log = refused(spawn_daemon(
            &stack,
            &format!("tesserad-second-{i}"),
            stack.bus_address(),
            state,
            &[],
        ));
        let says = format!("another tesserad (pid {first}) owns {BUS_NAME}");
        assert!(log.contains(&says), "expected {says:?} in:\n{log}");
    }
    assert!(
        !fresh.exists(),
        "the refused daemon created {}",
        fresh.display()
    );
    // The first daemon still owns the name (the bus says so, by pid) and answers.
    assert_eq!(owner_pid(&stack), first);
    assert_eq!(stack.ok(&["jwks"], ""), jwks);
    assert!(stack.daemon.as_mut().unwrap().try_wait().is_none());
    let log = stack.daemon_log();
    assert!(!log.contains("lost name"), "{log}");
    stack.stop_daemon();
}

#[test]
fn two_daemons_on_different_buses_cannot_share_a_state_directory() {
    let mut stack = Stack::new();
    stack.start_daemon("");
    let first = stack.daemon.as_ref().unwrap().pid();
    let other = Bus::start();
    let state = stack.path("state");
    let log = refused(spawn_daemon(
        &stack,
        "tesserad-other-bus",
        other.address(),
        &state,
        &[],
    ));
    let says = format!(
        "state directory {} is in use by another tesserad (pid {first})",
        state.display()
    );
    assert!(log.contains(&says), "expected {says:?} in:\n{log}");
    assert!(!other.has_owner(BUS_NAME));
    stack.ok(&["jwks"], "");
    // Once the first daemon is gone, the directory is free again.
    stack.stop_daemon();
    let mut second = spawn_daemon(&stack, "tesserad-after", other.address(), &state, &[]);
    second.wait_for_stderr_line("serving org.tessera.Tessera1", WAIT);
}

#[test]
fn a_daemon_that_cannot_reach_its_bus_leaves_nothing_on_disk() {
    let dir = TestDir::new();
    let state = dir.path().join("state");
    let config = dir.path().join("tessera.toml");
    fs::write(&config, "").unwrap();
    let out = run(
        Command::new(bin("tesserad"))
            .args(["--bus", "unix:path=/nonexistent/tessera-bus", "--state-dir"])
            .arg(&state)
            .arg("--config")
            .arg(&config),
        b"",
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connecting to the bus"),
        "{}",
        stderr(&out)
    );
    assert!(!state.exists(), "{} was created", state.display());
}

/// Starts tesserad on `bus` with `state` and the default configuration, plus `extra` arguments;
/// not waited for.
fn spawn_daemon(stack: &Stack, label: &str, bus: &str, state: &Path, extra: &[&str]) -> Child {
    let config = stack.path(&format!("{label}.toml"));
    fs::write(&config, "").unwrap();
    Child::spawn(
        label,
        Command::new(bin("tesserad"))
            .env("TESSERA_LOG", "debug")
            .args(["--bus", bus, "--state-dir"])
            .arg(state)
            .arg("--config")
            .arg(&config)
            .args(extra),
        &stack.path(""),
    )
}

/// Waits for a tesserad that must refuse to start: exit status 1. Returns what it logged.
fn refused(mut daemon: Child) -> String {
    let status = daemon.wait_exit(WAIT);
    let log = daemon.stderr_text();
    let status = status.unwrap_or_else(|| panic!("tesserad did not refuse to start:\n{log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    log
}

/// The pid of the owner of org.tessera.Tessera1, as the bus tells it.
fn owner_pid(stack: &Stack) -> u32 {
    let out = stack.busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixProcessID",
        "s",
        BUS_NAME,
    ]);
    // "u 1234"
    out.trim()
        .strip_prefix("u ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected busctl answer {out:?}"))
}

fn stack_has_owner(stack: &Stack) -> bool {
    let out = stack.busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "NameHasOwner",
        "s",
        BUS_NAME,
    ]);
    out.trim() == "b true"
}

// ---------------------------------------------------------------------------------------------
// Enrollments
// ---------------------------------------------------------------------------------------------

#[test]
fn a_lost_card_is_unenrolled_and_its_tokens_revoked() {
    let alice = test_user("tessera-alice");
    let bob = test_user("tessera-bob");
    // Tokens survive the card leaving, so only the removal of the enrollment can end them.
    let (mut env, _card) = Stack::with_card(&[], "[token]\nrevoke_on_removal = false\n");
    let id = env.enroll(PIN, &["--user", "tessera-alice"]);

    let listed = enrollments_as(&env, alice, "");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let e = &listed[0];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["user"], "tessera-alice");
    assert_eq!(e["kind"], "piv");
    assert_eq!(e["slot"], "9a");
    assert!(!e["device_name"].as_str().unwrap().is_empty(), "{e}");
    let guid = e["card_guid"].as_str().unwrap();
    assert!(
        guid.len() == 32 && guid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{e}"
    );
    let created = e["created"].as_u64().unwrap();
    assert!(created > 0, "{e}");
    assert_eq!(e["last_used"], 0, "never used yet: {e}");

    let out = env.cli_as(alice, &["authenticate", "--pin-stdin"], PIN);
    assert!(out.status.success(), "alice: {out:?}");
    let token = stdout(&out).trim().to_owned();
    let jti = env.validate(&token).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let used = enrollments_as(&env, alice, "")[0]["last_used"]
        .as_u64()
        .unwrap();
    assert!(used >= created, "last_used {used}, created {created}");
    // Root sees the same list by name.
    assert_eq!(
        root_enrollments(&env, "tessera-alice")[0]["id"],
        id.as_str()
    );

    // Bob may neither see nor remove Alice's enrollment.
    let (name, msg) = parse_err(&env.cli_as(bob, &["enrollments", "tessera-alice"], ""));
    assert_eq!(name, "AccessDenied", "{msg}");
    let (name, msg) = parse_err(&env.cli_as(bob, &["unenroll", &id], ""));
    assert_eq!(name, "AccessDenied", "{msg}");
    env.validate(&token).unwrap();
    // Malformed and unknown ids.
    let (name, msg) = parse_err(&env.cli_as(alice, &["unenroll", "../x"], ""));
    assert_eq!(name, "InvalidArgument", "{msg}");
    let (name, msg) = parse_err(&env.cli_as(alice, &["unenroll", "AAAAAAAAAAAAAAAAAAAAAA"], ""));
    assert_eq!(name, "NotEnrolled", "{msg}");

    // The card is lost: it leaves the reader, the token lives on.
    let mut watch = env.start_watch();
    env.stop_sim();
    env.wait_device(false);
    env.validate(&token).unwrap();

    let out = env.cli_as(alice, &["unenroll", &id], "");
    assert!(out.status.success(), "alice unenrolling: {out:?}");
    saw_all(
        &watch,
        &[&format!(
            "TokenRevoked jti={jti} user=tessera-alice reason=unenrolled"
        )],
        WAIT,
    );
    let (name, msg) = env.validate(&token).unwrap_err();
    assert_eq!(name, "TokenRevoked", "{msg}");
    assert!(msg.contains("unenrolled"), "{msg}");
    let out = env.cli_as(alice, &["enrollments"], "");
    assert_eq!(stdout(&out).trim(), "no enrollments", "{out:?}");
    let (name, msg) = parse_err(&env.cli_as(alice, &["unenroll", &id], ""));
    assert_eq!(name, "NotEnrolled", "{msg}");
    watch.kill();

    // After a restart the token stays dead (its row went with the enrollment).
    env.stop_daemon();
    env.start_daemon("[token]\nrevoke_on_removal = false\n");
    assert!(env.validate(&token).is_err());

    // Root may remove anyone's enrollment.
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    env.wait_device(true);
    let id = env.enroll(PIN, &["--user", "tessera-bob"]);
    env.ok(&["unenroll", &id], "");
    assert!(root_enrollments(&env, "tessera-bob").is_empty());
}

/// `tessera enrollments [user]` as `who`, parsed.
fn enrollments_as(env: &Stack, who: (u32, u32), user: &str) -> Vec<Value> {
    let mut args = vec!["enrollments", "--json"];
    if !user.is_empty() {
        args.push(user);
    }
    let out = env.cli_as(who, &args, "");
    assert!(out.status.success(), "{out:?}");
    parse_lines(&stdout(&out))
}

fn root_enrollments(env: &Stack, user: &str) -> Vec<Value> {
    parse_lines(&env.ok(&["enrollments", "--json", user], ""))
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| *l != "no enrollments" && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

//! End to end: tokens and logind's login sessions (issue 9), over real processes on a private
//! system-type bus (the stock system-bus rules and the shipped policy, [`common::system_stack`]):
//! `tessera-sim piv` behind pcscd and vpcd, `tesserad`, python-dbusmock's logind template as
//! logind ([`common::logind`]: it finds a process's session from `MOCK_LOGIND_SESSION` in the
//! process's environment), `gdbus` run as root and as other users, `dbus-monitor` and the
//! daemon's database as witnesses that are not the daemon.
//!
//! - BindSession ties a token to a session logind vouches for, and only for an administrator.
//! - ReuseSession accepts only a token bound to the caller's own session (found from the caller's
//!   pid), of the named user, young enough, not single-use, where the PAM service allows reuse.
//! - Pulling the card asks logind to lock (or end) the session at once; reuse then fails.
//! - logind ending a session, and EndSession, revoke with reason "logout".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::logind::{MockLogind, SESSION_ENV};
use common::stack::{Stack, BUS_NAME, CLI_TIMEOUT, MANAGER_PATH, PIN, WAIT};
use common::system_stack::system_stack;
use common::{run, stderr, stdout, test_user};

const ALICE: &str = "tessera-alice";
const BOB: &str = "tessera-bob";
const MANAGER: &str = "org.tessera.Tessera1.Manager";

/// A system-type stack with a card enrolled for tessera-alice, tesserad running with `config`,
/// and the logind mock with sessions c1 and c2 of alice and c3 of bob, all on seat0.
struct World {
    // Field order is drop order: the mock leaves before its bus.
    logind: MockLogind,
    stack: Stack,
}

impl World {
    fn new(config: &str) -> World {
        let alice = test_user(ALICE);
        let bob = test_user(BOB);
        let mut stack = system_stack();
        let logind = MockLogind::start(stack.bus_address(), &stack.path(""));
        logind.add_session("c1", "seat0", alice.0, ALICE);
        logind.add_session("c2", "seat0", alice.0, ALICE);
        logind.add_session("c3", "seat0", bob.0, BOB);
        let card = stack.path("card.json");
        stack.start_sim(&card, &[]);
        stack.start_daemon(config);
        stack.wait_device(true);
        stack.enroll(PIN, &["--user", ALICE]);
        World { logind, stack }
    }

    /// A fresh token of alice from the card.
    fn token(&self) -> String {
        self.stack.authenticate(&["--user", ALICE])
    }

    /// BindSession as root: the bound token.
    fn bind(&self, token: &str, session: &str) -> String {
        let out = call(
            &self.stack,
            As::Root,
            None,
            "BindSession",
            &[token, &session_opt(session)],
        );
        let bound = string_reply(&ok(out));
        assert_eq!(bound.split('.').count(), 3, "not a JWT: {bound}");
        bound
    }

    /// The jti of a live token.
    fn jti(&self, token: &str) -> String {
        let claims = self.stack.validate(token).expect("a live token");
        claims["jti"].as_str().unwrap().to_owned()
    }
}

/// Who runs a client.
#[derive(Clone, Copy)]
enum As<'a> {
    Root,
    User(&'a str),
}

/// `gdbus call` of the Manager's `method` as `who`, in the mock login session `session` (or in
/// none); gdbus reports D-Bus error names in full.
fn call(stack: &Stack, who: As<'_>, session: Option<&str>, method: &str, args: &[&str]) -> Output {
    let mut cmd = match who {
        As::Root => Command::new("env"),
        As::User(name) => {
            let mut c = Command::new("runuser");
            c.args(["-u", name, "--", "env"]);
            c
        }
    };
    // env -u: a session variable from the test's own environment must not leak in.
    cmd.args(["-u", SESSION_ENV]);
    if let Some(id) = session {
        cmd.arg(format!("{SESSION_ENV}={id}"));
    }
    cmd.args(["gdbus", "call", "--address", stack.bus_address()])
        .args(["--dest", BUS_NAME, "--object-path", MANAGER_PATH])
        .args(["--method", &format!("{MANAGER}.{method}")])
        .args(args);
    run(&mut cmd, b"", CLI_TIMEOUT)
}

/// A successful call's stdout.
fn ok(out: Output) -> String {
    assert!(out.status.success(), "call failed: {}", stderr(&out));
    stdout(&out)
}

/// A failed call's D-Bus error name (without the org.tessera.Tessera1.Error. prefix) and message.
fn err(out: Output) -> (String, String) {
    assert!(!out.status.success(), "call succeeded: {}", stdout(&out));
    let text = stderr(&out);
    let rest = text
        .split_once("GDBus.Error:")
        .unwrap_or_else(|| panic!("no D-Bus error in {text:?}"))
        .1;
    let (name, msg) = rest.split_once(": ").unwrap_or((rest, ""));
    let name = name
        .strip_prefix("org.tessera.Tessera1.Error.")
        .unwrap_or(name);
    (name.trim().to_owned(), msg.trim().to_owned())
}

/// The error name of a failed call.
fn err_name(out: Output) -> String {
    err(out).0
}

/// `('<s>',)` → `<s>`.
fn string_reply(out: &str) -> String {
    out.trim()
        .strip_prefix("('")
        .and_then(|s| s.strip_suffix("',)"))
        .unwrap_or_else(|| panic!("not a string reply: {out}"))
        .to_owned()
}

fn session_opt(id: &str) -> String {
    format!("{{'session': <'{id}'>}}")
}

/// ReuseSession's options in GVariant text.
fn reuse_opts(service: &str, max_age: Option<u32>) -> String {
    match max_age {
        Some(s) => format!("{{'service': <'{service}'>, 'max_age': <uint32 {s}>}}"),
        None => format!("{{'service': <'{service}'>}}"),
    }
}

/// ReuseSession for alice by `who` in `session`.
fn reuse(w: &World, who: As<'_>, session: Option<&str>, opts: &str) -> Output {
    call(&w.stack, who, session, "ReuseSession", &[ALICE, opts])
}

#[test]
fn bind_ties_a_token_to_a_session_logind_vouches_for() {
    let w = World::new("");
    let token = w.token();
    let old_jti = w.jti(&token);

    // An ordinary user may not bind, not even their own token to their own session.
    let out = call(
        &w.stack,
        As::User(ALICE),
        Some("c1"),
        "BindSession",
        &[&token, &session_opt("c1")],
    );
    assert_eq!(err_name(out), "AccessDenied");
    // A session of another uid, and a session logind does not know.
    let out = call(
        &w.stack,
        As::Root,
        None,
        "BindSession",
        &[&token, &session_opt("c3")],
    );
    assert_eq!(err_name(out), "NoLoginSession");
    let out = call(
        &w.stack,
        As::Root,
        None,
        "BindSession",
        &[&token, &session_opt("c99")],
    );
    assert_eq!(err_name(out), "NoLoginSession");
    // Session ids are checked before logind is asked; the option is required.
    for opts in [
        "{'session': <'../c1'>}".to_owned(),
        "{'session': <uint32 1>}".to_owned(),
        "@a{sv} {}".to_owned(),
        "{'session': <'c1'>, 'seat': <'seat0'>}".to_owned(),
    ] {
        let out = call(&w.stack, As::Root, None, "BindSession", &[&token, &opts]);
        assert_eq!(err_name(out), "InvalidArgument", "{opts}");
    }
    // None of that touched the token.
    assert_eq!(w.stack.token_state(&old_jti).0, 0);

    let bound = w.bind(&token, "c1");
    let claims = w.stack.validate(&bound).unwrap();
    assert_eq!(claims["login_session"], "c1", "{claims}");
    assert_eq!(claims["seat"], "seat0", "{claims}");
    assert_eq!(claims["sub"], ALICE);
    // The old token died in the same step; the new one keeps its session and expiry.
    assert_eq!(w.stack.token_state(&old_jti), (1, Some("bound".to_owned())));
    assert!(w.stack.validate(&token).is_err());
    // An unbound token shows empty session and seat.
    let other = w.token();
    let claims = w.stack.validate(&other).unwrap();
    assert_eq!(claims["login_session"], "", "{claims}");
    assert_eq!(claims["seat"], "", "{claims}");

    // Without logind on the bus there is nothing to bind to.
    w.logind.stop();
    let out = call(
        &w.stack,
        As::Root,
        None,
        "BindSession",
        &[&other, &session_opt("c1")],
    );
    let (name, msg) = err(out);
    assert_eq!(name, "NoLoginSession", "{msg}");
    assert!(msg.contains("logind"), "{msg}");
}

#[test]
fn reuse_accepts_only_a_token_of_the_callers_own_session() {
    let config = "[pam.services.nosudo]\nreuse = false\n";
    let mut w = World::new(config);
    let token = w.token();
    let bound = w.bind(&token, "c1");

    // Root (sudo's PAM stack) and alice herself, from a process in session c1.
    let out = ok(reuse(
        &w,
        As::Root,
        Some("c1"),
        &reuse_opts("sudo", Some(300)),
    ));
    assert!(out.contains("'login_session': <'c1'>"), "{out}");
    assert!(out.contains(&format!("'sub': <'{ALICE}'>")), "{out}");
    let out = ok(reuse(
        &w,
        As::User(ALICE),
        Some("c1"),
        &reuse_opts("sudo", None),
    ));
    assert!(out.contains("'login_session': <'c1'>"), "{out}");

    // Another session of alice's, a session of bob's, a process in no session.
    for (who, session) in [
        (As::User(ALICE), Some("c2")),
        (As::Root, Some("c2")),
        (As::Root, Some("c3")),
        (As::User(ALICE), None),
        (As::Root, None),
    ] {
        let out = reuse(&w, who, session, &reuse_opts("sudo", None));
        assert_eq!(err_name(out), "NoLoginSession", "{session:?}");
    }
    // Bob may not ask about alice, not even from her session.
    let out = reuse(&w, As::User(BOB), Some("c1"), &reuse_opts("sudo", None));
    assert_eq!(err_name(out), "AccessDenied");
    // The session is the caller's process's, never an option.
    let out = reuse(&w, As::Root, Some("c2"), "{'session': <'c1'>}");
    assert_eq!(err_name(out), "InvalidArgument");
    // A PAM service the administrator took reuse from.
    let out = reuse(&w, As::Root, Some("c1"), &reuse_opts("nosudo", None));
    assert_eq!(err_name(out), "AccessDenied");

    // Too old for the module's max_age.
    std::thread::sleep(Duration::from_millis(2100));
    let out = reuse(&w, As::Root, Some("c1"), &reuse_opts("sudo", Some(1)));
    let (name, msg) = err(out);
    assert_eq!(name, "NoLoginSession", "{msg}");
    ok(reuse(
        &w,
        As::Root,
        Some("c1"),
        &reuse_opts("sudo", Some(60)),
    ));

    // A single-use token never counts, even bound to the session.
    w.stack.stop_daemon();
    w.stack
        .start_daemon(&format!("{config}[token]\nsingle_use = true\n"));
    w.stack.wait_device(true);
    let single = w.token();
    let out = call(
        &w.stack,
        As::Root,
        None,
        "BindSession",
        &[&single, &session_opt("c2")],
    );
    let single_bound = string_reply(&ok(out));
    assert_eq!(single_bound.split('.').count(), 3, "{single_bound}");
    let out = reuse(&w, As::Root, Some("c2"), &reuse_opts("sudo", None));
    assert_eq!(err_name(out), "NoLoginSession");
    // The binding of c1's token (issued before single_use) survived the restart; the core
    // counts the token again once its holder has shown it.
    let out = reuse(&w, As::Root, Some("c1"), &reuse_opts("sudo", None));
    assert_eq!(err_name(out), "NoLoginSession");
    let claims = w.stack.validate(&bound).unwrap();
    assert_eq!(claims["login_session"], "c1", "{claims}");
    ok(reuse(&w, As::Root, Some("c1"), &reuse_opts("sudo", None)));
}

/// Pulls the card and returns (when the daemon noticed, by its log; when logind was asked
/// `method`, by the mock's log).
fn pull_card_and_wait(w: &mut World, method: &str, session: &str) -> (SystemTime, SystemTime) {
    w.stack.stop_sim();
    let asked = w
        .logind
        .wait_call(method, &format!("\"{session}\""), WAIT)
        .at;
    (noticed_removal(&w.stack), asked)
}

/// When the daemon logged "device removed" (tracing's RFC 3339 timestamp, UTC).
fn noticed_removal(stack: &Stack) -> SystemTime {
    let mut line = String::new();
    assert!(
        common::wait_until(WAIT, || {
            line = stack
                .daemon_log()
                .lines()
                .find(|l| l.contains("device removed"))
                .unwrap_or_default()
                .to_owned();
            !line.is_empty()
        }),
        "the daemon never logged the removal:\n{}",
        stack.daemon_log()
    );
    let stamp = line.split_whitespace().next().unwrap();
    humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"))
}

fn delay_ms(noticed: SystemTime, asked: SystemTime) -> f64 {
    match asked.duration_since(noticed) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        // The mock's clock has ms resolution: a call in the same ms may look earlier.
        Err(e) => -(e.duration().as_secs_f64() * 1000.0),
    }
}

#[test]
fn pulling_the_card_locks_the_session_and_ends_reuse() {
    let mut w = World::new("");
    let token = w.token();
    w.bind(&token, "c1");
    ok(reuse(&w, As::Root, Some("c1"), &reuse_opts("sudo", None)));

    let (noticed, asked) = pull_card_and_wait(&mut w, "LockSession", "c1");
    let delay = delay_ms(noticed, asked);
    eprintln!("LockSession delay after the daemon noticed the removal: {delay:.1} ms");
    // The target is 50 ms; the bound leaves room for a loaded shared machine.
    assert!(
        delay < 500.0,
        "LockSession came {delay:.1} ms after the removal"
    );
    // Locked once, and nothing ended.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        w.logind.logged("LockSession").len(),
        1,
        "{}",
        w.logind.log()
    );
    assert!(
        w.logind.logged("TerminateSession").is_empty(),
        "{}",
        w.logind.log()
    );
    assert!(
        w.logind.calls().contains("'LockSession', [<'c1'>]"),
        "{}",
        w.logind.calls()
    );
    let log = w.stack.daemon_log();
    assert!(
        log.lines()
            .any(|l| l.contains("login_session=c1") && l.contains("asked to lock")),
        "{log}"
    );

    // The device left: its token no longer counts for reuse.
    let out = reuse(&w, As::Root, Some("c1"), &reuse_opts("sudo", None));
    assert_eq!(err_name(out), "NoLoginSession");
}

#[test]
fn on_removal_terminate_ends_the_session_and_none_does_nothing() {
    let mut w = World::new(&format!(
        "[users.{ALICE}.session]\non_removal = \"terminate\"\n"
    ));
    let token = w.token();
    w.bind(&token, "c1");
    let (noticed, asked) = pull_card_and_wait(&mut w, "TerminateSession", "c1");
    eprintln!(
        "TerminateSession delay after the daemon noticed the removal: {:.1} ms",
        delay_ms(noticed, asked)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        w.logind.logged("LockSession").is_empty(),
        "{}",
        w.logind.log()
    );
    drop(w);

    let mut w = World::new("[session]\non_removal = \"none\"\n");
    let token = w.token();
    let jti = w.jti(&w.bind(&token, "c1"));
    w.stack.stop_sim();
    noticed_removal(&w.stack);
    // The removal itself was handled (the token died with its device) ...
    assert!(
        common::wait_until(WAIT, || w.stack.token_state(&jti).0 == 1),
        "the bound token outlived its device"
    );
    // ... and logind was asked nothing.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        w.logind.logged("LockSession").is_empty(),
        "{}",
        w.logind.log()
    );
    assert!(
        w.logind.logged("TerminateSession").is_empty(),
        "{}",
        w.logind.log()
    );
}

#[test]
fn logind_ending_the_session_and_end_session_revoke_with_logout() {
    let mut w = World::new("");
    let mut monitor = w.stack.start_monitor();
    let bound = w.bind(&w.token(), "c1");
    let jti = w.jti(&bound);

    // Anyone can send a signal named SessionRemoved; only logind's counts.
    let out = run(
        Command::new("gdbus").args([
            "emit",
            "--address",
            w.stack.bus_address(),
            "--object-path",
            "/org/freedesktop/login1",
            "--signal",
            "org.freedesktop.login1.Manager.SessionRemoved",
            "'c1'",
            "objectpath '/org/freedesktop/login1/session/c1'",
        ]),
        b"",
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        w.stack.validate(&bound).is_ok(),
        "a forged SessionRemoved ended the token"
    );

    w.logind.remove_session("c1");
    monitor.wait_for_line(&format!("string \"{jti}\""), WAIT);
    monitor.wait_for_line("string \"logout\"", WAIT);
    assert_eq!(w.stack.token_state(&jti), (1, Some("logout".to_owned())));
    let (name, _) = w.stack.validate(&bound).unwrap_err();
    assert_eq!(name, "TokenRevoked");

    // EndSession: whoever holds the token, here bob.
    let other = w.token();
    let jti = w.jti(&other);
    ok(call(&w.stack, As::User(BOB), None, "EndSession", &[&other]));
    monitor.wait_for_line(&format!("string \"{jti}\""), WAIT);
    monitor.wait_for_line("string \"logout\"", WAIT);
    assert_eq!(w.stack.token_state(&jti), (1, Some("logout".to_owned())));
}

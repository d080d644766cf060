//! pam_tessera.so's session phase and verify-once reuse, on a system-type bus with the shipped
//! policy and python-dbusmock's logind (tests/common/logind.rs: the mock finds a process's session
//! from `MOCK_LOGIND_SESSION` in its environment, since this machine has no systemd):
//!
//! - the story of issue 9: a card login, open_session binds the token to logind session c1 and
//!   writes it for the user, `sudo`-like reuse succeeds without touching the card, pulling the card
//!   locks c1 (the mock records LockSession), reuse then fails, and a fresh card login works;
//! - open_session / close_session: the token file (0600, the user's), `tessera token` from the
//!   keyring and from the file, EndSession's TokenRevoked "logout", the file gone;
//! - another user's token: their file and directory, read by them with `tessera token`; a
//!   runtime directory others can write to, or a symlinked token directory, is not written to;
//! - a greeter login with an empty user name sets PAM_USER; several users on one card is a failure;
//! - a session logind calls Remote is refused without `allow_remote`: a device login by the
//!   module, a reuse by the daemon (ReuseSession's "allow_remote", which the module passes on).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::logind::{MockLogind, SESSION_ENV};
use common::pam::{PamCode, PamService};
use common::pam_session::{
    assert_reuse_asks_nothing, login_service, pamtester_in, read_token, runtime_dir, token_file,
    PAM_WAIT,
};
use common::stack::{Stack, PIN, WAIT};
use common::system_stack::system_stack;
use common::{bin, run, stdout, test_user, wait_until};

const CONFIG: &str = "[pam]\nreuse = true\nmax_age = \"15m\"\n[session]\non_removal = \"lock\"\n";

/// A system-type stack with the mock logind (session c1 of root on seat0), a card enrolled for
/// root, and the daemon. Returns the stack, the card's state and the mock.
fn story_stack(config: &str) -> (Stack, PathBuf, MockLogind) {
    let mut stack = system_stack();
    let logind = MockLogind::start(stack.bus_address(), &stack.path("."));
    logind.add_session("c1", "seat0", 0, "root");
    let card = stack.path("card.json");
    stack.start_sim(&card, &[]);
    stack.start_daemon(config);
    stack.wait_device(true);
    stack.enroll(PIN, &["--user", "root"]);
    (stack, card, logind)
}

/// `tessera token` in a fresh session keyring of its own (runuser's pam_keyinit): the file only.
fn tessera_token_without_keyring(stack: &Stack) -> Output {
    run(
        Command::new("runuser")
            .args(["-u", "root", "--", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", runtime_dir(stack).display()))
            .arg(bin("tessera"))
            .arg("token"),
        b"",
        WAIT,
    )
}

/// The claims of `token` as `tessera validate --json` prints them.
fn claims(stack: &Stack, token: &str) -> serde_json::Value {
    stack
        .validate(token)
        .unwrap_or_else(|e| panic!("the token does not validate: {e:?}"))
}

/// Runs `script` (sh) as root through runuser, whose pam_keyinit gives it a session keyring of its
/// own, as a login's processes share one; returns its stdout. `$BUS`, `$PAMTESTER` and `$TESSERA`
/// are set for it, and it runs in the mock's session c1.
fn in_one_login(stack: &Stack, script: &str) -> String {
    let out = run(
        Command::new("runuser")
            .args(["-u", "root", "--", "env"])
            .arg(format!("BUS={}", stack.bus_address()))
            .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={}", stack.bus_address()))
            .arg(format!("XDG_RUNTIME_DIR={}", runtime_dir(stack).display()))
            .arg(format!("TESSERA={}", bin("tessera").display()))
            .arg(format!("{SESSION_ENV}=c1"))
            .args(["sh", "-c", script]),
        b"",
        PAM_WAIT,
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn login_bind_reuse_pull_lock_and_login_again() {
    let (mut stack, card, logind) = story_stack(CONFIG);
    let login = login_service(&stack, "c1", "timeout=20");
    let run = pamtester_in(
        &stack,
        "c1",
        &login,
        "root",
        &["authenticate", "setcred", "open_session"],
        &format!("{PIN}\n"),
    );
    run.assert_ok();
    let token = read_token(&token_file(&stack));
    let c = claims(&stack, &token);
    assert_eq!(c["login_session"], "c1", "{c}");
    assert_eq!(c["seat"], "seat0", "{c}");
    assert_eq!(c["sub"], "root", "{c}");

    // sudo-like: verify once, in the same login session. No device is touched: the card's key is
    // the PIN slot's, which cannot sign without the PIN, and no PIN is asked for or given.
    let sudo = PamService::auth("reuse max_age=5m");
    assert_reuse_asks_nothing(&stack, "c1", &sudo);
    // Another login session does not count, nor none at all.
    pamtester_in(&stack, "c2", &sudo, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);

    // The card is pulled: logind is asked to lock c1, and reuse fails from then on.
    logind.clear_calls();
    stack.stop_sim();
    logind.wait_call("LockSession", "\"c1\"", WAIT);
    assert!(
        wait_until(WAIT, || {
            !pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "").succeeded()
        }),
        "reuse still succeeds after the card left"
    );
    pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);

    // A fresh device login works again.
    stack.start_sim(&card, &[]);
    stack.wait_device(true);
    pamtester_in(
        &stack,
        "c1",
        &login,
        "root",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    )
    .assert_ok();
    pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "").assert_ok();
}

#[test]
fn open_and_close_session_write_the_token_and_end_it() {
    let (mut stack, _card, _logind) = story_stack(CONFIG);
    let mut monitor = stack.start_monitor();
    let login = login_service(&stack, "c1", "timeout=20");

    // No token yet: a clear error.
    let none = tessera_token_without_keyring(&stack);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no session token"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    let pin = stack.path("pin");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    let file = token_file(&stack);
    let pamtester = |ops: &str| {
        format!(
            "pamtester {} root {ops} < '{}' >/dev/null 2>&1",
            login.name(),
            pin.display()
        )
    };
    // One login's processes: open_session, `tessera token` (the keyring first, even over a file
    // that says otherwise), then a second login in the same keyring that closes its session.
    let out = in_one_login(
        &stack,
        &format!(
            "{open}; echo open=$?\n\
             echo keyring=$(\"$TESSERA\" token)\n\
             cp '{file}' '{file}.saved'; echo not-the-keyring > '{file}'\n\
             echo first=$(\"$TESSERA\" token)\n\
             mv '{file}.saved' '{file}'\n\
             {close}; echo close=$?\n\
             \"$TESSERA\" token >/dev/null 2>&1; echo after=$?\n",
            open = pamtester("authenticate open_session"),
            close = pamtester("authenticate open_session close_session"),
            file = file.display(),
        ),
    );
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in:\n{out}"))
            .to_owned()
    };
    assert_eq!(field("open"), "0", "{out}");
    let token = field("keyring");
    assert_eq!(claims(&stack, &token)["login_session"], "c1", "{out}");
    assert_eq!(field("first"), token, "the keyring comes first");
    // The first token died when the bound one replaced it.
    monitor.wait_for_line("string \"bound\"", WAIT);
    assert_eq!(field("close"), "0", "{out}");
    monitor.wait_for_line("string \"logout\"", WAIT);
    assert!(!file.exists(), "the token file is still there");
    assert_ne!(
        field("after"),
        "0",
        "a token was still found after close_session:\n{out}"
    );

    // Outside a login's keyring, `tessera token` reads the file: 0600 in a 0700 directory.
    let run = pamtester_in(
        &stack,
        "c1",
        &login,
        "root",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    );
    run.assert_ok();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "token file mode");
    assert_eq!(meta.uid(), 0);
    let dir_meta = std::fs::metadata(file.parent().unwrap()).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o700, "token directory mode");
    let from_file = tessera_token_without_keyring(&stack);
    assert!(from_file.status.success(), "{from_file:?}");
    assert_eq!(stdout(&from_file).trim(), read_token(&file));
}

#[test]
fn the_token_of_another_user_is_theirs_alone() {
    let mut stack = system_stack();
    let logind = MockLogind::start(stack.bus_address(), &stack.path("."));
    let (uid, gid) = test_user("tessera-pam-user");
    logind.add_session("u1", "seat0", uid, "tessera-pam-user");
    let card = stack.path("card.json");
    stack.start_sim(&card, &[]);
    stack.start_daemon(CONFIG);
    stack.wait_device(true);
    stack.enroll(PIN, &["--user", "tessera-pam-user"]);
    // The user's runtime directory, as logind makes it.
    let run_dir = runtime_dir(&stack);
    std::os::unix::fs::chown(&run_dir, Some(uid), Some(gid)).unwrap();
    let login = login_service(&stack, "u1", "timeout=20");
    pamtester_in(
        &stack,
        "u1",
        &login,
        "tessera-pam-user",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    )
    .assert_ok();
    let file = token_file(&stack);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (uid, gid, 0o600)
    );
    let dir = std::fs::metadata(file.parent().unwrap()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (uid, 0o700));
    let token = read_token(&file);
    assert_eq!(claims(&stack, &token)["login_session"], "u1");
    assert_eq!(claims(&stack, &token)["sub"], "tessera-pam-user");
    // The user reads it with `tessera token`.
    let out = run(
        Command::new("runuser")
            .args(["-u", "tessera-pam-user", "--", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", run_dir.display()))
            .arg(bin("tessera"))
            .arg("token"),
        b"",
        WAIT,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), token);
    // A runtime directory another user could write to is refused.
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let run = pamtester_in(
        &stack,
        "u1",
        &login,
        "tessera-pam-user",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    );
    assert!(
        !run.succeeded(),
        "wrote into a world-writable directory:\n{}",
        run.text()
    );
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
}

#[test]
fn a_symlinked_token_directory_is_not_followed() {
    let (stack, _card, _logind) = story_stack(CONFIG);
    let login = login_service(&stack, "c1", "timeout=20");
    let elsewhere = stack.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, runtime_dir(&stack).join("tessera")).unwrap();
    let run = pamtester_in(
        &stack,
        "c1",
        &login,
        "root",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    );
    assert!(
        !run.succeeded(),
        "open_session wrote through a symlink:\n{}",
        run.text()
    );
    assert!(!elsewhere.join("token").exists());
}

#[test]
fn greeter_login_with_an_empty_user_name_sets_pam_user() {
    let (stack, _card, _logind) = story_stack(CONFIG);
    let login = login_service(&stack, "c1", "timeout=20");
    let run = pamtester_in(
        &stack,
        "c1",
        &login,
        "",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    );
    run.assert_ok();
    assert!(run.text().contains("PAM_USER=root"), "{}", run.text());
    let token = read_token(&token_file(&stack));
    assert_eq!(claims(&stack, &token)["sub"], "root");

    // Reuse needs a user name.
    let sudo = PamService::auth("reuse");
    pamtester_in(&stack, "c1", &sudo, "", &["authenticate"], "").assert_failed(PamCode::AuthErr);

    // The card enrolled for a second account too: the greeter cannot tell who, and fails.
    let (_uid, _gid) = test_user("tessera-pam-second");
    stack.enroll(PIN, &["--user", "tessera-pam-second"]);
    let run = pamtester_in(
        &stack,
        "c1",
        &login,
        "",
        &["authenticate"],
        &format!("{PIN}\n"),
    );
    run.assert_failed(PamCode::AuthErr);
}

/// Adds session `id` of root on seat0 to the mock and makes logind call it Remote (ssh).
fn add_remote_session(stack: &Stack, logind: &MockLogind, id: &str) {
    logind.add_session(id, "seat0", 0, "root");
    stack.busctl(&[
        "call",
        "org.freedesktop.login1",
        &format!("/org/freedesktop/login1/session/{id}"),
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        "org.freedesktop.login1.Session",
        "Remote",
        "b",
        "true",
    ]);
}

/// `busctl call ... ReuseSession` for root from a process in the mock's session `session`, with
/// "allow_remote" as given; busctl's output (the claims, or the error).
fn reuse_session_call(stack: &Stack, session: &str, allow_remote: bool) -> Output {
    run(
        Command::new("busctl")
            .arg(format!("--address={}", stack.bus_address()))
            .args([
                "call",
                "org.tessera.Tessera1",
                "/org/tessera/Tessera1/Manager",
                "org.tessera.Tessera1.Manager",
                "ReuseSession",
                "sa{sv}",
                "root",
                "1",
                "allow_remote",
                "b",
                if allow_remote { "true" } else { "false" },
            ])
            .env(SESSION_ENV, session),
        b"",
        WAIT,
    )
}

#[test]
fn a_remote_logind_session_is_refused_unless_allowed() {
    let (stack, _card, logind) = story_stack(CONFIG);
    add_remote_session(&stack, &logind, "r1");
    let strict = PamService::auth("timeout=20");
    let run = pamtester_in(
        &stack,
        "r1",
        &strict,
        "root",
        &["authenticate"],
        &format!("{PIN}\n"),
    );
    run.assert_failed(PamCode::AuthinfoUnavail);
    assert!(!run.text().contains("PIN for"), "{}", run.text());
    // A local session is fine, and so is the remote one with allow_remote.
    pamtester_in(
        &stack,
        "c1",
        &strict,
        "root",
        &["authenticate"],
        &format!("{PIN}\n"),
    )
    .assert_ok();
    let lax = PamService::auth("timeout=20 allow_remote");
    pamtester_in(
        &stack,
        "r1",
        &lax,
        "root",
        &["authenticate"],
        &format!("{PIN}\n"),
    )
    .assert_ok();
}

#[test]
fn reuse_from_a_remote_logind_session_is_refused_by_the_daemon_unless_allowed() {
    let (stack, _card, logind) = story_stack(CONFIG);
    add_remote_session(&stack, &logind, "r1");
    // A login from the remote session, allowed, and its token bound to r1.
    let login = login_service(&stack, "r1", "timeout=20 allow_remote");
    pamtester_in(
        &stack,
        "r1",
        &login,
        "root",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    )
    .assert_ok();
    assert_eq!(
        claims(&stack, &read_token(&token_file(&stack)))["login_session"],
        "r1"
    );
    // The module asks logind nothing for a reuse; the daemon refuses the Remote session, and the
    // module falls through with PAM_AUTH_ERR.
    let strict = PamService::auth("reuse");
    pamtester_in(&stack, "r1", &strict, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);
    let refused = reuse_session_call(&stack, "r1", false);
    let text = format!(
        "{}{}",
        stdout(&refused),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success() && text.contains("is remote"),
        "ReuseSession from a Remote session without allow_remote: {text}"
    );
    // With allow_remote (the module's option, passed on to the daemon) the same reuse succeeds.
    let lax = PamService::auth("reuse allow_remote");
    let run = pamtester_in(&stack, "r1", &lax, "root", &["authenticate"], "");
    run.assert_ok();
    assert!(!run.text().contains("PIN for"), "{}", run.text());
    let allowed = reuse_session_call(&stack, "r1", true);
    assert!(allowed.status.success(), "{allowed:?}");
}

#[test]
fn reuse_follows_max_age_and_the_services_policy() {
    let quick = PamService::auth("reuse max_age=1s");
    let lenient = PamService::auth("reuse max_age=15m");
    let closed = PamService::auth("reuse");
    let config = format!(
        "{CONFIG}[pam.services.{:?}]\nreuse = false\n[pam.services.{:?}]\nmax_age = \"1s\"\n",
        closed.name(),
        lenient.name()
    );
    let (stack, _card, _logind) = story_stack(&config);
    let login = login_service(&stack, "c1", "timeout=20");
    pamtester_in(
        &stack,
        "c1",
        &login,
        "root",
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
    )
    .assert_ok();
    // At once: the default service policy lets it through, the closed service does not.
    let sudo = PamService::auth("reuse");
    pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "").assert_ok();
    pamtester_in(&stack, "c1", &closed, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);
    // Past 1 s since the card was used: the module's max_age=1s, and the service's max_age
    // beating the module's 15m, both refuse; the 15m default still accepts.
    std::thread::sleep(Duration::from_millis(2100));
    pamtester_in(&stack, "c1", &quick, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);
    pamtester_in(&stack, "c1", &lenient, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);
    pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "").assert_ok();
}

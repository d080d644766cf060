//! pam_tessera.so with a FIDO key (tessera-sim fido on the daemon's simulated HID directory):
//! a login with the key's PIN and a touch from the conversation, the story of issue 9 with a key
//! (login, bind to a mock logind session, reuse without the key, the key pulled locks the
//! session, reuse refused, a fresh login), two enrolled keys named in one
//! message and the touched one used, and pamtester interrupted
//! (SIGINT, as Ctrl-C in sudo) while the key waits for its touch: the daemon cancels the request
//! of the connection that left, and no request is left.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::fido::{KeyOptions, FIDO_PIN};
use common::logind::MockLogind;
use common::pam::{live_requests, pamtester_cmd, PamCode, PamRun, PamService};
use common::pam_session::{
    assert_reuse_asks_nothing, login_service, pamtester_in, read_token, token_file,
};
use common::stack::{Stack, WAIT};
use common::system_stack::system_stack;
use common::{wait_until, Child};
use nix::sys::signal::Signal;

/// A daemon watching for simulated keys, and a key with a PIN that waits for touches, enrolled
/// for root (its enrollment touched from a helper process).
fn enrolled_key() -> (Stack, common::fido::SimKey) {
    let mut stack = Stack::new();
    let config = stack.fido_config("");
    stack.start_daemon(&config);
    let key = stack.plug_key("key", &KeyOptions::manual());
    let device = stack.wait_key(&key);
    let _touch = key.touch_later(&stack.path("."));
    stack.enroll(FIDO_PIN, &["--user", "root", "--device", &device.id]);
    (stack, key)
}

/// pamtester authenticating root with `stdin` as its input, followed line by line: its stdout
/// unbuffered (stdbuf), so each conversation message shows as it is sent; `exec` keeps the pid
/// a test signals. SIGINT is reset to its default action (`env --default-signal`), as in a
/// terminal's sudo: `make test` runs the suite as a background job, whose SIGINT is ignored, and
/// an ignored signal stays ignored across exec.
fn spawn_pamtester(stack: &Stack, service: &PamService, stdin: &str) -> Child {
    let input = stack.path("pamtester-input");
    std::fs::write(&input, stdin).unwrap();
    let inner = pamtester_cmd(stack.bus_address(), service, "root", &["authenticate"], &[]);
    let mut line = String::from("exec env --default-signal=INT stdbuf -o0");
    for a in std::iter::once(inner.get_program()).chain(inner.get_args()) {
        line.push_str(&format!(" '{}'", a.to_str().unwrap()));
    }
    line.push_str(&format!(" < '{}'", input.display()));
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &line])
        .env("DBUS_SYSTEM_BUS_ADDRESS", stack.bus_address());
    Child::spawn("pamtester", &mut cmd, &stack.path("."))
}

#[test]
fn fido_login_with_pin_and_touch_from_the_conversation() {
    let (stack, key) = enrolled_key();
    let service = PamService::auth("timeout=30 kinds=fido");
    let mut pamtester = spawn_pamtester(&stack, &service, &format!("{FIDO_PIN}\n"));
    pamtester.wait_for_line("Touch your security key", WAIT);
    key.touch();
    let status = pamtester.wait_exit(WAIT).expect("pamtester did not finish");
    let text = format!(
        "{}\n{}",
        pamtester.stdout_lines().join("\n"),
        pamtester.stderr_text()
    );
    assert!(status.success(), "{text}");
    assert!(text.contains("PIN for FIDO key"), "{text}");
    assert!(text.contains("(8 tries left):"), "{text}");
}

/// A login of root in mock session c1 with the key's PIN on stdin and one touch; it must succeed.
/// The touch helper is already waiting, so the key may not report that it waits for a touch;
/// without the touch (`--touch manual`) the login would not finish.
fn touched_login(stack: &Stack, key: &common::fido::SimKey, login: &PamService) -> PamRun {
    let touch = key.touch_later(&stack.path("."));
    let run = pamtester_in(
        stack,
        "c1",
        login,
        "root",
        &["authenticate", "open_session"],
        &format!("{FIDO_PIN}\n"),
    );
    drop(touch);
    run.assert_ok();
    run
}

#[test]
fn key_login_bind_reuse_pull_lock_and_login_again() {
    let mut stack = system_stack();
    let logind = MockLogind::start(stack.bus_address(), &stack.path("."));
    logind.add_session("c1", "seat0", 0, "root");
    let config = stack
        .fido_config("[pam]\nreuse = true\nmax_age = \"15m\"\n[session]\non_removal = \"lock\"\n");
    stack.start_daemon(&config);
    // Touched only when the test says so: a reuse that asked the key would hang, not pass.
    let key = stack.plug_key("key", &KeyOptions::manual());
    let device = stack.wait_key(&key);
    let _touch = key.touch_later(&stack.path("."));
    stack.enroll(FIDO_PIN, &["--user", "root", "--device", &device.id]);

    let login = login_service(&stack, "c1", "timeout=30 kinds=fido");
    let run = touched_login(&stack, &key, &login);
    assert!(run.text().contains("PIN for FIDO key"), "{}", run.text());
    let token = read_token(&token_file(&stack));
    let claims = stack.validate(&token).expect("the bound token validates");
    assert_eq!(claims["login_session"], "c1", "{claims}");
    assert_eq!(claims["sub"], "root", "{claims}");

    // sudo-like reuse in the same session: no PIN asked, no touch.
    let sudo = PamService::auth("reuse max_age=5m");
    let reuse = assert_reuse_asks_nothing(&stack, "c1", &sudo);
    assert!(!reuse.text().contains("Touch"), "{}", reuse.text());

    // The key is pulled: logind is asked to lock c1, and reuse fails from then on.
    logind.clear_calls();
    let state = key.pull();
    logind.wait_call("LockSession", "\"c1\"", WAIT);
    pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "")
        .assert_failed(PamCode::AuthErr);

    // The same key plugged in again: a fresh login with PIN and touch, then reuse again.
    let key = stack.plug_key_with_state("key", &state, &KeyOptions::manual());
    stack.wait_key(&key);
    touched_login(&stack, &key, &login);
    pamtester_in(&stack, "c1", &sudo, "root", &["authenticate"], "").assert_ok();
}

#[test]
fn sigint_during_the_touch_leaves_no_request() {
    let (stack, _key) = enrolled_key();
    let service = PamService::auth("timeout=30 kinds=fido");
    let mut pamtester = spawn_pamtester(&stack, &service, &format!("{FIDO_PIN}\n"));
    pamtester.wait_for_line("Touch your security key", WAIT);
    assert_eq!(live_requests(&stack).len(), 1, "the request is not live");
    pamtester.signal(Signal::SIGINT);
    let status = pamtester
        .wait_exit(WAIT)
        .expect("pamtester survived SIGINT");
    assert!(!status.success());
    assert!(
        wait_until(Duration::from_secs(2), || live_requests(&stack).is_empty()),
        "requests left after SIGINT: {:?}",
        live_requests(&stack)
    );
}

#[test]
fn two_enrolled_keys_are_named_and_the_touched_one_is_used() {
    let (mut stack, _alpha) = enrolled_key();
    let bravo = stack.plug_key("bravo", &KeyOptions::manual());
    let bravo_dev = stack.wait_key(&bravo);
    let _touch = bravo.touch_later(&stack.path("."));
    stack.enroll(FIDO_PIN, &["--user", "root", "--device", &bravo_dev.id]);
    let service = PamService::auth("timeout=30 kinds=fido");
    let mut pamtester = spawn_pamtester(&stack, &service, &format!("{FIDO_PIN}\n"));
    let line = pamtester.wait_for_line("Several devices can be used: ", WAIT);
    assert_eq!(line.matches("FIDO key").count(), 2, "{line}");
    bravo.touch();
    pamtester.wait_for_line("Touch your security key", WAIT);
    bravo.touch();
    let status = pamtester.wait_exit(WAIT).expect("pamtester did not finish");
    assert!(
        status.success(),
        "{}\n{}",
        pamtester.stdout_lines().join("\n"),
        pamtester.stderr_text()
    );
}

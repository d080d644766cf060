//! pam_tessera.so through pamtester against the real stack (private bus, pcscd+vpcd, the
//! simulated card, tesserad): a PIV login with the PIN from the conversation, and every row of the
//! module's fail-closed table (pam/src/outcome.rs, docs/pam.md), with no hang past `timeout=`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::pam::{pamtester, pamtester_cmd, PamCode, PamService};
use common::stack::{Stack, PIN, WAIT};
use common::{test_user, wait_until, Child};

/// pamtester's whole run; the module's own bound is timeout= plus a few seconds.
const PAM_WAIT: Duration = Duration::from_secs(60);
const WRONG_PIN: &str = "654321";

/// A card enrolled for root, the daemon up.
fn enrolled_stack(config: &str) -> Stack {
    let (stack, _card) = Stack::with_card(&[], config);
    stack.enroll(PIN, &["--user", "root"]);
    stack
}

/// The request objects the daemon serves now.
fn live_requests(stack: &Stack) -> Vec<String> {
    stack
        .busctl(&["tree", "--list", "org.tessera.Tessera1"])
        .lines()
        .filter(|l| l.starts_with("/org/tessera/Tessera1/requests/"))
        .map(str::to_owned)
        .collect()
}

fn auth(stack: &Stack, service: &PamService, user: &str, stdin: &str) -> common::pam::PamRun {
    pamtester(
        stack.bus_address(),
        service,
        user,
        &["authenticate"],
        &[],
        stdin,
        PAM_WAIT,
    )
}

#[test]
fn piv_login_with_the_pin_from_the_conversation() {
    let stack = enrolled_stack("");
    let service = PamService::auth("timeout=20");
    let run = pamtester(
        stack.bus_address(),
        &service,
        "root",
        &["authenticate", "setcred"],
        &[],
        &format!("{PIN}\n"),
        PAM_WAIT,
    );
    run.assert_ok();
    let text = run.text();
    assert!(text.contains("PIN for "), "no PIN prompt:\n{text}");
    assert!(
        text.contains("(3 tries left): "),
        "no retries in the prompt:\n{text}"
    );
    assert!(!text.contains(PIN), "the PIN was echoed:\n{text}");
}

#[test]
fn a_wrong_pin_is_asked_again_then_the_right_one_logs_in() {
    let stack = enrolled_stack("");
    let service = PamService::auth("timeout=20");
    let run = auth(&stack, &service, "root", &format!("{WRONG_PIN}\n{PIN}\n"));
    run.assert_ok();
    let text = run.text();
    assert!(text.contains("Wrong PIN."), "{text}");
    assert!(text.contains("(2 tries left): "), "{text}");
}

#[test]
fn setcred_without_authenticate_is_a_credential_error() {
    let stack = enrolled_stack("");
    let service = PamService::new("auth required {module}\naccount required pam_permit.so\n");
    let run = pamtester(
        stack.bus_address(),
        &service,
        "root",
        &["setcred"],
        &[],
        "",
        PAM_WAIT,
    );
    run.assert_failed(PamCode::CredErr);
}

#[test]
fn unknown_option_is_a_service_error_and_asks_no_device() {
    let stack = enrolled_stack("");
    for args in [
        "timeout=20 use_first_pass",
        "nouser=ignore",
        "timeout=0",
        "reuse=1",
    ] {
        let service = PamService::auth(args);
        let started = Instant::now();
        let run = auth(&stack, &service, "root", "");
        run.assert_failed(PamCode::ServiceErr);
        assert!(
            !run.text().contains("PIN for"),
            "a device was asked:\n{}",
            run.text()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn daemon_down_is_authinfo_unavail() {
    let mut stack = enrolled_stack("");
    stack.stop_daemon();
    let service = PamService::auth("timeout=5");
    let started = Instant::now();
    auth(&stack, &service, "root", "").assert_failed(PamCode::AuthinfoUnavail);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bus_down_is_authinfo_unavail() {
    let service = PamService::auth("timeout=5");
    let started = Instant::now();
    let run = pamtester(
        "unix:path=/nonexistent/tessera-pam-test-bus",
        &service,
        "root",
        &["authenticate"],
        &[],
        "",
        PAM_WAIT,
    );
    run.assert_failed(PamCode::AuthinfoUnavail);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn not_enrolled_is_user_unknown_or_unavail_as_nouser_says() {
    let stack = enrolled_stack("");
    let (_uid, _gid) = test_user("tessera-pam-nobody");
    let unknown = PamService::auth("timeout=10");
    auth(&stack, &unknown, "tessera-pam-nobody", "").assert_failed(PamCode::UserUnknown);
    let explicit = PamService::auth("timeout=10 nouser=unknown");
    auth(&stack, &explicit, "tessera-pam-nobody", "").assert_failed(PamCode::UserUnknown);
    let unavail = PamService::auth("timeout=10 nouser=unavail");
    auth(&stack, &unavail, "tessera-pam-nobody", "").assert_failed(PamCode::AuthinfoUnavail);
}

#[test]
fn the_lockout_after_wrong_pins_is_maxtries() {
    let stack = enrolled_stack("[auth]\nmax_failures = 2\n");
    let service = PamService::auth("timeout=20");
    let run = auth(
        &stack,
        &service,
        "root",
        &format!("{WRONG_PIN}\n{WRONG_PIN}\n{PIN}\n"),
    );
    run.assert_failed(PamCode::MaxTries);
}

#[test]
fn the_last_try_is_announced_and_a_blocked_pin_is_maxtries() {
    let stack = enrolled_stack("[auth]\nmax_failures = 10\n");
    let service = PamService::auth("timeout=30");
    let run = auth(
        &stack,
        &service,
        "root",
        &format!("{WRONG_PIN}\n{WRONG_PIN}\n{WRONG_PIN}\n"),
    );
    run.assert_failed(PamCode::MaxTries);
    let text = run.text();
    assert!(text.contains("This is the last try"), "{text}");
    assert!(text.contains("(1 try left): "), "{text}");
}

#[test]
fn no_card_until_the_timeout_is_auth_err_within_the_timeout() {
    let mut stack = enrolled_stack("");
    stack.stop_sim();
    stack.wait_device(false);
    let service = PamService::auth("timeout=2");
    let started = Instant::now();
    let run = auth(&stack, &service, "root", "");
    run.assert_failed(PamCode::AuthErr);
    assert!(
        run.text().contains("Insert your card or key"),
        "{}",
        run.text()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2 + 5), "took {took:?}");
    assert!(wait_until(WAIT, || live_requests(&stack).is_empty()));
}

#[test]
fn no_pin_cancels_the_request() {
    let stack = enrolled_stack("");
    let service = PamService::auth("timeout=20");
    // End of input at the PIN prompt: pamtester's conversation (misc_conv) answers with nothing,
    // which the module takes for a cancel.
    auth(&stack, &service, "root", "").assert_failed(PamCode::AuthErr);
    assert!(
        wait_until(Duration::from_secs(2), || live_requests(&stack).is_empty()),
        "a request was left: {:?}",
        live_requests(&stack)
    );
    // An empty PIN is a cancel too, and no cancel costs a try: the next login still has 3.
    auth(&stack, &service, "root", "\n").assert_failed(PamCode::AuthErr);
    let run = auth(&stack, &service, "root", &format!("{PIN}\n"));
    run.assert_ok();
    assert!(run.text().contains("(3 tries left): "), "{}", run.text());
}

#[test]
fn a_daemon_killed_mid_request_fails_at_once() {
    let mut stack = enrolled_stack("");
    stack.stop_sim();
    stack.wait_device(false);
    let service = PamService::auth("timeout=30");
    let mut cmd = pamtester_cmd(
        stack.bus_address(),
        &service,
        "root",
        &["authenticate"],
        &[],
    );
    let mut pamtester = Child::spawn("pamtester", &mut cmd, &stack.path("."));
    assert!(
        wait_until(WAIT, || !live_requests(&stack).is_empty()),
        "no request started"
    );
    let killed = Instant::now();
    stack.kill_daemon();
    let status = pamtester.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "pamtester still waits after the daemon died"
    );
    assert!(!status.unwrap().success());
    assert!(killed.elapsed() < Duration::from_secs(10));
    let text = format!(
        "{}{}",
        pamtester.stdout_lines().join("\n"),
        pamtester.stderr_text()
    );
    assert!(text.contains(PamCode::AuthinfoUnavail.message()), "{text}");
}

#[test]
fn a_name_owner_that_is_not_root_is_never_asked() {
    let mut stack = enrolled_stack("");
    stack.stop_daemon();
    let (uid, _gid) = test_user("tessera-pam-impostor");
    // An impostor takes the daemon's name on the (permissive) test bus as another uid.
    let script = format!(
        "import dbus, time\n\
         b = dbus.bus.BusConnection({:?})\n\
         b.request_name('org.tessera.Tessera1')\n\
         print('ready', flush=True)\n\
         time.sleep(120)\n",
        stack.bus_address()
    );
    let mut impostor = Child::spawn(
        "impostor",
        Command::new("runuser")
            .args(["-u", "tessera-pam-impostor", "--", "/usr/bin/python3", "-c"])
            .arg(script),
        &stack.path("."),
    );
    impostor.wait_for_line("ready", WAIT);
    assert!(uid != 0);
    let service = PamService::auth("timeout=5");
    let run = auth(&stack, &service, "root", &format!("{PIN}\n"));
    run.assert_failed(PamCode::AuthinfoUnavail);
    assert!(!run.text().contains("PIN for"), "{}", run.text());
    impostor.kill();
}

#[test]
fn a_remote_login_is_refused_unless_allowed() {
    let stack = enrolled_stack("");
    let refused = PamService::auth("timeout=20");
    let run = pamtester(
        stack.bus_address(),
        &refused,
        "root",
        &["authenticate"],
        &["-I", "rhost=elsewhere.example"],
        &format!("{PIN}\n"),
        PAM_WAIT,
    );
    run.assert_failed(PamCode::AuthinfoUnavail);
    assert!(!run.text().contains("PIN for"), "{}", run.text());

    let allowed = PamService::auth("timeout=20 allow_remote");
    pamtester(
        stack.bus_address(),
        &allowed,
        "root",
        &["authenticate"],
        &["-I", "rhost=elsewhere.example"],
        &format!("{PIN}\n"),
        PAM_WAIT,
    )
    .assert_ok();
}

//! pam_tessera.so through pamtester against the real stack (private bus, pcscd+vpcd, the
//! simulated card, tesserad): a PIV login with the PIN from the conversation, and the rows of the
//! module's fail-closed table (pam/src/outcome.rs, docs/pam.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::pam::{pamtester, PamCode, PamService};
use common::stack::{Stack, PIN};

/// pamtester's whole run; the module's own bound is timeout= plus a few seconds.
const PAM_WAIT: Duration = Duration::from_secs(60);

/// A card enrolled for root, the daemon up.
fn enrolled_stack(config: &str) -> Stack {
    let (stack, _card) = Stack::with_card(&[], config);
    stack.enroll(PIN, &["--user", "root"]);
    stack
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
fn unknown_option_is_a_service_error() {
    let stack = enrolled_stack("");
    let service = PamService::auth("timeout=20 use_first_pass");
    let started = Instant::now();
    let run = pamtester(
        stack.bus_address(),
        &service,
        "root",
        &["authenticate"],
        &[],
        "",
        PAM_WAIT,
    );
    run.assert_failed(PamCode::ServiceErr);
    assert!(
        !run.text().contains("PIN for"),
        "a device was asked:\n{}",
        run.text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

//! End-to-end tests of start-up races: a card inserted at the same moment as `tesserad` starts, in
//! either order, and with another application resetting the card while the daemon identifies it.
//! The card must show up on the bus every time, within a second of pcscd reporting it; before the fix
//! a reset during identification left it ignored until it was pulled and inserted again.
//!
//! Each round starts a fresh daemon on a state directory in tmpfs and polls the bus quickly, so the
//! many rounds stay within a minute or two.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::stack::{Stack, DEVICE_ID, DEVICE_PATH, PIN};
use common::{run, stdout, VPCD_READER_0};

/// The bound of the issue: the device is on the bus within this long of pcscd reporting the card
/// (and of the daemon being on the bus at all: it cannot publish before it is up).
const APPEAR_WITHIN: Duration = Duration::from_secs(1);
/// Upper bound of one round's wait before the round is called failed.
const ROUND_WAIT: Duration = Duration::from_secs(10);

/// Which process of a round starts first, and whether another application resets the card meanwhile.
#[derive(Debug, Clone, Copy)]
enum Race {
    CardFirst,
    DaemonFirst,
    /// Card first, daemon right after, and `opensc-tool -a` connecting and resetting the card on its
    /// way out while the daemon identifies it.
    CardFirstWithOpenscReset,
}

#[test]
fn card_and_daemon_started_together_always_appear() {
    rounds(Race::CardFirst, 50);
}

#[test]
fn daemon_and_card_started_together_always_appear() {
    rounds(Race::DaemonFirst, 50);
}

#[test]
fn card_reset_by_opensc_during_identification_still_appears() {
    rounds(Race::CardFirstWithOpenscReset, 20);
}

/// Runs `n` rounds of `race`; odd rounds re-insert the card at once after the last round's removal
/// (the harder case of the issue), even ones after pcscd has seen it leave.
fn rounds(race: Race, n: u32) {
    let mut stack = Stack::new();
    let card = stack.path("card.json");
    // The card's state file is made once; its keys are generated at the first start.
    stack.start_sim(&card, &[]);
    stack.stop_sim();
    let tmp = tempfile::Builder::new()
        .prefix("tessera-startup-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let opensc_conf = stack.path("opensc.conf");
    std::fs::write(
        &opensc_conf,
        "app default { reader_driver pcsc { disconnect_action = reset; } }\n",
    )
    .unwrap();
    let mut worst = Duration::ZERO;
    let mut opensc_connected = 0;
    for round in 1..=n {
        if round % 2 == 0 {
            common::stack::wait_card(false);
        }
        let state = tmp.path().join(format!("state-{round}"));
        match race {
            Race::CardFirst | Race::CardFirstWithOpenscReset => {
                stack.spawn_sim(&card);
                stack.spawn_daemon(&state);
            }
            Race::DaemonFirst => {
                stack.spawn_daemon(&state);
                stack.spawn_sim(&card);
            }
        }
        let opensc = matches!(race, Race::CardFirstWithOpenscReset)
            .then(|| spawn_opensc_resets(&opensc_conf));
        let took = wait_appears(&stack, round);
        worst = worst.max(took);
        if let Some(t) = opensc {
            opensc_connected += t.join().unwrap();
        }
        stack.stop_daemon();
        stack.stop_sim();
    }
    eprintln!(
        "{race:?}: {n} rounds, slowest appearance {worst:?} after card and daemon were up; \
         opensc-tool reached the card {opensc_connected} times"
    );
    if matches!(race, Race::CardFirstWithOpenscReset) {
        // A witness that the race was run at all: opensc-tool connected (and reset on its way out).
        assert!(
            opensc_connected >= n,
            "opensc-tool reached the card only {opensc_connected} times"
        );
    }
}

/// Waits until the device is on the bus; returns how long after both pcscd reported the card and the
/// daemon answered on the bus. Fails the round if that is more than [`APPEAR_WITHIN`].
fn wait_appears(stack: &Stack, round: u32) -> Duration {
    let start = Instant::now();
    let mut card_at = None;
    let mut daemon_at = None;
    let mut last = String::new();
    loop {
        if card_at.is_none() && card_reported() {
            card_at = Some(Instant::now());
        }
        let out = stack.cli(&["status"], "");
        if out.status.success() {
            daemon_at.get_or_insert_with(Instant::now);
            last = stdout(&out);
            if last.contains(DEVICE_PATH) {
                let up = card_at.unwrap_or_else(Instant::now).max(daemon_at.unwrap());
                let took = Instant::now().saturating_duration_since(up);
                assert!(
                    took <= APPEAR_WITHIN,
                    "round {round}: the device appeared only {took:?} after card and daemon were up"
                );
                return took;
            }
        }
        assert!(
            start.elapsed() < ROUND_WAIT,
            "round {round}: the card never appeared (pcscd reported it: {}); status: {last}\n\
             --- tesserad ---\n{}",
            card_at.is_some(),
            stack.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether pcscd reports a card in reader 0, asked without connecting to it (a connection would
/// itself be another application racing the daemon).
fn card_reported() -> bool {
    let reader = std::ffi::CString::new(VPCD_READER_0).unwrap();
    let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
        return false;
    };
    let mut states = [pcsc::ReaderState::new(reader, pcsc::State::UNAWARE)];
    ctx.get_status_change(Duration::ZERO, &mut states).is_ok()
        && states[0].event_state().contains(pcsc::State::PRESENT)
}

/// `opensc-tool -a` on reader 0 a few times in a row from another thread, with a configuration that
/// resets the card at each disconnect, as an application set up that way does. Returns how many
/// times it reached the card.
fn spawn_opensc_resets(conf: &Path) -> std::thread::JoinHandle<u32> {
    let conf = conf.to_owned();
    std::thread::spawn(move || {
        let mut connected = 0;
        for _ in 0..4 {
            // Failures are expected while the card is not in yet; only the resets matter.
            let out = run(
                Command::new("opensc-tool").env("OPENSC_CONF", &conf).args([
                    "--reader",
                    VPCD_READER_0,
                    "-a",
                ]),
                b"",
                Duration::from_secs(10),
            );
            if out.status.success() {
                connected += 1;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        connected
    })
}

/// A card without the PIV application is listed (kind "unknown", its name says why) and logged once,
/// never used for enrollment or authentication, and identified afresh when another application
/// resets it and when it is re-inserted.
#[test]
fn a_card_that_is_not_piv_is_listed_as_unknown_and_never_used() {
    // Root enrolls the card first, so that authentication has something it could wrongly use.
    let (mut stack, card) = Stack::with_card(&[], "");
    stack.enroll(PIN, &["--user", "root"]);
    stack.stop_sim();
    stack.wait_device(false);
    stack.start_sim(&card, &["--fault", "no-piv"]);
    stack.wait_device(true);
    let status = stack.ok(&["status"], "");
    assert!(status.contains("kind: unknown"), "{status}");
    assert!(
        status.contains("unidentified card in Virtual PCD 00 00"),
        "{status}"
    );

    let (name, msg) = stack.err(&["enroll", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(name, "NoDevice", "enrolling with an unknown card: {msg}");
    let (name, msg) = stack.err(&["authenticate", "--user", "root", "--pin-stdin"], PIN);
    assert_eq!(
        name, "NoDevice",
        "authenticating with an unknown card: {msg}"
    );
    let (name, msg) = stack.err(
        &[
            "authenticate",
            "--user",
            "root",
            "--device",
            DEVICE_ID,
            "--pin-stdin",
        ],
        PIN,
    );
    assert_eq!(name, "NoDevice", "naming the unknown card: {msg}");
    let log = stack.daemon_log();
    assert_eq!(
        log.matches("cannot identify the card").count(),
        1,
        "logged once:\n{log}"
    );

    // Reset by another application: looked at again. (SCardReconnect with a reset: pcscd does not
    // reset a card another application still holds at a disconnect, so opensc-tool's
    // `disconnect_action = reset` would not do here.)
    reset_card_as_another_application();
    let daemon = stack.daemon.as_mut().unwrap();
    daemon.wait_for_stderr_line("identifying the unidentified card again", ROUND_WAIT);
    daemon.wait_for_stderr_line("cannot identify the card", ROUND_WAIT);
    let status = stack.ok(&["status"], "");
    assert!(status.contains("kind: unknown"), "{status}");

    // The same card, now with its PIV application, re-inserted: identified and usable.
    stack.stop_sim();
    stack.wait_device(false);
    stack.start_sim(&card, &[]);
    stack.wait_device(true);
    let status = stack.ok(&["status"], "");
    assert!(status.contains("kind: piv"), "{status}");
    stack.authenticate(&["--user", "root"]);
}

/// Resets the card in reader 0 the way another PC/SC application does (SCardReconnect with
/// SCARD_RESET_CARD on a shared connection of its own).
fn reset_card_as_another_application() {
    let reader = std::ffi::CString::new(VPCD_READER_0).unwrap();
    let ctx = pcsc::Context::establish(pcsc::Scope::User).unwrap();
    let mut card = ctx
        .connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .unwrap();
    card.reconnect(
        pcsc::ShareMode::Shared,
        pcsc::Protocols::ANY,
        pcsc::Disposition::ResetCard,
    )
    .unwrap();
    assert!(card.disconnect(pcsc::Disposition::LeaveCard).is_ok());
}

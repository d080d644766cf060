//! The request machinery of the core (issue 7), in-process: the PIN loop, the last try, unblock
//! with the PUK, cancel before and during a card operation, waiting for an insertion, choosing
//! between several cards, timeouts and the per-caller limit. The simulated card is attached
//! through a spy that records every APDU and can stall a signature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tessera::clock::ManualClock;
use tessera::policy::config::Config;
use tessera::service::{
    AuthOptions, AuthRequest, Caller, DeviceAttach, EnrollOptions, EnrollRequest, Progress,
    Request, Service, ServiceParts, UnblockRequest, Update, MAX_LIVE_REQUESTS_PER_CALLER,
};
use tessera::transport::worker::DirectConnection;
use tessera::transport::CardTransport;
use tessera::{Error, Secret};
use tessera_sim::piv::{PivCard, SimOptions};
use zeroize::Zeroizing;

const ROOT: Caller = Caller::uid(0);
const PIN: &str = "123456";
const PUK: &str = "12345678";
const INS_VERIFY: u8 = 0x20;
const INS_GENERAL_AUTHENTICATE: u8 = 0x87;

fn secret(s: &str) -> Secret {
    Secret::new(Zeroizing::new(s.into()))
}

fn open(dir: &Path, config: &str) -> Service {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    Service::open(ServiceParts {
        clock: Arc::new(clock),
        config: Config::parse(config).unwrap(),
        state_dir: dir.join("state"),
    })
    .unwrap()
}

/// A simulated card shared with the test: every command APDU is recorded, and a signature can be
/// held until the test lets it go.
#[derive(Clone)]
struct Spy {
    card: Arc<Mutex<PivCard>>,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    stall_sign: Arc<AtomicBool>,
    in_sign: Arc<AtomicBool>,
}

impl Spy {
    fn new() -> Spy {
        Spy {
            card: Arc::new(Mutex::new(
                PivCard::in_memory(&SimOptions::default()).unwrap(),
            )),
            sent: Arc::default(),
            stall_sign: Arc::default(),
            in_sign: Arc::default(),
        }
    }

    fn retries(&self) -> u8 {
        self.card.lock().unwrap().state().pin_retries_left()
    }

    fn sent(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    fn sent_since(&self, n: usize) -> Vec<Vec<u8>> {
        self.sent.lock().unwrap()[n..].to_vec()
    }
}

impl CardTransport for Spy {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        self.sent.lock().unwrap().push(command.to_vec());
        if command.get(1) == Some(&INS_GENERAL_AUTHENTICATE)
            && self.stall_sign.load(Ordering::SeqCst)
        {
            self.in_sign.store(true, Ordering::SeqCst);
            while self.stall_sign.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.card.lock().unwrap().transmit(command)
    }
}

async fn attach(svc: &Service, reader: &str, spy: &Spy) -> String {
    svc.device_added(DeviceAttach {
        reader: reader.into(),
        event_count: 1,
        source_instance: Some("sim".into()),
        transport: "sim".into(),
        connection: Box::new(DirectConnection(spy.clone())),
    })
    .await
    .unwrap();
    svc.devices()
        .into_iter()
        .find(|d| d.reader == reader)
        .unwrap()
        .id
}

/// A service with one card attached and enrolled for root (9A).
async fn enrolled(dir: &Path, config: &str) -> (Service, Spy, String) {
    let svc = open(dir, config);
    let spy = Spy::new();
    let id = attach(&svc, "Sim Reader 0", &spy).await;
    svc.enumeration_complete().await.unwrap();
    svc.enroll(
        ROOT,
        "",
        &id,
        EnrollOptions {
            pin: Some(secret(PIN)),
            credential: None,
        },
    )
    .await
    .unwrap();
    (svc, spy, id)
}

/// A service with one card enrolled for nobody, and an interactive enrollment of it by `caller`.
async fn start_enrollment_on_new_card(dir: &Path, caller: Caller) -> (Service, Spy, Request) {
    let svc = open(dir, "");
    let spy = Spy::new();
    let id = attach(&svc, "Sim Reader 0", &spy).await;
    svc.enumeration_complete().await.unwrap();
    let r = svc
        .start_enrollment(caller, "", &id, EnrollRequest::default())
        .await
        .unwrap();
    (svc, spy, r)
}

async fn next(r: &mut Request) -> Update {
    tokio::time::timeout(Duration::from_secs(10), r.updates.recv())
        .await
        .expect("no update within 10 s")
        .expect("updates ended without a terminal one")
}

/// Skips "working" updates; returns the next other one.
async fn next_not_working(r: &mut Request) -> Update {
    loop {
        match next(r).await {
            Update::Progress(Progress::Working { .. }) => continue,
            u => return u,
        }
    }
}

fn interactive() -> AuthRequest {
    AuthRequest::default()
}

fn with_pin() -> AuthRequest {
    AuthRequest {
        pin: Some(secret(PIN)),
        ..AuthRequest::default()
    }
}

async fn start(svc: &Service, r: AuthRequest) -> Request {
    svc.start_authentication(ROOT, "", r).await.unwrap()
}

/// A v1 Authenticate as root.
async fn v1_auth(svc: &Service, pin: &str) -> tessera::Result<Zeroizing<String>> {
    svc.authenticate(
        ROOT,
        "",
        AuthOptions {
            pin: Some(secret(pin)),
            device: None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_asks_again_with_the_retries_and_the_right_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, id) = enrolled(dir.path(), "").await;
    let mut r = start(&svc, interactive()).await;
    // The first update is the state in force when the request was started.
    match next(&mut r).await {
        Update::Progress(Progress::Working { device }) => assert_eq!(device, id),
        u => panic!("{u:?}"),
    }
    let prompt = match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(p)) => p,
        u => panic!("{u:?}"),
    };
    assert_eq!(r.handle.state(), "pin-needed");
    assert_eq!(
        (
            prompt.retries,
            prompt.min_length,
            prompt.max_length,
            prompt.kind.as_str()
        ),
        (Some(3), 6, 8, "piv")
    );
    assert_eq!(
        (prompt.last_error.as_deref(), prompt.last_try),
        (None, false)
    );
    assert_eq!(prompt.device, id);
    r.handle.submit_pin(secret("654321")).unwrap();
    let prompt = match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(p)) => p,
        u => panic!("{u:?}"),
    };
    assert_eq!(prompt.retries, Some(2));
    assert_eq!(prompt.last_error.as_deref(), Some("PinInvalid"));
    assert!(!prompt.last_try);
    // Malformed answers are refused at once; the request keeps waiting.
    assert!(matches!(
        r.handle.submit_pin(secret("12")),
        Err(Error::PinFormat(_))
    ));
    r.handle.submit_pin(secret(PIN)).unwrap();
    let token = match next_not_working(&mut r).await {
        Update::Completed(t) => t,
        u => panic!("{u:?}"),
    };
    assert!(
        r.updates.try_recv().is_err(),
        "nothing after the terminal update"
    );
    let claims = svc.validate(&token).await.unwrap();
    assert!(claims.amr.contains(&"pin".to_owned()));
    assert_eq!(spy.retries(), 3);
    // Not waiting for a secret any more.
    assert!(matches!(
        r.handle.submit_pin(secret(PIN)),
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_try_is_spent_only_deliberately() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "").await;
    let mut r = start(&svc, interactive()).await;
    for _ in 0..2 {
        match next_not_working(&mut r).await {
            Update::Progress(Progress::PinNeeded(_)) => {}
            u => panic!("{u:?}"),
        }
        r.handle.submit_pin(secret("000000")).unwrap();
    }
    let prompt = match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(p)) => p,
        u => panic!("{u:?}"),
    };
    assert_eq!((prompt.retries, prompt.last_try), (Some(1), true));
    let before = spy.sent();
    assert!(matches!(
        r.handle.submit_pin(secret(PIN)),
        Err(Error::PinWouldBlock { retries: 1 })
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(spy.sent(), before, "a refused last try reached the card");
    assert_eq!(r.handle.state(), "pin-needed");
    r.handle.submit_last_try_pin(secret(PIN)).unwrap();
    match next_not_working(&mut r).await {
        Update::Completed(t) => assert!(svc.validate(&t).await.is_ok()),
        u => panic!("{u:?}"),
    }
    assert_eq!(spy.retries(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_pin_is_unblocked_with_the_puk_and_the_new_pin_works() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, id) = enrolled(dir.path(), "[pin]\nkeep_last_retry = false\n").await;
    for _ in 0..3 {
        let e = v1_auth(&svc, "000000").await.unwrap_err();
        assert!(
            matches!(e, Error::PinInvalid { .. } | Error::PinBlocked),
            "{e:?}"
        );
    }
    assert_eq!(spy.retries(), 0);
    let mut r = svc
        .start_unblock(ROOT, &id, UnblockRequest::default())
        .await
        .unwrap();
    let prompt = match next_not_working(&mut r).await {
        Update::Progress(Progress::PukNeeded(p)) => p,
        u => panic!("{u:?}"),
    };
    assert_eq!(
        prompt.retries, None,
        "the PUK's retries are unknown before a wrong PUK"
    );
    r.handle.submit_pin(secret("87654321")).unwrap();
    match next_not_working(&mut r).await {
        Update::Progress(Progress::NewPinNeeded(_)) => {}
        u => panic!("{u:?}"),
    }
    r.handle.submit_pin(secret("246801")).unwrap();
    let prompt = match next_not_working(&mut r).await {
        Update::Progress(Progress::PukNeeded(p)) => p,
        u => panic!("{u:?}"),
    };
    assert_eq!(prompt.last_error.as_deref(), Some("PukInvalid"));
    assert_eq!(prompt.retries, Some(2));
    r.handle.submit_pin(secret(PUK)).unwrap();
    match next_not_working(&mut r).await {
        Update::Completed(_) => {}
        u => panic!("{u:?}"),
    }
    assert_eq!(spy.retries(), 3);
    let token = v1_auth(&svc, "246801").await.unwrap();
    assert!(svc.validate(&token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_while_a_pin_is_asked_spends_no_try_and_the_card_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "").await;
    let mut r = start(&svc, interactive()).await;
    match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(_)) => {}
        u => panic!("{u:?}"),
    }
    let before = spy.sent();
    r.handle.cancel();
    r.handle.cancel();
    match next(&mut r).await {
        Update::Failed(Error::Cancelled) => {}
        u => panic!("{u:?}"),
    }
    assert!(
        r.updates.try_recv().is_err(),
        "nothing after the terminal update"
    );
    assert!(matches!(
        r.handle.submit_pin(secret(PIN)),
        Err(Error::InvalidArgument(_))
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(spy.sent(), before, "an APDU after the cancel");
    assert_eq!(spy.retries(), 3);
    let token = v1_auth(&svc, PIN).await.unwrap();
    assert!(svc.validate(&token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_a_stalled_signature_ends_the_request_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "").await;
    spy.stall_sign.store(true, Ordering::SeqCst);
    let mut r = start(&svc, with_pin()).await;
    while !spy.in_sign.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent_at_cancel = spy.sent();
    let cancelled_at = std::time::Instant::now();
    r.handle.cancel();
    loop {
        match next(&mut r).await {
            Update::Progress(_) => continue,
            Update::Failed(Error::Cancelled) => break,
            u => panic!("{u:?}"),
        }
    }
    assert!(cancelled_at.elapsed() < Duration::from_millis(100));
    spy.stall_sign.store(false, Ordering::SeqCst);
    // The card is usable right after, and no live token came from the cancelled request.
    let token = v1_auth(&svc, PIN).await.unwrap();
    assert!(svc.validate(&token).await.is_ok());
    assert_eq!(svc.sessions(ROOT, "").await.unwrap().len(), 1);
    // After the cancel only the clean-up of the exchange it interrupted reached the card (the PIN's
    // security status dropped: VERIFY P1 = FF), then the next authentication's own APDUs.
    let after = spy.sent_since(sent_at_cancel);
    let first_of_next = after.iter().position(|c| c.get(1) == Some(&0xA4)).unwrap();
    for c in &after[..first_of_next] {
        assert_eq!(
            (c[1], c[2]),
            (INS_VERIFY, 0xFF),
            "{c:02x?} after the cancel"
        );
    }
    assert_eq!(spy.retries(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_request_queued_behind_another_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "").await;
    spy.stall_sign.store(true, Ordering::SeqCst);
    let first = start(&svc, with_pin()).await;
    while !spy.in_sign.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut second = start(&svc, with_pin()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = spy.sent();
    second.handle.cancel();
    loop {
        match next(&mut second).await {
            Update::Progress(_) => continue,
            Update::Failed(Error::Cancelled) => break,
            u => panic!("{u:?}"),
        }
    }
    spy.stall_sign.store(false, Ordering::SeqCst);
    match first.outcome().await {
        Ok(t) => assert!(svc.validate(&t).await.is_ok()),
        Err(e) => panic!("{e:?}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The first request's own epilogue (PIN status reset) only: the cancelled one never ran.
    let after = spy.sent_since(sent);
    assert!(
        after.iter().all(|c| (c[1], c[2]) == (INS_VERIFY, 0xFF)),
        "{after:02x?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waits_for_the_card_to_be_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "").await;
    svc.device_removed("Sim Reader 0").await.unwrap();
    let mut r = start(&svc, with_pin()).await;
    match next(&mut r).await {
        Update::Progress(Progress::WaitingForDevice) => {}
        u => panic!("{u:?}"),
    }
    assert_eq!(r.handle.state(), "waiting-for-device");
    tokio::time::sleep(Duration::from_millis(200)).await;
    attach(&svc, "Sim Reader 0", &spy).await;
    match next_not_working(&mut r).await {
        Update::Completed(t) => assert!(svc.validate(&t).await.is_ok()),
        u => panic!("{u:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_ends_on_the_insert_timeout_and_on_the_requests_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _spy, _) = enrolled(dir.path(), "[device]\ninsert_timeout = \"1s\"\n").await;
    svc.device_removed("Sim Reader 0").await.unwrap();
    let started = std::time::Instant::now();
    let r = start(&svc, interactive()).await;
    assert!(matches!(r.outcome().await, Err(Error::Timeout { .. })));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let r = svc
        .start_authentication(
            ROOT,
            "",
            AuthRequest {
                timeout: Some(Duration::from_millis(200)),
                ..AuthRequest::default()
            },
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(r.outcome().await, Err(Error::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_millis(900));
    // Without waiting, the v1 answer.
    let e = svc
        .start_authentication(
            ROOT,
            "",
            AuthRequest {
                wait: false,
                ..AuthRequest::default()
            },
        )
        .await
        .map(|_| "a request")
        .expect_err("not waiting, no device is an error of the call itself");
    assert!(matches!(e, Error::NoDevice), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_pin_prompt_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "[device]\npin_timeout = \"1s\"\n").await;
    let r = start(&svc, interactive()).await;
    assert!(matches!(r.outcome().await, Err(Error::Timeout { .. })));
    assert_eq!(spy.retries(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_enrolled_cards_the_request_waits_until_one_remains() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _spy, first) = enrolled(dir.path(), "").await;
    let other = Spy::new();
    let second = attach(&svc, "Sim Reader 1", &other).await;
    svc.enroll(
        ROOT,
        "",
        &second,
        EnrollOptions {
            pin: Some(secret(PIN)),
            credential: None,
        },
    )
    .await
    .unwrap();
    let e = v1_auth(&svc, PIN).await.unwrap_err();
    assert!(matches!(e, Error::DeviceAmbiguous(_)), "{e:?}");
    let mut r = start(&svc, with_pin()).await;
    match next(&mut r).await {
        Update::Progress(Progress::SelectingDevice { mut devices }) => {
            devices.sort();
            let mut want = vec![first.clone(), second.clone()];
            want.sort();
            assert_eq!(devices, want);
        }
        u => panic!("{u:?}"),
    }
    svc.device_removed("Sim Reader 1").await.unwrap();
    match next(&mut r).await {
        Update::Progress(Progress::Working { device }) => assert_eq!(device, first),
        u => panic!("{u:?}"),
    }
    match next_not_working(&mut r).await {
        Update::Completed(t) => assert!(svc.validate(&t).await.is_ok()),
        u => panic!("{u:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_holds_at_most_four_live_requests_and_ids_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _spy, _) = enrolled(dir.path(), "").await;
    // Waiting for the card, they hold no place on a device (a caller has two per device).
    svc.device_removed("Sim Reader 0").await.unwrap();
    let mut live = Vec::new();
    for _ in 0..MAX_LIVE_REQUESTS_PER_CALLER {
        live.push(start(&svc, interactive()).await);
    }
    let e = svc
        .start_authentication(ROOT, "", interactive())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Busy(_)), "{e:?}");
    // A v1 call is not a live request: it never waits, and is bounded by the caller's places on
    // the device instead (here it finds no device).
    let e = v1_auth(&svc, PIN).await.unwrap_err();
    assert!(matches!(e, Error::NoDevice), "{e:?}");
    let mut ids: Vec<u64> = live.iter().map(|r| r.handle.id()).collect();
    let done = live.pop().unwrap();
    done.handle.cancel();
    assert!(matches!(done.outcome().await, Err(Error::Cancelled)));
    let again = start(&svc, interactive()).await;
    ids.push(again.handle.id());
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id was reused");
    for r in live {
        r.handle.cancel();
    }
    again.handle.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interactive_enrollment_asks_for_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _spy, mut r) = start_enrollment_on_new_card(dir.path(), ROOT).await;
    match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(p)) => assert_eq!(p.retries, Some(3)),
        u => panic!("{u:?}"),
    }
    r.handle.submit_pin(secret(PIN)).unwrap();
    let enrollment = match next_not_working(&mut r).await {
        Update::Completed(id) => id.to_string(),
        u => panic!("{u:?}"),
    };
    let listed = svc.enrollments(ROOT, "").await.unwrap();
    assert!(listed.iter().any(|e| e.id == enrollment), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_wrong_pin_counts_toward_the_lockout_which_ends_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(
        dir.path(),
        "[auth]\nmax_failures = 2\n[pin]\nkeep_last_retry = false\n",
    )
    .await;
    let mut r = start(&svc, interactive()).await;
    for _ in 0..2 {
        match next_not_working(&mut r).await {
            Update::Progress(Progress::PinNeeded(_)) => {}
            u => panic!("{u:?}"),
        }
        r.handle.submit_pin(secret("000000")).unwrap();
    }
    match next_not_working(&mut r).await {
        Update::Failed(Error::RateLimited { .. }) => {}
        u => panic!("{u:?}"),
    }
    assert_eq!(spy.retries(), 1);
    let e = v1_auth(&svc, PIN).await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pin_guard_ends_a_request_on_a_card_enrolled_for_nobody() {
    const NOBODY: Caller = Caller::uid(65534);
    let dir = tempfile::tempdir().unwrap();
    let (_svc, spy, mut r) = start_enrollment_on_new_card(dir.path(), NOBODY).await;
    match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(_)) => {}
        u => panic!("{u:?}"),
    }
    r.handle.submit_pin(secret("000000")).unwrap();
    match next_not_working(&mut r).await {
        Update::Progress(Progress::PinNeeded(p)) => {
            assert_eq!(p.last_error.as_deref(), Some("PinInvalid"))
        }
        u => panic!("{u:?}"),
    }
    let before = spy.sent();
    r.handle.submit_pin(secret(PIN)).unwrap();
    match next_not_working(&mut r).await {
        Update::Failed(Error::AccessDenied(_)) => {}
        u => panic!("{u:?}"),
    }
    assert_eq!(
        spy.sent(),
        before,
        "the guard let a second PIN reach the card"
    );
    assert_eq!(spy.retries(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_given_up_front_costs_no_extra_card_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, spy, _) = enrolled(dir.path(), "").await;
    // SELECT, VERIFY (the counter), VERIFY (the PIN), GENERAL AUTHENTICATE, VERIFY P1=FF: the
    // guarded VERIFY reads the retries in the same exchange, as v1 did.
    let want: Vec<u8> = vec![
        0xA4,
        INS_VERIFY,
        INS_VERIFY,
        INS_GENERAL_AUTHENTICATE,
        INS_VERIFY,
    ];
    let before = spy.sent();
    v1_auth(&svc, PIN).await.unwrap();
    // The PIN-status reset follows the result (an epilogue).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ins: Vec<u8> = spy.sent_since(before).iter().map(|c| c[1]).collect();
    assert_eq!(ins, want, "v1 Authenticate");
    let before = spy.sent();
    start(&svc, with_pin()).await.outcome().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ins: Vec<u8> = spy.sent_since(before).iter().map(|c| c[1]).collect();
    assert_eq!(ins, want, "StartAuthentication with the PIN");
}

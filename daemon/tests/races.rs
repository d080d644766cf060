//! Races and restarts at the service level, where timing can be provoked on purpose: the simulated
//! card is attached in-process (a slow wrapper where a card exchange must take a while), the clock is
//! a manual one, and the store is the real SQLite file. Each test is a regression test for a way a
//! token could stay valid, or be acknowledged dead, when it should not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tessera::clock::ManualClock;
use tessera::policy::config::Config;
use tessera::service::{AuthOptions, Caller, DeviceAttach, EnrollOptions, Service, ServiceParts};
use tessera::transport::worker::DirectConnection;
use tessera::transport::CardTransport;
use tessera::Error;
use tessera::Secret;
use tessera_sim::piv::{PivCard, SimOptions};
use zeroize::Zeroizing;

const READER: &str = "Sim Reader 0";
const ROOT: Caller = Caller::uid(0);

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000))
}

fn open(dir: &Path, clock: &ManualClock, config: &str) -> Service {
    Service::open(ServiceParts {
        clock: Arc::new(clock.clone()),
        config: Config::parse(config).unwrap(),
        state_dir: dir.join("state"),
    })
    .unwrap()
}

fn pin() -> Option<Secret> {
    Some(Secret::new(Zeroizing::new("123456".into())))
}

/// Attaches `card`, finishes the first scan and enrolls root.
async fn attach_and_enroll(svc: &Service, card: Box<dyn CardTransport>) {
    svc.device_added(DeviceAttach {
        reader: READER.into(),
        event_count: 1,
        source_instance: Some("sim".into()),
        transport: "sim".into(),
        connection: Box::new(DirectConnection(card)),
    })
    .await
    .unwrap();
    svc.enumeration_complete().await.unwrap();
    let id = svc.devices()[0].id.clone();
    svc.enroll(
        ROOT,
        "",
        &id,
        EnrollOptions {
            pin: pin(),
            credential: None,
        },
    )
    .await
    .unwrap();
}

async fn auth(svc: &Service) -> String {
    svc.authenticate(
        ROOT,
        "",
        AuthOptions {
            pin: pin(),
            device: None,
        },
    )
    .await
    .unwrap()
    .as_str()
    .to_owned()
}

fn card(dir: &Path) -> Box<dyn CardTransport> {
    Box::new(PivCard::open(&dir.join("card.json"), &SimOptions::default()).unwrap())
}

/// The simulated card, slowed down on demand (a real card takes tens of milliseconds per APDU).
struct SlowCard(PivCard, Arc<AtomicBool>);

impl CardTransport for SlowCard {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        if self.1.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(30));
        }
        self.0.transmit(command)
    }
}

fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["jti"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_tokens_wait_for_their_card_to_be_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let token = {
        let svc = open(dir.path(), &clock, "");
        attach_and_enroll(&svc, card(dir.path())).await;
        auth(&svc).await
    };
    // Restarted while the card is gone. Before the first device scan the token must not validate;
    // once the scan has run (no card), it is revoked.
    let svc = open(dir.path(), &clock, "");
    let early = {
        let svc = svc.clone();
        let token = token.clone();
        tokio::spawn(async move { svc.validate(&token).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !early.is_finished(),
        "validated before the card was confirmed"
    );
    svc.enumeration_complete().await.unwrap();
    match early.await.unwrap() {
        Err(Error::TokenRevoked(reason)) => assert_eq!(reason, "device-removed"),
        other => panic!("{other:?}"),
    }

    // With no device scan at all (pcscd down at start), validation fails closed after the device
    // timeout.
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let svc = open(dir.path(), &clock, "");
        attach_and_enroll(&svc, card(dir.path())).await;
        auth(&svc).await
    };
    let svc = open(dir.path(), &clock, "[device]\ntimeout = \"1s\"\n");
    assert!(matches!(
        svc.validate(&token).await,
        Err(Error::Timeout { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_ends_a_refresh_that_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), &clock(), "[token]\nmax_live_per_user = 1000\n");
    attach_and_enroll(&svc, card(dir.path())).await;
    for round in 0..100 {
        let token = auth(&svc).await;
        let refresh = {
            let svc = svc.clone();
            tokio::spawn(async move { svc.refresh(ROOT, &token).await })
        };
        tokio::task::yield_now().await;
        svc.revoke_sessions(ROOT, "").await.unwrap();
        if let Ok(new) = refresh.await.unwrap() {
            assert!(
                svc.validate(&new).await.is_err(),
                "round {round}: a token refreshed during a logout survived it"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_acknowledged_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(
        dir.path(),
        &clock(),
        "[token]\nsingle_use = true\nmax_live_per_user = 1000\n",
    );
    attach_and_enroll(&svc, card(dir.path())).await;
    let db = rusqlite::Connection::open(dir.path().join("state/tessera.db")).unwrap();
    for round in 0..100 {
        let token = auth(&svc).await;
        let jti = jti_of(&token);
        // A single-use validation races the revocation; whichever ends the token, RevokeToken may
        // only answer once the token's end is on disk.
        let validation = {
            let svc = svc.clone();
            let token = token.clone();
            tokio::spawn(async move { svc.validate(&token).await })
        };
        tokio::task::yield_now().await;
        svc.revoke(&token).await.unwrap();
        let state: i64 = db
            .query_row("SELECT state FROM tokens WHERE jti = ?1", [&jti], |r| {
                r.get(0)
            })
            .unwrap();
        assert_ne!(
            state, 0,
            "round {round}: revocation acknowledged, row still live"
        );
        let _ = validation.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_signed_before_a_rotation_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let svc = open(dir.path(), &clock, "");
    let slow = Arc::new(AtomicBool::new(false));
    let card = PivCard::open(&dir.path().join("card.json"), &SimOptions::default()).unwrap();
    attach_and_enroll(&svc, Box::new(SlowCard(card, slow.clone()))).await;
    clock.advance(Duration::from_secs(2));
    slow.store(true, Ordering::SeqCst);
    let in_flight = {
        let svc = svc.clone();
        tokio::spawn(async move { auth(&svc).await })
    };
    // The token is signed and the card is still working when the key rotates and key upkeep runs.
    tokio::time::sleep(Duration::from_millis(40)).await;
    svc.rotate_key(ROOT).await.unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&svc.jwks().await.unwrap()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let token = in_flight.await.unwrap();
    svc.validate(&token).await.unwrap();
}

/// A forged card: answers with card A's certificates and identifiers, but its keys are card B's.
struct ClonedCard {
    shown: PivCard,
    keys: PivCard,
}

impl CardTransport for ClonedCard {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        // GENERAL AUTHENTICATE (INS 87) goes to the card whose keys the clone really has; so do the
        // SELECT and PIN commands, which set that card's security state.
        if matches!(command.get(1), Some(0x87 | 0xA4 | 0x20)) {
            let r = self.keys.transmit(command)?;
            if command.get(1) != Some(&0x87) {
                // Keep the shown card's state in step too.
                let _ = self.shown.transmit(command);
            }
            return Ok(r);
        }
        self.shown.transmit(command)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_only_the_real_card_keeps_its_tokens() {
    let clock = clock();
    for genuine in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let svc = open(dir.path(), &clock, "");
            attach_and_enroll(&svc, card(dir.path())).await;
            auth(&svc).await
        };
        let svc = open(dir.path(), &clock, "");
        let inserted: Box<dyn CardTransport> = if genuine {
            card(dir.path())
        } else {
            Box::new(ClonedCard {
                shown: PivCard::open(&dir.path().join("card.json"), &SimOptions::default())
                    .unwrap(),
                keys: PivCard::in_memory(&SimOptions::default()).unwrap(),
            })
        };
        // Same reader, same pcscd event count, same certificates: only the 9E challenge differs.
        svc.device_added(DeviceAttach {
            reader: READER.into(),
            event_count: 1,
            source_instance: Some("sim".into()),
            transport: "sim".into(),
            connection: Box::new(DirectConnection(inserted)),
        })
        .await
        .unwrap();
        svc.enumeration_complete().await.unwrap();
        let r = svc.validate(&token).await;
        if genuine {
            r.unwrap();
        } else {
            assert!(
                matches!(r, Err(Error::TokenRevoked(_))),
                "a clone kept the token: {r:?}"
            );
        }
    }
}

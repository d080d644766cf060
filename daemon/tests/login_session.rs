//! Login sessions in the core with simulated PIV cards, in-process (issue 9): the greeter finds the
//! user from the card, a bound token is reused after a daemon restart with its card still in the
//! reader, and pulling the card announces the session lock at once (the daemon's 50 ms budget
//! starts here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tessera::clock::ManualClock;
use tessera::policy::config::{Config, OnRemoval};
use tessera::service::{
    AuthRequest, Caller, DeviceAttach, EnrollOptions, Event, LoginSession, ReuseQuery, Service,
    ServiceParts,
};
use tessera::transport::worker::DirectConnection;
use tessera::transport::CardTransport;
use tessera::{Error, Secret};
use tessera_sim::piv::{PivCard, SimOptions};
use zeroize::Zeroizing;

const ROOT: Caller = Caller::uid(0);
const PIN: &str = "123456";

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

/// A simulated card the test keeps, so that it can be attached again after a restart.
#[derive(Clone)]
struct Card(Arc<Mutex<PivCard>>);

impl Card {
    fn new() -> Card {
        Card(Arc::new(Mutex::new(
            PivCard::in_memory(&SimOptions::default()).unwrap(),
        )))
    }
}

impl CardTransport for Card {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        self.0.lock().unwrap().transmit(command)
    }
}

async fn attach(svc: &Service, reader: &str, card: &Card) -> String {
    svc.device_added(DeviceAttach {
        reader: reader.into(),
        event_count: 1,
        source_instance: Some("sim".into()),
        transport: "sim".into(),
        connection: Box::new(DirectConnection(card.clone())),
    })
    .await
    .unwrap();
    svc.devices()
        .into_iter()
        .find(|d| d.reader == reader)
        .unwrap()
        .id
}

async fn enroll(svc: &Service, user: &str, id: &str) {
    svc.enroll(
        ROOT,
        user,
        id,
        EnrollOptions {
            pin: Some(secret(PIN)),
            credential: None,
        },
    )
    .await
    .unwrap();
}

fn with_pin(any_user: bool) -> AuthRequest {
    AuthRequest {
        pin: Some(secret(PIN)),
        any_user,
        audience: Some("pam:gdm-tessera".into()),
        ..AuthRequest::default()
    }
}

async fn greet(svc: &Service) -> tessera::Result<tessera::token::Claims> {
    let token = svc
        .start_authentication(ROOT, "", with_pin(true))
        .await?
        .outcome()
        .await?;
    svc.validate(&token).await
}

fn session(uid: u32) -> LoginSession {
    LoginSession {
        id: "3".into(),
        uid,
        seat: Some("seat0".into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_greeter_logs_in_whoever_the_card_is_enrolled_for() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), "");
    let (a, b) = (Card::new(), Card::new());
    let ia = attach(&svc, "Sim Reader 0", &a).await;
    let ib = attach(&svc, "Sim Reader 1", &b).await;
    svc.enumeration_complete().await.unwrap();
    enroll(&svc, "nobody", &ia).await;
    enroll(&svc, "root", &ib).await;
    assert!(matches!(greet(&svc).await, Err(Error::UserAmbiguous(_))));
    svc.device_removed("Sim Reader 1").await.unwrap();
    let claims = greet(&svc).await.unwrap();
    assert_eq!(claims.sub, "nobody");
    assert_eq!(claims.aud, "pam:gdm-tessera");
    // The same card enrolled for a second account can no longer say who logs in.
    enroll(&svc, "root", &ia).await;
    assert!(matches!(greet(&svc).await, Err(Error::UserAmbiguous(m)) if m.contains("nobody")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_token_is_reused_after_a_restart_with_its_card_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let card = Card::new();
    let bound = {
        let svc = open(dir.path(), "");
        let id = attach(&svc, "Sim Reader 0", &card).await;
        svc.enumeration_complete().await.unwrap();
        enroll(&svc, "root", &id).await;
        let token = svc
            .start_authentication(ROOT, "", with_pin(false))
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        svc.bind_session(ROOT, &token, session(0)).await.unwrap()
    };
    let svc = open(dir.path(), "");
    attach(&svc, "Sim Reader 0", &card).await;
    svc.enumeration_complete().await.unwrap();
    let query = ReuseQuery {
        service: Some("sudo".into()),
        max_age: Some(300),
    };
    let claims = svc
        .reuse_session(ROOT, "root", session(0), query.clone())
        .await
        .unwrap();
    assert_eq!(claims.lsid.as_deref(), Some("3"));
    assert_eq!(claims.aud, "pam:gdm-tessera");
    assert_eq!(claims, svc.validate(&bound).await.unwrap());
    // Another user's view of the same session id is not this session.
    assert!(matches!(
        svc.reuse_session(ROOT, "nobody", session(65534), query)
            .await,
        Err(Error::NoLoginSession(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn pulling_the_card_announces_the_lock_at_once_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), "[session]\non_removal = \"terminate\"\n");
    let card = Card::new();
    let id = attach(&svc, "Sim Reader 0", &card).await;
    svc.enumeration_complete().await.unwrap();
    enroll(&svc, "root", &id).await;
    let token = svc
        .start_authentication(ROOT, "", with_pin(false))
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let bound = svc.bind_session(ROOT, &token, session(0)).await.unwrap();
    let mut events = svc.subscribe();
    let started = Instant::now();
    let removal = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.device_removed("Sim Reader 0").await })
    };
    let announced = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::LoginSessionDeviceRemoved {
                login_session,
                user,
                action,
            } => break (login_session, user, action, started.elapsed()),
            _ => continue,
        }
    };
    removal.await.unwrap().unwrap();
    assert_eq!(
        (announced.0.as_str(), announced.1.as_str(), announced.2),
        ("3", "root", OnRemoval::Terminate)
    );
    assert!(
        announced.3 < Duration::from_millis(50),
        "announced after {:?}",
        announced.3
    );
    assert!(matches!(
        svc.validate(&bound).await,
        Err(Error::TokenRevoked(r)) if r == "device-removed"
    ));
    // Nothing more for that session.
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::LoginSessionDeviceRemoved { .. }),
            "{e:?}"
        );
    }
}

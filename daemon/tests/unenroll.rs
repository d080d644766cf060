//! Enrollments at the service level, where the card can be held mid-signature and the clock moved
//! on purpose: removing an enrollment while an authentication with it is in flight (the token whose
//! row was written ahead, and then went with the enrollment, must not come out valid), and an
//! enrollment's last use outliving its tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{mpsc, Arc, Condvar, Mutex};
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

const ROOT: Caller = Caller::uid(0);
/// GENERAL AUTHENTICATE (NIST SP 800-73-4 Part 2, 3.2.4): the card signing the challenge.
const INS_GENERAL_AUTHENTICATE: u8 = 0x87;

/// Whether signatures are held, and whether the held one may go on.
#[derive(Default)]
struct Gate {
    armed: bool,
    open: bool,
}

/// The simulated card; while the gate is armed, a signature waits (after telling `reached`) until
/// the gate opens.
struct GatedCard {
    card: PivCard,
    gate: Arc<(Mutex<Gate>, Condvar)>,
    reached: mpsc::Sender<()>,
}

impl CardTransport for GatedCard {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        if command.get(1) == Some(&INS_GENERAL_AUTHENTICATE) {
            let (lock, cvar) = &*self.gate;
            let mut gate = lock.lock().unwrap();
            if gate.armed {
                let _ = self.reached.send(());
                while !gate.open {
                    gate = cvar.wait(gate).unwrap();
                }
            }
        }
        self.card.transmit(command)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enrollment_removed_during_an_authentication_yields_no_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(ServiceParts {
        clock: Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        )),
        config: Config::parse("").unwrap(),
        state_dir: dir.path().join("state"),
    })
    .unwrap();
    let gate = Arc::new((Mutex::new(Gate::default()), Condvar::new()));
    let (reached, at_signature) = mpsc::channel();
    let card = GatedCard {
        card: PivCard::open(&dir.path().join("card.json"), &SimOptions::default()).unwrap(),
        gate: gate.clone(),
        reached,
    };
    svc.device_added(DeviceAttach {
        reader: "Sim Reader 0".into(),
        event_count: 1,
        source_instance: Some("sim".into()),
        transport: "sim".into(),
        connection: Box::new(DirectConnection(Box::new(card))),
    })
    .await
    .unwrap();
    svc.enumeration_complete().await.unwrap();
    let device = svc.devices()[0].id.clone();
    let id = svc
        .enroll(
            ROOT,
            "",
            &device,
            EnrollOptions {
                pin: Some(Secret::new(Zeroizing::new("123456".into()))),
                credential: None,
            },
        )
        .await
        .unwrap();

    gate.0.lock().unwrap().armed = true;
    let auth = {
        let svc = svc.clone();
        tokio::spawn(async move {
            svc.authenticate(
                ROOT,
                "",
                AuthOptions {
                    pin: Some(Secret::new(Zeroizing::new("123456".into()))),
                    device: None,
                },
            )
            .await
        })
    };
    // The card is signing; the token's row is written ahead meanwhile. Wait for both.
    tokio::task::spawn_blocking(move || at_signature.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the card was never asked to sign");
    let db = rusqlite::Connection::open(dir.path().join("state/tessera.db")).unwrap();
    let mut rows = 0;
    for _ in 0..1000 {
        rows = db
            .query_row("SELECT count(*) FROM tokens", [], |r| r.get::<_, i64>(0))
            .unwrap();
        if rows > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rows, 1, "the token's row was not written ahead");

    svc.remove_enrollment(ROOT, &id).await.unwrap();
    {
        let (lock, cvar) = &*gate;
        lock.lock().unwrap().open = true;
        cvar.notify_all();
    }
    match auth.await.unwrap() {
        Err(Error::NotEnrolled(_)) => {}
        Ok(token) => panic!(
            "a token was issued for a removed enrollment; it validates: {:?}",
            svc.validate(&token).await.map(|c| c.jti)
        ),
        Err(e) => panic!("expected NotEnrolled, got {e:?}"),
    }
    assert!(svc.sessions(ROOT, "").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_use_of_an_enrollment_outlives_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    let open = || {
        Service::open(ServiceParts {
            clock: Arc::new(clock.clone()),
            config: Config::parse("[token]\nlifetime = \"5m\"\n").unwrap(),
            state_dir: dir.path().join("state"),
        })
        .unwrap()
    };
    let used_at = {
        let svc = open();
        let card = PivCard::open(&dir.path().join("card.json"), &SimOptions::default()).unwrap();
        svc.device_added(DeviceAttach {
            reader: "Sim Reader 0".into(),
            event_count: 1,
            source_instance: Some("sim".into()),
            transport: "sim".into(),
            connection: Box::new(DirectConnection(Box::new(card))),
        })
        .await
        .unwrap();
        svc.enumeration_complete().await.unwrap();
        let device = svc.devices()[0].id.clone();
        let pin = || Some(Secret::new(Zeroizing::new("123456".into())));
        let options = EnrollOptions {
            pin: pin(),
            credential: None,
        };
        svc.enroll(ROOT, "", &device, options).await.unwrap();
        assert_eq!(svc.enrollments(ROOT, "").await.unwrap()[0].last_used, None);
        clock.advance(Duration::from_secs(10));
        let options = AuthOptions {
            pin: pin(),
            device: None,
        };
        svc.authenticate(ROOT, "", options).await.unwrap();
        let used_at = svc.enrollments(ROOT, "").await.unwrap()[0].last_used;
        assert_eq!(used_at, Some(1_900_000_010));
        used_at
    };
    // The token expires; the next start prunes its row. The enrollment remembers its use.
    clock.advance(Duration::from_secs(3600));
    let svc = open();
    let db = rusqlite::Connection::open(dir.path().join("state/tessera.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "the expired token was not pruned");
    assert_eq!(
        svc.enrollments(ROOT, "").await.unwrap()[0].last_used,
        used_at
    );
}

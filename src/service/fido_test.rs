//! The service with FIDO keys, in-process, over a scripted authenticator of kind "fido" (no
//! transport, no simulator): the enrollment request the policy builds, device choice through
//! `holds`, choosing by touch among several keys, the signature-counter rule and what a clone
//! costs, and the policy in force deciding user verification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use tokio::sync::Notify;

use super::*;
use crate::authenticator::{
    Assertion, Authenticator, BoxFuture, DeviceIdentity, EnrollRequest as DeviceEnrollRequest,
    Enrollable, EnrolledCredential, EnrolledKey, Interaction, UserVerification,
};
use crate::clock::ManualClock;
use crate::store::{DeviceKind, KeyAlgorithm};
use crate::verify::challenge::Challenge;

pub(super) const ROOT: Caller = Caller::uid(0);
const AAGUID: [u8; 16] = [0xAA; 16];

/// What the scripted key was asked to enroll with.
#[derive(Debug, Clone)]
struct Asked {
    rp_id: String,
    exclude: Vec<String>,
    user_verification: UserVerification,
    pin_required: bool,
    algorithms: Vec<String>,
}

/// A scripted FIDO key.
pub(super) struct FakeKey {
    name: &'static str,
    key: p256::PublicKey,
    /// Credentials it holds (base64url ids).
    pub(super) held: Mutex<Vec<String>>,
    /// Signature counters its assertions report, in order (then 0).
    counters: Mutex<VecDeque<u32>>,
    selectable: bool,
    /// `select` waits for this (None: chosen at once).
    touch: Option<Arc<Notify>>,
    holds_fails: bool,
    log: Mutex<Vec<String>>,
    asked: Mutex<Option<Asked>>,
    /// `needs_secret` of each assertion.
    verified: Mutex<Vec<bool>>,
}

impl FakeKey {
    pub(super) fn new(name: &'static str) -> FakeKey {
        FakeKey {
            name,
            key: p256::SecretKey::random(&mut OsRng).public_key(),
            held: Mutex::default(),
            counters: Mutex::default(),
            selectable: true,
            touch: None,
            holds_fails: false,
            log: Mutex::default(),
            asked: Mutex::default(),
            verified: Mutex::default(),
        }
    }

    fn counters(self, c: &[u32]) -> FakeKey {
        *self.counters.lock().unwrap() = c.iter().copied().collect();
        self
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn note(&self, what: &str) {
        self.log.lock().unwrap().push(what.into());
    }
}

impl Authenticator for FakeKey {
    fn kind(&self) -> &'static str {
        "fido"
    }

    fn methods(&self, needs_secret: bool) -> Vec<String> {
        let mut amr = vec!["hwk".to_owned(), "user".to_owned()];
        if needs_secret {
            amr.push("pin".into());
            amr.push("mfa".into());
        }
        amr
    }

    fn identify(&self, _timeout: Duration) -> BoxFuture<'_, Result<DeviceIdentity>> {
        Box::pin(async move {
            Ok(DeviceIdentity {
                credentials: Vec::new(),
                guid: Some(AAGUID),
                name: Some(format!("FIDO key {}", self.name)),
                device_key: None,
            })
        })
    }

    fn enrollable(&self, requested: Option<&str>) -> Result<Enrollable> {
        match requested {
            None | Some("new") => Ok(Enrollable {
                credential: "new".into(),
                needs_secret: false,
            }),
            Some(other) => Err(Error::InvalidArgument(format!("not new: {other}"))),
        }
    }

    fn enroll<'a>(
        &'a self,
        request: DeviceEnrollRequest<'a>,
        _interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<EnrolledCredential>> {
        Box::pin(async move {
            *self.asked.lock().unwrap() = Some(Asked {
                rp_id: request.rp_id.into(),
                exclude: request.exclude.to_vec(),
                user_verification: request.user_verification,
                pin_required: request.pin_required,
                algorithms: request.algorithms.iter().map(|a| (*a).to_owned()).collect(),
            });
            let credential = format!("cred-{}", self.name);
            self.held.lock().unwrap().push(credential.clone());
            Ok(EnrolledCredential {
                credential,
                public_key: self.key.to_encoded_point(false).as_bytes().to_vec(),
                algorithm: "es256",
                thumbprint: crate::token::jwk_thumbprint(&self.key),
                device_guid: Some(AAGUID),
                subject: None,
                needs_secret: request.user_verification == UserVerification::Required,
                rp_id: Some(request.rp_id.into()),
                sign_count: 0,
            })
        })
    }

    fn holds<'a>(
        &'a self,
        _identity: &'a DeviceIdentity,
        enrolled: &'a [EnrolledKey<'a>],
        _uid: u32,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            self.note("holds");
            if self.holds_fails {
                return Err(Error::Device("the key does not answer".into()));
            }
            let held = self.held.lock().unwrap();
            Ok(enrolled
                .iter()
                .filter(|e| held.iter().any(|h| h == e.credential))
                .map(|e| e.credential.to_owned())
                .collect())
        })
    }

    fn selectable(&self) -> bool {
        self.selectable
    }

    fn select<'a>(&'a self, interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.note("select");
            let Some(touch) = &self.touch else {
                return Ok(());
            };
            tokio::select! {
                () = touch.notified() => Ok(()),
                () = interaction.cancel().cancelled() => {
                    self.note("select-cancelled");
                    Err(Error::Cancelled)
                }
            }
        })
    }

    fn assert<'a>(
        &'a self,
        _challenge: &'a Challenge,
        enrolled: EnrolledKey<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<Assertion>> {
        Box::pin(async move {
            self.note("assert");
            self.verified.lock().unwrap().push(enrolled.needs_secret);
            assert_eq!(enrolled.rp_id, Some("pam://test"));
            interaction.final_exchange().await?;
            let count = self.counters.lock().unwrap().pop_front().unwrap_or(0);
            Ok(Assertion {
                amr: self.methods(enrolled.needs_secret),
                sign_count: Some(count),
            })
        })
    }

    fn unblock<'a>(&'a self, _interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Err(Error::InvalidArgument("no PUK".into())) })
    }
}

pub(super) const CONFIG: &str = r#"
[fido]
rp_id = "pam://test"
user_verification = "discouraged"
algorithms = ["eddsa", "es256"]
"#;

fn open(dir: &Path, config: &str) -> Service {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    Service::open(ServiceParts {
        clock: Arc::new(clock),
        config: Config::parse(config).unwrap(),
        state_dir: dir.join("state"),
    })
    .unwrap()
}

pub(super) async fn attach(svc: &Service, location: &str, key: &Arc<FakeKey>) -> String {
    let authenticator: Arc<dyn Authenticator> = key.clone();
    svc.attach_authenticator(location, "hid", authenticator)
        .await
        .unwrap()
}

pub(super) async fn enroll(svc: &Service, id: &str) -> String {
    svc.enroll(ROOT, "", id, EnrollOptions::default())
        .await
        .unwrap()
}

pub(super) async fn login(svc: &Service) -> Result<Zeroizing<String>> {
    svc.authenticate(ROOT, "", AuthOptions::default()).await
}

/// Waits until the stored counter of `enrollment` is `count` (it is written behind the login).
async fn stored_count(svc: &Service, enrollment: &str, count: u32) {
    for _ in 0..200 {
        let now = svc.inner.store.enrollment(enrollment).unwrap().unwrap();
        if now.sign_count == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the counter of {enrollment} never became {count}");
}

#[tokio::test]
async fn a_key_enrolls_as_the_policy_says_and_its_login_token_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a").counters(&[3]));
    let id = attach(&svc, "/run/sim/a", &a).await;
    let info = svc.devices().into_iter().find(|d| d.id == id).unwrap();
    assert_eq!(
        (info.kind.as_str(), info.transport.as_str()),
        ("fido", "hid")
    );
    assert_eq!(info.name, "FIDO key a");

    let enrollment = enroll(&svc, &id).await;
    let asked = a.asked.lock().unwrap().clone().unwrap();
    assert_eq!(asked.rp_id, "pam://test");
    assert!(asked.exclude.is_empty());
    assert_eq!(asked.user_verification, UserVerification::Discouraged);
    assert!(!asked.pin_required);
    assert_eq!(asked.algorithms, ["eddsa", "es256"]);
    let stored = svc.inner.store.enrollment(&enrollment).unwrap().unwrap();
    assert_eq!(stored.kind, DeviceKind::Fido);
    assert_eq!(stored.algorithm, KeyAlgorithm::Es256);
    assert_eq!(stored.credential, "cred-a");
    assert_eq!(stored.rp_id.as_deref(), Some("pam://test"));
    assert_eq!(stored.device_identity, Some(AAGUID));
    assert!(!stored.require_pin);

    let token = login(&svc).await.unwrap();
    let claims = svc.validate(&token).await.unwrap();
    assert_eq!(claims.amr, ["hwk", "user"]);
    assert_eq!(claims.cnf.jkt, crate::token::jwk_thumbprint(&a.key));
    assert_eq!(claims.enr, enrollment);
    stored_count(&svc, &enrollment, 3).await;

    // A second key of the same account is asked to exclude the first one's credential.
    let b = Arc::new(FakeKey::new("b"));
    let id_b = attach(&svc, "/run/sim/b", &b).await;
    enroll(&svc, &id_b).await;
    assert_eq!(b.asked.lock().unwrap().clone().unwrap().exclude, ["cred-a"]);
}

#[tokio::test]
async fn a_counter_that_goes_back_is_a_clone_whose_tokens_are_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a").counters(&[5, 9, 9]));
    let id = attach(&svc, "/run/sim/a", &a).await;
    let enrollment = enroll(&svc, &id).await;
    let first = login(&svc).await.unwrap();
    stored_count(&svc, &enrollment, 5).await;
    // Global counters rise by steps.
    let second = login(&svc).await.unwrap();
    stored_count(&svc, &enrollment, 9).await;
    let mut events = svc.subscribe();
    match login(&svc).await {
        Err(Error::SignatureInvalid(msg)) => assert!(msg.contains("clone"), "{msg}"),
        other => panic!("a repeated counter: {other:?}"),
    }
    for token in [&first, &second] {
        assert!(matches!(
            svc.validate(token).await,
            Err(Error::TokenRevoked(_))
        ));
    }
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::TokenRevoked { reason, .. } = e {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, ["cloned", "cloned"]);
    assert_eq!(
        svc.inner
            .store
            .enrollment(&enrollment)
            .unwrap()
            .unwrap()
            .sign_count,
        9,
        "the clone's counter is not recorded"
    );
}

#[tokio::test]
async fn with_the_counter_check_off_a_repeated_counter_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{CONFIG}check_sign_count = false\n");
    let svc = open(dir.path(), &config);
    let a = Arc::new(FakeKey::new("a").counters(&[5, 2]));
    let id = attach(&svc, "/run/sim/a", &a).await;
    let enrollment = enroll(&svc, &id).await;
    login(&svc).await.unwrap();
    stored_count(&svc, &enrollment, 5).await;
    login(&svc).await.unwrap();
}

#[tokio::test]
async fn only_the_key_that_holds_the_credential_is_asked_to_sign() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a"));
    let other = Arc::new(FakeKey::new("other"));
    let broken = Arc::new(FakeKey {
        holds_fails: true,
        ..FakeKey::new("broken")
    });
    let id = attach(&svc, "/run/sim/a", &a).await;
    enroll(&svc, &id).await;
    attach(&svc, "/run/sim/other", &other).await;
    attach(&svc, "/run/sim/broken", &broken).await;
    login(&svc).await.unwrap();
    assert_eq!(a.log(), ["holds", "assert"]);
    assert_eq!(
        other.log(),
        ["holds"],
        "no touch asked of a key holding nothing"
    );
    assert_eq!(broken.log(), ["holds"]);
}

#[tokio::test]
async fn two_enrolled_keys_the_one_touched_is_used_and_the_other_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let touch_b = Arc::new(Notify::new());
    let a = Arc::new(FakeKey {
        touch: Some(Arc::new(Notify::new())),
        ..FakeKey::new("a")
    });
    let b = Arc::new(FakeKey {
        touch: Some(touch_b.clone()),
        ..FakeKey::new("b")
    });
    let id_a = attach(&svc, "/run/sim/a", &a).await;
    let id_b = attach(&svc, "/run/sim/b", &b).await;
    enroll(&svc, &id_a).await;
    enroll(&svc, &id_b).await;
    let mut request = svc
        .start_authentication(ROOT, "", AuthRequest::default())
        .await
        .unwrap();
    let mut expected = vec![id_a.clone(), id_b.clone()];
    expected.sort();
    match request.updates.recv().await {
        Some(Update::Progress(Progress::SelectingDevice { devices })) => {
            assert_eq!(devices, expected)
        }
        other => panic!("first update: {other:?}"),
    }
    // Both are asked; then b is touched.
    for _ in 0..200 {
        if a.log().contains(&"select".to_owned()) && b.log().contains(&"select".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    touch_b.notify_one();
    let token = request.outcome().await.unwrap();
    let claims = svc.validate(&token).await.unwrap();
    assert_eq!(claims.cnf.jkt, crate::token::jwk_thumbprint(&b.key));
    for _ in 0..200 {
        if a.log().contains(&"select-cancelled".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(a.log(), ["holds", "select", "select-cancelled"]);
    assert_eq!(b.log(), ["holds", "select", "assert"]);
}

#[tokio::test]
async fn several_keys_that_cannot_be_chosen_by_touch_are_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey {
        selectable: false,
        ..FakeKey::new("a")
    });
    let b = Arc::new(FakeKey::new("b"));
    let id_a = attach(&svc, "/run/sim/a", &a).await;
    let id_b = attach(&svc, "/run/sim/b", &b).await;
    enroll(&svc, &id_a).await;
    enroll(&svc, &id_b).await;
    assert!(matches!(login(&svc).await, Err(Error::DeviceAmbiguous(d)) if d.len() == 2));
}

#[tokio::test]
async fn a_policy_made_stricter_after_enrollment_verifies_the_user_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    enroll(&svc, &id).await;
    let token = login(&svc).await.unwrap();
    assert_eq!(svc.validate(&token).await.unwrap().amr, ["hwk", "user"]);
    let stricter = format!("{CONFIG}[users.root.fido]\nuser_verification = \"required\"\n");
    svc.reload(Config::parse(&stricter).unwrap());
    // Non-interactive: the PIN that verification needs is given.
    let token = svc
        .authenticate(
            ROOT,
            "",
            AuthOptions {
                pin: Some(crate::Secret::new(Zeroizing::new("123456".into()))),
                device: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        svc.validate(&token).await.unwrap().amr,
        ["hwk", "user", "pin", "mfa"]
    );
    assert_eq!(*a.verified.lock().unwrap(), [false, true]);
}

#[tokio::test]
async fn pulling_the_key_out_revokes_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    enroll(&svc, &id).await;
    let token = login(&svc).await.unwrap();
    svc.device_removed("/run/sim/a").await.unwrap();
    assert!(svc.devices().is_empty());
    assert!(matches!(
        svc.validate(&token).await,
        Err(Error::TokenRevoked(r)) if r.contains("device-removed")
    ));
}

/// Login latency with a key that answers at once (the commit dominates): `cargo test -p tessera
/// --lib service::fido_test::login_latency -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn login_latency() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(
        dir.path(),
        &format!("{CONFIG}[token]\nmax_live_per_user = 1000\n"),
    );
    let a = Arc::new(FakeKey::new("a").counters(&(1..=400).collect::<Vec<u32>>()));
    let id = attach(&svc, "/run/sim/a", &a).await;
    enroll(&svc, &id).await;
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = std::time::Instant::now();
        login(&svc).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "login p50 {:?} p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}

#[tokio::test]
async fn a_key_is_owned_by_the_credentials_it_holds_not_by_its_models_aaguid() {
    const NOBODY: Caller = Caller::uid(65534);
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a"));
    let b = Arc::new(FakeKey::new("b"));
    let id_a = attach(&svc, "/run/sim/a", &a).await;
    let id_b = attach(&svc, "/run/sim/b", &b).await;
    enroll(&svc, &id_a).await;
    // Same AAGUID, another key: not root's.
    let r = svc
        .start_enrollment(NOBODY, "", &id_b, EnrollRequest::default())
        .await
        .unwrap();
    r.outcome().await.unwrap();
    // Root's key takes no PIN from anyone else.
    let r = svc
        .start_enrollment(NOBODY, "", &id_a, EnrollRequest::default())
        .await
        .unwrap();
    assert!(matches!(r.outcome().await, Err(Error::AccessDenied(_))));
}

#[tokio::test]
async fn a_credential_made_for_another_relying_party_id_serves_no_login() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    enroll(&svc, &id).await;
    let other = CONFIG.replace("pam://test", "pam://elsewhere");
    svc.reload(Config::parse(&other).unwrap());
    assert!(matches!(login(&svc).await, Err(Error::NotEnrolled(_))));
    assert!(
        a.log().is_empty(),
        "the key was not even asked: {:?}",
        a.log()
    );
}

#[tokio::test]
async fn a_key_that_cannot_say_what_it_holds_fails_the_request_when_no_other_serves() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path(), CONFIG);
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    enroll(&svc, &id).await;
    svc.device_removed("/run/sim/a").await.unwrap();
    let broken = Arc::new(FakeKey {
        holds_fails: true,
        ..FakeKey::new("a")
    });
    attach(&svc, "/run/sim/a", &broken).await;
    // A request, not the call that starts it, fails: the device was asked.
    let r = svc
        .start_authentication(ROOT, "", AuthRequest::default())
        .await
        .unwrap();
    assert!(matches!(r.outcome().await, Err(Error::Device(_))));
}

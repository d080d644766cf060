//! The FIDO authenticator against the soft key ([`super::authenticator_softkey`]) on a real
//! worker thread: identification, enrollment, assertions and their checks, select, cancel, the
//! card path; and the fixtures the sibling tests share (`_pin_test`: user verification and the
//! PIN loop, `_holds_test`: the silent pre-flight, `_u2f_test`: CTAP1 keys).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::authenticator::FidoAuthenticator;
use super::authenticator_softkey::{KeyState, SoftKey};
use super::link::CtapLink;
use crate::authenticator::{
    Authenticator, BoxFuture, EnrollRequest, EnrolledCredential, EnrolledKey, Interaction,
    Progress, SecretAnswer, SecretKind, SecretPrompt, UserVerification,
};
use crate::cancel::CancelToken;
use crate::transport::worker::HidWorker;
use crate::verify::challenge::Challenge;
use crate::{Error, Result, Secret};

pub(super) const RP: &str = "pam://tessera";

/// A request as the authenticator sees it, with scripted PIN answers and everything recorded.
#[derive(Default)]
pub(super) struct Ix {
    pub(super) cancel: CancelToken,
    pub(super) keep_last: bool,
    pub(super) up_front: bool,
    /// PINs to answer, with "spend the last try".
    pub(super) answers: Mutex<VecDeque<(&'static str, bool)>>,
    pub(super) prompts: Mutex<Vec<SecretPrompt>>,
    pub(super) progress: Mutex<Vec<Progress>>,
    pub(super) used: Mutex<Vec<String>>,
    pub(super) finals: AtomicUsize,
    /// Cancel the request once the key asks for a touch.
    pub(super) cancel_on_touch: bool,
}

impl Ix {
    pub(super) fn with_pins(pins: &[&'static str]) -> Ix {
        Ix {
            answers: Mutex::new(pins.iter().map(|p| (*p, false)).collect()),
            ..Ix::default()
        }
    }

    pub(super) fn states(&self) -> Vec<&'static str> {
        self.progress
            .lock()
            .unwrap()
            .iter()
            .map(Progress::state)
            .collect()
    }

    pub(super) fn prompts(&self) -> Vec<SecretPrompt> {
        self.prompts.lock().unwrap().clone()
    }
}

impl Interaction for Ix {
    fn uid(&self) -> u32 {
        1000
    }

    fn cancel(&self) -> &CancelToken {
        &self.cancel
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn keep_last_try(&self) -> bool {
        self.keep_last
    }

    fn given_up_front(&self, _kind: SecretKind) -> bool {
        self.up_front
    }

    fn progress(&self, progress: Progress) {
        if self.cancel_on_touch && matches!(progress, Progress::TouchNeeded { .. }) {
            self.cancel.cancel();
        }
        self.progress.lock().unwrap().push(progress);
    }

    fn secret(
        &self,
        kind: SecretKind,
        prompt: SecretPrompt,
        because: Option<Error>,
    ) -> BoxFuture<'_, Result<SecretAnswer>> {
        assert_eq!(kind, SecretKind::PinCode);
        self.prompts.lock().unwrap().push(prompt);
        let next = self.answers.lock().unwrap().pop_front();
        Box::pin(async move {
            match next {
                Some((pin, spend_last_try)) => Ok(SecretAnswer {
                    secret: Secret::new(Zeroizing::new(pin.into())),
                    spend_last_try,
                    accepted: Arc::new(AtomicBool::new(false)),
                }),
                // As a non-interactive request: the error the previous answer got.
                None => Err(because.unwrap_or(Error::PinRequired)),
            }
        })
    }

    fn secret_used<'a>(
        &'a self,
        _kind: SecretKind,
        outcome: std::result::Result<(), &'a Error>,
    ) -> BoxFuture<'a, ()> {
        let name = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        self.used.lock().unwrap().push(name);
        Box::pin(async {})
    }

    fn final_exchange(&self) -> BoxFuture<'_, Result<()>> {
        self.finals.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

pub(super) fn key(state: KeyState) -> (SoftKey, FidoAuthenticator) {
    let soft = SoftKey::new(state);
    let link: Box<dyn CtapLink> = Box::new(soft.clone());
    let worker = HidWorker::spawn("soft", link).unwrap();
    (soft, FidoAuthenticator::over_hid(worker, "hid-1".into()))
}

/// The same soft key, plugged in again: a new authenticator, nothing cached.
pub(super) fn reinsert(soft: &SoftKey) -> FidoAuthenticator {
    let link: Box<dyn CtapLink> = Box::new(soft.clone());
    FidoAuthenticator::over_hid(HidWorker::spawn("soft", link).unwrap(), "hid-2".into())
}

pub(super) fn request<'a>(uv: UserVerification, algorithms: &'a [&'a str]) -> EnrollRequest<'a> {
    EnrollRequest {
        credential: "new",
        user: "alice",
        uid: 1000,
        rp_id: RP,
        exclude: &[],
        user_verification: uv,
        pin_required: false,
        algorithms,
    }
}

pub(super) fn enrolled(c: &EnrolledCredential) -> EnrolledKey<'_> {
    EnrolledKey {
        credential: &c.credential,
        public_key: &c.public_key,
        algorithm: c.algorithm,
        needs_secret: c.needs_secret,
        thumbprint: &c.thumbprint,
        rp_id: c.rp_id.as_deref(),
        sign_count: c.sign_count,
    }
}

pub(super) async fn enroll_touch_only(fido: &FidoAuthenticator) -> EnrolledCredential {
    fido.identify(Duration::from_secs(5)).await.unwrap();
    fido.enroll(
        request(UserVerification::Discouraged, &["es256"]),
        &Ix::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn identify_reads_get_info_and_names_the_key() {
    let (soft, fido) = key(KeyState::default());
    let id = fido.identify(Duration::from_secs(5)).await.unwrap();
    assert!(id.credentials.is_empty());
    assert_eq!(id.guid, Some([0xA7; 16]));
    assert_eq!(
        id.name.as_deref(),
        Some("FIDO key (FIDO_2_0, FIDO_2_1, U2F_V2)")
    );
    assert!(id.device_key.is_none());
    assert!(fido.selectable());
    assert_eq!(fido.kind(), "fido");
    assert_eq!(fido.methods(false), ["hwk", "user"]);
    assert_eq!(fido.methods(true), ["hwk", "user", "pin", "mfa"]);
    assert_eq!(soft.state().log, ["getInfo"]);

    // An all-zero AAGUID is no identifier; a 2.0 key cannot be chosen by touch.
    let (_, fido) = key(KeyState {
        aaguid: [0; 16],
        versions: vec!["FIDO_2_0"],
        ..KeyState::default()
    });
    assert_eq!(
        fido.identify(Duration::from_secs(5)).await.unwrap().guid,
        None
    );
    assert!(!fido.selectable());
}

#[tokio::test]
async fn enrollable_is_new_only_and_unblock_is_refused() {
    let (_, fido) = key(KeyState::default());
    assert_eq!(fido.enrollable(None).unwrap().credential, "new");
    assert_eq!(fido.enrollable(Some("new")).unwrap().credential, "new");
    assert!(matches!(
        fido.enrollable(Some("9a")),
        Err(Error::InvalidArgument(_))
    ));
    match fido.unblock(&Ix::default()).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("reset the key"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn touch_only_enrollment_and_assertion() {
    let (soft, fido) = key(KeyState::default());
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let ix = Ix::default();
    let c = fido
        .enroll(request(UserVerification::Discouraged, &["es256"]), &ix)
        .await
        .unwrap();
    assert_eq!(c.algorithm, "es256");
    assert!(!c.needs_secret);
    assert_eq!(c.rp_id.as_deref(), Some(RP));
    assert_eq!(c.device_guid, Some([0xA7; 16]));
    assert_eq!(c.public_key.len(), 65);
    assert_eq!(c.sign_count, 42);
    assert_eq!(ix.finals.load(Ordering::SeqCst), 1);
    assert_eq!(ix.states(), ["working", "touch-needed"]);
    assert!(
        ix.prompts().is_empty(),
        "no PIN for a touch-only enrollment"
    );
    let id = super::authenticator_enroll::credential_id(&c.credential).unwrap();
    assert_eq!(soft.state().credentials[0].id, id);

    let ix = Ix::default();
    let challenge = Challenge::new().unwrap();
    let a = fido.assert(&challenge, enrolled(&c), &ix).await.unwrap();
    assert_eq!(a.amr, ["hwk", "user"]);
    assert_eq!(a.sign_count, Some(43));
    assert_eq!(ix.finals.load(Ordering::SeqCst), 1);
    assert_eq!(ix.states(), ["working", "touch-needed"]);
    assert_eq!(
        soft.state().log,
        ["getInfo", "makeCredential", "getAssertion"]
    );
}

#[tokio::test]
async fn the_policys_algorithm_order_is_asked_and_eddsa_verifies() {
    let (_, fido) = key(KeyState::default());
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let c = fido
        .enroll(
            request(UserVerification::Discouraged, &["eddsa", "es256"]),
            &Ix::default(),
        )
        .await
        .unwrap();
    assert_eq!(c.algorithm, "eddsa");
    assert_eq!(c.public_key.len(), 32);
    let a = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &Ix::default())
        .await
        .unwrap();
    assert_eq!(a.sign_count, Some(43));

    // A key without EdDSA gets ES256 when the policy also accepts it, an error otherwise.
    let (_, fido) = key(KeyState {
        algorithms: vec![-7],
        ..KeyState::default()
    });
    let c = fido
        .enroll(
            request(UserVerification::Discouraged, &["eddsa", "es256"]),
            &Ix::default(),
        )
        .await
        .unwrap();
    assert_eq!(c.algorithm, "es256");
    let r = fido
        .enroll(
            request(UserVerification::Discouraged, &["eddsa"]),
            &Ix::default(),
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

/// What an assertion by a misbehaving key ends in.
async fn assertion_with(
    fault: impl FnOnce(&mut KeyState),
) -> Result<crate::authenticator::Assertion> {
    let (soft, fido) = key(KeyState::default());
    let c = enroll_touch_only(&fido).await;
    fault(&mut soft.state());
    fido.assert(&Challenge::new().unwrap(), enrolled(&c), &Ix::default())
        .await
}

#[tokio::test]
async fn assertions_are_checked_against_the_enrollment() {
    for (what, fault) in [
        (
            "rp",
            Box::new(|s: &mut KeyState| s.wrong_rp_hash = true) as Box<dyn FnOnce(&mut KeyState)>,
        ),
        ("up", Box::new(|s: &mut KeyState| s.no_up = true)),
        (
            "signature",
            Box::new(|s: &mut KeyState| s.bad_signature = true),
        ),
        (
            "credential",
            Box::new(|s: &mut KeyState| s.other_credential = true),
        ),
    ] {
        let r = assertion_with(fault).await;
        assert!(
            matches!(r, Err(Error::SignatureInvalid(_))),
            "{what}: {r:?}"
        );
    }
    // A key without the credential at all.
    let r = assertion_with(|s| s.credentials.clear()).await;
    assert!(matches!(r, Err(Error::NotEnrolled(_))), "{r:?}");
}

#[tokio::test]
async fn select_waits_for_the_touch() {
    let (soft, fido) = key(KeyState::default());
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let ix = Ix::default();
    fido.select(&ix).await.unwrap();
    assert_eq!(ix.states(), ["touch-needed"]);
    assert_eq!(soft.state().log, ["getInfo", "selection"]);
}

#[tokio::test]
async fn a_cancel_while_the_key_waits_for_a_touch_ends_at_once() {
    let (soft, fido) = key(KeyState::default());
    let c = enroll_touch_only(&fido).await;
    soft.state().hang_on_touch = true;
    let ix = Ix {
        cancel_on_touch: true,
        ..Ix::default()
    };
    let at = Instant::now();
    let r = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await;
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(
        at.elapsed() < Duration::from_millis(1000),
        "the request waited for the key: {:?}",
        at.elapsed()
    );
}

#[tokio::test]
async fn over_a_card_the_fido_applet_is_selected_in_each_operation() {
    use crate::transport::worker::{CardConnection, DeviceWorker, DirectConnection};
    let soft = SoftKey::new(KeyState::default());
    let card = super::authenticator_softkey::SoftCard::new(soft.clone());
    let conn: Box<dyn CardConnection> = Box::new(DirectConnection(card));
    let worker = DeviceWorker::spawn("nfc", conn).unwrap();
    let fido = FidoAuthenticator::over_card(worker, "pcsc-1".into());
    let id = fido.identify(Duration::from_secs(5)).await.unwrap();
    assert_eq!(id.guid, Some([0xA7; 16]));
    let ix = Ix::with_pins(&["1234"]);
    let c = fido
        .enroll(request(UserVerification::Preferred, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(c.needs_secret);
    let a = fido
        .assert(
            &Challenge::new().unwrap(),
            enrolled(&c),
            &Ix::with_pins(&["1234"]),
        )
        .await
        .unwrap();
    assert_eq!(a.amr, ["hwk", "user", "pin", "mfa"]);
    let log = soft.state().log.clone();
    assert_eq!(log[..2], ["SELECT", "getInfo"]);
    assert_eq!(
        log.iter().filter(|l| *l == "SELECT").count(),
        log.iter().filter(|l| *l == "getInfo").count() + 6,
        "one SELECT per operation: {log:?}"
    );
}

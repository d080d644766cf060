//! The FIDO authenticator against the soft key ([`super::authenticator_softkey`]) on a real
//! worker thread: enrollment, the silent pre-flight, assertions and their checks, the PIN loop
//! and its guard, U2F polling, cancel.

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

const RP: &str = "pam://tessera";

/// A request as the authenticator sees it, with scripted PIN answers and everything recorded.
#[derive(Default)]
struct Ix {
    cancel: CancelToken,
    keep_last: bool,
    up_front: bool,
    /// PINs to answer, with "spend the last try".
    answers: Mutex<VecDeque<(&'static str, bool)>>,
    prompts: Mutex<Vec<SecretPrompt>>,
    progress: Mutex<Vec<Progress>>,
    used: Mutex<Vec<String>>,
    finals: AtomicUsize,
    /// Cancel the request once the key asks for a touch.
    cancel_on_touch: bool,
}

impl Ix {
    fn with_pins(pins: &[&'static str]) -> Ix {
        Ix {
            answers: Mutex::new(pins.iter().map(|p| (*p, false)).collect()),
            ..Ix::default()
        }
    }

    fn states(&self) -> Vec<&'static str> {
        self.progress
            .lock()
            .unwrap()
            .iter()
            .map(Progress::state)
            .collect()
    }

    fn prompts(&self) -> Vec<SecretPrompt> {
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

fn key(state: KeyState) -> (SoftKey, FidoAuthenticator) {
    let soft = SoftKey::new(state);
    let link: Box<dyn CtapLink> = Box::new(soft.clone());
    let worker = HidWorker::spawn("soft", link).unwrap();
    (soft, FidoAuthenticator::over_hid(worker, "hid-1".into()))
}

/// The same soft key, plugged in again: a new authenticator, nothing cached.
fn reinsert(soft: &SoftKey) -> FidoAuthenticator {
    let link: Box<dyn CtapLink> = Box::new(soft.clone());
    FidoAuthenticator::over_hid(HidWorker::spawn("soft", link).unwrap(), "hid-2".into())
}

fn request<'a>(uv: UserVerification, algorithms: &'a [&'a str]) -> EnrollRequest<'a> {
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

fn enrolled(c: &EnrolledCredential) -> EnrolledKey<'_> {
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

async fn enroll_touch_only(fido: &FidoAuthenticator) -> EnrolledCredential {
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

#[tokio::test]
async fn pin_enrollment_and_assertion_verify_the_user() {
    let (soft, fido) = key(KeyState::default());
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let ix = Ix::with_pins(&["1234"]);
    let c = fido
        .enroll(request(UserVerification::Preferred, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(c.needs_secret);
    let prompts = ix.prompts();
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].retries, Some(8));
    assert_eq!(prompts[0].kind, "fido");
    assert_eq!((prompts[0].min_length, prompts[0].max_length), (4, 63));
    assert_eq!(*ix.used.lock().unwrap(), ["ok"]);
    assert_eq!(
        soft.state().log,
        [
            "getInfo",
            "clientPin 0x01",
            "clientPin 0x01",
            "clientPin 0x02",
            "clientPin 0x09",
            "makeCredential"
        ]
    );

    let ix = Ix::with_pins(&["1234"]);
    let a = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await
        .unwrap();
    assert_eq!(a.amr, ["hwk", "user", "pin", "mfa"]);
    // (The service shows "pin-needed" when it asks; the authenticator reports its own states.)
    assert_eq!(ix.states(), ["working", "working", "touch-needed"]);
}

#[tokio::test]
async fn user_verification_follows_the_policy_and_the_key() {
    // Required, and the key has no PIN: a clear error before any touch.
    let (soft, fido) = key(KeyState {
        pin: None,
        ..KeyState::default()
    });
    let r = fido
        .enroll(
            request(UserVerification::Required, &["es256"]),
            &Ix::default(),
        )
        .await;
    match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("set a PIN on the key first"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(soft.state().log, ["getInfo"]);
    // Preferred without a PIN: touch only.
    let c = fido
        .enroll(
            request(UserVerification::Preferred, &["es256"]),
            &Ix::default(),
        )
        .await
        .unwrap();
    assert!(!c.needs_secret);
    // pin_required with a PIN set: the PIN even where the policy discourages verification.
    let (_, fido) = key(KeyState::default());
    let ix = Ix::with_pins(&["1234"]);
    let mut req = request(UserVerification::Discouraged, &["es256"]);
    req.pin_required = true;
    let c = fido.enroll(req, &ix).await.unwrap();
    assert!(c.needs_secret);
    // Built-in UV (a fingerprint): no PIN asked, "uv-needed" while the key waits, "fpt".
    let (_, fido) = key(KeyState {
        uv: true,
        fingerprint: true,
        ..KeyState::default()
    });
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let ix = Ix::default();
    let c = fido
        .enroll(request(UserVerification::Required, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(c.needs_secret);
    assert!(ix.prompts().is_empty());
    assert_eq!(fido.methods(true), ["hwk", "user", "fpt", "mfa"]);
    let a = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &Ix::default())
        .await
        .unwrap();
    assert_eq!(a.amr, ["hwk", "user", "fpt", "mfa"]);
}

#[tokio::test]
async fn wrong_pins_are_asked_again_down_to_the_kept_last_try() {
    let (soft, fido) = key(KeyState {
        retries: 3,
        ..KeyState::default()
    });
    let c = enroll_touch_only(&fido).await;
    let c = EnrolledCredential {
        needs_secret: true,
        ..c
    };
    let ix = Ix {
        keep_last: true,
        ..Ix::with_pins(&["0000", "1111", "1234"])
    };
    let r = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await;
    assert!(
        matches!(r, Err(Error::PinWouldBlock { retries: 1 })),
        "{r:?}"
    );
    let prompts = ix.prompts();
    let seen: Vec<_> = prompts
        .iter()
        .map(|p| (p.retries, p.last_error.clone(), p.last_try))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(3), None, false),
            (Some(2), Some("PinInvalid".into()), false),
            (Some(1), Some("PinInvalid".into()), true),
            (Some(1), None, true),
        ]
    );
    // The last try was kept: the right PIN, not confirmed as a last try, was never sent.
    assert_eq!(soft.state().retries, 1);
    assert_eq!(ix.finals.load(Ordering::SeqCst), 0);
    let used = ix.used.lock().unwrap().clone();
    assert_eq!(used.len(), 3);
    assert!(used[0].contains("PinInvalid { retries: 2 }"), "{used:?}");
    assert!(used[2].contains("PinWouldBlock"), "{used:?}");

    // Confirmed, the last try is spent, and the right PIN resets the counter.
    let ix = Ix {
        keep_last: true,
        answers: Mutex::new([("1234", true)].into()),
        ..Ix::default()
    };
    let a = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await
        .unwrap();
    assert!(a.amr.contains(&"pin".to_owned()));
    assert_eq!(soft.state().retries, 8);
}

#[tokio::test]
async fn a_blocked_pin_and_three_wrong_in_a_row_are_clear_errors() {
    let (soft, fido) = key(KeyState::default());
    let c = enroll_touch_only(&fido).await;
    let c = EnrolledCredential {
        needs_secret: true,
        ..c
    };
    let ix = Ix::with_pins(&["0000", "0001", "0002", "1234"]);
    let r = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await;
    match r {
        Err(Error::Device(m)) => assert!(m.contains("unplug the key and plug it in again"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ix.prompts().len(), 3, "no prompt after PIN_AUTH_BLOCKED");

    soft.state().retries = 0;
    soft.state().wrong_in_a_row = 0;
    let r = fido
        .assert(
            &Challenge::new().unwrap(),
            enrolled(&c),
            &Ix::with_pins(&["1234"]),
        )
        .await;
    assert!(matches!(r, Err(Error::PinBlocked)), "{r:?}");
}

#[tokio::test]
async fn a_malformed_pin_is_refused_before_the_key_sees_it() {
    let (soft, fido) = key(KeyState::default());
    let c = enroll_touch_only(&fido).await;
    let c = EnrolledCredential {
        needs_secret: true,
        ..c
    };
    let r = fido
        .assert(
            &Challenge::new().unwrap(),
            enrolled(&c),
            &Ix::with_pins(&["123"]),
        )
        .await;
    assert!(matches!(r, Err(Error::PinFormat(_))), "{r:?}");
    assert_eq!(soft.state().retries, 8);
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
async fn an_assertion_without_uv_after_a_pin_is_refused() {
    let (soft, fido) = key(KeyState::default());
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let c = fido
        .enroll(
            request(UserVerification::Preferred, &["es256"]),
            &Ix::with_pins(&["1234"]),
        )
        .await
        .unwrap();
    soft.state().no_uv = true;
    let r = fido
        .assert(
            &Challenge::new().unwrap(),
            enrolled(&c),
            &Ix::with_pins(&["1234"]),
        )
        .await;
    assert!(matches!(r, Err(Error::SignatureInvalid(_))), "{r:?}");
}

#[tokio::test]
async fn holds_asks_silently_in_chunks_and_caches_per_insertion() {
    let (soft, fido) = key(KeyState {
        max_list: Some(2),
        ..KeyState::default()
    });
    let a = enroll_touch_only(&fido).await;
    let b = enroll_touch_only(&fido).await;
    // Enrolled on another key: a credential this one does not hold.
    let (_, other) = key(KeyState::default());
    let x = enroll_touch_only(&other).await;
    let y = enroll_touch_only(&other).await;
    let keys = [enrolled(&x), enrolled(&a), enrolled(&y), enrolled(&b)];
    // The insertion that enrolled a and b knows it holds them; x and y are asked once.
    let identity = fido.identify(Duration::from_secs(5)).await.unwrap();
    soft.state().log.clear();
    let held = fido
        .holds(&identity, &keys, 1000, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(held, [a.credential.clone(), b.credential.clone()]);
    assert_eq!(soft.state().log, ["getAssertion"]);

    // A new insertion asks for all of them.
    let fido = reinsert(&soft);
    let identity = fido.identify(Duration::from_secs(5)).await.unwrap();
    soft.state().log.clear();
    let before = soft.state().counter;
    let held = fido
        .holds(&identity, &keys, 1000, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(held, [a.credential.clone(), b.credential.clone()]);
    // Chunks of two: [x, a] → a, then [x] → none; [y, b] → b, then [y] → none.
    assert_eq!(soft.state().log.len(), 4);
    assert!(soft.state().log.iter().all(|l| l == "getAssertion"));
    assert_eq!(soft.state().counter, before + 2, "silent assertions only");

    let again = fido
        .holds(&identity, &keys, 1000, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again, held);
    assert_eq!(soft.state().log.len(), 4, "answered from the cache");
}

#[tokio::test]
async fn a_long_exclude_list_is_checked_first_and_a_held_credential_refused() {
    let (_, fido) = key(KeyState {
        max_list: Some(1),
        ..KeyState::default()
    });
    let a = enroll_touch_only(&fido).await;
    let (_, other) = key(KeyState::default());
    let x = enroll_touch_only(&other).await;
    let exclude = [x.credential.clone(), a.credential.clone()];
    let mut req = request(UserVerification::Discouraged, &["es256"]);
    req.exclude = &exclude;
    let r = fido.enroll(req, &Ix::default()).await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    // Within the limit, the key itself refuses (CTAP2_ERR_CREDENTIAL_EXCLUDED).
    let one = [a.credential.clone()];
    req.exclude = &one;
    let r = fido.enroll(req, &Ix::default()).await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
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
async fn u2f_keys_register_and_authenticate_polling_for_the_touch() {
    let (soft, fido) = key(KeyState {
        u2f_only: true,
        touch_after: 3,
        ..KeyState::default()
    });
    let id = fido.identify(Duration::from_secs(5)).await.unwrap();
    assert_eq!(id.name.as_deref(), Some("FIDO key (U2F_V2)"));
    assert_eq!(id.guid, None);
    assert!(!fido.selectable());
    let ix = Ix::default();
    let c = fido
        .enroll(request(UserVerification::Preferred, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(!c.needs_secret);
    assert_eq!(c.algorithm, "es256");
    assert_eq!(ix.states(), ["working", "touch-needed"]);
    assert_eq!(
        soft.state().log,
        [
            "msg 03/00",
            "msg 01/00",
            "msg 01/00",
            "msg 01/00",
            "msg 01/00"
        ]
    );

    let identity = fido.identify(Duration::from_secs(5)).await.unwrap();
    let held = fido
        .holds(&identity, &[enrolled(&c)], 1000, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(held, std::slice::from_ref(&c.credential));

    soft.state().touch_after = 2;
    soft.state().log.clear();
    let ix = Ix::default();
    let a = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await
        .unwrap();
    assert_eq!(a.amr, ["hwk", "user"]);
    assert_eq!(a.sign_count, Some(42));
    assert_eq!(ix.states(), ["working", "touch-needed"]);
    assert_eq!(soft.state().log, ["msg 02/03", "msg 02/03", "msg 02/03"]);

    soft.state().bad_signature = true;
    let r = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &Ix::default())
        .await;
    assert!(matches!(r, Err(Error::SignatureInvalid(_))), "{r:?}");

    // U2F cannot verify the user.
    let r = fido
        .enroll(
            request(UserVerification::Required, &["es256"]),
            &Ix::default(),
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

#[tokio::test]
async fn a_ctap20_key_with_protocol_one_gets_a_pin_token() {
    let (soft, fido) = key(KeyState {
        versions: vec!["FIDO_2_0", "U2F_V2"],
        pin_protocols: vec![1],
        ..KeyState::default()
    });
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let ix = Ix {
        up_front: true,
        ..Ix::with_pins(&["1234"])
    };
    let c = fido
        .enroll(request(UserVerification::Required, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(c.needs_secret);
    // Given up front: no retries read before the prompt, the guard's read only; getPinToken.
    assert_eq!(
        soft.state().log,
        [
            "getInfo",
            "clientPin 0x01",
            "clientPin 0x02",
            "clientPin 0x05",
            "makeCredential"
        ]
    );
    assert_eq!(soft.state().token_protocol, 1);
    let a = fido
        .assert(
            &Challenge::new().unwrap(),
            enrolled(&c),
            &Ix::with_pins(&["1234"]),
        )
        .await
        .unwrap();
    assert_eq!(a.amr, ["hwk", "user", "pin", "mfa"]);
}

#[tokio::test]
async fn a_key_refusing_silent_assertions_is_asked_over_u2f() {
    let (soft, fido) = key(KeyState {
        versions: vec!["FIDO_2_0", "U2F_V2"],
        refuse_silent: true,
        ..KeyState::default()
    });
    let c = enroll_touch_only(&fido).await;
    let (_, other) = key(KeyState::default());
    let x = enroll_touch_only(&other).await;
    let fido = reinsert(&soft);
    let identity = fido.identify(Duration::from_secs(5)).await.unwrap();
    soft.state().log.clear();
    let held = fido
        .holds(
            &identity,
            &[enrolled(&x), enrolled(&c)],
            1000,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(held, std::slice::from_ref(&c.credential));
    assert_eq!(soft.state().log, ["getAssertion", "msg 02/07", "msg 02/07"]);
}

#[tokio::test]
async fn allow_lists_fit_max_msg_size() {
    let (soft, fido) = key(KeyState::default());
    let mut made = Vec::new();
    for _ in 0..20 {
        made.push(enroll_touch_only(&fido).await);
    }
    // maxMsgSize 1200, maxCredentialCountInList 20, ids of 48 bytes: all 20 in one list would
    // make a request of about 1.5 kB, which the soft key refuses (REQUEST_TOO_LARGE).
    soft.state().max_list = Some(20);
    let fresh = reinsert(&soft);
    let id = fresh.identify(Duration::from_secs(5)).await.unwrap();
    let keys: Vec<_> = made.iter().map(enrolled).collect();
    soft.state().log.clear();
    let held = fresh
        .holds(&id, &keys, 1000, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(held.len(), 20);
    // Each answer names one credential of its list: 20 answers.
    assert_eq!(soft.state().log.len(), 20);
    assert!(soft.state().largest_request <= 1200);
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

#[tokio::test]
async fn a_key_that_reads_faces_says_face() {
    let (_, fido) = key(KeyState {
        uv: true,
        pin: None,
        ..KeyState::default()
    });
    fido.identify(Duration::from_secs(5)).await.unwrap();
    let ix = Ix::default();
    let c = fido
        .enroll(request(UserVerification::Required, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(c.needs_secret);
    assert_eq!(ix.states(), ["uv-needed", "working", "touch-needed"]);
    assert_eq!(fido.methods(true), ["hwk", "user", "face", "mfa"]);
}

//! The FIDO authenticator's user verification against the soft key: PIN enrollment and
//! assertion, the policy's choice of verification, the PIN loop down to the kept last try, blocked
//! PINs, PIN protocol one on a CTAP 2.0 key, built-in UV.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::authenticator_softkey::KeyState;
use super::authenticator_test::*;
use crate::authenticator::{Authenticator, EnrolledCredential, UserVerification};
use crate::verify::challenge::Challenge;
use crate::Error;

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

#[tokio::test]
async fn a_pin_shorter_than_the_keys_minimum_is_not_tried() {
    let (soft, fido) = key(KeyState {
        min_pin_length: Some(6),
        ..KeyState::default()
    });
    let c = enroll_touch_only(&fido).await;
    let c = EnrolledCredential {
        needs_secret: true,
        ..c
    };
    let ix = Ix::with_pins(&["1234"]);
    let r = fido
        .assert(&Challenge::new().unwrap(), enrolled(&c), &ix)
        .await;
    assert!(matches!(r, Err(Error::PinFormat(_))), "{r:?}");
    assert_eq!(ix.prompts()[0].min_length, 6);
    assert_eq!(soft.state().retries, 8);
}

#[tokio::test]
async fn a_key_that_wants_verification_for_every_credential_gets_the_pin_once_at_enrollment() {
    // No makeCredUvNotRqd: the key answers PUAT_REQUIRED to an unverified makeCredential
    // (CTAP 2.1 §6.1.2 step 6), so even a touch-only enrollment sends the PIN once; its logins
    // still need only a touch.
    let (soft, fido) = key(KeyState {
        make_cred_uv_not_rqd: false,
        ..KeyState::default()
    });
    let ix = Ix::with_pins(&["1234"]);
    let c = fido
        .enroll(request(UserVerification::Discouraged, &["es256"]), &ix)
        .await
        .unwrap();
    assert!(!c.needs_secret);
    assert!(
        soft.state().log.iter().any(|l| l.starts_with("clientPin")),
        "no PIN token was asked"
    );
}

//! The silent pre-flight against the soft key: allowList chunks by maxCredentialCountInList and
//! maxMsgSize, the per-insertion cache, the excludeList, keys that refuse or ignore up = false.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use super::authenticator_softkey::KeyState;
use super::authenticator_test::*;
use crate::authenticator::{Authenticator, UserVerification};
use crate::Error;

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
async fn a_key_that_waits_for_a_touch_despite_up_false_is_not_waited_for() {
    let (soft, fido) = key(KeyState {
        ignore_silent: true,
        ..KeyState::default()
    });
    let c = enroll_touch_only(&fido).await;
    let fido = reinsert(&soft);
    let identity = fido.identify(Duration::from_secs(5)).await.unwrap();
    soft.state().log.clear();
    let at = Instant::now();
    let held = fido
        .holds(&identity, &[enrolled(&c)], 1000, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        at.elapsed() < Duration::from_millis(500),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(held, std::slice::from_ref(&c.credential));
    assert_eq!(soft.state().log, ["getAssertion", "msg 02/07"]);
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

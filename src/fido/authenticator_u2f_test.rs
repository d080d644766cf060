//! CTAP1/U2F keys against the soft key: REGISTER and AUTHENTICATE polled on 6985, check-only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::authenticator_softkey::KeyState;
use super::authenticator_test::*;
use crate::authenticator::{Authenticator, UserVerification};
use crate::verify::challenge::Challenge;
use crate::Error;

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

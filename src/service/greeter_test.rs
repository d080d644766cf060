//! Greeter login in-process (`AuthRequest::any_user`), over the scripted FIDO key of `fido_test`:
//! the user is whoever the present key is enrolled for, one account only, administrators only,
//! waiting for the key when none is there; and the requested audience.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::fido_test::{attach, FakeKey, CONFIG, ROOT};
use super::*;
use crate::clock::ManualClock;

fn open(dir: &std::path::Path) -> Service {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    Service::open(ServiceParts {
        clock: Arc::new(clock),
        config: Config::parse(CONFIG).unwrap(),
        state_dir: dir.join("state"),
    })
    .unwrap()
}

fn greeter() -> AuthRequest {
    AuthRequest {
        any_user: true,
        ..AuthRequest::default()
    }
}

/// Key "a" enrolled for root, key "b" for nobody; both attached.
async fn two_users(svc: &Service) -> (Arc<FakeKey>, Arc<FakeKey>) {
    let a = Arc::new(FakeKey::new("a"));
    let b = Arc::new(FakeKey::new("b"));
    let ia = attach(svc, "/run/sim/a", &a).await;
    let ib = attach(svc, "/run/sim/b", &b).await;
    svc.enroll(ROOT, "root", &ia, EnrollOptions::default())
        .await
        .unwrap();
    svc.enroll(ROOT, "nobody", &ib, EnrollOptions::default())
        .await
        .unwrap();
    (a, b)
}

async fn greet(svc: &Service, caller: Caller) -> Result<crate::token::Claims> {
    let token = svc
        .start_authentication(caller, "", greeter())
        .await?
        .outcome()
        .await?;
    svc.validate(&token).await
}

#[tokio::test]
async fn the_user_is_whoever_the_present_key_is_enrolled_for() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path());
    let _keys = two_users(&svc).await;
    // Both present: two accounts, nobody can tell who logs in.
    assert!(matches!(
        greet(&svc, ROOT).await,
        Err(Error::UserAmbiguous(m)) if m.contains("root") && m.contains("nobody")
    ));
    svc.device_removed("/run/sim/b").await.unwrap();
    assert_eq!(greet(&svc, ROOT).await.unwrap().sub, "root");
    svc.device_removed("/run/sim/a").await.unwrap();
    let b = Arc::new(FakeKey::new("b"));
    // The same key "b" (its credential) again, now alone.
    b.held.lock().unwrap().push("cred-b".into());
    attach(&svc, "/run/sim/b", &b).await;
    assert_eq!(greet(&svc, ROOT).await.unwrap().sub, "nobody");
}

#[tokio::test]
async fn a_key_enrolled_for_two_accounts_is_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path());
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    svc.enroll(ROOT, "root", &id, EnrollOptions::default())
        .await
        .unwrap();
    svc.enroll(ROOT, "nobody", &id, EnrollOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        greet(&svc, ROOT).await,
        Err(Error::UserAmbiguous(_))
    ));
}

#[tokio::test]
async fn only_administrators_and_only_without_a_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path());
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    svc.enroll(ROOT, "nobody", &id, EnrollOptions::default())
        .await
        .unwrap();
    // nobody's own key, but a non-administrator may not ask whose a device is.
    assert!(matches!(
        greet(&svc, Caller::uid(65534)).await,
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        svc.start_authentication(ROOT, "root", greeter()).await,
        Err(Error::InvalidArgument(_))
    ));
    let polkit_admin = Caller {
        uid: 65534,
        admin: true,
    };
    assert_eq!(greet(&svc, polkit_admin).await.unwrap().sub, "nobody");
}

#[tokio::test]
async fn without_a_key_the_greeter_waits_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path());
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    svc.enroll(ROOT, "nobody", &id, EnrollOptions::default())
        .await
        .unwrap();
    svc.device_removed("/run/sim/a").await.unwrap();
    // Not waiting: nothing to authenticate with is the answer now.
    let no_wait = AuthRequest {
        wait: false,
        ..greeter()
    };
    assert!(matches!(
        svc.start_authentication(ROOT, "", no_wait).await,
        Err(Error::NoDevice)
    ));
    let request = svc.start_authentication(ROOT, "", greeter()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    attach(&svc, "/run/sim/a", &a).await;
    let token = tokio::time::timeout(Duration::from_secs(10), request.outcome())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svc.validate(&token).await.unwrap().sub, "nobody");
}

#[tokio::test]
async fn the_requested_audience_is_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path());
    let a = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &a).await;
    svc.enroll(ROOT, "root", &id, EnrollOptions::default())
        .await
        .unwrap();
    let r = AuthRequest {
        audience: Some("pam:login".into()),
        ..AuthRequest::default()
    };
    let token = svc
        .start_authentication(ROOT, "", r)
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let claims = svc.validate(&token).await.unwrap();
    assert_eq!(claims.aud, "pam:login");
    // A refresh keeps it.
    let refreshed = svc.refresh(ROOT, &token).await.unwrap();
    assert_eq!(svc.validate(&refreshed).await.unwrap().aud, "pam:login");
    // Without one, the policy's.
    let plain = svc
        .start_authentication(ROOT, "", AuthRequest::default())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert_eq!(svc.validate(&plain).await.unwrap().aud, "tessera");
}

//! Login sessions in-process, over the scripted FIDO key of `fido_test`: binding a token to a
//! logind session, verify-once reuse and its rules, logout of a session, the binding surviving a
//! restart, and the lock-on-removal event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::fido_test::{attach, enroll, login, FakeKey, CONFIG, ROOT};
use super::*;
use crate::clock::ManualClock;
use crate::policy::config::OnRemoval;

const START: u64 = 1_900_000_000;

fn open_with(dir: &Path, config: &str) -> (Service, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(START),
    ));
    let svc = Service::open(ServiceParts {
        clock: clock.clone(),
        config: Config::parse(&format!("{CONFIG}\n{config}")).unwrap(),
        state_dir: dir.join("state"),
    })
    .unwrap();
    (svc, clock)
}

/// Root's own login session "c7" on seat0.
fn root_session() -> LoginSession {
    LoginSession {
        id: "c7".into(),
        uid: 0,
        seat: Some("seat0".into()),
    }
}

/// A service with key "a" enrolled for root and a fresh token bound to `root_session()`.
async fn bound_service(dir: &Path, config: &str) -> (Service, Arc<ManualClock>, Zeroizing<String>) {
    let (svc, clock) = open_with(dir, config);
    let key = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &key).await;
    enroll(&svc, &id).await;
    let token = login(&svc).await.unwrap();
    let bound = svc
        .bind_session(ROOT, &token, root_session())
        .await
        .unwrap();
    (svc, clock, bound)
}

fn query(service: &str) -> ReuseQuery {
    ReuseQuery {
        service: Some(service.into()),
        max_age: None,
    }
}

#[tokio::test]
async fn a_bound_token_carries_the_session_and_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, clock) = open_with(dir.path(), "");
    let key = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &key).await;
    enroll(&svc, &id).await;
    let token = login(&svc).await.unwrap();
    let before = svc.validate(&token).await.unwrap();
    assert_eq!(
        (before.lsid.as_deref(), before.seat.as_deref()),
        (None, None)
    );
    clock.advance(Duration::from_secs(30));
    let mut events = svc.subscribe();
    let bound = svc
        .bind_session(ROOT, &token, root_session())
        .await
        .unwrap();
    let claims = svc.validate(&bound).await.unwrap();
    assert_eq!(claims.lsid.as_deref(), Some("c7"));
    assert_eq!(claims.seat.as_deref(), Some("seat0"));
    assert_eq!(claims.sid, before.sid);
    assert_eq!(claims.enr, before.enr);
    assert_eq!(claims.amr, before.amr);
    assert_eq!(claims.aud, before.aud);
    assert_eq!(claims.exp, before.exp, "a bind never extends the token");
    assert_eq!(claims.iat, START + 30);
    assert_ne!(claims.jti, before.jti);
    assert!(matches!(
        svc.validate(&token).await,
        Err(Error::TokenRevoked(r)) if r == "bound"
    ));
    assert_eq!(
        events.try_recv().unwrap(),
        Event::TokenRevoked {
            jti: before.jti.clone(),
            user: "root".into(),
            reason: "bound".into(),
        }
    );
    // The old token cannot be bound again.
    assert!(matches!(
        svc.bind_session(ROOT, &token, root_session()).await,
        Err(Error::TokenRevoked(_))
    ));
}

#[tokio::test]
async fn only_an_administrator_binds_and_only_to_the_owners_session() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _clock) = open_with(dir.path(), "");
    let key = Arc::new(FakeKey::new("a"));
    let id = attach(&svc, "/run/sim/a", &key).await;
    enroll(&svc, &id).await;
    let token = login(&svc).await.unwrap();
    let nobody = Caller::uid(65534);
    assert!(matches!(
        svc.bind_session(nobody, &token, root_session()).await,
        Err(Error::AccessDenied(_))
    ));
    let polkit_admin = Caller {
        uid: 65534,
        admin: true,
    };
    let other = LoginSession {
        uid: 1000,
        ..root_session()
    };
    assert!(matches!(
        svc.bind_session(polkit_admin, &token, other).await,
        Err(Error::NoLoginSession(_))
    ));
    for bad in ["", "c7/..", &"x".repeat(65), "c 7"] {
        let s = LoginSession {
            id: bad.into(),
            ..root_session()
        };
        assert!(
            matches!(
                svc.bind_session(ROOT, &token, s).await,
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    // Refused binds left the token as it was.
    assert!(svc.validate(&token).await.is_ok());
    assert!(svc
        .bind_session(polkit_admin, &token, root_session())
        .await
        .is_ok());
}

#[tokio::test]
async fn reuse_finds_the_sessions_token_and_touches_it() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, clock, bound) = bound_service(dir.path(), "[token]\nidle_timeout = \"2m\"\n").await;
    let want = svc.validate(&bound).await.unwrap();
    for step in 0..3 {
        clock.advance(Duration::from_secs(90));
        let claims = svc
            .reuse_session(ROOT, "root", root_session(), query("sudo"))
            .await
            .unwrap_or_else(|e| panic!("reuse {step}: {e}"));
        assert_eq!(claims.jti, want.jti);
        assert_eq!(claims.lsid.as_deref(), Some("c7"));
    }
    // 270 s after the bind, alive only because each reuse counted as a use.
    assert!(svc.validate(&bound).await.is_ok());
}

#[tokio::test]
async fn reuse_refuses_other_sessions_other_users_and_old_authentications() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, clock, _bound) = bound_service(
        dir.path(),
        "[pam]\nmax_age = \"10m\"\n[pam.services.sudo]\nmax_age = \"5m\"\n\
         [pam.services.su]\nreuse = false\n",
    )
    .await;
    let other_session = LoginSession {
        id: "c8".into(),
        ..root_session()
    };
    assert!(matches!(
        svc.reuse_session(ROOT, "root", other_session, query("sudo"))
            .await,
        Err(Error::NoLoginSession(_))
    ));
    // The session is not the user's.
    let foreign = LoginSession {
        uid: 1000,
        ..root_session()
    };
    assert!(matches!(
        svc.reuse_session(ROOT, "root", foreign, query("sudo"))
            .await,
        Err(Error::NoLoginSession(_))
    ));
    // A caller acting for another account.
    assert!(matches!(
        svc.reuse_session(Caller::uid(65534), "root", root_session(), query("sudo"))
            .await,
        Err(Error::AccessDenied(_))
    ));
    // Reuse switched off for the service.
    assert!(matches!(
        svc.reuse_session(ROOT, "root", root_session(), query("su"))
            .await,
        Err(Error::AccessDenied(_))
    ));

    clock.advance(Duration::from_secs(5 * 60));
    assert!(svc
        .reuse_session(ROOT, "root", root_session(), query("sudo"))
        .await
        .is_ok());
    // The module's own max_age is stricter than the policy's.
    let strict = ReuseQuery {
        service: Some("sudo".into()),
        max_age: Some(60),
    };
    assert!(matches!(
        svc.reuse_session(ROOT, "root", root_session(), strict).await,
        Err(Error::NoLoginSession(m)) if m.contains("old")
    ));
    clock.advance(Duration::from_secs(1));
    // Beyond [pam.services.sudo] max_age, within [pam]'s.
    assert!(matches!(
        svc.reuse_session(ROOT, "root", root_session(), query("sudo"))
            .await,
        Err(Error::NoLoginSession(_))
    ));
    assert!(svc
        .reuse_session(ROOT, "root", root_session(), query("login"))
        .await
        .is_ok());
    // A looser module option does not beat the policy.
    let loose = ReuseQuery {
        service: Some("login".into()),
        max_age: Some(3600),
    };
    clock.advance(Duration::from_secs(5 * 60));
    assert!(matches!(
        svc.reuse_session(ROOT, "root", root_session(), loose).await,
        Err(Error::NoLoginSession(_))
    ));
}

#[tokio::test]
async fn reuse_refuses_dead_and_single_use_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _clock, bound) = bound_service(dir.path(), "").await;
    svc.logout(&bound).await.unwrap();
    assert!(matches!(
        svc.validate(&bound).await,
        Err(Error::TokenRevoked(r)) if r == "logout"
    ));
    assert!(matches!(
        svc.reuse_session(ROOT, "root", root_session(), query("sudo"))
            .await,
        Err(Error::NoLoginSession(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    let (svc, _clock, bound) = bound_service(dir.path(), "[token]\nsingle_use = true\n").await;
    assert!(matches!(
        svc.reuse_session(ROOT, "root", root_session(), query("sudo")).await,
        Err(Error::NoLoginSession(m)) if m.contains("single-use")
    ));
    drop(bound);
}

#[tokio::test]
async fn logind_ending_the_session_logs_its_tokens_out() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _clock, bound) = bound_service(dir.path(), "").await;
    let unbound = login(&svc).await.unwrap();
    assert_eq!(svc.logout_login_session("c8").await.unwrap(), 0);
    assert_eq!(svc.logout_login_session("c7").await.unwrap(), 1);
    assert!(matches!(
        svc.validate(&bound).await,
        Err(Error::TokenRevoked(r)) if r == "logout"
    ));
    assert!(svc.validate(&unbound).await.is_ok());
    assert_eq!(svc.logout_login_session("c7").await.unwrap(), 0);
}

#[tokio::test]
async fn the_binding_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    const CONFIG: &str = "[token]\nrevoke_on_removal = false\n";
    let bound_token = {
        let (svc, _clock, bound) = bound_service(dir.path(), CONFIG).await;
        svc.validate(&bound).await.unwrap();
        bound
    };
    let (svc, _clock) = open_with(dir.path(), CONFIG);
    let row = svc
        .inner
        .store
        .token_by_hash(&crate::token::token_hash(&bound_token))
        .unwrap()
        .unwrap();
    assert_eq!(row.login_session.as_deref(), Some("c7"));
    assert_eq!(row.seat.as_deref(), Some("seat0"));
    // The first scan finds the key gone: the session is locked, as for a removal seen live (the
    // token survives it: revoke_on_removal is off).
    let mut events = svc.subscribe();
    svc.enumeration_complete().await.unwrap();
    let mut locked = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::LoginSessionDeviceRemoved { login_session, .. } = e {
            locked.push(login_session);
        }
    }
    assert_eq!(locked, ["c7"]);
    // sudo reuses the token before anyone has shown it to the new daemon: the row alone answers.
    let claims = svc
        .reuse_session(ROOT, "root", root_session(), query("sudo"))
        .await
        .unwrap();
    assert_eq!(claims.lsid.as_deref(), Some("c7"));
    assert_eq!(claims.seat.as_deref(), Some("seat0"));
    assert_eq!(claims, svc.validate(&bound_token).await.unwrap());
    // The session ends while the daemon was down or after: found by its id all the same.
    assert_eq!(svc.logout_login_session("c7").await.unwrap(), 1);
}

#[tokio::test]
async fn pulling_the_key_announces_each_bound_session_once_even_when_tokens_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _clock, bound) =
        bound_service(dir.path(), "[token]\nrevoke_on_removal = false\n").await;
    // A second token in the same session and one in another: two sessions, each once.
    let second = login(&svc).await.unwrap();
    svc.bind_session(ROOT, &second, root_session())
        .await
        .unwrap();
    let third = login(&svc).await.unwrap();
    let other = LoginSession {
        id: "c9".into(),
        uid: 0,
        seat: None,
    };
    svc.bind_session(ROOT, &third, other).await.unwrap();
    let mut events = svc.subscribe();
    svc.device_removed("/run/sim/a").await.unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::LoginSessionDeviceRemoved {
            login_session,
            user,
            action,
        } = e
        {
            assert_eq!((user.as_str(), action), ("root", OnRemoval::Lock));
            seen.push(login_session);
        }
    }
    seen.sort();
    assert_eq!(seen, ["c7", "c9"]);
    // The tokens did not die with the device.
    assert!(svc.validate(&bound).await.is_ok());
}

#[tokio::test]
async fn on_removal_follows_the_users_policy_and_none_announces_nothing() {
    for (config, want) in [
        (
            "[session]\non_removal = \"terminate\"\n",
            Some(OnRemoval::Terminate),
        ),
        ("[session]\non_removal = \"none\"\n", None),
        (
            "[session]\non_removal = \"none\"\n[users.root.session]\non_removal = \"lock\"\n",
            Some(OnRemoval::Lock),
        ),
        (
            "[groups.root.session]\non_removal = \"terminate\"\n",
            Some(OnRemoval::Terminate),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _clock, bound) = bound_service(dir.path(), config).await;
        let mut events = svc.subscribe();
        svc.device_removed("/run/sim/a").await.unwrap();
        let mut got = None;
        while let Ok(e) = events.try_recv() {
            if let Event::LoginSessionDeviceRemoved { action, .. } = e {
                assert!(got.is_none(), "one event per session");
                got = Some(action);
            }
        }
        assert_eq!(got, want, "{config}");
        // Revoked with the device as before (revoke_on_removal is on by default).
        assert!(matches!(
            svc.validate(&bound).await,
            Err(Error::TokenRevoked(r)) if r == "device-removed"
        ));
    }
}

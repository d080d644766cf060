#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use rusqlite::params;

use super::schema::MIGRATIONS;
use super::writer::commit_group;
use super::*;
use crate::error::Error;

fn enrollment(id: &str, user: &str) -> Enrollment {
    Enrollment {
        id: id.into(),
        user: user.into(),
        uid: 1000,
        kind: DeviceKind::Piv,
        credential: "9a".into(),
        algorithm: KeyAlgorithm::Es256,
        public_key: [&[0x04][..], &[0x11; 64][..]].concat(),
        key_thumbprint: format!("thumb-{id}"),
        rp_id: None,
        sign_count: 0,
        device_identity: Some([0xA5; 16]),
        device_key_thumbprint: Some(format!("9e-{id}")),
        label: Some("CN=alice".into()),
        require_pin: true,
        created: 1_700_000_000,
        last_used: None,
    }
}

fn session(id: &str) -> DeviceSession {
    DeviceSession {
        id: id.into(),
        reader: "Virtual PCD 00 00".into(),
        card_id: "guid:a5a5".into(),
        event_counter: 0x0001_0000,
        source_instance: Some("boot/42/1234".into()),
        started: 1_700_000_100,
        ended: None,
    }
}

fn key(kid: &str) -> KeyMeta {
    KeyMeta {
        kid: kid.into(),
        created: 1_700_000_000,
        retired: None,
    }
}

fn token(jti: &str, user: &str, enr: &str, ses: &str, exp: u64) -> TokenRecord {
    TokenRecord {
        jti: jti.into(),
        token_hash: Sha256::digest(jti.as_bytes()).into(),
        user: user.into(),
        enrollment_id: enr.into(),
        device_session: ses.into(),
        kid: "k1".into(),
        iat: 1_700_000_200,
        exp,
        single_use: false,
        auth_time: 1_700_000_200,
        idle_timeout: 0,
        last_used: None,
        revoke_on_removal: true,
        state: TokenState::Live,
        reason: None,
        changed_at: None,
        login_session: None,
        seat: None,
        issued: None,
    }
}

fn hash(jti: &str) -> [u8; 32] {
    Sha256::digest(jti.as_bytes()).into()
}

/// A store with key k1, enrollment e1 (alice) and open session s1.
fn fixture() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store
        .apply_blocking(vec![
            WriteOp::InsertSigningKey(key("k1")),
            WriteOp::InsertEnrollment(enrollment("e1", "alice")),
            WriteOp::OpenDeviceSession(session("s1")),
        ])
        .unwrap();
    (dir, path, store)
}

fn set_state(jti: &str, state: TokenState, reason: &str) -> WriteOp {
    WriteOp::SetTokenState {
        jti: jti.into(),
        state,
        reason: reason.into(),
        at: 1_700_000_300,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn store_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn round_trips_every_record() {
    let (_dir, _path, store) = fixture();
    let mut bare = enrollment("e2", "bob");
    bare.device_identity = None;
    bare.label = None;
    bare.require_pin = false;
    bare.rp_id = Some("example.org".into());
    bare.sign_count = u32::MAX;
    bare.last_used = Some(1_700_000_010);
    let mut ended = session("s2");
    ended.ended = Some(1_700_000_500);
    let mut retired = key("k0");
    retired.retired = Some(1_700_000_050);
    retired.created = 1_600_000_000;
    let mut t2 = token("t2", "bob", "e2", "s1", 1_700_003_600);
    t2.single_use = true;
    let out = store
        .apply_blocking(vec![
            WriteOp::InsertEnrollment(bare.clone()),
            WriteOp::OpenDeviceSession(ended),
            WriteOp::InsertSigningKey(retired.clone()),
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 1_700_003_600)),
            WriteOp::InsertToken(t2.clone()),
        ])
        .unwrap();
    assert_eq!(out, vec![Outcome::Changed; 5]);

    assert_eq!(
        store.enrollment("e1").unwrap(),
        Some(enrollment("e1", "alice"))
    );
    assert_eq!(store.enrollment("nope").unwrap(), None);
    assert_eq!(
        store.enrollments().unwrap(),
        vec![enrollment("e1", "alice"), bare.clone()]
    );
    assert_eq!(store.enrollments_for_user("bob").unwrap(), vec![bare]);
    assert_eq!(
        store.tokens().unwrap(),
        vec![token("t1", "alice", "e1", "s1", 1_700_003_600), t2.clone()]
    );
    assert_eq!(store.tokens_for_user("bob").unwrap(), vec![t2.clone()]);
    assert_eq!(store.token_by_hash(&hash("t2")).unwrap(), Some(t2));
    assert_eq!(store.token_by_hash(&[0; 32]).unwrap(), None);
    assert_eq!(store.open_device_sessions().unwrap(), vec![session("s1")]);
    assert_eq!(store.signing_keys().unwrap(), vec![retired, key("k1")]);
}

#[test]
fn batch_is_atomic() {
    let (_dir, _path, store) = fixture();
    let err = store
        .apply_blocking(vec![
            WriteOp::InsertEnrollment(enrollment("e2", "bob")),
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 2_000_000_000)),
            WriteOp::InsertEnrollment(enrollment("e1", "carol")), // duplicate primary key
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    assert_eq!(
        store.enrollments().unwrap(),
        vec![enrollment("e1", "alice")]
    );
    assert!(store.tokens().unwrap().is_empty());
}

#[test]
fn failing_batch_does_not_poison_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    create_owner_only(&path).unwrap();
    let mut conn = connect(&path).unwrap();
    migrate(&mut conn).unwrap();
    let job = |ops| Job {
        ops,
        reply: Reply::Blocking(std_mpsc::sync_channel(1).0),
    };
    // Driving commit_group directly puts all three batches in one transaction for certain.
    let group = [
        job(vec![WriteOp::InsertEnrollment(enrollment("e1", "alice"))]),
        job(vec![
            WriteOp::InsertEnrollment(enrollment("e2", "bob")),
            WriteOp::InsertEnrollment(enrollment("e1", "dup")),
        ]),
        job(vec![WriteOp::InsertEnrollment(enrollment("e3", "carol"))]),
    ];
    let results = commit_group(&mut conn, &group).unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap(), &vec![Outcome::Changed]);
    assert!(matches!(results[1], Err(Error::Storage(_))));
    assert_eq!(results[2].as_ref().unwrap(), &vec![Outcome::Changed]);
    drop(conn);
    let store = Store::open(&path).unwrap();
    let ids: Vec<String> = store
        .enrollments()
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["e1", "e3"]);
}

#[test]
fn failed_commit_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    create_owner_only(&path).unwrap();
    let mut conn = connect(&path).unwrap();
    migrate(&mut conn).unwrap();
    // Deferred foreign keys are only checked at COMMIT, which makes the commit itself fail.
    conn.pragma_update(None, "defer_foreign_keys", true)
        .unwrap();
    let reply = || Reply::Blocking(std_mpsc::sync_channel(1).0);
    let group = [
        Job {
            ops: vec![
                WriteOp::InsertEnrollment(enrollment("e1", "alice")),
                WriteOp::OpenDeviceSession(session("s1")),
            ],
            reply: reply(),
        },
        Job {
            ops: vec![WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 9))], // no key "k1"
            reply: reply(),
        },
    ];
    assert!(commit_group(&mut conn, &group).is_err());
    assert!(
        conn.is_autocommit(),
        "the failed transaction must be rolled back"
    );
    let n: i64 = conn
        .query_row("SELECT count(*) FROM enrollments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    // The connection stays usable for the next group.
    let ok = [Job {
        ops: vec![WriteOp::InsertSigningKey(key("k1"))],
        reply: reply(),
    }];
    assert!(commit_group(&mut conn, &ok).unwrap()[0].is_ok());
}

#[test]
fn batch_aborting_the_transaction_fails_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    create_owner_only(&path).unwrap();
    let mut conn = connect(&path).unwrap();
    migrate(&mut conn).unwrap();
    // RAISE(ROLLBACK) ends the whole transaction, as SQLite may do on disk-full or I/O errors.
    conn.execute_batch(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON signing_keys WHEN NEW.kid = 'boom' \
         BEGIN SELECT RAISE(ROLLBACK, 'boom'); END;",
    )
    .unwrap();
    let job = |ops| Job {
        ops,
        reply: Reply::Blocking(std_mpsc::sync_channel(1).0),
    };
    let group = [
        job(vec![WriteOp::InsertEnrollment(enrollment("e1", "alice"))]),
        job(vec![WriteOp::InsertSigningKey(key("boom"))]),
        job(vec![WriteOp::InsertEnrollment(enrollment("e3", "carol"))]),
    ];
    assert!(commit_group(&mut conn, &group).is_err());
    let n: i64 = conn
        .query_row("SELECT count(*) FROM enrollments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        n, 0,
        "neither the batch before nor the one after may be committed"
    );
}

#[test]
fn token_state_only_leaves_live() {
    let (_dir, _path, store) = fixture();
    let mut once = token("t2", "alice", "e1", "s1", 2_000_000_000);
    once.single_use = true;
    store
        .apply_blocking(vec![
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 2_000_000_000)),
            WriteOp::InsertToken(once),
        ])
        .unwrap();
    let revoke = |jti: &str| set_state(jti, TokenState::Revoked, "logout");
    assert_eq!(
        store.apply_blocking(vec![revoke("t1")]).unwrap(),
        [Outcome::Changed]
    );
    assert_eq!(
        store.apply_blocking(vec![revoke("t1")]).unwrap(),
        [Outcome::Unchanged]
    );
    let consume = set_state("t2", TokenState::Consumed, "used");
    assert_eq!(
        store.apply_blocking(vec![consume.clone()]).unwrap(),
        [Outcome::Changed]
    );
    assert_eq!(
        store.apply_blocking(vec![consume]).unwrap(),
        [Outcome::Unchanged]
    );
    assert_eq!(
        store.apply_blocking(vec![revoke("t2")]).unwrap(),
        [Outcome::Unchanged]
    );
    assert_eq!(
        store.apply_blocking(vec![revoke("nope")]).unwrap(),
        [Outcome::Unchanged]
    );
    let err = store
        .apply_blocking(vec![set_state("t1", TokenState::Live, "undo")])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    let t1 = store.token_by_hash(&hash("t1")).unwrap().unwrap();
    assert_eq!(
        (t1.state, t1.reason.as_deref()),
        (TokenState::Revoked, Some("logout"))
    );
    assert_eq!(t1.changed_at, Some(1_700_000_300));
    let t2 = store.token_by_hash(&hash("t2")).unwrap().unwrap();
    assert_eq!(
        (t2.state, t2.reason.as_deref()),
        (TokenState::Consumed, Some("used"))
    );
}

#[test]
fn only_a_supersession_written_ahead_is_undone_and_not_after_a_removal() {
    let (_dir, _path, store) = fixture();
    store
        .apply_blocking(vec![WriteOp::OpenDeviceSession(session("s2"))])
        .unwrap();
    let mut keeps = token("t4", "alice", "e1", "s2", 1_700_003_600);
    keeps.revoke_on_removal = false;
    store
        .apply_blocking(vec![
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 1_700_003_600)),
            WriteOp::InsertToken(token("t2", "alice", "e1", "s1", 1_700_003_600)),
            WriteOp::InsertToken(token("t3", "alice", "e1", "s2", 1_700_003_600)),
            WriteOp::InsertToken(keeps),
            set_state("t1", TokenState::Revoked, "superseded"),
            set_state("t2", TokenState::Revoked, "logout"),
            set_state("t3", TokenState::Revoked, "superseded"),
            set_state("t4", TokenState::Revoked, "superseded"),
            WriteOp::CloseDeviceSession {
                id: "s2".into(),
                at: 1_700_000_400,
            },
        ])
        .unwrap();
    let revive = |jti: &str, at: u64| WriteOp::ReviveSuperseded {
        jti: jti.into(),
        at,
    };
    let out = store
        .apply_blocking(vec![
            // Another revocation's time: not the one written ahead.
            revive("t1", 1_700_000_301),
            // Revoked for another reason.
            revive("t2", 1_700_000_300),
            // Its device left, and it dies with it.
            revive("t3", 1_700_000_300),
            // Its device left, but it outlives its device.
            revive("t4", 1_700_000_300),
            revive("t1", 1_700_000_300),
            // Already live.
            revive("t1", 1_700_000_300),
        ])
        .unwrap();
    use Outcome::{Changed, Unchanged};
    assert_eq!(
        out,
        vec![Unchanged, Unchanged, Unchanged, Changed, Changed, Unchanged]
    );
    let t1 = store.token_by_hash(&hash("t1")).unwrap().unwrap();
    assert_eq!(
        (t1.state, t1.reason, t1.changed_at),
        (TokenState::Live, None, None)
    );
    let t3 = store.token_by_hash(&hash("t3")).unwrap().unwrap();
    assert_eq!(t3.state, TokenState::Revoked);
}

#[test]
fn concurrent_revocations_have_one_winner() {
    let (_dir, _path, store) = fixture();
    store
        .apply_blocking(vec![WriteOp::InsertToken(token(
            "t1",
            "alice",
            "e1",
            "s1",
            9_999_999_999,
        ))])
        .unwrap();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let state = if i % 2 == 0 {
                    TokenState::Revoked
                } else {
                    TokenState::Consumed
                };
                store
                    .apply_blocking(vec![set_state("t1", state, "race")])
                    .unwrap()[0]
            })
        })
        .collect();
    let won = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|o| o.changed())
        .count();
    assert_eq!(won, 1);
}

#[test]
fn removal_spares_tokens_whose_policy_keeps_them() {
    let (_dir, _path, store) = fixture();
    let mut keep = token("t1", "alice", "e1", "s1", 2_000_000_000);
    keep.revoke_on_removal = false;
    store
        .apply_blocking(vec![
            WriteOp::InsertToken(keep),
            WriteOp::InsertToken(token("t2", "alice", "e1", "s1", 2_000_000_000)),
        ])
        .unwrap();
    let out = store
        .apply_blocking(vec![WriteOp::RevokeSessionTokens {
            device_session: "s1".into(),
            reason: "device-removed".into(),
            at: 1_700_000_400,
        }])
        .unwrap();
    assert_eq!(out, [Outcome::Rows(1)]);
    let states: Vec<_> = store
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, [TokenState::Live, TokenState::Revoked]);
}

#[test]
fn touch_records_only_newer_uses_of_live_tokens() {
    let (_dir, _path, store) = fixture();
    store
        .apply_blocking(vec![
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 2_000_000_000)),
            WriteOp::InsertToken(token("t2", "alice", "e1", "s1", 2_000_000_000)),
        ])
        .unwrap();
    let touch = |jti: &str, at| WriteOp::TouchToken {
        jti: jti.into(),
        at,
    };
    assert_eq!(
        store.apply_blocking(vec![touch("t1", 500)]).unwrap(),
        [Outcome::Changed]
    );
    assert_eq!(
        store.apply_blocking(vec![touch("t1", 400)]).unwrap(),
        [Outcome::Unchanged]
    );
    store
        .apply_blocking(vec![set_state("t2", TokenState::Revoked, "logout")])
        .unwrap();
    assert_eq!(
        store.apply_blocking(vec![touch("t2", 600)]).unwrap(),
        [Outcome::Unchanged]
    );
    let used: Vec<_> = store
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.last_used)
        .collect();
    assert_eq!(used, [Some(500), None]);
}

#[test]
fn device_removal_ends_tokens_and_blocks_new_ones() {
    let (_dir, _path, store) = fixture();
    store
        .apply_blocking(vec![
            WriteOp::OpenDeviceSession(session("s2")),
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 2_000_000_000)),
            WriteOp::InsertToken(token("t2", "alice", "e1", "s1", 2_000_000_000)),
            WriteOp::InsertToken(token("t3", "alice", "e1", "s2", 2_000_000_000)),
        ])
        .unwrap();
    store
        .apply_blocking(vec![set_state("t2", TokenState::Revoked, "logout")])
        .unwrap();
    let close = || WriteOp::CloseDeviceSession {
        id: "s1".into(),
        at: 1_700_000_400,
    };
    let out = store
        .apply_blocking(vec![
            close(),
            WriteOp::RevokeSessionTokens {
                device_session: "s1".into(),
                reason: "device removed".into(),
                at: 1_700_000_400,
            },
        ])
        .unwrap();
    assert_eq!(out, [Outcome::Changed, Outcome::Rows(1)]);
    assert_eq!(
        store.apply_blocking(vec![close()]).unwrap(),
        [Outcome::Unchanged]
    );
    assert_eq!(store.open_device_sessions().unwrap(), vec![session("s2")]);
    let reasons: Vec<_> = store
        .tokens()
        .unwrap()
        .into_iter()
        .map(|t| (t.state, t.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (TokenState::Revoked, Some("device removed".to_string())),
            (TokenState::Revoked, Some("logout".to_string())),
            (TokenState::Live, None),
        ]
    );
    for ses in ["s1", "unknown"] {
        let err = store
            .apply_blocking(vec![WriteOp::InsertToken(token(
                "t9",
                "alice",
                "e1",
                ses,
                2_000_000_000,
            ))])
            .unwrap_err();
        assert!(matches!(err, Error::DeviceRemoved), "{err:?}");
    }
    assert_eq!(store.tokens().unwrap().len(), 3);
}

#[test]
fn deleting_an_enrollment_deletes_its_tokens() {
    let (_dir, _path, store) = fixture();
    store
        .apply_blocking(vec![
            WriteOp::InsertEnrollment(enrollment("e2", "alice")),
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", 2_000_000_000)),
            WriteOp::InsertToken(token("t2", "alice", "e2", "s1", 2_000_000_000)),
        ])
        .unwrap();
    let del = |id: &str| WriteOp::DeleteEnrollment { id: id.into() };
    assert_eq!(
        store.apply_blocking(vec![del("e1")]).unwrap(),
        [Outcome::Changed]
    );
    assert_eq!(
        store.apply_blocking(vec![del("e1")]).unwrap(),
        [Outcome::Unchanged]
    );
    assert_eq!(store.token_by_hash(&hash("t1")).unwrap(), None);
    assert!(store.token_by_hash(&hash("t2")).unwrap().is_some());
}

#[test]
fn signing_key_retires_once() {
    let (_dir, _path, store) = fixture();
    let retire = || WriteOp::RetireSigningKey {
        kid: "k1".into(),
        at: 1_800_000_000,
    };
    assert_eq!(
        store.apply_blocking(vec![retire()]).unwrap(),
        [Outcome::Changed]
    );
    assert_eq!(
        store.apply_blocking(vec![retire()]).unwrap(),
        [Outcome::Unchanged]
    );
    assert_eq!(
        store.signing_keys().unwrap()[0].retired,
        Some(1_800_000_000)
    );
}

#[test]
fn prune_drops_exactly_the_expired() {
    let (_dir, path, store) = fixture();
    let now = 1_700_001_000;
    let mut ended_unused = session("s2");
    ended_unused.ended = Some(now - 10);
    let used_then_ended = session("s3");
    let mut revoked_live = token("t4", "alice", "e1", "s3", now + 1);
    revoked_live.state = TokenState::Revoked;
    store
        .apply_blocking(vec![
            WriteOp::OpenDeviceSession(ended_unused),
            WriteOp::OpenDeviceSession(used_then_ended),
            WriteOp::InsertToken(token("t1", "alice", "e1", "s1", now - 1)),
            WriteOp::InsertToken(token("t2", "alice", "e1", "s1", now)), // exp == now is expired
            WriteOp::InsertToken(token("t3", "alice", "e1", "s3", now - 5)),
            WriteOp::InsertToken(revoked_live),
            WriteOp::InsertToken(token("t5", "alice", "e1", "s1", now + 3600)),
            WriteOp::CloseDeviceSession {
                id: "s3".into(),
                at: now - 10,
            },
        ])
        .unwrap();
    let out = store
        .apply_blocking(vec![WriteOp::PruneExpired { now }])
        .unwrap();
    // t1, t2, t3 and session s2; s3 stays because t4 still refers to it.
    assert_eq!(out, [Outcome::Rows(4)]);
    let jtis: Vec<_> = store.tokens().unwrap().into_iter().map(|t| t.jti).collect();
    assert_eq!(jtis, ["t4", "t5"]);
    assert_eq!(store.open_device_sessions().unwrap(), vec![session("s1")]);
    // Once t4 expires, s3 goes too; s1 is open and stays.
    let out = store
        .apply_blocking(vec![WriteOp::PruneExpired { now: now + 1 }])
        .unwrap();
    assert_eq!(out, [Outcome::Rows(2)]);
    assert_eq!(
        store
            .apply_blocking(vec![WriteOp::PruneExpired { now: now + 1 }])
            .unwrap(),
        [Outcome::Rows(0)]
    );
    let raw = Connection::open(&path).unwrap();
    let sessions: i64 = raw
        .query_row("SELECT count(*) FROM device_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1, "only the open s1 is left");
}

#[test]
fn reopen_sees_everything() {
    let (dir, path, store) = fixture();
    store
        .apply_blocking(vec![WriteOp::InsertToken(token(
            "t1",
            "alice",
            "e1",
            "s1",
            2_000_000_000,
        ))])
        .unwrap();
    store
        .apply_blocking(vec![set_state("t1", TokenState::Revoked, "logout")])
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.enrollments().unwrap(),
        vec![enrollment("e1", "alice")]
    );
    assert_eq!(store.open_device_sessions().unwrap(), vec![session("s1")]);
    assert_eq!(store.signing_keys().unwrap(), vec![key("k1")]);
    let t1 = store.token_by_hash(&hash("t1")).unwrap().unwrap();
    assert_eq!(t1.state, TokenState::Revoked);
    drop(dir);
}

#[test]
fn newer_schema_is_refused() {
    let (_dir, path, store) = fixture();
    drop(store);
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    match Store::open(&path) {
        Err(Error::Storage(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn migration_sets_the_version() {
    let (_dir, path, store) = fixture();
    drop(store);
    assert_eq!(user_version(&path), 4);
    assert_eq!(SCHEMA_VERSION, 4);
}

fn user_version(path: &Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// A database of schema 2 (the last before device-neutral enrollments), with one enrollment as
/// that code wrote it, a token of it and the rest of its world.
fn schema_2_database(path: &Path) {
    let raw = Connection::open(path).unwrap();
    raw.execute_batch(MIGRATIONS[0]).unwrap();
    raw.execute_batch(MIGRATIONS[1]).unwrap();
    raw.pragma_update(None, "user_version", 2).unwrap();
    raw.execute(
        "INSERT INTO enrollments (id, user, uid, slot, public_key, key_thumbprint, card_guid, \
         cert_subject, require_pin, created, card_auth_thumbprint, last_used) \
         VALUES ('e1', 'alice', 1000, '9a', ?1, 'thumb-e1', ?2, 'CN=alice', 1, 1700000000, \
         '9e-e1', 1700000050)",
        params![[&[0x04u8][..], &[0x11; 64][..]].concat(), [0xA5u8; 16]],
    )
    .unwrap();
    raw.execute_batch(
        "INSERT INTO device_sessions (id, reader, card_id, event_counter, started, source_instance) \
         VALUES ('s1', 'Virtual PCD 00 00', 'guid:a5a5', 65536, 1700000100, 'boot/42/1234'); \
         INSERT INTO signing_keys (kid, created) VALUES ('k1', 1700000000);",
    )
    .unwrap();
    raw.execute(
        "INSERT INTO tokens (jti, token_hash, user, enrollment_id, device_session, kid, iat, exp, \
         single_use, state, auth_time, idle_timeout, revoke_on_removal) \
         VALUES ('t1', ?1, 'alice', 'e1', 's1', 'k1', 1700000200, 1800000000, 0, 0, 1700000200, 0, 1)",
        params![[0x7Au8; 32]],
    )
    .unwrap();
}

#[test]
fn schema_2_enrollments_become_piv_es256_and_keep_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    schema_2_database(&path);
    let store = Store::open(&path).unwrap();
    let e = store.enrollment("e1").unwrap().unwrap();
    assert_eq!(
        e,
        Enrollment {
            id: "e1".into(),
            user: "alice".into(),
            uid: 1000,
            kind: DeviceKind::Piv,
            credential: "9a".into(),
            algorithm: KeyAlgorithm::Es256,
            public_key: [&[0x04][..], &[0x11; 64][..]].concat(),
            key_thumbprint: "thumb-e1".into(),
            rp_id: None,
            sign_count: 0,
            device_identity: Some([0xA5; 16]),
            device_key_thumbprint: Some("9e-e1".into()),
            label: Some("CN=alice".into()),
            require_pin: true,
            created: 1_700_000_000,
            last_used: Some(1_700_000_050),
        }
    );
    // The token still refers to its enrollment (found by its hash, deleted with it).
    let t = store.token_by_hash(&[0x7A; 32]).unwrap().unwrap();
    assert_eq!((t.jti.as_str(), t.enrollment_id.as_str()), ("t1", "e1"));
    assert_eq!(t.state, TokenState::Live);
    drop(store);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    // Reopening runs no step twice, and the upgraded row takes new writes like any other.
    let store = Store::open(&path).unwrap();
    let out = store
        .apply_blocking(vec![
            WriteOp::InsertEnrollment(enrollment("e2", "alice")),
            WriteOp::DeleteEnrollment { id: "e1".into() },
        ])
        .unwrap();
    assert_eq!(out, vec![Outcome::Changed; 2]);
    assert_eq!(store.token_by_hash(&[0x7A; 32]).unwrap(), None);
}

#[test]
fn an_unknown_kind_or_algorithm_fails_the_read() {
    for (column, value) in [("kind", "fido2-draft"), ("algorithm", "rs1")] {
        let (_dir, path, store) = fixture();
        drop(store);
        let raw = Connection::open(&path).unwrap();
        let sql = format!("UPDATE enrollments SET {column} = ?1 WHERE id = 'e1'");
        assert_eq!(raw.execute(&sql, [value]).unwrap(), 1);
        drop(raw);
        let store = Store::open(&path).unwrap();
        match store.enrollment("e1") {
            Err(Error::Storage(msg)) => assert!(msg.contains(value), "{msg}"),
            other => panic!("{column} {value}: expected a storage error, got {other:?}"),
        }
    }
}

#[test]
fn a_sign_count_beyond_u32_is_refused() {
    let (_dir, path, store) = fixture();
    drop(store);
    let raw = Connection::open(&path).unwrap();
    let err = raw
        .execute(
            "UPDATE enrollments SET sign_count = 4294967296 WHERE id = 'e1'",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
}

#[test]
fn sessions_recorded_before_pcscd_identities_match_no_pcscd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(MIGRATIONS[0]).unwrap();
    raw.pragma_update(None, "user_version", 1).unwrap();
    raw.execute(
        "INSERT INTO device_sessions (id, reader, card_id, event_counter, started) \
         VALUES ('old', 'Virtual PCD 00 00', 'guid:a5a5', 1, 1700000000)",
        [],
    )
    .unwrap();
    drop(raw);
    let store = Store::open(&path).unwrap();
    let sessions = store.open_device_sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].source_instance, None, "an unknown pcscd");
    // A new session keeps its pcscd identity.
    store
        .apply_blocking(vec![WriteOp::OpenDeviceSession(session("new"))])
        .unwrap();
    let new = store.open_device_sessions().unwrap();
    assert_eq!(new[0].id, "new");
    assert_eq!(new[0].source_instance.as_deref(), Some("boot/42/1234"));
}

#[test]
fn pin_failures_are_reserved_up_to_the_limit_per_card_and_caller() {
    let (_dir, path, store) = fixture();
    let reserve = |card: &str, uid: u32| WriteOp::ReservePinFailure {
        card: card.into(),
        uid,
        limit: 1,
    };
    let changed = |ops| {
        store
            .apply_blocking(ops)
            .unwrap()
            .into_iter()
            .map(Outcome::changed)
            .collect::<Vec<_>>()
    };
    // The second reservation in the same batch already sees the first.
    assert_eq!(
        changed(vec![reserve("c1", 7), reserve("c1", 7)]),
        [true, false]
    );
    assert_eq!(
        changed(vec![reserve("c1", 8), reserve("c2", 7)]),
        [true, true]
    );
    // A release gives the try back; a clear forgets everyone's on that card only.
    let release = WriteOp::ReleasePinFailure {
        card: "c1".into(),
        uid: 7,
    };
    assert_eq!(changed(vec![release, reserve("c1", 7)]), [true, true]);
    drop(store);
    let store = Store::open(&path).unwrap();
    assert!(!store.apply_blocking(vec![reserve("c1", 7)]).unwrap()[0].changed());
    let clear = WriteOp::ClearPinFailures { card: "c1".into() };
    assert_eq!(
        store.apply_blocking(vec![clear]).unwrap(),
        [Outcome::Rows(2)]
    );
    let again = store
        .apply_blocking(vec![reserve("c1", 7), reserve("c1", 8), reserve("c2", 7)])
        .unwrap();
    assert_eq!(
        again.into_iter().map(Outcome::changed).collect::<Vec<_>>(),
        [true, true, false]
    );
}

#[test]
fn files_are_owner_only() {
    let (dir, path, store) = fixture();
    // The test process runs with umask 022: without care these would come out 0644.
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("state.db-wal")), 0o600);
    assert_eq!(mode(&dir.path().join("state.db-shm")), 0o600);
    drop(store);

    let loose = dir.path().join("loose.db");
    std::fs::write(&loose, b"").unwrap();
    std::fs::set_permissions(&loose, Permissions::from_mode(0o644)).unwrap();
    drop(Store::open(&loose).unwrap());
    assert_eq!(mode(&loose), 0o600);
}

#[test]
fn symlinked_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere.db");
    let link = dir.path().join("state.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    match Store::open(&link) {
        Err(Error::Config(msg)) => {
            assert!(msg.contains(&link.display().to_string()), "{msg}");
            assert!(msg.contains("symbolic link"), "{msg}");
        }
        other => panic!("expected a refusal naming the link, got {other:?}"),
    }
    assert!(!target.exists());
}

#[test]
fn concurrent_writers_are_all_durable() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 50;
    let (_dir, path, store) = fixture();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let jti = format!("t{t}-{i}");
                    let mut ops = vec![WriteOp::InsertToken(token(
                        &jti,
                        "alice",
                        "e1",
                        "s1",
                        2_000_000_000,
                    ))];
                    if i % 5 == 0 {
                        ops.push(set_state(&jti, TokenState::Revoked, "logout"));
                    }
                    let out = store.apply_blocking(ops).unwrap();
                    assert!(out.iter().all(|o| o.changed()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    drop(Arc::into_inner(store).unwrap());
    let store = Store::open(&path).unwrap();
    let tokens = store.tokens().unwrap();
    assert_eq!(tokens.len(), THREADS * PER_THREAD);
    let revoked = tokens
        .iter()
        .filter(|t| t.state == TokenState::Revoked)
        .count();
    assert_eq!(revoked, THREADS * PER_THREAD / 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_share_commits() {
    let (_dir, path, store) = fixture();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..20 {
                    let op =
                        WriteOp::InsertToken(token(&format!("a{t}-{i}"), "alice", "e1", "s1", 9));
                    assert_eq!(store.apply(vec![op]).await.unwrap(), [Outcome::Changed]);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(store.apply(Vec::new()).await.unwrap().is_empty());
    drop(Arc::into_inner(store).unwrap());
    assert_eq!(Store::open(&path).unwrap().tokens().unwrap().len(), 320);
}

/// Writes per second for 1 and 16 concurrent callers; run with
/// `cargo test --release -p tessera --lib store::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; takes several seconds and measures the disk"]
fn bench_group_commit() {
    const ROUNDS: usize = 5;
    // Baseline: one durable SQLite commit per insert on a bare connection, no store machinery.
    let mut raw_rates = Vec::new();
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.db");
        create_owner_only(&path).unwrap();
        let mut conn = connect(&path).unwrap();
        migrate(&mut conn).unwrap();
        let start = Instant::now();
        for i in 0..500 {
            let tx = conn.transaction().unwrap();
            tx.execute(
                "INSERT INTO signing_keys (kid, created) VALUES (?1, 0)",
                [i],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        raw_rates.push(500.0 / start.elapsed().as_secs_f64());
    }
    raw_rates.sort_by(f64::total_cmp);
    println!(
        "store: raw SQLite commits: median {:.0}/s (min {:.0}, max {:.0})",
        raw_rates[ROUNDS / 2],
        raw_rates[0],
        raw_rates[ROUNDS - 1]
    );
    for (callers, per_caller) in [(1usize, 1000usize), (16, 500)] {
        let mut rates = Vec::new();
        for round in 0..ROUNDS {
            let (_dir, _path, store) = fixture();
            let store = Arc::new(store);
            let start = Instant::now();
            let handles: Vec<_> = (0..callers)
                .map(|c| {
                    let store = Arc::clone(&store);
                    std::thread::spawn(move || {
                        for i in 0..per_caller {
                            let jti = format!("b{round}-{c}-{i}");
                            let op = WriteOp::InsertToken(token(&jti, "alice", "e1", "s1", 9));
                            store.apply_blocking(vec![op]).unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            rates.push((callers * per_caller) as f64 / secs);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "store: {callers:2} caller(s): median {:.0} writes/s (min {:.0}, max {:.0}, {ROUNDS} rounds of {} writes)",
            rates[ROUNDS / 2],
            rates[0],
            rates[ROUNDS - 1],
            callers * per_caller
        );
    }
}

#[test]
fn prune_keeps_the_last_use_of_each_enrollment() {
    let (_dir, _path, store) = fixture();
    let mut old = token("t-old", "alice", "e1", "s1", 1_700_000_300);
    old.auth_time = 1_700_000_250;
    let mut older = token("t-older", "alice", "e1", "s1", 1_700_000_300);
    older.auth_time = 1_700_000_100;
    let live = token("t-live", "alice", "e1", "s1", 1_800_000_000);
    store
        .apply_blocking(vec![
            WriteOp::InsertToken(old),
            WriteOp::InsertToken(older),
            WriteOp::InsertToken(live),
        ])
        .unwrap();
    let last_used = |store: &Store| store.enrollment("e1").unwrap().unwrap().last_used;
    assert_eq!(last_used(&store), None);
    store
        .apply_blocking(vec![WriteOp::PruneExpired { now: 1_700_000_400 }])
        .unwrap();
    // The latest of the pruned tokens' authentications; the live one still speaks for itself.
    assert_eq!(last_used(&store), Some(1_700_000_250));
    // A later prune of older authentications never moves it back.
    let mut stale = token("t-stale", "alice", "e1", "s1", 1_700_000_500);
    stale.auth_time = 1_700_000_000;
    store
        .apply_blocking(vec![WriteOp::InsertToken(stale)])
        .unwrap();
    store
        .apply_blocking(vec![WriteOp::PruneExpired { now: 1_700_000_600 }])
        .unwrap();
    assert_eq!(last_used(&store), Some(1_700_000_250));
}

#[test]
fn dead_rows_are_capped_oldest_first_and_live_ones_kept() {
    let (_dir, _path, store) = fixture();
    store
        .apply_blocking(vec![WriteOp::InsertEnrollment(enrollment("e2", "bob"))])
        .unwrap();
    let mut ops = Vec::new();
    for i in 0..6 {
        ops.push(WriteOp::InsertToken(token(
            &format!("a{i}"),
            "alice",
            "e1",
            "s1",
            2_000_000_000,
        )));
    }
    ops.push(WriteOp::InsertToken(token(
        "b0",
        "bob",
        "e2",
        "s1",
        2_000_000_000,
    )));
    store.apply_blocking(ops).unwrap();
    // a0..a3 die at increasing times, a4 and a5 stay live; bob's token dies too.
    for (i, jti) in ["a0", "a1", "a2", "a3", "b0"].iter().enumerate() {
        store
            .apply_blocking(vec![WriteOp::SetTokenState {
                jti: (*jti).into(),
                state: TokenState::Revoked,
                reason: "logout".into(),
                at: 1_700_000_300 + i as u64,
            }])
            .unwrap();
    }
    let cap = |keep: u32, newest: &[&str]| WriteOp::CapDeadTokens {
        user: "alice".into(),
        keep,
        newest: newest.iter().map(|s| (*s).to_owned()).collect(),
    };
    assert_eq!(
        store.apply_blocking(vec![cap(2, &[])]).unwrap(),
        [Outcome::Rows(2)]
    );
    let jtis = |user: &str| -> Vec<String> {
        store
            .tokens_for_user(user)
            .unwrap()
            .into_iter()
            .map(|t| t.jti)
            .collect()
    };
    assert_eq!(jtis("alice"), ["a2", "a3", "a4", "a5"]);
    // A row the batch just killed is kept even when its time does not tell it apart.
    assert_eq!(
        store.apply_blocking(vec![cap(1, &["a2"])]).unwrap(),
        [Outcome::Rows(1)]
    );
    assert_eq!(jtis("alice"), ["a2", "a4", "a5"]);
    assert_eq!(
        store.apply_blocking(vec![cap(0, &[])]).unwrap(),
        [Outcome::Rows(1)]
    );
    assert_eq!(jtis("alice"), ["a4", "a5"], "live rows are never dropped");
    assert_eq!(jtis("bob"), ["b0"], "another user's rows are untouched");
}

#[test]
fn a_fido_enrollment_round_trips_with_its_rp_id_algorithm_and_counter() {
    let (_dir, _path, store) = fixture();
    let fido = Enrollment {
        kind: DeviceKind::Fido,
        credential: "q83vEjRWeJA".into(),
        algorithm: KeyAlgorithm::EdDsa,
        public_key: vec![0x5A; 32],
        rp_id: Some("pam://tessera".into()),
        sign_count: 7,
        device_key_thumbprint: None,
        ..enrollment("f1", "alice")
    };
    store
        .apply_blocking(vec![WriteOp::InsertEnrollment(fido.clone())])
        .unwrap();
    assert_eq!(store.enrollment("f1").unwrap(), Some(fido));
    assert_eq!("fido".parse::<DeviceKind>().unwrap(), DeviceKind::Fido);
    assert_eq!(
        "eddsa".parse::<KeyAlgorithm>().unwrap(),
        KeyAlgorithm::EdDsa
    );
    assert_eq!(KeyAlgorithm::EdDsa.as_str(), "eddsa");
}

#[test]
fn the_sign_count_only_rises() {
    let (_dir, _path, store) = fixture();
    let set = |count: u32| {
        store
            .apply_blocking(vec![WriteOp::SetSignCount {
                enrollment: "e1".into(),
                count,
            }])
            .unwrap()[0]
    };
    assert_eq!(set(5), Outcome::Changed);
    assert_eq!(
        set(5),
        Outcome::Unchanged,
        "equal: a write that lost a race"
    );
    assert_eq!(set(3), Outcome::Unchanged, "lower: never written");
    assert_eq!(store.enrollment("e1").unwrap().unwrap().sign_count, 5);
    assert_eq!(set(u32::MAX), Outcome::Changed);
    assert_eq!(
        store.enrollment("e1").unwrap().unwrap().sign_count,
        u32::MAX
    );
    let gone = store
        .apply_blocking(vec![WriteOp::SetSignCount {
            enrollment: "nope".into(),
            count: 9,
        }])
        .unwrap();
    assert_eq!(gone, vec![Outcome::Unchanged]);
}

#[test]
fn a_detached_write_is_committed_even_when_the_store_is_dropped_at_once() {
    let (_dir, path, store) = fixture();
    store
        .apply_detached(vec![WriteOp::SetSignCount {
            enrollment: "e1".into(),
            count: 12,
        }])
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.enrollment("e1").unwrap().unwrap().sign_count, 12);
}

#[test]
fn a_tokens_login_session_and_issued_claims_round_trip() {
    let (_dir, path, store) = fixture();
    let mut t = token("t9", "alice", "e1", "s1", 1_800_000_000);
    t.login_session = Some("c7".into());
    t.seat = Some("seat0".into());
    t.issued = Some(IssuedClaims {
        iss: "tessera:host".into(),
        aud: "pam:login".into(),
        amr: vec!["hwk".into(), "pin".into()],
        jkt: "thumb-e1".into(),
    });
    let plain = token("t8", "alice", "e1", "s1", 1_800_000_000);
    store
        .apply_blocking(vec![
            WriteOp::InsertToken(t.clone()),
            WriteOp::InsertToken(plain.clone()),
        ])
        .unwrap();
    assert_eq!(store.token_by_hash(&hash("t9")).unwrap(), Some(t));
    assert_eq!(store.token_by_hash(&hash("t8")).unwrap(), Some(plain));
    // Looked up by session through its index.
    let plan: String = Connection::open(&path)
        .unwrap()
        .query_row(
            "EXPLAIN QUERY PLAN SELECT jti FROM tokens WHERE login_session = 'c7'",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("tokens_login_session"), "{plan}");
    // An amr column that is not a JSON array leaves the claims to be learnt from the token.
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE tokens SET amr = 'hwk' WHERE jti = 't9'", [])
        .unwrap();
    assert_eq!(
        store.token_by_hash(&hash("t9")).unwrap().unwrap().issued,
        None
    );
}

#[test]
fn schema_3_tokens_become_unbound_with_unknown_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    schema_2_database(&path);
    {
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(MIGRATIONS[2]).unwrap();
        raw.pragma_update(None, "user_version", 3).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let t = store.token_by_hash(&[0x7A; 32]).unwrap().unwrap();
    assert_eq!(t.jti, "t1");
    assert_eq!((t.login_session, t.seat, t.issued), (None, None, None));
    drop(store);
    assert_eq!(user_version(&path), 4);
}

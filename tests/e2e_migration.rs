//! End-to-end test of the store's schema upgrade on a database made by an older Tessera: the fixture
//! in `tests/fixtures/schema-2/` (state directory, simulated card, token, config) was written by the
//! real `tesserad`, `tessera` and `tessera-sim` of commit 4d09578, the last with schema 2
//! (`make.sh` there remakes it). Today's daemon must open it, upgrade it, accept the token issued
//! before the upgrade and authenticate the card enrolled there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::stack::{Stack, BUS_NAME, DEVICE_PATH, MANAGER_PATH, PIN, WAIT};
use common::{pcsc_lock, run, stdout, wait_until, Bus, Child, TestDir, VPCD_ADDR_0};

/// The fixture of schema 2.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-2");
/// Everything in the fixture belongs to root.
const ROOT: &[&str] = &["--user", "root"];

#[test]
fn a_schema_2_database_is_upgraded_and_keeps_its_enrollment_and_tokens() {
    let fixture = Path::new(FIXTURE);
    let old_token = read_trimmed(&fixture.join("token.jwt"));
    let enrollment = read_trimmed(&fixture.join("enrollment.txt"));
    let config = fs::read_to_string(fixture.join("config.toml")).unwrap();
    assert_eq!(header_version(&fixture.join("state/tessera.db")), 2);

    let mut env = Stack::new();
    // A fresh owner-only copy: the daemon refuses a state directory others may write, and must not
    // change the fixture.
    copy_private(&fixture.join("state"), &env.path("state"));
    let card = env.path("card.json");
    fs::copy(fixture.join("card.json"), &card).unwrap();
    fs::set_permissions(&card, fs::Permissions::from_mode(0o600)).unwrap();
    env.start_sim(&card, &[]);
    env.start_daemon(&config);
    env.wait_device(true);

    let db = env.path("state").join("tessera.db");
    assert_eq!(schema_version(&db), 4, "the schema is upgraded at start");
    let row: (String, String, String, u32) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT kind, credential, algorithm, sign_count FROM enrollments WHERE id = ?1",
            [&enrollment],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(row, ("piv".into(), "9a".into(), "es256".into(), 0));

    // The token issued by the old daemon is still valid, with its enrollment.
    let claims = env
        .validate(&old_token)
        .unwrap_or_else(|e| panic!("the token from before the upgrade: {e:?}"));
    assert_eq!(claims["sub"], "root");
    assert_eq!(claims["enr"], enrollment.as_str());

    // The card enrolled there still authenticates, with the same enrollment, and its new token
    // validates beside the old one.
    let token = env.authenticate(ROOT);
    let fresh = env.validate(&token).unwrap();
    assert_eq!(fresh["enr"], enrollment.as_str());
    assert!(env.validate(&old_token).is_ok());

    // ListEnrollments shows it as v1 did, plus the device-neutral keys.
    let listed = env.busctl(&[
        "--json=short",
        "call",
        BUS_NAME,
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager",
        "ListEnrollments",
        "s",
        "root",
    ]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let entries = listed["data"][0].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    let e = &entries[0];
    let get = |k: &str| e[k]["data"].clone();
    assert_eq!(get("id"), enrollment.as_str());
    assert_eq!(get("kind"), "piv");
    assert_eq!(get("slot"), "9a");
    assert_eq!(get("credential"), "9a");
    assert_eq!(get("algorithm"), "es256");
    let guid = get("card_guid");
    let guid = guid.as_str().unwrap();
    assert!(
        guid.len() == 32 && guid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{e}"
    );
    assert!(get("last_used").as_u64().unwrap() > 0, "{e}");
}

/// Remakes the fixture with the binaries in `TESSERA_FIXTURE_BINS` (those of the old commit), into
/// `TESSERA_FIXTURE_OUT`. Run by `tests/fixtures/schema-2/make.sh`, not by the suite.
#[test]
#[ignore = "makes the fixture; run by tests/fixtures/schema-2/make.sh"]
fn make_schema_2_fixture() {
    let bins =
        PathBuf::from(std::env::var_os("TESSERA_FIXTURE_BINS").expect("TESSERA_FIXTURE_BINS"));
    let out = PathBuf::from(std::env::var_os("TESSERA_FIXTURE_OUT").expect("TESSERA_FIXTURE_OUT"));
    let _pcsc = pcsc_lock();
    let bus = Bus::start();
    let dir = TestDir::new();
    let state = dir.path().join("state");
    let card = dir.path().join("card.json");
    let config_path = dir.path().join("config.toml");
    fs::copy(out.join("config.toml"), &config_path).unwrap();
    let cli = |args: &[&str], stdin: &str| {
        let out = run(
            Command::new(bins.join("tessera"))
                .args(["--bus", bus.address()])
                .args(args),
            stdin.as_bytes(),
            WAIT,
        );
        assert!(out.status.success(), "tessera {args:?}: {out:?}");
        stdout(&out).trim().to_owned()
    };

    let mut sim = Child::spawn(
        "sim",
        Command::new(bins.join("tessera-sim"))
            .args(["piv", "--vpcd", VPCD_ADDR_0, "--state"])
            .arg(&card),
        dir.path(),
    );
    sim.wait_for_line("ready", WAIT);
    let mut daemon = Child::spawn(
        "tesserad",
        Command::new(bins.join("tesserad"))
            .args(["--bus", bus.address(), "--state-dir"])
            .arg(&state)
            .arg("--config")
            .arg(&config_path),
        dir.path(),
    );
    bus.wait_for_name(BUS_NAME, WAIT);
    assert!(
        wait_until(WAIT, || cli(&["status"], "").contains(DEVICE_PATH)),
        "the card was not published"
    );
    let mut enroll = vec!["enroll"];
    enroll.extend_from_slice(ROOT);
    enroll.push("--pin-stdin");
    let enrollment = cli(&enroll, &format!("{PIN}\n"));
    let mut auth = vec!["authenticate"];
    auth.extend_from_slice(ROOT);
    auth.push("--pin-stdin");
    let token = cli(&auth, &format!("{PIN}\n"));
    cli(&["validate", "-"], &format!("{token}\n"));

    // A clean stop, so the database is checkpointed into one file and the card state is written.
    for (child, what) in [(&mut daemon, "tesserad"), (&mut sim, "tessera-sim")] {
        child.signal(nix::sys::signal::Signal::SIGTERM);
        let status = child.wait_exit(WAIT);
        assert!(status.is_some_and(|s| s.success()), "{what}: {status:?}");
    }
    // The lock names a pid of this run; the daemon makes a new one.
    fs::remove_file(state.join("tesserad.lock")).unwrap();
    let _ = fs::remove_dir_all(out.join("state"));
    copy_private(&state, &out.join("state"));
    fs::copy(&card, out.join("card.json")).unwrap();
    fs::write(out.join("token.jwt"), format!("{token}\n")).unwrap();
    fs::write(out.join("enrollment.txt"), format!("{enrollment}\n")).unwrap();
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

/// The schema version in the header of the database file at `path` (the big-endian "user version"
/// at offset 60, <https://www.sqlite.org/fileformat2.html#database_header>), read without SQLite, so
/// nothing is written next to the fixture. Only for a database with nothing left in its WAL.
fn header_version(path: &Path) -> u32 {
    let bytes = fs::read(path).unwrap();
    u32::from_be_bytes(bytes[60..64].try_into().unwrap())
}

/// `PRAGMA user_version` of the database at `path`, read without changing it.
fn schema_version(path: &Path) -> u32 {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// Copies the directory `from` to a new `to`, recursively: directories 0700, files 0600 (git keeps
/// no modes but the executable bit, and the daemon refuses what others may read or write).
fn copy_private(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_private(&entry.path(), &target);
        } else {
            assert!(kind.is_file(), "{:?} is not a file", entry.path());
            fs::copy(entry.path(), &target).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

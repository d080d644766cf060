//! Crash safety over real processes: SIGKILL `tesserad` in the middle of a load of authenticate,
//! validate and revoke calls, start it again on the same state directory, and check that nothing
//! acknowledged was lost — no revoked or consumed token validates again, and every token whose issue
//! was acknowledged (and not revoked or used) is still valid.
//!
//! Real parts: pcscd with the vpcd driver, the simulator, a private dbus-daemon, the release or debug
//! `tesserad` binary; the load is generated with the crate's own D-Bus proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tessera_client::ManagerProxy;
use zbus::zvariant::{ObjectPath, Value};

const DEVICE: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";
const ALICE: &str = "tessera-alice";

/// What the clients were told, by token.
#[derive(Default)]
struct Ledger {
    /// Issue acknowledged: (token, user).
    issued: Vec<(String, String)>,
    /// Revocation acknowledged.
    revoked: Vec<String>,
    /// A successful validation of a single-use token (it is consumed).
    consumed: Vec<String>,
    /// A revocation or single-use validation was sent: if unacknowledged, its outcome is unknown.
    ending: Vec<String>,
}

fn pin() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("pin", Value::from("123456"))])
}

fn start_daemon(dir: &common::TestDir, bus: &common::Bus) -> common::Child {
    let d = common::Child::spawn(
        "tesserad",
        Command::new(common::bin("tesserad"))
            .args(["--bus", bus.address(), "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(dir.path().join("tessera.toml")),
        dir.path(),
    );
    bus.wait_for_name("org.tessera.Tessera1", Duration::from_secs(20));
    d
}

async fn wait_for_device(m: &ManagerProxy<'_>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Authenticating answers NoDevice until the card is back and its session confirmed.
        match m.authenticate("", pin()).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the card did not come back: {e}"),
        }
    }
}

async fn load(address: String, ledger: Arc<Mutex<Ledger>>, worker: usize) {
    let Ok(conn) = zbus::connection::Builder::address(address.as_str())
        .unwrap()
        .build()
        .await
    else {
        return;
    };
    let Ok(m) = ManagerProxy::new(&conn).await else {
        return;
    };
    for i in 0.. {
        let user = if (worker + i) % 2 == 0 { "root" } else { ALICE };
        let Ok(token) = m.authenticate(user, pin()).await else {
            return;
        };
        ledger
            .lock()
            .unwrap()
            .issued
            .push((token.clone(), user.to_owned()));
        if user == ALICE || i % 3 == 0 {
            ledger.lock().unwrap().ending.push(token.clone());
        }
        if user == ALICE {
            // Alice's tokens are single use (configuration below).
            if m.validate_token(&token).await.is_ok() {
                ledger.lock().unwrap().consumed.push(token);
            }
        } else if i % 3 == 0 {
            if m.revoke_token(&token).await.is_ok() {
                ledger.lock().unwrap().revoked.push(token);
            }
        } else if m.validate_token(&token).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_when_the_daemon_is_killed() {
    let _pcsc = common::pcsc_lock();
    common::test_user(ALICE);
    let dir = common::TestDir::new();
    std::fs::write(
        dir.path().join("tessera.toml"),
        format!("[token]\nmax_live_per_user = 100000\n[users.{ALICE}.token]\nsingle_use = true\n"),
    )
    .unwrap();
    let bus = common::Bus::start();
    let mut sim = common::Child::spawn(
        "tessera-sim",
        Command::new(common::bin("tessera-sim"))
            .args(["piv", "--vpcd", common::VPCD_ADDR_0, "--state"])
            .arg(dir.path().join("card.json")),
        dir.path(),
    );
    sim.wait_for_line("ready", Duration::from_secs(20));
    let mut daemon = start_daemon(&dir, &bus);

    let conn = zbus::connection::Builder::address(bus.address())
        .unwrap()
        .build()
        .await
        .unwrap();
    let m = ManagerProxy::new(&conn).await.unwrap();
    let device = ObjectPath::try_from(DEVICE).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.enroll("", &device, pin()).await.is_err() {
        assert!(Instant::now() < deadline, "the card never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m.enroll(ALICE, &device, pin()).await.unwrap();

    for round in 0..3 {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let workers: Vec<_> = (0..6)
            .map(|w| tokio::spawn(load(bus.address().to_owned(), ledger.clone(), w)))
            .collect();
        // Let the load build up, then kill the daemon in the middle of it.
        tokio::time::sleep(Duration::from_millis(700 + 300 * round)).await;
        daemon.signal(Signal::SIGKILL);
        for w in workers {
            w.await.unwrap();
        }
        daemon.wait_exit(Duration::from_secs(10));
        daemon = start_daemon(&dir, &bus);
        let conn = zbus::connection::Builder::address(bus.address())
            .unwrap()
            .build()
            .await
            .unwrap();
        let m = ManagerProxy::new(&conn).await.unwrap();
        wait_for_device(&m).await;

        let ledger = std::mem::take(&mut *ledger.lock().unwrap());
        assert!(
            ledger.issued.len() >= 10 && !ledger.revoked.is_empty() && !ledger.consumed.is_empty(),
            "round {round}: too little load before the kill: {} issued, {} revoked, {} consumed",
            ledger.issued.len(),
            ledger.revoked.len(),
            ledger.consumed.len()
        );
        for token in ledger.revoked.iter().chain(&ledger.consumed) {
            match m.validate_token(token).await {
                Err(zbus::Error::MethodError(name, _, _)) => {
                    assert!(name.as_str().ends_with("TokenRevoked"), "{name}")
                }
                other => panic!("round {round}: an acknowledged revocation was lost: {other:?}"),
            }
        }
        let mut kept = 0;
        for (token, user) in &ledger.issued {
            if ledger.ending.contains(token) {
                // Revoked or consumed (checked above), or sent without an answer: either way.
                continue;
            }
            // Root's tokens may have been validated (not consumed); Alice's not yet used ones are
            // consumed by this first validation.
            let r = m.validate_token(token).await;
            assert!(
                r.is_ok(),
                "round {round}: an acknowledged token of {user} was lost: {r:?}"
            );
            kept += 1;
        }
        assert!(kept > 0, "round {round}: no live token to check");
        eprintln!(
            "round {round}: {} issued, {} revoked, {} consumed before the kill; all kept",
            ledger.issued.len(),
            ledger.revoked.len(),
            ledger.consumed.len()
        );
    }
    daemon.kill();
    sim.kill();
}

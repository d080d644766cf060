//! Bounded resources under a hostile local user, over real parts (pcscd with vpcd, two simulated
//! cards, a private bus, the real `tesserad`): length and option limits on D-Bus inputs, names that
//! are not the caller's refused without a look-up, and a churn of refreshes and authentications by
//! one user that leaves the daemon's memory and database bounded and other users served.
//!
//! The churn runs over one in-process bus connection with the daemon's own proxy (not 20,000 CLI
//! processes), so the test stays quick. Refresh has no rate limit in the default configuration of
//! this branch, so the loop needs no configuration.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_client::ManagerProxy;
use zbus::zvariant::{ObjectPath, Value};

use common::stack::{parse_err, Stack, DEVICE_PATH, PIN, WAIT};
use common::{bin, test_user, Child, VPCD_ADDR_1};

/// The card in the second vpcd reader, as the daemon publishes it.
const DEVICE_PATH_1: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2001";
const BOB: &str = "tessera-bob";
/// The churn: refreshes and authentications by root.
const REFRESHES: usize = 10_000;
const AUTHENTICATIONS: usize = 10_000;
/// Refresh chains running at once (each refreshes its own token, one call at a time).
const CHAINS: usize = 4;
/// Operations before the first measurement, enough to fill the dead-token cap (1,024 per user).
const WARMUP: usize = 600;

fn pin() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("pin", Value::from(PIN))])
}

async fn manager(stack: &Stack) -> ManagerProxy<'static> {
    manager_at(stack.bus_address()).await
}

async fn manager_at(address: &str) -> ManagerProxy<'static> {
    let conn = zbus::connection::Builder::address(address)
        .unwrap()
        .build()
        .await
        .unwrap();
    ManagerProxy::new(&conn).await.unwrap()
}

fn error_name(r: zbus::Result<impl std::fmt::Debug>) -> (String, String) {
    match r {
        Err(zbus::Error::MethodError(name, msg, _)) => {
            (name.as_str().to_owned(), msg.unwrap_or_default())
        }
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_and_too_many_options_are_invalid_arguments() {
    let (stack, _card) = Stack::with_card(&[], "");
    let m = manager(&stack).await;
    let long_name = "u".repeat(300);
    let invalid = "org.tessera.Tessera1.Error.InvalidArgument";

    let (name, msg) = error_name(m.authenticate(&long_name, pin()).await);
    assert_eq!(name, invalid, "{msg}");
    let (name, msg) = error_name(m.list_sessions(&long_name).await);
    assert_eq!(name, invalid, "{msg}");
    let (name, msg) = error_name(m.revoke_sessions(&long_name).await);
    assert_eq!(name, invalid, "{msg}");
    let (name, msg) = error_name(m.effective_policy(&long_name).await);
    assert_eq!(name, invalid, "{msg}");

    // 17 entries: refused for their number, before any key is looked at.
    let mut many = pin();
    let keys: Vec<String> = (0..16).map(|i| format!("x{i}")).collect();
    for k in &keys {
        many.insert(k.as_str(), Value::from("v"));
    }
    let (name, msg) = error_name(m.authenticate("", many).await);
    assert_eq!(name, invalid, "{msg}");
    assert!(msg.contains("at most 16"), "{msg}");

    // An over-long option value: a device path no device can have.
    let long_path = format!("{DEVICE_PATH}{}", "x".repeat(300));
    let device = ObjectPath::try_from(long_path.as_str()).unwrap();
    let opts = HashMap::from([("device", Value::from(device))]);
    let (name, msg) = error_name(m.authenticate("", opts).await);
    assert_eq!(name, invalid, "{msg}");

    let (name, msg) = error_name(m.validate_token(&"a".repeat(9000)).await);
    assert_eq!(name, "org.tessera.Tessera1.Error.TokenInvalid", "{msg}");
}

#[test]
fn a_name_not_the_callers_is_refused_without_a_lookup() {
    let (stack, _card) = Stack::with_card(&[], "");
    let alice = test_user("tessera-alice");
    // An account that does not exist: had the daemon looked it up, the answer would be NoSuchUser
    // (and would tell Alice which accounts exist).
    for args in [
        &["sessions", "tessera-no-such-user-h4"][..],
        &["policy", "show", "tessera-no-such-user-h4"][..],
        &[
            "authenticate",
            "--user",
            "tessera-no-such-user-h4",
            "--pin-stdin",
        ][..],
    ] {
        let (name, msg) = parse_err(&stack.cli_as(alice, args, PIN));
        assert_eq!(name, "AccessDenied", "{args:?}: {msg}");
    }
    // Her own name, and "", are hers.
    for args in [&["sessions", "tessera-alice"][..], &["sessions"][..]] {
        let out = stack.cli_as(alice, args, "");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
}

/// Resident set size of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `n` authentications of Bob (card in reader 1), one at a time; their latencies.
async fn bob_latencies(m: &ManagerProxy<'static>, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        m.authenticate(BOB, pin()).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

/// One authentication of the caller, tried again while the daemon answers Busy (a caller may have
/// at most 2 operations waiting for a device; the chains below have more).
async fn authenticate(m: &ManagerProxy<'static>) -> String {
    loop {
        match m.authenticate("", pin()).await {
            Ok(token) => return token,
            Err(e) => {
                let (name, _) = error_name(Err::<(), _>(e));
                assert!(name.ends_with("Busy"), "{name}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// `refreshes` refreshes by [`CHAINS`] token chains and, meanwhile, `auths` authentications. The
/// authentications supersede the oldest live tokens (the default limit is 32): a chain whose token
/// was superseded authenticates again.
async fn churn(m: &ManagerProxy<'static>, refreshes: usize, auths: usize) {
    let chains: Vec<_> = (0..CHAINS)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                let mut token = authenticate(&m).await;
                let mut done = 0;
                while done < refreshes / CHAINS {
                    match m.refresh_token(&token).await {
                        Ok(t) => {
                            token = t;
                            done += 1;
                        }
                        Err(e) => {
                            let (name, _) = error_name(Err::<(), _>(e));
                            assert!(name.ends_with("TokenRevoked"), "{name}");
                            token = authenticate(&m).await;
                        }
                    }
                }
            })
        })
        .collect();
    for _ in 0..auths {
        authenticate(m).await;
    }
    for c in chains {
        c.await.unwrap();
    }
}

#[test]
fn a_churn_of_refreshes_and_authentications_leaves_memory_and_store_bounded() {
    // The churn refreshes each chain as fast as it can: the per-lineage refresh interval (a
    // separate rule, tested in e2e_tokens) is off here.
    let (stack, _card) = Stack::with_card(&[], "[token]\nmin_refresh_interval = \"0s\"\n");
    test_user(BOB);
    // Bob's card is in the second reader, so his authentications never queue behind root's card.
    let mut bob_card = Child::spawn(
        "sim-bob",
        Command::new(bin("tessera-sim"))
            .args(["piv", "--vpcd", VPCD_ADDR_1, "--state"])
            .arg(stack.path("bob-card.json")),
        &stack.path(""),
    );
    bob_card.wait_for_line("ready", WAIT);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let m = rt.block_on(manager(&stack));
    rt.block_on(m.enroll("", &ObjectPath::try_from(DEVICE_PATH).unwrap(), pin()))
        .unwrap();
    let bob_device = ObjectPath::try_from(DEVICE_PATH_1).unwrap();
    let deadline = Instant::now() + WAIT;
    while rt.block_on(m.enroll(BOB, &bob_device, pin())).is_err() {
        assert!(Instant::now() < deadline, "Bob's card never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = stack.daemon.as_ref().unwrap().pid();
    rt.block_on(churn(&m, WARMUP, WARMUP));

    // Bob's client has its own thread, runtime and connection, as another user's process would:
    // his latency is then the daemon's (and the machine's), not this test's own queueing.
    let (idle_tx, idle_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let bob = {
        let address = stack.bus_address().to_owned();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _in_runtime = rt.enter();
            let bob = rt.block_on(manager_at(&address));
            idle_tx
                .send(p50(rt.block_on(bob_latencies(&bob, 40))))
                .unwrap();
            let mut busy = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                // A few samples at a time, so Bob's own calls add little to the load.
                busy.extend(rt.block_on(bob_latencies(&bob, 3)));
                std::thread::sleep(Duration::from_millis(200));
            }
            busy
        })
    };
    let idle = idle_rx.recv().unwrap();
    let (rss_before, rows_before) = (rss(pid), stack.token_rows());

    let started = Instant::now();
    rt.block_on(churn(&m, REFRESHES, AUTHENTICATIONS));
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let busy = bob.join().unwrap();
    let (rss_after, rows_after) = (rss(pid), stack.token_rows());
    let busy_p50 = p50(busy.clone());
    eprintln!(
        "churn of {REFRESHES} refreshes and {AUTHENTICATIONS} authentications in {took:?}: \
         RSS {:.1} -> {:.1} MiB, token rows {rows_before} -> {rows_after}; Bob's Authenticate \
         p50 idle {idle:?}, during the churn {busy_p50:?} (n={})",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        busy.len()
    );
    // Root: 32 live tokens at most (the default limit) and 1,024 dead; Bob: what he was issued.
    assert!(
        rows_after <= 32 + 1024 + (40 + busy.len() as i64),
        "token rows grew without bound: {rows_before} -> {rows_after}"
    );
    // 20,000 dead records of ~1.5 KiB each would add ~30 MiB; allow for allocator slack.
    assert!(
        rss_after < rss_before + 4 * 1048576,
        "memory grew without bound: {rss_before} -> {rss_after} bytes"
    );
    // Bob's latency during the churn is a performance figure (target: within 2x of idle), reported
    // above and in the closing note, not asserted: on a 2-core machine shared with the debug
    // daemon, both simulators, pcscd and dbus-daemon, a timed assertion measures the machine.
}

//! Throughput of the calls that must be durable before they answer: single-use ValidateToken (each
//! consumes its token) and RevokeToken, with 16 concurrent clients, next to a plain ValidateToken and
//! the trivial `org.freedesktop.DBus.Peer.Ping` on the same daemon and bus in the same run.
//!
//! The daemon runs in this process (release build) on a private `dbus-daemon`; the simulated card is
//! attached to the service directly, since only token issue touches it and issue is not measured
//! here. Every consumed or revoked token is committed to SQLite (WAL, synchronous=FULL) before its
//! reply: concurrent calls share commits (group commit), which is what this measures.
//!
//! Run: `cargo bench -p tesserad --bench policy` (part of `make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tessera::policy::config::Config;
use tessera::service::DeviceAttach;
use tessera::transport::worker::DirectConnection;
use tessera_client::ManagerProxy;
use tessera_sim::piv::{PivCard, SimOptions};
use tesserad::{BusChoice, Daemon, DeviceSource, Options};
use zbus::zvariant::{ObjectPath, Value};

const CLIENTS: usize = 16;
/// Tokens per single-use or revocation round.
const TOKENS: usize = 6000;
const ROUNDS: usize = 3;

async fn clients(address: &str, n: usize) -> Vec<(zbus::Connection, ManagerProxy<'static>)> {
    let mut v = Vec::new();
    for _ in 0..n {
        let conn = zbus::connection::Builder::address(address)
            .unwrap()
            .build()
            .await
            .unwrap();
        let m = ManagerProxy::new(&conn).await.unwrap();
        v.push((conn, m));
    }
    v
}

async fn issue(m: &ManagerProxy<'_>, n: usize) -> Vec<String> {
    let pin = || HashMap::from([("pin", Value::from("123456"))]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(m.authenticate("", pin()).await.unwrap());
    }
    out
}

/// Runs `op` over `tokens` split across the clients; returns calls per second.
async fn run_tokens<F, Fut>(
    clients: &[(zbus::Connection, ManagerProxy<'static>)],
    tokens: Vec<String>,
    op: F,
) -> f64
where
    F: Fn(ManagerProxy<'static>, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let n = tokens.len();
    let per = n.div_ceil(clients.len());
    let chunks: Vec<Vec<String>> = tokens.chunks(per).map(<[String]>::to_vec).collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for ((_, m), chunk) in clients.iter().zip(chunks) {
        let m = m.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            for t in chunk {
                assert!(op(m.clone(), t).await, "call failed");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Calls `op` from every client for `window`; returns calls per second.
async fn run_for<F, Fut>(
    clients: &[(zbus::Connection, ManagerProxy<'static>)],
    window: Duration,
    op: F,
) -> f64
where
    F: Fn(zbus::Connection, ManagerProxy<'static>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (conn, m) in clients {
        let (conn, m, op) = (conn.clone(), m.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while start.elapsed() < window {
                assert!(op(conn.clone(), m.clone()).await, "call failed");
                calls += 1;
            }
            calls
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let bus = common::Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let config =
        Config::parse("[token]\nmax_live_per_user = 1000000\nlifetime = \"1h\"\n").unwrap();
    let mut opts = Options::new(
        BusChoice::Address(bus.address().to_owned()),
        dir.path().join("state"),
        config,
    );
    opts.devices = DeviceSource::External;
    let daemon = Daemon::start(opts).await.unwrap();
    let svc = daemon.service().clone();
    svc.device_added(DeviceAttach {
        reader: "Bench Reader".into(),
        event_count: 1,
        source_instance: Some("sim".into()),
        transport: "sim".into(),
        connection: Box::new(DirectConnection(
            PivCard::in_memory(&SimOptions::default()).unwrap(),
        )),
    })
    .await
    .unwrap();
    let cl = clients(bus.address(), CLIENTS).await;
    let m0 = &cl[0].1;
    m0.enroll(
        "",
        &ObjectPath::try_from("/org/tessera/Tessera1/devices/Bench_20Reader").unwrap(),
        HashMap::from([("pin", Value::from("123456"))]),
    )
    .await
    .unwrap();

    let window = Duration::from_secs(2);
    let (mut single, mut revoke, mut validate, mut ping) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // Multi-use tokens: plain validation and revocation.
        svc.reload(
            Config::parse("[token]\nmax_live_per_user = 1000000\nlifetime = \"1h\"\n").unwrap(),
        );
        let tokens = issue(m0, TOKENS).await;
        let probe = tokens[0].clone();
        validate.push(
            run_for(&cl, window, move |_, m| {
                let t = probe.clone();
                async move { m.validate_token(&t).await.is_ok() }
            })
            .await,
        );
        ping.push(
            run_for(&cl, window, |conn, _| async move {
                let peer = zbus::fdo::PeerProxy::builder(&conn)
                    .destination("org.tessera.Tessera1")
                    .unwrap()
                    .path("/org/tessera/Tessera1/Manager")
                    .unwrap()
                    .cache_properties(zbus::proxy::CacheProperties::No)
                    .build()
                    .await
                    .unwrap();
                peer.ping().await.is_ok()
            })
            .await,
        );
        revoke.push(
            run_tokens(&cl, tokens, |m, t| async move {
                m.revoke_token(&t).await.is_ok()
            })
            .await,
        );
        // Single-use tokens: each validation consumes one, durably.
        svc.reload(
            Config::parse(
                "[token]\nmax_live_per_user = 1000000\nlifetime = \"1h\"\nsingle_use = true\n",
            )
            .unwrap(),
        );
        let tokens = issue(m0, TOKENS).await;
        single.push(
            run_tokens(&cl, tokens.clone(), |m, t| async move {
                m.validate_token(&t).await.is_ok()
            })
            .await,
        );
        // Every one of them is used up now.
        assert!(m0.validate_token(&tokens[TOKENS / 2]).await.is_err());
        eprintln!(
            "round {round}: single-use {:.0}/s, revoke {:.0}/s, validate {:.0}/s, ping {:.0}/s",
            single[round], revoke[round], validate[round], ping[round]
        );
    }
    println!("\n### Durable calls, {CLIENTS} clients ({ROUNDS} rounds, medians)\n");
    println!("| call | calls/s |");
    println!("|---|---|");
    println!(
        "| ValidateToken, single-use (consumes, durable) | {:.0} |",
        median(single)
    );
    println!("| RevokeToken (durable) | {:.0} |", median(revoke));
    println!("| ValidateToken, multi-use | {:.0} |", median(validate));
    println!("| Peer.Ping (trivial) | {:.0} |", median(ping));
    daemon.stop().await;
}

//! StartAuthentication with the PIN given up front, as a client of the request API uses it: the
//! call, then the request's signals (unicast to this connection, none before the reply naming the
//! object) up to its terminal one, timed call → Completed received.
//!
//! Two clients: a long-lived one (a greeter, the coming PAM module in a login manager) holding one
//! subscription to the Request signals for all its requests, and one that subscribes per request
//! as the `tessera` CLI does (tessera-client's `Listener`: one AddMatch before the call, and a
//! RemoveMatch after it).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::{FutureExt as _, StreamExt as _};
use tessera_client::names::{BUS_NAME, REQUESTS_PATH, REQUEST_INTERFACE};
use tessera_client::request::{Listener, Update};
use tessera_client::ManagerProxy;
use tokio::sync::Mutex;
use zbus::message::Type;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, MatchRule, MessageStream};

use crate::auth::{pin_options, AuthResults, Client};
use crate::cpu::{on_cpu, self_on_cpu};
use crate::report::verdict;
use crate::stats::{median, ms, ms_signed, percentile_f, us, Percentiles};
use crate::throughput::CpuPids;

/// Bound on the wait for a request's terminal signal: a lost signal fails the bench, not hangs it.
pub const OUTCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// One subscription to every request's signals, made once before the first request.
pub struct RequestSignals {
    // A tokio mutex: it is held across the awaits of one request.
    stream: Mutex<MessageStream>,
}

/// One request, call → its terminal signal.
pub struct Outcome {
    pub elapsed: Duration,
    pub token: String,
    /// The Progress states signalled before Completed, in order.
    pub states: Vec<String>,
}

impl RequestSignals {
    /// Subscribes to the daemon's Request signals under [`REQUESTS_PATH`].
    pub async fn subscribe(conn: &Connection) -> Result<RequestSignals> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(BUS_NAME)?
            .interface(REQUEST_INTERFACE)?
            .path_namespace(REQUESTS_PATH)?
            .build();
        let stream = MessageStream::for_match_rule(rule, conn, None)
            .await
            .context("subscribing to the Request signals")?;
        Ok(RequestSignals {
            stream: Mutex::new(stream),
        })
    }

    /// Drops the signals queued since the last request on this subscription (those of the requests
    /// other clients on this connection made). zbus holds at most 64 messages per stream and, when
    /// one is full, stops reading the connection altogether: the other client would then wait for
    /// its own Completed forever.
    pub async fn drain(&self) {
        let mut stream = self.stream.lock().await;
        while stream.next().now_or_never().is_some() {}
    }

    /// StartAuthentication of `user` with the PIN, then its signals until Completed.
    pub async fn authenticate(&self, manager: &ManagerProxy<'_>, user: &str) -> Result<Outcome> {
        let mut stream = self.stream.lock().await;
        let t = Instant::now();
        let path = manager
            .start_authentication(user, pin_options())
            .await
            .context("StartAuthentication")?;
        let mut states = Vec::new();
        loop {
            let msg = tokio::time::timeout(OUTCOME_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    anyhow!("no Completed or Failed of {path} within {OUTCOME_TIMEOUT:?}")
                })?
                .ok_or_else(|| anyhow!("the bus connection closed during {path}"))??;
            let header = msg.header();
            // Requests are never numbered twice, so a signal of another path is an earlier one's.
            if header.path().map(|p| p.as_str()) != Some(path.as_str()) {
                continue;
            }
            match header.member().map(|m| m.as_str()) {
                Some("Progress") => {
                    let (state, _details): (String, HashMap<String, OwnedValue>) =
                        msg.body().deserialize()?;
                    states.push(state);
                }
                Some("Completed") => {
                    let (token,): (String,) = msg.body().deserialize()?;
                    return Ok(Outcome {
                        elapsed: t.elapsed(),
                        token,
                        states,
                    });
                }
                Some("Failed") => {
                    let (name, message): (String, String) = msg.body().deserialize()?;
                    bail!("{path} failed: {name}: {message}");
                }
                _ => {}
            }
        }
    }
}

/// The CLI's way: subscribe (tessera-client [`Listener`]), StartAuthentication, follow to the end;
/// timed from the subscription on, since a fresh client pays for it.
pub async fn authenticate_subscribing(
    conn: &Connection,
    manager: &ManagerProxy<'_>,
    user: &str,
) -> Result<Outcome> {
    let t = Instant::now();
    let listener = Listener::new(conn).await?;
    let path = manager
        .start_authentication(user, pin_options())
        .await
        .context("StartAuthentication")?;
    let mut request = listener.follow(conn, path).await?;
    let mut states = Vec::new();
    loop {
        let update = tokio::time::timeout(OUTCOME_TIMEOUT, request.next())
            .await
            .map_err(|_| anyhow!("no outcome of a request within {OUTCOME_TIMEOUT:?}"))??;
        match update {
            Some(Update::Progress(p)) => states.push(p.state().to_owned()),
            Some(Update::Completed(token)) => {
                return Ok(Outcome {
                    elapsed: t.elapsed(),
                    token: token.as_str().to_owned(),
                    states,
                })
            }
            Some(Update::Failed(e)) => bail!("request failed: {e}"),
            None => bail!("the request ended without an outcome"),
        }
    }
}

/// Target: StartAuthentication's p50 within this of Authenticate's (one more signal).
pub const TARGET_EXTRA: Duration = Duration::from_micros(200);

/// The summary rows: StartAuthentication both ways, beside Authenticate's p50.
pub fn rows(s: &mut String, a: &AuthResults) {
    let auth = Percentiles::of(&a.auth).p50;
    let start = Percentiles::of(&a.start);
    let subscribing = Percentiles::of(&a.start_subscribing);
    let _ = writeln!(
        s,
        "| StartAuthentication, PIN up front, call → Completed, one subscription for all requests, \
         alternating with Authenticate (n={}) | {} (p50 {} vs Authenticate) | p50 ≤ \
         Authenticate's + {} | {} |",
        a.start.len(),
        start.summary(),
        ms_signed(start.p50, auth),
        ms(TARGET_EXTRA),
        verdict(start.p50 <= auth + TARGET_EXTRA)
    );
    let _ = writeln!(
        s,
        "| The same, subscribing per request as the CLI does (AddMatch first; n={}) | {} (p50 {} \
         vs Authenticate) | | |",
        a.start_subscribing.len(),
        subscribing.summary(),
        ms_signed(subscribing.p50, auth),
    );
}

/// The section: the paired differences, and the signals a request sends.
pub fn section(s: &mut String, a: &AuthResults) {
    let mut d = a.start_minus_auth.clone();
    d.sort_by(f64::total_cmp);
    let at = |p: f64| percentile_f(&d, p);
    let _ = writeln!(s, "\n### StartAuthentication beside Authenticate\n");
    let _ = writeln!(
        s,
        "Each iteration runs Authenticate, StartAuthentication on the bench's one subscription and \
         StartAuthentication subscribing for itself, in one of the six orders in turn. \
         StartAuthentication minus the Authenticate of the same iteration (n={}): p10 {:+.3} ms · \
         p50 **{:+.3} ms** · p90 {:+.3} ms. Before Completed the request signalled: {}.",
        d.len(),
        at(10.0),
        at(50.0),
        at(90.0),
        if a.start_states.is_empty() {
            "nothing".to_owned()
        } else {
            a.start_states
                .iter()
                .map(|st| format!("Progress \"{st}\""))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        s,
        "\nCPU per call (µs, on-CPU time from schedstat), {CPU_BATCHES} batches of \
         {CPU_PER_BATCH} calls of one way at a time, the ways in turn (medians of the batches):\n"
    );
    let _ = writeln!(s, "| Way | tesserad | dbus-daemon | the bench's client |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (way, c) in &a.cpu {
        let name = match way {
            Way::Authenticate => "Authenticate",
            Way::Start => "StartAuthentication, one subscription",
            Way::StartSubscribing => "StartAuthentication, subscribing per request",
        };
        let _ = writeln!(
            s,
            "| {name} | {:.1} | {:.1} | {:.1} |",
            us(c.daemon),
            us(c.bus),
            us(c.client)
        );
    }
}

/// CPU batches per way, and calls per batch.
pub const CPU_BATCHES: usize = 4;
pub const CPU_PER_BATCH: usize = 50;
/// Quiet before each CPU reading, so a batch's trailing work (removing the last request object)
/// counts for it and not for the next one.
const CPU_SETTLE: Duration = Duration::from_millis(30);

/// The three ways to authenticate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Way {
    /// v1 Authenticate.
    Authenticate,
    /// StartAuthentication on one subscription.
    Start,
    /// StartAuthentication subscribing for itself.
    StartSubscribing,
}

pub const WAYS: [Way; 3] = [Way::Authenticate, Way::Start, Way::StartSubscribing];

/// The CPU one call cost each process, per way: medians over [`CPU_BATCHES`] batches.
#[derive(Clone, Copy, Default)]
pub struct CpuPerCall {
    pub daemon: Duration,
    pub bus: Duration,
    pub client: Duration,
}

/// Batches of [`CPU_PER_BATCH`] calls of one way at a time, the ways in turn, with the CPU time
/// tesserad, dbus-daemon and the bench spent per call. Not interleaved call by call, unlike the
/// latencies: a request's object is removed after its Completed, and that work must count for it.
pub fn measure_cpu(
    client: &Client<'_>,
    pids: CpuPids,
    tokens: &mut Vec<String>,
) -> Result<Vec<(Way, CpuPerCall)>> {
    let mut batches: Vec<(Way, CpuPerCall)> = Vec::new();
    for batch in 0..CPU_BATCHES {
        for k in 0..WAYS.len() {
            let way = WAYS[(batch + k) % WAYS.len()];
            std::thread::sleep(CPU_SETTLE);
            let before = sample(pids)?;
            for _ in 0..CPU_PER_BATCH {
                tokens.push(client.authenticate_by(way)?.token);
            }
            std::thread::sleep(CPU_SETTLE);
            let after = sample(pids)?;
            let n = u32::try_from(CPU_PER_BATCH).unwrap_or(u32::MAX);
            batches.push((
                way,
                CpuPerCall {
                    daemon: after.daemon.saturating_sub(before.daemon) / n,
                    bus: after.bus.saturating_sub(before.bus) / n,
                    client: after.client.saturating_sub(before.client) / n,
                },
            ));
        }
    }
    Ok(WAYS
        .iter()
        .map(|&way| {
            let of = |f: fn(&CpuPerCall) -> Duration| -> Duration {
                let v: Vec<Duration> = batches
                    .iter()
                    .filter(|(w, _)| *w == way)
                    .map(|(_, c)| f(c))
                    .collect();
                median(&v)
            };
            (
                way,
                CpuPerCall {
                    daemon: of(|c| c.daemon),
                    bus: of(|c| c.bus),
                    client: of(|c| c.client),
                },
            )
        })
        .collect())
}

fn sample(pids: CpuPids) -> Result<CpuPerCall> {
    Ok(CpuPerCall {
        daemon: on_cpu(pids.daemon).ok_or_else(|| anyhow!("no schedstat for tesserad"))?,
        bus: on_cpu(pids.bus).ok_or_else(|| anyhow!("no schedstat for dbus-daemon"))?,
        client: self_on_cpu().ok_or_else(|| anyhow!("no schedstat for the bench"))?,
    })
}

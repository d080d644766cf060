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
use futures_util::StreamExt as _;
use tessera_client::names::{BUS_NAME, REQUESTS_PATH, REQUEST_INTERFACE};
use tessera_client::request::{Listener, Update};
use tessera_client::ManagerProxy;
use tokio::sync::Mutex;
use zbus::message::Type;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, MatchRule, MessageStream};

use crate::auth::{pin_options, AuthResults};
use crate::report::verdict;
use crate::stats::{ms, ms_signed, percentile_f, Percentiles};

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
}

//! Part 3, card pulled -> `TokenRevoked`: pcscd's own detection time, and what the daemon adds
//! to it.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use futures_util::StreamExt;
use nix::sys::signal::{self, Signal};
use pcsc::{ReaderState, Scope, State};
use zbus::Connection;

use crate::auth::Client;
use crate::procs::{child_pid, Proc};
use crate::stack::{wait_for_device, SimCard};
use crate::stats::{ms, signed_ms};
use crate::{READER, START_TIMEOUT, TERM_GRACE};

pub const PULLS: usize = 10;
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Pull {
    /// SIGTERM → the simulator exited (its socket to vpcd closed).
    pub sim_exit: Duration,
    /// SIGTERM → pcscd reported the card gone (to a SCardGetStatusChange waiter).
    pub pcscd: Duration,
    /// pcscd's report → the TokenRevoked signal at the client, in ms. Both the daemon's monitor and
    /// the bench's watcher are woken by pcscd at once; when the watcher thread is scheduled later than
    /// the whole daemon path, this is negative.
    pub extra_ms: f64,
    /// Simulator started again → the daemon published the device again.
    pub reinsert: Duration,
}

pub struct PullResults {
    pub pulls: Vec<Pull>,
    /// Sequential RevokeToken calls (logout) of the earlier tokens.
    pub revoke: Vec<Duration>,
}

pub fn measure_pulls(
    client: &Client<'_>,
    conn: &Connection,
    daemon: &Proc,
    sim: &mut SimCard<'_>,
    earlier: &[String],
) -> Result<PullResults> {
    // One live token per device session, as in real use: otherwise the first pull revokes hundreds.
    let mut revoke = Vec::new();
    for token in earlier {
        let t = Instant::now();
        client.rt.block_on(client.manager.revoke_token(token))?;
        revoke.push(t.elapsed());
    }
    let mut signals = client.rt.block_on(client.manager.receive_token_revoked())?;
    let mut pulls = Vec::new();
    for i in 0..PULLS {
        let token = client.authenticate()?;
        let jti = client.jti(&token)?;
        let mut proc = sim
            .proc
            .take()
            .ok_or_else(|| anyhow!("no simulator running"))?;
        let (armed_tx, armed_rx) = mpsc::channel();
        let watcher = thread::spawn(move || watch_removal(&armed_tx));
        match armed_rx.recv_timeout(START_TIMEOUT) {
            Ok(()) => {}
            Err(_) => {
                return Err(match watcher.join() {
                    Ok(Err(e)) => e.context("watching the reader"),
                    _ => anyhow!("the reader watcher did not start"),
                })
            }
        }
        let child = proc
            .take_child()
            .ok_or_else(|| anyhow!("simulator already reaped"))?;
        let pid = child_pid(&child)?;
        let (exit_tx, exit_rx) = mpsc::channel();
        let waiter = thread::spawn(move || {
            let mut child = child;
            let status = child.wait();
            let _ = exit_tx.send((Instant::now(), status));
        });
        // Let both helper threads block in their waits before the card goes.
        thread::sleep(Duration::from_millis(20));
        let kill = Instant::now();
        let _ = signal::kill(pid, Signal::SIGTERM);
        let (signal_at, reason) = client
            .rt
            .block_on(async {
                tokio::time::timeout(SIGNAL_TIMEOUT, async {
                    while let Some(sig) = signals.next().await {
                        let at = Instant::now();
                        let args = sig.args()?;
                        if args.jti == jti {
                            return anyhow::Ok((at, args.reason.to_owned()));
                        }
                    }
                    bail!("the TokenRevoked stream ended")
                })
                .await
            })
            .map_err(|_| anyhow!("no TokenRevoked within {SIGNAL_TIMEOUT:?} of pull {i}"))??;
        let exited = match exit_rx.recv_timeout(TERM_GRACE) {
            Ok((at, status)) => {
                status.context("waiting for the simulator")?;
                at
            }
            Err(_) => {
                let _ = signal::kill(pid, Signal::SIGKILL);
                let _ = waiter.join();
                bail!("the simulator ignored SIGTERM for {TERM_GRACE:?}");
            }
        };
        let _ = waiter.join();
        let removed = watcher
            .join()
            .map_err(|_| anyhow!("the reader watcher panicked"))??;
        ensure!(reason == "device-removed", "TokenRevoked reason {reason:?}");
        ensure!(
            client
                .rt
                .block_on(client.manager.validate_token(&token))
                .is_err(),
            "the token of a pulled card still validates"
        );
        drop(proc);
        let t = Instant::now();
        sim.insert()?;
        wait_for_device(client.rt, conn, daemon)?;
        let pull = Pull {
            sim_exit: exited.saturating_duration_since(kill),
            pcscd: removed.saturating_duration_since(kill),
            extra_ms: signed_ms(signal_at, removed),
            reinsert: t.elapsed(),
        };
        eprintln!(
            "e2e:   pull {i}: sim exit {}, pcscd {}, +daemon {:+.3} ms, reinsert {}",
            ms(pull.sim_exit),
            ms(pull.pcscd),
            pull.extra_ms,
            ms(pull.reinsert)
        );
        pulls.push(pull);
    }
    Ok(PullResults { pulls, revoke })
}

/// Waits on its own PC/SC context until pcscd reports the card in [`READER`] gone; returns when.
/// Sends on `armed` once it knows the card is present, just before it blocks.
pub fn watch_removal(armed: &mpsc::Sender<()>) -> Result<Instant> {
    let ctx = pcsc::Context::establish(Scope::User).context("pcsc: establishing a context")?;
    let mut states = [ReaderState::new(READER.to_owned(), State::UNAWARE)];
    // With an UNAWARE current state this returns at once, with the reader's state.
    ctx.get_status_change(Some(START_TIMEOUT), &mut states)
        .context("pcsc: reader state")?;
    let [state] = &mut states;
    ensure!(
        state.event_state().contains(State::PRESENT),
        "no card in {READER:?} before the pull ({:?})",
        state.event_state()
    );
    state.sync_current_state();
    armed.send(()).context("arming the watcher")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "pcscd did not report the card removal within {START_TIMEOUT:?}"
        );
        match ctx.get_status_change(Some(left), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(e).context("pcsc: waiting for the removal"),
        }
        let now = Instant::now();
        let [state] = &mut states;
        if !state.event_state().contains(State::PRESENT) {
            return Ok(now);
        }
        state.sync_current_state();
    }
}

//! `tessera-sim`: runs a simulated card or security key in the foreground. Thin: parsing options,
//! signals and logging; the card is [`tessera_sim::piv`], the key [`tessera_sim::fido`], their
//! transports [`tessera_sim::vpcd`] and [`tessera_sim::fido::hid_socket`]. The `fido` subcommand's
//! wiring is in `fido_cmd.rs`.

mod fido_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use tessera_sim::fido::touch::{send_control, ControlRequest};
use tessera_sim::piv::{CardProfile, Fault, PivCard, SimOptions};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "tessera-sim",
    version,
    about = "Simulated smartcards and security keys for Tessera's tests and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A PIV card (NIST SP 800-73-4) inserted into vsmartcard's virtual reader (pcscd + vpcd).
    ///
    /// Prints `ready` on stdout once connected to vpcd; SIGTERM or SIGINT pulls the card out and
    /// exits 0. The card (keys, certificates, PIN, PUK, counters, serial, GUID) lives in the --state
    /// file: it is created on first start and the same card comes back on every later start.
    Piv {
        /// vpcd address (reader "Virtual PCD 00 00" listens on 127.0.0.1:35963, "00 01" on 35964).
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// The card's state file (created 0600 if missing).
        #[arg(long)]
        state: PathBuf,
        /// PIN of a NEW card (6-8 digits); ignored when the state file exists.
        #[arg(long, default_value = "123456")]
        pin: String,
        /// PUK of a NEW card; ignored when the state file exists.
        #[arg(long, default_value = "12345678")]
        puk: String,
        /// PIN retry counter of a NEW card (1-15); ignored when the state file exists.
        #[arg(long, default_value_t = 3)]
        pin_retries: u8,
        /// Test fault for the daemon's tests: `remove-on-sign` (pull the card out instead of answering
        /// a signature request, then exit 0) or `stall-on-sign=MILLIS` (wait before signing); neither
        /// applies to the 9E key, which identifies the card at insertion. `no-piv`: a card without
        /// the PIV application (every command answers 6A82).
        #[arg(long)]
        fault: Option<Fault>,
        /// How strictly the card keeps to the specifications: `spec` (SELECT only with the full or
        /// right-truncated AID of SP 800-73-4; no response data to a command without Le, 61xx
        /// instead) or `yubikey` (also SELECT with the NIST RID alone, and data without Le, as
        /// YubiKeys answer and yubico-piv-tool expects).
        #[arg(long, default_value = "spec")]
        profile: CardProfile,
    },
    /// A FIDO2/U2F security key (CTAP 2.1) on a HID socket and/or as an NFC card in a vpcd reader.
    Fido(fido_cmd::FidoArgs),
    /// One touch for a key running with `--touch manual`: exits 0 once a request of the key took it
    /// (at once if one is waiting for a touch; it waits up to 30 s for one to ask, then fails).
    Touch {
        /// The key's --control socket.
        #[arg(long)]
        control: PathBuf,
    },
    /// Unplugs and replugs a running key: clears PIN_AUTH_BLOCKED, forgets its PIN token.
    PowerCycle {
        /// The key's --control socket.
        #[arg(long)]
        control: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Piv {
            vpcd,
            state,
            pin,
            puk,
            pin_retries,
            fault,
            profile,
        } => run_piv(vpcd, state, pin, puk, pin_retries, fault, profile),
        Cmd::Fido(args) => fido_cmd::run(args, stop_on_signals()?),
        Cmd::Touch { control } => send_control(&control, ControlRequest::Touch),
        Cmd::PowerCycle { control } => send_control(&control, ControlRequest::PowerCycle),
    }
}

fn run_piv(
    vpcd: String,
    state: PathBuf,
    pin: String,
    puk: String,
    pin_retries: u8,
    fault: Option<Fault>,
    profile: CardProfile,
) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let options = SimOptions {
        pin: Zeroizing::new(pin),
        puk: Zeroizing::new(puk),
        pin_retries,
        fault,
        profile,
    };
    let mut card = PivCard::open(&state, &options)
        .with_context(|| format!("opening card state {}", state.display()))?;
    let exit = tessera_sim::vpcd::run(&vpcd, &mut card, &stop)
        .with_context(|| format!("serving vpcd at {vpcd}"))?;
    tracing::info!("card out: {exit:?}");
    Ok(())
}

/// A flag set by SIGTERM or SIGINT. The signals are blocked in this thread (and so in every thread
/// spawned later) and taken synchronously by a waiter thread with sigwait, which needs no unsafe
/// signal handler.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("blocking SIGTERM/SIGINT")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_ok() {
                flag.store(true, Ordering::Relaxed);
            }
        })
        .context("spawning the signal thread")?;
    Ok(stop)
}

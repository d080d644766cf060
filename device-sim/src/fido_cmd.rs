//! `tessera-sim fido`: its options and the wiring of one key to its transports (HID socket, vpcd),
//! its touch source and its control socket.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use tessera_sim::fido::nfc::FidoCard;
use tessera_sim::fido::presence::{KeyHandle, TOUCH_TIMEOUT};
use tessera_sim::fido::touch::{ControlRequest, ControlServer, TouchMode, TouchSource};
use tessera_sim::fido::{hid_socket, FidoFault, FidoKey, FidoOptions, DEFAULT_AAGUID};
use tessera_sim::vpcd;

/// How long transports get to close their connections after a stop before the process exits anyway
/// (a vpcd answer may be waiting for a touch that never comes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct FidoArgs {
    /// The key's state file (keys, PIN, retries, counter; created 0600 if missing).
    #[arg(long)]
    state: PathBuf,
    /// Serve the key as a HID device on this Unix socket (one 64-byte report per message).
    #[arg(long)]
    hid_socket: Option<PathBuf>,
    /// Also (or instead) insert the key as an NFC card into the vpcd reader at this address.
    #[arg(long)]
    vpcd: Option<String>,
    /// PIN of a NEW key; ignored when the state file exists.
    #[arg(long, default_value = "123456", conflicts_with = "no_pin")]
    pin: String,
    /// A NEW key without a PIN set.
    #[arg(long)]
    no_pin: bool,
    /// PIN retries of a NEW key.
    #[arg(long, default_value_t = 8)]
    retries: u8,
    /// An old key that speaks only U2F (CTAP1): no CTAP2, no CBOR capability.
    #[arg(long)]
    u2f_only: bool,
    /// User presence: `auto` (touched at once; over NFC the tap), `delay:MS`, or `manual`
    /// (one touch per `tessera-sim touch --control SOCKET`).
    #[arg(long, default_value = "auto")]
    touch: TouchMode,
    /// Control socket for `tessera-sim touch` and `tessera-sim power-cycle` (Unix, 0600).
    #[arg(long)]
    control: Option<PathBuf>,
    /// The AAGUID of a NEW key (32 hex digits; default "TesseraSimFido01" in ASCII).
    #[arg(long, value_parser = parse_aaguid)]
    aaguid: Option<[u8; 16]>,
    /// Signature algorithms offered, in order: `es256`, `eddsa`.
    #[arg(long, default_value = "es256", value_parser = parse_algorithms)]
    algorithms: Algorithms,
    /// Test fault: stall-on-sign=MS, remove-on-sign, counter-regression, malformed-cbor,
    /// truncated-message, oversized-message ("sign": getAssertion and U2F AUTHENTICATE; the
    /// framing faults apply to CTAPHID only).
    #[arg(long)]
    fault: Option<FidoFault>,
}

/// COSE algorithm identifiers (RFC 9053 §2.1: ES256 −7; RFC 8152 §8.2: EdDSA −8).
#[derive(Clone, Debug)]
struct Algorithms(Vec<i64>);

fn parse_aaguid(s: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "an AAGUID is 16 bytes (32 hex digits)".to_owned())
}

fn parse_algorithms(s: &str) -> Result<Algorithms, String> {
    let algs = s
        .split(',')
        .map(|name| match name.trim() {
            "es256" => Ok(-7),
            "eddsa" => Ok(-8),
            other => Err(format!("unknown algorithm {other:?} (es256, eddsa)")),
        })
        .collect::<Result<Vec<i64>, String>>()?;
    if algs.is_empty() {
        return Err("no algorithm".into());
    }
    Ok(Algorithms(algs))
}

/// One transport's server: runs until the stop flag, calling `ready` once it is up.
type Transport =
    Box<dyn FnOnce(&KeyHandle, &Arc<AtomicBool>, &dyn Fn()) -> anyhow::Result<()> + Send>;

/// Prints `ready` once every transport is up.
struct ReadyGate(AtomicUsize);

impl ReadyGate {
    fn arrive(&self) {
        if self.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            vpcd::announce_ready();
        }
    }
}

/// Runs the key until `stop` (SIGTERM/SIGINT, or a fault pulling the key out).
pub fn run(args: FidoArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    if args.hid_socket.is_none() && args.vpcd.is_none() {
        anyhow::bail!("give --hid-socket PATH, --vpcd ADDR or both");
    }
    let options = FidoOptions {
        pin: (!args.no_pin).then_some(args.pin),
        retries: args.retries,
        u2f_only: args.u2f_only,
        aaguid: args.aaguid.unwrap_or(DEFAULT_AAGUID),
        algorithms: args.algorithms.0,
        fault: args.fault,
    };
    let key = FidoKey::open(&args.state, options)
        .with_context(|| format!("opening key state {}", args.state.display()))?;
    let touch = TouchSource::new(args.touch);
    let (handle, _key_thread) = KeyHandle::spawn(key, touch.clone(), Arc::clone(&stop))
        .context("starting the key thread")?;
    let _control = match &args.control {
        Some(path) => {
            let key = handle.clone();
            Some(
                ControlServer::start(path, Arc::clone(&stop), move |request| match request {
                    ControlRequest::Touch => {
                        if touch.touch(TOUCH_TIMEOUT) {
                            Ok(())
                        } else {
                            Err(format!(
                                "no request asked for a touch within {TOUCH_TIMEOUT:?}"
                            ))
                        }
                    }
                    ControlRequest::PowerCycle => key.power_cycle(),
                })
                .with_context(|| format!("control socket {}", path.display()))?,
            )
        }
        None => None,
    };
    let transports = usize::from(args.hid_socket.is_some()) + usize::from(args.vpcd.is_some());
    let ready = Arc::new(ReadyGate(AtomicUsize::new(transports)));
    let (ended_tx, ended) = mpsc::channel::<anyhow::Result<()>>();
    let spawn = |name: &str, serve: Transport| {
        let (handle, stop, ready, ended_tx) = (
            handle.clone(),
            Arc::clone(&stop),
            Arc::clone(&ready),
            ended_tx.clone(),
        );
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let result = serve(&handle, &stop, &|| ready.arrive());
                // Whichever way a transport ends, the key is out: the others close too.
                stop.store(true, Ordering::Relaxed);
                let _ = ended_tx.send(result);
            })
    };
    if let Some(path) = args.hid_socket.clone() {
        spawn(
            "hid-socket",
            Box::new(move |key, stop, ready| {
                hid_socket::serve(&path, key, stop, ready)
                    .with_context(|| format!("serving the HID socket {}", path.display()))
            }),
        )?;
    }
    if let Some(addr) = args.vpcd.clone() {
        spawn(
            "vpcd",
            Box::new(move |key, stop, ready| {
                let mut card = FidoCard::new(key.clone());
                vpcd::run_announcing(&addr, &mut card, stop, &mut || ready())
                    .map(|exit| tracing::info!("card out: {exit:?}"))
                    .with_context(|| format!("serving vpcd at {addr}"))
            }),
        )?;
    }
    drop(ended_tx);
    // The first transport to end (stop, fault, error) ends the others.
    let first = ended.recv().unwrap_or(Ok(()));
    stop.store(true, Ordering::Relaxed);
    let mut result = first;
    for _ in 1..transports {
        match ended.recv_timeout(SHUTDOWN_GRACE) {
            Ok(r) => result = result.and(r),
            Err(_) => break,
        }
    }
    if let Some(path) = &args.hid_socket {
        // Normally gone already; not if its thread did not finish within the grace period.
        let _ = std::fs::remove_file(path);
    }
    if handle.pulled() {
        tracing::info!("key pulled out by a fault");
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: FidoArgs,
    }

    fn parse(args: &[&str]) -> Result<FidoArgs, clap::Error> {
        Wrapper::try_parse_from([&["fido"][..], args].concat()).map(|w| w.args)
    }

    #[test]
    fn parses_the_brief_s_command_line() {
        let a = parse(&[
            "--state",
            "s.json",
            "--hid-socket",
            "h",
            "--vpcd",
            "127.0.0.1:35964",
            "--no-pin",
            "--retries",
            "5",
            "--u2f-only",
            "--touch",
            "delay:20",
            "--control",
            "c",
            "--aaguid",
            "000102030405060708090a0b0c0d0e0f",
            "--algorithms",
            "eddsa,es256",
            "--fault",
            "stall-on-sign=300",
        ])
        .unwrap();
        assert!(a.no_pin && a.u2f_only);
        assert_eq!(a.retries, 5);
        assert_eq!(a.touch, TouchMode::Delay(Duration::from_millis(20)));
        assert_eq!(a.aaguid.unwrap()[15], 0x0F);
        assert_eq!(a.algorithms.0, vec![-8, -7]);
        assert_eq!(a.fault, Some(FidoFault::StallOnSign(300)));
        let d = parse(&["--state", "s.json", "--hid-socket", "h"]).unwrap();
        assert_eq!(d.pin, "123456");
        assert_eq!(d.touch, TouchMode::Auto);
        assert_eq!(d.algorithms.0, vec![-7]);
        for bad in [
            &["--state", "s", "--pin", "1", "--no-pin"][..],
            &["--state", "s", "--aaguid", "00"],
            &["--state", "s", "--algorithms", "rsa"],
            &["--state", "s", "--fault", "explode"],
            &["--state", "s", "--touch", "never"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

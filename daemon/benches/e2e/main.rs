//! End-to-end benchmark of Tessera through the real stack: the `tessera-sim` card in the vpcd reader,
//! pcscd, a private `dbus-daemon`, the release `tesserad`, and clients using the crate's own proxies.
//!
//! One run measures, side by side (one module each):
//! 1. `auth`: Authenticate latency (client call → token), next to the floors it is made of: one APDU
//!    round trip through pcscd and vpcd, one PC/SC transaction, one bus round trip, the card's and
//!    the daemon's signatures (in-process), and a write + fsync the size of the store's WAL commit;
//!    beside it Authenticate of a user at the default live-token limit (each supersedes the
//!    oldest); and, alternating with it call by call, the same authentication as a request
//!    (`start_auth`: StartAuthentication with the PIN up front, call → Completed signal).
//!    Then `fido`: FIDO Authenticate with the simulated key over the HID socket and over NFC, next
//!    to PIV Authenticate in the same rounds and a CTAPHID PING round trip (both parts also in
//!    `--auth-only`).
//! 2. `throughput`: ValidateToken throughput with 1, 4 and 16 clients (one bus connection each),
//!    next to `org.freedesktop.DBus.Peer.Ping` answered by the same daemon over the same bus.
//! 3. `pulls`: card pulled → `TokenRevoked`: pcscd's own detection time, and what the daemon adds.
//! 4. `idle`: the idle daemon: context switches per thread over 10 s (every wake-up of a sleeping
//!    thread is one), its memory, and the syscalls it makes (with `strace` when installed).
//! 5. `live_tokens`: memory per live token and ValidateToken p50 at 1,000 and 100,000 live tokens.
//!    `-- --bench --live-tokens-only` runs this part alone, `-- --bench --auth-only` part 1 alone.
//! 6. `pam`: whole `pamtester` processes through `pam_tessera.so` (verify-once reuse, a card login)
//!    beside Authenticate and a pamtester floor, with python-dbusmock's logind on the bus; runs
//!    after the idle part. `-- --bench --pam-only` runs it alone, on a system-type bus (the stock
//!    system-bus configuration with the shipped policy, as the tests' `system_stack`); the full run
//!    keeps the bench's permissive bus for every part.
//!
//! Around them: `stack` and `procs` (the processes, the card, the bus), `report`, `stats` and
//! `machine` (the Markdown report and what it was measured on). This file starts the stack and runs
//! the parts in order.
//!
//! The machine is noisy (two cores shared with builds and tests), so what is compared runs in
//! interleaved rounds and the report gives medians. The report is Markdown, printed on stdout and
//! written to `target/e2e-bench.md`.
//!
//! Run: `make bench` (all the bench targets), or this one alone with `scripts/bench.sh` (`cargo build
//! --release --workspace && cargo bench -p tesserad --bench e2e`). Needs root, pcscd with the vpcd driver and dbus-daemon (`make deps`). It takes
//! the end-to-end tests' machine-wide pcsc lock, so it never shares the readers with them, and it stops
//! everything it started, on error too (a SIGKILL of the bench itself cannot be cleaned up after).
//! Without `--bench` (e.g. `cargo test --benches`) it does nothing.

// The end-to-end tests' harness, for the configuration of the same private bus the tests use.
#[path = "../../../tests/common/mod.rs"]
mod common;

mod auth;
mod cpu;
mod fido;
mod idle;
mod live_tokens;
mod machine;
mod pam;
mod procs;
mod pulls;
mod report;
mod stack;
mod start_auth;
mod stats;
mod throughput;

use std::ffi::CStr;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use tessera_client::ManagerProxy;
use zbus::zvariant::ObjectPath;

use crate::auth::{measure_auth, pin_options, Client};
use crate::idle::measure_idle;
use crate::machine::Machine;
use crate::procs::{lock_file, tool, Pcscd, Proc};
use crate::pulls::measure_pulls;
use crate::report::Results;
use crate::stack::{
    connect, peer_proxy, wait_for_device, wait_for_name, write_bus_config, write_system_bus_config,
    Binaries, SimCard,
};
use crate::start_auth::RequestSignals;
use crate::throughput::{measure_throughput, CpuPids};

/// Machine-wide lock shared with the end-to-end tests (tests/common) and `make demo`.
pub const PCSC_LOCK_PATH: &str = "/tmp/tessera-e2e-pcsc.lock";
pub const PCSC_LOCK_TIMEOUT: Duration = Duration::from_secs(900);
pub const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";
/// The first vpcd reader and its card-side address.
pub const READER: &CStr = c"Virtual PCD 00 00";
pub const VPCD_ADDR: &str = "127.0.0.1:35963";
/// The simulator's card in [`READER`], as the daemon publishes it.
pub const DEVICE_PATH: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";
pub const PIN: &str = "123456";
pub const USER: &str = "root";
/// A second account, held at the default live-token limit (32) by the bench.
pub const LIMIT_USER: &str = "tessera-bench";

/// Bound on every wait for a process or an object to appear.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
pub const POLL: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not take pcscd.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("e2e: not started by `cargo bench` (no --bench argument); nothing to do");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e bench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let bins = Binaries::locate()?;
    eprintln!("e2e: waiting for {PCSC_LOCK_PATH} (serialises with the end-to-end tests)");
    let _lock = lock_file(PCSC_LOCK_PATH, PCSC_LOCK_TIMEOUT)?;
    let machine = Machine::describe();
    let work = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir()
        .context("creating the work directory")?;
    // Everything started inside is stopped when this returns (guards drop in reverse order).
    let result = bench(&bins, work.path(), &machine);
    match result {
        Ok(report) => {
            println!("{report}");
            let path = bins.target_dir.join("e2e-bench.md");
            match fs::write(&path, &report) {
                Ok(()) => eprintln!("e2e: report written to {}", path.display()),
                Err(e) => eprintln!("e2e: cannot write {}: {e}", path.display()),
            }
            Ok(())
        }
        Err(e) => {
            let mut work = work;
            work.disable_cleanup(true);
            eprintln!("e2e: logs kept in {}", work.path().display());
            Err(e)
        }
    }
}

/// Starts the stack, runs the five measurements, and stops the stack; the report.
fn bench(bins: &Binaries, work: &Path, machine: &Machine) -> Result<String> {
    let pam_only = std::env::args().any(|a| a == "--pam-only");
    let _pcscd = Pcscd::ensure(work)?;
    let (bus_config, bus_kind) = if pam_only {
        (write_system_bus_config(work)?, "a system-type")
    } else {
        (write_bus_config(work)?, "the bench's permissive")
    };
    let bus = Proc::spawn(
        "dbus-daemon",
        Command::new(tool("dbus-daemon"))
            .arg(format!("--config-file={}", bus_config.display()))
            .args(["--nofork", "--print-address"]),
        work,
    )?;
    let address = bus.wait_stdout("unix:", START_TIMEOUT)?.trim().to_owned();
    let mut sim = SimCard {
        bins,
        work,
        state: work.join("card.json"),
        proc: None,
    };
    sim.insert()?;
    let config = work.join("tessera.toml");
    // Explicit, so that an /etc/tessera/tessera.toml on the machine cannot change what is measured.
    // The bench keeps its few hundred tokens live (the pull test revokes them); a limit above that
    // measures the ordinary authentication, not the rarer one that also supersedes an old token
    // (measured beside it with LIMIT_USER, who has the default limit, written out).
    common::test_user(LIMIT_USER);
    fs::write(
        &config,
        format!(
            "{}[token]\nrevoke_on_removal = true\nmax_live_per_user = 100000\n\
             [users.{LIMIT_USER}.token]\nmax_live_per_user = 32\n\
             [pam]\nreuse = true\nmax_age = \"15m\"\n",
            fido::device_config(work)?
        ),
    )?;
    let daemon = Proc::spawn(
        "tesserad",
        Command::new(&bins.tesserad)
            .arg("--bus")
            .arg(&address)
            .arg("--state-dir")
            .arg(work.join("state"))
            .arg("--config")
            .arg(&config),
        work,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    // zbus objects spawn clean-up tasks when dropped (e.g. a signal stream removes its match rule),
    // which needs the runtime's context even outside `block_on`.
    let _in_runtime = rt.enter();
    let conn = rt.block_on(connect(&address))?;
    let manager = rt.block_on(ManagerProxy::new(&conn))?;
    let peer = rt.block_on(peer_proxy(&conn))?;
    wait_for_name(&rt, &conn, &daemon)?;
    wait_for_device(&rt, &conn, &daemon)?;
    let device = ObjectPath::try_from(DEVICE_PATH)?;
    rt.block_on(manager.enroll(USER, &device, pin_options()))
        .context("enrolling root with the simulated card")?;
    rt.block_on(manager.enroll(LIMIT_USER, &device, pin_options()))
        .context("enrolling the limit user with the simulated card")?;
    let signals = rt.block_on(RequestSignals::subscribe(&conn))?;
    let client = Client {
        rt: &rt,
        conn: &conn,
        manager: &manager,
        peer: &peer,
        signals: &signals,
    };
    let daemon_pid = daemon
        .pid()
        .ok_or_else(|| anyhow!("tesserad is not running"))?;
    if std::env::args().any(|a| a == "--live-tokens-only") {
        let live = live_tokens::measure(&rt, &manager, daemon_pid)?;
        let mut s = String::from("# Tessera end-to-end benchmark: many live tokens only\n");
        live_tokens::report(&mut s, &live);
        return Ok(s);
    }
    if pam_only {
        eprintln!("e2e: PAM: pamtester reuse and card login beside Authenticate");
        let pam = pam::measure(&client, bins, work, &address, bus_kind)?;
        let mut s = String::from("# Tessera end-to-end benchmark: PAM only\n\n");
        report::machine_line(&mut s, machine);
        pam::report(&mut s, &pam);
        report::binaries(&mut s, bins);
        return Ok(s);
    }

    let pids = CpuPids {
        daemon: daemon_pid,
        bus: bus
            .pid()
            .ok_or_else(|| anyhow!("dbus-daemon is not running"))?,
    };
    eprintln!("e2e: 1/5 authenticate latency and its floors");
    let mut auth = measure_auth(&client, work, pids)?;
    eprintln!("e2e: 1b/5 FIDO authenticate (HID socket, NFC) beside PIV, CTAPHID PING");
    let fido = fido::measure_fido(&client, bins, work, &daemon)?;
    if std::env::args().any(|a| a == "--auth-only") {
        return Ok(report::auth_only(machine, bins, &auth, &fido));
    }
    eprintln!("e2e: 2/5 ValidateToken vs Ping throughput");
    let token = client.authenticate()?;
    auth.tokens.push(token.clone());
    let throughput = measure_throughput(&rt, &address, &token, pids)?;
    eprintln!("e2e: 3/5 card pulled -> TokenRevoked");
    let pulls = measure_pulls(&client, &conn, &daemon, &mut sim, &auth.tokens)?;
    eprintln!("e2e: 4/5 idle daemon");
    let idle = measure_idle(&daemon, work)?;
    eprintln!("e2e: 4b/5 PAM: pamtester reuse and card login beside Authenticate");
    let pam = pam::measure(&client, bins, work, &address, bus_kind)?;
    eprintln!("e2e: 5/5 many live tokens");
    let live = live_tokens::measure(&rt, &manager, daemon_pid)?;
    drop(sim);
    let mut report = report::report(
        machine,
        bins,
        &Results {
            auth,
            throughput,
            pulls,
            idle,
            fido,
        },
    );
    pam::report(&mut report, &pam);
    live_tokens::report(&mut report, &live);
    Ok(report)
}

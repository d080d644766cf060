//! End-to-end benchmark of Tessera through the real stack: the `tessera-sim` card in the vpcd reader,
//! pcscd, a private `dbus-daemon`, the release `tesserad`, and clients using the crate's own proxies.
//!
//! One run measures, side by side:
//! 1. Authenticate latency (client call → token), next to the floors it is made of: one APDU round
//!    trip through pcscd and vpcd, one PC/SC transaction, one bus round trip, the card's and the
//!    daemon's signatures (in-process), and a write + fsync the size of the store's WAL commit; and
//!    beside it Authenticate of a user at the default live-token limit (each supersedes the oldest).
//! 2. ValidateToken throughput with 1, 4 and 16 clients (one bus connection each), next to
//!    `org.freedesktop.DBus.Peer.Ping` answered by the same daemon over the same bus.
//! 3. Card pulled → `TokenRevoked`: pcscd's own detection time, and what the daemon adds to it.
//! 4. The idle daemon: context switches per thread over 10 s (every wake-up of a sleeping thread is
//!    one), its memory, and the syscalls it makes (with `strace` when installed).
//! 5. Many live tokens: memory per live token and ValidateToken p50 at 1,000 and 100,000 live
//!    tokens (`e2e/live_tokens.rs`). `-- --bench --live-tokens-only` runs this part alone.
//!
//! The machine is noisy (two cores shared with builds and tests), so what is compared runs in
//! interleaved rounds and the report gives medians. The report is Markdown, printed on stdout and
//! written to `target/e2e-bench.md`.
//!
//! Run: `cargo build --release --workspace && cargo bench -p tesserad --bench e2e` (or
//! `scripts/bench.sh`). Needs root, pcscd with the vpcd driver and dbus-daemon (`make deps`). It takes
//! the end-to-end tests' machine-wide pcsc lock, so it never shares the readers with them, and it stops
//! everything it started, on error too (a SIGKILL of the bench itself cannot be cleaned up after).
//! Without `--bench` (e.g. `cargo test --benches`) it does nothing.

// The end-to-end tests' harness, for the configuration of the same private bus the tests use.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "e2e/live_tokens.rs"]
mod live_tokens;

use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use pcsc::{Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use tessera::piv::cert::CertSummary;
use tessera::piv::{Pin, Piv, Slot};
use tessera::token::keys::KeyRing;
use tessera::token::{jwk_thumbprint, new_jti, Claims, Confirmation};
use tessera::transport::CardTransport;
use tessera::verify::challenge::Challenge;
use tessera_client::ManagerProxy;
use tessera_sim::piv::{PivCard, SimOptions};
use tokio::runtime::Runtime;
use zbus::fdo::{DBusProxy, ObjectManagerProxy, PeerProxy};
use zbus::names::BusName;
use zbus::zvariant::{ObjectPath, Value};
use zbus::Connection;

/// Machine-wide lock shared with the end-to-end tests (tests/common) and `make demo`.
const PCSC_LOCK_PATH: &str = "/tmp/tessera-e2e-pcsc.lock";
const PCSC_LOCK_TIMEOUT: Duration = Duration::from_secs(900);
const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";
/// The first vpcd reader and its card-side address.
const READER: &CStr = c"Virtual PCD 00 00";
const VPCD_ADDR: &str = "127.0.0.1:35963";
/// The simulator's card in [`READER`], as the daemon publishes it.
const DEVICE_PATH: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";
const PIN: &str = "123456";
const USER: &str = "root";
/// A second account, held at the default live-token limit (32) by the bench.
const LIMIT_USER: &str = "tessera-bench";

/// Bound on every wait for a process or an object to appear.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

// 1. Authenticate latency: rounds that interleave authentications with the floor measurements.
const AUTH_WARMUP: usize = 30;
/// Authentications of [`LIMIT_USER`] before measuring: past the limit, so each one supersedes.
const LIMIT_WARMUP: usize = 40;
const AUTH_ROUNDS: usize = 20;
const AUTH_PER_ROUND: usize = 15;
const APDU_PER_ROUND: usize = 40;
const TXN_PER_ROUND: usize = 20;
const PING_PER_ROUND: usize = 40;
const COMPUTE_PER_ROUND: usize = 3;
const FSYNC_PER_ROUND: usize = 10;
/// GET VERSION (Yubico PIV extension, INS FD) with Le = 00 (the strict simulator answers a command
/// without Le with 61xx, as ISO/IEC 7816-4 has it): the cheapest command the simulator answers.
const GET_VERSION: [u8; 5] = [0x00, 0xFD, 0x00, 0x00, 0x00];

// 2. ValidateToken vs Ping throughput.
const CLIENT_COUNTS: [usize; 3] = [1, 4, 16];
const THROUGHPUT_ROUNDS: usize = 3;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(2);

// 3. Card pulls, 4. idle.
const PULLS: usize = 10;
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_SETTLE: Duration = Duration::from_secs(1);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const STRACE_WINDOW: Duration = Duration::from_secs(5);

// Targets, as stated in the performance brief.
const TARGET_AUTH_P50: Duration = Duration::from_micros(1500);
/// At the limit, Authenticate p50 within this factor of the p50 below it.
const TARGET_AT_LIMIT_RATIO: f64 = 1.05;
const TARGET_VALIDATE_RATIO: f64 = 0.90;
const TARGET_REVOKE_EXTRA: Duration = Duration::from_millis(10);
const TARGET_RSS_KIB: u64 = 20 * 1024;

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
    let _pcscd = Pcscd::ensure(work)?;
    let bus = Proc::spawn(
        "dbus-daemon",
        Command::new(tool("dbus-daemon"))
            .arg(format!(
                "--config-file={}",
                write_bus_config(work)?.display()
            ))
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
            "[token]\nrevoke_on_removal = true\nmax_live_per_user = 100000\n\
             [users.{LIMIT_USER}.token]\nmax_live_per_user = 32\n"
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
    let client = Client {
        rt: &rt,
        manager: &manager,
        peer: &peer,
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

    eprintln!("e2e: 1/5 authenticate latency and its floors");
    let mut auth = measure_auth(&client, work)?;
    eprintln!("e2e: 2/5 ValidateToken vs Ping throughput");
    let token = client.authenticate()?;
    auth.tokens.push(token.clone());
    let pids = CpuPids {
        daemon: daemon
            .pid()
            .ok_or_else(|| anyhow!("tesserad is not running"))?,
        bus: bus
            .pid()
            .ok_or_else(|| anyhow!("dbus-daemon is not running"))?,
    };
    let throughput = measure_throughput(&rt, &address, &token, pids)?;
    eprintln!("e2e: 3/5 card pulled -> TokenRevoked");
    let pulls = measure_pulls(&client, &conn, &daemon, &mut sim, &auth.tokens)?;
    eprintln!("e2e: 4/5 idle daemon");
    let idle = measure_idle(&daemon, work)?;
    eprintln!("e2e: 5/5 many live tokens");
    let live = live_tokens::measure(&rt, &manager, daemon_pid)?;
    drop(sim);
    let mut report = report(
        machine,
        bins,
        &Results {
            auth,
            throughput,
            pulls,
            idle,
        },
    );
    live_tokens::report(&mut report, &live);
    Ok(report)
}

// --- 1. Authenticate latency ------------------------------------------------------------------

/// The bench's own bus client: the runtime it is driven from and its proxies.
struct Client<'a> {
    rt: &'a Runtime,
    manager: &'a ManagerProxy<'static>,
    peer: &'a PeerProxy<'static>,
}

impl Client<'_> {
    fn authenticate(&self) -> Result<String> {
        self.rt
            .block_on(self.manager.authenticate(USER, pin_options()))
            .context("Authenticate")
    }

    /// One authentication, timed inside the runtime (call → token).
    fn timed_authenticate(&self) -> Result<(Duration, String)> {
        self.timed_authenticate_as(USER)
    }

    /// [`Client::timed_authenticate`] for `user` (root calls for everyone).
    fn timed_authenticate_as(&self, user: &str) -> Result<(Duration, String)> {
        self.rt.block_on(async {
            let t = Instant::now();
            let token = self.manager.authenticate(user, pin_options()).await?;
            Ok((t.elapsed(), token))
        })
    }

    fn timed_ping(&self) -> Result<Duration> {
        self.rt.block_on(async {
            let t = Instant::now();
            self.peer.ping().await?;
            Ok(t.elapsed())
        })
    }

    /// The `jti` claim of a valid token.
    fn jti(&self, token: &str) -> Result<String> {
        let claims = self.rt.block_on(self.manager.validate_token(token))?;
        match claims.get("jti").map(|v| &**v) {
            Some(Value::Str(s)) => Ok(s.as_str().to_owned()),
            other => bail!("ValidateToken returned no string jti: {other:?}"),
        }
    }
}

fn pin_options() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("pin", Value::from(PIN))])
}

struct AuthResults {
    auth: Vec<Duration>,
    /// Authenticate of [`LIMIT_USER`], at the limit: each supersedes the user's oldest token.
    at_limit: Vec<Duration>,
    apdu: Vec<Duration>,
    txn: Vec<Duration>,
    ping: Vec<Duration>,
    card: Vec<Duration>,
    verify: Vec<Duration>,
    jwt: Vec<Duration>,
    fsync: Vec<Duration>,
    /// APDUs the daemon sends per authentication (counted on the in-process card).
    apdus_per_auth: usize,
    /// Every token issued so far; revoked before the card pulls so each pull revokes just one.
    tokens: Vec<String>,
}

fn measure_auth(client: &Client<'_>, work: &Path) -> Result<AuthResults> {
    let mut r = AuthResults {
        auth: Vec::new(),
        at_limit: Vec::new(),
        apdu: Vec::new(),
        txn: Vec::new(),
        ping: Vec::new(),
        card: Vec::new(),
        verify: Vec::new(),
        jwt: Vec::new(),
        fsync: Vec::new(),
        apdus_per_auth: 0,
        tokens: Vec::new(),
    };
    for _ in 0..AUTH_WARMUP {
        r.tokens.push(client.authenticate()?);
    }
    for _ in 0..LIMIT_WARMUP {
        client.timed_authenticate_as(LIMIT_USER)?;
    }
    let ctx = pcsc::Context::establish(Scope::User).context("pcsc: establishing a context")?;
    let mut card = ctx
        .connect(READER, ShareMode::Shared, Protocols::ANY)
        .context("pcsc: connecting to the simulated card")?;
    let mut compute = Compute::new(work)?;
    let mut buf = [0u8; 258];
    for _ in 0..10 {
        get_version(&card, &mut buf)?;
        compute.fsync()?;
    }
    const STEPS: usize = 7;
    for round in 0..AUTH_ROUNDS {
        // Rotate the order so that no part always runs right after the same other part.
        for step in 0..STEPS {
            match (round + step) % STEPS {
                0 => {
                    for _ in 0..AUTH_PER_ROUND {
                        let (d, token) = client.timed_authenticate()?;
                        r.auth.push(d);
                        r.tokens.push(token);
                    }
                }
                1 => {
                    for _ in 0..APDU_PER_ROUND {
                        let t = Instant::now();
                        get_version(&card, &mut buf)?;
                        r.apdu.push(t.elapsed());
                    }
                }
                2 => {
                    for _ in 0..TXN_PER_ROUND {
                        let t = Instant::now();
                        let tx = card.transaction().context("pcsc: begin transaction")?;
                        tx.end(Disposition::LeaveCard)
                            .map_err(|(_, e)| e)
                            .context("pcsc: end transaction")?;
                        r.txn.push(t.elapsed());
                    }
                }
                3 => {
                    for _ in 0..PING_PER_ROUND {
                        r.ping.push(client.timed_ping()?);
                    }
                }
                4 => {
                    for _ in 0..COMPUTE_PER_ROUND {
                        let (card_t, verify_t, apdus) = compute.card_and_verify()?;
                        r.card.push(card_t);
                        r.verify.push(verify_t);
                        r.apdus_per_auth = apdus;
                        r.jwt.push(compute.jwt()?);
                    }
                }
                5 => {
                    for _ in 0..FSYNC_PER_ROUND {
                        r.fsync.push(compute.fsync()?);
                    }
                }
                _ => {
                    for _ in 0..AUTH_PER_ROUND {
                        r.at_limit.push(client.timed_authenticate_as(LIMIT_USER)?.0);
                    }
                }
            }
        }
    }
    // The pull test expects one live token per card session: end the limit user's 32.
    client
        .rt
        .block_on(client.manager.revoke_sessions(LIMIT_USER))
        .context("RevokeSessions of the limit user")?;
    // Dropping a pcsc::Card disconnects with SCARD_RESET_CARD, which would reset the card under the
    // daemon's connection; leave it as it is.
    card.disconnect(Disposition::LeaveCard)
        .map_err(|(_, e)| e)
        .context("pcsc: disconnecting")?;
    Ok(r)
}

fn get_version(card: &pcsc::Card, buf: &mut [u8]) -> Result<()> {
    let resp = card
        .transmit(&GET_VERSION, buf)
        .context("pcsc: GET VERSION")?;
    ensure!(
        resp.ends_with(&[0x90, 0x00]),
        "GET VERSION answered {resp:02x?}"
    );
    Ok(())
}

/// The CPU and disk parts of an authentication, measured in-process: the card's work (the
/// simulator's PIV application, ECDSA signature included), the daemon's check of the card's
/// signature, the daemon's token signature, and one durable write.
struct Compute {
    card: PivCard,
    pin: Pin,
    cert: CertSummary,
    keys: KeyRing,
    claims: Claims,
    probe: File,
    commits: u64,
}

/// One SQLite WAL frame: a 24-byte frame header and a 4 KiB page.
const WAL_FRAME: usize = 24 + 4096;
/// Frames the daemon's store appends per issued token (the token row and its indexes), as counted
/// with `strace -f` on tesserad during Authenticate.
const WAL_FRAMES_PER_TOKEN: usize = 8;
/// SQLite checkpoints (and then reuses the WAL from its start) after 1000 pages by default.
const WAL_COMMITS_PER_CYCLE: u64 = 1000 / WAL_FRAMES_PER_TOKEN as u64;

impl Compute {
    fn new(work: &Path) -> Result<Compute> {
        let mut card = PivCard::in_memory(&SimOptions::default())
            .map_err(|e| anyhow!("in-process card: {e}"))?;
        let der = {
            let mut piv = Piv::new(&mut card);
            piv.select()?;
            piv.certificate(Slot::Authentication)?
                .ok_or_else(|| anyhow!("the in-process card has no 9A certificate"))?
        };
        let cert = tessera::piv::cert::summarize(&der)?;
        let keys_dir = work.join("bench-keys");
        fs::create_dir(&keys_dir)?;
        let now = unix_now();
        let keys = KeyRing::load_or_create(&keys_dir, now)?;
        let claims = Claims {
            iss: "tessera:bench".into(),
            sub: USER.into(),
            aud: "tessera".into(),
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: new_jti(),
            amr: ["hwk", "sc", "pin", "mfa"].map(String::from).to_vec(),
            cnf: Confirmation {
                jkt: jwk_thumbprint(&cert.public_key),
            },
            sid: new_jti(),
            enr: new_jti(),
        };
        // The probe lives in the work directory, next to the daemon's state directory.
        let probe = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(work.join("fsync-probe"))?;
        probe.sync_all()?;
        Ok(Compute {
            card,
            pin: Pin::new(PIN)?,
            cert,
            keys,
            claims,
            probe,
            commits: 0,
        })
    }

    /// The daemon's card session (devices.rs `pin_and_sign`) against the in-process card, and the
    /// daemon's check of the signature; returns both times and the number of APDUs sent.
    fn card_and_verify(&mut self) -> Result<(Duration, Duration, usize)> {
        let challenge = Challenge::new()?;
        let digest = challenge.digest();
        let mut counting = Counting {
            inner: &mut self.card,
            sent: 0,
        };
        let t = Instant::now();
        let signature = {
            let mut piv = Piv::new(&mut counting);
            piv.select()?;
            piv.pin_status()?;
            piv.verify_pin(&self.pin)?;
            let signature = piv.sign_p256(Slot::Authentication, &digest)?;
            piv.reset_pin_status()?;
            signature
        };
        let card_t = t.elapsed();
        let apdus = counting.sent;
        let t = Instant::now();
        challenge.verify(&self.cert.public_key, &signature)?;
        Ok((card_t, t.elapsed(), apdus))
    }

    fn jwt(&mut self) -> Result<Duration> {
        self.claims.jti = new_jti();
        let t = Instant::now();
        let token = self.keys.sign(&self.claims)?;
        let d = t.elapsed();
        ensure!(!token.is_empty(), "empty token");
        Ok(d)
    }

    /// A WAL commit as the store makes it for one token with synchronous=FULL: eight frames written
    /// at the end of the log, then fsync; the log grows, then starts over as after a checkpoint (the
    /// checkpoint itself, which copies the pages into the database, is not part of the floor).
    fn fsync(&mut self) -> Result<Duration> {
        let frames = [0x5Au8; WAL_FRAME * WAL_FRAMES_PER_TOKEN];
        let offset = (self.commits % WAL_COMMITS_PER_CYCLE) * frames.len() as u64;
        self.commits += 1;
        let t = Instant::now();
        for (i, frame) in frames.chunks(WAL_FRAME).enumerate() {
            self.probe
                .write_all_at(frame, offset + (i * WAL_FRAME) as u64)?;
        }
        self.probe.sync_all()?;
        Ok(t.elapsed())
    }
}

/// Counts the APDUs that go through a transport.
struct Counting<'a, T: CardTransport + ?Sized> {
    inner: &'a mut T,
    sent: usize,
}

impl<T: CardTransport + ?Sized> CardTransport for Counting<'_, T> {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        self.sent += 1;
        self.inner.transmit(command)
    }
}

// --- 2. ValidateToken vs Ping throughput --------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Validate,
    Ping,
}

struct ThroughputRound {
    clients: usize,
    round: usize,
    validate: Rate,
    ping: Rate,
}

/// Calls per second of one window, and the CPU time each call cost the three processes involved.
#[derive(Clone, Copy, Default)]
struct Rate {
    per_sec: f64,
    daemon_cpu: Duration,
    bus_cpu: Duration,
    client_cpu: Duration,
}

/// The processes whose CPU time the throughput rounds account for.
#[derive(Clone, Copy)]
struct CpuPids {
    daemon: Pid,
    bus: Pid,
}

fn measure_throughput(
    rt: &Runtime,
    address: &str,
    token: &str,
    pids: CpuPids,
) -> Result<Vec<ThroughputRound>> {
    let max = CLIENT_COUNTS.iter().copied().max().unwrap_or(1);
    let clients = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..max {
            let conn = connect(address).await?;
            let manager = ManagerProxy::new(&conn).await?;
            let peer = peer_proxy(&conn).await?;
            // Warm both paths on this connection.
            manager.validate_token(token).await?;
            peer.ping().await?;
            v.push((manager, peer, conn));
        }
        anyhow::Ok(v)
    })?;
    let token: Arc<str> = Arc::from(token);
    let mut out = Vec::new();
    for round in 0..THROUGHPUT_ROUNDS {
        for (i, &n) in CLIENT_COUNTS.iter().enumerate() {
            let order = if (round + i) % 2 == 0 {
                [Call::Validate, Call::Ping]
            } else {
                [Call::Ping, Call::Validate]
            };
            let mut rates = [Rate::default(); 2];
            for call in order {
                let rate =
                    rt.block_on(hammer(clients.get(..n).unwrap_or(&[]), call, &token, pids))?;
                rates[usize::from(call == Call::Ping)] = rate;
            }
            eprintln!(
                "e2e:   round {round}, {n:>2} clients: ValidateToken {:>7.0}/s, Ping {:>7.0}/s; \
                 tesserad CPU/call {:.1} vs {:.1} us",
                rates[0].per_sec,
                rates[1].per_sec,
                us(rates[0].daemon_cpu),
                us(rates[1].daemon_cpu)
            );
            out.push(ThroughputRound {
                clients: n,
                round,
                validate: rates[0],
                ping: rates[1],
            });
        }
    }
    drop(clients);
    Ok(out)
}

/// Every client calls `call` back to back for [`THROUGHPUT_WINDOW`]; returns calls per second.
async fn hammer(
    clients: &[(ManagerProxy<'static>, PeerProxy<'static>, Connection)],
    call: Call,
    token: &Arc<str>,
    pids: CpuPids,
) -> Result<Rate> {
    let cpu_before = [cpu_time(pids.daemon), cpu_time(pids.bus), self_cpu_time()];
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let deadline = start + THROUGHPUT_WINDOW;
    let mut tasks = Vec::new();
    for (manager, peer, _) in clients {
        let (manager, peer, token) = (manager.clone(), peer.clone(), Arc::clone(token));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut calls = 0u64;
            loop {
                match call {
                    Call::Validate => {
                        manager.validate_token(&token).await?;
                    }
                    Call::Ping => peer.ping().await?,
                }
                calls += 1;
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return anyhow::Ok((calls, now));
                }
            }
        }));
    }
    let mut total = 0u64;
    let mut end = deadline;
    for t in tasks {
        let (calls, finished) = t.await.context("client task")??;
        total += calls;
        end = end.max(finished);
    }
    let cpu_after = [cpu_time(pids.daemon), cpu_time(pids.bus), self_cpu_time()];
    let per_call = |i: usize| -> Duration {
        let (Some(Some(a)), Some(Some(b))) = (cpu_after.get(i), cpu_before.get(i)) else {
            return Duration::ZERO;
        };
        a.saturating_sub(*b) / u32::try_from(total.max(1)).unwrap_or(u32::MAX)
    };
    Ok(Rate {
        per_sec: total as f64 / (end - start).as_secs_f64(),
        daemon_cpu: per_call(0),
        bus_cpu: per_call(1),
        client_cpu: per_call(2),
    })
}

/// User + system CPU time of a process, from /proc/<pid>/stat (fields 14 and 15, in USER_HZ ticks,
/// which Linux fixes at 100 per second for this interface).
fn cpu_time(pid: Pid) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

fn self_cpu_time() -> Option<Duration> {
    stat_cpu("/proc/self/stat")
}

fn stat_cpu(path: &str) -> Option<Duration> {
    let stat = fs::read_to_string(path).ok()?;
    // Fields after "pid (comm) " start at field 3 (state).
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// --- 3. Card pulled -> TokenRevoked -------------------------------------------------------------

struct Pull {
    /// SIGTERM → the simulator exited (its socket to vpcd closed).
    sim_exit: Duration,
    /// SIGTERM → pcscd reported the card gone (to a SCardGetStatusChange waiter).
    pcscd: Duration,
    /// pcscd's report → the TokenRevoked signal at the client, in ms. Both the daemon's monitor and
    /// the bench's watcher are woken by pcscd at once; when the watcher thread is scheduled later than
    /// the whole daemon path, this is negative.
    extra_ms: f64,
    /// Simulator started again → the daemon published the device again.
    reinsert: Duration,
}

struct PullResults {
    pulls: Vec<Pull>,
    /// Sequential RevokeToken calls (logout) of the earlier tokens.
    revoke: Vec<Duration>,
}

fn measure_pulls(
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
fn watch_removal(armed: &mpsc::Sender<()>) -> Result<Instant> {
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

// --- 4. Idle ------------------------------------------------------------------------------------

struct ThreadSample {
    name: String,
    switches: u64,
}

struct IdleResults {
    window: Duration,
    /// Per thread id: name, context switches during the window (voluntary + involuntary).
    threads: Vec<(u32, String, u64)>,
    /// Threads that existed at the start of the window and not at its end.
    exited: Vec<(u32, String)>,
    /// Threads that appeared during the window.
    started: Vec<(u32, String)>,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    /// `strace -c -f` summary over [`STRACE_WINDOW`], or why it was skipped.
    strace: std::result::Result<String, String>,
}

fn measure_idle(daemon: &Proc, work: &Path) -> Result<IdleResults> {
    let pid = daemon
        .pid()
        .ok_or_else(|| anyhow!("tesserad is not running"))?;
    thread::sleep(IDLE_SETTLE);
    let before = thread_samples(pid)?;
    let t = Instant::now();
    thread::sleep(IDLE_WINDOW);
    let after = thread_samples(pid)?;
    let window = t.elapsed();
    let mut threads = Vec::new();
    let mut exited = Vec::new();
    for (tid, b) in &before {
        match after.get(tid) {
            Some(a) => threads.push((*tid, a.name.clone(), a.switches.saturating_sub(b.switches))),
            None => exited.push((*tid, b.name.clone())),
        }
    }
    let started = after
        .iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .map(|(tid, a)| (*tid, a.name.clone()))
        .collect();
    threads.sort_by_key(|t| t.0);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let strace = strace_summary(pid, work);
    Ok(IdleResults {
        window,
        threads,
        exited,
        started,
        rss_kib: status_kib(&status, "VmRSS:"),
        hwm_kib: status_kib(&status, "VmHWM:"),
        strace,
    })
}

fn thread_samples(pid: Pid) -> Result<HashMap<u32, ThreadSample>> {
    let mut out = HashMap::new();
    let dir = format!("/proc/{pid}/task");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let (Ok(name), Ok(status)) = (
            fs::read_to_string(path.join("comm")),
            fs::read_to_string(path.join("status")),
        ) else {
            continue; // exited while we looked
        };
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            tid,
            ThreadSample {
                name: name.trim().to_owned(),
                switches: field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:"),
            },
        );
    }
    Ok(out)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The syscalls of every thread over [`STRACE_WINDOW`] (`strace -f -c`); `Err` says why not.
/// Tracing perturbs the process, so this runs after the undisturbed /proc window.
fn strace_summary(pid: Pid, work: &Path) -> std::result::Result<String, String> {
    let Some(strace) = find_in_path("strace") else {
        return Err("strace not installed (apt-get install strace); skipped".into());
    };
    let out = work.join("strace.txt");
    let mut proc = Proc::spawn(
        "strace",
        Command::new(strace)
            .args(["-f", "-c", "-o"])
            .arg(&out)
            .arg("-p")
            .arg(pid.to_string()),
        work,
    )
    .map_err(|e| format!("{e:#}"))?;
    thread::sleep(STRACE_WINDOW);
    // SIGINT makes strace detach and write its summary.
    proc.signal(Signal::SIGINT);
    match proc.wait_exit(TERM_GRACE) {
        Some(_) => {}
        None => return Err("strace did not exit after SIGINT".into()),
    }
    let text = fs::read_to_string(&out).map_err(|e| format!("strace wrote no summary: {e}"))?;
    let log = fs::read_to_string(&proc.err).unwrap_or_default();
    // "Process N attached with M threads", then one "Process T detached" per thread.
    let attached = log.lines().filter(|l| l.ends_with(" detached")).count();
    if attached == 0 {
        return Err(format!("strace did not attach: {}", log.trim()));
    }
    // strace -c prints no table at all when it counted no syscall.
    if text.trim().is_empty() {
        return Ok(format!("no syscalls in any of the {attached} threads"));
    }
    Ok(format!("{attached} threads traced:\n{}", text.trim_end()))
}

// --- Report ---------------------------------------------------------------------------------------

struct Results {
    auth: AuthResults,
    throughput: Vec<ThroughputRound>,
    pulls: PullResults,
    idle: IdleResults,
}

fn report(machine: &Machine, bins: &Binaries, r: &Results) -> String {
    let mut s = String::new();
    let a = &r.auth;
    let auth = Percentiles::of(&a.auth);
    let at_limit = Percentiles::of(&a.at_limit);
    let at_limit_ratio = at_limit.p50.as_secs_f64() / auth.p50.as_secs_f64().max(1e-9);
    let apdu = median(&a.apdu);
    let txn = median(&a.txn);
    let ping = median(&a.ping);
    let card = median(&a.card);
    let verify = median(&a.verify);
    let jwt = median(&a.jwt);
    let fsync = median(&a.fsync);
    let apdus = a.apdus_per_auth;
    let apdu_total = apdu * u32::try_from(apdus).unwrap_or(u32::MAX);
    let floor = apdu_total + txn + ping + card + verify + jwt + fsync;
    let pulls = &r.pulls.pulls;
    let pcscd: Vec<Duration> = pulls.iter().map(|p| p.pcscd).collect();
    let mut extra: Vec<f64> = pulls.iter().map(|p| p.extra_ms).collect();
    extra.sort_by(f64::total_cmp);
    let extra_at = |p: f64| -> f64 {
        let rank = ((p / 100.0) * extra.len() as f64).ceil() as usize;
        extra
            .get(rank.clamp(1, extra.len().max(1)) - 1)
            .copied()
            .unwrap_or(0.0)
    };
    let (extra_p50, extra_p90, extra_max) = (extra_at(50.0), extra_at(90.0), extra_at(100.0));
    let target_extra_ms = TARGET_REVOKE_EXTRA.as_secs_f64() * 1e3;
    let idle = &r.idle;
    let idle_switches: u64 = idle.threads.iter().map(|t| t.2).sum();

    let _ = writeln!(s, "## End-to-end performance\n");
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), Linux {}, load average {} at start. Release build; the state \
         directory is on {}. `cargo bench -p tesserad --bench e2e`, {}.\n",
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        machine.load,
        machine.fs_of_tmp,
        machine.date
    );
    let _ = writeln!(s, "| Measurement | Result | Target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| Authenticate, client call → token (n={}) | p50 {} · p90 {} · p99 {} · max {} | p50 ≤ {} | {} |",
        a.auth.len(),
        ms(auth.p50),
        ms(auth.p90),
        ms(auth.p99),
        ms(auth.max),
        ms(TARGET_AUTH_P50),
        verdict(auth.p50 <= TARGET_AUTH_P50)
    );
    let _ = writeln!(
        s,
        "| Authenticate at the live-token limit (32; each supersedes the oldest) (n={}) | p50 {} · p90 {} · p99 {} · max {} ({:.3} × the p50 above) | p50 ≤ {TARGET_AT_LIMIT_RATIO} × the p50 above | {} |",
        a.at_limit.len(),
        ms(at_limit.p50),
        ms(at_limit.p90),
        ms(at_limit.p99),
        ms(at_limit.max),
        at_limit_ratio,
        verdict(at_limit_ratio <= TARGET_AT_LIMIT_RATIO)
    );
    let _ = writeln!(
        s,
        "| Authenticate floor (sum of its parts, below) | {} | | |",
        ms(floor)
    );
    for &n in &CLIENT_COUNTS {
        let rounds: Vec<&ThroughputRound> =
            r.throughput.iter().filter(|t| t.clients == n).collect();
        let v = median_f(rounds.iter().map(|t| t.validate.per_sec));
        let p = median_f(rounds.iter().map(|t| t.ping.per_sec));
        let ratio = median_f(
            rounds
                .iter()
                .map(|t| t.validate.per_sec / t.ping.per_sec.max(1.0)),
        );
        let _ = writeln!(
            s,
            "| ValidateToken, {n} client{} | {:.0} calls/s = {:.0} % of Ping ({:.0} calls/s) | ≥ {:.0} % of Ping | {} |",
            if n == 1 { "" } else { "s" },
            v,
            ratio * 100.0,
            p,
            TARGET_VALIDATE_RATIO * 100.0,
            verdict(ratio >= TARGET_VALIDATE_RATIO)
        );
    }
    let _ = writeln!(
        s,
        "| Card pulled → pcscd reports it (n={}) | p50 {} · max {} | (pcscd and vpcd, not Tessera) | |",
        pulls.len(),
        ms(median(&pcscd)),
        ms(Percentiles::of(&pcscd).max)
    );
    let _ = writeln!(
        s,
        "| pcscd's report → TokenRevoked at the client (n={}) | p50 {extra_p50:.3} ms · p90 \
         {extra_p90:.3} ms · max {extra_max:.3} ms | ≤ {target_extra_ms:.3} ms | {} |",
        pulls.len(),
        verdict(extra_max <= target_extra_ms)
    );
    let _ = writeln!(
        s,
        "| Idle {:.0} s: context switches, all daemon threads | {} ({} thread{} exited, {} started) | no timer wake-ups | {} |",
        idle.window.as_secs_f64(),
        idle_switches,
        idle.exited.len(),
        if idle.exited.len() == 1 { "" } else { "s" },
        idle.started.len(),
        // A thread that exits wakes once to do so (e.g. tokio's blocking pool retiring an idle
        // thread 10 s after its last job); that is one-shot, not a periodic timer.
        verdict(idle_switches == 0)
    );
    let rss = idle.rss_kib.unwrap_or(0);
    let _ = writeln!(
        s,
        "| Idle RSS (peak) | {:.1} MiB ({:.1} MiB) | ≤ {} MiB | {} |",
        rss as f64 / 1024.0,
        idle.hwm_kib.unwrap_or(0) as f64 / 1024.0,
        TARGET_RSS_KIB / 1024,
        verdict(idle.rss_kib.is_some() && rss <= TARGET_RSS_KIB)
    );

    let mut slowest: Vec<(usize, Duration)> = a.auth.iter().copied().enumerate().collect();
    slowest.sort_by_key(|x| std::cmp::Reverse(x.1));
    let slowest: Vec<String> = slowest
        .iter()
        .take(8)
        .map(|(i, d)| format!("#{i} {}", ms(*d)))
        .collect();
    let _ = writeln!(
        s,
        "\nSlowest authentications (index in measurement order, {AUTH_PER_ROUND} per round, after \
         {AUTH_WARMUP} warm-up tokens): {}.",
        slowest.join(", ")
    );
    let _ = writeln!(s, "\n### Where an authentication's time goes (medians)\n");
    let _ = writeln!(s, "| Part | Each | × | Total |");
    let _ = writeln!(s, "|---|---|---|---|");
    let mut part = |name: &str, each: Duration, times: usize| {
        let total = each * u32::try_from(times).unwrap_or(u32::MAX);
        let _ = writeln!(s, "| {name} | {} | {times} | {} |", ms(each), ms(total));
    };
    part(
        "APDU round trip through pcscd and vpcd (GET VERSION, bench → simulator)",
        apdu,
        apdus,
    );
    part("PC/SC transaction (SCardBeginTransaction + End)", txn, 1);
    part("D-Bus round trip (Peer.Ping to tesserad)", ping, 1);
    part(
        "Card work for those APDUs, in-process simulator (PIN check, ECDSA P-256 sign)",
        card,
        1,
    );
    part("Daemon: verify the card's ECDSA signature", verify, 1);
    part("Daemon: sign the token (ES256 JWT)", jwt, 1);
    part(
        "Store commit: 8 WAL frames (33 KB) + fsync, on the same filesystem",
        fsync,
        1,
    );
    let _ = writeln!(s, "| **Floor (sum)** | | | **{}** |", ms(floor));
    let _ = writeln!(s, "| **Measured p50** | | | **{}** |", ms(auth.p50));
    let _ = writeln!(
        s,
        "| Rest: the daemon's own path (user and group look-ups, SQLite read, hand-offs to the device and store threads, marshalling) | | | {} |",
        ms_signed(auth.p50, floor)
    );

    let _ = writeln!(
        s,
        "\n### ValidateToken vs Ping, calls/s per round ({} s each, interleaved)\n",
        THROUGHPUT_WINDOW.as_secs()
    );
    let _ = writeln!(
        s,
        "CPU per call (µs) of tesserad / dbus-daemon / the bench's clients, from /proc/<pid>/stat \
         (10 ms ticks over thousands of calls).\n"
    );
    let _ = writeln!(
        s,
        "| Clients | Round | ValidateToken/s | Ping/s | Ratio | CPU/call ValidateToken | CPU/call Ping |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let cpu = |r: &Rate| {
        format!(
            "{:.1} / {:.1} / {:.1}",
            us(r.daemon_cpu),
            us(r.bus_cpu),
            us(r.client_cpu)
        )
    };
    for t in &r.throughput {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.0} % | {} | {} |",
            t.clients,
            t.round,
            t.validate.per_sec,
            t.ping.per_sec,
            t.validate.per_sec / t.ping.per_sec.max(1.0) * 100.0,
            cpu(&t.validate),
            cpu(&t.ping)
        );
    }

    let _ = writeln!(s, "\n### Card pulls\n");
    let _ = writeln!(
        s,
        "| Pull | SIGTERM → simulator gone | SIGTERM → pcscd reports | pcscd → TokenRevoked | re-insert → device on the bus |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (i, p) in pulls.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {i} | {} | {} | {:+.3} ms | {} |",
            ms(p.sim_exit),
            ms(p.pcscd),
            p.extra_ms,
            ms(p.reinsert)
        );
    }
    let _ = writeln!(
        s,
        "\nA negative pcscd → TokenRevoked time means the daemon's whole path finished before the \
         bench's own watcher thread (woken by pcscd at the same moment) got a CPU."
    );
    let revoke = Percentiles::of(&r.pulls.revoke);
    let _ = writeln!(
        s,
        "\nRevokeToken (logout) of the {} earlier tokens, one after another: p50 {} · p90 {} · max {}.",
        r.pulls.revoke.len(),
        ms(revoke.p50),
        ms(revoke.p90),
        ms(revoke.max)
    );

    let _ = writeln!(
        s,
        "\n### Idle daemon, {:.1} s window after {:.0} s of quiet\n",
        idle.window.as_secs_f64(),
        IDLE_SETTLE.as_secs_f64()
    );
    let _ = writeln!(s, "| Thread | Name | Context switches |");
    let _ = writeln!(s, "|---|---|---|");
    for (tid, name, n) in &idle.threads {
        let _ = writeln!(s, "| {tid} | {name} | {n} |");
    }
    for (tid, name) in &idle.exited {
        let _ = writeln!(
            s,
            "| {tid} | {name} | exited during the window (one wake-up to exit; tokio retires a \
             blocking-pool thread 10 s after its last job) |"
        );
    }
    for (tid, name) in &idle.started {
        let _ = writeln!(s, "| {tid} | {name} | started during the window |");
    }
    match &idle.strace {
        Ok(text) => {
            let _ = writeln!(
                s,
                "\n`strace -f -c` over the next {} s:\n\n```\n{}\n```",
                STRACE_WINDOW.as_secs(),
                text.trim_end()
            );
        }
        Err(why) => {
            let _ = writeln!(s, "\nSyscall trace: {why}.");
        }
    }
    let _ = writeln!(
        s,
        "\nBinaries: {} and {}.",
        bins.tesserad.display(),
        bins.sim.display()
    );
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles; zeros for no samples.
    fn of(samples: &[Duration]) -> Percentiles {
        let mut v = samples.to_vec();
        v.sort();
        let at = |p: f64| -> Duration {
            if v.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v.get(rank.clamp(1, v.len()) - 1)
                .copied()
                .unwrap_or_default()
        };
        Percentiles {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

fn median(samples: &[Duration]) -> Duration {
    Percentiles::of(samples).p50
}

fn median_f(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `a - b` in milliseconds, negative when `a` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(b.duration_since(a).as_secs_f64() * 1e3),
    }
}

fn ms_signed(a: Duration, b: Duration) -> String {
    format!("{:+.3} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

/// What the numbers were measured on.
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    load: String,
    fs_of_tmp: String,
    date: String,
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_owned();
        let load = read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Machine {
            cpus: thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            load,
            fs_of_tmp: filesystem_of(&std::env::temp_dir()),
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

/// The type of the filesystem mounted at the longest prefix of `path`, from /proc/mounts.
fn filesystem_of(path: &Path) -> String {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max()
        .map(|(_, kind)| kind)
        .unwrap_or_else(|| "an unknown filesystem".into())
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// --- The stack ----------------------------------------------------------------------------------

struct Binaries {
    tesserad: PathBuf,
    sim: PathBuf,
    /// `target/`, for the report file.
    target_dir: PathBuf,
}

impl Binaries {
    /// `tesserad` is built with this bench; `tessera-sim` belongs to another package, so it must come
    /// from `cargo build --release --workspace`, and a stale one is pointed out.
    fn locate() -> Result<Binaries> {
        let tesserad = PathBuf::from(env!("CARGO_BIN_EXE_tesserad"));
        let profile_dir = tesserad
            .parent()
            .ok_or_else(|| anyhow!("odd binary path {}", tesserad.display()))?
            .to_owned();
        let sim = profile_dir.join("tessera-sim");
        ensure!(
            sim.is_file(),
            "{} is missing: run `cargo build --release --workspace` (or `make build`) first",
            sim.display()
        );
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("no workspace above {}", env!("CARGO_MANIFEST_DIR")))?;
        let built = fs::metadata(&sim).and_then(|m| m.modified()).ok();
        let newest = [workspace.join("device-sim/src"), workspace.join("src")]
            .iter()
            .filter_map(|d| newest_mtime(d))
            .max();
        if let (Some(built), Some(newest)) = (built, newest) {
            if newest > built {
                eprintln!(
                    "e2e: WARNING: {} is older than its sources; run `cargo build --release \
                     --workspace` for current numbers",
                    sim.display()
                );
            }
        }
        let target_dir = profile_dir
            .parent()
            .map_or_else(|| profile_dir.clone(), Path::to_owned);
        Ok(Binaries {
            tesserad,
            sim,
            target_dir,
        })
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The simulated card: the same card (state file) every time it is inserted.
struct SimCard<'a> {
    bins: &'a Binaries,
    work: &'a Path,
    state: PathBuf,
    /// The running simulator, i.e. the card is in the reader.
    proc: Option<Proc>,
}

impl SimCard<'_> {
    /// Starts the simulator and waits until it is connected to vpcd.
    fn insert(&mut self) -> Result<()> {
        let sim = Proc::spawn(
            "tessera-sim",
            Command::new(&self.bins.sim)
                .args(["piv", "--vpcd", VPCD_ADDR, "--state"])
                .arg(&self.state),
            self.work,
        )?;
        sim.wait_stdout("ready", START_TIMEOUT)?;
        self.proc = Some(sim);
        Ok(())
    }
}

async fn connect(address: &str) -> Result<Connection> {
    zbus::connection::Builder::address(address)?
        .build()
        .await
        .with_context(|| format!("connecting to the bench bus {address}"))
}

async fn peer_proxy(conn: &Connection) -> Result<PeerProxy<'static>> {
    Ok(PeerProxy::builder(conn)
        .destination(tesserad::BUS_NAME)?
        .path(tesserad::MANAGER_PATH)?
        .build()
        .await?)
}

fn wait_for_name(rt: &Runtime, conn: &Connection, daemon: &Proc) -> Result<()> {
    let dbus = rt.block_on(DBusProxy::new(conn))?;
    let name = BusName::try_from(tesserad::BUS_NAME)?;
    wait_for(
        START_TIMEOUT,
        daemon,
        "tesserad to own its bus name",
        || Ok(rt.block_on(dbus.name_has_owner(name.clone()))?),
    )
}

/// Waits until the daemon publishes the simulator's card at [`DEVICE_PATH`].
fn wait_for_device(rt: &Runtime, conn: &Connection, daemon: &Proc) -> Result<()> {
    let om = rt.block_on(async {
        ObjectManagerProxy::builder(conn)
            .destination(tesserad::BUS_NAME)?
            .path(tesserad::ROOT_PATH)?
            .build()
            .await
    })?;
    wait_for(
        START_TIMEOUT,
        daemon,
        "the card to appear on the bus",
        || {
            let objects = rt.block_on(om.get_managed_objects())?;
            Ok(objects.keys().any(|p| p.as_str() == DEVICE_PATH))
        },
    )
}

/// Polls `cond` until true; fails when `timeout` passes or `proc` exits, with its stderr.
fn wait_for(
    timeout: Duration,
    proc: &Proc,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if !proc.running() {
            bail!(
                "{} exited while waiting for {what}; its stderr:\n{}",
                proc.name,
                proc.stderr_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "no {what} within {timeout:?} (last error: {}); {} stderr:\n{}",
                last.map_or_else(|| "none".into(), |e| format!("{e:#}")),
                proc.name,
                proc.stderr_tail()
            );
        }
        thread::sleep(POLL);
    }
}

fn write_bus_config(work: &Path) -> Result<PathBuf> {
    let path = work.join("bus.conf");
    fs::write(&path, common::bus_config(&work.join("bus")))?;
    Ok(path)
}

/// A process this bench started: output in files of the work directory, stopped when dropped.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, work: &Path) -> Result<Proc> {
        let out = work.join(format!("{name}.out"));
        let err = work.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()
            .with_context(|| {
                format!("starting {name} ({})", cmd.get_program().to_string_lossy())
            })?;
        Ok(Proc {
            name,
            child: Some(child),
            out,
            err,
        })
    }

    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().and_then(|c| child_pid(c).ok())
    }

    fn running(&self) -> bool {
        // Signal 0 probes without sending; an unreaped zombie still counts, which only delays the
        // report of an early exit to the timeout.
        self.pid()
            .is_some_and(|pid| signal::kill(pid, None).is_ok())
            && !self.is_zombie()
    }

    fn is_zombie(&self) -> bool {
        self.pid().is_some_and(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true)
        })
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = signal::kill(pid, sig);
        }
    }

    /// Hands the child over (e.g. to time its exit); the guard then has nothing left to stop.
    fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// Waits for a stdout line containing `needle`; fails early if the process exits.
    fn wait_stdout(&self, needle: &str, timeout: Duration) -> Result<String> {
        let mut found = None;
        wait_for(timeout, self, &format!("{needle:?} on its stdout"), || {
            let text = fs::read_to_string(&self.out).unwrap_or_default();
            found = text
                .lines()
                .find(|l| l.contains(needle) && text.contains(&format!("{l}\n")))
                .map(str::to_owned);
            Ok(found.is_some())
        })?;
        found.ok_or_else(|| anyhow!("{}: line vanished", self.name))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.err).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// SIGTERM, then SIGKILL after [`TERM_GRACE`]; reaps the process.
    fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(Signal::SIGTERM);
        if self.wait_exit(TERM_GRACE).is_none() {
            eprintln!("e2e: {} ignored SIGTERM; killing it", self.name);
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.child = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn child_pid(child: &Child) -> Result<Pid> {
    Ok(Pid::from_raw(i32::try_from(child.id())?))
}

/// pcscd for the bench: the machine's if one runs, else one started here and stopped on drop.
struct Pcscd {
    _own: Option<Proc>,
}

impl Pcscd {
    fn ensure(work: &Path) -> Result<Pcscd> {
        let own = if pcscd_running() {
            None
        } else {
            fs::create_dir_all("/run/pcscd").context("creating /run/pcscd (needs root)")?;
            Some(Proc::spawn(
                "pcscd",
                Command::new(tool("pcscd")).arg("-f"),
                work,
            )?)
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = UnixStream::connect(PCSCD_SOCKET).is_ok() && reader_listed();
            if ready {
                return Ok(Pcscd { _own: own });
            }
            if let Some(p) = &own {
                ensure!(
                    p.running(),
                    "pcscd exited while starting:\n{}",
                    p.stderr_tail()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "pcscd shows no reader {READER:?} after {START_TIMEOUT:?}; is vsmartcard-vpcd \
                 installed (scripts/install-deps.sh)?"
            );
            thread::sleep(POLL);
        }
    }
}

fn reader_listed() -> bool {
    let Ok(ctx) = pcsc::Context::establish(Scope::User) else {
        return false;
    };
    ctx.list_readers_owned()
        .is_ok_and(|readers| readers.iter().any(|r| r.as_c_str() == READER))
}

/// Whether a live (non-zombie) process named `pcscd` exists.
fn pcscd_running() -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            comm.trim_end() == "pcscd" && !matches!(state, Some('Z' | 'X') | None)
        })
}

/// A system tool by name; root's non-login shells do not always have the sbin directories in PATH.
fn tool(name: &str) -> PathBuf {
    find_in_path(name).unwrap_or_else(|| PathBuf::from(name))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Opens (creating if needed) and exclusively flocks `path`, polling until `timeout`.
fn lock_file(path: &str, timeout: Duration) -> Result<Flock<File>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        // A lock file created by another user may be read-only for us; flock works on it anyway.
        .or_else(|_| File::open(path))
        .with_context(|| format!("opening {path}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => file = f,
            Err((_, e)) => return Err(e).with_context(|| format!("flock {path}")),
        }
        ensure!(
            Instant::now() < deadline,
            "{path} still locked after {timeout:?}: a test or `make demo` holds it"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

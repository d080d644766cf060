//! Part 6, PAM: whole `pamtester` processes through `pam_tessera.so`, interleaved round by round
//! with the daemon's own Authenticate and with their floors:
//! - reuse: `auth required pam_tessera.so reuse` in the mock logind's session c1, which holds a
//!   token bound to it (BindSession); no device is touched;
//! - card login: `auth required pam_tessera.so`, the simulated PIV card, the PIN on stdin;
//! - Authenticate: the bench's own client (no process start, no PAM);
//! - floor: pamtester with a service of `pam_permit.so` only (process start, libpam, the
//!   conversation set-up);
//! - refused: pam_tessera loaded and refusing at once (an unknown option: PAM_SERVICE_ERR before
//!   any bus), i.e. the floor plus loading the module.
//!
//! The services live in /etc/pam.d as `tessera-bench-*` while the part runs; a guard removes them,
//! on error and on panic too. logind is python-dbusmock's template on the bench's bus
//! (tests/common/logind.rs), which maps a process to a session by `MOCK_LOGIND_SESSION` in its
//! environment; its call log counts the logind calls of one reuse and one card login.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use zbus::zvariant::Value;

use crate::auth::Client;
use crate::common::logind::{MockLogind, SESSION_ENV};
use crate::procs::tool;
use crate::report::verdict;
use crate::stack::{warn_if_stale, Binaries};
use crate::stats::{median, median_f, ms, Percentiles};
use crate::{PIN, USER};

/// Target of issue 9 §7: reuse p50 for the whole pamtester process.
pub const TARGET_REUSE_P50: Duration = Duration::from_millis(5);
pub const PAM_WARMUP: usize = 5;
pub const PAM_ROUNDS: usize = 30;
pub const PAM_PER_ROUND: usize = 8;
/// The login session the reuse runs in.
const SESSION: &str = "c1";
/// Services are `/etc/pam.d/tessera-bench-<name>` (the cleanup scripts know the prefix).
const SERVICE_PREFIX: &str = "/etc/pam.d/tessera-bench-";
/// The card login's `timeout=`: the module, not the bench, bounds a run that would hang.
const CARD_TIMEOUT_S: u32 = 10;

/// What was measured, in the order [`WAYS`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Reuse,
    Card,
    Authenticate,
    Floor,
    Refused,
}

pub const WAYS: [Way; 5] = [
    Way::Reuse,
    Way::Card,
    Way::Authenticate,
    Way::Floor,
    Way::Refused,
];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Reuse => "pamtester authenticate, `reuse` (token bound to the session, no device)",
            Way::Card => "pamtester authenticate, simulated PIV card (PIN on stdin)",
            Way::Authenticate => "Authenticate, the bench's client (call → token)",
            Way::Floor => "pamtester floor: a service of pam_permit.so only",
            Way::Refused => "pamtester, pam_tessera loaded and refusing at once (bad option)",
        }
    }
}

pub struct PamResults {
    /// Per way, every sample; per round, each way's median (for side-by-side ratios).
    pub samples: HashMap<&'static str, Vec<Duration>>,
    pub rounds: Vec<HashMap<&'static str, Duration>>,
    /// Calls the logind mock logged during one reuse and one card login.
    pub logind_per_reuse: usize,
    pub logind_per_card: usize,
    /// One reuse under strace (the trace is kept next to the report).
    pub trace: std::result::Result<Trace, String>,
    /// The bus it ran on ("system-type" or the bench's permissive one), and the load average
    /// before and after.
    pub bus: &'static str,
    pub load_before: String,
    pub load_after: String,
}

impl PamResults {
    fn of(&self, way: Way) -> &[Duration] {
        self.samples.get(way.label()).map_or(&[], Vec::as_slice)
    }
}

/// Runs the part on the bench's bus at `address` (`bus` says which kind it is).
pub fn measure(
    client: &Client<'_>,
    bins: &Binaries,
    work: &Path,
    address: &str,
    bus: &'static str,
) -> Result<PamResults> {
    let module = module_path(bins)?;
    let pamtester = tool("pamtester");
    ensure!(
        pamtester.is_file(),
        "pamtester is not installed (`make deps`)"
    );
    let services = Services::write(&module)?;
    let logind = MockLogind::start(address, work);
    logind.add_session(SESSION, "seat0", 0, USER);
    // The token the reuse finds: an ordinary authentication bound to c1 (PAM open_session does
    // the same, through BindSession).
    let token = client.authenticate()?;
    client
        .rt
        .block_on(
            client
                .manager
                .bind_session(&token, HashMap::from([("session", Value::from(SESSION))])),
        )
        .context("BindSession to the mock's session c1")?;
    let run = Runner {
        pamtester: &pamtester,
        address,
    };
    for _ in 0..PAM_WARMUP {
        for way in WAYS {
            run.once(client, way)?;
        }
    }
    let logind_per_reuse = logind_calls(&logind, || run.once(client, Way::Reuse))?;
    let logind_per_card = logind_calls(&logind, || run.once(client, Way::Card))?;
    let load_before = loadavg();
    let mut samples: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    let mut rounds = Vec::new();
    for round in 0..PAM_ROUNDS {
        let mut this: HashMap<&'static str, Vec<Duration>> = HashMap::new();
        for i in 0..PAM_PER_ROUND {
            // Rotate the order so that none always follows the same other one.
            for k in 0..WAYS.len() {
                let way = WAYS[(round + i + k) % WAYS.len()];
                let d = run.once(client, way)?;
                this.entry(way.label()).or_default().push(d);
            }
        }
        let mut medians = HashMap::new();
        for (label, v) in this {
            medians.insert(label, median(&v));
            samples.entry(label).or_default().extend(v);
        }
        rounds.push(medians);
    }
    let load_after = loadavg();
    let trace = run.trace_reuse(&bins.target_dir.join("e2e-bench-reuse.strace"));
    drop(logind);
    drop(services);
    Ok(PamResults {
        samples,
        rounds,
        logind_per_reuse,
        logind_per_card,
        trace,
        bus,
        load_before,
        load_after,
    })
}

/// `libpam_tessera.so` next to the bench's `tesserad`, warned about when older than its sources.
fn module_path(bins: &Binaries) -> Result<PathBuf> {
    let dir = bins
        .tesserad
        .parent()
        .ok_or_else(|| anyhow!("odd binary path {}", bins.tesserad.display()))?;
    let module = dir.join("libpam_tessera.so");
    ensure!(
        module.is_file(),
        "{} is missing: run `cargo build --release --workspace` first",
        module.display()
    );
    warn_if_stale(&module, &["pam/src", "client/src"])?;
    Ok(module)
}

/// The bench's PAM services, removed when dropped (unwinding from a panic included).
struct Services {
    paths: Vec<PathBuf>,
}

impl Services {
    fn write(module: &Path) -> Result<Services> {
        let module = module
            .to_str()
            .ok_or_else(|| anyhow!("module path {} is not UTF-8", module.display()))?;
        let mut services = Services { paths: Vec::new() };
        let account = "account required pam_permit.so\n";
        for (name, auth) in [
            (
                "reuse",
                format!("auth required {module} reuse max_age=15m\n"),
            ),
            (
                "card",
                format!("auth required {module} timeout={CARD_TIMEOUT_S}\n"),
            ),
            ("floor", "auth required pam_permit.so\n".to_owned()),
            ("refused", format!("auth required {module} bench-refuses\n")),
        ] {
            let path = PathBuf::from(format!("{SERVICE_PREFIX}{name}"));
            // Pushed first: a half-written file is removed too.
            services.paths.push(path.clone());
            fs::write(&path, format!("{auth}{account}"))
                .with_context(|| format!("writing {} (needs root)", path.display()))?;
        }
        Ok(services)
    }

    fn name(way: Way) -> Option<&'static str> {
        match way {
            Way::Reuse => Some("tessera-bench-reuse"),
            Way::Card => Some("tessera-bench-card"),
            Way::Floor => Some("tessera-bench-floor"),
            Way::Refused => Some("tessera-bench-refused"),
            Way::Authenticate => None,
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = fs::remove_file(p);
        }
    }
}

struct Runner<'a> {
    pamtester: &'a Path,
    address: &'a str,
}

impl Runner<'_> {
    /// One timed run of `way`: a whole pamtester process (spawn → exit), or one Authenticate.
    fn once(&self, client: &Client<'_>, way: Way) -> Result<Duration> {
        let Some(service) = Services::name(way) else {
            return Ok(client.timed_authenticate()?.0);
        };
        let mut cmd = self.command(self.pamtester, &[], service, way);
        let t = Instant::now();
        let mut child = cmd.spawn().context("starting pamtester")?;
        if let Some(mut stdin) = child.stdin.take() {
            if way == Way::Card {
                // pamtester may exit before reading it (a failure); its exit status tells.
                let _ = stdin.write_all(format!("{PIN}\n").as_bytes());
            }
        }
        let out = child.wait_with_output().context("waiting for pamtester")?;
        let elapsed = t.elapsed();
        let ok = out.status.success();
        let expected = way != Way::Refused;
        ensure!(
            ok == expected,
            "pamtester {service}: {} (expected {}):\n{}{}",
            out.status,
            if expected { "success" } else { "a failure" },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(elapsed)
    }
}

impl Runner<'_> {
    /// `program` (pamtester, or a tracer with `args` before it) running `service` for [`USER`],
    /// pipes for all three streams.
    fn command(&self, program: &Path, args: &[&str], service: &str, way: Way) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        if program != self.pamtester {
            cmd.arg(self.pamtester);
        }
        // `cargo bench` puts its build directories in LD_LIBRARY_PATH (for aws-lc-sys), and
        // pamtester would inherit them: the loader would then search some 30 directories for
        // every library pamtester, libpam and the module load, a cost no real sudo or login pays.
        cmd.env_remove("LD_LIBRARY_PATH")
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address)
            .args([service, USER, "authenticate"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if way == Way::Reuse {
            cmd.env(SESSION_ENV, SESSION);
        }
        cmd
    }

    /// One reuse under `strace -f`, its trace written to `out`: what the process does on the bus
    /// and how many threads it starts. `Err` says why there is none.
    fn trace_reuse(&self, out: &Path) -> std::result::Result<Trace, String> {
        let strace = tool("strace");
        if !strace.is_file() {
            return Err("strace is not installed".into());
        }
        let out_arg = out.to_string_lossy().into_owned();
        let args = [
            "-f",
            "-ttt",
            "-e",
            "trace=connect,sendmsg,recvmsg,clone,clone3",
            "-o",
            out_arg.as_str(),
        ];
        let service = Services::name(Way::Reuse).unwrap_or_default();
        let status = self
            .command(&strace, &args, service, Way::Reuse)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("strace: {e}"))?;
        if !status.status.success() {
            return Err(format!("the traced reuse failed: {}", status.status));
        }
        let text = fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let count = |call: &str| {
            text.lines()
                .filter(|l| l.contains(&format!(" {call}(")) && !l.contains("EAGAIN"))
                .count()
        };
        Ok(Trace {
            threads: count("clone") + count("clone3"),
            connects: count("connect"),
            sent: count("sendmsg"),
            received: count("recvmsg"),
        })
    }
}

/// Syscalls of one traced reuse (all its threads).
pub struct Trace {
    pub threads: usize,
    pub connects: usize,
    pub sent: usize,
    pub received: usize,
}

/// How many calls the logind mock logged while `f` ran (its log lines have a timestamp first).
fn logind_calls(logind: &MockLogind, f: impl FnOnce() -> Result<Duration>) -> Result<usize> {
    let count = |l: &MockLogind| {
        l.log()
            .lines()
            .filter(|line| {
                line.split(' ')
                    .next()
                    .is_some_and(|s| s.parse::<f64>().is_ok())
            })
            .count()
    };
    let before = count(logind);
    f()?;
    // The mock writes its log line before it answers, and its reader thread may lag a little.
    std::thread::sleep(Duration::from_millis(200));
    Ok(count(logind).saturating_sub(before))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The part's rows and its section.
pub fn report(s: &mut String, r: &PamResults) {
    let p = |way| Percentiles::of(r.of(way));
    let (reuse, card, auth, floor, refused) = (
        p(Way::Reuse),
        p(Way::Card),
        p(Way::Authenticate),
        p(Way::Floor),
        p(Way::Refused),
    );
    let _ = writeln!(
        s,
        "\n### PAM: whole pamtester processes beside Authenticate ({} rounds × {} of each, \
         interleaved; {} bus; load average {} before, {} after)\n",
        PAM_ROUNDS, PAM_PER_ROUND, r.bus, r.load_before, r.load_after
    );
    let _ = writeln!(s, "| Measurement | p50 | p90 | Target | |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for way in WAYS {
        let q = p(way);
        let (target, met) = if way == Way::Reuse {
            (
                format!("p50 ≤ {}", ms(TARGET_REUSE_P50)),
                verdict(q.p50 <= TARGET_REUSE_P50),
            )
        } else {
            (String::new(), "")
        };
        let _ = writeln!(
            s,
            "| {} (n={}) | {} | {} | {target} | {met} |",
            way.label(),
            r.of(way).len(),
            ms(q.p50),
            ms(q.p90)
        );
    }
    let ratio = |a: Way, b: Way| {
        median_f(r.rounds.iter().filter_map(|m| {
            let (x, y) = (m.get(a.label())?, m.get(b.label())?);
            Some(x.as_secs_f64() / y.as_secs_f64().max(1e-9))
        }))
    };
    let less = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1e3;
    let _ = writeln!(
        s,
        "\nRatios (median over rounds of each round's p50s): reuse / Authenticate {:.2}, card \
         login / Authenticate {:.2}, reuse / floor {:.2}, card login / reuse {:.2}.",
        ratio(Way::Reuse, Way::Authenticate),
        ratio(Way::Card, Way::Authenticate),
        ratio(Way::Reuse, Way::Floor),
        ratio(Way::Card, Way::Reuse)
    );
    let _ = writeln!(
        s,
        "\nWhere a reuse goes (p50s): pamtester and libpam {}; loading pam_tessera.so {:+.3} ms; \
         the module's bus work, the daemon and logind {:+.3} ms. A card login adds {:+.3} ms over \
         the reuse; the daemon's own Authenticate is {}. logind calls (the mock's log): {} per \
         reuse, {} per card login.",
        ms(floor.p50),
        less(refused.p50, floor.p50),
        less(reuse.p50, refused.p50),
        less(card.p50, reuse.p50),
        ms(auth.p50),
        r.logind_per_reuse,
        r.logind_per_card
    );
    match &r.trace {
        Ok(t) => {
            let _ = writeln!(
                s,
                "\nOne reuse under `strace -f` (target/e2e-bench-reuse.strace): {} socket \
                 connect(s), {} sendmsg, {} recvmsg (EAGAIN not counted), {} thread(s) started.",
                t.connects, t.sent, t.received, t.threads
            );
        }
        Err(why) => {
            let _ = writeln!(s, "\nNo syscall trace of a reuse: {why}.");
        }
    }
}

//! The Markdown report of parts 1-4, with the targets of the performance brief and whether each
//! was met (part 5 adds its own, [`crate::live_tokens::report`]).

use std::fmt::Write as _;
use std::time::Duration;

use crate::auth::{AuthResults, AUTH_PER_ROUND, AUTH_WARMUP};
use crate::fido::{self, FidoResults};
use crate::idle::{IdleResults, IDLE_SETTLE, STRACE_WINDOW};
use crate::machine::Machine;
use crate::pulls::PullResults;
use crate::stack::Binaries;
use crate::start_auth;
use crate::stats::{median, median_f, ms, ms_signed, percentile_f, us, Percentiles};
use crate::throughput::{Rate, ThroughputRound, CLIENT_COUNTS, THROUGHPUT_WINDOW};

// Targets, as stated in the performance brief.
pub const TARGET_AUTH_P50: Duration = Duration::from_micros(1500);
/// At the limit, Authenticate p50 within this factor of the p50 below it.
pub const TARGET_AT_LIMIT_RATIO: f64 = 1.05;
pub const TARGET_VALIDATE_RATIO: f64 = 0.90;
pub const TARGET_REVOKE_EXTRA: Duration = Duration::from_millis(10);
pub const TARGET_RSS_KIB: u64 = 20 * 1024;

pub struct Results {
    pub auth: AuthResults,
    pub throughput: Vec<ThroughputRound>,
    pub pulls: PullResults,
    pub idle: IdleResults,
    pub fido: FidoResults,
}

pub fn report(machine: &Machine, bins: &Binaries, r: &Results) -> String {
    let mut s = String::new();
    header(&mut s, machine);
    auth_rows(&mut s, &r.auth);
    fido::rows(&mut s, &r.fido);
    let pulls = &r.pulls.pulls;
    let pcscd: Vec<Duration> = pulls.iter().map(|p| p.pcscd).collect();
    let mut extra: Vec<f64> = pulls.iter().map(|p| p.extra_ms).collect();
    extra.sort_by(f64::total_cmp);
    let extra_at = |p: f64| percentile_f(&extra, p);
    let (extra_p50, extra_p90, extra_max) = (extra_at(50.0), extra_at(90.0), extra_at(100.0));
    let target_extra_ms = TARGET_REVOKE_EXTRA.as_secs_f64() * 1e3;
    let idle = &r.idle;
    let idle_switches: u64 = idle.threads.iter().map(|t| t.2).sum();
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

    auth_sections(&mut s, &r.auth);

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
    binaries(&mut s, bins);
    s
}

/// The report of part 1 alone (`-- --bench --auth-only`).
pub fn auth_only(machine: &Machine, bins: &Binaries, a: &AuthResults, f: &FidoResults) -> String {
    let mut s = String::from("# Tessera end-to-end benchmark: authentication only\n\n");
    header(&mut s, machine);
    auth_rows(&mut s, a);
    fido::rows(&mut s, f);
    auth_sections(&mut s, a);
    binaries(&mut s, bins);
    s
}

/// The title, what the run was measured on, and the head of the summary table.
fn header(s: &mut String, machine: &Machine) {
    machine_line(s, machine);
    let _ = writeln!(s, "| Measurement | Result | Target | |");
    let _ = writeln!(s, "|---|---|---|---|");
}

/// The title and what the run was measured on.
pub fn machine_line(s: &mut String, machine: &Machine) {
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
}

/// The summary rows of part 1: Authenticate, at the limit, as a request, and its floor.
fn auth_rows(s: &mut String, a: &AuthResults) {
    let auth = Percentiles::of(&a.auth);
    let at_limit = Percentiles::of(&a.at_limit);
    let at_limit_ratio = at_limit.p50.as_secs_f64() / auth.p50.as_secs_f64().max(1e-9);
    let _ = writeln!(
        s,
        "| Authenticate, client call → token (n={}) | {} | p50 ≤ {} | {} |",
        a.auth.len(),
        auth.summary(),
        ms(TARGET_AUTH_P50),
        verdict(auth.p50 <= TARGET_AUTH_P50)
    );
    start_auth::rows(s, a);
    let _ = writeln!(
        s,
        "| Authenticate at the live-token limit (32; each supersedes the oldest) (n={}) | {} ({:.3} × the p50 above) | p50 ≤ {TARGET_AT_LIMIT_RATIO} × the p50 above | {} |",
        a.at_limit.len(),
        at_limit.summary(),
        at_limit_ratio,
        verdict(at_limit_ratio <= TARGET_AT_LIMIT_RATIO)
    );
    let _ = writeln!(
        s,
        "| Authenticate floor (sum of its parts, below) | {} | | |",
        ms(floor(a))
    );
}

/// The sum of the parts an authentication is made of (medians).
fn floor(a: &AuthResults) -> Duration {
    let apdus = u32::try_from(a.apdus_per_auth).unwrap_or(u32::MAX);
    median(&a.apdu) * apdus
        + median(&a.txn)
        + median(&a.ping)
        + median(&a.card)
        + median(&a.verify)
        + median(&a.jwt)
        + median(&a.fsync)
}

/// Part 1's sections: the slowest authentications, where the time goes, and the request beside
/// Authenticate.
fn auth_sections(s: &mut String, a: &AuthResults) {
    let auth = Percentiles::of(&a.auth);
    let apdu = median(&a.apdu);
    let txn = median(&a.txn);
    let ping = median(&a.ping);
    let card = median(&a.card);
    let verify = median(&a.verify);
    let jwt = median(&a.jwt);
    let fsync = median(&a.fsync);
    let apdus = a.apdus_per_auth;
    let floor = floor(a);
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

    start_auth::section(s, a);
}

pub fn binaries(s: &mut String, bins: &Binaries) {
    let _ = writeln!(
        s,
        "\nBinaries: {} and {}.",
        bins.tesserad.display(),
        bins.sim.display()
    );
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

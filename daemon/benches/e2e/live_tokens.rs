//! Part 5 of the e2e bench, many live tokens: the daemon's resident memory with 1,000 and with
//! 100,000 live tokens of one user (the difference, per token, is what the token index and the
//! store's cache cost), and ValidateToken p50 at both sizes (a SHA-256 and a hash-map look-up
//! should not slow down).
//!
//! The tokens are real: issued by Authenticate through the card, several calls in flight.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use nix::unistd::Pid;
use tessera_client::ManagerProxy;
use tokio::runtime::Runtime;

use super::{median, pin_options, status_kib, USER};

/// The two sizes compared.
pub const SMALL: usize = 1_000;
pub const LARGE: usize = 100_000;
/// Authentications in flight while the index is filled: as many as one caller may have waiting
/// for a device (more answer Busy).
const FILLERS: usize = 2;
/// Sequential ValidateToken calls per size.
const VALIDATIONS: usize = 2_000;
/// Target: resident memory per live token.
pub const TARGET_BYTES_PER_TOKEN: f64 = 300.0;
/// Target: ValidateToken p50 at [`LARGE`] within this factor of the one at [`SMALL`].
pub const TARGET_VALIDATE_RATIO: f64 = 1.10;

/// What one run measured.
pub struct LiveTokenResults {
    /// Live tokens of the user at the two measurements.
    pub small: usize,
    pub large: usize,
    /// VmRSS, KiB.
    pub rss_small_kib: u64,
    pub rss_large_kib: u64,
    pub validate_small: Duration,
    pub validate_large: Duration,
    /// How long filling the index from `small` to `large` took.
    pub fill: Duration,
}

impl LiveTokenResults {
    pub fn bytes_per_token(&self) -> f64 {
        let grown = self.rss_large_kib.saturating_sub(self.rss_small_kib) as f64 * 1024.0;
        grown / (self.large.saturating_sub(self.small).max(1)) as f64
    }

    pub fn validate_ratio(&self) -> f64 {
        self.validate_large.as_secs_f64() / self.validate_small.as_secs_f64().max(1e-9)
    }
}

/// Fills the user's live tokens to [`SMALL`], measures, fills to [`LARGE`], measures. The daemon's
/// `max_live_per_user` must be at least [`LARGE`].
pub fn measure(rt: &Runtime, m: &ManagerProxy<'static>, daemon: Pid) -> Result<LiveTokenResults> {
    let mut live = rt
        .block_on(m.list_sessions(USER))
        .context("ListSessions")?
        .len();
    live += fill(rt, m, SMALL.saturating_sub(live))?;
    let small = live;
    let (rss_small_kib, validate_small) = sample(rt, m, daemon)?;
    live += 1; // the token `sample` validated
    let started = Instant::now();
    eprintln!("e2e: 5/5 filling to {LARGE} live tokens");
    live += fill(rt, m, LARGE.saturating_sub(live))?;
    let fill_time = started.elapsed();
    let large = live;
    let (rss_large_kib, validate_large) = sample(rt, m, daemon)?;
    Ok(LiveTokenResults {
        small,
        large,
        rss_small_kib,
        rss_large_kib,
        validate_small,
        validate_large,
        fill: fill_time,
    })
}

/// Issues `n` tokens with [`FILLERS`] calls in flight; returns `n`.
fn fill(rt: &Runtime, m: &ManagerProxy<'static>, n: usize) -> Result<usize> {
    rt.block_on(async {
        let tasks: Vec<_> = (0..FILLERS)
            .map(|i| {
                let m = m.clone();
                let share = n / FILLERS + usize::from(i < n % FILLERS);
                tokio::spawn(async move {
                    for _ in 0..share {
                        m.authenticate(USER, pin_options()).await?;
                    }
                    Ok::<(), zbus::Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| anyhow!("filler: {e}"))??;
        }
        Ok(n)
    })
}

/// The daemon's RSS once it has settled, and ValidateToken p50 of a fresh token.
fn sample(rt: &Runtime, m: &ManagerProxy<'static>, daemon: Pid) -> Result<(u64, Duration)> {
    let token = rt.block_on(m.authenticate(USER, pin_options()))?;
    let mut times = Vec::with_capacity(VALIDATIONS);
    rt.block_on(async {
        for _ in 0..VALIDATIONS {
            let t = Instant::now();
            m.validate_token(&token).await?;
            times.push(t.elapsed());
        }
        Ok::<(), zbus::Error>(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{daemon}/status"))?;
    let rss = status_kib(&status, "VmRSS:").ok_or_else(|| anyhow!("no VmRSS for {daemon}"))?;
    Ok((rss, median(&times)))
}

/// The report's section.
pub fn report(s: &mut String, r: &LiveTokenResults) {
    let per = r.bytes_per_token();
    let ratio = r.validate_ratio();
    let _ = writeln!(s, "\n## 5. Many live tokens (one user)\n");
    let _ = writeln!(
        s,
        "| Live tokens | Daemon RSS | ValidateToken p50 (n={VALIDATIONS}) |"
    );
    let _ = writeln!(s, "|---|---|---|");
    for (n, rss, v) in [
        (r.small, r.rss_small_kib, r.validate_small),
        (r.large, r.rss_large_kib, r.validate_large),
    ] {
        let _ = writeln!(
            s,
            "| {n} | {:.1} MiB | {:.3} ms |",
            rss as f64 / 1024.0,
            v.as_secs_f64() * 1e3
        );
    }
    let _ = writeln!(
        s,
        "\nResident memory per live token: **{per:.0} bytes** (target ≤ {TARGET_BYTES_PER_TOKEN:.0}: {}); \
         ValidateToken p50 at {} / at {}: **{ratio:.2}** (target ≤ {TARGET_VALIDATE_RATIO:.2}: {}). \
         Filling took {:.1} s.",
        super::verdict(per <= TARGET_BYTES_PER_TOKEN),
        r.large,
        r.small,
        super::verdict(ratio <= TARGET_VALIDATE_RATIO),
        r.fill.as_secs_f64()
    );
}

//! Percentiles, medians and the units the report prints.

use std::time::{Duration, Instant};

pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles; zeros for no samples.
    pub fn of(samples: &[Duration]) -> Percentiles {
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

impl Percentiles {
    /// "p50 … · p90 … · p99 … · max …", as the report's tables print them.
    pub fn summary(&self) -> String {
        format!(
            "p50 {} · p90 {} · p99 {} · max {}",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Nearest-rank percentile `p` of values already sorted; zero for none.
pub fn percentile_f(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(0.0)
}

pub fn median(samples: &[Duration]) -> Duration {
    Percentiles::of(samples).p50
}

pub fn median_f(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `a - b` in milliseconds, negative when `a` came first.
pub fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(b.duration_since(a).as_secs_f64() * 1e3),
    }
}

pub fn ms_signed(a: Duration, b: Duration) -> String {
    format!("{:+.3} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

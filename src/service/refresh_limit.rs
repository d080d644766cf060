//! The refresh rate limit: a token lineage (an authentication and the tokens its refreshes
//! produced, one live at a time) refreshes at most once per `token.min_refresh_interval`.
//!
//! A refresh product's `iat` is the time of its lineage's last refresh, so the limit needs only to
//! know which tokens came from a refresh: those may be refreshed once `iat + interval` has passed;
//! a token straight from Authenticate may be refreshed at once. The set is kept in memory only: after
//! a daemon restart each lineage may refresh once early (restarts are root's), never more often.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::locks::lock;
use crate::{Error, Result};

/// Past this many remembered tokens, expired ones are dropped at the next note.
const PRUNE_AT: usize = 4096;

/// The jtis of tokens that came from a refresh, with their expiry.
#[derive(Default)]
pub(super) struct RefreshedTokens {
    exp_by_jti: Mutex<HashMap<String, u64>>,
}

impl RefreshedTokens {
    /// Refuses a refresh of token `jti`, issued at `iat`, that comes less than `interval` after the
    /// refresh that produced it: [`Error::RateLimited`] with the seconds left.
    pub(super) fn check(&self, jti: &str, iat: u64, interval: Duration, now: u64) -> Result<()> {
        if interval.is_zero() || !lock(&self.exp_by_jti).contains_key(jti) {
            return Ok(());
        }
        // Whole seconds, rounded up: "1500ms" waits 2 s rather than 1.
        let secs = interval
            .as_secs()
            .saturating_add(u64::from(interval.subsec_nanos() > 0));
        let allowed_at = iat.saturating_add(secs);
        if now < allowed_at {
            return Err(Error::RateLimited {
                why: "this session was refreshed less than token.min_refresh_interval ago",
                retry_after_secs: allowed_at - now,
            });
        }
        Ok(())
    }

    /// Notes that a refresh replaced `old` by `new` (which expires at `exp`).
    pub(super) fn note(&self, old: &str, new: &str, exp: u64, now: u64) {
        let mut m = lock(&self.exp_by_jti);
        m.remove(old);
        if m.len() >= PRUNE_AT {
            m.retain(|_, e| *e > now);
        }
        m.insert(new.to_owned(), exp);
    }
}

//! The per-user lockout: failed authentications within `[auth] failure_window`, and the lockout
//! that `max_failures` of them start. Kept in memory only (a restart is root's, and forgets them).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::Service;
use crate::locks::lock;
use crate::policy::config::Config;
use crate::{Error, Result};

/// Every user's recent failures.
#[derive(Debug, Default)]
pub(super) struct Lockout {
    users: Mutex<HashMap<String, Failures>>,
}

/// Failed authentications of one user inside the window, and the end of a lockout.
#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<u64>,
    locked_until: u64,
}

impl Lockout {
    /// [`Error::RateLimited`] while `user` is locked out at `now`.
    fn check(&self, user: &str, now: u64) -> Result<()> {
        match lock(&self.users).get(user) {
            Some(f) if f.locked_until > now => Err(Error::RateLimited {
                why: "too many failed attempts",
                retry_after_secs: f.locked_until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `user` at `now`; enough of them within the window lock the user out.
    fn failed(&self, user: &str, now: u64, cfg: &Config) {
        let mut all = lock(&self.users);
        let f = all.entry(user.to_owned()).or_default();
        let window = cfg.auth.failure_window.as_secs();
        while f
            .times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= window)
        {
            f.times.pop_front();
        }
        f.times.push_back(now);
        if f.times.len() >= usize::try_from(cfg.auth.max_failures).unwrap_or(usize::MAX) {
            f.locked_until = now.saturating_add(cfg.auth.lockout.as_secs());
            f.times.clear();
            tracing::warn!(%user, "too many failed authentications; locked out");
        }
    }

    /// Forgets the failures of `user` (a success).
    fn succeeded(&self, user: &str) {
        lock(&self.users).remove(user);
    }
}

impl Service {
    /// Refuses a locked-out user before any device is touched.
    pub(super) fn check_lockout(&self, user: &str) -> Result<()> {
        self.inner.lockout.check(user, self.inner.clock.unix_secs())
    }

    /// Counts a wrong secret (PIN) the device refused, as it happens: a request may go on and ask
    /// again, and each wrong PIN counts as a failed v1 call did.
    pub(super) fn note_wrong_secret(&self, user: &str) {
        self.inner
            .lockout
            .failed(user, self.inner.clock.unix_secs(), &self.config());
    }

    /// Counts an authentication's or enrollment's outcome toward the lockout. Its wrong PINs were
    /// counted as they happened ([`Service::note_wrong_secret`]), so a final PinInvalid is not
    /// counted again.
    pub(super) fn note_outcome<T>(&self, user: &str, result: &Result<T>) {
        let lockout = &self.inner.lockout;
        match result {
            Ok(_) => lockout.succeeded(user),
            // A card that is not the enrolled one. A PIN the daemon refused to try
            // (PinWouldBlock) or a blocked card tested nothing, but they count too: otherwise a
            // caller could keep poking a card at its last retry without ever being slowed down.
            Err(Error::PinWouldBlock { .. } | Error::PinBlocked | Error::SignatureInvalid(_)) => {
                lockout.failed(user, self.inner.clock.unix_secs(), &self.config())
            }
            Err(_) => {}
        }
    }
}

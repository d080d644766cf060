//! The signature counter of FIDO keys: a key signs a counter that only goes up (CTAP 2.1 §6.2,
//! WebAuthn §6.1.1 step 17), so a counter that did not rise means two keys share the credential:
//! one is a clone. The login is refused and the enrollment's live tokens are revoked ("cloned").
//!
//! A counter that rose is recorded without delaying the login by a commit of its own: the write
//! is queued ([`crate::store::Store::apply_detached`]) and joins the store's next group commit. Should the daemon die before that commit, the stored
//! counter is one login behind, which only lets a clone's counter pass that one step sooner; it
//! never refuses the genuine key, whose counter is above both.

use super::Service;
use crate::store::{Enrollment, TokenState, WriteOp};
use crate::{Error, Result};

/// Why tokens of an enrollment whose key was cloned die.
pub const CLONED: &str = "cloned";

/// What to do with the counter `new` of an assertion, the last one recorded being `stored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CounterVerdict {
    /// Fine; record `Some(count)` (it rose) or nothing.
    Accept(Option<u32>),
    /// The counter did not rise while either value is non-zero: a cloned key.
    Cloned,
}

/// The counter rule. Keys without a counter report 0 forever (WebAuthn §6.1.1: both zero is no
/// evidence); counters that are global to the key rise by more than one per login, which is fine.
pub(super) fn verdict(check: bool, stored: u32, new: Option<u32>) -> CounterVerdict {
    let Some(new) = new else {
        // The device has no counter (PIV).
        return CounterVerdict::Accept(None);
    };
    if check && (stored != 0 || new != 0) && new <= stored {
        return CounterVerdict::Cloned;
    }
    CounterVerdict::Accept((new > stored).then_some(new))
}

impl Service {
    /// Applies the counter rule to an assertion with enrollment `e` that reported `new`.
    ///
    /// Errors: [`Error::SignatureInvalid`] for a cloned key, after its live tokens are revoked.
    pub(super) async fn check_sign_count(&self, e: &Enrollment, new: Option<u32>) -> Result<()> {
        let check = self.config().fido.check_sign_count;
        // The newest recorded value, not the one read when the request began: another login may
        // have raised it while this one waited.
        let stored = self
            .inner
            .store
            .enrollment(&e.id)?
            .map_or(e.sign_count, |now| now.sign_count);
        match verdict(check, stored, new) {
            CounterVerdict::Accept(None) => Ok(()),
            CounterVerdict::Accept(Some(count)) => {
                // Measured with a key that answers at once (fido_test::login_latency, on a
                // 2-core machine at load 7, so roughly): p50 1.55-1.7 ms this way, 1.75-1.9 ms
                // awaiting the commit; the difference is the second commit.
                self.inner.store.apply_detached(vec![WriteOp::SetSignCount {
                    enrollment: e.id.clone(),
                    count,
                }])
            }
            CounterVerdict::Cloned => {
                tracing::warn!(
                    user = %e.user, enrollment = %e.id, stored, reported = ?new,
                    "the key's signature counter went back: it may be a clone; its tokens are revoked"
                );
                self.revoke_cloned(e).await?;
                Err(Error::SignatureInvalid(
                    "the key's signature counter went back: it may be a clone",
                ))
            }
        }
    }

    /// Revokes every live token of enrollment `e` with reason "cloned", announced like a removal.
    async fn revoke_cloned(&self, e: &Enrollment) -> Result<()> {
        // No token of the user is recorded meanwhile (issue and refresh take this lock).
        let user_lock = self.user_lock(&e.user);
        let _serial = user_lock.lock().await;
        // In memory first: validations fail from this instant, even if the store cannot be
        // written (then the tokens live on in the store until they expire or the key is
        // un-enrolled; this daemon refuses them meanwhile).
        let revoked = self.inner.tokens.revoke_enrollment(&e.user, &e.id, CLONED);
        if revoked.is_empty() {
            return Ok(());
        }
        let now = self.inner.clock.unix_secs();
        let mut ops: Vec<WriteOp> = revoked
            .iter()
            .map(|jti| WriteOp::SetTokenState {
                jti: jti.clone(),
                state: TokenState::Revoked,
                reason: CLONED.into(),
                at: now,
            })
            .collect();
        ops.push(super::tokens::cap_dead(&e.user, revoked.clone()));
        for jti in revoked {
            self.announce_revoked(jti, &e.user, CLONED);
        }
        self.inner.store.apply(ops).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_rule() {
        use CounterVerdict::{Accept, Cloned};
        for (check, stored, new, want) in [
            (true, 0, Some(0), Accept(None)),
            (true, 0, Some(5), Accept(Some(5))),
            (true, 5, Some(5), Cloned),
            (true, 5, Some(3), Cloned),
            (true, 5, Some(0), Cloned),
            (true, 5, Some(6), Accept(Some(6))),
            (true, 5, Some(5_000), Accept(Some(5_000))),
            (true, u32::MAX, Some(u32::MAX), Cloned),
            (true, 7, None, Accept(None)),
            (false, 5, Some(5), Accept(None)),
            (false, 5, Some(3), Accept(None)),
            (false, 5, Some(0), Accept(None)),
            (false, 5, Some(9), Accept(Some(9))),
        ] {
            assert_eq!(
                verdict(check, stored, new),
                want,
                "check {check}, stored {stored}, new {new:?}"
            );
        }
    }
}

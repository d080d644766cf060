//! Signing-key upkeep: rotation when `[keys] rotate_every` is due (or root asks), retirement of
//! previous keys once no live token needs them, and the store's metadata row of every key in the
//! ring. Runs only when called (issue, Jwks, RotateKey), never on a timer. The ring itself
//! ([`KeyRing`]) is shared with token issue and validation; what is owned here is when upkeep next
//! has work and whether a key still lacks its row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Service;
use crate::locks::{read, write};
use crate::store::{KeyMeta, Store, WriteOp};
use crate::token::keys::KeyRing;
use crate::Result;

/// The upkeep's own state.
#[derive(Debug, Default)]
pub(super) struct KeyUpkeep {
    /// Serialises rotation and retirement.
    serial: tokio::sync::Mutex<()>,
    /// Unix time before which upkeep has nothing to do.
    next_check: AtomicU64,
    /// A key of the ring has no metadata row yet (its write failed); upkeep retries it.
    unrecorded: AtomicBool,
}

impl KeyUpkeep {
    /// Makes the next call look at the keys again (the configuration changed).
    pub(super) fn check_soon(&self) {
        self.next_check.store(0, Ordering::SeqCst);
    }
}

/// Writes the metadata row of every key of `keys` the store lacks (at start-up, before any token
/// can be issued: the store refuses tokens of a key without a row).
pub(super) fn record_keys(store: &Store, keys: &KeyRing, now: u64) -> Result<()> {
    store.apply_blocking(missing_rows(store, keys, now)?)?;
    Ok(())
}

/// The rows of the keys of `keys` the store has none for.
fn missing_rows(store: &Store, keys: &KeyRing, now: u64) -> Result<Vec<WriteOp>> {
    let known: Vec<String> = store.signing_keys()?.into_iter().map(|k| k.kid).collect();
    Ok(std::iter::once(keys.active())
        .chain(keys.previous().iter())
        .filter(|k| !known.iter().any(|kid| kid == k.kid()))
        .map(|k| {
            WriteOp::InsertSigningKey(KeyMeta {
                kid: k.kid().to_owned(),
                // A key file dated in the future (a clock set back) is recorded as made now.
                created: k.created().min(now),
                retired: None,
            })
        })
        .collect())
}

impl Service {
    /// Rotates the signing key when it is due and drops previous keys no live token needs. Cheap
    /// when nothing is due.
    pub(super) async fn maintain_keys(&self, now: u64) -> Result<()> {
        let upkeep = &self.inner.key_upkeep;
        if now < upkeep.next_check.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _serial = upkeep.serial.lock().await;
        if upkeep.unrecorded.load(Ordering::SeqCst) {
            let ops = missing_rows(&self.inner.store, &read(&self.inner.keys), now)?;
            self.inner.store.apply(ops).await?;
            upkeep.unrecorded.store(false, Ordering::SeqCst);
        }
        let rotate_every = self.config().keys.rotate_every.as_secs();
        let due = read(&self.inner.keys)
            .active()
            .created()
            .saturating_add(rotate_every);
        if now >= due {
            self.rotate_now(now).await?;
        }
        // A key may still have signed a token that is not indexed yet (prepared before a card
        // exchange, at most a device timeout ago): previous keys get that long, and a minute more,
        // after they stopped signing before they can go.
        let grace = self.config().device.timeout.as_secs().saturating_add(60);
        let stale: Vec<String> = {
            let keys = read(&self.inner.keys);
            let mut replaced_at = keys.active().created();
            let mut stale = Vec::new();
            for k in keys.previous() {
                if now >= replaced_at.saturating_add(grace)
                    && !self.inner.tokens.kid_in_use(k.kid(), now)
                {
                    stale.push(k.kid().to_owned());
                }
                replaced_at = k.created();
            }
            stale
        };
        for kid in stale {
            write(&self.inner.keys).retire(&self.inner.state_dir, &kid)?;
            tracing::info!(%kid, "signing key retired: every token it signed has expired");
        }
        let due = read(&self.inner.keys)
            .active()
            .created()
            .saturating_add(rotate_every);
        // Previous keys are looked at again within a minute; rotation exactly when due.
        let next = due.min(now.saturating_add(60));
        upkeep.next_check.store(next, Ordering::SeqCst);
        Ok(())
    }

    /// Rotates now, whether due or not (RotateKey); the new kid.
    pub(super) async fn rotate_on_request(&self, now: u64) -> Result<String> {
        let _serial = self.inner.key_upkeep.serial.lock().await;
        self.rotate_now(now).await
    }

    /// Makes a new active key; durable (key file and metadata) before it returns. The caller holds
    /// the upkeep's `serial` lock.
    async fn rotate_now(&self, now: u64) -> Result<String> {
        let (old, new) = {
            let mut keys = write(&self.inner.keys);
            let old = keys.active().kid().to_owned();
            keys.rotate(&self.inner.state_dir, now)?;
            (old, keys.active().kid().to_owned())
        };
        let recorded = self
            .inner
            .store
            .apply(vec![
                WriteOp::InsertSigningKey(KeyMeta {
                    kid: new.clone(),
                    created: now,
                    retired: None,
                }),
                WriteOp::RetireSigningKey { kid: old, at: now },
            ])
            .await;
        // The new key signs from now on; until its metadata row exists the store refuses its
        // tokens, so upkeep keeps trying to write the row at every call until it succeeds.
        let upkeep = &self.inner.key_upkeep;
        upkeep.check_soon();
        if let Err(e) = recorded {
            upkeep.unrecorded.store(true, Ordering::SeqCst);
            return Err(e);
        }
        tracing::info!(kid = %new, "signing key rotated");
        Ok(new)
    }
}

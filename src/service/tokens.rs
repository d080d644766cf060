//! Token issue, validation and revocation, and the in-memory index of issued tokens.
//!
//! The index maps the SHA-256 of each issued token to its record. A token the daemon issued is
//! recognised by that hash alone: its bytes are exactly what the daemon signed, so the signature needs
//! no second check (verifying ES256 costs ~1000 times more than hashing). Unknown tokens are verified
//! only to tell an expired one from a forged one.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use zeroize::Zeroizing;

use super::{Event, Service};
use crate::keys::KeyRing;
use crate::store::{Enrollment, KeyMeta, Store, TokenRecord, TokenState, WriteOp};
use crate::token::{token_hash, Claims, Confirmation};
use crate::users::Account;
use crate::{Error, Result};

/// The longest token text accepted (ours are ~700 bytes); anything longer is not ours.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// An issued token, as the index holds it.
struct Entry {
    jti: String,
    user: String,
    kid: String,
    exp: u64,
    nbf: u64,
    device_session: String,
    state: RwLock<(TokenState, Option<String>)>,
    /// Set at issue; after a restart, filled by the first validation (one signature check).
    claims: OnceLock<Claims>,
}

/// Issued tokens by hash, with the by-jti and by-session views revocation needs.
#[derive(Default)]
pub struct TokenIndex {
    inner: RwLock<IndexMaps>,
}

#[derive(Default)]
struct IndexMaps {
    by_hash: HashMap<[u8; 32], Arc<Entry>>,
    by_jti: HashMap<String, [u8; 32]>,
    by_session: HashMap<String, Vec<String>>,
}

impl TokenIndex {
    /// Builds the index from the store's token rows.
    pub fn load(store: &Store) -> Result<TokenIndex> {
        let index = TokenIndex::default();
        for r in store.tokens()? {
            index.insert(r.token_hash, entry_from_record(&r, None));
        }
        Ok(index)
    }

    fn insert(&self, hash: [u8; 32], e: Entry) {
        let mut m = write(&self.inner);
        m.by_jti.insert(e.jti.clone(), hash);
        m.by_session
            .entry(e.device_session.clone())
            .or_default()
            .push(e.jti.clone());
        m.by_hash.insert(hash, Arc::new(e));
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Arc<Entry>> {
        read(&self.inner).by_hash.get(hash).cloned()
    }

    /// Marks every live token of a device session revoked; returns (jti, user) of each.
    pub(super) fn revoke_session(&self, session: &str, reason: &str) -> Vec<(String, String)> {
        let m = read(&self.inner);
        let mut out = Vec::new();
        for jti in m.by_session.get(session).into_iter().flatten() {
            let Some(e) = m.by_jti.get(jti).and_then(|h| m.by_hash.get(h)) else {
                continue;
            };
            let mut st = write(&e.state);
            if st.0 == TokenState::Live {
                *st = (TokenState::Revoked, Some(reason.to_owned()));
                out.push((e.jti.clone(), e.user.clone()));
            }
        }
        out
    }
}

fn entry_from_record(r: &TokenRecord, claims: Option<Claims>) -> Entry {
    let cell = OnceLock::new();
    if let Some(c) = claims {
        let _ = cell.set(c);
    }
    Entry {
        jti: r.jti.clone(),
        user: r.user.clone(),
        kid: r.kid.clone(),
        exp: r.exp,
        nbf: r.iat,
        device_session: r.device_session.clone(),
        state: RwLock::new((r.state, r.reason.clone())),
        claims: cell,
    }
}

/// Makes sure every key of the ring has a metadata row.
pub(super) fn record_keys(store: &Store, keys: &KeyRing, now: u64) -> Result<()> {
    let known: Vec<String> = store.signing_keys()?.into_iter().map(|k| k.kid).collect();
    let ops: Vec<WriteOp> = std::iter::once(keys.active())
        .chain(keys.previous().iter())
        .filter(|k| !known.iter().any(|kid| kid == k.kid()))
        .map(|k| {
            WriteOp::InsertSigningKey(KeyMeta {
                kid: k.kid().to_owned(),
                created: k.created().min(now),
                retired: None,
            })
        })
        .collect();
    store.apply_blocking(ops)?;
    Ok(())
}

/// Issues a token for a verified authentication in an open device session.
pub(super) async fn issue(
    svc: &Service,
    account: &Account,
    enrollment: &Enrollment,
    session_id: &str,
    amr: Vec<String>,
) -> Result<Zeroizing<String>> {
    let cfg = svc.config();
    let now = svc.inner.clock.unix_secs();
    let claims = Claims {
        iss: svc.inner.issuer.clone(),
        sub: account.name.clone(),
        aud: cfg.token.audience.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(cfg.token.lifetime.as_secs()),
        jti: crate::token::new_jti(),
        amr,
        cnf: Confirmation {
            jkt: enrollment.key_thumbprint.clone(),
        },
        sid: session_id.to_owned(),
        enr: enrollment.id.clone(),
    };
    let (token, kid) = {
        let keys = read(&svc.inner.keys);
        (keys.sign(&claims)?, keys.active().kid().to_owned())
    };
    let hash = token_hash(&token);
    let record = TokenRecord {
        jti: claims.jti.clone(),
        token_hash: hash,
        user: account.name.clone(),
        enrollment_id: enrollment.id.clone(),
        device_session: session_id.to_owned(),
        kid,
        iat: now,
        exp: claims.exp,
        single_use: false,
        state: TokenState::Live,
        reason: None,
        changed_at: None,
    };
    svc.inner
        .store
        .apply(vec![
            WriteOp::PruneExpired { now },
            WriteOp::InsertToken(record.clone()),
        ])
        .await?;
    svc.inner
        .tokens
        .insert(hash, entry_from_record(&record, Some(claims)));
    Ok(token)
}

/// Checks a token; returns its claims when it is valid now.
pub(super) fn validate(svc: &Service, token: &str) -> Result<Claims> {
    let (entry, claims) = lookup(svc, token)?;
    let now = svc.inner.clock.unix_secs();
    check_live(svc, &entry, now)?;
    Ok(claims)
}

/// Revokes a token; not an error if it is already revoked.
pub(super) async fn revoke(svc: &Service, token: &str, reason: &str) -> Result<()> {
    let (entry, _) = lookup(svc, token)?;
    let now = svc.inner.clock.unix_secs();
    if now >= entry.exp {
        return Err(Error::TokenExpired);
    }
    if read(&entry.state).0 != TokenState::Live {
        return Ok(());
    }
    let outcome = svc
        .inner
        .store
        .apply(vec![WriteOp::SetTokenState {
            jti: entry.jti.clone(),
            state: TokenState::Revoked,
            reason: reason.to_owned(),
            at: now,
        }])
        .await?;
    {
        let mut st = write(&entry.state);
        if st.0 == TokenState::Live {
            *st = (TokenState::Revoked, Some(reason.to_owned()));
        }
    }
    if outcome.first().is_some_and(|o| o.changed()) {
        svc.publish(Event::TokenRevoked {
            jti: entry.jti.clone(),
            user: entry.user.clone(),
            reason: reason.to_owned(),
        });
    }
    Ok(())
}

/// Finds an issued token by its text; unknown tokens are TokenExpired or TokenInvalid.
fn lookup(svc: &Service, token: &str) -> Result<(Arc<Entry>, Claims)> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Error::TokenInvalid);
    }
    let hash = token_hash(token);
    let Some(entry) = svc.inner.tokens.get(&hash) else {
        // Not issued here, or pruned after expiry: only a valid signature earns TokenExpired.
        let (claims, _) = read(&svc.inner.keys).verify(token)?;
        if svc.inner.clock.unix_secs() >= claims.exp {
            return Err(Error::TokenExpired);
        }
        return Err(Error::TokenInvalid);
    };
    let claims = match entry.claims.get() {
        Some(c) => c.clone(),
        None => {
            let (c, _) = read(&svc.inner.keys).verify(token)?;
            if c.jti != entry.jti {
                return Err(Error::TokenInvalid);
            }
            entry.claims.get_or_init(|| c).clone()
        }
    };
    Ok((entry, claims))
}

fn check_live(svc: &Service, entry: &Entry, now: u64) -> Result<()> {
    {
        let st = read(&entry.state);
        match st.0 {
            TokenState::Live => {}
            TokenState::Revoked | TokenState::Consumed => {
                return Err(Error::TokenRevoked(
                    st.1.clone().unwrap_or_else(|| "revoked".into()),
                ))
            }
        }
    }
    if now >= entry.exp {
        return Err(Error::TokenExpired);
    }
    if now < entry.nbf {
        return Err(Error::TokenInvalid);
    }
    let keys = read(&svc.inner.keys);
    let known =
        keys.active().kid() == entry.kid || keys.previous().iter().any(|k| k.kid() == entry.kid);
    if !known {
        // Signed by a key that has been retired.
        return Err(Error::TokenInvalid);
    }
    Ok(())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

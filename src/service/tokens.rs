//! Token issue, validation, single use, refresh and revocation, over the in-memory index of issued
//! tokens.
//!
//! The index maps the SHA-256 of each issued token to its record. A token the daemon issued is
//! recognised by that hash alone: its bytes are exactly what the daemon signed, so the signature needs
//! no second check (verifying ES256 costs ~1000 times more than hashing). Unknown tokens are verified
//! only to tell an expired one from a forged one.
//!
//! Every change of a token's fate goes Live → Ending (in memory, under the entry's lock, so exactly one
//! caller wins) → durable store write → Dead. Callers that meet an Ending token are told it is revoked;
//! if the store write fails, the token goes back to Live and the winner gets the error.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::token_index::{Entry, Fate, Ticket, MAX_DEAD_PER_USER, SETTLED};
use super::{Caller, Service, TokenRequirements};
use crate::policy::config::TokenPolicy;
use crate::store::{Enrollment, IssuedClaims, TokenRecord, TokenState, WriteOp};
use crate::token::{token_hash, Claims, Confirmation, MAX_TOKEN_LEN};
use crate::{Error, Result};

use crate::locks::read;

/// What a new token is for: who, with which enrollment, in which device session, since when.
pub(super) struct Grant<'a> {
    pub(super) user: &'a str,
    pub(super) enrollment: &'a Enrollment,
    pub(super) session_id: &'a str,
    pub(super) amr: Vec<String>,
    /// When possession of the device was proven (kept across refreshes).
    pub(super) auth_time: u64,
    /// What a token re-issued for the same session (refresh, bind) keeps of the one it replaces;
    /// `None` for a new authentication.
    pub(super) carried: Option<Carried>,
}

/// What a re-issued token carries over from the token it replaces.
pub(super) struct Carried {
    /// Its `aud` (a requested audience, "pam:login", survives refreshes).
    pub(super) aud: String,
    /// Its exact `exp` (a bind never extends a token); `None`: computed as for a new one.
    pub(super) exp: Option<u64>,
    /// The logind session it is bound to, with its seat.
    pub(super) login: Option<(String, Option<String>)>,
}

/// A token signed and ready to be recorded; it is not valid until [`record`] (or a speculative
/// insert followed by [`record`]) has made it durable.
pub(super) struct Prepared {
    token: Zeroizing<String>,
    pub(super) record: TokenRecord,
    claims: Claims,
}

/// Signs a token for `grant` under `rules` (rotating the signing key first if it is due).
pub(super) async fn prepare(
    svc: &Service,
    grant: Grant<'_>,
    rules: &TokenPolicy,
) -> Result<Prepared> {
    let now = svc.inner.clock.unix_secs();
    let session_end = grant.auth_time.saturating_add(rules.max_lifetime.as_secs());
    if now >= session_end {
        return Err(Error::TokenExpired);
    }
    svc.maintain_keys(now).await?;
    let fresh_exp = now
        .saturating_add(rules.lifetime.as_secs())
        .min(session_end);
    let (aud, exp, login) = match grant.carried {
        Some(c) => (c.aud, c.exp.unwrap_or(fresh_exp), c.login),
        None => (rules.audience.clone(), fresh_exp, None),
    };
    if now >= exp {
        return Err(Error::TokenExpired);
    }
    let (lsid, seat) = match login {
        Some((id, seat)) => (Some(id), seat),
        None => (None, None),
    };
    let claims = Claims {
        iss: svc.inner.issuer.clone(),
        sub: grant.user.to_owned(),
        aud,
        iat: now,
        nbf: now,
        exp,
        jti: crate::token::new_jti(),
        amr: grant.amr,
        cnf: Confirmation {
            jkt: grant.enrollment.key_thumbprint.clone(),
        },
        sid: grant.session_id.to_owned(),
        enr: grant.enrollment.id.clone(),
        lsid,
        seat,
    };
    let (token, kid) = {
        let keys = read(&svc.inner.keys);
        (keys.sign(&claims)?, keys.active().kid().to_owned())
    };
    let record = TokenRecord {
        jti: claims.jti.clone(),
        token_hash: token_hash(&token),
        user: grant.user.to_owned(),
        enrollment_id: grant.enrollment.id.clone(),
        device_session: grant.session_id.to_owned(),
        kid,
        iat: now,
        exp: claims.exp,
        single_use: rules.single_use,
        auth_time: grant.auth_time,
        idle_timeout: rules.idle_timeout.map_or(0, |d| d.as_secs().max(1)),
        last_used: None,
        revoke_on_removal: rules.revoke_on_removal,
        state: TokenState::Live,
        reason: None,
        changed_at: None,
        login_session: claims.lsid.clone(),
        seat: claims.seat.clone(),
        issued: Some(IssuedClaims {
            iss: claims.iss.clone(),
            aud: claims.aud.clone(),
            amr: claims.amr.clone(),
            jkt: claims.cnf.jkt.clone(),
        }),
    };
    Ok(Prepared {
        token,
        record,
        claims,
    })
}

/// Makes a prepared token valid: durably records it (unless `ahead` is given: its row was written
/// ahead already, with the revocations it settles now) together with the user's oldest live tokens
/// beyond `max_live_per_user` ("superseded"), then indexes it.
pub(super) async fn record(
    svc: &Service,
    prepared: Prepared,
    rules: &TokenPolicy,
    ahead: Option<Superseding>,
) -> Result<Zeroizing<String>> {
    let inserted = ahead.is_some();
    // Settled before the user's lock is taken: a logout holding it may be waiting for them.
    if let Some(ahead) = ahead {
        ahead.complete(svc);
    }
    // One issue at a time per user, so the live-token limit cannot be overrun by a race, and a
    // logout (RevokeSessions) sees every token of the user that is issued before it.
    let user_lock = svc.user_lock(&prepared.record.user);
    let _serial = user_lock.lock().await;
    // A row written ahead survives nothing but its enrollment's removal (which cascades to it and
    // takes this lock): once that happened the token must not be indexed live. Without a row
    // written ahead, the insert below fails on the missing enrollment by itself.
    if inserted
        && svc
            .inner
            .store
            .enrollment(&prepared.record.enrollment_id)?
            .is_none()
    {
        return Err(Error::NotEnrolled(
            "the enrollment was removed during the authentication".into(),
        ));
    }
    record_locked(svc, prepared, rules, None, inserted).await
}

/// [`record`] for a caller that holds the user's lock; `replaces` (a refresh or a bind: the old
/// token, the ticket of its Ending and the reason, "refreshed" or "bound") is revoked in the same
/// durable batch.
pub(super) async fn record_locked(
    svc: &Service,
    prepared: Prepared,
    rules: &TokenPolicy,
    replaces: Option<(&Arc<Entry>, Ticket, &'static str)>,
    inserted: bool,
) -> Result<Zeroizing<String>> {
    let Prepared {
        token,
        record,
        claims,
    } = prepared;
    let now = svc.inner.clock.unix_secs();
    // Normally none left: an authentication superseded them ahead (two at once may leave one).
    let mut ending: Vec<(Arc<Entry>, Ticket, &str)> = beyond_limit(svc, &record.user, rules, now)
        .into_iter()
        .filter_map(|e| e.begin_end("superseded").map(|t| (e, t, "superseded")))
        .collect();
    if let Some((old, ticket, reason)) = replaces {
        ending.push((old.clone(), ticket, reason));
    }
    let mut ops: Vec<WriteOp> = ending
        .iter()
        .map(|(e, _, reason)| WriteOp::SetTokenState {
            jti: e.jti(),
            state: TokenState::Revoked,
            reason: (*reason).to_owned(),
            at: now,
        })
        .collect();
    if !ending.is_empty() {
        let newest = ending.iter().map(|(e, _, _)| e.jti()).collect();
        ops.push(cap_dead(&record.user, newest));
    }
    let prune_at = ops.len();
    if !inserted {
        ops.push(WriteOp::PruneExpired { now });
        ops.push(WriteOp::InsertToken(record.clone()));
    }
    let result = svc.inner.store.apply(ops).await;
    for (e, ticket, _) in &ending {
        svc.inner.tokens.settle(e, *ticket, result.is_ok());
    }
    let outcomes = result?;
    if outcomes.get(prune_at).is_some_and(|o| o.changed()) && !inserted {
        svc.inner.tokens.prune(now);
    }
    svc.inner.tokens.insert(&record, Some(&claims))?;
    for (e, _, reason) in ending {
        svc.announce_revoked(e.jti(), e.user(), reason);
    }
    Ok(token)
}

/// The user's oldest live tokens that one more token would push beyond `max_live_per_user`.
fn beyond_limit(svc: &Service, user: &str, rules: &TokenPolicy, now: u64) -> Vec<Arc<Entry>> {
    let max = usize::try_from(rules.max_live_per_user.max(1)).unwrap_or(usize::MAX);
    // The user's indexed tokens (live or not) bound the live ones: below the limit, nothing to do.
    if svc.inner.tokens.count_of_user(user) < max {
        return Vec::new();
    }
    // Room for the new one.
    svc.inner.tokens.live_beyond(user, max - 1, now)
}

/// The tokens an authentication at the live-token limit supersedes, revoked in the same commit
/// as the new token's row written ahead ([`insert_ahead`]), so issuing at the limit costs no
/// second commit.
///
/// They are claimed (Ending "superseded") before that commit, so from then on they answer
/// TokenRevoked, as the store says. Their fate follows the new token's, both ways:
/// - issued ([`record`]): they are dead, already durably;
/// - not issued (the card failed, or left): [`discard`] revives them in the commit that deletes
///   the new row, unless their own device left meanwhile;
/// - the ahead commit failed: nothing was written, they are live again ([`Superseding::release`]).
///
/// A crash while the card works leaves them revoked, with a new row nobody has the text of: the
/// user lost a token and authenticates again. That is the fail-closed side; the other way round
/// (revoking only once the signature is in) costs the second commit this is here to save.
pub(super) struct Superseding {
    svc: Service,
    victims: Vec<(Arc<Entry>, Ticket)>,
    at: u64,
}

impl Superseding {
    /// Claims the tokens of `user` that one more would push beyond the limit of `rules`.
    pub(super) fn claim(svc: &Service, user: &str, rules: &TokenPolicy) -> Superseding {
        let at = svc.inner.clock.unix_secs();
        let victims = beyond_limit(svc, user, rules, at)
            .into_iter()
            .filter_map(|e| e.begin_end("superseded").map(|t| (e, t)))
            .collect();
        Superseding {
            svc: svc.clone(),
            victims,
            at,
        }
    }

    /// The revocations to commit with the new token's row.
    fn ops(&self) -> Vec<WriteOp> {
        self.victims
            .iter()
            .map(|(e, _)| WriteOp::SetTokenState {
                jti: e.jti(),
                state: TokenState::Revoked,
                reason: "superseded".into(),
                at: self.at,
            })
            .collect()
    }

    /// The ahead commit did not happen: the claimed tokens are live again.
    pub(super) fn release(mut self) {
        for (e, ticket) in self.victims.drain(..) {
            self.svc.inner.tokens.settle(&e, ticket, false);
        }
    }

    /// The new token is issued: the claimed tokens are dead (durably since the ahead commit).
    fn complete(mut self, svc: &Service) {
        for (e, ticket) in self.victims.drain(..) {
            svc.inner.tokens.settle(&e, ticket, true);
            svc.announce_revoked(e.jti(), e.user(), "superseded");
        }
    }
}

impl Drop for Superseding {
    /// Unsettled claims (a dropped authentication) end as the store has them: revoked.
    fn drop(&mut self) {
        for (e, ticket) in self.victims.drain(..) {
            self.svc.inner.tokens.settle(&e, ticket, true);
        }
    }
}

/// Writes a prepared token's row, and the revocations of the tokens it supersedes, before it is
/// known to be deserved, so that the commit overlaps the card's work. Until [`record`] indexes it,
/// nobody has the token text; [`discard`] removes the row (and revives the superseded tokens) when
/// the authentication fails. Returns whether expired rows were pruned.
pub(super) async fn insert_ahead(
    svc: &Service,
    record: TokenRecord,
    superseding: &Superseding,
) -> Result<bool> {
    let now = svc.inner.clock.unix_secs();
    let mut ops = vec![WriteOp::PruneExpired { now }];
    ops.extend(superseding.ops());
    let user = record.user.clone();
    ops.push(WriteOp::InsertToken(record));
    if !superseding.victims.is_empty() {
        // The superseded rows die here: the user's dead rows stay capped as with every other
        // death (the victims themselves are kept, should a failed authentication revive them).
        let newest = superseding.victims.iter().map(|(e, _)| e.jti()).collect();
        ops.push(cap_dead(&user, newest));
    }
    let outcomes = svc.inner.store.apply(ops).await?;
    let pruned = outcomes.first().is_some_and(|o| o.changed());
    if pruned {
        svc.inner.tokens.prune(now);
    }
    Ok(pruned)
}

/// Removes the row of a token that was never handed out, and revives the tokens its row had
/// superseded ahead (see [`Superseding`]).
pub(super) async fn discard(svc: &Service, jti: &str, mut superseding: Superseding) {
    // A token that dies with its device comes back only while its device is present, held so
    // until it is live again: a removal meanwhile must find it live and revoke it. Without
    // waiting for the session (its holder may be waiting for us): busy means it stays revoked.
    let mut guards = Vec::new();
    let mut revivable = Vec::new();
    let mut gone = Vec::new();
    for (e, ticket) in superseding.victims.drain(..) {
        if !e.revoke_on_removal() {
            revivable.push((e, ticket));
        } else if let Some(g) = svc.try_lock_open_session(e.device_session()) {
            guards.push(g);
            revivable.push((e, ticket));
        } else {
            gone.push((e, ticket));
        }
    }
    let mut ops = vec![WriteOp::DeleteToken {
        jti: jti.to_owned(),
    }];
    ops.extend(revivable.iter().map(|(e, _)| WriteOp::ReviveSuperseded {
        jti: e.jti(),
        at: superseding.at,
    }));
    let outcomes = match svc.inner.store.apply(ops).await {
        Ok(o) => o,
        Err(e) => {
            // The row goes at its expiry (nobody has the token text); the superseded tokens stay
            // revoked, as the store has them.
            tracing::warn!("removing the row of an unissued token failed: {e}");
            Vec::new()
        }
    };
    for (k, (e, ticket)) in revivable.into_iter().enumerate() {
        if outcomes.get(k + 1).is_some_and(|o| o.changed()) {
            svc.inner.tokens.settle(&e, ticket, false);
        } else {
            gone.push((e, ticket));
        }
    }
    drop(guards);
    for (e, ticket) in gone {
        svc.inner.tokens.settle(&e, ticket, true);
        svc.announce_revoked(e.jti(), e.user(), "superseded");
    }
}

/// Checks a token against `required`; returns its claims when it is valid now and meets them. A
/// single-use token is consumed by a check that passes (only: a token shown to the wrong service
/// is refused, not burnt).
pub(super) async fn check(
    svc: &Service,
    token: &str,
    required: &TokenRequirements,
) -> Result<Claims> {
    let (entry, claims) = lookup(svc, token)?;
    svc.confirmed(entry.device_session()).await?;
    let now = svc.inner.clock.unix_secs();
    check_live(svc, &entry, now)?;
    required.check(&claims, entry.auth_time(), now)?;
    if entry.single_use {
        end(svc, &entry, TokenState::Consumed, "used", now).await?;
        return Ok(claims);
    }
    touch(svc, &entry, now);
    Ok(claims)
}

/// A new token for the same device session; the old one dies ("refreshed"). Only the token's
/// owner or root may refresh it (a holder may use a token, not extend it), at most once per
/// `min_refresh_interval` per lineage; a refused refresh leaves the token as it was.
pub(super) async fn refresh(
    svc: &Service,
    caller: Caller,
    token: &str,
) -> Result<Zeroizing<String>> {
    let (entry, claims) = lookup(svc, token)?;
    let account = svc.inner.accounts.by_name(entry.user()).await?;
    if !caller.is_root() && caller.uid != account.uid {
        return Err(Error::AccessDenied(format!(
            "uid {} may not refresh a token of {}",
            caller.uid,
            entry.user()
        )));
    }
    svc.confirmed(entry.device_session()).await?;
    let now = svc.inner.clock.unix_secs();
    check_live(svc, &entry, now)?;
    let rules = svc.rules_for(&account).await?;
    svc.inner
        .refreshed
        .check(&entry.jti(), entry.iat(), rules.min_refresh_interval, now)?;
    // Held until the new token is recorded, so a removal cannot slip in between.
    let _session = svc.lock_open_session(entry.device_session()).await?;
    let enrollment = svc
        .inner
        .store
        .enrollment(&claims.enr)?
        .ok_or(Error::TokenInvalid)?;
    // Held from the old token's Ending to the new token's indexing, so a logout either sees the
    // old token live (and the refresh then fails) or waits and revokes the new one.
    let user_lock = svc.user_lock(entry.user());
    let _serial = user_lock.lock().await;
    let Some(ticket) = entry.begin_end("refreshed") else {
        return Err(revoked_error(&entry));
    };
    let grant = Grant {
        user: entry.user(),
        enrollment: &enrollment,
        session_id: entry.device_session(),
        amr: claims.amr.clone(),
        auth_time: entry.auth_time(),
        carried: Some(Carried {
            aud: claims.aud.clone(),
            exp: None,
            login: login_of(&entry),
        }),
    };
    let result = match prepare(svc, grant, &rules).await {
        Ok(prepared) => {
            let (new_jti, new_exp) = (prepared.record.jti.clone(), prepared.record.exp);
            let replaces = Some((&entry, ticket, "refreshed"));
            let token = record_locked(svc, prepared, &rules, replaces, false).await;
            if token.is_ok() {
                svc.inner
                    .refreshed
                    .note(&entry.jti(), &new_jti, new_exp, now);
            }
            token
        }
        Err(e) => Err(e),
    };
    // Settled by `record_locked` when its batch ran; a failure before it leaves the token live.
    svc.inner.tokens.settle(&entry, ticket, false);
    result
}

/// Revokes a token; not an error if it is already revoked. Returns only once the token's end is
/// durable, also when another caller is ending it at the same time.
pub(super) async fn revoke(svc: &Service, token: &str, reason: &str) -> Result<()> {
    let (entry, _) = lookup(svc, token)?;
    let now = svc.inner.clock.unix_secs();
    if now >= entry.exp() {
        return Err(Error::TokenExpired);
    }
    end_or_wait(svc, &entry, TokenState::Revoked, reason, now).await
}

/// The logind session `entry` is bound to, with its seat.
pub(super) fn login_of(entry: &Entry) -> Option<(String, Option<String>)> {
    entry
        .login_session()
        .map(|id| (id.to_owned(), entry.seat().map(str::to_owned)))
}

/// Revokes every live token of `user`; returns how many this call revoked.
pub(super) async fn revoke_user(svc: &Service, user: &str, reason: &str) -> Result<usize> {
    revoke_user_where(svc, user, reason, |_| true).await
}

/// Revokes the live tokens of `user` that `which` picks; returns how many this call revoked.
pub(super) async fn revoke_user_where(
    svc: &Service,
    user: &str,
    reason: &str,
    which: impl Fn(&Entry) -> bool,
) -> Result<usize> {
    // No token of the user is issued or refreshed meanwhile (both take this lock).
    let user_lock = svc.user_lock(user);
    let _serial = user_lock.lock().await;
    let now = svc.inner.clock.unix_secs();
    let mut ending = Vec::new();
    let mut busy = Vec::new();
    for e in svc.inner.tokens.of_user(user) {
        if !which(&e) {
            continue;
        }
        if !e.is_live_at(now) && !matches!(e.fate(), Fate::Ending(..)) {
            continue;
        }
        match e.begin_end(reason) {
            Some(ticket) => ending.push((e, ticket)),
            // Someone else is ending it (a single-use validation, a revocation, an authentication
            // at the limit whose card is still signing): wait for them.
            None => busy.push(e),
        }
    }
    let mut ops: Vec<WriteOp> = ending
        .iter()
        .map(|(e, _)| WriteOp::SetTokenState {
            jti: e.jti(),
            state: TokenState::Revoked,
            reason: reason.to_owned(),
            at: now,
        })
        .collect();
    if !ops.is_empty() {
        ops.push(cap_dead(
            user,
            ending.iter().map(|(e, _)| e.jti()).collect(),
        ));
    }
    let result = svc.inner.store.apply(ops).await;
    for (e, ticket) in &ending {
        svc.inner.tokens.settle(e, *ticket, result.is_ok());
    }
    result?;
    for (e, _) in &ending {
        svc.announce_revoked(e.jti(), e.user(), reason);
    }
    for e in busy {
        end_or_wait(svc, &e, TokenState::Revoked, reason, now).await?;
    }
    Ok(ending.len())
}

/// Ends a live token durably (exactly one caller wins) and announces it. A loser learns the token
/// is (being) ended: [`Error::TokenRevoked`].
async fn end(
    svc: &Service,
    entry: &Arc<Entry>,
    state: TokenState,
    reason: &str,
    now: u64,
) -> Result<()> {
    let Some(ticket) = entry.begin_end(reason) else {
        return Err(revoked_error(entry));
    };
    commit_end(svc, entry, ticket, state, reason, now).await
}

/// Ends a token, or waits for whoever is ending it and tries again if they failed. Ok once the
/// token is dead and that is durable.
async fn end_or_wait(
    svc: &Service,
    entry: &Arc<Entry>,
    state: TokenState,
    reason: &str,
    now: u64,
) -> Result<()> {
    loop {
        // Registered before the state is looked at, so a settling in between is not missed.
        let settled = SETTLED.notified();
        if let Some(ticket) = entry.begin_end(reason) {
            return commit_end(svc, entry, ticket, state, reason, now).await;
        }
        if entry.is_dead() {
            return Ok(());
        }
        if matches!(entry.fate(), Fate::Ending(..)) {
            settled.await;
        }
    }
}

async fn commit_end(
    svc: &Service,
    entry: &Arc<Entry>,
    ticket: Ticket,
    state: TokenState,
    reason: &str,
    now: u64,
) -> Result<()> {
    let result = svc
        .inner
        .store
        .apply(vec![
            WriteOp::SetTokenState {
                jti: entry.jti(),
                state,
                reason: reason.to_owned(),
                at: now,
            },
            cap_dead(entry.user(), vec![entry.jti()]),
        ])
        .await;
    svc.inner.tokens.settle(entry, ticket, result.is_ok());
    result?;
    svc.announce_revoked(entry.jti(), entry.user(), reason);
    Ok(())
}

/// The store op that keeps `user`'s dead rows within [`MAX_DEAD_PER_USER`], as the index does.
/// `newest`: the ids of the tokens the same batch kills.
pub(super) fn cap_dead(user: &str, newest: Vec<String>) -> WriteOp {
    WriteOp::CapDeadTokens {
        user: user.to_owned(),
        keep: MAX_DEAD_PER_USER,
        newest,
    }
}

/// Notes a use for the idle timeout. The store learns of it lazily (not before the reply): a lost
/// record can only make the token expire sooner after a crash, never live longer.
pub(super) fn touch(svc: &Service, entry: &Arc<Entry>, now: u64) {
    if entry.idle_timeout() == 0 {
        return;
    }
    entry.note_use(now);
    // Record at most a few times per idle period.
    if entry.claim_store_of_use(now, (entry.idle_timeout() / 4).max(1)) {
        let store_svc = svc.clone();
        let jti = entry.jti();
        tokio::spawn(async move {
            let op = WriteOp::TouchToken { jti, at: now };
            if let Err(e) = store_svc.inner.store.apply(vec![op]).await {
                tracing::warn!("recording a token use failed: {e}");
            }
        });
    }
}

/// Finds an issued token by its text; unknown tokens are TokenExpired or TokenInvalid.
pub(super) fn lookup(svc: &Service, token: &str) -> Result<(Arc<Entry>, Claims)> {
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
    let claims = match entry.claims() {
        Some(c) => c,
        // Restored after a restart: the token's own verified claims fill in what the row lacks.
        None => {
            let (c, _) = read(&svc.inner.keys).verify(token)?;
            svc.inner.tokens.learn(&entry, &c)?
        }
    };
    Ok((entry, claims))
}

pub(super) fn revoked_error(entry: &Entry) -> Error {
    match entry.fate() {
        Fate::Ending(r, _) | Fate::Dead(r) => Error::TokenRevoked(r.to_string()),
        Fate::Live => Error::TokenRevoked("revoked".into()),
    }
}

pub(super) fn check_live(svc: &Service, entry: &Entry, now: u64) -> Result<()> {
    if entry.fate() != Fate::Live {
        return Err(revoked_error(entry));
    }
    {
        let keys = read(&svc.inner.keys);
        let known = keys.active().kid() == entry.kid()
            || keys.previous().iter().any(|k| k.kid() == entry.kid());
        if !known {
            // Signed by a key that has been retired: no longer verifiable, so invalid.
            return Err(Error::TokenInvalid);
        }
    }
    if now >= entry.exp() || entry.idle_at(now) {
        return Err(Error::TokenExpired);
    }
    if now < entry.iat() {
        return Err(Error::TokenInvalid);
    }
    Ok(())
}

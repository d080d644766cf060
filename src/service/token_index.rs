//! The in-memory index of issued tokens: one compact [`Entry`] per token the store holds, found by
//! the SHA-256 of the token text, with per-user lists of live and of dead tokens.
//!
//! Memory: an entry holds fixed-size ids and hashes, times and flags; the strings many tokens share
//! (user, device session, signing key, enrollment; issuer, audience, amr and key thumbprint) live
//! once, in interned [`Origin`] and [`IssuedAs`] records. The claims are rebuilt from those on each
//! validation instead of being stored. About 250 bytes per live token (see `make bench`).
//!
//! Bounds: a token that dies (revoked, refreshed, consumed, superseded) leaves its user's live list
//! at once; each user keeps at most [`MAX_DEAD_PER_USER`] dead tokens (so that their holders are
//! told why they died), the oldest dropped first. The store caps its dead rows the same way
//! ([`crate::store::WriteOp::CapDeadTokens`]). A dropped dead token is unknown, hence invalid.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::locks::{lock, read, write};
use crate::store::{Store, TokenRecord, TokenState};
use crate::token::{Claims, Confirmation};
use crate::{Error, Result};

/// Dead tokens remembered per user, in memory and in the store; older ones are forgotten.
pub const MAX_DEAD_PER_USER: u32 = 1024;

/// A token id: the 16 random bytes behind the base64url `jti` (see [`crate::token::new_jti`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Jti([u8; 16]);

impl Jti {
    /// Parses a `jti` as issued here; `None` for anything else.
    pub(super) fn parse(text: &str) -> Option<Jti> {
        let mut out = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
            Ok(16) if URL_SAFE_NO_PAD.encode(out) == text => Some(Jti(out)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Jti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

/// What a token's store row says about where it came from; shared by the tokens of a session.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub(super) user: String,
    pub(super) device_session: String,
    pub(super) kid: String,
    pub(super) enrollment: String,
    /// The logind session the token is bound to (`lsid`), and its seat.
    pub(super) login_session: Option<String>,
    pub(super) seat: Option<String>,
}

/// The claims a token carries that its store row does not: known at issue, or learnt from the
/// token's verified signature at its first validation after a restart.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct IssuedAs {
    iss: String,
    aud: String,
    amr: Vec<String>,
    jkt: String,
}

/// An issued token, as the index holds it. Times are Unix seconds in 32 bits (until 2106; a row
/// with a time beyond is not indexed, so its token is invalid).
pub(super) struct Entry {
    hash: [u8; 32],
    jti: Jti,
    iat: u32,
    exp: u32,
    auth_time: u32,
    idle_timeout: u32,
    /// Last use (validation or refresh) known in memory; the issue time before any.
    last_used: AtomicU32,
    /// Last use recorded in the store.
    stored_last_used: AtomicU32,
    pub(super) single_use: bool,
    revoke_on_removal: bool,
    fate: Mutex<Fate>,
    origin: Arc<Origin>,
    issued: OnceLock<Arc<IssuedAs>>,
}

/// Where a token stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fate {
    Live,
    /// One caller (holding the ticket) is making the token's end durable; everyone else already
    /// treats it as ended, and whoever must know the outcome waits for [`SETTLED`].
    Ending(Arc<str>, Ticket),
    /// Revoked or consumed, with the reason.
    Dead(Arc<str>),
}

/// Who is ending a token (see [`Fate::Ending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket(u64);

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// Woken whenever some Ending fate settles (to Dead, or back to Live). One for all entries, which
/// saves a `Notify` per token; a waiter woken for another token looks at its own and waits again.
pub(super) static SETTLED: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl Entry {
    pub(super) fn jti(&self) -> String {
        self.jti.to_string()
    }

    pub(super) fn user(&self) -> &str {
        &self.origin.user
    }

    pub(super) fn device_session(&self) -> &str {
        &self.origin.device_session
    }

    /// The logind session the token is bound to, if any.
    pub(super) fn login_session(&self) -> Option<&str> {
        self.origin.login_session.as_deref()
    }

    /// The seat of that logind session, if any.
    pub(super) fn seat(&self) -> Option<&str> {
        self.origin.seat.as_deref()
    }

    pub(super) fn revoke_on_removal(&self) -> bool {
        self.revoke_on_removal
    }

    pub(super) fn kid(&self) -> &str {
        &self.origin.kid
    }

    pub(super) fn idle_timeout(&self) -> u64 {
        u64::from(self.idle_timeout)
    }

    pub(super) fn iat(&self) -> u64 {
        u64::from(self.iat)
    }

    pub(super) fn exp(&self) -> u64 {
        u64::from(self.exp)
    }

    pub(super) fn auth_time(&self) -> u64 {
        u64::from(self.auth_time)
    }

    /// Whether a use at `now` should be recorded in the store (at most once per `every` seconds);
    /// exactly one caller is told yes.
    pub(super) fn claim_store_of_use(&self, now: u64, every: u64) -> bool {
        let stored = self.stored_last_used.load(Ordering::Relaxed);
        now.saturating_sub(u64::from(stored)) >= every
            && self
                .stored_last_used
                .compare_exchange(stored, secs32(now), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(super) fn is_live_at(&self, now: u64) -> bool {
        now < self.exp() && *lock(&self.fate) == Fate::Live && !self.idle_at(now)
    }

    pub(super) fn idle_at(&self, now: u64) -> bool {
        self.idle_timeout > 0 && now.saturating_sub(self.last_used()) >= self.idle_timeout()
    }

    pub(super) fn last_used(&self) -> u64 {
        u64::from(self.last_used.load(Ordering::Relaxed))
    }

    pub(super) fn note_use(&self, now: u64) {
        self.last_used.fetch_max(secs32(now), Ordering::Relaxed);
    }

    pub(super) fn fate(&self) -> Fate {
        lock(&self.fate).clone()
    }

    /// Moves Live → Ending; `None` if the token is not live (someone else got there first).
    pub(super) fn begin_end(&self, reason: &str) -> Option<Ticket> {
        let mut f = lock(&self.fate);
        if *f == Fate::Live {
            let ticket = Ticket(NEXT_TICKET.fetch_add(1, Ordering::Relaxed));
            *f = Fate::Ending(Arc::from(reason), ticket);
            Some(ticket)
        } else {
            None
        }
    }

    /// Settles the Ending begun with `ticket`: Dead once its end is durable, else Live again.
    /// Another caller's Ending is left alone. Returns whether the token died by this call.
    fn finish_end(&self, ticket: Ticket, durable: bool) -> bool {
        let died = {
            let mut f = lock(&self.fate);
            let Fate::Ending(reason, owner) = &*f else {
                return false;
            };
            if *owner != ticket {
                return false;
            }
            *f = if durable {
                Fate::Dead(reason.clone())
            } else {
                Fate::Live
            };
            durable
        };
        SETTLED.notify_waiters();
        died
    }

    pub(super) fn is_dead(&self) -> bool {
        matches!(*lock(&self.fate), Fate::Dead(_))
    }

    /// The token's claims, rebuilt; `None` until [`IssuedAs`] is known (see [`TokenIndex::learn`]).
    pub(super) fn claims(&self) -> Option<Claims> {
        let i = self.issued.get()?;
        Some(Claims {
            iss: i.iss.clone(),
            sub: self.origin.user.clone(),
            aud: i.aud.clone(),
            iat: self.iat(),
            nbf: self.iat(),
            exp: self.exp(),
            jti: self.jti.to_string(),
            amr: i.amr.clone(),
            cnf: Confirmation { jkt: i.jkt.clone() },
            sid: self.origin.device_session.clone(),
            enr: self.origin.enrollment.clone(),
            lsid: self.origin.login_session.clone(),
            seat: self.origin.seat.clone(),
        })
    }
}

/// An entry in the by-hash set, keyed by the hash it holds (so the 32 bytes are kept once).
struct ByHash(Arc<Entry>);

impl PartialEq for ByHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash == other.0.hash
    }
}

impl Eq for ByHash {}

impl Hash for ByHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash.hash(state);
    }
}

impl Borrow<[u8; 32]> for ByHash {
    fn borrow(&self) -> &[u8; 32] {
        &self.0.hash
    }
}

/// Issued tokens by hash, with the by-user and by-session views revocation needs.
#[derive(Default)]
pub struct TokenIndex {
    inner: RwLock<IndexMaps>,
}

#[derive(Default)]
struct IndexMaps {
    by_hash: HashSet<ByHash>,
    by_user: HashMap<String, UserTokens>,
    /// The users with tokens in each device session (few per session).
    users_of_session: HashMap<String, Vec<String>>,
    /// The users with tokens bound to each logind session (one, but the index does not rely on it).
    users_of_login_session: HashMap<String, Vec<String>>,
    origins: HashSet<Arc<Origin>>,
    issued: HashSet<Arc<IssuedAs>>,
}

#[derive(Default)]
struct UserTokens {
    /// Live and Ending tokens, oldest first.
    live: BTreeMap<(u32, Jti), Arc<Entry>>,
    /// Dead tokens, in the order they died; at most [`MAX_DEAD_PER_USER`].
    dead: VecDeque<Arc<Entry>>,
}

impl TokenIndex {
    /// Builds the index from the store's token rows.
    pub fn load(store: &Store) -> Result<TokenIndex> {
        let index = TokenIndex::default();
        let mut records = store.tokens()?;
        records.sort_by_key(|r| (r.state != TokenState::Live, r.changed_at, r.iat));
        for r in &records {
            if let Err(e) = index.insert(r, None) {
                // Not a row this daemon wrote: leaving it out makes the token invalid.
                tracing::warn!("token row {:?} not loaded: {e}", r.jti);
            }
        }
        Ok(index)
    }

    /// Indexes a token from its store row; `claims` are known when it was just issued.
    pub(super) fn insert(&self, r: &TokenRecord, claims: Option<&Claims>) -> Result<()> {
        let jti = Jti::parse(&r.jti)
            .ok_or_else(|| Error::Internal(format!("malformed jti {:?}", r.jti)))?;
        let fate = match r.state {
            TokenState::Live => Fate::Live,
            TokenState::Revoked | TokenState::Consumed => {
                Fate::Dead(Arc::from(r.reason.as_deref().unwrap_or("revoked")))
            }
        };
        let time =
            |t: u64| u32::try_from(t).map_err(|_| Error::Internal(format!("time {t} beyond 2106")));
        let (iat, exp, auth_time) = (time(r.iat)?, time(r.exp)?, time(r.auth_time)?);
        let last_used = time(r.last_used.unwrap_or(r.iat).max(r.iat))?;
        let mut m = write(&self.inner);
        let origin = m.intern_origin(Origin {
            user: r.user.clone(),
            device_session: r.device_session.clone(),
            kid: r.kid.clone(),
            enrollment: r.enrollment_id.clone(),
            login_session: r.login_session.clone(),
            seat: r.seat.clone(),
        });
        let issued = OnceLock::new();
        if let Some(c) = claims {
            let _ = issued.set(m.intern_issued(c));
        } else if let Some(i) = &r.issued {
            // Restored from a row that holds them: known without the token.
            let _ = issued.set(m.intern(IssuedAs {
                iss: i.iss.clone(),
                aud: i.aud.clone(),
                amr: i.amr.clone(),
                jkt: i.jkt.clone(),
            }));
        }
        let dead = fate != Fate::Live;
        let e = Arc::new(Entry {
            hash: r.token_hash,
            jti,
            iat,
            exp,
            auth_time,
            // Idle limits are bounded by the lifetime; a larger stored value can only be absurd.
            idle_timeout: u32::try_from(r.idle_timeout).unwrap_or(u32::MAX),
            single_use: r.single_use,
            revoke_on_removal: r.revoke_on_removal,
            last_used: AtomicU32::new(last_used),
            stored_last_used: AtomicU32::new(last_used),
            fate: Mutex::new(fate),
            origin,
            issued,
        });
        let users = m
            .users_of_session
            .entry(r.device_session.clone())
            .or_default();
        if !users.contains(&r.user) {
            users.push(r.user.clone());
        }
        if let Some(ls) = &r.login_session {
            let users = m.users_of_login_session.entry(ls.clone()).or_default();
            if !users.contains(&r.user) {
                users.push(r.user.clone());
            }
        }
        m.by_hash.replace(ByHash(e.clone()));
        let list = m.by_user.entry(r.user.clone()).or_default();
        if dead {
            list.dead.push_back(e);
            m.cap_dead(&r.user);
        } else {
            list.live.insert((e.iat, e.jti), e);
        }
        Ok(())
    }

    pub(super) fn get(&self, hash: &[u8; 32]) -> Option<Arc<Entry>> {
        read(&self.inner).by_hash.get(hash).map(|b| b.0.clone())
    }

    /// Fills in what a token restored after a restart carries beyond its row, from its verified
    /// claims; fails if the claims and the row disagree. Returns the rebuilt claims.
    pub(super) fn learn(&self, e: &Entry, c: &Claims) -> Result<Claims> {
        let agrees = c.jti == e.jti()
            && c.sub == e.origin.user
            && c.sid == e.origin.device_session
            && c.enr == e.origin.enrollment
            && c.iat == e.iat()
            && c.nbf == e.iat()
            && c.exp == e.exp()
            && c.lsid == e.origin.login_session
            && c.seat == e.origin.seat;
        if !agrees {
            return Err(Error::TokenInvalid);
        }
        let issued = write(&self.inner).intern_issued(c);
        let _ = e.issued.set(issued);
        e.claims().ok_or(Error::TokenInvalid)
    }

    /// How many live (or ending) tokens `user` has in the index, expired ones included until pruned.
    pub(super) fn count_of_user(&self, user: &str) -> usize {
        read(&self.inner)
            .by_user
            .get(user)
            .map_or(0, |l| l.live.len())
    }

    /// The live (or ending) tokens of `user`, oldest first.
    pub(super) fn of_user(&self, user: &str) -> Vec<Arc<Entry>> {
        read(&self.inner)
            .by_user
            .get(user)
            .map(|l| l.live.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The live (or ending) tokens bound to the logind session `id`, of every user, oldest first
    /// within each user.
    pub(super) fn of_login_session(&self, id: &str) -> Vec<Arc<Entry>> {
        let m = read(&self.inner);
        let Some(users) = m.users_of_login_session.get(id) else {
            return Vec::new();
        };
        users
            .iter()
            .filter_map(|u| m.by_user.get(u))
            .flat_map(|l| l.live.values())
            .filter(|e| e.login_session() == Some(id))
            .cloned()
            .collect()
    }

    /// The distinct logind sessions (with the user of each) that live tokens of the device
    /// session `session` are bound to, whether or not those tokens die with the device.
    pub(super) fn login_sessions_of(&self, session: &str, now: u64) -> Vec<(String, String)> {
        let m = read(&self.inner);
        let users = m.users_of_session.get(session).cloned().unwrap_or_default();
        let mut out: Vec<(String, String)> = Vec::new();
        for user in users {
            let Some(list) = m.by_user.get(&user) else {
                continue;
            };
            for e in list.live.values() {
                if e.origin.device_session != session || !e.is_live_at(now) {
                    continue;
                }
                if let Some(ls) = &e.origin.login_session {
                    let pair = (ls.clone(), user.clone());
                    if !out.contains(&pair) {
                        out.push(pair);
                    }
                }
            }
        }
        out
    }

    /// The oldest live tokens of `user` beyond the newest `keep`, oldest first (the live list is
    /// kept in that order, so nothing is sorted).
    pub(super) fn live_beyond(&self, user: &str, keep: usize, now: u64) -> Vec<Arc<Entry>> {
        let live: Vec<Arc<Entry>> = read(&self.inner)
            .by_user
            .get(user)
            .map(|l| {
                l.live
                    .values()
                    .filter(|e| e.is_live_at(now))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let excess = live.len().saturating_sub(keep);
        live.into_iter().take(excess).collect()
    }

    /// Marks every live token of `user` issued through `enrollment` dead (its key is no longer
    /// enrolled); returns their jtis. Tokens another caller is ending already are left to them.
    pub(super) fn revoke_enrollment(
        &self,
        user: &str,
        enrollment: &str,
        reason: &str,
    ) -> Vec<String> {
        let reason: Arc<str> = Arc::from(reason);
        let mut m = write(&self.inner);
        let Some(list) = m.by_user.get_mut(user) else {
            return Vec::new();
        };
        let mut died = Vec::new();
        for (key, e) in &list.live {
            if e.origin.enrollment != enrollment {
                continue;
            }
            let mut f = lock(&e.fate);
            if *f == Fate::Live {
                *f = Fate::Dead(reason.clone());
                died.push(*key);
            }
        }
        let mut out = Vec::new();
        for key in died {
            if let Some(e) = list.live.remove(&key) {
                out.push(e.jti());
                list.dead.push_back(e);
            }
        }
        m.cap_dead(user);
        out
    }

    /// Settles an Ending begun with `ticket` (see [`Entry::begin_end`]): a token whose end is
    /// durable moves from its user's live list to the dead ones.
    pub(super) fn settle(&self, e: &Arc<Entry>, ticket: Ticket, durable: bool) {
        if e.finish_end(ticket, durable) {
            self.bury(e);
        }
    }

    /// Marks every live token of a device session that dies with its device; returns (jti, user).
    pub(super) fn revoke_session(&self, session: &str, reason: &str) -> Vec<(String, String)> {
        let reason: Arc<str> = Arc::from(reason);
        let mut m = write(&self.inner);
        let users = m.users_of_session.get(session).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for user in users {
            let Some(list) = m.by_user.get_mut(&user) else {
                continue;
            };
            let mut died = Vec::new();
            for (key, e) in &list.live {
                if e.origin.device_session != session || !e.revoke_on_removal {
                    continue;
                }
                let mut f = lock(&e.fate);
                if *f == Fate::Live {
                    *f = Fate::Dead(reason.clone());
                    died.push(*key);
                }
            }
            for key in died {
                if let Some(e) = list.live.remove(&key) {
                    out.push((e.jti(), user.clone()));
                    list.dead.push_back(e);
                }
            }
            m.cap_dead(&user);
        }
        out
    }

    /// Moves a dead token to its user's dead list, forgetting the oldest beyond the cap.
    fn bury(&self, e: &Arc<Entry>) {
        let mut m = write(&self.inner);
        let Some(list) = m.by_user.get_mut(&e.origin.user) else {
            return;
        };
        if list.live.remove(&(e.iat, e.jti)).is_some() {
            list.dead.push_back(e.clone());
            let user = e.origin.user.clone();
            m.cap_dead(&user);
        }
    }

    /// Forgets tokens whose lifetime is over (the store drops their rows at the same time).
    pub(super) fn prune(&self, now: u64) {
        let mut m = write(&self.inner);
        let before = m.by_hash.len();
        m.by_hash.retain(|b| b.0.exp() > now);
        if m.by_hash.len() == before {
            return;
        }
        for list in m.by_user.values_mut() {
            list.live.retain(|_, e| e.exp() > now);
            list.dead.retain(|e| e.exp() > now);
        }
        m.by_user
            .retain(|_, l| !l.live.is_empty() || !l.dead.is_empty());
        let mut users_of_session: HashMap<String, Vec<String>> = HashMap::new();
        for b in &m.by_hash {
            let o = &b.0.origin;
            let users = users_of_session
                .entry(o.device_session.clone())
                .or_default();
            if !users.contains(&o.user) {
                users.push(o.user.clone());
            }
        }
        m.users_of_session = users_of_session;
        let mut users_of_login_session: HashMap<String, Vec<String>> = HashMap::new();
        for b in &m.by_hash {
            let o = &b.0.origin;
            if let Some(ls) = &o.login_session {
                let users = users_of_login_session.entry(ls.clone()).or_default();
                if !users.contains(&o.user) {
                    users.push(o.user.clone());
                }
            }
        }
        m.users_of_login_session = users_of_login_session;
        m.sweep_interned();
    }

    /// Whether any token signed by `kid` could still be valid at `now`.
    pub(super) fn kid_in_use(&self, kid: &str, now: u64) -> bool {
        read(&self.inner)
            .by_hash
            .iter()
            .any(|b| b.0.origin.kid == kid && b.0.exp() > now)
    }
}

impl IndexMaps {
    fn intern_origin(&mut self, o: Origin) -> Arc<Origin> {
        if let Some(found) = self.origins.get(&o) {
            return found.clone();
        }
        let o = Arc::new(o);
        self.origins.insert(o.clone());
        o
    }

    fn intern_issued(&mut self, c: &Claims) -> Arc<IssuedAs> {
        self.intern(IssuedAs {
            iss: c.iss.clone(),
            aud: c.aud.clone(),
            amr: c.amr.clone(),
            jkt: c.cnf.jkt.clone(),
        })
    }

    fn intern(&mut self, i: IssuedAs) -> Arc<IssuedAs> {
        if let Some(found) = self.issued.get(&i) {
            return found.clone();
        }
        let i = Arc::new(i);
        self.issued.insert(i.clone());
        i
    }

    /// Drops the oldest dead tokens of `user` beyond [`MAX_DEAD_PER_USER`] from every view.
    fn cap_dead(&mut self, user: &str) {
        let Some(list) = self.by_user.get_mut(user) else {
            return;
        };
        let max = usize::try_from(MAX_DEAD_PER_USER).unwrap_or(usize::MAX);
        let mut dropped = Vec::new();
        while list.dead.len() > max {
            if let Some(e) = list.dead.pop_front() {
                dropped.push(e);
            }
        }
        for e in dropped {
            self.by_hash.remove(&e.hash);
            let (origin, issued) = (e.origin.clone(), e.issued.get().cloned());
            drop(e);
            // Held here and by the set only: no entry uses it any more.
            if Arc::strong_count(&origin) == 2 {
                self.origins.remove(&*origin);
            }
            if let Some(i) = issued.filter(|i| Arc::strong_count(i) == 2) {
                self.issued.remove(&*i);
            }
        }
    }

    /// Forgets interned records no entry uses any more.
    fn sweep_interned(&mut self) {
        self.origins.retain(|o| Arc::strong_count(o) > 1);
        self.issued.retain(|i| Arc::strong_count(i) > 1);
    }
}

/// `now` in the entries' 32-bit seconds (saturating: only after 2106).
fn secs32(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

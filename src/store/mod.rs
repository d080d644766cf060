//! The durable store: enrollments, issued tokens, device sessions and signing-key metadata in one SQLite
//! file, with group commit. Policy (who may revoke, limits, expiry checks) lives in the service, not here.
//!
//! Durability: [`Store::apply`] returns only after its transaction is committed with `journal_mode=WAL`
//! and `synchronous=FULL`, i.e. after the WAL was fsynced, so a D-Bus reply sent after it survives a
//! crash. One fsync costs about 0.45 ms, so a single writer thread commits the batches of many callers
//! in one transaction (group commit): each caller's batch runs in its own `SAVEPOINT`, so a failing
//! batch rolls back alone, and everyone is answered after the one shared commit.
//!
//! The token table is an allow-list: a token whose row is absent (never issued here, pruned after its
//! expiry, or deleted with its enrollment) must be treated as invalid.
//!
//! File permissions: the database is created 0600 before SQLite opens it. SQLite's unix VFS creates
//! the `-wal` and `-shm` files with the database file's mode (`findCreateFileMode`,
//! `unixOpenSharedMemory` in sqlite3.c), masked by the process umask; the daemon still sets umask 077
//! so nothing else it creates in its state directory is readable by others.
//!
//! Ownership: the database and its `-wal`/`-shm` files are refused (naming the path) when they are
//! symlinks, not regular files, owned by another uid or writable by group or others; SQLite then
//! opens the database with `SQLITE_OPEN_NOFOLLOW`. The directory itself is checked and locked by
//! [`crate::store::state_dir`].
//!
//! Files: this one holds the records, the ops and the [`Store`] handle with its reads;
//! `enrollment` the device-neutral enrollment record, `schema` the schema steps, `writer` the
//! writer thread and the SQL of each op, `database_file` how the file is created, checked and
//! opened.

mod database_file;
mod enrollment;
mod schema;
pub mod state_dir;
mod writer;

pub use enrollment::{DeviceKind, Enrollment, KeyAlgorithm};
pub use schema::SCHEMA_VERSION;

use std::path::Path;
use std::sync::{mpsc as std_mpsc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, Params, Row};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::store::database_file::{connect, create_owner_only};
use crate::store::enrollment::{enrollment_row, ENR};
use crate::store::schema::migrate;
use crate::store::writer::{writer_gone, writer_loop, Job, Reply};

/// The lifecycle of an issued token. Stored as 0, 1, 2; a token only ever leaves `Live`, but for
/// one exception: [`WriteOp::ReviveSuperseded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenState {
    Live,
    /// Revoked (logout, device removal, un-enrollment ...); `reason` says why.
    Revoked,
    /// A single-use token that was used.
    Consumed,
}

/// An issued token. The token text itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// JWT `jti` (RFC 7519 section 4.1.7).
    pub jti: String,
    /// SHA-256 of the compact JWT text; the lookup key for validation.
    pub token_hash: [u8; 32],
    pub user: String,
    pub enrollment_id: String,
    /// The card insertion the token was issued for; must be open when the token is inserted.
    pub device_session: String,
    /// Signing key id (JWS `kid`, RFC 7515 section 4.1.4).
    pub kid: String,
    /// Issued-at and expiry, Unix seconds (RFC 7519 sections 4.1.6, 4.1.4).
    pub iat: u64,
    pub exp: u64,
    pub single_use: bool,
    /// When the user proved possession of the device for this session (OIDC `auth_time`); a refreshed
    /// token keeps it, so `max_lifetime` bounds the whole session.
    pub auth_time: u64,
    /// Idle limit in seconds (0 = off): the token dies when not used for this long.
    pub idle_timeout: u64,
    /// Last successful validation or refresh, Unix seconds (`None` = never since issue).
    pub last_used: Option<u64>,
    /// Whether pulling the device out revokes this token (the policy when it was issued).
    pub revoke_on_removal: bool,
    pub state: TokenState,
    /// Why the state changed (free text for logs and the caller).
    pub reason: Option<String>,
    /// When the state left `Live`, Unix seconds.
    pub changed_at: Option<u64>,
    /// The logind session the token is bound to (its `lsid` claim); `None` until bound.
    pub login_session: Option<String>,
    /// The seat of that session (its `seat` claim), when it has one.
    pub seat: Option<String>,
    /// The claims the rest of the row does not hold; `None` for rows written before schema 4.
    pub issued: Option<IssuedClaims>,
}

/// The claims of a token beyond its row's other columns: what the issuer signed besides who, when
/// and which session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedClaims {
    /// `iss`.
    pub iss: String,
    /// `aud`.
    pub aud: String,
    /// `amr`.
    pub amr: Vec<String>,
    /// `cnf.jkt`.
    pub jkt: String,
}

/// One card insertion in one reader, from insertion to removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    pub id: String,
    /// PC/SC reader name.
    pub reader: String,
    /// What identifies the card, e.g. key thumbprints or the CHUID GUID.
    pub card_id: String,
    /// The reader's PC/SC event counter at insertion, to tell re-insertions apart.
    pub event_counter: u64,
    /// The run of the device source (pcscd) that counted `event_counter`: counters restart with
    /// it. `None` when unknown (and for sessions recorded before it was): matches nothing.
    pub source_instance: Option<String>,
    /// Unix seconds.
    pub started: u64,
    /// Unix seconds; `None` while the card is present.
    pub ended: Option<u64>,
}

/// Metadata of a token-signing key (the key itself is kept elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// JWS `kid`.
    pub kid: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; a retired key no longer signs, its tokens stay verifiable until they expire.
    pub retired: Option<u64>,
}

/// One change. The ops of one [`Store::apply`] call commit together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    InsertEnrollment(Enrollment),
    /// Records the signature counter a FIDO key reported in a verified assertion (CTAP 2.1 §6.2):
    /// `Changed` only when `count` is above the stored one, so writes that land out of order
    /// never lower it; `Unchanged` for an equal or lower count or a deleted enrollment.
    SetSignCount {
        enrollment: String,
        count: u32,
    },
    /// Deletes the enrollment and, by cascade, its token records (which makes those tokens invalid).
    DeleteEnrollment {
        id: String,
    },
    /// Fails with [`crate::Error::DeviceRemoved`] if `device_session` is unknown or already
    /// closed, so a token can never be recorded after its card was pulled (the writer serialises
    /// both).
    InsertToken(TokenRecord),
    /// Deletes a token's row (a token that was prepared but never handed out).
    DeleteToken {
        jti: String,
    },
    /// Moves a token from `Live` to `state`; `Unchanged` if it was not live (someone else won).
    SetTokenState {
        jti: String,
        state: TokenState,
        reason: String,
        at: u64,
    },
    /// Records a use of a live token (for the idle timeout); `Unchanged` if not live or not newer.
    TouchToken {
        jti: String,
        at: u64,
    },
    /// Revokes every live token of a device session that is to die with its device; `Rows(n)`.
    RevokeSessionTokens {
        device_session: String,
        reason: String,
        at: u64,
    },
    OpenDeviceSession(DeviceSession),
    /// `Unchanged` if the session was already closed.
    CloseDeviceSession {
        id: String,
        at: u64,
    },
    /// Deletes tokens with `exp <= now` (expired, RFC 7519 section 4.1.4: their revocation records are
    /// no longer needed) and ended device sessions no token refers to; `Rows(n)` in total.
    PruneExpired {
        now: u64,
    },
    InsertSigningKey(KeyMeta),
    /// `Unchanged` if the key was already retired.
    RetireSigningKey {
        kid: String,
        at: u64,
    },
    /// Undoes a `SetTokenState { state: Revoked, reason: "superseded", at }` that was written
    /// ahead of an authentication which then failed, so the new token never existed: the token is
    /// `Live` again. `Unchanged` unless it is in exactly that state, and (if it dies with its
    /// device) its device session is still open: a removal meanwhile keeps it revoked.
    ReviveSuperseded {
        jti: String,
        at: u64,
    },
    /// Reserves one wrong-PIN attempt of caller `uid` on the card `card` before its PIN is sent:
    /// `Changed` if the caller had fewer than `limit`, `Unchanged` (nothing written) if not. One
    /// writer applies these in turn, so concurrent attempts cannot all pass the check.
    ReservePinFailure {
        card: String,
        uid: u32,
        limit: u32,
    },
    /// Gives back a reservation whose PIN never reached the card.
    ReleasePinFailure {
        card: String,
        uid: u32,
    },
    /// Forgets every caller's wrong PINs on `card` (a correct PIN was given on it); `Rows(n)`.
    ClearPinFailures {
        card: String,
    },
    /// Deletes the dead (revoked or consumed) token rows of `user` beyond the newest `keep`, oldest
    /// first (by the time they died); never a live row, nor one of `newest`, the rows this batch
    /// killed (within one second, times cannot tell deaths apart). `Rows(n)`. Batches that kill
    /// tokens end with it, so a user's dead rows stay bounded however many tokens they churn through.
    CapDeadTokens {
        user: String,
        keep: u32,
        newest: Vec<String>,
    },
}

/// What one [`WriteOp`] did, so concurrent callers can tell who "won".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The op inserted, updated or deleted its row.
    Changed,
    /// Nothing matched (no such row, or not in the state the op starts from).
    Unchanged,
    /// A bulk op changed this many rows.
    Rows(u64),
}

impl Outcome {
    /// Whether any row changed.
    pub fn changed(self) -> bool {
        matches!(self, Outcome::Changed) || matches!(self, Outcome::Rows(n) if n > 0)
    }
}

/// The store. `Send + Sync`; share it in an `Arc`. Dropping it finishes queued writes and joins the
/// writer thread.
#[derive(Debug)]
pub struct Store {
    // Unbounded so `send` works from sync and async callers alike; every caller waits for its
    // answer, so the queue never holds more than one batch per concurrent caller.
    jobs: Option<mpsc::UnboundedSender<Job>>,
    reader: Mutex<Connection>,
    writer: Option<JoinHandle<()>>,
}

impl Store {
    /// Opens (creating owner-only if absent) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        create_owner_only(path)?;
        let mut writer = connect(path)?;
        migrate(&mut writer)?;
        let reader = connect(path)?;
        reader.pragma_update(None, "query_only", true)?;
        let (jobs, queue) = mpsc::unbounded_channel();
        let handle = thread::Builder::new()
            .name("tessera-store".into())
            .spawn(move || writer_loop(writer, queue))?;
        Ok(Store {
            jobs: Some(jobs),
            reader: Mutex::new(reader),
            writer: Some(handle),
        })
    }

    /// Applies `ops` atomically; returns once durable, with one [`Outcome`] per op. Dropping the
    /// future does not cancel the write.
    pub async fn apply(&self, ops: Vec<WriteOp>) -> Result<Vec<Outcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        self.submit(ops, Reply::Async(tx))?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// [`Store::apply`] for synchronous callers; blocks the thread until the commit is durable.
    pub fn apply_blocking(&self, ops: Vec<WriteOp>) -> Result<Vec<Outcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        // A std channel, not `oneshot::blocking_recv`, which panics inside a runtime.
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.submit(ops, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| writer_gone())?
    }

    /// Queues `ops` (applied atomically, as [`Store::apply`]) without waiting: they join the next
    /// group commit, and a failure is logged. Only for writes whose loss in a crash is harmless
    /// (a FIDO signature counter: see `service::sign_count`); dropping the store still commits them.
    pub fn apply_detached(&self, ops: Vec<WriteOp>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.submit(ops, Reply::Detached)
    }

    /// All enrollments, by id.
    pub fn enrollments(&self) -> Result<Vec<Enrollment>> {
        self.query(
            &format!("SELECT {ENR} FROM enrollments ORDER BY id"),
            [],
            enrollment_row,
        )
    }

    /// The enrollments of one Unix account, by id.
    pub fn enrollments_for_user(&self, user: &str) -> Result<Vec<Enrollment>> {
        let sql = format!("SELECT {ENR} FROM enrollments WHERE user = ?1 ORDER BY id");
        self.query(&sql, [user], enrollment_row)
    }

    /// One enrollment by id.
    pub fn enrollment(&self, id: &str) -> Result<Option<Enrollment>> {
        let sql = format!("SELECT {ENR} FROM enrollments WHERE id = ?1");
        Ok(self.query(&sql, [id], enrollment_row)?.pop())
    }

    /// Every token record (live, revoked and consumed, until pruned), by jti.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.query(
            &format!("SELECT {TOK} FROM tokens ORDER BY jti"),
            [],
            token_row,
        )
    }

    /// The token records of one user, by jti (e.g. to enforce a per-user limit).
    pub fn tokens_for_user(&self, user: &str) -> Result<Vec<TokenRecord>> {
        let sql = format!("SELECT {TOK} FROM tokens WHERE user = ?1 ORDER BY jti");
        self.query(&sql, [user], token_row)
    }

    /// The record of the token whose text hashes (SHA-256) to `hash`; `None` means invalid.
    pub fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOK} FROM tokens WHERE token_hash = ?1");
        Ok(self.query(&sql, [hash], token_row)?.pop())
    }

    /// Sessions whose card has not been removed, by id; after a restart, those to re-check.
    pub fn open_device_sessions(&self) -> Result<Vec<DeviceSession>> {
        let sql = format!("SELECT {SES} FROM device_sessions WHERE ended IS NULL ORDER BY id");
        self.query(&sql, [], session_row)
    }

    /// All signing-key metadata, oldest first.
    pub fn signing_keys(&self) -> Result<Vec<KeyMeta>> {
        let sql = "SELECT kid, created, retired FROM signing_keys ORDER BY created, kid";
        self.query(sql, [], |r| {
            Ok(KeyMeta {
                kid: r.get(0)?,
                created: r.get(1)?,
                retired: r.get(2)?,
            })
        })
    }

    fn submit(&self, ops: Vec<WriteOp>, reply: Reply) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(writer_gone)?;
        jobs.send(Job { ops, reply }).map_err(|_| writer_gone())
    }

    fn query<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, map)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        // Only a panic while holding the lock poisons it; a read-only connection stays consistent.
        crate::locks::lock(&self.reader)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and return.
        drop(self.jobs.take());
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

/// The columns of a token row, in the order of [`token_row`].
const TOK: &str = "jti, token_hash, user, enrollment_id, device_session, kid, iat, exp, \
                   single_use, state, reason, changed_at, auth_time, idle_timeout, last_used, \
                   revoke_on_removal, login_session, seat, iss, aud, amr, jkt";
/// The columns of a device session row, in the order of [`session_row`].
const SES: &str = "id, reader, card_id, event_counter, started, ended, source_instance";

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        jti: r.get(0)?,
        token_hash: r.get(1)?,
        user: r.get(2)?,
        enrollment_id: r.get(3)?,
        device_session: r.get(4)?,
        kid: r.get(5)?,
        iat: r.get(6)?,
        exp: r.get(7)?,
        single_use: r.get(8)?,
        state: r.get(9)?,
        reason: r.get(10)?,
        changed_at: r.get(11)?,
        auth_time: r.get(12)?,
        idle_timeout: r.get(13)?,
        last_used: r.get(14)?,
        revoke_on_removal: r.get(15)?,
        login_session: r.get(16)?,
        seat: r.get(17)?,
        issued: issued_row(r)?,
    })
}

/// Columns 18 to 21 of a token row; `None` unless all are there (an `amr` that is not a JSON
/// array of strings counts as absent: the claims are then learnt from the token itself).
fn issued_row(r: &Row<'_>) -> rusqlite::Result<Option<IssuedClaims>> {
    let (iss, aud, amr, jkt): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = (r.get(18)?, r.get(19)?, r.get(20)?, r.get(21)?);
    let (Some(iss), Some(aud), Some(amr), Some(jkt)) = (iss, aud, amr, jkt) else {
        return Ok(None);
    };
    let Ok(amr) = serde_json::from_str::<Vec<String>>(&amr) else {
        return Ok(None);
    };
    Ok(Some(IssuedClaims { iss, aud, amr, jkt }))
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<DeviceSession> {
    Ok(DeviceSession {
        id: r.get(0)?,
        reader: r.get(1)?,
        card_id: r.get(2)?,
        event_counter: r.get(3)?,
        started: r.get(4)?,
        ended: r.get(5)?,
        source_instance: r.get(6)?,
    })
}

impl ToSql for TokenState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let code: i64 = match self {
            TokenState::Live => 0,
            TokenState::Revoked => 1,
            TokenState::Consumed => 2,
        };
        Ok(code.into())
    }
}

impl FromSql for TokenState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_i64()? {
            0 => Ok(TokenState::Live),
            1 => Ok(TokenState::Revoked),
            2 => Ok(TokenState::Consumed),
            n => Err(FromSqlError::OutOfRange(n)),
        }
    }
}

#[cfg(test)]
#[path = "store_test.rs"]
mod tests;

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

mod enrollment;
pub mod state_dir;

pub use enrollment::{DeviceKind, Enrollment, KeyAlgorithm};

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OpenFlags, Params, Row, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::store::enrollment::{enrollment_row, insert_params, insert_sql, ENR};
use crate::store::state_dir::{check_private, open_error};

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
    /// Deletes the enrollment and, by cascade, its token records (which makes those tokens invalid).
    DeleteEnrollment {
        id: String,
    },
    /// Fails with [`Error::DeviceRemoved`] if `device_session` is unknown or already closed, so a
    /// token can never be recorded after its card was pulled (the writer serialises both).
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

/// The newest schema this code knows; `PRAGMA user_version` holds the database's.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How many callers' batches one group commit takes at most, to bound the latency of each group.
const MAX_GROUP: usize = 256;

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

fn writer_gone() -> Error {
    Error::Storage("the store's writer has stopped; nothing was applied".into())
}

struct Job {
    ops: Vec<WriteOp>,
    reply: Reply,
}

enum Reply {
    Async(oneshot::Sender<Result<Vec<Outcome>>>),
    Blocking(std_mpsc::SyncSender<Result<Vec<Outcome>>>),
}

impl Reply {
    fn send(self, result: Result<Vec<Outcome>>) {
        // A caller that went away (a dropped future) is not told; its batch's fate is already sealed.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Owns the write connection: takes the first queued batch, drains what else is queued (up to
/// [`MAX_GROUP`]), commits them together and answers everyone.
fn writer_loop(mut conn: Connection, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queue.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match commit_group(&mut conn, &group) {
            Ok(results) => {
                for (job, result) in group.drain(..).zip(results) {
                    job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = group.len(), "store group commit failed");
                for job in group.drain(..) {
                    job.reply.send(Err(Error::Storage(format!(
                        "commit failed, nothing applied: {e}"
                    ))));
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}

/// One transaction, one savepoint per batch. `Err` means nothing of the group was committed.
fn commit_group(conn: &mut Connection, group: &[Job]) -> Result<Vec<Result<Vec<Outcome>>>> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let sp = tx.savepoint()?;
        match job.ops.iter().map(|op| apply_op(&sp, op)).collect() {
            Ok(outcomes) => {
                sp.commit()?;
                results.push(Ok(outcomes));
            }
            Err(e) => {
                // Rolls back to the savepoint and releases it.
                sp.finish()?;
                // Some errors (disk full, I/O) make SQLite roll back the whole transaction: the
                // group's earlier batches are gone and later savepoints would autocommit. `finish`
                // then usually fails already (no such savepoint); this check does not rely on it.
                if tx.is_autocommit() {
                    return Err(Error::Storage(format!("transaction aborted: {e}")));
                }
                results.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

fn apply_op(conn: &Connection, op: &WriteOp) -> Result<Outcome> {
    let run = |sql: &str, params: &[&dyn ToSql]| -> Result<u64> {
        let n = conn.prepare_cached(sql)?.execute(params)?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    };
    let one = |n: u64| {
        if n > 0 {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    };
    Ok(match op {
        WriteOp::InsertEnrollment(e) => one(run(&insert_sql(), &insert_params(e)[..])?),
        WriteOp::DeleteEnrollment { id } => {
            one(run("DELETE FROM enrollments WHERE id = ?1", params![id])?)
        }
        WriteOp::InsertToken(t) => {
            let sql = format!(
                "INSERT INTO tokens ({TOK}) SELECT ?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16 \
                 WHERE EXISTS \
                 (SELECT 1 FROM device_sessions WHERE id = ?5 AND ended IS NULL)"
            );
            let p = params![
                t.jti,
                t.token_hash,
                t.user,
                t.enrollment_id,
                t.device_session,
                t.kid,
                t.iat,
                t.exp,
                t.single_use,
                t.state,
                t.reason,
                t.changed_at,
                t.auth_time,
                t.idle_timeout,
                t.last_used,
                t.revoke_on_removal
            ];
            match run(&sql, p)? {
                0 => return Err(Error::DeviceRemoved),
                _ => Outcome::Changed,
            }
        }
        WriteOp::SetTokenState { state: TokenState::Live, .. } => {
            return Err(Error::InvalidArgument("a token cannot return to Live".into()))
        }
        WriteOp::SetTokenState { jti, state, reason, at } => one(run(
            "UPDATE tokens SET state = ?2, reason = ?3, changed_at = ?4 WHERE jti = ?1 AND state = 0",
            params![jti, state, reason, at],
        )?),
        WriteOp::DeleteToken { jti } => {
            one(run("DELETE FROM tokens WHERE jti = ?1", params![jti])?)
        }
        WriteOp::TouchToken { jti, at } => one(run(
            "UPDATE tokens SET last_used = ?2 \
             WHERE jti = ?1 AND state = 0 AND (last_used IS NULL OR last_used < ?2)",
            params![jti, at],
        )?),
        WriteOp::RevokeSessionTokens { device_session, reason, at } => Outcome::Rows(run(
            "UPDATE tokens SET state = 1, reason = ?2, changed_at = ?3 \
             WHERE device_session = ?1 AND state = 0 AND revoke_on_removal = 1",
            params![device_session, reason, at],
        )?),
        WriteOp::OpenDeviceSession(s) => one(run(
            &format!("INSERT INTO device_sessions ({SES}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
            params![
                s.id,
                s.reader,
                s.card_id,
                s.event_counter,
                s.started,
                s.ended,
                s.source_instance
            ],
        )?),
        WriteOp::CloseDeviceSession { id, at } => one(run(
            "UPDATE device_sessions SET ended = ?2 WHERE id = ?1 AND ended IS NULL",
            params![id, at],
        )?),
        WriteOp::PruneExpired { now } => {
            // An enrollment's last use outlives its tokens: recorded before they go (through the
            // exp index, so an issue with nothing to prune costs nothing more).
            run(
                "UPDATE enrollments SET last_used = \
                 (SELECT max(auth_time) FROM tokens t WHERE t.enrollment_id = enrollments.id AND t.exp <= ?1) \
                 WHERE id IN (SELECT enrollment_id FROM tokens WHERE exp <= ?1) \
                 AND coalesce(last_used, 0) < \
                 (SELECT max(auth_time) FROM tokens t WHERE t.enrollment_id = enrollments.id AND t.exp <= ?1)",
                params![now],
            )?;
            let tokens = run("DELETE FROM tokens WHERE exp <= ?1", params![now])?;
            let sessions = run(
                "DELETE FROM device_sessions WHERE ended IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM tokens WHERE tokens.device_session = device_sessions.id)",
                params![],
            )?;
            Outcome::Rows(tokens.saturating_add(sessions))
        }
        WriteOp::InsertSigningKey(k) => one(run(
            "INSERT INTO signing_keys (kid, created, retired) VALUES (?1, ?2, ?3)",
            params![k.kid, k.created, k.retired],
        )?),
        WriteOp::RetireSigningKey { kid, at } => one(run(
            "UPDATE signing_keys SET retired = ?2 WHERE kid = ?1 AND retired IS NULL",
            params![kid, at],
        )?),
        WriteOp::ReviveSuperseded { jti, at } => one(run(
            "UPDATE tokens SET state = 0, reason = NULL, changed_at = NULL \
             WHERE jti = ?1 AND state = 1 AND reason = 'superseded' AND changed_at = ?2 \
             AND (revoke_on_removal = 0 OR EXISTS (SELECT 1 FROM device_sessions \
             WHERE id = tokens.device_session AND ended IS NULL))",
            params![jti, at],
        )?),
        WriteOp::ReservePinFailure { card, uid, limit } => one(run(
            "INSERT INTO pin_failures (card, uid, count) SELECT ?1, ?2, 1 WHERE ?3 > 0 \
             ON CONFLICT (card, uid) DO UPDATE SET count = count + 1 WHERE count < ?3",
            params![card, uid, limit],
        )?),
        WriteOp::ReleasePinFailure { card, uid } => {
            let n = run(
                "UPDATE pin_failures SET count = count - 1 WHERE card = ?1 AND uid = ?2",
                params![card, uid],
            )?;
            run("DELETE FROM pin_failures WHERE count <= 0", params![])?;
            one(n)
        }
        WriteOp::ClearPinFailures { card } => Outcome::Rows(run(
            "DELETE FROM pin_failures WHERE card = ?1",
            params![card],
        )?),
        WriteOp::CapDeadTokens { user, keep, newest } => {
            let others = u64::from(*keep).saturating_sub(newest.len() as u64);
            let newest = serde_json::to_string(newest)
                .map_err(|e| Error::Internal(format!("jti list: {e}")))?;
            Outcome::Rows(run(
                "DELETE FROM tokens WHERE jti IN (SELECT jti FROM tokens \
                 WHERE user = ?1 AND state != 0 AND jti NOT IN (SELECT value FROM json_each(?3)) \
                 ORDER BY changed_at DESC, jti DESC LIMIT -1 OFFSET ?2)",
                params![user, others, newest],
            )?)
        }
    })
}

const TOK: &str = "jti, token_hash, user, enrollment_id, device_session, kid, iat, exp, \
                   single_use, state, reason, changed_at, auth_time, idle_timeout, last_used, \
                   revoke_on_removal";
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
    })
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

/// Schema steps; entry `i` migrates `user_version` i to i + 1. Only ever append.
/// Times are Unix seconds; booleans 0/1; token `state` 0 live, 1 revoked, 2 consumed.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE enrollments (
    id             TEXT PRIMARY KEY NOT NULL,
    user           TEXT NOT NULL,
    uid            INTEGER NOT NULL,
    slot           TEXT NOT NULL,
    public_key     BLOB NOT NULL,              -- SEC1 uncompressed point
    key_thumbprint TEXT NOT NULL,
    card_guid      BLOB,                       -- CHUID GUID, 16 bytes, if any
    cert_subject   TEXT,
    require_pin    INTEGER NOT NULL CHECK (require_pin IN (0, 1)),
    created        INTEGER NOT NULL,
    UNIQUE (user, key_thumbprint)
);
CREATE TABLE device_sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    reader         TEXT NOT NULL,
    card_id        TEXT NOT NULL,
    event_counter  INTEGER NOT NULL,
    started        INTEGER NOT NULL,
    ended          INTEGER                     -- NULL while the card is present
);
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    created        INTEGER NOT NULL,
    retired        INTEGER
);
CREATE TABLE tokens (
    jti            TEXT PRIMARY KEY NOT NULL,
    token_hash     BLOB NOT NULL UNIQUE,       -- SHA-256 of the token text
    user           TEXT NOT NULL,
    enrollment_id  TEXT NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE,
    device_session TEXT NOT NULL REFERENCES device_sessions (id),
    kid            TEXT NOT NULL REFERENCES signing_keys (kid),
    iat            INTEGER NOT NULL,
    exp            INTEGER NOT NULL,
    single_use     INTEGER NOT NULL CHECK (single_use IN (0, 1)),
    state          INTEGER NOT NULL CHECK (state IN (0, 1, 2)),
    reason         TEXT,
    changed_at     INTEGER,
    auth_time      INTEGER NOT NULL,
    idle_timeout   INTEGER NOT NULL,           -- seconds, 0 = off
    last_used      INTEGER,
    revoke_on_removal INTEGER NOT NULL CHECK (revoke_on_removal IN (0, 1))
);
CREATE INDEX enrollments_user ON enrollments (user);
CREATE INDEX tokens_user ON tokens (user);
CREATE INDEX tokens_device_session ON tokens (device_session);
CREATE INDEX tokens_enrollment ON tokens (enrollment_id);
CREATE INDEX tokens_exp ON tokens (exp);
",
    "
-- The latest auth_time of the enrollment's pruned tokens (PruneExpired folds them in before it
-- deletes them); tokens still in the table speak for themselves.
ALTER TABLE enrollments ADD COLUMN last_used INTEGER;
-- pcscd's process identity when the session's event_counter was read; NULL: unknown (never matches).
ALTER TABLE device_sessions ADD COLUMN source_instance TEXT;
ALTER TABLE enrollments ADD COLUMN card_auth_thumbprint TEXT;  -- the card's 9E key at enrollment
-- Wrong PINs each caller spent on a card enrolled for nobody, until a correct PIN is given on it.
CREATE TABLE pin_failures (
    card           TEXT NOT NULL,              -- the card's identity (slot keys, CHUID GUID)
    uid            INTEGER NOT NULL,
    count          INTEGER NOT NULL,
    PRIMARY KEY (card, uid)
);
",
    // Enrollments in device-neutral terms (PIV now, FIDO next). Columns are renamed, not copied,
    // so the rows, and the tokens that refer to them, stay as they are; every existing row is a PIV
    // one with an ES256 key, which the defaults say.
    "
ALTER TABLE enrollments RENAME COLUMN slot TO credential;          -- PIV slot or FIDO credential id
ALTER TABLE enrollments RENAME COLUMN card_guid TO device_identity; -- CHUID GUID or AAGUID, 16 bytes
ALTER TABLE enrollments RENAME COLUMN cert_subject TO label;
ALTER TABLE enrollments RENAME COLUMN card_auth_thumbprint TO device_key_thumbprint;
ALTER TABLE enrollments ADD COLUMN kind TEXT NOT NULL DEFAULT 'piv';        -- later also 'fido'
ALTER TABLE enrollments ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'es256'; -- of public_key
ALTER TABLE enrollments ADD COLUMN rp_id TEXT;                               -- FIDO relying party
ALTER TABLE enrollments ADD COLUMN sign_count INTEGER NOT NULL DEFAULT 0    -- FIDO counter, u32
    CHECK (sign_count BETWEEN 0 AND 4294967295);
",
];

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a newer database rather than misreading it.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "database schema version {version} is newer than this Tessera supports \
             ({SCHEMA_VERSION}); upgrade Tessera or restore a backup"
        )));
    }
    for step in MIGRATIONS.iter().skip(version as usize) {
        tx.execute_batch(step)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tracing::info!(from = version, to = SCHEMA_VERSION, "store schema migrated");
    }
    tx.commit()?;
    Ok(())
}

fn connect(path: &Path) -> Result<Connection> {
    // No CREATE flag: the file must be the one `create_owner_only` made. NOFOLLOW: SQLite refuses
    // the path if it is (or, swapped in later, becomes) a symlink.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "cannot enable WAL (journal_mode {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Creates `path` 0600 if absent (never following a symlink) and refuses it, or its WAL/SHM files,
/// unless each is a regular file of this daemon's euid that group and others cannot write (a
/// symlink is refused too). Files an older version left readable by others are tightened.
fn create_owner_only(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| open_error("database", path, &e))?;
    check_private(&file, "database", path, false)?;
    tighten(&file, path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        // Absent is fine (SQLite creates them with the database's mode); anything else is opened
        // without following a symlink and checked on the descriptor.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&side)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(open_error("database file", &side, &e)),
        };
        check_private(&file, "database file", &side, false)?;
        tighten(&file, &side)?;
    }
    Ok(())
}

/// Drops the read bits of group and others (write bits were refused already), on the descriptor.
fn tighten(file: &fs::File, path: &Path) -> Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = %format!("{mode:o}"), "store file was not owner-only; fixing");
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_test.rs"]
mod tests;

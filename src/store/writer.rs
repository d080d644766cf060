//! The store's one writer: a thread that owns the write connection, takes every caller's batch of
//! [`WriteOp`]s, commits as many as are queued in one transaction (group commit, one savepoint per
//! batch) and answers each caller after the shared commit; and the SQL of each op.

use std::sync::mpsc as std_mpsc;

use rusqlite::types::ToSql;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::enrollment::{insert_params, insert_sql};
use super::{Outcome, TokenState, WriteOp, SES, TOK};
use crate::error::{Error, Result};

/// How many callers' batches one group commit takes at most, to bound the latency of each group.
const MAX_GROUP: usize = 256;

pub(super) fn writer_gone() -> Error {
    Error::Storage("the store's writer has stopped; nothing was applied".into())
}

pub(super) struct Job {
    pub(super) ops: Vec<WriteOp>,
    pub(super) reply: Reply,
}

pub(super) enum Reply {
    Async(oneshot::Sender<Result<Vec<Outcome>>>),
    Blocking(std_mpsc::SyncSender<Result<Vec<Outcome>>>),
    /// Nobody waits ([`super::Store::apply_detached`]): a failure is logged.
    Detached,
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
            Reply::Detached => {
                if let Err(e) = result {
                    tracing::error!("a detached store write failed: {e}");
                }
            }
        }
    }
}

/// Owns the write connection: takes the first queued batch, drains what else is queued (up to
/// [`MAX_GROUP`]), commits them together and answers everyone.
pub(super) fn writer_loop(mut conn: Connection, mut queue: mpsc::UnboundedReceiver<Job>) {
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
pub(super) fn commit_group(
    conn: &mut Connection,
    group: &[Job],
) -> Result<Vec<Result<Vec<Outcome>>>> {
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
        WriteOp::SetSignCount { enrollment, count } => one(run(
            "UPDATE enrollments SET sign_count = ?2 WHERE id = ?1 AND sign_count < ?2",
            params![enrollment, count],
        )?),
        WriteOp::DeleteEnrollment { id } => {
            one(run("DELETE FROM enrollments WHERE id = ?1", params![id])?)
        }
        WriteOp::InsertToken(t) => {
            let amr = match &t.issued {
                Some(i) => Some(
                    serde_json::to_string(&i.amr)
                        .map_err(|e| Error::Internal(format!("amr as JSON: {e}")))?,
                ),
                None => None,
            };
            let sql = format!(
                "INSERT INTO tokens ({TOK}) SELECT ?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22 \
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
                t.revoke_on_removal,
                t.login_session,
                t.seat,
                t.issued.as_ref().map(|i| &i.iss),
                t.issued.as_ref().map(|i| &i.aud),
                amr,
                t.issued.as_ref().map(|i| &i.jkt)
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

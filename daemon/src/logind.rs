//! A small client of systemd-logind (`org.freedesktop.login1`, on the daemon's own bus): which
//! login session an id or a process is, locking and ending a session, and the `SessionRemoved`
//! signal. What Tessera decides about sessions is the core's; this file only asks and tells logind.
//!
//! Interfaces as documented in org.freedesktop.login1(5): `Manager.GetSession(s) -> o`,
//! `Manager.GetSessionByPID(u) -> o`, `Manager.LockSession(s)`, `Manager.TerminateSession(s)`,
//! the signal `Manager.SessionRemoved(s, o)`, and the `Session` properties `Id` (s), `User` (uo),
//! `Seat` (so, "" for none) and `Remote` (b).
//!
//! Every call has a deadline ([`CALL_TIMEOUT`]): a PAM login waits on these answers, and a hung
//! logind must fail it, not hang it.

use std::collections::HashMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera::service::LoginSession;
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue};
use zbus::{proxy, Connection};

use crate::errors::BusError;

/// logind's well-known name.
pub const LOGIN1: &str = "org.freedesktop.login1";
/// logind's Manager object.
const MANAGER_PATH: &str = "/org/freedesktop/login1";
const MANAGER_IFACE: &str = "org.freedesktop.login1.Manager";
const SESSION_IFACE: &str = "org.freedesktop.login1.Session";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";

/// How long one call to logind (or to the bus about a caller) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest login session id accepted from a caller; logind's are short ("2", "c1", "42").
pub const MAX_SESSION_ID_LEN: usize = 64;

/// A session as logind describes it, with what Tessera's core does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// Id, owner and seat: what the core decides with.
    pub session: LoginSession,
    /// Whether the session is remote (ssh, a remote display).
    pub remote: bool,
}

/// Why logind gave no usable answer. Every one of them means "no login session" to a caller
/// ([`BusError::NoLoginSession`]); the message says which.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogindError {
    /// Nobody owns `org.freedesktop.login1` (no systemd-logind on this bus).
    #[error("logind (org.freedesktop.login1) is not on the bus")]
    Absent,
    /// logind knows no such session, or the process is in none.
    #[error("{0}")]
    NoSession(String),
    /// logind did not answer in time.
    #[error("logind did not answer {member} within {} s", CALL_TIMEOUT.as_secs())]
    Timeout { member: &'static str },
    /// The bus refused the call, or logind failed it for another reason.
    #[error("logind {member}: {source}")]
    Bus {
        member: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },
    /// logind's answer is not what org.freedesktop.login1(5) describes.
    #[error("logind's answer to {member} is malformed: {why}")]
    Malformed { member: &'static str, why: String },
}

impl From<LogindError> for BusError {
    fn from(e: LogindError) -> Self {
        BusError::NoLoginSession(e.to_string())
    }
}

/// A login session id as a caller gives it: 1 to [`MAX_SESSION_ID_LEN`] bytes of
/// `[A-Za-z0-9._-]` (logind's ids are digits or "c" and digits). Anything else is InvalidArgument,
/// before logind is asked.
pub fn session_id(id: &str) -> Result<&str, BusError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(id)
    } else {
        let shown: String = id.chars().take(MAX_SESSION_ID_LEN).collect();
        Err(BusError::InvalidArgument(format!(
            "login session id {shown:?} must be 1 to {MAX_SESSION_ID_LEN} bytes of [A-Za-z0-9._-]"
        )))
    }
}

/// The session logind knows as `id` (`GetSession`, then its properties).
pub async fn session(conn: &Connection, id: &str) -> Result<SessionFacts, LogindError> {
    let found = async {
        let path: OwnedObjectPath = call_manager(conn, "GetSession", &(id,)).await?;
        facts(conn, path).await
    };
    found.await.map_err(|e| match e {
        LogindError::NoSession(why) => {
            LogindError::NoSession(format!("logind knows no session {id:?} ({why})"))
        }
        other => other,
    })
}

/// The session the process `pid` belongs to (`GetSessionByPID`, then its properties).
pub async fn session_of_pid(conn: &Connection, pid: u32) -> Result<SessionFacts, LogindError> {
    let found = async {
        let path: OwnedObjectPath = call_manager(conn, "GetSessionByPID", &(pid,)).await?;
        facts(conn, path).await
    };
    found.await.map_err(|e| match e {
        LogindError::NoSession(why) => LogindError::NoSession(format!(
            "the calling process is in no login session ({why})"
        )),
        other => other,
    })
}

/// Asks logind to lock the session `id` (its screen locker takes over).
pub async fn lock_session(conn: &Connection, id: &str) -> Result<(), LogindError> {
    call_manager::<_, ()>(conn, "LockSession", &(id,)).await
}

/// Asks logind to end the session `id` (its processes are killed).
pub async fn terminate_session(conn: &Connection, id: &str) -> Result<(), LogindError> {
    call_manager::<_, ()>(conn, "TerminateSession", &(id,)).await
}

/// The `SessionRemoved` signal, through a proxy so that zbus delivers only signals sent by the
/// current owner of `org.freedesktop.login1` (a user's connection cannot end anyone's tokens by
/// sending the same signal).
#[proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1",
    gen_blocking = false
)]
pub trait Login1Manager {
    /// A session ended: its id and object path.
    #[zbus(signal)]
    fn session_removed(&self, id: String, path: OwnedObjectPath) -> zbus::Result<()>;
}

/// The `Session` properties Tessera reads, in one `GetAll`.
async fn facts(conn: &Connection, path: OwnedObjectPath) -> Result<SessionFacts, LogindError> {
    const MEMBER: &str = "Session properties";
    let props: HashMap<String, OwnedValue> = call(
        conn,
        path.as_str(),
        PROPERTIES_IFACE,
        "GetAll",
        MEMBER,
        &(SESSION_IFACE,),
    )
    .await?;
    let malformed = |why: &str| LogindError::Malformed {
        member: MEMBER,
        why: why.to_owned(),
    };
    let get = |name: &str| {
        props
            .get(name)
            .and_then(|v| v.try_clone().ok())
            .ok_or_else(|| malformed(&format!("no {name}")))
    };
    let id = String::try_from(get("Id")?).map_err(|_| malformed("Id is not s"))?;
    let (uid, _user_path) = <(u32, OwnedObjectPath)>::try_from(get("User")?)
        .map_err(|_| malformed("User is not (uo)"))?;
    let (seat, _seat_path) = <(String, OwnedObjectPath)>::try_from(get("Seat")?)
        .map_err(|_| malformed("Seat is not (so)"))?;
    // Older logind versions and some mocks lack Remote; a session that does not say is local.
    let remote = match props.get("Remote") {
        Some(v) => bool::try_from(v).map_err(|_| malformed("Remote is not b"))?,
        None => false,
    };
    Ok(SessionFacts {
        session: LoginSession {
            id,
            uid,
            seat: (!seat.is_empty()).then_some(seat),
        },
        remote,
    })
}

async fn call_manager<B, R>(
    conn: &Connection,
    member: &'static str,
    body: &B,
) -> Result<R, LogindError>
where
    B: Serialize + DynamicType,
    R: DeserializeOwned + zbus::zvariant::Type,
{
    call(conn, MANAGER_PATH, MANAGER_IFACE, member, member, body).await
}

/// One method call to logind with [`CALL_TIMEOUT`], its D-Bus errors sorted into [`LogindError`].
async fn call<B, R>(
    conn: &Connection,
    path: &str,
    interface: &str,
    method: &'static str,
    member: &'static str,
    body: &B,
) -> Result<R, LogindError>
where
    B: Serialize + DynamicType,
    R: DeserializeOwned + zbus::zvariant::Type,
{
    let reply = tokio::time::timeout(
        CALL_TIMEOUT,
        conn.call_method(Some(LOGIN1), path, Some(interface), method, body),
    )
    .await
    .map_err(|_| LogindError::Timeout { member })?
    .map_err(|e| sort_error(member, e))?;
    reply
        .body()
        .deserialize::<R>()
        .map_err(|e| LogindError::Malformed {
            member,
            why: e.to_string(),
        })
}

fn sort_error(member: &'static str, e: zbus::Error) -> LogindError {
    let zbus::Error::MethodError(name, detail, _) = &e else {
        return LogindError::Bus {
            member,
            source: Box::new(e),
        };
    };
    let detail = detail.clone().unwrap_or_default();
    match name.as_str() {
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => LogindError::Absent,
        // Real logind's errors, and what a bus or a mock answers for an object that is not there.
        "org.freedesktop.login1.NoSuchSession"
        | "org.freedesktop.login1.NoSessionForPID"
        | "org.freedesktop.DBus.Error.UnknownObject"
        | "org.freedesktop.DBus.Error.UnknownInterface"
        | "org.freedesktop.DBus.Error.UnknownMethod" => {
            LogindError::NoSession(if detail.is_empty() {
                name.to_string()
            } else {
                detail
            })
        }
        _ => LogindError::Bus {
            member,
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_short_and_plain() {
        for ok in ["1", "c1", "42", "a.b_c-d", &"x".repeat(MAX_SESSION_ID_LEN)] {
            assert!(session_id(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "c 1",
            "c1/../2",
            "é",
            "c1\n",
            &"x".repeat(MAX_SESSION_ID_LEN + 1),
        ] {
            assert!(
                matches!(session_id(bad), Err(BusError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}

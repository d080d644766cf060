//! Is this a remote login? PAM_RHOST set, or logind saying the caller's session is remote (as
//! pam_fprintd asks): a device in this machine's reader proves nothing about a user elsewhere.
//! A `reuse` asks logind nothing here: the daemon looks the caller's session up for ReuseSession
//! anyway and refuses a Remote one there.

#![forbid(unsafe_code)]

use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::Connection;

use crate::outcome::Failure;

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";
const LOGIND_SESSION: &str = "org.freedesktop.login1.Session";

/// `Err(Unavailable)` when PAM_RHOST names another host: the application says the user is
/// elsewhere. The only remote check of a `reuse`, whose logind session the daemon checks itself
/// (ReuseSession refuses a Remote session unless asked with "allow_remote").
pub fn refuse_rhost(rhost: Option<&str>) -> Result<(), Failure> {
    match rhost.filter(|h| !h.is_empty()) {
        Some(host) => Err(Failure::Unavailable(format!(
            "remote login from {host:?} refused (no allow_remote)"
        ))),
        None => Ok(()),
    }
}

/// `Err(Unavailable)` when logind's session of this process is Remote (a device login). logind
/// absent, or no session for this process, is not remote; any other answer from logind that
/// cannot be read fails closed.
pub async fn refuse_remote_session(conn: &Connection) -> Result<(), Failure> {
    match session_is_remote(conn).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(Failure::Unavailable(
            "logind says this session is remote; refused (no allow_remote)".into(),
        )),
        Err(e) => Err(Failure::Unavailable(format!(
            "cannot tell from logind whether this session is remote: {e}"
        ))),
    }
}

async fn session_is_remote(conn: &Connection) -> zbus::Result<bool> {
    let pid = std::process::id();
    let reply = conn
        .call_method(
            Some(LOGIND),
            LOGIND_PATH,
            Some(LOGIND_MANAGER),
            "GetSessionByPID",
            &(pid,),
        )
        .await;
    let session: OwnedObjectPath = match reply {
        Ok(msg) => msg.body().deserialize()?,
        Err(zbus::Error::MethodError(name, _, _))
            if matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    | "org.freedesktop.login1.NoSessionForPID"
            ) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    let reply = conn
        .call_method(
            Some(LOGIND),
            &session,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(LOGIND_SESSION, "Remote"),
        )
        .await?;
    let value: OwnedValue = reply.body().deserialize()?;
    bool::try_from(value).map_err(zbus::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_host_is_refused() {
        assert!(refuse_rhost(None).is_ok());
        assert!(refuse_rhost(Some("")).is_ok());
        assert!(matches!(
            refuse_rhost(Some("elsewhere.example")),
            Err(Failure::Unavailable(_))
        ));
    }
}

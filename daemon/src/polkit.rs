//! Authorisation through polkit: the client of `org.freedesktop.PolicyKit1.Authority`'s
//! CheckAuthorization and the actions of `polkit/org.tessera.Tessera1.policy`.
//!
//! What a caller may do without polkit (its own account; root anything) is decided by the core
//! ([`tessera::service::Caller::uid`]); this module only answers "did polkit authorise this bus
//! name for this action", and which [`Caller`] that makes. Nothing is cached between calls: polkit
//! keeps its own `auth_*_keep` memory, and a cached "yes" would outlive a revoked one.

use std::collections::HashMap;
use std::time::Duration;

use tessera::service::Caller;
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, UniqueName, WellKnownName};
use zbus::proxy::{CacheProperties, MethodFlags};
use zbus::zvariant::Value;
use zbus::Connection;

use crate::errors::BusError;

/// polkit's well-known name on the system bus.
pub const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
const AUTHORITY_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY_INTERFACE: &str = "org.freedesktop.PolicyKit1.Authority";

/// `CheckAuthorizationFlags.AllowUserInteraction` (polkit(8), interface
/// org.freedesktop.PolicyKit1.Authority): polkit may ask the subject's authentication agent for a
/// password before it answers.
const ALLOW_USER_INTERACTION: u32 = 0x1;

/// The longest CheckAuthorization may take. With user interaction allowed the answer waits for a
/// person typing a password into their authentication agent, so the bound is generous; past it the
/// call fails closed (AccessDenied). dbus-daemon's own reply timeout (25 s by default on the system
/// bus) does not apply: polkit answers the call itself, however long the agent takes.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// A polkit action of `polkit/org.tessera.Tessera1.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Enroll a card or key for one's own account (`allow_active auth_self_keep`).
    Enroll,
    /// Authenticate as another account, or as whoever the present device is enrolled for
    /// (`auth_admin`).
    AuthenticateOtherUser,
    /// Rotate the key, reload the configuration, other accounts' sessions, enrollments and policy
    /// (`auth_admin_keep`).
    Manage,
}

impl Action {
    /// Every action, in the policy file's order.
    pub const ALL: [Action; 3] = [
        Action::Enroll,
        Action::AuthenticateOtherUser,
        Action::Manage,
    ];

    /// The action id, as in the policy file.
    pub const fn id(self) -> &'static str {
        match self {
            Action::Enroll => "org.tessera.Tessera1.enroll",
            Action::AuthenticateOtherUser => "org.tessera.Tessera1.authenticate-other-user",
            Action::Manage => "org.tessera.Tessera1.manage",
        }
    }

    /// Whether a caller authorised for this action may act for any account.
    const fn grants_admin(self) -> bool {
        match self {
            Action::Enroll => false,
            Action::AuthenticateOtherUser | Action::Manage => true,
        }
    }
}

/// polkit's answer about one caller and one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// polkit said yes (perhaps after the user authenticated to their agent).
    Authorized,
    /// polkit said no, or the user dismissed the agent's dialog.
    NotAuthorized,
    /// Nobody owns `org.freedesktop.PolicyKit1`: the uid rules alone decide.
    Absent,
}

/// The rights `uid` (the sender of the call, not root) has for `action`.
///
/// polkit absent: the uid's own rights ([`Caller::uid`]), as before polkit. Authorised for an
/// administrative action: `admin`. Not authorised, a polkit error or no answer within
/// [`CHECK_TIMEOUT`]: [`BusError::AccessDenied`], whatever the uid rules would have allowed.
pub async fn caller_for(
    conn: &Connection,
    sender: &UniqueName<'_>,
    uid: u32,
    action: Action,
) -> Result<Caller, BusError> {
    match check(conn, sender, action).await? {
        Authorization::Absent => Ok(Caller::uid(uid)),
        Authorization::Authorized => Ok(Caller {
            uid,
            admin: action.grants_admin(),
        }),
        Authorization::NotAuthorized => Err(BusError::AccessDenied(format!(
            "polkit did not authorise uid {uid} for {}",
            action.id()
        ))),
    }
}

/// Asks polkit whether the connection `sender` is authorised for `action`.
///
/// The subject is the caller's unique bus name (polkit(8): subject kind "system-bus-name"), which
/// polkit resolves to the process and user itself; never the daemon's own pid. Whether polkit runs
/// is asked afresh each call (NameHasOwner); the call itself never starts polkit (NO_AUTO_START),
/// so that a bus where polkit merely could be activated, but cannot start, does not hang callers.
pub async fn check(
    conn: &Connection,
    sender: &UniqueName<'_>,
    action: Action,
) -> Result<Authorization, BusError> {
    let name = WellKnownName::from_static_str_unchecked(POLKIT_NAME);
    let dbus = DBusProxy::new(conn).await?;
    let present = dbus
        .name_has_owner(BusName::WellKnown(name.clone()))
        .await
        .map_err(|e| denied(action, &format!("cannot tell whether polkit runs: {e}")))?;
    if !present {
        return Ok(Authorization::Absent);
    }
    let authority = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(conn)
        .destination(name)?
        .path(AUTHORITY_PATH)?
        .interface(AUTHORITY_INTERFACE)?
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let subject = (
        "system-bus-name",
        HashMap::from([("name", Value::from(sender.as_str()))]),
    );
    let details: HashMap<&str, &str> = HashMap::new();
    let body = (subject, action.id(), details, ALLOW_USER_INTERACTION, "");
    let call = authority.call_with_flags::<_, _, (bool, bool, HashMap<String, String>)>(
        "CheckAuthorization",
        MethodFlags::NoAutoStart.into(),
        &body,
    );
    let reply = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Err(_) => {
            tracing::warn!(
                "polkit gave no answer about {} within {CHECK_TIMEOUT:?}; denied",
                action.id()
            );
            return Err(denied(action, "polkit did not answer in time"));
        }
        Ok(Err(e)) if gone(&e) => {
            // It left between NameHasOwner and the call.
            return Ok(Authorization::Absent);
        }
        Ok(Err(e)) => {
            tracing::warn!(
                "polkit CheckAuthorization {} failed: {e}; denied",
                action.id()
            );
            return Err(denied(action, &format!("polkit failed: {e}")));
        }
        Ok(Ok(reply)) => reply,
    };
    // None only for NO_REPLY_EXPECTED, which is not asked for; treat it as a refusal all the same.
    let Some((authorized, _challenge, _details)) = reply else {
        return Err(denied(action, "polkit sent no reply"));
    };
    tracing::info!(
        "polkit: {} {} for {}",
        action.id(),
        if authorized {
            "authorised"
        } else {
            "not authorised"
        },
        sender.as_str()
    );
    Ok(if authorized {
        Authorization::Authorized
    } else {
        Authorization::NotAuthorized
    })
}

/// The bus says nobody owns polkit's name (and would not start it).
fn gone(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        ),
        _ => false,
    }
}

fn denied(action: Action, why: &str) -> BusError {
    BusError::AccessDenied(format!("{} not authorised: {why}", action.id()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const POLICY: &str = include_str!("../../polkit/org.tessera.Tessera1.policy");

    /// The ids the daemon asks about are the ones the policy file defines, and no other.
    #[test]
    fn actions_match_the_policy_file() {
        let defined: Vec<&str> = POLICY
            .split("<action id=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        let asked: Vec<&str> = Action::ALL.iter().map(|a| a.id()).collect();
        assert_eq!(defined, asked);
    }

    #[test]
    fn only_administrative_actions_grant_admin() {
        assert!(!Action::Enroll.grants_admin());
        assert!(Action::AuthenticateOtherUser.grants_admin());
        assert!(Action::Manage.grants_admin());
    }
}

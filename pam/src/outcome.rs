//! The fail-closed table: how every outcome of an authentication becomes a PAM return code, in
//! one place.
//!
//! | Outcome | PAM code |
//! |---|---|
//! | a token the daemon issued, then checked by `CheckToken` with our audience, for PAM_USER (or, `reuse`: claims of `ReuseSession` for PAM_USER) | `PAM_SUCCESS` |
//! | a bad option, no PAM_SERVICE | `PAM_SERVICE_ERR` |
//! | no bus; no daemon on it and none started by D-Bus activation (ServiceUnknown, NameHasNoOwner); the daemon's name not owned by uid 0; the daemon left mid-request; a remote login without `allow_remote` (PAM_RHOST, or a device login from a session logind calls Remote) | `PAM_AUTHINFO_UNAVAIL` |
//! | NotEnrolled, NoSuchUser | `PAM_USER_UNKNOWN` (`nouser=unknown`, the default) or `PAM_AUTHINFO_UNAVAIL` (`nouser=unavail`) |
//! | PinWouldBlock, PinBlocked, RateLimited (the lockout) | `PAM_MAXTRIES` |
//! | the application's conversation failed (no conversation, an error, e.g. Ctrl-C at the prompt) | `PAM_CONV_ERR` (the request is cancelled first) |
//! | timeout (the daemon's or ours), Cancelled, a wrong user in the claims, anything else | `PAM_AUTH_ERR` |
//! | `reuse`, whatever went wrong (PAM_RHOST without `allow_remote`, the daemon's AccessDenied for a Remote session without it, included) | `PAM_AUTH_ERR` |
//!
//! `PAM_IGNORE` is never returned. `PAM_SUCCESS` comes only from [`Verified`], which only
//! [`Verified::check`] makes, from claims whose `sub` is the expected user.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_int;
use std::fmt;

use tessera_client::{Error, ErrorName};
use zbus::zvariant::{OwnedValue, Value};

use crate::ffi::{self, Level};
use crate::options::NoUser;

/// Proof that the daemon vouched for `user`: built only from checked claims.
#[derive(Debug)]
pub struct Verified {
    user: String,
}

impl Verified {
    /// The claims of `CheckToken` or `ReuseSession`, accepted only when their `sub` is
    /// `expected` (or, `expected` None for the greeter login, any non-empty `sub`).
    pub fn check(
        claims: &HashMap<String, OwnedValue>,
        expected: Option<&str>,
    ) -> Result<Verified, Failure> {
        let sub = match claims.get("sub").map(|v| &**v) {
            Some(Value::Str(s)) => s.as_str().to_owned(),
            _ => return Err(Failure::AuthErr("the claims carry no subject".into())),
        };
        match expected {
            Some(user) if !sub.is_empty() && user == sub => Ok(Verified { user: sub }),
            None if !sub.is_empty() => Ok(Verified { user: sub }),
            _ => Err(Failure::AuthErr(format!(
                "the token is for {sub:?}, not for {:?}",
                expected.unwrap_or("")
            ))),
        }
    }

    /// The user the daemon vouched for.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// Why an authentication failed, each variant one row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// PAM_SERVICE_ERR: the module is misconfigured.
    ServiceErr(String),
    /// PAM_AUTHINFO_UNAVAIL: the daemon cannot be asked (or may not be, remote).
    Unavailable(String),
    /// PAM_USER_UNKNOWN: the user has no enrollment or no account.
    UserUnknown(String),
    /// PAM_MAXTRIES: the PIN or the lockout stops further tries.
    MaxTries(String),
    /// PAM_CONV_ERR: the application's conversation failed.
    ConvErr(String),
    /// PAM_AUTH_ERR: everything else.
    AuthErr(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, why) = match self {
            Failure::ServiceErr(m) => ("PAM_SERVICE_ERR", m),
            Failure::Unavailable(m) => ("PAM_AUTHINFO_UNAVAIL", m),
            Failure::UserUnknown(m) => ("PAM_USER_UNKNOWN", m),
            Failure::MaxTries(m) => ("PAM_MAXTRIES", m),
            Failure::ConvErr(m) => ("PAM_CONV_ERR", m),
            Failure::AuthErr(m) => ("PAM_AUTH_ERR", m),
        };
        write!(f, "{what}: {why}")
    }
}

impl Failure {
    /// The row of the table for an error of the client crate (a daemon reply, a request's
    /// Failed, the bus).
    pub fn from_client(e: &Error, nouser: NoUser) -> Failure {
        let message = format!("{}: {e}", e.name());
        match e {
            Error::Daemon { name, .. } => match name {
                ErrorName::NotEnrolled | ErrorName::NoSuchUser => match nouser {
                    NoUser::Unknown => Failure::UserUnknown(message),
                    NoUser::Unavail => Failure::Unavailable(message),
                },
                ErrorName::PinWouldBlock | ErrorName::PinBlocked | ErrorName::RateLimited => {
                    Failure::MaxTries(message)
                }
                _ => Failure::AuthErr(message),
            },
            Error::Bus { name, .. } => match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Disconnected" => Failure::Unavailable(message),
                _ => Failure::AuthErr(message),
            },
            Error::NoBus { .. } | Error::Protocol(_) => Failure::Unavailable(message),
            _ => Failure::AuthErr(message),
        }
    }

    /// The PAM code of this row.
    fn code(&self) -> c_int {
        match self {
            Failure::ServiceErr(_) => ffi::PAM_SERVICE_ERR,
            Failure::Unavailable(_) => ffi::PAM_AUTHINFO_UNAVAIL,
            Failure::UserUnknown(_) => ffi::PAM_USER_UNKNOWN,
            Failure::MaxTries(_) => ffi::PAM_MAXTRIES,
            Failure::ConvErr(_) => ffi::PAM_CONV_ERR,
            Failure::AuthErr(_) => ffi::PAM_AUTH_ERR,
        }
    }
}

/// The return code of pam_sm_authenticate; failures are logged (never a secret: messages are the
/// daemon's and ours, which hold no PIN or token).
pub fn code(outcome: Result<Verified, Failure>) -> c_int {
    match outcome {
        Ok(_) => ffi::PAM_SUCCESS,
        Err(failure) => {
            ffi::syslog(Level::Notice, &format!("authentication failed: {failure}"));
            failure.code()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn daemon(name: ErrorName) -> Error {
        Error::Daemon {
            name,
            message: "m".into(),
        }
    }

    #[test]
    fn the_table() {
        use ErrorName::*;
        let unknown = NoUser::Unknown;
        for (e, nouser, want) in [
            (daemon(NotEnrolled), unknown, ffi::PAM_USER_UNKNOWN),
            (daemon(NoSuchUser), unknown, ffi::PAM_USER_UNKNOWN),
            (
                daemon(NotEnrolled),
                NoUser::Unavail,
                ffi::PAM_AUTHINFO_UNAVAIL,
            ),
            (daemon(PinWouldBlock), unknown, ffi::PAM_MAXTRIES),
            (daemon(PinBlocked), unknown, ffi::PAM_MAXTRIES),
            (daemon(RateLimited), unknown, ffi::PAM_MAXTRIES),
            (daemon(Timeout), unknown, ffi::PAM_AUTH_ERR),
            (daemon(Cancelled), unknown, ffi::PAM_AUTH_ERR),
            (daemon(PinInvalid), unknown, ffi::PAM_AUTH_ERR),
            (daemon(AccessDenied), unknown, ffi::PAM_AUTH_ERR),
            (daemon(Failed), unknown, ffi::PAM_AUTH_ERR),
            (
                Error::from(zbus::fdo::Error::ServiceUnknown("x".into())),
                unknown,
                ffi::PAM_AUTHINFO_UNAVAIL,
            ),
            (
                Error::from(zbus::fdo::Error::AccessDenied("policy".into())),
                unknown,
                ffi::PAM_AUTH_ERR,
            ),
            (Error::Unexpected("x".into()), unknown, ffi::PAM_AUTH_ERR),
        ] {
            let f = Failure::from_client(&e, nouser);
            assert_eq!(f.code(), want, "{e:?} → {f}");
            assert_ne!(f.code(), ffi::PAM_SUCCESS);
        }
    }

    fn claims(sub: &str) -> HashMap<String, OwnedValue> {
        let mut m = HashMap::new();
        m.insert(
            "sub".to_owned(),
            OwnedValue::try_from(Value::from(sub)).unwrap(),
        );
        m
    }

    #[test]
    fn success_only_for_the_user() {
        assert_eq!(
            Verified::check(&claims("alice"), Some("alice"))
                .unwrap()
                .user(),
            "alice"
        );
        assert!(Verified::check(&claims("bob"), Some("alice")).is_err());
        assert!(Verified::check(&claims(""), Some("")).is_err());
        assert!(Verified::check(&claims(""), None).is_err());
        assert_eq!(Verified::check(&claims("bob"), None).unwrap().user(), "bob");
        assert!(Verified::check(&HashMap::new(), Some("alice")).is_err());
        assert_eq!(
            code(Verified::check(&claims("bob"), Some("alice"))),
            ffi::PAM_AUTH_ERR
        );
    }
}

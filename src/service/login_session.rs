//! Login sessions (logind's): binding a token to one at PAM `open_session`, verify-once reuse of
//! that token for `sudo` and polkit, logout, and what a device removal does to its sessions.
//!
//! logind is the daemon's to ask; the core gets its answers as [`LoginSession`]s and decides.

use zeroize::Zeroizing;

use super::{Caller, Service};
use crate::token::Claims;
use crate::{Error, Result};

/// A logind session as logind describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSession {
    /// The session id (`XDG_SESSION_ID`, logind's `Id`).
    pub id: String,
    /// The uid the session belongs to (logind's `User`).
    pub uid: u32,
    /// Its seat ("seat0"), if it has one.
    pub seat: Option<String>,
}

/// What a verify-once reuse asks for beyond the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReuseQuery {
    /// The PAM service asking (`[pam.services.NAME]`).
    pub service: Option<String>,
    /// The oldest device authentication the PAM module accepts, seconds; the stricter of this
    /// and the policy's `max_age` applies.
    pub max_age: Option<u64>,
}

impl Service {
    /// Ties the live token `token` to `session` (root only): a new token with the same device
    /// session, authentication time and expiry, carrying `lsid` and `seat`; the old one dies
    /// ("bound"). The session must be the token owner's.
    pub async fn bind_session(
        &self,
        _caller: Caller,
        _token: &str,
        _session: LoginSession,
    ) -> Result<Zeroizing<String>> {
        Err(Error::Internal("BindSession is not built yet".into()))
    }

    /// Verify once: the claims of the newest live token of `user` bound to `session` (the
    /// caller's own, as logind found it by the caller's pid) that the reuse rules accept.
    /// Root or `user` itself only; [`Error::NoLoginSession`] when none fits.
    pub async fn reuse_session(
        &self,
        _caller: Caller,
        _user: &str,
        _session: LoginSession,
        _query: ReuseQuery,
    ) -> Result<Claims> {
        Err(Error::Internal("ReuseSession is not built yet".into()))
    }

    /// Logout (PAM `close_session`): the token dies with reason "logout".
    pub async fn logout(&self, _token: &str) -> Result<()> {
        Err(Error::Internal("logout is not built yet".into()))
    }

    /// logind ended the session `id`: every live token bound to it dies ("logout"). Returns how
    /// many did.
    pub async fn logout_login_session(&self, _id: &str) -> Result<usize> {
        Err(Error::Internal(
            "login-session logout is not built yet".into(),
        ))
    }
}

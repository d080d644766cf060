//! Login sessions (logind's): binding a token to one at PAM `open_session`, verify-once reuse of
//! that token for `sudo` and polkit, logout, and what a device removal does to its sessions.
//!
//! logind is the daemon's to ask; the core gets its answers as [`LoginSession`]s and decides.

use std::time::Duration;

use zeroize::Zeroizing;

use super::tokens::{self, Carried, Grant};
use super::{Caller, Event, Service};
use crate::token::Claims;
use crate::{Error, Result};

/// The longest logind session id accepted (logind's are short: "2", "c1").
pub const MAX_SESSION_ID_LEN: usize = 64;

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
        caller: Caller,
        token: &str,
        session: LoginSession,
    ) -> Result<Zeroizing<String>> {
        if !caller.is_root() {
            return Err(Error::AccessDenied(
                "only an administrator may bind a token to a login session".into(),
            ));
        }
        check_session_id(&session.id)?;
        if let Some(seat) = &session.seat {
            check_session_id(seat)?;
        }
        let (entry, claims) = tokens::lookup(self, token)?;
        let account = self.inner.accounts.by_name(entry.user()).await?;
        if session.uid != account.uid {
            return Err(Error::NoLoginSession(format!(
                "login session {} is not {}'s",
                session.id,
                entry.user()
            )));
        }
        self.confirmed(entry.device_session()).await?;
        let now = self.inner.clock.unix_secs();
        tokens::check_live(self, &entry, now)?;
        let rules = self.rules_for(&account).await?;
        // As a refresh: held until the new token is recorded, so a removal cannot slip in between.
        let _device = self.lock_open_session(entry.device_session()).await?;
        let enrollment = self
            .inner
            .store
            .enrollment(&claims.enr)?
            .ok_or(Error::TokenInvalid)?;
        let user_lock = self.user_lock(entry.user());
        let _serial = user_lock.lock().await;
        let Some(ticket) = entry.begin_end("bound") else {
            return Err(tokens::revoked_error(&entry));
        };
        let grant = Grant {
            user: entry.user(),
            enrollment: &enrollment,
            session_id: entry.device_session(),
            amr: claims.amr.clone(),
            auth_time: entry.auth_time(),
            carried: Some(Carried {
                aud: claims.aud.clone(),
                exp: Some(entry.exp()),
                login: Some((session.id.clone(), session.seat.clone())),
            }),
        };
        let result = match tokens::prepare(self, grant, &rules).await {
            Ok(prepared) => {
                let replaces = Some((&entry, ticket, "bound"));
                tokens::record_locked(self, prepared, &rules, replaces, false).await
            }
            Err(e) => Err(e),
        };
        // Settled by `record_locked` when its batch ran; a failure before it leaves the token live.
        self.inner.tokens.settle(&entry, ticket, false);
        if result.is_ok() {
            tracing::info!(user = %entry.user(), login_session = %session.id, "token bound");
        }
        result
    }

    /// Verify once: the claims of the newest live token of `user` bound to `session` (the
    /// caller's own, as logind found it by the caller's pid) that the reuse rules accept.
    /// Root or `user` itself only; [`Error::NoLoginSession`] when none fits.
    pub async fn reuse_session(
        &self,
        caller: Caller,
        user: &str,
        session: LoginSession,
        query: ReuseQuery,
    ) -> Result<Claims> {
        let account = self.resolve_user(caller, user).await?;
        let rules = self.config().reuse_rules_for(query.service.as_deref());
        if !rules.reuse {
            return Err(Error::AccessDenied(format!(
                "session reuse is off for PAM service {}",
                query.service.as_deref().unwrap_or("(unnamed)")
            )));
        }
        if session.uid != account.uid {
            return Err(Error::NoLoginSession(format!(
                "login session {} is not {}'s",
                session.id, account.name
            )));
        }
        let max_age = query
            .max_age
            .map_or(rules.max_age, |s| rules.max_age.min(Duration::from_secs(s)))
            .as_secs();
        let mut candidates: Vec<_> = self
            .inner
            .tokens
            .of_login_session(&session.id)
            .into_iter()
            .filter(|e| e.user() == account.name)
            .collect();
        // Newest first: the token PAM bound last is the one the user's session holds.
        candidates.sort_by_key(|e| std::cmp::Reverse((e.auth_time(), e.iat())));
        let mut why = format!(
            "no live token of {} is bound to login session {}",
            account.name, session.id
        );
        for entry in candidates {
            if entry.single_use {
                why = "the session's token is single-use".into();
                continue;
            }
            if let Err(e) = self.confirmed(entry.device_session()).await {
                why = format!("the session's token: {e}");
                continue;
            }
            let now = self.inner.clock.unix_secs();
            if let Err(e) = tokens::check_live(self, &entry, now) {
                why = format!("the session's token: {e}");
                continue;
            }
            let age = now.saturating_sub(entry.auth_time());
            if age > max_age {
                why = format!(
                    "the session's device authentication is {age}s old, more than the {max_age}s allowed"
                );
                continue;
            }
            let Some(claims) = entry.claims() else {
                // Restored after a restart and not validated since: the claims it carries
                // beyond its row are unknown until its holder shows it once.
                why = "the session's token has not been shown since the daemon started".into();
                continue;
            };
            tokens::touch(self, &entry, now);
            return Ok(claims);
        }
        Err(Error::NoLoginSession(why))
    }

    /// Logout (PAM `close_session`): the token dies with reason "logout".
    pub async fn logout(&self, token: &str) -> Result<()> {
        tokens::revoke(self, token, "logout").await
    }

    /// logind ended the session `id`: every live token bound to it dies ("logout"). Returns how
    /// many did.
    pub async fn logout_login_session(&self, id: &str) -> Result<usize> {
        let mut users: Vec<String> = self
            .inner
            .tokens
            .of_login_session(id)
            .iter()
            .map(|e| e.user().to_owned())
            .collect();
        users.sort();
        users.dedup();
        let mut ended = 0;
        for user in users {
            ended +=
                tokens::revoke_user_where(self, &user, "logout", |e| e.login_session() == Some(id))
                    .await?;
        }
        Ok(ended)
    }

    /// Announces, for each `(login session, user)` that live tokens of a removed device session
    /// were bound to, what the user's `[session] on_removal` says to do (nothing for "none").
    /// Called as the device leaves, right after its tokens are revoked in memory.
    pub(super) async fn announce_login_sessions_removed(&self, bound: Vec<(String, String)>) {
        if bound.is_empty() {
            return;
        }
        let config = self.config();
        for (login_session, user) in bound {
            let action = if config.session.groups.is_empty() {
                config.on_removal_for(&user, &[])
            } else {
                match self.inner.accounts.by_name(&user).await {
                    Ok(account) => match self.inner.accounts.groups(&account).await {
                        Ok(groups) => config.on_removal_for(&user, &groups),
                        Err(e) => {
                            // Fail towards the strictest rule any group could have set.
                            tracing::warn!(%user, "groups for on_removal: {e}");
                            strictest_any(&config)
                        }
                    },
                    Err(e) => {
                        tracing::warn!(%user, "account for on_removal: {e}");
                        strictest_any(&config)
                    }
                }
            };
            if action == crate::policy::config::OnRemoval::None {
                continue;
            }
            self.publish(Event::LoginSessionDeviceRemoved {
                login_session,
                user,
                action,
            });
        }
    }
}

/// The strictest `on_removal` the configuration names anywhere for groups or globally (used when
/// the user's groups cannot be looked up).
fn strictest_any(config: &crate::policy::config::Config) -> crate::policy::config::OnRemoval {
    config
        .session
        .groups
        .values()
        .copied()
        .chain(std::iter::once(config.session.on_removal))
        .max()
        .unwrap_or_default()
}

/// A logind session id or seat name: 1 to [`MAX_SESSION_ID_LEN`] bytes of `[A-Za-z0-9._-]`.
fn check_session_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(MAX_SESSION_ID_LEN).collect();
        Err(Error::InvalidArgument(format!(
            "not a login session id or seat: {shown:?}"
        )))
    }
}

//! The Tessera service: devices, enrollment, challenge-response, token issue, validation and
//! revocation, with no D-Bus types. The daemon wraps it in its bus interface; tests drive it in-process
//! with simulated cards.
//!
//! Consistency rules:
//! - Every change that decides whether a token is valid is durable in the [`Store`] before the call
//!   that caused it returns.
//! - A token is issued only while the card insertion (device session) that produced it is open; the
//!   store refuses the token row otherwise, so a card pulled mid-way can never leave a live token.
//! - The in-memory token index mirrors the store; validation reads only the index (a SHA-256 and a
//!   hash-map look-up), signature verification is needed only for tokens the index does not know.
//!
//! Each file owns one part of the service's state and the operations on it: `token_index` (the
//! index of issued tokens), `tokens` (issuing a token and its lifecycle: validation, single use,
//! refresh, revocation), `refresh_limit`, `devices` (the device registry and device sessions),
//! `lockout` (failed authentications), `key_upkeep` (signing-key rotation and retirement),
//! `user_locks` (one issue at a time per user), `events` (what listeners are told). The operations
//! that use several of them are `authenticate`, `enroll` and `enrollments`; this file holds the
//! service's construction and public API, which delegates to them.

mod authenticate;
mod device_attach;
mod devices;
mod enroll;
mod enrollments;
mod events;
mod find_device;
mod greeter;
mod key_upkeep;
mod lockout;
mod login_session;
mod pin_guard;
mod refresh_limit;
mod request_interaction;
mod requests;
mod requirements;
mod select_device;
mod sign_count;
mod token_index;
mod tokens;
mod unblock;
mod user_locks;

#[cfg(test)]
mod fido_test;
#[cfg(test)]
mod greeter_test;
#[cfg(test)]
mod login_session_test;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::locks::{read, write};
use crate::policy::config::{Config, FidoRules, TokenPolicy};
use crate::policy::users::{Account, AccountCache};
use crate::secret::Secret;
use crate::store::state_dir::StateDir;
use crate::store::{Store, WriteOp};
use crate::token::keys::KeyRing;
use crate::{Error, Result};

pub use crate::authenticator::{Progress, SecretPrompt};
pub use devices::{DeviceAttach, DeviceInfo, HidAttach};
pub use enrollments::{EnrollmentInfo, UNENROLLED};
pub use events::Event;
pub use login_session::{LoginSession, ReuseQuery, MAX_SESSION_ID_LEN};
pub use requests::{
    AuthRequest, EnrollRequest, Request, RequestHandle, UnblockRequest, Update,
    MAX_LIVE_REQUESTS_PER_CALLER,
};
pub use requirements::TokenRequirements;
pub use sign_count::CLONED;
pub use token_index::TokenIndex;

/// A live token as ListSessions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Token id.
    pub jti: String,
    /// Owner.
    pub user: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// When the device was used to authenticate (refreshes keep it).
    pub auth_time: u64,
    /// Last validation or refresh (the issue time if none).
    pub last_used: u64,
    /// Consumed by its first validation.
    pub single_use: bool,
    /// Reader of the device (empty if it is gone).
    pub reader: String,
    /// Device session id.
    pub sid: String,
}

/// Who is calling: the uid the bus (not the message) vouches for, and whether the caller may act
/// as an administrator for this one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Unix uid of the calling process.
    pub uid: u32,
    /// Root, or a caller that polkit authorised for the administrative action of this call
    /// (`org.tessera.Tessera1.manage` or `...authenticate-other-user`): acts for any account.
    pub admin: bool,
}

impl Caller {
    /// A caller with the rights of its uid alone: root is an administrator, everyone else acts
    /// for their own account.
    pub const fn uid(uid: u32) -> Caller {
        Caller {
            uid,
            admin: uid == 0,
        }
    }

    /// A caller that may act for any account: root, or authorised by polkit for this call.
    pub fn is_root(self) -> bool {
        self.uid == 0 || self.admin
    }
}

/// The longest audience a caller may ask for.
pub const MAX_AUDIENCE_LEN: usize = 128;

/// A requested `aud`: 1 to [`MAX_AUDIENCE_LEN`] bytes of printable ASCII.
fn check_audience(aud: &str) -> Result<()> {
    if aud.is_empty()
        || aud.len() > MAX_AUDIENCE_LEN
        || !aud.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(Error::InvalidArgument(format!(
            "an audience is 1 to {MAX_AUDIENCE_LEN} bytes of printable ASCII"
        )));
    }
    Ok(())
}

/// Options of [`Service::enroll`].
#[derive(Debug, Default)]
pub struct EnrollOptions {
    /// The device's PIN (required: enrollment always proves the user knows it).
    pub pin: Option<Secret>,
    /// The credential enrolled (PIV: slot "9a", the default, or "9e").
    pub credential: Option<String>,
}

/// Options of [`Service::authenticate`].
#[derive(Debug, Default)]
pub struct AuthOptions {
    /// The device's PIN, when the enrolled credential needs one.
    pub pin: Option<Secret>,
    /// A device id to use instead of the first present device enrolled for the user.
    pub device: Option<String>,
}

/// What the service is built from; tests pass a manual clock and a temporary state directory.
pub struct ServiceParts {
    /// Source of time for token lifetimes.
    pub clock: Arc<dyn Clock>,
    /// The administrator's configuration.
    pub config: Config,
    /// Directory for the database and signing keys (created owner-only if missing, locked while the
    /// service lives).
    pub state_dir: PathBuf,
}

/// The service. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    config: RwLock<Arc<Config>>,
    store: Store,
    state_dir: PathBuf,
    /// Held for the service's lifetime: no second daemon opens this state.
    _state_lock: StateDir,
    /// The signing keys: the active one and the previous ones some token may still need.
    keys: RwLock<KeyRing>,
    /// When the keys next need upkeep (rotation, retirement, a missing metadata row).
    key_upkeep: key_upkeep::KeyUpkeep,
    issuer: String,
    devices: Mutex<devices::Devices>,
    /// Some device session from before this start is not yet confirmed or ended.
    any_unconfirmed: std::sync::atomic::AtomicBool,
    /// Set once the device source's first scan has been handled.
    scanned: tokio::sync::watch::Sender<bool>,
    tokens: TokenIndex,
    /// Which tokens came from a refresh (the refresh rate limit).
    refreshed: refresh_limit::RefreshedTokens,
    /// Account and group look-ups, off the runtime and briefly cached.
    accounts: AccountCache,
    /// One issue at a time per user (the live-token limit).
    user_locks: user_locks::UserLocks,
    /// Recent failed authentications per user, and lockouts.
    lockout: lockout::Lockout,
    /// Where events go to every listener ([`Service::subscribe`]).
    events: broadcast::Sender<Event>,
    /// Live requests.
    requests: Arc<requests::Registry>,
}

impl Service {
    /// Opens the state directory (database, signing keys), loads the live tokens and open device
    /// sessions. Device sessions stay unconfirmed until the device source reports its first scan
    /// ([`Service::enumeration_complete`]).
    pub fn open(parts: ServiceParts) -> Result<Service> {
        let state_lock = StateDir::open(&parts.state_dir)?;
        let now = parts.clock.unix_secs();
        let store = Store::open(&parts.state_dir.join("tessera.db"))?;
        let keys = KeyRing::load_or_create(&parts.state_dir, now)?;
        key_upkeep::record_keys(&store, &keys, now)?;
        store.apply_blocking(vec![WriteOp::PruneExpired { now }])?;
        let index = TokenIndex::load(&store)?;
        let pending = store.open_device_sessions()?;
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        Ok(Service {
            inner: Arc::new(Inner {
                clock: parts.clock,
                config: RwLock::new(Arc::new(parts.config)),
                store,
                state_dir: parts.state_dir,
                _state_lock: state_lock,
                keys: RwLock::new(keys),
                key_upkeep: key_upkeep::KeyUpkeep::default(),
                issuer: format!("tessera:{host}"),
                any_unconfirmed: std::sync::atomic::AtomicBool::new(!pending.is_empty()),
                scanned: tokio::sync::watch::Sender::new(false),
                devices: Mutex::new(devices::Devices::new(pending)),
                tokens: index,
                refreshed: refresh_limit::RefreshedTokens::default(),
                accounts: AccountCache::default(),
                user_locks: user_locks::UserLocks::default(),
                lockout: lockout::Lockout::default(),
                events: events::channel(),
                requests: Arc::default(),
            }),
        })
    }

    /// Subscribes to device and token events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        read(&self.inner.config).clone()
    }

    /// Replaces the configuration (SIGHUP, ReloadConfig). Tokens already issued keep the rules they
    /// were issued under; new tokens follow the new ones.
    pub fn reload(&self, config: Config) {
        *write(&self.inner.config) = Arc::new(config);
        self.inner.key_upkeep.check_soon();
        tracing::info!("configuration reloaded");
    }

    /// The public signing keys as an RFC 7517 JWK Set: the active key and every previous key some
    /// unexpired token was signed with.
    pub async fn jwks(&self) -> Result<String> {
        self.maintain_keys(self.inner.clock.unix_secs()).await?;
        Ok(read(&self.inner.keys).jwks_json())
    }

    /// Starts signing with a new key now (root only). The previous key stays in the JWKS, and its
    /// tokens stay valid, until every token it signed has expired.
    pub async fn rotate_key(&self, caller: Caller) -> Result<String> {
        if !caller.is_root() {
            return Err(Error::AccessDenied(
                "only root may rotate the signing key".into(),
            ));
        }
        self.rotate_on_request(self.inner.clock.unix_secs()).await
    }

    /// The issuer (`iss`) of this daemon's tokens.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Enrolls the credential `opts.credential` of device `device_id` for `user` ("" = the
    /// caller), after checking the PIN and that the device holds the credential's private key.
    /// Returns the enrollment id; enrolling the same key for the same user again returns the
    /// existing id. A non-interactive [`Service::start_enrollment`] awaited to its outcome.
    pub async fn enroll(
        &self,
        caller: Caller,
        user: &str,
        device_id: &str,
        opts: EnrollOptions,
    ) -> Result<String> {
        let account = self.resolve_user(caller, user).await?;
        let r = EnrollRequest {
            pin: opts.pin,
            credential: opts.credential,
            timeout: None,
        };
        let request = enroll::start(self, caller, account, device_id, r, false).await?;
        Ok(request.outcome().await?.to_string())
    }

    /// Authenticates `user` ("" = the caller) with a present enrolled device and issues a token.
    /// A non-interactive [`Service::start_authentication`] (no waiting, no prompts) awaited to its
    /// outcome.
    pub async fn authenticate(
        &self,
        caller: Caller,
        user: &str,
        opts: AuthOptions,
    ) -> Result<Zeroizing<String>> {
        let account = self.resolve_user(caller, user).await?;
        let r = AuthRequest {
            device: opts.device,
            kinds: None,
            pin: opts.pin,
            wait: false,
            ..AuthRequest::default()
        };
        authenticate::start(self, caller, account, r, false)
            .await?
            .outcome()
            .await
    }

    /// Starts authenticating `user` ("" = the caller). Errors known at once (the account, access,
    /// no enrollment at all, a lockout, [`MAX_LIVE_REQUESTS_PER_CALLER`]) are returned here; all
    /// later ones arrive as [`Update::Failed`].
    pub async fn start_authentication(
        &self,
        caller: Caller,
        user: &str,
        r: AuthRequest,
    ) -> Result<Request> {
        if let Some(aud) = &r.audience {
            check_audience(aud)?;
        }
        if r.any_user {
            if !user.is_empty() {
                return Err(Error::InvalidArgument(
                    "any_user authenticates whoever the device is enrolled for: name no user"
                        .into(),
                ));
            }
            return greeter::start(self, caller, r, true).await;
        }
        let account = self.resolve_user(caller, user).await?;
        authenticate::start(self, caller, account, r, true).await
    }

    /// Starts enrolling a credential of device `device_id` for `user` ("" = the caller).
    pub async fn start_enrollment(
        &self,
        caller: Caller,
        user: &str,
        device_id: &str,
        r: EnrollRequest,
    ) -> Result<Request> {
        let account = self.resolve_user(caller, user).await?;
        enroll::start(self, caller, account, device_id, r, true).await
    }

    /// Starts unblocking the PIN of device `device_id` with its unblocking secret (PIV: PUK).
    pub async fn start_unblock(
        &self,
        caller: Caller,
        device_id: &str,
        r: UnblockRequest,
    ) -> Result<Request> {
        unblock::start(self, caller, device_id, r, true).await
    }

    /// Checks a token; returns its claims when it is valid now. A single-use token is consumed by
    /// the first successful validation.
    pub async fn validate(&self, token: &str) -> Result<crate::token::Claims> {
        tokens::check(self, token, &TokenRequirements::default()).await
    }

    /// [`Service::validate`] for a relying service that also states what it requires: its own
    /// audience, a maximum age of the authentication, authentication methods. A token that fails a
    /// requirement is refused and, if single-use, not consumed.
    pub async fn check(
        &self,
        token: &str,
        required: &TokenRequirements,
    ) -> Result<crate::token::Claims> {
        tokens::check(self, token, required).await
    }

    /// A new token for the session of a live `token`, while its device is present and the session is
    /// within `max_lifetime`; the old token is revoked ("refreshed"). Only the token's owner or root
    /// may refresh it, and a token that came from a refresh only after `min_refresh_interval`.
    pub async fn refresh(&self, caller: Caller, token: &str) -> Result<Zeroizing<String>> {
        tokens::refresh(self, caller, token).await
    }

    /// The live tokens of `user` ("" = the caller), oldest first.
    pub async fn sessions(&self, caller: Caller, user: &str) -> Result<Vec<SessionInfo>> {
        let account = self.resolve_user(caller, user).await?;
        let now = self.inner.clock.unix_secs();
        let readers = self.session_readers();
        Ok(self
            .inner
            .tokens
            .of_user(&account.name)
            .into_iter()
            .filter(|e| e.is_live_at(now))
            .map(|e| SessionInfo {
                jti: e.jti(),
                user: e.user().to_owned(),
                iat: e.iat(),
                exp: e.exp(),
                auth_time: e.auth_time(),
                last_used: e.last_used(),
                single_use: e.single_use,
                reader: readers.get(e.device_session()).cloned().unwrap_or_default(),
                sid: e.device_session().to_owned(),
            })
            .collect())
    }

    /// Revokes every live token of `user` ("" = the caller): reason "logout" for the user's own
    /// sessions, "admin" when root ends someone else's. Returns how many were revoked.
    pub async fn revoke_sessions(&self, caller: Caller, user: &str) -> Result<usize> {
        let account = self.resolve_user(caller, user).await?;
        let reason = if caller.uid == account.uid {
            "logout"
        } else {
            "admin"
        };
        tokens::revoke_user(self, &account.name, reason).await
    }

    /// The enrollments of `user` ("" = the caller; others' need root), by id. Root may name an
    /// account that no longer exists.
    pub async fn enrollments(&self, caller: Caller, user: &str) -> Result<Vec<EnrollmentInfo>> {
        enrollments::list(self, caller, user).await
    }

    /// Removes an enrollment (the caller's own, or any as root); its live tokens are revoked with
    /// reason "unenrolled". A lost card stops working this way.
    pub async fn remove_enrollment(&self, caller: Caller, id: &str) -> Result<()> {
        enrollments::remove(self, caller, id).await
    }

    /// Every rule that applies to `user` ("" = the caller) after overrides, each with where it came
    /// from (see [`crate::policy::config::Config::explain_policy`]).
    pub async fn explain_policy(
        &self,
        caller: Caller,
        user: &str,
    ) -> Result<Vec<crate::policy::config::PolicyItem>> {
        let account = self.resolve_user(caller, user).await?;
        let groups = self.inner.accounts.groups(&account).await?;
        Ok(self.config().explain_policy(&account.name, &groups))
    }

    /// Revokes a token (logout). Revoking a token that is already revoked is not an error.
    pub async fn revoke(&self, token: &str) -> Result<()> {
        tokens::revoke(self, token, "logout").await
    }

    /// The account `user` names, if `caller` may act for it ("" names the caller's own account).
    ///
    /// A non-root caller may only name their own account, which is found by their uid: any other
    /// name is refused without looking it up, so nobody but root can make the daemon query NSS
    /// (perhaps LDAP) for arbitrary names, or learn from the answer which accounts exist.
    async fn resolve_user(&self, caller: Caller, user: &str) -> Result<Account> {
        let accounts = &self.inner.accounts;
        if caller.is_root() {
            return if user.is_empty() {
                accounts.by_uid(caller.uid).await
            } else {
                accounts.by_name(user).await
            };
        }
        let own = accounts.by_uid(caller.uid).await?;
        if !user.is_empty() && user != own.name {
            let shown: String = user.chars().take(64).collect();
            return Err(Error::AccessDenied(format!(
                "uid {} may not act for {shown}",
                caller.uid
            )));
        }
        Ok(own)
    }

    /// The token rules for `account` under the configuration in force.
    async fn rules_for(&self, account: &Account) -> Result<TokenPolicy> {
        let config = self.config();
        // Group look-ups read /etc/group (or ask NSS, which may be LDAP): only when a group rule exists.
        let groups: Arc<[String]> = if config.groups.is_empty() {
            Arc::from(Vec::new())
        } else {
            self.inner.accounts.groups(account).await?
        };
        Ok(config.token_policy_for(&account.name, &groups))
    }

    /// The FIDO rules for `account` under the configuration in force.
    async fn fido_rules_for(&self, account: &Account) -> Result<FidoRules> {
        let config = self.config();
        // As for the token rules: groups are looked up only when a group rule exists.
        let groups: Arc<[String]> = if config.fido_has_group_rules() {
            self.inner.accounts.groups(account).await?
        } else {
            Arc::from(Vec::new())
        };
        Ok(config.fido_rules_for(&account.name, &groups))
    }

    /// Whether `account` may enroll a PIN-less (9E) key under the configuration in force.
    fn allow_pinless(&self, account: &Account) -> Result<bool> {
        let config = self.config();
        let groups = if config.piv.groups_allow_pinless.is_empty() {
            Vec::new()
        } else {
            account.groups()?
        };
        Ok(config.allow_pinless_for(&account.name, &groups))
    }

    fn user_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.user_locks.of(user)
    }
}

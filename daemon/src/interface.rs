//! The D-Bus interfaces (contract version 1): thin types that check the caller and the arguments,
//! then delegate to [`tessera::service::Service`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use tessera::locks::lock;
use tessera::policy::config::Config;
use tessera::service::{
    AuthOptions, Caller, DeviceInfo, EnrollOptions, EnrollmentInfo, Service, SessionInfo,
    TokenRequirements,
};
use tessera::store::DeviceKind;
use tessera::token::Claims;
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::{BusName, OwnedUniqueName};
use zbus::object_server::{ResponseDispatchNotifier, SignalEmitter};
use zbus::zvariant::{as_value, ObjectPath, OwnedObjectPath, OwnedValue, Signature, Type, Value};
use zbus::{interface, Connection};

use zeroize::Zeroizing;

use crate::announce::Announce;
use crate::errors::BusError;
use crate::limits;
use crate::polkit::{self, Action};
use crate::requests::{self, Requests};
use crate::DEVICES_PATH;

/// `org.tessera.Tessera1.Manager`.
pub struct Manager {
    service: Service,
    callers: CallerCache,
    config_path: Option<PathBuf>,
    requests: Requests,
}

impl Manager {
    /// The interface over `service`; `config_path` is the file ReloadConfig reads (None: defaults);
    /// the Start* methods put their requests in `requests`.
    pub fn new(service: Service, config_path: Option<PathBuf>, requests: Requests) -> Self {
        Manager {
            service,
            callers: CallerCache::default(),
            config_path,
            requests,
        }
    }
}

/// Reads the configuration again and puts it in force; a bad file changes nothing.
pub fn reload_config(service: &Service, path: Option<&Path>) -> Result<(), tessera::Error> {
    let config = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    service.reload(config);
    Ok(())
}

#[interface(name = "org.tessera.Tessera1.Manager")]
impl Manager {
    /// Enroll(s user, o device, a{sv} options) -> (s enrollment_id). Options: "pin" (s),
    /// "credential" (s: PIV "9a", the default, or "9e"; FIDO "new", the default, a fresh
    /// credential), "slot" (s: the same, v1's name).
    async fn enroll(
        &self,
        user: &str,
        device: ObjectPath<'_>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, BusError> {
        limits::user(user)?;
        limits::options(&options, &["pin", "credential", "slot"])?;
        let caller = self.authorize(conn, &header, Needs::enroll(user)).await?;
        let mut opts = EnrollOptions::default();
        for (key, value) in options {
            match key.as_str() {
                "pin" => opts.pin = Some(secret_option(&key, &value)?),
                "credential" | "slot" => {
                    opts.credential = Some(string_option(&key, &value)?.as_str().to_owned())
                }
                other => return Err(unknown_option(other)),
            }
        }
        let id = device_id_of(&device)?;
        let enrollment = self.service.enroll(caller, user, id, opts).await?;
        crate::announce::enrollment_added(conn, enrollment.clone(), account_name(user, caller));
        Ok(enrollment)
    }

    /// Authenticate(s user, a{sv} options) -> (s token). Options: "pin" (s), "device" (o).
    async fn authenticate(
        &self,
        user: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<SecretString, BusError> {
        limits::user(user)?;
        limits::options(&options, &["pin", "device"])?;
        let caller = self
            .authorize(conn, &header, Needs::authenticate(user))
            .await?;
        let mut opts = AuthOptions::default();
        for (key, value) in options {
            match key.as_str() {
                "pin" => opts.pin = Some(secret_option(&key, &value)?),
                "device" => {
                    let path = ObjectPath::try_from(&*value).map_err(|_| {
                        BusError::InvalidArgument("option \"device\" must be an object path".into())
                    })?;
                    opts.device = Some(device_id_of(&path)?.to_owned());
                }
                other => return Err(unknown_option(other)),
            }
        }
        let token = self.service.authenticate(caller, user, opts).await?;
        crate::announce::token_issued(conn, &token);
        Ok(SecretString(token))
    }

    /// StartAuthentication(s user, a{sv} options) -> (o request): an interactive authentication,
    /// followed through the Request object. Options: "device" (o), "kinds" (as), "pin" (s), "wait"
    /// (b, default true), "timeout" (u seconds for the whole request), "audience" (s, the token's
    /// `aud`), "any_user" (b: greeter login with user "", administrators only).
    async fn start_authentication(
        &self,
        user: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ResponseDispatchNotifier<OwnedObjectPath>, BusError> {
        limits::user(user)?;
        let request = requests::options::auth_request(&options)?;
        if request.any_user && !user.is_empty() {
            return Err(BusError::InvalidArgument(
                "option \"any_user\" is for a request that names no user (user \"\")".into(),
            ));
        }
        let needs = if request.any_user {
            Needs::Always(Action::AuthenticateOtherUser)
        } else {
            Needs::authenticate(user)
        };
        let (caller, owner) = self.owner(conn, &header, needs).await?;
        let started = self
            .service
            .start_authentication(caller, user, request)
            .await?;
        self.requests
            .publish(conn, owner, started, Announce::Token)
            .await
    }

    /// StartEnrollment(s user, o device, a{sv} options) -> (o request). Options: "pin" (s),
    /// "credential" (s, as Enroll), "slot" (s, v1's name for it), "timeout" (u).
    async fn start_enrollment(
        &self,
        user: &str,
        device: ObjectPath<'_>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ResponseDispatchNotifier<OwnedObjectPath>, BusError> {
        limits::user(user)?;
        let request = requests::options::enroll_request(&options)?;
        let device = device_id_of(&device)?;
        let (caller, owner) = self.owner(conn, &header, Needs::enroll(user)).await?;
        let started = self
            .service
            .start_enrollment(caller, user, device, request)
            .await?;
        let account = Announce::Enrollment(account_name(user, caller));
        self.requests.publish(conn, owner, started, account).await
    }

    /// StartUnblock(o device, a{sv} options) -> (o request): RESET RETRY COUNTER with the PUK and a
    /// new PIN, asked through "puk-needed" and "new-pin-needed" unless given. Options: "puk" (s),
    /// "new_pin" (s), "timeout" (u).
    async fn start_unblock(
        &self,
        device: ObjectPath<'_>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ResponseDispatchNotifier<OwnedObjectPath>, BusError> {
        let request = requests::options::unblock_request(&options)?;
        let device = device_id_of(&device)?;
        let (caller, owner) = self.owner(conn, &header, Needs::UidRights).await?;
        let started = self.service.start_unblock(caller, device, request).await?;
        self.requests
            .publish(conn, owner, started, Announce::Nothing)
            .await
    }

    /// ValidateToken(s token) -> (a{sv} claims).
    async fn validate_token(&self, token: &str) -> Result<ClaimsDict, BusError> {
        limits::token(token)?;
        Ok(ClaimsDict::from(self.service.validate(token).await?))
    }

    /// CheckToken(s token, a{sv} requirements) -> (a{sv} claims): ValidateToken for a relying
    /// service that states its audience ("audience", s), the oldest authentication it accepts in
    /// seconds ("max_age", u) and the methods it needs ("amr", as).
    async fn check_token(
        &self,
        token: &str,
        requirements: HashMap<String, OwnedValue>,
    ) -> Result<ClaimsDict, BusError> {
        limits::token(token)?;
        limits::options(&requirements, &["audience", "max_age", "amr"])?;
        let required = token_requirements(&requirements)?;
        Ok(ClaimsDict::from(
            self.service.check(token, &required).await?,
        ))
    }

    /// RevokeToken(s token).
    async fn revoke_token(&self, token: &str) -> Result<(), BusError> {
        limits::token(token)?;
        Ok(self.service.revoke(token).await?)
    }

    /// RefreshToken(s token) -> (s token): a new token for the same session; the old one dies.
    /// The token's owner or root only.
    async fn refresh_token(
        &self,
        token: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<SecretString, BusError> {
        limits::token(token)?;
        let caller = self.callers.caller(conn, &header).await?;
        let token = self.service.refresh(caller, token).await?;
        crate::announce::token_issued(conn, &token);
        Ok(SecretString(token))
    }

    /// ListSessions(s user) -> (aa{sv}): the user's live tokens (own account, or root or polkit's
    /// manage).
    async fn list_sessions(
        &self,
        user: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<HashMap<String, OwnedValue>>, BusError> {
        limits::user(user)?;
        let caller = self.authorize(conn, &header, Needs::manage(user)).await?;
        let sessions = self.service.sessions(caller, user).await?;
        sessions.iter().map(session_dict).collect()
    }

    /// RevokeSessions(s user): ends every live token of the user (own account, or root or polkit's
    /// manage).
    async fn revoke_sessions(
        &self,
        user: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BusError> {
        limits::user(user)?;
        let caller = self.authorize(conn, &header, Needs::manage(user)).await?;
        self.service.revoke_sessions(caller, user).await?;
        Ok(())
    }

    /// RotateKey(): sign new tokens with a new key now (root, or polkit's manage).
    async fn rotate_key(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BusError> {
        let caller = self
            .authorize(conn, &header, Needs::Always(Action::Manage))
            .await?;
        self.service.rotate_key(caller).await?;
        Ok(())
    }

    /// ReloadConfig(): read the configuration file again (root, or polkit's manage). A bad file
    /// keeps the old policy and the error says why.
    async fn reload_config(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BusError> {
        let caller = self
            .authorize(conn, &header, Needs::Always(Action::Manage))
            .await?;
        if !caller.is_root() {
            return Err(BusError::AccessDenied(
                "only root, or a caller polkit authorises for org.tessera.Tessera1.manage, may \
                 reload the configuration"
                    .into(),
            ));
        }
        reload_config(&self.service, self.config_path.as_deref()).map_err(|e| {
            tracing::warn!("configuration not reloaded: {e}");
            BusError::from(e)
        })
    }

    /// EffectivePolicy(s user) -> (a(sss)): every rule that applies to the user as (key, value,
    /// source): the `[token]` keys by their bare names ("lifetime"), then `piv.allow_pinless`, the
    /// `fido.*` keys, `pam.reuse`, `pam.max_age`, both keys of each `[pam.services.NAME]`
    /// (`pam.services.sudo.max_age`) and `session.on_removal`, each as resolved for the user.
    /// The source names the table ("[token]", "[groups.wheel.session]", "[pam.services.sudo]") or
    /// is "default". Contract v1: later versions may add rows (clients ignore keys they do not
    /// know) but never change the signature, a key's meaning or the source format.
    async fn effective_policy(
        &self,
        user: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, String, String)>, BusError> {
        limits::user(user)?;
        let caller = self.authorize(conn, &header, Needs::manage(user)).await?;
        Ok(self
            .service
            .explain_policy(caller, user)
            .await?
            .into_iter()
            .map(|i| (i.key.to_owned(), i.value, i.source.to_string()))
            .collect())
    }

    /// ListEnrollments(s user) -> (aa{sv}): the user's enrolled keys (own account, or root or
    /// polkit's manage, who may name an account that no longer exists). Keys: id, user, kind
    /// ("piv" or "fido"), credential (the PIV slot, e.g. "9a"; a FIDO credential id, base64url),
    /// algorithm ("es256" or "eddsa"), slot (the credential of a PIV enrollment, "" for other
    /// kinds), device_name (s), card_guid (s, hex: the device identity, PIV CHUID GUID or FIDO
    /// AAGUID, "" if none), created, last_used (t, 0 = never).
    async fn list_enrollments(
        &self,
        user: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<HashMap<String, OwnedValue>>, BusError> {
        limits::user(user)?;
        let caller = self.authorize(conn, &header, Needs::manage(user)).await?;
        let enrollments = self.service.enrollments(caller, user).await?;
        enrollments.iter().map(enrollment_dict).collect()
    }

    /// RemoveEnrollment(s enrollment_id): forgets an enrolled key (own enrollments, or root or
    /// polkit's manage); its live tokens are revoked with reason "unenrolled".
    async fn remove_enrollment(
        &self,
        enrollment_id: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BusError> {
        limits::enrollment_id(enrollment_id)?;
        let caller = self.callers.caller(conn, &header).await?;
        match self.service.remove_enrollment(caller, enrollment_id).await {
            // Whose enrollment it is, the core knows: only its refusal of another account's asks
            // polkit, and only an administrator's second attempt can succeed.
            Err(tessera::Error::AccessDenied(why)) if !caller.is_root() => {
                let admin = self
                    .authorize(conn, &header, Needs::Always(Action::Manage))
                    .await?;
                if !admin.is_root() {
                    return Err(BusError::AccessDenied(why));
                }
                Ok(self.service.remove_enrollment(admin, enrollment_id).await?)
            }
            done => Ok(done?),
        }
    }

    /// BindSession(s token, a{sv} options) -> (s token): ties a live token to a logind session
    /// (PAM open_session; administrators only). Options: "session" (s, required). logind says
    /// whose session it is and its seat; the new token carries both ("login_session", "seat"),
    /// keeps the old one's expiry, and the old one dies ("bound").
    async fn bind_session(
        &self,
        token: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<SecretString, BusError> {
        limits::token(token)?;
        let id = requests::options::bind_session(&options)?;
        // Root, or polkit's manage (another user's session); asked before logind is, so an
        // ordinary user cannot make the daemon look sessions up.
        let caller = self
            .authorize(conn, &header, Needs::Always(Action::Manage))
            .await?;
        if !caller.is_root() {
            return Err(BusError::AccessDenied(
                "only an administrator may bind a token to a login session".into(),
            ));
        }
        let facts = crate::logind::session(conn, &id).await?;
        let token = self
            .service
            .bind_session(caller, token, facts.session)
            .await?;
        crate::announce::token_issued(conn, &token);
        Ok(SecretString(token))
    }

    /// ReuseSession(s user, a{sv} options) -> (a{sv} claims): verify once. The claims of a live
    /// token of `user` bound to the caller's own login session, which logind finds from the
    /// caller's pid (never from an argument). Options: "service" (s, the PAM service), "max_age"
    /// (u seconds), "allow_remote" (b: without it a session logind calls Remote is AccessDenied,
    /// so the PAM module need not ask logind itself). Root or `user` itself only;
    /// NoLoginSession when nothing fits.
    async fn reuse_session(
        &self,
        user: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ClaimsDict, BusError> {
        limits::user(user)?;
        let requests::options::ReuseOptions {
            query,
            allow_remote,
        } = requests::options::reuse_options(&options)?;
        let (caller, pid) = self.callers.caller_and_pid(conn, &header).await?;
        let facts = crate::logind::session_of_pid(conn, pid).await?;
        if facts.remote && !allow_remote {
            return Err(BusError::AccessDenied(format!(
                "login session {} is remote (logind); reuse from it needs the PAM module's \
                 allow_remote",
                facts.session.id
            )));
        }
        let claims = self
            .service
            .reuse_session(caller, user, facts.session, query)
            .await?;
        Ok(ClaimsDict::from(claims))
    }

    /// EndSession(s token): logout (PAM close_session); the token dies with reason "logout".
    /// Whoever holds the token may end it.
    async fn end_session(&self, token: &str) -> Result<(), BusError> {
        limits::token(token)?;
        Ok(self.service.logout(token).await?)
    }

    /// The public signing keys as a JWK Set (RFC 7517). Keys come and go lazily (rotation,
    /// retirement), so no change signal is sent: clients must not cache it.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn jwks(&self) -> zbus::fdo::Result<String> {
        self.service
            .jwks()
            .await
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// A token died before its expiry; reasons: "logout", "device-removed", ...
    #[zbus(signal)]
    pub async fn token_revoked(
        emitter: &SignalEmitter<'_>,
        jti: &str,
        user: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A token was issued (Authenticate, RefreshToken): its jti and subject, never the token.
    #[zbus(signal)]
    pub async fn token_issued(
        emitter: &SignalEmitter<'_>,
        jti: &str,
        user: &str,
    ) -> zbus::Result<()>;

    /// An enrollment was made: its id and the enrolled account.
    #[zbus(signal)]
    pub async fn enrollment_added(
        emitter: &SignalEmitter<'_>,
        enrollment_id: &str,
        user: &str,
    ) -> zbus::Result<()>;
}

impl Manager {
    /// The caller's rights and unique name: a request belongs to the connection that started it.
    async fn owner(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        needs: Needs<'_>,
    ) -> Result<(Caller, OwnedUniqueName), BusError> {
        let caller = self.authorize(conn, header, needs).await?;
        Ok((caller, sender_of(header)?))
    }

    /// The caller's rights for a call that `needs` them: root's own, or the uid's own where no
    /// polkit action applies; otherwise what polkit says about the sender ([`polkit::caller_for`]:
    /// the uid rules when polkit is absent, AccessDenied when it refuses). Root never asks polkit.
    async fn authorize(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        needs: Needs<'_>,
    ) -> Result<Caller, BusError> {
        let caller = self.callers.caller(conn, header).await?;
        if caller.is_root() {
            return Ok(caller);
        }
        let action = match needs {
            Needs::UidRights => None,
            Needs::Always(action) => Some(action),
            Needs::Account { user, own, other } => {
                if is_own_account(user, caller.uid).await {
                    own
                } else {
                    Some(other)
                }
            }
        };
        match action {
            None => Ok(caller),
            Some(action) => {
                let sender = sender_of(header)?;
                polkit::caller_for(conn, &sender, caller.uid, action).await
            }
        }
    }
}

/// What a call asks polkit for, beyond the rights of the caller's uid.
#[derive(Debug, Clone, Copy)]
enum Needs<'a> {
    /// Nothing: the uid's rights decide (StartUnblock, RefreshToken).
    UidRights,
    /// `action`, whatever the call names (RotateKey, ReloadConfig, any_user).
    Always(Action),
    /// A call on `user`'s account ("" = the caller's): `own` for the caller's own (None: nothing
    /// to ask), `other` for another account.
    Account {
        user: &'a str,
        own: Option<Action>,
        other: Action,
    },
}

impl<'a> Needs<'a> {
    /// Enroll, StartEnrollment: the enroll action for oneself, manage for anyone else.
    fn enroll(user: &'a str) -> Self {
        Needs::Account {
            user,
            own: Some(Action::Enroll),
            other: Action::Manage,
        }
    }

    /// Authenticate, StartAuthentication: nothing for oneself.
    fn authenticate(user: &'a str) -> Self {
        Needs::Account {
            user,
            own: None,
            other: Action::AuthenticateOtherUser,
        }
    }

    /// Sessions, enrollments, policy: nothing for oneself, manage for anyone else.
    fn manage(user: &'a str) -> Self {
        Needs::Account {
            user,
            own: None,
            other: Action::Manage,
        }
    }
}

/// Whether `user` names the account of `uid` ("" does). Found by uid, as the core does: a name the
/// caller typed is never looked up here. An unknown uid owns no account, so its calls count as
/// "another account" (polkit then decides, or the core refuses). The look-up (NSS, perhaps LDAP)
/// runs off the event loop.
async fn is_own_account(user: &str, uid: u32) -> bool {
    if user.is_empty() {
        return true;
    }
    let own = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
    })
    .await;
    matches!(own, Ok(Ok(Some(own))) if own.name == user)
}

/// The unique name of the call's sender.
fn sender_of(header: &Header<'_>) -> Result<OwnedUniqueName, BusError> {
    let sender = header
        .sender()
        .ok_or_else(|| BusError::AccessDenied("message has no sender".into()))?
        .to_owned();
    Ok(OwnedUniqueName::from(sender))
}

/// `org.tessera.Tessera1.Device`: one present device.
pub struct Device {
    info: DeviceInfo,
}

impl Device {
    /// The object for a present device.
    pub fn new(info: DeviceInfo) -> Self {
        Device { info }
    }
}

#[interface(name = "org.tessera.Tessera1.Device")]
impl Device {
    /// "piv", "fido", or "unknown" (a device that could not be identified).
    #[zbus(property)]
    async fn kind(&self) -> String {
        self.info.kind.clone()
    }
    /// "pcsc" (a contact card reader), "nfc" (contactless, through a PC/SC reader), "hid" (USB
    /// HID) or "sim" (a simulated key's socket in `[device] simulated_hid_dir`).
    #[zbus(property)]
    async fn transport(&self) -> String {
        self.info.transport.clone()
    }
    /// Human-readable name.
    #[zbus(property)]
    async fn name(&self) -> String {
        self.info.name.clone()
    }
    /// Where the device is: the PC/SC reader, the hidraw node or the simulated key's socket path.
    /// A card offering both PIV and FIDO is two devices with the same reader.
    #[zbus(property)]
    async fn reader(&self) -> String {
        self.info.reader.clone()
    }
}

/// What the bus vouches for about each caller, by unique bus name: its uid and the pid of its
/// process, both fixed when the connection was made. A unique name is never reused during a bus's
/// lifetime, so a cached answer stays right; the cache saves a round trip to the bus per call.
/// (The pid's login session is asked of logind every time: that is not fixed.)
#[derive(Default)]
struct CallerCache {
    callers: Mutex<HashMap<OwnedUniqueName, Credentials>>,
}

#[derive(Debug, Clone, Copy)]
struct Credentials {
    uid: u32,
    /// `None` when the bus does not know it (a peer on another kind of transport).
    pid: Option<u32>,
}

/// Bound on remembered callers; past it the cache starts over.
const MAX_CALLERS: usize = 4096;

impl CallerCache {
    async fn caller(&self, conn: &Connection, header: &Header<'_>) -> Result<Caller, BusError> {
        Ok(Caller::uid(self.credentials(conn, header).await?.uid))
    }

    /// The caller and the pid of its process (ReuseSession finds the login session from it).
    async fn caller_and_pid(
        &self,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<(Caller, u32), BusError> {
        let c = self.credentials(conn, header).await?;
        let pid = c.pid.ok_or_else(|| {
            BusError::NoLoginSession("the bus cannot tell the caller's process".into())
        })?;
        Ok((Caller::uid(c.uid), pid))
    }

    /// uid and pid in one `GetConnectionCredentials`, within [`crate::logind::CALL_TIMEOUT`].
    async fn credentials(
        &self,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<Credentials, BusError> {
        let sender = header
            .sender()
            .ok_or_else(|| BusError::AccessDenied("message has no sender".into()))?
            .to_owned();
        let sender = OwnedUniqueName::from(sender);
        if let Some(c) = lock(&self.callers).get(&sender).copied() {
            return Ok(c);
        }
        let dbus = DBusProxy::new(conn).await?;
        let asked = dbus.get_connection_credentials(BusName::Unique(sender.as_ref()));
        let creds = match tokio::time::timeout(crate::logind::CALL_TIMEOUT, asked).await {
            Ok(Ok(creds)) => creds,
            Ok(Err(e)) => {
                return Err(BusError::AccessDenied(format!(
                    "cannot tell the caller's uid: {e}"
                )))
            }
            Err(_) => {
                return Err(BusError::AccessDenied(
                    "the bus did not tell the caller's uid in time".into(),
                ))
            }
        };
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| BusError::AccessDenied("the bus gives no uid for the caller".into()))?;
        let c = Credentials {
            uid,
            pid: creds.process_id(),
        };
        let mut callers = lock(&self.callers);
        if callers.len() >= MAX_CALLERS {
            callers.clear();
        }
        callers.insert(sender, c);
        Ok(c)
    }
}

/// The account a call names: `user`, or the caller's own for "".
fn account_name(user: &str, caller: Caller) -> String {
    if !user.is_empty() {
        return user.to_owned();
    }
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(caller.uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {}", caller.uid),
    }
}

/// A string option's value; zeroized when dropped, since it may be a PIN.
/// A secret option (PIN): held zeroized; its rules are the device's to check.
fn secret_option(key: &str, value: &OwnedValue) -> Result<tessera::Secret, BusError> {
    string_option(key, value).map(tessera::Secret::new)
}

fn string_option(key: &str, value: &OwnedValue) -> Result<Zeroizing<String>, BusError> {
    match &**value {
        Value::Str(s) => Ok(Zeroizing::new(s.as_str().to_owned())),
        _ => Err(BusError::InvalidArgument(format!(
            "option {key:?} must be a string"
        ))),
    }
}

/// The most methods one CheckToken may require (ours issue four at most).
const MAX_REQUIRED_METHODS: usize = 16;

/// CheckToken's requirements, typed; unknown keys and other variant types are InvalidArgument.
fn token_requirements(
    requirements: &HashMap<String, OwnedValue>,
) -> Result<TokenRequirements, BusError> {
    let mut r = TokenRequirements::default();
    for (key, value) in requirements {
        match (key.as_str(), &**value) {
            ("audience", Value::Str(s)) => r.audience = Some(s.as_str().to_owned()),
            ("max_age", Value::U32(n)) => r.max_age = Some(u64::from(*n)),
            ("amr", Value::Array(a))
                if *a.element_signature() == Signature::Str && a.len() <= MAX_REQUIRED_METHODS =>
            {
                for m in a.inner() {
                    if let Value::Str(m) = m {
                        r.amr.push(m.as_str().to_owned());
                    }
                }
            }
            ("audience", _) => return Err(wrong_requirement("audience", "a string (s)")),
            ("max_age", _) => return Err(wrong_requirement("max_age", "seconds as u (uint32)")),
            ("amr", _) => {
                return Err(wrong_requirement(
                    "amr",
                    &format!("at most {MAX_REQUIRED_METHODS} strings (as)"),
                ))
            }
            (other, _) => {
                let shown: String = other.chars().take(64).collect();
                return Err(BusError::InvalidArgument(format!(
                    "unknown requirement {shown:?}"
                )));
            }
        }
    }
    Ok(r)
}

fn wrong_requirement(key: &str, expected: &str) -> BusError {
    BusError::InvalidArgument(format!("requirement {key:?} must be {expected}"))
}

fn unknown_option(key: &str) -> BusError {
    let shown: String = key.chars().take(64).collect();
    BusError::InvalidArgument(format!("unknown option {shown:?}"))
}

/// The device id in a device object path.
pub(crate) fn device_id_of<'a>(path: &'a ObjectPath<'_>) -> Result<&'a str, BusError> {
    path.as_str()
        .strip_prefix(DEVICES_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| BusError::NoDevice(format!("{} is not a device object", path.as_str())))
}

/// A token on its way out as a D-Bus string (`s`), wiped from memory once sent.
pub struct SecretString(Zeroizing<String>);

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl Type for SecretString {
    const SIGNATURE: &'static zbus::zvariant::Signature = &zbus::zvariant::Signature::Str;
}

/// A session as a{sv}.
fn session_dict(s: &SessionInfo) -> Result<HashMap<String, OwnedValue>, BusError> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: Value<'_>| -> Result<(), BusError> {
        let v = OwnedValue::try_from(v).map_err(|e| BusError::Failed(e.to_string()))?;
        m.insert(k.to_owned(), v);
        Ok(())
    };
    put("jti", Value::from(s.jti.as_str()))?;
    put("user", Value::from(s.user.as_str()))?;
    put("iat", Value::from(s.iat))?;
    put("exp", Value::from(s.exp))?;
    put("auth_time", Value::from(s.auth_time))?;
    put("last_used", Value::from(s.last_used))?;
    put("single_use", Value::from(s.single_use))?;
    put("reader", Value::from(s.reader.as_str()))?;
    put("sid", Value::from(s.sid.as_str()))?;
    Ok(m)
}

/// An enrollment as a{sv}.
fn enrollment_dict(e: &EnrollmentInfo) -> Result<HashMap<String, OwnedValue>, BusError> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: Value<'_>| -> Result<(), BusError> {
        let v = OwnedValue::try_from(v).map_err(|e| BusError::Failed(e.to_string()))?;
        m.insert(k.to_owned(), v);
        Ok(())
    };
    let guid: String = e
        .device_identity
        .iter()
        .flatten()
        .map(|b| format!("{b:02x}"))
        .collect();
    put("id", Value::from(e.id.as_str()))?;
    put("user", Value::from(e.user.as_str()))?;
    put("kind", Value::from(e.kind.as_str()))?;
    put("credential", Value::from(e.credential.as_str()))?;
    put("algorithm", Value::from(e.algorithm.as_str()))?;
    // v1's key, kept for its clients: a PIV enrollment's credential is its slot.
    let slot = if e.kind == DeviceKind::Piv {
        e.credential.as_str()
    } else {
        ""
    };
    put("slot", Value::from(slot))?;
    put("device_name", Value::from(e.device_name.as_str()))?;
    put("card_guid", Value::from(guid.as_str()))?;
    put("created", Value::from(e.created))?;
    put("last_used", Value::from(e.last_used.unwrap_or(0)))?;
    Ok(m)
}

/// Claims as a{sv}: strings as s, times as t, amr as as, cnf as a{sv}. Serialised straight from the
/// claims (no map of boxed values): ValidateToken is the daemon's hottest call.
#[derive(Debug, Serialize, Type)]
#[zvariant(signature = "a{sv}", crate = "zbus::zvariant")]
pub struct ClaimsDict {
    #[serde(with = "as_value")]
    iss: String,
    #[serde(with = "as_value")]
    sub: String,
    #[serde(with = "as_value")]
    aud: String,
    #[serde(with = "as_value")]
    iat: u64,
    #[serde(with = "as_value")]
    nbf: u64,
    #[serde(with = "as_value")]
    exp: u64,
    #[serde(with = "as_value")]
    jti: String,
    #[serde(with = "as_value")]
    amr: Vec<String>,
    #[serde(with = "as_value")]
    cnf: CnfDict,
    #[serde(with = "as_value")]
    sid: String,
    #[serde(with = "as_value")]
    enr: String,
    /// The logind session the token is bound to; "" while unbound.
    #[serde(with = "as_value")]
    login_session: String,
    /// That session's seat; "" when unbound or seatless.
    #[serde(with = "as_value")]
    seat: String,
}

/// The `cnf` claim as a{sv}.
#[derive(Debug, Serialize, Type)]
#[zvariant(signature = "a{sv}", crate = "zbus::zvariant")]
pub struct CnfDict {
    #[serde(with = "as_value")]
    jkt: String,
}

impl From<Claims> for ClaimsDict {
    fn from(c: Claims) -> Self {
        ClaimsDict {
            iss: c.iss,
            sub: c.sub,
            aud: c.aud,
            iat: c.iat,
            nbf: c.nbf,
            exp: c.exp,
            jti: c.jti,
            amr: c.amr,
            cnf: CnfDict { jkt: c.cnf.jkt },
            sid: c.sid,
            enr: c.enr,
            login_session: c.lsid.unwrap_or_default(),
            seat: c.seat.unwrap_or_default(),
        }
    }
}

//! `org.tessera.Tessera1.Manager` at `/org/tessera/Tessera1/Manager`: contract v1 and the request
//! additions (StartAuthentication, StartEnrollment, StartUnblock).

use std::collections::HashMap;

use zbus::proxy;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

/// The manager. Option dictionaries use the keys the README lists per method.
#[proxy(
    interface = "org.tessera.Tessera1.Manager",
    default_service = "org.tessera.Tessera1",
    default_path = "/org/tessera/Tessera1/Manager"
)]
pub trait Manager {
    /// Binds `user` to the key of a slot of a present device; returns the enrollment id.
    fn enroll(
        &self,
        user: &str,
        device: &ObjectPath<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<String>;

    /// Challenges an enrolled device and returns a session token.
    fn authenticate(&self, user: &str, options: HashMap<&str, Value<'_>>) -> zbus::Result<String>;

    /// Starts an interactive authentication; returns the request object. Options: "device" (o),
    /// "kinds" (as), "pin" (s), "wait" (b), "timeout" (u seconds).
    fn start_authentication(
        &self,
        user: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// Starts an interactive enrollment of a present device; returns the request object. Options:
    /// "pin" (s), "slot" (s), "timeout" (u seconds).
    fn start_enrollment(
        &self,
        user: &str,
        device: &ObjectPath<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// Starts unblocking a device's PIN with its PUK; returns the request object. Options: "puk"
    /// (s), "new_pin" (s), "timeout" (u seconds).
    fn start_unblock(
        &self,
        device: &ObjectPath<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// The claims of a valid token.
    fn validate_token(&self, token: &str) -> zbus::Result<HashMap<String, OwnedValue>>;

    /// Revokes a token (logout).
    fn revoke_token(&self, token: &str) -> zbus::Result<()>;

    /// A new token for the same session; the old one is revoked ("refreshed").
    fn refresh_token(&self, token: &str) -> zbus::Result<String>;

    /// The live tokens of a user.
    fn list_sessions(&self, user: &str) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    /// Revokes every live token of a user.
    fn revoke_sessions(&self, user: &str) -> zbus::Result<()>;

    /// Starts signing with a new key (root).
    fn rotate_key(&self) -> zbus::Result<()>;

    /// Reads the configuration file again (root).
    fn reload_config(&self) -> zbus::Result<()>;

    /// Every rule that applies to a user: (key, value, source); the token rules, then the
    /// `piv.`, `fido.`, `pam.` and `session.` rows (the daemon's EffectivePolicy documents them).
    fn effective_policy(&self, user: &str) -> zbus::Result<Vec<(String, String, String)>>;

    /// The signing keys as a JWK Set (never cached: the daemon sends no change signal for it).
    #[zbus(property(emits_changed_signal = "false"))]
    fn jwks(&self) -> zbus::Result<String>;

    /// A token died before its expiry.
    #[zbus(signal)]
    fn token_revoked(&self, jti: &str, user: &str, reason: &str) -> zbus::Result<()>;

    /// A token was issued (Authenticate, a completed authentication request, RefreshToken).
    #[zbus(signal)]
    fn token_issued(&self, jti: &str, user: &str) -> zbus::Result<()>;

    /// An enrollment was made.
    #[zbus(signal)]
    fn enrollment_added(&self, enrollment_id: &str, user: &str) -> zbus::Result<()>;

    /// The enrolled keys of a user (own, or root).
    fn list_enrollments(&self, user: &str) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    /// Removes an enrollment (own, or root); its live tokens are revoked ("unenrolled").
    fn remove_enrollment(&self, enrollment_id: &str) -> zbus::Result<()>;

    /// The claims of a valid token that meets the relying service's requirements ("audience" s,
    /// "max_age" u, "amr" as).
    fn check_token(
        &self,
        token: &str,
        requirements: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<HashMap<String, OwnedValue>>;

    /// Ties a token to a logind session (PAM open_session; root only): a new token carrying the
    /// session and its seat (claims "login_session", "seat"), same expiry; the old one dies
    /// ("bound"). Options: "session" (s, the logind session id, required).
    fn bind_session(&self, token: &str, options: HashMap<&str, Value<'_>>) -> zbus::Result<String>;

    /// Verify once: the claims of a live token bound to the caller's own logind session (found
    /// by the caller's pid through logind, never by anything the caller says) for `user`, if it
    /// meets the options: "service" (s, the PAM service, for `[pam.services.NAME]`), "max_age" (u
    /// seconds since the device authentication; the stricter of this and the policy's applies),
    /// "allow_remote" (b, the PAM module's option: without it a session logind calls Remote is
    /// refused with AccessDenied). Root or `user` itself only. NoLoginSession when nothing fits.
    fn reuse_session(
        &self,
        user: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<HashMap<String, OwnedValue>>;

    /// Ends a token at logout (PAM close_session): revoked with reason "logout".
    fn end_session(&self, token: &str) -> zbus::Result<()>;
}

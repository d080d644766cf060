//! Client proxies for `org.tessera.Tessera1`, used by the `tessera` command and tested against the
//! server so the two cannot drift apart.

use std::collections::HashMap;

use zbus::proxy;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// `org.tessera.Tessera1.Manager` at `/org/tessera/Tessera1/Manager`.
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
        device: &zbus::zvariant::ObjectPath<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<String>;

    /// Challenges an enrolled device and returns a session token.
    fn authenticate(&self, user: &str, options: HashMap<&str, Value<'_>>) -> zbus::Result<String>;

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

    /// The token rules for a user: (key, value, source).
    fn effective_policy(&self, user: &str) -> zbus::Result<Vec<(String, String, String)>>;

    /// The signing keys as a JWK Set (never cached: the daemon sends no change signal for it).
    #[zbus(property(emits_changed_signal = "false"))]
    fn jwks(&self) -> zbus::Result<String>;

    /// A token died before its expiry.
    #[zbus(signal)]
    fn token_revoked(&self, jti: &str, user: &str, reason: &str) -> zbus::Result<()>;

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
}

/// `org.tessera.Tessera1.Manager`'s request methods (a separate proxy until the client crate holds
/// them all): each returns the path of a [`RequestProxy`] object.
#[proxy(
    interface = "org.tessera.Tessera1.Manager",
    default_service = "org.tessera.Tessera1",
    default_path = "/org/tessera/Tessera1/Manager",
    gen_blocking = false
)]
pub trait Requests {
    /// Starts an interactive authentication ("device" o, "kinds" as, "pin" s, "wait" b, "timeout" u).
    fn start_authentication(
        &self,
        user: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// Starts an interactive enrollment ("pin" s, "slot" s, "timeout" u).
    fn start_enrollment(
        &self,
        user: &str,
        device: &zbus::zvariant::ObjectPath<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// Starts unblocking a device's PIN with its PUK ("puk" s, "new_pin" s, "timeout" u).
    fn start_unblock(
        &self,
        device: &zbus::zvariant::ObjectPath<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
}

/// `org.tessera.Tessera1.Request` at `/org/tessera/Tessera1/requests/<id>`.
#[proxy(
    interface = "org.tessera.Tessera1.Request",
    default_service = "org.tessera.Tessera1",
    gen_blocking = false
)]
pub trait Request {
    /// Answers a pin-needed, puk-needed or new-pin-needed prompt.
    fn submit_pin(&self, pin: &str) -> zbus::Result<()>;
    /// Answers a last-try prompt, spending the card's last try.
    fn submit_last_try_pin(&self, pin: &str) -> zbus::Result<()>;
    /// Ends the request with Failed Cancelled.
    fn cancel(&self) -> zbus::Result<()>;
    /// The current state.
    #[zbus(property(emits_changed_signal = "false"))]
    fn state(&self) -> zbus::Result<String>;
    /// A new state and its details.
    #[zbus(signal)]
    fn progress(&self, state: String, details: HashMap<String, OwnedValue>) -> zbus::Result<()>;
    /// The outcome: the token or the enrollment id.
    #[zbus(signal)]
    fn completed(&self, result: String) -> zbus::Result<()>;
    /// The outcome: the full D-Bus error name and its message.
    #[zbus(signal)]
    fn failed(&self, error: String, message: String) -> zbus::Result<()>;
}

/// `org.tessera.Tessera1.Device` at `/org/tessera/Tessera1/devices/<id>`.
#[proxy(
    interface = "org.tessera.Tessera1.Device",
    default_service = "org.tessera.Tessera1"
)]
pub trait Device {
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn transport(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn reader(&self) -> zbus::Result<String>;
}

/// Object path of the device with id `id`.
pub fn device_path(id: &str) -> zbus::Result<OwnedObjectPath> {
    OwnedObjectPath::try_from(format!("{}/{id}", crate::DEVICES_PATH)).map_err(zbus::Error::from)
}

//! `org.tessera.Tessera1.Request` at `/org/tessera/Tessera1/requests/<id>`: one live interactive
//! request. Only the connection that started it may call or read it, and its signals are sent to
//! that connection alone.

use std::collections::HashMap;

use zbus::proxy;
use zbus::zvariant::OwnedValue;

/// A live request (build it with the path the Start* method returned).
#[proxy(
    interface = "org.tessera.Tessera1.Request",
    default_service = "org.tessera.Tessera1"
)]
pub trait Request {
    /// Answers "pin-needed", "puk-needed" or "new-pin-needed". Refused with PinWouldBlock when the
    /// prompt is a last try (the request keeps waiting).
    fn submit_pin(&self, pin: &str) -> zbus::Result<()>;

    /// Spends the last PIN try deliberately (after the user confirmed).
    fn submit_last_try_pin(&self, pin: &str) -> zbus::Result<()>;

    /// Ends the request with Failed(Cancelled); idempotent.
    fn cancel(&self) -> zbus::Result<()>;

    /// The name of the current state ("pin-needed", ...). The daemon sends Progress, not
    /// PropertiesChanged, so the proxy must not cache it.
    #[zbus(property(emits_changed_signal = "false"))]
    fn state(&self) -> zbus::Result<String>;

    /// The request entered `state`; `details` as [`crate::progress::Progress`] parses them.
    #[zbus(signal)]
    fn progress(&self, state: String, details: HashMap<String, OwnedValue>) -> zbus::Result<()>;

    /// The request succeeded: the token, or the enrollment id. Terminal.
    #[zbus(signal)]
    fn completed(&self, result: String) -> zbus::Result<()>;

    /// The request failed with the D-Bus error name `error`. Terminal.
    #[zbus(signal)]
    fn failed(&self, error: String, message: String) -> zbus::Result<()>;
}

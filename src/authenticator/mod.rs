//! The device-neutral authenticator abstraction: what the service asks of any kind of device (a PIV
//! card now, a FIDO key next), above the byte-level transports and below the service.
//!
//! One [`Authenticator`] per present device, built by the device source's kind (PIV:
//! [`crate::piv::authenticator::PivAuthenticator`]). It says what the device is
//! ([`Authenticator::identify`]), enrolls one of its credentials and answers a challenge with a
//! verified assertion. Secrets (PIN, PUK) are asked for through the request's [`Interaction`],
//! which also carries the progress sink, the cancel token and the time left; the PIN rules, the
//! retry counters and the device's commands stay inside the authenticator. A FIDO authenticator
//! plugs in beside PIV by implementing this trait over its own transport (CTAPHID or NFC).

mod identity;
mod interaction;
mod probe;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::verify::challenge::Challenge;
use crate::Result;

pub use identity::{Credential, DeviceIdentity, DeviceKey};
pub use interaction::{Interaction, Progress, SecretAnswer, SecretKind, SecretPrompt};
pub use probe::card_authenticator;

/// A boxed future, so that `dyn Authenticator` can be used (no async fn in dyn traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the service enrolls: a credential the device proved it holds, with what identifies it.
#[derive(Debug, Clone)]
pub struct EnrolledCredential {
    /// Credential reference as the device kind names it ("9a").
    pub credential: String,
    /// The public key, encoded as `algorithm` says.
    pub public_key: Vec<u8>,
    /// The key's signature algorithm, as JOSE names it in lower case ("es256", RFC 7518 §3.1).
    pub algorithm: &'static str,
    /// RFC 7638 thumbprint of the public key.
    pub thumbprint: String,
    /// The device's stable identifier (PIV: CHUID GUID), if it has one.
    pub device_guid: Option<[u8; 16]>,
    /// What the certificate or device calls the holder, for listings.
    pub subject: Option<String>,
    /// Whether using the credential needs the device's PIN.
    pub needs_secret: bool,
}

/// A credential that may be enrolled, whether or not the device holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollable {
    /// Canonical credential reference ("9a").
    pub credential: String,
    /// Whether using it needs the device's PIN.
    pub needs_secret: bool,
}

/// An enrollment as an authenticator needs it to check an assertion.
#[derive(Debug, Clone, Copy)]
pub struct EnrolledKey<'a> {
    /// Credential reference ("9a").
    pub credential: &'a str,
    /// The public key recorded at enrollment, never what the device presents now.
    pub public_key: &'a [u8],
    /// Its algorithm ("es256").
    pub algorithm: &'a str,
    /// Whether the credential needs the PIN.
    pub needs_secret: bool,
}

/// A challenge answered by the enrolled credential, its signature verified against the enrolled key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// Authentication methods used (RFC 8176 values: "hwk", "sc", "pin", "mfa").
    pub amr: Vec<String>,
}

/// One kind of device, bound to one present device.
pub trait Authenticator: Send + Sync {
    /// The device kind ("piv").
    fn kind(&self) -> &'static str;

    /// The authentication methods (RFC 8176 `amr` values) an assertion with a credential that
    /// needs a secret or not proves; known before the assertion so that its token can be written
    /// while the device works.
    fn methods(&self, needs_secret: bool) -> Vec<String>;

    /// Reads what the device is, and has it prove its device key when it has one. Each device
    /// operation waits at most `timeout`.
    fn identify(&self, timeout: Duration) -> BoxFuture<'_, Result<DeviceIdentity>>;

    /// The credential `requested` names (`None`: the kind's default), if it is one that can be
    /// enrolled. Errors: [`crate::Error::InvalidArgument`].
    fn enrollable(&self, requested: Option<&str>) -> Result<Enrollable>;

    /// Enrolls `credential`: proves the user knows the PIN (asked through `interaction`) and that
    /// the device holds the credential's private key.
    fn enroll<'a>(
        &'a self,
        credential: &'a str,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<EnrolledCredential>>;

    /// Has the device sign `challenge` with the enrolled credential, asking for the PIN if it needs
    /// one, and verifies the signature against the enrolled key. The interaction's
    /// [`Interaction::final_exchange`] is called right before the exchange that signs.
    fn assert<'a>(
        &'a self,
        challenge: &'a Challenge,
        enrolled: EnrolledKey<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<Assertion>>;

    /// Resets a blocked (or known) PIN with the device's unblocking secret (PIV: the PUK, RESET
    /// RETRY COUNTER), both asked through `interaction`.
    fn unblock<'a>(&'a self, interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>>;
}

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
pub use probe::{card_authenticator, fido_card_authenticator, hid_authenticator};

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
    /// Whether using the credential needs the device's PIN (FIDO: user verification, by PIN or
    /// the key's built-in UV).
    pub needs_secret: bool,
    /// FIDO: the relying-party id the credential is scoped to; `None` for PIV.
    pub rp_id: Option<String>,
    /// The device's signature counter after enrollment (FIDO authData signCount); 0 without one.
    pub sign_count: u32,
}

/// What an enrollment is for, beyond the credential: the account, and the FIDO parameters the
/// policy sets (PIV ignores those).
#[derive(Debug, Clone, Copy)]
pub struct EnrollRequest<'a> {
    /// The credential [`Authenticator::enrollable`] chose ("9a"; FIDO: "new").
    pub credential: &'a str,
    /// Unix account name (FIDO: the user entity's name; the user handle is random).
    pub user: &'a str,
    /// Unix uid of the account.
    pub uid: u32,
    /// FIDO relying-party id (`[fido] rp_id`).
    pub rp_id: &'a str,
    /// Credentials the account already has enrolled on devices of this kind (FIDO: the
    /// makeCredential excludeList, CTAP 2.1 §6.1), as stored (base64url credential ids).
    pub exclude: &'a [String],
    /// FIDO user verification the policy asks for.
    pub user_verification: UserVerification,
    /// FIDO: the key must have a PIN set and use it (`[fido] pin_required`).
    pub pin_required: bool,
    /// Signature algorithms the policy accepts, most preferred first (JOSE names in lower case:
    /// "es256", "eddsa").
    pub algorithms: &'a [&'a str],
}

/// `[fido] user_verification` (WebAuthn §5.8.6 UserVerificationRequirement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserVerification {
    /// Every authentication verifies the user (PIN or built-in UV); a key that cannot is refused.
    Required,
    /// Verify when the key can (a PIN is set or it has built-in UV), touch alone otherwise.
    #[default]
    Preferred,
    /// Touch alone.
    Discouraged,
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
    /// Whether the credential needs the PIN (FIDO: user verification).
    pub needs_secret: bool,
    /// RFC 7638 thumbprint of `public_key`, as enrolled.
    pub thumbprint: &'a str,
    /// FIDO: the relying-party id of the credential; `None` for PIV.
    pub rp_id: Option<&'a str>,
    /// The signature counter recorded last (0: none yet, or the device has none).
    pub sign_count: u32,
}

/// A challenge answered by the enrolled credential, its signature verified against the enrolled key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// Authentication methods used (RFC 8176 values: "hwk", "sc", "pin", "mfa").
    pub amr: Vec<String>,
    /// The signature counter the device signed (FIDO authData signCount, CTAP 2.1 §6.2), if it
    /// has one; the service checks it against [`EnrolledKey::sign_count`] (clone detection).
    pub sign_count: Option<u32>,
}

/// One kind of device, bound to one present device.
pub trait Authenticator: Send + Sync {
    /// The device kind ("piv", "fido").
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
        request: EnrollRequest<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<EnrolledCredential>>;

    /// Which of `enrolled` (the account's enrollments of this kind) the device holds, by
    /// credential reference; `identity` is what [`Authenticator::identify`] returned for this
    /// insertion. PIV: read from the identity, no device exchange. FIDO: a silent
    /// getAssertion (up = false) per allowList chunk of maxCredentialCountInList (CTAP 2.1 §6.2),
    /// the answer cached for the insertion. Errors: the device's; the service treats a device
    /// that cannot answer as holding none.
    fn holds<'a>(
        &'a self,
        identity: &'a DeviceIdentity,
        enrolled: &'a [EnrolledKey<'a>],
        uid: u32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Whether [`Authenticator::select`] can ask the user to pick this device (FIDO keys:
    /// authenticatorSelection, CTAP 2.1 §6.9). PIV cards cannot: the user removes the others.
    fn selectable(&self) -> bool {
        false
    }

    /// Waits for the user to touch this device to choose it among several; `Ok` once touched.
    /// Cancelled through the interaction's cancel token when another device was chosen.
    fn select<'a>(&'a self, interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>> {
        let _ = interaction;
        Box::pin(async {
            Err(crate::Error::InvalidArgument(
                "this device cannot be chosen by touch".into(),
            ))
        })
    }

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

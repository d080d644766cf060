//! The one error type of the core library. Each variant says what the caller should do about it; the
//! daemon maps each to a stable D-Bus error name (`org.tessera.Tessera1.Error.<Variant>`).

use std::time::Duration;

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Tessera, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable device is present: insert the card (or name another device).
    #[error("no device present")]
    NoDevice,
    /// The named Unix account does not exist.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// The user has no enrollment matching a present device: enroll first, or use an enrolled card.
    #[error("not enrolled: {0}")]
    NotEnrolled(String),
    /// The operation needs the card's PIN: pass the "pin" option.
    #[error("a PIN is required")]
    PinRequired,
    /// The PIN was wrong; `retries` attempts remain before the card blocks.
    #[error("wrong PIN, {retries} retries left")]
    PinInvalid { retries: u8 },
    /// The card has only its last PIN retry left; Tessera will not spend it. Unblock with the PUK.
    #[error("PIN not tried: only {retries} retry left, spending it could block the card; unblock it with the PUK")]
    PinWouldBlock { retries: u8 },
    /// The card's PIN is blocked: reset it with the PUK.
    #[error("the card's PIN is blocked")]
    PinBlocked,
    /// The PUK was wrong; `retries` attempts remain before the PUK blocks too.
    #[error("wrong PUK, {retries} retries left")]
    PukInvalid { retries: u8 },
    /// The PUK is blocked: the card's PIV application must be reset (all keys are lost).
    #[error("the card's PUK is blocked")]
    PukBlocked,
    /// The PIN is malformed (empty, too long or not printable): ask the user again.
    #[error("invalid PIN format: {0}")]
    PinFormat(&'static str),
    /// The device was removed during the operation; nothing was changed. Re-insert and retry.
    #[error("device removed")]
    DeviceRemoved,
    /// Another application reset the card before Tessera's exchange began; retrying it is safe.
    #[error("the card was reset by another application")]
    CardReset,
    /// The request was cancelled (by its caller, or because the caller left the bus); no device
    /// operation runs for it any more. Start a new request if still wanted.
    #[error("the request was cancelled")]
    Cancelled,
    /// The device did not answer in time; nothing was changed.
    #[error("{what}{}", within(.after))]
    Timeout {
        /// What did not happen in time ("the device did not answer", "no device was inserted").
        what: &'static str,
        /// How long it was waited for (zero when the device layer does not say).
        after: Duration,
    },
    /// The device's signature did not verify against the enrolled key: the card is not the enrolled one.
    #[error("signature invalid: {0}")]
    SignatureInvalid(&'static str),
    /// The token is malformed, forged, from a retired key or unknown to this daemon.
    #[error("token invalid")]
    TokenInvalid,
    /// The token is valid but was issued for another audience than the relying service's
    /// (RFC 7519 section 4.1.3): the service must refuse it. On the bus it is TokenInvalid.
    #[error("token invalid: not issued for audience {0:?}")]
    WrongAudience(String),
    /// The token's lifetime is over: authenticate again.
    #[error("token expired")]
    TokenExpired,
    /// The token was revoked (logout, device removed, used, ...): authenticate again.
    #[error("token revoked ({0})")]
    TokenRevoked(String),
    /// The caller may not do this.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Rate limited (too many failed attempts, or a refresh sooner than the policy allows): retry
    /// after the given time.
    #[error("{why}; retry after {retry_after_secs} s")]
    RateLimited {
        /// What is limited, for the message ("too many failed attempts", ...).
        why: &'static str,
        retry_after_secs: u64,
    },
    /// The device (or this caller's share of it) has too many operations waiting: retry shortly.
    #[error("busy: {0}")]
    Busy(String),
    /// The token is valid but does not meet the caller's requirements (too old an authentication,
    /// a missing method): authenticate again with the device.
    #[error("step-up required: {0}")]
    StepUpRequired(String),
    /// More than one present device could serve the request: name one with the "device" option.
    #[error("more than one device could be used: {}", .0.join(", "))]
    DeviceAmbiguous(Vec<String>),
    /// No login session fits: logind knows no such session (or none for the caller), it is not the
    /// token owner's, or no live token of that session meets the requirements (session reuse).
    #[error("no login session: {0}")]
    NoLoginSession(String),
    /// The device holds credentials enrolled for more than one account, so it cannot say who is
    /// logging in: name the user.
    #[error("the device is enrolled for more than one account: {0}")]
    UserAmbiguous(String),
    /// A request argument is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The device answered something Tessera cannot use (a protocol violation or an unsupported card).
    #[error("device error: {0}")]
    Device(String),
    /// The configuration is invalid.
    #[error("configuration error: {0}")]
    Config(String),
    /// The durable store failed; nothing was acknowledged.
    #[error("storage error: {0}")]
    Storage(String),
    /// An operating-system error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A bug or broken invariant inside Tessera.
    #[error("internal error: {0}")]
    Internal(String),
}

/// " within 2s" for a known wait, nothing for an unknown one.
fn within(after: &Duration) -> String {
    if after.is_zero() {
        String::new()
    } else {
        format!(" within {after:?}")
    }
}

impl Error {
    /// Whether the error means the device is gone.
    pub fn is_removal(&self) -> bool {
        matches!(self, Error::DeviceRemoved)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

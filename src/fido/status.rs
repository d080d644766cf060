//! CTAP status codes (CTAP 2.1 §8.2) and the one place where they become [`crate::Error`]s.
//!
//! Every authenticator answer over CTAPHID_CBOR or NFCCTAP_MSG starts with one status byte; only
//! 0x00 is success. The codecs in [`super::ctap2`] call [`error`] for anything else, so the flows
//! above see typed errors and never a raw byte.

use std::fmt;
use std::time::Duration;

use crate::Error;

/// A CTAP status code (CTAP 2.1 §8.2, "Status codes"). Every `u8` round-trips through
/// [`Status::from_u8`] / [`Status::to_u8`]; [`Status::Other`] only ever holds codes without a
/// named variant (the reserved ones, the extension range 0xE0–0xEF and the vendor range
/// 0xF0–0xFF) when built by `from_u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// 0x00 CTAP1_ERR_SUCCESS / CTAP2_OK.
    Ok,
    /// 0x01 CTAP1_ERR_INVALID_COMMAND: the command is not known to the authenticator.
    InvalidCommand,
    /// 0x02 CTAP1_ERR_INVALID_PARAMETER.
    InvalidParameter,
    /// 0x03 CTAP1_ERR_INVALID_LENGTH.
    InvalidLength,
    /// 0x04 CTAP1_ERR_INVALID_SEQ: invalid message sequencing (CTAPHID).
    InvalidSeq,
    /// 0x05 CTAP1_ERR_TIMEOUT: message timed out (CTAPHID).
    Timeout,
    /// 0x06 CTAP1_ERR_CHANNEL_BUSY: the channel is busy; retry later.
    ChannelBusy,
    /// 0x0A CTAP1_ERR_LOCK_REQUIRED.
    LockRequired,
    /// 0x0B CTAP1_ERR_INVALID_CHANNEL.
    InvalidChannel,
    /// 0x11 CTAP2_ERR_CBOR_UNEXPECTED_TYPE.
    CborUnexpectedType,
    /// 0x12 CTAP2_ERR_INVALID_CBOR.
    InvalidCbor,
    /// 0x14 CTAP2_ERR_MISSING_PARAMETER.
    MissingParameter,
    /// 0x15 CTAP2_ERR_LIMIT_EXCEEDED.
    LimitExceeded,
    /// 0x17 CTAP2_ERR_FP_DATABASE_FULL.
    FpDatabaseFull,
    /// 0x18 CTAP2_ERR_LARGE_BLOB_STORAGE_FULL.
    LargeBlobStorageFull,
    /// 0x19 CTAP2_ERR_CREDENTIAL_EXCLUDED: the key holds a credential of the excludeList.
    CredentialExcluded,
    /// 0x21 CTAP2_ERR_PROCESSING.
    Processing,
    /// 0x22 CTAP2_ERR_INVALID_CREDENTIAL.
    InvalidCredential,
    /// 0x23 CTAP2_ERR_USER_ACTION_PENDING.
    UserActionPending,
    /// 0x24 CTAP2_ERR_OPERATION_PENDING.
    OperationPending,
    /// 0x25 CTAP2_ERR_NO_OPERATIONS.
    NoOperations,
    /// 0x26 CTAP2_ERR_UNSUPPORTED_ALGORITHM.
    UnsupportedAlgorithm,
    /// 0x27 CTAP2_ERR_OPERATION_DENIED.
    OperationDenied,
    /// 0x28 CTAP2_ERR_KEY_STORE_FULL.
    KeyStoreFull,
    /// 0x2A CTAP2_ERR_NO_OPERATION_PENDING.
    NoOperationPending,
    /// 0x2B CTAP2_ERR_UNSUPPORTED_OPTION.
    UnsupportedOption,
    /// 0x2C CTAP2_ERR_INVALID_OPTION.
    InvalidOption,
    /// 0x2D CTAP2_ERR_KEEPALIVE_CANCEL: the request was cancelled (CTAPHID_CANCEL).
    KeepaliveCancel,
    /// 0x2E CTAP2_ERR_NO_CREDENTIALS.
    NoCredentials,
    /// 0x2F CTAP2_ERR_USER_ACTION_TIMEOUT.
    UserActionTimeout,
    /// 0x30 CTAP2_ERR_NOT_ALLOWED.
    NotAllowed,
    /// 0x31 CTAP2_ERR_PIN_INVALID.
    PinInvalid,
    /// 0x32 CTAP2_ERR_PIN_BLOCKED.
    PinBlocked,
    /// 0x33 CTAP2_ERR_PIN_AUTH_INVALID.
    PinAuthInvalid,
    /// 0x34 CTAP2_ERR_PIN_AUTH_BLOCKED: too many wrong PINs in a row since power-up.
    PinAuthBlocked,
    /// 0x35 CTAP2_ERR_PIN_NOT_SET.
    PinNotSet,
    /// 0x36 CTAP2_ERR_PUAT_REQUIRED (CTAP 2.0: CTAP2_ERR_PIN_REQUIRED).
    PuatRequired,
    /// 0x37 CTAP2_ERR_PIN_POLICY_VIOLATION.
    PinPolicyViolation,
    /// 0x39 CTAP2_ERR_REQUEST_TOO_LARGE.
    RequestTooLarge,
    /// 0x3A CTAP2_ERR_ACTION_TIMEOUT.
    ActionTimeout,
    /// 0x3B CTAP2_ERR_UP_REQUIRED.
    UpRequired,
    /// 0x3C CTAP2_ERR_UV_BLOCKED.
    UvBlocked,
    /// 0x3D CTAP2_ERR_INTEGRITY_FAILURE.
    IntegrityFailure,
    /// 0x3E CTAP2_ERR_INVALID_SUBCOMMAND.
    InvalidSubcommand,
    /// 0x3F CTAP2_ERR_UV_INVALID.
    UvInvalid,
    /// 0x40 CTAP2_ERR_UNAUTHORIZED_PERMISSION.
    UnauthorizedPermission,
    /// 0x7F CTAP1_ERR_OTHER: an unspecified error.
    Unspecified,
    /// Any other code: reserved (0x07–0x09, 0x0C–0x10, 0x13, 0x16, 0x1A–0x20, 0x29, 0x38,
    /// 0x41–0x7E, 0x80–0xDF), extension-specific (0xE0–0xEF) or vendor-specific (0xF0–0xFF).
    Other(u8),
}

/// The named codes, in one table both directions read.
const TABLE: &[(u8, Status, &str)] = &[
    (0x00, Status::Ok, "CTAP2_OK"),
    (0x01, Status::InvalidCommand, "CTAP1_ERR_INVALID_COMMAND"),
    (
        0x02,
        Status::InvalidParameter,
        "CTAP1_ERR_INVALID_PARAMETER",
    ),
    (0x03, Status::InvalidLength, "CTAP1_ERR_INVALID_LENGTH"),
    (0x04, Status::InvalidSeq, "CTAP1_ERR_INVALID_SEQ"),
    (0x05, Status::Timeout, "CTAP1_ERR_TIMEOUT"),
    (0x06, Status::ChannelBusy, "CTAP1_ERR_CHANNEL_BUSY"),
    (0x0A, Status::LockRequired, "CTAP1_ERR_LOCK_REQUIRED"),
    (0x0B, Status::InvalidChannel, "CTAP1_ERR_INVALID_CHANNEL"),
    (
        0x11,
        Status::CborUnexpectedType,
        "CTAP2_ERR_CBOR_UNEXPECTED_TYPE",
    ),
    (0x12, Status::InvalidCbor, "CTAP2_ERR_INVALID_CBOR"),
    (
        0x14,
        Status::MissingParameter,
        "CTAP2_ERR_MISSING_PARAMETER",
    ),
    (0x15, Status::LimitExceeded, "CTAP2_ERR_LIMIT_EXCEEDED"),
    (0x17, Status::FpDatabaseFull, "CTAP2_ERR_FP_DATABASE_FULL"),
    (
        0x18,
        Status::LargeBlobStorageFull,
        "CTAP2_ERR_LARGE_BLOB_STORAGE_FULL",
    ),
    (
        0x19,
        Status::CredentialExcluded,
        "CTAP2_ERR_CREDENTIAL_EXCLUDED",
    ),
    (0x21, Status::Processing, "CTAP2_ERR_PROCESSING"),
    (
        0x22,
        Status::InvalidCredential,
        "CTAP2_ERR_INVALID_CREDENTIAL",
    ),
    (
        0x23,
        Status::UserActionPending,
        "CTAP2_ERR_USER_ACTION_PENDING",
    ),
    (
        0x24,
        Status::OperationPending,
        "CTAP2_ERR_OPERATION_PENDING",
    ),
    (0x25, Status::NoOperations, "CTAP2_ERR_NO_OPERATIONS"),
    (
        0x26,
        Status::UnsupportedAlgorithm,
        "CTAP2_ERR_UNSUPPORTED_ALGORITHM",
    ),
    (0x27, Status::OperationDenied, "CTAP2_ERR_OPERATION_DENIED"),
    (0x28, Status::KeyStoreFull, "CTAP2_ERR_KEY_STORE_FULL"),
    (
        0x2A,
        Status::NoOperationPending,
        "CTAP2_ERR_NO_OPERATION_PENDING",
    ),
    (
        0x2B,
        Status::UnsupportedOption,
        "CTAP2_ERR_UNSUPPORTED_OPTION",
    ),
    (0x2C, Status::InvalidOption, "CTAP2_ERR_INVALID_OPTION"),
    (0x2D, Status::KeepaliveCancel, "CTAP2_ERR_KEEPALIVE_CANCEL"),
    (0x2E, Status::NoCredentials, "CTAP2_ERR_NO_CREDENTIALS"),
    (
        0x2F,
        Status::UserActionTimeout,
        "CTAP2_ERR_USER_ACTION_TIMEOUT",
    ),
    (0x30, Status::NotAllowed, "CTAP2_ERR_NOT_ALLOWED"),
    (0x31, Status::PinInvalid, "CTAP2_ERR_PIN_INVALID"),
    (0x32, Status::PinBlocked, "CTAP2_ERR_PIN_BLOCKED"),
    (0x33, Status::PinAuthInvalid, "CTAP2_ERR_PIN_AUTH_INVALID"),
    (0x34, Status::PinAuthBlocked, "CTAP2_ERR_PIN_AUTH_BLOCKED"),
    (0x35, Status::PinNotSet, "CTAP2_ERR_PIN_NOT_SET"),
    (0x36, Status::PuatRequired, "CTAP2_ERR_PUAT_REQUIRED"),
    (
        0x37,
        Status::PinPolicyViolation,
        "CTAP2_ERR_PIN_POLICY_VIOLATION",
    ),
    (0x39, Status::RequestTooLarge, "CTAP2_ERR_REQUEST_TOO_LARGE"),
    (0x3A, Status::ActionTimeout, "CTAP2_ERR_ACTION_TIMEOUT"),
    (0x3B, Status::UpRequired, "CTAP2_ERR_UP_REQUIRED"),
    (0x3C, Status::UvBlocked, "CTAP2_ERR_UV_BLOCKED"),
    (
        0x3D,
        Status::IntegrityFailure,
        "CTAP2_ERR_INTEGRITY_FAILURE",
    ),
    (
        0x3E,
        Status::InvalidSubcommand,
        "CTAP2_ERR_INVALID_SUBCOMMAND",
    ),
    (0x3F, Status::UvInvalid, "CTAP2_ERR_UV_INVALID"),
    (
        0x40,
        Status::UnauthorizedPermission,
        "CTAP2_ERR_UNAUTHORIZED_PERMISSION",
    ),
    (0x7F, Status::Unspecified, "CTAP1_ERR_OTHER"),
];

impl Status {
    /// The status of a code byte.
    pub fn from_u8(code: u8) -> Status {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or(Status::Other(code), |(_, s, _)| *s)
    }

    /// The status byte that begins an answer (`status ‖ CBOR`), for a caller that treats one
    /// status specially before mapping the rest (authenticatorSelection on a CTAP 2.0 key answers
    /// [`Status::InvalidCommand`]); `None` for an empty answer.
    pub fn of(answer: &[u8]) -> Option<Status> {
        answer.first().map(|code| Status::from_u8(*code))
    }

    /// The code byte of a status.
    pub fn to_u8(self) -> u8 {
        match self {
            Status::Other(code) => code,
            named => TABLE
                .iter()
                .find(|(_, s, _)| *s == named)
                // Every named variant is in TABLE (a test checks it); 0x7F would be the honest
                // fallback for a variant someone forgot to list.
                .map_or(0x7F, |(c, _, _)| *c),
        }
    }

    /// The specification's name ("CTAP2_ERR_PIN_INVALID"), or the range a code falls in.
    pub fn name(self) -> &'static str {
        match self {
            Status::Other(0xE0..=0xEF) => "CTAP2_ERR_EXTENSION_*",
            Status::Other(0xF0..=0xFF) => "CTAP2_ERR_VENDOR_*",
            Status::Other(_) => "reserved status",
            named => TABLE
                .iter()
                .find(|(_, s, _)| *s == named)
                .map_or("unnamed status", |(_, _, n)| n),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), self.to_u8())
    }
}

/// The [`Error`] for a status other than success: the one table of CTAP 2.1 §8.2 codes to Tessera
/// errors, by what the caller should do.
///
/// [`Status::PinInvalid`] becomes `PinInvalid { retries: 0 }`: the answer does not say how many
/// retries remain, so the caller asks (getPINRetries, §6.5.5.3) and fills them in.
/// [`Status::Ok`] is not an error; it maps to [`Error::Internal`] so a caller's mistake shows.
pub fn error(status: Status) -> Error {
    match status {
        Status::Ok => Error::Internal("CTAP status success treated as an error".into()),
        Status::PinInvalid => Error::PinInvalid { retries: 0 },
        Status::PinBlocked => Error::PinBlocked,
        Status::PinAuthBlocked => Error::Device(
            "the security key refuses PINs after three wrong ones in a row: unplug the key and \
             plug it in again, then retry"
                .into(),
        ),
        Status::PinNotSet => Error::Device(
            "the security key has no PIN set; set one (for example with the key vendor's tool) \
             or relax the PIN policy"
                .into(),
        ),
        Status::PuatRequired => Error::PinRequired,
        Status::PinPolicyViolation => {
            Error::PinFormat("the security key's PIN policy refuses this PIN")
        }
        Status::NoCredentials | Status::InvalidCredential => {
            Error::NotEnrolled("the security key holds none of the enrolled credentials".into())
        }
        Status::CredentialExcluded => Error::InvalidArgument(
            "the security key already holds a credential of this user: it is enrolled".into(),
        ),
        Status::OperationDenied => Error::Device(
            "the security key denied the operation (declined by the user or by the key)".into(),
        ),
        Status::UserActionTimeout | Status::ActionTimeout => Error::Timeout {
            what: "the security key was not touched",
            after: Duration::ZERO,
        },
        Status::Timeout => Error::Timeout {
            what: "the security key did not answer",
            after: Duration::ZERO,
        },
        Status::KeepaliveCancel => Error::Cancelled,
        Status::ChannelBusy | Status::UserActionPending | Status::OperationPending => {
            Error::Busy(format!("the security key is busy ({status})"))
        }
        Status::UvBlocked => Error::Device(
            "the security key's built-in user verification is blocked: use its PIN".into(),
        ),
        Status::UvInvalid => {
            Error::Device("the security key's built-in user verification failed: try again".into())
        }
        Status::UnsupportedAlgorithm => Error::Device(
            "the security key supports none of the signature algorithms the policy allows".into(),
        ),
        Status::KeyStoreFull => Error::Device("the security key's credential store is full".into()),
        Status::PinAuthInvalid | Status::UnauthorizedPermission => Error::Device(format!(
            "the security key rejected the PIN/UV auth token ({status}); retry"
        )),
        _ => Error::Device(format!("the security key answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for code in 0..=u8::MAX {
            let status = Status::from_u8(code);
            assert_eq!(status.to_u8(), code, "{status:?}");
        }
    }

    #[test]
    fn named_codes_are_named_and_others_are_other() {
        assert_eq!(Status::from_u8(0x31), Status::PinInvalid);
        assert_eq!(Status::from_u8(0x34), Status::PinAuthBlocked);
        assert_eq!(Status::from_u8(0x38), Status::Other(0x38));
        assert_eq!(Status::from_u8(0xF3), Status::Other(0xF3));
        assert_eq!(Status::from_u8(0xF3).name(), "CTAP2_ERR_VENDOR_*");
        assert_eq!(Status::from_u8(0x7F).name(), "CTAP1_ERR_OTHER");
        assert_eq!(Status::of(&[0x01, 0xA0]), Some(Status::InvalidCommand));
        assert_eq!(Status::of(&[]), None);
        assert_eq!(
            Status::PinInvalid.to_string(),
            "CTAP2_ERR_PIN_INVALID (0x31)"
        );
        for (code, status, _) in TABLE {
            assert_eq!(Status::from_u8(*code), *status);
        }
    }

    #[test]
    fn the_error_table() {
        assert!(matches!(
            error(Status::PinInvalid),
            Error::PinInvalid { retries: 0 }
        ));
        assert!(matches!(error(Status::PinBlocked), Error::PinBlocked));
        match error(Status::PinAuthBlocked) {
            Error::Device(m) => assert!(m.contains("unplug the key and plug it in again")),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            error(Status::NoCredentials),
            Error::NotEnrolled(_)
        ));
        assert!(matches!(
            error(Status::UserActionTimeout),
            Error::Timeout { .. }
        ));
        assert!(matches!(error(Status::KeepaliveCancel), Error::Cancelled));
        assert!(matches!(error(Status::PuatRequired), Error::PinRequired));
        assert!(matches!(error(Status::ChannelBusy), Error::Busy(_)));
        assert!(matches!(error(Status::Ok), Error::Internal(_)));
        match error(Status::Other(0xF3)) {
            Error::Device(m) => assert!(m.contains("0xF3"), "{m}"),
            e => panic!("{e:?}"),
        }
    }
}

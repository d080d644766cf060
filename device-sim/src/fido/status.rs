//! CTAP status codes (CTAP 2.1 §8.2) as the authenticator answers them: the first byte of every
//! CTAP2 response.

/// A CTAP status byte; [`Status::OK`] or an error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Status(pub u8);

impl Status {
    pub const OK: Status = Status(0x00);
    pub const INVALID_COMMAND: Status = Status(0x01);
    pub const INVALID_PARAMETER: Status = Status(0x02);
    pub const INVALID_LENGTH: Status = Status(0x03);
    pub const CBOR_UNEXPECTED_TYPE: Status = Status(0x11);
    pub const INVALID_CBOR: Status = Status(0x12);
    pub const MISSING_PARAMETER: Status = Status(0x14);
    pub const LIMIT_EXCEEDED: Status = Status(0x15);
    pub const CREDENTIAL_EXCLUDED: Status = Status(0x19);
    pub const UNSUPPORTED_ALGORITHM: Status = Status(0x26);
    pub const UNSUPPORTED_OPTION: Status = Status(0x2B);
    pub const INVALID_OPTION: Status = Status(0x2C);
    pub const KEEPALIVE_CANCEL: Status = Status(0x2D);
    pub const NO_CREDENTIALS: Status = Status(0x2E);
    pub const USER_ACTION_TIMEOUT: Status = Status(0x2F);
    pub const NOT_ALLOWED: Status = Status(0x30);
    pub const PIN_INVALID: Status = Status(0x31);
    pub const PIN_BLOCKED: Status = Status(0x32);
    pub const PIN_AUTH_INVALID: Status = Status(0x33);
    pub const PIN_AUTH_BLOCKED: Status = Status(0x34);
    pub const PIN_NOT_SET: Status = Status(0x35);
    pub const PUAT_REQUIRED: Status = Status(0x36);
    pub const PIN_POLICY_VIOLATION: Status = Status(0x37);
    pub const INVALID_SUBCOMMAND: Status = Status(0x3E);
    pub const UNAUTHORIZED_PERMISSION: Status = Status(0x40);
    pub const OTHER: Status = Status(0x7F);
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Status({:#04x})", self.0)
    }
}

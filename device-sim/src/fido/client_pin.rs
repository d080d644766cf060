//! authenticatorClientPIN (CTAP 2.1 §6.5).

use super::cbor::Parameters;
use super::ctap2::Reply;
use super::status::Status;
use super::FidoKey;

/// What a power cycle forgets.
pub(super) struct PinSession {}

impl PinSession {
    pub(super) fn new() -> PinSession {
        PinSession {}
    }
}

pub(super) fn client_pin(_key: &mut FidoKey, _params: Parameters) -> Result<Reply, Status> {
    Err(Status::OTHER)
}

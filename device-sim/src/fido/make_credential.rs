//! authenticatorMakeCredential (CTAP 2.1 §6.1).

use super::cbor::Parameters;
use super::ctap2::Reply;
use super::status::Status;
use super::{FidoKey, Presence};

pub(super) fn make_credential(
    _key: &mut FidoKey,
    _params: Parameters,
    _presence: &mut dyn Presence,
) -> Result<Reply, Status> {
    Err(Status::OTHER)
}

//! authenticatorSelection (CTAP 2.1 §6.9): asks the key for a touch, so the user picks one of
//! several keys. No parameters, no response data; CTAP 2.0 keys answer
//! CTAP1_ERR_INVALID_COMMAND (the caller then falls back to a getAssertion with up=true).

use crate::fido::ctap2::{cbor, command, Request};
use crate::Result;

/// The authenticatorSelection request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection;

impl Selection {
    /// The single command byte 0x0B.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::request(command::SELECTION, None)
    }

    /// Success (the user touched this key) or the mapped status error (USER_ACTION_TIMEOUT →
    /// Timeout, KEEPALIVE_CANCEL → Cancelled, OPERATION_DENIED, …). Data after the status is
    /// ignored: nothing is defined there.
    pub fn decode(status_and_cbor: &[u8]) -> Result<()> {
        cbor::body(status_and_cbor).map(|_| ())
    }
}

impl Request for Selection {
    type Response = ();
    fn encode(&self) -> Result<Vec<u8>> {
        Selection::encode(self)
    }
    fn decode(status_and_cbor: &[u8]) -> Result<()> {
        Selection::decode(status_and_cbor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::Error;

    #[test]
    fn selection_is_one_byte_and_decodes_status() {
        assert_eq!(Selection.encode().unwrap(), vec![0x0B]);
        assert!(Selection::decode(&[0x00]).is_ok());
        assert!(matches!(Selection::decode(&[0x2D]), Err(Error::Cancelled)));
        assert!(matches!(
            Selection::decode(&[0x2F]),
            Err(Error::Timeout { .. })
        ));
    }
}

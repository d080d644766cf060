//! The CTAP2 authenticator API (CTAP 2.1 §6): typed requests that encode to `command ‖ CBOR`
//! and typed responses decoded from `status ‖ CBOR` (§8), sans I/O: a [`super::link::CtapLink`]
//! carries the bytes.
//!
//! One file per command: [`get_info`], [`make_credential`], [`get_assertion`], [`client_pin`],
//! [`selection`]; the CBOR both ways in [`cbor`]. A status other than success becomes an error
//! in [`super::status`], the one table.

pub mod cbor;
pub mod client_pin;
pub mod get_assertion;
pub mod get_info;
pub mod make_credential;
pub mod selection;

pub use client_pin::{ClientPin, ClientPinResponse};
pub use get_assertion::{GetAssertion, GetAssertionResponse, GetNextAssertion};
pub use get_info::{GetInfo, Info};
pub use make_credential::{MakeCredential, MakeCredentialResponse};
pub use selection::Selection;

use crate::Result;

/// The authenticator API command bytes (§6, table "Command codes").
pub mod command {
    /// authenticatorMakeCredential (§6.1).
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    /// authenticatorGetAssertion (§6.2).
    pub const GET_ASSERTION: u8 = 0x02;
    /// authenticatorGetInfo (§6.4).
    pub const GET_INFO: u8 = 0x04;
    /// authenticatorClientPIN (§6.5).
    pub const CLIENT_PIN: u8 = 0x06;
    /// authenticatorReset (§6.6).
    pub const RESET: u8 = 0x07;
    /// authenticatorGetNextAssertion (§6.3).
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
    /// authenticatorSelection (§6.9).
    pub const SELECTION: u8 = 0x0B;
}

/// A CTAP2 request with its response type, for code generic over commands.
pub trait Request {
    /// What a successful answer decodes to.
    type Response;
    /// `command byte ‖ canonical CBOR parameters` (§8).
    fn encode(&self) -> Result<Vec<u8>>;
    /// Decodes `status byte ‖ CBOR` (status ≠ 0 → [`super::status::error`]).
    fn decode(status_and_cbor: &[u8]) -> Result<Self::Response>;
}

#[cfg(test)]
#[path = "ctap2/hostile_test.rs"]
mod hostile_test;

/// The type of every credential Tessera uses (WebAuthn §5.8.2 "public-key").
pub const PUBLIC_KEY: &str = "public-key";

/// pinUvAuthParam with its pinUvAuthProtocol, as makeCredential and getAssertion carry them
/// (§6.1, §6.2: authenticate(pinUvAuthToken, clientDataHash)).
#[derive(Clone, PartialEq, Eq)]
pub struct PinUvAuth {
    pub protocol: crate::fido::pin::PinProtocol,
    pub param: Vec<u8>,
}

impl PinUvAuth {
    /// The pinUvAuthParam of a makeCredential or getAssertion for `client_data_hash`.
    pub fn for_client_data(
        token: &crate::fido::pin::PinUvAuthToken,
        client_data_hash: &[u8; 32],
    ) -> PinUvAuth {
        PinUvAuth {
            protocol: token.protocol(),
            param: token.authenticate(client_data_hash),
        }
    }
}

/// Shows the protocol only: the parameter proves possession of the token.
impl std::fmt::Debug for PinUvAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinUvAuth({:?}, ..)", self.protocol)
    }
}

/// A PublicKeyCredentialDescriptor `{"id": bytes, "type": "public-key"}` (WebAuthn §5.8.3).
fn credential_descriptor(id: &[u8]) -> ciborium::value::Value {
    use ciborium::value::Value;
    Value::Map(vec![
        (cbor::text("id"), Value::Bytes(id.to_vec())),
        (cbor::text("type"), cbor::text(PUBLIC_KEY)),
    ])
}

//! authenticatorClientPIN (CTAP 2.1 §6.5.5): the subcommands as one enum, and the response.
//! The cryptography (key agreement, pinHashEnc, newPinEnc, pinUvAuthParam) is in
//! [`crate::fido::pin`]; this file only carries its results.

use ciborium::value::Value;
use coset::{AsCborValue as _, CoseKey};

use crate::fido::ctap2::cbor::{self, Fields};
use crate::fido::ctap2::{command, Request};
use crate::fido::pin::{self, PinProtocol};
use crate::{Error, Result};

/// Subcommand numbers (§6.5.5.1).
pub mod subcommand {
    pub const GET_PIN_RETRIES: u8 = 0x01;
    pub const GET_KEY_AGREEMENT: u8 = 0x02;
    pub const SET_PIN: u8 = 0x03;
    pub const CHANGE_PIN: u8 = 0x04;
    /// getPinToken (CTAP 2.0; superseded by 0x09 on CTAP 2.1 keys).
    pub const GET_PIN_TOKEN: u8 = 0x05;
    pub const GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS: u8 = 0x06;
    pub const GET_UV_RETRIES: u8 = 0x07;
    pub const GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS: u8 = 0x09;
}

/// One authenticatorClientPIN request (§6.5.5). `key_agreement` is the platform's COSE key from
/// [`PinProtocol::encapsulate`]; the encrypted and authenticated members come from
/// [`crate::fido::pin`].
#[derive(Clone, PartialEq)]
pub enum ClientPin {
    /// getPINRetries (§6.5.5.2). The protocol is optional for this subcommand; it is sent when
    /// given (CTAP 2.0 keys want it).
    GetPinRetries { protocol: Option<PinProtocol> },
    /// getKeyAgreement (§6.5.5.4).
    GetKeyAgreement { protocol: PinProtocol },
    /// setPIN (§6.5.5.5): pinUvAuthParam = authenticate(shared, newPinEnc).
    SetPin {
        protocol: PinProtocol,
        key_agreement: CoseKey,
        new_pin_enc: Vec<u8>,
        pin_uv_auth_param: Vec<u8>,
    },
    /// changePIN (§6.5.5.6): pinUvAuthParam = authenticate(shared, newPinEnc ‖ pinHashEnc).
    ChangePin {
        protocol: PinProtocol,
        key_agreement: CoseKey,
        pin_hash_enc: Vec<u8>,
        new_pin_enc: Vec<u8>,
        pin_uv_auth_param: Vec<u8>,
    },
    /// getPinToken (§6.5.5.7.1, CTAP 2.0 keys): a token with the mc and ga permissions.
    GetPinToken {
        protocol: PinProtocol,
        key_agreement: CoseKey,
        pin_hash_enc: Vec<u8>,
    },
    /// getPinUvAuthTokenUsingUvWithPermissions (§6.5.5.7.3): built-in UV on the key.
    GetPinUvAuthTokenUsingUvWithPermissions {
        protocol: PinProtocol,
        key_agreement: CoseKey,
        /// Bits of [`crate::fido::pin::permissions`].
        permissions: u8,
        /// Required with the mc and ga permissions.
        rp_id: Option<String>,
    },
    /// getUVRetries (§6.5.5.8).
    GetUvRetries,
    /// getPinUvAuthTokenUsingPinWithPermissions (§6.5.5.7.2).
    GetPinUvAuthTokenUsingPinWithPermissions {
        protocol: PinProtocol,
        key_agreement: CoseKey,
        pin_hash_enc: Vec<u8>,
        permissions: u8,
        rp_id: Option<String>,
    },
}

/// Request members (§6.5.5, table "authenticatorClientPIN parameters").
mod key {
    pub const PIN_UV_AUTH_PROTOCOL: i64 = 0x01;
    pub const SUB_COMMAND: i64 = 0x02;
    pub const KEY_AGREEMENT: i64 = 0x03;
    pub const PIN_UV_AUTH_PARAM: i64 = 0x04;
    pub const NEW_PIN_ENC: i64 = 0x05;
    pub const PIN_HASH_ENC: i64 = 0x06;
    pub const PERMISSIONS: i64 = 0x09;
    pub const RP_ID: i64 = 0x0A;
}

impl ClientPin {
    /// The subcommand number.
    pub fn subcommand(&self) -> u8 {
        match self {
            ClientPin::GetPinRetries { .. } => subcommand::GET_PIN_RETRIES,
            ClientPin::GetKeyAgreement { .. } => subcommand::GET_KEY_AGREEMENT,
            ClientPin::SetPin { .. } => subcommand::SET_PIN,
            ClientPin::ChangePin { .. } => subcommand::CHANGE_PIN,
            ClientPin::GetPinToken { .. } => subcommand::GET_PIN_TOKEN,
            ClientPin::GetPinUvAuthTokenUsingUvWithPermissions { .. } => {
                subcommand::GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS
            }
            ClientPin::GetUvRetries => subcommand::GET_UV_RETRIES,
            ClientPin::GetPinUvAuthTokenUsingPinWithPermissions { .. } => {
                subcommand::GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS
            }
        }
    }

    /// `0x06 ‖ canonical CBOR map`. Errors: [`Error::InvalidArgument`] for permissions of zero.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut map: Vec<(Value, Value)> = Vec::new();
        let mut put = |k: i64, v: Value| map.push((cbor::int(k), v));
        let protocol_value = |p: &PinProtocol| cbor::int(i64::from(p.number()));
        put(key::SUB_COMMAND, cbor::int(i64::from(self.subcommand())));
        match self {
            ClientPin::GetPinRetries { protocol } => {
                if let Some(p) = protocol {
                    put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(p));
                }
            }
            ClientPin::GetKeyAgreement { protocol } => {
                put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(protocol));
            }
            ClientPin::SetPin {
                protocol,
                key_agreement,
                new_pin_enc,
                pin_uv_auth_param,
            } => {
                put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(protocol));
                put(key::KEY_AGREEMENT, cose_value(key_agreement)?);
                put(
                    key::PIN_UV_AUTH_PARAM,
                    Value::Bytes(pin_uv_auth_param.clone()),
                );
                put(key::NEW_PIN_ENC, Value::Bytes(new_pin_enc.clone()));
            }
            ClientPin::ChangePin {
                protocol,
                key_agreement,
                pin_hash_enc,
                new_pin_enc,
                pin_uv_auth_param,
            } => {
                put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(protocol));
                put(key::KEY_AGREEMENT, cose_value(key_agreement)?);
                put(
                    key::PIN_UV_AUTH_PARAM,
                    Value::Bytes(pin_uv_auth_param.clone()),
                );
                put(key::NEW_PIN_ENC, Value::Bytes(new_pin_enc.clone()));
                put(key::PIN_HASH_ENC, Value::Bytes(pin_hash_enc.clone()));
            }
            ClientPin::GetPinToken {
                protocol,
                key_agreement,
                pin_hash_enc,
            } => {
                put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(protocol));
                put(key::KEY_AGREEMENT, cose_value(key_agreement)?);
                put(key::PIN_HASH_ENC, Value::Bytes(pin_hash_enc.clone()));
            }
            ClientPin::GetPinUvAuthTokenUsingUvWithPermissions {
                protocol,
                key_agreement,
                permissions,
                rp_id,
            } => {
                put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(protocol));
                put(key::KEY_AGREEMENT, cose_value(key_agreement)?);
                put(key::PERMISSIONS, permissions_value(*permissions)?);
                if let Some(rp_id) = rp_id {
                    put(key::RP_ID, cbor::text(rp_id));
                }
            }
            ClientPin::GetUvRetries => {}
            ClientPin::GetPinUvAuthTokenUsingPinWithPermissions {
                protocol,
                key_agreement,
                pin_hash_enc,
                permissions,
                rp_id,
            } => {
                put(key::PIN_UV_AUTH_PROTOCOL, protocol_value(protocol));
                put(key::KEY_AGREEMENT, cose_value(key_agreement)?);
                put(key::PIN_HASH_ENC, Value::Bytes(pin_hash_enc.clone()));
                put(key::PERMISSIONS, permissions_value(*permissions)?);
                if let Some(rp_id) = rp_id {
                    put(key::RP_ID, cbor::text(rp_id));
                }
            }
        }
        cbor::request(command::CLIENT_PIN, Some(map))
    }
}

impl Request for ClientPin {
    type Response = ClientPinResponse;
    fn encode(&self) -> Result<Vec<u8>> {
        ClientPin::encode(self)
    }
    fn decode(status_and_cbor: &[u8]) -> Result<ClientPinResponse> {
        ClientPinResponse::decode(status_and_cbor)
    }
}

/// Shows the subcommand only: the members are key material and encrypted PINs.
impl std::fmt::Debug for ClientPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientPin(subcommand 0x{:02X}, ..)", self.subcommand())
    }
}

/// The authenticatorClientPIN response (§6.5.5, table "authenticatorClientPIN response"): which
/// members are present depends on the subcommand.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ClientPinResponse {
    /// 0x01 keyAgreement: the authenticator's key-agreement key (getKeyAgreement).
    pub key_agreement: Option<p256::PublicKey>,
    /// 0x02 pinUvAuthToken, encrypted ([`PinProtocol::decrypt_token`]).
    pub pin_uv_auth_token: Option<Vec<u8>>,
    /// 0x03 pinRetries.
    pub pin_retries: Option<u8>,
    /// 0x04 powerCycleState: a power cycle is needed before the next PIN attempt.
    pub power_cycle_state: Option<bool>,
    /// 0x05 uvRetries.
    pub uv_retries: Option<u8>,
}

const WHAT: &str = "clientPIN response";

impl ClientPinResponse {
    /// Decodes `status ‖ CBOR map` (setPIN and changePIN answer with the status alone).
    pub fn decode(status_and_cbor: &[u8]) -> Result<ClientPinResponse> {
        let mut f = Fields::from_body(cbor::body(status_and_cbor)?, WHAT)?;
        let key_agreement = match f.take(0x01) {
            Some(v) => {
                let cose = CoseKey::from_cbor_value(v)
                    .map_err(|e| cbor::malformed(WHAT, &format!("keyAgreement: {e:?}")))?;
                Some(pin::authenticator_key(&cose)?)
            }
            None => None,
        };
        Ok(ClientPinResponse {
            key_agreement,
            pin_uv_auth_token: f
                .take(0x02)
                .map(|v| cbor::bytes(v, WHAT, "pinUvAuthToken"))
                .transpose()?,
            pin_retries: f
                .take(0x03)
                .map(|v| cbor::unsigned(v, WHAT, "pinRetries"))
                .transpose()?,
            power_cycle_state: f
                .take(0x04)
                .map(|v| cbor::boolean(v, WHAT, "powerCycleState"))
                .transpose()?,
            uv_retries: f
                .take(0x05)
                .map(|v| cbor::unsigned(v, WHAT, "uvRetries"))
                .transpose()?,
        })
    }

    /// keyAgreement, which the subcommand must have returned.
    pub fn need_key_agreement(&self) -> Result<p256::PublicKey> {
        self.key_agreement
            .ok_or_else(|| cbor::malformed(WHAT, "keyAgreement (0x01) missing"))
    }

    /// pinUvAuthToken, which the subcommand must have returned.
    pub fn need_pin_uv_auth_token(&self) -> Result<&[u8]> {
        self.pin_uv_auth_token
            .as_deref()
            .ok_or_else(|| cbor::malformed(WHAT, "pinUvAuthToken (0x02) missing"))
    }

    /// pinRetries, which the subcommand must have returned.
    pub fn need_pin_retries(&self) -> Result<u8> {
        self.pin_retries
            .ok_or_else(|| cbor::malformed(WHAT, "pinRetries (0x03) missing"))
    }

    /// uvRetries, which the subcommand must have returned.
    pub fn need_uv_retries(&self) -> Result<u8> {
        self.uv_retries
            .ok_or_else(|| cbor::malformed(WHAT, "uvRetries (0x05) missing"))
    }
}

/// Shows which members are present, not the encrypted token.
impl std::fmt::Debug for ClientPinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPinResponse")
            .field("key_agreement", &self.key_agreement.is_some())
            .field("pin_uv_auth_token", &self.pin_uv_auth_token.is_some())
            .field("pin_retries", &self.pin_retries)
            .field("power_cycle_state", &self.power_cycle_state)
            .field("uv_retries", &self.uv_retries)
            .finish()
    }
}

/// The COSE key as a CBOR value, with its members in canonical order (the request encoder
/// canonicalises every map again anyway).
fn cose_value(key: &CoseKey) -> Result<Value> {
    key.clone()
        .to_cbor_value()
        .map_err(|e| Error::Internal(format!("encoding a COSE key: {e:?}")))
}

fn permissions_value(permissions: u8) -> Result<Value> {
    if permissions == 0 {
        return Err(Error::InvalidArgument(
            "a pinUvAuthToken without permissions".into(),
        ));
    }
    Ok(cbor::int(i64::from(permissions)))
}

#[cfg(test)]
#[path = "client_pin_test.rs"]
mod tests;

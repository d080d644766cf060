//! authenticatorMakeCredential (CTAP 2.1 §6.1): enrollment creates a fresh, non-discoverable
//! credential (rk absent) for the configured relying party, excluding the user's existing ones.

use ciborium::value::Value;

use crate::fido::authdata::{AttestedCredentialData, AuthenticatorData};
use crate::fido::ctap2::cbor::{self, Fields};
use crate::fido::ctap2::{command, credential_descriptor, PinUvAuth, Request, PUBLIC_KEY};
use crate::{Error, Result};

/// The authenticatorMakeCredential request (§6.1, the members Tessera sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeCredential {
    /// 0x01 clientDataHash.
    pub client_data_hash: [u8; 32],
    /// 0x02 rp.id.
    pub rp_id: String,
    /// 0x02 rp.name (optional).
    pub rp_name: Option<String>,
    /// 0x03 user.id, the user handle (at most 64 bytes, WebAuthn §5.4.3).
    pub user_id: Vec<u8>,
    /// 0x03 user.name.
    pub user_name: Option<String>,
    /// 0x03 user.displayName.
    pub user_display_name: Option<String>,
    /// 0x04 pubKeyCredParams: COSE algorithms, most preferred first (-7 ES256, -8 EdDSA).
    pub algorithms: Vec<i64>,
    /// 0x05 excludeList: credential ids the key must not already hold.
    pub exclude_list: Vec<Vec<u8>>,
    /// options.rk: a discoverable credential (Tessera: false, the option is then left out).
    pub rk: bool,
    /// options.uv: built-in user verification (left out when `None`).
    pub uv: Option<bool>,
    /// 0x08 pinUvAuthParam and 0x09 pinUvAuthProtocol.
    pub pin_uv_auth: Option<PinUvAuth>,
}

/// Largest user handle (WebAuthn §5.4.3).
pub const MAX_USER_ID_LEN: usize = 64;

impl MakeCredential {
    /// `0x01 ‖ canonical CBOR map`. Errors: [`Error::InvalidArgument`] for an empty or over-long
    /// user handle or an empty algorithm list.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.user_id.is_empty() || self.user_id.len() > MAX_USER_ID_LEN {
            return Err(Error::InvalidArgument(
                "a user handle has 1 to 64 bytes".into(),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(Error::InvalidArgument(
                "no credential algorithm to ask for".into(),
            ));
        }
        let mut rp = vec![(cbor::text("id"), cbor::text(&self.rp_id))];
        if let Some(name) = &self.rp_name {
            rp.push((cbor::text("name"), cbor::text(name)));
        }
        let mut user = vec![(cbor::text("id"), Value::Bytes(self.user_id.clone()))];
        if let Some(name) = &self.user_name {
            user.push((cbor::text("name"), cbor::text(name)));
        }
        if let Some(name) = &self.user_display_name {
            user.push((cbor::text("displayName"), cbor::text(name)));
        }
        let params = self
            .algorithms
            .iter()
            .map(|alg| {
                Value::Map(vec![
                    (cbor::text("alg"), cbor::int(*alg)),
                    (cbor::text("type"), cbor::text(PUBLIC_KEY)),
                ])
            })
            .collect();
        let mut map = vec![
            (
                cbor::int(0x01),
                Value::Bytes(self.client_data_hash.to_vec()),
            ),
            (cbor::int(0x02), Value::Map(rp)),
            (cbor::int(0x03), Value::Map(user)),
            (cbor::int(0x04), Value::Array(params)),
        ];
        if !self.exclude_list.is_empty() {
            let list = self
                .exclude_list
                .iter()
                .map(|id| credential_descriptor(id))
                .collect();
            map.push((cbor::int(0x05), Value::Array(list)));
        }
        let mut options = Vec::new();
        if self.rk {
            options.push((cbor::text("rk"), Value::Bool(true)));
        }
        if let Some(uv) = self.uv {
            options.push((cbor::text("uv"), Value::Bool(uv)));
        }
        if !options.is_empty() {
            map.push((cbor::int(0x07), Value::Map(options)));
        }
        if let Some(auth) = &self.pin_uv_auth {
            map.push((cbor::int(0x08), Value::Bytes(auth.param.clone())));
            map.push((
                cbor::int(0x09),
                cbor::int(i64::from(auth.protocol.number())),
            ));
        }
        cbor::request(command::MAKE_CREDENTIAL, Some(map))
    }
}

impl Request for MakeCredential {
    type Response = MakeCredentialResponse;
    fn encode(&self) -> Result<Vec<u8>> {
        MakeCredential::encode(self)
    }
    fn decode(status_and_cbor: &[u8]) -> Result<MakeCredentialResponse> {
        MakeCredentialResponse::decode(status_and_cbor)
    }
}

/// The authenticatorMakeCredential response: an attestation object (§6.1.2).
#[derive(Debug, Clone, PartialEq)]
pub struct MakeCredentialResponse {
    /// 0x01 fmt: the attestation statement format ("packed", "fido-u2f", "none", …).
    pub fmt: String,
    /// 0x02 authData, parsed; its attested credential data is always present here.
    pub auth_data: AuthenticatorData,
    /// 0x02 authData as sent.
    pub auth_data_raw: Vec<u8>,
    /// 0x03 attStmt, kept as the key sent it (Tessera keeps no attestation roots).
    pub att_stmt: Value,
    /// 0x04 epAtt.
    pub enterprise_attestation: Option<bool>,
}

const WHAT: &str = "makeCredential response";

impl MakeCredentialResponse {
    /// Decodes `status ‖ CBOR map`. Errors: the status error, or [`Error::Device`] for a
    /// malformed answer, including authenticator data without attested credential data.
    pub fn decode(status_and_cbor: &[u8]) -> Result<MakeCredentialResponse> {
        let mut f = Fields::from_body(cbor::body(status_and_cbor)?, WHAT)?;
        let fmt = cbor::text_string(f.need(0x01, "fmt")?, WHAT, "fmt")?;
        let auth_data_raw = cbor::bytes(f.need(0x02, "authData")?, WHAT, "authData")?;
        let auth_data = AuthenticatorData::parse(&auth_data_raw)?;
        if auth_data.attested_credential.is_none() {
            return Err(cbor::malformed(
                WHAT,
                "authData without attested credential data",
            ));
        }
        let att_stmt = f.need(0x03, "attStmt")?;
        if !matches!(att_stmt, Value::Map(_)) {
            return Err(cbor::malformed(WHAT, "attStmt is not a map"));
        }
        let enterprise_attestation = f
            .take(0x04)
            .map(|v| cbor::boolean(v, WHAT, "epAtt"))
            .transpose()?;
        Ok(MakeCredentialResponse {
            fmt,
            auth_data,
            auth_data_raw,
            att_stmt,
            enterprise_attestation,
        })
    }

    /// The new credential (id, public key, AAGUID).
    pub fn credential(&self) -> Result<&AttestedCredentialData> {
        self.auth_data
            .attested_credential
            .as_ref()
            .ok_or_else(|| cbor::malformed(WHAT, "authData without attested credential data"))
    }
}

#[cfg(test)]
#[path = "make_credential_test.rs"]
mod tests;

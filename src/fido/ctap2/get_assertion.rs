//! authenticatorGetAssertion (CTAP 2.1 §6.2) and authenticatorGetNextAssertion (§6.3): the
//! signature of an authentication, and the silent pre-flight (up=false) that finds which key
//! holds one of the user's credentials without asking for a touch.

use ciborium::value::Value;

use crate::fido::authdata::AuthenticatorData;
use crate::fido::ctap2::cbor::{self, Fields};
use crate::fido::ctap2::{command, credential_descriptor, PinUvAuth, Request, PUBLIC_KEY};
use crate::{Error, Result};

/// The authenticatorGetAssertion request (§6.2, the members Tessera sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAssertion {
    /// 0x01 rpId.
    pub rp_id: String,
    /// 0x02 clientDataHash.
    pub client_data_hash: [u8; 32],
    /// 0x03 allowList: credential ids (split by the caller to maxCredentialCountInList).
    pub allow_list: Vec<Vec<u8>>,
    /// options.up: false for the silent pre-flight (the option is sent only when false: true
    /// is the default).
    pub up: bool,
    /// options.uv (left out when `None`).
    pub uv: Option<bool>,
    /// 0x06 pinUvAuthParam and 0x07 pinUvAuthProtocol.
    pub pin_uv_auth: Option<PinUvAuth>,
}

impl GetAssertion {
    /// `0x02 ‖ canonical CBOR map`. Errors: [`Error::InvalidArgument`] for an empty allowList
    /// (Tessera never asks for discoverable credentials).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.allow_list.is_empty() {
            return Err(Error::InvalidArgument("an empty allowList".into()));
        }
        let list = self
            .allow_list
            .iter()
            .map(|id| credential_descriptor(id))
            .collect();
        let mut map = vec![
            (cbor::int(0x01), cbor::text(&self.rp_id)),
            (
                cbor::int(0x02),
                Value::Bytes(self.client_data_hash.to_vec()),
            ),
            (cbor::int(0x03), Value::Array(list)),
        ];
        let mut options = Vec::new();
        if !self.up {
            options.push((cbor::text("up"), Value::Bool(false)));
        }
        if let Some(uv) = self.uv {
            options.push((cbor::text("uv"), Value::Bool(uv)));
        }
        if !options.is_empty() {
            map.push((cbor::int(0x05), Value::Map(options)));
        }
        if let Some(auth) = &self.pin_uv_auth {
            map.push((cbor::int(0x06), Value::Bytes(auth.param.clone())));
            map.push((
                cbor::int(0x07),
                cbor::int(i64::from(auth.protocol.number())),
            ));
        }
        cbor::request(command::GET_ASSERTION, Some(map))
    }
}

impl Request for GetAssertion {
    type Response = GetAssertionResponse;
    fn encode(&self) -> Result<Vec<u8>> {
        GetAssertion::encode(self)
    }
    fn decode(status_and_cbor: &[u8]) -> Result<GetAssertionResponse> {
        GetAssertionResponse::decode(status_and_cbor)
    }
}

/// authenticatorGetNextAssertion (§6.3): the next of `numberOfCredentials` assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetNextAssertion;

impl GetNextAssertion {
    /// The single command byte 0x08.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::request(command::GET_NEXT_ASSERTION, None)
    }
}

impl Request for GetNextAssertion {
    type Response = GetAssertionResponse;
    fn encode(&self) -> Result<Vec<u8>> {
        GetNextAssertion::encode(self)
    }
    fn decode(status_and_cbor: &[u8]) -> Result<GetAssertionResponse> {
        GetAssertionResponse::decode(status_and_cbor)
    }
}

/// The authenticatorGetAssertion response (§6.2.2).
#[derive(Debug, Clone, PartialEq)]
pub struct GetAssertionResponse {
    /// 0x01 credential.id; `None` when the key left it out, which §6.2.2 allows when the
    /// allowList had exactly one entry (that one, then).
    pub credential_id: Option<Vec<u8>>,
    /// 0x02 authData, parsed.
    pub auth_data: AuthenticatorData,
    /// 0x02 authData as sent: the signature covers these bytes.
    pub auth_data_raw: Vec<u8>,
    /// 0x03 signature (ES256: DER; EdDSA: 64 bytes).
    pub signature: Vec<u8>,
    /// 0x04 user.id, for discoverable credentials only.
    pub user_id: Option<Vec<u8>>,
    /// 0x05 numberOfCredentials.
    pub number_of_credentials: Option<u64>,
    /// 0x06 userSelected.
    pub user_selected: Option<bool>,
}

const WHAT: &str = "getAssertion response";

impl GetAssertionResponse {
    /// Decodes `status ‖ CBOR map`; NO_CREDENTIALS (the pre-flight's "not this key") is
    /// [`Error::NotEnrolled`].
    pub fn decode(status_and_cbor: &[u8]) -> Result<GetAssertionResponse> {
        let mut f = Fields::from_body(cbor::body(status_and_cbor)?, WHAT)?;
        let credential_id = f.take(0x01).map(descriptor_id).transpose()?;
        let auth_data_raw = cbor::bytes(f.need(0x02, "authData")?, WHAT, "authData")?;
        let auth_data = AuthenticatorData::parse(&auth_data_raw)?;
        let signature = cbor::bytes(f.need(0x03, "signature")?, WHAT, "signature")?;
        let user_id = match f.take(0x04) {
            Some(user) => {
                let id = cbor::text_map(user, WHAT, "user")?
                    .into_iter()
                    .find(|(k, _)| k == "id")
                    .ok_or_else(|| cbor::malformed(WHAT, "user without id"))?
                    .1;
                Some(cbor::bytes(id, WHAT, "user.id")?)
            }
            None => None,
        };
        let number_of_credentials = f
            .take(0x05)
            .map(|v| cbor::unsigned(v, WHAT, "numberOfCredentials"))
            .transpose()?;
        let user_selected = f
            .take(0x06)
            .map(|v| cbor::boolean(v, WHAT, "userSelected"))
            .transpose()?;
        Ok(GetAssertionResponse {
            credential_id,
            auth_data,
            auth_data_raw,
            signature,
            user_id,
            number_of_credentials,
            user_selected,
        })
    }

    /// The credential that signed: the one named, or the single entry of `allow_list` when the
    /// key named none. Errors: [`Error::Device`] when the key named none with a longer list, or
    /// named one that was not asked for.
    pub fn credential<'a>(&'a self, allow_list: &'a [Vec<u8>]) -> Result<&'a [u8]> {
        match (&self.credential_id, allow_list) {
            (Some(id), list) if list.iter().any(|c| c == id) => Ok(id),
            (Some(_), _) => Err(cbor::malformed(WHAT, "a credential that was not asked for")),
            (None, [only]) => Ok(only),
            (None, _) => Err(cbor::malformed(WHAT, "no credential named")),
        }
    }
}

/// The id of a PublicKeyCredentialDescriptor; its type must be "public-key".
fn descriptor_id(v: Value) -> Result<Vec<u8>> {
    let mut id = None;
    let mut ty = None;
    for (k, v) in cbor::text_map(v, WHAT, "credential")? {
        match k.as_str() {
            "id" => id = Some(cbor::bytes(v, WHAT, "credential.id")?),
            "type" => ty = Some(cbor::text_string(v, WHAT, "credential.type")?),
            _ => {}
        }
    }
    match (id, ty) {
        (Some(id), Some(ty)) if ty == PUBLIC_KEY => Ok(id),
        (Some(_), Some(ty)) => Err(cbor::malformed(WHAT, &format!("credential of type {ty:?}"))),
        _ => Err(cbor::malformed(WHAT, "credential without id or type")),
    }
}

#[cfg(test)]
#[path = "get_assertion_test.rs"]
mod tests;

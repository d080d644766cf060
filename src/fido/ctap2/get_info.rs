//! authenticatorGetInfo (CTAP 2.1 §6.4): what the key is and offers. Unknown keys are ignored
//! (newer keys add members), known ones must have their type.

use ciborium::value::Value;

use crate::fido::ctap2::cbor::{self, Fields};
use crate::fido::ctap2::{command, Request, PUBLIC_KEY};
use crate::Result;

/// The authenticatorGetInfo request (no parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetInfo;

impl GetInfo {
    /// The single command byte 0x04.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::request(command::GET_INFO, None)
    }
}

impl Request for GetInfo {
    type Response = Info;
    fn encode(&self) -> Result<Vec<u8>> {
        GetInfo::encode(self)
    }
    fn decode(status_and_cbor: &[u8]) -> Result<Info> {
        Info::decode(status_and_cbor)
    }
}

/// The authenticatorGetInfo response (§6.4), the members Tessera uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    /// 0x01 versions: "FIDO_2_0", "FIDO_2_1", "FIDO_2_1_PRE", "U2F_V2", … (required).
    pub versions: Vec<String>,
    /// 0x02 extensions.
    pub extensions: Vec<String>,
    /// 0x03 aaguid (required, 16 bytes).
    pub aaguid: [u8; 16],
    /// 0x04 options, as sent; see [`Info::option`] for the spec's defaults.
    pub options: Vec<(String, bool)>,
    /// 0x05 maxMsgSize (default 1024, §6.4).
    pub max_msg_size: Option<u64>,
    /// 0x06 pinUvAuthProtocols, in the key's order of preference.
    pub pin_uv_auth_protocols: Vec<u64>,
    /// 0x07 maxCredentialCountInList.
    pub max_credential_count_in_list: Option<u64>,
    /// 0x08 maxCredentialIdLength.
    pub max_credential_id_length: Option<u64>,
    /// 0x09 transports ("usb", "nfc", …).
    pub transports: Vec<String>,
    /// 0x0A algorithms: the COSE identifiers of the "public-key" entries, in the key's order
    /// (entries of other types are skipped). Empty when absent: the key did not say.
    pub algorithms: Vec<i64>,
    /// 0x0C forcePINChange.
    pub force_pin_change: Option<bool>,
    /// 0x0D minPINLength.
    pub min_pin_length: Option<u64>,
    /// 0x0E firmwareVersion.
    pub firmware_version: Option<u64>,
    /// 0x11 preferredPlatformUVAttempts.
    pub preferred_platform_uv_attempts: Option<u64>,
    /// 0x12 uvModality (FIDO Registry §3.1 bit flags: 0x02 fingerprint, 0x40 face, …).
    pub uv_modality: Option<u64>,
}

/// getInfo members (§6.4, table "authenticatorGetInfo response structure").
mod key {
    pub const VERSIONS: i64 = 0x01;
    pub const EXTENSIONS: i64 = 0x02;
    pub const AAGUID: i64 = 0x03;
    pub const OPTIONS: i64 = 0x04;
    pub const MAX_MSG_SIZE: i64 = 0x05;
    pub const PIN_UV_AUTH_PROTOCOLS: i64 = 0x06;
    pub const MAX_CREDENTIAL_COUNT_IN_LIST: i64 = 0x07;
    pub const MAX_CREDENTIAL_ID_LENGTH: i64 = 0x08;
    pub const TRANSPORTS: i64 = 0x09;
    pub const ALGORITHMS: i64 = 0x0A;
    pub const FORCE_PIN_CHANGE: i64 = 0x0C;
    pub const MIN_PIN_LENGTH: i64 = 0x0D;
    pub const FIRMWARE_VERSION: i64 = 0x0E;
    pub const PREFERRED_PLATFORM_UV_ATTEMPTS: i64 = 0x11;
    pub const UV_MODALITY: i64 = 0x12;
}

/// Default maxMsgSize when the key does not say (§6.4).
pub const DEFAULT_MAX_MSG_SIZE: u64 = 1024;

const WHAT: &str = "getInfo response";

impl Info {
    /// Decodes `status ‖ CBOR map`.
    pub fn decode(status_and_cbor: &[u8]) -> Result<Info> {
        let mut f = Fields::from_body(cbor::body(status_and_cbor)?, WHAT)?;
        let aaguid = cbor::bytes(f.need(key::AAGUID, "aaguid")?, WHAT, "aaguid")?;
        let aaguid: [u8; 16] = aaguid
            .try_into()
            .map_err(|_| cbor::malformed(WHAT, "aaguid is not 16 bytes"))?;
        let versions = texts(f.need(key::VERSIONS, "versions")?, "versions")?;
        let options = match f.take(key::OPTIONS) {
            Some(v) => cbor::text_map(v, WHAT, "options")?
                .into_iter()
                .map(|(k, v)| {
                    let on = cbor::boolean(v, WHAT, &format!("option {k}"))?;
                    Ok((k, on))
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Info {
            versions,
            extensions: opt(&mut f, key::EXTENSIONS, |v| texts(v, "extensions"))?
                .unwrap_or_default(),
            aaguid,
            options,
            max_msg_size: uint(&mut f, key::MAX_MSG_SIZE, "maxMsgSize")?,
            pin_uv_auth_protocols: opt(&mut f, key::PIN_UV_AUTH_PROTOCOLS, |v| {
                uints(v, "pinUvAuthProtocols")
            })?
            .unwrap_or_default(),
            max_credential_count_in_list: uint(
                &mut f,
                key::MAX_CREDENTIAL_COUNT_IN_LIST,
                "maxCredentialCountInList",
            )?,
            max_credential_id_length: uint(
                &mut f,
                key::MAX_CREDENTIAL_ID_LENGTH,
                "maxCredentialIdLength",
            )?,
            transports: opt(&mut f, key::TRANSPORTS, |v| texts(v, "transports"))?
                .unwrap_or_default(),
            algorithms: opt(&mut f, key::ALGORITHMS, algorithms)?.unwrap_or_default(),
            force_pin_change: opt(&mut f, key::FORCE_PIN_CHANGE, |v| {
                cbor::boolean(v, WHAT, "forcePINChange")
            })?,
            min_pin_length: uint(&mut f, key::MIN_PIN_LENGTH, "minPINLength")?,
            firmware_version: uint(&mut f, key::FIRMWARE_VERSION, "firmwareVersion")?,
            preferred_platform_uv_attempts: uint(
                &mut f,
                key::PREFERRED_PLATFORM_UV_ATTEMPTS,
                "preferredPlatformUVAttempts",
            )?,
            uv_modality: uint(&mut f, key::UV_MODALITY, "uvModality")?,
        })
    }

    /// An option's value with the defaults of §6.4 when absent: `plat` false, `rk` false,
    /// `clientPin` absent (`None`: not supported), `up` true, `uv` absent (`None`), others
    /// absent. `Some(false)` for clientPin means "supported, no PIN set".
    pub fn option(&self, name: &str) -> Option<bool> {
        if let Some((_, v)) = self.options.iter().find(|(k, _)| k == name) {
            return Some(*v);
        }
        match name {
            "plat" | "rk" => Some(false),
            "up" => Some(true),
            _ => None,
        }
    }

    /// Whether `versions` lists `version`.
    pub fn has_version(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Whether the key speaks CTAP 2.1 (or its pre-release), where getPinUvAuthTokenUsing…
    /// WithPermissions and authenticatorSelection exist.
    pub fn is_ctap21(&self) -> bool {
        self.has_version("FIDO_2_1") || self.has_version("FIDO_2_1_PRE")
    }

    /// maxMsgSize, or its default of 1024 bytes.
    pub fn max_msg_size(&self) -> u64 {
        self.max_msg_size.unwrap_or(DEFAULT_MAX_MSG_SIZE)
    }
}

fn opt<T>(f: &mut Fields, k: i64, parse: impl FnOnce(Value) -> Result<T>) -> Result<Option<T>> {
    f.take(k).map(parse).transpose()
}

fn uint(f: &mut Fields, k: i64, name: &str) -> Result<Option<u64>> {
    opt(f, k, |v| cbor::unsigned(v, WHAT, name))
}

fn texts(v: Value, name: &str) -> Result<Vec<String>> {
    cbor::array(v, WHAT, name)?
        .into_iter()
        .map(|t| cbor::text_string(t, WHAT, name))
        .collect()
}

fn uints(v: Value, name: &str) -> Result<Vec<u64>> {
    cbor::array(v, WHAT, name)?
        .into_iter()
        .map(|t| cbor::unsigned(t, WHAT, name))
        .collect()
}

/// The algorithms member: an array of PublicKeyCredentialParameters `{"alg": int, "type": text}`
/// (WebAuthn §5.3); entries of a type other than "public-key" are skipped (§6.4 "ignore").
fn algorithms(v: Value) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in cbor::array(v, WHAT, "algorithms")? {
        let mut alg = None;
        let mut ty = None;
        for (k, v) in cbor::text_map(entry, WHAT, "algorithms entry")? {
            match k.as_str() {
                "alg" => alg = Some(cbor::integer(v, WHAT, "alg")?),
                "type" => ty = Some(cbor::text_string(v, WHAT, "type")?),
                _ => {}
            }
        }
        match (alg, ty) {
            (Some(alg), Some(ty)) if ty == PUBLIC_KEY => out.push(alg),
            (Some(_), Some(_)) => {}
            _ => {
                return Err(cbor::malformed(
                    WHAT,
                    "algorithms entry without alg or type",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "get_info_test.rs"]
mod tests;

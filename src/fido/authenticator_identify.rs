//! What a FIDO key is and can do: getInfo on CTAP2 keys (CTAP 2.1 §6.4), the VERSION command on
//! U2F-only keys (U2F raw message formats §6), kept for the insertion so that every later
//! operation knows the key's options, limits and protocols without asking again.

use std::time::Duration;

use super::authenticator::{Call, FidoAuthenticator};
use super::authenticator_ctap as ctap;
use super::link::{CtapLink, LinkContext};
use crate::authenticator::{DeviceIdentity, Interaction};
use crate::{Error, Result};

/// What getInfo said, in the terms the flows use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    /// versions ("FIDO_2_1", "FIDO_2_0", "U2F_V2", …).
    pub(crate) versions: Vec<String>,
    /// aaguid (all zero when the key does not say, and for U2F keys).
    pub(crate) aaguid: [u8; 16],
    /// options.clientPin: `Some(true)` a PIN is set, `Some(false)` one can be, `None` no PIN.
    pub(crate) client_pin: Option<bool>,
    /// options.uv: `Some(true)` built-in user verification is configured.
    pub(crate) uv: Option<bool>,
    /// options.pinUvAuthToken: the key has the CTAP 2.1 token commands with permissions.
    pub(crate) pin_uv_auth_token: bool,
    /// What the built-in UV verifies, as RFC 8176 names it: "fpt" (options bioEnroll or
    /// userVerificationMgmtPreview present, or uvModality says a fingerprint), "face" (uvModality
    /// says a face); `None` when the key does not say.
    pub(crate) uv_kind: Option<&'static str>,
    /// maxMsgSize.
    pub(crate) max_msg_size: Option<usize>,
    /// maxCredentialCountInList.
    pub(crate) max_credential_count_in_list: Option<usize>,
    /// maxCredentialIdLength.
    pub(crate) max_credential_id_length: Option<usize>,
    /// pinUvAuthProtocols, in the key's order of preference.
    pub(crate) pin_protocols: Vec<u8>,
    /// algorithms (COSE identifiers); empty when the key does not say (then ES256, §6.4).
    pub(crate) algorithms: Vec<i64>,
    /// minPINLength, in code points (at least 4, §6.5.1).
    pub(crate) min_pin_length: Option<u32>,
    /// forcePINChange: the key takes no PIN until it is changed.
    pub(crate) force_pin_change: bool,
    /// options.makeCredUvNotRqd: the key makes a (non-discoverable) credential without user
    /// verification even when it is protected by a PIN or built-in UV (CTAP 2.1 §6.1.2 step 6).
    pub(crate) make_cred_uv_not_rqd: bool,
    /// The key speaks only CTAP1/U2F.
    pub(crate) u2f_only: bool,
}

impl KeyInfo {
    /// A U2F-only key.
    pub(crate) fn u2f() -> KeyInfo {
        KeyInfo {
            versions: vec!["U2F_V2".into()],
            u2f_only: true,
            ..KeyInfo::default()
        }
    }

    /// A CTAP 2.1 key: it has authenticatorSelection (§6.9).
    pub(crate) fn ctap21(&self) -> bool {
        self.versions.iter().any(|v| v == "FIDO_2_1")
    }

    /// A PIN is set on the key.
    pub(crate) fn pin_set(&self) -> bool {
        self.client_pin == Some(true)
    }

    /// The key verifies the user itself (fingerprint, …), with a pinUvAuthToken (2.1) or inline
    /// (2.0: option uv in the command).
    pub(crate) fn builtin_uv(&self) -> bool {
        self.uv == Some(true)
    }

    /// The key takes getPinUvAuthToken*WithPermissions (§6.5.5.7.2): CTAP 2.1 keys say so with
    /// option pinUvAuthToken; a 2.0 key has getPinToken only.
    pub(crate) fn permissions(&self) -> bool {
        self.pin_uv_auth_token
    }

    /// The PIN/UV auth protocol to use: two when the key offers it, one otherwise (a CTAP 2.0 key
    /// that lists none has one, §6.5.4).
    pub(crate) fn pin_protocol(&self) -> u8 {
        if self.pin_protocols.contains(&2) {
            2
        } else {
            1
        }
    }

    /// How many credentials one allowList may carry (default 1 when the key does not say).
    pub(crate) fn list_limit(&self) -> usize {
        self.max_credential_count_in_list.unwrap_or(1).max(1)
    }

    /// Whether the key takes credentials of algorithm `cose` (ES256 when it lists none).
    pub(crate) fn supports(&self, cose: i64) -> bool {
        if self.algorithms.is_empty() {
            cose == ctap::COSE_ES256
        } else {
            self.algorithms.contains(&cose)
        }
    }

    /// The device's display name: "FIDO key" and the versions it speaks.
    fn name(&self) -> String {
        if self.versions.is_empty() {
            "FIDO key".into()
        } else {
            format!("FIDO key ({})", self.versions.join(", "))
        }
    }
}

/// getInfo, or the U2F VERSION check when the link speaks no CBOR (or the key refuses getInfo and
/// speaks U2F: some early keys announce CBOR and answer it badly).
pub(super) fn read_info(link: &mut dyn CtapLink, ctx: &mut LinkContext<'_>) -> Result<KeyInfo> {
    let caps = link.capabilities();
    if caps.cbor {
        match ctap::get_info(link, ctx) {
            Ok(info) => return Ok(info),
            Err(e @ (Error::Cancelled | Error::Timeout { .. } | Error::DeviceRemoved)) => {
                return Err(e)
            }
            Err(e) if !caps.msg => return Err(e),
            Err(e) => tracing::debug!("getInfo failed ({e}); trying U2F"),
        }
    }
    if !caps.msg {
        return Err(Error::Device(
            "the key speaks neither CTAP2 nor U2F on this transport".into(),
        ));
    }
    let answer = link.msg(&ctap::u2f_version_apdu(), ctx)?;
    let (data, sw) = split_sw(&answer)?;
    if sw != 0x9000 || data != b"U2F_V2" {
        return Err(Error::Device(format!(
            "the key's U2F VERSION answered {:?} ({sw:04X}), not U2F_V2",
            String::from_utf8_lossy(data)
        )));
    }
    Ok(KeyInfo::u2f())
}

/// A response APDU's data and status word.
pub(super) fn split_sw(answer: &[u8]) -> Result<(&[u8], u16)> {
    match answer {
        [data @ .., sw1, sw2] => Ok((data, u16::from_be_bytes([*sw1, *sw2]))),
        _ => Err(Error::Device(
            "the key answered without a status word".into(),
        )),
    }
}

impl FidoAuthenticator {
    pub(super) async fn identify_key(&self, timeout: Duration) -> Result<DeviceIdentity> {
        // Identification is the daemon's own, on behalf of no caller: uid 0's share.
        let info = self.with_link(Call::silent(0, timeout), read_info).await?;
        self.remember_info(&info);
        Ok(DeviceIdentity {
            // A FIDO key cannot list its non-resident credentials; `holds` asks for each.
            credentials: Vec::new(),
            guid: (info.aaguid != [0; 16]).then_some(info.aaguid),
            name: Some(info.name()),
            device_key: None,
        })
    }

    /// What the key can do: from identification, or read now for request `ix`.
    pub(super) async fn info_for(&self, ix: &dyn Interaction) -> Result<KeyInfo> {
        if let Some(info) = self.cached_info() {
            return Ok(info);
        }
        let call = Call::of(ix, super::authenticator::Waiting::Nobody);
        let info = self.with_link(call, read_info).await?;
        self.remember_info(&info);
        Ok(info)
    }

    /// [`FidoAuthenticator::info_for`] outside a request.
    pub(super) async fn info_silent(&self, uid: u32, timeout: Duration) -> Result<KeyInfo> {
        if let Some(info) = self.cached_info() {
            return Ok(info);
        }
        let info = self
            .with_link(Call::silent(uid, timeout), read_info)
            .await?;
        self.remember_info(&info);
        Ok(info)
    }

    /// RFC 8176 methods: a hardware key and the user's presence (a touch, every FIDO assertion),
    /// and, with user verification, how the key verifies the user and "mfa".
    pub(super) fn amr(&self, verified: bool) -> Vec<String> {
        let mut amr = vec!["hwk".to_owned(), "user".to_owned()];
        if verified {
            let info = self.cached_info().unwrap_or_default();
            amr.push(uv_method(&info, false).into());
            amr.push("mfa".into());
        }
        amr
    }
}

/// The RFC 8176 method of the key's user verification: what its built-in UV verifies when it
/// says ("fpt", "face"; unless `pin_used`: it fell back to the PIN), "pin" otherwise (a built-in
/// UV that does not say what it reads has no RFC 8176 name of its own).
pub(super) fn uv_method(info: &KeyInfo, pin_used: bool) -> &'static str {
    match info.uv_kind {
        Some(kind) if !pin_used && info.builtin_uv() => kind,
        _ => "pin",
    }
}

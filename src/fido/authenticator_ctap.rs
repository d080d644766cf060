//! The CTAP codec as the FIDO authenticator uses it: each authenticator API exchange it needs, in
//! the terms of its flows (what getInfo says it can do, a credential made, an assertion got, a
//! pinUvAuthToken), over a [`CtapLink`]. The codec itself ([`super::ctap2`], [`super::authdata`],
//! [`super::pin`], [`super::u2f`], [`super::status`]) is the ctap module's; this file only puts
//! its commands together, so that the flows read as the specification's steps.

use zeroize::Zeroizing;

use super::authenticator_identify::KeyInfo;
use super::link::{CtapLink, LinkContext};
use crate::{Error, Result};

/// pinUvAuthToken permission mc: makeCredential (CTAP 2.1 §6.5.5.7).
pub(super) const PERMISSION_MC: u8 = 0x01;
/// pinUvAuthToken permission ga: getAssertion (CTAP 2.1 §6.5.5.7).
pub(super) const PERMISSION_GA: u8 = 0x02;

/// COSE algorithm ES256 (RFC 9053 §2.1).
pub(super) const COSE_ES256: i64 = -7;
/// COSE algorithm EdDSA (RFC 9053 §2.2).
pub(super) const COSE_EDDSA: i64 = -8;

/// What proves the user's verification to the key in a makeCredential or getAssertion.
#[derive(Clone)]
pub(super) enum UserCheck {
    /// Touch only (no "uv" option, no pinUvAuthParam).
    Presence,
    /// A CTAP 2.0 key's built-in verification, asked inline with option uv = true.
    InlineUv,
    /// A pinUvAuthToken: pinUvAuthParam = authenticate(token, clientDataHash) (§6.5.6, §6.5.7).
    Token(PinUvToken),
}

/// A pinUvAuthToken and the protocol it was obtained with.
#[derive(Clone)]
pub(super) struct PinUvToken {
    pub(super) protocol: u8,
    pub(super) token: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PinUvToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinUvToken(protocol {}, ..)", self.protocol)
    }
}

/// The flags and counter of authenticator data (WebAuthn §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AuthFlags {
    pub(super) rp_id_hash: [u8; 32],
    pub(super) up: bool,
    pub(super) uv: bool,
    pub(super) sign_count: u32,
}

/// A public key in its stored form, with what the enrollment records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredKey {
    /// COSE algorithm.
    pub(super) cose: i64,
    /// Stored form: es256 SEC1 uncompressed, eddsa the 32 raw bytes.
    pub(super) bytes: Vec<u8>,
    /// RFC 7638 thumbprint.
    pub(super) thumbprint: String,
}

/// makeCredential parameters (CTAP 2.1 §6.1).
pub(super) struct MakeCredential {
    pub(super) client_data_hash: [u8; 32],
    pub(super) rp_id: String,
    pub(super) user_id: Vec<u8>,
    pub(super) user_name: String,
    pub(super) algorithms: Vec<i64>,
    pub(super) exclude: Vec<Vec<u8>>,
    pub(super) check: UserCheck,
}

/// What makeCredential answered: the attested credential.
#[derive(Debug, Clone)]
pub(super) struct MadeCredential {
    pub(super) flags: AuthFlags,
    pub(super) credential_id: Vec<u8>,
    pub(super) key: StoredKey,
}

/// getAssertion parameters (CTAP 2.1 §6.2).
pub(super) struct GetAssertion {
    pub(super) client_data_hash: [u8; 32],
    pub(super) rp_id: String,
    pub(super) allow: Vec<Vec<u8>>,
    pub(super) up: bool,
    pub(super) check: UserCheck,
}

/// What getAssertion answered.
#[derive(Debug, Clone)]
pub(super) struct GotAssertion {
    /// The credential that signed; a key may leave it out when the allowList had one entry.
    pub(super) credential_id: Option<Vec<u8>>,
    /// The authenticator data as signed.
    pub(super) auth_data: Vec<u8>,
    pub(super) flags: AuthFlags,
    pub(super) signature: Vec<u8>,
}

fn not_yet<T>() -> Result<T> {
    Err(Error::Internal("the CTAP codec is not yet wired in".into()))
}

/// authenticatorGetInfo (§6.4).
pub(super) fn get_info(link: &mut dyn CtapLink, ctx: &mut LinkContext<'_>) -> Result<KeyInfo> {
    let _ = (link, ctx);
    not_yet()
}

/// authenticatorMakeCredential (§6.1).
pub(super) fn make_credential(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    params: &MakeCredential,
) -> Result<MadeCredential> {
    let _ = (link, ctx, params);
    not_yet()
}

/// authenticatorGetAssertion (§6.2); `Ok(None)` for CTAP2_ERR_NO_CREDENTIALS.
pub(super) fn get_assertion(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    params: &GetAssertion,
) -> Result<Option<GotAssertion>> {
    let _ = (link, ctx, params);
    not_yet()
}

/// authenticatorClientPIN getPINRetries (§6.5.5.2).
pub(super) fn pin_retries(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: u8,
) -> Result<u8> {
    let _ = (link, ctx, protocol);
    not_yet()
}

/// A pinUvAuthToken for `pin`: getKeyAgreement, then getPinUvAuthTokenUsingPinWithPermissions
/// (`permissions`: §6.5.5.7.2) or, for a CTAP 2.0 key (`None`), getPinToken (§6.5.5.7.1).
pub(super) fn pin_token(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: u8,
    pin: &str,
    permissions: Option<(u8, &str)>,
) -> Result<PinUvToken> {
    let _ = (link, ctx, protocol, pin, permissions);
    not_yet()
}

/// A pinUvAuthToken by the key's built-in verification: getKeyAgreement, then
/// getPinUvAuthTokenUsingUvWithPermissions (§6.5.5.7.3).
pub(super) fn uv_token(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: u8,
    permissions: u8,
    rp_id: &str,
) -> Result<PinUvToken> {
    let _ = (link, ctx, protocol, permissions, rp_id);
    not_yet()
}

/// authenticatorSelection (§6.9).
pub(super) fn selection(link: &mut dyn CtapLink, ctx: &mut LinkContext<'_>) -> Result<()> {
    let _ = (link, ctx);
    not_yet()
}

/// The key stored at enrollment, from its algorithm name ("es256", "eddsa") and bytes.
pub(super) fn stored_key(algorithm: &str, bytes: &[u8]) -> Result<StoredKey> {
    let _ = (algorithm, bytes);
    not_yet()
}

/// Checks `signature` over `message` with `key` (es256: DER ECDSA over SHA-256 of the message;
/// eddsa: Ed25519).
pub(super) fn verify(key: &StoredKey, message: &[u8], signature: &[u8]) -> Result<()> {
    let _ = (key, message, signature);
    not_yet()
}

/// What a U2F REGISTER answered (U2F raw message formats §4.3).
#[derive(Debug, Clone)]
pub(super) struct U2fRegistered {
    pub(super) key_handle: Vec<u8>,
    pub(super) key: StoredKey,
}

/// What a U2F AUTHENTICATE answered (U2F raw message formats §5.4).
#[derive(Debug, Clone)]
pub(super) struct U2fAuthenticated {
    /// The user-presence byte (bit 0: the user touched).
    pub(super) presence: u8,
    pub(super) counter: u32,
    pub(super) signature: Vec<u8>,
}

/// U2F AUTHENTICATE control byte (U2F raw message formats §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum U2fControl {
    /// 0x03: enforce user presence and sign.
    EnforcePresence,
    /// 0x07: check only whether the key handle is the key's (answers 6985 if so, 6A80 if not).
    CheckOnly,
}

/// The U2F VERSION command (U2F raw message formats §6), extended form.
pub(super) fn u2f_version_apdu() -> Vec<u8> {
    vec![0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00]
}

/// The U2F REGISTER command for `challenge` and `application`.
pub(super) fn u2f_register_apdu(challenge: &[u8; 32], application: &[u8; 32]) -> Result<Vec<u8>> {
    let _ = (challenge, application);
    not_yet()
}

/// The REGISTER answer's data (status word removed).
pub(super) fn u2f_registered(data: &[u8]) -> Result<U2fRegistered> {
    let _ = data;
    not_yet()
}

/// The U2F AUTHENTICATE command.
pub(super) fn u2f_authenticate_apdu(
    control: U2fControl,
    challenge: &[u8; 32],
    application: &[u8; 32],
    key_handle: &[u8],
) -> Result<Vec<u8>> {
    let _ = (control, challenge, application, key_handle);
    not_yet()
}

/// The AUTHENTICATE answer's data (status word removed).
pub(super) fn u2f_authenticated(data: &[u8]) -> Result<U2fAuthenticated> {
    let _ = data;
    not_yet()
}

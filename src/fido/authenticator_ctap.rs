//! The CTAP codec as the FIDO authenticator uses it: each authenticator API exchange it needs, in
//! the terms of its flows (what getInfo says it can do, a credential made, an assertion got, a
//! pinUvAuthToken), over a [`CtapLink`]. The codec itself ([`super::ctap2`], [`super::authdata`],
//! [`super::pin`], [`super::u2f`], [`super::status`]) is the ctap module's; this file only puts
//! its commands together, so that the flows read as the specification's steps.

use super::authdata::CredentialPublicKey;
use super::authenticator_identify::KeyInfo;
use super::ctap2::{self, ClientPin, ClientPinResponse, Info, PinUvAuth};
use super::link::{CtapLink, LinkContext};
use super::pin::{self, PinProtocol, PinUvAuthToken};
use super::u2f::{self, AuthenticateMode, U2fAnswer};
use crate::{Error, Result, Secret};

/// pinUvAuthToken permission mc: makeCredential (CTAP 2.1 §6.5.5.7).
pub(super) const PERMISSION_MC: u8 = pin::permissions::MAKE_CREDENTIAL;
/// pinUvAuthToken permission ga: getAssertion (CTAP 2.1 §6.5.5.7).
pub(super) const PERMISSION_GA: u8 = pin::permissions::GET_ASSERTION;

/// COSE algorithm ES256 (RFC 9053 §2.1).
pub(super) const COSE_ES256: i64 = super::cose::COSE_ES256;
/// COSE algorithm EdDSA (RFC 9053 §2.2).
pub(super) const COSE_EDDSA: i64 = super::cose::COSE_EDDSA;

/// CTAP2_ERR_NO_CREDENTIALS (§8.2): none of the allowList is the key's.
const NO_CREDENTIALS: u8 = 0x2E;
/// CTAP2_ERR_INVALID_CREDENTIAL (§8.2): some keys say this for a credential not their own.
const INVALID_CREDENTIAL: u8 = 0x22;
/// CTAP2_ERR_UNSUPPORTED_OPTION (§8.2).
const UNSUPPORTED_OPTION: u8 = 0x2B;
/// CTAP2_ERR_INVALID_OPTION (§8.2).
const INVALID_OPTION: u8 = 0x2C;

/// What proves the user's verification to the key in a makeCredential or getAssertion.
#[derive(Clone)]
pub(super) enum UserCheck {
    /// Touch only (no "uv" option, no pinUvAuthParam).
    Presence,
    /// A CTAP 2.0 key's built-in verification, asked inline with option uv = true.
    InlineUv,
    /// A pinUvAuthToken: pinUvAuthParam = authenticate(token, clientDataHash) (§6.5.6, §6.5.7).
    Token(PinUvAuthToken),
}

impl UserCheck {
    /// The uv option and pinUvAuthParam of a command over `client_data_hash`.
    fn members(&self, client_data_hash: &[u8; 32]) -> (Option<bool>, Option<PinUvAuth>) {
        match self {
            UserCheck::Presence => (None, None),
            UserCheck::InlineUv => (Some(true), None),
            UserCheck::Token(token) => (
                None,
                Some(PinUvAuth::for_client_data(token, client_data_hash)),
            ),
        }
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

impl AuthFlags {
    fn of(data: &super::authdata::AuthenticatorData) -> AuthFlags {
        AuthFlags {
            rp_id_hash: data.rp_id_hash,
            up: data.flags.up(),
            uv: data.flags.uv(),
            sign_count: data.sign_count,
        }
    }
}

/// A public key in its stored form, with what the enrollment records of it.
#[derive(Debug, Clone)]
pub(super) struct StoredKey {
    /// COSE algorithm.
    pub(super) cose: i64,
    /// Stored form: es256 SEC1 uncompressed, eddsa the 32 raw bytes.
    pub(super) bytes: Vec<u8>,
    /// RFC 7638 thumbprint.
    pub(super) thumbprint: String,
    key: CredentialPublicKey,
}

impl StoredKey {
    fn of(key: CredentialPublicKey) -> StoredKey {
        StoredKey {
            cose: key.cose_algorithm(),
            bytes: key.to_stored(),
            thumbprint: key.thumbprint(),
            key,
        }
    }
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

/// authenticatorGetInfo (§6.4).
pub(super) fn get_info(link: &mut dyn CtapLink, ctx: &mut LinkContext<'_>) -> Result<KeyInfo> {
    let answer = link.cbor(&ctap2::GetInfo.encode()?, ctx)?;
    let info = Info::decode(&answer)?;
    Ok(key_info(&info))
}

/// The flows' view of a getInfo answer.
fn key_info(info: &Info) -> KeyInfo {
    let usize_of = |n: Option<u64>| n.and_then(|n| usize::try_from(n).ok());
    KeyInfo {
        versions: info.versions.clone(),
        aaguid: info.aaguid,
        client_pin: info.option("clientPin"),
        uv: info.option("uv"),
        pin_uv_auth_token: info.option("pinUvAuthToken") == Some(true),
        uv_kind: uv_kind(info),
        max_msg_size: usize_of(info.max_msg_size),
        max_credential_count_in_list: usize_of(info.max_credential_count_in_list),
        max_credential_id_length: usize_of(info.max_credential_id_length),
        pin_protocols: info
            .pin_uv_auth_protocols
            .iter()
            .filter_map(|p| u8::try_from(*p).ok())
            .collect(),
        algorithms: info.algorithms.clone(),
        min_pin_length: info.min_pin_length.and_then(|n| u32::try_from(n).ok()),
        force_pin_change: info.force_pin_change == Some(true),
        make_cred_uv_not_rqd: info.option("makeCredUvNotRqd") == Some(true),
        u2f_only: false,
    }
}

/// uvModality bits (FIDO Registry of Predefined Values §3.1, user verification methods).
const USER_VERIFY_FINGERPRINT_INTERNAL: u64 = 0x02;
const USER_VERIFY_FACEPRINT_INTERNAL: u64 = 0x10;

/// What the key's built-in user verification reads, as RFC 8176 §2 names it.
fn uv_kind(info: &Info) -> Option<&'static str> {
    let modality = info.uv_modality.unwrap_or(0);
    if info.option("bioEnroll").is_some()
        || info.option("userVerificationMgmtPreview").is_some()
        || modality & USER_VERIFY_FINGERPRINT_INTERNAL != 0
    {
        Some("fpt")
    } else if modality & USER_VERIFY_FACEPRINT_INTERNAL != 0 {
        Some("face")
    } else {
        None
    }
}

/// authenticatorMakeCredential (§6.1).
pub(super) fn make_credential(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    params: &MakeCredential,
) -> Result<MadeCredential> {
    let (uv, pin_uv_auth) = params.check.members(&params.client_data_hash);
    let request = ctap2::MakeCredential {
        client_data_hash: params.client_data_hash,
        rp_id: params.rp_id.clone(),
        rp_name: None,
        user_id: params.user_id.clone(),
        user_name: Some(params.user_name.clone()),
        user_display_name: Some(params.user_name.clone()),
        algorithms: params.algorithms.clone(),
        exclude_list: params.exclude.clone(),
        rk: false,
        uv,
        pin_uv_auth,
    };
    let answer = link.cbor(&request.encode()?, ctx)?;
    let made = ctap2::MakeCredentialResponse::decode(&answer)?;
    let credential = made.credential()?;
    Ok(MadeCredential {
        flags: AuthFlags::of(&made.auth_data),
        credential_id: credential.credential_id.clone(),
        key: StoredKey::of(credential.public_key.clone()),
    })
}

/// How a getAssertion ended, where the flows go on differently.
#[derive(Debug)]
pub(super) enum Answered {
    /// The key signed.
    Signed(GotAssertion),
    /// The key holds none of the allowList (CTAP2_ERR_NO_CREDENTIALS, or INVALID_CREDENTIAL as
    /// some keys say).
    NoCredentials,
    /// The key refused option up = false (UNSUPPORTED_OPTION, INVALID_OPTION: some CTAP 2.0
    /// keys), so it cannot be asked silently over CTAP2.
    SilentRefused,
}

/// authenticatorGetAssertion (§6.2).
pub(super) fn get_assertion(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    params: &GetAssertion,
) -> Result<Answered> {
    let (uv, pin_uv_auth) = params.check.members(&params.client_data_hash);
    let request = ctap2::GetAssertion {
        rp_id: params.rp_id.clone(),
        client_data_hash: params.client_data_hash,
        allow_list: params.allow.clone(),
        up: params.up,
        uv,
        pin_uv_auth,
    };
    let answer = link.cbor(&request.encode()?, ctx)?;
    match answer.first() {
        Some(&NO_CREDENTIALS | &INVALID_CREDENTIAL) => return Ok(Answered::NoCredentials),
        Some(&UNSUPPORTED_OPTION | &INVALID_OPTION) if !params.up => {
            return Ok(Answered::SilentRefused)
        }
        _ => {}
    }
    let got = ctap2::GetAssertionResponse::decode(&answer)?;
    Ok(Answered::Signed(GotAssertion {
        credential_id: got.credential_id,
        flags: AuthFlags::of(&got.auth_data),
        auth_data: got.auth_data_raw,
        signature: got.signature,
    }))
}

fn protocol_of(n: u8) -> PinProtocol {
    PinProtocol::from_number(u64::from(n)).unwrap_or(PinProtocol::One)
}

fn client_pin(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    request: &ClientPin,
) -> Result<ClientPinResponse> {
    let answer = link.cbor(&request.encode()?, ctx)?;
    ClientPinResponse::decode(&answer)
}

/// authenticatorClientPIN getPINRetries (§6.5.5.2).
pub(super) fn pin_retries(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: u8,
) -> Result<u8> {
    let request = ClientPin::GetPinRetries {
        protocol: Some(protocol_of(protocol)),
    };
    client_pin(link, ctx, &request)?.need_pin_retries()
}

/// getKeyAgreement and encapsulate (§6.5.5.4, §6.5.6-7): the platform's COSE key and the
/// shared secret.
fn agree(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: PinProtocol,
) -> Result<(coset::CoseKey, pin::SharedSecret)> {
    let key =
        client_pin(link, ctx, &ClientPin::GetKeyAgreement { protocol })?.need_key_agreement()?;
    protocol.encapsulate(&key)
}

/// A pinUvAuthToken for `pin`: getKeyAgreement, then getPinUvAuthTokenUsingPinWithPermissions
/// (`permissions`: §6.5.5.7.2) or, for a CTAP 2.0 key (`None`), getPinToken (§6.5.5.7.1).
pub(super) fn pin_token(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: u8,
    pin: &Secret,
    permissions: Option<(u8, &str)>,
) -> Result<PinUvAuthToken> {
    let protocol = protocol_of(protocol);
    let (key_agreement, shared) = agree(link, ctx, protocol)?;
    let pin_hash_enc = protocol.pin_hash_enc(&shared, pin)?;
    let request = match permissions {
        Some((permissions, rp_id)) => ClientPin::GetPinUvAuthTokenUsingPinWithPermissions {
            protocol,
            key_agreement,
            pin_hash_enc,
            permissions,
            rp_id: Some(rp_id.to_owned()),
        },
        None => ClientPin::GetPinToken {
            protocol,
            key_agreement,
            pin_hash_enc,
        },
    };
    let answer = client_pin(link, ctx, &request)?;
    protocol.decrypt_token(&shared, answer.need_pin_uv_auth_token()?)
}

/// A pinUvAuthToken by the key's built-in verification: getKeyAgreement, then
/// getPinUvAuthTokenUsingUvWithPermissions (§6.5.5.7.3).
pub(super) fn uv_token(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    protocol: u8,
    permissions: u8,
    rp_id: &str,
) -> Result<PinUvAuthToken> {
    let protocol = protocol_of(protocol);
    let (key_agreement, shared) = agree(link, ctx, protocol)?;
    let request = ClientPin::GetPinUvAuthTokenUsingUvWithPermissions {
        protocol,
        key_agreement,
        permissions,
        rp_id: Some(rp_id.to_owned()),
    };
    let answer = client_pin(link, ctx, &request)?;
    protocol.decrypt_token(&shared, answer.need_pin_uv_auth_token()?)
}

/// authenticatorSelection (§6.9).
pub(super) fn selection(link: &mut dyn CtapLink, ctx: &mut LinkContext<'_>) -> Result<()> {
    let answer = link.cbor(&ctap2::Selection.encode()?, ctx)?;
    ctap2::Selection::decode(&answer)
}

/// The key stored at enrollment, from its algorithm name ("es256", "eddsa") and bytes.
///
/// Errors: [`Error::Storage`] for a stored key that does not parse.
pub(super) fn stored_key(algorithm: &str, bytes: &[u8]) -> Result<StoredKey> {
    let key = CredentialPublicKey::from_stored(algorithm, bytes).map_err(|e| match e {
        Error::InvalidArgument(m) => Error::Storage(m),
        e => e,
    })?;
    Ok(StoredKey::of(key))
}

/// Checks `signature` over `message` with `key` (es256: DER ECDSA over SHA-256 of the message;
/// eddsa: Ed25519). Errors: [`Error::SignatureInvalid`].
pub(super) fn verify(key: &StoredKey, message: &[u8], signature: &[u8]) -> Result<()> {
    key.key.verify(message, signature)
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

/// The U2F VERSION command (U2F raw message formats §6), extended form with Le.
pub(super) fn u2f_version_apdu() -> Vec<u8> {
    vec![0x00, u2f::INS_VERSION, 0x00, 0x00, 0x00, 0x00, 0x00]
}

/// The U2F REGISTER command for `challenge` and `application`.
pub(super) fn u2f_register_apdu(challenge: &[u8; 32], application: &[u8; 32]) -> Result<Vec<u8>> {
    u2f::RegisterRequest {
        challenge: *challenge,
        application: *application,
    }
    .encode()
}

/// The REGISTER answer (data and status word 9000).
pub(super) fn u2f_registered(data_and_sw: &[u8]) -> Result<U2fRegistered> {
    match u2f::RegisterResponse::decode(data_and_sw)? {
        U2fAnswer::Done(r) => Ok(U2fRegistered {
            key_handle: r.key_handle,
            key: StoredKey::of(CredentialPublicKey::Es256(r.public_key)),
        }),
        U2fAnswer::TouchNeeded => Err(Error::Device(
            "the key asked for a touch after it was touched".into(),
        )),
    }
}

/// The U2F AUTHENTICATE command.
pub(super) fn u2f_authenticate_apdu(
    control: U2fControl,
    challenge: &[u8; 32],
    application: &[u8; 32],
    key_handle: &[u8],
) -> Result<Vec<u8>> {
    u2f::AuthenticateRequest {
        mode: match control {
            U2fControl::EnforcePresence => AuthenticateMode::EnforceUserPresence,
            U2fControl::CheckOnly => AuthenticateMode::CheckOnly,
        },
        challenge: *challenge,
        application: *application,
        key_handle: key_handle.to_vec(),
    }
    .encode()
}

/// The AUTHENTICATE answer (data and status word 9000).
pub(super) fn u2f_authenticated(data_and_sw: &[u8]) -> Result<U2fAuthenticated> {
    match u2f::AuthenticateResponse::decode(data_and_sw)? {
        U2fAnswer::Done(r) => Ok(U2fAuthenticated {
            presence: r.user_presence,
            counter: r.counter,
            signature: r.signature,
        }),
        U2fAnswer::TouchNeeded => Err(Error::Device(
            "the key asked for a touch after it was touched".into(),
        )),
    }
}

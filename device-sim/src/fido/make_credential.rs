//! authenticatorMakeCredential (CTAP 2.1 §6.1): a new non-resident credential whose id wraps its
//! private key, with "packed" self attestation. The checks follow §6.1.2 step by step.

use super::cbor::{self, Parameters, Value};
use super::client_pin::PERMISSION_MC;
use super::ctap2::{self, Options, Reply, FLAG_AT, FLAG_UP, FLAG_UV};
use super::key::{self, CredentialKey};
use super::status::Status;
use super::{FidoKey, Presence, Touch};

/// Parameter keys (§6.1.1).
const P_CLIENT_DATA_HASH: u64 = 0x01;
const P_RP: u64 = 0x02;
const P_USER: u64 = 0x03;
const P_PUB_KEY_CRED_PARAMS: u64 = 0x04;
const P_EXCLUDE_LIST: u64 = 0x05;
const P_EXTENSIONS: u64 = 0x06;
const P_OPTIONS: u64 = 0x07;
const P_PIN_UV_AUTH_PARAM: u64 = 0x08;
const P_PIN_UV_AUTH_PROTOCOL: u64 = 0x09;
const P_ENTERPRISE_ATTESTATION: u64 = 0x0A;

/// WebAuthn §5.4.3: a user handle is at most 64 bytes.
const MAX_USER_ID: usize = 64;

/// The parameters, type-checked (§6.1.1), before any step runs.
struct Request {
    client_data_hash: Vec<u8>,
    rp_id: String,
    algorithms: Vec<i64>,
    exclude: Vec<Vec<u8>>,
    options: Options,
    pin_uv_auth: ctap2::PinUvAuth,
    enterprise_attestation: bool,
}

pub(super) fn make_credential(
    key: &mut FidoKey,
    params: Parameters,
    presence: &mut dyn Presence,
) -> Result<Reply, Status> {
    let request = parse(params)?;
    let mut flags = 0u8;
    // Steps 1-2: a touch to pick this key; the protocol of a pinUvAuthParam.
    let protocol = request.pin_uv_auth.check(key, presence)?;
    // Step 3: the first of the platform's algorithms this key supports.
    let algorithm = request
        .algorithms
        .iter()
        .copied()
        .find(|alg| key.options.algorithms.contains(alg))
        .ok_or(Status::UNSUPPORTED_ALGORITHM)?;
    // Step 5: options. No resident credentials; user presence cannot be switched off for a
    // new credential; no built-in user verification (uv is ignored when pinUvAuthParam is given).
    if request.options.rk == Some(true) {
        return Err(Status::UNSUPPORTED_OPTION);
    }
    if request.options.up == Some(false) {
        return Err(Status::INVALID_OPTION);
    }
    if request.options.uv == Some(true) && protocol.is_none() {
        return Err(Status::INVALID_OPTION);
    }
    // Step 8: a key protected by a PIN creates credentials only with a pinUvAuthToken
    // (makeCredUvNotRqd is absent from getInfo; "uv" cannot be true here, see above).
    if key.state.pin_set() && protocol.is_none() {
        return Err(Status::PUAT_REQUIRED);
    }
    // Step 9: no enterprise attestation ("ep" absent from getInfo).
    if request.enterprise_attestation {
        return Err(Status::INVALID_PARAMETER);
    }
    // Step 11: the pinUvAuthToken, with permission mc for this RP, verifies the user. A key
    // without a PIN is not "protected by some form of user verification": the parameter is
    // ignored and the credential is made without UV.
    if let (Some(param), Some(protocol), true) =
        (&request.pin_uv_auth.param, protocol, key.state.pin_set())
    {
        key.pin.verify_token(
            protocol,
            &request.client_data_hash,
            param,
            PERMISSION_MC,
            &request.rp_id,
        )?;
        flags |= FLAG_UV;
    }
    let rp_id_hash = ctap2::rp_id_hash(&request.rp_id);
    let master = key.state.master_secret().ok_or(Status::OTHER)?;
    // Step 12: a credential of the excludeList made here for this RP: wait for the touch, then
    // CREDENTIAL_EXCLUDED "regardless of whether user presence is obtained or the authenticator
    // times out" (a cancel from the platform still ends it as a cancel, §11.2.9.1.5).
    if request
        .exclude
        .iter()
        .any(|id| key::unwrap(&master, id, &rp_id_hash).is_some())
    {
        return Err(match presence.wait_for_touch() {
            Touch::Cancelled => Status::KEEPALIVE_CANCEL,
            Touch::Touched | Touch::TimedOut => Status::CREDENTIAL_EXCLUDED,
        });
    }
    // Step 14: user presence. It ends the current token's permissions, whether this request used
    // it or not (clearPinUvAuthTokenPermissionsExceptLbw): one token, one credential.
    ctap2::user_presence(presence)?;
    flags |= FLAG_UP;
    key.pin.token_used();
    // Steps 15-17: the credential, its id, the authenticator data and the attestation.
    let credential = CredentialKey::generate(algorithm).ok_or(Status::UNSUPPORTED_ALGORITHM)?;
    let id = key::wrap(&master, &credential, &rp_id_hash)?;
    let counter = key.state.counter().saturating_add(1);
    key.state.set_counter(counter);
    key.persist_counter()?;
    let mut attested = Vec::with_capacity(18 + id.len() + 77);
    attested.extend_from_slice(&key.state.aaguid());
    let id_len = u16::try_from(id.len()).map_err(|_| Status::OTHER)?;
    attested.extend_from_slice(&id_len.to_be_bytes());
    attested.extend_from_slice(&id);
    attested.extend_from_slice(&cbor::encode(credential.cose_public_key()?)?);
    let auth_data = ctap2::auth_data(&rp_id_hash, flags | FLAG_AT, counter, &attested);
    // WebAuthn §8.2 "packed" self attestation: no x5c, signed by the credential key itself over
    // authenticatorData ‖ clientDataHash.
    let signed = [&auth_data[..], &request.client_data_hash].concat();
    let signature = credential.sign(&signed)?;
    Ok(Reply::Cbor(cbor::int_map(vec![
        (0x01, Value::Text("packed".into())),
        (0x02, Value::Bytes(auth_data)),
        (
            0x03,
            cbor::text_map(vec![
                ("alg", cbor::integer(credential.algorithm())),
                ("sig", Value::Bytes(signature)),
            ]),
        ),
    ])))
}

/// §6.1.1: required parameters present (else MISSING_PARAMETER) and every parameter of its type
/// (else CBOR_UNEXPECTED_TYPE), in the order of their keys.
fn parse(mut params: Parameters) -> Result<Request, Status> {
    let client_data_hash = cbor::bytes(params.require(P_CLIENT_DATA_HASH)?)?;
    let mut rp = cbor::map(params.require(P_RP)?)?;
    let rp_id = cbor::text(cbor::take_text_key(&mut rp, "id").ok_or(Status::MISSING_PARAMETER)?)?;
    for name in ["name", "icon"] {
        cbor::take_text_key(&mut rp, name)
            .map(cbor::text)
            .transpose()?;
    }
    let mut user = cbor::map(params.require(P_USER)?)?;
    let user_id =
        cbor::bytes(cbor::take_text_key(&mut user, "id").ok_or(Status::MISSING_PARAMETER)?)?;
    if user_id.len() > MAX_USER_ID {
        return Err(Status::INVALID_LENGTH);
    }
    for name in ["name", "displayName", "icon"] {
        cbor::take_text_key(&mut user, name)
            .map(cbor::text)
            .transpose()?;
    }
    let mut algorithms = Vec::new();
    for entry in cbor::array(params.require(P_PUB_KEY_CRED_PARAMS)?)? {
        let mut entry = cbor::map(entry)?;
        let kind = cbor::take_text_key(&mut entry, "type").ok_or(Status::MISSING_PARAMETER)?;
        let alg = cbor::take_text_key(&mut entry, "alg").ok_or(Status::MISSING_PARAMETER)?;
        let (kind, alg) = (cbor::text(kind)?, cbor::int(&alg)?);
        // Entries of another credential type are ignored (§6.1.2 step 3).
        if kind == "public-key" {
            algorithms.push(alg);
        }
    }
    let exclude = ctap2::credential_list(params.take(P_EXCLUDE_LIST))?;
    // No extensions are supported; unknown ones are ignored (WebAuthn §9), but it is a map.
    params.take(P_EXTENSIONS).map(cbor::map).transpose()?;
    let options = Options::parse(params.take(P_OPTIONS))?;
    let pin_uv_auth =
        ctap2::PinUvAuth::take(&mut params, P_PIN_UV_AUTH_PARAM, P_PIN_UV_AUTH_PROTOCOL)?;
    let enterprise_attestation = params
        .take(P_ENTERPRISE_ATTESTATION)
        .map(|v| cbor::uint(&v))
        .transpose()?
        .is_some();
    Ok(Request {
        client_data_hash,
        rp_id,
        algorithms,
        exclude,
        options,
        pin_uv_auth,
        enterprise_attestation,
    })
}

//! authenticatorClientPIN (CTAP 2.1 §6.5.5): PIN retries, key agreement, setting and changing the
//! PIN, and pinUvAuthTokens (getPinToken of CTAP 2.0 and getPinUvAuthTokenUsingPinWithPermissions
//! of 2.1). Also the session a power cycle forgets ([`PinSession`]) and the token check that
//! makeCredential and getAssertion make ([`PinSession::verify_token`]).
//!
//! Checks come in the order of the specification's steps, so an error a platform sees is the one a
//! real key gives first. The key has no built-in user verification: the UV subcommands are invalid.

use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::cbor::{self, Parameters, Value};
use super::ctap2::Reply;
use super::pin_protocol::{self, Protocol};
use super::state;
use super::status::Status;
use super::FidoKey;

/// pinUvAuthToken permissions (CTAP 2.1 §6.5.5.7): makeCredential, getAssertion.
pub(super) const PERMISSION_MC: u64 = 0x01;
pub(super) const PERMISSION_GA: u64 = 0x02;
/// credentialManagement, bioEnrollment, largeBlobWrite, authenticatorConfig: features this key
/// does not have, so a token asking for them is refused (CTAP2_ERR_UNAUTHORIZED_PERMISSION).
/// Bits CTAP 2.1 does not define are ignored (§6.5.5.7.2 step 4).
const PERMISSION_UNSUPPORTED: u64 = 0x04 | 0x08 | 0x10 | 0x20;

/// CTAP 2.1 §6.5.5.7: after three wrong PINs in a row the key needs a power cycle.
const MAX_CONSECUTIVE_MISMATCHES: u8 = 3;
/// The padded PIN of setPIN and changePIN (§6.5.5.5): 64 bytes.
const PADDED_PIN_LEN: usize = 64;

/// Parameter keys (§6.5.5).
const P_PROTOCOL: u64 = 0x01;
const P_SUBCOMMAND: u64 = 0x02;
const P_KEY_AGREEMENT: u64 = 0x03;
const P_PIN_UV_AUTH_PARAM: u64 = 0x04;
const P_NEW_PIN_ENC: u64 = 0x05;
const P_PIN_HASH_ENC: u64 = 0x06;
const P_PERMISSIONS: u64 = 0x09;
const P_RP_ID: u64 = 0x0A;

/// Subcommands (§6.5.5).
const GET_PIN_RETRIES: u64 = 0x01;
const GET_KEY_AGREEMENT: u64 = 0x02;
const SET_PIN: u64 = 0x03;
const CHANGE_PIN: u64 = 0x04;
const GET_PIN_TOKEN: u64 = 0x05;
const GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS: u64 = 0x09;

/// What a power cycle forgets: the key agreement key of each protocol, the pinUvAuthToken, the
/// count of wrong PINs in a row (CTAP 2.1 §6.5.4 "initialize" at power-up).
pub(super) struct PinSession {
    key_agreement: [p256::SecretKey; 2],
    token: Option<PinToken>,
    mismatches: u8,
}

/// CTAP 2.1 §6.5.2.1: a token not used within its initial usage time limit (30 s by default)
/// stops being usable; one in use stops after the maximum usage time period (10 min).
const INITIAL_USAGE_TIME_LIMIT: Duration = Duration::from_secs(30);
const MAX_USAGE_TIME_PERIOD: Duration = Duration::from_secs(600);

/// The current pinUvAuthToken and its state (CTAP 2.1 §6.5.2.1). One at a time: obtaining a new
/// token invalidates the previous one, as resetPinUvAuthToken does.
struct PinToken {
    protocol: Protocol,
    secret: Zeroizing<[u8; 32]>,
    permissions: u64,
    rp_id: Option<String>,
    user_verified: bool,
    issued: Instant,
    used: bool,
}

impl PinToken {
    /// The usage timer of §6.5.2.1 has stopped the token.
    fn expired(&self) -> bool {
        let age = self.issued.elapsed();
        age > MAX_USAGE_TIME_PERIOD || (!self.used && age > INITIAL_USAGE_TIME_LIMIT)
    }
}

impl PinSession {
    pub(super) fn new() -> PinSession {
        PinSession {
            key_agreement: [
                pin_protocol::new_key_agreement_key(),
                pin_protocol::new_key_agreement_key(),
            ],
            token: None,
            mismatches: 0,
        }
    }

    /// The pinUvAuthParam check of makeCredential (§6.1.2 step 11) and getAssertion (§6.2.2 step
    /// 6): `param` must be authenticate(token, clientDataHash) under the current token of
    /// `protocol`, the token must hold `permission` and be bound to `rp_id` (bound now if it is
    /// bound to none), and its user must be verified. Any failure: CTAP2_ERR_PIN_AUTH_INVALID.
    pub(super) fn verify_token(
        &mut self,
        protocol: Protocol,
        client_data_hash: &[u8],
        param: &[u8],
        permission: u64,
        rp_id: &str,
    ) -> Result<(), Status> {
        if self.token.as_ref().is_some_and(PinToken::expired) {
            self.token = None;
        }
        let token = self.token.as_mut().ok_or(Status::PIN_AUTH_INVALID)?;
        if token.protocol != protocol
            || !protocol.verify(token.secret.as_ref(), client_data_hash, param)
        {
            return Err(Status::PIN_AUTH_INVALID);
        }
        if token.permissions & permission == 0 {
            return Err(Status::PIN_AUTH_INVALID);
        }
        match &token.rp_id {
            Some(bound) if bound != rp_id => return Err(Status::PIN_AUTH_INVALID),
            Some(_) => {}
            None => token.rp_id = Some(rp_id.to_string()),
        }
        if !token.user_verified {
            return Err(Status::PIN_AUTH_INVALID);
        }
        token.used = true;
        Ok(())
    }

    /// Tests: the current token was issued `ago` earlier than it was.
    #[cfg(test)]
    pub(super) fn age_token(&mut self, ago: Duration) {
        if let Some(token) = self.token.as_mut() {
            if let Some(then) = token.issued.checked_sub(ago) {
                token.issued = then;
            }
        }
    }

    /// After makeCredential or getAssertion collected user presence: clearUserVerifiedFlag and
    /// clearPinUvAuthTokenPermissionsExceptLbw (§6.1.2 step 14, §6.2.2 step 9), whether the
    /// request used the token or not. A token serves one makeCredential or one user-present
    /// getAssertion; the next needs a new token.
    pub(super) fn token_used(&mut self) {
        if let Some(token) = self.token.as_mut() {
            token.user_verified = false;
            token.permissions = 0;
        }
    }
}

/// authenticatorClientPIN: the parameters' types are checked first (a wrong type →
/// CTAP2_ERR_CBOR_UNEXPECTED_TYPE), then the subcommand's steps.
pub(super) fn client_pin(key: &mut FidoKey, mut params: Parameters) -> Result<Reply, Status> {
    let request = Request {
        protocol: params
            .take(P_PROTOCOL)
            .map(|v| cbor::uint(&v))
            .transpose()?,
        subcommand: params
            .take(P_SUBCOMMAND)
            .map(|v| cbor::uint(&v))
            .transpose()?,
        key_agreement: params.take(P_KEY_AGREEMENT).map(cbor::map).transpose()?,
        pin_uv_auth_param: params
            .take(P_PIN_UV_AUTH_PARAM)
            .map(cbor::bytes)
            .transpose()?,
        new_pin_enc: params.take(P_NEW_PIN_ENC).map(cbor::bytes).transpose()?,
        pin_hash_enc: params.take(P_PIN_HASH_ENC).map(cbor::bytes).transpose()?,
        permissions: params
            .take(P_PERMISSIONS)
            .map(|v| cbor::uint(&v))
            .transpose()?,
        rp_id: params.take(P_RP_ID).map(cbor::text).transpose()?,
    };
    let subcommand = request.subcommand.ok_or(Status::MISSING_PARAMETER)?;
    match subcommand {
        GET_PIN_RETRIES => get_pin_retries(key),
        GET_KEY_AGREEMENT => get_key_agreement(key, &request),
        SET_PIN => set_pin(key, request),
        CHANGE_PIN => change_pin(key, request),
        GET_PIN_TOKEN => get_pin_token(key, request),
        GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS => {
            get_token_with_permissions(key, request)
        }
        // getPinUvAuthTokenUsingUvWithPermissions (0x06), getUVRetries (0x07): no built-in UV.
        _ => Err(Status::INVALID_SUBCOMMAND),
    }
}

struct Request {
    protocol: Option<u64>,
    subcommand: Option<u64>,
    key_agreement: Option<Vec<(Value, Value)>>,
    pin_uv_auth_param: Option<Vec<u8>>,
    new_pin_enc: Option<Vec<u8>>,
    pin_hash_enc: Option<Vec<u8>>,
    permissions: Option<u64>,
    rp_id: Option<String>,
}

/// getPINRetries (§6.5.5.3): pinRetries, and powerCycleState (whether only a power cycle lets the
/// next PIN be tried).
fn get_pin_retries(key: &FidoKey) -> Result<Reply, Status> {
    Ok(Reply::Cbor(cbor::int_map(vec![
        (0x03, cbor::integer(i64::from(key.state.pin_retries()))),
        (
            0x04,
            Value::Bool(key.pin.mismatches >= MAX_CONSECUTIVE_MISMATCHES),
        ),
    ])))
}

/// getKeyAgreement (§6.5.5.4).
fn get_key_agreement(key: &FidoKey, request: &Request) -> Result<Reply, Status> {
    let protocol = protocol(request.protocol)?;
    let ours = &key.pin.key_agreement[protocol.index()];
    Ok(Reply::Cbor(cbor::int_map(vec![(
        0x01,
        pin_protocol::cose_key(ours)?,
    )])))
}

/// setPIN (§6.5.5.5).
fn set_pin(key: &mut FidoKey, request: Request) -> Result<Reply, Status> {
    let (Some(platform), Some(param), Some(new_pin_enc)) = (
        request.key_agreement,
        request.pin_uv_auth_param,
        request.new_pin_enc,
    ) else {
        return Err(Status::MISSING_PARAMETER);
    };
    let protocol = protocol(request.protocol)?;
    // §6.5.5.5 step 3: not NOT_ALLOWED, the specification says PIN_AUTH_INVALID.
    if key.state.pin_set() {
        return Err(Status::PIN_AUTH_INVALID);
    }
    let shared = protocol.decapsulate(&key.pin.key_agreement[protocol.index()], platform)?;
    if !protocol.verify(&shared, &new_pin_enc, &param) {
        return Err(Status::PIN_AUTH_INVALID);
    }
    let new_pin = new_pin(protocol, &shared, &new_pin_enc)?;
    key.state.set_pin(&new_pin);
    key.persist()?;
    Ok(Reply::Empty)
}

/// changePIN (§6.5.5.6).
fn change_pin(key: &mut FidoKey, request: Request) -> Result<Reply, Status> {
    let (Some(platform), Some(param), Some(new_pin_enc), Some(pin_hash_enc)) = (
        request.key_agreement,
        request.pin_uv_auth_param,
        request.new_pin_enc,
        request.pin_hash_enc,
    ) else {
        return Err(Status::MISSING_PARAMETER);
    };
    let protocol = protocol(request.protocol)?;
    check_pin_usable(key)?;
    let shared = protocol.decapsulate(&key.pin.key_agreement[protocol.index()], platform)?;
    let message = [&new_pin_enc[..], &pin_hash_enc].concat();
    if !protocol.verify(&shared, &message, &param) {
        return Err(Status::PIN_AUTH_INVALID);
    }
    check_pin_hash(key, protocol, &shared, &pin_hash_enc)?;
    let new_pin = new_pin(protocol, &shared, &new_pin_enc)?;
    key.state.set_pin(&new_pin);
    // A new PIN ends every token obtained with the old one (§6.5.5.6 "resetPinUvAuthToken").
    key.pin.token = None;
    key.persist()?;
    Ok(Reply::Empty)
}

/// getPinToken (§6.5.5.7.1, CTAP 2.0's): a token for makeCredential and getAssertion, bound to no
/// RP until first used.
fn get_pin_token(key: &mut FidoKey, request: Request) -> Result<Reply, Status> {
    let (Some(platform), Some(pin_hash_enc)) = (request.key_agreement, request.pin_hash_enc) else {
        return Err(Status::MISSING_PARAMETER);
    };
    let protocol = protocol(request.protocol)?;
    // §6.5.5.7.1: this subcommand takes no permissions; asking for them is a 2.1 request sent with
    // the wrong subcommand.
    if request.permissions.is_some() || request.rp_id.is_some() {
        return Err(Status::INVALID_PARAMETER);
    }
    issue_token(
        key,
        protocol,
        platform,
        &pin_hash_enc,
        PERMISSION_MC | PERMISSION_GA,
        None,
    )
}

/// getPinUvAuthTokenUsingPinWithPermissions (§6.5.5.7.2).
fn get_token_with_permissions(key: &mut FidoKey, request: Request) -> Result<Reply, Status> {
    let (Some(platform), Some(pin_hash_enc), Some(permissions)) = (
        request.key_agreement,
        request.pin_hash_enc,
        request.permissions,
    ) else {
        return Err(Status::MISSING_PARAMETER);
    };
    let protocol = protocol(request.protocol)?;
    if permissions == 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    if permissions & PERMISSION_UNSUPPORTED != 0 {
        return Err(Status::UNAUTHORIZED_PERMISSION);
    }
    issue_token(
        key,
        protocol,
        platform,
        &pin_hash_enc,
        permissions & (PERMISSION_MC | PERMISSION_GA),
        request.rp_id,
    )
}

/// The common steps of both token subcommands: PIN set and not blocked, the shared secret, the PIN
/// hash checked (retries spent first), then a new token encrypted to the platform.
fn issue_token(
    key: &mut FidoKey,
    protocol: Protocol,
    platform: Vec<(Value, Value)>,
    pin_hash_enc: &[u8],
    permissions: u64,
    rp_id: Option<String>,
) -> Result<Reply, Status> {
    check_pin_usable(key)?;
    let shared = protocol.decapsulate(&key.pin.key_agreement[protocol.index()], platform)?;
    check_pin_hash(key, protocol, &shared, pin_hash_enc)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(secret.as_mut());
    let encrypted = protocol.encrypt(&shared, secret.as_ref())?;
    key.pin.token = Some(PinToken {
        protocol,
        secret,
        permissions,
        rp_id,
        user_verified: true,
        issued: Instant::now(),
        used: false,
    });
    Ok(Reply::Cbor(cbor::int_map(vec![(
        0x02,
        Value::Bytes(encrypted),
    )])))
}

/// The protocol of a request that needs one: absent → MISSING_PARAMETER, unknown →
/// INVALID_PARAMETER (§6.5.5.1).
fn protocol(number: Option<u64>) -> Result<Protocol, Status> {
    Protocol::from_number(number.ok_or(Status::MISSING_PARAMETER)?)
}

/// A PIN is set, has retries left, and three wrong PINs in a row have not been tried since
/// power-up (§6.5.5.6 and §6.5.5.7 steps 3-4).
fn check_pin_usable(key: &FidoKey) -> Result<(), Status> {
    if !key.state.pin_set() {
        return Err(Status::PIN_NOT_SET);
    }
    if key.state.pin_retries() == 0 {
        return Err(Status::PIN_BLOCKED);
    }
    if key.pin.mismatches >= MAX_CONSECUTIVE_MISMATCHES {
        return Err(Status::PIN_AUTH_BLOCKED);
    }
    Ok(())
}

/// Spends one retry (durably, before looking: pulling the key mid-check must not save a try),
/// then compares LEFT(SHA-256(PIN), 16) decrypted from `pin_hash_enc` with the stored hash. A
/// mismatch makes a new key agreement key and answers PIN_BLOCKED (no retries left),
/// PIN_AUTH_BLOCKED (third in a row) or PIN_INVALID; a match fills the retries again.
fn check_pin_hash(
    key: &mut FidoKey,
    protocol: Protocol,
    shared: &[u8],
    pin_hash_enc: &[u8],
) -> Result<(), Status> {
    key.state.decrement_pin_retries();
    key.persist()?;
    let given = protocol.decrypt(shared, pin_hash_enc);
    let stored = key.state.pin_hash();
    let matches = match (&given, &stored) {
        (Some(given), Some(stored)) => given.len() == 16 && constant_time_eq(given, stored),
        _ => false,
    };
    if !matches {
        key.pin.key_agreement[protocol.index()] = pin_protocol::new_key_agreement_key();
        key.pin.mismatches = key.pin.mismatches.saturating_add(1);
        if key.state.pin_retries() == 0 {
            return Err(Status::PIN_BLOCKED);
        }
        if key.pin.mismatches >= MAX_CONSECUTIVE_MISMATCHES {
            return Err(Status::PIN_AUTH_BLOCKED);
        }
        return Err(Status::PIN_INVALID);
    }
    key.pin.mismatches = 0;
    key.state.reset_pin_retries();
    key.persist()
}

/// The new PIN inside `new_pin_enc`: 64 bytes once decrypted (else INVALID_PARAMETER), the PIN
/// followed by zero padding, and within the PIN policy (else PIN_POLICY_VIOLATION).
fn new_pin(
    protocol: Protocol,
    shared: &[u8],
    new_pin_enc: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Status> {
    let padded = protocol
        .decrypt(shared, new_pin_enc)
        .ok_or(Status::PIN_AUTH_INVALID)?;
    if padded.len() != PADDED_PIN_LEN {
        return Err(Status::INVALID_PARAMETER);
    }
    let end = padded
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    let pin = Zeroizing::new(padded.get(..end).unwrap_or(&[]).to_vec());
    // The padding must start inside the 64 bytes: a 64-byte PIN has none and is too long.
    state::check_pin_policy(&pin).map_err(|()| Status::PIN_POLICY_VIOLATION)?;
    Ok(pin)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

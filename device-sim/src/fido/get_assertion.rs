//! authenticatorGetAssertion (CTAP 2.1 §6.2): a signature by a credential of the allowList over
//! authenticatorData ‖ clientDataHash. Without resident credentials the allowList is mandatory.
//! The checks follow §6.2.2 step by step; the signing faults act here.

use super::cbor::{self, Parameters, Value};
use super::client_pin::PERMISSION_GA;
use super::ctap2::{self, Options, Reply, FLAG_UP, FLAG_UV};
use super::key::{self, CredentialKey};
use super::status::Status;
use super::{FidoFault, FidoKey, Presence};

/// Parameter keys (§6.2.1).
const P_RP_ID: u64 = 0x01;
const P_CLIENT_DATA_HASH: u64 = 0x02;
const P_ALLOW_LIST: u64 = 0x03;
const P_EXTENSIONS: u64 = 0x04;
const P_OPTIONS: u64 = 0x05;
const P_PIN_UV_AUTH_PARAM: u64 = 0x06;
const P_PIN_UV_AUTH_PROTOCOL: u64 = 0x07;

/// What [`FidoFault::MalformedCbor`] answers after CTAP2_OK: a map announcing three entries that
/// holds one key and ends (RFC 8949 §3: a truncated data item).
const MALFORMED: [u8; 3] = [0xA3, 0x01, 0xA1];

pub(super) fn get_assertion(
    key: &mut FidoKey,
    mut params: Parameters,
    presence: &mut dyn Presence,
) -> Result<Reply, Status> {
    // §6.2.1: required parameters and the type of each.
    let rp_id = cbor::text(params.require(P_RP_ID)?)?;
    let client_data_hash = cbor::bytes(params.require(P_CLIENT_DATA_HASH)?)?;
    let allow = ctap2::credential_list(params.take(P_ALLOW_LIST))?;
    params.take(P_EXTENSIONS).map(cbor::map).transpose()?;
    let options = Options::parse(params.take(P_OPTIONS))?;
    let pin_uv_auth =
        ctap2::PinUvAuth::take(&mut params, P_PIN_UV_AUTH_PARAM, P_PIN_UV_AUTH_PROTOCOL)?;

    let mut flags = 0u8;
    // Steps 1-2: a touch to pick this key; the protocol of a pinUvAuthParam.
    let protocol = pin_uv_auth.check(key, presence)?;
    // Step 4: options. "rk" means nothing to getAssertion; no built-in user verification.
    if options.rk.is_some() {
        return Err(Status::UNSUPPORTED_OPTION);
    }
    if options.uv == Some(true) && protocol.is_none() {
        return Err(Status::INVALID_OPTION);
    }
    let up = options.up.unwrap_or(true);
    // Step 6: the pinUvAuthToken, with permission ga for this RP, verifies the user; on a key
    // without a PIN (not "protected by some form of user verification") it is ignored.
    if let (Some(param), Some(protocol), true) = (&pin_uv_auth.param, protocol, key.state.pin_set())
    {
        key.pin
            .verify_token(protocol, &client_data_hash, param, PERMISSION_GA, &rp_id)?;
        flags |= FLAG_UV;
    }
    // Step 7: the first credential of the allowList that is ours and made for this RP; ids of
    // other keys or RPs are skipped. No allowList: no resident credentials to look in.
    let rp_id_hash = ctap2::rp_id_hash(&rp_id);
    let master = key.state.master_secret().ok_or(Status::OTHER)?;
    let (id, credential) = allow
        .iter()
        .find_map(|id| key::unwrap(&master, id, &rp_id_hash).map(|c| (id.clone(), c)))
        .ok_or(Status::NO_CREDENTIALS)?;
    // Step 9: user presence unless the platform asked for a silent check (up=false, a pre-flight
    // that finds which key holds a credential). Any user-present assertion, with a token or not,
    // ends the current token's permissions (clearPinUvAuthTokenPermissionsExceptLbw).
    if up {
        ctap2::user_presence(presence)?;
        flags |= FLAG_UP;
        key.pin.token_used();
    }
    sign(
        key,
        up,
        flags,
        &rp_id_hash,
        &client_data_hash,
        &id,
        &credential,
    )
}

/// Steps 11-13: the counter, the authenticator data, the signature, the response (no extensions:
/// step 10 has nothing to do). The signing
/// faults act on user-present assertions only: a silent pre-flight identifies the key, as PIV's
/// card authentication key does, and is not the signature a test wants to disturb.
fn sign(
    key: &mut FidoKey,
    up: bool,
    flags: u8,
    rp_id_hash: &[u8; 32],
    client_data_hash: &[u8],
    id: &[u8],
    credential: &CredentialKey,
) -> Result<Reply, Status> {
    if up && key.pull_if_removed_on_sign() {
        return Err(Status::OTHER);
    }
    if up {
        key.stall_before_signing();
    }
    let counter = next_counter(key)?;
    let auth_data = ctap2::auth_data(rp_id_hash, flags, counter, &[]);
    let signed = [&auth_data[..], client_data_hash].concat();
    let signature = credential.sign(&signed)?;
    if up && key.options.fault == Some(FidoFault::MalformedCbor) {
        return Ok(Reply::Raw(MALFORMED.to_vec()));
    }
    // numberOfCredentials (0x05) and user (0x04) are omitted: an allowList request names its
    // credential, and a non-resident credential stores no user (§6.2.2 step 12).
    Ok(Reply::Cbor(cbor::int_map(vec![
        (
            0x01,
            cbor::text_map(vec![
                ("id", Value::Bytes(id.to_vec())),
                ("type", Value::Text("public-key".into())),
            ]),
        ),
        (0x02, Value::Bytes(auth_data)),
        (0x03, Value::Bytes(signature)),
    ])))
}

/// The global signature counter, one step on per assertion (CTAP 2.1 §6.1 signCount; the step is
/// always 1), saved (in place, not synced: see
/// [`super::state::KeyState::save_counter`]) before the signature leaves the key. [`FidoFault::CounterRegression`]: one
/// step back instead, as a clone that lags behind the original would report.
pub(super) fn next_counter(key: &mut FidoKey) -> Result<u32, Status> {
    let counter = if key.options.fault == Some(FidoFault::CounterRegression) {
        key.state.counter().saturating_sub(1)
    } else {
        key.state.counter().saturating_add(1)
    };
    key.state.set_counter(counter);
    key.persist_counter()?;
    Ok(counter)
}

//! The CTAP2 command layer (CTAP 2.1 §6, §8): the command byte picks the command, its CBOR
//! parameters are parsed strictly, and the answer is a status byte followed by canonical CBOR.
//! authenticatorGetInfo, authenticatorSelection, authenticatorReset and getNextAssertion are
//! here; makeCredential, getAssertion and clientPIN have files of their own. The user-presence
//! and pinUvAuthToken checks that makeCredential and getAssertion share are here too.

use super::cbor::{self, Parameters, Value};
use super::status::Status;
use super::{client_pin, get_assertion, make_credential, FidoKey, Presence, Touch};

/// CTAP 2.1 §6: command bytes.
const CMD_MAKE_CREDENTIAL: u8 = 0x01;
const CMD_GET_ASSERTION: u8 = 0x02;
const CMD_GET_INFO: u8 = 0x04;
const CMD_CLIENT_PIN: u8 = 0x06;
const CMD_RESET: u8 = 0x07;
const CMD_GET_NEXT_ASSERTION: u8 = 0x08;
const CMD_SELECTION: u8 = 0x0B;

/// getInfo maxMsgSize (CTAP 2.1 §6.4): the largest request, command byte included, the key takes.
pub(super) const MAX_MSG_SIZE: usize = 1200;
/// getInfo maxCredentialCountInList: the most entries an allowList or excludeList may have.
pub(super) const MAX_CREDENTIALS_IN_LIST: usize = 8;
/// getInfo maxCredentialIdLength.
pub(super) const MAX_CREDENTIAL_ID_LENGTH: usize = 128;

/// What a command answers: a CBOR map, nothing (status only), or raw bytes after the status
/// ([`super::FidoFault::MalformedCbor`]).
pub(super) enum Reply {
    Cbor(Value),
    Empty,
    Raw(Vec<u8>),
}

/// One request in, one response out; never an empty response unless the key was pulled out.
pub(super) fn dispatch(key: &mut FidoKey, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
    let reply = if key.speaks_cbor() {
        answer(key, request, presence)
    } else {
        // A U2F-only key knows no CTAP2 command at all (CTAP 2.1 §11.2.9.1.2: without
        // CAPABILITY_CBOR, CTAPHID_CBOR is an invalid command).
        Err(Status::INVALID_COMMAND)
    };
    if key.pulled {
        return Vec::new();
    }
    match reply {
        Ok(Reply::Cbor(value)) => match cbor::encode(value) {
            Ok(body) => [&[Status::OK.0][..], &body].concat(),
            Err(status) => vec![status.0],
        },
        Ok(Reply::Empty) => vec![Status::OK.0],
        Ok(Reply::Raw(body)) => [&[Status::OK.0][..], &body].concat(),
        Err(status) => vec![status.0],
    }
}

fn answer(key: &mut FidoKey, request: &[u8], presence: &mut dyn Presence) -> Result<Reply, Status> {
    let Some((&command, body)) = request.split_first() else {
        return Err(Status::INVALID_LENGTH);
    };
    if request.len() > MAX_MSG_SIZE {
        return Err(Status::INVALID_LENGTH);
    }
    // Commands without parameters take no CBOR at all; one with parameters gets its map parsed
    // before anything else happens (CTAP 2.1 §8: malformed CBOR is rejected as such).
    let params = || {
        if body.is_empty() {
            Ok(Parameters::empty())
        } else {
            cbor::parameters(body)
        }
    };
    let no_params = || {
        if body.is_empty() {
            Ok(())
        } else {
            Err(Status::INVALID_LENGTH)
        }
    };
    match command {
        CMD_GET_INFO => {
            no_params()?;
            Ok(Reply::Cbor(get_info(key)))
        }
        CMD_MAKE_CREDENTIAL => make_credential::make_credential(key, params()?, presence),
        CMD_GET_ASSERTION => get_assertion::get_assertion(key, params()?, presence),
        CMD_CLIENT_PIN => client_pin::client_pin(key, params()?),
        CMD_RESET => {
            no_params()?;
            reset(key, presence)
        }
        CMD_GET_NEXT_ASSERTION => {
            no_params()?;
            // CTAP 2.1 §6.3: only after a getAssertion that found several credentials, which a
            // key without resident credentials never answers.
            Err(Status::NOT_ALLOWED)
        }
        CMD_SELECTION => {
            no_params()?;
            // CTAP 2.1 §6.9: the user picks this key by touching it.
            user_presence(presence)?;
            Ok(Reply::Empty)
        }
        _ => Err(Status::INVALID_COMMAND),
    }
}

/// authenticatorGetInfo (CTAP 2.1 §6.4).
fn get_info(key: &FidoKey) -> Value {
    let algorithms = key
        .options
        .algorithms
        .iter()
        .map(|alg| {
            cbor::text_map(vec![
                ("type", Value::Text("public-key".into())),
                ("alg", cbor::integer(*alg)),
            ])
        })
        .collect();
    cbor::int_map(vec![
        (
            0x01,
            Value::Array(
                ["U2F_V2", "FIDO_2_0", "FIDO_2_1"]
                    .into_iter()
                    .map(|v| Value::Text(v.into()))
                    .collect(),
            ),
        ),
        (0x02, Value::Array(Vec::new())),
        (0x03, Value::Bytes(key.state.aaguid().to_vec())),
        (
            0x04,
            cbor::text_map(vec![
                // No resident credentials, no built-in user verification ("uv" absent: §6.4
                // reads absence as "not capable"), a PIN that may or may not be set yet.
                ("rk", Value::Bool(false)),
                ("up", Value::Bool(true)),
                ("clientPin", Value::Bool(key.state.pin_set())),
                ("pinUvAuthToken", Value::Bool(true)),
            ]),
        ),
        (0x05, cbor::integer(MAX_MSG_SIZE as i64)),
        (0x06, Value::Array(vec![cbor::integer(2), cbor::integer(1)])),
        (0x07, cbor::integer(MAX_CREDENTIALS_IN_LIST as i64)),
        (0x08, cbor::integer(MAX_CREDENTIAL_ID_LENGTH as i64)),
        (
            0x09,
            Value::Array(vec![Value::Text("usb".into()), Value::Text("nfc".into())]),
        ),
        (0x0A, Value::Array(algorithms)),
        (
            0x0D,
            cbor::integer(super::state::MIN_PIN_CODE_POINTS as i64),
        ),
    ])
}

/// authenticatorReset (CTAP 2.1 §6.6): only within 10 s of power-up, and only with a touch.
fn reset(key: &mut FidoKey, presence: &mut dyn Presence) -> Result<Reply, Status> {
    if !key.in_reset_window() {
        return Err(Status::NOT_ALLOWED);
    }
    user_presence(presence)?;
    key.state.wipe();
    key.pin = client_pin::PinSession::new();
    key.persist()?;
    Ok(Reply::Empty)
}

/// Waits for the touch: cancelled → CTAP2_ERR_KEEPALIVE_CANCEL, nobody touched →
/// CTAP2_ERR_USER_ACTION_TIMEOUT (CTAP 2.1 §8.2).
pub(super) fn user_presence(presence: &mut dyn Presence) -> Result<(), Status> {
    match presence.wait_for_touch() {
        Touch::Touched => Ok(()),
        Touch::Cancelled => Err(Status::KEEPALIVE_CANCEL),
        Touch::TimedOut => Err(Status::USER_ACTION_TIMEOUT),
    }
}

//! The CTAP2 command layer (CTAP 2.1 §6, §8): the command byte picks the command, its CBOR
//! parameters are parsed strictly, and the answer is a status byte followed by canonical CBOR.
//! authenticatorGetInfo, authenticatorSelection, authenticatorReset and getNextAssertion are
//! here; makeCredential, getAssertion and clientPIN have files of their own. The user-presence
//! and pinUvAuthToken checks that makeCredential and getAssertion share are here too.

use super::cbor::{self, Parameters, Value};
use super::pin_protocol::Protocol;
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

/// authenticatorData flags (WebAuthn §6.1, CTAP 2.1 §6.1): user present, user verified,
/// attested credential data included.
pub(super) const FLAG_UP: u8 = 0x01;
pub(super) const FLAG_UV: u8 = 0x04;
pub(super) const FLAG_AT: u8 = 0x40;

/// authenticatorData (WebAuthn §6.1): rpIdHash ‖ flags ‖ signCount (big-endian) ‖ attested
/// credential data, if any.
pub(super) fn auth_data(
    rp_id_hash: &[u8; 32],
    flags: u8,
    sign_count: u32,
    attested: &[u8],
) -> Vec<u8> {
    let mut data = Vec::with_capacity(37 + attested.len());
    data.extend_from_slice(rp_id_hash);
    data.push(flags);
    data.extend_from_slice(&sign_count.to_be_bytes());
    data.extend_from_slice(attested);
    data
}

/// SHA-256 of an RP ID (rpIdHash) or of a U2F application.
pub(super) fn rp_id_hash(rp_id: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(rp_id.as_bytes()).into()
}

/// The options map of makeCredential and getAssertion (§6.1.1, §6.2.1): text keys with boolean
/// values; unknown options are ignored, a non-boolean value is CBOR_UNEXPECTED_TYPE.
pub(super) struct Options {
    pub rk: Option<bool>,
    pub up: Option<bool>,
    pub uv: Option<bool>,
}

impl Options {
    pub(super) fn parse(value: Option<Value>) -> Result<Options, Status> {
        let mut options = Options {
            rk: None,
            up: None,
            uv: None,
        };
        let Some(value) = value else {
            return Ok(options);
        };
        for (name, value) in cbor::map(value)? {
            let name = cbor::text(name)?;
            let value = cbor::boolean(&value)?;
            match name.as_str() {
                "rk" => options.rk = Some(value),
                "up" => options.up = Some(value),
                "uv" => options.uv = Some(value),
                _ => {}
            }
        }
        Ok(options)
    }
}

/// A PublicKeyCredentialDescriptor of an allowList or excludeList (WebAuthn §5.8.3): "type" and
/// "id" required, "transports" an array of text if present. `None` when the type is not
/// "public-key" (such entries are skipped).
pub(super) fn descriptor(value: Value) -> Result<Option<Vec<u8>>, Status> {
    let mut entries = cbor::map(value)?;
    let kind = cbor::take_text_key(&mut entries, "type").ok_or(Status::MISSING_PARAMETER)?;
    let id = cbor::take_text_key(&mut entries, "id").ok_or(Status::MISSING_PARAMETER)?;
    let kind = cbor::text(kind)?;
    let id = cbor::bytes(id)?;
    if let Some(transports) = cbor::take_text_key(&mut entries, "transports") {
        for transport in cbor::array(transports)? {
            cbor::text(transport)?;
        }
    }
    Ok((kind == "public-key").then_some(id))
}

/// A credential list (allowList, excludeList): an array of at most maxCredentialCountInList
/// descriptors (CTAP 2.1 §6.4: else CTAP2_ERR_LIMIT_EXCEEDED).
pub(super) fn credential_list(value: Option<Value>) -> Result<Vec<Vec<u8>>, Status> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let items = cbor::array(value)?;
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        if let Some(id) = descriptor(item)? {
            ids.push(id);
        }
    }
    if ids.len() > MAX_CREDENTIALS_IN_LIST {
        return Err(Status::LIMIT_EXCEEDED);
    }
    Ok(ids)
}

/// pinUvAuthParam and pinUvAuthProtocol of makeCredential and getAssertion, type-checked.
pub(super) struct PinUvAuth {
    pub param: Option<Vec<u8>>,
    protocol: Option<u64>,
}

impl PinUvAuth {
    /// The two parameters under their keys in `params`.
    pub(super) fn take(
        params: &mut Parameters,
        param_key: u64,
        protocol_key: u64,
    ) -> Result<PinUvAuth, Status> {
        Ok(PinUvAuth {
            param: params.take(param_key).map(cbor::bytes).transpose()?,
            protocol: params
                .take(protocol_key)
                .map(|v| cbor::uint(&v))
                .transpose()?,
        })
    }

    /// Steps 1 and 2 of §6.1.2 and §6.2.2: a zero-length pinUvAuthParam ends the request after a
    /// touch ([`touch_to_select`]); a pinUvAuthParam needs a protocol this key knows (absent →
    /// MISSING_PARAMETER, unknown → INVALID_PARAMETER). The protocol, if a param is given.
    pub(super) fn check(
        &self,
        key: &FidoKey,
        presence: &mut dyn Presence,
    ) -> Result<Option<Protocol>, Status> {
        match &self.param {
            None => Ok(None),
            Some(param) if param.is_empty() => Err(touch_to_select(key, presence)),
            Some(_) => {
                Protocol::from_number(self.protocol.ok_or(Status::MISSING_PARAMETER)?).map(Some)
            }
        }
    }
}

/// A zero-length pinUvAuthParam (§6.1.2 step 1, §6.2.2 step 1): the platform asks the user to
/// pick a key by touching it; after the touch the key answers PIN_INVALID if a PIN is set,
/// PIN_NOT_SET otherwise.
fn touch_to_select(key: &FidoKey, presence: &mut dyn Presence) -> Status {
    if let Err(status) = user_presence(presence) {
        return status;
    }
    if key.state.pin_set() {
        Status::PIN_INVALID
    } else {
        Status::PIN_NOT_SET
    }
}

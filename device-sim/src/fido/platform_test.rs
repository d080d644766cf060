//! The platform side of the tests, written from the specifications apart from the authenticator:
//! PIN/UV auth protocols one and two (CTAP 2.1 §6.5.6, §6.5.7) with p256 ECDH, AES-256-CBC,
//! HKDF and HMAC; request builders; response readers; a scripted touch sensor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ciborium::value::Value;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::{FidoKey, Presence, Touch};

/// A touch sensor that answers from a script: the scripted answers first, then `rest`.
pub struct Script {
    pub touches: Vec<Touch>,
    pub rest: Touch,
    /// What `touched_now` answers.
    pub now: bool,
    pub asked: usize,
}

impl Script {
    /// Every touch comes at once.
    pub fn touching() -> Script {
        Script {
            touches: Vec::new(),
            rest: Touch::Touched,
            now: true,
            asked: 0,
        }
    }

    /// Nobody touches.
    pub fn untouched() -> Script {
        Script {
            touches: Vec::new(),
            rest: Touch::TimedOut,
            now: false,
            asked: 0,
        }
    }

    /// Every wait ends with `touch`.
    pub fn always(touch: Touch) -> Script {
        Script {
            touches: Vec::new(),
            rest: touch,
            now: touch == Touch::Touched,
            asked: 0,
        }
    }
}

impl Presence for Script {
    fn wait_for_touch(&mut self) -> Touch {
        self.asked += 1;
        if self.touches.is_empty() {
            self.rest
        } else {
            self.touches.remove(0)
        }
    }

    fn touched_now(&mut self) -> bool {
        self.asked += 1;
        self.now
    }
}

// ---- CBOR ----

pub fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

pub fn imap(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

pub fn tmap(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// Command byte ‖ canonical CBOR: map keys sorted as CTAP 2.1 §8 says (by encoded length, then
/// bytewise), implemented here separately from the key's encoder.
pub fn request(command: u8, params: Value) -> Vec<u8> {
    let mut out = vec![command];
    ciborium::ser::into_writer(&sorted(params), &mut out).unwrap();
    out
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Map(entries) => {
            let mut entries: Vec<(Vec<u8>, Value, Value)> = entries
                .into_iter()
                .map(|(k, v)| {
                    let mut e = Vec::new();
                    ciborium::ser::into_writer(&k, &mut e).unwrap();
                    (e, k, sorted(v))
                })
                .collect();
            entries.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
            Value::Map(entries.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

pub fn decode(bytes: &[u8]) -> Value {
    let mut reader = bytes;
    let value = ciborium::de::from_reader(&mut reader).unwrap();
    assert!(reader.is_empty(), "trailing bytes after the response");
    value
}

pub fn field(map: &Value, key: i64) -> Option<&Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_integer().map(i128::from) == Some(i128::from(key)))
        .map(|(_, v)| v)
}

pub fn text_field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// Sends one CTAP2 request; the status and the decoded response.
pub fn call(
    key: &mut FidoKey,
    command: u8,
    params: Value,
    presence: &mut Script,
) -> (u8, Option<Value>) {
    let answer = key.cbor(&request(command, params), presence);
    assert!(!answer.is_empty(), "no answer");
    let body = (answer.len() > 1).then(|| decode(&answer[1..]));
    (answer[0], body)
}

// ---- PIN/UV auth protocols, platform side ----

/// A shared secret with the key: the platform's COSE key to send and the secret.
pub struct Shared {
    pub protocol: u8,
    pub platform_key: Value,
    pub secret: Vec<u8>,
}

/// getKeyAgreement, then encapsulate (§6.5.6, §6.5.7).
pub fn key_agreement(key: &mut FidoKey, protocol: u8) -> Shared {
    let (status, body) = call(
        key,
        0x06,
        imap(vec![(1, int(protocol.into())), (2, int(2))]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0);
    let cose = field(body.as_ref().unwrap(), 1).unwrap();
    assert_eq!(field(cose, 1), Some(&int(2)));
    assert_eq!(field(cose, 3), Some(&int(-25)));
    assert_eq!(field(cose, -1), Some(&int(1)));
    let x = field(cose, -2).unwrap().as_bytes().unwrap();
    let y = field(cose, -3).unwrap().as_bytes().unwrap();
    let theirs = p256::PublicKey::from_sec1_bytes(&[&[4u8][..], x, y].concat()).unwrap();
    let ours = p256::ecdh::EphemeralSecret::random(&mut OsRng);
    let z = ours.diffie_hellman(&theirs);
    let z = z.raw_secret_bytes();
    let secret = match protocol {
        1 => Sha256::digest(z).to_vec(),
        _ => {
            let hkdf = Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
            let mut s = vec![0u8; 64];
            hkdf.expand(b"CTAP2 HMAC key", &mut s[..32]).unwrap();
            hkdf.expand(b"CTAP2 AES key", &mut s[32..]).unwrap();
            s
        }
    };
    let point = ours.public_key().to_encoded_point(false);
    let platform_key = imap(vec![
        (1, int(2)),
        (3, int(-25)),
        (-1, int(1)),
        (-2, bytes(point.x().unwrap())),
        (-3, bytes(point.y().unwrap())),
    ]);
    Shared {
        protocol,
        platform_key,
        secret,
    }
}

impl Shared {
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        match self.protocol {
            1 => cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.secret, &[0u8; 16])
                .unwrap()
                .encrypt_padded_vec_mut::<NoPadding>(plain),
            _ => {
                let mut iv = [0u8; 16];
                OsRng.fill_bytes(&mut iv);
                let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.secret[32..], &iv)
                    .unwrap()
                    .encrypt_padded_vec_mut::<NoPadding>(plain);
                [&iv[..], &ct].concat()
            }
        }
    }

    pub fn decrypt(&self, sealed: &[u8]) -> Vec<u8> {
        match self.protocol {
            1 => cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.secret, &[0u8; 16])
                .unwrap()
                .decrypt_padded_vec_mut::<NoPadding>(sealed)
                .unwrap(),
            _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.secret[32..], &sealed[..16])
                .unwrap()
                .decrypt_padded_vec_mut::<NoPadding>(&sealed[16..])
                .unwrap(),
        }
    }

    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        authenticate(self.protocol, &self.secret[..32], message)
    }

    /// pinHashEnc: encrypt(LEFT(SHA-256(PIN), 16)).
    pub fn pin_hash_enc(&self, pin: &str) -> Vec<u8> {
        self.encrypt(&Sha256::digest(pin.as_bytes())[..16])
    }

    /// newPinEnc: encrypt(PIN padded with zeros to 64 bytes).
    pub fn new_pin_enc(&self, pin: &[u8]) -> Vec<u8> {
        let mut padded = pin.to_vec();
        padded.resize(64, 0);
        self.encrypt(&padded)
    }
}

/// authenticate(key, message): HMAC-SHA-256, its first 16 bytes for protocol one.
pub fn authenticate(protocol: u8, key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    let tag = mac.finalize().into_bytes().to_vec();
    if protocol == 1 {
        tag[..16].to_vec()
    } else {
        tag
    }
}

/// clientPIN setPIN.
pub fn set_pin(key: &mut FidoKey, protocol: u8, pin: &[u8]) -> u8 {
    let shared = key_agreement(key, protocol);
    let new_pin_enc = shared.new_pin_enc(pin);
    let param = shared.authenticate(&new_pin_enc);
    call(
        key,
        0x06,
        imap(vec![
            (1, int(protocol.into())),
            (2, int(3)),
            (3, shared.platform_key.clone()),
            (4, bytes(&param)),
            (5, bytes(&new_pin_enc)),
        ]),
        &mut Script::touching(),
    )
    .0
}

/// clientPIN changePIN.
pub fn change_pin(key: &mut FidoKey, protocol: u8, old: &str, new: &[u8]) -> u8 {
    let shared = key_agreement(key, protocol);
    let new_pin_enc = shared.new_pin_enc(new);
    let pin_hash_enc = shared.pin_hash_enc(old);
    let param = shared.authenticate(&[&new_pin_enc[..], &pin_hash_enc].concat());
    call(
        key,
        0x06,
        imap(vec![
            (1, int(protocol.into())),
            (2, int(4)),
            (3, shared.platform_key.clone()),
            (4, bytes(&param)),
            (5, bytes(&new_pin_enc)),
            (6, bytes(&pin_hash_enc)),
        ]),
        &mut Script::touching(),
    )
    .0
}

/// A pinUvAuthToken: getPinUvAuthTokenUsingPinWithPermissions when `permissions` is given, else
/// getPinToken. The status on failure.
pub fn token(
    key: &mut FidoKey,
    protocol: u8,
    pin: &str,
    permissions: Option<u64>,
    rp_id: Option<&str>,
) -> Result<Vec<u8>, u8> {
    let shared = key_agreement(key, protocol);
    let mut params = vec![
        (1, int(protocol.into())),
        (2, int(if permissions.is_some() { 9 } else { 5 })),
        (3, shared.platform_key.clone()),
        (6, bytes(&shared.pin_hash_enc(pin))),
    ];
    if let Some(p) = permissions {
        params.push((9, int(p as i64)));
    }
    if let Some(rp) = rp_id {
        params.push((0x0A, text(rp)));
    }
    let (status, body) = call(key, 0x06, imap(params), &mut Script::touching());
    if status != 0 {
        return Err(status);
    }
    let sealed = field(body.as_ref().unwrap(), 2)
        .unwrap()
        .as_bytes()
        .unwrap();
    let token = shared.decrypt(sealed);
    assert_eq!(token.len(), 32);
    Ok(token)
}

// ---- makeCredential / getAssertion ----

pub const RP: &str = "pam://tessera";

pub fn client_data_hash() -> Vec<u8> {
    let mut h = vec![0u8; 32];
    OsRng.fill_bytes(&mut h);
    h
}

/// makeCredential parameters for `RP` with ES256, plus `extra`.
pub fn mc_params(cdh: &[u8], extra: Vec<(i64, Value)>) -> Value {
    let mut params = vec![
        (1, bytes(cdh)),
        (2, tmap(vec![("id", text(RP)), ("name", text("Tessera"))])),
        (
            3,
            tmap(vec![
                ("id", bytes(b"alice-uid-1000")),
                ("name", text("alice")),
            ]),
        ),
        (
            4,
            Value::Array(vec![tmap(vec![
                ("alg", int(-7)),
                ("type", text("public-key")),
            ])]),
        ),
    ];
    for (k, v) in extra {
        params.retain(|(key, _)| *key != k);
        params.push((k, v));
    }
    imap(params)
}

pub fn descriptor(id: &[u8]) -> Value {
    tmap(vec![("id", bytes(id)), ("type", text("public-key"))])
}

/// getAssertion parameters for `RP` with an allowList of `ids`, plus `extra`.
pub fn ga_params(cdh: &[u8], ids: &[&[u8]], extra: Vec<(i64, Value)>) -> Value {
    let mut params = vec![
        (1, text(RP)),
        (2, bytes(cdh)),
        (
            3,
            Value::Array(ids.iter().map(|id| descriptor(id)).collect()),
        ),
    ];
    for (k, v) in extra {
        params.retain(|(key, _)| *key != k);
        params.push((k, v));
    }
    imap(params)
}

/// What makeCredential's authenticatorData says.
pub struct Made {
    pub flags: u8,
    pub counter: u32,
    pub id: Vec<u8>,
    pub public_key: Value,
}

pub fn parse_made(auth_data: &[u8]) -> Made {
    assert_eq!(&auth_data[..32], &Sha256::digest(RP.as_bytes())[..]);
    let flags = auth_data[32];
    let counter = u32::from_be_bytes(auth_data[33..37].try_into().unwrap());
    assert_eq!(&auth_data[37..53], &super::DEFAULT_AAGUID);
    let len = usize::from(u16::from_be_bytes([auth_data[53], auth_data[54]]));
    let id = auth_data[55..55 + len].to_vec();
    let mut rest = &auth_data[55 + len..];
    let public_key: Value = ciborium::de::from_reader(&mut rest).unwrap();
    assert!(rest.is_empty(), "no extensions expected");
    Made {
        flags,
        counter,
        id,
        public_key,
    }
}

/// Verifies `signature` over `message` with a COSE public key (ES256 DER or EdDSA).
pub fn verify(public_key: &Value, message: &[u8], signature: &[u8]) {
    match field(public_key, 3).unwrap() {
        v if *v == int(-7) => {
            use p256::ecdsa::signature::Verifier;
            let x = field(public_key, -2).unwrap().as_bytes().unwrap();
            let y = field(public_key, -3).unwrap().as_bytes().unwrap();
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&[&[4u8][..], x, y].concat()).unwrap();
            let sig = p256::ecdsa::Signature::from_der(signature).unwrap();
            key.verify(message, &sig).unwrap();
        }
        v if *v == int(-8) => {
            use ed25519_dalek::Verifier;
            assert_eq!(field(public_key, 1), Some(&int(1)));
            assert_eq!(field(public_key, -1), Some(&int(6)));
            let x: [u8; 32] = field(public_key, -2).unwrap().as_bytes().unwrap()[..]
                .try_into()
                .unwrap();
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(signature).unwrap();
            key.verify(message, &sig).unwrap();
        }
        other => panic!("unexpected alg {other:?}"),
    }
}

/// makeCredential on `key` (ES256, no PIN involved); the credential.
pub fn make(key: &mut FidoKey) -> Made {
    let cdh = client_data_hash();
    let (status, body) = call(key, 0x01, mc_params(&cdh, vec![]), &mut Script::touching());
    assert_eq!(status, 0, "makeCredential");
    let body = body.unwrap();
    parse_made(field(&body, 2).unwrap().as_bytes().unwrap())
}

/// makeCredential with a fresh token of `key`'s PIN "1234".
pub fn make_with_pin(key: &mut FidoKey) -> Made {
    let token = token(key, 2, "1234", Some(0x01), Some(RP)).unwrap();
    let cdh = client_data_hash();
    let param = authenticate(2, &token, &cdh);
    let (status, body) = call(
        key,
        0x01,
        mc_params(&cdh, vec![(8, bytes(&param)), (9, int(2))]),
        &mut Script::touching(),
    );
    assert_eq!(status, 0, "makeCredential with a token");
    parse_made(field(&body.unwrap(), 2).unwrap().as_bytes().unwrap())
}

/// A key without a PIN (another key, for "not ours" cases).
pub fn make_key() -> FidoKey {
    FidoKey::in_memory(super::FidoOptions {
        pin: None,
        ..super::FidoOptions::default()
    })
}

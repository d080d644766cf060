//! Hostile answers for every decoder of this module and of authenticator data: no input may
//! panic, hang or allocate without bound. A deterministic mutation loop over valid answers
//! stands in for the fuzz targets (`fuzz/fuzz_targets/{ctap2_responses,authdata}.rs`) in the
//! ordinary test run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciborium::value::Value;

use crate::fido::authdata::{
    AttestedCredentialData, AuthenticatorData, CredentialPublicKey, Flags,
};
use crate::fido::ctap2::cbor::{self, int, text};
use crate::fido::ctap2::{
    ClientPinResponse, GetAssertionResponse, Info, MakeCredentialResponse, Selection,
};
use crate::fido::u2f;

/// Runs every decoder on `answer`; only the absence of panics is checked.
fn decode_all(answer: &[u8]) {
    let _ = Info::decode(answer);
    let _ = MakeCredentialResponse::decode(answer);
    let _ = GetAssertionResponse::decode(answer);
    let _ = ClientPinResponse::decode(answer);
    let _ = Selection::decode(answer);
    let _ = u2f::RegisterResponse::decode(answer);
    let _ = u2f::AuthenticateResponse::decode(answer);
    let _ = u2f::holds(answer);
    if let Some(body) = answer.get(1..) {
        if let Ok(ad) = AuthenticatorData::parse(body) {
            let once = ad.to_bytes().unwrap();
            let twice = AuthenticatorData::parse(&once).unwrap().to_bytes().unwrap();
            assert_eq!(once, twice);
        }
    }
}

fn auth_data_raw() -> Vec<u8> {
    let sk = p256::SecretKey::from_slice(&[0x66; 32]).unwrap();
    AuthenticatorData {
        rp_id_hash: [1; 32],
        flags: Flags(Flags::UP | Flags::AT | Flags::ED),
        sign_count: 5,
        attested_credential: Some(AttestedCredentialData {
            aaguid: [2; 16],
            credential_id: vec![3; 20],
            public_key: CredentialPublicKey::Es256(sk.public_key()),
        }),
        extensions: Some(Value::Map(vec![(text("credProtect"), int(2))])),
    }
    .to_bytes()
    .unwrap()
}

fn seeds() -> Vec<Vec<u8>> {
    let with_status = |v: Value| [vec![0u8], cbor::to_vec(v).unwrap()].concat();
    let raw = auth_data_raw();
    vec![
        with_status(Value::Map(vec![
            (int(1), Value::Array(vec![text("FIDO_2_1")])),
            (int(3), Value::Bytes(vec![0; 16])),
            (
                int(4),
                Value::Map(vec![(text("clientPin"), Value::Bool(true))]),
            ),
            (int(6), Value::Array(vec![int(2), int(1)])),
        ])),
        with_status(Value::Map(vec![
            (int(1), text("none")),
            (int(2), Value::Bytes(raw.clone())),
            (int(3), Value::Map(vec![])),
        ])),
        with_status(Value::Map(vec![
            (
                int(1),
                Value::Map(vec![
                    (text("id"), Value::Bytes(vec![3; 20])),
                    (text("type"), text("public-key")),
                ]),
            ),
            (int(2), Value::Bytes(raw[..37].to_vec())),
            (int(3), Value::Bytes(vec![0x30, 0x06, 2, 1, 1, 2, 1, 1])),
        ])),
        with_status(Value::Map(vec![(int(3), int(8)), (int(5), int(3))])),
        [vec![0u8], raw].concat(),
        vec![0x01, 0, 0, 0, 7, 0x30, 0x00, 0x90, 0x00],
    ]
}

/// A small xorshift generator: the same mutations every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_answers_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for seed in seeds() {
        decode_all(&seed);
        for _ in 0..3000 {
            let mut m = seed.clone();
            for _ in 0..=rng.below(4) {
                match rng.below(4) {
                    0 if !m.is_empty() => {
                        let i = rng.below(m.len());
                        m[i] = rng.next() as u8;
                    }
                    1 if !m.is_empty() => {
                        let i = rng.below(m.len());
                        m.truncate(i);
                    }
                    2 => {
                        let i = rng.below(m.len() + 1);
                        m.insert(i, rng.next() as u8);
                    }
                    _ if !m.is_empty() => {
                        let i = rng.below(m.len());
                        m[i] ^= 1 << rng.below(8);
                    }
                    _ => {}
                }
            }
            decode_all(&m);
        }
    }
}

#[test]
fn huge_claimed_lengths_and_deep_nesting() {
    let ff = [0xFFu8; 8];
    for head in [0x5B, 0x7B, 0x9B, 0xBB] {
        decode_all(&[&[0x00, head][..], &ff].concat());
        decode_all(&[&[0x00, 0xA1, 0x01, head][..], &ff].concat());
    }
    for nest in [0x81u8, 0x9F, 0xA1, 0xC6] {
        let mut deep = vec![0x00];
        for _ in 0..100_000 {
            deep.push(nest);
            if nest == 0xA1 {
                deep.push(0x01);
            }
        }
        decode_all(&deep);
    }
    decode_all(&[]);
    decode_all(&[0x00]);
}

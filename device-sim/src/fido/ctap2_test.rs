//! Tests of the CTAP2 command layer: getInfo, selection, reset, the CBOR strictness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use ciborium::value::Value;

use super::{FidoKey, FidoOptions, Presence, Touch, ALG_EDDSA, ALG_ES256};

/// A touch sensor that answers from a script.
pub(super) struct Script {
    pub touches: Vec<Touch>,
    pub asked: usize,
    pub now: bool,
}

impl Script {
    pub fn touching() -> Script {
        Script {
            touches: Vec::new(),
            asked: 0,
            now: true,
        }
    }

    pub fn answering(touch: Touch) -> Script {
        Script {
            touches: vec![touch],
            asked: 0,
            now: false,
        }
    }
}

impl Presence for Script {
    fn wait_for_touch(&mut self) -> Touch {
        self.asked += 1;
        if self.touches.is_empty() {
            if self.now {
                Touch::Touched
            } else {
                Touch::TimedOut
            }
        } else {
            self.touches.remove(0)
        }
    }

    fn touched_now(&mut self) -> bool {
        self.asked += 1;
        self.now
    }
}

pub(super) fn decode(bytes: &[u8]) -> Value {
    ciborium::de::from_reader(bytes).unwrap()
}

pub(super) fn field<'a>(map: &'a Value, key: i64) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_integer().map(i128::from) == Some(i128::from(key)))
        .map(|(_, v)| v)
}

#[test]
fn get_info_lists_what_the_key_does() {
    let mut key = FidoKey::in_memory(FidoOptions {
        algorithms: vec![ALG_ES256, ALG_EDDSA],
        ..FidoOptions::default()
    });
    let answer = key.cbor(&[0x04], &mut Script::touching());
    assert_eq!(answer[0], 0x00);
    let info = decode(&answer[1..]);
    let versions: Vec<_> = field(&info, 1)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_text().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["U2F_V2", "FIDO_2_0", "FIDO_2_1"]);
    assert_eq!(
        field(&info, 3).unwrap().as_bytes().unwrap(),
        &super::DEFAULT_AAGUID
    );
    let options = field(&info, 4).unwrap().as_map().unwrap();
    let names: Vec<_> = options.iter().map(|(k, _)| k.as_text().unwrap()).collect();
    assert_eq!(names, ["rk", "up", "clientPin", "pinUvAuthToken"]);
    assert_eq!(options[2].1, Value::Bool(true));
    assert_eq!(
        field(&info, 5).unwrap().as_integer().map(i128::from),
        Some(1200)
    );
    let algs = field(&info, 0x0A).unwrap().as_array().unwrap();
    assert_eq!(algs.len(), 2);
    // Canonical: the response re-encodes to itself.
    let mut again = Vec::new();
    ciborium::ser::into_writer(&info, &mut again).unwrap();
    assert_eq!(again, &answer[1..]);
}

#[test]
fn get_info_of_a_key_without_pin_says_client_pin_false() {
    let mut key = FidoKey::in_memory(FidoOptions {
        pin: None,
        ..FidoOptions::default()
    });
    let info = decode(&key.cbor(&[0x04], &mut Script::touching())[1..]);
    let options = field(&info, 4).unwrap().as_map().unwrap();
    assert_eq!(
        options[2],
        (Value::Text("clientPin".into()), Value::Bool(false))
    );
}

#[test]
fn u2f_only_key_knows_no_cbor() {
    let mut key = FidoKey::in_memory(FidoOptions {
        u2f_only: true,
        ..FidoOptions::default()
    });
    assert!(!key.speaks_cbor());
    assert_eq!(key.cbor(&[0x04], &mut Script::touching()), [0x01]);
}

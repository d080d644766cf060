//! The CBOR both ways for the CTAP2 commands: requests in CTAP2 canonical form (CTAP 2.1 §8,
//! "Message encoding"), responses read strictly from a possibly hostile key (bounded nesting and
//! size, no trailing bytes, every type checked, duplicate keys refused, unknown keys ignored).

use ciborium::value::{Integer, Value};

use crate::fido::status::{self, Status};
use crate::{Error, Result};

/// Deepest nesting accepted in an answer. The deepest structure CTAP 2.1 defines is a COSE key
/// inside a map inside the response map (getInfo's algorithms, a credential descriptor): 4 levels;
/// 16 leaves room for extensions while keeping a hostile key from exhausting the stack.
pub const MAX_DEPTH: usize = 16;

/// Largest answer accepted: CTAPHID carries at most 7609 bytes (§11.2.4); NFC extended APDUs can
/// carry more, and no answer Tessera asks for comes near 64 KiB.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// `command ‖ CBOR(params)` with the parameter map in canonical form, or the command byte alone
/// when there are no parameters (§6: "authenticatorGetInfo … no parameters").
pub fn request(command: u8, params: Option<Vec<(Value, Value)>>) -> Result<Vec<u8>> {
    let mut out = vec![command];
    if let Some(params) = params {
        let value = canonical(Value::Map(params));
        ciborium::ser::into_writer(&value, &mut out)
            .map_err(|e| Error::Internal(format!("encoding a CTAP2 request: {e}")))?;
    }
    Ok(out)
}

/// The CBOR encoding of one value in canonical form (for COSE keys inside requests and tests).
pub fn to_vec(value: Value) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(&canonical(value), &mut out)
        .map_err(|e| Error::Internal(format!("encoding CBOR: {e}")))?;
    Ok(out)
}

/// Sorts every map's keys as CTAP2 canonical CBOR wants (§8, after RFC 7049 §3.9): lower major
/// type first, then shorter encoding, then byte-wise lexical order of the encodings. ciborium
/// already writes shortest integer and length forms and only definite lengths.
pub fn canonical(value: Value) -> Value {
    match value {
        Value::Map(entries) => {
            let mut keyed: Vec<(Vec<u8>, Value, Value)> = entries
                .into_iter()
                .map(|(k, v)| {
                    let k = canonical(k);
                    let mut encoded = Vec::new();
                    // Writing into a Vec cannot fail for the values built here; an empty sort key
                    // would only misplace an entry, never lose it.
                    let _ = ciborium::ser::into_writer(&k, &mut encoded);
                    (encoded, k, canonical(v))
                })
                .collect();
            keyed.sort_by(|(a, _, _), (b, _, _)| {
                let major = |e: &[u8]| e.first().map_or(0, |b| b >> 5);
                (major(a), a.len(), a.as_slice()).cmp(&(major(b), b.len(), b.as_slice()))
            });
            Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        Value::Tag(tag, inner) => Value::Tag(tag, Box::new(canonical(*inner))),
        other => other,
    }
}

/// An integer map key or value as CBOR.
pub fn int(n: i64) -> Value {
    Value::Integer(Integer::from(n))
}

/// A text value as CBOR.
pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Splits off the status byte: success gives the CBOR body (possibly empty), anything else the
/// mapped error (§8.2, [`status::error`]).
pub fn body(status_and_cbor: &[u8]) -> Result<&[u8]> {
    let [code, body @ ..] = status_and_cbor else {
        return Err(Error::Device(
            "the security key sent an empty answer".into(),
        ));
    };
    match Status::from_u8(*code) {
        Status::Ok => Ok(body),
        other => Err(status::error(other)),
    }
}

/// Reads exactly one CBOR data item from `bytes`, bounded in depth and size; trailing bytes are
/// an error. `what` names the structure for messages.
pub fn from_slice(bytes: &[u8], what: &str) -> Result<Value> {
    let mut rest = bytes;
    let value = item(&mut rest, what)?;
    if !rest.is_empty() {
        return Err(malformed(what, "trailing bytes after the CBOR item"));
    }
    Ok(value)
}

/// Reads one CBOR data item from the front of `rest` and advances it past the item (for CBOR
/// embedded in a byte layout, like the COSE key in authenticator data).
pub fn item(rest: &mut &[u8], what: &str) -> Result<Value> {
    if rest.len() > MAX_RESPONSE_LEN {
        return Err(malformed(what, "longer than any answer Tessera accepts"));
    }
    ciborium::de::from_reader_with_recursion_limit(&mut *rest, MAX_DEPTH)
        .map_err(|e| malformed(what, &format!("invalid CBOR: {e}")))
}

/// The error for a structurally wrong answer.
pub fn malformed(what: &str, why: &str) -> Error {
    Error::Device(format!("malformed {what} from the security key: {why}"))
}

/// A response map with integer keys (every CTAP2 response, §6), taken apart field by field.
/// Entries whose key is not an integer are ignored, like unknown integer keys (forward
/// compatibility); a key that appears twice is an error.
pub struct Fields {
    what: &'static str,
    entries: Vec<(i64, Value)>,
}

impl Fields {
    /// The fields of `value`, which must be a map.
    pub fn new(value: Value, what: &'static str) -> Result<Fields> {
        let Value::Map(map) = value else {
            return Err(malformed(what, "not a map"));
        };
        let mut entries: Vec<(i64, Value)> = Vec::with_capacity(map.len());
        for (k, v) in map {
            let Value::Integer(k) = k else { continue };
            let Ok(k) = i64::try_from(k) else { continue };
            if entries.iter().any(|(seen, _)| *seen == k) {
                return Err(malformed(what, &format!("key {k} appears twice")));
            }
            entries.push((k, v));
        }
        Ok(Fields { what, entries })
    }

    /// The fields of the body of an answer: an empty body is an empty map (§8: "the response …
    /// may be omitted"), anything else must be one CBOR map.
    pub fn from_body(body: &[u8], what: &'static str) -> Result<Fields> {
        if body.is_empty() {
            return Ok(Fields {
                what,
                entries: Vec::new(),
            });
        }
        Fields::new(from_slice(body, what)?, what)
    }

    /// Takes the value under `key`, if present.
    pub fn take(&mut self, key: i64) -> Option<Value> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.swap_remove(at).1)
    }

    /// Takes the value under `key`, which must be present.
    pub fn need(&mut self, key: i64, name: &str) -> Result<Value> {
        self.take(key)
            .ok_or_else(|| malformed(self.what, &format!("{name} (0x{key:02X}) missing")))
    }

    /// What these fields are, for messages.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// A byte string.
pub fn bytes(v: Value, what: &str, name: &str) -> Result<Vec<u8>> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_type(what, name, "a byte string")),
    }
}

/// A text string.
pub fn text_string(v: Value, what: &str, name: &str) -> Result<String> {
    match v {
        Value::Text(t) => Ok(t),
        _ => Err(wrong_type(what, name, "a text string")),
    }
}

/// A boolean.
pub fn boolean(v: Value, what: &str, name: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(b),
        _ => Err(wrong_type(what, name, "a boolean")),
    }
}

/// An integer that fits an `i64`.
pub fn integer(v: Value, what: &str, name: &str) -> Result<i64> {
    match v {
        Value::Integer(i) => {
            i64::try_from(i).map_err(|_| malformed(what, &format!("{name} out of range")))
        }
        _ => Err(wrong_type(what, name, "an integer")),
    }
}

/// An unsigned integer that fits `T`.
pub fn unsigned<T: TryFrom<i64>>(v: Value, what: &str, name: &str) -> Result<T> {
    let i = integer(v, what, name)?;
    T::try_from(i).map_err(|_| malformed(what, &format!("{name} out of range ({i})")))
}

/// An array.
pub fn array(v: Value, what: &str, name: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(wrong_type(what, name, "an array")),
    }
}

/// A map with text keys (rp, user, options, credential descriptors), as `(key, value)` pairs;
/// a non-text key or a key seen twice is an error.
pub fn text_map(v: Value, what: &str, name: &str) -> Result<Vec<(String, Value)>> {
    let Value::Map(map) = v else {
        return Err(wrong_type(what, name, "a map"));
    };
    let mut out: Vec<(String, Value)> = Vec::with_capacity(map.len());
    for (k, v) in map {
        let Value::Text(k) = k else {
            return Err(malformed(what, &format!("{name} has a non-text key")));
        };
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(malformed(what, &format!("{name} has key {k:?} twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn wrong_type(what: &str, name: &str, expected: &str) -> Error {
    malformed(what, &format!("{name} is not {expected}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn canonical_order_is_major_type_then_length_then_bytes() {
        let map = Value::Map(vec![
            (text("uv"), Value::Bool(true)),
            (int(24), Value::Null),
            (text("up"), Value::Bool(true)),
            (int(-1), Value::Null),
            (text("a"), Value::Null),
            (int(1), Value::Null),
        ]);
        let bytes = to_vec(map).unwrap();
        // 1 (0x01), 24 (0x18 0x18), -1 (0x20), "a", "up", "uv".
        assert_eq!(
            hex::encode(bytes),
            "a6\
             01f6\
             1818f6\
             20f6\
             6161f6\
             627570f5\
             627576f5"
        );
    }

    #[test]
    fn reads_one_item_and_refuses_trailing_bytes() {
        assert_eq!(from_slice(&[0x01], "x").unwrap(), int(1));
        assert!(from_slice(&[0x01, 0x02], "x").is_err());
        let mut rest: &[u8] = &[0x01, 0x02];
        assert_eq!(item(&mut rest, "x").unwrap(), int(1));
        assert_eq!(rest, &[0x02]);
    }

    #[test]
    fn refuses_deep_nesting() {
        let deep: Vec<u8> = std::iter::repeat_n(0x81, 200).chain([0x01]).collect();
        assert!(from_slice(&deep, "x").is_err());
        let ok: Vec<u8> = std::iter::repeat_n(0x81, 8).chain([0x01]).collect();
        assert!(from_slice(&ok, "x").is_ok());
    }

    #[test]
    fn refuses_huge_claimed_lengths() {
        // A byte string claiming 2^32-1 bytes with five present.
        let bytes = [0x5a, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5];
        assert!(from_slice(&bytes, "x").is_err());
    }

    #[test]
    fn status_byte() {
        assert_eq!(body(&[0x00, 0xa0]).unwrap(), &[0xa0]);
        assert!(matches!(body(&[0x2e]), Err(Error::NotEnrolled(_))));
        assert!(matches!(body(&[]), Err(Error::Device(_))));
    }

    #[test]
    fn fields_refuse_duplicates_and_ignore_text_keys() {
        let dup = Value::Map(vec![(int(1), int(1)), (int(1), int(2))]);
        assert!(Fields::new(dup, "x").is_err());
        let mut f =
            Fields::new(Value::Map(vec![(text("z"), int(0)), (int(2), int(5))]), "x").unwrap();
        assert!(f.need(1, "one").is_err());
        assert_eq!(f.take(2), Some(int(5)));
    }
}

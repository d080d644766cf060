//! CTAP2 canonical CBOR (CTAP 2.1 §8 "Message Encoding"): requests are parsed strictly (definite
//! lengths, shortest forms, map keys in canonical order, no trailing bytes, nesting at most four
//! levels deep) and responses are written in that same form. Typed access to request fields maps
//! a wrong type to CTAP2_ERR_CBOR_UNEXPECTED_TYPE.

use std::cmp::Ordering;

pub(super) use ciborium::value::Value;

use super::status::Status;

/// CTAP 2.1 §8: at most four levels of maps and arrays, the top-level map included
/// (makeCredential's excludeList → descriptor → transports is the deepest request).
const MAX_DEPTH: usize = 4;

/// Encodes `value` in canonical form: every map's entries sorted by the canonical order of their
/// keys (RFC 7049 §3.9 as CTAP 2.1 §8 restates it).
pub(super) fn encode(value: Value) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(&canonical(value)?, &mut out).map_err(|_| Status::OTHER)?;
    Ok(out)
}

/// Parses a request's parameters: a map with unsigned integer keys, in canonical form.
/// Anything else in the bytes → CTAP2_ERR_INVALID_CBOR; a top level that is not a map →
/// CTAP2_ERR_CBOR_UNEXPECTED_TYPE.
pub(super) fn parameters(bytes: &[u8]) -> Result<Parameters, Status> {
    let value = decode(bytes)?;
    let Value::Map(entries) = value else {
        return Err(Status::CBOR_UNEXPECTED_TYPE);
    };
    let mut fields = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let key = uint(&k)?;
        fields.push((key, Some(v)));
    }
    Ok(Parameters { fields })
}

/// Parses one CBOR item that must fill `bytes` exactly and be canonical.
pub(super) fn decode(bytes: &[u8]) -> Result<Value, Status> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader(&mut reader).map_err(|_| Status::INVALID_CBOR)?;
    if !reader.is_empty() || depth(&value) > MAX_DEPTH {
        return Err(Status::INVALID_CBOR);
    }
    // Re-encoding canonically and comparing rejects indefinite lengths, long forms, unsorted and
    // duplicate keys in one go (CTAP 2.1 §8: "MUST be ... canonical").
    if has_duplicate_keys(&value) || encode(value.clone())? != bytes {
        return Err(Status::INVALID_CBOR);
    }
    Ok(value)
}

/// A request's top-level map; each field is taken out once by its key.
pub(super) struct Parameters {
    fields: Vec<(u64, Option<Value>)>,
}

impl Parameters {
    /// No parameters at all (a command sent without CBOR).
    pub(super) fn empty() -> Parameters {
        Parameters { fields: Vec::new() }
    }

    /// The field `key`, if present.
    pub(super) fn take(&mut self, key: u64) -> Option<Value> {
        self.fields
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.take())
    }

    /// The field `key`, or CTAP2_ERR_MISSING_PARAMETER.
    pub(super) fn require(&mut self, key: u64) -> Result<Value, Status> {
        self.take(key).ok_or(Status::MISSING_PARAMETER)
    }
}

/// An unsigned integer.
pub(super) fn uint(value: &Value) -> Result<u64, Status> {
    match value {
        Value::Integer(i) => {
            u64::try_from(i128::from(*i)).map_err(|_| Status::CBOR_UNEXPECTED_TYPE)
        }
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// Any integer (COSE algorithm identifiers are negative).
pub(super) fn int(value: &Value) -> Result<i64, Status> {
    match value {
        Value::Integer(i) => {
            i64::try_from(i128::from(*i)).map_err(|_| Status::CBOR_UNEXPECTED_TYPE)
        }
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// A byte string.
pub(super) fn bytes(value: Value) -> Result<Vec<u8>, Status> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// A text string.
pub(super) fn text(value: Value) -> Result<String, Status> {
    match value {
        Value::Text(t) => Ok(t),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// A boolean.
pub(super) fn boolean(value: &Value) -> Result<bool, Status> {
    match value {
        Value::Bool(b) => Ok(*b),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// An array.
pub(super) fn array(value: Value) -> Result<Vec<Value>, Status> {
    match value {
        Value::Array(a) => Ok(a),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// A map.
pub(super) fn map(value: Value) -> Result<Vec<(Value, Value)>, Status> {
    match value {
        Value::Map(m) => Ok(m),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

/// The value under the text key `name` in a map, taken out.
pub(super) fn take_text_key(entries: &mut [(Value, Value)], name: &str) -> Option<Value> {
    entries
        .iter_mut()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
        .map(|(_, v)| std::mem::replace(v, Value::Null))
}

/// The value under the integer key `key` in a map (COSE keys), borrowed.
pub(super) fn int_key(entries: &[(Value, Value)], key: i64) -> Option<&Value> {
    entries
        .iter()
        .find(|(k, _)| matches!(k, Value::Integer(i) if i128::from(*i) == i128::from(key)))
        .map(|(_, v)| v)
}

/// An integer value.
pub(super) fn integer(i: i64) -> Value {
    Value::Integer(i.into())
}

/// A map with integer keys (responses, COSE keys).
pub(super) fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (integer(k), v)).collect())
}

/// A map with text keys.
pub(super) fn text_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

fn canonical(value: Value) -> Result<Value, Status> {
    Ok(match value {
        Value::Map(entries) => {
            let mut keyed = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let k = canonical(k)?;
                let mut encoded = Vec::new();
                ciborium::ser::into_writer(&k, &mut encoded).map_err(|_| Status::OTHER)?;
                keyed.push((encoded, k, canonical(v)?));
            }
            keyed.sort_by(|a, b| canonical_order(&a.0, &b.0));
            Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(canonical).collect::<Result<_, _>>()?)
        }
        Value::Tag(tag, inner) => Value::Tag(tag, Box::new(canonical(*inner)?)),
        other => other,
    })
}

/// CTAP 2.1 §8 key order: lower major type first, then shorter encoding, then bytewise lower.
fn canonical_order(a: &[u8], b: &[u8]) -> Ordering {
    let major = |e: &[u8]| e.first().map(|b| b >> 5);
    major(a)
        .cmp(&major(b))
        .then(a.len().cmp(&b.len()))
        .then(a.cmp(b))
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Map(m) => {
            1 + m
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Tag(_, inner) => depth(inner),
        _ => 0,
    }
}

fn has_duplicate_keys(value: &Value) -> bool {
    match value {
        Value::Map(m) => {
            m.iter()
                .enumerate()
                .any(|(i, (k, _))| m[..i].iter().any(|(j, _)| j == k))
                || m.iter()
                    .any(|(k, v)| has_duplicate_keys(k) || has_duplicate_keys(v))
        }
        Value::Array(a) => a.iter().any(has_duplicate_keys),
        Value::Tag(_, inner) => has_duplicate_keys(inner),
        _ => false,
    }
}

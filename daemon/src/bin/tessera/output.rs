//! What `tessera` prints on standard output: JSON (`--json`, keys sorted, one object per line for
//! lists) or text for people, with times in the local time zone rather than epoch seconds.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

/// Keys whose values are Unix times (seconds), shown as local times in text.
const TIME_KEYS: &[&str] = &["iat", "nbf", "exp", "auth_time", "last_used", "created"];

/// A dictionary as one line of JSON, keys sorted.
pub fn json(dict: &HashMap<String, OwnedValue>) -> String {
    let mut map = serde_json::Map::new();
    let mut keys: Vec<&String> = dict.keys().collect();
    keys.sort();
    for k in keys {
        if let Some(v) = dict.get(k) {
            map.insert(k.clone(), value_json(v));
        }
    }
    serde_json::Value::Object(map).to_string()
}

/// A dictionary as "key: value" lines in `order` first, then the rest sorted; times local.
pub fn text(dict: &HashMap<String, OwnedValue>, order: &[&str]) -> String {
    let mut keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| dict.contains_key(*k))
        .collect();
    let mut rest: Vec<&str> = dict
        .keys()
        .map(String::as_str)
        .filter(|k| !order.contains(k))
        .collect();
    rest.sort_unstable();
    keys.extend(rest);
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    keys.iter()
        .filter_map(|k| Some(format!("{k:<width$}  {}", shown(k, dict.get(*k)?))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One value for people: times local, lists comma-separated, dictionaries as key=value.
pub fn shown(key: &str, v: &Value<'_>) -> String {
    match v {
        Value::U64(n) if TIME_KEYS.contains(&key) => time(*n),
        Value::Value(inner) => shown(key, inner),
        Value::Str(s) => s.as_str().to_owned(),
        Value::Array(a) => a
            .iter()
            .map(|v| shown("", v))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Dict(_) => match value_json(v) {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        },
        other => value_json(other).to_string(),
    }
}

/// A Unix time in the local time zone ("2026-12-02 01:55:00 CET"); 0 is "never".
pub fn time(secs: u64) -> String {
    if secs == 0 {
        return "never".into();
    }
    let Ok(secs) = i64::try_from(secs) else {
        return secs.to_string();
    };
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => secs.to_string(),
    }
}

/// A string field of a dictionary ("" when absent or not a string).
pub fn field(dict: &HashMap<String, OwnedValue>, key: &str) -> String {
    match dict.get(key).map(|v| &**v) {
        Some(Value::Str(s)) => s.as_str().to_owned(),
        Some(other) => shown(key, other),
        None => String::new(),
    }
}

fn value_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Str(s) => serde_json::Value::from(s.as_str()),
        Value::U64(n) => serde_json::Value::from(*n),
        Value::I64(n) => serde_json::Value::from(*n),
        Value::U32(n) => serde_json::Value::from(*n),
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::ObjectPath(p) => serde_json::Value::from(p.as_str()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_json).collect()),
        Value::Dict(d) => {
            let mut m = serde_json::Map::new();
            for (k, v) in d.iter() {
                if let Value::Str(k) = k {
                    m.insert(k.as_str().to_owned(), value_json(v));
                }
            }
            serde_json::Value::Object(m)
        }
        Value::Value(inner) => value_json(inner),
        other => serde_json::Value::from(format!("{other:?}")),
    }
}

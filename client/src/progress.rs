//! A request's `Progress(s state, a{sv} details)` signal, parsed once into a type: the states and
//! detail keys of the contract (README, "Requests").

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::error::{Error, Result};

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// "waiting-for-device": no present device holds an enrollment; insert one.
    WaitingForDevice,
    /// "selecting-device": several present devices could serve; the request waits until one
    /// remains.
    SelectingDevice {
        /// The candidates.
        devices: Vec<OwnedObjectPath>,
    },
    /// "pin-needed": answer with SubmitPin (or SubmitLastTryPin when `last_try`).
    PinNeeded(SecretPrompt),
    /// "puk-needed" (unblock).
    PukNeeded(SecretPrompt),
    /// "new-pin-needed" (unblock).
    NewPinNeeded(SecretPrompt),
    /// "touch-needed": touch the key.
    TouchNeeded {
        /// The device waiting for a touch.
        device: Option<OwnedObjectPath>,
    },
    /// "uv-needed": verify on the key itself (its fingerprint sensor).
    UvNeeded {
        /// The device waiting for the user's verification.
        device: Option<OwnedObjectPath>,
    },
    /// "working": the device is busy with the operation.
    Working {
        /// The device at work.
        device: Option<OwnedObjectPath>,
    },
    /// A state this client does not know (a newer daemon); shown by name.
    Other(String),
}

/// What a secret prompt ("pin-needed", "puk-needed", "new-pin-needed") says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretPrompt {
    /// The device asking.
    pub device: Option<OwnedObjectPath>,
    /// "piv" or "fido".
    pub kind: String,
    /// Tries left, when the device tells.
    pub retries: Option<u32>,
    /// Shortest accepted secret, in bytes.
    pub min_length: u32,
    /// Longest accepted secret, in bytes.
    pub max_length: u32,
    /// Why the previous answer was refused ("PinInvalid"), if it was.
    pub last_error: Option<String>,
    /// One try left: SubmitPin is refused; SubmitLastTryPin spends it.
    pub last_try: bool,
}

impl Progress {
    /// Parses a Progress signal's arguments. Unknown states become [`Progress::Other`]; a known
    /// key of the wrong type is an error (the daemon broke the contract).
    pub fn parse(state: &str, details: &HashMap<String, OwnedValue>) -> Result<Progress> {
        let d = Details(details);
        Ok(match state {
            "waiting-for-device" => Progress::WaitingForDevice,
            "selecting-device" => Progress::SelectingDevice {
                devices: d.paths("devices")?,
            },
            "pin-needed" => Progress::PinNeeded(d.prompt()?),
            "puk-needed" => Progress::PukNeeded(d.prompt()?),
            "new-pin-needed" => Progress::NewPinNeeded(d.prompt()?),
            "touch-needed" => Progress::TouchNeeded {
                device: d.path("device")?,
            },
            "uv-needed" => Progress::UvNeeded {
                device: d.path("device")?,
            },
            "working" => Progress::Working {
                device: d.path("device")?,
            },
            other => Progress::Other(other.to_owned()),
        })
    }

    /// The state's name on the bus.
    pub fn state(&self) -> &str {
        match self {
            Progress::WaitingForDevice => "waiting-for-device",
            Progress::SelectingDevice { .. } => "selecting-device",
            Progress::PinNeeded(_) => "pin-needed",
            Progress::PukNeeded(_) => "puk-needed",
            Progress::NewPinNeeded(_) => "new-pin-needed",
            Progress::TouchNeeded { .. } => "touch-needed",
            Progress::UvNeeded { .. } => "uv-needed",
            Progress::Working { .. } => "working",
            Progress::Other(s) => s,
        }
    }
}

struct Details<'a>(&'a HashMap<String, OwnedValue>);

impl Details<'_> {
    fn prompt(&self) -> Result<SecretPrompt> {
        Ok(SecretPrompt {
            device: self.path("device")?,
            kind: self.string("kind")?.unwrap_or_default(),
            retries: self.u32("retries")?,
            min_length: self.u32("min_length")?.unwrap_or(0),
            max_length: self.u32("max_length")?.unwrap_or(u32::MAX),
            last_error: self.string("last_error")?,
            last_try: self.bool("last_try")?.unwrap_or(false),
        })
    }

    fn get(&self, key: &str) -> Option<&Value<'static>> {
        self.0.get(key).map(|v| unwrap_variant(v))
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.as_str().to_owned())),
            Some(_) => Err(wrong_type(key, "s")),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::U32(n)) => Ok(Some(*n)),
            Some(_) => Err(wrong_type(key, "u")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(key, "b")),
        }
    }

    fn path(&self, key: &str) -> Result<Option<OwnedObjectPath>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::ObjectPath(p)) => Ok(Some(OwnedObjectPath::from(p.to_owned()))),
            Some(_) => Err(wrong_type(key, "o")),
        }
    }

    fn paths(&self, key: &str) -> Result<Vec<OwnedObjectPath>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match unwrap_variant(v) {
                    Value::ObjectPath(p) => Ok(OwnedObjectPath::from(p.to_owned())),
                    _ => Err(wrong_type(key, "ao")),
                })
                .collect(),
            Some(_) => Err(wrong_type(key, "ao")),
        }
    }
}

/// A value inside any number of variant wrappers.
fn unwrap_variant<'a, 'v>(mut v: &'a Value<'v>) -> &'a Value<'v> {
    while let Value::Value(inner) = v {
        v = inner;
    }
    v
}

fn wrong_type(key: &str, expected: &str) -> Error {
    Error::Unexpected(format!("progress detail {key:?} is not of type {expected}"))
}

#[cfg(test)]
mod tests {
    use zbus::zvariant::ObjectPath;

    use super::*;

    fn details(pairs: Vec<(&str, Value<'_>)>) -> HashMap<String, OwnedValue> {
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), OwnedValue::try_from(v).ok()?)))
            .collect()
    }

    const DEV: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";

    #[test]
    fn pin_prompt() {
        let d = details(vec![
            (
                "device",
                Value::from(ObjectPath::from_static_str_unchecked(DEV)),
            ),
            ("kind", Value::from("piv")),
            ("retries", Value::from(1u32)),
            ("min_length", Value::from(6u32)),
            ("max_length", Value::from(8u32)),
            ("last_error", Value::from("PinInvalid")),
            ("last_try", Value::from(true)),
        ]);
        let p = Progress::parse("pin-needed", &d);
        let Ok(Progress::PinNeeded(prompt)) = p else {
            unreachable!("not a prompt: {p:?}");
        };
        assert_eq!(prompt.device.as_ref().map(|p| p.as_str()), Some(DEV));
        assert_eq!(prompt.kind, "piv");
        assert_eq!(prompt.retries, Some(1));
        assert_eq!((prompt.min_length, prompt.max_length), (6, 8));
        assert_eq!(prompt.last_error.as_deref(), Some("PinInvalid"));
        assert!(prompt.last_try);
    }

    #[test]
    fn retries_absent_when_unknown() {
        let d = details(vec![("last_try", Value::from(false))]);
        let p = Progress::parse("puk-needed", &d);
        assert!(
            matches!(
                p,
                Ok(Progress::PukNeeded(SecretPrompt { retries: None, .. }))
            ),
            "{p:?}"
        );
    }

    #[test]
    fn selecting_lists_devices() {
        let a = ObjectPath::from_static_str_unchecked("/org/tessera/Tessera1/devices/a");
        let b = ObjectPath::from_static_str_unchecked("/org/tessera/Tessera1/devices/b");
        let d = details(vec![("devices", Value::from(vec![a, b]))]);
        let p = Progress::parse("selecting-device", &d);
        let Ok(Progress::SelectingDevice { devices }) = p else {
            unreachable!("{p:?}");
        };
        assert_eq!(devices.len(), 2);
    }

    #[test]
    fn wrong_types_and_unknown_states() {
        let d = details(vec![("retries", Value::from("three"))]);
        assert!(matches!(
            Progress::parse("pin-needed", &d),
            Err(Error::Unexpected(_))
        ));
        let p = Progress::parse("uv-needed", &HashMap::new());
        assert_eq!(
            p.ok().map(|p| p.state().to_owned()).as_deref(),
            Some("uv-needed")
        );
    }
}

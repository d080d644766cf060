//! The `a{sv}` options of StartAuthentication, StartEnrollment and StartUnblock, typed. Unknown
//! keys, wrong value types and values out of bounds are InvalidArgument, before any work.

use std::collections::HashMap;
use std::time::Duration;

use tessera::secret::Secret;
use tessera::service::{AuthRequest, EnrollRequest, UnblockRequest};
use zbus::zvariant::{OwnedValue, Signature, Value};
use zeroize::Zeroizing;

use crate::errors::BusError;
use crate::interface::device_id_of;
use crate::limits;

/// StartAuthentication's options: "device" (o), "kinds" (as), "pin" (s), "wait" (b), "timeout" (u).
pub fn auth_request(options: &HashMap<String, OwnedValue>) -> Result<AuthRequest, BusError> {
    limits::options(options, &["device", "kinds", "pin", "wait", "timeout"])?;
    let mut r = AuthRequest::default();
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("device", v) => r.device = Some(device_id(key, v)?),
            ("kinds", v) => r.kinds = Some(kinds(v)?),
            ("pin", v) => r.pin = Some(secret(key, v)?),
            ("wait", Value::Bool(b)) => r.wait = *b,
            ("wait", _) => return Err(wrong_type(key, "a boolean (b)")),
            ("timeout", v) => r.timeout = Some(timeout(v)?),
            (other, _) => return Err(unknown(other)),
        }
    }
    Ok(r)
}

/// StartEnrollment's options: "pin" (s), "credential" (s: PIV "9a" or "9e"; FIDO "new", the
/// default), "slot" (s: v1's name for "credential"), "timeout" (u).
pub fn enroll_request(options: &HashMap<String, OwnedValue>) -> Result<EnrollRequest, BusError> {
    limits::options(options, &["pin", "credential", "slot", "timeout"])?;
    let mut r = EnrollRequest {
        pin: None,
        credential: None,
        timeout: None,
    };
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("pin", v) => r.pin = Some(secret(key, v)?),
            ("credential" | "slot", Value::Str(s)) => r.credential = Some(s.as_str().to_owned()),
            ("credential" | "slot", _) => return Err(wrong_type(key, "a string (s)")),
            ("timeout", v) => r.timeout = Some(timeout(v)?),
            (other, _) => return Err(unknown(other)),
        }
    }
    Ok(r)
}

/// StartUnblock's options: "puk" (s), "new_pin" (s), "timeout" (u).
pub fn unblock_request(options: &HashMap<String, OwnedValue>) -> Result<UnblockRequest, BusError> {
    limits::options(options, &["puk", "new_pin", "timeout"])?;
    let mut r = UnblockRequest {
        puk: None,
        new_pin: None,
        timeout: None,
    };
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("puk", v) => r.puk = Some(secret(key, v)?),
            ("new_pin", v) => r.new_pin = Some(secret(key, v)?),
            ("timeout", v) => r.timeout = Some(timeout(v)?),
            (other, _) => return Err(unknown(other)),
        }
    }
    Ok(r)
}

fn device_id(key: &str, value: &Value<'_>) -> Result<String, BusError> {
    match value {
        Value::ObjectPath(p) => device_id_of(p).map(str::to_owned),
        _ => Err(wrong_type(key, "an object path (o)")),
    }
}

/// A secret given up front, held zeroized; its format is the authenticator's to check.
fn secret(key: &str, value: &Value<'_>) -> Result<Secret, BusError> {
    match value {
        Value::Str(s) => Ok(Secret::new(Zeroizing::new(s.as_str().to_owned()))),
        _ => Err(wrong_type(key, "a string (s)")),
    }
}

fn kinds(value: &Value<'_>) -> Result<Vec<String>, BusError> {
    let err = || {
        wrong_type(
            "kinds",
            &format!(
                "at most {} strings (as) of at most {} bytes",
                limits::MAX_KINDS,
                limits::MAX_KIND_LEN
            ),
        )
    };
    let Value::Array(a) = value else {
        return Err(err());
    };
    if *a.element_signature() != Signature::Str || a.len() > limits::MAX_KINDS {
        return Err(err());
    }
    a.inner()
        .iter()
        .map(|k| match k {
            Value::Str(s) if s.len() <= limits::MAX_KIND_LEN => Ok(s.as_str().to_owned()),
            _ => Err(err()),
        })
        .collect()
}

fn timeout(value: &Value<'_>) -> Result<Duration, BusError> {
    match value {
        Value::U32(n) if (1..=limits::MAX_REQUEST_TIMEOUT_SECS).contains(n) => {
            Ok(Duration::from_secs(u64::from(*n)))
        }
        _ => Err(wrong_type(
            "timeout",
            &format!(
                "seconds as u (uint32), 1 to {}",
                limits::MAX_REQUEST_TIMEOUT_SECS
            ),
        )),
    }
}

fn wrong_type(key: &str, expected: &str) -> BusError {
    BusError::InvalidArgument(format!("option {key:?} must be {expected}"))
}

fn unknown(key: &str) -> BusError {
    let shown: String = key.chars().take(64).collect();
    BusError::InvalidArgument(format!("unknown option {shown:?}"))
}

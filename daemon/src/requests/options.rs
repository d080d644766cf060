//! The `a{sv}` options of StartAuthentication, StartEnrollment and StartUnblock, and of the
//! login-session methods (BindSession, ReuseSession), typed. Unknown keys, wrong value types and
//! values out of bounds are InvalidArgument, before any work.

use std::collections::HashMap;
use std::time::Duration;

use tessera::secret::Secret;
use tessera::service::{AuthRequest, EnrollRequest, ReuseQuery, UnblockRequest};
use zbus::zvariant::{OwnedValue, Signature, Value};
use zeroize::Zeroizing;

use crate::errors::BusError;
use crate::interface::device_id_of;
use crate::limits;
use crate::logind;

/// Longest "audience" a request may ask for (the token's `aud`; PAM's is "pam:SERVICE").
pub const MAX_AUDIENCE_LEN: usize = 128;

/// Longest PAM service name ReuseSession accepts (a file name in /etc/pam.d).
pub const MAX_SERVICE_LEN: usize = 64;

/// StartAuthentication's options: "device" (o), "kinds" (as), "pin" (s), "wait" (b), "timeout" (u),
/// "audience" (s, at most [`MAX_AUDIENCE_LEN`] bytes of printable ASCII), "any_user" (b).
pub fn auth_request(options: &HashMap<String, OwnedValue>) -> Result<AuthRequest, BusError> {
    limits::options(
        options,
        &[
            "device", "kinds", "pin", "wait", "timeout", "audience", "any_user",
        ],
    )?;
    let mut r = AuthRequest::default();
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("device", v) => r.device = Some(device_id(key, v)?),
            ("kinds", v) => r.kinds = Some(kinds(v)?),
            ("pin", v) => r.pin = Some(secret(key, v)?),
            ("wait", Value::Bool(b)) => r.wait = *b,
            ("wait", _) => return Err(wrong_type(key, "a boolean (b)")),
            ("timeout", v) => r.timeout = Some(timeout(v)?),
            ("audience", v) => r.audience = Some(audience(v)?),
            ("any_user", Value::Bool(b)) => r.any_user = *b,
            ("any_user", _) => return Err(wrong_type(key, "a boolean (b)")),
            (other, _) => return Err(unknown(other)),
        }
    }
    Ok(r)
}

/// BindSession's options: "session" (s, required: a logind session id, see
/// [`logind::session_id`]). Returns the id.
pub fn bind_session(options: &HashMap<String, OwnedValue>) -> Result<String, BusError> {
    limits::options(options, &["session"])?;
    match options.get("session").map(|v| &**v) {
        Some(Value::Str(s)) => logind::session_id(s.as_str()).map(str::to_owned),
        Some(_) => Err(wrong_type("session", "a string (s)")),
        None => Err(BusError::InvalidArgument(
            "option \"session\" (the logind session id) is required".into(),
        )),
    }
}

/// ReuseSession's options, typed: the core's query, and what only the bus edge decides.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReuseOptions {
    pub query: ReuseQuery,
    /// "allow_remote": the PAM module's `allow_remote`; without it a session logind calls Remote
    /// is refused.
    pub allow_remote: bool,
}

/// ReuseSession's options: "service" (s, the PAM service: 1 to [`MAX_SERVICE_LEN`] bytes of
/// `[A-Za-z0-9._-]`), "max_age" (u, seconds since the device authentication), "allow_remote" (b).
pub fn reuse_options(options: &HashMap<String, OwnedValue>) -> Result<ReuseOptions, BusError> {
    limits::options(options, &["service", "max_age", "allow_remote"])?;
    let mut o = ReuseOptions::default();
    let q = &mut o.query;
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("service", Value::Str(s)) if is_service_name(s.as_str()) => {
                q.service = Some(s.as_str().to_owned())
            }
            ("service", _) => {
                return Err(wrong_type(
                    key,
                    &format!("a string (s) of 1 to {MAX_SERVICE_LEN} bytes of [A-Za-z0-9._-]"),
                ))
            }
            ("max_age", Value::U32(n)) => q.max_age = Some(u64::from(*n)),
            ("max_age", _) => return Err(wrong_type(key, "seconds as u (uint32)")),
            ("allow_remote", Value::Bool(b)) => o.allow_remote = *b,
            ("allow_remote", _) => return Err(wrong_type(key, "a boolean (b)")),
            (other, _) => return Err(unknown(other)),
        }
    }
    Ok(o)
}

fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SERVICE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A token audience: printable ASCII (no control characters, nothing a log or a claim check could
/// read two ways), at most [`MAX_AUDIENCE_LEN`] bytes, not empty.
fn audience(value: &Value<'_>) -> Result<String, BusError> {
    match value {
        Value::Str(s)
            if !s.as_str().is_empty()
                && s.as_str().len() <= MAX_AUDIENCE_LEN
                && s.as_str().bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Ok(s.as_str().to_owned())
        }
        _ => Err(wrong_type(
            "audience",
            &format!("a string (s) of 1 to {MAX_AUDIENCE_LEN} bytes of printable ASCII"),
        )),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn opts(entries: &[(&str, Value<'_>)]) -> HashMap<String, OwnedValue> {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    OwnedValue::try_from(v.try_clone().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    fn invalid<T: std::fmt::Debug>(r: Result<T, BusError>) -> bool {
        matches!(r, Err(BusError::InvalidArgument(_)))
    }

    #[test]
    fn audience_and_any_user() {
        let r = auth_request(&opts(&[
            ("audience", Value::from("pam:sudo")),
            ("any_user", Value::from(true)),
        ]))
        .unwrap();
        assert_eq!(r.audience.as_deref(), Some("pam:sudo"));
        assert!(r.any_user);
        let r = auth_request(&opts(&[])).unwrap();
        assert_eq!(r.audience, None);
        assert!(!r.any_user);
        let long = "a".repeat(MAX_AUDIENCE_LEN);
        assert!(auth_request(&opts(&[("audience", Value::from(long.as_str()))])).is_ok());
        let too_long = "a".repeat(MAX_AUDIENCE_LEN + 1);
        for bad in ["", "pam:\nsudo", "pam:sudo\u{7f}", "pàm", too_long.as_str()] {
            assert!(
                invalid(auth_request(&opts(&[("audience", Value::from(bad))]))),
                "{bad:?}"
            );
        }
        assert!(invalid(auth_request(&opts(&[(
            "audience",
            Value::from(1u32)
        )]))));
        assert!(invalid(auth_request(&opts(&[(
            "any_user",
            Value::from("yes")
        )]))));
    }

    #[test]
    fn bind_session_needs_a_plain_session_id() {
        assert_eq!(
            bind_session(&opts(&[("session", Value::from("c1"))])).unwrap(),
            "c1"
        );
        assert!(invalid(bind_session(&opts(&[]))));
        assert!(invalid(bind_session(&opts(&[(
            "session",
            Value::from(1u32)
        )]))));
        assert!(invalid(bind_session(&opts(&[(
            "session",
            Value::from("../c1")
        )]))));
        assert!(invalid(bind_session(&opts(&[
            ("session", Value::from("c1")),
            ("seat", Value::from("seat0")),
        ]))));
    }

    #[test]
    fn reuse_options_are_typed() {
        let o = reuse_options(&opts(&[
            ("service", Value::from("polkit-1")),
            ("max_age", Value::from(300u32)),
        ]))
        .unwrap();
        assert_eq!(o.query.service.as_deref(), Some("polkit-1"));
        assert_eq!(o.query.max_age, Some(300));
        assert!(!o.allow_remote);
        assert_eq!(reuse_options(&opts(&[])).unwrap(), ReuseOptions::default());
        assert!(
            reuse_options(&opts(&[("allow_remote", Value::from(true))]))
                .unwrap()
                .allow_remote
        );
        assert!(
            !reuse_options(&opts(&[("allow_remote", Value::from(false))]))
                .unwrap()
                .allow_remote
        );
        let too_long = "s".repeat(MAX_SERVICE_LEN + 1);
        for bad in ["", "su do", "../sudo", too_long.as_str()] {
            assert!(
                invalid(reuse_options(&opts(&[("service", Value::from(bad))]))),
                "{bad:?}"
            );
        }
        assert!(invalid(reuse_options(&opts(&[(
            "max_age",
            Value::from(300u64)
        )]))));
        assert!(invalid(reuse_options(&opts(&[(
            "max_age",
            Value::from("5m")
        )]))));
        assert!(invalid(reuse_options(&opts(&[(
            "allow_remote",
            Value::from(1u32)
        )]))));
        assert!(invalid(reuse_options(&opts(&[(
            "allow_remote",
            Value::from("yes")
        )]))));
        assert!(invalid(reuse_options(&opts(&[(
            "session",
            Value::from("c1")
        )]))));
    }
}

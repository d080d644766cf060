//! Bounds on what a caller may send, checked at the top of each D-Bus method before any work (no
//! account look-up, no hashing, no device access): every caller is a potentially hostile local user.

use std::collections::HashMap;

use tessera::policy::users::MAX_NAME_LEN;
use tessera::token::MAX_TOKEN_LEN;
use zbus::zvariant::{OwnedValue, Value};

use crate::errors::BusError;

/// Most entries an `a{sv}` of options may have; more is refused unread.
pub const MAX_OPTIONS: usize = 16;

/// Longest string option value (PINs are at most 63 bytes, FIDO's limit; device object paths are well
/// under this).
pub const MAX_OPTION_LEN: usize = 256;

/// A user-name argument ("" = the caller) is at most [`MAX_NAME_LEN`] bytes.
pub fn user(name: &str) -> Result<(), BusError> {
    if name.len() > MAX_NAME_LEN {
        return Err(BusError::InvalidArgument(format!(
            "user name longer than {MAX_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

/// A token argument is at most [`MAX_TOKEN_LEN`] bytes; a longer one cannot be ours, so it is
/// TokenInvalid, the same answer as for any other token not issued here.
pub fn token(token: &str) -> Result<(), BusError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(BusError::TokenInvalid(format!(
            "token longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    Ok(())
}

/// An enrollment id (22 base64url characters when issued here) is at most [`MAX_OPTION_LEN`]
/// bytes; a longer one cannot name an enrollment.
pub fn enrollment_id(id: &str) -> Result<(), BusError> {
    if id.len() > MAX_OPTION_LEN {
        return Err(BusError::InvalidArgument(format!(
            "enrollment id longer than {MAX_OPTION_LEN} bytes"
        )));
    }
    Ok(())
}

/// Options have at most [`MAX_OPTIONS`] entries, only keys from `known`, and string or object-path
/// values of at most [`MAX_OPTION_LEN`] bytes. Value types are checked by the method.
pub fn options(options: &HashMap<String, OwnedValue>, known: &[&str]) -> Result<(), BusError> {
    if options.len() > MAX_OPTIONS {
        return Err(BusError::InvalidArgument(format!(
            "{} options given, at most {MAX_OPTIONS} accepted",
            options.len()
        )));
    }
    for (key, value) in options {
        if !known.contains(&key.as_str()) {
            let shown: String = key.chars().take(64).collect();
            return Err(BusError::InvalidArgument(format!(
                "unknown option {shown:?}"
            )));
        }
        let len = match &**value {
            Value::Str(s) => s.as_str().len(),
            Value::ObjectPath(p) => p.as_str().len(),
            _ => 0,
        };
        if len > MAX_OPTION_LEN {
            return Err(BusError::InvalidArgument(format!(
                "option {key:?} longer than {MAX_OPTION_LEN} bytes"
            )));
        }
    }
    Ok(())
}

/// Most authenticator kinds a request may name ("piv", later "fido").
pub const MAX_KINDS: usize = 8;

/// Longest authenticator kind name.
pub const MAX_KIND_LEN: usize = 32;

/// Longest "timeout" a request may ask for, in seconds (an hour: a greeter waiting for a card).
pub const MAX_REQUEST_TIMEOUT_SECS: u32 = 3600;

/// A PIN or PUK given to SubmitPin is at most [`MAX_OPTION_LEN`] bytes, like one given as an
/// option; the authenticator checks its own format.
pub fn secret(s: &str) -> Result<(), BusError> {
    if s.len() > MAX_OPTION_LEN {
        return Err(BusError::InvalidArgument(format!(
            "secret longer than {MAX_OPTION_LEN} bytes"
        )));
    }
    Ok(())
}

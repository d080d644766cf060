//! `pam_tessera.so`: a PAM module that logs users in with their enrolled PIV card or FIDO key by
//! asking `tesserad` over the system bus, and hands the session token on to the login session.
//!
//! - `auth`: a device login (an interactive request; its progress becomes the conversation: "Insert
//!   your card or key", "Touch your security key", "PIN for <device> (N tries left): "), or with
//!   `reuse` a verify-once check of the caller's own login session, touching no device.
//! - `setcred`: success only after a success of `auth` in the same handle.
//! - `session`: binds the token to the logind session (XDG_SESSION_ID), writes it to
//!   `$XDG_RUNTIME_DIR/tessera/token` and the session keyring; close_session ends it (logout).
//!
//! Options: `timeout=SECONDS` (60), `kinds=piv,fido`, `audience=` (`pam:<PAM_SERVICE>`),
//! `nouser=unknown|unavail`, `allow_remote`, `reuse`, `max_age=DURATION` (15m), `debug`. Anything
//! else is refused with PAM_SERVICE_ERR and a syslog line.
//!
//! The return codes follow one table, in [`outcome`]: PAM_SUCCESS only from a token the daemon
//! checked for this user, never PAM_IGNORE. See also `docs/pam.md`.
//!
//! `unsafe` lives in [`ffi`] only; every other module forbids it.

#![deny(unsafe_code)]

mod auth;
mod bus;
pub mod ffi;
pub mod options;
pub mod outcome;
mod remote;
mod session;

use outcome::Failure;

/// One current-thread runtime per PAM call: no thread is started, none outlives the call.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::AuthErr(format!("no async runtime: {e}")))
}

//! Tessera core: turns a hardware token (PIV smartcard, later FIDO2 key) into a verifiable session token.
//!
//! This crate holds the device protocols (APDU, BER-TLV, PIV), the challenge-response check, the ES256
//! session tokens, policy and the durable store. It has no D-Bus types: the daemon (`tesserad`) wraps
//! [`service::Service`] in its bus interface, and tests drive the same service in-process.

#![forbid(unsafe_code)]

pub mod apdu;
pub mod cert;
pub mod challenge;
pub mod clock;
pub mod config;
pub mod device;
pub mod error;
pub mod keys;
pub mod pcsc_device;
pub mod pcscd_instance;
pub mod piv;
pub mod service;
pub mod state_dir;
pub mod store;
pub mod tlv;
pub mod token;
pub mod transport;
pub mod users;

pub use error::{Error, Result};

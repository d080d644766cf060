//! Tessera core: turns a hardware token (PIV smartcard, later FIDO2 key) into a verifiable session token.
//!
//! The folders are the layers, from the bottom up: [`transport`] (byte-level device connections:
//! PC/SC, later HID), [`iso7816`] (APDUs and BER-TLV, shared by every applet over PC/SC), the applets
//! ([`piv`], later FIDO), [`verify`] (challenges and signature checks), [`token`] (session tokens and
//! signing keys), [`store`] (the durable state), [`policy`] (configuration and accounts), and the
//! [`service`] on top. There are no D-Bus types here: the daemon (`tesserad`) wraps
//! [`service::Service`] in its bus interface, and tests drive the same service in-process.

#![forbid(unsafe_code)]

pub mod authenticator;
pub mod cancel;
pub mod clock;
pub mod error;
pub mod fido;
pub mod iso7816;
pub mod locks;
pub mod piv;
pub mod policy;
pub mod secret;
pub mod service;
pub mod store;
pub mod token;
pub mod transport;
pub mod verify;

pub use error::{Error, Result};
pub use secret::Secret;

//! `tessera-sim`: a simulated PIV smartcard (NIST SP 800-73-4) for Tessera's tests and demo.
//!
//! [`piv::PivCard`] is the card at the APDU level; it implements [`tessera::transport::CardTransport`]
//! so tests can drive it in-process. [`vpcd::run`] inserts it into vsmartcard's virtual reader, so
//! pcscd, OpenSC, yubico-piv-tool and the Tessera daemon see it as a real card. The card keeps its
//! keys, certificates, PIN, PUK and counters in a state file: the same card comes back run after run.

#![forbid(unsafe_code)]

pub mod fido;
pub mod piv;
pub mod vpcd;

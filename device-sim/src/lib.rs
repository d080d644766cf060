//! `tessera-sim`: a simulated PIV smartcard (NIST SP 800-73-4) and a simulated FIDO2/U2F security
//! key (CTAP 2.1) for Tessera's tests and demo.
//!
//! [`piv::PivCard`] is the card at the APDU level; it implements [`tessera::transport::CardTransport`]
//! so tests can drive it in-process. [`vpcd::run`] inserts it into vsmartcard's virtual reader, so
//! pcscd, OpenSC, yubico-piv-tool and the Tessera daemon see it as a real card. The card keeps its
//! keys, certificates, PIN, PUK and counters in a state file: the same card comes back run after run.
//!
//! [`fido::FidoKey`] is the security key's authenticator; [`fido::hid_socket`] serves it as a HID
//! device on a Unix socket (CTAPHID, [`fido::ctaphid`]) and [`fido::nfc`] as a contactless card in
//! vpcd. It shares no protocol code with `tessera::fido`, the daemon's side: both follow the
//! specification, so a misreading in one is caught by the other (and by python-fido2 in the suite).

#![forbid(unsafe_code)]

pub mod fido;
pub mod piv;
pub mod state_file;
pub mod vpcd;

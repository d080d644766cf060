//! FIDO2 and U2F security keys (CTAP 2.1): the protocol core, below the service and above the
//! byte-level transports.
//!
//! From the bottom up: [`link`] is what every transport session offers (CTAPHID over USB HID
//! reports in [`ctaphid`], NFCCTAP over APDUs in [`nfc`], CTAP 2.1 §11); [`ctap2`] the typed
//! authenticator API commands and their CBOR (§6, §8), [`authdata`] the authenticator data
//! (WebAuthn §6.1) and [`cose`] the credential keys it carries, [`pin`] the PIN/UV auth
//! protocols (§6.5), [`u2f`] the CTAP1/U2F raw messages (§10, U2F raw message formats §4-5)
//! and [`status`] the one place where CTAP status codes become [`crate::Error`]s.
//! [`authenticator`] puts them together as the FIDO [`crate::authenticator::Authenticator`].

pub mod authdata;
pub mod authenticator;
mod authenticator_assert;
mod authenticator_ctap;
mod authenticator_enroll;
#[cfg(test)]
mod authenticator_holds_test;
mod authenticator_identify;
mod authenticator_pin;
#[cfg(test)]
mod authenticator_pin_test;
#[cfg(test)]
mod authenticator_softkey;
#[cfg(test)]
mod authenticator_test;
mod authenticator_u2f;
#[cfg(test)]
mod authenticator_u2f_test;
pub mod cose;
pub mod ctap2;
pub mod ctaphid;
pub mod link;
pub mod nfc;
pub mod pin;
pub mod status;
pub mod u2f;

//! A hostile card: every answer Tessera's PIV layer reads comes from the fuzz input (one frame per
//! response APDU, see `tessera_fuzz::frames`), through every operation the daemon uses
//! (`tessera_fuzz::drive_piv`). So response parsing, the GET RESPONSE (61xx) and wrong-Le (6Cxx)
//! loops, command chaining and the one status-word-to-error table all see hostile bytes, and so do
//! `cert::summarize` and `Challenge::verify` with what the card returns.
//!
//! Tessera must also never send the card a command it could not parse itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::iso7816::apdu::Command;
use tessera::transport::CardTransport;
use tessera::{Error, Result};
use tessera_fuzz::{drive_piv, frames, Frames};

/// Answers each command with the next frame; a card out of answers has been pulled out.
struct HostileCard<'a> {
    answers: Frames<'a>,
}

impl CardTransport for HostileCard<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        assert!(
            Command::parse(command).is_ok(),
            "Tessera sent a malformed APDU"
        );
        self.answers
            .next()
            .map(<[u8]>::to_vec)
            .ok_or(Error::DeviceRemoved)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut card = HostileCard {
        answers: frames(data),
    };
    drive_piv(&mut card).unwrap();
});

//! A hostile card under the shared ISO/IEC 7816-4 exchange layer (`tessera::iso7816::exchange`) and
//! applet probing, with no applet on top: every answer comes from the fuzz input (one frame per
//! response APDU, see `tessera_fuzz::frames`). Commands long enough to be chained, and asking for
//! more than a short APDU holds, go through both length modes, so the chaining, GET RESPONSE (61xx)
//! and wrong-Le (6Cxx) paths all see hostile status words.
//!
//! Tessera must never send a command it could not parse itself, nor an extended APDU where it
//! promised short ones, and must stop within its GET RESPONSE bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::iso7816::apdu::{Command, MAX_DATA_SHORT, MAX_LE_EXTENDED, MAX_LE_SHORT};
use tessera::iso7816::applets;
use tessera::iso7816::exchange::{Exchange, Lengths, MAX_GET_RESPONSE_ROUNDS};
use tessera::transport::CardTransport;
use tessera::{Error, Result};
use tessera_fuzz::{frames, Frames};

/// Answers each command with the next frame; a card out of answers has been pulled out.
struct HostileCard<'a> {
    answers: Frames<'a>,
    short_only: bool,
    sent: usize,
}

impl CardTransport for HostileCard<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let Ok(cmd) = Command::parse(command) else {
            panic!("Tessera sent a malformed APDU");
        };
        if self.short_only {
            assert!(
                cmd.data.len() <= MAX_DATA_SHORT && cmd.le.is_none_or(|le| le <= MAX_LE_SHORT),
                "an extended APDU in short mode"
            );
        }
        self.sent += 1;
        self.answers
            .next()
            .map(<[u8]>::to_vec)
            .ok_or(Error::DeviceRemoved)
    }
}

fuzz_target!(|data: &[u8]| {
    let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    let commands = [
        Command::new(0x00, 0xCB, 0x3F, 0xFF).with_le(MAX_LE_EXTENDED),
        Command::new(0x00, 0xDB, 0x3F, 0xFF).with_data(long.clone()),
        Command::new(0x00, 0xDB, 0x3F, 0xFF)
            .with_data(long)
            .with_le(MAX_LE_SHORT),
    ];
    for lengths in [Lengths::Short, Lengths::Extended] {
        let mut card = HostileCard {
            answers: frames(data),
            short_only: lengths == Lengths::Short,
            sent: 0,
        };
        for cmd in &commands {
            let before = card.sent;
            let _ = Exchange::with_lengths(&mut card, lengths).transmit(cmd);
            // Three chained pieces, one resend, then the GET RESPONSE rounds at most.
            assert!(card.sent - before <= 4 + MAX_GET_RESPONSE_ROUNDS);
        }
        let _ = applets::probe(&mut card);
    }
});

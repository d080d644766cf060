//! A hostile FIDO applet under NFCCTAP (`tessera::fido::nfc`), over the shared ISO/IEC 7816-4
//! exchange: every answer comes from the fuzz input (one frame per response APDU, see
//! `tessera_fuzz::frames`), to SELECT, NFCCTAP_MSG, NFCCTAP_GETRESPONSE, GET RESPONSE and the
//! U2F APDU alike: status updates (9100) with any status byte, 6D00 quirks, 61xx chains.
//!
//! Tessera must never panic nor send a command it could not parse itself, must keep within the
//! exchange's bounds, and must stop when the answers run out (the card is gone) or at its deadline.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tessera::cancel::CancelToken;
use tessera::fido::link::{CtapLink, LinkContext};
use tessera::fido::nfc::NfcLink;
use tessera::iso7816::apdu::Command;
use tessera::iso7816::exchange::MAX_RESPONSE_LEN;
use tessera::transport::CardTransport;
use tessera::{Error, Result};
use tessera_fuzz::{frames, Frames};

struct HostileApplet<'a> {
    answers: Frames<'a>,
}

impl CardTransport for HostileApplet<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        if Command::parse(command).is_err() {
            panic!("Tessera sent a malformed APDU");
        }
        self.answers
            .next()
            .map(<[u8]>::to_vec)
            .ok_or(Error::DeviceRemoved)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut card = HostileApplet {
        answers: frames(data),
    };
    let Ok(mut link) = NfcLink::select(&mut card) else {
        return;
    };
    let _ = link.capabilities();
    let cancel = CancelToken::new();
    let mut ignore = |_| {};
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + Duration::from_millis(50),
        keepalive: &mut ignore,
    };
    let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    for request in [&[0x04][..], &long] {
        if let Ok(answer) = link.cbor(request, &mut ctx) {
            assert!(!answer.is_empty() && answer.len() <= MAX_RESPONSE_LEN + 256);
        }
    }
    if let Ok(answer) = link.msg(
        &[0x00, 0x02, 0x03, 0x00, 0x00, 0x00, 0x01, 0xAA, 0x00, 0x00],
        &mut ctx,
    ) {
        assert!(answer.len() >= 2);
    }
});

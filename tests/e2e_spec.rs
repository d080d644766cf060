//! End-to-end checks that Tessera talks to a PIV card the way the specifications say, against the
//! simulator's strict profile through the real pcscd + vpcd: SELECT with the right-truncated AID
//! (NIST SP 800-73-4 Part 1 §2.2, Part 2 §3.1.1), and a card reset clearing the PIN's security status
//! (Part 2 §3.2.1, ISO/IEC 7816-4 §5.4).
//!
//! The strict profile is the simulator's default, so every other end-to-end test runs against it too;
//! these tests first show, with PC/SC directly and not through Tessera, that the card in the reader
//! really is strict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::CString;

use common::stack::{wait_card, Stack, PIN};
use common::VPCD_READER_0;

/// The full PIV AID (SP 800-73-4 Part 1 §2.2).
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// The NIST RID alone: what Tessera once selected with, and what strict cards refuse.
const NIST_RID: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];

/// A card that answers `6A82` to a SELECT with the RID alone (as Nitrokey's piv-authenticator does)
/// is published on the bus, enrolls and authenticates.
#[test]
fn a_strict_card_appears_on_the_bus_and_authenticates() {
    let mut env = Stack::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    wait_card(true);
    {
        let reader = Reader::connect();
        assert_eq!(sw(&reader.transmit(&select(&NIST_RID))), 0x6A82);
        assert_eq!(sw(&reader.transmit(&select(&PIV_AID[..9]))), 0x9000);
        assert_eq!(sw(&reader.transmit(&select(&PIV_AID))), 0x9000);
    }

    env.start_daemon("");
    env.wait_device(true);
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    let claims = env.validate(&token).expect("a valid token");
    assert_eq!(claims["sub"], "root", "{claims}");
    let log = env.daemon_log();
    assert!(!log.contains("ignoring card"), "{log}");
}

/// After a reset of the card (here by another PC/SC client reconnecting with SCARD_RESET_CARD,
/// which pcscd passes to vpcd as a reset), the PIN verified before is no longer verified.
#[test]
fn a_card_reset_clears_the_verified_pin() {
    let mut env = Stack::new();
    let card = env.path("card.json");
    env.start_sim(&card, &[]);
    wait_card(true);
    let mut reader = Reader::connect();
    assert_eq!(sw(&reader.transmit(&select(&PIV_AID[..9]))), 0x9000);
    let mut verify = vec![0x00, 0x20, 0x00, 0x80, 0x08];
    verify.extend_from_slice(PIN.as_bytes());
    verify.resize(13, 0xFF);
    let status = [0x00, 0x20, 0x00, 0x80];
    assert_eq!(sw(&reader.transmit(&verify)), 0x9000);
    assert_eq!(sw(&reader.transmit(&status)), 0x9000, "verified");

    reader
        .card
        .reconnect(
            pcsc::ShareMode::Shared,
            pcsc::Protocols::ANY,
            pcsc::Disposition::ResetCard,
        )
        .expect("reconnect with reset");
    assert_eq!(sw(&reader.transmit(&select(&PIV_AID[..9]))), 0x9000);
    assert_eq!(
        sw(&reader.transmit(&status)),
        0x63C3,
        "still verified after a reset"
    );
}

/// A shared PC/SC connection to the card in reader 0.
struct Reader {
    card: pcsc::Card,
}

impl Reader {
    fn connect() -> Reader {
        let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("pcsc context");
        let name = CString::new(VPCD_READER_0).unwrap();
        let card = ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
            .expect("connect to the card");
        Reader { card }
    }

    /// Sends one APDU; the response with its status word.
    fn transmit(&self, apdu: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE];
        self.card
            .transmit(apdu, &mut buf)
            .unwrap_or_else(|e| panic!("transmit {apdu:02X?}: {e}"))
            .to_vec()
    }
}

/// SELECT by DF name with Le = 00 (SP 800-73-4 Part 2 §3.1.1).
fn select(aid: &[u8]) -> Vec<u8> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, u8::try_from(aid.len()).unwrap()];
    apdu.extend_from_slice(aid);
    apdu.push(0x00);
    apdu
}

/// The status word at the end of a response.
fn sw(resp: &[u8]) -> u16 {
    match resp {
        [.., a, b] => u16::from_be_bytes([*a, *b]),
        _ => panic!("response without status word: {resp:02X?}"),
    }
}

//! A hostile reader talking to the simulated card: a sequence of command APDUs (one frame each, see
//! `tessera_fuzz::frames`) into `PivCard::process`, the in-memory card of `tessera-sim`. Every
//! answer must be a response APDU: at least a status word.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_fuzz::frames;
use tessera_sim::piv::{CardState, PivCard, SimOptions};

/// Every run starts from the same card (so a crash replays), made once: generating a new card's keys
/// and certificates each run would cost more than the run. The state file's JSON is the copy.
fn fresh_state() -> CardState {
    static CARD: OnceLock<String> = OnceLock::new();
    let json = CARD.get_or_init(|| {
        let card = PivCard::in_memory(&SimOptions::default()).unwrap();
        serde_json::to_string(card.state()).unwrap()
    });
    serde_json::from_str(json).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let mut card = PivCard::with_state(fresh_state(), None);
    for apdu in frames(data) {
        let response = card.process(apdu);
        assert!(response.len() >= 2, "an answer without a status word");
    }
});

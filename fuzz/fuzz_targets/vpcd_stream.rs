//! A hostile vpcd: the input is the byte stream the simulator reads from the driver's socket, split
//! by `vpcd::split_message`, decoded by `vpcd::Message::decode` and answered by `vpcd::respond`, the
//! code `vpcd::run` runs for each message. Every answer must frame (`vpcd::encode_frame`) and split
//! back to itself.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_sim::piv::{CardState, PivCard, SimOptions};
use tessera_sim::vpcd::{self, Message, Reply};

/// The same card every run, made once (see the `sim_apdu` target).
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
    let mut stream = data;
    while let Some((body, rest)) = vpcd::split_message(stream) {
        stream = rest;
        match vpcd::respond(&mut card, Message::decode(body)) {
            Reply::Send(payload) => {
                let frame = vpcd::encode_frame(&payload).unwrap();
                assert_eq!(vpcd::split_message(&frame), Some((&payload[..], &[][..])));
            }
            Reply::Nothing => {}
            Reply::Pulled => return,
        }
    }
});

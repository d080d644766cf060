//! Response APDUs and status words as a card returns them: `apdu::Response::parse` and
//! `StatusWord::from_u16` (ISO/IEC 7816-4 §5.1, §5.6). Both must round-trip exactly: the typed form
//! never loses a bit of what the card said.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::iso7816::apdu::{Response, StatusWord};

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = Response::parse(data) else {
        assert!(
            data.len() < 2,
            "a response of two or more bytes was refused"
        );
        return;
    };
    assert_eq!(resp.to_bytes(), data);
    let sw = resp.sw.to_u16();
    assert_eq!(StatusWord::from_u16(sw), resp.sw);
    let _ = resp.sw.to_string();
});

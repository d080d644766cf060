//! Command APDUs as the simulator (and any card-side code) receives them: `apdu::Command::parse`
//! (ISO/IEC 7816-4 §5.1). A parsed command must encode again, and the encoding must parse back to
//! the same command (the short/extended form may change, the meaning may not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::iso7816::apdu::Command;

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = Command::parse(data) else {
        return;
    };
    let bytes = cmd.to_bytes().unwrap();
    assert_eq!(
        Command::parse(&bytes).unwrap(),
        cmd,
        "re-encoding changed the command"
    );
});

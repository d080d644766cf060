//! Answers of a hostile security key to every CTAP2 command Tessera sends (CTAP 2.1 §6, §8) and to
//! the U2F raw messages (U2F raw message formats §4-5): `status ‖ CBOR` or `data ‖ SW1 SW2`. The
//! first byte picks the decoder, the rest is the answer; every decoder must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::fido::ctap2::{
    ClientPinResponse, GetAssertionResponse, Info, MakeCredentialResponse, Selection,
};
use tessera::fido::u2f;

fuzz_target!(|data: &[u8]| {
    let Some((&which, answer)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(info) = Info::decode(answer) {
                let _ = info.max_msg_size();
                let _ = info.option("clientPin");
            }
        }
        1 => {
            if let Ok(r) = MakeCredentialResponse::decode(answer) {
                // A decoded attestation object always carries its credential.
                assert!(r.credential().is_ok());
                let _ = r.auth_data.to_bytes();
            }
        }
        2 => {
            if let Ok(r) = GetAssertionResponse::decode(answer) {
                let _ = r.credential(&[vec![1]]);
            }
        }
        3 => {
            let _ = ClientPinResponse::decode(answer);
        }
        4 => {
            let _ = Selection::decode(answer);
        }
        5 => {
            let _ = u2f::RegisterResponse::decode(answer);
        }
        6 => {
            let _ = u2f::AuthenticateResponse::decode(answer);
        }
        _ => {
            let _ = u2f::holds(answer);
        }
    }
});

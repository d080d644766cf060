//! Authenticator data (WebAuthn §6.1) as a hostile key sends it, with its attested credential
//! data, COSE key and extensions: `AuthenticatorData::parse` must return, never panic, and what it
//! accepts must re-encode to a fixpoint (parse ∘ to_bytes keeps the bytes once canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::fido::authdata::AuthenticatorData;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = AuthenticatorData::parse(data) else {
        return;
    };
    let Ok(once) = parsed.to_bytes() else {
        panic!("parsed authenticator data did not re-encode");
    };
    let Ok(again) = AuthenticatorData::parse(&once) else {
        panic!("re-encoded authenticator data did not parse");
    };
    assert_eq!(again.to_bytes().ok(), Some(once));
    if let Some(att) = &parsed.attested_credential {
        let _ = att.public_key.thumbprint();
        let _ = att.public_key.verify(data, data);
    }
});

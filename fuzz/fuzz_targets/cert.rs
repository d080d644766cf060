//! X.509 certificates read from a card's slot (RFC 5280): `cert::summarize` and
//! `cert::p256_public_key`, the parts Tessera reads (subject, validity, a P-256 key). Both must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::piv::cert;

fuzz_target!(|data: &[u8]| {
    let summary = cert::summarize(data);
    let key = cert::p256_public_key(data);
    if let Ok(summary) = summary {
        assert_eq!(key.ok(), Some(summary.public_key));
    }
});

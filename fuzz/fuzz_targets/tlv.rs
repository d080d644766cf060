//! BER-TLV as PIV cards send it (ISO/IEC 7816-4 §5.2): `tlv::parse_one`, `parse_all`, `find` and
//! `expect_one`. Whatever parses must re-encode (shortest length form) to bytes that parse back to
//! the same tag and value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::iso7816::tlv;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = tlv::parse_all(data) {
        let mut again = Vec::new();
        for item in &items {
            if tlv::write(&mut again, item.tag, item.value).is_err() {
                return;
            }
        }
        assert_eq!(tlv::parse_all(&again).unwrap(), items);
        assert!(again.len() <= data.len(), "shortest form grew the encoding");
    }
    if let Ok((first, rest)) = tlv::parse_one(data) {
        assert!(rest.len() + first.value.len() < data.len());
        let _ = tlv::find(data, first.tag);
        let _ = tlv::expect_one(data, first.tag);
        // Nested templates (7C, 61, 53) are parsed the same way.
        let _ = tlv::parse_all(first.value);
    }
});

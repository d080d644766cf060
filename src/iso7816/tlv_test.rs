#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn encodes_tags_and_lengths() {
    // (tag, value length, expected header).
    let cases: [(u32, usize, &str); 14] = [
        (0x53, 0, "53 00"),
        (0x53, 1, "53 01"),
        (0x53, 0x7F, "53 7F"),
        (0x53, 0x80, "53 81 80"),
        (0x53, 0xFF, "53 81 FF"),
        (0x53, 0x100, "53 82 0100"),
        (0x53, 0xFFFF, "53 82 FFFF"),
        (0x53, 0x1_0000, "53 83 010000"),
        (0x7C, 0x22, "7C 22"),
        (0x7F49, 3, "7F49 03"),
        (0x5F2F, 2, "5F2F 02"),
        (0x5FC105, 0x300, "5FC105 82 0300"),
        (0x5FFF01, 0, "5FFF01 00"),
        (0xFE, 0, "FE 00"),
    ];
    for (tag, len, header) in cases {
        let value = vec![0xA5; len];
        let got = encode(tag, &value).unwrap();
        let mut want = hex(header);
        want.extend_from_slice(&value);
        assert_eq!(got, want, "tag {tag:X} len {len}");
        let (tlv, rest) = parse_one(&got).unwrap();
        assert_eq!(
            (tlv.tag, tlv.value, rest),
            (tag, value.as_slice(), &[][..]),
            "tag {tag:X} len {len}"
        );
    }
}

#[test]
fn write_rejects_bad_tags_and_huge_values() {
    for tag in [
        0x1F,
        0x5F,
        0x5F80,
        0x5F01_u32 << 8,
        0x7FFF,
        0x5F0101,
        0x015F_C105,
        0xFFFF_FFFF,
    ] {
        assert_eq!(encode(tag, &[]), Err(TlvError::InvalidTag(tag)), "{tag:X}");
    }
    let huge = vec![0; MAX_VALUE_LEN + 1];
    let mut out = vec![0xEE];
    assert_eq!(
        write(&mut out, 0x53, &huge),
        Err(TlvError::ValueTooLong(MAX_VALUE_LEN + 1))
    );
    assert_eq!(out, vec![0xEE], "a failed write leaves the buffer alone");
    assert_eq!(
        encode(0x53, &vec![0; MAX_VALUE_LEN]).unwrap().get(..5),
        Some(&hex("53 83 FFFFFF")[..])
    );
}

#[test]
fn parses_non_minimal_lengths() {
    for bytes in ["53 81 02 AABB", "53 82 0002 AABB", "53 83 000002 AABB"] {
        let input = hex(bytes);
        let (tlv, rest) = parse_one(&input).unwrap();
        assert_eq!(
            (tlv.tag, tlv.value, rest),
            (0x53, &[0xAA, 0xBB][..], &[][..]),
            "{bytes}"
        );
    }
}

#[test]
fn parse_one_rejects_malformed_input() {
    let cases: [(&str, TlvError); 13] = [
        ("", TlvError::Truncated),
        ("5F", TlvError::Truncated),
        ("5FC1", TlvError::Truncated),
        ("5FC18101 00", TlvError::TagTooLong),
        ("53", TlvError::Truncated),
        ("53 02 AA", TlvError::Truncated),
        ("53 80 AA 0000", TlvError::IndefiniteLength),
        ("53 81", TlvError::Truncated),
        ("53 82 01", TlvError::Truncated),
        ("53 83 0100", TlvError::Truncated),
        ("53 84 00000001 AA", TlvError::LengthTooLong),
        ("53 FF", TlvError::LengthTooLong),
        ("53 82 0100 AA", TlvError::Truncated),
    ];
    for (bytes, want) in cases {
        assert_eq!(parse_one(&hex(bytes)).map(|_| ()), Err(want), "{bytes:?}");
    }
}

#[test]
fn parse_one_returns_the_rest() {
    let input = hex("70 02 AABB 71 01 00 FE 00");
    let (first, rest) = parse_one(&input).unwrap();
    assert_eq!(
        first,
        Tlv {
            tag: 0x70,
            value: &[0xAA, 0xBB]
        }
    );
    assert_eq!(rest, &hex("71 01 00 FE 00")[..]);
}

#[test]
fn parse_all_and_find() {
    let input = hex("70 02 AABB 71 01 00 FE 00 71 01 01");
    let all = parse_all(&input).unwrap();
    let tags: Vec<u32> = all.iter().map(|t| t.tag).collect();
    assert_eq!(tags, vec![0x70, 0x71, 0xFE, 0x71]);
    assert_eq!(
        find(&input, 0x71),
        Ok(Some(&[0x00][..])),
        "first match wins"
    );
    assert_eq!(find(&input, 0xFE), Ok(Some(&[][..])));
    assert_eq!(find(&input, 0x72), Ok(None));
    assert_eq!(parse_all(&[]), Ok(vec![]));

    // Garbage anywhere fails the whole sequence, even after the object sought.
    let trailing = hex("70 02 AABB 71");
    assert_eq!(parse_all(&trailing), Err(TlvError::Truncated));
    assert_eq!(find(&trailing, 0x70), Err(TlvError::Truncated));
}

#[test]
fn expect_one_checks_tag_and_trailing_bytes() {
    assert_eq!(expect_one(&hex("7C 02 8200"), 0x7C), Ok(&hex("8200")[..]));
    assert_eq!(
        expect_one(&hex("53 00"), 0x7C),
        Err(TlvError::UnexpectedTag {
            expected: 0x7C,
            found: 0x53
        })
    );
    assert_eq!(
        expect_one(&hex("7C 00 9000"), 0x7C),
        Err(TlvError::TrailingBytes(2))
    );
    assert_eq!(expect_one(&[], 0x7C), Err(TlvError::Truncated));
}

#[test]
fn nested_piv_objects() {
    // A PIV certificate object (SP 800-73-4 Part 1 Appendix A): 53 { 70 cert, 71 certinfo, FE LRC }.
    let cert = vec![0x30; 300];
    let mut inner = encode(0x70, &cert).unwrap();
    write(&mut inner, 0x71, &[0x00]).unwrap();
    write(&mut inner, 0xFE, &[]).unwrap();
    let outer = encode(0x53, &inner).unwrap();
    assert_eq!(
        outer.get(..4),
        Some(&hex("53 82 0135")[..]),
        "4 + 300 + 3 + 2 bytes"
    );
    let body = expect_one(&outer, 0x53).unwrap();
    assert_eq!(find(body, 0x70).unwrap(), Some(cert.as_slice()));
    assert_eq!(find(body, 0x71).unwrap(), Some(&[0x00][..]));
}

#[test]
fn tlv_error_becomes_device_error() {
    let e: crate::Error = TlvError::IndefiniteLength.into();
    assert!(matches!(e, crate::Error::Device(m) if m.contains("indefinite")));
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn bytes_n(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// (name, command, expected encoding). Every row also round-trips through `parse`.
fn encoding_cases() -> Vec<(&'static str, Command, Vec<u8>)> {
    let mut cases = vec![
        (
            "case 1",
            Command::new(0x00, 0xA4, 0x04, 0x00),
            hex("00A40400"),
        ),
        (
            "case 2S le 1",
            Command::new(0x00, 0xCA, 0x01, 0x02).with_le(1),
            hex("00CA010201"),
        ),
        (
            "case 2S le 255",
            Command::new(0, 0xC0, 0, 0).with_le(255),
            hex("00C00000FF"),
        ),
        (
            "case 2S le 256",
            Command::new(0, 0xC0, 0, 0).with_le(256),
            hex("00C0000000"),
        ),
        (
            "case 2E le 257",
            Command::new(0, 0xC0, 0, 0).with_le(257),
            hex("00C00000 000101"),
        ),
        (
            "case 2E le 65535",
            Command::new(0, 0xC0, 0, 0).with_le(65535),
            hex("00C00000 00FFFF"),
        ),
        (
            "case 2E le 65536",
            Command::new(0, 0xC0, 0, 0).with_le(65536),
            hex("00C00000 000000"),
        ),
        (
            "case 3S",
            Command::new(0x00, 0x20, 0x00, 0x80).with_data(hex("313233343536FFFF")),
            hex("00200080 08 313233343536FFFF"),
        ),
        (
            "case 4S",
            Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(hex("A000000308"))
                .with_le(256),
            hex("00A40400 05 A000000308 00"),
        ),
        (
            "case 4S, le 1",
            Command::new(0x00, 0xCB, 0x3F, 0xFF)
                .with_data(hex("5C035FC105"))
                .with_le(1),
            hex("00CB3FFF 05 5C035FC105 01"),
        ),
    ];
    let mut d255 = hex("00DB3FFF FF");
    d255.extend(bytes_n(255));
    cases.push((
        "case 3S data 255",
        Command::new(0, 0xDB, 0x3F, 0xFF).with_data(bytes_n(255)),
        d255,
    ));

    let mut d256 = hex("00DB3FFF 000100");
    d256.extend(bytes_n(256));
    cases.push((
        "case 3E data 256",
        Command::new(0, 0xDB, 0x3F, 0xFF).with_data(bytes_n(256)),
        d256,
    ));

    let mut d65535 = hex("00DB3FFF 00FFFF");
    d65535.extend(bytes_n(65535));
    cases.push((
        "case 3E data 65535",
        Command::new(0, 0xDB, 0x3F, 0xFF).with_data(bytes_n(65535)),
        d65535,
    ));

    let mut d255le257 = hex("00870011 0000FF");
    d255le257.extend(bytes_n(255));
    d255le257.extend(hex("0101"));
    cases.push((
        "case 4E forced by le 257",
        Command::new(0, 0x87, 0, 0x11)
            .with_data(bytes_n(255))
            .with_le(257),
        d255le257,
    ));

    let mut d256le256 = hex("00870011 000100");
    d256le256.extend(bytes_n(256));
    d256le256.extend(hex("0100"));
    cases.push((
        "case 4E forced by data 256",
        Command::new(0, 0x87, 0, 0x11)
            .with_data(bytes_n(256))
            .with_le(256),
        d256le256,
    ));

    let d1le65536 = hex("00870011 000001 AA 0000");
    cases.push((
        "case 4E le 65536",
        Command::new(0, 0x87, 0, 0x11)
            .with_data(vec![0xAA])
            .with_le(65536),
        d1le65536,
    ));
    cases
}

#[test]
fn encodes_and_parses_every_case() {
    for (name, cmd, want) in encoding_cases() {
        let got = cmd.to_bytes().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.as_slice(), want.as_slice(), "{name}: encoding");
        let back = Command::parse(&want).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, cmd, "{name}: parse");
    }
}

#[test]
fn encoding_rejects_out_of_range_lengths() {
    let cases = [
        (
            "data 65536",
            Command::new(0, 0xDB, 0, 0).with_data(vec![0; 65536]),
            ApduError::DataTooLong(65536),
        ),
        (
            "le 65537",
            Command::new(0, 0xC0, 0, 0).with_le(65537),
            ApduError::LeOutOfRange(65537),
        ),
        (
            "le 0",
            Command::new(0, 0xC0, 0, 0).with_le(0),
            ApduError::LeOutOfRange(0),
        ),
    ];
    for (name, cmd, want) in cases {
        assert_eq!(cmd.to_bytes().unwrap_err(), want, "{name}");
    }
}

#[test]
fn parse_rejects_malformed_commands() {
    let mut lc_too_long = hex("00DB3FFF 0A");
    lc_too_long.extend(bytes_n(9));
    let lc_trailing = hex("00DB3FFF 02 AABB 00 00");
    let ext_trailing = hex("00DB3FFF 000002 AABB 0000 00");
    let cases: [(&str, Vec<u8>); 10] = [
        ("empty", vec![]),
        ("3 bytes", hex("00A404")),
        ("short Lc beyond end", lc_too_long),
        ("two bytes after short data", lc_trailing),
        ("extended Lc of zero", hex("00DB3FFF 000000 00")),
        ("extended, one length byte", hex("00DB3FFF 0001")),
        ("extended Lc beyond end", hex("00DB3FFF 000005 AABB")),
        ("three bytes after extended data", ext_trailing),
        ("one byte after extended data", hex("00DB3FFF 000001 AA 00")),
        (
            "short Lc 0 then data is extended garbage",
            hex("00DB3FFF 00 01"),
        ),
    ];
    for (name, bytes) in cases {
        assert!(
            Command::parse(&bytes).is_err(),
            "{name} parsed: {bytes:02X?}"
        );
    }
}

#[test]
fn chaining_bit() {
    assert!(Command::new(0x10, 0xDB, 0x3F, 0xFF).is_chained());
    assert!(!Command::new(0x00, 0xDB, 0x3F, 0xFF).is_chained());
}

#[test]
fn debug_hides_command_data() {
    let cmd = Command::new(0, 0x20, 0, 0x80).with_data(b"123456\xFF\xFF".to_vec());
    let shown = format!("{cmd:?}");
    assert!(
        !shown.contains("49") && !shown.contains("123456"),
        "{shown}"
    );
    assert!(shown.contains("data_len: 8"), "{shown}");
}

#[test]
fn response_parse_and_encode() {
    let r = Response::parse(&hex("01029000")).unwrap();
    assert_eq!(r, Response::new(vec![1, 2], StatusWord::Success));
    assert_eq!(r.to_bytes(), hex("01029000"));
    let r = Response::parse(&hex("6A82")).unwrap();
    assert_eq!(r, Response::new(vec![], StatusWord::FileNotFound));
    assert_eq!(
        Response::parse(&[0x90]),
        Err(ApduError::ResponseTooShort(1))
    );
    assert_eq!(Response::parse(&[]), Err(ApduError::ResponseTooShort(0)));
}

#[test]
fn status_words_round_trip() {
    let named = [
        (0x9000, StatusWord::Success),
        (0x6100, StatusWord::BytesRemaining(0)),
        (0x6110, StatusWord::BytesRemaining(0x10)),
        (0x61FF, StatusWord::BytesRemaining(0xFF)),
        (0x6700, StatusWord::WrongLength),
        (0x63C0, StatusWord::VerifyFailed { retries: 0 }),
        (0x63C3, StatusWord::VerifyFailed { retries: 3 }),
        (0x63CF, StatusWord::VerifyFailed { retries: 15 }),
        (0x6982, StatusWord::SecurityStatusNotSatisfied),
        (0x6983, StatusWord::AuthMethodBlocked),
        (0x6985, StatusWord::ConditionsNotSatisfied),
        (0x6A80, StatusWord::IncorrectData),
        (0x6A81, StatusWord::FunctionNotSupported),
        (0x6A82, StatusWord::FileNotFound),
        (0x6A84, StatusWord::NotEnoughMemory),
        (0x6A86, StatusWord::IncorrectP1P2),
        (0x6A88, StatusWord::ReferencedDataNotFound),
        (0x6C00, StatusWord::WrongLe(0)),
        (0x6C20, StatusWord::WrongLe(0x20)),
        (0x6D00, StatusWord::InsNotSupported),
        (0x6E00, StatusWord::ClaNotSupported),
        (0x6300, StatusWord::Other(0x6300)),
        (0x63D1, StatusWord::Other(0x63D1)),
        (0x6F00, StatusWord::Other(0x6F00)),
    ];
    for (raw, sw) in named {
        assert_eq!(StatusWord::from(raw), sw, "{raw:04X}");
        assert_eq!(u16::from(sw), raw, "{sw:?}");
    }
    // Every word survives the trip and `Other` never shadows a named variant.
    for raw in 0..=u16::MAX {
        let sw = StatusWord::from_u16(raw);
        assert_eq!(sw.to_u16(), raw);
        if let StatusWord::Other(inner) = sw {
            assert_eq!(inner, raw);
        }
    }
    assert!(StatusWord::Success.is_success());
    assert!(!StatusWord::BytesRemaining(0).is_success());
    assert_eq!(StatusWord::FileNotFound.to_string(), "6A82");
}

#[test]
fn apdu_error_becomes_device_error() {
    let e: crate::Error = ApduError::TooShort(2).into();
    assert!(matches!(e, crate::Error::Device(m) if m.contains("2 bytes")));
}

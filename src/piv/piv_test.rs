#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::iso7816::exchange::{MAX_GET_RESPONSE_ROUNDS, MAX_RESPONSE_LEN};
use crate::transport::scripted::{hex, RemovedCard, RepeatingCard, ScriptedCard};

fn device_error(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Device(m)) => m,
        other => panic!("expected Error::Device, got {other:?}"),
    }
}

#[test]
fn slot_names_references_and_tags() {
    let table = [
        (Slot::Authentication, "9a", 0x9A, 0x5F_C105, PinPolicy::Once),
        (Slot::Signature, "9c", 0x9C, 0x5F_C10A, PinPolicy::Always),
        (Slot::KeyManagement, "9d", 0x9D, 0x5F_C10B, PinPolicy::Once),
        (
            Slot::CardAuthentication,
            "9e",
            0x9E,
            0x5F_C101,
            PinPolicy::Never,
        ),
    ];
    for (slot, name, reference, tag, policy) in table {
        assert_eq!(slot.to_string(), name);
        assert_eq!(name.parse::<Slot>().unwrap(), slot);
        assert_eq!(name.to_uppercase().parse::<Slot>().unwrap(), slot);
        assert_eq!(slot.key_reference(), reference);
        assert_eq!(slot.certificate_tag(), tag);
        assert_eq!(slot.pin_policy(), policy);
        assert_eq!(slot.needs_pin(), policy != PinPolicy::Never);
    }
    for bad in ["", "9b", "9a ", "0x9a", "authentication", "9"] {
        assert!(
            matches!(bad.parse::<Slot>(), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn pin_format() {
    assert_eq!(
        Pin::new("123456").unwrap().encoded(),
        hex("313233343536FFFF")
    );
    assert_eq!(
        Pin::new("12345678").unwrap().encoded(),
        hex("3132333435363738")
    );
    assert_eq!(Pin::new("a").unwrap().encoded(), hex("61FFFFFFFFFFFFFF"));
    assert_eq!(Pin::new("~ x").unwrap().encoded(), hex("7E2078FFFFFFFFFF"));
    for bad in ["", "123456789", "1234\n", "12\u{7F}", "pïn", "1234\u{0}"] {
        assert!(matches!(Pin::new(bad), Err(Error::PinFormat(_))), "{bad:?}");
    }
    let shown = format!("{:?}", Pin::new("654321").unwrap());
    assert!(!shown.chars().any(|c| c.is_ascii_digit()), "{shown}");
}

#[test]
fn select_parses_the_application_property_template() {
    let mut card = ScriptedCard::new(&[(
        "00A40400 09 A00000030800001000 00",
        "61 1E 4F 06 000010000100 79 07 4F 05 A000000308 50 03 504956 AC 06 80 01 11 06 01 00 9000",
    )]);
    let props = Piv::new(&mut card).select().unwrap();
    assert_eq!(props.pix, hex("000010000100"));
    assert_eq!(props.label.as_deref(), Some("PIV"));
    assert_eq!(props.algorithms, vec![ALG_ECC_P256]);
    card.assert_done();
}

#[test]
fn select_edge_cases() {
    let mut card = ScriptedCard::new(&[("00A4040009A0000003080000100000", "9000")]);
    assert_eq!(
        Piv::new(&mut card).select().unwrap(),
        ApplicationProperties::default()
    );

    let mut card = ScriptedCard::new(&[("00A4040009A0000003080000100000", "6A82")]);
    assert!(device_error(Piv::new(&mut card).select()).contains("no PIV application"));

    for hostile in [
        "6F 02 8400 9000",
        "61 05 4F 06 0000 9000",
        "61 02 4F 00 FF 9000",
        "61 80 9000",
    ] {
        let mut card = ScriptedCard::new(&[("00A4040009A0000003080000100000", hostile)]);
        device_error(Piv::new(&mut card).select());
    }
}

#[test]
fn pin_status_reads_the_retry_counter() {
    let cases = [
        ("9000", PinStatus::Verified),
        ("63C3", PinStatus::Retries(3)),
        ("63C1", PinStatus::Retries(1)),
        ("63C0", PinStatus::Blocked),
        ("6983", PinStatus::Blocked),
    ];
    for (sw, want) in cases {
        let mut card = ScriptedCard::new(&[("00200080", sw)]);
        assert_eq!(Piv::new(&mut card).pin_status().unwrap(), want, "{sw}");
    }
    let mut card = ScriptedCard::new(&[("00200080", "6A88")]);
    assert!(device_error(Piv::new(&mut card).pin_status()).contains("6A88"));
}

#[test]
fn verify_pin_maps_status_words() {
    let verify = "00200080 08 313233343536FFFF";
    let mut card = ScriptedCard::new(&[(verify, "9000")]);
    Piv::new(&mut card)
        .verify_pin(&Pin::new("123456").unwrap())
        .unwrap();
    card.assert_done();

    let pin = Pin::new("123456").unwrap();
    let run = |sw: &str| {
        let mut card = ScriptedCard::new(&[(verify, sw)]);
        Piv::new(&mut card).verify_pin(&pin)
    };
    assert!(matches!(run("63C2"), Err(Error::PinInvalid { retries: 2 })));
    assert!(
        matches!(run("63C0"), Err(Error::PinBlocked)),
        "the last try was spent"
    );
    assert!(matches!(run("6983"), Err(Error::PinBlocked)));
    assert!(device_error(run("6A80")).contains("6A80"));
}

#[test]
fn change_and_unblock_pin() {
    let old = Pin::new("123456").unwrap();
    let mut card = ScriptedCard::new(&[("00240080 10 313233343536FFFF 363534333231FFFF", "9000")]);
    Piv::new(&mut card)
        .change_pin(&old, &Pin::new("654321").unwrap())
        .unwrap();
    card.assert_done();

    let puk = Pin::new("12345678").unwrap();
    let unblock = "002C0080 10 3132333435363738 363534333231FFFF";
    let new = Pin::new("654321").unwrap();
    let mut card = ScriptedCard::new(&[(unblock, "9000")]);
    Piv::new(&mut card).unblock_pin(&puk, &new).unwrap();
    let mut card = ScriptedCard::new(&[(unblock, "63C2")]);
    assert!(matches!(
        Piv::new(&mut card).unblock_pin(&puk, &new),
        Err(Error::PukInvalid { retries: 2 })
    ));
    let mut card = ScriptedCard::new(&[(unblock, "6983")]);
    assert!(matches!(
        Piv::new(&mut card).unblock_pin(&puk, &new),
        Err(Error::PukBlocked)
    ));
    let mut card = ScriptedCard::new(&[(unblock, "63C0")]);
    assert!(matches!(
        Piv::new(&mut card).unblock_pin(&puk, &new),
        Err(Error::PukBlocked)
    ));
}

#[test]
fn reset_pin_status_sends_verify_ff() {
    let mut card = ScriptedCard::new(&[("0020FF80", "9000")]);
    Piv::new(&mut card).reset_pin_status().unwrap();
    card.assert_done();
    let mut card = ScriptedCard::new(&[("0020FF80", "6A86")]);
    assert!(Piv::new(&mut card).reset_pin_status().is_err());
}

/// A certificate object spread over three responses: 61 00, then 61 2F, then 9000.
#[test]
fn certificate_over_multi_step_get_response() {
    let der: Vec<u8> = (0..490u32).map(|i| (i % 256) as u8).collect();
    let mut inner = tlv::encode(0x70, &der).unwrap();
    tlv::write(&mut inner, 0x71, &[0x00]).unwrap();
    tlv::write(&mut inner, 0xFE, &[]).unwrap();
    let object = tlv::encode(0x53, &inner).unwrap();
    assert_eq!(object.len(), 4 + 4 + 490 + 3 + 2);
    let (first, rest) = object.split_at(200);
    let (second, third) = rest.split_at(256);
    assert_eq!(third.len(), 0x2F);
    let respond = |data: &[u8], sw: &str| [data, &hex(sw)].concat();
    let mut card = ScriptedCard::with(vec![
        (hex("00CB3FFF 05 5C035FC105 00"), respond(first, "6100")),
        (hex("00C00000 00"), respond(second, "612F")),
        (hex("00C00000 2F"), respond(third, "9000")),
    ]);
    assert_eq!(
        Piv::new(&mut card)
            .certificate(Slot::Authentication)
            .unwrap(),
        Some(der)
    );
    card.assert_done();
}

#[test]
fn certificate_edge_cases() {
    let get = "00CB3FFF 05 5C035FC10A 00";
    let run = |resp: &str| {
        let mut card = ScriptedCard::new(&[(get, resp)]);
        Piv::new(&mut card).certificate(Slot::Signature)
    };
    assert_eq!(run("6A82").unwrap(), None, "no object");
    assert_eq!(run("5300 9000").unwrap(), None, "empty object");
    assert_eq!(
        run("53 06 7002 3082 FE00 9000").unwrap(),
        Some(hex("3082")),
        "no CertInfo"
    );
    assert!(device_error(run("53 09 7002 3082 710101 FE00 9000")).contains("compressed"));
    assert!(device_error(run("53 05 710100 FE00 9000")).contains("no certificate"));
    assert!(device_error(run("53 04 7000 FE00 9000")).contains("no certificate"));
    device_error(run("53 08 7002 3082 FE00 9000")); // outer length past the end
    device_error(run("53 06 7005 3082 FE00 9000")); // inner length past the end
    device_error(run("7E 06 7002 3082 FE00 9000")); // wrong template
    device_error(run("53 06 7002 3082 FE00 FF 9000")); // trailing byte
    device_error(run("53 80 7002 3082 0000 9000")); // indefinite length
    device_error(run("9000")); // nothing at all
    assert!(device_error(run("6982")).contains("6982"));
}

#[test]
fn chuid_fields() {
    let get = "00CB3FFF 05 5C035FC102 00";
    let guid = "00112233445566778899AABBCCDDEEFF";
    let mut card = ScriptedCard::new(&[(
        get,
        &format!("53 1B 3003 D43210 3410 {guid} 3E00 FE00 9000"),
    )]);
    let chuid = Piv::new(&mut card).chuid().unwrap().unwrap();
    assert_eq!(chuid.fasc_n, Some(hex("D43210")));
    assert_eq!(chuid.guid.map(hex::encode_upper).as_deref(), Some(guid));

    let mut card = ScriptedCard::new(&[(get, "53 05 3403 001122 9000")]);
    assert!(device_error(Piv::new(&mut card).chuid()).contains("GUID"));
    let mut card = ScriptedCard::new(&[(get, "6A82")]);
    assert_eq!(Piv::new(&mut card).chuid().unwrap(), None);
}

#[test]
fn get_data_encodes_short_and_long_tags() {
    let mut card = ScriptedCard::new(&[("00CB3FFF 03 5C017E 00", "7E 02 4F00 9000")]);
    assert_eq!(
        Piv::new(&mut card).get_data(0x7E).unwrap(),
        Some(hex("4F00"))
    );
    let mut card = ScriptedCard::new(&[("00CB3FFF 04 5C027F61 00", "7F61 00 9000")]);
    assert_eq!(Piv::new(&mut card).get_data(0x7F61).unwrap(), Some(vec![]));
}

#[test]
fn sign_p256_exchange() {
    let digest = [0xAB; 32];
    let cmd = format!("0087 119A 26 7C24 8200 8120 {} 00", "AB".repeat(32));
    let sig = "3006 0201 01 0201 02";
    let mut card = ScriptedCard::new(&[(&cmd, &format!("7C 0A 82 08 {sig} 9000"))]);
    assert_eq!(
        Piv::new(&mut card)
            .sign_p256(Slot::Authentication, &digest)
            .unwrap(),
        hex(sig)
    );
    card.assert_done();

    let run = |resp: &str| {
        let mut card = ScriptedCard::new(&[(&cmd, resp)]);
        Piv::new(&mut card).sign_p256(Slot::Authentication, &digest)
    };
    assert!(matches!(run("6982"), Err(Error::PinRequired)));
    assert!(device_error(run("6A88")).contains("no P-256 key"));
    assert!(device_error(run("7C 02 8200 9000")).contains("no signature"));
    assert!(device_error(run("7C 03 810100 9000")).contains("no signature"));
    device_error(run("7C 0A 82 08 3006 9000")); // truncated
    device_error(run("53 0A 82 08 3006020101020102 9000")); // wrong template
    device_error(run("7C 0A 82 08 3006020101020102 00 9000")); // trailing byte
}

#[test]
fn long_command_data_is_chained() {
    let data: Vec<u8> = (0..600u32).map(|i| (i % 256) as u8).collect();
    let cmd = Command::new(0x00, 0xDB, 0x3F, 0xFF)
        .with_data(data.clone())
        .with_le(256);
    let piece = |cla: u8, bytes: &[u8], le: &[u8]| {
        [&[cla, 0xDB, 0x3F, 0xFF, bytes.len() as u8][..], bytes, le].concat()
    };
    let mut card = ScriptedCard::with(vec![
        (piece(0x10, &data[..255], &[]), hex("9000")),
        (piece(0x10, &data[255..510], &[]), hex("9000")),
        (piece(0x00, &data[510..], &[0x00]), hex("AA 9000")),
    ]);
    let resp = Piv::new(&mut card).transmit(&cmd).unwrap();
    assert_eq!(resp, Response::new(vec![0xAA], StatusWord::Success));
    card.assert_done();

    // A refused piece ends the chain; the rest is not sent.
    let mut card = ScriptedCard::with(vec![(piece(0x10, &data[..255], &[]), hex("6A80"))]);
    assert_eq!(
        Piv::new(&mut card).transmit(&cmd).unwrap().sw,
        StatusWord::IncorrectData
    );
    card.assert_done();

    // Exactly 255 bytes fit one short APDU.
    let cmd = Command::new(0x00, 0xDB, 0x3F, 0xFF).with_data(data[..255].to_vec());
    let mut card = ScriptedCard::with(vec![(piece(0x00, &data[..255], &[]), hex("9000"))]);
    Piv::new(&mut card).transmit(&cmd).unwrap();
    card.assert_done();
}

#[test]
fn wrong_le_is_retried_once() {
    let mut card = ScriptedCard::new(&[
        ("00CB3FFF 03 5C017E 00", "6C04"),
        ("00CB3FFF 03 5C017E 04", "7E02 4F00 9000"),
    ]);
    assert_eq!(
        Piv::new(&mut card).get_data(0x7E).unwrap(),
        Some(hex("4F00"))
    );
    card.assert_done();
    let mut card = ScriptedCard::new(&[
        ("00CB3FFF 03 5C017E 00", "6C04"),
        ("00CB3FFF 03 5C017E 04", "6C04"),
    ]);
    assert!(device_error(Piv::new(&mut card).get_data(0x7E)).contains("6C04"));
    card.assert_done();
}

#[test]
fn endless_get_response_is_cut_off() {
    // Empty 61xx forever: stopped by the round limit.
    let mut card = RepeatingCard {
        reply: hex("6110"),
        calls: 0,
    };
    assert!(device_error(Piv::new(&mut card).get_data(0x7E)).contains("61xx"));
    assert_eq!(card.calls, 1 + MAX_GET_RESPONSE_ROUNDS);

    // 256 bytes and 61 00 forever: stopped by the size limit.
    let mut card = RepeatingCard {
        reply: [vec![0x53; 256], hex("6100")].concat(),
        calls: 0,
    };
    assert!(device_error(Piv::new(&mut card).get_data(0x7E)).contains("longer than"));
    assert_eq!(card.calls, MAX_RESPONSE_LEN / 256 + 1);
}

#[test]
fn transport_errors_pass_through() {
    assert!(matches!(
        Piv::new(&mut RemovedCard).select(),
        Err(Error::DeviceRemoved)
    ));
    let mut short = RepeatingCard {
        reply: vec![0x90],
        calls: 0,
    };
    assert!(device_error(Piv::new(&mut short).select()).contains("no status word"));
}

#[test]
fn works_through_a_trait_object() {
    let mut card: Box<dyn CardTransport> = Box::new(ScriptedCard::new(&[("00200080", "63C5")]));
    let dynamic: &mut dyn CardTransport = &mut *card;
    assert_eq!(
        Piv::new(dynamic).pin_status().unwrap(),
        PinStatus::Retries(5)
    );
}

/// SP 800-73-4 Part 2 §3.1.1: SELECT names the right-truncated AID (Part 1 §2.2), never the RID
/// alone; a card that answers `61xx` (ISO/IEC 7816-4 §5.3.4) gets a GET RESPONSE for the template.
#[test]
fn select_sends_the_truncated_aid_and_follows_61xx() {
    assert_eq!(PIV_AID, hex("A0000003 08 00001000").as_slice());
    let mut card = ScriptedCard::new(&[
        ("00A4040009A0000003080000100000", "6113"),
        (
            "00C0000013",
            "61 11 4F 06 000010000100 79 07 4F 05 A000000308 9000",
        ),
    ]);
    let props = Piv::new(&mut card).select().unwrap();
    assert_eq!(props.pix, hex("000010000100"));
    card.assert_done();
}

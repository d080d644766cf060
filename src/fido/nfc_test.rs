#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::transport::scripted::ScriptedCard;

const SELECT: &str = "00 A4 04 00 08 A0 00 00 06 47 2F 00 01 00";
/// "FIDO_2_0", 9000.
const FIDO_2_0: &str = "46 49 44 4F 5F 32 5F 30 90 00";
/// "U2F_V2", 9000.
const U2F_V2: &str = "55 32 46 5F 56 32 90 00";
/// authenticatorGetInfo in NFCCTAP_MSG, P1 80 (status updates welcome), Le 00.
const GET_INFO_POLLING: &str = "80 10 80 00 01 04 00";
const GET_INFO_DIRECT: &str = "80 10 00 00 01 04 00";
const GET_RESPONSE: &str = "80 11 00 00 00";

fn ctx_run<R>(
    cancel_on_upneeded: bool,
    within: Duration,
    f: impl FnOnce(&mut LinkContext<'_>) -> R,
) -> (R, Vec<Keepalive>) {
    let cancel = CancelToken::new();
    let mut seen = Vec::new();
    let mut record = |k| {
        if cancel_on_upneeded && k == Keepalive::UpNeeded {
            cancel.cancel();
        }
        seen.push(k);
    };
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + within,
        keepalive: &mut record,
    };
    let r = f(&mut ctx);
    (r, seen)
}

fn cbor(link: &mut NfcLink<'_>, request: &[u8]) -> (Result<Vec<u8>>, Vec<Keepalive>) {
    ctx_run(false, Duration::from_secs(5), |ctx| link.cbor(request, ctx))
}

/// A script of (command, answer) and the capabilities it should give: (cbor, msg).
type Case<'a> = (Vec<(&'a str, &'a str)>, bool, bool);

#[test]
fn the_version_string_says_what_the_applet_speaks() {
    // (script, cbor, msg): CTAP2 applets; a U2F_V2 applet with CTAP2 behind; a U2F-only one that
    // refuses NFCCTAP_MSG with either P1.
    let cases: Vec<Case> = vec![
        (vec![(SELECT, FIDO_2_0)], true, true),
        (vec![(SELECT, "46 49 44 4F 5F 32 5F 31 90 00")], true, true), // "FIDO_2_1"
        (
            vec![(SELECT, U2F_V2), (GET_INFO_POLLING, "00 A1 01 80 90 00")],
            true,
            true,
        ),
        (
            vec![
                (SELECT, U2F_V2),
                (GET_INFO_POLLING, "6D 00"),
                (GET_INFO_DIRECT, "6D 00"),
            ],
            false,
            true,
        ),
        (
            vec![(SELECT, U2F_V2), (GET_INFO_POLLING, "6E 00")],
            false,
            true,
        ),
    ];
    for (script, want_cbor, want_msg) in cases {
        let mut card = ScriptedCard::new(&script);
        let link = NfcLink::select(&mut card).unwrap();
        let c = link.capabilities();
        assert_eq!(
            (c.cbor, c.msg, c.wink),
            (want_cbor, want_msg, false),
            "{script:?}"
        );
        card.assert_done();
    }
}

#[test]
fn no_applet_or_an_unknown_version_is_a_device_error() {
    for answer in ["6A 82", "46 4F 4F 90 00"] {
        let mut card = ScriptedCard::new(&[(SELECT, answer)]);
        let r = NfcLink::select(&mut card).map(|_| ());
        assert!(matches!(r, Err(Error::Device(_))), "{answer}: {r:?}");
    }
}

#[test]
fn a_direct_answer_is_returned_as_is() {
    let mut card = ScriptedCard::new(&[(SELECT, FIDO_2_0), (GET_INFO_POLLING, "00 A0 90 00")]);
    let mut link = NfcLink::select(&mut card).unwrap();
    let (r, seen) = cbor(&mut link, &GET_INFO);
    assert_eq!(r.unwrap(), [0x00, 0xA0]);
    assert!(seen.is_empty());
    card.assert_done();
}

#[test]
fn status_updates_are_polled_and_become_keepalives() {
    let mut card = ScriptedCard::new(&[
        (SELECT, FIDO_2_0),
        ("80 10 80 00 01 02 00", "01 91 00"),
        (GET_RESPONSE, "02 91 00"),
        (GET_RESPONSE, "02 91 00"),
        (GET_RESPONSE, "00 A1 01 02 90 00"),
    ]);
    let mut link = NfcLink::select(&mut card).unwrap();
    let (r, seen) = cbor(&mut link, &[0x02]);
    assert_eq!(r.unwrap(), [0x00, 0xA1, 0x01, 0x02]);
    assert_eq!(
        seen,
        [
            Keepalive::Processing,
            Keepalive::UpNeeded,
            Keepalive::UpNeeded
        ]
    );
    card.assert_done();
}

#[test]
fn a_key_refusing_p1_80_is_asked_again_with_p1_00_for_the_whole_session() {
    let mut card = ScriptedCard::new(&[
        (SELECT, FIDO_2_0),
        (GET_INFO_POLLING, "6D 00"),
        (GET_INFO_DIRECT, "00 A0 90 00"),
        (GET_INFO_DIRECT, "00 A0 90 00"),
    ]);
    let mut link = NfcLink::select(&mut card).unwrap();
    assert_eq!(cbor(&mut link, &GET_INFO).0.unwrap(), [0x00, 0xA0]);
    assert_eq!(cbor(&mut link, &GET_INFO).0.unwrap(), [0x00, 0xA0]);
    card.assert_done();
}

#[test]
fn a_key_refusing_getresponse_is_asked_again_without_polling() {
    let mut card = ScriptedCard::new(&[
        (SELECT, FIDO_2_0),
        ("80 10 80 00 01 02 00", "01 91 00"),
        (GET_RESPONSE, "6D 00"),
        ("80 10 00 00 01 02 00", "00 A0 90 00"),
    ]);
    let mut link = NfcLink::select(&mut card).unwrap();
    assert_eq!(cbor(&mut link, &[0x02]).0.unwrap(), [0x00, 0xA0]);
    card.assert_done();
}

#[test]
fn a_cancel_stops_the_polling_at_once() {
    let mut card = ScriptedCard::new(&[(SELECT, FIDO_2_0), ("80 10 80 00 01 02 00", "02 91 00")]);
    let mut link = NfcLink::select(&mut card).unwrap();
    let (r, _) = ctx_run(true, Duration::from_secs(5), |ctx| link.cbor(&[0x02], ctx));
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // No NFCCTAP_GETRESPONSE after the cancel.
    card.assert_done();
}

#[test]
fn the_deadline_ends_the_polling() {
    let script: Vec<(String, String)> = std::iter::once((SELECT.into(), FIDO_2_0.into()))
        .chain(std::iter::once((
            "80 10 80 00 01 02 00".into(),
            "02 91 00".into(),
        )))
        .chain((0..1000).map(|_| (GET_RESPONSE.into(), "02 91 00".into())))
        .collect();
    let script: Vec<(&str, &str)> = script
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut card = ScriptedCard::new(&script);
    let mut link = NfcLink::select(&mut card).unwrap();
    let (r, seen) = ctx_run(false, Duration::from_millis(100), |ctx| {
        link.cbor(&[0x02], ctx)
    });
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(seen.len() > 2 && seen.len() < 50, "{} polls", seen.len());
}

#[test]
fn long_requests_are_chained_and_long_answers_fetched() {
    let request: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let first = format!("90 10 80 00 FF {}", hex::encode(&request[..255]));
    let last = format!("80 10 80 00 2D {} 00", hex::encode(&request[255..]));
    let answer: Vec<u8> = (0..300u32).map(|i| (i * 3) as u8).collect();
    let a1 = format!("{} 61 2C", hex::encode(&answer[..256]));
    let a2 = format!("{} 90 00", hex::encode(&answer[256..]));
    let mut card = ScriptedCard::new(&[
        (SELECT, FIDO_2_0),
        (&first, "90 00"),
        (&last, &a1),
        ("00 C0 00 00 2C", &a2),
    ]);
    let mut link = NfcLink::select(&mut card).unwrap();
    assert_eq!(cbor(&mut link, &request).0.unwrap(), answer);
    card.assert_done();
}

#[test]
fn a_final_status_word_other_than_9000_is_a_device_error() {
    let mut card = ScriptedCard::new(&[(SELECT, FIDO_2_0), (GET_INFO_POLLING, "6F 00")]);
    let mut link = NfcLink::select(&mut card).unwrap();
    let r = cbor(&mut link, &GET_INFO).0;
    assert!(
        matches!(&r, Err(Error::Device(m)) if m.contains("6F00") || m.contains("6f00")),
        "{r:?}"
    );
}

#[test]
fn u2f_messages_go_as_apdus_with_their_status_word() {
    // U2F_AUTHENTICATE, check-only, extended form as U2F raw messages §2.4 write it; sent as a
    // short APDU, and 6985 (no touch yet) handed back as is.
    let mut card = ScriptedCard::new(&[
        (SELECT, U2F_V2),
        (GET_INFO_POLLING, "6E 00"),
        ("00 02 07 00 03 AA BB CC 00", "69 85"),
    ]);
    let mut link = NfcLink::select(&mut card).unwrap();
    let (r, _) = ctx_run(false, Duration::from_secs(5), |ctx| {
        link.msg(&hex::decode("00020700000003AABBCC0000").unwrap(), ctx)
    });
    assert_eq!(r.unwrap(), [0x69, 0x85]);
    let (r, _) = ctx_run(false, Duration::from_secs(5), |ctx| link.ping(b"x", ctx));
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    card.assert_done();
}

/// A card answering every command with a pseudo-random pick of answers (status updates with any
/// byte, quirks, 61xx, truncated words) never panics the link, and every call ends: the ordinary
/// run's share of what the `nfc_framing` fuzz target does.
#[test]
fn hostile_answers_never_panic() {
    struct Hostile {
        state: u64,
        left: usize,
    }
    impl CardTransport for Hostile {
        fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>> {
            if self.left == 0 {
                return Err(Error::DeviceRemoved);
            }
            self.left -= 1;
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let answers: [&[u8]; 10] = [
                b"FIDO_2_0\x90\x00",
                b"U2F_V2\x90\x00",
                b"\x01\x91\x00",
                b"\x02\x91\x00",
                b"\x91\x00",
                b"\x6D\x00",
                b"\x00\xA0\x61\x05",
                b"\x00\x90\x00",
                b"\x90",
                b"\x6C\x02",
            ];
            Ok(answers[(self.state % 10) as usize].to_vec())
        }
    }
    for seed in 1..400u64 {
        let mut card = Hostile {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            left: 40,
        };
        let Ok(mut link) = NfcLink::select(&mut card) else {
            continue;
        };
        let _ = ctx_run(false, Duration::from_millis(30), |ctx| {
            let _ = link.cbor(&[0x04], ctx);
            let _ = link.msg(&[0x00, 0x02, 0x03, 0x00, 0x01, 0xAA, 0x00], ctx);
        });
    }
}

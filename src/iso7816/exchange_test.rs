#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::transport::scripted::{hex, RemovedCard, RepeatingCard, ScriptedCard};

/// One exchange: the command, the APDUs it must become with the card's answers, and the outcome
/// (response data and status word in hex, or part of the error message).
struct Case {
    name: &'static str,
    lengths: Lengths,
    cmd: Command,
    script: Vec<(Vec<u8>, Vec<u8>)>,
    want: std::result::Result<&'static str, &'static str>,
}

fn apdu(header: &str, data: &[u8], tail: &str) -> Vec<u8> {
    [hex(header), data.to_vec(), hex(tail)].concat()
}

fn step(command: &str, reply: &str) -> (Vec<u8>, Vec<u8>) {
    (hex(command), hex(reply))
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn put(data: &[u8]) -> Command {
    Command::new(0x00, 0xDB, 0x3F, 0xFF).with_data(data.to_vec())
}

fn get() -> Command {
    Command::new(0x00, 0xCB, 0x3F, 0xFF)
}

fn run(case: Case) {
    let mut card = ScriptedCard::with(case.script);
    let got = Exchange::with_lengths(&mut card, case.lengths).transmit(&case.cmd);
    match (got, case.want) {
        (Ok(resp), Ok(want)) => assert_eq!(
            hex::encode_upper(resp.to_bytes()),
            hex::encode_upper(hex(want)),
            "{}",
            case.name
        ),
        (Err(Error::Device(m)), Err(want)) => assert!(m.contains(want), "{}: {m}", case.name),
        (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
    }
    card.assert_done();
}

/// ISO/IEC 7816-4 §5.1: how each case is encoded, short and extended.
#[test]
fn lengths() {
    let d255 = bytes(255);
    let d256 = bytes(256);
    let d600 = bytes(600);
    let cases = [
        Case {
            name: "case 1",
            lengths: Lengths::Short,
            cmd: get(),
            script: vec![step("00CB3FFF", "9000")],
            want: Ok("9000"),
        },
        Case {
            name: "case 2S, Ne 256 is 00",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![step("00CB3FFF 00", "AABB 9000")],
            want: Ok("AABB 9000"),
        },
        Case {
            name: "short: Ne 65536 is sent as 256, the rest comes by GET RESPONSE",
            lengths: Lengths::Short,
            cmd: get().with_le(MAX_LE_EXTENDED),
            script: vec![
                step("00CB3FFF 00", "AA 6101"),
                step("00C00000 01", "BB 9000"),
            ],
            want: Ok("AABB 9000"),
        },
        Case {
            name: "case 2E: Ne 65536 is 00 0000",
            lengths: Lengths::Extended,
            cmd: get().with_le(MAX_LE_EXTENDED),
            script: vec![step("00CB3FFF 000000", "AA 9000")],
            want: Ok("AA 9000"),
        },
        Case {
            name: "extended where it fits short: short",
            lengths: Lengths::Extended,
            cmd: put(&d255).with_le(256),
            script: vec![(apdu("00DB3FFF FF", &d255, "00"), hex("9000"))],
            want: Ok("9000"),
        },
        Case {
            name: "case 3S: 255 bytes fit one short APDU",
            lengths: Lengths::Short,
            cmd: put(&d255),
            script: vec![(apdu("00DB3FFF FF", &d255, ""), hex("9000"))],
            want: Ok("9000"),
        },
        Case {
            name: "256 bytes short: chained 255 + 1, Le with the last",
            lengths: Lengths::Short,
            cmd: put(&d256).with_le(2),
            script: vec![
                (apdu("10DB3FFF FF", &d256[..255], ""), hex("9000")),
                (apdu("00DB3FFF 01", &d256[255..], "02"), hex("CAFE 9000")),
            ],
            want: Ok("CAFE 9000"),
        },
        Case {
            name: "case 4E: 600 bytes and Ne 256 in one extended APDU",
            lengths: Lengths::Extended,
            cmd: put(&d600).with_le(256),
            script: vec![(apdu("00DB3FFF 000258", &d600, "0100"), hex("9000"))],
            want: Ok("9000"),
        },
        Case {
            name: "case 3E: 256 bytes, no Le",
            lengths: Lengths::Extended,
            cmd: put(&d256),
            script: vec![(apdu("00DB3FFF 000100", &d256, ""), hex("9000"))],
            want: Ok("9000"),
        },
    ];
    for case in cases {
        run(case);
    }
}

/// ISO/IEC 7816-4 §5.1.1.1: command chaining.
#[test]
fn chaining() {
    let d600 = bytes(600);
    let big = bytes(MAX_DATA_EXTENDED + 10);
    let cases = [
        Case {
            name: "600 bytes short: 255 + 255 + 90",
            lengths: Lengths::Short,
            cmd: put(&d600).with_le(256),
            script: vec![
                (apdu("10DB3FFF FF", &d600[..255], ""), hex("9000")),
                (apdu("10DB3FFF FF", &d600[255..510], ""), hex("9000")),
                (apdu("00DB3FFF 5A", &d600[510..], "00"), hex("AA 9000")),
            ],
            want: Ok("AA 9000"),
        },
        Case {
            name: "a refused piece ends the chain with its answer",
            lengths: Lengths::Short,
            cmd: put(&d600),
            script: vec![
                (apdu("10DB3FFF FF", &d600[..255], ""), hex("9000")),
                (apdu("10DB3FFF FF", &d600[255..510], ""), hex("6A80")),
            ],
            want: Ok("6A80"),
        },
        Case {
            name: "more than an extended APDU holds: chained extended pieces",
            lengths: Lengths::Extended,
            cmd: put(&big).with_le(MAX_LE_EXTENDED),
            script: vec![
                (
                    apdu("10DB3FFF 00FFFF", &big[..MAX_DATA_EXTENDED], ""),
                    hex("9000"),
                ),
                (
                    apdu("00DB3FFF 00000A", &big[MAX_DATA_EXTENDED..], "0000"),
                    hex("BB 9000"),
                ),
            ],
            want: Ok("BB 9000"),
        },
        Case {
            name: "the last piece's 61xx is followed",
            lengths: Lengths::Short,
            cmd: put(&d600[..300]),
            script: vec![
                (apdu("10DB3FFF FF", &d600[..255], ""), hex("9000")),
                (apdu("00DB3FFF 2D", &d600[255..300], ""), hex("6102")),
                step("00C00000 02", "0102 9000"),
            ],
            want: Ok("0102 9000"),
        },
        Case {
            name: "6Cxx after a chain is not resent (the chain is not repeatable)",
            lengths: Lengths::Short,
            cmd: put(&d600[..300]).with_le(256),
            script: vec![
                (apdu("10DB3FFF FF", &d600[..255], ""), hex("9000")),
                (apdu("00DB3FFF 2D", &d600[255..300], "00"), hex("6C04")),
            ],
            want: Ok("6C04"),
        },
        Case {
            name: "a command the caller chains itself is sent as is and not resent on 6Cxx",
            lengths: Lengths::Short,
            cmd: Command::new(0x10, 0xDB, 0x3F, 0xFF)
                .with_data(vec![0x01])
                .with_le(256),
            script: vec![step("10DB3FFF 01 01 00", "6C04")],
            want: Ok("6C04"),
        },
    ];
    for case in cases {
        run(case);
    }
}

/// ISO/IEC 7816-4 §7.6.1 and §5.6: GET RESPONSE after 61xx, the exact Le after 6Cxx.
#[test]
fn get_response_and_wrong_le() {
    let cases = [
        Case {
            name: "61xx: GET RESPONSE with Le xx, pieces appended",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![
                step("00CB3FFF 00", "AA 6102"),
                step("00C00000 02", "BBCC 6101"),
                step("00C00000 01", "DD 9000"),
            ],
            want: Ok("AABBCCDD 9000"),
        },
        Case {
            name: "6100 asks for 256",
            lengths: Lengths::Short,
            cmd: get(),
            script: vec![step("00CB3FFF", "6100"), step("00C00000 00", "EE 9000")],
            want: Ok("EE 9000"),
        },
        Case {
            name: "61xx ending in an error: the error's word, the data so far",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![step("00CB3FFF 00", "AA 6101"), step("00C00000 01", "6F00")],
            want: Ok("AA 6F00"),
        },
        Case {
            name: "6Cxx: sent once more with Le xx",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![
                step("00CB3FFF 00", "6C03"),
                step("00CB3FFF 03", "010203 9000"),
            ],
            want: Ok("010203 9000"),
        },
        Case {
            name: "6C00 means 256",
            lengths: Lengths::Short,
            cmd: get().with_le(1),
            script: vec![step("00CB3FFF 01", "6C00"), step("00CB3FFF 00", "9000")],
            want: Ok("9000"),
        },
        Case {
            name: "6Cxx twice: returned, not resent again",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![step("00CB3FFF 00", "6C03"), step("00CB3FFF 03", "6C03")],
            want: Ok("6C03"),
        },
        Case {
            name: "6Cxx then 61xx",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![
                step("00CB3FFF 00", "6C02"),
                step("00CB3FFF 02", "AABB 6101"),
                step("00C00000 01", "CC 9000"),
            ],
            want: Ok("AABBCC 9000"),
        },
        Case {
            name: "6Cxx to GET RESPONSE: asked again with the exact length",
            lengths: Lengths::Short,
            cmd: get().with_le(256),
            script: vec![
                step("00CB3FFF 00", "6105"),
                step("00C00000 05", "6C02"),
                step("00C00000 02", "AABB 9000"),
            ],
            want: Ok("AABB 9000"),
        },
        Case {
            name: "a response without its status word",
            lengths: Lengths::Short,
            cmd: get(),
            script: vec![step("00CB3FFF", "90")],
            want: Err("no status word"),
        },
        Case {
            name: "a command too long to encode",
            lengths: Lengths::Short,
            cmd: get().with_le(MAX_LE_EXTENDED + 1),
            script: vec![],
            want: Err("outside 1..=65536"),
        },
    ];
    for case in cases {
        run(case);
    }
}

/// A hostile card cannot keep the loop going: rounds and size are bounded.
#[test]
fn get_response_loops_are_bounded() {
    // Empty 61xx forever: the command, then the round limit of GET RESPONSEs.
    let mut card = RepeatingCard {
        reply: hex("6110"),
        calls: 0,
    };
    let err = Exchange::new(&mut card).transmit(&get()).unwrap_err();
    assert!(err.to_string().contains("61xx"), "{err}");
    assert_eq!(card.calls, 1 + MAX_GET_RESPONSE_ROUNDS);

    // 61xx, then 6Cxx to every GET RESPONSE: the same limit.
    struct WrongLeForever {
        calls: usize,
    }
    impl CardTransport for WrongLeForever {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>> {
            self.calls += 1;
            Ok(hex(if self.calls == 1 { "6110" } else { "6C10" }))
        }
    }
    let mut card = WrongLeForever { calls: 0 };
    let err = Exchange::new(&mut card).transmit(&get()).unwrap_err();
    assert!(err.to_string().contains("6C10"), "{err}");
    assert_eq!(card.calls, 1 + MAX_GET_RESPONSE_ROUNDS);

    // 6Cxx forever to the command itself: one resend, then the answer.
    let mut card = RepeatingCard {
        reply: hex("6C10"),
        calls: 0,
    };
    let resp = Exchange::new(&mut card)
        .transmit(&get().with_le(1))
        .unwrap();
    assert_eq!(resp.sw, StatusWord::WrongLe(0x10));
    assert_eq!(card.calls, 2);

    // Full pieces with 6100 forever: stopped by the size limit, short and extended alike.
    for lengths in [Lengths::Short, Lengths::Extended] {
        let mut card = RepeatingCard {
            reply: [vec![0x53; 256], hex("6100")].concat(),
            calls: 0,
        };
        let err = Exchange::with_lengths(&mut card, lengths)
            .transmit(&get())
            .unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        assert_eq!(card.calls, MAX_RESPONSE_LEN / 256 + 1);
    }
}

/// Errors of the transport pass through untouched: a pulled card stays [`Error::DeviceRemoved`].
#[test]
fn transport_errors_pass_through() {
    let big = bytes(600);
    for cmd in [get(), put(&big)] {
        assert!(matches!(
            Exchange::new(&mut RemovedCard).transmit(&cmd),
            Err(Error::DeviceRemoved)
        ));
    }
}

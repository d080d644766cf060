#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::framing::{cmd, Reassembly, Step};
use super::*;
use crate::transport::HID_REPORT_LEN;

type Report = [u8; HID_REPORT_LEN];

const CID: u32 = 0x0102_0304;
const OTHER_CID: u32 = 0x0A0B_0C0D;

/// One thing the scripted key does when read.
#[derive(Clone)]
enum Read {
    /// This report.
    Report(Report),
    /// The answer to the last CTAPHID_INIT written, with its nonce (or a wrong one).
    Init {
        cid: u32,
        flags: u8,
        right_nonce: bool,
    },
    /// Nothing, this many reads in a row.
    Silent(usize),
    /// Nothing until a report with this command byte was written.
    UntilWritten(u8),
    /// The device is gone (this and every later read).
    Gone,
}

/// A key that plays a script, whatever is written to it, and records what was.
struct FakeKey {
    written: Arc<Mutex<Vec<Report>>>,
    script: VecDeque<Read>,
}

impl HidTransport for FakeKey {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        self.written.lock().unwrap().push(*report);
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>> {
        let idle = || thread::sleep(timeout.min(Duration::from_millis(2)));
        match self.script.pop_front() {
            None => {
                idle();
                Ok(None)
            }
            Some(Read::Report(r)) => Ok(Some(r)),
            Some(Read::Init {
                cid,
                flags,
                right_nonce,
            }) => {
                let written = self.written.lock().unwrap();
                let init = written
                    .iter()
                    .rev()
                    .find(|r| r[4] == cmd::INIT)
                    .expect("INIT answered before any INIT was written");
                assert_eq!(&init[..4], &[0xFF; 4], "INIT goes to the broadcast channel");
                assert_eq!(&init[5..7], &[0, 8], "INIT carries an 8-byte nonce");
                let mut nonce = init[7..15].to_vec();
                if !right_nonce {
                    nonce[0] ^= 0xFF;
                }
                let mut payload = nonce;
                payload.extend_from_slice(&cid.to_be_bytes());
                payload.extend_from_slice(&[2, 5, 4, 3, flags]);
                Ok(Some(frame(0xFFFF_FFFF, cmd::INIT, &payload)[0]))
            }
            Some(Read::Silent(n)) => {
                if n > 1 {
                    self.script.push_front(Read::Silent(n - 1));
                }
                idle();
                Ok(None)
            }
            Some(Read::UntilWritten(c)) => {
                if self.written.lock().unwrap().iter().any(|r| r[4] == c) {
                    self.read_report(timeout)
                } else {
                    self.script.push_front(Read::UntilWritten(c));
                    idle();
                    Ok(None)
                }
            }
            Some(Read::Gone) => {
                self.script.push_front(Read::Gone);
                Err(Error::DeviceRemoved)
            }
        }
    }
}

/// The test's own CTAPHID framing (§11.2.4), independent of the code under test.
fn frame(cid: u32, command: u8, payload: &[u8]) -> Vec<Report> {
    let mut out = Vec::new();
    let mut r = [0u8; HID_REPORT_LEN];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = command;
    r[5] = (payload.len() >> 8) as u8;
    r[6] = payload.len() as u8;
    let n = payload.len().min(57);
    r[7..7 + n].copy_from_slice(&payload[..n]);
    out.push(r);
    for (seq, piece) in payload[n..].chunks(59).enumerate() {
        let mut r = [0u8; HID_REPORT_LEN];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        r[4] = seq as u8;
        r[5..5 + piece.len()].copy_from_slice(piece);
        out.push(r);
    }
    out
}

fn reports(cid: u32, command: u8, payload: &[u8]) -> Vec<Read> {
    frame(cid, command, payload)
        .into_iter()
        .map(Read::Report)
        .collect()
}

fn init(flags: u8) -> Read {
    Read::Init {
        cid: CID,
        flags,
        right_nonce: true,
    }
}

fn keepalive(status: u8) -> Read {
    Read::Report(frame(CID, cmd::KEEPALIVE, &[status])[0])
}

fn error(code: u8) -> Read {
    Read::Report(frame(CID, cmd::ERROR, &[code])[0])
}

fn key(script: Vec<Read>) -> (CtapHid, Arc<Mutex<Vec<Report>>>) {
    let written = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeKey {
        written: written.clone(),
        script: script.into(),
    };
    (CtapHid::new(Box::new(fake)), written)
}

/// Runs `f` with a context: no cancel, a deadline `within` from now, keepalives collected.
fn with_ctx<R>(
    within: Duration,
    cancel: &CancelToken,
    f: impl FnOnce(&mut LinkContext<'_>) -> R,
) -> (R, Vec<Keepalive>) {
    let mut seen = Vec::new();
    let mut record = |k| seen.push(k);
    let mut ctx = LinkContext {
        cancel,
        deadline: Instant::now() + within,
        keepalive: &mut record,
    };
    let r = f(&mut ctx);
    (r, seen)
}

fn cbor(link: &mut CtapHid, request: &[u8]) -> Result<Vec<u8>> {
    with_ctx(Duration::from_secs(5), &CancelToken::new(), |ctx| {
        link.cbor(request, ctx)
    })
    .0
}

/// The messages written, put together again, by command (INIT's nonce dropped).
fn sent(written: &Mutex<Vec<Report>>) -> Vec<(u32, u8, Vec<u8>)> {
    let written = written.lock().unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < written.len() {
        let cid = u32::from_be_bytes(written[i][..4].try_into().unwrap());
        let mut asm = Reassembly::new(cid);
        loop {
            match asm.feed(&written[i]).unwrap() {
                Step::Done(m) => {
                    let payload = if m.command == cmd::INIT {
                        Vec::new()
                    } else {
                        m.payload
                    };
                    out.push((cid, m.command, payload));
                    i += 1;
                    break;
                }
                Step::More => i += 1,
                Step::Skipped => panic!("a written report on another channel mid-message"),
            }
        }
    }
    out
}

#[test]
fn one_packet_each_way_pins_the_bytes() {
    let answer = [0x00, 0xA1, 0x01, 0x02];
    let (mut link, written) = key([vec![init(0x05)], reports(CID, cmd::CBOR, &answer)].concat());
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), answer);
    let written = written.lock().unwrap();
    assert_eq!(written.len(), 2, "INIT, then one CBOR packet");
    assert_eq!(
        &written[0][..7],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x86, 0x00, 0x08]
    );
    let mut want = [0u8; 64];
    want[..8].copy_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x90, 0x00, 0x01, 0x04]);
    assert_eq!(written[1], want);
}

#[test]
fn requests_and_answers_of_every_size_up_to_the_maximum() {
    // (message length, packets it takes): empty, one full packet, one byte over, many, the
    // maximum. PING sends it and the fake key echoes it back, through the same sizes.
    for (len, n_packets) in [(0, 1), (57, 1), (58, 2), (300, 6), (7609, 129)] {
        let answer: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        let (mut link, written) =
            key([vec![init(0x04)], reports(CID, cmd::PING, &answer)].concat());
        let got = with_ctx(Duration::from_secs(5), &CancelToken::new(), |ctx| {
            link.ping(&answer, ctx)
        })
        .0
        .unwrap();
        assert_eq!(got, answer, "len {len}");
        let w = written.lock().unwrap();
        assert_eq!(w.len(), 1 + n_packets, "len {len}");
        if len == 7609 {
            assert_eq!(w.last().unwrap()[4], 127, "the last sequence number");
        }
        drop(w);
        assert_eq!(sent(&written)[1], (CID, cmd::PING, answer.clone()));
    }
}

#[test]
fn a_request_over_the_maximum_is_refused_before_anything_is_sent() {
    let (mut link, written) = key(vec![init(0x04)]);
    let r = cbor(&mut link, &vec![0u8; 7610]);
    assert!(
        matches!(&r, Err(Error::Device(m)) if m.contains("7609")),
        "{r:?}"
    );
    assert!(written.lock().unwrap().is_empty());
}

#[test]
fn an_answer_announced_over_the_maximum_is_a_device_error() {
    let mut big = frame(CID, cmd::CBOR, &[0])[0];
    big[5..7].copy_from_slice(&7610u16.to_be_bytes());
    let (mut link, _) = key(vec![init(0x04), Read::Report(big)]);
    let r = cbor(&mut link, &[0x04]);
    assert!(
        matches!(&r, Err(Error::Device(m)) if m.contains("7610")),
        "{r:?}"
    );
}

#[test]
fn a_continuation_out_of_sequence_is_a_device_error_and_the_channel_is_dropped() {
    let mut answer = frame(CID, cmd::CBOR, &[0u8; 100]);
    answer[1][4] = 1; // sequence 1 where 0 is due
    let script = [
        vec![init(0x04), Read::Report(answer[0]), Read::Report(answer[1])],
        vec![init(0x04)],
        reports(CID, cmd::CBOR, &[0x00]),
    ]
    .concat();
    let (mut link, written) = key(script);
    let r = cbor(&mut link, &[0x04]);
    assert!(
        matches!(&r, Err(Error::Device(m)) if m.contains("sequence") || m.contains("due")),
        "{r:?}"
    );
    // The next request asks for a channel again.
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00]);
    let inits = sent(&written).iter().filter(|m| m.1 == cmd::INIT).count();
    assert_eq!(inits, 2);
}

#[test]
fn reports_of_other_channels_and_stale_pieces_are_skipped() {
    let answer: Vec<u8> = (0..150u8).collect();
    let mine = frame(CID, cmd::CBOR, &answer);
    let theirs = frame(OTHER_CID, cmd::CBOR, &[0x00; 100]);
    let mut stale = frame(CID, cmd::CBOR, &[0x11; 100])[1];
    stale[4] = 5; // the tail of some earlier message
    let script = vec![
        init(0x04),
        Read::Report(stale),
        Read::Report(theirs[0]),
        Read::Report(mine[0]),
        Read::Report(theirs[1]),
        Read::Report(mine[1]),
        Read::Report(mine[2]),
    ];
    let (mut link, _) = key(script);
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), answer);
}

#[test]
fn an_init_answer_with_another_nonce_is_skipped() {
    let script = [
        vec![
            Read::Init {
                cid: OTHER_CID,
                flags: 0x04,
                right_nonce: false,
            },
            init(0x04),
        ],
        reports(CID, cmd::CBOR, &[0x00]),
    ]
    .concat();
    let (mut link, written) = key(script);
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00]);
    // The request went to the channel of the answer with our nonce.
    assert_eq!(sent(&written)[1].0, CID);
}

#[test]
fn keepalives_reach_the_caller_in_order() {
    let script = [
        vec![
            init(0x04),
            keepalive(1),
            keepalive(2),
            keepalive(2),
            keepalive(9),
        ],
        reports(CID, cmd::CBOR, &[0x00]),
    ]
    .concat();
    let (mut link, _) = key(script);
    let (r, seen) = with_ctx(Duration::from_secs(5), &CancelToken::new(), |ctx| {
        link.cbor(&[0x02], ctx)
    });
    assert_eq!(r.unwrap(), [0x00]);
    assert_eq!(
        seen,
        [
            Keepalive::Processing,
            Keepalive::UpNeeded,
            Keepalive::UpNeeded
        ]
    );
}

#[test]
fn a_cancel_sends_ctaphid_cancel_and_the_answer_is_discarded() {
    let script = [
        vec![init(0x04), keepalive(2), Read::UntilWritten(cmd::CANCEL)],
        reports(CID, cmd::CBOR, &[0x2D]), // CTAP2_ERR_KEEPALIVE_CANCEL
        reports(CID, cmd::CBOR, &[0x00, 0xA0]),
    ]
    .concat();
    let (mut link, written) = key(script);
    let cancel = CancelToken::new();
    let mut on_keepalive = |_| cancel.cancel();
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + Duration::from_secs(5),
        keepalive: &mut on_keepalive,
    };
    let r = link.cbor(&[0x02], &mut ctx);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    let msgs = sent(&written);
    assert_eq!(msgs.last().unwrap(), &(CID, cmd::CANCEL, vec![]));
    // The channel stays: the key answered the cancel.
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00, 0xA0]);
    assert_eq!(
        sent(&written).iter().filter(|m| m.1 == cmd::INIT).count(),
        1
    );
}

#[test]
fn a_key_that_ignores_cancel_still_ends_the_call_at_once() {
    let (mut link, written) = key(vec![init(0x04), keepalive(2), Read::Silent(1_000_000)]);
    let cancel = CancelToken::new();
    let mut on_keepalive = |_| cancel.cancel();
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + Duration::from_secs(5),
        keepalive: &mut on_keepalive,
    };
    let at = Instant::now();
    let r = link.cbor(&[0x02], &mut ctx);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // Within the ~200 ms grace for the key's answer, not at the 5 s deadline.
    assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
    assert_eq!(sent(&written).last().unwrap().1, cmd::CANCEL);
}

#[test]
fn after_an_unanswered_cancel_the_next_request_opens_a_new_channel() {
    let script = [
        vec![init(0x04), keepalive(2), Read::Silent(200)], // ~400 ms: past the grace
        vec![Read::Init {
            cid: OTHER_CID,
            flags: 0x04,
            right_nonce: true,
        }],
        // The first request's late answer, on the old channel, then the new request's answer.
        reports(CID, cmd::CBOR, &[0x2D]),
        reports(OTHER_CID, cmd::CBOR, &[0x00, 0x01]),
    ]
    .concat();
    let (mut link, written) = key(script);
    let cancel = CancelToken::new();
    let mut on_keepalive = |_| cancel.cancel();
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + Duration::from_secs(5),
        keepalive: &mut on_keepalive,
    };
    assert!(matches!(
        link.cbor(&[0x02], &mut ctx),
        Err(Error::Cancelled)
    ));
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00, 0x01]);
    let msgs = sent(&written);
    assert_eq!(msgs.iter().filter(|m| m.1 == cmd::INIT).count(), 2);
    assert_eq!(msgs.last().unwrap().0, OTHER_CID);
}

#[test]
fn the_deadline_sends_cancel_then_times_out() {
    let (mut link, written) = key(vec![init(0x04), keepalive(2), Read::Silent(1_000_000)]);
    let (r, _) = with_ctx(Duration::from_millis(150), &CancelToken::new(), |ctx| {
        link.cbor(&[0x02], ctx)
    });
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert_eq!(sent(&written).last().unwrap().1, cmd::CANCEL);
}

#[test]
fn a_busy_key_is_retried_with_a_growing_pause_then_busy() {
    let script = [
        vec![init(0x04), error(0x06), error(0x06)],
        reports(CID, cmd::CBOR, &[0x00]),
    ]
    .concat();
    let (mut link, written) = key(script);
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00]);
    let cbor_sent = sent(&written).iter().filter(|m| m.1 == cmd::CBOR).count();
    assert_eq!(cbor_sent, 3, "sent again after each ERR_CHANNEL_BUSY");

    let busy_forever: Vec<Read> = std::iter::once(init(0x04))
        .chain((0..100).map(|_| error(0x06)))
        .collect();
    let (mut link, written) = key(busy_forever);
    let at = Instant::now();
    let r = cbor(&mut link, &[0x04]);
    assert!(matches!(r, Err(Error::Busy(_))), "{r:?}");
    let took = at.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // 10, 20, 40, ... ms: a handful of tries, not a hundred.
    let tries = sent(&written).iter().filter(|m| m.1 == cmd::CBOR).count();
    assert!((5..=10).contains(&tries), "{tries}");
}

#[test]
fn an_invalid_channel_is_opened_again_once() {
    let script = [
        vec![init(0x04), error(0x0B), init(0x04)],
        reports(CID, cmd::CBOR, &[0x00]),
    ]
    .concat();
    let (mut link, written) = key(script);
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00]);
    assert_eq!(
        sent(&written).iter().filter(|m| m.1 == cmd::INIT).count(),
        2
    );

    let (mut link, _) = key(vec![init(0x04), error(0x0B), init(0x04), error(0x0B)]);
    let r = cbor(&mut link, &[0x04]);
    assert!(
        matches!(&r, Err(Error::Device(m)) if m.contains("ERR_INVALID_CHANNEL")),
        "{r:?}"
    );
}

#[test]
fn other_ctaphid_errors_are_device_errors_by_name() {
    for (code, name) in [
        (0x01, "ERR_INVALID_CMD"),
        (0x04, "ERR_INVALID_SEQ"),
        (0x7F, "ERR_OTHER"),
        (0x55, "0x55"),
    ] {
        let (mut link, _) = key(vec![init(0x04), error(code)]);
        let r = cbor(&mut link, &[0x04]);
        assert!(
            matches!(&r, Err(Error::Device(m)) if m.contains(name)),
            "{code:#x}: {r:?}"
        );
    }
}

#[test]
fn a_vanished_device_is_removed() {
    let (mut link, _) = key(vec![init(0x04), keepalive(1), Read::Gone]);
    assert!(matches!(
        cbor(&mut link, &[0x04]),
        Err(Error::DeviceRemoved)
    ));
    assert!(matches!(
        cbor(&mut link, &[0x04]),
        Err(Error::DeviceRemoved)
    ));
}

#[test]
fn capabilities_come_from_the_init_answer() {
    // (flags, cbor, msg, wink): CTAP2 and U2F with wink; CTAP2 only (NMSG); U2F only.
    for (flags, want) in [
        (0x05, (true, true, true)),
        (0x0C, (true, false, false)),
        (0x00, (false, true, false)),
    ] {
        let (link, _) = key(vec![init(flags)]);
        let c = link.capabilities();
        assert_eq!((c.cbor, c.msg, c.wink), want, "flags {flags:#x}");
        assert_eq!(c.max_msg_size, 7609);
    }
}

#[test]
fn the_init_answer_is_asked_once_and_reused() {
    let (mut link, written) = key([vec![init(0x0C)], reports(CID, cmd::CBOR, &[0x00])].concat());
    assert!(link.capabilities().cbor);
    assert_eq!(cbor(&mut link, &[0x04]).unwrap(), [0x00]);
    assert!(!link.capabilities().msg);
    assert_eq!(
        sent(&written).iter().filter(|m| m.1 == cmd::INIT).count(),
        1
    );
}

#[test]
fn msg_and_ping_answers_are_checked() {
    let (mut link, _) = key([vec![init(0x04)], reports(CID, cmd::MSG, &[0x90])].concat());
    let r = with_ctx(Duration::from_secs(5), &CancelToken::new(), |ctx| {
        link.msg(&[0, 1, 3, 0, 0, 0, 0], ctx)
    })
    .0;
    assert!(matches!(r, Err(Error::Device(_))), "{r:?}");
    let (mut link, _) = key([vec![init(0x04)], reports(CID, cmd::PING, b"pong")].concat());
    let r = with_ctx(Duration::from_secs(5), &CancelToken::new(), |ctx| {
        link.ping(b"ping", ctx)
    })
    .0;
    assert!(matches!(r, Err(Error::Device(_))), "{r:?}");
}

#[test]
fn framing_rejects_a_new_message_before_the_last_one_ends() {
    let mut asm = Reassembly::new(CID);
    let long = frame(CID, cmd::CBOR, &[0u8; 100]);
    assert_eq!(asm.feed(&long[0]).unwrap(), Step::More);
    assert!(asm.feed(&frame(CID, cmd::CBOR, &[0])[0]).is_err());
}

/// xorshift64: a fixed, dependency-free stream of test bytes.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Thousands of damaged answers (bytes flipped, reports dropped or repeated) never panic the
/// session, and every call ends: the ordinary run's share of what the `ctaphid_reassembly` fuzz
/// target does.
#[test]
fn damaged_answers_never_panic() {
    let long: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let base: Vec<Report> = [
        frame(CID, cmd::KEEPALIVE, &[0x02]),
        frame(CID, cmd::CBOR, &long),
        // Not ERR_CHANNEL_BUSY: its back-off would sleep through each run's deadline.
        frame(CID, cmd::ERROR, &[0x0B]),
        frame(OTHER_CID, cmd::CBOR, &long),
        frame(CID, cmd::PING, &long),
    ]
    .concat();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..1500 {
        let mut reports = base.clone();
        for _ in 0..(next_random(&mut state) % 6) {
            let r = (next_random(&mut state) as usize) % reports.len();
            match next_random(&mut state) % 3 {
                0 => {
                    let at = (next_random(&mut state) as usize) % HID_REPORT_LEN;
                    reports[r][at] ^= next_random(&mut state) as u8 | 1;
                }
                1 => {
                    reports.remove(r);
                }
                _ => {
                    let copy = reports[r];
                    reports.insert(r, copy);
                }
            }
            if reports.is_empty() {
                break;
            }
        }
        let script: Vec<Read> = std::iter::once(init(0x05))
            .chain(reports.into_iter().map(Read::Report))
            .chain(std::iter::once(Read::Gone))
            .collect();
        let (mut link, _) = key(script);
        let (_, _) = with_ctx(Duration::from_millis(30), &CancelToken::new(), |ctx| {
            let _ = link.cbor(&long, ctx);
            let _ = link.ping(&long, ctx);
        });
    }
}

//! Tests of `ctaphid.rs`: the CTAPHID rules of CTAP 2.1 §11.2, one by one, on the router alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ctaphid::*;
use super::presence::{Activity, Outcome, Request, ResponseFault};

const NONCE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn init_packet(cid: u32, command: u8, bcnt: usize, data: &[u8]) -> Report {
    let mut r = [0u8; REPORT_LEN];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = command;
    r[5..7].copy_from_slice(&u16::try_from(bcnt).unwrap().to_be_bytes());
    r[7..7 + data.len()].copy_from_slice(data);
    r
}

fn cont_packet(cid: u32, seq: u8, data: &[u8]) -> Report {
    let mut r = [0u8; REPORT_LEN];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = seq;
    r[5..5 + data.len()].copy_from_slice(data);
    r
}

/// A client's framing of a whole message (§11.2.4).
fn packets(cid: u32, command: u8, data: &[u8]) -> Vec<Report> {
    let mut out = vec![init_packet(
        cid,
        command,
        data.len(),
        &data[..data.len().min(INIT_DATA)],
    )];
    for (seq, chunk) in data[data.len().min(INIT_DATA)..]
        .chunks(CONT_DATA)
        .enumerate()
    {
        out.push(cont_packet(cid, u8::try_from(seq).unwrap(), chunk));
    }
    out
}

fn sent(actions: Vec<Action>) -> Vec<(ConnId, Report)> {
    actions
        .into_iter()
        .map(|a| match a {
            Action::Send(c, r) => (c, r),
            Action::Run { .. } => panic!("unexpected Run"),
        })
        .collect()
}

fn run_action(actions: Vec<Action>) -> (u64, Request, Activity) {
    let mut runs = actions.into_iter().filter_map(|a| match a {
        Action::Run {
            job,
            request,
            activity,
        } => Some((job, request, activity)),
        Action::Send(..) => None,
    });
    let run = runs.next().expect("a Run action");
    assert!(runs.next().is_none());
    run
}

/// Reassembles one message from reports: (cid, cmd, data).
fn message(reports: &[(ConnId, Report)]) -> (u32, u8, Vec<u8>) {
    let (_, first) = reports.first().expect("a report");
    let cid = u32::from_be_bytes(first[..4].try_into().unwrap());
    let total = usize::from(u16::from_be_bytes([first[5], first[6]]));
    let mut data = first[7..7 + total.min(INIT_DATA)].to_vec();
    for (seq, (_, r)) in reports[1..].iter().enumerate() {
        assert_eq!(u32::from_be_bytes(r[..4].try_into().unwrap()), cid);
        assert_eq!(usize::from(r[4]), seq);
        let take = (total - data.len()).min(CONT_DATA);
        data.extend_from_slice(&r[5..5 + take]);
    }
    assert_eq!(data.len(), total, "incomplete message");
    (cid, first[4], data)
}

fn error_code(reports: &[(ConnId, Report)]) -> u8 {
    let (_, cmd, data) = message(reports);
    assert_eq!(cmd, cmd::ERROR);
    assert_eq!(data.len(), 1);
    data[0]
}

fn allocate(router: &mut Router, conn: ConnId) -> u32 {
    let out = sent(router.report(
        conn,
        &init_packet(BROADCAST_CID, cmd::INIT, 8, &NONCE),
        Instant::now(),
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, conn);
    let (cid, command, data) = message(&out);
    assert_eq!((cid, command), (BROADCAST_CID, cmd::INIT));
    assert_eq!(data.len(), 17);
    assert_eq!(&data[..8], &NONCE);
    u32::from_be_bytes(data[8..12].try_into().unwrap())
}

#[test]
fn init_allocates_distinct_channels_and_reports_capabilities() {
    let mut router = Router::new(true, None);
    let out = sent(router.report(
        7,
        &init_packet(BROADCAST_CID, cmd::INIT, 8, &NONCE),
        Instant::now(),
    ));
    let (_, _, data) = message(&out);
    assert_eq!(data[12], 2, "CTAPHID protocol version");
    assert_eq!(data[16], CAPABILITY_WINK | CAPABILITY_CBOR);
    let a = u32::from_be_bytes(data[8..12].try_into().unwrap());
    let b = allocate(&mut router, 8);
    assert_ne!(a, b);
    for cid in [a, b] {
        assert_ne!(cid, 0);
        assert_ne!(cid, BROADCAST_CID);
    }
    let u2f = Router::new(false, None);
    assert_eq!(
        u2f.capabilities(),
        CAPABILITY_WINK,
        "U2F-only: no CBOR, and never NMSG"
    );
}

#[test]
fn init_resynchronises_an_allocated_channel() {
    let mut router = Router::new(true, None);
    let cid = allocate(&mut router, 1);
    let now = Instant::now();
    // Half a PING, then INIT on the same channel: the PING is dropped, the channel kept.
    assert!(router
        .report(1, &init_packet(cid, cmd::PING, 100, &[0xAA; 57]), now)
        .is_empty());
    let out = sent(router.report(1, &init_packet(cid, cmd::INIT, 8, &NONCE), now));
    let (reply_cid, command, data) = message(&out);
    assert_eq!((reply_cid, command), (cid, cmd::INIT));
    assert_eq!(u32::from_be_bytes(data[8..12].try_into().unwrap()), cid);
    // The continuation of the dropped PING is spurious: ignored.
    assert!(router
        .report(1, &cont_packet(cid, 0, &[0xAA; 43]), now)
        .is_empty());
}

#[test]
fn bad_init_length_and_bad_channels_are_errors() {
    let mut router = Router::new(true, None);
    let now = Instant::now();
    let out = sent(router.report(
        1,
        &init_packet(BROADCAST_CID, cmd::INIT, 7, &NONCE[..7]),
        now,
    ));
    assert_eq!(error_code(&out), err::INVALID_LEN);
    for cid in [0, 0x1234_5678, BROADCAST_CID] {
        let out = sent(router.report(1, &init_packet(cid, cmd::PING, 1, &[0]), now));
        assert_eq!(error_code(&out), err::INVALID_CHANNEL, "cid {cid:#x}");
    }
    // INIT on a channel nobody allocated.
    let out = sent(router.report(1, &init_packet(0x42, cmd::INIT, 8, &NONCE), now));
    assert_eq!(error_code(&out), err::INVALID_CHANNEL);
}

#[test]
fn ping_echoes_one_packet_many_packets_and_the_maximum() {
    let mut router = Router::new(true, None);
    let cid = allocate(&mut router, 1);
    for len in [0, 1, INIT_DATA, INIT_DATA + 1, 1000, MAX_MESSAGE] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        for p in packets(cid, cmd::PING, &data) {
            out.extend(sent(router.report(1, &p, Instant::now())));
        }
        let (reply_cid, command, echoed) = message(&out);
        assert_eq!((reply_cid, command), (cid, cmd::PING));
        assert_eq!(echoed, data, "len {len}");
    }
    let out = sent(router.report(
        1,
        &init_packet(cid, cmd::PING, MAX_MESSAGE + 1, &[0; INIT_DATA]),
        Instant::now(),
    ));
    assert_eq!(error_code(&out), err::INVALID_LEN, "7610 bytes");
}

#[test]
fn cbor_and_msg_are_limited_to_max_msg_size() {
    let mut router = Router::new(true, None);
    let cid = allocate(&mut router, 1);
    for command in [cmd::CBOR, cmd::MSG] {
        let out = sent(router.report(
            1,
            &init_packet(cid, command, MAX_MSG_SIZE + 1, &[0x04; INIT_DATA]),
            Instant::now(),
        ));
        assert_eq!(error_code(&out), err::INVALID_LEN);
    }
    let out = sent(router.report(1, &init_packet(cid, cmd::CBOR, 0, &[]), Instant::now()));
    assert_eq!(
        error_code(&out),
        err::INVALID_LEN,
        "CBOR without a command byte"
    );
}

#[test]
fn wrong_sequence_is_invalid_seq() {
    let mut router = Router::new(true, None);
    let cid = allocate(&mut router, 1);
    let now = Instant::now();
    assert!(router
        .report(1, &init_packet(cid, cmd::PING, 200, &[1; 57]), now)
        .is_empty());
    assert!(router
        .report(1, &cont_packet(cid, 0, &[1; 59]), now)
        .is_empty());
    let out = sent(router.report(1, &cont_packet(cid, 2, &[1; 59]), now));
    assert_eq!(error_code(&out), err::INVALID_SEQ);
    // The message is gone: its next packet is spurious.
    assert!(router
        .report(1, &cont_packet(cid, 1, &[1; 59]), now)
        .is_empty());
}

#[test]
fn a_new_message_in_the_middle_of_one_is_refused() {
    let mut router = Router::new(true, None);
    let a = allocate(&mut router, 1);
    let b = allocate(&mut router, 2);
    let now = Instant::now();
    assert!(router
        .report(1, &init_packet(a, cmd::PING, 100, &[1; 57]), now)
        .is_empty());
    // Another channel: busy. The message on `a` goes on.
    let out = sent(router.report(2, &init_packet(b, cmd::PING, 1, &[2]), now));
    assert_eq!(out[0].0, 2);
    assert_eq!(error_code(&out), err::CHANNEL_BUSY);
    let out = sent(router.report(1, &cont_packet(a, 0, &[1; 43]), now));
    assert_eq!(message(&out).2, vec![1; 100]);
    // The same channel: the unfinished message is abandoned.
    assert!(router
        .report(1, &init_packet(a, cmd::PING, 100, &[1; 57]), now)
        .is_empty());
    let out = sent(router.report(1, &init_packet(a, cmd::PING, 1, &[3]), now));
    assert_eq!(error_code(&out), err::INVALID_SEQ);
}

#[test]
fn a_stalled_message_times_out() {
    let mut router = Router::new(true, None);
    let cid = allocate(&mut router, 1);
    let start = Instant::now();
    assert!(router
        .report(1, &init_packet(cid, cmd::PING, 100, &[1; 57]), start)
        .is_empty());
    assert_eq!(router.next_deadline(), Some(start + MSG_TIMEOUT));
    assert!(router.tick(start + MSG_TIMEOUT / 2).is_empty());
    let out = sent(router.tick(start + MSG_TIMEOUT));
    assert_eq!(error_code(&out), err::MSG_TIMEOUT);
    assert_eq!(router.next_deadline(), None);
}

#[test]
fn cbor_runs_on_the_key_while_other_channels_are_busy() {
    let mut router = Router::new(true, None);
    let a = allocate(&mut router, 1);
    let b = allocate(&mut router, 2);
    let start = Instant::now();
    let (job, request, activity) =
        run_action(router.report(1, &init_packet(a, cmd::CBOR, 1, &[0x04]), start));
    assert!(matches!(&request, Request::Cbor(b) if b.as_slice() == [0x04]));
    assert!(router.is_busy());
    for (conn, cid) in [(2, b), (1, a)] {
        let out = sent(router.report(conn, &init_packet(cid, cmd::PING, 1, &[9]), start));
        assert_eq!(error_code(&out), err::CHANNEL_BUSY);
    }
    // KEEPALIVE every 100 ms: PROCESSING, then UPNEEDED while the key waits for a touch.
    assert!(router.tick(start).is_empty());
    let out = sent(router.tick(start + KEEPALIVE_INTERVAL));
    assert_eq!(
        message(&out),
        (a, cmd::KEEPALIVE, vec![KEEPALIVE_PROCESSING])
    );
    activity.up_needed.store(true, Ordering::Relaxed);
    assert!(router
        .tick(start + KEEPALIVE_INTERVAL + Duration::from_millis(50))
        .is_empty());
    let out = sent(router.tick(start + 2 * KEEPALIVE_INTERVAL));
    assert_eq!(message(&out), (a, cmd::KEEPALIVE, vec![KEEPALIVE_UPNEEDED]));
    // CANCEL: no answer of its own; the key sees the flag.
    assert!(router
        .report(1, &init_packet(a, cmd::CANCEL, 0, &[]), start)
        .is_empty());
    assert!(activity.cancel.load(Ordering::Relaxed));
    // The key answers (here: KEEPALIVE_CANCEL), on the command's channel and connection.
    let out = sent(router.done(job, Outcome::Reply(vec![0x2D])));
    assert_eq!(out[0].0, 1);
    assert_eq!(message(&out), (a, cmd::CBOR, vec![0x2D]));
    assert!(!router.is_busy());
    // An unknown job's answer is dropped.
    assert!(router.done(job, Outcome::Reply(vec![0])).is_empty());
}

#[test]
fn cancel_on_another_channel_does_not_cancel() {
    let mut router = Router::new(true, None);
    let a = allocate(&mut router, 1);
    let b = allocate(&mut router, 1);
    let (_, _, activity) =
        run_action(router.report(1, &init_packet(a, cmd::CBOR, 1, &[0x0B]), Instant::now()));
    assert!(router
        .report(1, &init_packet(b, cmd::CANCEL, 0, &[]), Instant::now())
        .is_empty());
    assert!(!activity.cancel.load(Ordering::Relaxed));
}

#[test]
fn a_closed_connection_cancels_its_command_and_loses_its_channels() {
    let mut router = Router::new(true, None);
    let a = allocate(&mut router, 1);
    let (job, _, activity) =
        run_action(router.report(1, &init_packet(a, cmd::CBOR, 1, &[0x0B]), Instant::now()));
    router.closed(1);
    assert!(activity.cancel.load(Ordering::Relaxed));
    assert!(
        router.tick(Instant::now() + KEEPALIVE_INTERVAL).is_empty(),
        "no keepalive to nobody"
    );
    assert!(router.done(job, Outcome::Reply(vec![0x2D])).is_empty());
    let out = sent(router.report(2, &init_packet(a, cmd::PING, 1, &[0]), Instant::now()));
    assert_eq!(error_code(&out), err::INVALID_CHANNEL);
}

#[test]
fn wink_lock_and_unknown_commands() {
    let mut router = Router::new(true, None);
    let cid = allocate(&mut router, 1);
    let now = Instant::now();
    let out = sent(router.report(1, &init_packet(cid, cmd::WINK, 0, &[]), now));
    assert_eq!(message(&out), (cid, cmd::WINK, vec![]));
    for command in [0x85, 0xC0] {
        let out = sent(router.report(1, &init_packet(cid, command, 1, &[1]), now));
        assert_eq!(error_code(&out), err::INVALID_CMD, "command {command:#x}");
    }
    let mut u2f = Router::new(false, None);
    let cid = allocate(&mut u2f, 1);
    let out = sent(u2f.report(1, &init_packet(cid, cmd::CBOR, 1, &[0x04]), now));
    assert_eq!(
        error_code(&out),
        err::INVALID_CMD,
        "no CBOR on a U2F-only key"
    );
    let (_, request, _) =
        run_action(u2f.report(1, &packets(cid, cmd::MSG, &[0, 3, 0, 0, 0, 0, 0])[0], now));
    assert!(matches!(request, Request::U2f(_)));
}

#[test]
fn framing_faults_apply_to_signing_answers_only() {
    let answer = vec![0x00; 100];
    // Truncated: the init packet promises one continuation packet more than follows.
    let mut router = Router::new(true, Some(ResponseFault::Truncated));
    let cid = allocate(&mut router, 1);
    let (job, _, _) =
        run_action(router.report(1, &init_packet(cid, cmd::CBOR, 1, &[0x04]), Instant::now()));
    let out = sent(router.done(job, Outcome::Reply(answer.clone())));
    assert_eq!(message(&out).2, answer, "getInfo is framed faithfully");
    let (job, request, _) = run_action(router.report(
        1,
        &init_packet(cid, cmd::CBOR, 2, &[0x02, 0xA0]),
        Instant::now(),
    ));
    assert!(request.is_sign());
    let out = sent(router.done(job, Outcome::Reply(answer.clone())));
    let announced = usize::from(u16::from_be_bytes([out[0].1[5], out[0].1[6]]));
    assert_eq!(announced, answer.len() + CONT_DATA);
    assert_eq!(out.len(), 2, "only the packets of the real 100 bytes");
    // Oversized: 7610 bytes announced, every packet a message could have sent.
    let mut router = Router::new(true, Some(ResponseFault::Oversized));
    let cid = allocate(&mut router, 1);
    let (job, _, _) = run_action(router.report(
        1,
        &init_packet(cid, cmd::CBOR, 2, &[0x02, 0xA0]),
        Instant::now(),
    ));
    let out = sent(router.done(job, Outcome::Reply(answer)));
    let announced = usize::from(u16::from_be_bytes([out[0].1[5], out[0].1[6]]));
    assert_eq!(announced, MAX_MESSAGE + 1);
    assert_eq!(out.len(), 129);
    assert_eq!(out[128].1[4], 127);
}

#[test]
fn frame_cuts_at_the_maximum() {
    assert_eq!(frame(1, cmd::PING, &[0; MAX_MESSAGE]).len(), 129);
    assert_eq!(frame(1, cmd::PING, &[0; MAX_MESSAGE + 10]).len(), 129);
    assert_eq!(frame(1, cmd::PING, &[]).len(), 1);
}

#[test]
fn lock_keeps_other_channels_out_until_released_or_expired() {
    let mut router = Router::new(true, None);
    let a = allocate(&mut router, 1);
    let b = allocate(&mut router, 2);
    let start = Instant::now();
    let out = sent(router.report(1, &init_packet(a, cmd::LOCK, 1, &[2]), start));
    assert_eq!(message(&out), (a, cmd::LOCK, vec![]));
    let out = sent(router.report(2, &init_packet(b, cmd::PING, 1, &[1]), start));
    assert_eq!(error_code(&out), err::CHANNEL_BUSY);
    let out = sent(router.report(1, &init_packet(a, cmd::PING, 1, &[1]), start));
    assert_eq!(message(&out), (a, cmd::PING, vec![1]));
    // Expired after 2 s.
    let later = start + Duration::from_secs(2);
    let out = sent(router.report(2, &init_packet(b, cmd::PING, 1, &[1]), later));
    assert_eq!(message(&out), (b, cmd::PING, vec![1]));
    // Released with 0; refused above 10 s and without its byte.
    sent(router.report(1, &init_packet(a, cmd::LOCK, 1, &[10]), later));
    sent(router.report(1, &init_packet(a, cmd::LOCK, 1, &[0]), later));
    let out = sent(router.report(2, &init_packet(b, cmd::PING, 1, &[1]), later));
    assert_eq!(message(&out).1, cmd::PING);
    let out = sent(router.report(1, &init_packet(a, cmd::LOCK, 1, &[11]), later));
    assert_eq!(error_code(&out), err::INVALID_PAR);
    let out = sent(router.report(1, &init_packet(a, cmd::LOCK, 0, &[]), later));
    assert_eq!(error_code(&out), err::INVALID_LEN);
    // The lock goes with its connection.
    sent(router.report(1, &init_packet(a, cmd::LOCK, 1, &[10]), later));
    router.closed(1);
    let out = sent(router.report(2, &init_packet(b, cmd::PING, 1, &[1]), later));
    assert_eq!(message(&out).1, cmd::PING);
}

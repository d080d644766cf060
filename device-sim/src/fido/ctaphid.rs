//! The key's side of CTAPHID (CTAP 2.1 §11.2): 64-byte reports, channels, message reassembly, and
//! framing of answers, keepalives and errors. Strict on purpose: the daemon's CTAPHID client is
//! tested against it, so every rule the spec states is enforced here.
//!
//! [`Router`] is the one CTAPHID state machine of the key, shared by every connection (several opens
//! of one hidraw node share its channels). It does no I/O: it is fed reports, timer ticks and the
//! key's answers, and returns [`Action`]s (reports to send, requests to run on the key), so the same
//! code runs behind the Unix socket ([`super::hid_socket`]) and in the unit tests.
//!
//! Optional commands: WINK (answered, nothing blinks) and LOCK (§11.2.9.2.2: up to 10 s of
//! exclusive use by one channel; others get ERR_CHANNEL_BUSY). CTAP 2.1 has no INIT capability bit
//! for LOCK, so none is set.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::presence::{Activity, Outcome, Request, ResponseFault};

/// One HID report, without a report ID (the Unix socket carries exactly these).
pub type Report = [u8; REPORT_LEN];
/// Which client connection a report came from or goes to.
pub type ConnId = u64;

/// Size of a FIDO HID report (CTAP 2.1 §11.2.4: 64-byte packets on full-speed USB).
pub const REPORT_LEN: usize = 64;
/// The broadcast channel, on which only INIT is allowed (§11.2.3).
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;
/// Data bytes in an initialization packet: 64 − CID(4) − CMD(1) − BCNT(2) (§11.2.4).
pub const INIT_DATA: usize = 57;
/// Data bytes in a continuation packet: 64 − CID(4) − SEQ(1) (§11.2.4).
pub const CONT_DATA: usize = 59;
/// The longest message: one initialization packet and continuation packets with SEQ 0..=127
/// (§11.2.4): 57 + 128 × 59.
pub const MAX_MESSAGE: usize = INIT_DATA + 128 * CONT_DATA;
/// The key's maxMsgSize for CTAP2 and U2F messages (the authenticatorGetInfo value, §6.4).
pub const MAX_MSG_SIZE: usize = 1200;
/// KEEPALIVE interval while a command runs (CTAPHID_KEEPALIVE, §11.2.9.1.7).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// How long the key waits for the next continuation packet before ERR_MSG_TIMEOUT. The spec names
/// the error (§11.2.9.1.6) and leaves the time to the device; 500 ms is what authenticator firmware
/// commonly allows, and far longer than any client needs between two reports.
pub const MSG_TIMEOUT: Duration = Duration::from_millis(500);

/// CTAPHID commands with the initialization-packet bit (0x80) set (§11.2.9).
pub mod cmd {
    pub const PING: u8 = 0x81;
    pub const MSG: u8 = 0x83;
    pub const LOCK: u8 = 0x84;
    pub const INIT: u8 = 0x86;
    pub const WINK: u8 = 0x88;
    pub const CBOR: u8 = 0x90;
    pub const CANCEL: u8 = 0x91;
    pub const KEEPALIVE: u8 = 0xBB;
    pub const ERROR: u8 = 0xBF;
}

/// CTAPHID_ERROR codes (§11.2.9.1.6).
pub mod err {
    pub const INVALID_CMD: u8 = 0x01;
    pub const INVALID_PAR: u8 = 0x02;
    pub const INVALID_LEN: u8 = 0x03;
    pub const INVALID_SEQ: u8 = 0x04;
    pub const MSG_TIMEOUT: u8 = 0x05;
    pub const CHANNEL_BUSY: u8 = 0x06;
    pub const INVALID_CHANNEL: u8 = 0x0B;
}

/// KEEPALIVE status codes (§11.2.9.1.7).
pub const KEEPALIVE_PROCESSING: u8 = 0x01;
pub const KEEPALIVE_UPNEEDED: u8 = 0x02;

/// INIT capability flags (§11.2.9.1.3).
pub const CAPABILITY_WINK: u8 = 0x01;
pub const CAPABILITY_CBOR: u8 = 0x04;
pub const CAPABILITY_NMSG: u8 = 0x08;

/// CTAPHID protocol version in the INIT answer (§11.2.9.1.3).
const PROTOCOL_VERSION: u8 = 2;
/// Device version (major, minor, build) in the INIT answer: the simulator's own.
const DEVICE_VERSION: [u8; 3] = [1, 0, 0];
/// Channels kept before the oldest is forgotten; clients that INIT in a loop must not grow the key.
const MAX_CHANNELS: usize = 1024;
/// The longest CTAPHID_LOCK (§11.2.9.2.2: 0–10 seconds).
const MAX_LOCK_SECONDS: u8 = 10;

/// What the transport must do.
#[derive(Debug)]
pub enum Action {
    /// Write this report to this connection.
    Send(ConnId, Report),
    /// Run this request on the key; report its outcome with [`Router::done`] and `job`.
    Run {
        job: u64,
        request: Request,
        activity: Activity,
    },
}

/// A message being received (§11.2.4).
struct Assembly {
    cid: u32,
    conn: ConnId,
    cmd: u8,
    total: usize,
    data: Zeroizing<Vec<u8>>,
    next_seq: u8,
    deadline: Instant,
}

/// The command running on the key.
struct Busy {
    job: u64,
    cid: u32,
    conn: ConnId,
    cmd: u8,
    sign: bool,
    activity: Activity,
    next_keepalive: Instant,
    /// The answer goes nowhere: the channel was re-INITed or its connection closed.
    discard: bool,
}

/// The key's CTAPHID state machine; see the module docs.
pub struct Router {
    speaks_cbor: bool,
    response_fault: Option<ResponseFault>,
    /// Allocated channels and the connection that allocated each.
    channels: BTreeMap<u32, ConnId>,
    next_cid: u32,
    assembly: Option<Assembly>,
    busy: Option<Busy>,
    next_job: u64,
    /// CTAPHID_LOCK: the channel that has the key to itself, and until when.
    lock: Option<(u32, Instant)>,
}

impl Router {
    /// A router for a key that speaks CTAP2 or not (`--u2f-only`), with a framing fault for the
    /// answers to signing requests.
    pub fn new(speaks_cbor: bool, response_fault: Option<ResponseFault>) -> Router {
        Router {
            speaks_cbor,
            response_fault,
            channels: BTreeMap::new(),
            next_cid: 1,
            assembly: None,
            busy: None,
            next_job: 1,
            lock: None,
        }
    }

    /// The INIT capabilities: WINK always; CBOR unless U2F-only. Never NMSG: every key here speaks
    /// U2F in CTAPHID_MSG.
    pub fn capabilities(&self) -> u8 {
        if self.speaks_cbor {
            CAPABILITY_WINK | CAPABILITY_CBOR
        } else {
            CAPABILITY_WINK
        }
    }

    /// Whether a command is running on the key.
    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// One report from connection `conn`.
    pub fn report(&mut self, conn: ConnId, report: &Report, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        let kind = report[4];
        if kind & 0x80 != 0 {
            self.init_packet(conn, cid, kind, report, now, &mut out);
        } else {
            self.cont_packet(conn, cid, kind, report, now, &mut out);
        }
        out
    }

    /// Connection `conn` closed: its channels go, and a command it was running is cancelled.
    pub fn closed(&mut self, conn: ConnId) {
        self.channels.retain(|_, owner| *owner != conn);
        if self
            .lock
            .is_some_and(|(cid, _)| !self.channels.contains_key(&cid))
        {
            self.lock = None;
        }
        if self.assembly.as_ref().is_some_and(|a| a.conn == conn) {
            self.assembly = None;
        }
        if let Some(busy) = self.busy.as_mut().filter(|b| b.conn == conn) {
            busy.discard = true;
            busy.activity
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The key finished job `job`.
    pub fn done(&mut self, job: u64, outcome: Outcome) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(busy) = self.busy.take_if(|b| b.job == job) else {
            return out;
        };
        let Outcome::Reply(reply) = outcome else {
            return out;
        };
        if busy.discard {
            return out;
        }
        let fault = if busy.sign { self.response_fault } else { None };
        for report in frame_with_fault(busy.cid, busy.cmd, &reply, fault) {
            out.push(Action::Send(busy.conn, report));
        }
        out
    }

    /// Timers: KEEPALIVE every 100 ms while busy, ERR_MSG_TIMEOUT for a stalled message. Call at
    /// least every [`Router::next_deadline`].
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(busy) = self.busy.as_mut().filter(|b| !b.discard) {
            if now >= busy.next_keepalive {
                let status = if busy
                    .activity
                    .up_needed
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    KEEPALIVE_UPNEEDED
                } else {
                    KEEPALIVE_PROCESSING
                };
                send(&mut out, busy.conn, busy.cid, cmd::KEEPALIVE, &[status]);
                busy.next_keepalive = now + KEEPALIVE_INTERVAL;
            }
        }
        if let Some(a) = self.assembly.take_if(|a| now >= a.deadline) {
            out.push(error(a.conn, a.cid, err::MSG_TIMEOUT));
        }
        out
    }

    /// When [`Router::tick`] has something to do next, if anything.
    pub fn next_deadline(&self) -> Option<Instant> {
        let keepalive = self
            .busy
            .as_ref()
            .filter(|b| !b.discard)
            .map(|b| b.next_keepalive);
        let timeout = self.assembly.as_ref().map(|a| a.deadline);
        match (keepalive, timeout) {
            (Some(k), Some(t)) => Some(k.min(t)),
            (k, t) => k.or(t),
        }
    }

    fn init_packet(
        &mut self,
        conn: ConnId,
        cid: u32,
        command: u8,
        report: &Report,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let total = usize::from(u16::from_be_bytes([report[5], report[6]]));
        let first = &report[7..];
        if cid == 0 {
            // CID 0 is reserved (§11.2.3).
            out.push(error(conn, cid, err::INVALID_CHANNEL));
            return;
        }
        if command == cmd::INIT {
            self.init(conn, cid, total, first, out);
            return;
        }
        if cid == BROADCAST_CID || !self.channels.contains_key(&cid) {
            out.push(error(conn, cid, err::INVALID_CHANNEL));
            return;
        }
        if command == cmd::CANCEL {
            // §11.2.9.1.5: no answer; the pending command answers CTAP2_ERR_KEEPALIVE_CANCEL.
            if let Some(busy) = self.busy.as_ref().filter(|b| b.cid == cid) {
                busy.activity
                    .cancel
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        if self.lock.is_some_and(|(_, until)| now >= until) {
            self.lock = None;
        }
        let locked_out = self.lock.is_some_and(|(owner, _)| owner != cid);
        if self.busy.is_some() || locked_out {
            out.push(error(conn, cid, err::CHANNEL_BUSY));
            return;
        }
        if let Some(a) = &self.assembly {
            if a.cid != cid {
                out.push(error(conn, cid, err::CHANNEL_BUSY));
            } else {
                // A new message on a channel whose message is not complete (§11.2.4: packets of a
                // message arrive in order, nothing in between).
                self.assembly = None;
                out.push(error(conn, cid, err::INVALID_SEQ));
            }
            return;
        }
        let limit = match command {
            cmd::CBOR | cmd::MSG => MAX_MSG_SIZE,
            _ => MAX_MESSAGE,
        };
        if total > limit {
            out.push(error(conn, cid, err::INVALID_LEN));
            return;
        }
        let take = total.min(INIT_DATA);
        let mut data = Zeroizing::new(Vec::with_capacity(total));
        data.extend_from_slice(&first[..take]);
        let assembly = Assembly {
            cid,
            conn,
            cmd: command,
            total,
            data,
            next_seq: 0,
            deadline: now + MSG_TIMEOUT,
        };
        if assembly.data.len() == total {
            self.dispatch(assembly, now, out);
        } else {
            self.assembly = Some(assembly);
        }
    }

    fn cont_packet(
        &mut self,
        conn: ConnId,
        cid: u32,
        seq: u8,
        report: &Report,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // A continuation packet of no message being received belongs to nothing (§11.2.4: a
        // message starts with its initialization packet): dropped without an answer, as a
        // message abandoned by INIT or an error leaves its tail behind.
        let Some(a) = self.assembly.as_mut().filter(|a| a.cid == cid) else {
            return;
        };
        if seq != a.next_seq {
            self.assembly = None;
            out.push(error(conn, cid, err::INVALID_SEQ));
            return;
        }
        let take = (a.total - a.data.len()).min(CONT_DATA);
        a.data.extend_from_slice(&report[5..5 + take]);
        a.next_seq += 1;
        a.deadline = now + MSG_TIMEOUT;
        if a.data.len() == a.total {
            if let Some(done) = self.assembly.take() {
                self.dispatch(done, now, out);
            }
        }
    }

    /// CTAPHID_INIT (§11.2.9.1.3): on the broadcast channel, allocate a channel; on an allocated one,
    /// abandon whatever it was doing (resynchronisation) and keep it.
    fn init(&mut self, conn: ConnId, cid: u32, total: usize, first: &[u8], out: &mut Vec<Action>) {
        if total != 8 {
            out.push(error(conn, cid, err::INVALID_LEN));
            return;
        }
        let reply_cid = if cid == BROADCAST_CID {
            self.allocate(conn)
        } else if self.channels.contains_key(&cid) {
            if self.assembly.as_ref().is_some_and(|a| a.cid == cid) {
                self.assembly = None;
            }
            if let Some(busy) = self.busy.as_mut().filter(|b| b.cid == cid) {
                busy.discard = true;
                busy.activity
                    .cancel
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            cid
        } else {
            out.push(error(conn, cid, err::INVALID_CHANNEL));
            return;
        };
        let mut payload = Vec::with_capacity(17);
        payload.extend_from_slice(&first[..8]);
        payload.extend_from_slice(&reply_cid.to_be_bytes());
        payload.push(PROTOCOL_VERSION);
        payload.extend_from_slice(&DEVICE_VERSION);
        payload.push(self.capabilities());
        send(out, conn, cid, cmd::INIT, &payload);
    }

    fn allocate(&mut self, conn: ConnId) -> u32 {
        loop {
            let cid = self.next_cid;
            self.next_cid = match self.next_cid.wrapping_add(1) {
                0 | BROADCAST_CID => 1,
                n => n,
            };
            if self.channels.contains_key(&cid) {
                continue;
            }
            if self.channels.len() >= MAX_CHANNELS {
                self.channels.pop_first();
            }
            self.channels.insert(cid, conn);
            return cid;
        }
    }

    /// A whole message arrived.
    fn dispatch(&mut self, a: Assembly, now: Instant, out: &mut Vec<Action>) {
        let request = match a.cmd {
            cmd::PING => {
                send(out, a.conn, a.cid, cmd::PING, &a.data);
                return;
            }
            cmd::LOCK => {
                match a.data.as_slice() {
                    [seconds] if *seconds <= MAX_LOCK_SECONDS => {
                        self.lock = (*seconds > 0)
                            .then(|| (a.cid, now + Duration::from_secs(u64::from(*seconds))));
                        send(out, a.conn, a.cid, cmd::LOCK, &[]);
                    }
                    [_] => out.push(error(a.conn, a.cid, err::INVALID_PAR)),
                    _ => out.push(error(a.conn, a.cid, err::INVALID_LEN)),
                }
                return;
            }
            cmd::WINK => {
                if a.total != 0 {
                    out.push(error(a.conn, a.cid, err::INVALID_LEN));
                } else {
                    send(out, a.conn, a.cid, cmd::WINK, &[]);
                }
                return;
            }
            cmd::CBOR if self.speaks_cbor => {
                if a.total == 0 {
                    out.push(error(a.conn, a.cid, err::INVALID_LEN));
                    return;
                }
                Request::Cbor(a.data)
            }
            cmd::MSG => Request::U2f(a.data),
            _ => {
                out.push(error(a.conn, a.cid, err::INVALID_CMD));
                return;
            }
        };
        let job = self.next_job;
        self.next_job += 1;
        let activity = Activity::default();
        self.busy = Some(Busy {
            job,
            cid: a.cid,
            conn: a.conn,
            cmd: a.cmd,
            sign: request.is_sign(),
            activity: activity.clone(),
            next_keepalive: now + KEEPALIVE_INTERVAL,
            discard: false,
        });
        out.push(Action::Run {
            job,
            request,
            activity,
        });
    }
}

/// Frames a message and queues its reports for `conn`.
fn send(out: &mut Vec<Action>, conn: ConnId, cid: u32, command: u8, data: &[u8]) {
    out.extend(
        frame(cid, command, data)
            .into_iter()
            .map(|report| Action::Send(conn, report)),
    );
}

/// CTAPHID_ERROR with `code` on `cid`, to `conn`.
fn error(conn: ConnId, cid: u32, code: u8) -> Action {
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&cid.to_be_bytes());
    report[4] = cmd::ERROR;
    report[6] = 1;
    report[7] = code;
    Action::Send(conn, report)
}

/// Splits a message into reports (§11.2.4). The caller keeps `data` within [`MAX_MESSAGE`]; more
/// is cut there (an answer the key cannot frame is a bug, and a short answer beats a panic).
pub fn frame(cid: u32, command: u8, data: &[u8]) -> Vec<Report> {
    let data = &data[..data.len().min(MAX_MESSAGE)];
    frame_announcing(cid, command, data, data.len(), None)
}

/// [`frame`] with a test fault applied.
fn frame_with_fault(
    cid: u32,
    command: u8,
    data: &[u8],
    fault: Option<ResponseFault>,
) -> Vec<Report> {
    let data = &data[..data.len().min(MAX_MESSAGE)];
    match fault {
        None => frame(cid, command, data),
        // One continuation packet more is promised than is sent.
        Some(ResponseFault::Truncated) => frame_announcing(
            cid,
            command,
            data,
            (data.len() + CONT_DATA).min(MAX_MESSAGE),
            None,
        ),
        // One byte more than any CTAPHID message may hold, and every packet it could be sent in.
        Some(ResponseFault::Oversized) => {
            frame_announcing(cid, command, data, MAX_MESSAGE + 1, Some(MAX_MESSAGE))
        }
    }
}

/// Frames `data` behind an initialization packet announcing `announced` bytes; `pad_to` sends
/// zero-filled packets up to that many bytes.
fn frame_announcing(
    cid: u32,
    command: u8,
    data: &[u8],
    announced: usize,
    pad_to: Option<usize>,
) -> Vec<Report> {
    let mut body = data.to_vec();
    if let Some(n) = pad_to {
        body.resize(n.max(body.len()), 0);
    }
    let announced = u16::try_from(announced).unwrap_or(u16::MAX);
    let mut reports = Vec::with_capacity(1 + body.len() / CONT_DATA);
    let mut first = [0u8; REPORT_LEN];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = command;
    first[5..7].copy_from_slice(&announced.to_be_bytes());
    let (head, mut rest) = body.split_at(body.len().min(INIT_DATA));
    first[7..7 + head.len()].copy_from_slice(head);
    reports.push(first);
    let mut seq = 0u8;
    while !rest.is_empty() && seq < 0x80 {
        let (chunk, tail) = rest.split_at(rest.len().min(CONT_DATA));
        let mut report = [0u8; REPORT_LEN];
        report[..4].copy_from_slice(&cid.to_be_bytes());
        report[4] = seq;
        report[5..5 + chunk.len()].copy_from_slice(chunk);
        reports.push(report);
        rest = tail;
        seq += 1;
    }
    reports
}

//! CTAPHID (CTAP 2.1 §11.2): CTAP messages in 64-byte USB HID reports, on a channel of the key's.
//!
//! A [`CtapHid`] asks for its channel with CTAPHID_INIT on the broadcast channel at its first use
//! (and again after the key says ERR_INVALID_CHANNEL), then sends one request at a time and reads
//! until the answer on that channel: keepalives go to the caller, reports of other channels (other
//! applications share the hidraw node and see the same input reports) and stale messages are
//! skipped. The packets themselves are cut and put together in [`framing`].

pub mod framing;

use std::cell::RefCell;
use std::thread;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};

use self::framing::{cmd, packets, Message, Reassembly, Step, BROADCAST_CID};
use crate::cancel::CancelToken;
use crate::fido::link::{CtapLink, Keepalive, LinkCapabilities, LinkContext, MAX_CTAPHID_MESSAGE};
use crate::transport::HidTransport;
use crate::{Error, Result};

/// Longest single wait for a report: how soon a cancel or the deadline is noticed while the key is
/// silent (it sends a keepalive only every 100 ms, §11.2.9.1.7, and waits for a touch for seconds).
const POLL: Duration = Duration::from_millis(50);

/// How long a cancelled (or timed-out) request waits for the key's answer to CTAPHID_CANCEL
/// (usually CTAP2_ERR_KEEPALIVE_CANCEL, §11.2.9.1.5). A key that stays silent has its channel
/// abandoned, so that its late answer cannot be taken for the next request's.
const CANCEL_GRACE: Duration = Duration::from_millis(200);

/// How long [`CtapLink::capabilities`] waits for CTAPHID_INIT when the channel is not open yet: INIT
/// needs no user action, a key answers it at once.
const INIT_WAIT: Duration = Duration::from_secs(2);

/// The first pause after ERR_CHANNEL_BUSY (another application's request is running on the key);
/// it doubles after each further one, [`BUSY_PATIENCE`] in all.
const BUSY_FIRST_PAUSE: Duration = Duration::from_millis(10);

/// How long in all a request waits for a key busy with another channel before [`Error::Busy`].
const BUSY_PATIENCE: Duration = Duration::from_secs(1);

/// Capability flags of the CTAPHID_INIT answer (§11.2.9.1.3).
const CAPABILITY_WINK: u8 = 0x01;
const CAPABILITY_CBOR: u8 = 0x04;
const CAPABILITY_NMSG: u8 = 0x08;

/// CTAPHID_ERROR codes (§11.2.9.1.6) that change what the session does; the others are reported.
const ERR_CHANNEL_BUSY: u8 = 0x06;
const ERR_INVALID_CHANNEL: u8 = 0x0B;

/// KEEPALIVE status codes (§11.2.9.1.7).
const STATUS_PROCESSING: u8 = 0x01;
const STATUS_UPNEEDED: u8 = 0x02;

/// Length of the CTAPHID_INIT answer: nonce (8), CID (4), protocol version, major, minor and build
/// versions, capability flags (§11.2.9.1.3).
const INIT_ANSWER_LEN: usize = 17;

/// A CTAPHID session with one key, over its HID reports.
///
/// [`CtapLink::capabilities`] takes `&self` but needs the INIT answer: the session state sits in a
/// `RefCell`, borrowed there and, through `&mut self`, everywhere else (so it can never be
/// borrowed twice).
pub struct CtapHid {
    session: RefCell<Session>,
}

impl CtapHid {
    /// A session over `hid`. Nothing is sent until the first use.
    pub fn new(hid: Box<dyn HidTransport>) -> CtapHid {
        CtapHid {
            session: RefCell::new(Session { hid, channel: None }),
        }
    }
}

impl CtapLink for CtapHid {
    /// What the INIT answer said (§11.2.9.1.3), opening the channel first if need be. A key that
    /// does not answer INIT here is reported as offering everything: the request that follows opens
    /// the channel again and reports why it cannot (removed, timed out), which says more than "not
    /// supported" would.
    fn capabilities(&self) -> LinkCapabilities {
        let flags = match self.session.try_borrow_mut() {
            Ok(mut session) => session.flags_or_init(),
            Err(_) => None,
        };
        let flags = flags.unwrap_or(CAPABILITY_CBOR | CAPABILITY_WINK);
        LinkCapabilities {
            cbor: flags & CAPABILITY_CBOR != 0,
            msg: flags & CAPABILITY_NMSG == 0,
            wink: flags & CAPABILITY_WINK != 0,
            max_msg_size: MAX_CTAPHID_MESSAGE,
        }
    }

    fn cbor(&mut self, request: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        let answer = self.session.get_mut().transact(cmd::CBOR, request, ctx)?;
        if answer.is_empty() {
            return Err(Error::Device(
                "the key answered CTAPHID_CBOR without a status byte".into(),
            ));
        }
        Ok(answer)
    }

    fn msg(&mut self, apdu: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        let answer = self.session.get_mut().transact(cmd::MSG, apdu, ctx)?;
        if answer.len() < 2 {
            return Err(Error::Device(
                "the key answered CTAPHID_MSG without a status word".into(),
            ));
        }
        Ok(answer)
    }

    fn ping(&mut self, data: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        let answer = self.session.get_mut().transact(cmd::PING, data, ctx)?;
        if answer != data {
            return Err(Error::Device(
                "the key's CTAPHID_PING answer differs from the request".into(),
            ));
        }
        Ok(answer)
    }
}

/// The channel the key allocated to this session.
#[derive(Debug, Clone, Copy)]
struct Channel {
    cid: u32,
    /// Capability flags of the INIT answer.
    flags: u8,
}

struct Session {
    hid: Box<dyn HidTransport>,
    /// `None` until INIT, and again once the channel's state is unknown (a framing error, a cancel
    /// the key did not answer, ERR_INVALID_CHANNEL).
    channel: Option<Channel>,
}

/// How a request ended at the transport level.
enum Outcome {
    Answer(Vec<u8>),
    /// CTAPHID_ERROR with this code.
    Refused(u8),
}

impl Session {
    /// The capability flags, opening the channel with a context of its own if need be.
    fn flags_or_init(&mut self) -> Option<u8> {
        if let Some(ch) = self.channel {
            return Some(ch.flags);
        }
        let cancel = CancelToken::new();
        let mut ignore = |_: Keepalive| {};
        let mut ctx = LinkContext {
            cancel: &cancel,
            deadline: Instant::now() + INIT_WAIT,
            keepalive: &mut ignore,
        };
        match self.open(&mut ctx) {
            Ok(ch) => Some(ch.flags),
            Err(e) => {
                tracing::debug!("CTAPHID_INIT for the capabilities failed: {e}");
                None
            }
        }
    }

    /// One request and its answer: opens the channel if need be, opens it again once after
    /// ERR_INVALID_CHANNEL, and waits out ERR_CHANNEL_BUSY with a growing pause.
    fn transact(
        &mut self,
        command: u8,
        payload: &[u8],
        ctx: &mut LinkContext<'_>,
    ) -> Result<Vec<u8>> {
        // Checked before anything is sent, INIT included.
        if payload.len() > MAX_CTAPHID_MESSAGE {
            return Err(Error::Device(format!(
                "a request of {} bytes is over the CTAPHID maximum of {MAX_CTAPHID_MESSAGE}",
                payload.len()
            )));
        }
        let mut reopened = false;
        let mut pause = BUSY_FIRST_PAUSE;
        let mut busy_for = Duration::ZERO;
        loop {
            let channel = match self.channel {
                Some(ch) => ch,
                None => self.open(ctx)?,
            };
            match self.request(channel.cid, command, payload, ctx, |_| true)? {
                Outcome::Answer(answer) => return Ok(answer),
                Outcome::Refused(ERR_INVALID_CHANNEL) if !reopened => {
                    tracing::debug!("the key forgot its CTAPHID channel; asking for another");
                    self.channel = None;
                    reopened = true;
                }
                Outcome::Refused(ERR_CHANNEL_BUSY) if busy_for < BUSY_PATIENCE => {
                    let wait = pause.min(BUSY_PATIENCE - busy_for);
                    pause_for(wait, ctx)?;
                    busy_for += wait;
                    pause *= 2;
                }
                Outcome::Refused(ERR_CHANNEL_BUSY) => {
                    return Err(Error::Busy(format!(
                        "the security key stayed busy with another application for \
                         {BUSY_PATIENCE:?}; try again"
                    )))
                }
                Outcome::Refused(code) => {
                    if code == ERR_INVALID_CHANNEL {
                        self.channel = None;
                    }
                    return Err(Error::Device(format!(
                        "the key refused {}: {}",
                        command_name(command),
                        error_name(code)
                    )));
                }
            }
        }
    }

    /// CTAPHID_INIT on the broadcast channel with a fresh nonce (§11.2.9.1.3); answers with another
    /// nonce are other applications' and skipped.
    fn open(&mut self, ctx: &mut LinkContext<'_>) -> Result<Channel> {
        let mut nonce = [0u8; 8];
        OsRng.fill_bytes(&mut nonce);
        let mine = |m: &Message| m.payload.get(..8) == Some(&nonce[..]);
        let answer = match self.request(BROADCAST_CID, cmd::INIT, &nonce, ctx, mine)? {
            Outcome::Answer(a) => a,
            Outcome::Refused(code) => {
                return Err(Error::Device(format!(
                    "the key refused CTAPHID_INIT: {}",
                    error_name(code)
                )))
            }
        };
        let (Some(cid), Some(&flags)) = (answer.get(8..12), answer.get(INIT_ANSWER_LEN - 1)) else {
            return Err(Error::Device(format!(
                "CTAPHID_INIT answer of {} bytes, {INIT_ANSWER_LEN} expected",
                answer.len()
            )));
        };
        let cid = u32::from_be_bytes([cid[0], cid[1], cid[2], cid[3]]);
        if cid == BROADCAST_CID || cid == 0 {
            return Err(Error::Device(format!(
                "the key allocated the reserved CTAPHID channel {cid:#010x}"
            )));
        }
        let channel = Channel { cid, flags };
        self.channel = Some(channel);
        Ok(channel)
    }

    /// Sends one message and reads until its answer: the first complete message on `cid` that is
    /// CTAPHID_ERROR, or of `command` and accepted by `accept`. Keepalives go to the context;
    /// anything else is skipped.
    fn request(
        &mut self,
        cid: u32,
        command: u8,
        payload: &[u8],
        ctx: &mut LinkContext<'_>,
        accept: impl Fn(&Message) -> bool,
    ) -> Result<Outcome> {
        for report in packets(cid, command, payload)? {
            if let Err(e) = self.hid.write_report(&report) {
                // Part of a message may have gone out: the channel's state is unknown.
                self.channel = None;
                return Err(e);
            }
        }
        let started = Instant::now();
        let mut reading = Reassembly::new(cid);
        loop {
            if ctx.cancel.is_cancelled() {
                self.abandon(cid, command, &mut reading, &accept);
                return Err(Error::Cancelled);
            }
            let now = Instant::now();
            if now >= ctx.deadline {
                self.abandon(cid, command, &mut reading, &accept);
                return Err(Error::Timeout {
                    what: "the security key did not answer",
                    after: now - started,
                });
            }
            match self.next_message(&mut reading, (ctx.deadline - now).min(POLL))? {
                None => {}
                Some(m) if m.command == cmd::KEEPALIVE => match m.payload.first() {
                    Some(&STATUS_PROCESSING) => (ctx.keepalive)(Keepalive::Processing),
                    Some(&STATUS_UPNEEDED) => (ctx.keepalive)(Keepalive::UpNeeded),
                    // Reserved statuses say nothing the caller could use.
                    _ => {}
                },
                Some(m) if m.command == cmd::ERROR => {
                    return Ok(Outcome::Refused(m.payload.first().copied().unwrap_or(0x7F)))
                }
                Some(m) if m.command == command && accept(&m) => {
                    return Ok(Outcome::Answer(m.payload))
                }
                Some(m) => tracing::debug!(
                    command = m.command,
                    "skipping a stale CTAPHID message (a late answer to an earlier request)"
                ),
            }
        }
    }

    /// Waits at most `wait` for one report and feeds it to `reading`: a message once complete.
    /// Errors: the transport's, and framing errors (which leave the channel's state unknown).
    fn next_message(
        &mut self,
        reading: &mut Reassembly,
        wait: Duration,
    ) -> Result<Option<Message>> {
        let report = match self.hid.read_report(wait) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.channel = None;
                return Err(e);
            }
        };
        match reading.feed(&report) {
            Ok(Step::Done(m)) => Ok(Some(m)),
            Ok(Step::More | Step::Skipped) => Ok(None),
            Err(e) => {
                self.channel = None;
                Err(e)
            }
        }
    }

    /// After a cancel or the deadline: CTAPHID_CANCEL (§11.2.9.1.5), then at most [`CANCEL_GRACE`]
    /// for the answer to the pending request, which is discarded. A key that does not answer in
    /// time loses its channel here, so its late answer lands on a channel nobody reads.
    fn abandon(
        &mut self,
        cid: u32,
        command: u8,
        reading: &mut Reassembly,
        accept: &impl Fn(&Message) -> bool,
    ) {
        // INIT cannot be cancelled, and has no channel to lose.
        if cid == BROADCAST_CID {
            return;
        }
        let answered = packets(cid, cmd::CANCEL, &[])
            .and_then(|p| p.iter().try_for_each(|r| self.hid.write_report(r)))
            .and_then(|()| {
                let until = Instant::now() + CANCEL_GRACE;
                loop {
                    let now = Instant::now();
                    if now >= until {
                        return Ok(false);
                    }
                    if let Some(m) = self.next_message(reading, (until - now).min(POLL))? {
                        if m.command == cmd::ERROR || (m.command == command && accept(&m)) {
                            return Ok(true);
                        }
                    }
                }
            });
        if !matches!(answered, Ok(true)) {
            self.channel = None;
        }
    }
}

/// Sleeps `wait` in slices, giving up early on a cancel or the deadline.
fn pause_for(wait: Duration, ctx: &LinkContext<'_>) -> Result<()> {
    let started = Instant::now();
    let until = started + wait;
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let now = Instant::now();
        if now >= ctx.deadline {
            return Err(Error::Timeout {
                what: "the security key stayed busy",
                after: now - started,
            });
        }
        if now >= until {
            return Ok(());
        }
        thread::sleep((until - now).min(ctx.deadline - now).min(POLL));
    }
}

/// The request's name for messages.
fn command_name(command: u8) -> &'static str {
    match command {
        cmd::CBOR => "CTAPHID_CBOR",
        cmd::MSG => "CTAPHID_MSG",
        cmd::PING => "CTAPHID_PING",
        cmd::INIT => "CTAPHID_INIT",
        _ => "the CTAPHID request",
    }
}

/// The name of a CTAPHID_ERROR code (§11.2.9.1.6).
fn error_name(code: u8) -> String {
    let name = match code {
        0x01 => "ERR_INVALID_CMD",
        0x02 => "ERR_INVALID_PAR",
        0x03 => "ERR_INVALID_LEN",
        0x04 => "ERR_INVALID_SEQ",
        0x05 => "ERR_MSG_TIMEOUT",
        0x06 => "ERR_CHANNEL_BUSY",
        0x0A => "ERR_LOCK_REQUIRED",
        0x0B => "ERR_INVALID_CHANNEL",
        0x7F => "ERR_OTHER",
        _ => return format!("CTAPHID error {code:#04x}"),
    };
    format!("{name} ({code:#04x})")
}

#[cfg(test)]
#[path = "ctaphid_test.rs"]
mod tests;

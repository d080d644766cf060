//! CTAPHID packets (CTAP 2.1 §11.2.4): a message cut into one initialization packet and up to 128
//! continuation packets of one 64-byte report each, and put together again on the way back. Pure
//! byte work, no I/O: the session in [`super`] decides what to send and which messages to wait for.

use crate::fido::link::MAX_CTAPHID_MESSAGE;
use crate::transport::HID_REPORT_LEN;
use crate::{Error, Result};

/// The broadcast channel, on which CTAPHID_INIT asks for a channel of one's own (§11.2.4).
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;

/// Payload bytes in an initialization packet: CID (4), CMD (1), BCNTH, BCNTL, then the data.
pub const INIT_DATA_LEN: usize = HID_REPORT_LEN - 7;

/// Payload bytes in a continuation packet: CID (4), SEQ (1), then the data.
pub const CONT_DATA_LEN: usize = HID_REPORT_LEN - 5;

/// Bit 7 of the fifth byte tells an initialization packet (the command) from a continuation packet
/// (the sequence number 0..=0x7F), §11.2.4.
const INIT_BIT: u8 = 0x80;

/// The commands Tessera sends or expects (§11.2.9), with the initialization bit set as on the wire.
pub mod cmd {
    /// CTAPHID_MSG: a U2F raw message (§11.2.9.1.1).
    pub const MSG: u8 = 0x83;
    /// CTAPHID_CBOR: an authenticator API command (§11.2.9.1.2).
    pub const CBOR: u8 = 0x90;
    /// CTAPHID_INIT: allocate a channel (§11.2.9.1.3).
    pub const INIT: u8 = 0x86;
    /// CTAPHID_PING: echo (§11.2.9.1.4).
    pub const PING: u8 = 0x81;
    /// CTAPHID_CANCEL: cancel the outstanding request on the channel (§11.2.9.1.5).
    pub const CANCEL: u8 = 0x91;
    /// CTAPHID_ERROR: the request failed at the transport level (§11.2.9.1.6).
    pub const ERROR: u8 = 0xBF;
    /// CTAPHID_KEEPALIVE: still working, or waiting for the user (§11.2.9.1.7).
    pub const KEEPALIVE: u8 = 0xBB;
}

/// Splits `payload` into the reports of one message for `command` on channel `cid`.
///
/// Errors: [`Error::Device`] for a payload over [`MAX_CTAPHID_MESSAGE`] bytes (nothing to send: a
/// key would refuse it, or worse, take the 129th packet's sequence number 0x80 for a command).
pub fn packets(cid: u32, command: u8, payload: &[u8]) -> Result<Vec<[u8; HID_REPORT_LEN]>> {
    if payload.len() > MAX_CTAPHID_MESSAGE {
        return Err(Error::Device(format!(
            "a CTAPHID message of {} bytes is over the {MAX_CTAPHID_MESSAGE}-byte maximum",
            payload.len()
        )));
    }
    // Fits: the check above keeps it below 65536.
    let len = u16::try_from(payload.len())
        .map_err(|_| Error::Internal("CTAPHID length over 16 bits".into()))?;
    let cid = cid.to_be_bytes();
    let (first, rest) = payload.split_at(payload.len().min(INIT_DATA_LEN));
    let mut init = [0u8; HID_REPORT_LEN];
    init[..4].copy_from_slice(&cid);
    init[4] = command | INIT_BIT;
    init[5..7].copy_from_slice(&len.to_be_bytes());
    init[7..7 + first.len()].copy_from_slice(first);
    let mut out = vec![init];
    for (seq, piece) in (0u8..).zip(rest.chunks(CONT_DATA_LEN)) {
        let mut cont = [0u8; HID_REPORT_LEN];
        cont[..4].copy_from_slice(&cid);
        cont[4] = seq;
        cont[5..5 + piece.len()].copy_from_slice(piece);
        out.push(cont);
    }
    Ok(out)
}

/// A whole message read from the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The command byte, initialization bit set ([`cmd`]).
    pub command: u8,
    pub payload: Vec<u8>,
}

/// What one report did to the message being read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Not ours: another channel, or a continuation packet of a message whose start we never saw
    /// (the tail of a late answer to a cancelled command). Skipped.
    Skipped,
    /// Part of the message; more packets to come.
    More,
    /// The message is complete.
    Done(Message),
}

/// Puts the reports of one message on one channel together again (§11.2.4).
#[derive(Debug)]
pub struct Reassembly {
    cid: u32,
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    command: u8,
    total: usize,
    payload: Vec<u8>,
    next_seq: u8,
}

impl Reassembly {
    /// Waits for a message on channel `cid`.
    pub fn new(cid: u32) -> Self {
        Reassembly { cid, partial: None }
    }

    /// Takes one report.
    ///
    /// Errors ([`Error::Device`], the message is lost and the channel's state is unknown): a
    /// length over [`MAX_CTAPHID_MESSAGE`], a continuation packet out of sequence, a new
    /// initialization packet before the message it interrupts is complete.
    pub fn feed(&mut self, report: &[u8; HID_REPORT_LEN]) -> Result<Step> {
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        if cid != self.cid {
            return Ok(Step::Skipped);
        }
        let kind = report[4];
        if kind & INIT_BIT != 0 {
            if let Some(p) = &self.partial {
                return Err(Error::Device(format!(
                    "the key started a new CTAPHID message (command {kind:#04x}) before ending \
                     the previous one ({:#04x}, {} of {} bytes)",
                    p.command,
                    p.payload.len(),
                    p.total
                )));
            }
            let total = usize::from(u16::from_be_bytes([report[5], report[6]]));
            if total > MAX_CTAPHID_MESSAGE {
                return Err(Error::Device(format!(
                    "the key announced a CTAPHID message of {total} bytes, over the \
                     {MAX_CTAPHID_MESSAGE}-byte maximum"
                )));
            }
            let first = total.min(INIT_DATA_LEN);
            let mut payload = Vec::with_capacity(total);
            payload.extend_from_slice(&report[7..7 + first]);
            return Ok(self.progress(Partial {
                command: kind,
                total,
                payload,
                next_seq: 0,
            }));
        }
        let Some(mut p) = self.partial.take() else {
            return Ok(Step::Skipped);
        };
        if kind != p.next_seq {
            return Err(Error::Device(format!(
                "CTAPHID continuation packet {kind} where {} was due",
                p.next_seq
            )));
        }
        let take = (p.total - p.payload.len()).min(CONT_DATA_LEN);
        p.payload.extend_from_slice(&report[5..5 + take]);
        p.next_seq += 1;
        Ok(self.progress(p))
    }

    fn progress(&mut self, p: Partial) -> Step {
        if p.payload.len() == p.total {
            Step::Done(Message {
                command: p.command,
                payload: p.payload,
            })
        } else {
            self.partial = Some(p);
            Step::More
        }
    }
}

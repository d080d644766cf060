//! The simulated key as a contactless card (`--vpcd ADDR`): the FIDO applet over ISO/IEC 7816-4
//! APDUs, as an NFC key presents itself through PC/SC (CTAP 2.1 §11.3).
//!
//! - ATR in the PC/SC Part 3 §3.1.3.2.3 contactless form `3B 8n 80 01 <n historical bytes> TCK`.
//! - SELECT of the FIDO AID A0000006472F0001 (exact, §11.3.3) answers "FIDO_2_0" (a U2F-only key:
//!   "U2F_V2") and 9000; any other AID deselects and answers 6A82. Before SELECT, every FIDO command
//!   answers 6985 (ISO/IEC 7816-4 §5.6: conditions of use not satisfied).
//! - NFCCTAP_MSG (CLA 80, INS 10; §11.3.5): P1 00 answers when the key has; P1 80 answers within
//!   100 ms, with 9100 and the keepalive status byte while the key is still working, to be polled
//!   with NFCCTAP_GETRESPONSE (80 11; P1 11 cancels).
//! - U2F APDUs (CLA 00, INS 01/02/03) go to the key as U2F raw messages (§11.3.4, U2F raw message
//!   formats §3), re-encoded in the extended form those formats use.
//! - Command chaining (ISO/IEC 7816-4 §5.1.1, CLA bit 0x10), extended Lc/Le (§5.1), and answers longer
//!   than Le by 61xx and GET RESPONSE (00 C0).
//!
//! The tap is the touch: user presence comes from the same `--touch` source as over HID, and
//! `--touch auto` (the default) makes every tap a touch, as on real NFC keys.

use std::sync::mpsc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::presence::{Activity, KeyHandle, Outcome, Request};
use crate::vpcd::VirtualCard;

/// The FIDO applet's AID (CTAP 2.1 §11.3.3).
pub const FIDO_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];

/// Historical bytes of the ATR: a compact-TLV card service byte and the name, in the manner of
/// real NFC keys' ATS-derived ATRs (ISO/IEC 7816-4 §8.1.1).
const HISTORICAL: &[u8] = b"\x80\x73\xC0\x21\xC0\x57TesseraFIDO";

/// How long NFCCTAP_MSG with P1 80, and each NFCCTAP_GETRESPONSE, waits before answering 9100.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);
/// Chained command data beyond this is refused (6700): more than any CTAP message.
const MAX_CHAINED: usize = 8192;

const SW_OK: [u8; 2] = [0x90, 0x00];
const SW_STATUS_UPDATE: [u8; 2] = [0x91, 0x00];
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
const SW_CONDITIONS: [u8; 2] = [0x69, 0x85];
const SW_NOT_FOUND: [u8; 2] = [0x6A, 0x82];
const SW_WRONG_P1P2: [u8; 2] = [0x6A, 0x86];
const SW_LAST_IN_CHAIN_EXPECTED: [u8; 2] = [0x68, 0x83];
const SW_INS_NOT_SUPPORTED: [u8; 2] = [0x6D, 0x00];
const SW_CLA_NOT_SUPPORTED: [u8; 2] = [0x6E, 0x00];

const INS_SELECT: u8 = 0xA4;
const INS_GET_RESPONSE: u8 = 0xC0;
const INS_NFCCTAP_MSG: u8 = 0x10;
const INS_NFCCTAP_GETRESPONSE: u8 = 0x11;
const U2F_INS: [u8; 3] = [0x01, 0x02, 0x03];
/// NFCCTAP_MSG P1: the client polls with NFCCTAP_GETRESPONSE (§11.3.5).
const P1_GETRESPONSE_SUPPORTED: u8 = 0x80;
/// NFCCTAP_GETRESPONSE P1: cancel the running command (§11.3.5).
const P1_CANCEL: u8 = 0x11;

/// The FIDO applet of the simulated key, for [`crate::vpcd::run`].
pub struct FidoCard {
    key: KeyHandle,
    atr: Vec<u8>,
    selected: bool,
    chain: Option<Chain>,
    /// Response data not yet fetched with GET RESPONSE.
    pending: Vec<u8>,
    /// A CTAP2 command still running on the key (NFCCTAP_MSG with P1 80).
    running: Option<(mpsc::Receiver<Outcome>, Activity)>,
    pulled: bool,
}

struct Chain {
    header: [u8; 4],
    data: Zeroizing<Vec<u8>>,
}

/// A parsed command APDU (ISO/IEC 7816-4 §5.1).
struct Command<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    /// Ne: how many response bytes the client takes; `None` when Le is absent.
    le: Option<usize>,
}

impl FidoCard {
    pub fn new(key: KeyHandle) -> FidoCard {
        FidoCard {
            key,
            atr: contactless_atr(HISTORICAL),
            selected: false,
            chain: None,
            pending: Vec::new(),
            running: None,
            pulled: false,
        }
    }

    fn command(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Some(c) = parse(apdu) else {
            return SW_WRONG_LENGTH.to_vec();
        };
        // Chaining (§5.1.1): collect the data of every link; the last one runs the command.
        if c.cla & 0x10 != 0 {
            let header = [c.cla & !0x10, c.ins, c.p1, c.p2];
            let chain = self.chain.get_or_insert_with(|| Chain {
                header,
                data: Zeroizing::new(Vec::new()),
            });
            if chain.header != header {
                self.chain = None;
                return SW_LAST_IN_CHAIN_EXPECTED.to_vec();
            }
            if chain.data.len() + c.data.len() > MAX_CHAINED {
                self.chain = None;
                return SW_WRONG_LENGTH.to_vec();
            }
            chain.data.extend_from_slice(c.data);
            return SW_OK.to_vec();
        }
        if let Some(chain) = self.chain.take() {
            if chain.header != [c.cla, c.ins, c.p1, c.p2] {
                return SW_LAST_IN_CHAIN_EXPECTED.to_vec();
            }
            let mut data = chain.data;
            if data.len() + c.data.len() > MAX_CHAINED {
                return SW_WRONG_LENGTH.to_vec();
            }
            data.extend_from_slice(c.data);
            return self.run(&Command { data: &data, ..c });
        }
        self.run(&c)
    }

    fn run(&mut self, c: &Command<'_>) -> Vec<u8> {
        if c.ins != INS_GET_RESPONSE {
            self.pending.clear();
        }
        match (c.cla, c.ins) {
            (0x00, INS_SELECT) => self.select(c),
            (0x00, INS_GET_RESPONSE) => {
                if self.pending.is_empty() {
                    return SW_CONDITIONS.to_vec();
                }
                let data = std::mem::take(&mut self.pending);
                self.answer(data, SW_OK, Some(c.le.unwrap_or(256)))
            }
            _ if !self.selected => SW_CONDITIONS.to_vec(),
            (0x80, INS_NFCCTAP_MSG) => self.ctap_msg(c),
            (0x80, INS_NFCCTAP_GETRESPONSE) => self.ctap_get_response(c),
            (0x00, ins) if U2F_INS.contains(&ins) => self.u2f(c),
            (0x00 | 0x80, _) => SW_INS_NOT_SUPPORTED.to_vec(),
            _ => SW_CLA_NOT_SUPPORTED.to_vec(),
        }
    }

    fn select(&mut self, c: &Command<'_>) -> Vec<u8> {
        if c.p1 != 0x04 || c.p2 != 0x00 {
            return SW_WRONG_P1P2.to_vec();
        }
        if c.data != FIDO_AID {
            self.selected = false;
            return SW_NOT_FOUND.to_vec();
        }
        self.selected = true;
        let version: &[u8] = if self.key.speaks_cbor() {
            b"FIDO_2_0"
        } else {
            b"U2F_V2"
        };
        self.answer(version.to_vec(), SW_OK, c.le)
    }

    fn ctap_msg(&mut self, c: &Command<'_>) -> Vec<u8> {
        if !self.key.speaks_cbor() {
            return SW_INS_NOT_SUPPORTED.to_vec();
        }
        if c.data.is_empty() {
            return SW_WRONG_LENGTH.to_vec();
        }
        if c.p1 != 0x00 && c.p1 != P1_GETRESPONSE_SUPPORTED {
            return SW_WRONG_P1P2.to_vec();
        }
        let activity = Activity::default();
        let (tx, rx) = mpsc::channel();
        let request = Request::Cbor(Zeroizing::new(c.data.to_vec()));
        if !self.key.submit(request, activity.clone(), move |o| {
            let _ = tx.send(o);
        }) {
            self.pulled = true;
            return Vec::new();
        }
        self.running = Some((rx, activity));
        if c.p1 == P1_GETRESPONSE_SUPPORTED {
            self.poll(STATUS_INTERVAL, c.le)
        } else {
            self.poll(Duration::MAX, c.le)
        }
    }

    fn ctap_get_response(&mut self, c: &Command<'_>) -> Vec<u8> {
        let Some((_, activity)) = &self.running else {
            return SW_CONDITIONS.to_vec();
        };
        if c.p1 == P1_CANCEL {
            activity
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.poll(STATUS_INTERVAL, c.le)
    }

    /// Waits up to `wait` for the running command: its answer, or 9100 with the keepalive status
    /// (01 processing, 02 user presence needed; §11.3.5 reuses CTAPHID's codes).
    fn poll(&mut self, wait: Duration, le: Option<usize>) -> Vec<u8> {
        let Some((rx, activity)) = self.running.take() else {
            return SW_CONDITIONS.to_vec();
        };
        let outcome = if wait == Duration::MAX {
            rx.recv().ok()
        } else {
            match rx.recv_timeout(wait) {
                Ok(o) => Some(o),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let status = if activity
                        .up_needed
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        0x02
                    } else {
                        0x01
                    };
                    self.running = Some((rx, activity));
                    return [&[status][..], &SW_STATUS_UPDATE].concat();
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        };
        match outcome {
            Some(Outcome::Reply(reply)) => self.answer(reply, SW_OK, le),
            Some(Outcome::Pulled) | None => {
                self.pulled = true;
                Vec::new()
            }
        }
    }

    fn u2f(&mut self, c: &Command<'_>) -> Vec<u8> {
        // U2F raw message formats §3: the extended-length encoding, Le 65536.
        let mut apdu = Zeroizing::new(Vec::with_capacity(c.data.len() + 9));
        apdu.extend_from_slice(&[c.cla, c.ins, c.p1, c.p2]);
        if c.data.is_empty() {
            apdu.extend_from_slice(&[0x00, 0x00, 0x00]);
        } else {
            let Ok(lc) = u16::try_from(c.data.len()) else {
                return SW_WRONG_LENGTH.to_vec();
            };
            apdu.push(0x00);
            apdu.extend_from_slice(&lc.to_be_bytes());
            apdu.extend_from_slice(c.data);
            apdu.extend_from_slice(&[0x00, 0x00]);
        }
        match self.key.call(Request::U2f(apdu), Activity::default()) {
            Some(Outcome::Reply(mut reply)) => {
                if reply.len() < 2 {
                    return [0x6F, 0x00].to_vec();
                }
                let sw_at = reply.len() - 2;
                let sw = [reply[sw_at], reply[sw_at + 1]];
                reply.truncate(sw_at);
                self.answer(reply, sw, c.le)
            }
            Some(Outcome::Pulled) | None => {
                self.pulled = true;
                Vec::new()
            }
        }
    }

    /// Response data within Ne; the rest waits for GET RESPONSE behind 61xx (ISO/IEC 7816-4 §5.1.3).
    /// Without Le no data is sent at all (a case 1 or 3 command), only 61xx.
    fn answer(&mut self, data: Vec<u8>, sw: [u8; 2], le: Option<usize>) -> Vec<u8> {
        let ne = le.unwrap_or(0);
        if data.len() <= ne || data.is_empty() {
            return [data.as_slice(), &sw].concat();
        }
        let (now, later) = data.split_at(ne);
        self.pending = later.to_vec();
        let more = u8::try_from(self.pending.len()).unwrap_or(0);
        [now, &[0x61, more]].concat()
    }
}

impl VirtualCard for FidoCard {
    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    /// A reset leaves the field: the applet is deselected and half-sent commands are forgotten.
    /// The key's own volatile state (PIN token, PIN_AUTH_BLOCKED) is not touched: pcscd resets and
    /// powers cards down on its own schedule, which is not the user taking the key away; use
    /// `tessera-sim power-cycle` for that.
    fn reset(&mut self) {
        self.selected = false;
        self.chain = None;
        self.pending.clear();
        if let Some((_, activity)) = self.running.take() {
            activity
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.pulled {
            return Vec::new();
        }
        self.command(apdu)
    }

    fn is_pulled(&self) -> bool {
        self.pulled || self.key.pulled()
    }
}

/// `3B 8n 80 01 <historical bytes> TCK` (PC/SC Part 3 §3.1.3.2.3): T0 announces TD1 and n historical
/// bytes, TD1 = 80 (TD2 follows, T=0), TD2 = 01 (T=1), and TCK makes the XOR of T0..TCK zero
/// (ISO/IEC 7816-3 §8.2.5). At most 15 historical bytes.
pub fn contactless_atr(historical: &[u8]) -> Vec<u8> {
    let historical = &historical[..historical.len().min(15)];
    let n = u8::try_from(historical.len()).unwrap_or(15);
    let mut atr = vec![0x3B, 0x80 | n, 0x80, 0x01];
    atr.extend_from_slice(historical);
    let tck = atr[1..].iter().fold(0u8, |x, b| x ^ b);
    atr.push(tck);
    atr
}

/// Parses a command APDU in any of the seven cases of ISO/IEC 7816-4 §5.1 (short and extended);
/// `None` when the lengths do not add up.
fn parse(apdu: &[u8]) -> Option<Command<'_>> {
    let (header, body) = apdu.split_first_chunk::<4>()?;
    let [cla, ins, p1, p2] = *header;
    let short_ne = |b: u8| if b == 0 { 256 } else { usize::from(b) };
    let ext_ne = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
        0 => 65536,
        n => usize::from(n),
    };
    let (data, le): (&[u8], Option<usize>) = match body {
        [] => (&[], None),
        [le] => (&[], Some(short_ne(*le))),
        [0, hi, lo] => (&[], Some(ext_ne(*hi, *lo))),
        [0, hi, lo, rest @ ..] => {
            let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
            if lc == 0 {
                return None;
            }
            match rest.len().checked_sub(lc)? {
                0 => (rest, None),
                2 => (&rest[..lc], Some(ext_ne(rest[lc], rest[lc + 1]))),
                _ => return None,
            }
        }
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            match rest.len().checked_sub(lc)? {
                0 => (rest, None),
                1 => (&rest[..lc], Some(short_ne(rest[lc]))),
                _ => return None,
            }
        }
    };
    Some(Command {
        cla,
        ins,
        p1,
        p2,
        data,
        le,
    })
}

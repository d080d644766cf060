//! The PIV card application client (NIST SP 800-73-4 Part 2 §3, card commands): SELECT, PIN
//! handling, GET DATA and GENERAL AUTHENTICATE with P-256 keys, over any [`CardTransport`].
//!
//! Command chaining and GET RESPONSE (ISO/IEC 7816-4 §5.1.1.1, §7.6.1) live here, above the byte-level
//! transport, so the simulator and the in-test fake exercise them too. What the card's status words
//! mean to Tessera is decided in one function, `status_error`. Certificate parsing is in
//! [`crate::piv::cert`]; the challenge itself in [`crate::verify::challenge`].

pub mod authenticator;
mod authenticator_identify;
mod authenticator_pin;
pub mod cert;

pub use authenticator_pin::pin_from;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::iso7816::apdu::{
    Command, Response, StatusWord, CLA_CHAINING, MAX_DATA_SHORT, MAX_LE_SHORT,
};
use crate::transport::CardTransport;
use crate::{iso7816::tlv, Error, Result};

/// The PIV application identifier as Tessera selects it: the right-truncated AID, NIST RID
/// `A0 00 00 03 08` and PIX `00 00 10 00` without the two version bytes `01 00`.
///
/// SP 800-73-4 Part 1 §2.2 gives the full AID `A0 00 00 03 08 00 00 10 00 01 00` and Part 2 §3.1.1
/// says SELECT names the PIV Card Application by that AID or by this right-truncated form; a card need
/// accept nothing shorter, and strict cards (e.g. Nitrokey's piv-authenticator) answer the RID alone
/// with `6A82`. The truncated form keeps working when a later version of the application changes the
/// last two bytes.
pub const PIV_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00];

/// Largest response Tessera accepts from one command, so a hostile card cannot make the GET RESPONSE
/// loop run forever or exhaust memory. Certificates and the CHUID, all Tessera reads, are a few KiB.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// GET RESPONSE rounds per command. A card that answers `61xx` with tiny pieces hits this before
/// [`MAX_RESPONSE_LEN`]; 1024 rounds still allow 64 KiB in 64-byte pieces.
const MAX_GET_RESPONSE_ROUNDS: usize = 1024;

/// Instruction bytes (SP 800-73-4 Part 2 §3, ISO/IEC 7816-4 §7.6.1 for GET RESPONSE).
mod ins {
    pub const VERIFY: u8 = 0x20;
    pub const CHANGE_REFERENCE_DATA: u8 = 0x24;
    pub const RESET_RETRY_COUNTER: u8 = 0x2C;
    pub const GENERAL_AUTHENTICATE: u8 = 0x87;
    pub const SELECT: u8 = 0xA4;
    pub const GET_RESPONSE: u8 = 0xC0;
    pub const GET_DATA: u8 = 0xCB;
}

/// Key reference of the PIV Card Application PIN (SP 800-73-4 Part 1 Table 4a).
const PIN_REFERENCE: u8 = 0x80;
/// Cryptographic algorithm identifier of ECC P-256 (SP 800-78-4 Table 6-2).
pub const ALG_ECC_P256: u8 = 0x11;
/// Data object tag of the CHUID (SP 800-73-4 Part 1 Table 3).
pub const TAG_CHUID: u32 = 0x5F_C102;

/// The four PIV key slots Tessera can authenticate with (SP 800-73-4 Part 1 Table 4b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// 9A, PIV Authentication key.
    Authentication,
    /// 9C, Digital Signature key.
    Signature,
    /// 9D, Key Management key.
    KeyManagement,
    /// 9E, Card Authentication key.
    CardAuthentication,
}

/// When a slot's private key operation needs the PIN (SP 800-73-4 Part 1 Table 4b, access rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPolicy {
    /// Never (9E: contactless card authentication).
    Never,
    /// Once per session (9A, 9D).
    Once,
    /// Immediately before every use (9C, access rule "PIN Always").
    Always,
}

impl Slot {
    pub const ALL: [Slot; 4] = [
        Slot::Authentication,
        Slot::Signature,
        Slot::KeyManagement,
        Slot::CardAuthentication,
    ];

    /// Key reference, P2 of GENERAL AUTHENTICATE.
    pub fn key_reference(self) -> u8 {
        match self {
            Slot::Authentication => 0x9A,
            Slot::Signature => 0x9C,
            Slot::KeyManagement => 0x9D,
            Slot::CardAuthentication => 0x9E,
        }
    }

    /// Tag of the X.509 certificate data object for this key (SP 800-73-4 Part 1 Table 3).
    pub fn certificate_tag(self) -> u32 {
        match self {
            Slot::Authentication => 0x5F_C105,
            Slot::Signature => 0x5F_C10A,
            Slot::KeyManagement => 0x5F_C10B,
            Slot::CardAuthentication => 0x5F_C101,
        }
    }

    pub fn pin_policy(self) -> PinPolicy {
        match self {
            Slot::Authentication | Slot::KeyManagement => PinPolicy::Once,
            Slot::Signature => PinPolicy::Always,
            Slot::CardAuthentication => PinPolicy::Never,
        }
    }

    /// Whether signing with this slot needs a verified PIN.
    pub fn needs_pin(self) -> bool {
        self.pin_policy() != PinPolicy::Never
    }
}

/// `9a`, `9c`, `9d` or `9e`.
impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.key_reference())
    }
}

/// Parses `9a`, `9c`, `9d`, `9e` (any case).
impl FromStr for Slot {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Slot::ALL
            .into_iter()
            .find(|slot| s.eq_ignore_ascii_case(&slot.to_string()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("unknown PIV slot {s:?} (use 9a, 9c, 9d or 9e)"))
            })
    }
}

/// A PIN or PUK in its on-card form: 1–8 printable ASCII bytes padded with `FF` to 8 bytes
/// (SP 800-73-4 Part 2 §2.4.3). The card enforces its own minimum length (6 for the PIN).
#[derive(Clone)]
pub struct Pin(Zeroizing<Vec<u8>>);

/// The fixed length of the PIN and PUK reference data (SP 800-73-4 Part 2 §2.4.3).
const PIN_LEN: usize = 8;

impl Pin {
    pub fn new(pin: &str) -> Result<Pin> {
        let bytes = pin.as_bytes();
        if bytes.is_empty() {
            return Err(Error::PinFormat("empty"));
        }
        if bytes.len() > PIN_LEN {
            return Err(Error::PinFormat("longer than 8 characters"));
        }
        if !bytes.iter().all(|b| (0x20..=0x7E).contains(b)) {
            return Err(Error::PinFormat("not printable ASCII"));
        }
        let mut padded = Zeroizing::new(vec![0xFF; PIN_LEN]);
        for (dst, src) in padded.iter_mut().zip(bytes) {
            *dst = *src;
        }
        Ok(Pin(padded))
    }

    /// The 8 padded bytes sent to the card.
    fn encoded(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Result of VERIFY without data (SP 800-73-4 Part 2 §3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// The PIN is verified in the current session.
    Verified,
    /// Not verified; this many tries remain.
    Retries(u8),
    /// No tries remain: unblock with the PUK.
    Blocked,
}

/// What SELECT told us about the application (SP 800-73-4 Part 2 Table 3, tag `61`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationProperties {
    /// `4F`: PIX of the application, e.g. `00 00 10 00 01 00`.
    pub pix: Vec<u8>,
    /// `50`: application label, if any.
    pub label: Option<String>,
    /// `AC`/`80`: algorithm identifiers the card announces (may be absent on older cards).
    pub algorithms: Vec<u8>,
}

/// Card Holder Unique Identifier (SP 800-73-4 Part 1 Table 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chuid {
    /// `30`: FASC-N, 25 bytes on federal cards.
    pub fasc_n: Option<Vec<u8>>,
    /// `34`: card GUID (UUID), the stable identifier of this card.
    pub guid: Option<[u8; 16]>,
}

/// A PIV session on one card. Borrow the transport for as long as the session lasts; the card keeps
/// its PIN state per connection.
pub struct Piv<'a, T: CardTransport + ?Sized> {
    card: &'a mut T,
}

impl<'a, T: CardTransport + ?Sized> Piv<'a, T> {
    pub fn new(card: &'a mut T) -> Self {
        Self { card }
    }

    /// SELECT the PIV application (SP 800-73-4 Part 2 §3.1.1) and parse its property template.
    ///
    /// Tolerant of what real cards answer: the template itself with `9000`, an empty `9000`, or `61xx`
    /// followed by GET RESPONSE (ISO/IEC 7816-4 §5.3.4, handled by [`Piv::transmit`]). Le is always
    /// sent (`00`, Ne = 256): without it a strict card has no room for the template (ISO/IEC 7816-4
    /// §5.1, Le absent means Ne = 0).
    pub fn select(&mut self) -> Result<ApplicationProperties> {
        let cmd = Command::new(0x00, ins::SELECT, 0x04, 0x00)
            .with_data(PIV_AID)
            .with_le(MAX_LE_SHORT);
        let resp = self.transmit(&cmd)?;
        check(Op::Select, resp.sw)?;
        // Some cards answer an empty 9000; the application is selected all the same.
        if resp.data.is_empty() {
            return Ok(ApplicationProperties::default());
        }
        let template = tlv::expect_one(&resp.data, 0x61)?;
        let mut props = ApplicationProperties::default();
        for item in tlv::parse_all(template)? {
            match item.tag {
                0x4F => props.pix = item.value.to_vec(),
                0x50 => props.label = Some(String::from_utf8_lossy(item.value).into_owned()),
                0xAC => {
                    for alg in tlv::parse_all(item.value)? {
                        if let (0x80, [id]) = (alg.tag, alg.value) {
                            props.algorithms.push(*id);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(props)
    }

    /// Sends one command: splits long data into chained 255-byte pieces (ISO/IEC 7816-4 §5.1.1.1),
    /// follows `61xx` with GET RESPONSE (§7.6.1) and retries once on `6Cxx` with the exact Le. The
    /// status word is returned as is, for the caller to interpret.
    pub fn transmit(&mut self, cmd: &Command) -> Result<Response> {
        let mut pieces = cmd.data.chunks(MAX_DATA_SHORT).peekable();
        let mut resp = if pieces.peek().is_none() {
            self.exchange(cmd)?
        } else {
            let mut last = None;
            while let Some(piece) = pieces.next() {
                let more = pieces.peek().is_some();
                let mut part = Command::new(cmd.cla, cmd.ins, cmd.p1, cmd.p2).with_data(piece);
                if more {
                    part.cla |= CLA_CHAINING;
                } else {
                    part.le = cmd.le;
                }
                let r = self.exchange(&part)?;
                // Every piece but the last must be accepted with 9000 (§5.1.1.1).
                if more && !r.sw.is_success() {
                    return Ok(r);
                }
                last = Some(r);
            }
            last.ok_or_else(|| Error::Internal("chaining sent no piece".into()))?
        };
        if let StatusWord::WrongLe(exact) = resp.sw {
            // Only an unchained command can simply be sent again.
            if !cmd.is_chained() && cmd.data.len() <= MAX_DATA_SHORT {
                let mut again = cmd.clone();
                again.le = Some(short_ne(exact));
                resp = self.exchange(&again)?;
            }
        }
        let mut rounds = 0;
        while let StatusWord::BytesRemaining(n) = resp.sw {
            rounds += 1;
            if rounds > MAX_GET_RESPONSE_ROUNDS {
                return Err(Error::Device("card kept answering 61xx".into()));
            }
            let more = self.exchange(
                &Command::new(0x00, ins::GET_RESPONSE, 0x00, 0x00).with_le(short_ne(n)),
            )?;
            resp.data.extend_from_slice(&more.data);
            resp.sw = more.sw;
            if resp.data.len() > MAX_RESPONSE_LEN {
                return Err(Error::Device(format!(
                    "response longer than {MAX_RESPONSE_LEN} bytes"
                )));
            }
        }
        Ok(resp)
    }

    /// The PIN's state without spending a try: VERIFY with no data (SP 800-73-4 Part 2 §3.2.1).
    pub fn pin_status(&mut self) -> Result<PinStatus> {
        let resp = self.transmit(&Command::new(0x00, ins::VERIFY, 0x00, PIN_REFERENCE))?;
        match resp.sw {
            StatusWord::Success => Ok(PinStatus::Verified),
            StatusWord::VerifyFailed { retries: 0 } | StatusWord::AuthMethodBlocked => {
                Ok(PinStatus::Blocked)
            }
            StatusWord::VerifyFailed { retries } => Ok(PinStatus::Retries(retries)),
            sw => Err(status_error(Op::PinStatus, sw)),
        }
    }

    /// VERIFY the PIN (SP 800-73-4 Part 2 §3.2.1). Spends a try when wrong; callers that must not
    /// block the card check [`Piv::pin_status`] first.
    pub fn verify_pin(&mut self, pin: &Pin) -> Result<()> {
        let mut cmd = Command::new(0x00, ins::VERIFY, 0x00, PIN_REFERENCE);
        cmd.data = Zeroizing::new(pin.encoded().to_vec());
        let sw = self.transmit(&cmd)?.sw;
        check(Op::Verify, sw)
    }

    /// Drops the PIN's security status: VERIFY with P1 = FF and no data (SP 800-73-4 Part 2 §3.2.1),
    /// so that no other application can use the card's keys on the strength of a PIN it never saw.
    pub fn reset_pin_status(&mut self) -> Result<()> {
        let sw = self
            .transmit(&Command::new(0x00, ins::VERIFY, 0xFF, PIN_REFERENCE))?
            .sw;
        check(Op::ResetPinStatus, sw)
    }

    /// CHANGE REFERENCE DATA for the PIN (SP 800-73-4 Part 2 §3.2.2).
    pub fn change_pin(&mut self, old: &Pin, new: &Pin) -> Result<()> {
        let mut cmd = Command::new(0x00, ins::CHANGE_REFERENCE_DATA, 0x00, PIN_REFERENCE);
        cmd.data = concat(old, new);
        let sw = self.transmit(&cmd)?.sw;
        check(Op::ChangePin, sw)
    }

    /// RESET RETRY COUNTER: unblock the PIN with the PUK and set a new PIN (SP 800-73-4 Part 2 §3.2.3).
    pub fn unblock_pin(&mut self, puk: &Pin, new: &Pin) -> Result<()> {
        let mut cmd = Command::new(0x00, ins::RESET_RETRY_COUNTER, 0x00, PIN_REFERENCE);
        cmd.data = concat(puk, new);
        let sw = self.transmit(&cmd)?.sw;
        check(Op::Unblock, sw)
    }

    /// GET DATA (SP 800-73-4 Part 2 §3.1.2): the contents of the object's template (`53`, or `7E`
    /// for the Discovery Object, `7F61` for the BIT group template), or `None` when the card has no
    /// such object (`6A82`).
    pub fn get_data(&mut self, tag: u32) -> Result<Option<Vec<u8>>> {
        let tag_bytes: Vec<u8> = tag
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        let cmd = Command::new(0x00, ins::GET_DATA, 0x3F, 0xFF)
            .with_data(tlv::encode(0x5C, &tag_bytes)?)
            .with_le(MAX_LE_SHORT);
        let resp = self.transmit(&cmd)?;
        if resp.sw == StatusWord::FileNotFound {
            return Ok(None);
        }
        check(Op::GetData, resp.sw)?;
        let outer = match tag {
            0x7E | 0x7F61 => tag,
            _ => 0x53,
        };
        Ok(Some(tlv::expect_one(&resp.data, outer)?.to_vec()))
    }

    /// The DER X.509 certificate of `slot`, or `None` if the slot has none (SP 800-73-4 Part 1
    /// Table 10: `70` certificate, `71` CertInfo, `FE` error detection code).
    pub fn certificate(&mut self, slot: Slot) -> Result<Option<Vec<u8>>> {
        let Some(object) = self.get_data(slot.certificate_tag())? else {
            return Ok(None);
        };
        if object.is_empty() {
            return Ok(None);
        }
        // CertInfo bit 0 set means gzip-compressed (Part 1, certificate containers); Tessera does not
        // inflate: PIV-sized P-256 certificates fit uncompressed.
        if let Some(info) = tlv::find(&object, 0x71)? {
            if info.first().is_some_and(|b| b & 0x01 != 0) {
                return Err(Error::Device(format!(
                    "{slot} certificate is compressed, which is not supported"
                )));
            }
        }
        match tlv::find(&object, 0x70)? {
            Some(der) if !der.is_empty() => Ok(Some(der.to_vec())),
            _ => Err(Error::Device(format!(
                "{slot} certificate object has no certificate"
            ))),
        }
    }

    /// The CHUID, or `None` when the card has none.
    pub fn chuid(&mut self) -> Result<Option<Chuid>> {
        let Some(object) = self.get_data(TAG_CHUID)? else {
            return Ok(None);
        };
        let fasc_n = tlv::find(&object, 0x30)?.map(<[u8]>::to_vec);
        let guid = tlv::find(&object, 0x34)?
            .map(|g| {
                <[u8; 16]>::try_from(g)
                    .map_err(|_| Error::Device("CHUID GUID is not 16 bytes".into()))
            })
            .transpose()?;
        Ok(Some(Chuid { fasc_n, guid }))
    }

    /// Signs a SHA-256 digest with the slot's P-256 key: GENERAL AUTHENTICATE with algorithm `11`
    /// (SP 800-73-4 Part 2 §3.2.4 and Appendix A, SP 800-78-4 Table 6-2). Returns the card's DER
    /// ECDSA signature, unverified. For [`PinPolicy::Always`] slots verify the PIN right before.
    pub fn sign_p256(&mut self, slot: Slot, digest: &[u8; 32]) -> Result<Vec<u8>> {
        // Dynamic authentication template: an empty response placeholder (82) then the challenge (81).
        let mut template = tlv::encode(0x82, &[])?;
        tlv::write(&mut template, 0x81, digest)?;
        let cmd = Command::new(
            0x00,
            ins::GENERAL_AUTHENTICATE,
            ALG_ECC_P256,
            slot.key_reference(),
        )
        .with_data(tlv::encode(0x7C, &template)?)
        .with_le(MAX_LE_SHORT);
        let resp = self.transmit(&cmd)?;
        check(Op::Sign, resp.sw)?;
        let template = tlv::expect_one(&resp.data, 0x7C)?;
        match tlv::find(template, 0x82)? {
            Some(sig) if !sig.is_empty() => Ok(sig.to_vec()),
            _ => Err(Error::Device(
                "GENERAL AUTHENTICATE response has no signature".into(),
            )),
        }
    }

    /// One APDU over the transport, no chaining or GET RESPONSE.
    fn exchange(&mut self, cmd: &Command) -> Result<Response> {
        let bytes = cmd.to_bytes()?;
        Ok(Response::parse(&self.card.transmit(&bytes)?)?)
    }
}

/// What a command was for: the same status word means different things to different commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Select,
    PinStatus,
    Verify,
    ResetPinStatus,
    ChangePin,
    Unblock,
    GetData,
    Sign,
}

/// `Ok` on 9000, else the domain error for `sw` (see [`status_error`]).
fn check(op: Op, sw: StatusWord) -> Result<()> {
    if sw.is_success() {
        Ok(())
    } else {
        Err(status_error(op, sw))
    }
}

/// The one place where card status words become Tessera errors (SP 800-73-4 Part 2 Table 6).
fn status_error(op: Op, sw: StatusWord) -> Error {
    match (op, sw) {
        // The PUK has its own counter; its failures must not read as "PIN blocked".
        (Op::Unblock, StatusWord::VerifyFailed { retries: 0 } | StatusWord::AuthMethodBlocked) => {
            Error::PukBlocked
        }
        (Op::Unblock, StatusWord::VerifyFailed { retries }) => Error::PukInvalid { retries },
        // 63C0 after a failed VERIFY: that try was the last one.
        (_, StatusWord::VerifyFailed { retries: 0 }) => Error::PinBlocked,
        (_, StatusWord::VerifyFailed { retries }) => Error::PinInvalid { retries },
        (_, StatusWord::AuthMethodBlocked) => Error::PinBlocked,
        (Op::Sign, StatusWord::SecurityStatusNotSatisfied) => Error::PinRequired,
        (Op::Sign, StatusWord::ReferencedDataNotFound | StatusWord::IncorrectP1P2) => {
            Error::Device(format!("the card has no P-256 key in that slot ({sw})"))
        }
        (Op::Select, StatusWord::FileNotFound) => {
            Error::Device(format!("the card has no PIV application ({sw})"))
        }
        (op, sw) => Error::Device(format!("{op:?} failed with status {sw}")),
    }
}

/// Short-form Ne from a `61xx`/`6Cxx` count, where 00 means 256.
fn short_ne(n: u8) -> usize {
    if n == 0 {
        MAX_LE_SHORT
    } else {
        usize::from(n)
    }
}

/// Two PINs back to back, as CHANGE REFERENCE DATA and RESET RETRY COUNTER expect.
fn concat(first: &Pin, second: &Pin) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 * PIN_LEN));
    out.extend_from_slice(first.encoded());
    out.extend_from_slice(second.encoded());
    out
}

#[cfg(test)]
#[path = "piv_test.rs"]
mod tests;

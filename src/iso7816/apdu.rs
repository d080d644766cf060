//! Command and response APDUs (ISO/IEC 7816-4 §5.1) and status words (§5.6): the byte framing of one
//! card exchange. Chaining and GET RESPONSE loops live beside it, in [`super::exchange`].

use zeroize::Zeroizing;

/// Largest Nc (command data length) an extended APDU can carry (ISO/IEC 7816-4 §5.1).
pub const MAX_DATA_EXTENDED: usize = 0xFFFF;
/// Largest Nc a short APDU can carry.
pub const MAX_DATA_SHORT: usize = 0xFF;
/// Largest Ne of an extended APDU; encoded as `00 00` ("as much as possible").
pub const MAX_LE_EXTENDED: usize = 0x1_0000;
/// Largest Ne of a short APDU; encoded as `00`.
pub const MAX_LE_SHORT: usize = 0x100;

/// CLA bit announcing that more command data follows in the next APDU (ISO/IEC 7816-4 §5.1.1.1).
pub const CLA_CHAINING: u8 = 0x10;

/// One command APDU. An empty `data` means "no command data field" (Lc absent).
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// Command data; zeroized on drop because VERIFY and CHANGE REFERENCE DATA carry PINs.
    pub data: Zeroizing<Vec<u8>>,
    /// Ne, the maximum response length expected; `None` means the Le field is absent (Ne = 0).
    /// `Some(256)` (short) or `Some(65536)` (extended) ask for "everything available".
    pub le: Option<usize>,
}

impl Command {
    /// A case-1 command: header only.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Zeroizing::new(Vec::new()),
            le: None,
        }
    }

    /// Sets the command data field.
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = Zeroizing::new(data.into());
        self
    }

    /// Sets Ne, the expected response length.
    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }

    /// Whether the CLA announces that further command data follows (ISO/IEC 7816-4 §5.1.1.1).
    pub fn is_chained(&self) -> bool {
        self.cla & CLA_CHAINING != 0
    }

    /// Encodes the APDU: short form when the data fits in 255 bytes and Ne ≤ 256, else extended
    /// (ISO/IEC 7816-4 §5.1, cases 1–4). Errors on Nc > 65535, Ne = 0 (write `None`) or Ne > 65536.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ApduError> {
        let nc = self.data.len();
        if nc > MAX_DATA_EXTENDED {
            return Err(ApduError::DataTooLong(nc));
        }
        if let Some(le) = self.le {
            if le == 0 || le > MAX_LE_EXTENDED {
                return Err(ApduError::LeOutOfRange(le));
            }
        }
        let short = nc <= MAX_DATA_SHORT && self.le.is_none_or(|le| le <= MAX_LE_SHORT);
        let mut out = Zeroizing::new(Vec::with_capacity(4 + 3 + nc + 3));
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if short {
            if nc > 0 {
                out.push(low_byte(nc));
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                // 256 wraps to 00, which §5.1 defines as Ne = 256.
                out.push(low_byte(le));
            }
        } else {
            if nc > 0 {
                out.push(0x00);
                out.extend_from_slice(&two_bytes(nc));
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                if nc == 0 {
                    out.push(0x00);
                }
                // 65536 wraps to 00 00, which §5.1 defines as Ne = 65536.
                out.extend_from_slice(&two_bytes(le));
            }
        }
        Ok(out)
    }

    /// Parses a command APDU of case 1, 2S, 3S, 4S, 2E, 3E or 4E (ISO/IEC 7816-4 §5.1). Rejects
    /// anything else: short headers, Lc = 0, lengths that disagree with the input, trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Command, ApduError> {
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(ApduError::TooShort(bytes.len()));
        };
        let mut cmd = Command::new(*cla, *ins, *p1, *p2);
        match body {
            // Case 1.
            [] => {}
            // Case 2S.
            [le] => cmd.le = Some(short_ne(*le)),
            // Extended: a 00 byte where short Lc would be, then two-byte fields.
            [0x00, rest @ ..] => match rest {
                // Case 2E.
                [hi, lo] => cmd.le = Some(extended_le(*hi, *lo)),
                [hi, lo, tail @ ..] => {
                    let nc = usize::from(u16::from_be_bytes([*hi, *lo]));
                    if nc == 0 {
                        return Err(ApduError::Malformed("extended Lc of zero"));
                    }
                    let (data, le) = tail
                        .split_at_checked(nc)
                        .ok_or(ApduError::Malformed("Lc beyond the end"))?;
                    cmd.data = Zeroizing::new(data.to_vec());
                    match le {
                        [] => {}
                        [hi, lo] => cmd.le = Some(extended_le(*hi, *lo)),
                        _ => return Err(ApduError::Malformed("bytes after extended Lc data")),
                    }
                }
                _ => return Err(ApduError::Malformed("truncated extended length")),
            },
            // Cases 3S and 4S.
            [lc, tail @ ..] => {
                let (data, le) = tail
                    .split_at_checked(usize::from(*lc))
                    .ok_or(ApduError::Malformed("Lc beyond the end"))?;
                cmd.data = Zeroizing::new(data.to_vec());
                match le {
                    [] => {}
                    [le] => cmd.le = Some(short_ne(*le)),
                    _ => return Err(ApduError::Malformed("bytes after short Lc data")),
                }
            }
        }
        Ok(cmd)
    }
}

/// Shows the header and the data length, never the data: it may be a PIN.
impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("cla", &format_args!("{:#04x}", self.cla))
            .field("ins", &format_args!("{:#04x}", self.ins))
            .field("p1", &format_args!("{:#04x}", self.p1))
            .field("p2", &format_args!("{:#04x}", self.p2))
            .field("data_len", &self.data.len())
            .field("le", &self.le)
            .finish()
    }
}

/// One response APDU: the data field and the trailer SW1 SW2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    pub fn new(data: Vec<u8>, sw: StatusWord) -> Self {
        Self { data, sw }
    }

    /// Splits raw response bytes into data and the trailing SW1 SW2 (at least two bytes).
    pub fn parse(bytes: &[u8]) -> Result<Response, ApduError> {
        match bytes {
            [data @ .., sw1, sw2] => Ok(Response {
                data: data.to_vec(),
                sw: StatusWord::from_u16(u16::from_be_bytes([*sw1, *sw2])),
            }),
            _ => Err(ApduError::ResponseTooShort(bytes.len())),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_u16().to_be_bytes());
        out
    }
}

/// Status words (ISO/IEC 7816-4 §5.6, NIST SP 800-73-4 Part 2 Table 6). Every `u16` round-trips
/// through [`StatusWord::from_u16`]/[`StatusWord::to_u16`]; `Other` only ever holds words that have
/// no named variant when built by `from_u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusWord {
    /// 9000: normal processing.
    Success,
    /// 61xx: `xx` more response bytes are waiting for GET RESPONSE (00 means 256 or more).
    BytesRemaining(u8),
    /// 6700: wrong length (Lc or Le).
    WrongLength,
    /// 63Cx: verification failed, `x` retries left (0..=15).
    VerifyFailed { retries: u8 },
    /// 6982: security status not satisfied (e.g. PIN not verified).
    SecurityStatusNotSatisfied,
    /// 6983: authentication method blocked.
    AuthMethodBlocked,
    /// 6985: conditions of use not satisfied.
    ConditionsNotSatisfied,
    /// 6A80: incorrect parameters in the command data field.
    IncorrectData,
    /// 6A81: function not supported.
    FunctionNotSupported,
    /// 6A82: file or application (or PIV data object) not found.
    FileNotFound,
    /// 6A84: not enough memory.
    NotEnoughMemory,
    /// 6A86: incorrect P1 or P2.
    IncorrectP1P2,
    /// 6A88: referenced data (e.g. key reference) not found.
    ReferencedDataNotFound,
    /// 6Cxx: wrong Le; `xx` is the exact length available.
    WrongLe(u8),
    /// 6D00: instruction not supported.
    InsNotSupported,
    /// 6E00: class not supported.
    ClaNotSupported,
    /// Any other word.
    Other(u16),
}

impl StatusWord {
    pub fn from_u16(sw: u16) -> Self {
        let [sw1, sw2] = sw.to_be_bytes();
        match (sw1, sw2) {
            (0x90, 0x00) => Self::Success,
            (0x61, n) => Self::BytesRemaining(n),
            (0x67, 0x00) => Self::WrongLength,
            (0x63, x) if x & 0xF0 == 0xC0 => Self::VerifyFailed { retries: x & 0x0F },
            (0x69, 0x82) => Self::SecurityStatusNotSatisfied,
            (0x69, 0x83) => Self::AuthMethodBlocked,
            (0x69, 0x85) => Self::ConditionsNotSatisfied,
            (0x6A, 0x80) => Self::IncorrectData,
            (0x6A, 0x81) => Self::FunctionNotSupported,
            (0x6A, 0x82) => Self::FileNotFound,
            (0x6A, 0x84) => Self::NotEnoughMemory,
            (0x6A, 0x86) => Self::IncorrectP1P2,
            (0x6A, 0x88) => Self::ReferencedDataNotFound,
            (0x6C, n) => Self::WrongLe(n),
            (0x6D, 0x00) => Self::InsNotSupported,
            (0x6E, 0x00) => Self::ClaNotSupported,
            _ => Self::Other(sw),
        }
    }

    /// The two-byte value. `VerifyFailed` keeps only the low nibble of `retries` (63Cx has no room).
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Success => 0x9000,
            Self::BytesRemaining(n) => 0x6100 | u16::from(n),
            Self::WrongLength => 0x6700,
            Self::VerifyFailed { retries } => 0x63C0 | u16::from(retries & 0x0F),
            Self::SecurityStatusNotSatisfied => 0x6982,
            Self::AuthMethodBlocked => 0x6983,
            Self::ConditionsNotSatisfied => 0x6985,
            Self::IncorrectData => 0x6A80,
            Self::FunctionNotSupported => 0x6A81,
            Self::FileNotFound => 0x6A82,
            Self::NotEnoughMemory => 0x6A84,
            Self::IncorrectP1P2 => 0x6A86,
            Self::ReferencedDataNotFound => 0x6A88,
            Self::WrongLe(n) => 0x6C00 | u16::from(n),
            Self::InsNotSupported => 0x6D00,
            Self::ClaNotSupported => 0x6E00,
            Self::Other(sw) => sw,
        }
    }

    /// Only 9000: a 61xx still owes data and is handled by the GET RESPONSE loop.
    pub fn is_success(self) -> bool {
        self == Self::Success
    }
}

impl From<u16> for StatusWord {
    fn from(sw: u16) -> Self {
        Self::from_u16(sw)
    }
}

impl From<StatusWord> for u16 {
    fn from(sw: StatusWord) -> Self {
        sw.to_u16()
    }
}

/// Four hex digits, as written in the specifications ("6A82").
impl std::fmt::Display for StatusWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04X}", self.to_u16())
    }
}

/// APDU framing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApduError {
    /// Command data longer than an extended APDU can carry.
    #[error("APDU data of {0} bytes exceeds 65535")]
    DataTooLong(usize),
    /// Ne of zero (use `le: None`) or above 65536.
    #[error("APDU Le of {0} is outside 1..=65536")]
    LeOutOfRange(usize),
    /// Fewer than the four header bytes.
    #[error("command APDU of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// The body matches none of the cases 1–4 (short or extended).
    #[error("malformed command APDU: {0}")]
    Malformed(&'static str),
    /// A response shorter than its two status bytes.
    #[error("response APDU of {0} bytes has no status word")]
    ResponseTooShort(usize),
}

impl From<ApduError> for crate::Error {
    fn from(e: ApduError) -> Self {
        crate::Error::Device(e.to_string())
    }
}

/// Ne from a one-byte length: a short Le field, or the `xx` of `61xx` and `6Cxx`, where 00 means
/// 256 (ISO/IEC 7816-4 §5.1, §5.6).
pub fn short_ne(b: u8) -> usize {
    if b == 0 {
        MAX_LE_SHORT
    } else {
        usize::from(b)
    }
}

/// Extended-form Le: 00 00 means 65536 (ISO/IEC 7816-4 §5.1).
fn extended_le(hi: u8, lo: u8) -> usize {
    match u16::from_be_bytes([hi, lo]) {
        0 => MAX_LE_EXTENDED,
        n => usize::from(n),
    }
}

/// The low byte; callers have range-checked `n`, and 256 deliberately becomes 00.
fn low_byte(n: usize) -> u8 {
    (n & 0xFF) as u8
}

/// The low two bytes, big-endian; 65536 deliberately becomes 00 00.
fn two_bytes(n: usize) -> [u8; 2] {
    ((n & 0xFFFF) as u16).to_be_bytes()
}

#[cfg(test)]
#[path = "apdu_test.rs"]
mod tests;

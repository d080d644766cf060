//! BER-TLV data objects (ISO/IEC 7816-4 §5.2, ISO/IEC 8825-1 §8.1), the encoding of every PIV data
//! object and GENERAL AUTHENTICATE template (NIST SP 800-73-4 Part 2 §3). Parsing only; what the tags
//! mean lives in [`crate::piv`].
//!
//! Tags are 1–3 bytes and are handled as their encoded bytes read as a big-endian number (`0x53`,
//! `0x7F49`, `0x5FC105`). Lengths use the definite form with at most three subsequent bytes
//! (`81`, `82`, `83`); the indefinite form (`80`) is rejected, as ISO/IEC 7816-4 §5.2 forbids it.
//! Non-minimal lengths (`81 05`) are accepted on input (BER allows them and cards emit them) but
//! never produced.

/// Largest value [`write()`] can frame: a three-byte length (`83 FF FF FF`).
pub const MAX_VALUE_LEN: usize = 0xFF_FFFF;

/// One parsed data object, borrowing its value from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The encoded tag bytes as a big-endian number, e.g. `0x5FC105`.
    pub tag: u32,
    pub value: &'a [u8],
}

/// Parses one TLV at the start of `input` and returns it with the bytes that follow it.
pub fn parse_one(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let (tag, rest) = parse_tag(input)?;
    let (len, rest) = parse_len(rest)?;
    let (value, rest) = rest.split_at_checked(len).ok_or(TlvError::Truncated)?;
    Ok((Tlv { tag, value }, rest))
}

/// Parses a whole sequence of TLVs; any malformed or trailing bytes fail the whole sequence.
pub fn parse_all(input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (tlv, next) = parse_one(rest)?;
        out.push(tlv);
        rest = next;
    }
    Ok(out)
}

/// The value of the first TLV with `tag` in a sequence (not recursive). The whole sequence must parse,
/// so a hostile card cannot hide garbage after the object we look for.
pub fn find(input: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    Ok(parse_all(input)?
        .into_iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value))
}

/// The value of `input` when it is exactly one TLV with `tag` and nothing after it, the shape of
/// every PIV response template (`53 {..}`, `7C {..}`, `61 {..}`).
pub fn expect_one(input: &[u8], tag: u32) -> Result<&[u8], TlvError> {
    let (tlv, rest) = parse_one(input)?;
    if tlv.tag != tag {
        return Err(TlvError::UnexpectedTag {
            expected: tag,
            found: tlv.tag,
        });
    }
    if !rest.is_empty() {
        return Err(TlvError::TrailingBytes(rest.len()));
    }
    Ok(tlv.value)
}

/// Appends tag, shortest-form length and value. Errors on a tag that is not a well-formed 1–3 byte
/// BER tag (it would not parse back) and on a value longer than [`MAX_VALUE_LEN`].
pub fn write(out: &mut Vec<u8>, tag: u32, value: &[u8]) -> Result<(), TlvError> {
    let tag = tag_bytes(tag)?;
    let len = len_field(value.len())?;
    out.reserve(tag.len() + len.len() + value.len());
    out.extend_from_slice(&tag);
    out.extend_from_slice(&len);
    out.extend_from_slice(value);
    Ok(())
}

/// [`write()`] into a new vector.
pub fn encode(tag: u32, value: &[u8]) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::with_capacity(value.len() + 7);
    write(&mut out, tag, value)?;
    Ok(out)
}

/// BER-TLV errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlvError {
    /// The input ends inside a tag, a length or a value.
    #[error("truncated TLV")]
    Truncated,
    /// A tag of more than three bytes (ISO/IEC 7816-4 §5.2 allows 1–3).
    #[error("TLV tag longer than three bytes")]
    TagTooLong,
    /// Length byte `80`, the BER indefinite form.
    #[error("indefinite TLV length")]
    IndefiniteLength,
    /// A length field of more than four bytes (`84` and above).
    #[error("TLV length field too long")]
    LengthTooLong,
    /// [`write()`] was given a value that needs more than a three-byte length.
    #[error("TLV value of {0} bytes is too long")]
    ValueTooLong(usize),
    /// [`write()`] was given a number that is not a well-formed BER tag.
    #[error("invalid TLV tag {0:#X}")]
    InvalidTag(u32),
    /// [`expect_one`] found another tag.
    #[error("expected TLV tag {expected:#X}, found {found:#X}")]
    UnexpectedTag { expected: u32, found: u32 },
    /// Bytes after the data object.
    #[error("{0} bytes after the TLV")]
    TrailingBytes(usize),
}

impl From<TlvError> for crate::Error {
    fn from(e: TlvError) -> Self {
        crate::Error::Device(e.to_string())
    }
}

/// A tag: one byte unless its low five bits are all set, then further bytes while bit 8 is set
/// (ISO/IEC 8825-1 §8.1.2.4).
fn parse_tag(input: &[u8]) -> Result<(u32, &[u8]), TlvError> {
    let (&first, mut rest) = input.split_first().ok_or(TlvError::Truncated)?;
    let mut tag = u32::from(first);
    if first & 0x1F != 0x1F {
        return Ok((tag, rest));
    }
    for _ in 0..2 {
        let (&b, next) = rest.split_first().ok_or(TlvError::Truncated)?;
        tag = (tag << 8) | u32::from(b);
        rest = next;
        if b & 0x80 == 0 {
            return Ok((tag, rest));
        }
    }
    Err(TlvError::TagTooLong)
}

/// A definite length (ISO/IEC 8825-1 §8.1.3): one byte below `80`, or `81`..`83` and that many bytes.
fn parse_len(input: &[u8]) -> Result<(usize, &[u8]), TlvError> {
    let (&first, rest) = input.split_first().ok_or(TlvError::Truncated)?;
    let n = match first {
        0x00..=0x7F => return Ok((usize::from(first), rest)),
        0x80 => return Err(TlvError::IndefiniteLength),
        0x81..=0x83 => usize::from(first & 0x7F),
        _ => return Err(TlvError::LengthTooLong),
    };
    let (len_bytes, rest) = rest.split_at_checked(n).ok_or(TlvError::Truncated)?;
    let len = len_bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Ok((len, rest))
}

/// The encoded bytes of `tag`, checked so that [`parse_tag`] reads back the same number.
fn tag_bytes(tag: u32) -> Result<Vec<u8>, TlvError> {
    let bad = || TlvError::InvalidTag(tag);
    let [b0, b1, b2, b3] = tag.to_be_bytes();
    let bytes: Vec<u8> = match (b0, b1, b2) {
        (0, 0, 0) => vec![b3],
        (0, 0, _) => vec![b2, b3],
        (0, _, _) => vec![b1, b2, b3],
        _ => return Err(bad()),
    };
    let (last, leading) = bytes.split_last().ok_or_else(bad)?;
    let first_ok = match leading.first() {
        None => last & 0x1F != 0x1F,
        Some(first) => first & 0x1F == 0x1F,
    };
    let middle_ok = leading.iter().skip(1).all(|b| b & 0x80 != 0);
    let last_ok = leading.is_empty() || last & 0x80 == 0;
    if first_ok && middle_ok && last_ok {
        Ok(bytes)
    } else {
        Err(bad())
    }
}

/// The shortest definite length field for `len` (ISO/IEC 8825-1 §8.1.3.3 and §8.1.3.5).
fn len_field(len: usize) -> Result<Vec<u8>, TlvError> {
    if len > MAX_VALUE_LEN {
        return Err(TlvError::ValueTooLong(len));
    }
    let be = len.to_be_bytes();
    let significant: Vec<u8> = be.iter().copied().skip_while(|&b| b == 0).collect();
    match significant.as_slice() {
        [] => Ok(vec![0x00]),
        [b] if *b < 0x80 => Ok(vec![*b]),
        // At most three bytes after the range check, so the count fits the low bits of 0x80.
        bytes => Ok(std::iter::once(0x80 | bytes.len() as u8)
            .chain(bytes.iter().copied())
            .collect()),
    }
}

#[cfg(test)]
#[path = "tlv_test.rs"]
mod tests;

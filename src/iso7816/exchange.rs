//! One command, one response, however many APDUs that takes: command chaining (ISO/IEC 7816-4
//! §5.1.1.1), GET RESPONSE after `61xx` (§7.6.1), one resend with the exact Le after `6Cxx` (§5.6),
//! short or extended lengths (§5.1). Every applet over PC/SC goes through it (PIV now, FIDO over NFC
//! next, CTAP 2.1 §11.3 allowing either chaining or extended lengths); what a status word means is
//! left to the applet. Sits above the byte-level [`CardTransport`], so the simulator and the tests'
//! fake transports exercise it too.

use crate::iso7816::apdu::{
    short_ne, ApduError, Command, Response, StatusWord, CLA_CHAINING, MAX_DATA_EXTENDED,
    MAX_DATA_SHORT, MAX_LE_EXTENDED, MAX_LE_SHORT,
};
use crate::transport::CardTransport;
use crate::{Error, Result};

/// Largest response accepted for one command, so a hostile card cannot make the GET RESPONSE loop run
/// forever or exhaust memory. PIV certificates and the CHUID are a few KiB; a CTAP2 message over NFC
/// is at most a few KiB too.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// GET RESPONSE rounds per command. A card that answers `61xx` with tiny pieces hits this before
/// [`MAX_RESPONSE_LEN`]; 1024 rounds still allow 64 KiB in 64-byte pieces.
pub const MAX_GET_RESPONSE_ROUNDS: usize = 1024;

/// GET RESPONSE (ISO/IEC 7816-4 §7.6.1).
const INS_GET_RESPONSE: u8 = 0xC0;

/// Which APDU lengths the card takes (ISO/IEC 7816-4 §5.1; a card announces extended lengths in its
/// card capabilities, §8.1.1.2.7, third software function table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lengths {
    /// Short APDUs only: data in 255-byte chained pieces, Ne at most 256 per APDU and the rest
    /// through GET RESPONSE. Every card takes these.
    Short,
    /// Extended APDUs where needed: up to 65,535 data bytes and Ne up to 65,536 in one APDU (longer
    /// data is still chained, in 65,535-byte pieces).
    Extended,
}

impl Lengths {
    /// Most command data one APDU carries.
    fn max_data(self) -> usize {
        match self {
            Lengths::Short => MAX_DATA_SHORT,
            Lengths::Extended => MAX_DATA_EXTENDED,
        }
    }

    /// Ne as it can be sent: a short APDU asks for at most 256 bytes, the card says `61xx` for more.
    fn ne(self, le: Option<usize>) -> Option<usize> {
        match self {
            Lengths::Short => le.map(|n| n.min(MAX_LE_SHORT)),
            Lengths::Extended => le,
        }
    }
}

/// Exchanges whole commands with one card. Borrows the transport for as long as the applet session
/// lasts.
pub struct Exchange<'a, T: CardTransport + ?Sized> {
    card: &'a mut T,
    lengths: Lengths,
}

impl<'a, T: CardTransport + ?Sized> Exchange<'a, T> {
    /// Short APDUs, which every card takes.
    pub fn new(card: &'a mut T) -> Self {
        Self::with_lengths(card, Lengths::Short)
    }

    pub fn with_lengths(card: &'a mut T, lengths: Lengths) -> Self {
        Self { card, lengths }
    }

    /// Sends `cmd` and returns the whole response. Long data goes in chained pieces, each but the last
    /// with the chaining bit in CLA; a piece refused with anything but `9000` ends the chain and its
    /// answer is returned. `6Cxx` to a command sent as one APDU is answered by sending it once more
    /// with Le = `xx`. `61xx` is followed by GET RESPONSE until the card says something else, at most
    /// [`MAX_GET_RESPONSE_ROUNDS`] times and [`MAX_RESPONSE_LEN`] bytes. The final status word is
    /// returned as is, for the applet to interpret.
    ///
    /// Errors: the transport's; [`Error::Device`] for an Ne outside 1..=65536 (nothing is sent), a
    /// malformed answer or one beyond the limits.
    pub fn transmit(&mut self, cmd: &Command) -> Result<Response> {
        // Checked before Short lowers Ne to 256, which would hide a wrong one.
        if let Some(le) = cmd.le.filter(|&n| n == 0 || n > MAX_LE_EXTENDED) {
            return Err(ApduError::LeOutOfRange(le).into());
        }
        let mut resp = self.send_chained(cmd)?;
        let single = cmd.data.len() <= self.lengths.max_data() && !cmd.is_chained();
        if let (StatusWord::WrongLe(exact), true) = (resp.sw, single) {
            let mut again = cmd.clone();
            again.le = Some(short_ne(exact));
            resp = self.apdu(&again)?;
        }
        self.get_remaining(resp)
    }

    /// The command's data in as many chained APDUs as it needs; Le goes with the last one.
    fn send_chained(&mut self, cmd: &Command) -> Result<Response> {
        let le = self.lengths.ne(cmd.le);
        if cmd.data.is_empty() {
            let mut whole = Command::new(cmd.cla, cmd.ins, cmd.p1, cmd.p2);
            whole.le = le;
            return self.apdu(&whole);
        }
        let mut pieces = cmd.data.chunks(self.lengths.max_data()).peekable();
        let mut last = None;
        while let Some(piece) = pieces.next() {
            let more = pieces.peek().is_some();
            let mut part = Command::new(cmd.cla, cmd.ins, cmd.p1, cmd.p2).with_data(piece);
            if more {
                part.cla |= CLA_CHAINING;
            } else {
                part.le = le;
            }
            let r = self.apdu(&part)?;
            // Every piece but the last must be accepted with 9000 (§5.1.1.1).
            if more && !r.sw.is_success() {
                return Ok(r);
            }
            last = Some(r);
        }
        last.ok_or_else(|| Error::Internal("chaining sent no piece".into()))
    }

    /// Follows `61xx` with GET RESPONSE, appending each piece; a `6Cxx` to GET RESPONSE is asked
    /// again with the exact length (it counts as a round).
    fn get_remaining(&mut self, mut resp: Response) -> Result<Response> {
        let mut rounds = 0;
        loop {
            let ne = match resp.sw {
                StatusWord::BytesRemaining(n) => short_ne(n),
                StatusWord::WrongLe(n) if rounds > 0 => short_ne(n),
                _ => return Ok(resp),
            };
            rounds += 1;
            if rounds > MAX_GET_RESPONSE_ROUNDS {
                return Err(Error::Device(format!(
                    "card kept answering 61xx or 6Cxx to GET RESPONSE ({})",
                    resp.sw
                )));
            }
            let more = self.apdu(&Command::new(0x00, INS_GET_RESPONSE, 0x00, 0x00).with_le(ne))?;
            resp.data.extend_from_slice(&more.data);
            resp.sw = more.sw;
            if resp.data.len() > MAX_RESPONSE_LEN {
                return Err(Error::Device(format!(
                    "response longer than {MAX_RESPONSE_LEN} bytes"
                )));
            }
        }
    }

    /// One APDU over the transport.
    fn apdu(&mut self, cmd: &Command) -> Result<Response> {
        let bytes = cmd.to_bytes()?;
        Ok(Response::parse(&self.card.transmit(&bytes)?)?)
    }
}

#[cfg(test)]
#[path = "exchange_test.rs"]
mod tests;

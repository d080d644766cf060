//! Which applets a card holds: SELECT by DF name (ISO/IEC 7816-4 §7.1.1, P1 = `04`) of each
//! application identifier Tessera speaks to, so that one card (a YubiKey in a reader or over NFC)
//! can offer several. The applets themselves live in their own modules ([`crate::piv`], FIDO next).

use crate::iso7816::apdu::{Command, MAX_LE_SHORT};
use crate::iso7816::exchange::Exchange;
use crate::transport::CardTransport;
use crate::Result;

/// The PIV application identifier as Tessera selects it: the right-truncated AID, NIST RID
/// `A0 00 00 03 08` and PIX `00 00 10 00` without the two version bytes `01 00`.
///
/// SP 800-73-4 Part 1 §2.2 gives the full AID `A0 00 00 03 08 00 00 10 00 01 00` and Part 2 §3.1.1
/// says SELECT names the PIV Card Application by that AID or by this right-truncated form; a card need
/// accept nothing shorter, and strict cards (e.g. Nitrokey's piv-authenticator) answer the RID alone
/// with `6A82`. The truncated form keeps working when a later version of the application changes the
/// last two bytes.
pub const PIV_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00];

/// The FIDO application identifier (CTAP 2.1 §11.3.3, "Applet selection"): U2F and CTAP2 over NFC,
/// and over a contact reader on keys that offer it.
pub const FIDO_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];

/// INS of SELECT (ISO/IEC 7816-4 §7.1.1).
const INS_SELECT: u8 = 0xA4;

/// An applet Tessera can speak to, named by its device kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applet {
    /// The PIV Card Application (NIST SP 800-73-4).
    Piv,
    /// The FIDO applet: U2F and CTAP2 (CTAP 2.1 §11.3).
    Fido,
}

impl Applet {
    /// Every applet, in the order [`probe`] asks for them.
    pub const ALL: [Applet; 2] = [Applet::Fido, Applet::Piv];

    /// The AID SELECT names it by.
    pub fn aid(self) -> &'static [u8] {
        match self {
            Applet::Piv => &PIV_AID,
            Applet::Fido => &FIDO_AID,
        }
    }

    /// The device kind it makes a card: "piv" or "fido".
    pub fn kind(self) -> &'static str {
        match self {
            Applet::Piv => "piv",
            Applet::Fido => "fido",
        }
    }
}

/// SELECT by AID, first or only occurrence, with Le `00` (Ne = 256): without Le a strict card has no
/// room for its answer (ISO/IEC 7816-4 §5.1, Le absent means Ne = 0). The FIDO applet answers its
/// version string ("U2F_V2" or "FIDO_2_0", CTAP 2.1 §11.3.3), PIV its property template.
pub fn select_command(aid: &[u8]) -> Command {
    Command::new(0x00, INS_SELECT, 0x04, 0x00)
        .with_data(aid)
        .with_le(MAX_LE_SHORT)
}

/// The applets that answer SELECT with `9000` (after any GET RESPONSE), in [`Applet::ALL`]'s order.
/// Anything else (`6A82` "not found", `6D00`, `6E00`, a warning) means the card does not offer that
/// applet. Each SELECT deselects the one before, and PIV, asked last, is left selected when present;
/// every applet client SELECTs its own applet before use all the same.
///
/// Errors: only the transport's (a card pulled out, a timeout) and malformed answers.
pub fn probe<T: CardTransport + ?Sized>(card: &mut T) -> Result<Vec<Applet>> {
    let mut io = Exchange::new(card);
    let mut found = Vec::new();
    for applet in Applet::ALL {
        if io.transmit(&select_command(applet.aid()))?.sw.is_success() {
            found.push(applet);
        }
    }
    Ok(found)
}

#[cfg(test)]
#[path = "applets_test.rs"]
mod tests;

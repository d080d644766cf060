//! The card exchanges that spend a PIN: verifying it without spending the last retry, signing a
//! challenge, and dropping the PIN's security status afterwards.

use crate::piv::{Pin, PinStatus, Piv, Slot};
use crate::transport::CardTransport;
use crate::{Error, Result};

/// Verifies the PIN without ever spending a card's last retry (when the policy says so).
pub(super) fn guarded_verify(
    piv: &mut Piv<'_, dyn CardTransport + '_>,
    pin: &Pin,
    keep_last: bool,
) -> Result<()> {
    match piv.pin_status()? {
        PinStatus::Blocked => return Err(Error::PinBlocked),
        PinStatus::Retries(1) if keep_last => return Err(Error::PinWouldBlock { retries: 1 }),
        PinStatus::Retries(0) => return Err(Error::PinBlocked),
        PinStatus::Retries(_) | PinStatus::Verified => {}
    }
    piv.verify_pin(pin)
}

/// Signs `digest` with `slot`, verifying the PIN first if one is given. The caller drops the PIN's
/// security status afterwards ([`reset_pin_status`]).
pub(super) fn pin_and_sign(
    card: &mut dyn CardTransport,
    slot: Slot,
    pin: Option<&Pin>,
    keep_last: bool,
    digest: &[u8; 32],
) -> Result<Vec<u8>> {
    let mut piv = Piv::new(card);
    piv.select()?;
    if let Some(pin) = pin {
        guarded_verify(&mut piv, pin, keep_last)?;
    }
    piv.sign_p256(slot, digest)
}

/// Drops the PIN's security status (VERIFY with P1 = FF, SP 800-73-4 Part 2 §3.2.1) so that no other
/// application can use the card's keys on the strength of a PIN Tessera verified. Best effort: a card
/// without the reset still signed correctly, and its status ends at the next reset anyway.
pub(super) fn reset_pin_status(card: &mut dyn CardTransport) {
    let _ = Piv::new(card).reset_pin_status();
}

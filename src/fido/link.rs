//! What a transport session to a FIDO authenticator offers, whatever carries it: CTAPHID over USB
//! HID ([`super::ctaphid`], CTAP 2.1 §11.2) or NFCCTAP over ISO 7816 APDUs ([`super::nfc`], §11.3).
//! Everything above (CTAP2 commands, PIN protocols, U2F) speaks to a `dyn CtapLink`.

use std::time::Instant;

use crate::cancel::CancelToken;
use crate::Result;

/// Largest CTAPHID message (CTAP 2.1 §11.2.4: one initialization packet of 57 bytes and 128
/// continuation packets of 59): 7609 bytes.
pub const MAX_CTAPHID_MESSAGE: usize = 7609;

/// What the authenticator said about itself at the transport level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCapabilities {
    /// It speaks CTAP2 (CTAPHID: CAPABILITY_CBOR and not only NMSG; NFC: "FIDO_2_0" at SELECT).
    pub cbor: bool,
    /// It speaks CTAP1/U2F raw messages (CTAPHID: not CAPABILITY_NMSG; NFC: "U2F_V2").
    pub msg: bool,
    /// It can wink (CTAPHID CAPABILITY_WINK).
    pub wink: bool,
    /// Largest request message the link carries (CTAPHID: 7609; the CTAP2 maxMsgSize of getInfo
    /// may lower it further, which is the caller's business).
    pub max_msg_size: usize,
}

/// A keepalive status (CTAP 2.1 §11.2.9.2.1; NFC: the status byte of a 9100 poll, §11.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// STATUS_PROCESSING: the authenticator is still working.
    Processing,
    /// STATUS_UPNEEDED: it waits for the user's touch.
    UpNeeded,
}

/// What one exchange may do while it waits: the request's cancel flag, a deadline, and where
/// keepalive statuses go (the caller turns UPNEEDED into Progress "touch-needed").
pub struct LinkContext<'a> {
    /// Once set, the link stops waiting: CTAPHID sends CTAPHID_CANCEL (§11.2.9.1.5), waits briefly
    /// for the answer (CTAP2_ERR_KEEPALIVE_CANCEL, or any late answer, which is discarded) and
    /// returns [`crate::Error::Cancelled`]; NFC stops polling.
    pub cancel: &'a CancelToken,
    /// The exchange gives up at this instant with [`crate::Error::Timeout`] (CTAPHID: after a
    /// CTAPHID_CANCEL, so the key does not keep waiting for a touch nobody wants).
    pub deadline: Instant,
    /// Called with each keepalive status, in order, on the link's thread.
    pub keepalive: &'a mut dyn FnMut(Keepalive),
}

/// One transport session to a FIDO authenticator.
///
/// Errors of every method: [`crate::Error::DeviceRemoved`] when the device is gone (socket closed,
/// hidraw node vanished, card pulled), [`crate::Error::Device`] for a transport that broke its
/// protocol (bad framing, an unexpected command, a message over the limit; the message says what),
/// [`crate::Error::Busy`] when the key stayed CHANNEL_BUSY through the back-off,
/// [`crate::Error::Cancelled`], [`crate::Error::Timeout`]. A CTAP2 status byte other than
/// success is *not* an error here: it is the first byte of the answer.
pub trait CtapLink: Send {
    /// What the transport offers.
    fn capabilities(&self) -> LinkCapabilities;

    /// One authenticator API command (CTAPHID_CBOR, §11.2.9.1.2; NFCCTAP_MSG, §11.3): `request`
    /// is the command byte followed by its CBOR parameters; the answer is the status byte followed
    /// by the CBOR response (CTAP 2.1 §8).
    fn cbor(&mut self, request: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>>;

    /// One U2F raw message (CTAPHID_MSG, §11.2.9.1.1; over NFC, the APDU itself): `apdu` is an
    /// ISO 7816-4 command APDU in extended form (U2F raw message formats §2.4); the answer is the
    /// response data followed by SW1 SW2.
    fn msg(&mut self, apdu: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>>;

    /// CTAPHID_PING (§11.2.9.1.3): `data` echoed back (for benchmarks and liveness checks).
    /// Errors: [`crate::Error::InvalidArgument`] on links without it (NFC).
    fn ping(&mut self, data: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>>;
}

impl<T: CtapLink + ?Sized> CtapLink for Box<T> {
    fn capabilities(&self) -> LinkCapabilities {
        (**self).capabilities()
    }
    fn cbor(&mut self, request: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        (**self).cbor(request, ctx)
    }
    fn msg(&mut self, apdu: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        (**self).msg(apdu, ctx)
    }
    fn ping(&mut self, data: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        (**self).ping(data, ctx)
    }
}

//! NFCCTAP (CTAP 2.1 §11.3): CTAP messages in ISO/IEC 7816-4 APDUs to the FIDO applet, over NFC or
//! a contact reader. The applet is selected by AID (§11.3.3); CTAP2 commands go in NFCCTAP_MSG
//! (CLA `80`, INS `10`), through the shared [`Exchange`] (short-APDU chaining and GET RESPONSE,
//! §11.3.4 allowing either that or extended lengths); a key that is still working answers `9100`
//! with a status byte and is polled with NFCCTAP_GETRESPONSE (INS `11`) until it answers (§11.3.5).
//! U2F raw messages go as the APDUs they are (FIDO U2F NFC protocol §4).

use std::thread;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::fido::link::{CtapLink, Keepalive, LinkCapabilities, LinkContext};
use crate::iso7816::apdu::{Command, Response, StatusWord, MAX_DATA_EXTENDED, MAX_LE_EXTENDED};
use crate::iso7816::applets::{select_command, FIDO_AID};
use crate::iso7816::exchange::{Exchange, Lengths};
use crate::transport::CardTransport;
use crate::{Error, Result};

/// CLA of the NFCCTAP commands (§11.3.4).
const CLA_NFCCTAP: u8 = 0x80;
/// NFCCTAP_MSG: one CTAP2 command.
const INS_NFCCTAP_MSG: u8 = 0x10;
/// NFCCTAP_GETRESPONSE: the answer to the command in progress, or its status (§11.3.5).
const INS_NFCCTAP_GETRESPONSE: u8 = 0x11;
/// P1 of NFCCTAP_MSG telling the key that this client takes `9100` status updates and polls.
const P1_CLIENT_POLLS: u8 = 0x80;
/// "Status update": the key still works on the command; the data is the status byte.
const SW_STATUS_UPDATE: u16 = 0x9100;

/// Status bytes of a status update (the CTAPHID keepalive statuses, §11.2.9.1.7).
const STATUS_PROCESSING: u8 = 0x01;
const STATUS_UPNEEDED: u8 = 0x02;

/// Pause before each NFCCTAP_GETRESPONSE, so that a key waiting for a touch (which answers each
/// poll at once) is not flooded with APDUs; short enough for the cancel to be seen at once.
const POLL_PAUSE: Duration = Duration::from_millis(10);

/// How long [`NfcLink::select`] waits for the authenticatorGetInfo that tells whether a key
/// answering "U2F_V2" also speaks CTAP2 (no user action is involved).
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// authenticatorGetInfo (CTAP 2.1 §6.4): command byte, no parameters.
const GET_INFO: [u8; 1] = [0x04];

/// A session with the FIDO applet of one card, selected. Lives as long as the caller's exclusive
/// use of the card (one operation of the device worker).
pub struct NfcLink<'a> {
    card: &'a mut dyn CardTransport,
    capabilities: LinkCapabilities,
    /// Whether NFCCTAP_MSG goes with P1 = `80` (status updates and polling). Cleared for the rest
    /// of the session once the key refuses P1 = `80` or NFCCTAP_GETRESPONSE with `6D00`: such keys
    /// answer directly.
    polls: bool,
}

impl<'a> NfcLink<'a> {
    /// SELECTs the FIDO applet (§11.3.3) and learns what it speaks from its version string:
    /// "FIDO_2_0" (and the later "FIDO_2_…") CTAP2 (U2F is offered too, to be tried by the
    /// caller), "U2F_V2" U2F, and CTAP2 as well when an authenticatorGetInfo succeeds, since CTAP2
    /// keys that keep U2F answer "U2F_V2" (§11.3.3).
    ///
    /// Errors: the card's; [`Error::Device`] when there is no FIDO applet or its version string is
    /// unknown.
    pub fn select(card: &'a mut dyn CardTransport) -> Result<NfcLink<'a>> {
        Self::select_knowing(card, None)
    }

    /// [`NfcLink::select`] for a key whose CTAP2 support is already known (`Some`: learned when
    /// it was identified), so that a key answering "U2F_V2" is not asked authenticatorGetInfo
    /// again on every operation.
    pub fn select_knowing(
        card: &'a mut dyn CardTransport,
        speaks_cbor: Option<bool>,
    ) -> Result<NfcLink<'a>> {
        let answer = Exchange::new(&mut *card).transmit(&select_command(&FIDO_AID))?;
        if !answer.sw.is_success() {
            return Err(Error::Device(format!(
                "the card has no FIDO applet (SELECT answered {})",
                answer.sw
            )));
        }
        let (cbor, probe) = match answer.data.as_slice() {
            b"U2F_V2" => (false, true),
            v if v.starts_with(b"FIDO_2_") => (true, false),
            other => {
                return Err(Error::Device(format!(
                    "the FIDO applet answered SELECT with an unknown version {:?}",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        let mut link = NfcLink {
            card,
            capabilities: LinkCapabilities {
                cbor,
                msg: true,
                wink: false,
                max_msg_size: MAX_DATA_EXTENDED,
            },
            polls: true,
        };
        if probe {
            link.capabilities.cbor = match speaks_cbor {
                Some(known) => known,
                None => link.speaks_cbor()?,
            };
        }
        Ok(link)
    }

    /// Whether authenticatorGetInfo succeeds. Errors: only a card gone.
    fn speaks_cbor(&mut self) -> Result<bool> {
        let cancel = CancelToken::new();
        let mut ignore = |_: Keepalive| {};
        let mut ctx = LinkContext {
            cancel: &cancel,
            deadline: Instant::now() + PROBE_WAIT,
            keepalive: &mut ignore,
        };
        match self.cbor(&GET_INFO, &mut ctx) {
            Ok(answer) => Ok(answer.first() == Some(&0x00)),
            Err(Error::DeviceRemoved) => Err(Error::DeviceRemoved),
            Err(e) => {
                tracing::debug!("no CTAP2 behind \"U2F_V2\": {e}");
                Ok(false)
            }
        }
    }

    /// One NFCCTAP_MSG, P1 as the session allows.
    fn send_msg(&mut self, request: &[u8]) -> Result<Response> {
        let p1 = if self.polls { P1_CLIENT_POLLS } else { 0x00 };
        let command = Command::new(CLA_NFCCTAP, INS_NFCCTAP_MSG, p1, 0x00)
            .with_data(request)
            .with_le(MAX_LE_EXTENDED);
        let answer = self.exchange(&command)?;
        if self.polls && refuses_polling(answer.sw) {
            tracing::debug!(sw = %answer.sw, "the key refuses NFCCTAP_MSG with P1 80; sending P1 00");
            self.polls = false;
            return self.send_msg(request);
        }
        Ok(answer)
    }

    fn exchange(&mut self, command: &Command) -> Result<Response> {
        Exchange::with_lengths(&mut *self.card, Lengths::Short).transmit(command)
    }
}

/// The answers of a key that does not know P1 = `80` or NFCCTAP_GETRESPONSE (INS not supported,
/// or a P1 it does not take).
fn refuses_polling(sw: StatusWord) -> bool {
    matches!(sw, StatusWord::InsNotSupported | StatusWord::IncorrectP1P2)
}

impl CtapLink for NfcLink<'_> {
    fn capabilities(&self) -> LinkCapabilities {
        self.capabilities
    }

    /// NFCCTAP_MSG, then NFCCTAP_GETRESPONSE while the key answers `9100`, each status byte a
    /// keepalive. A cancel or the deadline stops the polling (NFC has no CTAPHID_CANCEL; the key
    /// gives up on its own once the field or the polling is gone).
    fn cbor(&mut self, request: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        if request.is_empty() {
            return Err(Error::InvalidArgument(
                "a CTAP2 command without its command byte".into(),
            ));
        }
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let started = Instant::now();
        let mut answer = self.send_msg(request)?;
        while answer.sw.to_u16() == SW_STATUS_UPDATE {
            match answer.data.first() {
                Some(&STATUS_PROCESSING) => (ctx.keepalive)(Keepalive::Processing),
                Some(&STATUS_UPNEEDED) => (ctx.keepalive)(Keepalive::UpNeeded),
                _ => {}
            }
            wait_before_poll(ctx, started)?;
            let poll = Command::new(CLA_NFCCTAP, INS_NFCCTAP_GETRESPONSE, 0x00, 0x00)
                .with_le(MAX_LE_EXTENDED);
            answer = self.exchange(&poll)?;
            if refuses_polling(answer.sw) {
                // It sent a status update but does not know the poll: ask again, without updates.
                tracing::debug!(sw = %answer.sw, "the key refuses NFCCTAP_GETRESPONSE; resending");
                self.polls = false;
                answer = self.send_msg(request)?;
            }
        }
        if !answer.sw.is_success() {
            return Err(Error::Device(format!(
                "the FIDO applet answered NFCCTAP_MSG with {}",
                answer.sw
            )));
        }
        if answer.data.is_empty() {
            return Err(Error::Device(
                "the FIDO applet answered NFCCTAP_MSG without a status byte".into(),
            ));
        }
        Ok(answer.data)
    }

    /// The U2F command APDU with its header, data and Le as given; the link picks the framing
    /// (chaining, GET RESPONSE for answers over 256 bytes) and returns data and SW1 SW2, whatever
    /// the status word.
    fn msg(&mut self, apdu: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let command = Command::parse(apdu)
            .map_err(|e| Error::InvalidArgument(format!("malformed U2F APDU: {e}")))?;
        Ok(self.exchange(&command)?.to_bytes())
    }

    fn ping(&mut self, _data: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Err(Error::InvalidArgument(
            "PING is a CTAPHID command; NFC has none".into(),
        ))
    }
}

/// [`POLL_PAUSE`], unless the request is cancelled or out of time.
fn wait_before_poll(ctx: &LinkContext<'_>, started: Instant) -> Result<()> {
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let now = Instant::now();
    if now >= ctx.deadline {
        return Err(Error::Timeout {
            what: "the security key did not answer",
            after: now - started,
        });
    }
    thread::sleep(POLL_PAUSE.min(ctx.deadline - now));
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

#[cfg(test)]
#[path = "nfc_test.rs"]
mod tests;

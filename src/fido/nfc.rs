//! NFCCTAP (CTAP 2.1 §11.3): CTAP messages in ISO 7816-4 APDUs to the FIDO applet, over NFC or a
//! contact reader.

use crate::fido::link::{CtapLink, LinkCapabilities, LinkContext};
use crate::transport::CardTransport;
use crate::{Error, Result};

/// A session with the FIDO applet of one card, selected.
pub struct NfcLink<'a> {
    card: &'a mut dyn CardTransport,
    capabilities: LinkCapabilities,
}

impl<'a> NfcLink<'a> {
    /// SELECTs the FIDO applet and learns from its version string what it speaks.
    pub fn select(card: &'a mut dyn CardTransport) -> Result<NfcLink<'a>> {
        let _ = card;
        Err(Error::Internal("NFC not yet written".into()))
    }
}

impl CtapLink for NfcLink<'_> {
    fn capabilities(&self) -> LinkCapabilities {
        self.capabilities
    }
    fn cbor(&mut self, _request: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        let _ = &mut self.card;
        Err(Error::Internal("NFC not yet written".into()))
    }
    fn msg(&mut self, _apdu: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Err(Error::Internal("NFC not yet written".into()))
    }
    fn ping(&mut self, _data: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Err(Error::InvalidArgument("NFC has no CTAPHID_PING".into()))
    }
}

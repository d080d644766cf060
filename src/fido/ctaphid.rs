//! CTAPHID (CTAP 2.1 §11.2): CTAP messages in 64-byte USB HID reports, on a channel of the key.

use crate::fido::link::{CtapLink, LinkCapabilities, LinkContext, MAX_CTAPHID_MESSAGE};
use crate::transport::HidTransport;
use crate::{Error, Result};

/// A CTAPHID session with one key: allocates its channel with CTAPHID_INIT at first use.
pub struct CtapHid {
    hid: Box<dyn HidTransport>,
}

impl CtapHid {
    /// A session over `hid`; nothing is sent until the first use.
    pub fn new(hid: Box<dyn HidTransport>) -> CtapHid {
        CtapHid { hid }
    }
}

impl CtapLink for CtapHid {
    fn capabilities(&self) -> LinkCapabilities {
        let _ = &self.hid;
        LinkCapabilities {
            cbor: false,
            msg: false,
            wink: false,
            max_msg_size: MAX_CTAPHID_MESSAGE,
        }
    }
    fn cbor(&mut self, _request: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Err(Error::Internal("CTAPHID not yet written".into()))
    }
    fn msg(&mut self, _apdu: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Err(Error::Internal("CTAPHID not yet written".into()))
    }
    fn ping(&mut self, _data: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Err(Error::Internal("CTAPHID not yet written".into()))
    }
}

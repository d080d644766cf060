//! Which authenticator serves a device: a card over PC/SC is a PIV card for now; the FIDO applet
//! over NFC (CTAP 2.1 §11.3) will be probed beside it, and HID keys get theirs from the HID source.

use std::sync::Arc;

use super::Authenticator;
use crate::piv::authenticator::PivAuthenticator;
use crate::transport::worker::DeviceWorker;

/// The authenticator of the card behind `worker`, published as device `device_id`.
pub fn card_authenticator(worker: DeviceWorker, device_id: String) -> Arc<dyn Authenticator> {
    Arc::new(PivAuthenticator::new(worker, device_id))
}

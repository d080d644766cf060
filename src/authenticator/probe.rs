//! Which authenticator serves a device: a card over PC/SC is a PIV card, or the FIDO applet over
//! NFC or contacts (CTAP 2.1 §11.3), or both (the service decides which a card gets); a USB HID
//! key is a FIDO key.

use std::sync::Arc;

use super::Authenticator;
use crate::fido::authenticator::FidoAuthenticator;
use crate::piv::authenticator::PivAuthenticator;
use crate::transport::worker::{DeviceWorker, HidWorker};

/// The PIV authenticator of the card behind `worker`, published as device `device_id`.
pub fn card_authenticator(worker: DeviceWorker, device_id: String) -> Arc<dyn Authenticator> {
    Arc::new(PivAuthenticator::new(worker, device_id))
}

/// The FIDO authenticator of the card behind `worker` (its FIDO applet, selected in each
/// operation), published as device `device_id`.
pub fn fido_card_authenticator(worker: DeviceWorker, device_id: String) -> Arc<dyn Authenticator> {
    Arc::new(FidoAuthenticator::over_card(worker, device_id))
}

/// The FIDO authenticator of the USB HID (or simulated HID) key behind `worker`.
pub fn hid_authenticator(worker: HidWorker, device_id: String) -> Arc<dyn Authenticator> {
    Arc::new(FidoAuthenticator::over_hid(worker, device_id))
}

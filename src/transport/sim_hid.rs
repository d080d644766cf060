//! The simulated-HID device source (`[device] simulated_hid_dir`): each Unix stream socket in the
//! directory is a simulated FIDO key plugged in (`tessera-sim fido --hid-socket`), carrying exactly
//! one 64-byte HID report per message, both ways, without report ID.

use std::path::Path;

use tokio::sync::mpsc::UnboundedSender;

use crate::transport::events::DeviceEvent;
use crate::{Error, Result};

/// Watches the simulated-HID directory until dropped.
pub struct SimHidSource {
    _private: (),
}

impl SimHidSource {
    /// Starts watching `dir`; events go to `events`.
    pub fn start(dir: &Path, events: UnboundedSender<DeviceEvent>) -> Result<Self> {
        let _ = (dir, events);
        Err(Error::Internal(
            "simulated HID source not yet written".into(),
        ))
    }
}

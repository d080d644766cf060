//! `org.tessera.Tessera1.Device` at `/org/tessera/Tessera1/devices/<id>`: one present device.

use zbus::proxy;

/// A present device (build it with the device's path, [`crate::names::device_path`]).
#[proxy(
    interface = "org.tessera.Tessera1.Device",
    default_service = "org.tessera.Tessera1"
)]
pub trait Device {
    /// "piv", "fido", or "unknown".
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<String>;
    /// "pcsc", "nfc", "hid" or "sim".
    #[zbus(property)]
    fn transport(&self) -> zbus::Result<String>;
    /// Human-readable name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// Where the device is: the PC/SC reader, the hidraw node or the simulated key's socket path.
    #[zbus(property)]
    fn reader(&self) -> zbus::Result<String>;
}

//! `org.tessera.Tessera1.Device` at `/org/tessera/Tessera1/devices/<id>`: one present device.

use zbus::proxy;

/// A present device (build it with the device's path, [`crate::names::device_path`]).
#[proxy(
    interface = "org.tessera.Tessera1.Device",
    default_service = "org.tessera.Tessera1"
)]
pub trait Device {
    /// "piv" (later "fido").
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<String>;
    /// "pcsc" (later "hid").
    #[zbus(property)]
    fn transport(&self) -> zbus::Result<String>;
    /// Human-readable name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// The PC/SC reader the card is in.
    #[zbus(property)]
    fn reader(&self) -> zbus::Result<String>;
}

//! The hardware boundaries, at byte level. Everything above them (APDU chaining, GET RESPONSE, CTAPHID
//! framing) is protocol code that the simulator exercises too.

pub mod events;
pub mod hid;
pub mod pcsc;
pub mod pcscd_instance;
#[cfg(test)]
pub(crate) mod scripted;
pub mod sim_hid;
pub mod worker;

use std::time::Duration;

use crate::Result;

/// A smartcard connection: one command APDU in, one response APDU (data and SW1 SW2) out.
///
/// Implementations map a card pulled out to [`crate::Error::DeviceRemoved`] and a stuck device to
/// [`crate::Error::Timeout`].
pub trait CardTransport: Send {
    /// Sends one command APDU and returns the raw response, status word included.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>>;
}

/// A USB HID connection to a FIDO authenticator: 64-byte reports (CTAPHID, CTAP 2.1 §11.2.4).
pub trait HidTransport: Send {
    /// Writes one output report (exactly [`HID_REPORT_LEN`] bytes, without the report-ID byte).
    fn write_report(&mut self, report: &[u8; HID_REPORT_LEN]) -> Result<()>;
    /// Reads one input report, waiting at most `timeout`: `None` when none came in time (the
    /// caller checks its cancel flag and deadline, then reads again).
    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; HID_REPORT_LEN]>>;
}

/// Size of a CTAPHID report on full-speed USB.
pub const HID_REPORT_LEN: usize = 64;

impl<T: HidTransport + ?Sized> HidTransport for Box<T> {
    fn write_report(&mut self, report: &[u8; HID_REPORT_LEN]) -> Result<()> {
        (**self).write_report(report)
    }
    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; HID_REPORT_LEN]>> {
        (**self).read_report(timeout)
    }
}

impl<T: CardTransport + ?Sized> CardTransport for Box<T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        (**self).transmit(command)
    }
}

//! Devices coming and going, whatever their transport: each device source (the PC/SC reader monitor
//! in [`super::pcsc`], USB HID FIDO keys in [`super::hid`], the simulated keys' socket directory in
//! [`super::sim_hid`]) reports [`DeviceEvent`]s into one channel, and [`DeviceSources`] starts them
//! all, so that whoever feeds the events to the service knows no transport. A source whose system
//! service is missing (no pcscd, no access to hidraw) warns and retries or idles; it never fails the
//! start.

use std::fmt;
use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedSender;

use super::hid::HidMonitor;
use super::pcsc::Monitor;
use super::sim_hid::SimHidSource;
use super::worker::CardConnection;
use super::HidTransport;
use crate::Result;

/// How a device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A smartcard reader through pcscd (contact, or NFC through a PC/SC reader).
    Pcsc,
    /// USB HID reports (CTAPHID, CTAP 2.1 §11.2) through hidraw.
    Hid,
    /// The reports of USB HID, over a Unix socket of a simulated key (`tessera-sim fido
    /// --hid-socket`) in the configured `[device] simulated_hid_dir`.
    Sim,
}

impl Transport {
    /// The name on the bus and in the logs: "pcsc", "hid" or "sim".
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Pcsc => "pcsc",
            Transport::Hid => "hid",
            Transport::Sim => "sim",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a device is, as far as its source can tell before talking to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// An ISO/IEC 7816 card, or a key that speaks like one: which applets it offers (PIV, FIDO) is
    /// found by probing it ([`crate::iso7816::applets::probe`]).
    SmartCard,
    /// A FIDO security key on USB HID (or a simulated one on its socket): it speaks CTAPHID.
    SecurityKey,
}

/// The open line to a new device, handed to the service with [`DeviceEvent::Added`].
pub enum DeviceConnection {
    /// APDUs (PC/SC). The connection may connect lazily, at the service's first use.
    Card(Box<dyn CardConnection>),
    /// 64-byte HID reports of a FIDO key, opened; CTAPHID ([`crate::fido::ctaphid::CtapHid`]) goes
    /// on top.
    Hid(Box<dyn HidTransport>),
}

impl fmt::Debug for DeviceConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceConnection::Card(_) => f.write_str("Card(..)"),
            DeviceConnection::Hid(_) => f.write_str("Hid(..)"),
        }
    }
}

/// A device that became present.
#[derive(Debug)]
pub struct AddedDevice {
    /// Where it is: the PC/SC reader name, the hidraw node (`/dev/hidraw3`) or the simulated key's
    /// socket path. Unique among present devices; the device's later events name it the same way.
    pub location: String,
    pub kind: DeviceKind,
    pub transport: Transport,
    /// The card is reached over NFC: the reader or the ATR says contactless (PC/SC Part 3
    /// §3.1.3.2.3, ATR `3B 8n 80 01 …`). Always false for HID. The service publishes such a card's
    /// transport as "nfc".
    pub contactless: bool,
    /// The source's count of insertions and removals at `location` (pcscd's event count); tells a
    /// device that stayed from one that was swapped while nobody watched.
    pub event_count: u64,
    /// The run of the source's system service that counted `event_count` (pcscd's process
    /// identity, [`super::pcscd_instance`]); `None` when unknown, which matches no earlier count.
    pub source_instance: Option<String>,
    pub connection: DeviceConnection,
}

/// A change seen by a device source. Events of one location arrive in order.
#[derive(Debug)]
pub enum DeviceEvent {
    /// A device is present (also reported for devices present when the source starts).
    Added(AddedDevice),
    /// The device at `location` left (or its reader did).
    Removed {
        transport: Transport,
        location: String,
    },
    /// The device at `location` is the same insertion but looks different (it answered after being
    /// mute, or was reset): worth identifying again if it could not be identified before.
    Changed {
        transport: Transport,
        location: String,
    },
    /// The source's first scan since it (re)connected to its system service is complete: every
    /// present device was reported.
    EnumerationComplete { transport: Transport },
    /// The source lost its system service (pcscd stopped): every device it reported is to be taken
    /// as removed. It keeps retrying and enumerates again once the service is back.
    SourceLost {
        transport: Transport,
        reason: String,
    },
}

/// Which device sources to start beside the machine's own (PC/SC and USB HID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOptions {
    /// `[device] simulated_hid_dir`: a directory where each Unix socket is a simulated FIDO key
    /// plugged in ([`super::sim_hid`]). `None` (the default): no such source.
    pub simulated_hid_dir: Option<PathBuf>,
}

/// The device sources of this machine, running until dropped.
pub struct DeviceSources {
    transports: Vec<Transport>,
    _pcsc: Monitor,
    _hid: HidMonitor,
    _sim: Option<SimHidSource>,
}

impl DeviceSources {
    /// Starts every source this build has (PC/SC, USB HID, and the simulated-HID directory when
    /// `options` names one); their events go to `events`. Must be called within a Tokio runtime
    /// (the simulated-HID source runs on it).
    ///
    /// Errors: only a source that cannot start at all (no thread, no runtime, an unreadable
    /// simulated-HID directory); an absent pcscd or missing hidraw access is not one.
    pub fn start(events: UnboundedSender<DeviceEvent>, options: SourceOptions) -> Result<Self> {
        let mut transports = vec![Transport::Pcsc, Transport::Hid];
        let sim = match &options.simulated_hid_dir {
            Some(dir) => {
                transports.push(Transport::Sim);
                Some(SimHidSource::start(dir, events.clone())?)
            }
            None => None,
        };
        Ok(DeviceSources {
            transports,
            _pcsc: Monitor::start(events.clone())?,
            _hid: HidMonitor::start(events)?,
            _sim: sim,
        })
    }

    /// The transports of the running sources: each sends its own
    /// [`DeviceEvent::EnumerationComplete`].
    pub fn transports(&self) -> &[Transport] {
        &self.transports
    }
}

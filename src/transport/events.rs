//! Devices coming and going, whatever their transport: each device source (the PC/SC reader monitor
//! in [`super::pcsc`]; USB HID for FIDO keys next, beside it) reports [`DeviceEvent`]s into one
//! channel, and [`DeviceSources`] starts them all, so that whoever feeds the events to the service
//! knows no transport. A source whose system service is missing (no pcscd) warns and retries; it
//! never fails the start.

use std::fmt;

use tokio::sync::mpsc::UnboundedSender;

use super::pcsc::Monitor;
use super::worker::CardConnection;
use crate::Result;

/// How a device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A smartcard reader through pcscd (contact, or NFC through a PC/SC reader).
    Pcsc,
    /// USB HID reports (CTAPHID, CTAP 2.1 §11.2). No source produces it yet: FIDO keys are the next
    /// issue.
    Hid,
}

impl Transport {
    /// The name on the bus and in the logs: "pcsc" or "hid".
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Pcsc => "pcsc",
            Transport::Hid => "hid",
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
    /// A FIDO security key on USB HID (the next issue).
    SecurityKey,
}

/// The open line to a new device, handed to the service with [`DeviceEvent::Added`].
pub enum DeviceConnection {
    /// APDUs (PC/SC). The connection may connect lazily, at the service's first use.
    Card(Box<dyn CardConnection>),
}

impl fmt::Debug for DeviceConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceConnection::Card(_) => f.write_str("Card(..)"),
        }
    }
}

/// A device that became present.
#[derive(Debug)]
pub struct AddedDevice {
    /// Where it is: the PC/SC reader name (later a hidraw path). Unique among present devices; the
    /// device's later events name it the same way.
    pub location: String,
    pub kind: DeviceKind,
    pub transport: Transport,
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

/// The device sources of this machine, running until dropped.
pub struct DeviceSources {
    transports: Vec<Transport>,
    _pcsc: Monitor,
}

impl DeviceSources {
    /// Starts every source this build has (PC/SC; HID next); their events go to `events`.
    ///
    /// Errors: only a source that cannot start at all (no thread); an absent pcscd is not one.
    pub fn start(events: UnboundedSender<DeviceEvent>) -> Result<Self> {
        Ok(DeviceSources {
            transports: vec![Transport::Pcsc],
            _pcsc: Monitor::start(events)?,
        })
    }

    /// The transports of the running sources: each sends its own
    /// [`DeviceEvent::EnumerationComplete`].
    pub fn transports(&self) -> &[Transport] {
        &self.transports
    }
}

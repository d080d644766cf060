//! The USB HID device source: FIDO keys on hidraw nodes, known by the FIDO usage page `F1D0` and
//! usage `01` of their report descriptor (CTAP 2.1 §11.2.8.1), found with hidapi and watched with a
//! udev monitor on the `hidraw` subsystem; and a [`HidTransport`] over an opened
//! `hidapi::HidDevice`.
//!
//! The monitor runs on a thread of its own that sleeps in the udev netlink socket, so an idle
//! daemon does not wake up. No access to hidraw (no node readable by the daemon: see
//! `udev/70-tessera.rules`) is a warning per key, never an error: PC/SC devices work regardless.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use hidapi::{HidApi, HidDevice};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use crate::transport::events::{AddedDevice, DeviceConnection, DeviceEvent, DeviceKind, Transport};
use crate::transport::{HidTransport, HID_REPORT_LEN};
use crate::{Error, Result};

/// The FIDO Alliance HID usage page (CTAP 2.1 §11.2.8.1).
pub const FIDO_USAGE_PAGE: u16 = 0xF1D0;
/// The CTAPHID usage on that page.
pub const FIDO_USAGE_CTAPHID: u16 = 0x01;

/// Whether a HID top-level collection is a FIDO authenticator's.
pub fn is_fido(usage_page: u16, usage: u16) -> bool {
    usage_page == FIDO_USAGE_PAGE && usage == FIDO_USAGE_CTAPHID
}

/// The hidraw paths of FIDO collections among `(path, usage page, usage)`, each once and in order
/// (hidapi lists a node once per top-level collection, so a composite key can appear several
/// times, and with other usages).
pub fn fido_paths<'a>(collections: impl IntoIterator<Item = (&'a CStr, u16, u16)>) -> Vec<CString> {
    let mut seen = HashSet::new();
    collections
        .into_iter()
        .filter(|&(_, page, usage)| is_fido(page, usage))
        .filter(|(path, _, _)| seen.insert(path.to_owned()))
        .map(|(path, _, _)| path.to_owned())
        .collect()
}

/// Watches hidraw nodes for FIDO keys until dropped.
pub struct HidMonitor {
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl HidMonitor {
    /// Starts watching; events go to `events`: an Added for each FIDO key present, then
    /// [`DeviceEvent::EnumerationComplete`] (also when HID cannot be used at all), then changes.
    ///
    /// Errors: only a thread that cannot be started.
    pub fn start(events: UnboundedSender<DeviceEvent>) -> Result<Self> {
        let (stop, stopped) = oneshot::channel();
        thread::Builder::new()
            .name("hid monitor".into())
            .spawn(move || watch(&events, stopped))?;
        Ok(HidMonitor {
            stop: Mutex::new(Some(stop)),
        })
    }
}

impl Drop for HidMonitor {
    fn drop(&mut self) {
        if let Some(stop) = crate::locks::lock(&self.stop).take() {
            let _ = stop.send(());
        }
    }
}

fn watch(events: &UnboundedSender<DeviceEvent>, stopped: oneshot::Receiver<()>) {
    let complete = || {
        let _ = events.send(DeviceEvent::EnumerationComplete {
            transport: Transport::Hid,
        });
    };
    let mut api = match HidApi::new() {
        Ok(api) => api,
        Err(e) => {
            tracing::warn!("USB HID is not available ({e}); FIDO keys on USB are not seen");
            complete();
            return;
        }
    };
    // The monitor before the scan: a key plugged in between is seen by one or both.
    let monitor = udev::MonitorBuilder::new()
        .and_then(|b| b.match_subsystem("hidraw"))
        .and_then(|b| b.listen());
    let mut present = HashSet::new();
    rescan(&mut api, &mut present, events);
    complete();
    let monitor = match monitor {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("no udev monitor ({e}); FIDO keys plugged in later are not seen");
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(
                "no runtime for the udev monitor ({e}); FIDO keys plugged in later are not seen"
            );
            return;
        }
    };
    runtime.block_on(async move {
        let monitor = match register(monitor) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("cannot wait on the udev monitor ({e}); FIDO keys plugged in later are not seen");
                return;
            }
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                ready = monitor.readable() => {
                    match ready {
                        // Cleared before draining: an event arriving meanwhile is drained now
                        // and wakes the loop once more (for nothing), never lost.
                        Ok(mut guard) => guard.clear_ready(),
                        Err(e) => {
                            tracing::warn!("the udev monitor failed ({e}); FIDO keys plugged in later are not seen");
                            return;
                        }
                    }
                    let mut added = false;
                    for event in monitor.get_ref().iter() {
                        let Some(node) = event.devnode().map(|p| p.to_string_lossy().into_owned()) else {
                            continue;
                        };
                        match event.event_type() {
                            udev::EventType::Add => added = true,
                            udev::EventType::Remove if present.remove(&node) => {
                                let _ = events.send(DeviceEvent::Removed {
                                    transport: Transport::Hid,
                                    location: node,
                                });
                            }
                            _ => {}
                        }
                    }
                    if added {
                        rescan(&mut api, &mut present, events);
                    }
                    if events.is_closed() {
                        return;
                    }
                }
            }
        }
    });
}

/// Lists the FIDO keys and reports those not reported yet. A key that cannot be opened (no
/// permission) is warned about and left out.
fn rescan(api: &mut HidApi, present: &mut HashSet<String>, events: &UnboundedSender<DeviceEvent>) {
    if let Err(e) = api.refresh_devices() {
        tracing::warn!("listing USB HID devices failed: {e}");
        return;
    }
    let paths = fido_paths(
        api.device_list()
            .map(|d| (d.path(), d.usage_page(), d.usage())),
    );
    for path in paths {
        let location = path.to_string_lossy().into_owned();
        if present.contains(&location) {
            continue;
        }
        match api.open_path(&path) {
            Ok(device) => {
                present.insert(location.clone());
                tracing::debug!(node = %location, "FIDO key plugged in");
                let _ = events.send(DeviceEvent::Added(AddedDevice {
                    location: location.clone(),
                    kind: DeviceKind::SecurityKey,
                    transport: Transport::Hid,
                    contactless: false,
                    // hidraw numbers are reused and keys carry no insertion count: a session of
                    // a USB key is never confirmed across a restart of the daemon.
                    event_count: 0,
                    source_instance: None,
                    connection: DeviceConnection::Hid(Box::new(HidrawTransport {
                        device,
                        node: location,
                    })),
                }));
            }
            Err(e) => tracing::warn!(
                node = %location,
                "cannot open the FIDO key ({e}); is the daemon in the group of udev/70-tessera.rules?"
            ),
        }
    }
}

/// See `sim_hid::register`: the udev socket owns its descriptor and moves into the `AsyncFd`.
#[allow(deprecated)]
fn register(monitor: udev::MonitorSocket) -> std::io::Result<AsyncFd<udev::MonitorSocket>> {
    AsyncFd::with_interest(monitor, Interest::READABLE)
}

/// A [`HidTransport`] over a hidraw node opened with hidapi. Reports have no report ID on FIDO
/// keys: a zero report-ID byte is prepended on write (hidapi's convention for unnumbered
/// reports) and none comes with a read.
pub struct HidrawTransport {
    device: HidDevice,
    /// The node, to tell a key pulled out (the node is gone) from another failure.
    node: String,
}

impl HidTransport for HidrawTransport {
    fn write_report(&mut self, report: &[u8; HID_REPORT_LEN]) -> Result<()> {
        let mut out = [0u8; HID_REPORT_LEN + 1];
        out[1..].copy_from_slice(report);
        match self.device.write(&out) {
            Ok(n) if n >= HID_REPORT_LEN => Ok(()),
            Ok(n) => Err(Error::Device(format!(
                "the key took {n} bytes of a {HID_REPORT_LEN}-byte report"
            ))),
            Err(e) => Err(self.failed(&e)),
        }
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; HID_REPORT_LEN]>> {
        let ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        let mut report = [0u8; HID_REPORT_LEN];
        match self.device.read_timeout(&mut report, ms) {
            Ok(0) => Ok(None),
            // Shorter input reports are padded, as the descriptor's fixed length says they are.
            Ok(_) => Ok(Some(report)),
            Err(e) => Err(self.failed(&e)),
        }
    }
}

impl HidrawTransport {
    /// A failed read or write: the key pulled out if its node is gone (ENODEV), else a device
    /// error with hidapi's message.
    fn failed(&self, e: &hidapi::HidError) -> Error {
        if !Path::new(&self.node).exists() {
            Error::DeviceRemoved
        } else {
            Error::Device(format!("USB HID {}: {e}", self.node))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_fido_collections_are_taken_each_node_once() {
        let a = CString::new("/dev/hidraw0").unwrap();
        let b = CString::new("/dev/hidraw1").unwrap();
        let c = CString::new("/dev/hidraw2").unwrap();
        let listed = [
            (a.as_c_str(), 0x0001, 0x06),          // a keyboard
            (b.as_c_str(), 0x0001, 0x06),          // a composite key's keyboard (OTP) ...
            (b.as_c_str(), FIDO_USAGE_PAGE, 0x01), // ... and its FIDO collection
            (c.as_c_str(), FIDO_USAGE_PAGE, 0x01),
            (c.as_c_str(), FIDO_USAGE_PAGE, 0x01), // listed twice
            (a.as_c_str(), FIDO_USAGE_PAGE, 0x02), // the FIDO page, another usage
        ];
        assert_eq!(fido_paths(listed), vec![b, c]);
    }

    /// On any machine (no keys, no hidraw access, no udev in a container): the source enumerates,
    /// says so, and stops when dropped.
    #[tokio::test]
    async fn the_monitor_completes_its_enumeration_without_keys_or_access() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let monitor = HidMonitor::start(tx).unwrap();
        let complete = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(DeviceEvent::Added(_))) => continue, // a real key on this machine
                other => break other,
            }
        };
        assert!(
            matches!(
                complete,
                Ok(Some(DeviceEvent::EnumerationComplete {
                    transport: Transport::Hid
                }))
            ),
            "{complete:?}"
        );
        drop(monitor);
    }

    #[test]
    fn the_fido_usage_is_page_f1d0_usage_1() {
        assert!(is_fido(0xF1D0, 0x01));
        assert!(!is_fido(0xF1D0, 0x00));
        assert!(!is_fido(0xFF00, 0x01));
    }
}

//! Feeds the device sources' events ([`tessera::transport::events`]) to the service, knowing no
//! transport: in order for each device location, and locations independently of one another, so a
//! slow or stuck card in one reader never delays a removal in another.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tessera::service::{DeviceAttach, HidAttach, Service};
use tessera::transport::events::{AddedDevice, DeviceConnection, DeviceEvent, Transport};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// How often a device that could not be identified is checked for a reset by another application.
const RESET_CHECK: Duration = Duration::from_secs(1);

/// Runs until the sources' channel closes. `transports` are the running sources: the service hears
/// that enumeration is complete once each of them has enumerated (so that no source's devices are
/// taken as gone before it looked), and again at every later enumeration of any of them (after it
/// lost and regained its system service).
pub async fn feed(
    service: Service,
    transports: Vec<Transport>,
    mut rx: mpsc::UnboundedReceiver<DeviceEvent>,
) {
    let mut last: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut not_enumerated = transports;
    let mut recheck = tokio::time::interval(RESET_CHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Device events say when the set of unidentified devices may have changed.
    let mut changes = service.subscribe();
    loop {
        // Not every source hears of a reset (pcscd tells a reader's watchers nothing), so a device
        // that could not be identified is asked now and then whether it was reset; only while there
        // is one, so an idle daemon with only identified devices (or none) never wakes up for it.
        let unidentified = !service.unidentified_readers().is_empty();
        let event = tokio::select! {
            event = rx.recv() => match event {
                Some(e) => e,
                None => return,
            },
            change = changes.recv() => match change {
                Err(broadcast::error::RecvError::Closed) => return,
                _ => continue,
            },
            _ = recheck.tick(), if unidentified => {
                for reader in service.unidentified_readers() {
                    let svc = service.clone();
                    let r = reader.clone();
                    after_previous(&mut last, reader, async move {
                        report(svc.recheck_unidentified(&r).await);
                    });
                }
                last.retain(|_, t| !t.is_finished());
                continue;
            }
        };
        match event {
            DeviceEvent::Added(device) => {
                let svc = service.clone();
                let location = device.location.clone();
                after_previous(&mut last, location, async move {
                    report(added(&svc, device).await);
                });
            }
            DeviceEvent::Removed { location, .. } => {
                let svc = service.clone();
                let l = location.clone();
                after_previous(&mut last, location, async move {
                    report(svc.device_removed(&l).await);
                });
            }
            DeviceEvent::Changed { location, .. } => {
                let svc = service.clone();
                let l = location.clone();
                after_previous(&mut last, location, async move {
                    report(svc.device_changed(&l).await);
                });
            }
            // Both concern every location: wait until each one's events so far are handled.
            DeviceEvent::EnumerationComplete { transport } => {
                for (_, t) in last.drain() {
                    let _ = t.await;
                }
                not_enumerated.retain(|t| *t != transport);
                if not_enumerated.is_empty() {
                    report(service.enumeration_complete().await);
                }
            }
            DeviceEvent::SourceLost { transport, reason } => {
                tracing::debug!(%transport, "device source lost: {reason}");
                for (_, t) in last.drain() {
                    let _ = t.await;
                }
                report(source_lost(&service, transport).await);
            }
        }
        last.retain(|_, t| !t.is_finished());
    }
}

/// Hands a new device to the service, which identifies it on the device's worker thread.
async fn added(service: &Service, device: AddedDevice) -> tessera::Result<()> {
    let AddedDevice {
        location,
        transport,
        contactless,
        event_count,
        source_instance,
        connection,
        ..
    } = device;
    match connection {
        DeviceConnection::Card(connection) => {
            service
                .device_added(DeviceAttach {
                    reader: location,
                    event_count,
                    source_instance,
                    transport: published_transport(transport, contactless).into(),
                    connection,
                })
                .await
        }
        DeviceConnection::Hid(connection) => {
            service
                .hid_device_added(HidAttach {
                    location,
                    transport: transport.as_str().into(),
                    connection,
                })
                .await
        }
    }
}

/// The transport a device is published with: its source's, except a PC/SC card reached over NFC,
/// which is "nfc".
fn published_transport(transport: Transport, contactless: bool) -> &'static str {
    match transport {
        Transport::Pcsc if contactless => NFC,
        other => other.as_str(),
    }
}

/// The published transport of contactless PC/SC cards.
const NFC: &str = "nfc";

/// Whether a device published with `published` came from `source` (an NFC card from PC/SC).
fn from_source(published: &str, source: Transport) -> bool {
    published == source.as_str() || (source == Transport::Pcsc && published == NFC)
}

/// Every device of `transport` left. Each one even if one fails: a device whose removal was not
/// recorded must not keep tokens alive because another device's record failed first.
async fn source_lost(service: &Service, transport: Transport) -> tessera::Result<()> {
    let mut first_error = None;
    for device in service.devices() {
        if !from_source(&device.transport, transport) {
            continue;
        }
        if let Err(e) = service.device_removed(&device.reader).await {
            tracing::error!(reader = %device.reader, "recording the removal failed: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs `work` for `location` once the location's previous event has been handled.
fn after_previous(
    last: &mut HashMap<String, JoinHandle<()>>,
    location: String,
    work: impl Future<Output = ()> + Send + 'static,
) {
    let previous = last.remove(&location);
    let task = tokio::spawn(async move {
        if let Some(p) = previous {
            let _ = p.await;
        }
        work.await;
    });
    last.insert(location, task);
}

fn report(result: tessera::Result<()>) {
    if let Err(e) = result {
        tracing::error!("handling a device event failed: {e}");
    }
}

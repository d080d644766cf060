//! A device becomes present: connected on a worker of its own, given the authenticator of its
//! kind, identified, its device session opened (or, for a card that proves it stayed, adopted
//! from before a restart) and published.
//!
//! Cards are probed for their applets (SELECT of each AID, [`crate::iso7816::applets::probe`]): a
//! PIV card gets the PIV authenticator, a FIDO applet (NFC, or contact where the card offers it)
//! the FIDO one, and a card with both (a YubiKey 5 NFC) is two devices in one reader: `ID` for
//! PIV and `ID_fido` for FIDO, both removed with the card. USB HID keys (and simulated ones) are
//! FIDO keys over CTAPHID.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::devices::SessionState;
use super::devices::{device_id, recognisable, Attached, Device, DeviceAttach, HidAttach};
use super::devices::{DeviceInfo, UnknownCard};
use super::{Event, Service};
use crate::authenticator::retry::retrying;
use crate::authenticator::{card_authenticator, fido_card_authenticator, hid_authenticator};
use crate::fido::ctaphid::CtapHid;
use crate::fido::link::CtapLink;
use crate::iso7816::applets::{probe, Applet};
use crate::locks::lock;
use crate::store::{DeviceSession, WriteOp};
use crate::transport::worker::{DeviceWorker, HidWorker};
use crate::Result;

/// What the FIDO device of a card that also offers PIV adds to the reader's device id. No reader
/// id ends so: [`device_id`] writes every other byte as `_` and two hex digits.
const FIDO_SUFFIX: &str = "_fido";

/// Where a card is, as its source reported it.
struct Place {
    reader: String,
    event_count: u64,
    source_instance: Option<String>,
    transport: String,
}

impl Service {
    /// A card became present: find its applets, then identify each (PIV: the slot certificates;
    /// FIDO: getInfo), open or confirm its device session, and publish it. A card that cannot be
    /// identified (no applet Tessera speaks, or one that keeps failing) is published as kind
    /// "unknown", and identified again when it changes.
    pub async fn device_added(&self, attach: DeviceAttach) -> Result<()> {
        let id = device_id(&attach.reader);
        let worker = DeviceWorker::spawn(&id, attach.connection)?;
        let place = Place {
            reader: attach.reader,
            event_count: attach.event_count,
            source_instance: attach.source_instance,
            transport: attach.transport,
        };
        self.card_attached(place, worker).await
    }

    /// A FIDO key on HID reports became present: identify it (getInfo), open its device session
    /// and publish it. HID keys have no insertion count, so a session from before a restart is
    /// never adopted: their tokens end with the restart's first scan.
    pub async fn hid_device_added(&self, attach: HidAttach) -> Result<()> {
        let id = device_id(&attach.location);
        let link: Box<dyn CtapLink> = Box::new(CtapHid::new(attach.connection));
        let worker = HidWorker::spawn(&id, link)?;
        self.present(Attached {
            authenticator: hid_authenticator(worker, id.clone()),
            id,
            fallback_name: "FIDO key".into(),
            reader: attach.location,
            event_count: 0,
            source_instance: None,
            transport: attach.transport,
            card: None,
            reprobe: false,
        })
        .await
    }

    /// Presents a device served by `authenticator` at `location` (tests: a scripted
    /// authenticator, no transport below it).
    #[cfg(test)]
    pub(super) async fn attach_authenticator(
        &self,
        location: &str,
        transport: &str,
        authenticator: Arc<dyn crate::authenticator::Authenticator>,
    ) -> Result<String> {
        let id = device_id(location);
        self.present(Attached {
            id: id.clone(),
            reader: location.into(),
            event_count: 0,
            source_instance: None,
            transport: transport.into(),
            authenticator,
            card: None,
            reprobe: false,
            fallback_name: "test device".into(),
        })
        .await?;
        Ok(id)
    }

    /// The card in `reader` is the same insertion but looks different to the device source (it
    /// answers after being mute, or was reset): identify it again if it could not be before.
    pub async fn device_changed(&self, reader: &str) -> Result<()> {
        let unknown: Vec<UnknownCard> = {
            let mut devs = lock(&self.inner.devices);
            let ids: Vec<String> = devs
                .unknown
                .iter()
                .filter(|(_, u)| u.info.reader == reader)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| devs.unknown.remove(id))
                .collect()
        };
        let mut result = Ok(());
        for u in unknown {
            tracing::info!(reader = %reader, "identifying the unidentified card again (it changed or was reset)");
            self.publish(Event::DeviceRemoved {
                id: u.info.id.clone(),
            });
            let r = match (u.attached.reprobe, u.attached.card.clone()) {
                (true, Some(worker)) => {
                    let a = u.attached;
                    let place = Place {
                        reader: a.reader,
                        event_count: a.event_count,
                        source_instance: a.source_instance,
                        transport: a.transport,
                    };
                    self.card_attached(place, worker).await
                }
                _ => self.present(u.attached).await,
            };
            if let Err(e) = r {
                result = Err(e);
            }
        }
        result
    }

    /// Readers holding a card that could not be identified (HID keys are not asked again: their
    /// source reports them anew when they come back).
    pub fn unidentified_readers(&self) -> Vec<String> {
        let devs = lock(&self.inner.devices);
        let mut readers: Vec<String> = devs
            .unknown
            .values()
            .filter(|u| u.attached.card.is_some())
            .map(|u| u.info.reader.clone())
            .collect();
        readers.dedup();
        readers
    }

    /// Identifies the unidentified card in `reader` again if another application reset it since
    /// (pcscd tells only the card's own connections about a reset, so the device source asks).
    pub async fn recheck_unidentified(&self, reader: &str) -> Result<()> {
        let worker = lock(&self.inner.devices)
            .unknown
            .values()
            .find(|u| u.info.reader == reader)
            .and_then(|u| u.attached.card.clone());
        let Some(worker) = worker else {
            return Ok(());
        };
        let r = worker.was_reset(self.config().device.timeout).await;
        tracing::trace!(%reader, "unidentified card reset: {r:?}");
        match r {
            Ok(true) => self.device_changed(reader).await,
            Ok(false) => Ok(()),
            // A card that is gone is the device source's to report.
            Err(e) => {
                tracing::debug!(%reader, "checking the unidentified card for a reset: {e}");
                Ok(())
            }
        }
    }

    /// Probes the card behind `worker` for its applets and presents a device for each kind.
    async fn card_attached(&self, place: Place, worker: DeviceWorker) -> Result<()> {
        let timeout = self.config().device.timeout;
        // A card just inserted may be reset or held by another application at first: the probe
        // retries on a fresh connection, as identification does.
        let probed = retrying(&worker, timeout, false, || {
            worker.run(timeout, |card| probe(card))
        });
        let applets = match probed.await {
            Ok(a) => a,
            Err(e) => {
                // Identification says more (and lists the card as unknown, to be tried again).
                tracing::debug!(reader = %place.reader, "probing the card's applets: {e}");
                Vec::new()
            }
        };
        let piv = applets.contains(&Applet::Piv);
        let fido = applets.contains(&Applet::Fido);
        let id = device_id(&place.reader);
        let mut result = Ok(());
        // A card with neither goes the PIV way, as cards always did: identification says why it
        // cannot be used, and it is probed again when it changes.
        if piv || !fido {
            let r = self
                .present(Attached {
                    authenticator: card_authenticator(worker.clone(), id.clone()),
                    id: id.clone(),
                    fallback_name: format!("PIV card in {}", place.reader),
                    reader: place.reader.clone(),
                    event_count: place.event_count,
                    source_instance: place.source_instance.clone(),
                    transport: place.transport.clone(),
                    card: Some(worker.clone()),
                    reprobe: !piv,
                })
                .await;
            result = result.and(r);
        }
        if fido {
            let fido_id = if piv {
                format!("{id}{FIDO_SUFFIX}")
            } else {
                id
            };
            let r = self
                .present(Attached {
                    authenticator: fido_card_authenticator(worker.clone(), fido_id.clone()),
                    id: fido_id,
                    fallback_name: format!("FIDO key in {}", place.reader),
                    reader: place.reader,
                    event_count: place.event_count,
                    source_instance: place.source_instance,
                    transport: place.transport,
                    card: Some(worker),
                    reprobe: false,
                })
                .await;
            result = result.and(r);
        }
        result
    }

    /// Identifies a present device and publishes it, with its session, or as unknown.
    async fn present(&self, attach: Attached) -> Result<()> {
        let id = attach.id.clone();
        let timeout = self.config().device.timeout;
        let authenticator = Arc::clone(&attach.authenticator);
        let identity = match authenticator.identify(timeout).await {
            Ok(i) => i,
            Err(e) => {
                // A card in a reader, or a security key (HID).
                let what = if attach.card.is_some() { "card" } else { "key" };
                // Logged once per insertion (re-identification after a change logs again).
                tracing::warn!(reader = %attach.reader, device = %id, "cannot identify the {what}: {e}; listed as unknown");
                let info = DeviceInfo {
                    id: id.clone(),
                    kind: "unknown".into(),
                    transport: attach.transport.clone(),
                    name: format!("unidentified {what} in {} ({e})", attach.reader),
                    reader: attach.reader.clone(),
                };
                let unknown = UnknownCard {
                    info: info.clone(),
                    attached: attach,
                };
                let (replaced, was_unknown) = {
                    let mut devs = lock(&self.inner.devices);
                    let was_unknown = devs.unknown.insert(id.clone(), unknown).is_some();
                    (devs.by_id.remove(&id), was_unknown)
                };
                if replaced.is_some() || was_unknown {
                    // The source missed a removal: the old bus object goes first.
                    self.publish(Event::DeviceRemoved { id: id.clone() });
                }
                if let Some(old) = replaced {
                    // End the old insertion properly.
                    self.end_session(&old).await?;
                }
                self.publish(Event::DeviceAdded(info));
                return Ok(());
            }
        };
        let card_id = identity.card_id();
        let now = self.inner.clock.unix_secs();
        // Confirm a session from before this start, or open a new one. The reader, pcscd's event
        // count and the card's certificates are public: a card that can, proves with its 9E key that
        // it holds the keys those certificates name before it inherits the session's tokens. The
        // count means something only within the pcscd run that counted it: an unknown run, on
        // either side, matches nothing (HID keys have none). A device that names neither its
        // credentials nor a device key (a FIDO key: its AAGUID is its model's) cannot be told
        // from another of its kind, so it never inherits a session.
        let recognisable = recognisable(&identity);
        let matches = |s: &DeviceSession| {
            recognisable
                && s.reader == attach.reader
                && s.event_counter == attach.event_count
                && s.source_instance.is_some()
                && s.source_instance == attach.source_instance
                && s.card_id == card_id
        };
        let candidate = lock(&self.inner.devices).unconfirmed.iter().any(matches);
        // The card proved its device key (9E) once, at identification: adopting a session from
        // before a restart, or sending a PIN, need not trust the public certificates alone.
        let proven = match &identity.device_key {
            Some(key) => candidate && key.proven,
            None => candidate,
        };
        if candidate && !proven {
            tracing::warn!(
                reader = %attach.reader,
                "the card could not prove it is the one that was here before the restart; its old \
                 session ends"
            );
        }
        let adopted = {
            let mut devs = lock(&self.inner.devices);
            let pos = if proven {
                devs.unconfirmed.iter().position(matches)
            } else {
                None
            };
            let adopted = pos.map(|p| devs.unconfirmed.swap_remove(p));
            self.inner
                .any_unconfirmed
                .store(!devs.unconfirmed.is_empty(), Ordering::SeqCst);
            adopted
        };
        let session_id = match adopted {
            Some(s) => s.id,
            None => {
                let sid = crate::token::new_jti();
                self.inner
                    .store
                    .apply(vec![WriteOp::OpenDeviceSession(DeviceSession {
                        id: sid.clone(),
                        reader: attach.reader.clone(),
                        card_id,
                        event_counter: attach.event_count,
                        source_instance: attach.source_instance.clone(),
                        started: now,
                        ended: None,
                    })])
                    .await?;
                sid
            }
        };
        let info = DeviceInfo {
            id: id.clone(),
            kind: authenticator.kind().into(),
            transport: attach.transport,
            name: identity.name.clone().unwrap_or(attach.fallback_name),
            reader: attach.reader,
        };
        let device = Arc::new(Device {
            info: info.clone(),
            session_id: session_id.clone(),
            session: Arc::new(tokio::sync::Mutex::new(SessionState {
                id: session_id,
                open: true,
            })),
            identity,
            authenticator,
        });
        let (replaced, was_unknown) = {
            let mut devs = lock(&self.inner.devices);
            let was_unknown = devs.unknown.remove(&id).is_some();
            (devs.by_id.insert(id.clone(), device), was_unknown)
        };
        if replaced.is_some() || was_unknown {
            // The bus object of the device as it was is replaced, not kept beside.
            self.publish(Event::DeviceRemoved { id });
        }
        if let Some(old) = replaced {
            // The source missed a removal; end the old insertion properly.
            self.end_session(&old).await?;
        }
        tracing::info!(device = %info.id, kind = %info.kind, transport = %info.transport, reader = %info.reader, "device present");
        self.publish(Event::DeviceAdded(info));
        Ok(())
    }
}

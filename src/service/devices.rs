//! Present devices and the two operations that talk to them: enrollment and authentication.
//!
//! Each card insertion is a device session, recorded durably so that a card pulled while the daemon
//! was not running is noticed at the next start: a session in the store that no present card
//! confirms (same reader, same pcscd event count counted by the same pcscd, same card keys) is closed
//! and its tokens revoked.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Event, Service};
use crate::authenticator::{card_authenticator, Authenticator, DeviceIdentity};
use crate::locks::lock;
use crate::store::{DeviceSession, WriteOp};
use crate::transport::worker::{CardConnection, DeviceWorker};
use crate::transport::HidTransport;
use crate::{Error, Result};
use tokio::sync::OwnedMutexGuard;

/// What a device source (the PC/SC monitor, or a test) knows about a newly present device.
pub struct DeviceAttach {
    /// Reader name (PC/SC) — unique among present devices.
    pub reader: String,
    /// pcscd's event count for the reader at insertion.
    pub event_count: u64,
    /// The run of the device source that counted `event_count` (pcscd's process identity, see
    /// [`crate::transport::pcscd_instance`]); `None` when unknown, which matches no recorded session.
    pub source_instance: Option<String>,
    /// "pcsc" for PC/SC readers, "nfc" when the reader says the card is contactless.
    pub transport: String,
    /// The connection to the card.
    pub connection: Box<dyn CardConnection>,
}

/// What a device source (USB HID, the simulated-HID directory, or a test) knows about a newly
/// present FIDO key on HID reports.
pub struct HidAttach {
    /// Where it is (the hidraw node, the simulated key's socket path): unique among present
    /// devices, and what [`Service::device_removed`] is later called with.
    pub location: String,
    /// "hid" for USB HID, "sim" for a simulated key's socket.
    pub transport: String,
    /// The connection to the key: 64-byte reports.
    pub connection: Box<dyn HidTransport>,
}

/// A present card, connected, before it is identified.
struct Attached {
    reader: String,
    event_count: u64,
    source_instance: Option<String>,
    transport: String,
    worker: DeviceWorker,
}

/// A present device as published on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable object-path element derived from the reader name.
    pub id: String,
    /// "piv", or "unknown" for a card that could not be identified (listed so that users see it,
    /// never used for enrollment or authentication).
    pub kind: String,
    /// "pcsc".
    pub transport: String,
    /// Human-readable name (the certificate subject of 9A when there is one, else the reader; for an
    /// unknown card, why it could not be identified).
    pub name: String,
    /// Reader name.
    pub reader: String,
}

/// A present device.
pub(super) struct Device {
    pub(super) info: DeviceInfo,
    /// The device session id (one per insertion).
    pub(super) session_id: String,
    /// Whether the session is open; the token-issue path and the removal path serialise on it.
    pub(super) session: Arc<tokio::sync::Mutex<SessionState>>,
    pub(super) identity: DeviceIdentity,
    /// The device's kind, which talks to it.
    pub(super) authenticator: Arc<dyn Authenticator>,
}

pub(super) struct SessionState {
    id: String,
    pub(super) open: bool,
}

/// A present card that could not be identified: listed, kept connected to be identified again when
/// pcscd sees it change, and never offered to enrollment or authentication.
pub(super) struct UnknownCard {
    info: DeviceInfo,
    worker: DeviceWorker,
    event_count: u64,
    source_instance: Option<String>,
}

/// The present devices, and the device sessions from the store still waiting to be confirmed.
pub(super) struct Devices {
    by_id: HashMap<String, Arc<Device>>,
    /// Present cards that could not be identified, by device id (never also in `by_id`).
    unknown: HashMap<String, UnknownCard>,
    /// Open sessions from before this start, until the first device scan is complete.
    unconfirmed: Vec<DeviceSession>,
}

impl Devices {
    pub(super) fn new(unconfirmed: Vec<DeviceSession>) -> Self {
        Devices {
            by_id: HashMap::new(),
            unknown: HashMap::new(),
            unconfirmed,
        }
    }
}

/// Object-path element for a reader: ASCII letters and digits kept, every other byte as `_xx`.
pub fn device_id(reader: &str) -> String {
    let mut id = String::with_capacity(reader.len() + 8);
    for b in reader.bytes() {
        if b.is_ascii_alphanumeric() {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("_{b:02x}"));
        }
    }
    id
}

impl Service {
    /// A device became present: identify it (PIV application, slot certificates), open or confirm
    /// its device session, and publish it. A card that cannot be identified (not a PIV card, or one
    /// that keeps failing) is published as kind "unknown", and identified again when it changes.
    pub async fn device_added(&self, attach: DeviceAttach) -> Result<()> {
        let id = device_id(&attach.reader);
        let worker = DeviceWorker::spawn(&id, attach.connection)?;
        let card = Attached {
            reader: attach.reader,
            event_count: attach.event_count,
            source_instance: attach.source_instance,
            transport: attach.transport,
            worker,
        };
        self.card_present(card).await
    }

    /// A FIDO key on HID reports became present: identify it (getInfo), open its device session
    /// and publish it. HID keys have no insertion count, so a session from before a restart is
    /// never adopted: their tokens end with the restart's first scan.
    pub async fn hid_device_added(&self, attach: HidAttach) -> Result<()> {
        let _ = attach;
        Err(Error::Internal(
            "FIDO keys on HID are not yet attached (M1)".into(),
        ))
    }

    /// The card in `reader` is the same insertion but looks different to the device source (it
    /// answers after being mute, or was reset): identify it again if it could not be before.
    pub async fn device_changed(&self, reader: &str) -> Result<()> {
        let id = device_id(reader);
        let Some(unknown) = lock(&self.inner.devices).unknown.remove(&id) else {
            return Ok(());
        };
        tracing::info!(reader = %reader, "identifying the unidentified card again (it changed or was reset)");
        self.publish(Event::DeviceRemoved { id });
        self.card_present(Attached {
            reader: unknown.info.reader,
            event_count: unknown.event_count,
            source_instance: unknown.source_instance,
            transport: unknown.info.transport,
            worker: unknown.worker,
        })
        .await
    }

    /// Readers holding a card that could not be identified.
    pub fn unidentified_readers(&self) -> Vec<String> {
        let devs = lock(&self.inner.devices);
        devs.unknown
            .values()
            .map(|u| u.info.reader.clone())
            .collect()
    }

    /// Identifies the unidentified card in `reader` again if another application reset it since
    /// (pcscd tells only the card's own connections about a reset, so the device source asks).
    pub async fn recheck_unidentified(&self, reader: &str) -> Result<()> {
        let id = device_id(reader);
        let worker = lock(&self.inner.devices)
            .unknown
            .get(&id)
            .map(|u| u.worker.clone());
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

    /// Identifies a present card and publishes it, as a PIV device with its session or as unknown.
    async fn card_present(&self, attach: Attached) -> Result<()> {
        let id = device_id(&attach.reader);
        let worker = attach.worker.clone();
        let timeout = self.config().device.timeout;
        let authenticator = card_authenticator(worker.clone(), id.clone());
        let identity = match authenticator.identify(timeout).await {
            Ok(i) => i,
            Err(e) => {
                // Logged once per insertion (re-identification after a change logs again).
                tracing::warn!(reader = %attach.reader, "cannot identify the card: {e}; listed as unknown");
                let info = DeviceInfo {
                    id: id.clone(),
                    kind: "unknown".into(),
                    transport: attach.transport,
                    name: format!("unidentified card in {} ({e})", attach.reader),
                    reader: attach.reader,
                };
                let unknown = UnknownCard {
                    info: info.clone(),
                    worker,
                    event_count: attach.event_count,
                    source_instance: attach.source_instance,
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
        // either side, matches nothing.
        let matches = |s: &DeviceSession| {
            s.reader == attach.reader
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
            name: identity
                .name
                .clone()
                .unwrap_or_else(|| format!("PIV card in {}", attach.reader)),
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
            // The bus object of the card as it was is replaced, not kept beside.
            self.publish(Event::DeviceRemoved { id });
        }
        if let Some(old) = replaced {
            // The source missed a removal; end the old insertion properly.
            self.end_session(&old).await?;
        }
        tracing::info!(device = %info.id, reader = %info.reader, "device present");
        self.publish(Event::DeviceAdded(info));
        Ok(())
    }

    /// The card left `reader`: end its device session and, by policy, revoke its tokens.
    pub async fn device_removed(&self, reader: &str) -> Result<()> {
        let id = device_id(reader);
        let (removed, unknown) = {
            let mut devs = lock(&self.inner.devices);
            (devs.by_id.remove(&id), devs.unknown.remove(&id))
        };
        if unknown.is_some() {
            tracing::info!(device = %id, "unidentified card removed");
            self.publish(Event::DeviceRemoved { id: id.clone() });
        }
        if let Some(device) = removed {
            tracing::info!(device = %id, "device removed");
            self.publish(Event::DeviceRemoved { id });
            self.end_session(&device).await?;
        }
        Ok(())
    }

    /// Every device left (the device source lost its service, e.g. pcscd stopped).
    pub async fn all_devices_removed(&self) -> Result<()> {
        let readers: Vec<String> = {
            let devs = lock(&self.inner.devices);
            let known = devs.by_id.values().map(|d| d.info.reader.clone());
            known
                .chain(devs.unknown.values().map(|u| u.info.reader.clone()))
                .collect()
        };
        // Every device, even if one fails: a card whose removal was not recorded must not keep
        // tokens alive because another card's record failed first.
        let mut first_error = None;
        for r in readers {
            if let Err(e) = self.device_removed(&r).await {
                tracing::error!(reader = %r, "recording the removal failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        // Sessions from before this start stay unconfirmed (their tokens wait or fail closed) until
        // the device source can scan again.
        first_error.map_or(Ok(()), Err)
    }

    /// The device source has reported every present device: sessions from before this start that no
    /// present card confirmed were ended while Tessera was not watching.
    pub async fn enumeration_complete(&self) -> Result<()> {
        let stale: Vec<DeviceSession> = lock(&self.inner.devices).unconfirmed.clone();
        let mut result = Ok(());
        for s in stale {
            tracing::info!(reader = %s.reader, "card removed while the daemon was not watching");
            // Each session leaves the unconfirmed list only once its tokens are revoked in memory
            // (close_session does that before anything else), so no validation slips between.
            match self.close_session(&s.id).await {
                Ok(()) => lock(&self.inner.devices)
                    .unconfirmed
                    .retain(|u| u.id != s.id),
                Err(e) => {
                    tracing::error!("closing the session of {}: {e}", s.reader);
                    result = Err(e);
                }
            }
        }
        self.inner.any_unconfirmed.store(
            !lock(&self.inner.devices).unconfirmed.is_empty(),
            Ordering::SeqCst,
        );
        self.inner.scanned.send_replace(true);
        result
    }

    /// Waits until the device session `sid` is confirmed or ended, if it is one from before this
    /// start that the first device scan has not settled yet. Until then its tokens cannot be trusted:
    /// the card may have left while the daemon was down.
    ///
    /// Errors: [`Error::Timeout`] when the scan does not come within the device timeout (e.g. pcscd
    /// is not running); [`Error::Device`] when the scan came but could not settle the session.
    pub(super) async fn confirmed(&self, sid: &str) -> Result<()> {
        if !self.inner.any_unconfirmed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let wait = self.config().device.timeout;
        let deadline = tokio::time::Instant::now() + wait;
        let mut scanned = self.inner.scanned.subscribe();
        loop {
            let pending = lock(&self.inner.devices)
                .unconfirmed
                .iter()
                .any(|s| s.id == sid);
            if !pending {
                return Ok(());
            }
            if *scanned.borrow_and_update() {
                return Err(Error::Device(
                    "the token's card could not be confirmed present".into(),
                ));
            }
            match tokio::time::timeout_at(deadline, scanned.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(Error::Timeout {
                        what: "the device scan did not finish",
                        after: wait,
                    })
                }
            }
        }
    }

    /// The devices present now, unidentified cards included.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let devs = lock(&self.inner.devices);
        let known = devs.by_id.values().map(|d| d.info.clone());
        let mut v: Vec<DeviceInfo> = known
            .chain(devs.unknown.values().map(|u| u.info.clone()))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    async fn end_session(&self, device: &Device) -> Result<()> {
        let mut session = device.session.lock().await;
        if !session.open {
            return Ok(());
        }
        session.open = false;
        self.close_session(&session.id).await
    }

    /// Ends a device session durably and revokes the tokens that die with their device (each
    /// token carries the `revoke_on_removal` rule it was issued under).
    async fn close_session(&self, session_id: &str) -> Result<()> {
        let now = self.inner.clock.unix_secs();
        // In memory first: validations fail from this instant, even if the store cannot be written
        // (then the session stays open in the store, and the next start closes it as unconfirmed).
        let revoked = self
            .inner
            .tokens
            .revoke_session(session_id, "device-removed");
        let mut ops = vec![
            WriteOp::CloseDeviceSession {
                id: session_id.to_owned(),
                at: now,
            },
            WriteOp::RevokeSessionTokens {
                device_session: session_id.to_owned(),
                reason: "device-removed".into(),
                at: now,
            },
        ];
        // The dead rows of every user who lost tokens stay within the cap.
        let mut by_user: HashMap<&str, Vec<String>> = HashMap::new();
        for (jti, user) in &revoked {
            by_user.entry(user).or_default().push(jti.clone());
        }
        ops.extend(
            by_user
                .into_iter()
                .map(|(user, newest)| super::tokens::cap_dead(user, newest)),
        );
        // Announced before the commit: should the daemon die before it, the next start finds the
        // session unconfirmed and revokes the same tokens, so the announcement stays true.
        for (jti, user) in revoked {
            self.announce_revoked(jti, &user, "device-removed");
        }
        self.inner.store.apply(ops).await.map(|_| ())
    }

    /// Holds the device session `sid` open (removal waits) for as long as the guard lives.
    /// Errors: [`Error::DeviceRemoved`] when its device is gone.
    pub(super) async fn lock_open_session(
        &self,
        sid: &str,
    ) -> Result<OwnedMutexGuard<SessionState>> {
        let session = lock(&self.inner.devices)
            .by_id
            .values()
            .find(|d| d.session_id == sid)
            .map(|d| d.session.clone())
            .ok_or(Error::DeviceRemoved)?;
        let guard = session.lock_owned().await;
        if !guard.open {
            return Err(Error::DeviceRemoved);
        }
        Ok(guard)
    }

    /// [`Service::lock_open_session`] without waiting: `None` when its device is gone or someone
    /// holds the session (for callers that must not wait, and fail closed instead).
    pub(super) fn try_lock_open_session(&self, sid: &str) -> Option<OwnedMutexGuard<SessionState>> {
        let session = lock(&self.inner.devices)
            .by_id
            .values()
            .find(|d| d.session_id == sid)
            .map(|d| d.session.clone())?;
        let guard = session.try_lock_owned().ok()?;
        guard.open.then_some(guard)
    }

    /// Reader of each present device session.
    pub(super) fn session_readers(&self) -> HashMap<String, String> {
        lock(&self.inner.devices)
            .by_id
            .values()
            .map(|d| (d.session_id.clone(), d.info.reader.clone()))
            .collect()
    }

    pub(super) fn device(&self, id: &str) -> Option<Arc<Device>> {
        lock(&self.inner.devices).by_id.get(id).cloned()
    }

    pub(super) fn present_devices(&self) -> Vec<Arc<Device>> {
        let mut v: Vec<Arc<Device>> = lock(&self.inner.devices).by_id.values().cloned().collect();
        v.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_valid_object_path_elements_and_distinct() {
        assert_eq!(device_id("Virtual PCD 00 00"), "Virtual_20PCD_2000_2000");
        assert_ne!(device_id("a b"), device_id("a_b"));
        assert!(device_id("é/.-")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}

//! Present devices: the registry, their device sessions, and what a device that could not be
//! identified is kept as. How a new device is connected and identified lives in `device_attach`.
//!
//! Each card insertion is a device session, recorded durably so that a card pulled while the daemon
//! was not running is noticed at the next start: a session in the store that no present card
//! confirms (same reader, same pcscd event count counted by the same pcscd, same card keys) is closed
//! and its tokens revoked.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Event, Service};
use crate::authenticator::{Authenticator, DeviceIdentity};
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

/// A present device, connected, before it is identified.
pub(super) struct Attached {
    /// Its device id.
    pub(super) id: String,
    /// Where it is (reader name, hidraw node, socket path); its removal names it so.
    pub(super) reader: String,
    pub(super) event_count: u64,
    pub(super) source_instance: Option<String>,
    pub(super) transport: String,
    /// The authenticator of its kind.
    pub(super) authenticator: Arc<dyn Authenticator>,
    /// The card's worker (cards only): an unidentified card is asked now and then whether it
    /// was reset, and identified again when it was.
    pub(super) card: Option<DeviceWorker>,
    /// Identifying it again means probing its applets again (none answered the first time), not
    /// only asking `authenticator` again.
    pub(super) reprobe: bool,
    /// Its name when it tells none ("PIV card in READER").
    pub(super) fallback_name: String,
}

/// A present device as published on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable object-path element derived from the reader name.
    pub id: String,
    /// "piv" or "fido", or "unknown" for a device that could not be identified (listed so that
    /// users see it, never used for enrollment or authentication).
    pub kind: String,
    /// How it is reached: "pcsc" (a contact card reader), "nfc" (a contactless card or key
    /// through a PC/SC reader), "hid" (USB HID) or "sim" (a simulated key's socket).
    pub transport: String,
    /// Human-readable name (the certificate subject of 9A when there is one, else the reader; for an
    /// unknown card, why it could not be identified).
    pub name: String,
    /// Where it is: the reader name, the hidraw node or the simulated key's socket path. One card
    /// that offers two kinds (PIV and FIDO) is two devices in one reader.
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
    pub(super) id: String,
    pub(super) open: bool,
}

/// A present device that could not be identified: listed, kept connected to be identified again
/// when its source sees it change (cards), and never offered to enrollment or authentication.
pub(super) struct UnknownCard {
    pub(super) info: DeviceInfo,
    pub(super) attached: Attached,
}

/// The present devices, and the device sessions from the store still waiting to be confirmed.
pub(super) struct Devices {
    pub(super) by_id: HashMap<String, Arc<Device>>,
    /// Present devices that could not be identified, by device id (never also in `by_id`).
    pub(super) unknown: HashMap<String, UnknownCard>,
    /// Open sessions from before this start, until the first device scan is complete.
    pub(super) unconfirmed: Vec<DeviceSession>,
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

/// Whether a device can be told from another of its kind by what it showed: its credentials (PIV:
/// the slots' certificates) or a device key. A FIDO key cannot: it lists no credentials, and its
/// AAGUID names its model. Such a device never inherits a session from before a restart, and
/// its owners are found by asking it which enrollments it holds.
pub(super) fn recognisable(identity: &DeviceIdentity) -> bool {
    !identity.credentials.is_empty() || identity.device_key.is_some()
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
    /// The device at `reader` left (a card pulled out, a key unplugged): end its device session
    /// (both, for a card that offered two kinds) and, by policy, revoke its tokens.
    pub async fn device_removed(&self, reader: &str) -> Result<()> {
        let (removed, unknown) = {
            let mut devs = lock(&self.inner.devices);
            let ids: Vec<String> = devs
                .by_id
                .values()
                .filter(|d| d.info.reader == reader)
                .map(|d| d.info.id.clone())
                .collect();
            let removed: Vec<Arc<Device>> =
                ids.iter().filter_map(|id| devs.by_id.remove(id)).collect();
            let unknown: Vec<String> = devs
                .unknown
                .iter()
                .filter(|(_, u)| u.info.reader == reader)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &unknown {
                devs.unknown.remove(id);
            }
            (removed, unknown)
        };
        for id in unknown {
            tracing::info!(device = %id, "unidentified device removed");
            self.publish(Event::DeviceRemoved { id });
        }
        // Every session, even if one fails to be recorded (as for all_devices_removed).
        let mut first_error = None;
        for device in removed {
            let id = device.info.id.clone();
            tracing::info!(device = %id, "device removed");
            self.publish(Event::DeviceRemoved { id });
            if let Err(e) = self.end_session(&device).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
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

    pub(super) async fn end_session(&self, device: &Device) -> Result<()> {
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
        // The login sessions this device vouched for, found while their tokens are still live
        // (whether or not they die with the device).
        let bound = self.inner.tokens.login_sessions_of(session_id, now);
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
        // The sessions are locked (by the daemon, through logind) at once, not after the commit.
        self.announce_login_sessions_removed(bound).await;
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

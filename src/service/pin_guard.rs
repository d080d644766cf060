//! Who may make a card spend its PIN tries, decided before anything is sent to the card.
//!
//! A device blocks its PIN after a few wrong tries (PIV: SP 800-73-4 Part 2 §3.2.1, the retry counter
//! of VERIFY); from then on its owner cannot log in until it is unblocked. Any local user can call the
//! daemon, so the daemon itself must not let one user spend another user's tries:
//! - a card holding a key enrolled for someone takes a PIN only from that account or root;
//! - a card enrolled for nobody takes at most [`UNOWNED_WRONG_PINS`] wrong PIN from each caller uid
//!   until a correct PIN is given on it. The try is reserved in the store before the card is touched
//!   (one writer applies reservations in turn), so concurrent calls cannot all pass the check, and the
//!   count survives a restart. Root is not counted: it can reach the card through pcscd directly, so
//!   a limit would protect nothing, and it is who enrolls the card for a user who mistyped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::devices::{recognisable, Device};
use super::find_device::held;
use super::{Caller, Service};
use crate::policy::users::Account;
use crate::store::WriteOp;
use crate::{Error, Result};

/// Wrong PINs one caller may cost a card that is enrolled for nobody.
const UNOWNED_WRONG_PINS: u32 = 1;

/// Leave to send a PIN to one card, from [`admit`]; settle it with [`Admission::settle`].
pub(super) struct Admission {
    /// The card's identity and the caller's uid, when a wrong-PIN try was reserved for them.
    reserved: Option<(String, u32)>,
    /// Set by the card exchange once the card accepted the PIN.
    accepted: Arc<AtomicBool>,
}

/// Whether `caller` may send a PIN to `device`.
///
/// Errors: [`Error::AccessDenied`] when the card is enrolled for other accounts only, or when the
/// caller already spent its wrong PIN on this unenrolled card; [`Error::Storage`] when the
/// reservation cannot be recorded (then nothing is sent either).
pub(super) async fn admit(svc: &Service, caller: Caller, device: &Device) -> Result<Admission> {
    let accepted = Arc::new(AtomicBool::new(false));
    let owners = owners(svc, caller, device).await?;
    if !owners.is_empty() {
        if caller.is_root() || owners.contains(&caller.uid) {
            return Ok(Admission {
                reserved: None,
                accepted,
            });
        }
        return Err(Error::AccessDenied(format!(
            "the card in {} is enrolled for another account; only its owner or root may send \
             its PIN",
            device.info.reader
        )));
    }
    if caller.is_root() {
        return Ok(Admission {
            reserved: None,
            accepted,
        });
    }
    let card = guard_key(device);
    let reserved = svc
        .inner
        .store
        .apply(vec![WriteOp::ReservePinFailure {
            card: card.clone(),
            uid: caller.uid,
            limit: UNOWNED_WRONG_PINS,
        }])
        .await?;
    if !reserved.first().is_some_and(|o| o.changed()) {
        return Err(Error::AccessDenied(format!(
            "uid {} already gave a wrong PIN to the card in {}, which is enrolled for nobody; \
             no more tries until a correct PIN is given on it (root can enroll it for you)",
            caller.uid, device.info.reader
        )));
    }
    Ok(Admission {
        reserved: Some((card, caller.uid)),
        accepted,
    })
}

/// Refuses at once a caller who may never send a secret to `device` (it is enrolled for other
/// accounts only), before anything is asked; [`admit`] still decides each attempt.
pub(super) async fn may_ask(svc: &Service, caller: Caller, device: &Device) -> Result<()> {
    let owners = owners(svc, caller, device).await?;
    if owners.is_empty() || caller.is_root() || owners.contains(&caller.uid) {
        return Ok(());
    }
    Err(Error::AccessDenied(format!(
        "the card in {} is enrolled for another account; only its owner or root may send its PIN",
        device.info.reader
    )))
}

impl Admission {
    /// The flag the card exchange sets once the card has accepted the PIN.
    pub(super) fn accepted_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.accepted)
    }

    /// Records how the exchange went: a correct PIN forgets every caller's wrong PINs on the card;
    /// an attempt that cost the card no try gives the reservation back (the device queue refused
    /// it, or the PIN was not tried to spare the last retry); anything else keeps it (a wrong PIN,
    /// a blocked PIN, which the PIN may just have blocked, or an exchange whose fate is unknown,
    /// such as a timeout). The user lockout counts PinWouldBlock all the same (`note_outcome`).
    pub(super) async fn settle(self, svc: &Service, result: std::result::Result<(), &Error>) {
        let Some((card, uid)) = self.reserved else {
            return;
        };
        // A cancel may have come while the PIN was on its way: its fate is unknown, so it stays.
        let spent_nothing = matches!(result, Err(Error::Busy(_) | Error::PinWouldBlock { .. }));
        let op = if self.accepted.load(Ordering::SeqCst) {
            WriteOp::ClearPinFailures { card }
        } else if spent_nothing {
            WriteOp::ReleasePinFailure { card, uid }
        } else {
            return;
        };
        if let Err(e) = svc.inner.store.apply(vec![op]).await {
            // Fails closed: the try stays counted.
            tracing::error!("recording a PIN outcome failed: {e}");
        }
    }
}

/// What the wrong-PIN reservations of `device` are counted under: its identity
/// ([`crate::authenticator::DeviceIdentity::card_id`]), and where it is for a device whose
/// identity is its model's (a FIDO key's AAGUID), so that one key's count is not every such key's.
fn guard_key(device: &Device) -> String {
    let card = device.identity.card_id();
    if recognisable(&device.identity) {
        card
    } else {
        format!("{card}@{}", device.info.reader)
    }
}

/// The uids of the accounts a key on `device` is enrolled for: enrollments the device holds (PIV:
/// one of its slot keys; FIDO: a credential, by its silent pre-flight) or, for a device its
/// identity tells apart, of its GUID (CHUID), whose account still has the uid it had at
/// enrollment. Errors: a device that cannot say what it holds is not opened to everyone.
async fn owners(svc: &Service, caller: Caller, device: &Device) -> Result<Vec<u32>> {
    let identity = &device.identity;
    let all = svc.inner.store.enrollments()?;
    let timeout = svc.config().device.timeout;
    let held: Vec<String> = held(device, &all, caller.uid, timeout)
        .await?
        .into_iter()
        .map(|e| e.id.clone())
        .collect();
    let by_guid = recognisable(identity);
    let mut uids = Vec::new();
    for e in &all {
        let same_key = held.contains(&e.id);
        let same_guid =
            by_guid && e.device_identity.is_some() && e.device_identity == identity.guid;
        if !(same_key || same_guid) || uids.contains(&e.uid) {
            continue;
        }
        match Account::by_uid(e.uid) {
            Ok(a) if a.name == e.user => uids.push(e.uid),
            Ok(_) | Err(Error::NoSuchUser(_)) => tracing::info!(
                enrollment = %e.id, user = %e.user, uid = e.uid,
                "enrollment of an account that no longer has this uid: not an owner of the card"
            ),
            // Not knowing who owns the card must not open it to everyone.
            Err(e) => return Err(e),
        }
    }
    Ok(uids)
}

//! Authentication: challenge a present enrolled device and issue a session token, as a request.
//!
//! The PIN goes only to the enrolled device: the device is unambiguous (one present device holds a
//! key enrolled for the user, or the caller names one), and it shows the GUID and proves the device
//! key recorded at enrollment (proved once per insertion, at identification, so it costs the login
//! nothing). A PIN given is never dropped: it selects the user's PIN enrollment.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::devices::Device;
use super::find_device::{enrolled_key, find, needs_secret, Found};
use super::request_interaction::RequestInteraction;
use super::requests::{AuthRequest, Request, Shared, WeakService};
use super::{select_device, tokens};
use super::{Caller, Event, Service};
use crate::authenticator::{Progress, SecretKind};
use crate::locks::lock;
use crate::policy::config::{FidoRules, TokenPolicy};
use crate::policy::users::Account;
use crate::store::Enrollment;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

/// Starts an authentication of `account` (already resolved for `caller`).
pub(super) async fn start(
    svc: &Service,
    caller: Caller,
    account: Account,
    r: AuthRequest,
    interactive: bool,
) -> Result<Request> {
    svc.check_lockout(&account.name)?;
    let enrollments = enrollments_of(svc, &account)?;
    let fido = svc.fido_rules_for(&account).await?;
    // Subscribed before the first look, so that no insertion falls between.
    let events = svc.subscribe();
    // The first look is bounded by the request's own cap too.
    let look = r.timeout.map_or(svc.config().device.timeout, |t| {
        t.min(svc.config().device.timeout)
    });
    let (first, found) = match find(svc, &account, &enrollments, &r, interactive, fido, look).await
    {
        Ok(Found::One(d, e)) => {
            let p = Progress::Working {
                device: d.info.id.clone(),
            };
            (p, Some(Found::One(d, e)))
        }
        Ok(Found::Selectable(options)) => {
            let p = Progress::SelectingDevice {
                devices: options.iter().map(|(d, _)| d.info.id.clone()).collect(),
            };
            (p, Some(Found::Selectable(options)))
        }
        Ok(Found::Broken { device, error }) => {
            let p = Progress::Working {
                device: device.clone(),
            };
            (p, Some(Found::Broken { device, error }))
        }
        Err(Error::DeviceAmbiguous(devices)) if r.wait => {
            (Progress::SelectingDevice { devices }, None)
        }
        Err(Error::NotEnrolled(_) | Error::NoDevice) if r.wait => {
            (Progress::WaitingForDevice, None)
        }
        // Not waiting: nothing to wait for is an answer now, not a request that fails at once.
        Err(e) => return Err(e),
    };
    let looked = Looked {
        events,
        fido,
        found,
    };
    let (shared, request) = svc
        .inner
        .requests
        .open(caller.uid, first, r.timeout, interactive)?;
    let svc = svc.clone();
    tokio::spawn(async move {
        let result = run_for(
            &svc,
            &shared,
            caller,
            &account,
            enrollments,
            r,
            interactive,
            looked,
        )
        .await;
        conclude(svc, &shared, result).await;
    });
    Ok(request)
}

/// [`run`], with the outcome counted for the account's lockout.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_for(
    svc: &Service,
    shared: &Arc<Shared>,
    caller: Caller,
    account: &Account,
    enrollments: Vec<Enrollment>,
    r: AuthRequest,
    interactive: bool,
    looked: Looked,
) -> Result<Zeroizing<String>> {
    let result = run(
        svc,
        shared,
        caller,
        account,
        enrollments,
        r,
        interactive,
        looked,
    )
    .await;
    svc.note_outcome(&account.name, &result);
    result
}

/// Ends the request with `result`; a token issued to a request that was cancelled or timed out
/// meanwhile is revoked, since nobody has it.
pub(super) async fn conclude(
    svc: Service,
    shared: &Arc<Shared>,
    result: Result<Zeroizing<String>>,
) {
    let issued = result.as_ref().ok().cloned();
    let weak = WeakService::new(&svc);
    drop(svc);
    if !shared.conclude(result) {
        if let (Some(token), Some(svc)) = (issued, weak.upgrade()) {
            if let Err(e) = tokens::revoke(&svc, &token, "cancelled").await {
                tracing::error!("revoking the token of a cancelled request: {e}");
            }
        }
    }
}

/// What the start of a request found: the device events since, the FIDO rules, and the device (or
/// the devices to choose among) if one was there.
pub(super) struct Looked {
    pub(super) events: broadcast::Receiver<Event>,
    pub(super) fido: FidoRules,
    pub(super) found: Option<Found>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    svc: &Service,
    shared: &Arc<Shared>,
    caller: Caller,
    account: &Account,
    enrollments: Vec<Enrollment>,
    r: AuthRequest,
    interactive: bool,
    looked: Looked,
) -> Result<Zeroizing<String>> {
    let insert_wait = shared.capped(svc.config().device.insert_timeout);
    let waiting_until = tokio::time::Instant::now() + insert_wait;
    let Looked {
        mut events,
        fido,
        mut found,
    } = looked;
    let (device, enrollment) = loop {
        // What the start found is used once; every later look asks the devices again.
        let now = match found.take() {
            Some(f) => Ok(f),
            None => {
                let look = shared.capped(svc.config().device.timeout);
                find(svc, account, &enrollments, &r, interactive, fido, look).await
            }
        };
        match now {
            Ok(Found::One(d, e)) => break (d, *e),
            Ok(Found::Selectable(options)) => {
                match select_device::select(svc, shared, options).await {
                    Ok(found) => break found,
                    // The devices went while the user chose: look again.
                    Err(Error::DeviceRemoved) if r.wait => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Found::Broken { error, .. }) => return Err(error),
            Err(e @ (Error::NotEnrolled(_) | Error::NoDevice)) if r.wait => {
                let _ = e;
                shared.progress(Progress::WaitingForDevice);
            }
            Err(Error::DeviceAmbiguous(devices)) if r.wait => {
                shared.progress(Progress::SelectingDevice { devices });
            }
            Err(e) => return Err(e),
        }
        // Until a device comes or goes (or events were missed: look again anyway).
        tokio::select! {
            _ = events.recv() => {}
            () = tokio::time::sleep_until(waiting_until) => return Err(Error::Timeout {
                what: "no enrolled device was inserted",
                after: insert_wait,
            }),
            () = shared.cancel_token().cancelled() => return Err(Error::Cancelled),
        }
    };
    drop(events);
    shared.progress(Progress::Working {
        device: device.info.id.clone(),
    });
    // The caller is the account or root (resolve_user) and the device holds a key enrolled for
    // the account, so the caller owns it: no PIN guard look-up on the login path.
    check_enrolled_device(&device, &enrollment)?;
    let mut rules = svc.rules_for(account).await?;
    if let Some(aud) = &r.audience {
        // The caller's audience ("pam:login") for this token only; its other rules stay the user's.
        rules.audience.clone_from(aud);
    }
    let needs_secret = needs_secret(&enrollment, fido);
    let amr = device.authenticator.methods(needs_secret);
    let slot = Arc::new(Mutex::new(None::<Ahead>));
    let mut ix = RequestInteraction::new(svc, Arc::clone(shared), caller, interactive);
    ix.user = Some(account.name.clone());
    ix.give(SecretKind::PinCode, r.pin);
    {
        let (svc, slot, user) = (svc.clone(), Arc::clone(&slot), account.name.clone());
        let (enrollment, sid, rules) =
            (enrollment.clone(), device.session_id.clone(), rules.clone());
        ix.on_final = Some(Box::new(move || {
            let (svc, slot, user) = (svc.clone(), Arc::clone(&slot), user.clone());
            let (enrollment, sid, rules, amr) =
                (enrollment.clone(), sid.clone(), rules.clone(), amr.clone());
            Box::pin(async move {
                let ahead = Ahead::start(&svc, &user, &enrollment, &sid, amr, &rules).await?;
                *lock(&slot) = Some(ahead);
                Ok(())
            })
        }));
    }
    {
        let (svc, slot) = (svc.clone(), Arc::clone(&slot));
        ix.on_failed_attempt = Some(Box::new(move || {
            let (svc, slot) = (svc.clone(), Arc::clone(&slot));
            Box::pin(async move {
                let ahead = lock(&slot).take();
                if let Some(a) = ahead {
                    a.undo(&svc).await;
                }
                Ok(())
            })
        }));
    }
    let challenge = Challenge::new()?;
    let enrolled = enrolled_key(&enrollment, needs_secret);
    let asserted = match device.authenticator.assert(&challenge, enrolled, &ix).await {
        // A verified signature from a key whose counter went back is a clone's.
        Ok(a) => svc.check_sign_count(&enrollment, a.sign_count).await,
        Err(e) => Err(e),
    };
    let ahead = lock(&slot).take();
    let Some(ahead) = ahead else {
        // Failed before the final exchange began: nothing was written.
        return asserted.and(Err(Error::Internal(
            "an assertion succeeded without its final exchange".into(),
        )));
    };
    ahead.finish(svc, &device, asserted, &rules).await
}

/// The token of an authentication, signed and its row written ahead while the device works: the
/// commit overlaps the device exchange. Nobody sees the token unless the assertion verifies;
/// otherwise the row is removed. At the live-token limit the same commit revokes the oldest tokens,
/// and removing the row revives them (see `tokens::Superseding`).
struct Ahead {
    prepared: tokens::Prepared,
    task: JoinHandle<(Result<bool>, tokens::Superseding)>,
}

impl Ahead {
    async fn start(
        svc: &Service,
        user: &str,
        enrollment: &Enrollment,
        session_id: &str,
        amr: Vec<String>,
        rules: &TokenPolicy,
    ) -> Result<Ahead> {
        let prepared = tokens::prepare(
            svc,
            tokens::Grant {
                user,
                enrollment,
                session_id,
                amr,
                auth_time: svc.inner.clock.unix_secs(),
                carried: None,
            },
            rules,
        )
        .await?;
        let superseding = tokens::Superseding::claim(svc, user, rules);
        let task = {
            let svc = svc.clone();
            let record = prepared.record.clone();
            tokio::spawn(async move {
                let r = tokens::insert_ahead(&svc, record, &superseding).await;
                (r, superseding)
            })
        };
        Ok(Ahead { prepared, task })
    }

    /// The attempt failed: the row goes (or was never written).
    async fn undo(self, svc: &Service) {
        let jti = self.prepared.record.jti.clone();
        match self.task.await {
            Ok((Ok(_), superseding)) => tokens::discard(svc, &jti, superseding).await,
            Ok((Err(_), superseding)) => superseding.release(),
            Err(e) => tracing::error!("token insert task: {e}"),
        }
    }

    /// Issues the token if the assertion verified and the device session is still open.
    async fn finish(
        self,
        svc: &Service,
        device: &Device,
        asserted: Result<()>,
        rules: &TokenPolicy,
    ) -> Result<Zeroizing<String>> {
        let jti = self.prepared.record.jti.clone();
        let (inserted, superseding) = match self.task.await {
            Ok(r) => r,
            // The task panicked and dropped its claims (they end revoked, see `Superseding`).
            Err(e) => return Err(Error::Internal(format!("token insert task: {e}"))),
        };
        // Refused by the store (the device session had already ended: DeviceRemoved): nothing
        // was written.
        if let Err(e) = inserted {
            superseding.release();
            return Err(asserted.err().unwrap_or(e));
        }
        if let Err(e) = asserted {
            tokens::discard(svc, &jti, superseding).await;
            return Err(e);
        }
        let session = device.session.lock().await;
        if !session.open {
            // Removed after the row was written: the removal revoked it, or it is simply unissued.
            drop(session);
            tokens::discard(svc, &jti, superseding).await;
            return Err(Error::DeviceRemoved);
        }
        tokens::record(svc, self.prepared, rules, Some(superseding)).await
    }
}

/// The account's enrollments; those made for another uid of the same name (an account deleted and
/// re-created) are not the account's and are skipped, with a log line.
pub(super) fn enrollments_of(svc: &Service, account: &Account) -> Result<Vec<Enrollment>> {
    let all = svc.inner.store.enrollments_for_user(&account.name)?;
    let (own, stale): (Vec<Enrollment>, Vec<Enrollment>) =
        all.into_iter().partition(|e| e.uid == account.uid);
    for e in &stale {
        tracing::warn!(
            user = %account.name, enrollment = %e.id, enrolled_uid = e.uid, uid = account.uid,
            "ignoring an enrollment made for another uid of this account name"
        );
    }
    if own.is_empty() {
        return Err(Error::NotEnrolled(format!(
            "{} has no enrolled device",
            account.name
        )));
    }
    Ok(own)
}

/// The device is the enrolled one: the GUID and the device key recorded at enrollment, the latter
/// proven by a fresh signature when the device was identified. Certificates alone are public and
/// can be copied onto another card.
fn check_enrolled_device(device: &Device, enrollment: &Enrollment) -> Result<()> {
    let identity = &device.identity;
    if enrollment.device_identity.is_some() && identity.guid != enrollment.device_identity {
        return Err(Error::SignatureInvalid(
            "the device presents an enrolled certificate but not the enrolled device's GUID",
        ));
    }
    if let Some(enrolled) = &enrollment.device_key_thumbprint {
        let proven = identity
            .device_key
            .as_ref()
            .is_some_and(|k| &k.thumbprint == enrolled && k.proven);
        if !proven {
            return Err(Error::SignatureInvalid(
                "the device did not prove it holds the enrolled device key",
            ));
        }
    }
    Ok(())
}

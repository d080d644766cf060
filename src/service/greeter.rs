//! Greeter login: an authentication that names no user. The user is whoever the present device
//! holds an enrollment of — exactly one account, or the request fails ([`Error::UserAmbiguous`]).
//! Administrators only (the greeter runs as root): for anyone else it would tell whose device
//! this is.
//!
//! Once the user is known the request is an ordinary authentication of that account (lockout,
//! device choice, PIN, token issue): [`authenticate::run_for`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::authenticate::{self, enrollments_of, Looked};
use super::find_device::held;
use super::requests::{AuthRequest, Request, Shared};
use super::{Caller, Service};
use crate::authenticator::Progress;
use crate::policy::users::Account;
use crate::store::Enrollment;
use crate::{Error, Result};

/// Starts a greeter authentication (`r.any_user`).
pub(super) async fn start(
    svc: &Service,
    caller: Caller,
    r: AuthRequest,
    interactive: bool,
) -> Result<Request> {
    if !caller.is_root() {
        return Err(Error::AccessDenied(
            "only an administrator may authenticate whoever the device is enrolled for".into(),
        ));
    }
    // Subscribed before the first look, so that no insertion falls between.
    let mut events = svc.subscribe();
    let look = r.timeout.map_or(svc.config().device.timeout, |t| {
        t.min(svc.config().device.timeout)
    });
    match whose(svc, caller, &r, look).await {
        Ok(account) => return authenticate::start(svc, caller, account, r, interactive).await,
        Err(Error::NotEnrolled(_) | Error::NoDevice) if r.wait => {}
        Err(e) => return Err(e),
    }
    let (shared, request) = svc.inner.requests.open(
        caller.uid,
        Progress::WaitingForDevice,
        r.timeout,
        interactive,
    )?;
    let svc = svc.clone();
    tokio::spawn(async move {
        let result = async {
            let account = wait_for_user(&svc, &shared, caller, &r, &mut events).await?;
            svc.check_lockout(&account.name)?;
            let enrollments = enrollments_of(&svc, &account)?;
            let fido = svc.fido_rules_for(&account).await?;
            let looked = Looked {
                events,
                fido,
                found: None,
            };
            authenticate::run_for(
                &svc,
                &shared,
                caller,
                &account,
                enrollments,
                r,
                interactive,
                looked,
            )
            .await
        }
        .await;
        authenticate::conclude(svc, &shared, result).await;
    });
    Ok(request)
}

/// Waits (within the request's insertion wait) until a present device tells whose it is.
async fn wait_for_user(
    svc: &Service,
    shared: &Arc<Shared>,
    caller: Caller,
    r: &AuthRequest,
    events: &mut tokio::sync::broadcast::Receiver<super::Event>,
) -> Result<Account> {
    let insert_wait = shared.capped(svc.config().device.insert_timeout);
    let until = tokio::time::Instant::now() + insert_wait;
    loop {
        // Until a device comes or goes (or events were missed: look again anyway).
        tokio::select! {
            _ = events.recv() => {}
            () = tokio::time::sleep_until(until) => return Err(Error::Timeout {
                what: "no enrolled device was inserted",
                after: insert_wait,
            }),
            () = shared.cancel_token().cancelled() => return Err(Error::Cancelled),
        }
        let look = shared.capped(svc.config().device.timeout);
        match whose(svc, caller, r, look).await {
            Ok(account) => return Ok(account),
            Err(Error::NotEnrolled(_) | Error::NoDevice) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The one account the present devices (those `r` allows) hold enrollments of.
///
/// Errors: [`Error::NoDevice`] when no such device is present; [`Error::NotEnrolled`] when none
/// holds an enrollment of a current account; [`Error::UserAmbiguous`] when they hold several
/// accounts' enrollments.
async fn whose(
    svc: &Service,
    caller: Caller,
    r: &AuthRequest,
    timeout: Duration,
) -> Result<Account> {
    let mut candidates = match &r.device {
        Some(id) => vec![svc.device(id).ok_or(Error::NoDevice)?],
        None => svc.present_devices(),
    };
    if let Some(kinds) = &r.kinds {
        candidates.retain(|d| kinds.iter().any(|k| k == &d.info.kind));
    }
    if candidates.is_empty() {
        return Err(Error::NoDevice);
    }
    let rp_id = svc.config().fido.rp_id.clone();
    let all: Vec<Enrollment> = svc
        .inner
        .store
        .enrollments()?
        .into_iter()
        .filter(|e| e.rp_id.as_deref().is_none_or(|rp| rp == rp_id))
        .collect();
    // Enrolled uid by account name, of every enrollment some present device holds.
    let mut holders: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for d in candidates {
        match held(&d, &all, caller.uid, timeout).await {
            Ok(own) => {
                for e in own {
                    holders.entry(e.user.clone()).or_default().push(e.uid);
                }
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                tracing::debug!(device = %d.info.id, "cannot tell which credentials the device holds: {e}");
            }
        }
    }
    // Only enrollments made for the account as it is now (not a deleted namesake's) count.
    let mut accounts = Vec::new();
    for (name, uids) in holders {
        match svc.inner.accounts.by_name(&name).await {
            Ok(a) if uids.contains(&a.uid) => accounts.push(a),
            Ok(_) | Err(Error::NoSuchUser(_)) => {
                tracing::info!(user = %name, "a present device holds an enrollment of a stale account");
            }
            Err(e) => return Err(e),
        }
    }
    match accounts.len() {
        0 => Err(Error::NotEnrolled(
            "no present device is enrolled for any account".into(),
        )),
        1 => Ok(accounts.remove(0)),
        _ => Err(Error::UserAmbiguous(
            accounts
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

//! Enrollment, as a request: the device proves the user knows its PIN and holds the private key of
//! a credential; the key is then recorded for the account (name and uid), with what identifies the
//! device (GUID, device key) so that later logins send the PIN only to this device.
//!
//! What the request asks of the device follows the policy: `[fido]` gives every device the
//! relying-party id, the user verification, the PIN rule, the algorithms and the credentials to
//! exclude (the account's others of the same kind), and kinds that have no use for them ignore
//! them. A device whose identity names its credentials (PIV: the slots' certificates, read at
//! insertion) must enroll the very key it showed; a FIDO key makes a new credential.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::devices::Device;
use super::pin_guard;
use super::request_interaction::RequestInteraction;
use super::requests::{EnrollRequest, Request, Shared};
use super::{Caller, Service};
use crate::authenticator::SecretKind;
use crate::policy::users::Account;
use crate::store::{DeviceKind, Enrollment, WriteOp};
use crate::{Error, Result};

/// Starts enrolling a credential of device `device_id` for `account` (resolved for `caller`).
pub(super) async fn start(
    svc: &Service,
    caller: Caller,
    account: Account,
    device_id: &str,
    r: EnrollRequest,
    interactive: bool,
) -> Result<Request> {
    // Enrollment tries the PIN too, so it counts toward the same lockout.
    svc.check_lockout(&account.name)?;
    let device = svc.device(device_id).ok_or(Error::NoDevice)?;
    let (shared, request) = svc.open_request_on(&device, caller, r.timeout, interactive)?;
    let svc = svc.clone();
    tokio::spawn(async move {
        let result = run(&svc, &shared, caller, &account, device, r, interactive).await;
        svc.note_outcome(&account.name, &result);
        // Not kept past the outcome (see `WeakService`).
        drop(svc);
        shared.conclude(result.map(Zeroizing::new));
    });
    Ok(request)
}

async fn run(
    svc: &Service,
    shared: &Arc<Shared>,
    caller: Caller,
    account: &Account,
    device: Arc<Device>,
    r: EnrollRequest,
    interactive: bool,
) -> Result<String> {
    let wanted = device.authenticator.enrollable(r.credential.as_deref())?;
    let credential = wanted.credential.clone();
    let kind: DeviceKind = device.authenticator.kind().parse()?;
    // `[piv]` is PIV's policy; a FIDO key's user verification is the authenticator's to enforce
    // (it refuses to enroll without it when `[fido]` requires it).
    if kind == DeviceKind::Piv {
        if !wanted.needs_secret && !svc.allow_pinless(account)? {
            return Err(Error::AccessDenied(format!(
                "PIN-less authentication (credential {credential}) is not allowed for {}: a login \
                 with it proves only that the device is present; the administrator can allow it \
                 with `[piv] allow_pinless = true` (or per user or group)",
                account.name
            )));
        }
        // A PIV enrollment always proves the PIN.
        if r.pin.is_none() && !interactive {
            return Err(Error::PinRequired);
        }
    }
    if interactive {
        // Not even the retry counter of a card enrolled for someone else is read for a prompt.
        pin_guard::may_ask(svc, caller, &device).await?;
    }
    // Checked on what the device showed at insertion, so no PIN is spent on a device that has
    // nothing to enroll or that could not prove it holds its device key.
    let names_credentials = !device.identity.credentials.is_empty();
    let identified = device.identity.thumbprint(&credential).map(str::to_owned);
    if names_credentials && identified.is_none() {
        return Err(Error::Device(format!(
            "the device holds no credential {credential} (no certificate in slot {credential})"
        )));
    }
    let device_key = device.identity.device_key.clone();
    if device_key.as_ref().is_some_and(|k| !k.proven) {
        return Err(Error::SignatureInvalid(
            "the device could not prove it holds the device key its certificate names",
        ));
    }
    let mut ix = RequestInteraction::new(svc, Arc::clone(shared), caller, interactive);
    ix.user = Some(account.name.clone());
    ix.guard = Some(Arc::clone(&device));
    ix.give(SecretKind::PinCode, r.pin);
    let config = svc.config();
    let fido = svc.fido_rules_for(account).await?;
    let algorithms: Vec<&str> = config.fido.algorithms.iter().map(String::as_str).collect();
    let existing = svc.inner.store.enrollments_for_user(&account.name)?;
    // The account's credentials of this kind: a FIDO key that holds one already makes no second.
    let exclude: Vec<String> = existing
        .iter()
        .filter(|e| e.kind == kind && e.uid == account.uid)
        .map(|e| e.credential.clone())
        .collect();
    let request = crate::authenticator::EnrollRequest {
        credential: &credential,
        user: &account.name,
        uid: account.uid,
        rp_id: &config.fido.rp_id,
        exclude: &exclude,
        user_verification: fido.user_verification,
        pin_required: fido.pin_required,
        algorithms: &algorithms,
    };
    let enrolled = device.authenticator.enroll(request, &ix).await?;
    // The key later logins look for on this device is the one it showed at insertion.
    if identified
        .as_ref()
        .is_some_and(|t| *t != enrolled.thumbprint)
    {
        return Err(Error::Device(format!(
            "the credential {credential} is not the one the device showed when it was inserted"
        )));
    }
    let mut ops = Vec::new();
    for existing in existing {
        if existing.key_thumbprint != enrolled.thumbprint {
            continue;
        }
        if existing.uid != account.uid {
            // The account was deleted and re-created with this name: the old enrollment is not
            // its, and the key may be enrolled afresh (one enrollment per user and key).
            tracing::warn!(
                user = %account.name, enrollment = %existing.id, old_uid = existing.uid,
                "replacing an enrollment made for another uid of this account name"
            );
            ops.push(WriteOp::DeleteEnrollment { id: existing.id });
        } else if existing.credential == enrolled.credential {
            return Ok(existing.id);
        }
    }
    let enrollment = Enrollment {
        id: crate::token::new_jti(),
        user: account.name.clone(),
        uid: account.uid,
        kind,
        credential: enrolled.credential.clone(),
        algorithm: enrolled.algorithm.parse()?,
        public_key: enrolled.public_key,
        key_thumbprint: enrolled.thumbprint,
        rp_id: enrolled.rp_id,
        sign_count: enrolled.sign_count,
        device_identity: enrolled.device_guid,
        device_key_thumbprint: device_key.map(|k| k.thumbprint),
        label: enrolled.subject,
        require_pin: enrolled.needs_secret,
        created: svc.inner.clock.unix_secs(),
        last_used: None,
    };
    let id = enrollment.id.clone();
    let stored = enrollment.credential.clone();
    ops.push(WriteOp::InsertEnrollment(enrollment));
    svc.inner.store.apply(ops).await?;
    tracing::info!(user = %account.name, kind = %kind, credential = %stored, device = %device.info.id, "enrolled");
    Ok(id)
}

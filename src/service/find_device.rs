//! Which present device, and which of the account's enrollments on it, an authentication uses.
//!
//! Each candidate device says which of the account's enrollments of its kind it holds
//! ([`crate::authenticator::Authenticator::holds`]: a PIV card from what it showed at insertion,
//! a FIDO key by a silent pre-flight that asks for no touch). One device holding some: that one.
//! Several: when each can be chosen by a touch ([`Authenticator::selectable`]), the caller's flow
//! asks for one ([`super::select_device`]); otherwise the request waits until one remains.

use std::sync::Arc;
use std::time::Duration;

use super::devices::Device;
use super::requests::AuthRequest;
use super::Service;
use crate::authenticator::{Authenticator, EnrolledKey};
use crate::policy::config::FidoRules;
use crate::policy::users::Account;
use crate::store::{DeviceKind, Enrollment};
use crate::{Error, Result};

/// What [`find`] found.
pub(super) enum Found {
    /// The device and enrollment to use.
    One(Arc<Device>, Box<Enrollment>),
    /// Several devices hold an enrollment and each can be chosen by a touch: the device and the
    /// enrollment to use on each, by device id.
    Selectable(Vec<(Arc<Device>, Enrollment)>),
    /// No device holds an enrollment, and `device` could not say what it holds: its `error` ends
    /// the request (as a failure of the request, not of the call that started it).
    Broken { device: String, error: Error },
}

/// The device (or the devices to choose among) and enrollment for `r` now.
///
/// Each device is asked for at most `timeout`. A device that cannot say what it holds counts as
/// holding none, so that another can serve the request; when none does, its error is the answer,
/// [`Found::Broken`] (a key that answers garbage is a device error now, not a wait for another
/// key), unless it was only removed meanwhile.
///
/// Errors: [`Error::NoDevice`] when no candidate device is present; [`Error::NotEnrolled`] when
/// none holds an enrolled credential; [`Error::DeviceAmbiguous`] when several do and not every
/// one can be chosen by touch; the errors of [`pick`].
pub(super) async fn find(
    svc: &Service,
    account: &Account,
    enrollments: &[Enrollment],
    r: &AuthRequest,
    interactive: bool,
    fido: FidoRules,
    timeout: Duration,
) -> Result<Found> {
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
    let config = svc.config();
    // A credential is scoped to the relying-party id it was made for (WebAuthn §6.1), and logins
    // are for the configured one: a credential of another (the id was changed) serves none.
    let usable: Vec<Enrollment> = enrollments
        .iter()
        .filter(|e| {
            let ok = e.rp_id.as_deref().is_none_or(|rp| rp == config.fido.rp_id);
            if !ok {
                tracing::info!(
                    enrollment = %e.id, rp_id = ?e.rp_id, configured = %config.fido.rp_id,
                    "skipping a credential made for another relying-party id"
                );
            }
            ok
        })
        .cloned()
        .collect();
    let mut matching: Vec<(Arc<Device>, Vec<&Enrollment>)> = Vec::new();
    let mut failed = None;
    for d in candidates {
        let own = match held(&d, &usable, account.uid, timeout).await {
            Ok(own) => own,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            // Another device may still serve the request.
            Err(e) => {
                tracing::debug!(device = %d.info.id, "cannot tell which credentials the device holds: {e}");
                if !matches!(e, Error::DeviceRemoved) {
                    failed.get_or_insert((d.info.id.clone(), e));
                }
                Vec::new()
            }
        };
        if !own.is_empty() {
            matching.push((d, own));
        }
    }
    let with_pin = r.pin.is_some();
    if matching.len() > 1 {
        if !matching.iter().all(|(d, _)| d.authenticator.selectable()) {
            return Err(Error::DeviceAmbiguous(
                matching.iter().map(|(d, _)| d.info.id.clone()).collect(),
            ));
        }
        // A device none of whose enrollments fits the request is no choice.
        let mut first_error = None;
        let mut options = Vec::new();
        for (d, own) in matching {
            match pick(&own, with_pin, interactive, fido) {
                Ok(e) => options.push((d, e)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        return match options.len() {
            0 => Err(first_error.unwrap_or_else(|| not_enrolled(account))),
            1 => {
                let (d, e) = options.remove(0);
                Ok(Found::One(d, Box::new(e)))
            }
            _ => Ok(Found::Selectable(options)),
        };
    }
    let Some((device, own)) = matching.pop() else {
        return match failed {
            Some((device, error)) => Ok(Found::Broken { device, error }),
            None => Err(not_enrolled(account)),
        };
    };
    let enrollment = pick(&own, with_pin, interactive, fido)?;
    Ok(Found::One(device, Box::new(enrollment)))
}

fn not_enrolled(account: &Account) -> Error {
    Error::NotEnrolled(format!(
        "no present device is enrolled for {}",
        account.name
    ))
}

/// Whether the credential of `e` needs the device's PIN (or built-in user verification) now: as
/// enrolled, or because the FIDO policy in force asks for verification (a stricter policy applies
/// to enrollments made before it).
pub(super) fn needs_secret(e: &Enrollment, fido: FidoRules) -> bool {
    e.require_pin || (e.kind == DeviceKind::Fido && fido.demands_verification())
}

/// The key as the authenticator checks an assertion against it.
pub(super) fn enrolled_key(e: &Enrollment, needs_secret: bool) -> EnrolledKey<'_> {
    EnrolledKey {
        credential: &e.credential,
        algorithm: e.algorithm.as_str(),
        public_key: &e.public_key,
        needs_secret,
        thumbprint: &e.key_thumbprint,
        rp_id: e.rp_id.as_deref(),
        sign_count: e.sign_count,
    }
}

/// The enrollments among `enrollments` (of any kind) that `device` holds, asked on behalf of the
/// caller `uid`. Errors: the device's, when it cannot answer.
pub(super) async fn held<'e>(
    device: &Device,
    enrollments: &'e [Enrollment],
    uid: u32,
    timeout: Duration,
) -> Result<Vec<&'e Enrollment>> {
    let authenticator: &dyn Authenticator = device.authenticator.as_ref();
    let kind = authenticator.kind();
    let of_kind: Vec<&Enrollment> = enrollments
        .iter()
        .filter(|e| e.kind.as_str() == kind)
        .collect();
    let mut own = Vec::new();
    // The device answers by credential reference, which two enrollments of one account may
    // share (PIV slot 9a on two cards): each batch names every reference once, so an answer
    // means exactly one enrollment. FIDO credential ids are unique: one batch.
    for batch in distinct_batches(&of_kind) {
        let keys: Vec<EnrolledKey<'_>> = batch
            .iter()
            .map(|e| enrolled_key(e, e.require_pin))
            .collect();
        let refs = authenticator
            .holds(&device.identity, &keys, uid, timeout)
            .await?;
        own.extend(
            batch
                .iter()
                .filter(|e| refs.iter().any(|c| c == &e.credential))
                .copied(),
        );
    }
    Ok(own)
}

/// `items` split, in order, into batches in which no credential reference repeats.
fn distinct_batches<'e>(items: &[&'e Enrollment]) -> Vec<Vec<&'e Enrollment>> {
    let mut batches: Vec<Vec<&'e Enrollment>> = Vec::new();
    for e in items {
        let free = batches
            .iter_mut()
            .find(|b| !b.iter().any(|o| o.credential == e.credential));
        match free {
            Some(b) => b.push(e),
            None => batches.push(vec![e]),
        }
    }
    batches
}

/// The enrollment to use among those one device holds: one that needs a PIN when one is given, or
/// needs none when not (an interactive request without a PIN takes one that needs a PIN if it
/// must, and asks for it).
///
/// Errors: [`Error::PinRequired`] when no PIN is given, the request cannot ask, and the device's
/// enrollments all need one; [`Error::InvalidArgument`] when a PIN is given for a device enrolled
/// only without one (it would otherwise be dropped unseen).
fn pick(
    own: &[&Enrollment],
    with_pin: bool,
    interactive: bool,
    fido: FidoRules,
) -> Result<Enrollment> {
    let exact = own.iter().find(|e| needs_secret(e, fido) == with_pin);
    let fallback = (!with_pin && interactive)
        .then(|| own.iter().find(|e| needs_secret(e, fido)))
        .flatten();
    exact.or(fallback).map(|e| (*e).clone()).ok_or_else(|| {
        if with_pin {
            Error::InvalidArgument(
                "a PIN was given, but the key enrolled on this device needs none; authenticate \
                 without a PIN"
                    .into(),
            )
        } else {
            Error::PinRequired
        }
    })
}

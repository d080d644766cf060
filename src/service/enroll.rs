//! Enrollment: the card proves the user knows its PIN and holds the private key of a slot's
//! certificate; the key is then recorded for the account (name and uid), with what identifies the
//! card (CHUID GUID, 9E key) so that later logins send the PIN only to this card.

use std::sync::atomic::Ordering;

use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::card_ops::guarded_verify;
use super::{pin_guard, Caller, EnrollOptions, Service};
use crate::piv::{Piv, Slot};
use crate::policy::users::Account;
use crate::store::{DeviceKind, Enrollment, KeyAlgorithm, WriteOp};
use crate::token::jwk_thumbprint;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

pub(super) async fn enroll(
    svc: &Service,
    caller: Caller,
    account: &Account,
    device_id: &str,
    opts: EnrollOptions,
) -> Result<String> {
    // Enrollment tries the PIN too, so it counts toward the same lockout.
    svc.check_lockout(&account.name)?;
    let result = enroll_checked(svc, caller, account, device_id, opts).await;
    svc.note_outcome(&account.name, &result);
    result
}

async fn enroll_checked(
    svc: &Service,
    caller: Caller,
    account: &Account,
    device_id: &str,
    opts: EnrollOptions,
) -> Result<String> {
    let device = svc.device(device_id).ok_or(Error::NoDevice)?;
    let slot = opts.slot.unwrap_or(Slot::Authentication);
    if !matches!(slot, Slot::Authentication | Slot::CardAuthentication) {
        return Err(Error::InvalidArgument(format!(
            "slot {slot} cannot be enrolled; use 9a or 9e"
        )));
    }
    if slot == Slot::CardAuthentication && !svc.allow_pinless(account)? {
        return Err(Error::AccessDenied(format!(
            "PIN-less card authentication (slot 9e) is not allowed for {}: a login with it proves \
             only that the card is present; the administrator can allow it with `[piv] \
             allow_pinless = true` (or per user or group)",
            account.name
        )));
    }
    let pin = opts.pin.ok_or(Error::PinRequired)?;
    // Checked on what the card showed at insertion, so no PIN is spent on a card that has nothing
    // to enroll or that could not prove it holds its 9E key.
    let Some(identified) = device.identity.thumbprint(slot).map(str::to_owned) else {
        return Err(Error::Device(format!(
            "the card has no certificate in slot {slot}"
        )));
    };
    let card_auth_thumbprint = device
        .identity
        .thumbprint(Slot::CardAuthentication)
        .map(str::to_owned);
    if card_auth_thumbprint.is_some() && !device.identity.card_auth_proven {
        return Err(Error::SignatureInvalid(
            "the card could not prove it holds the 9E key its certificate names",
        ));
    }
    let admission = pin_guard::admit(svc, caller, &device).await?;
    let accepted = admission.accepted_flag();
    let cfg = svc.config();
    let keep_last = cfg.pin.keep_last_retry;
    let challenge = Challenge::new()?;
    let digest = challenge.digest();
    let exchange = device
        .worker
        .run_for(caller.uid, cfg.device.timeout, move |card| {
            let mut piv = Piv::new(card);
            piv.select()?;
            guarded_verify(&mut piv, &pin, keep_last)?;
            accepted.store(true, Ordering::SeqCst);
            let cert = piv.certificate(slot);
            let guid = piv.chuid().map(|c| c.and_then(|c| c.guid));
            let signature = piv.sign_p256(slot, &digest);
            let _ = piv.reset_pin_status();
            let cert = cert?.ok_or_else(|| {
                Error::Device(format!("the card has no certificate in slot {slot}"))
            })?;
            Ok((cert, signature?, guid?))
        })
        .await;
    admission.settle(svc, &exchange).await;
    let (cert, signature, guid) = exchange?;
    let summary = crate::piv::cert::summarize(&cert)?;
    // Proof of possession: the card holds the private key of the certificate it presents.
    challenge.verify(&summary.public_key, &signature)?;
    let thumbprint = jwk_thumbprint(&summary.public_key);
    // The key later logins look for on this card is the one it showed at insertion.
    if thumbprint != identified {
        return Err(Error::Device(format!(
            "the certificate in slot {slot} is not the one the card showed when it was inserted"
        )));
    }
    let mut ops = Vec::new();
    for existing in svc.inner.store.enrollments_for_user(&account.name)? {
        if existing.key_thumbprint != thumbprint {
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
        } else if existing.credential == slot.to_string() {
            return Ok(existing.id);
        }
    }
    let enrollment = Enrollment {
        id: crate::token::new_jti(),
        user: account.name.clone(),
        uid: account.uid,
        kind: DeviceKind::Piv,
        credential: slot.to_string(),
        algorithm: KeyAlgorithm::Es256,
        public_key: summary
            .public_key
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        key_thumbprint: thumbprint,
        rp_id: None,
        sign_count: 0,
        device_identity: guid,
        device_key_thumbprint: card_auth_thumbprint,
        label: Some(summary.subject),
        require_pin: slot != Slot::CardAuthentication,
        created: svc.inner.clock.unix_secs(),
        last_used: None,
    };
    let id = enrollment.id.clone();
    ops.push(WriteOp::InsertEnrollment(enrollment));
    svc.inner.store.apply(ops).await?;
    tracing::info!(user = %account.name, %slot, device = %device.info.id, "enrolled");
    Ok(id)
}

//! Authentication: challenge a present enrolled card and issue a session token.

use zeroize::Zeroizing;

use super::card_ops::{pin_and_sign, reset_pin_status};
use super::tokens;
use super::{AuthOptions, Service};
use crate::challenge::Challenge;
use crate::piv::Slot;
use crate::users::Account;
use crate::{Error, Result};

pub(super) async fn authenticate(
    svc: &Service,
    account: &Account,
    opts: AuthOptions,
) -> Result<Zeroizing<String>> {
    svc.check_lockout(&account.name)?;
    let result = challenge_and_issue(svc, account, opts).await;
    svc.note_outcome(&account.name, &result);
    result
}

async fn challenge_and_issue(
    svc: &Service,
    account: &Account,
    opts: AuthOptions,
) -> Result<Zeroizing<String>> {
    let enrollments = svc.inner.store.enrollments_for_user(&account.name)?;
    if enrollments.is_empty() {
        return Err(Error::NotEnrolled(format!(
            "{} has no enrolled device",
            account.name
        )));
    }
    let candidates = match &opts.device {
        Some(id) => vec![svc.device(id).ok_or(Error::NoDevice)?],
        None => svc.present_devices(),
    };
    if candidates.is_empty() {
        return Err(Error::NoDevice);
    }
    let (device, enrollment) = candidates
        .iter()
        .find_map(|d| {
            enrollments
                .iter()
                .find(|e| {
                    e.slot
                        .parse::<Slot>()
                        .ok()
                        .and_then(|s| d.identity.thumbprint(s))
                        == Some(e.key_thumbprint.as_str())
                })
                .map(|e| (d.clone(), e.clone()))
        })
        .ok_or_else(|| {
            Error::NotEnrolled(format!(
                "no present device is enrolled for {}",
                account.name
            ))
        })?;
    let slot: Slot = enrollment.slot.parse()?;
    let enrolled_key = p256::PublicKey::from_sec1_bytes(&enrollment.public_key)
        .map_err(|_| Error::Storage(format!("enrollment {} has a bad key", enrollment.id)))?;
    let pin = if enrollment.require_pin {
        Some(opts.pin.ok_or(Error::PinRequired)?)
    } else {
        opts.pin
    };
    let used_pin = enrollment.require_pin;
    let cfg = svc.config();
    let keep_last = cfg.pin.keep_last_retry;
    let rules = svc.rules_for(account).await?;
    let mut amr = vec!["hwk".to_owned(), "sc".to_owned()];
    if used_pin {
        amr.push("pin".into());
        amr.push("mfa".into());
    }
    // The token does not depend on the card's answer, so it is signed now and its row written while
    // the card works: the commit overlaps the card exchange. Nobody sees the token unless the
    // signature verifies; otherwise the row is removed.
    let prepared = tokens::prepare(
        svc,
        tokens::Grant {
            user: &account.name,
            enrollment: &enrollment,
            session_id: &device.session_id,
            amr,
            auth_time: svc.inner.clock.unix_secs(),
        },
        &rules,
    )
    .await?;
    let jti = prepared.record.jti.clone();
    let ahead = {
        let svc = svc.clone();
        let record = prepared.record.clone();
        tokio::spawn(async move { tokens::insert_ahead(&svc, record).await })
    };
    let challenge = Challenge::new()?;
    let digest = challenge.digest();
    // The PIN status is dropped in the same exclusive session, after the signature is on its way.
    let signed = device
        .worker
        .run_then(
            cfg.device.timeout,
            move |card| {
                let pin = if used_pin { pin.as_ref() } else { None };
                pin_and_sign(card, slot, pin, keep_last, &digest)
            },
            move |card| {
                if used_pin {
                    reset_pin_status(card);
                }
            },
        )
        .await
        // Against the key stored at enrollment, never against what the card presents now.
        .and_then(|signature| challenge.verify(&enrolled_key, &signature));
    let inserted = match ahead.await {
        Ok(r) => r,
        Err(e) => Err(Error::Internal(format!("token insert task: {e}"))),
    };
    if let Err(e) = signed {
        if inserted.is_ok() {
            tokens::discard(svc, &jti).await;
        }
        return Err(e);
    }
    // Refused by the store: the device session had already ended (DeviceRemoved).
    inserted?;
    let session = device.session.lock().await;
    if !session.open {
        // Removed after the row was written: the removal revoked it, or it is simply unissued.
        tokens::discard(svc, &jti).await;
        return Err(Error::DeviceRemoved);
    }
    tokens::record(svc, prepared, &rules, true).await
}

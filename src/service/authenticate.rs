//! Authentication: challenge a present enrolled card and issue a session token.
//!
//! The PIN goes only to the enrolled card: the device is unambiguous (one present device holds a key
//! enrolled for the user, or the caller names one), and the card shows the CHUID GUID and proves the
//! 9E key recorded at enrollment (proved once per insertion, at identification, so it costs the login
//! nothing). A PIN given is never dropped: it selects the user's PIN (9A) enrollment.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::card_ops::{pin_and_sign, reset_pin_status};
use super::devices::Device;
use super::tokens;
use super::{AuthOptions, Caller, Service};
use crate::piv::Slot;
use crate::policy::users::Account;
use crate::store::Enrollment;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

pub(super) async fn authenticate(
    svc: &Service,
    caller: Caller,
    account: &Account,
    opts: AuthOptions,
) -> Result<Zeroizing<String>> {
    svc.check_lockout(&account.name)?;
    let result = challenge_and_issue(svc, caller, account, opts).await;
    svc.note_outcome(&account.name, &result);
    result
}

async fn challenge_and_issue(
    svc: &Service,
    caller: Caller,
    account: &Account,
    opts: AuthOptions,
) -> Result<Zeroizing<String>> {
    let enrollments = enrollments_of(svc, account)?;
    let candidates = match &opts.device {
        Some(id) => vec![svc.device(id).ok_or(Error::NoDevice)?],
        None => svc.present_devices(),
    };
    if candidates.is_empty() {
        return Err(Error::NoDevice);
    }
    let (device, enrollment) = choose(account, &enrollments, candidates, opts.pin.is_some())?;
    // The caller is the account or root (resolve_user) and the card holds a key enrolled for the
    // account, so the caller owns the card: no PIN guard look-up on the login path.
    check_enrolled_card(&device, &enrollment)?;
    let slot: Slot = enrollment.credential.parse()?;
    let enrolled_key = p256::PublicKey::from_sec1_bytes(&enrollment.public_key)
        .map_err(|_| Error::Storage(format!("enrollment {} has a bad key", enrollment.id)))?;
    // `choose` took a PIN enrollment exactly when a PIN was given.
    let used_pin = enrollment.require_pin;
    let pin = opts.pin;
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
    // signature verifies; otherwise the row is removed. At the live-token limit the same commit
    // revokes the oldest tokens, and removing the row revives them (see `tokens::Superseding`).
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
    let superseding = tokens::Superseding::claim(svc, &account.name, &rules);
    let ahead = {
        let svc = svc.clone();
        let record = prepared.record.clone();
        tokio::spawn(async move {
            let r = tokens::insert_ahead(&svc, record, &superseding).await;
            (r, superseding)
        })
    };
    let challenge = Challenge::new()?;
    let digest = challenge.digest();
    // The PIN status is dropped in the same exclusive session, after the signature is on its way.
    let signed = device
        .worker
        .run_then_for(
            caller.uid,
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
    let (inserted, superseding) = match ahead.await {
        Ok(r) => r,
        // The task panicked and dropped its claims (they end revoked, see `Superseding`).
        Err(e) => return Err(Error::Internal(format!("token insert task: {e}"))),
    };
    // Refused by the store (the device session had already ended: DeviceRemoved): nothing
    // was written.
    if let Err(e) = inserted {
        superseding.release();
        return Err(signed.err().unwrap_or(e));
    }
    if let Err(e) = signed {
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
    tokens::record(svc, prepared, &rules, Some(superseding)).await
}

/// The account's enrollments; those made for another uid of the same name (an account deleted and
/// re-created) are not the account's and are skipped, with a log line.
fn enrollments_of(svc: &Service, account: &Account) -> Result<Vec<Enrollment>> {
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

/// The device and enrollment to use: the one candidate device holding a key enrolled for the
/// account, and its enrollment that needs a PIN when one is given (9A) or needs none when not (9E).
///
/// Errors: [`Error::NotEnrolled`] when no candidate holds an enrolled key;
/// [`Error::DeviceAmbiguous`] when several do; [`Error::PinRequired`] when no PIN is given and the
/// card's enrollments all need one; [`Error::InvalidArgument`] when a PIN is given for a card
/// enrolled only without one (it would otherwise be dropped unseen).
fn choose(
    account: &Account,
    enrollments: &[Enrollment],
    candidates: Vec<Arc<Device>>,
    with_pin: bool,
) -> Result<(Arc<Device>, Enrollment)> {
    let mut matching: Vec<(Arc<Device>, Vec<&Enrollment>)> = candidates
        .into_iter()
        .map(|d| {
            let own: Vec<&Enrollment> = enrollments
                .iter()
                .filter(|e| {
                    e.credential
                        .parse::<Slot>()
                        .ok()
                        .and_then(|s| d.identity.thumbprint(s))
                        == Some(e.key_thumbprint.as_str())
                })
                .collect();
            (d, own)
        })
        .filter(|(_, own)| !own.is_empty())
        .collect();
    if matching.len() > 1 {
        return Err(Error::DeviceAmbiguous(
            matching.iter().map(|(d, _)| d.info.id.clone()).collect(),
        ));
    }
    let (device, own) = matching.pop().ok_or_else(|| {
        Error::NotEnrolled(format!(
            "no present device is enrolled for {}",
            account.name
        ))
    })?;
    let enrollment = own
        .into_iter()
        .find(|e| e.require_pin == with_pin)
        .cloned()
        .ok_or_else(|| {
            if with_pin {
                Error::InvalidArgument(
                    "a PIN was given, but the key enrolled on this card (slot 9e) needs none; \
                     authenticate without a PIN"
                        .into(),
                )
            } else {
                Error::PinRequired
            }
        })?;
    Ok((device, enrollment))
}

/// The card is the enrolled one: the CHUID GUID and the 9E key recorded at enrollment, the latter
/// proven by a fresh signature when the card was identified. Certificates alone are public and can
/// be copied onto another card.
fn check_enrolled_card(device: &Device, enrollment: &Enrollment) -> Result<()> {
    let identity = &device.identity;
    if enrollment.device_identity.is_some() && identity.guid != enrollment.device_identity {
        return Err(Error::SignatureInvalid(
            "the card presents an enrolled certificate but not the enrolled card's GUID",
        ));
    }
    if let Some(enrolled) = &enrollment.device_key_thumbprint {
        let same_key = identity.thumbprint(Slot::CardAuthentication) == Some(enrolled.as_str());
        if !(same_key && identity.card_auth_proven) {
            return Err(Error::SignatureInvalid(
                "the card did not prove it holds the enrolled card's 9E key",
            ));
        }
    }
    Ok(())
}

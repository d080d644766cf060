//! Enrollment: the card proves the user knows its PIN and holds the private key of a slot's
//! certificate; the key is then recorded for the account.

use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::card_ops::guarded_verify;
use super::{EnrollOptions, Service};
use crate::challenge::Challenge;
use crate::piv::{Piv, Slot};
use crate::store::{Enrollment, WriteOp};
use crate::token::jwk_thumbprint;
use crate::users::Account;
use crate::{Error, Result};

pub(super) async fn enroll(
    svc: &Service,
    account: &Account,
    device_id: &str,
    opts: EnrollOptions,
) -> Result<String> {
    // Enrollment tries the PIN too, so it counts toward the same lockout.
    svc.check_lockout(&account.name)?;
    let result = enroll_checked(svc, account, device_id, opts).await;
    svc.note_outcome(&account.name, &result);
    result
}

async fn enroll_checked(
    svc: &Service,
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
    let pin = opts.pin.ok_or(Error::PinRequired)?;
    let cfg = svc.config();
    let keep_last = cfg.pin.keep_last_retry;
    let challenge = Challenge::new()?;
    let digest = challenge.digest();
    let (cert, signature, guid) = device
        .worker
        .run(cfg.device.timeout, move |card| {
            let mut piv = Piv::new(card);
            piv.select()?;
            guarded_verify(&mut piv, &pin, keep_last)?;
            let cert = piv.certificate(slot);
            let guid = piv.chuid().map(|c| c.and_then(|c| c.guid));
            let signature = piv.sign_p256(slot, &digest);
            let _ = piv.reset_pin_status();
            let cert = cert?.ok_or_else(|| {
                Error::Device(format!("the card has no certificate in slot {slot}"))
            })?;
            Ok((cert, signature?, guid?))
        })
        .await?;
    let summary = crate::cert::summarize(&cert)?;
    // Proof of possession: the card holds the private key of the certificate it presents.
    challenge.verify(&summary.public_key, &signature)?;
    let thumbprint = jwk_thumbprint(&summary.public_key);
    if let Some(existing) = svc
        .inner
        .store
        .enrollments_for_user(&account.name)?
        .into_iter()
        .find(|e| e.key_thumbprint == thumbprint && e.slot == slot.to_string())
    {
        return Ok(existing.id);
    }
    let enrollment = Enrollment {
        id: crate::token::new_jti(),
        user: account.name.clone(),
        uid: account.uid,
        slot: slot.to_string(),
        public_key: summary
            .public_key
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        key_thumbprint: thumbprint,
        card_guid: guid,
        cert_subject: Some(summary.subject),
        card_auth_thumbprint: None,
        require_pin: slot != Slot::CardAuthentication,
        created: svc.inner.clock.unix_secs(),
    };
    let id = enrollment.id.clone();
    svc.inner
        .store
        .apply(vec![WriteOp::InsertEnrollment(enrollment)])
        .await?;
    tracing::info!(user = %account.name, %slot, device = %device.info.id, "enrolled");
    Ok(id)
}

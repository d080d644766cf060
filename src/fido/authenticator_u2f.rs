//! CTAP1/U2F keys (CTAP 2.1 §10; U2F raw message formats): REGISTER to enroll, AUTHENTICATE to
//! assert, check-only AUTHENTICATE for the silent pre-flight. U2F has no keepalive for the user's
//! touch: the key answers 6985 (conditions of use not satisfied) until touched, so the command is
//! sent again every [`POLL`], with "touch-needed" meanwhile.

use std::thread;
use std::time::{Duration, Instant};

use super::authenticator::{Call, FidoAuthenticator, Waiting};
use super::authenticator_ctap::{self as ctap, StoredKey, U2fControl};
use super::authenticator_enroll::{credential_reference, rp_id_hash};
use super::authenticator_identify::split_sw;
use super::link::{CtapLink, Keepalive, LinkContext};
use crate::authenticator::{
    Assertion, EnrollRequest, EnrolledCredential, EnrolledKey, Interaction,
};
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

/// How often a command waiting for the user's touch is sent again (6985).
const POLL: Duration = Duration::from_millis(100);

/// SW 9000: success.
const SW_OK: u16 = 0x9000;
/// SW 6985: the user has not touched the key yet (and, check-only: the key handle is its own).
const SW_CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
/// SW 6A80: the key handle is not the key's.
const SW_WRONG_DATA: u16 = 0x6A80;

/// Sends `apdu` until the key answers something else than 6985: the answer (data and SW) and
/// its SW.
fn until_touched(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    apdu: &[u8],
) -> Result<(Vec<u8>, u16)> {
    loop {
        let answer = link.msg(apdu, ctx)?;
        let sw = split_sw(&answer)?.1;
        if sw != SW_CONDITIONS_NOT_SATISFIED {
            return Ok((answer, sw));
        }
        (ctx.keepalive)(Keepalive::UpNeeded);
        let wake = Instant::now() + POLL;
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if wake >= ctx.deadline {
            return Err(Error::Timeout {
                what: "the key was not touched",
                after: Duration::ZERO,
            });
        }
        thread::sleep(POLL);
    }
}

/// An error for a status word the key should not have answered.
fn unexpected(what: &str, sw: u16) -> Error {
    Error::Device(format!("the key answered U2F {what} with {sw:04X}"))
}

/// The key handles of `ids` that are the key's (check-only AUTHENTICATE: 6985 yes, 6A80 no).
pub(super) fn check_only(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    rp_id: &str,
    ids: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>> {
    let application = rp_id_hash(rp_id);
    let challenge = [0u8; 32];
    let mut held = Vec::new();
    for id in ids {
        // A U2F key handle is at most 255 bytes (its length is one byte, §5.1).
        if id.len() > 255 {
            continue;
        }
        let apdu =
            ctap::u2f_authenticate_apdu(U2fControl::CheckOnly, &challenge, &application, id)?;
        let answer = link.msg(&apdu, ctx)?;
        match split_sw(&answer)?.1 {
            SW_CONDITIONS_NOT_SATISFIED => held.push(id.clone()),
            SW_WRONG_DATA => {}
            // Some keys answer a check-only with 6700 or 6D00 for handles not their own.
            sw => tracing::debug!("U2F check-only answered {sw:04X}; taken as not held"),
        }
    }
    Ok(held)
}

impl FidoAuthenticator {
    /// Enrolls a U2F-only key: REGISTER with application = SHA-256(rp_id).
    pub(super) async fn u2f_register(
        &self,
        request: EnrollRequest<'_>,
        ix: &dyn Interaction,
    ) -> Result<EnrolledCredential> {
        if !request.algorithms.contains(&"es256") {
            return Err(Error::InvalidArgument(
                "a U2F key has ES256 credentials only, and the policy does not accept es256".into(),
            ));
        }
        let application = rp_id_hash(request.rp_id);
        let challenge = Challenge::new()?.digest();
        let apdu = ctap::u2f_register_apdu(&challenge, &application)?;
        self.working(ix);
        ix.final_exchange().await?;
        let mut call = Call::of(ix, Waiting::Touch);
        call.timeout = ix.touch_timeout();
        let (answer, sw) = self
            .with_link(call, move |link, ctx| until_touched(link, ctx, &apdu))
            .await?;
        if sw != SW_OK {
            return Err(unexpected("REGISTER", sw));
        }
        let registered = ctap::u2f_registered(&answer)?;
        let credential = credential_reference(&registered.key_handle);
        self.remember_held(&credential, true);
        Ok(EnrolledCredential {
            credential,
            public_key: registered.key.bytes,
            algorithm: "es256",
            thumbprint: registered.key.thumbprint,
            device_guid: None,
            subject: None,
            needs_secret: false,
            rp_id: Some(request.rp_id.to_owned()),
            sign_count: 0,
        })
    }

    /// Asserts with a U2F key: AUTHENTICATE enforcing presence, the signature over application ‖
    /// user presence ‖ counter ‖ challenge (U2F raw message formats §5.4) checked with the
    /// enrolled key.
    pub(super) async fn u2f_assert(
        &self,
        challenge: &Challenge,
        enrolled: &EnrolledKey<'_>,
        key: &StoredKey,
        key_handle: &[u8],
        ix: &dyn Interaction,
    ) -> Result<Assertion> {
        if enrolled.needs_secret {
            return Err(Error::Device(
                "the credential was enrolled with user verification, which a U2F key cannot give"
                    .into(),
            ));
        }
        let rp_id = enrolled.rp_id.unwrap_or_default();
        let application = rp_id_hash(rp_id);
        let digest = challenge.digest();
        let apdu = ctap::u2f_authenticate_apdu(
            U2fControl::EnforcePresence,
            &digest,
            &application,
            key_handle,
        )?;
        self.working(ix);
        ix.final_exchange().await?;
        let mut call = Call::of(ix, Waiting::Touch);
        call.timeout = ix.touch_timeout();
        let (answer, sw) = self
            .with_link(call, move |link, ctx| until_touched(link, ctx, &apdu))
            .await?;
        match sw {
            SW_OK => {}
            SW_WRONG_DATA => {
                return Err(Error::NotEnrolled(
                    "the key does not hold the enrolled credential".into(),
                ))
            }
            sw => return Err(unexpected("AUTHENTICATE", sw)),
        }
        let answer = ctap::u2f_authenticated(&answer)?;
        if answer.presence & 0x01 == 0 {
            return Err(Error::SignatureInvalid(
                "the key signed without testing user presence",
            ));
        }
        let mut signed = Vec::with_capacity(32 + 1 + 4 + 32);
        signed.extend_from_slice(&application);
        signed.push(answer.presence);
        signed.extend_from_slice(&answer.counter.to_be_bytes());
        signed.extend_from_slice(&digest);
        ctap::verify(key, &signed, &answer.signature)?;
        Ok(Assertion {
            amr: vec!["hwk".into(), "user".into()],
            sign_count: Some(answer.counter),
        })
    }
}

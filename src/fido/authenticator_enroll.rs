//! Enrolling a FIDO key: a new, non-resident credential for the account, made with the user
//! verification the policy asks for (authenticatorMakeCredential, CTAP 2.1 §6.1), checked before
//! it is recorded: for our relying party, the user present (and verified when asked), a key of an
//! algorithm the policy accepts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::authenticator::{Call, FidoAuthenticator, Waiting};
use super::authenticator_ctap::{self as ctap, MakeCredential, PERMISSION_MC};
use super::authenticator_identify::KeyInfo;
use super::authenticator_pin as pin;
use crate::authenticator::{EnrollRequest, EnrolledCredential, Interaction};
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

/// Length of the random user handle (user.id, at most 64 bytes: WebAuthn §5.4.3).
const USER_HANDLE_LEN: usize = 32;

/// The JOSE name (lower case, as the policy and the store say it) of a COSE algorithm.
pub(super) fn jose_name(cose: i64) -> Option<&'static str> {
    match cose {
        ctap::COSE_ES256 => Some("es256"),
        ctap::COSE_EDDSA => Some("eddsa"),
        _ => None,
    }
}

/// The COSE algorithm of a JOSE name.
pub(super) fn cose_algorithm(jose: &str) -> Option<i64> {
    match jose {
        "es256" => Some(ctap::COSE_ES256),
        "eddsa" => Some(ctap::COSE_EDDSA),
        _ => None,
    }
}

/// The credential id of a stored credential reference (base64url, unpadded; padding tolerated).
pub(super) fn credential_id(reference: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(reference.trim_end_matches('='))
        .map_err(|_| {
            Error::Storage(format!(
                "a FIDO enrollment's credential {reference:?} is not base64url"
            ))
        })
}

/// The stored credential reference of a credential id.
pub(super) fn credential_reference(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// rpIdHash (WebAuthn §6.1): SHA-256 of the relying-party id; U2F's application parameter.
pub(super) fn rp_id_hash(rp_id: &str) -> [u8; 32] {
    Sha256::digest(rp_id.as_bytes()).into()
}

/// The algorithms of `policy` the key takes, in the policy's order.
///
/// Errors: [`Error::Config`] for a name Tessera does not know; [`Error::InvalidArgument`] when
/// the key takes none of them.
fn algorithms(info: &KeyInfo, policy: &[&str]) -> Result<Vec<i64>> {
    let mut wanted = Vec::new();
    for name in policy {
        let cose = cose_algorithm(name).ok_or_else(|| {
            Error::Config(format!(
                "[fido] algorithms: unknown algorithm {name:?} (es256, eddsa)"
            ))
        })?;
        if info.supports(cose) && !wanted.contains(&cose) {
            wanted.push(cose);
        }
    }
    if wanted.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the key supports none of the algorithms the policy accepts ({})",
            policy.join(", ")
        )));
    }
    Ok(wanted)
}

impl FidoAuthenticator {
    pub(super) async fn enroll_credential(
        &self,
        request: EnrollRequest<'_>,
        ix: &dyn Interaction,
    ) -> Result<EnrolledCredential> {
        if request.credential != "new" {
            return Err(Error::InvalidArgument(format!(
                "a FIDO key enrolls a new credential (\"new\"), not {:?}",
                request.credential
            )));
        }
        let info = self.info_for(ix).await?;
        let verification =
            pin::for_enrollment(&info, request.user_verification, request.pin_required)?;
        if info.u2f_only {
            return self.u2f_register(request, ix).await;
        }
        let algorithms = algorithms(&info, request.algorithms)?;
        let exclude = self.exclude_list(&info, &request, ix).await?;
        let (check, _pin_used) = self
            .user_check(
                ix,
                &info,
                pin::for_make_credential(&info, verification),
                PERMISSION_MC,
                request.rp_id,
            )
            .await?;
        let mut user_id = vec![0u8; USER_HANDLE_LEN];
        OsRng
            .try_fill_bytes(&mut user_id)
            .map_err(|e| Error::Io(std::io::Error::other(format!("random generator: {e}"))))?;
        let params = MakeCredential {
            // No attestation is checked (the enrollment trusts the user's own key, as PIV trusts
            // its certificate): a fresh random clientDataHash.
            client_data_hash: Challenge::new()?.digest(),
            rp_id: request.rp_id.to_owned(),
            user_id,
            user_name: request.user.to_owned(),
            algorithms: algorithms.clone(),
            exclude,
            check,
        };
        self.working(ix);
        ix.final_exchange().await?;
        let mut call = Call::of(ix, Waiting::Touch);
        call.timeout = ix.touch_timeout();
        let made = self
            .with_link(call, move |link, ctx| {
                ctap::make_credential(link, ctx, &params)
            })
            .await?;
        if made.flags.rp_id_hash != rp_id_hash(request.rp_id) {
            return Err(Error::Device(
                "the key made a credential for another relying party".into(),
            ));
        }
        if !made.flags.up {
            return Err(Error::Device(
                "the key made a credential without testing user presence".into(),
            ));
        }
        if verification.verifies() && !made.flags.uv {
            return Err(Error::Device(
                "the key made a credential without verifying the user".into(),
            ));
        }
        let algorithm = jose_name(made.key.cose)
            .filter(|_| algorithms.contains(&made.key.cose))
            .ok_or_else(|| {
                Error::Device(format!(
                    "the key made a credential of COSE algorithm {}, which was not asked for",
                    made.key.cose
                ))
            })?;
        let credential = credential_reference(&made.credential_id);
        // The key holds what it just made: the next request's pre-flight need not ask.
        self.remember_held(&credential, true);
        Ok(EnrolledCredential {
            credential,
            public_key: made.key.bytes,
            algorithm,
            thumbprint: made.key.thumbprint,
            device_guid: (info.aaguid != [0; 16]).then_some(info.aaguid),
            subject: None,
            needs_secret: verification.verifies(),
            rp_id: Some(request.rp_id.to_owned()),
            sign_count: made.flags.sign_count,
        })
    }

    /// The excludeList: the account's enrolled credentials, so that one key is not enrolled twice
    /// (§6.1 step 7). More than one list holds (maxCredentialCountInList) are checked first by the
    /// silent pre-flight, and only those the key holds are sent.
    async fn exclude_list(
        &self,
        info: &KeyInfo,
        request: &EnrollRequest<'_>,
        ix: &dyn Interaction,
    ) -> Result<Vec<Vec<u8>>> {
        let mut ids = Vec::new();
        for reference in request.exclude {
            match credential_id(reference) {
                Ok(id) => ids.push(id),
                // Not one this kind of key could hold: nothing to exclude.
                Err(_) => tracing::debug!("excludeList: skipping {reference:?}"),
            }
        }
        if ids.len() <= info.list_limit() {
            return Ok(ids);
        }
        let held = self
            .probe(
                info,
                request.rp_id,
                ids,
                ix.uid(),
                ix.op_timeout(),
                ix.cancel(),
            )
            .await?;
        if held.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::InvalidArgument(
                "this key already holds a credential enrolled for the account".into(),
            ))
        }
    }
}

//! Using an enrolled FIDO credential: the silent pre-flight that tells which of an account's
//! credentials a key holds (getAssertion with up = false, CTAP 2.1 §6.2), choosing a key by touch
//! (authenticatorSelection, §6.9), and the assertion itself, verified against the enrolled key:
//! our relying party, the user present (and verified when enrolled so), the enrolled credential,
//! a signature over authenticatorData ‖ clientDataHash (WebAuthn §6.3.3).

use std::time::Duration;

use rand_core::{OsRng, RngCore};

use super::authenticator::{Call, FidoAuthenticator, Waiting};
use super::authenticator_ctap::{self as ctap, Answered, GetAssertion, UserCheck, PERMISSION_GA};
use super::authenticator_enroll::{credential_id, rp_id_hash};
use super::authenticator_identify::{uv_method, KeyInfo};
use super::authenticator_pin::{self as pin, Verification};
use super::ctap2::get_info::DEFAULT_MAX_MSG_SIZE;
use super::link::{CtapLink, Keepalive, LinkContext};
use crate::authenticator::{Assertion, EnrolledKey, Interaction};
use crate::cancel::CancelToken;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

impl FidoAuthenticator {
    /// [`crate::authenticator::Authenticator::holds`]: the credentials of `enrolled` the key
    /// holds, asked once per credential for this insertion. Never a touch, never a PIN.
    pub(super) async fn held_credentials(
        &self,
        enrolled: &[EnrolledKey<'_>],
        uid: u32,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let mut to_ask: Vec<(&str, Vec<u8>, &str)> = Vec::new();
        for e in enrolled {
            let Some(rp_id) = e.rp_id else { continue };
            if self.held(e.credential).is_some() {
                continue;
            }
            match credential_id(e.credential) {
                Ok(id) => to_ask.push((rp_id, id, e.credential)),
                Err(_) => self.remember_held(e.credential, false),
            }
        }
        if !to_ask.is_empty() {
            let info = self.info_silent(uid, timeout).await?;
            let mut rp_ids: Vec<&str> = to_ask.iter().map(|(rp, _, _)| *rp).collect();
            rp_ids.sort_unstable();
            rp_ids.dedup();
            for rp_id in rp_ids {
                let ids: Vec<Vec<u8>> = to_ask
                    .iter()
                    .filter(|(rp, _, _)| *rp == rp_id)
                    .map(|(_, id, _)| id.clone())
                    .collect();
                let held = self
                    .probe(&info, rp_id, ids, uid, timeout, &Default::default())
                    .await?;
                for (rp, id, reference) in &to_ask {
                    if *rp == rp_id {
                        self.remember_held(reference, held.contains(id));
                    }
                }
            }
        }
        Ok(enrolled
            .iter()
            .filter(|e| self.held(e.credential) == Some(true))
            .map(|e| e.credential.to_owned())
            .collect())
    }

    /// Which of `ids` (credentials of `rp_id`) the key holds, without the user: silent
    /// getAssertions over allowList chunks of maxCredentialCountInList, or U2F check-only
    /// AUTHENTICATEs, all in one session.
    pub(super) async fn probe(
        &self,
        info: &KeyInfo,
        rp_id: &str,
        ids: Vec<Vec<u8>>,
        uid: u32,
        timeout: Duration,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<u8>>> {
        let mut call = Call::silent(uid, timeout);
        call.cancel = cancel.clone();
        let rp_id = rp_id.to_owned();
        let limit = info.list_limit();
        let max_id = info.max_credential_id_length;
        if info.u2f_only {
            return self
                .with_link(call, move |link, ctx| {
                    super::authenticator_u2f::check_only(link, ctx, &rp_id, &ids)
                })
                .await;
        }
        let budget = info.max_msg_size.unwrap_or(DEFAULT_MAX_MSG_SIZE as usize);
        let u2f_too = info.versions.iter().any(|v| v == "U2F_V2");
        self.with_link(call, move |link, ctx| {
            // A credential id longer than the key takes cannot be one of its own.
            let candidates: Vec<Vec<u8>> = ids
                .iter()
                .filter(|id| max_id.is_none_or(|m| id.len() <= m))
                .cloned()
                .collect();
            let mut held = Vec::new();
            for (n, chunk) in chunks(&candidates, limit, budget, rp_id.len())
                .iter()
                .enumerate()
            {
                match silent_chunk(link, ctx, &rp_id, chunk)? {
                    Some(found) => held.extend(found),
                    // Not silently over CTAP2: U2F's check-only asks the same (CTAP 2.1 §10:
                    // the key's CTAP2 credentials are its U2F key handles).
                    None if u2f_too && link.capabilities().msg => {
                        let rest: Vec<Vec<u8>> = chunks(&candidates, limit, budget, rp_id.len())
                            .into_iter()
                            .skip(n)
                            .flatten()
                            .collect();
                        held.extend(super::authenticator_u2f::check_only(
                            link, ctx, &rp_id, &rest,
                        )?);
                        break;
                    }
                    None => {
                        return Err(Error::Device(
                            "the key cannot be asked silently which credentials it holds \
                             (it refuses up = false and has no U2F)"
                                .into(),
                        ))
                    }
                }
            }
            Ok(held)
        })
        .await
    }

    /// [`crate::authenticator::Authenticator::select`]: authenticatorSelection, "touch-needed"
    /// while the key waits; another key chosen first cancels it.
    pub(super) async fn select_by_touch(&self, ix: &dyn Interaction) -> Result<()> {
        let info = self.info_for(ix).await?;
        if !info.ctap21() {
            return Err(Error::InvalidArgument(
                "this key cannot be chosen by touch (it has no authenticatorSelection)".into(),
            ));
        }
        let mut call = Call::of(ix, Waiting::Touch);
        call.timeout = ix.touch_timeout();
        self.with_link(call, ctap::selection).await
    }

    /// [`crate::authenticator::Authenticator::assert`].
    pub(super) async fn assert_credential(
        &self,
        challenge: &Challenge,
        enrolled: EnrolledKey<'_>,
        ix: &dyn Interaction,
    ) -> Result<Assertion> {
        let rp_id = enrolled.rp_id.ok_or_else(|| {
            Error::Storage("a FIDO enrollment without its relying-party id".into())
        })?;
        let key = ctap::stored_key(enrolled.algorithm, enrolled.public_key)?;
        let id = credential_id(enrolled.credential)?;
        let info = self.info_for(ix).await?;
        if info.u2f_only {
            return self.u2f_assert(challenge, &enrolled, &key, &id, ix).await;
        }
        let verification = if enrolled.needs_secret {
            pin::for_assertion(&info)?
        } else {
            Verification::Presence
        };
        let client_data_hash = challenge.digest();
        let (check, pin_used) = self
            .user_check(ix, &info, verification, PERMISSION_GA, rp_id)
            .await?;
        let params = GetAssertion {
            client_data_hash,
            rp_id: rp_id.to_owned(),
            allow: vec![id.clone()],
            up: true,
            check,
        };
        self.working(ix);
        ix.final_exchange().await?;
        let mut call = Call::of(ix, Waiting::Touch);
        call.timeout = ix.touch_timeout();
        let answered = self
            .with_link(call, move |link, ctx| {
                ctap::get_assertion(link, ctx, &params)
            })
            .await?;
        let Answered::Signed(got) = answered else {
            return Err(Error::NotEnrolled(
                "the key does not hold the enrolled credential".into(),
            ));
        };
        if got.credential_id.as_ref().is_some_and(|c| *c != id) {
            return Err(Error::SignatureInvalid(
                "another credential than the enrolled one answered",
            ));
        }
        if got.flags.rp_id_hash != rp_id_hash(rp_id) {
            return Err(Error::SignatureInvalid(
                "the key signed for another relying party",
            ));
        }
        if !got.flags.up {
            return Err(Error::SignatureInvalid(
                "the key signed without testing user presence",
            ));
        }
        if verification.verifies() && !got.flags.uv {
            return Err(Error::SignatureInvalid(
                "the key signed without verifying the user",
            ));
        }
        // Against the key stored at enrollment (WebAuthn §6.3.3: authenticatorData ‖ hash).
        let mut signed = got.auth_data.clone();
        signed.extend_from_slice(&client_data_hash);
        ctap::verify(&key, &signed, &got.signature)?;
        let mut amr = vec!["hwk".to_owned(), "user".to_owned()];
        if verification.verifies() {
            amr.push(uv_method(&info, pin_used).into());
            amr.push("mfa".into());
        }
        Ok(Assertion {
            amr,
            sign_count: Some(got.flags.sign_count),
        })
    }
}

/// The credentials of `chunk` the key holds, by silent getAssertions (the key names one per
/// answer: ask again without it until it holds none of the rest); `None` when the key refuses
/// up = false.
fn silent_chunk(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    rp_id: &str,
    chunk: &[Vec<u8>],
) -> Result<Option<Vec<Vec<u8>>>> {
    let mut held = Vec::new();
    let mut left = chunk.to_vec();
    while !left.is_empty() {
        let params = GetAssertion {
            client_data_hash: random_hash()?,
            rp_id: rp_id.to_owned(),
            allow: left.clone(),
            up: false,
            check: UserCheck::Presence,
        };
        let got = match silent_assertion(link, ctx, &params)? {
            Answered::Signed(got) => got,
            Answered::NoCredentials => break,
            Answered::SilentRefused => return Ok(None),
        };
        let answered = match got.credential_id {
            Some(id) => id,
            None if left.len() == 1 => left[0].clone(),
            None => {
                return Err(Error::Device(
                    "the key answered for an allowList without naming the credential".into(),
                ))
            }
        };
        let before = left.len();
        left.retain(|id| *id != answered);
        if left.len() == before {
            return Err(Error::Device(
                "the key answered with a credential that was not asked for".into(),
            ));
        }
        held.push(answered);
    }
    Ok(Some(held))
}

/// One getAssertion with up = false. A key that ignores the option and waits for a touch
/// (keepalive UPNEEDED) is cancelled at once and taken as refusing it: the pre-flight never
/// makes the user touch a key, nor waits for one.
fn silent_assertion(
    link: &mut dyn CtapLink,
    ctx: &mut LinkContext<'_>,
    params: &GetAssertion,
) -> Result<Answered> {
    let stop = CancelToken::new();
    let outer = ctx.cancel.clone();
    let mut wants_touch = false;
    let answer = {
        let mut keepalive = |k: Keepalive| {
            if k == Keepalive::UpNeeded {
                wants_touch = true;
                stop.cancel();
            } else if outer.is_cancelled() {
                // The request's own cancel, seen at the key's next keepalive.
                stop.cancel();
            }
        };
        let mut inner = LinkContext {
            cancel: &stop,
            deadline: ctx.deadline,
            keepalive: &mut keepalive,
        };
        ctap::get_assertion(link, &mut inner, params)
    };
    match answer {
        Err(Error::Cancelled) if wants_touch => {
            tracing::debug!("the key waits for a touch despite up = false");
            Ok(Answered::SilentRefused)
        }
        r => r,
    }
}

/// Fixed bytes of a silent getAssertion besides the rp id and the list: command, map,
/// clientDataHash, the up option, headers (canonical CBOR, §8).
const REQUEST_OVERHEAD: usize = 64;
/// Bytes of one PublicKeyCredentialDescriptor besides its id: `{"id": h'…', "type":
/// "public-key"}` with the id's header.
const DESCRIPTOR_OVERHEAD: usize = 24;

/// `ids` in allowLists of at most `limit` entries (maxCredentialCountInList) whose request fits
/// in `budget` bytes (maxMsgSize, §6.4: a key refuses longer messages).
fn chunks(ids: &[Vec<u8>], limit: usize, budget: usize, rp_id_len: usize) -> Vec<Vec<Vec<u8>>> {
    let base = REQUEST_OVERHEAD + rp_id_len;
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut size = base;
    for id in ids {
        let cost = id.len() + DESCRIPTOR_OVERHEAD;
        match out.last_mut() {
            Some(last) if last.len() < limit && size + cost <= budget => {
                last.push(id.clone());
                size += cost;
            }
            // A list of one is sent whatever its size: the key says if it is too large.
            _ => {
                out.push(vec![id.clone()]);
                size = base + cost;
            }
        }
    }
    out
}

/// A random clientDataHash for the silent pre-flight (nothing is verified of its signature).
fn random_hash() -> Result<[u8; 32]> {
    let mut h = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut h)
        .map_err(|e| Error::Io(std::io::Error::other(format!("random generator: {e}"))))?;
    Ok(h)
}

//! User verification for a FIDO key: which way the policy and the key allow (PIN, built-in UV,
//! touch alone), the PIN loop with its keep-last-retry guard, and the pinUvAuthToken it ends in
//! (CTAP 2.1 §6.5: clientPIN, PIN/UV auth protocols one and two).

use std::sync::atomic::Ordering;

use zeroize::Zeroizing;

use super::authenticator::{Call, FidoAuthenticator, Waiting};
use super::authenticator_ctap::{self as ctap, UserCheck};
use super::authenticator_identify::KeyInfo;
use super::pin::PinUvAuthToken;
use crate::authenticator::{Interaction, SecretKind, SecretPrompt, UserVerification};
use crate::secret::Secret;
use crate::{Error, Result};

/// Shortest PIN: 4 Unicode code points (CTAP 2.1 §6.5.1; a key may set a higher minPINLength).
pub const MIN_PIN_CHARS: u32 = 4;
/// Longest PIN: 63 bytes of UTF-8 (CTAP 2.1 §6.5.1: paddedPin is 64 bytes with a terminating 0).
pub const MAX_PIN_BYTES: u32 = 63;

/// How the user is verified for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verification {
    /// Touch alone.
    Presence,
    /// The key's PIN, through a pinUvAuthToken.
    Pin,
    /// The key's built-in verification (a fingerprint), through a pinUvAuthToken (CTAP 2.1).
    BuiltIn,
    /// A CTAP 2.0 key's built-in verification, asked inline (option uv).
    InlineUv,
}

impl Verification {
    /// Whether the user is verified (the assertion's UV flag must be set).
    pub(super) fn verifies(self) -> bool {
        self != Verification::Presence
    }
}

/// How an enrollment verifies the user, from the policy and what the key can do.
///
/// Errors: [`Error::InvalidArgument`] when the policy requires verification the key cannot give
/// ("set a PIN on the key first").
pub(super) fn for_enrollment(
    info: &KeyInfo,
    wanted: UserVerification,
    pin_required: bool,
) -> Result<Verification> {
    if pin_required {
        return match info.client_pin {
            Some(true) => Ok(Verification::Pin),
            _ if info.u2f_only => Err(Error::InvalidArgument(
                "the policy requires a PIN, and this key speaks only U2F, which has none; use a \
                 FIDO2 key"
                    .into(),
            )),
            _ => Err(no_pin()),
        };
    }
    match wanted {
        UserVerification::Discouraged => Ok(Verification::Presence),
        UserVerification::Preferred => Ok(verifying(info).unwrap_or(Verification::Presence)),
        UserVerification::Required => verifying(info).ok_or_else(|| {
            if info.u2f_only {
                Error::InvalidArgument(
                    "the policy requires user verification, and this key speaks only U2F, which \
                     cannot verify the user; use a FIDO2 key"
                        .into(),
                )
            } else {
                no_pin()
            }
        }),
    }
}

/// How the makeCredential of an enrollment that settled on `verification` verifies the user: a
/// key protected by a PIN or built-in UV makes no credential without it unless it says
/// makeCredUvNotRqd (CTAP 2.1 §6.1.2 step 6, PUAT_REQUIRED otherwise), so even a touch-only
/// enrollment verifies the user once, at enrollment; its logins still need only a touch.
pub(super) fn for_make_credential(info: &KeyInfo, verification: Verification) -> Verification {
    if verification.verifies() || info.u2f_only || info.make_cred_uv_not_rqd {
        return verification;
    }
    verifying(info).unwrap_or(verification)
}

/// How an assertion with a credential enrolled with user verification verifies the user now.
pub(super) fn for_assertion(info: &KeyInfo) -> Result<Verification> {
    verifying(info).ok_or_else(|| {
        Error::Device(
            "user verification is required (by the enrollment, or by the policy now in force), \
             and the key has neither a PIN nor built-in verification; set a PIN on the key"
                .into(),
        )
    })
}

/// The way the key verifies the user, if it can: its built-in UV first (a fingerprint is what
/// its owner set up to use), else its PIN.
fn verifying(info: &KeyInfo) -> Option<Verification> {
    if info.u2f_only {
        None
    } else if info.builtin_uv() && info.permissions() {
        Some(Verification::BuiltIn)
    } else if info.pin_set() {
        Some(Verification::Pin)
    } else if info.builtin_uv() {
        Some(Verification::InlineUv)
    } else {
        None
    }
}

fn force_pin_change() -> Error {
    Error::Device(
        "the key requires its PIN to be changed before it is used again (forcePINChange): \
         change it with the key vendor's tool"
            .into(),
    )
}

fn no_pin() -> Error {
    Error::InvalidArgument(
        "the policy requires user verification and the key has no PIN: set a PIN on the key \
         first (for instance with its vendor's tool)"
            .into(),
    )
}

/// A FIDO PIN from a caller's secret: at least 4 code points, at most 63 bytes of UTF-8, no NUL
/// (paddedPin is zero-padded, §6.5.5.5).
///
/// Errors: [`Error::PinFormat`] saying what is wrong.
pub fn fido_pin(secret: &Secret) -> Result<Secret> {
    let pin = secret.expose();
    if pin.is_empty() {
        return Err(Error::PinFormat("empty"));
    }
    if pin.len() > MAX_PIN_BYTES as usize {
        return Err(Error::PinFormat("longer than 63 bytes"));
    }
    if pin.chars().count() < MIN_PIN_CHARS as usize {
        return Err(Error::PinFormat("shorter than 4 characters"));
    }
    if pin.contains('\0') {
        return Err(Error::PinFormat("contains a NUL character"));
    }
    Ok(Secret::new(Zeroizing::new(pin.to_owned())))
}

impl FidoAuthenticator {
    /// What proves `verification` to the key for one makeCredential (`permission` mc) or
    /// getAssertion (ga) on `rp_id`: a pinUvAuthToken obtained now (asking for the PIN), the
    /// inline UV option, or nothing. Returns the check and whether the PIN was used.
    pub(super) async fn user_check(
        &self,
        ix: &dyn Interaction,
        info: &KeyInfo,
        verification: Verification,
        permission: u8,
        rp_id: &str,
    ) -> Result<(UserCheck, bool)> {
        match verification {
            Verification::Presence => Ok((UserCheck::Presence, false)),
            Verification::InlineUv => Ok((UserCheck::InlineUv, false)),
            Verification::Pin => {
                let token = self.pin_token(ix, info, permission, rp_id).await?;
                Ok((UserCheck::Token(token), true))
            }
            Verification::BuiltIn if info.force_pin_change => Err(force_pin_change()),
            Verification::BuiltIn => match self.uv_token(ix, info, permission, rp_id).await {
                Ok(token) => Ok((UserCheck::Token(token), false)),
                Err(e @ (Error::Cancelled | Error::Timeout { .. } | Error::DeviceRemoved)) => {
                    Err(e)
                }
                // Built-in UV blocked or failing (too many unread fingerprints): the PIN is
                // what the key falls back to (§6.5.5.7.3).
                Err(e) if info.pin_set() => {
                    tracing::info!("built-in user verification failed ({e}); asking for the PIN");
                    let token = self.pin_token(ix, info, permission, rp_id).await?;
                    Ok((UserCheck::Token(token), true))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// A pinUvAuthToken by the key's built-in verification; "uv-needed" while the key waits.
    async fn uv_token(
        &self,
        ix: &dyn Interaction,
        info: &KeyInfo,
        permission: u8,
        rp_id: &str,
    ) -> Result<PinUvAuthToken> {
        let protocol = info.pin_protocol();
        let rp = rp_id.to_owned();
        let mut call = Call::of(ix, Waiting::Uv);
        call.timeout = ix.touch_timeout();
        self.with_link(call, move |link, ctx| {
            ctap::uv_token(link, ctx, protocol, permission, &rp)
        })
        .await
    }

    /// The PIN loop: the tries left (read without spending one), the prompt, and a guarded token
    /// request per answer; asks again after a wrong PIN or a last try the user did not confirm.
    async fn pin_token(
        &self,
        ix: &dyn Interaction,
        info: &KeyInfo,
        permission: u8,
        rp_id: &str,
    ) -> Result<PinUvAuthToken> {
        if info.force_pin_change {
            return Err(force_pin_change());
        }
        let protocol = info.pin_protocol();
        let permissions = info.permissions();
        let keep_last = ix.keep_last_try();
        let min_length = info.min_pin_length.unwrap_or(0).max(MIN_PIN_CHARS);
        // Given up front, the PIN is tried at once: the guarded try reads the counter first anyway.
        let mut retries = if ix.given_up_front(SecretKind::PinCode) {
            None
        } else {
            let n = self
                .with_link(Call::of(ix, Waiting::Nobody), move |link, ctx| {
                    ctap::pin_retries(link, ctx, protocol)
                })
                .await?;
            if n == 0 {
                return Err(Error::PinBlocked);
            }
            Some(n)
        };
        let mut because: Option<Error> = None;
        loop {
            let last_try = keep_last && retries == Some(1);
            let prompt = self.prompt(retries, because.as_ref(), last_try, min_length);
            let answer = ix
                .secret(SecretKind::PinCode, prompt, because.take())
                .await?;
            let pin = fido_pin(&answer.secret)?;
            // Shorter than the key's minPINLength, it cannot be the key's PIN: not worth a try.
            if pin.expose().chars().count() < min_length as usize {
                return Err(Error::PinFormat(
                    "shorter than the key's minimum PIN length",
                ));
            }
            self.working(ix);
            let keep = keep_last && !answer.spend_last_try;
            let accepted = answer.accepted.clone();
            let rp = rp_id.to_owned();
            let result = self
                .with_link(Call::of(ix, Waiting::Nobody), move |link, ctx| {
                    // The keep-last-retry guard, in the same session as the try it guards.
                    match ctap::pin_retries(link, ctx, protocol)? {
                        0 => return Err(Error::PinBlocked),
                        1 if keep => return Err(Error::PinWouldBlock { retries: 1 }),
                        _ => {}
                    }
                    let scope = permissions.then_some((permission, rp.as_str()));
                    match ctap::pin_token(link, ctx, protocol, &pin, scope) {
                        Ok(token) => {
                            accepted.store(true, Ordering::SeqCst);
                            Ok(token)
                        }
                        // The status says the PIN was wrong, not how many tries are left.
                        Err(Error::PinInvalid { .. }) => {
                            match ctap::pin_retries(link, ctx, protocol)? {
                                0 => Err(Error::PinBlocked),
                                n => Err(Error::PinInvalid { retries: n }),
                            }
                        }
                        Err(e) => Err(e),
                    }
                })
                .await;
            ix.secret_used(SecretKind::PinCode, result.as_ref().map(|_| ()))
                .await;
            match result {
                Err(e @ Error::PinInvalid { retries: n })
                | Err(e @ Error::PinWouldBlock { retries: n }) => {
                    retries = Some(n);
                    because = Some(e);
                }
                r => return r,
            }
        }
    }

    /// The prompt for the key's PIN.
    fn prompt(
        &self,
        retries: Option<u8>,
        last_error: Option<&Error>,
        last_try: bool,
        min_length: u32,
    ) -> SecretPrompt {
        SecretPrompt {
            device: self.device_id().to_owned(),
            kind: "fido".into(),
            retries: retries.map(u32::from),
            min_length,
            max_length: MAX_PIN_BYTES,
            last_error: match last_error {
                Some(Error::PinInvalid { .. }) => Some("PinInvalid".into()),
                _ => None,
            },
            last_try,
        }
    }
}

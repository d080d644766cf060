//! PIV's PIN rules and the PIN loop: the format a PIV PIN or PUK must have, the guarded VERIFY that
//! never spends a last retry the policy keeps, and asking again after a wrong PIN.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::authenticator::PivAuthenticator;
use super::{Pin, PinStatus, Piv};
use crate::authenticator::{Interaction, Progress, SecretKind, SecretPrompt};
use crate::secret::Secret;
use crate::transport::CardTransport;
use crate::{Error, Result};

/// Shortest PIN and PUK Tessera sends: SP 800-73-4 Part 2 §2.4.3 sets the PIV Card Application PIN
/// to 6–8 bytes (and the PUK to 8; cards such as the YubiKey accept 6–8, so 6 is the floor here).
pub const MIN_LEN: u32 = 6;
/// Longest PIN and PUK (SP 800-73-4 Part 2 §2.4.3): the reference data is 8 bytes.
pub const MAX_LEN: u32 = 8;

/// A PIV PIN or PUK from a caller's secret: 6–8 printable ASCII bytes.
///
/// Errors: [`Error::PinFormat`] saying what is wrong.
pub fn pin_from(secret: &Secret) -> Result<Pin> {
    let len = secret.expose().len();
    if len == 0 {
        return Err(Error::PinFormat("empty"));
    }
    if len > MAX_LEN as usize {
        return Err(Error::PinFormat("longer than 8 characters"));
    }
    if len < MIN_LEN as usize {
        return Err(Error::PinFormat("shorter than 6 characters"));
    }
    Pin::new(secret.expose())
}

/// Verifies the PIN without ever spending a card's last retry (when `keep_last`).
pub(super) fn guarded_verify(
    piv: &mut Piv<'_, dyn CardTransport + '_>,
    pin: &Pin,
    keep_last: bool,
) -> Result<()> {
    match piv.pin_status()? {
        PinStatus::Blocked => return Err(Error::PinBlocked),
        PinStatus::Retries(1) if keep_last => return Err(Error::PinWouldBlock { retries: 1 }),
        PinStatus::Retries(0) => return Err(Error::PinBlocked),
        PinStatus::Retries(_) | PinStatus::Verified => {}
    }
    piv.verify_pin(pin)
}

/// What one PIN attempt needs: the PIN, whether to keep the last retry, and the flag to set once
/// the card accepted the PIN.
pub(super) struct Attempt {
    pub(super) pin: Pin,
    pub(super) keep_last: bool,
    pub(super) accepted: Arc<AtomicBool>,
}

impl Attempt {
    /// Guarded VERIFY, then marks the PIN accepted.
    pub(super) fn verify(&self, piv: &mut Piv<'_, dyn CardTransport + '_>) -> Result<()> {
        guarded_verify(piv, &self.pin, self.keep_last)?;
        self.accepted.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl PivAuthenticator {
    /// The prompt for a PIV secret.
    pub(super) fn prompt(
        &self,
        retries: Option<u8>,
        last_error: Option<&Error>,
        last_try: bool,
    ) -> SecretPrompt {
        SecretPrompt {
            device: self.device_id().to_owned(),
            kind: "piv".into(),
            retries: retries.map(u32::from),
            min_length: MIN_LEN,
            max_length: MAX_LEN,
            last_error: last_error.and_then(error_name),
            last_try,
        }
    }

    /// Runs the exchange `run` with a PIN from `ix`, asking again after a wrong PIN or a last try
    /// the user did not confirm. `final_exchange`: the exchange produces the assertion (the
    /// interaction is told right before it).
    pub(super) async fn with_pin<R, F, Fut>(
        &self,
        ix: &dyn Interaction,
        final_exchange: bool,
        mut run: F,
    ) -> Result<R>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let keep_last = ix.keep_last_try();
        // Given up front, the PIN is tried at once: the guarded VERIFY reads the counter in the
        // same exchange. Otherwise the prompt shows the tries left, read without spending one.
        let mut retries = if ix.given_up_front(SecretKind::PinCode) {
            None
        } else {
            match self.pin_status(ix).await? {
                PinStatus::Blocked | PinStatus::Retries(0) => return Err(Error::PinBlocked),
                PinStatus::Retries(n) => Some(n),
                PinStatus::Verified => None,
            }
        };
        let mut because: Option<Error> = None;
        loop {
            let last_try = keep_last && retries == Some(1);
            let prompt = self.prompt(retries, because.as_ref(), last_try);
            let answer = ix
                .secret(SecretKind::PinCode, prompt, because.take())
                .await?;
            let pin = pin_from(&answer.secret)?;
            ix.progress(Progress::Working {
                device: self.device_id().to_owned(),
            });
            if final_exchange {
                ix.final_exchange().await?;
            }
            let attempt = Attempt {
                pin,
                keep_last: keep_last && !answer.spend_last_try,
                accepted: answer.accepted,
            };
            let result = run(attempt).await;
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

    /// The PIN's retry counter, read without spending a try.
    async fn pin_status(&self, ix: &dyn Interaction) -> Result<PinStatus> {
        self.run(
            ix,
            |card| {
                let mut piv = Piv::new(card);
                piv.select()?;
                piv.pin_status()
            },
            |_| {},
        )
        .await
    }
}

/// The name a prompt shows for a wrong previous answer ("PinInvalid"); none for an answer that was
/// not tried (a last try the user did not confirm: the prompt's `last_try` says it).
fn error_name(e: &Error) -> Option<String> {
    match e {
        Error::PinInvalid { .. } => Some("PinInvalid".into()),
        Error::PukInvalid { .. } => Some("PukInvalid".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use zeroize::Zeroizing;

    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(Zeroizing::new(s.into()))
    }

    #[test]
    fn a_piv_pin_is_6_to_8_printable_ascii_bytes() {
        for ok in ["123456", "1234567", "12345678", "abc!~ 12"] {
            assert!(pin_from(&secret(ok)).is_ok(), "{ok:?}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("12345", "shorter than 6"),
            ("123456789", "longer than 8"),
            ("12345\u{e9}", "printable"),
            ("123\t456", "printable"),
        ] {
            match pin_from(&secret(bad)) {
                Err(Error::PinFormat(m)) => assert!(m.contains(why), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn prompts_name_only_a_wrong_previous_answer() {
        assert_eq!(
            error_name(&Error::PinInvalid { retries: 2 }).as_deref(),
            Some("PinInvalid")
        );
        assert_eq!(
            error_name(&Error::PukInvalid { retries: 2 }).as_deref(),
            Some("PukInvalid")
        );
        assert_eq!(error_name(&Error::PinWouldBlock { retries: 1 }), None);
    }
}

//! A request as its authenticator sees it ([`Interaction`]): secrets given up front or asked for,
//! the PIN guard's reservation per attempt, each wrong PIN counted toward the user's lockout, and
//! (for an authentication) the token row written ahead once the final exchange begins.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::devices::Device;
use super::pin_guard::{self, Admission};
use super::requests::Shared;
use super::{Caller, Service};
use crate::authenticator::{
    BoxFuture, Interaction, Progress, SecretAnswer, SecretKind, SecretPrompt,
};
use crate::cancel::CancelToken;
use crate::locks::lock;
use crate::secret::Secret;
use crate::{Error, Result};

/// What happens when the final exchange begins (an authentication writes its token row ahead).
pub(super) type FinalExchange = Box<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// The [`Interaction`] of one request.
pub(super) struct RequestInteraction {
    pub(super) svc: Service,
    pub(super) shared: Arc<Shared>,
    pub(super) caller: Caller,
    /// The account whose lockout wrong secrets count toward (none for an unblock by root of a
    /// card enrolled for nobody).
    pub(super) user: Option<String>,
    /// Prompts are shown and answered; otherwise a prompt is answered by the error a v1 call gives.
    pub(super) interactive: bool,
    /// Secrets given up front, each used once.
    pub(super) given: Mutex<Vec<(SecretKind, Secret)>>,
    /// The device whose PIN guard admits each attempt (enrollment, unblock), if any.
    pub(super) guard: Option<Arc<Device>>,
    pub(super) admission: Mutex<Option<Admission>>,
    pub(super) on_final: Option<FinalExchange>,
    /// Undoes what `on_final` started when the attempt failed (a wrong PIN): no token row stays
    /// written while the request waits for the next PIN.
    pub(super) on_failed_attempt: Option<FinalExchange>,
}

impl RequestInteraction {
    pub(super) fn new(
        svc: &Service,
        shared: Arc<Shared>,
        caller: Caller,
        interactive: bool,
    ) -> Self {
        RequestInteraction {
            svc: svc.clone(),
            shared,
            caller,
            user: None,
            interactive,
            given: Mutex::new(Vec::new()),
            guard: None,
            admission: Mutex::new(None),
            on_final: None,
            on_failed_attempt: None,
        }
    }

    /// Gives `secret` up front for prompts of `kind`.
    pub(super) fn give(&self, kind: SecretKind, secret: Option<Secret>) {
        if let Some(s) = secret {
            lock(&self.given).push((kind, s));
        }
    }

    fn take_given(&self, kind: SecretKind) -> Option<Secret> {
        let mut given = lock(&self.given);
        let pos = given.iter().position(|(k, _)| *k == kind)?;
        Some(given.swap_remove(pos).1)
    }

    async fn answer(
        &self,
        kind: SecretKind,
        prompt: SecretPrompt,
        because: Option<Error>,
    ) -> Result<SecretAnswer> {
        let answer = match self.take_given(kind) {
            Some(secret) => SecretAnswer {
                secret,
                spend_last_try: false,
                accepted: Arc::default(),
            },
            None if !self.interactive => return Err(because.unwrap_or(Error::PinRequired)),
            None => {
                if let Some(user) = &self.user {
                    // A wrong PIN may just have locked the user out: no more prompts then.
                    self.svc.check_lockout(user)?;
                }
                let wait = self.shared.capped(self.svc.config().device.pin_timeout);
                self.shared
                    .ask(Progress::needing(kind, prompt), wait)
                    .await?
            }
        };
        if kind != SecretKind::NewPinCode {
            if let Some(device) = &self.guard {
                let admission = pin_guard::admit(&self.svc, self.caller, device).await?;
                let answer = SecretAnswer {
                    accepted: admission.accepted_flag(),
                    ..answer
                };
                *lock(&self.admission) = Some(admission);
                return Ok(answer);
            }
        }
        Ok(answer)
    }
}

impl Interaction for RequestInteraction {
    fn uid(&self) -> u32 {
        self.shared.uid()
    }

    fn cancel(&self) -> &CancelToken {
        self.shared.cancel_token()
    }

    fn op_timeout(&self) -> Duration {
        self.shared.capped(self.svc.config().device.timeout)
    }

    fn touch_timeout(&self) -> Duration {
        self.shared.capped(self.svc.config().device.touch_timeout)
    }

    fn keep_last_try(&self) -> bool {
        self.svc.config().pin.keep_last_retry
    }

    fn given_up_front(&self, kind: SecretKind) -> bool {
        lock(&self.given).iter().any(|(k, _)| *k == kind)
    }

    fn progress(&self, progress: Progress) {
        self.shared.progress(progress);
    }

    fn secret(
        &self,
        kind: SecretKind,
        prompt: SecretPrompt,
        because: Option<Error>,
    ) -> BoxFuture<'_, Result<SecretAnswer>> {
        Box::pin(self.answer(kind, prompt, because))
    }

    fn secret_used<'a>(
        &'a self,
        _kind: SecretKind,
        outcome: std::result::Result<(), &'a Error>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let (Some(user), Err(Error::PinInvalid { .. } | Error::PukInvalid { .. })) =
                (&self.user, outcome)
            {
                self.svc.note_wrong_secret(user);
            }
            if let (Err(_), Some(undo)) = (outcome, &self.on_failed_attempt) {
                if let Err(e) = undo().await {
                    tracing::error!("undoing a failed attempt: {e}");
                }
            }
            let admission = lock(&self.admission).take();
            if let Some(a) = admission {
                a.settle(&self.svc, outcome).await;
            }
        })
    }

    fn final_exchange(&self) -> BoxFuture<'_, Result<()>> {
        match &self.on_final {
            Some(f) => f(),
            None => Box::pin(async { Ok(()) }),
        }
    }
}

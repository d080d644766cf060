//! The request as an authenticator sees it: where secrets come from, where progress goes, the
//! cancel token and the time left. The service implements [`Interaction`] for its requests; a
//! non-interactive request (contract v1) answers a prompt with the error a v1 call gives.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::BoxFuture;
use crate::cancel::CancelToken;
use crate::secret::Secret;
use crate::{Error, Result};

/// Which secret a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The device's PIN.
    PinCode,
    /// The unblocking secret (PIV: PUK).
    PukCode,
    /// The PIN to set.
    NewPinCode,
}

/// A prompt for a secret, with what the user should see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPrompt {
    /// Device id.
    pub device: String,
    /// Device kind ("piv").
    pub kind: String,
    /// Tries left, when the device told.
    pub retries: Option<u32>,
    /// Shortest secret the device accepts, in bytes.
    pub min_length: u32,
    /// Longest secret the device accepts, in bytes.
    pub max_length: u32,
    /// Why the previous answer failed ("PinInvalid"), if it did.
    pub last_error: Option<String>,
    /// One try left, and the policy keeps it: only a deliberate last-try answer spends it.
    pub last_try: bool,
}

/// Where a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// No present device holds an enrollment of the user; waiting for one to be inserted.
    WaitingForDevice,
    /// Several present devices could serve the request (device ids); waiting until one remains.
    SelectingDevice { devices: Vec<String> },
    /// Waiting for the PIN.
    PinNeeded(SecretPrompt),
    /// Waiting for the PUK.
    PukNeeded(SecretPrompt),
    /// Waiting for the new PIN.
    NewPinNeeded(SecretPrompt),
    /// Waiting for the user to touch the device.
    TouchNeeded { device: String },
    /// Waiting for the device's built-in user verification (a fingerprint; CTAP 2.1 §6.5.5.7).
    UvNeeded { device: String },
    /// The device is at work.
    Working { device: String },
}

impl Progress {
    /// The state's name on the bus.
    pub fn state(&self) -> &'static str {
        match self {
            Progress::WaitingForDevice => "waiting-for-device",
            Progress::SelectingDevice { .. } => "selecting-device",
            Progress::PinNeeded(_) => "pin-needed",
            Progress::PukNeeded(_) => "puk-needed",
            Progress::NewPinNeeded(_) => "new-pin-needed",
            Progress::TouchNeeded { .. } => "touch-needed",
            Progress::UvNeeded { .. } => "uv-needed",
            Progress::Working { .. } => "working",
        }
    }

    /// The prompt of a `*-needed` state.
    pub fn prompt(&self) -> Option<&SecretPrompt> {
        match self {
            Progress::PinNeeded(p) | Progress::PukNeeded(p) | Progress::NewPinNeeded(p) => Some(p),
            _ => None,
        }
    }

    /// The `*-needed` state asking for `kind`.
    pub fn needing(kind: SecretKind, prompt: SecretPrompt) -> Progress {
        match kind {
            SecretKind::PinCode => Progress::PinNeeded(prompt),
            SecretKind::PukCode => Progress::PukNeeded(prompt),
            SecretKind::NewPinCode => Progress::NewPinNeeded(prompt),
        }
    }
}

/// A secret the user gave.
#[derive(Debug)]
pub struct SecretAnswer {
    /// The secret.
    pub secret: Secret,
    /// The user chose to spend the last try (SubmitLastTryPin).
    pub spend_last_try: bool,
    /// Set by the authenticator, from the device exchange, once the device accepted the secret.
    pub accepted: Arc<AtomicBool>,
}

/// The request an authenticator works for.
pub trait Interaction: Send + Sync {
    /// The caller's uid (each caller has a bounded share of a device's queue).
    fn uid(&self) -> u32;

    /// The request's cancel token: device jobs carry it.
    fn cancel(&self) -> &CancelToken;

    /// How long the next device operation may take: the device timeout, capped by the time left
    /// to the request.
    fn op_timeout(&self) -> Duration;

    /// How long a device operation that waits for the user's touch (or the key's built-in user
    /// verification) may take: `[device] touch_timeout`, capped by the time left to the request.
    /// Without an override, [`Interaction::op_timeout`].
    fn touch_timeout(&self) -> Duration {
        self.op_timeout()
    }

    /// Whether the policy keeps a secret's last try for a deliberate last-try answer.
    fn keep_last_try(&self) -> bool;

    /// Whether a secret of `kind` was given up front (then the authenticator does not spend a round
    /// trip reading the retry counter before trying it: the guarded try reads it anyway).
    fn given_up_front(&self, kind: SecretKind) -> bool;

    /// Reports progress.
    fn progress(&self, progress: Progress);

    /// Asks for a secret. `because` is why the previous answer failed (a wrong PIN, a last try the
    /// user did not confirm); a non-interactive request answers with that error itself.
    ///
    /// Errors: [`Error::PinRequired`] when nobody can answer; [`Error::Timeout`],
    /// [`Error::Cancelled`]; [`Error::AccessDenied`] when the caller may not send a secret to the
    /// device; [`Error::RateLimited`] when the user is locked out meanwhile.
    fn secret(
        &self,
        kind: SecretKind,
        prompt: SecretPrompt,
        because: Option<Error>,
    ) -> BoxFuture<'_, Result<SecretAnswer>>;

    /// Tells how the device took the last secret of `kind` (`Ok` or the exchange's error): a
    /// wrong one counts toward the user's lockout, and the PIN guard settles its reservation.
    fn secret_used<'a>(
        &'a self,
        kind: SecretKind,
        outcome: std::result::Result<(), &'a Error>,
    ) -> BoxFuture<'a, ()>;

    /// Called right before the exchange that produces the assertion, once no more prompts can
    /// come: the service starts writing the token then, so that the commit overlaps the exchange.
    fn final_exchange(&self) -> BoxFuture<'_, Result<()>>;
}

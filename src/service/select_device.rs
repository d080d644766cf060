//! Choosing among several present devices that each hold an enrollment of the user, by a touch
//! (FIDO authenticatorSelection, CTAP 2.1 §6.9): every device is asked at once, the first one
//! touched is used and the others are cancelled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::devices::Device;
use super::requests::Shared;
use super::Service;
use crate::authenticator::{
    BoxFuture, Interaction, Progress, SecretAnswer, SecretKind, SecretPrompt,
};
use crate::cancel::CancelToken;
use crate::store::Enrollment;
use crate::{Error, Result};

/// Asks each of `options` to be chosen by a touch, with Progress "selecting-device"; returns the
/// first one touched (the others are cancelled, each through its own cancel token, so they stop
/// blinking). Waits at most the touch timeout.
///
/// Errors: [`Error::Cancelled`] when the request is; [`Error::Timeout`] when nobody touched a
/// device in time; the last device's error when every device failed (removed, say).
pub(super) async fn select(
    svc: &Service,
    shared: &Arc<Shared>,
    options: Vec<(Arc<Device>, Enrollment)>,
) -> Result<(Arc<Device>, Enrollment)> {
    shared.progress(Progress::SelectingDevice {
        devices: options.iter().map(|(d, _)| d.info.id.clone()).collect(),
    });
    let wait = shared.capped(svc.config().device.touch_timeout);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tokens = Vec::with_capacity(options.len());
    for (ix, (device, _)) in options.iter().enumerate() {
        let token = CancelToken::new();
        tokens.push(token.clone());
        let interaction = Choosing {
            uid: shared.uid(),
            cancel: token,
            timeout: wait,
            keep_last_try: svc.config().pin.keep_last_retry,
        };
        let (device, tx) = (Arc::clone(device), tx.clone());
        // Detached: a device asked to stop answers in its own time; nobody waits for it.
        tokio::spawn(async move {
            let r = device.authenticator.select(&interaction).await;
            let _ = tx.send((ix, r));
        });
    }
    drop(tx);
    let cancel_all = || tokens.iter().for_each(CancelToken::cancel);
    let deadline = tokio::time::Instant::now() + wait;
    let mut last_error = None;
    loop {
        tokio::select! {
            answer = rx.recv() => match answer {
                Some((ix, Ok(()))) => {
                    cancel_all();
                    let chosen = options.into_iter().nth(ix).ok_or_else(|| {
                        Error::Internal("a device answered that was not asked".into())
                    })?;
                    tracing::debug!(device = %chosen.0.info.id, "device chosen by touch");
                    return Ok(chosen);
                }
                Some((ix, Err(e))) => {
                    if let Some((d, _)) = options.get(ix) {
                        tracing::debug!(device = %d.info.id, "not chosen: {e}");
                    }
                    last_error = Some(e);
                }
                None => {
                    return Err(last_error.unwrap_or_else(|| {
                        Error::Internal("no device answered the selection".into())
                    }))
                }
            },
            () = shared.cancel_token().cancelled() => {
                cancel_all();
                return Err(Error::Cancelled);
            }
            () = tokio::time::sleep_until(deadline) => {
                cancel_all();
                return Err(Error::Timeout { what: "no device was touched", after: wait });
            }
        }
    }
}

/// The interaction of one device's selection: its own cancel token, no secrets, and no progress
/// of its own (the request shows "selecting-device" with every device until one is touched).
struct Choosing {
    uid: u32,
    cancel: CancelToken,
    timeout: Duration,
    keep_last_try: bool,
}

impl Interaction for Choosing {
    fn uid(&self) -> u32 {
        self.uid
    }

    fn cancel(&self) -> &CancelToken {
        &self.cancel
    }

    fn op_timeout(&self) -> Duration {
        self.timeout
    }

    fn touch_timeout(&self) -> Duration {
        self.timeout
    }

    fn keep_last_try(&self) -> bool {
        self.keep_last_try
    }

    fn given_up_front(&self, _kind: SecretKind) -> bool {
        false
    }

    fn progress(&self, _progress: Progress) {}

    fn secret(
        &self,
        _kind: SecretKind,
        _prompt: SecretPrompt,
        _because: Option<Error>,
    ) -> BoxFuture<'_, Result<SecretAnswer>> {
        Box::pin(async {
            Err(Error::Internal(
                "no secret is asked while choosing a device".into(),
            ))
        })
    }

    fn secret_used<'a>(
        &'a self,
        _kind: SecretKind,
        _outcome: std::result::Result<(), &'a Error>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn final_exchange(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

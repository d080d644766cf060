//! Unblocking a device's PIN, as a request: the unblocking secret (PIV: PUK) and a new PIN through
//! the same prompts, then the device's reset (PIV: RESET RETRY COUNTER). Only the device's enrolled
//! user or root may, or, on a device enrolled for nobody, each caller within the PIN guard's limit.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::devices::Device;
use super::pin_guard;
use super::request_interaction::RequestInteraction;
use super::requests::{Request, Shared, UnblockRequest};
use super::{Caller, Service};
use crate::authenticator::SecretKind;
use crate::{Error, Result};

/// Starts unblocking the PIN of device `device_id`.
pub(super) async fn start(
    svc: &Service,
    caller: Caller,
    device_id: &str,
    r: UnblockRequest,
    interactive: bool,
) -> Result<Request> {
    let device = svc.device(device_id).ok_or(Error::NoDevice)?;
    pin_guard::may_ask(svc, caller, &device).await?;
    let (shared, request) = svc.open_request_on(&device, caller, r.timeout, interactive)?;
    let svc = svc.clone();
    tokio::spawn(async move {
        let result = run(&svc, &shared, caller, device, r, interactive).await;
        // Not kept past the outcome (see `WeakService`).
        drop(svc);
        shared.conclude(result.map(|()| Zeroizing::new(String::new())));
    });
    Ok(request)
}

async fn run(
    svc: &Service,
    shared: &Arc<Shared>,
    caller: Caller,
    device: Arc<Device>,
    r: UnblockRequest,
    interactive: bool,
) -> Result<()> {
    let mut ix = RequestInteraction::new(svc, Arc::clone(shared), caller, interactive);
    ix.guard = Some(Arc::clone(&device));
    ix.give(SecretKind::PukCode, r.puk);
    ix.give(SecretKind::NewPinCode, r.new_pin);
    device.authenticator.unblock(&ix).await?;
    tracing::info!(device = %device.info.id, uid = caller.uid, "PIN unblocked");
    Ok(())
}

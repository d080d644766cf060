//! Talking to a newly present device although other applications (pcscd's own power-up, OpenSC, a
//! browser, gsd-smartcard) may reset it or hold it at that moment: bounded retries, each on a fresh
//! connection, so that a race ends in an identified device or in one listed as unknown with the
//! reason, never in a device silently ignored.

use std::future::Future;
use std::time::Duration;

use crate::transport::worker::DeviceWorker;
use crate::{Error, Result};

/// Attempts before giving up. A reset race is over within one or two attempts; a device that fails
/// five times over about a second is taken as one that cannot be identified now.
const ATTEMPTS: u32 = 5;
/// Pause before the second attempt, doubled before each later one (50 + 100 + 200 + 400 ms).
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Runs `attempt` until it succeeds, fails for good or [`ATTEMPTS`] are spent; reconnects before
/// every attempt (`reconnect_first`: before the first one too).
pub async fn retrying<R, F, Fut>(
    worker: &DeviceWorker,
    timeout: Duration,
    reconnect_first: bool,
    mut attempt: F,
) -> Result<R>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R>>,
{
    let mut pause = FIRST_PAUSE;
    let mut n = 1;
    loop {
        let result = if n > 1 || reconnect_first {
            match worker.reconnect(timeout).await {
                Ok(()) => attempt().await,
                Err(e) => Err(e),
            }
        } else {
            attempt().await
        };
        match result {
            Ok(r) => return Ok(r),
            Err(e) if n < ATTEMPTS && worth_retrying(&e) => {
                tracing::debug!(
                    attempt = n,
                    "exchange with the new device failed ({e}); retrying"
                );
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        n += 1;
    }
}

/// Everything but a verdict: a timeout already waited long (and the device is stuck), and a
/// signature that does not verify is an answer, not a race.
fn worth_retrying(e: &Error) -> bool {
    !matches!(e, Error::Timeout { .. } | Error::SignatureInvalid(_))
}

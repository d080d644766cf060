//! Identifying a newly present card although other applications (pcscd's own power-up, OpenSC, a
//! browser, gsd-smartcard) may reset it or hold it at that moment: bounded retries, each on a fresh
//! connection, so that a race ends in an identified card or in a card listed as unknown with the
//! reason, never in a card silently ignored.

use std::future::Future;
use std::time::Duration;

use super::devices::{identify, Identity};
use crate::piv::{Piv, Slot};
use crate::transport::worker::DeviceWorker;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

/// Attempts before giving up. A reset race is over within one or two attempts; a card that fails
/// five times over about a second is taken as one that cannot be identified now.
const ATTEMPTS: u32 = 5;
/// Pause before the second attempt, doubled before each later one (50 + 100 + 200 + 400 ms).
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Reads what identifies the card ([`identify`]), retrying on a fresh connection each time.
///
/// Errors: the last attempt's error (the card is then listed as unknown).
pub(super) async fn identify_card(worker: &DeviceWorker, timeout: Duration) -> Result<Identity> {
    retrying(worker, timeout, true, || worker.run(timeout, identify)).await
}

/// Has the card sign a fresh challenge with its Card Authentication (9E) key, once per insertion,
/// retrying an exchange that another application's reset broke.
///
/// Errors: [`Error::SignatureInvalid`] when the card answered with a signature that does not verify
/// (not retried: the card is not the one its certificate names); else the last attempt's error.
pub(super) async fn prove_card_auth(
    worker: &DeviceWorker,
    timeout: Duration,
    key: p256::PublicKey,
) -> Result<()> {
    retrying(worker, timeout, false, || async move {
        let challenge = Challenge::new()?;
        let digest = challenge.digest();
        let signature = worker
            .run(timeout, move |card| {
                let mut piv = Piv::new(card);
                piv.select()?;
                piv.sign_p256(Slot::CardAuthentication, &digest)
            })
            .await?;
        challenge.verify(&key, &signature)
    })
    .await
}

/// Runs `attempt` until it succeeds, fails for good or [`ATTEMPTS`] are spent; reconnects before
/// every attempt (`reconnect_first`: before the first one too).
async fn retrying<R, F, Fut>(
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
                    "exchange with the new card failed ({e}); retrying"
                );
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        n += 1;
    }
}

/// Everything but a verdict: a timeout already waited long (and the card is stuck), and a
/// signature that does not verify is an answer, not a race.
fn worth_retrying(e: &Error) -> bool {
    !matches!(e, Error::Timeout(_) | Error::SignatureInvalid(_))
}

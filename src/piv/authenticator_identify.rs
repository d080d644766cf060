//! What a PIV card is: SELECT, the slot certificates and the CHUID (SP 800-73-4 Part 1 Tables 3
//! and 9), and a fresh signature with the Card Authentication key (9E), which needs no PIN, so that
//! later decisions need not trust the public certificates alone.

use std::time::Duration;

use super::{Piv, Slot};
use crate::authenticator::retry::retrying;
use crate::authenticator::{Credential, DeviceIdentity, DeviceKey};
use crate::token::jwk_thumbprint;
use crate::transport::worker::DeviceWorker;
use crate::transport::CardTransport;
use crate::verify::challenge::Challenge;
use crate::Result;

/// Identifies the card in `worker` (retrying reset races on fresh connections), then has it prove
/// its 9E key once. A failed proof leaves the key unproven, which the service treats as an unknown
/// device key.
pub(super) async fn identify_card(
    worker: &DeviceWorker,
    timeout: Duration,
) -> Result<DeviceIdentity> {
    let (mut identity, card_auth_key) =
        retrying(worker, timeout, true, || worker.run(timeout, read_identity)).await?;
    if let (Some(key), Some(device_key)) = (card_auth_key, identity.device_key.as_mut()) {
        match prove_card_auth(worker, timeout, key).await {
            Ok(()) => device_key.proven = true,
            Err(e) => tracing::warn!(
                "the card could not prove it holds the 9E key its certificate names ({e})"
            ),
        }
    }
    Ok(identity)
}

/// Reads SELECT, slot certificates and CHUID; also returns the 9E public key, to prove.
fn read_identity(
    card: &mut dyn CardTransport,
) -> Result<(DeviceIdentity, Option<p256::PublicKey>)> {
    let mut piv = Piv::new(card);
    piv.select()?;
    let mut identity = DeviceIdentity::default();
    let mut card_auth_key = None;
    for slot in Slot::ALL {
        let Some(der) = piv.certificate(slot)? else {
            continue;
        };
        match super::cert::summarize(&der) {
            Ok(summary) => {
                let thumbprint = jwk_thumbprint(&summary.public_key);
                if slot == Slot::Authentication {
                    identity.name = Some(summary.subject.clone());
                }
                if slot == Slot::CardAuthentication {
                    card_auth_key = Some(summary.public_key);
                    identity.device_key = Some(DeviceKey {
                        thumbprint: thumbprint.clone(),
                        proven: false,
                    });
                }
                identity.credentials.push(Credential {
                    credential: slot.to_string(),
                    thumbprint,
                    needs_secret: slot.needs_pin(),
                });
            }
            Err(e) => tracing::debug!(%slot, "unusable certificate: {e}"),
        }
    }
    identity.guid = piv.chuid()?.and_then(|c| c.guid);
    Ok((identity, card_auth_key))
}

/// Has the card sign a fresh challenge with its 9E key, retrying an exchange that another
/// application's reset broke.
///
/// Errors: [`Error::SignatureInvalid`] when the signature does not verify (not retried: the card is
/// not the one its certificate names); else the last attempt's error.
async fn prove_card_auth(
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

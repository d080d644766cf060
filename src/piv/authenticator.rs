//! The PIV card as an [`Authenticator`]: identification, enrollment of slot 9A or 9E, a challenge
//! signed by an enrolled slot, and RESET RETRY COUNTER with the PUK (SP 800-73-4 Part 2 §3.2).

use std::sync::atomic::Ordering;
use std::time::Duration;

use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::authenticator_pin::pin_from;
use super::{Piv, Slot};
use crate::authenticator::{
    Assertion, Authenticator, BoxFuture, DeviceIdentity, EnrollRequest, Enrollable,
    EnrolledCredential, EnrolledKey, Interaction, Progress, SecretKind,
};
use crate::token::jwk_thumbprint;
use crate::transport::worker::DeviceWorker;
use crate::transport::CardTransport;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

/// The one algorithm Tessera uses on PIV cards: ECDSA P-256 with SHA-256 (SP 800-78-4 Table 6-2,
/// algorithm `11`), "es256" in JOSE's terms (RFC 7518 §3.1).
const ALGORITHM: &str = "es256";

/// A present PIV card, reached through its device worker.
pub struct PivAuthenticator {
    worker: DeviceWorker,
    device_id: String,
}

impl PivAuthenticator {
    /// The card behind `worker`, published as device `device_id`.
    pub fn new(worker: DeviceWorker, device_id: String) -> Self {
        PivAuthenticator { worker, device_id }
    }

    pub(super) fn device_id(&self) -> &str {
        &self.device_id
    }

    /// One cancellable exchange for the request `ix`, then `epilogue` in the same session.
    pub(super) async fn run<R, F, E>(&self, ix: &dyn Interaction, op: F, epilogue: E) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
        E: FnOnce(&mut dyn CardTransport) + Send + 'static,
    {
        self.worker
            .run_cancellable_for(ix.uid(), ix.op_timeout(), ix.cancel(), op, epilogue)
            .await
    }

    /// [`PivAuthenticator::with_pin`] around one exchange: SELECT, the guarded VERIFY, then `op`.
    async fn run_with_pin<R, F, E>(
        &self,
        ix: &dyn Interaction,
        final_exchange: bool,
        op: F,
        epilogue: E,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: Fn(&mut Piv<'_, dyn CardTransport + '_>) -> Result<R> + Clone + Send + 'static,
        E: FnOnce(&mut dyn CardTransport) + Clone + Send + 'static,
    {
        self.with_pin(ix, final_exchange, |attempt| {
            let (op, epilogue) = (op.clone(), epilogue.clone());
            self.run(
                ix,
                move |card| {
                    let mut piv = Piv::new(card);
                    piv.select()?;
                    attempt.verify(&mut piv)?;
                    op(&mut piv)
                },
                epilogue,
            )
        })
        .await
    }

    fn working(&self, ix: &dyn Interaction) {
        ix.progress(Progress::Working {
            device: self.device_id.clone(),
        });
    }

    async fn enroll_slot(&self, slot: Slot, ix: &dyn Interaction) -> Result<EnrolledCredential> {
        let challenge = Challenge::new()?;
        let digest = challenge.digest();
        let (cert, signature, guid) = self
            .run_with_pin(
                ix,
                false,
                move |piv| {
                    let cert = piv.certificate(slot);
                    let guid = piv.chuid().map(|c| c.and_then(|c| c.guid));
                    let signature = piv.sign_p256(slot, &digest);
                    let _ = piv.reset_pin_status();
                    let cert = cert?.ok_or_else(|| {
                        Error::Device(format!("the card has no certificate in slot {slot}"))
                    })?;
                    Ok((cert, signature?, guid?))
                },
                |_| {},
            )
            .await?;
        let summary = super::cert::summarize(&cert)?;
        // Proof of possession: the card holds the private key of the certificate it presents.
        challenge.verify(&summary.public_key, &signature)?;
        Ok(EnrolledCredential {
            credential: slot.to_string(),
            public_key: summary
                .public_key
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            algorithm: ALGORITHM,
            thumbprint: jwk_thumbprint(&summary.public_key),
            device_guid: guid,
            subject: Some(summary.subject),
            needs_secret: slot.needs_pin(),
            rp_id: None,
            sign_count: 0,
        })
    }

    async fn assert_slot(
        &self,
        challenge: &Challenge,
        enrolled: EnrolledKey<'_>,
        ix: &dyn Interaction,
    ) -> Result<Assertion> {
        let slot: Slot = enrolled.credential.parse()?;
        if enrolled.algorithm != ALGORITHM {
            return Err(Error::Storage(format!(
                "a PIV enrollment with algorithm {:?}; Tessera enrolls only {ALGORITHM}",
                enrolled.algorithm
            )));
        }
        let key = p256::PublicKey::from_sec1_bytes(enrolled.public_key)
            .map_err(|_| Error::Storage("an enrollment has a bad key".into()))?;
        let digest = challenge.digest();
        let amr = self.methods(enrolled.needs_secret);
        let signature = if enrolled.needs_secret {
            // The PIN status is dropped in the same exclusive session, after the signature is on
            // its way.
            self.run_with_pin(
                ix,
                true,
                move |piv| piv.sign_p256(slot, &digest),
                |card| {
                    let _ = Piv::new(card).reset_pin_status();
                },
            )
            .await?
        } else {
            self.working(ix);
            ix.final_exchange().await?;
            self.run(
                ix,
                move |card| {
                    let mut piv = Piv::new(card);
                    piv.select()?;
                    piv.sign_p256(slot, &digest)
                },
                |_| {},
            )
            .await?
        };
        // Against the key stored at enrollment, never against what the card presents now.
        challenge.verify(&key, &signature)?;
        Ok(Assertion {
            amr,
            sign_count: None,
        })
    }

    async fn reset_retry_counter(&self, ix: &dyn Interaction) -> Result<()> {
        let keep_last = ix.keep_last_try();
        // The PUK's counter cannot be read without spending a try (VERIFY takes only the PIN):
        // its retries are known after a wrong PUK (63Cx).
        let mut retries: Option<u8> = None;
        let mut because: Option<Error> = None;
        let mut new_pin = None;
        loop {
            let last_try = keep_last && retries == Some(1);
            let prompt = self.prompt(retries, because.as_ref(), last_try);
            let puk_answer = ix
                .secret(SecretKind::PukCode, prompt, because.take())
                .await?;
            let puk = pin_from(&puk_answer.secret)?;
            if last_try && !puk_answer.spend_last_try {
                // Fails closed should a caller bypass the prompt's rule.
                because = Some(Error::PinWouldBlock { retries: 1 });
                continue;
            }
            let new = match new_pin.take() {
                Some(p) => p,
                None => {
                    let prompt = self.prompt(None, None, false);
                    let answer = ix.secret(SecretKind::NewPinCode, prompt, None).await?;
                    pin_from(&answer.secret)?
                }
            };
            self.working(ix);
            let accepted = puk_answer.accepted;
            let (puk_c, new_c) = (puk, new.clone());
            let result = self
                .run(
                    ix,
                    move |card| {
                        let mut piv = Piv::new(card);
                        piv.select()?;
                        piv.unblock_pin(&puk_c, &new_c)?;
                        accepted.store(true, Ordering::SeqCst);
                        // The new PIN is not left verified for anyone (SP 800-73-4 Part 2 §3.2.1).
                        let _ = piv.reset_pin_status();
                        Ok(())
                    },
                    |_| {},
                )
                .await;
            ix.secret_used(SecretKind::PukCode, result.as_ref().map(|_| ()))
                .await;
            match result {
                Err(e @ Error::PukInvalid { retries: n }) => {
                    retries = Some(n);
                    because = Some(e);
                    // The new PIN typed is kept; only the PUK is asked again.
                    new_pin = Some(new);
                }
                r => return r,
            }
        }
    }
}

impl Authenticator for PivAuthenticator {
    fn kind(&self) -> &'static str {
        "piv"
    }

    fn methods(&self, needs_secret: bool) -> Vec<String> {
        // Hardware key on a smart card (RFC 8176 §2), and the PIN with it: two factors.
        let mut amr = vec!["hwk".to_owned(), "sc".to_owned()];
        if needs_secret {
            amr.push("pin".into());
            amr.push("mfa".into());
        }
        amr
    }

    fn identify(&self, timeout: Duration) -> BoxFuture<'_, Result<DeviceIdentity>> {
        Box::pin(super::authenticator_identify::identify_card(
            &self.worker,
            timeout,
        ))
    }

    fn enrollable(&self, requested: Option<&str>) -> Result<Enrollable> {
        let slot = match requested {
            Some(s) => s.parse::<Slot>()?,
            None => Slot::Authentication,
        };
        if !matches!(slot, Slot::Authentication | Slot::CardAuthentication) {
            return Err(Error::InvalidArgument(format!(
                "slot {slot} cannot be enrolled; use 9a or 9e"
            )));
        }
        Ok(Enrollable {
            credential: slot.to_string(),
            needs_secret: slot.needs_pin(),
        })
    }

    fn enroll<'a>(
        &'a self,
        request: EnrollRequest<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<EnrolledCredential>> {
        Box::pin(async move {
            let slot: Slot = request.credential.parse()?;
            self.enroll_slot(slot, interaction).await
        })
    }

    fn holds<'a>(
        &'a self,
        identity: &'a DeviceIdentity,
        enrolled: &'a [EnrolledKey<'a>],
        _uid: u32,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        // The slots' certificates were read at identification: a PIV card's identity says what
        // it holds.
        Box::pin(async move {
            Ok(enrolled
                .iter()
                .filter(|e| identity.thumbprint(e.credential) == Some(e.thumbprint))
                .map(|e| e.credential.to_owned())
                .collect())
        })
    }

    fn assert<'a>(
        &'a self,
        challenge: &'a Challenge,
        enrolled: EnrolledKey<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<Assertion>> {
        Box::pin(self.assert_slot(challenge, enrolled, interaction))
    }

    fn unblock<'a>(&'a self, interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.reset_retry_counter(interaction))
    }
}

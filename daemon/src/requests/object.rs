//! `org.tessera.Tessera1.Request`: one live request, usable by the connection that started it only.

use std::collections::HashMap;

use tessera::secret::Secret;
use tessera::service::{Progress, RequestHandle, SecretPrompt};
use tessera_client::names::device_path;
use zbus::interface;
use zbus::message::Header;
use zbus::names::OwnedUniqueName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, Value};
use zeroize::Zeroizing;

use crate::errors::BusError;
use crate::limits;

/// A request's object; it delegates to the core's [`RequestHandle`].
pub struct RequestObject {
    handle: RequestHandle,
    owner: OwnedUniqueName,
}

impl RequestObject {
    /// The object of `handle`, started by the unique name `owner`.
    pub fn new(handle: RequestHandle, owner: OwnedUniqueName) -> Self {
        RequestObject { handle, owner }
    }

    /// AccessDenied unless the message comes from the request's owner. The bus sets the sender, so
    /// a caller cannot claim another's name.
    fn check_owner(&self, header: Option<&Header<'_>>) -> Result<(), BusError> {
        match header.and_then(|h| h.sender()) {
            Some(sender) if *sender == self.owner.as_ref() => Ok(()),
            _ => Err(BusError::AccessDenied(
                "this request belongs to another connection".into(),
            )),
        }
    }
}

#[interface(name = "org.tessera.Tessera1.Request")]
impl RequestObject {
    /// SubmitPin(s pin): answers "pin-needed", "puk-needed" or "new-pin-needed". PinWouldBlock when
    /// the prompt is the card's last try (use SubmitLastTryPin); InvalidArgument when no secret is
    /// asked for.
    async fn submit_pin(
        &self,
        pin: &str,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), BusError> {
        self.check_owner(Some(&header))?;
        Ok(self.handle.submit_pin(secret(pin)?)?)
    }

    /// SubmitLastTryPin(s pin): answers a prompt with "last_try" true, spending the last try.
    async fn submit_last_try_pin(
        &self,
        pin: &str,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), BusError> {
        self.check_owner(Some(&header))?;
        Ok(self.handle.submit_last_try_pin(secret(pin)?)?)
    }

    /// Cancel(): ends the request with Failed Cancelled; no further command reaches the device.
    /// Cancelling an ended request does nothing.
    async fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BusError> {
        self.check_owner(Some(&header))?;
        self.handle.cancel();
        Ok(())
    }

    /// The current state ("pin-needed", ...). The owner only: Get answers others AccessDenied and
    /// GetAll leaves it out. No PropertiesChanged is sent, since it would be broadcast; the unicast
    /// Progress signal says when the state changes.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn state(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.check_owner(header.as_ref())
            .map_err(|e| zbus::fdo::Error::AccessDenied(e.to_string()))?;
        Ok(self.handle.state().to_owned())
    }

    /// Progress(s state, a{sv} details).
    #[zbus(signal)]
    pub async fn progress(
        emitter: &SignalEmitter<'_>,
        state: &str,
        details: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<()>;

    /// Completed(s result): the token, or the enrollment id. The last signal of the request.
    #[zbus(signal)]
    pub async fn completed(emitter: &SignalEmitter<'_>, result: &str) -> zbus::Result<()>;

    /// Failed(s error, s message): `error` is the full D-Bus error name. The last signal.
    #[zbus(signal)]
    pub async fn failed(
        emitter: &SignalEmitter<'_>,
        error: &str,
        message: &str,
    ) -> zbus::Result<()>;
}

/// A submitted PIN or PUK, bounded and held zeroized. Its format is the authenticator's to check.
fn secret(s: &str) -> Result<Secret, BusError> {
    limits::secret(s)?;
    Ok(Secret::new(Zeroizing::new(s.to_owned())))
}

/// Sends `progress` as a Progress signal through `emitter` (whose destination is the owner).
pub(super) async fn emit_progress(
    emitter: &SignalEmitter<'_>,
    progress: &Progress,
) -> zbus::Result<()> {
    let details = details(progress)?;
    RequestObject::progress(emitter, progress.state(), details).await
}

/// The details of a Progress signal: "device" (o), "devices" (ao); for a prompt also "kind" (s),
/// "min_length", "max_length" (u), "last_try" (b), and "retries" (u) and "last_error" (s) when known.
fn details(progress: &Progress) -> zbus::Result<HashMap<&'static str, Value<'static>>> {
    let mut d = HashMap::new();
    match progress {
        Progress::WaitingForDevice => {}
        Progress::SelectingDevice { devices } => {
            let paths = devices
                .iter()
                .map(|id| device_path(id).map_err(zbus::Error::from))
                .collect::<zbus::Result<Vec<OwnedObjectPath>>>()?;
            d.insert("devices", Value::from(paths));
        }
        Progress::PinNeeded(p) | Progress::PukNeeded(p) | Progress::NewPinNeeded(p) => {
            prompt_details(&mut d, p)?;
        }
        Progress::TouchNeeded { device }
        | Progress::UvNeeded { device }
        | Progress::Working { device } => {
            d.insert("device", Value::from(device_path(device)?));
        }
    }
    Ok(d)
}

fn prompt_details(
    d: &mut HashMap<&'static str, Value<'static>>,
    p: &SecretPrompt,
) -> zbus::Result<()> {
    d.insert("device", Value::from(device_path(&p.device)?));
    d.insert("kind", Value::from(p.kind.clone()));
    d.insert("min_length", Value::from(p.min_length));
    d.insert("max_length", Value::from(p.max_length));
    d.insert("last_try", Value::from(p.last_try));
    if let Some(r) = p.retries {
        d.insert("retries", Value::from(r));
    }
    if let Some(e) = &p.last_error {
        d.insert("last_error", Value::from(e.clone()));
    }
    Ok(())
}

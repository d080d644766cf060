//! Contract v1's Authenticate and Enroll, for a tesserad from before requests (it answers
//! StartAuthentication with UnknownMethod): the PIN is asked up front, as v1 takes it.

use std::collections::HashMap;

use tessera_client::{Error, ErrorName, ManagerProxy};
use zbus::zvariant::Value;
use zbus::Connection;
use zeroize::Zeroizing;

use crate::interactive::{Run, Start};
use crate::secret::Source;

/// Whether the daemon does not know the method called (an older tesserad).
pub fn is_unknown_method(e: &Error) -> bool {
    matches!(e, Error::Bus { name, .. } if name == "org.freedesktop.DBus.Error.UnknownMethod")
}

/// The v1 call for `start`: Authenticate or Enroll with the PIN read first; unblocking has no v1.
pub async fn call(
    conn: &Connection,
    start: &Start<'_>,
    how: &Run<'_>,
) -> Result<Zeroizing<String>, Error> {
    let manager = ManagerProxy::new(conn).await?;
    let pin = match (how.no_pin, how.pin) {
        (true, _) => None,
        (false, Some(given)) => Some(Zeroizing::new(given.to_owned())),
        (false, None) => Some(read_pin(how.secrets).await?),
    };
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(p) = &pin {
        opts.insert("pin", Value::from(p.as_str()));
    }
    match start {
        Start::Authentication { user, device } => {
            if let Some(d) = device {
                opts.insert("device", Value::from((*d).clone()));
            }
            Ok(Zeroizing::new(manager.authenticate(user, opts).await?))
        }
        Start::Enrollment {
            user,
            device,
            credential,
        } => {
            if let Some(c) = credential {
                opts.insert("slot", Value::from(*c));
            }
            Ok(Zeroizing::new(manager.enroll(user, device, opts).await?))
        }
        Start::Unblock { .. } => Err(Error::Usage(
            "this tesserad cannot unblock cards (it has no StartUnblock)".into(),
        )),
    }
}

/// One PIN, asked with "PIN: " (on the terminal, without echo) or read as the next line of standard
/// input; an empty one is refused here.
pub async fn read_pin(secrets: &Source) -> Result<Zeroizing<String>, Error> {
    let mut pending = secrets.ask("PIN: ")?;
    let pin = pending
        .line()
        .await?
        .ok_or_else(|| Error::Usage("no PIN given (end of input)".into()))?;
    if pin.is_empty() {
        return Err(Error::Daemon {
            name: ErrorName::PinFormat,
            message: "empty PIN".into(),
        });
    }
    Ok(pin)
}

//! The D-Bus errors of `org.tessera.Tessera1`: one stable name per core error, so callers can branch
//! on the name (`org.tessera.Tessera1.Error.PinInvalid`) and show the message. The names are
//! [`tessera_client::ErrorName`]'s; the tests below hold the two lists equal.

use tessera_client::ErrorName;
use zbus::DBusError;

/// Errors as they appear on the bus (prefix [`tessera_client::names::ERROR_PREFIX`]).
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.tessera.Tessera1.Error")]
pub enum BusError {
    /// A bus-level failure inside zbus.
    #[zbus(error)]
    ZBus(zbus::Error),
    NoDevice(String),
    NoSuchUser(String),
    NotEnrolled(String),
    PinRequired(String),
    PinInvalid(String),
    PinWouldBlock(String),
    PinBlocked(String),
    PukInvalid(String),
    PukBlocked(String),
    PinFormat(String),
    DeviceRemoved(String),
    CardReset(String),
    Timeout(String),
    SignatureInvalid(String),
    TokenInvalid(String),
    TokenExpired(String),
    TokenRevoked(String),
    AccessDenied(String),
    RateLimited(String),
    InvalidArgument(String),
    Busy(String),
    StepUpRequired(String),
    DeviceAmbiguous(String),
    NoLoginSession(String),
    UserAmbiguous(String),
    DeviceError(String),
    ConfigError(String),
    StorageError(String),
    IoError(String),
    InternalError(String),
    Cancelled(String),
    /// A failure of the bus edge itself (encoding a reply); nothing was acknowledged.
    Failed(String),
}

impl BusError {
    /// The error called `name` with `message`.
    pub fn new(name: ErrorName, message: String) -> BusError {
        use ErrorName as N;
        match name {
            N::NoDevice => BusError::NoDevice(message),
            N::NoSuchUser => BusError::NoSuchUser(message),
            N::NotEnrolled => BusError::NotEnrolled(message),
            N::PinRequired => BusError::PinRequired(message),
            N::PinInvalid => BusError::PinInvalid(message),
            N::PinWouldBlock => BusError::PinWouldBlock(message),
            N::PinBlocked => BusError::PinBlocked(message),
            N::PukInvalid => BusError::PukInvalid(message),
            N::PukBlocked => BusError::PukBlocked(message),
            N::PinFormat => BusError::PinFormat(message),
            N::DeviceRemoved => BusError::DeviceRemoved(message),
            N::CardReset => BusError::CardReset(message),
            N::Timeout => BusError::Timeout(message),
            N::SignatureInvalid => BusError::SignatureInvalid(message),
            N::TokenInvalid => BusError::TokenInvalid(message),
            N::TokenExpired => BusError::TokenExpired(message),
            N::TokenRevoked => BusError::TokenRevoked(message),
            N::AccessDenied => BusError::AccessDenied(message),
            N::RateLimited => BusError::RateLimited(message),
            N::InvalidArgument => BusError::InvalidArgument(message),
            N::Busy => BusError::Busy(message),
            N::StepUpRequired => BusError::StepUpRequired(message),
            N::DeviceAmbiguous => BusError::DeviceAmbiguous(message),
            N::NoLoginSession => BusError::NoLoginSession(message),
            N::UserAmbiguous => BusError::UserAmbiguous(message),
            N::DeviceError => BusError::DeviceError(message),
            N::ConfigError => BusError::ConfigError(message),
            N::StorageError => BusError::StorageError(message),
            N::IoError => BusError::IoError(message),
            N::InternalError => BusError::InternalError(message),
            N::Cancelled => BusError::Cancelled(message),
            N::Failed => BusError::Failed(message),
        }
    }

    /// The error's name; `None` for a zbus failure, which keeps zbus's own name.
    pub fn error_name(&self) -> Option<ErrorName> {
        use ErrorName as N;
        Some(match self {
            BusError::ZBus(_) => return None,
            BusError::NoDevice(_) => N::NoDevice,
            BusError::NoSuchUser(_) => N::NoSuchUser,
            BusError::NotEnrolled(_) => N::NotEnrolled,
            BusError::PinRequired(_) => N::PinRequired,
            BusError::PinInvalid(_) => N::PinInvalid,
            BusError::PinWouldBlock(_) => N::PinWouldBlock,
            BusError::PinBlocked(_) => N::PinBlocked,
            BusError::PukInvalid(_) => N::PukInvalid,
            BusError::PukBlocked(_) => N::PukBlocked,
            BusError::PinFormat(_) => N::PinFormat,
            BusError::DeviceRemoved(_) => N::DeviceRemoved,
            BusError::CardReset(_) => N::CardReset,
            BusError::Timeout(_) => N::Timeout,
            BusError::SignatureInvalid(_) => N::SignatureInvalid,
            BusError::TokenInvalid(_) => N::TokenInvalid,
            BusError::TokenExpired(_) => N::TokenExpired,
            BusError::TokenRevoked(_) => N::TokenRevoked,
            BusError::AccessDenied(_) => N::AccessDenied,
            BusError::RateLimited(_) => N::RateLimited,
            BusError::InvalidArgument(_) => N::InvalidArgument,
            BusError::Busy(_) => N::Busy,
            BusError::StepUpRequired(_) => N::StepUpRequired,
            BusError::DeviceAmbiguous(_) => N::DeviceAmbiguous,
            BusError::NoLoginSession(_) => N::NoLoginSession,
            BusError::UserAmbiguous(_) => N::UserAmbiguous,
            BusError::DeviceError(_) => N::DeviceError,
            BusError::ConfigError(_) => N::ConfigError,
            BusError::StorageError(_) => N::StorageError,
            BusError::IoError(_) => N::IoError,
            BusError::InternalError(_) => N::InternalError,
            BusError::Cancelled(_) => N::Cancelled,
            BusError::Failed(_) => N::Failed,
        })
    }
}

/// The bus name of each core error.
///
/// `tessera::Error` is `#[non_exhaustive]`, so this crate must have a last arm; every variant the
/// core has today is named above it, and a variant added later is an InternalError (and logged)
/// until it gets its own name here: never the anonymous `Failed`.
pub fn error_name(e: &tessera::Error) -> ErrorName {
    use tessera::Error as E;
    use ErrorName as N;
    match e {
        E::NoDevice => N::NoDevice,
        E::NoSuchUser(_) => N::NoSuchUser,
        E::NotEnrolled(_) => N::NotEnrolled,
        E::PinRequired => N::PinRequired,
        E::PinInvalid { .. } => N::PinInvalid,
        E::PinWouldBlock { .. } => N::PinWouldBlock,
        E::PinBlocked => N::PinBlocked,
        E::PukInvalid { .. } => N::PukInvalid,
        E::PukBlocked => N::PukBlocked,
        E::PinFormat(_) => N::PinFormat,
        E::DeviceRemoved => N::DeviceRemoved,
        E::CardReset => N::CardReset,
        E::Timeout { .. } => N::Timeout,
        E::SignatureInvalid(_) => N::SignatureInvalid,
        // To the relying service a token for another audience is as good as none (RFC 7519
        // section 4.1.3); the message says which.
        E::TokenInvalid | E::WrongAudience(_) => N::TokenInvalid,
        E::TokenExpired => N::TokenExpired,
        E::TokenRevoked(_) => N::TokenRevoked,
        E::AccessDenied(_) => N::AccessDenied,
        E::RateLimited { .. } => N::RateLimited,
        E::Busy(_) => N::Busy,
        E::StepUpRequired(_) => N::StepUpRequired,
        E::DeviceAmbiguous(_) => N::DeviceAmbiguous,
        E::NoLoginSession(_) => N::NoLoginSession,
        E::UserAmbiguous(_) => N::UserAmbiguous,
        E::InvalidArgument(_) => N::InvalidArgument,
        E::Device(_) => N::DeviceError,
        E::Config(_) => N::ConfigError,
        E::Storage(_) => N::StorageError,
        E::Io(_) => N::IoError,
        E::Internal(_) => N::InternalError,
        E::Cancelled => N::Cancelled,
        other => {
            tracing::error!("core error without a bus name (add one in errors.rs): {other}");
            N::InternalError
        }
    }
}

impl From<tessera::Error> for BusError {
    fn from(e: tessera::Error) -> Self {
        let name = error_name(&e);
        let message = match &e {
            // The core knows device ids; callers pass object paths back in the "device" option.
            tessera::Error::DeviceAmbiguous(ids) => format!(
                "more than one enrolled device is present; name one with the \"device\" option: {}",
                ids.iter()
                    .map(|id| format!("{}/{id}", crate::DEVICES_PATH))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        };
        if matches!(
            name,
            ErrorName::StorageError | ErrorName::IoError | ErrorName::InternalError
        ) {
            tracing::error!("request failed: {message}");
        }
        BusError::new(name, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_name_is_a_bus_error_of_that_name() {
        for &n in ErrorName::ALL {
            let e = BusError::new(n, "m".into());
            assert_eq!(e.name().as_str(), n.dbus_name());
            assert_eq!(e.error_name(), Some(n));
            assert_eq!(e.description(), Some("m"));
        }
    }

    #[test]
    fn the_prefix_is_the_clients() {
        let e = BusError::Cancelled(String::new());
        assert_eq!(
            e.name().as_str(),
            format!("{}.Cancelled", tessera_client::names::ERROR_PREFIX)
        );
    }

    #[test]
    fn core_errors_keep_their_names() {
        use std::time::Duration;
        use tessera::Error as E;
        let cases: Vec<(E, ErrorName)> = vec![
            (E::PukInvalid { retries: 2 }, ErrorName::PukInvalid),
            (E::PukBlocked, ErrorName::PukBlocked),
            (E::CardReset, ErrorName::CardReset),
            (E::Storage("disk".into()), ErrorName::StorageError),
            (E::Internal("bug".into()), ErrorName::InternalError),
            (E::Io(std::io::Error::other("eio")), ErrorName::IoError),
            (E::WrongAudience("a".into()), ErrorName::TokenInvalid),
            (
                E::Timeout {
                    what: "the device did not answer",
                    after: Duration::from_secs(1),
                },
                ErrorName::Timeout,
            ),
            (E::Cancelled, ErrorName::Cancelled),
        ];
        for (e, name) in cases {
            let text = e.to_string();
            let bus = BusError::from(e);
            assert_eq!(bus.error_name(), Some(name), "{text}");
            assert_eq!(bus.description(), Some(text.as_str()));
        }
    }
}

//! The errors a client of `tesserad` sees: the daemon's own error names
//! (`org.tessera.Tessera1.Error.<Name>`, one per core error), the bus's errors, and failing to reach
//! the bus at all.

use std::fmt;

use crate::names::ERROR_PREFIX;

/// Declares [`ErrorName`] and its table from one list, so the names, their strings and
/// [`ErrorName::ALL`] cannot disagree.
macro_rules! error_names {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The last element of each error name the daemon sends
        /// (`org.tessera.Tessera1.Error.<Name>`). The daemon's `BusError` is tested against this list.
        ///
        /// Deliberately not `#[non_exhaustive]`: the daemon matches it exhaustively, so a name added
        /// on one side and not the other does not compile.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorName {
            $($(#[doc = $doc])* $name,)*
        }

        impl ErrorName {
            /// Every name, in declaration order.
            pub const ALL: &'static [ErrorName] = &[$(ErrorName::$name,)*];

            /// The short name, e.g. "PinInvalid".
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorName::$name => stringify!($name),)*
                }
            }
        }
    };
}

error_names! {
    /// No usable device is present: insert the card or key, or name another device.
    NoDevice,
    /// The named account does not exist.
    NoSuchUser,
    /// The user has no enrollment matching a present device: enroll first.
    NotEnrolled,
    /// The operation needs the PIN.
    PinRequired,
    /// The PIN was wrong; the message says how many tries are left.
    PinInvalid,
    /// Only the last PIN try is left and it was not spent: confirm it, or unblock with the PUK.
    PinWouldBlock,
    /// The PIN is blocked: unblock it with the PUK.
    PinBlocked,
    /// The PUK was wrong; the message says how many tries are left.
    PukInvalid,
    /// The PUK is blocked: the card's application must be reset.
    PukBlocked,
    /// The PIN is malformed (length, characters): ask again.
    PinFormat,
    /// The device was removed during the operation; nothing was changed.
    DeviceRemoved,
    /// Another application reset the card first; retrying is safe.
    CardReset,
    /// The device, or the user, did not answer in time.
    Timeout,
    /// The device's signature did not verify: not the enrolled card.
    SignatureInvalid,
    /// The token is malformed, forged, unknown or for another audience.
    TokenInvalid,
    /// The token's lifetime is over.
    TokenExpired,
    /// The token was revoked.
    TokenRevoked,
    /// The caller may not do this.
    AccessDenied,
    /// Too many failures, or too early: retry after the time in the message.
    RateLimited,
    /// An argument is malformed.
    InvalidArgument,
    /// Too many operations waiting: retry shortly.
    Busy,
    /// The token does not meet the relying service's requirements: authenticate again.
    StepUpRequired,
    /// More than one present device could serve: name one.
    DeviceAmbiguous,
    /// No login session fits (logind has none, it is another user's, or no live token of it
    /// meets the requirements).
    NoLoginSession,
    /// The device is enrolled for more than one account: name the user.
    UserAmbiguous,
    /// The device answered something Tessera cannot use.
    DeviceError,
    /// The configuration is invalid.
    ConfigError,
    /// The daemon's store failed; nothing was acknowledged.
    StorageError,
    /// An operating-system error in the daemon.
    IoError,
    /// A bug inside the daemon.
    InternalError,
    /// The request was cancelled (Cancel, or its caller left the bus).
    Cancelled,
    /// A failure of the bus edge itself (encoding a reply); nothing was acknowledged.
    Failed,
}

impl ErrorName {
    /// The name for a short name ("PinInvalid"); `None` for names this client does not know.
    pub fn from_short(short: &str) -> Option<ErrorName> {
        ErrorName::ALL.iter().copied().find(|n| n.as_str() == short)
    }

    /// The name for a full D-Bus error name (`org.tessera.Tessera1.Error.PinInvalid`); `None` for
    /// names outside Tessera's or unknown to this client.
    pub fn from_dbus(full: &str) -> Option<ErrorName> {
        full.strip_prefix(ERROR_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(ErrorName::from_short)
    }

    /// The full D-Bus error name.
    pub fn dbus_name(self) -> String {
        format!("{ERROR_PREFIX}.{}", self.as_str())
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, as a client sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The daemon refused or failed the call (or a request ended with `Failed`) with one of its
    /// error names: act on the name, show the message.
    #[error("{message}")]
    Daemon {
        /// Which error.
        name: ErrorName,
        /// The daemon's message, for a person.
        message: String,
    },
    /// The bus, or a service that is not a Tessera it knows, answered with this D-Bus error
    /// (`org.freedesktop.DBus.Error.ServiceUnknown` when no daemon runs).
    #[error("{message}")]
    Bus {
        /// The full D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The bus could not be reached: check its address.
    #[error("connecting to the bus at {address} failed: {source}")]
    NoBus {
        /// The address tried ("system", "session" or a D-Bus address).
        address: String,
        /// Why: the operating system's error when there is one (zbus's own text for a failed
        /// connect repeats the address), else zbus's.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection broke or a message could not be read or written.
    #[error("D-Bus: {0}")]
    Protocol(#[source] zbus::Error),
    /// The daemon sent something this client cannot use (an unknown progress state's details of
    /// the wrong type, a request path that is not one).
    #[error("unexpected answer from tesserad: {0}")]
    Unexpected(String),
    /// A wrong argument on this side, before anything was sent.
    #[error("{0}")]
    Usage(String),
    /// A local I/O failure (reading standard input, the terminal).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The error's name as the CLI prints it: the daemon's short name ("PinInvalid"), the last
    /// element of a bus error name ("ServiceUnknown"), or one of "NoBus", "BusError",
    /// "UnexpectedReply", "InvalidArgument", "IoError" for failures on this side.
    pub fn name(&self) -> &str {
        match self {
            Error::Daemon { name, .. } => name.as_str(),
            Error::Bus { name, .. } => short_name(name),
            Error::NoBus { .. } => "NoBus",
            Error::Protocol(_) => "BusError",
            Error::Unexpected(_) => "UnexpectedReply",
            Error::Usage(_) => ErrorName::InvalidArgument.as_str(),
            Error::Io(_) => ErrorName::IoError.as_str(),
        }
    }

    /// The daemon's error name, if the daemon sent one.
    pub fn daemon_name(&self) -> Option<ErrorName> {
        match self {
            Error::Daemon { name, .. } => Some(*name),
            _ => None,
        }
    }

    /// The error for a request's `Failed(error, message)` signal or a method's error reply.
    pub fn from_names(full_name: &str, message: String) -> Error {
        match ErrorName::from_dbus(full_name) {
            Some(name) => Error::Daemon { name, message },
            None => Error::Bus {
                name: full_name.to_owned(),
                message,
            },
        }
    }

    /// A failure to connect to the bus at `address`.
    pub fn no_bus(address: &str, source: zbus::Error) -> Error {
        // zbus's own text for a failed connect names the address and then its cause; keep only
        // the cause so the line says each thing once.
        let source: Box<dyn std::error::Error + Send + Sync> = match source {
            zbus::Error::Connection(io, _) | zbus::Error::InputOutput(io) => Box::new(io),
            other => Box::new(other),
        };
        Error::NoBus {
            address: address.to_owned(),
            source,
        }
    }
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                Error::from_names(name.as_str(), message.unwrap_or_default())
            }
            zbus::Error::FDO(fdo) => Error::from(*fdo),
            other => Error::Protocol(other),
        }
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Self {
        match e {
            zbus::fdo::Error::ZBus(inner) => Error::from(inner),
            other => {
                let name = zbus::DBusError::name(&other).to_string();
                let message = zbus::DBusError::description(&other)
                    .unwrap_or_default()
                    .to_owned();
                Error::Bus { name, message }
            }
        }
    }
}

/// The last element of a D-Bus error name ("ServiceUnknown" for
/// `org.freedesktop.DBus.Error.ServiceUnknown`).
pub fn short_name(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

/// Result with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &n in ErrorName::ALL {
            assert_eq!(ErrorName::from_short(n.as_str()), Some(n));
            assert_eq!(ErrorName::from_dbus(&n.dbus_name()), Some(n));
        }
        assert_eq!(ErrorName::from_short("Nope"), None);
        assert_eq!(
            ErrorName::from_dbus("org.freedesktop.DBus.Error.AccessDenied"),
            None
        );
        assert_eq!(
            ErrorName::from_dbus("org.tessera.Tessera1.ErrorX.AccessDenied"),
            None
        );
    }

    #[test]
    fn bus_and_daemon_errors_are_told_apart() {
        let e = Error::from_names(
            "org.tessera.Tessera1.Error.AccessDenied",
            "access denied: x".into(),
        );
        assert_eq!(e.daemon_name(), Some(ErrorName::AccessDenied));
        assert_eq!(e.name(), "AccessDenied");
        let e = Error::from_names("org.freedesktop.DBus.Error.AccessDenied", "policy".into());
        assert_eq!(e.daemon_name(), None);
        assert_eq!(e.name(), "AccessDenied");
        let e = Error::from(zbus::fdo::Error::ServiceUnknown("no such name".into()));
        assert_eq!(e.name(), "ServiceUnknown");
        assert_eq!(e.to_string(), "no such name");
    }
}

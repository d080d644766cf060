//! The D-Bus errors of `org.tessera.Tessera1`: one stable name per core error, so callers can branch
//! on the name (`org.tessera.Tessera1.Error.PinInvalid`) and show the message.

use zbus::DBusError;

/// Errors as they appear on the bus.
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
    PinFormat(String),
    DeviceRemoved(String),
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
    DeviceError(String),
    ConfigError(String),
    /// The request was cancelled (Cancel, or its caller left the bus).
    Cancelled(String),
    /// Storage, I/O or internal failure: nothing was acknowledged.
    Failed(String),
}

impl From<tessera::Error> for BusError {
    fn from(e: tessera::Error) -> Self {
        use tessera::Error as E;
        let msg = e.to_string();
        match e {
            E::NoDevice => BusError::NoDevice(msg),
            E::NoSuchUser(_) => BusError::NoSuchUser(msg),
            E::NotEnrolled(_) => BusError::NotEnrolled(msg),
            E::PinRequired => BusError::PinRequired(msg),
            E::PinInvalid { .. } => BusError::PinInvalid(msg),
            E::PinWouldBlock { .. } => BusError::PinWouldBlock(msg),
            E::PinBlocked => BusError::PinBlocked(msg),
            E::PinFormat(_) => BusError::PinFormat(msg),
            E::DeviceRemoved => BusError::DeviceRemoved(msg),
            E::Timeout(_) => BusError::Timeout(msg),
            E::SignatureInvalid(_) => BusError::SignatureInvalid(msg),
            E::TokenInvalid | E::WrongAudience(_) => BusError::TokenInvalid(msg),
            E::TokenExpired => BusError::TokenExpired(msg),
            E::TokenRevoked(_) => BusError::TokenRevoked(msg),
            E::AccessDenied(_) => BusError::AccessDenied(msg),
            E::RateLimited { .. } => BusError::RateLimited(msg),
            E::InvalidArgument(_) => BusError::InvalidArgument(msg),
            E::Busy(_) => BusError::Busy(msg),
            E::StepUpRequired(_) => BusError::StepUpRequired(msg),
            // The core knows device ids; callers pass object paths back in the "device" option.
            E::DeviceAmbiguous(ids) => BusError::DeviceAmbiguous(format!(
                "more than one enrolled device is present; name one with the \"device\" option: {}",
                ids.iter()
                    .map(|id| format!("{}/{id}", crate::DEVICES_PATH))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            E::Device(_) => BusError::DeviceError(msg),
            E::Config(_) => BusError::ConfigError(msg),
            E::Cancelled => BusError::Cancelled(msg),
            _ => {
                tracing::error!("request failed: {msg}");
                BusError::Failed(msg)
            }
        }
    }
}

/// The name's last element, e.g. "PinInvalid" for `org.tessera.Tessera1.Error.PinInvalid`.
pub fn short_name(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

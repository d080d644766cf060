//! zbus proxies of the three interfaces, one file each. Each is tested against the names in
//! [`crate::names`] (here) and against the daemon's server (in the daemon's and the end-to-end
//! tests), so a proxy and its server cannot disagree on a name.

mod device;
mod manager;
mod request;

pub use device::DeviceProxy;
pub use manager::{EnrollmentAdded, ManagerProxy, TokenIssued, TokenRevoked};
pub use request::{Completed, Failed, Progress, RequestProxy};

#[cfg(test)]
mod tests {
    use zbus::proxy::Defaults;

    use super::*;
    use crate::names;

    fn interface<P: Defaults>() -> Option<String> {
        P::INTERFACE.as_ref().map(|i| i.to_string())
    }
    fn destination<P: Defaults>() -> Option<String> {
        P::DESTINATION.as_ref().map(|d| d.to_string())
    }

    #[test]
    fn proxies_use_the_names() {
        assert_eq!(
            interface::<ManagerProxy<'_>>().as_deref(),
            Some(names::MANAGER_INTERFACE)
        );
        assert_eq!(
            interface::<DeviceProxy<'_>>().as_deref(),
            Some(names::DEVICE_INTERFACE)
        );
        assert_eq!(
            interface::<RequestProxy<'_>>().as_deref(),
            Some(names::REQUEST_INTERFACE)
        );
        for d in [
            destination::<ManagerProxy<'_>>(),
            destination::<DeviceProxy<'_>>(),
            destination::<RequestProxy<'_>>(),
        ] {
            assert_eq!(d.as_deref(), Some(names::BUS_NAME));
        }
        assert_eq!(
            <ManagerProxy<'_> as Defaults>::PATH
                .as_ref()
                .map(|p| p.as_str()),
            Some(names::MANAGER_PATH)
        );
    }
}

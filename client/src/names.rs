//! Bus names, interface names and object paths of `org.tessera.Tessera1` (contract v1 and the
//! request additions of issue 7), and the conversions between device ids and object paths.

use zbus::zvariant::{self, ObjectPath, OwnedObjectPath};

/// The daemon's well-known bus name.
pub const BUS_NAME: &str = "org.tessera.Tessera1";
/// Root object: implements `org.freedesktop.DBus.ObjectManager` for the device objects.
pub const ROOT_PATH: &str = "/org/tessera/Tessera1";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/tessera/Tessera1/Manager";
/// Parent of the device objects (`<DEVICES_PATH>/<device id>`).
pub const DEVICES_PATH: &str = "/org/tessera/Tessera1/devices";
/// Parent of the request objects (`<REQUESTS_PATH>/<request id>`).
pub const REQUESTS_PATH: &str = "/org/tessera/Tessera1/requests";

/// The manager interface.
pub const MANAGER_INTERFACE: &str = "org.tessera.Tessera1.Manager";
/// The interface of each present device.
pub const DEVICE_INTERFACE: &str = "org.tessera.Tessera1.Device";
/// The interface of each live request.
pub const REQUEST_INTERFACE: &str = "org.tessera.Tessera1.Request";
/// Prefix of every Tessera error name (`org.tessera.Tessera1.Error.PinInvalid`).
pub const ERROR_PREFIX: &str = "org.tessera.Tessera1.Error";

/// The object path of the device with id `id`; an error when `id` is not one path element
/// (ASCII letters, digits and `_`, not empty), as the daemon's escaped device ids always are.
pub fn device_path(id: &str) -> Result<OwnedObjectPath, zvariant::Error> {
    child_path(DEVICES_PATH, id)
}

/// The object path of the request with id `id`.
pub fn request_path(id: u64) -> Result<OwnedObjectPath, zvariant::Error> {
    child_path(REQUESTS_PATH, &id.to_string())
}

/// The device id in a device object path; `None` when `path` is not one.
pub fn device_id<'a>(path: &'a ObjectPath<'_>) -> Option<&'a str> {
    child_id(DEVICES_PATH, path.as_str())
}

/// The request id in a request object path; `None` when `path` is not one.
pub fn request_id(path: &ObjectPath<'_>) -> Option<u64> {
    child_id(REQUESTS_PATH, path.as_str())?.parse().ok()
}

fn child_path(parent: &str, id: &str) -> Result<OwnedObjectPath, zvariant::Error> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(zvariant::Error::Message(format!(
            "{id:?} is not an object path element"
        )));
    }
    OwnedObjectPath::try_from(format!("{parent}/{id}"))
}

fn child_id<'a>(parent: &str, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(parent)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_paths_round_trip() {
        let path = device_path("Virtual_20PCD_2000_2000").unwrap();
        assert_eq!(
            path.as_str(),
            "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000"
        );
        assert_eq!(device_id(&path), Some("Virtual_20PCD_2000_2000"));
    }

    #[test]
    fn not_children() {
        for id in ["", "a/b", "Virtual PCD", "ä"] {
            assert!(device_path(id).is_err(), "{id:?}");
        }
        for p in [
            "/org/tessera/Tessera1/devices",
            "/org/tessera/Tessera1/devices/",
            "/org/tessera/Tessera1/devices/a/b",
            "/org/tessera/Tessera1/devicesX",
            "/org/tessera/Tessera1/Manager",
        ] {
            let Ok(path) = ObjectPath::try_from(p) else {
                continue;
            };
            assert_eq!(device_id(&path), None, "{p}");
        }
    }

    #[test]
    fn request_paths_round_trip() {
        let path = request_path(42).unwrap();
        assert_eq!(path.as_str(), "/org/tessera/Tessera1/requests/42");
        let p = ObjectPath::from_static_str_unchecked("/org/tessera/Tessera1/requests/42");
        assert_eq!(request_id(&p), Some(42));
        let p = ObjectPath::from_static_str_unchecked("/org/tessera/Tessera1/requests/x");
        assert_eq!(request_id(&p), None);
    }
}

//! Reaching the daemon: the system bus (an address from the environment only when the process is
//! not setuid or setgid, as libdbus decides), and a daemon whose name is owned by uid 0.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::str::FromStr;

use tessera_client::names::BUS_NAME;
use tessera_client::ManagerProxy;
use zbus::address::transport::{Transport, UnixSocket};
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, OwnedUniqueName};
use zbus::{Address, Connection};

use crate::ffi;
use crate::outcome::Failure;

/// libdbus's default system bus address.
const SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// The system bus address for this process: `DBUS_SYSTEM_BUS_ADDRESS` when the process runs with
/// its caller's rights only, else the fixed default. sudo, su and polkit-agent-helper-1 are setuid:
/// their user must never point them at a bus (and a "daemon") of their own.
pub fn system_bus_address() -> String {
    if !ffi::at_secure() {
        if let Some(a) = std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS") {
            if let Some(a) = a.to_str().filter(|a| !a.is_empty()) {
                return a.to_owned();
            }
        }
    }
    SYSTEM_BUS.to_owned()
}

/// A connection to the system bus.
///
/// A `unix:path=` address is connected here, on the caller's runtime: zbus would make the
/// (non-blocking anyway) Unix-socket connect on tokio's blocking pool, starting a thread in the
/// application's process for each login. The address's `guid`, if any, is checked as zbus would.
/// Any other address goes to zbus as it is.
pub async fn connect() -> Result<Connection, Failure> {
    let address = system_bus_address();
    let failed = |e: &dyn std::fmt::Display| {
        Failure::Unavailable(format!("connecting to the system bus {address}: {e}"))
    };
    let Some((path, guid)) = unix_path(&address) else {
        return zbus::connection::Builder::address(address.as_str())
            .map_err(|e| Failure::Unavailable(format!("system bus address {address:?}: {e}")))?
            .build()
            .await
            .map_err(|e| failed(&e));
    };
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| failed(&e))?;
    let conn = zbus::connection::Builder::unix_stream(stream)
        .build()
        .await
        .map_err(|e| failed(&e))?;
    match guid {
        Some(guid) if conn.server_guid().as_str() != guid => Err(failed(&format!(
            "the server's guid is {}, not the address's {guid}",
            conn.server_guid()
        ))),
        _ => Ok(conn),
    }
}

/// The socket and the guid (if given) of a one-entry `unix:path=` address, as zbus parses it for
/// its own connect; `None` for anything else.
fn unix_path(address: &str) -> Option<(PathBuf, Option<String>)> {
    let parsed = Address::from_str(address).ok()?;
    let guid = parsed.guid().map(|g| g.as_str().to_owned());
    match parsed.transport() {
        Transport::Unix(unix) => match unix.path() {
            UnixSocket::File(path) => Some((path.clone(), guid)),
            _ => None,
        },
        _ => None,
    }
}

/// Starts tesserad through the bus's activation (the activation file names tesserad.service, so
/// systemd runs it sandboxed), as the first login after boot finds no daemon yet. The bus waits
/// for the daemon to own its name; the caller's own timeout bounds the wait. No activation file,
/// or a start that fails, leaves the login unavailable, as a daemon that is down does.
async fn start_daemon(dbus: &DBusProxy<'_>) -> Result<(), Failure> {
    let name = zbus::names::WellKnownName::try_from(BUS_NAME)
        .map_err(|e| Failure::Unavailable(format!("bus name: {e}")))?;
    dbus.start_service_by_name(name, 0).await.map_err(|e| {
        Failure::Unavailable(format!(
            "no tesserad on the bus and it cannot be started: {e}"
        ))
    })?;
    Ok(())
}

/// The daemon: a Manager proxy addressed to the unique name that owns `org.tessera.Tessera1` (once
/// started by bus activation if no one owns it), after checking that its owner runs as uid 0.
/// Calls go to that unique name, so a name changing hands after the check cannot redirect them.
pub async fn daemon(
    conn: &Connection,
) -> Result<(ManagerProxy<'static>, OwnedUniqueName), Failure> {
    let dbus = DBusProxy::new(conn)
        .await
        .map_err(|e| Failure::Unavailable(format!("the bus: {e}")))?;
    let name =
        BusName::try_from(BUS_NAME).map_err(|e| Failure::Unavailable(format!("bus name: {e}")))?;
    let owner = match dbus.get_name_owner(name.clone()).await {
        Ok(owner) => owner,
        Err(zbus::fdo::Error::NameHasNoOwner(_)) => {
            start_daemon(&dbus).await?;
            dbus.get_name_owner(name).await.map_err(|e| {
                Failure::Unavailable(format!("no tesserad on the bus after starting it: {e}"))
            })?
        }
        Err(e) => {
            return Err(Failure::Unavailable(format!(
                "no tesserad on the bus ({BUS_NAME}): {e}"
            )))
        }
    };
    let uid = dbus
        .get_connection_unix_user(BusName::from(owner.as_ref()))
        .await
        .map_err(|e| Failure::Unavailable(format!("the uid of {owner}: {e}")))?;
    if uid != 0 {
        return Err(Failure::Unavailable(format!(
            "{BUS_NAME} is owned by {owner}, which runs as uid {uid}, not root: not asking it"
        )));
    }
    let manager = ManagerProxy::builder(conn)
        .destination(BusName::from(owner.clone().into_inner()))
        .map_err(|e| Failure::Unavailable(format!("proxy: {e}")))?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure::Unavailable(format!("proxy: {e}")))?;
    Ok((manager, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_unix_path_is_connected_here() {
        let path = |p: &str| Some((PathBuf::from(p), None));
        assert_eq!(
            unix_path("unix:path=/run/dbus/system_bus_socket"),
            path("/run/dbus/system_bus_socket")
        );
        assert_eq!(
            unix_path("unix:path=/tmp/s,guid=0123456789abcdef0123456789abcdef"),
            Some((
                PathBuf::from("/tmp/s"),
                Some("0123456789abcdef0123456789abcdef".to_owned())
            ))
        );
        for other in [
            "unix:abstract=/tmp/dbus-x",
            "tcp:host=127.0.0.1,port=4000",
            "nonsense",
            "",
        ] {
            assert_eq!(unix_path(other), None, "{other:?}");
        }
    }
}

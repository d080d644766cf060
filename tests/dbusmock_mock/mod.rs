//! The python-dbusmock template `dbusmock/tessera.py` on a private system-type bus, and the calls of
//! its `org.freedesktop.DBus.Mock` interface, for `tests/dbusmock_*.rs`.
//!
//! The bus is a `dbus-daemon` of type "system" whose policy lets everyone in: the mock is a
//! stand-in for integrators' tests, not a test of the shipped policy (that is
//! `daemon/tests/system_bus.rs`). The mock runs under `/usr/bin/python3`, the distribution's
//! interpreter, because python3-dbusmock and python3-gi are packages of it; a `python3` found first
//! on PATH (pyenv on this machine) has neither.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue, Type};
use zbus::Connection;

use super::common::{wait_until, Child, TestDir};

pub const BUS_NAME: &str = "org.tessera.Tessera1";
pub const MANAGER_PATH: &str = "/org/tessera/Tessera1/Manager";
pub const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
/// The PIN the template's devices take unless told otherwise.
pub const PIN: &str = "123456";

/// The template, by absolute path, as `python3 -m dbusmock -t` takes a custom one.
pub fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dbusmock/tessera.py")
}

/// A private system-type bus with the template serving `org.tessera.Tessera1` on it.
pub struct Mock {
    // Field order is drop order: the connection, the mock, the bus, then their directory.
    conn: Connection,
    pub runtime: tokio::runtime::Runtime,
    mock: Child,
    bus: Child,
    address: String,
    dir: TestDir,
}

impl Mock {
    pub fn start() -> Mock {
        Mock::with_parameters(None)
    }

    /// With template parameters (`-p JSON`).
    pub fn with_parameters(parameters: Option<&str>) -> Mock {
        let dir = TestDir::new();
        let socket = dir.path().join("system_bus");
        let config = dir.path().join("system.conf");
        fs::write(&config, system_config(&socket)).expect("write bus config");
        let mut bus = Child::spawn(
            "dbus-daemon",
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .args(["--nofork", "--print-address"]),
            dir.path(),
        );
        let address = bus
            .wait_for_line("unix:", Duration::from_secs(10))
            .trim()
            .to_owned();
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-m", "dbusmock", "--system", "-t"])
            .arg(template())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address);
        if let Some(p) = parameters {
            cmd.args(["-p", p]);
        }
        let mock = Child::spawn("tessera-dbusmock", &mut cmd, dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let conn = runtime
            .block_on(async {
                zbus::connection::Builder::address(address.as_str())?
                    .build()
                    .await
            })
            .expect("connect to the test bus");
        let m = Mock {
            conn,
            runtime,
            mock,
            bus,
            address,
            dir,
        };
        assert!(
            wait_until(Duration::from_secs(20), || m.has_owner(BUS_NAME)),
            "the template did not take {BUS_NAME}; its output: {:?}",
            m.mock.stdout_lines()
        );
        m
    }

    /// The bus address (for `--bus`, `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connection of this process to the bus.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A second, independent connection (another client).
    pub fn connect(&self) -> Connection {
        self.runtime
            .block_on(async {
                zbus::connection::Builder::address(self.address.as_str())?
                    .build()
                    .await
            })
            .expect("connect to the test bus")
    }

    pub fn has_owner(&self, name: &str) -> bool {
        self.runtime.block_on(async {
            let Ok(dbus) = zbus::fdo::DBusProxy::new(&self.conn).await else {
                return false;
            };
            let Ok(name) = zbus::names::BusName::try_from(name) else {
                return false;
            };
            dbus.name_has_owner(name).await.unwrap_or(false)
        })
    }

    /// Calls `method` of the `org.freedesktop.DBus.Mock` interface.
    pub fn mock<B, R>(&self, method: &str, body: &B) -> R
    where
        B: Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        self.call(MOCK_IFACE, method, body)
            .unwrap_or_else(|e| panic!("Mock.{method}: {e}"))
    }

    /// Calls `method` of `interface` on the manager object; the error as the bus gave it.
    pub fn call<B, R>(&self, interface: &str, method: &str, body: &B) -> zbus::Result<R>
    where
        B: Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        self.runtime.block_on(async {
            let reply = self
                .conn
                .call_method(Some(BUS_NAME), MANAGER_PATH, Some(interface), method, body)
                .await?;
            reply.body().deserialize::<R>()
        })
    }

    /// A present device (`AddDevice`).
    pub fn add_device(&self, kind: &str, transport: &str, name: &str) -> OwnedObjectPath {
        self.mock("AddDevice", &(kind, transport, name))
    }

    /// `user` enrolled with a device of `kind` (`AddEnrollment`).
    pub fn enroll(&self, user: &str, kind: &str) -> String {
        self.mock("AddEnrollment", &(user, kind))
    }

    /// What every later request of `user` plays (`SetScript`).
    pub fn script(&self, user: &str, steps: &[&str]) {
        let () = self.mock("SetScript", &(user, steps));
    }

    /// The arguments of each logged call of `method` (dbusmock's `GetMethodCalls`), as strings.
    pub fn calls(&self, method: &str) -> Vec<Vec<String>> {
        let calls: Vec<(u64, Vec<OwnedValue>)> = self.mock("GetMethodCalls", &(method,));
        calls
            .into_iter()
            .map(|(_, args)| {
                args.iter()
                    .map(|a| match &**a {
                        zbus::zvariant::Value::Str(s) => s.as_str().to_owned(),
                        zbus::zvariant::Value::ObjectPath(p) => p.as_str().to_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    /// The live request objects (`ActiveRequests`).
    pub fn active_requests(&self) -> Vec<OwnedObjectPath> {
        self.mock("ActiveRequests", &())
    }

    /// What the mock printed (its log: every call and signal).
    pub fn log(&self) -> String {
        self.mock.stdout_lines().join("\n")
    }
}

/// A system-type bus configuration that lets every uid connect, own names, send and receive: the
/// tests' allow-all configuration with `<type>system</type>`.
fn system_config(socket: &Path) -> String {
    crate::common::bus_config(socket).replacen(
        "<busconfig>\n",
        "<busconfig>\n  <type>system</type>\n",
        1,
    )
}

//! `tessera watch`: the daemon's events, one line each, in the order the bus delivered them —
//! devices present at the start, devices added and removed, tokens issued and revoked, enrollments
//! made, and the daemon leaving the bus and coming back.

use std::collections::HashMap;
use std::io::Write;

use futures_util::StreamExt;
use tessera_client::names::{device_id, BUS_NAME, MANAGER_INTERFACE};
use tessera_client::Error;
use zbus::fdo::DBusProxy;
use zbus::names::BusName;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream};

use crate::devices;

/// Follows the daemon until interrupted.
pub async fn watch(conn: &Connection, json: bool) -> Result<(), Error> {
    let from_daemon = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)?
        .build();
    let owner = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")?
        .interface("org.freedesktop.DBus")?
        .member("NameOwnerChanged")?
        .add_arg(BUS_NAME)?
        .build();
    // Both subscriptions exist before anything is read, so no event falls between them.
    let daemon_events = MessageStream::for_match_rule(from_daemon, conn, None).await?;
    let owner_events = MessageStream::for_match_rule(owner, conn, None).await?;
    let mut stream = futures_util::stream::select(daemon_events, owner_events);
    let out = Printer { json };
    out.line("watching", &[]);
    let dbus = DBusProxy::new(conn).await?;
    let name = BusName::try_from(BUS_NAME).map_err(zbus::Error::from)?;
    if dbus.name_has_owner(name).await? {
        present(conn, &out).await;
    } else {
        out.line("DaemonAbsent", &[("hint", "waiting for tesserad to start")]);
    }
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        let header = msg.header();
        let (Some(iface), Some(member)) = (header.interface(), header.member()) else {
            continue;
        };
        match (iface.as_str(), member.as_str()) {
            ("org.freedesktop.DBus", "NameOwnerChanged") => {
                let (_, _, new): (String, String, String) = msg.body().deserialize()?;
                if new.is_empty() {
                    out.line("DaemonLeft", &[]);
                } else {
                    out.line("DaemonBack", &[("owner", &new)]);
                    present(conn, &out).await;
                }
            }
            (MANAGER_INTERFACE, "TokenRevoked") => {
                let (jti, user, reason): (String, String, String) = msg.body().deserialize()?;
                out.line(
                    "TokenRevoked",
                    &[("jti", &jti), ("user", &user), ("reason", &reason)],
                );
            }
            (MANAGER_INTERFACE, "TokenIssued") => {
                let (jti, user): (String, String) = msg.body().deserialize()?;
                out.line("TokenIssued", &[("jti", &jti), ("user", &user)]);
            }
            (MANAGER_INTERFACE, "EnrollmentAdded") => {
                let (id, user): (String, String) = msg.body().deserialize()?;
                out.line("EnrollmentAdded", &[("id", &id), ("user", &user)]);
            }
            // Only devices: request objects are announced too, to their owner alone.
            ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
                let (path, _): (
                    OwnedObjectPath,
                    HashMap<String, HashMap<String, OwnedValue>>,
                ) = msg.body().deserialize()?;
                if device_id(&path).is_some() {
                    out.device("DeviceAdded", path.as_str());
                }
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
                let (path, _): (OwnedObjectPath, Vec<String>) = msg.body().deserialize()?;
                if device_id(&path).is_some() {
                    out.device("DeviceRemoved", path.as_str());
                }
            }
            _ => continue,
        }
    }
    Ok(())
}

/// The devices present now, as "DevicePresent" lines.
async fn present(conn: &Connection, out: &Printer) {
    match devices::list(conn).await {
        Ok(list) => {
            for d in list {
                out.line(
                    "DevicePresent",
                    &[("path", &d.path), ("name", &d.name), ("reader", &d.reader)],
                );
            }
        }
        Err(e) => out.line("DevicesUnknown", &[("error", &e.to_string())]),
    }
}

struct Printer {
    json: bool,
}

impl Printer {
    /// `Event key=value ...`, or `{"event": "Event", "key": "value", ...}`.
    fn line(&self, event: &str, fields: &[(&str, &str)]) {
        let text = if self.json {
            let mut m = serde_json::Map::new();
            m.insert("event".into(), event.into());
            for (k, v) in fields {
                m.insert((*k).into(), (*v).into());
            }
            serde_json::Value::Object(m).to_string()
        } else if fields.is_empty() {
            event.to_owned()
        } else {
            let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{event} {}", pairs.join(" "))
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    /// `DeviceAdded <path>` (the form scripts already read), or JSON.
    fn device(&self, event: &str, path: &str) {
        if self.json {
            self.line(event, &[("path", path)]);
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{event} {path}");
            let _ = stdout.flush();
        }
    }
}

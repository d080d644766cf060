//! The present devices as the daemon publishes them, `--device` resolution (an id, an object path
//! or a reader name) and `tessera status`.

use std::collections::HashMap;

use tessera_client::names::{device_id, device_path, BUS_NAME, DEVICES_PATH, ROOT_PATH};
use tessera_client::{DeviceProxy, Error, ErrorName, ManagerProxy};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::Connection;

use crate::output;

/// One present device.
#[derive(serde::Serialize)]
pub struct Device {
    pub path: String,
    pub id: String,
    pub kind: String,
    pub transport: String,
    pub name: String,
    pub reader: String,
    /// Accounts enrolled with a device of this name (filled by `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<Vec<String>>,
}

/// The present devices, by path.
pub async fn list(conn: &Connection) -> Result<Vec<Device>, Error> {
    let om = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(BUS_NAME)?
        .path(ROOT_PATH)?
        .build()
        .await?;
    let mut paths: Vec<OwnedObjectPath> = om
        .get_managed_objects()
        .await?
        .into_keys()
        .filter(|p| device_id(p).is_some())
        .collect();
    paths.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut out = Vec::new();
    for path in paths {
        let d = DeviceProxy::builder(conn)
            .path(path.clone())?
            .build()
            .await?;
        out.push(Device {
            id: device_id(&path).unwrap_or_default().to_owned(),
            path: path.to_string(),
            kind: d.kind().await?,
            transport: d.transport().await?,
            name: d.name().await?,
            reader: d.reader().await?,
            enrolled: None,
        });
    }
    Ok(out)
}

/// The object path `--device` names: an object path, a device id, or the reader name or device
/// name of a present device.
pub async fn resolve(conn: &Connection, given: &str) -> Result<OwnedObjectPath, Error> {
    if given.starts_with('/') {
        return OwnedObjectPath::try_from(given)
            .map_err(|_| Error::Usage(format!("--device {given:?} is not an object path")));
    }
    let present = list(conn).await?;
    if let Some(d) = present
        .iter()
        .find(|d| d.id == given || d.reader == given || d.name == given)
    {
        return OwnedObjectPath::try_from(d.path.as_str())
            .map_err(zbus::Error::from)
            .map_err(Error::from);
    }
    // Not present: an id still names the device it would be, so the daemon answers (NoDevice).
    device_path(given).map_err(|_| Error::Daemon {
        name: ErrorName::NoDevice,
        message: format!(
            "no present device has the id, reader or name {given:?} (under {DEVICES_PATH})"
        ),
    })
}

/// The only present device (for `enroll` and `unblock` without `--device`).
pub async fn only(conn: &Connection) -> Result<OwnedObjectPath, Error> {
    let mut present = list(conn).await?;
    match present.len() {
        0 => Err(Error::Daemon {
            name: ErrorName::NoDevice,
            message: "no device present; insert a card or plug in a key".into(),
        }),
        1 => {
            let d = present.remove(0);
            OwnedObjectPath::try_from(d.path).map_err(|e| Error::from(zbus::Error::from(e)))
        }
        _ => Err(Error::Daemon {
            name: ErrorName::DeviceAmbiguous,
            message: format!(
                "several devices present, name one with --device: {}",
                present
                    .iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// `tessera status`: each device, and the accounts enrolled with it (root sees everyone's, others
/// their own).
pub async fn status(conn: &Connection, json: bool) -> Result<(), Error> {
    let mut devices = list(conn).await?;
    let enrolled = enrolled_by_device_name(conn).await;
    for d in &mut devices {
        let mut users: Vec<String> = enrolled.get(&d.name).cloned().unwrap_or_default();
        users.sort();
        users.dedup();
        d.enrolled = Some(users);
    }
    if json {
        for d in &devices {
            println!(
                "{}",
                serde_json::to_string(d).map_err(std::io::Error::other)?
            );
        }
        return Ok(());
    }
    if devices.is_empty() {
        println!("no devices present");
    }
    for d in &devices {
        let users = d.enrolled.as_deref().unwrap_or_default();
        println!(
            "{}\n  kind: {}\n  transport: {}\n  name: {}\n  reader: {}\n  enrolled: {}",
            d.path,
            d.kind,
            d.transport,
            d.name,
            d.reader,
            if users.is_empty() {
                "nobody".to_owned()
            } else {
                users.join(", ")
            }
        );
    }
    Ok(())
}

/// Enrolled accounts by the device name their enrollment recorded. Root asks for every account of
/// the machine; others for their own. Failures leave the list empty: status still shows devices.
async fn enrolled_by_device_name(conn: &Connection) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let Ok(manager) = ManagerProxy::new(conn).await else {
        return out;
    };
    let users = if nix::unistd::geteuid().is_root() {
        all_accounts()
    } else {
        vec![String::new()]
    };
    for user in users {
        let Ok(list) = manager.list_enrollments(&user).await else {
            continue;
        };
        for e in &list {
            push(&mut out, e);
        }
    }
    out
}

fn push(out: &mut HashMap<String, Vec<String>>, e: &HashMap<String, OwnedValue>) {
    out.entry(output::field(e, "device_name"))
        .or_default()
        .push(output::field(e, "user"));
}

/// Every account in the password database.
fn all_accounts() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

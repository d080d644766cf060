//! `tesserad`: the Tessera service on D-Bus (`org.tessera.Tessera1`, contract version 1).
//!
//! [`Daemon::start`] builds the whole service — store, keys, device sources, bus objects — so tests can
//! run the real daemon in-process; `main` only parses arguments and waits for a signal.

#![forbid(unsafe_code)]

pub mod announce;
pub mod device_feed;
pub mod errors;
pub mod interface;
pub mod limits;
pub mod logind;
pub mod requests;
pub mod session_events;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tessera::clock::{Clock, SystemClock};
use tessera::policy::config::Config;
use tessera::service::{Event, Service, ServiceParts};
use tessera::transport::events::{DeviceSources, SourceOptions};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

// One definition of the names and of the bus choice, shared with every client.
pub use tessera_client::names::{BUS_NAME, DEVICES_PATH, MANAGER_PATH, ROOT_PATH};
pub use tessera_client::BusChoice;

/// Where devices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSource {
    /// The machine's device sources ([`DeviceSources`]: PC/SC readers through pcscd, USB HID
    /// keys, and the simulated keys of `[device] simulated_hid_dir` when it is set).
    Machine,
    /// None: the caller feeds devices to [`Daemon::service`] itself (in-process tests).
    External,
}

/// What the daemon is started with.
pub struct Options {
    /// The bus.
    pub bus: BusChoice,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The configuration.
    pub config: Config,
    /// Where devices come from.
    pub devices: DeviceSource,
    /// The clock (tests move a manual one).
    pub clock: Arc<dyn Clock>,
    /// The configuration file, re-read on SIGHUP and ReloadConfig (None: built-in defaults).
    pub config_path: Option<PathBuf>,
    /// Serve a bus whose daemon is not run by root even when running as root (tests only: such a
    /// bus could claim uid 0 for any caller).
    pub insecure_bus: bool,
}

impl Options {
    /// Options with the system clock and the machine's devices.
    pub fn new(bus: BusChoice, state_dir: PathBuf, config: Config) -> Self {
        Options {
            bus,
            state_dir,
            config,
            devices: DeviceSource::Machine,
            clock: Arc::new(SystemClock),
            config_path: None,
            insecure_bus: false,
        }
    }
}

/// A running daemon.
pub struct Daemon {
    service: Service,
    config_path: Option<PathBuf>,
    connection: Connection,
    tasks: Vec<JoinHandle<()>>,
    _sources: Option<DeviceSources>,
}

impl Daemon {
    /// Connects to the bus, opens the state, serves the bus objects, takes the bus name and starts
    /// watching devices.
    ///
    /// Refuses to start, and says why, when: the bus cannot be reached (before any state exists, so
    /// nothing is left on disk); running as root, the bus daemon is not root's (unless
    /// `insecure_bus`); another daemon owns the name or holds the state directory.
    pub async fn start(opts: Options) -> anyhow::Result<Daemon> {
        let connection = tessera_client::connect(&opts.bus).await?;
        if nix::unistd::geteuid().is_root() && !opts.insecure_bus {
            check_bus_is_roots(&connection).await?;
        }
        // Asked before any state is touched; taking the name below settles a race between two.
        refuse_if_served(&connection).await?;
        let service = Service::open(ServiceParts {
            clock: opts.clock,
            config: opts.config,
            state_dir: opts.state_dir.clone(),
        })
        .with_context(|| format!("opening state directory {}", opts.state_dir.display()))?;
        // Subscribe before any device can appear, so no event is missed.
        let events = service.subscribe();
        let session_events = service.subscribe();
        // Handlers exist before the name is taken, so no early call finds a half-built service.
        let objects = connection.object_server();
        objects.at(ROOT_PATH, zbus::fdo::ObjectManager).await?;
        objects
            .at(requests::REQUESTS_PATH, zbus::fdo::ObjectManager)
            .await?;
        let live_requests = requests::Requests::default();
        // Watching before the name is taken: no request can start before its owner is watched.
        let owners = live_requests.follow_owners(&connection).await?;
        objects
            .at(
                MANAGER_PATH,
                interface::Manager::new(service.clone(), opts.config_path.clone(), live_requests),
            )
            .await?;
        // Following logind before the name is taken: no token can be bound to a session whose
        // end would go unheard.
        let mut tasks = session_events::start(&connection, &service, session_events).await;
        if let Err(e) = take_name(&connection).await {
            // They hold the service, and with it the state directory.
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
            return Err(e);
        }
        tasks.push(tokio::spawn(publish(
            connection.clone(),
            service.clone(),
            events,
        )));
        tasks.push(owners);
        let sources = match opts.devices {
            DeviceSource::Machine => {
                let (tx, rx) = mpsc::unbounded_channel();
                let options = SourceOptions {
                    simulated_hid_dir: service.config().device.simulated_hid_dir.clone(),
                };
                let sources = DeviceSources::start(tx, options)?;
                let transports = sources.transports().to_vec();
                tasks.push(tokio::spawn(device_feed::feed(
                    service.clone(),
                    transports,
                    rx,
                )));
                Some(sources)
            }
            DeviceSource::External => None,
        };
        tracing::info!("serving {BUS_NAME}");
        Ok(Daemon {
            service,
            config_path: opts.config_path,
            connection,
            tasks,
            _sources: sources,
        })
    }

    /// The service behind the bus objects.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Reads the configuration file again (SIGHUP); a bad file keeps the policy in force.
    pub fn reload_config(&self) -> Result<(), tessera::Error> {
        interface::reload_config(&self.service, self.config_path.as_deref())
    }

    /// The bus connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Stops serving: releases the name, ends the background tasks and lets go of the service, so
    /// its state directory is free for the next daemon once this returns.
    pub async fn stop(self) {
        let _ = self.connection.release_name(BUS_NAME).await;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        // The Manager object holds a clone of the service.
        let objects = self.connection.object_server();
        let _ = objects.remove::<interface::Manager, _>(MANAGER_PATH).await;
    }
}

/// Refuses a bus whose daemon is not run by root. A bus daemon vouches for its callers' uids; one
/// run by another user could claim uid 0 for anyone, and this daemon (as root) would believe it.
/// The system bus counts as root's: root starts it, and it then drops to its own system account.
async fn check_bus_is_roots(conn: &Connection) -> anyhow::Result<()> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    // Asked about the bus itself, the bus answers with its own credentials.
    let creds = dbus
        .get_connection_credentials(BusName::try_from("org.freedesktop.DBus")?)
        .await
        .context("asking the bus daemon for its own credentials")?;
    match creds.unix_user_id() {
        Some(uid) if uid == 0 || is_system_bus_account(uid) => Ok(()),
        Some(uid) => anyhow::bail!(
            "refusing a bus whose daemon runs as uid {uid}, neither root nor the system bus \
             account: running as root, tesserad trusts the bus to tell callers' uids, and a bus run \
             by another user could claim uid 0 for anyone (--insecure-bus allows it, for tests only)"
        ),
        None => anyhow::bail!(
            "refusing a bus that does not say which uid its daemon runs as: running as root, \
             tesserad needs a bus run by root (--insecure-bus allows it, for tests only)"
        ),
    }
}

/// The accounts distributions run the system bus as after root started it (`<user>` in its
/// configuration): messagebus on Debian, Ubuntu and Arch, dbus on Fedora and RHEL.
const SYSTEM_BUS_ACCOUNTS: &[&str] = &["messagebus", "dbus"];

fn is_system_bus_account(uid: u32) -> bool {
    SYSTEM_BUS_ACCOUNTS.iter().any(
        |name| matches!(nix::unistd::User::from_name(name), Ok(Some(u)) if u.uid.as_raw() == uid),
    )
}

/// Fails with "another tesserad (pid …) owns org.tessera.Tessera1" when the name has an owner.
async fn refuse_if_served(conn: &Connection) -> anyhow::Result<()> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    if dbus
        .name_has_owner(BusName::try_from(BUS_NAME)?)
        .await
        .context("asking the bus who owns org.tessera.Tessera1")?
    {
        return Err(another_daemon(conn).await);
    }
    Ok(())
}

/// Takes the name without queueing and without allowing anyone to take it over later.
async fn take_name(conn: &Connection) -> anyhow::Result<()> {
    // Neither AllowReplacement nor ReplaceExisting: one daemon serves until it exits.
    match conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await
    {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => Ok(()),
        Ok(RequestNameReply::Exists | RequestNameReply::InQueue) | Err(zbus::Error::NameTaken) => {
            Err(another_daemon(conn).await)
        }
        Err(e) => Err(anyhow::Error::new(e).context("taking the name org.tessera.Tessera1")),
    }
}

/// The error naming the daemon that owns the name (its pid, as the bus tells it).
async fn another_daemon(conn: &Connection) -> anyhow::Error {
    let pid = match zbus::fdo::DBusProxy::new(conn).await {
        Ok(dbus) => match BusName::try_from(BUS_NAME) {
            Ok(name) => dbus.get_connection_unix_process_id(name).await.ok(),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    anyhow::anyhow!("another tesserad (pid {pid}) owns {BUS_NAME}")
}

/// Turns service events into bus objects and signals.
async fn publish(conn: Connection, service: Service, mut events: broadcast::Receiver<Event>) {
    let mut shown: Vec<String> = Vec::new();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Lost signals cannot be sent late, but the device objects can be put right.
                tracing::error!("{n} service events were lost before reaching the bus");
                resync_devices(&conn, &service, &mut shown).await;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match &event {
            Event::DeviceAdded(info) => shown.push(info.id.clone()),
            Event::DeviceRemoved { id } => shown.retain(|s| s != id),
            Event::TokenRevoked { .. } | Event::LoginSessionDeviceRemoved { .. } => {}
        }
        if let Err(e) = publish_one(&conn, event).await {
            tracing::warn!("publishing an event on the bus failed: {e}");
        }
    }
}

/// Makes the device objects on the bus match the service's present devices.
async fn resync_devices(conn: &Connection, service: &Service, shown: &mut Vec<String>) {
    let present = service.devices();
    let gone: Vec<String> = shown
        .iter()
        .filter(|id| !present.iter().any(|d| &d.id == *id))
        .cloned()
        .collect();
    for id in gone {
        if let Err(e) = publish_one(conn, Event::DeviceRemoved { id: id.clone() }).await {
            tracing::warn!("removing device object {id}: {e}");
        }
    }
    for info in present.iter().filter(|d| !shown.contains(&d.id)) {
        if let Err(e) = publish_one(conn, Event::DeviceAdded(info.clone())).await {
            tracing::warn!("adding device object {}: {e}", info.id);
        }
    }
    *shown = present.into_iter().map(|d| d.id).collect();
}

async fn publish_one(conn: &Connection, event: Event) -> zbus::Result<()> {
    match event {
        Event::DeviceAdded(info) => {
            let path = tessera_client::names::device_path(&info.id)?;
            conn.object_server()
                .at(path, interface::Device::new(info))
                .await?;
        }
        Event::DeviceRemoved { id } => {
            let path = tessera_client::names::device_path(&id)?;
            conn.object_server()
                .remove::<interface::Device, _>(path)
                .await?;
        }
        Event::TokenRevoked { jti, user, reason } => {
            let emitter = SignalEmitter::new(conn, MANAGER_PATH)?;
            interface::Manager::token_revoked(&emitter, &jti, &user, &reason).await?;
        }
        // Not a bus signal: the login-session listener acts on it (logind).
        Event::LoginSessionDeviceRemoved { .. } => {}
    }
    Ok(())
}

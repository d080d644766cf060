//! `tesserad`: the Tessera service on D-Bus (`org.tessera.Tessera1`, contract version 1).
//!
//! [`Daemon::start`] builds the whole service — store, keys, PC/SC monitor, bus objects — so tests can
//! run the real daemon in-process; `main` only parses arguments and waits for a signal.

#![forbid(unsafe_code)]

pub mod errors;
pub mod interface;
pub mod limits;
pub mod proxy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tessera::clock::{Clock, SystemClock};
use tessera::config::Config;
use tessera::pcsc_device::{Monitor, PcscConnection, PcscEvent};
use tessera::service::{DeviceAttach, Event, Service, ServiceParts};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.tessera.Tessera1";
/// Root object: implements org.freedesktop.DBus.ObjectManager for the device objects.
pub const ROOT_PATH: &str = "/org/tessera/Tessera1";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/tessera/Tessera1/Manager";
/// Parent of the device objects.
pub const DEVICES_PATH: &str = "/org/tessera/Tessera1/devices";

/// Which bus to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// The session bus of the environment.
    Session,
    /// The system bus.
    System,
    /// A bus at this D-Bus address.
    Address(String),
}

impl std::str::FromStr for BusChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "session" => BusChoice::Session,
            "system" => BusChoice::System,
            other => BusChoice::Address(other.to_owned()),
        })
    }
}

/// Where devices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSource {
    /// PC/SC readers through pcscd.
    Pcsc,
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
}

impl Options {
    /// Options with the system clock and PC/SC devices.
    pub fn new(bus: BusChoice, state_dir: PathBuf, config: Config) -> Self {
        Options {
            bus,
            state_dir,
            config,
            devices: DeviceSource::Pcsc,
            clock: Arc::new(SystemClock),
            config_path: None,
        }
    }
}

/// A running daemon.
pub struct Daemon {
    service: Service,
    config_path: Option<PathBuf>,
    connection: Connection,
    tasks: Vec<JoinHandle<()>>,
    _monitor: Option<Monitor>,
}

impl Daemon {
    /// Opens the state, serves the bus objects, takes the bus name and starts watching devices.
    pub async fn start(opts: Options) -> anyhow::Result<Daemon> {
        let service = Service::open(ServiceParts {
            clock: opts.clock,
            config: opts.config,
            state_dir: opts.state_dir.clone(),
        })
        .with_context(|| format!("opening state directory {}", opts.state_dir.display()))?;
        // Subscribe before any device can appear, so no event is missed.
        let events = service.subscribe();
        let builder = match &opts.bus {
            BusChoice::Session => zbus::connection::Builder::session()?,
            BusChoice::System => zbus::connection::Builder::system()?,
            BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str())?,
        };
        // Handlers exist before the name is taken, so no early call finds a half-built service.
        let connection = builder
            .serve_at(ROOT_PATH, zbus::fdo::ObjectManager)?
            .serve_at(
                MANAGER_PATH,
                interface::Manager::new(service.clone(), opts.config_path.clone()),
            )?
            .name(BUS_NAME)?
            .build()
            .await
            .context("connecting to the bus and taking the name org.tessera.Tessera1")?;
        let mut tasks = vec![tokio::spawn(publish(
            connection.clone(),
            service.clone(),
            events,
        ))];
        let monitor = match opts.devices {
            DeviceSource::Pcsc => {
                let (tx, rx) = mpsc::unbounded_channel();
                let monitor = Monitor::start(tx)?;
                tasks.push(tokio::spawn(follow_pcsc(service.clone(), rx)));
                Some(monitor)
            }
            DeviceSource::External => None,
        };
        tracing::info!("serving {BUS_NAME}");
        Ok(Daemon {
            service,
            config_path: opts.config_path,
            connection,
            tasks,
            _monitor: monitor,
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

    /// Stops serving: releases the name and ends the background tasks.
    pub async fn stop(self) {
        let _ = self.connection.release_name(BUS_NAME).await;
        for t in &self.tasks {
            t.abort();
        }
    }
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
            Event::TokenRevoked { .. } => {}
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
            let path = proxy::device_path(&info.id)?;
            conn.object_server()
                .at(path, interface::Device::new(info))
                .await?;
        }
        Event::DeviceRemoved { id } => {
            let path = proxy::device_path(&id)?;
            conn.object_server()
                .remove::<interface::Device, _>(path)
                .await?;
        }
        Event::TokenRevoked { jti, user, reason } => {
            let emitter = SignalEmitter::new(conn, MANAGER_PATH)?;
            interface::Manager::token_revoked(&emitter, &jti, &user, &reason).await?;
        }
    }
    Ok(())
}

/// Feeds PC/SC events to the service: in order for each reader, and readers independently of one
/// another, so a slow or stuck card in one reader never delays a removal in another.
async fn follow_pcsc(service: Service, mut rx: mpsc::UnboundedReceiver<PcscEvent>) {
    let mut last: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(event) = rx.recv().await {
        match event {
            PcscEvent::CardInserted {
                reader,
                event_count,
                ..
            } => {
                let svc = service.clone();
                let r = reader.clone();
                after_previous(&mut last, reader, async move {
                    report(card_inserted(&svc, r, event_count).await);
                });
            }
            PcscEvent::CardRemoved { reader } => {
                let svc = service.clone();
                let r = reader.clone();
                after_previous(&mut last, reader, async move {
                    report(svc.device_removed(&r).await);
                });
            }
            // Both concern every reader: wait until each reader's events so far are handled.
            PcscEvent::EnumerationComplete => {
                for (_, t) in last.drain() {
                    let _ = t.await;
                }
                report(service.enumeration_complete().await);
            }
            PcscEvent::ServiceUnavailable { .. } => {
                for (_, t) in last.drain() {
                    let _ = t.await;
                }
                report(service.all_devices_removed().await);
            }
        }
        last.retain(|_, t| !t.is_finished());
    }
}

/// Runs `work` for `reader` once the reader's previous event has been handled.
fn after_previous(
    last: &mut HashMap<String, JoinHandle<()>>,
    reader: String,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let previous = last.remove(&reader);
    let task = tokio::spawn(async move {
        if let Some(p) = previous {
            let _ = p.await;
        }
        work.await;
    });
    last.insert(reader, task);
}

async fn card_inserted(service: &Service, reader: String, event_count: u32) -> tessera::Result<()> {
    let r = reader.clone();
    match tokio::task::spawn_blocking(move || PcscConnection::connect(&r)).await {
        Ok(Ok(conn)) => {
            service
                .device_added(DeviceAttach {
                    reader,
                    event_count: u64::from(event_count),
                    transport: "pcsc".into(),
                    connection: Box::new(conn),
                })
                .await
        }
        Ok(Err(e)) => {
            tracing::warn!(%reader, "cannot connect to the card: {e}");
            Ok(())
        }
        Err(e) => Err(tessera::Error::Internal(e.to_string())),
    }
}

fn report(result: tessera::Result<()>) {
    if let Err(e) = result {
        tracing::error!("handling a device event failed: {e}");
    }
}

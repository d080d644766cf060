//! The stack under measurement, around the processes: the binaries, the simulated card, the bus
//! connection and the waits for the daemon's name and device.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use tokio::runtime::Runtime;
use zbus::fdo::{DBusProxy, ObjectManagerProxy, PeerProxy};
use zbus::names::BusName;
use zbus::Connection;

use crate::procs::Proc;
use crate::{common, DEVICE_PATH, POLL, START_TIMEOUT, VPCD_ADDR};

pub struct Binaries {
    pub tesserad: PathBuf,
    pub sim: PathBuf,
    /// `target/`, for the report file.
    pub target_dir: PathBuf,
}

impl Binaries {
    /// `tesserad` is built with this bench; `tessera-sim` belongs to another package, so it must come
    /// from `cargo build --release --workspace`, and a stale one is pointed out.
    pub fn locate() -> Result<Binaries> {
        let tesserad = PathBuf::from(env!("CARGO_BIN_EXE_tesserad"));
        let profile_dir = tesserad
            .parent()
            .ok_or_else(|| anyhow!("odd binary path {}", tesserad.display()))?
            .to_owned();
        let sim = profile_dir.join("tessera-sim");
        ensure!(
            sim.is_file(),
            "{} is missing: run `cargo build --release --workspace` (or `make build`) first",
            sim.display()
        );
        warn_if_stale(&sim, &["device-sim/src", "src"])?;
        let target_dir = profile_dir
            .parent()
            .map_or_else(|| profile_dir.clone(), Path::to_owned);
        Ok(Binaries {
            tesserad,
            sim,
            target_dir,
        })
    }
}

/// Points out a `binary` older than its `sources` (directories of the workspace), which
/// `cargo bench` alone does not rebuild.
pub fn warn_if_stale(binary: &Path, sources: &[&str]) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace above {}", env!("CARGO_MANIFEST_DIR")))?;
    let built = fs::metadata(binary).and_then(|m| m.modified()).ok();
    let newest = sources
        .iter()
        .filter_map(|d| newest_mtime(&workspace.join(d)))
        .max();
    if let (Some(built), Some(newest)) = (built, newest) {
        if newest > built {
            eprintln!(
                "e2e: WARNING: {} is older than its sources; run `cargo build --release \
                 --workspace` for current numbers",
                binary.display()
            );
        }
    }
    Ok(())
}

pub fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The simulated card: the same card (state file) every time it is inserted.
pub struct SimCard<'a> {
    pub bins: &'a Binaries,
    pub work: &'a Path,
    pub state: PathBuf,
    /// The running simulator, i.e. the card is in the reader.
    pub proc: Option<Proc>,
}

impl SimCard<'_> {
    /// Starts the simulator and waits until it is connected to vpcd.
    pub fn insert(&mut self) -> Result<()> {
        let sim = Proc::spawn(
            "tessera-sim",
            Command::new(&self.bins.sim)
                .args(["piv", "--vpcd", VPCD_ADDR, "--state"])
                .arg(&self.state),
            self.work,
        )?;
        sim.wait_stdout("ready", START_TIMEOUT)?;
        self.proc = Some(sim);
        Ok(())
    }
}

pub async fn connect(address: &str) -> Result<Connection> {
    zbus::connection::Builder::address(address)?
        .build()
        .await
        .with_context(|| format!("connecting to the bench bus {address}"))
}

pub async fn peer_proxy(conn: &Connection) -> Result<PeerProxy<'static>> {
    Ok(PeerProxy::builder(conn)
        .destination(tesserad::BUS_NAME)?
        .path(tesserad::MANAGER_PATH)?
        .build()
        .await?)
}

pub fn wait_for_name(rt: &Runtime, conn: &Connection, daemon: &Proc) -> Result<()> {
    let dbus = rt.block_on(DBusProxy::new(conn))?;
    let name = BusName::try_from(tesserad::BUS_NAME)?;
    wait_for(
        START_TIMEOUT,
        daemon,
        "tesserad to own its bus name",
        || Ok(rt.block_on(dbus.name_has_owner(name.clone()))?),
    )
}

/// Waits until the daemon publishes the simulator's card at [`DEVICE_PATH`].
pub fn wait_for_device(rt: &Runtime, conn: &Connection, daemon: &Proc) -> Result<()> {
    let om = rt.block_on(async {
        ObjectManagerProxy::builder(conn)
            .destination(tesserad::BUS_NAME)?
            .path(tesserad::ROOT_PATH)?
            .build()
            .await
    })?;
    wait_for(
        START_TIMEOUT,
        daemon,
        "the card to appear on the bus",
        || {
            let objects = rt.block_on(om.get_managed_objects())?;
            Ok(objects.keys().any(|p| p.as_str() == DEVICE_PATH))
        },
    )
}

/// Polls `cond` until true; fails when `timeout` passes or `proc` exits, with its stderr.
pub fn wait_for(
    timeout: Duration,
    proc: &Proc,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if !proc.running() {
            bail!(
                "{} exited while waiting for {what}; its stderr:\n{}",
                proc.name,
                proc.stderr_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "no {what} within {timeout:?} (last error: {}); {} stderr:\n{}",
                last.map_or_else(|| "none".into(), |e| format!("{e:#}")),
                proc.name,
                proc.stderr_tail()
            );
        }
        thread::sleep(POLL);
    }
}

pub fn write_bus_config(work: &Path) -> Result<PathBuf> {
    let path = work.join("bus.conf");
    fs::write(&path, common::bus_config(&work.join("bus")))?;
    Ok(path)
}

/// A system-type bus, as the PAM module meets it: the stock system-bus configuration with the
/// shipped policy and the logind mock's (the tests' `system_stack`).
pub fn write_system_bus_config(work: &Path) -> Result<PathBuf> {
    let path = work.join("bus.conf");
    fs::write(
        &path,
        common::system_stack::system_bus_config(&work.join("bus")),
    )?;
    Ok(path)
}

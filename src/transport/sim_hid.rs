//! The simulated-HID device source (`[device] simulated_hid_dir`): each Unix stream socket in the
//! directory is a simulated FIDO key plugged in (`tessera-sim fido --hid-socket`), each message on
//! it exactly one 64-byte HID report without report ID, both ways. The directory is watched with
//! inotify; a socket that appears is connected to and reported [`DeviceEvent::Added`] with
//! [`Transport::Sim`] and the socket path as location; its file deleted, or the simulator hanging
//! up, is [`DeviceEvent::Removed`]. Nothing wakes up while nothing changes.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::transport::events::{AddedDevice, DeviceConnection, DeviceEvent, DeviceKind, Transport};
use crate::transport::{HidTransport, HID_REPORT_LEN};
use crate::{Error, Result};

/// Connection attempts to a socket that just appeared: the simulator binds before it listens, and
/// a connect in between is refused.
const CONNECT_ATTEMPTS: u32 = 20;
const CONNECT_PAUSE: Duration = Duration::from_millis(25);

/// A write to a simulator that stopped reading fails after this long rather than hanging the
/// device worker.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Watches the simulated-HID directory until dropped.
pub struct SimHidSource {
    task: JoinHandle<()>,
}

impl SimHidSource {
    /// Starts watching `dir` on the current Tokio runtime; events go to `events`: an Added for
    /// each socket present, then [`DeviceEvent::EnumerationComplete`], then the changes.
    ///
    /// Errors: no Tokio runtime, or the directory cannot be watched (missing, unreadable): it was
    /// configured, so a typo is said at start rather than leaving the keys silently absent.
    pub fn start(dir: &Path, events: UnboundedSender<DeviceEvent>) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Internal("the simulated-HID source needs a Tokio runtime".into())
        })?;
        let inotify = Inotify::init()?;
        inotify
            .watches()
            .add(
                dir,
                WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF,
            )
            .map_err(|e| {
                Error::Config(format!(
                    "[device] simulated_hid_dir {}: cannot watch it: {e}",
                    dir.display()
                ))
            })?;
        let inotify = {
            let _in_runtime = runtime.enter();
            register(inotify, Interest::READABLE)?
        };
        let dir = dir.to_path_buf();
        let task = runtime.spawn(watch(dir, inotify, events));
        Ok(SimHidSource { task })
    }
}

impl Drop for SimHidSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A present simulated key: its hang-up watcher, and which connection it is (a socket removed and
/// created again between two events is another one).
struct Present {
    generation: u64,
    hangup: JoinHandle<()>,
}

/// The source's state, owned by its task.
struct Watcher {
    present: HashMap<PathBuf, Present>,
    generation: u64,
    events: UnboundedSender<DeviceEvent>,
    hangups: UnboundedSender<(PathBuf, u64)>,
}

async fn watch(dir: PathBuf, mut inotify: AsyncFd<Inotify>, events: UnboundedSender<DeviceEvent>) {
    let (hangups, mut hung_up): (_, UnboundedReceiver<(PathBuf, u64)>) = mpsc::unbounded_channel();
    let mut w = Watcher {
        present: HashMap::new(),
        generation: 0,
        events,
        hangups,
    };
    // Watching began before the scan, so a socket created meanwhile is seen by one or both (and
    // added once).
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                w.appeared(path).await;
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list the simulated-HID directory: {e}")
        }
    }
    let _ = w.events.send(DeviceEvent::EnumerationComplete {
        transport: Transport::Sim,
    });
    let mut buffer = [0u8; 4096];
    loop {
        tokio::select! {
            ready = inotify.readable_mut() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!("the simulated-HID watch failed: {e}; no more simulated keys");
                        break;
                    }
                };
                let changes: Vec<(EventMask, PathBuf)> =
                    match guard.try_io(|fd| fd.get_mut().read_events(&mut buffer).map(|evs| {
                        evs.map(|ev| (ev.mask, dir.join(ev.name.unwrap_or_default())))
                            .collect()
                    })) {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            tracing::warn!("reading the simulated-HID watch failed: {e}");
                            break;
                        }
                        // Not readable after all: wait again.
                        Err(_would_block) => continue,
                    };
                for (mask, path) in changes {
                    if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                        tracing::warn!(dir = %dir.display(), "the simulated-HID directory went away");
                        w.remove_all();
                        return;
                    }
                    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                        w.appeared(path).await;
                    } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                        w.gone(&path, None);
                    }
                }
            }
            Some((path, generation)) = hung_up.recv() => w.gone(&path, Some(generation)),
        }
    }
}

impl Watcher {
    /// A file appeared at `path`: if it is a socket that takes a connection, a key is plugged in.
    async fn appeared(&mut self, path: PathBuf) {
        if self.present.contains_key(&path) {
            return;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {}
            _ => return,
        }
        let stream = match connect(&path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(socket = %path.display(), "cannot connect to the simulated key: {e}");
                return;
            }
        };
        let hangup = match stream.try_clone().map(OwnedFd::from).and_then(watch_hangup) {
            Ok(wait) => {
                self.generation += 1;
                let (generation, tx, p) = (self.generation, self.hangups.clone(), path.clone());
                tokio::spawn(async move {
                    wait.await;
                    let _ = tx.send((p, generation));
                })
            }
            Err(e) => {
                tracing::warn!(socket = %path.display(), "cannot watch the simulated key: {e}");
                return;
            }
        };
        self.present.insert(
            path.clone(),
            Present {
                generation: self.generation,
                hangup,
            },
        );
        tracing::debug!(socket = %path.display(), "simulated key plugged in");
        let _ = self.events.send(DeviceEvent::Added(AddedDevice {
            location: path.to_string_lossy().into_owned(),
            kind: DeviceKind::SecurityKey,
            transport: Transport::Sim,
            contactless: false,
            // No count survives a restart of the daemon: a session of a simulated key is never
            // confirmed by a later start, as a swapped key could not be told apart.
            event_count: 0,
            source_instance: None,
            connection: DeviceConnection::Hid(Box::new(SocketHid::new(stream))),
        }));
    }

    /// The key at `path` left (its file is gone, or connection `generation` hung up).
    fn gone(&mut self, path: &Path, generation: Option<u64>) {
        let Some(p) = self.present.get(path) else {
            return;
        };
        if generation.is_some_and(|g| g != p.generation) {
            return;
        }
        if let Some(p) = self.present.remove(path) {
            p.hangup.abort();
        }
        tracing::debug!(socket = %path.display(), "simulated key pulled out");
        let _ = self.events.send(DeviceEvent::Removed {
            transport: Transport::Sim,
            location: path.to_string_lossy().into_owned(),
        });
    }

    fn remove_all(&mut self) {
        let paths: Vec<PathBuf> = self.present.keys().cloned().collect();
        for path in paths {
            self.gone(&path, None);
        }
    }
}

/// Connects to the socket, retrying while it is not listening yet.
async fn connect(path: &Path) -> io::Result<UnixStream> {
    let mut attempt = 0;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == io::ErrorKind::ConnectionRefused
                    && attempt + 1 < CONNECT_ATTEMPTS =>
            {
                attempt += 1;
                tokio::time::sleep(CONNECT_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Completes once the peer of `fd` (a duplicate of the key's connection) has hung up.
///
/// Waits for write readiness, not read readiness: a hang-up (EPOLLHUP) is reported with either,
/// but reports waiting to be read would make a read-readiness wait return again and again, and
/// the reports belong to the device worker. Write readiness comes back only when the simulator
/// reads what Tessera sent, so an idle key wakes nothing.
fn watch_hangup(fd: OwnedFd) -> io::Result<impl std::future::Future<Output = ()> + Send> {
    let fd = register(fd, Interest::WRITABLE)?;
    Ok(async move {
        loop {
            match fd.writable().await {
                Ok(guard) if guard.ready().is_write_closed() => return,
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => return,
            }
        }
    })
}

/// Registers `fd` with the runtime's reactor.
///
/// Tokio 1.54 deprecates the safe constructor for types that only lend a descriptor they do not
/// own (it could be closed and reused while registered; tokio PR 8587), and its replacement is
/// `unsafe`, which this crate forbids. Both types registered here own their descriptor and move
/// into the `AsyncFd`, which deregisters before dropping them: the case the constructor is sound
/// for.
#[allow(deprecated)]
fn register<T: std::os::fd::AsRawFd + Into<OwnedFd>>(
    fd: T,
    interest: Interest,
) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(fd, interest)
}

/// A [`HidTransport`] over a simulated key's Unix socket: exactly [`HID_REPORT_LEN`] bytes per
/// report, no report ID, both ways.
pub struct SocketHid {
    stream: UnixStream,
    /// The start of a report whose rest has not arrived yet (a read that timed out mid-report).
    pending: Vec<u8>,
}

impl SocketHid {
    /// Over a connected stream.
    pub fn new(stream: UnixStream) -> Self {
        SocketHid {
            stream,
            pending: Vec::with_capacity(HID_REPORT_LEN),
        }
    }

    /// Connects to the simulated key listening at `path`.
    pub fn connect(path: &Path) -> Result<Self> {
        Ok(Self::new(UnixStream::connect(path)?))
    }
}

impl HidTransport for SocketHid {
    fn write_report(&mut self, report: &[u8; HID_REPORT_LEN]) -> Result<()> {
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        self.stream.write_all(report).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                what: "the simulated key did not take the report",
                after: WRITE_TIMEOUT,
            },
            _ => removed_or(e),
        })
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; HID_REPORT_LEN]>> {
        let until = Instant::now() + timeout;
        while self.pending.len() < HID_REPORT_LEN {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A zero timeout would mean "block forever" to the socket; never ask for less than 1 ms.
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut buf = [0u8; HID_REPORT_LEN];
            let want = HID_REPORT_LEN - self.pending.len();
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => return Err(Error::DeviceRemoved),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(removed_or(e)),
            }
        }
        let mut report = [0u8; HID_REPORT_LEN];
        report.copy_from_slice(&self.pending[..HID_REPORT_LEN]);
        self.pending.clear();
        Ok(Some(report))
    }
}

/// A broken connection is the key pulled out; anything else an I/O error.
fn removed_or(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected
        | io::ErrorKind::UnexpectedEof => Error::DeviceRemoved,
        _ => Error::Io(e),
    }
}

#[cfg(test)]
#[path = "sim_hid_test.rs"]
mod tests;

//! The simulated key as a HID device on a Unix stream socket (`--hid-socket PATH`): each message is
//! exactly one 64-byte HID report, without a report ID, in both directions. Several connections at
//! once are several opens of one hidraw node: they share the key's channels ([`Router`]), and each
//! answer goes to the connection that sent the request.
//!
//! Threads: one acceptor, one reader per connection, and the caller's thread running the router;
//! the key itself runs on its own thread ([`KeyHandle`]). Readers and the key feed the router
//! through one channel, so the CTAPHID state machine has a single owner.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ctaphid::{Action, ConnId, Report, Router, REPORT_LEN};
use super::presence::{KeyHandle, Outcome};
use super::touch::bind_private;

/// How often the router looks at the stop flag when nothing happens.
const POLL: Duration = Duration::from_millis(50);
/// A client that does not read its answers for this long is dropped (the key must not hang on it).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

enum Event {
    Opened(ConnId, UnixStream),
    Report(ConnId, Report),
    Closed(ConnId),
    Done(u64, Outcome),
}

/// Listens on `path` (0600, a stale socket removed first), calls `ready` once listening, and serves
/// the key until `stop` is set (by a signal or a fault that pulls the key out). On return every
/// connection is closed and the socket file is gone: the key is unplugged.
pub fn serve(
    path: &Path,
    key: &KeyHandle,
    stop: &Arc<AtomicBool>,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let listener = bind_private(path)?;
    let _unlink = RemoveOnDrop(path.to_owned());
    listener.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        let stop = Arc::clone(stop);
        std::thread::Builder::new()
            .name("hid-accept".into())
            .spawn(move || accept_loop(&listener, &tx, &stop))?;
    }
    ready();
    let mut router = Router::new(key.speaks_cbor(), key.response_fault());
    let mut conns: HashMap<ConnId, UnixStream> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = router
            .next_deadline()
            .map_or(POLL, |d| d.saturating_duration_since(now).min(POLL));
        let actions = match rx.recv_timeout(wait) {
            Ok(Event::Opened(id, stream)) => {
                conns.insert(id, stream);
                Vec::new()
            }
            Ok(Event::Report(id, report)) => router.report(id, &report, Instant::now()),
            Ok(Event::Closed(id)) => {
                conns.remove(&id);
                router.closed(id);
                Vec::new()
            }
            Ok(Event::Done(job, outcome)) => router.done(job, outcome),
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut actions = actions;
        actions.extend(router.tick(Instant::now()));
        for action in actions {
            match action {
                Action::Send(id, report) => {
                    let failed = conns
                        .get_mut(&id)
                        .is_some_and(|stream| stream.write_all(&report).is_err());
                    if failed {
                        tracing::info!("HID connection {id} does not take reports; dropping it");
                        if let Some(stream) = conns.remove(&id) {
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                        router.closed(id);
                    }
                }
                Action::Run {
                    job,
                    request,
                    activity,
                } => {
                    let tx = tx.clone();
                    if !key.submit(request, activity, move |outcome| {
                        let _ = tx.send(Event::Done(job, outcome));
                    }) {
                        // The key thread is gone: nothing more to serve.
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    // Unplugged: every open of the node sees end of file.
    for stream in conns.values() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    Ok(())
}

fn accept_loop(
    listener: &std::os::unix::net::UnixListener,
    tx: &mpsc::Sender<Event>,
    stop: &AtomicBool,
) {
    let mut next_id: ConnId = 1;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let id = next_id;
                next_id += 1;
                if let Err(e) = start_connection(id, stream, tx) {
                    tracing::warn!("HID connection {id}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(e) => {
                tracing::warn!("HID socket accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    // Connections that slipped in after the stop are closed with the listener.
}

fn start_connection(id: ConnId, stream: UnixStream, tx: &mpsc::Sender<Event>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut reader = stream.try_clone()?;
    // Opened before the first report: the router's answers need the writer.
    let _ = tx.send(Event::Opened(id, stream));
    let tx = tx.clone();
    std::thread::Builder::new()
        .name(format!("hid-conn-{id}"))
        .spawn(move || {
            let mut report = [0u8; REPORT_LEN];
            // A partial report at the end of the stream is dropped with the connection.
            while reader.read_exact(&mut report).is_ok() {
                if tx.send(Event::Report(id, report)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Closed(id));
        })?;
    Ok(())
}

/// Removes the socket file when the server ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

//! Where the simulated key's touches come from (`--touch auto|delay:MS|manual`) and the control socket
//! (`--control SOCKET`) through which `tessera-sim touch` and `tessera-sim power-cycle` reach a
//! running key.
//!
//! The control protocol is one line per request on a Unix stream socket (mode 0600): `touch\n` is one
//! touch, answered `ok\n` once a request of the key has taken it (at once if one is waiting; a
//! touch nothing asks for within 30 s is withdrawn and answered `error …`, as touching an idle key
//! does nothing); `power-cycle\n` replugs the key (FidoKey::power_cycle) and answers `ok\n`;
//! anything else answers `error unknown request\n`. In `auto` and `delay` modes a touch is answered
//! `ok\n` at once and changes nothing.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

// Poison-tolerant: the state is counters, which a thread that panicked cannot leave inconsistent.
use tessera::locks::lock as lock_state;

/// How the simulated user touches the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TouchMode {
    /// Touched the moment the key asks (and, over NFC, the tap itself).
    #[default]
    Auto,
    /// Touched this long after the key starts asking.
    Delay(Duration),
    /// Touched only when `tessera-sim touch --control SOCKET` says so: one touch per request line,
    /// taken by the request waiting for it (or the next one to ask within 30 s).
    Manual,
}

impl FromStr for TouchMode {
    type Err = String;

    /// `auto`, `delay:MILLIS` or `manual`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TouchMode::Auto),
            "manual" => Ok(TouchMode::Manual),
            _ => {
                let ms = s
                    .strip_prefix("delay:")
                    .ok_or_else(|| format!("unknown touch mode {s:?} (auto, delay:MS, manual)"))?;
                let ms: u64 = ms.parse().map_err(|e| format!("bad delay in {s:?}: {e}"))?;
                Ok(TouchMode::Delay(Duration::from_millis(ms)))
            }
        }
    }
}

/// Touches shared by the key thread (which consumes them) and the control socket (which adds them).
#[derive(Debug, Clone)]
pub struct TouchSource {
    mode: TouchMode,
    inner: Arc<(Mutex<TouchState>, Condvar)>,
}

#[derive(Debug, Default)]
struct TouchState {
    /// Manual touches given and not yet taken.
    pending: u32,
    /// Manual touches taken so far, so a giver can tell its touch was.
    taken: u64,
    /// Manual touches given so far.
    given: u64,
    /// Delay mode, U2F: when the key first asked without being touched (the polling client's start).
    asked_since: Option<Instant>,
}

/// Outcome of [`TouchSource::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Touched,
    Cancelled,
    TimedOut,
}

impl TouchSource {
    pub fn new(mode: TouchMode) -> TouchSource {
        TouchSource {
            mode,
            inner: Arc::new((Mutex::new(TouchState::default()), Condvar::new())),
        }
    }

    pub fn mode(&self) -> TouchMode {
        self.mode
    }

    /// Gives one touch and waits until a request takes it; false (the touch withdrawn) when none
    /// does within `timeout`. Manual mode only: otherwise no touch is ever missing, and this returns
    /// true at once.
    pub fn touch(&self, timeout: Duration) -> bool {
        if self.mode != TouchMode::Manual {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.inner;
        let mut state = lock_state(lock);
        state.pending += 1;
        state.given += 1;
        let mine = state.given;
        cvar.notify_all();
        // Touches are taken in the order given, so mine is taken once `taken` reaches it.
        while state.taken < mine {
            let now = Instant::now();
            if now >= deadline {
                state.pending = state.pending.saturating_sub(1);
                state.given -= 1;
                return false;
            }
            state = match cvar.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Waits for a touch (CTAP2 user presence) until `cancel` is set or `timeout` passes; checks
    /// `cancel` at least every 20 ms.
    pub fn wait(&self, cancel: &AtomicBool, timeout: Duration) -> Waited {
        const STEP: Duration = Duration::from_millis(20);
        let start = Instant::now();
        let (lock, cvar) = &*self.inner;
        let mut state = lock_state(lock);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Waited::Cancelled;
            }
            let elapsed = start.elapsed();
            match self.mode {
                TouchMode::Auto => return Waited::Touched,
                TouchMode::Delay(d) if elapsed >= d => return Waited::Touched,
                TouchMode::Manual if state.pending > 0 => {
                    take(&mut state);
                    cvar.notify_all();
                    return Waited::Touched;
                }
                _ => {}
            }
            if elapsed >= timeout {
                return Waited::TimedOut;
            }
            state = match cvar.wait_timeout(state, STEP) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// U2F's check-without-waiting: whether a touch is there now, consumed if so (U2F raw message
    /// formats §4.3, §5.1: the client polls while the key answers 6985).
    pub fn touched_now(&self) -> bool {
        let (lock, cvar) = &*self.inner;
        let mut state = lock_state(lock);
        match self.mode {
            TouchMode::Auto => true,
            TouchMode::Manual => {
                if state.pending > 0 {
                    take(&mut state);
                    cvar.notify_all();
                    true
                } else {
                    false
                }
            }
            TouchMode::Delay(d) => {
                let since = *state.asked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= d {
                    state.asked_since = None;
                    true
                } else {
                    false
                }
            }
        }
    }
}

fn take(state: &mut TouchState) {
    state.pending -= 1;
    state.taken += 1;
}

/// A request on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Touch,
    PowerCycle,
}

impl ControlRequest {
    fn line(self) -> &'static str {
        match self {
            ControlRequest::Touch => "touch",
            ControlRequest::PowerCycle => "power-cycle",
        }
    }
}

/// The control socket's listening end; the socket file is removed when this is dropped.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (a stale socket there is removed first; mode 0600) and serves it on a thread until
    /// `stop` is set. `handle` runs each request and says whether it worked.
    pub fn start(
        path: &Path,
        stop: Arc<AtomicBool>,
        handle: impl Fn(ControlRequest) -> Result<(), String> + Send + Sync + 'static,
    ) -> io::Result<ControlServer> {
        let listener = bind_private(path)?;
        listener.set_nonblocking(true)?;
        let handle = Arc::new(handle);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let handle = Arc::clone(&handle);
                            // One thread per client: a client that never sends its line must not
                            // block the next one.
                            let _ = std::thread::Builder::new()
                                .name("control-client".into())
                                .spawn(move || serve_client(stream, &*handle));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tracing::warn!("control socket: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(ControlServer {
            path: path.to_owned(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_client(stream: UnixStream, handle: &dyn Fn(ControlRequest) -> Result<(), String>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = write_half;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let request = match line.trim() {
            "touch" => Some(ControlRequest::Touch),
            "power-cycle" => Some(ControlRequest::PowerCycle),
            _ => None,
        };
        let answer = match request.map(handle) {
            Some(Ok(())) => "ok\n".to_owned(),
            Some(Err(e)) => format!("error {e}\n"),
            None => "error unknown request\n".to_owned(),
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The client side (`tessera-sim touch`, `tessera-sim power-cycle`): sends one request and waits
/// for its answer.
pub fn send_control(path: &Path, request: ControlRequest) -> anyhow::Result<()> {
    use anyhow::Context;
    let stream = UnixStream::connect(path)
        .with_context(|| format!("connecting to the key's control socket {}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = stream.try_clone()?;
    out.write_all(format!("{}\n", request.line()).as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the key's answer")?;
    match answer.trim_end() {
        "ok" => Ok(()),
        "" => anyhow::bail!("the key closed the control socket without answering"),
        other => anyhow::bail!("the key answered {other:?}"),
    }
}

/// Binds a Unix stream socket at `path` readable and writable by the owner only, removing a stale
/// socket file first (a key that was killed leaves one behind). Refuses to remove anything that is
/// not a socket.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Between bind and chmod the socket is as open as the umask allows; the directories the tests and
    // the daemon use are private already, and this narrows it for everyone else.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn parses_touch_modes() {
        assert_eq!("auto".parse(), Ok(TouchMode::Auto));
        assert_eq!("manual".parse(), Ok(TouchMode::Manual));
        assert_eq!(
            "delay:250".parse(),
            Ok(TouchMode::Delay(Duration::from_millis(250)))
        );
        assert!("delay:x".parse::<TouchMode>().is_err());
        assert!("sometimes".parse::<TouchMode>().is_err());
    }

    /// Gives a touch on another thread; its result (taken or not) comes back on join.
    fn touch_later(source: &TouchSource, timeout: Duration) -> std::thread::JoinHandle<bool> {
        let source = source.clone();
        std::thread::spawn(move || source.touch(timeout))
    }

    #[test]
    fn manual_touches_are_taken_by_requests_and_cancel_wins() {
        let source = TouchSource::new(TouchMode::Manual);
        let cancel = AtomicBool::new(false);
        assert_eq!(
            source.wait(&cancel, Duration::from_millis(30)),
            Waited::TimedOut
        );
        assert!(!source.touched_now());
        // A touch before the request waits for it; the giver learns it was taken.
        let giver = touch_later(&source, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            source.wait(&cancel, Duration::from_secs(1)),
            Waited::Touched
        );
        assert!(giver.join().unwrap());
        // U2F's check takes it too.
        let giver = touch_later(&source, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !source.touched_now() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(giver.join().unwrap());
        assert!(!source.touched_now());
        // A touch nobody asks for is withdrawn: it does not satisfy a later request.
        assert!(!source.touch(Duration::from_millis(30)));
        assert_eq!(
            source.wait(&cancel, Duration::from_millis(30)),
            Waited::TimedOut
        );
        cancel.store(true, Ordering::Relaxed);
        assert_eq!(
            source.wait(&cancel, Duration::from_secs(1)),
            Waited::Cancelled
        );
    }

    #[test]
    fn touches_are_no_ops_when_not_manual() {
        let source = TouchSource::new(TouchMode::Auto);
        assert!(source.touch(Duration::ZERO));
        assert!(source.touched_now());
    }

    #[test]
    fn delay_touches_after_the_delay() {
        let source = TouchSource::new(TouchMode::Delay(Duration::from_millis(60)));
        let cancel = AtomicBool::new(false);
        let start = Instant::now();
        assert_eq!(
            source.wait(&cancel, Duration::from_secs(1)),
            Waited::Touched
        );
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert!(!source.touched_now());
        std::thread::sleep(Duration::from_millis(70));
        assert!(source.touched_now());
    }

    #[test]
    fn control_socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let source = TouchSource::new(TouchMode::Manual);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = source.clone();
        let server = ControlServer::start(&path, Arc::clone(&stop), move |r| match r {
            ControlRequest::Touch => {
                if s2.touch(Duration::from_secs(5)) {
                    Ok(())
                } else {
                    Err("nothing asked for a touch".into())
                }
            }
            ControlRequest::PowerCycle => Err("no key".into()),
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let waiter = {
            let source = source.clone();
            std::thread::spawn(move || source.wait(&AtomicBool::new(false), Duration::from_secs(5)))
        };
        send_control(&path, ControlRequest::Touch).unwrap();
        assert_eq!(waiter.join().unwrap(), Waited::Touched);
        let err = send_control(&path, ControlRequest::PowerCycle).unwrap_err();
        assert!(err.to_string().contains("no key"), "{err}");
        stop.store(true, Ordering::Relaxed);
        drop(server);
        assert!(!path.exists());
    }
}

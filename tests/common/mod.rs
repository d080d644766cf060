//! Shared harness for Tessera's end-to-end tests: real processes, a private D-Bus, the machine's pcscd.
//!
//! Each end-to-end test file says `mod common;`. What lives here: finding the workspace binaries
//! ([`bin`]), process guards that capture output and never outlive the test ([`Child`], [`run`]), a
//! private `dbus-daemon` ([`Bus`]), exclusive use of pcscd and its two vpcd readers ([`pcsc_lock`]) and
//! throw-away Unix accounts ([`test_user`]); what they change on the machine is put back when they
//! end, and recorded for `scripts/test-cleanup.sh` in case a test is killed ([`restore`]). The
//! Tessera stack built from these (bus, simulator, daemon and CLI helpers) is [`stack`]; simulated
//! FIDO keys plugged into it are [`fido`]. Assertions about Tessera itself live in the test files.
//!
//! Several test binaries (and other developers' runs) share one machine, so everything that touches a
//! machine-wide resource takes a cross-process `flock` first.

// A harness that cannot set up its world must stop the test with a clear message, so panicking is
// its error handling; and not every test file uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fido;
pub mod logind;
pub mod pam;
pub mod pam_session;
pub mod restore;
pub mod stack;
pub mod system_stack;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User};

/// Machine-wide lock serialising every user of pcscd and the vpcd readers (tests and `make demo`).
pub const PCSC_LOCK_PATH: &str = "/tmp/tessera-e2e-pcsc.lock";
/// The first vpcd reader; its card side is TCP 127.0.0.1:35963.
pub const VPCD_READER_0: &str = "Virtual PCD 00 00";
/// The second vpcd reader; its card side is TCP 127.0.0.1:35964.
pub const VPCD_READER_1: &str = "Virtual PCD 00 01";
/// Card-side address of [`VPCD_READER_0`], for `tessera-sim piv --vpcd`.
pub const VPCD_ADDR_0: &str = "127.0.0.1:35963";
/// Card-side address of [`VPCD_READER_1`].
pub const VPCD_ADDR_1: &str = "127.0.0.1:35964";

const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";
const PCSCD_LOG: &str = "/tmp/tessera-e2e-pcscd.log";
const USERADD_LOCK_PATH: &str = "/tmp/tessera-e2e-useradd.lock";
/// How long a test waits for another test (or the demo) to release pcscd before giving up.
const PCSC_LOCK_TIMEOUT: Duration = Duration::from_secs(900);
const PCSCD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace period between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it is true (returns `true`) or `timeout` passes (returns `false`).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Path of a workspace binary (`tesserad`, `tessera`, `tessera-sim`) of the profile the test was built
/// with. Integration tests only get `CARGO_BIN_EXE_*` for their own package, so look next to the test
/// executable: `target/<profile>/deps/<test>` → `target/<profile>/<name>`. For the same reason
/// `cargo test` does not rebuild them: `make test` runs `cargo build --workspace` first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let path = profile_dir.join(name);
    if !path.is_file() {
        panic!(
            "{} not found: run `cargo build --workspace` first (the e2e tests use the built binaries)",
            path.display()
        );
    }
    path
}

/// A temporary directory other users can traverse (mode 0755), so a client run under a test user
/// reaches sockets and files in it. Removed when the test ends, failed or not (the guards of the
/// processes print their logs when a test fails); kept with `TESSERA_KEEP_TEST_FILES=1`. Its name,
/// `tessera-e2e-<pid>-…`, lets `scripts/test-cleanup.sh` remove it once a killed test's process is
/// gone.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tessera-e2e-{}-", std::process::id()))
            .tempdir()
            .expect("create temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("TESSERA_KEEP_TEST_FILES").is_some_and(|v| v == "1") {
            self.0.disable_cleanup(true);
            eprintln!("test files kept in {}", self.0.path().display());
        } else if thread::panicking() {
            eprintln!(
                "removing test files {} (TESSERA_KEEP_TEST_FILES=1 keeps them)",
                self.0.path().display()
            );
        }
    }
}

/// Output lines of a [`Child`], appended by reader threads and consumed by `wait_for_*`.
#[derive(Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    stdout_closed: bool,
    stderr_closed: bool,
}

#[derive(Clone, Copy, Debug)]
enum Stream {
    Stdout,
    Stderr,
}

/// A spawned process that is killed when the guard drops. Its stdout and stderr are captured line by
/// line; stderr is also copied to `<dir>/<name>.stderr.log`, and printed if the test panics.
pub struct Child {
    name: String,
    process: std::process::Child,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    log_path: PathBuf,
    /// Index of the next stdout / stderr line `wait_for_*` looks at.
    cursor: [usize; 2],
    status: Option<ExitStatus>,
}

impl Child {
    /// Spawns `cmd` with stdin closed. `name` labels messages and the log file in `dir`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Child {
        // The log first: a panic after spawning would leave the process running.
        let log_path = dir.join(format!("{name}.stderr.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        let lines = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = process.stderr.take().expect("piped stderr");
        spawn_reader(stdout, Stream::Stdout, None, Arc::clone(&lines));
        spawn_reader(stderr, Stream::Stderr, Some(log), Arc::clone(&lines));
        Child {
            name: name.to_owned(),
            process,
            lines,
            log_path,
            cursor: [0, 0],
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The file holding everything the process wrote to stderr so far.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Waits for the next stdout line containing `substr` and returns it; lines before it are skipped
    /// and later calls start after it. Panics (with the stderr log) on timeout or if stdout closes.
    pub fn wait_for_line(&mut self, substr: &str, timeout: Duration) -> String {
        self.wait_for(Stream::Stdout, substr, timeout)
    }

    /// Like [`Child::wait_for_line`], on stderr (where the daemons log).
    pub fn wait_for_stderr_line(&mut self, substr: &str, timeout: Duration) -> String {
        self.wait_for(Stream::Stderr, substr, timeout)
    }

    /// All stdout lines captured so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().stdout.clone()
    }

    /// Everything captured from stderr so far, one line per line.
    pub fn stderr_text(&self) -> String {
        self.lines.0.lock().unwrap().stderr.join("\n")
    }

    /// Returns the exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.process.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_wait().is_some());
        self.status
    }

    /// Sends `sig` without waiting (e.g. SIGTERM to the simulator to "pull the card").
    pub fn signal(&self, sig: Signal) {
        // The process may already have exited; only its exit status matters to the caller then.
        let _ = signal::kill(pid_of(self.process.id()), sig);
    }

    /// SIGTERM, then SIGKILL if it is still running after 5 s; returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_exit(TERM_GRACE) {
            return status;
        }
        eprintln!(
            "{} ignored SIGTERM for {TERM_GRACE:?}; sending SIGKILL",
            self.name
        );
        let _ = self.process.kill();
        let status = self.process.wait().expect("wait after SIGKILL");
        self.status = Some(status);
        status
    }

    fn wait_for(&mut self, stream: Stream, substr: &str, timeout: Duration) -> String {
        let idx = stream as usize;
        let deadline = Instant::now() + timeout;
        let (mutex, cvar) = &*self.lines;
        let mut lines = mutex.lock().unwrap();
        loop {
            let (buf, closed) = match stream {
                Stream::Stdout => (&lines.stdout, lines.stdout_closed),
                Stream::Stderr => (&lines.stderr, lines.stderr_closed),
            };
            if let Some(pos) = buf
                .iter()
                .skip(self.cursor[idx])
                .position(|l| l.contains(substr))
            {
                let found = self.cursor[idx] + pos;
                self.cursor[idx] = found + 1;
                return buf[found].clone();
            }
            let now = Instant::now();
            if closed || now >= deadline {
                let why = if closed { "closed" } else { "timed out" };
                let stderr = lines.stderr.join("\n");
                drop(lines);
                panic!(
                    "{}: waiting for {stream:?} line containing {substr:?}: {why} after {timeout:?}\n\
                     --- {} stderr ---\n{stderr}\n--- end ---",
                    self.name, self.name
                );
            }
            lines = cvar.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- {} stderr ({}) ---\n{}\n--- end ---",
                self.name,
                self.log_path.display(),
                self.stderr_text()
            );
        }
    }
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    mut log: Option<File>,
    lines: Arc<(Mutex<Lines>, Condvar)>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        // Read bytes, not `lines()`: a stray non-UTF-8 byte must not end the capture.
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            if let Some(log) = log.as_mut() {
                let _ = log.write_all(&buf);
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            buf.clear();
            let (mutex, cvar) = &*lines;
            let mut l = mutex.lock().unwrap();
            match stream {
                Stream::Stdout => l.stdout.push(line),
                Stream::Stderr => l.stderr.push(line),
            }
            cvar.notify_all();
        }
        let (mutex, cvar) = &*lines;
        let mut l = mutex.lock().unwrap();
        match stream {
            Stream::Stdout => l.stdout_closed = true,
            Stream::Stderr => l.stderr_closed = true,
        }
        cvar.notify_all();
    });
}

/// Runs `cmd` to completion with `stdin` as its input and returns its output; kills it and panics if
/// it takes longer than `timeout`. For one-shot CLI calls such as `tessera … --pin-stdin`.
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    // A writer thread, so a process that does not read its stdin cannot block us.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let mut status = None;
    if !wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {timeout:?}");
    }
    let _ = writer.join();
    Output {
        status: status.expect("exited"),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A process's stdout, lossily decoded.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process's stderr, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A private `dbus-daemon` on `unix:path=<tmp>/bus`, killed on drop.
///
/// The policy lets every uid connect, own names, send and receive: tests run clients as other users
/// to check the daemon's own authorisation, so the bus must not be the one saying no.
pub struct Bus {
    // Field order is drop order: stop the daemon before its directory goes.
    child: Child,
    address: String,
    dir: TestDir,
}

impl Bus {
    pub fn start() -> Bus {
        Bus::start_with(bus_config)
    }

    /// A bus whose configuration `render` writes for the socket path it is given (e.g. a
    /// system-type bus, [`system_stack`]).
    pub fn start_with(render: impl FnOnce(&Path) -> String) -> Bus {
        let dir = TestDir::new();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        fs::write(&config, render(&socket)).expect("write bus config");
        let mut child = Child::spawn(
            "dbus-daemon",
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .args(["--nofork", "--print-address"]),
            dir.path(),
        );
        let address = child
            .wait_for_line("unix:", Duration::from_secs(10))
            .trim()
            .to_owned();
        Bus {
            child,
            address,
            dir,
        }
    }

    /// The bus address, for `--bus` / `DBUS_SESSION_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether some connection owns `name` (asked with `dbus-send`, not our own D-Bus code).
    pub fn has_owner(&self, name: &str) -> bool {
        has_owner(&self.address, name)
    }

    /// Waits until `name` is owned (e.g. `org.tessera.Tessera1` once tesserad is up); panics otherwise.
    pub fn wait_for_name(&self, name: &str, timeout: Duration) {
        if !wait_until(timeout, || self.has_owner(name)) {
            panic!("{name} did not appear on the test bus within {timeout:?}");
        }
    }
}

/// The private bus's configuration: every uid may connect, own names, send and receive.
pub fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Exclusive use of pcscd and the vpcd readers for one test; see [`pcsc_lock`].
pub struct PcscGuard {
    /// The pcscd this guard started (and stops on drop); `None` if one was already running.
    pcscd: Option<std::process::Child>,
    /// The machine's pcscd that [`PcscGuard::restart_pcscd`] stopped, started again on drop.
    machine: Option<restore::MachinePcscd>,
    // Dropped after `Drop::drop` has stopped our pcscd, so the next holder never sees a dying one.
    _lock: Flock<File>,
}

/// Takes the machine-wide pcsc lock (waiting up to 15 min for other tests or `make demo`) and makes
/// sure pcscd is running with both vpcd readers. A pcscd started here is stopped when the guard
/// drops; one that was already running is left alone. What a killed previous holder left behind
/// (its own pcscd running, the machine's stopped) is put right first.
pub fn pcsc_lock() -> PcscGuard {
    let lock = lock_file(PCSC_LOCK_PATH, PCSC_LOCK_TIMEOUT);
    let mut guard = PcscGuard {
        pcscd: None,
        machine: None,
        _lock: lock,
    };
    recover_pcscd();
    if pcscd_pids().is_empty() {
        guard.start_pcscd();
    } else {
        wait_for_readers(None);
    }
    guard
}

impl PcscGuard {
    /// Whether the running pcscd is this guard's own.
    pub fn owns_pcscd(&self) -> bool {
        self.pcscd.is_some()
    }

    /// Pid of the pcscd this guard started, if it started one.
    pub fn pcscd_pid(&self) -> Option<u32> {
        self.pcscd.as_ref().map(std::process::Child::id)
    }

    /// Names of the readers pcscd reports now.
    pub fn readers(&self) -> Vec<String> {
        list_readers().unwrap_or_default()
    }

    /// Kills the running pcscd — whoever started it — and starts a new one that this guard owns (and
    /// stops on drop), for tests that check the daemon survives a pcscd restart. If the old pcscd was
    /// the machine's own, its command line is read first (and recorded, see [`restore`]) and it is
    /// started again with it when the guard drops. A supervisor that respawns pcscd would race with
    /// us; CI and this machine have none.
    pub fn restart_pcscd(&mut self) {
        self.stop_pcscd();
        let leftover = restore::harness_pcscd();
        for pid in pcscd_pids() {
            if self.machine.is_none() && Some(pid) != leftover {
                if let Some(machine) = restore::MachinePcscd::of(pid) {
                    machine.record();
                    self.machine = Some(machine);
                }
            }
        }
        kill_all_pcscd();
        self.start_pcscd();
    }

    /// Starts a pcscd with `args` that this guard does not own, as if the machine ran it, so a
    /// test can check that [`PcscGuard::restart_pcscd`] gives it back. Stops this guard's own
    /// pcscd first; the caller stops this one with [`PcscGuard::stop_every_pcscd`]. It stays in the
    /// test's process group, so interrupting the run stops it too.
    pub fn start_machine_pcscd(&mut self, args: &[&str]) {
        self.stop_pcscd();
        fs::create_dir_all("/run/pcscd").expect("create /run/pcscd");
        Command::new(pcscd_path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|mut child| thread::spawn(move || child.wait()))
            .unwrap_or_else(|e| panic!("cannot start pcscd: {e}"));
        wait_for_readers(None);
    }

    /// Stops every pcscd, this guard's and any other, and forgets the machine's: for a test that
    /// started one with [`PcscGuard::start_machine_pcscd`] and must leave none behind.
    pub fn stop_every_pcscd(&mut self) {
        self.stop_pcscd();
        self.machine = None;
        restore::MachinePcscd::forget();
        kill_all_pcscd();
    }

    fn start_pcscd(&mut self) {
        fs::create_dir_all("/run/pcscd").expect("create /run/pcscd (pcscd needs root to start)");
        let log = File::create(PCSCD_LOG).expect("create pcscd log");
        let child = Command::new(pcscd_path())
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pcscd: {e}"));
        restore::record_harness_pcscd(child.id());
        self.pcscd = Some(child);
        let pcscd = self.pcscd.as_mut();
        wait_for_readers(pcscd);
    }

    fn stop_pcscd(&mut self) {
        if let Some(mut child) = self.pcscd.take() {
            let _ = signal::kill(pid_of(child.id()), Signal::SIGTERM);
            if !wait_until(TERM_GRACE, || matches!(child.try_wait(), Ok(Some(_)))) {
                let _ = child.kill();
            }
            let _ = child.wait();
            restore::forget_harness_pcscd();
        }
    }
}

impl Drop for PcscGuard {
    fn drop(&mut self) {
        self.stop_pcscd();
        if let Some(machine) = self.machine.take() {
            restart_machine_pcscd(&machine);
        }
    }
}

/// Starts the machine's pcscd again and waits (bounded, without panicking: this runs in `Drop`)
/// until it accepts connections. On failure the record stays for `scripts/test-cleanup.sh`.
fn restart_machine_pcscd(machine: &restore::MachinePcscd) {
    match machine.start() {
        Ok(()) => {
            restore::MachinePcscd::forget();
            if !wait_until(PCSCD_START_TIMEOUT, || {
                UnixStream::connect(PCSCD_SOCKET).is_ok()
            }) {
                eprintln!("the machine's pcscd {machine:?} did not come back within {PCSCD_START_TIMEOUT:?}");
            }
        }
        Err(e) => eprintln!("cannot start the machine's pcscd {machine:?} again: {e}"),
    }
}

/// What a test killed while it held the pcsc lock left behind: its own pcscd still running (stop
/// it), the machine's pcscd not started again (start it). Called with the lock held.
fn recover_pcscd() {
    if let Some(pid) = restore::harness_pcscd() {
        if pcscd_pids().contains(&pid) {
            eprintln!("stopping pcscd {pid}, left running by a test that was killed");
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            if !wait_until(TERM_GRACE, || !pcscd_pids().contains(&pid)) {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                wait_until(TERM_GRACE, || !pcscd_pids().contains(&pid));
            }
        }
        restore::forget_harness_pcscd();
    }
    if let Some(machine) = restore::MachinePcscd::recorded() {
        if pcscd_pids().is_empty() {
            eprintln!("starting the machine's pcscd again, stopped by a test that was killed");
            restart_machine_pcscd(&machine);
        } else {
            restore::MachinePcscd::forget();
        }
    }
}

/// SIGTERM to every pcscd, SIGKILL to those still there after 5 s.
fn kill_all_pcscd() {
    for pid in pcscd_pids() {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if !wait_until(TERM_GRACE, || pcscd_pids().is_empty()) {
        for pid in pcscd_pids() {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        assert!(
            wait_until(TERM_GRACE, || pcscd_pids().is_empty()),
            "pcscd survived SIGKILL: {:?}",
            pcscd_pids()
        );
    }
}

fn pcscd_path() -> PathBuf {
    // Non-login root shells do not always have /usr/sbin in PATH.
    let sbin = PathBuf::from("/usr/sbin/pcscd");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("pcscd")
    }
}

/// Waits until pcscd accepts connections and lists the first vpcd reader. With `own` set, a pcscd
/// that exits early is reported with its log instead of waiting out the timeout.
fn wait_for_readers(mut own: Option<&mut std::process::Child>) {
    let mut last = String::from("socket not accepting connections");
    let ok = wait_until(PCSCD_START_TIMEOUT, || {
        if let Some(child) = own.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(PCSCD_LOG).unwrap_or_default();
                panic!("pcscd exited with {status} while starting:\n{log}");
            }
        }
        if UnixStream::connect(PCSCD_SOCKET).is_err() {
            return false;
        }
        match list_readers() {
            Ok(readers) if readers.iter().any(|r| r == VPCD_READER_0) => true,
            Ok(readers) => {
                last = format!("readers: {readers:?}");
                false
            }
            Err(e) => {
                last = format!("pcsc: {e}");
                false
            }
        }
    });
    if !ok {
        panic!(
            "pcscd did not show reader {VPCD_READER_0:?} within {PCSCD_START_TIMEOUT:?} ({last}); \
             is vsmartcard-vpcd installed (scripts/install-deps.sh)? pcscd log: {PCSCD_LOG}"
        );
    }
}

fn list_readers() -> Result<Vec<String>, pcsc::Error> {
    let ctx = pcsc::Context::establish(pcsc::Scope::User)?;
    match ctx.list_readers_owned() {
        Ok(readers) => Ok(readers
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Pid and argv of every running pcscd, for tests of the harness itself.
pub fn pcscd_processes() -> Vec<(i32, Vec<OsString>)> {
    pcscd_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, restore::cmdline(pid)?)))
        .collect()
}

/// Whether any pcscd process is alive.
pub fn pcscd_running() -> bool {
    !pcscd_pids().is_empty()
}

/// Live (non-zombie) processes named exactly `pcscd`, like `pgrep -x pcscd` but without procps.
fn pcscd_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // /proc/<pid>/stat is "pid (comm) state …"; a zombie has already released the socket.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            comm.trim_end() == "pcscd" && !matches!(state, Some('Z') | Some('X') | None)
        })
        .collect()
}

fn pid_of(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("pid fits in i32"))
}

/// Opens (creating if needed) and exclusively flocks `path`, polling until `timeout`.
fn lock_file(path: &str, timeout: Duration) -> Flock<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            // A lock file created by another user may be read-only for us; flock works on it anyway.
            .or_else(|_| File::open(path))
            .unwrap_or_else(|e| panic!("open lock file {path}: {e}"))
    };
    let mut file = open();
    let deadline = Instant::now() + timeout;
    // Waiting for another test of this binary is routine; report only waits long enough to matter.
    let mut next_report = Instant::now() + Duration::from_secs(30);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return lock,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => file = f,
            Err((_, e)) => panic!("flock {path}: {e}"),
        }
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "{path} still locked after {timeout:?}; {}",
                describe_holders(path)
            );
        }
        if now >= next_report {
            // Naming the holders makes a leaked lock obvious, e.g. a pcscd started under
            // `flock FILE cmd` keeps the inherited descriptor (and the lock) for its whole life;
            // `flock -o FILE cmd` avoids that.
            eprintln!("waiting for {path}; {}", describe_holders(path));
            next_report = now + Duration::from_secs(60);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn describe_holders(path: &str) -> String {
    let others = lock_holders(path);
    if others.is_empty() {
        "held by another test of this binary".to_owned()
    } else {
        format!("open in this process and in: {}", others.join(", "))
    }
}

/// "pid comm" of every process with `path` open (other than us), read from /proc/*/fd.
fn lock_holders(path: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|p| p.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok)
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == Path::new(path)))
            })
        })
        .map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", comm.trim_end())
        })
        .collect()
}

/// Uid and gid of the local account `name` (e.g. `tessera-alice`), creating it as a system user
/// without home or shell if missing. Creating accounts needs root; the e2e tests run as root. The
/// accounts are shared by all tests of a run and removed by `scripts/test-cleanup.sh` once no test
/// process is left ([`restore::hold_accounts`]).
pub fn test_user(name: &str) -> (u32, u32) {
    // Before looking: the cleanup must not remove the account between here and the test's end.
    restore::hold_accounts();
    if let Some(user) = User::from_name(name).expect("getpwnam") {
        return (user.uid.as_raw(), user.gid.as_raw());
    }
    // Parallel test binaries may ask for the same account; useradd itself fails on a busy
    // /etc/passwd lock rather than waiting, so take turns.
    let _lock = lock_file(USERADD_LOCK_PATH, Duration::from_secs(60));
    if User::from_name(name).expect("getpwnam").is_none() {
        let out = run(
            Command::new(sbin_tool("useradd")).args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                // The mark by which scripts/test-cleanup.sh knows it is the suite's to remove.
                "--comment",
                restore::ACCOUNT_COMMENT,
                name,
            ]),
            b"",
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "useradd {name} failed (the e2e tests must run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = User::from_name(name)
        .expect("getpwnam")
        .unwrap_or_else(|| panic!("user {name} missing right after useradd"));
    (user.uid.as_raw(), user.gid.as_raw())
}

fn sbin_tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from(OsStr::new(name))
    }
}

/// `dbus-send --print-reply` of the bus's own `org.freedesktop.DBus.<method>(string:<name>)` on
/// `address` (asked with dbus-send, not our own D-Bus code).
pub fn ask_bus(address: &str, method: &str, name: &str) -> Output {
    run(
        Command::new("dbus-send")
            .arg(format!("--bus={address}"))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .arg(format!("org.freedesktop.DBus.{method}"))
            .arg(format!("string:{name}")),
        b"",
        Duration::from_secs(10),
    )
}

/// Whether some connection owns `name` on the bus at `address`.
pub fn has_owner(address: &str, name: &str) -> bool {
    let out = ask_bus(address, "NameHasOwner", name);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("boolean true")
}

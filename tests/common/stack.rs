//! The Tessera stack of one end-to-end test: a private bus, `tessera-sim piv` in vpcd reader 0,
//! `tesserad`, and the clients that talk to them (the `tessera` CLI, `busctl`, `gdbus`,
//! `dbus-monitor`).
//!
//! What lives here is how to start, stop and ask these processes; what Tessera must answer is asserted
//! in the test files. The generic process and machine guards it builds on are in the parent module.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{
    bin, pcsc_lock, run, stderr, stdout, wait_until, Bus, Child, PcscGuard, TestDir, VPCD_ADDR_0,
    VPCD_READER_0,
};

/// The PIN of a fresh simulated card (`tessera-sim` default).
pub const PIN: &str = "123456";
/// tesserad's well-known name.
pub const BUS_NAME: &str = "org.tessera.Tessera1";
/// The Manager object (Enroll, Authenticate, ValidateToken, RevokeToken, Jwks).
pub const MANAGER_PATH: &str = "/org/tessera/Tessera1/Manager";
/// The device id of a card in reader 0 (`Virtual PCD 00 00`, escaped for an object path).
pub const DEVICE_ID: &str = "Virtual_20PCD_2000_2000";
/// The object path of the card in reader 0.
pub const DEVICE_PATH: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";
/// Upper bound of any single wait for a process or an event.
pub const WAIT: Duration = Duration::from_secs(20);
/// Upper bound of one CLI call (the daemon's default device timeout is 10 s).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's processes. Field order is drop order: the daemon first, then the card, the bus, the
/// files, and last the pcsc lock.
pub struct Stack {
    /// The running tesserad, if any.
    pub daemon: Option<Child>,
    /// The simulator holding the card in reader 0, if a card is in.
    pub sim: Option<Child>,
    bus: Bus,
    dir: TestDir,
    /// The machine-wide pcsc lock, held for the whole test (and used to restart pcscd).
    pub pcsc: PcscGuard,
    /// Counts started processes, so every one gets its own log file (`<n>-<what>.stderr.log`).
    started: u32,
}

impl Stack {
    /// Takes the pcsc lock and starts a private bus; no card, no daemon yet.
    pub fn new() -> Stack {
        Stack::on_bus(Bus::start)
    }

    /// Like [`Stack::new`], on the bus `start` starts (once the pcsc lock is held).
    pub fn on_bus(start: impl FnOnce() -> Bus) -> Stack {
        let pcsc = pcsc_lock();
        let bus = start();
        Stack {
            daemon: None,
            sim: None,
            bus,
            dir: TestDir::new(),
            pcsc,
            started: 0,
        }
    }

    /// The most common start: a new stack with a fresh card `card.json` (simulator flags
    /// `sim_args`) in reader 0 and tesserad running with `config`, waited for until it publishes the
    /// device. Returns the stack and the card's state file.
    pub fn with_card(sim_args: &[&str], config: &str) -> (Stack, PathBuf) {
        let mut stack = Stack::new();
        let card = stack.path("card.json");
        stack.start_sim(&card, sim_args);
        stack.start_daemon(config);
        stack.wait_device(true);
        (stack, card)
    }

    /// `name` in this test's directory (kept when the test fails).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A label for the next started process (`<n>-<what>`), naming its log file.
    pub(crate) fn label(&mut self, what: &str) -> String {
        self.started += 1;
        format!("{}-{what}", self.started)
    }

    /// Inserts a card: `tessera-sim piv` on reader 0 with `state`, waiting for `ready`.
    pub fn start_sim(&mut self, state: &Path, extra: &[&str]) {
        assert!(self.sim.is_none(), "a simulator is already running");
        let label = self.label("sim");
        let mut child = Child::spawn(
            &label,
            Command::new(bin("tessera-sim"))
                .args(["piv", "--vpcd", VPCD_ADDR_0, "--state"])
                .arg(state)
                .args(extra),
            self.dir.path(),
        );
        child.wait_for_line("ready", WAIT);
        self.sim = Some(child);
    }

    /// Pulls the card: SIGTERM, which the simulator answers by leaving the reader and exiting 0.
    pub fn stop_sim(&mut self) {
        terminate(self.sim.take().expect("no simulator running"), "simulator");
    }

    /// Pulls the card and puts the same one (`state`) back while no daemon watches, waiting each
    /// time until pcscd has seen the change: a swap faster than pcscd polls is no removal at all.
    pub fn reinsert_unwatched(&mut self, state: &Path) {
        self.stop_sim();
        wait_card(false);
        self.start_sim(state, &[]);
        wait_card(true);
    }

    /// Starts tesserad with `config` (TOML) on this test's state directory; waits for its bus name.
    pub fn start_daemon(&mut self, config: &str) {
        assert!(self.daemon.is_none(), "tesserad is already running");
        let label = self.label("tesserad");
        let config_path = self.path(&format!("{label}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let mut child = Child::spawn(
            &label,
            Command::new(bin("tesserad"))
                .env("TESSERA_LOG", "debug")
                .args(["--bus", self.bus.address(), "--state-dir"])
                .arg(self.path("state"))
                .arg("--config")
                .arg(&config_path),
            self.dir.path(),
        );
        let ok = wait_until(WAIT, || {
            child.try_wait().is_some() || self.bus.has_owner(BUS_NAME)
        });
        if let Some(status) = child.try_wait() {
            panic!("tesserad exited with {status}:\n{}", child.stderr_text());
        }
        assert!(ok, "tesserad did not take {BUS_NAME} within {WAIT:?}");
        self.daemon = Some(child);
    }

    /// SIGTERM; tesserad must exit 0 and release its name.
    pub fn stop_daemon(&mut self) {
        terminate(
            self.daemon.take().expect("tesserad not running"),
            "tesserad",
        );
        self.wait_name_released();
    }

    /// SIGKILL: no shutdown code runs. The name must still be released (by the bus).
    pub fn kill_daemon(&mut self) {
        let mut daemon = self.daemon.take().expect("tesserad not running");
        daemon.signal(Signal::SIGKILL);
        assert!(
            daemon.wait_exit(WAIT).is_some(),
            "tesserad survived SIGKILL"
        );
        self.wait_name_released();
    }

    fn wait_name_released(&self) {
        assert!(
            wait_until(WAIT, || !self.bus.has_owner(BUS_NAME)),
            "{BUS_NAME} still owned after tesserad exited"
        );
    }

    /// Waits until the device is (or is no longer) published, as `tessera status` shows it.
    pub fn wait_device(&self, present: bool) {
        let mut last = String::new();
        let ok = wait_until(WAIT, || {
            last = stdout(&self.cli(&["status"], ""));
            last.contains(DEVICE_PATH) == present
        });
        assert!(
            ok,
            "device present={present} not reached within {WAIT:?}; status: {last}"
        );
    }

    /// `tessera watch`, once it says it is watching.
    pub fn start_watch(&mut self) -> Child {
        let label = self.label("watch");
        let mut watch = Child::spawn(
            &label,
            Command::new(bin("tessera"))
                .args(["--bus", self.bus.address(), "watch"])
                .env("RUST_BACKTRACE", "1"),
            self.dir.path(),
        );
        watch.wait_for_line("watching", WAIT);
        watch
    }

    /// `dbus-monitor` of the Manager's signals, once it is listening: a witness that is not our code.
    pub fn start_monitor(&mut self) -> Child {
        let label = self.label("dbus-monitor");
        let mut monitor = Child::spawn(
            &label,
            Command::new("dbus-monitor")
                .args(["--address", self.bus.address()])
                .arg("type='signal',interface='org.tessera.Tessera1.Manager'"),
            self.dir.path(),
        );
        // As a monitor it first loses its own name; from then on it sees every match.
        monitor.wait_for_line("member=NameLost", WAIT);
        monitor
    }

    /// Runs `tessera --bus <bus> <args>` as root with `stdin`, whatever its outcome.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        self.cli_cmd(args, stdin, None)
    }

    /// Runs the CLI as `user` (uid, gid) with `stdin_line` and a newline on stdin.
    pub fn cli_as(&self, user: (u32, u32), args: &[&str], stdin_line: &str) -> Output {
        self.cli_cmd(args, &format!("{stdin_line}\n"), Some(user))
    }

    fn cli_cmd(&self, args: &[&str], stdin: &str, user: Option<(u32, u32)>) -> Output {
        let mut cmd = Command::new(bin("tessera"));
        cmd.args(["--bus", self.bus.address()]).args(args);
        if let Some((uid, gid)) = user {
            // As root, std drops the supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        run(&mut cmd, stdin.as_bytes(), CLI_TIMEOUT)
    }

    /// Runs the CLI, which must succeed; returns its stdout, trimmed.
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "tessera {args:?} failed: {}\n--- tesserad ---\n{}",
            stderr(&out),
            self.daemon_log()
        );
        stdout(&out).trim().to_owned()
    }

    /// Runs the CLI with `stdin_line`, which must fail with a daemon error; returns (name, message).
    pub fn err(&self, args: &[&str], stdin_line: &str) -> (String, String) {
        parse_err(&self.cli(args, &format!("{stdin_line}\n")))
    }

    /// `tessera enroll <args> --pin-stdin` with `pin`, which must succeed; the enrollment id.
    pub fn enroll(&self, pin: &str, args: &[&str]) -> String {
        let mut all = vec!["enroll"];
        all.extend_from_slice(args);
        all.push("--pin-stdin");
        self.ok(&all, &format!("{pin}\n"))
    }

    /// `tessera authenticate <args> --pin-stdin` with [`PIN`], which must succeed; the token, which
    /// must at least look like a JWT.
    pub fn authenticate(&self, args: &[&str]) -> String {
        let mut all = vec!["authenticate"];
        all.extend_from_slice(args);
        all.push("--pin-stdin");
        let token = self.ok(&all, &format!("{PIN}\n"));
        assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
        token
    }

    /// `tessera authenticate <args> --no-pin`, which must succeed; the token.
    pub fn authenticate_no_pin(&self, args: &[&str]) -> String {
        let mut all = vec!["authenticate"];
        all.extend_from_slice(args);
        all.push("--no-pin");
        self.ok(&all, "")
    }

    /// `tessera validate --json -` with the token on stdin: the claims, or the error (name,
    /// message).
    pub fn validate(&self, token: &str) -> Result<Value, (String, String)> {
        let out = self.cli(&["validate", "--json", "-"], &format!("{token}\n"));
        if out.status.success() {
            Ok(serde_json::from_str(stdout(&out).trim()).expect("claims JSON"))
        } else {
            Err(parse_err(&out))
        }
    }

    /// `busctl --address=<bus> <args>`, which must succeed; its stdout.
    pub fn busctl(&self, args: &[&str]) -> String {
        let out = run(
            Command::new("busctl")
                .arg(format!("--address={}", self.bus.address()))
                .args(args),
            b"",
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "busctl {args:?}: {out:?}");
        stdout(&out)
    }

    /// `gdbus call` of `method` (interface.Member) on `path`; gdbus shows D-Bus error names in full.
    pub fn gdbus_call(&self, path: &str, method: &str, args: &[&str]) -> Output {
        run(
            Command::new("gdbus")
                .args(["call", "--address", self.bus.address()])
                .args([
                    "--dest",
                    BUS_NAME,
                    "--object-path",
                    path,
                    "--method",
                    method,
                ])
                .args(args),
            b"",
            CLI_TIMEOUT,
        )
    }

    /// Number of token rows in the daemon's database, read directly (not through the daemon).
    pub fn token_rows(&self) -> i64 {
        let db = rusqlite::Connection::open_with_flags(
            self.path("state").join("tessera.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open tessera.db");
        db.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
            .expect("count tokens")
    }

    /// Everything the running daemon logged so far (empty without a daemon).
    pub fn daemon_log(&self) -> String {
        self.daemon
            .as_ref()
            .map(Child::stderr_text)
            .unwrap_or_default()
    }

    /// The private bus's address (for processes a test starts itself, such as a second tesserad).
    pub fn bus_address(&self) -> &str {
        self.bus.address()
    }

    /// The stored (state, reason) of the token `jti` (state 0 live, 1 revoked, 2 consumed), read
    /// directly from the daemon's database.
    pub fn token_state(&self, jti: &str) -> (i64, Option<String>) {
        let db = rusqlite::Connection::open_with_flags(
            self.path("state").join("tessera.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open tessera.db");
        db.query_row(
            "SELECT state, reason FROM tokens WHERE jti = ?1",
            [jti],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("token row")
    }

    /// Inserts the card `state` in reader 0 without waiting for anything (start-up races).
    pub fn spawn_sim(&mut self, state: &Path) {
        assert!(self.sim.is_none(), "a simulator is already running");
        let label = self.label("sim");
        let child = Child::spawn(
            &label,
            Command::new(bin("tessera-sim"))
                .args(["piv", "--vpcd", VPCD_ADDR_0, "--state"])
                .arg(state),
            self.dir.path(),
        );
        self.sim = Some(child);
    }

    /// Starts tesserad with the built-in defaults on `state_dir` without waiting for anything
    /// (start-up races; `state_dir` may be in tmpfs to keep many rounds quick).
    pub fn spawn_daemon(&mut self, state_dir: &Path) {
        assert!(self.daemon.is_none(), "tesserad is already running");
        let label = self.label("tesserad");
        let config_path = self.path("defaults.toml");
        std::fs::write(&config_path, "").unwrap();
        let child = Child::spawn(
            &label,
            Command::new(bin("tesserad"))
                .env("TESSERA_LOG", "debug")
                .args(["--bus", self.bus.address(), "--state-dir"])
                .arg(state_dir)
                .arg("--config")
                .arg(&config_path),
            self.dir.path(),
        );
        self.daemon = Some(child);
    }
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

/// SIGTERM to `child` (`what` names it in the message), which must exit 0 within [`WAIT`].
fn terminate(mut child: Child, what: &str) {
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{what} exit: {status:?}\n{}",
        child.stderr_text()
    );
}

/// A failed CLI call: exit 1 and `tessera: <ErrorName>: <message>` on one line, optionally followed
/// by `hint: ...` lines and nothing else; returns (name, message).
pub fn parse_err(out: &Output) -> (String, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure: stdout {:?}, stderr {:?}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    let mut lines = err.trim().lines();
    let line = lines.next().unwrap_or_default();
    for extra in lines {
        assert!(
            extra.starts_with("hint: ") && extra.len() > "hint: ".len(),
            "stderr has more than the error and its hint: {err:?}"
        );
    }
    let rest = line
        .strip_prefix("tessera: ")
        .unwrap_or_else(|| panic!("unexpected stderr: {line:?}"));
    let (name, msg) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("no error name in: {line:?}"));
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric()),
        "not an error name: {line:?}"
    );
    (name.to_owned(), msg.to_owned())
}

/// Waits until `child` has printed a line containing each of `needles`, in any order: `tessera watch`
/// follows three signal streams at once and does not keep their order on the bus.
pub fn saw_all(child: &Child, needles: &[&str], timeout: Duration) {
    let mut lines = Vec::new();
    let ok = wait_until(timeout, || {
        lines = child.stdout_lines();
        needles.iter().all(|n| lines.iter().any(|l| l.contains(n)))
    });
    assert!(ok, "waited {timeout:?} for {needles:?}; got {lines:?}");
}

/// Waits until pcscd sees a card in reader 0 (`present`: a shared connection succeeds, left without
/// resetting the card) or sees none. Needed when no daemon watches: `tessera-sim` says `ready` as soon
/// as vpcd accepted it, and a card pulled and re-inserted faster than pcscd polls is never seen to
/// leave at all.
pub fn wait_card(present: bool) {
    let reader = std::ffi::CString::new(VPCD_READER_0).unwrap();
    let mut last = String::new();
    let ok = wait_until(WAIT, || {
        let attempt = pcsc::Context::establish(pcsc::Scope::User)
            .and_then(|ctx| ctx.connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY));
        match attempt {
            Ok(card) => {
                let _ = card.disconnect(pcsc::Disposition::LeaveCard);
                last = "card present".into();
                present
            }
            Err(e @ (pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard)) => {
                last = e.to_string();
                !present
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    assert!(
        ok,
        "reader {VPCD_READER_0:?} never showed present={present}: {last}"
    );
}

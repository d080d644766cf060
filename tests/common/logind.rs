//! A mock systemd-logind for the end-to-end tests: python-dbusmock's `logind` template on a
//! private system-type bus ([`super::system_stack`]), run as root like logind.
//!
//! The template has no `GetSessionByPID`, and real logind finds a process's session from its
//! cgroup, which this machine (no systemd) cannot give us. So [`MockLogind::start`] adds that
//! method with `org.freedesktop.DBus.Mock.AddMethod`, and the mock maps a pid to a session by
//! reading `MOCK_LOGIND_SESSION=<id>` from `/proc/<pid>/environ`; without it the answer is
//! logind's error `org.freedesktop.login1.NoSessionForPID`. A test puts a process in session
//! `<id>` by starting it with that variable ([`SESSION_ENV`]).
//!
//! What the mock was asked is read from its own log (every call, with a timestamp in ms) or from
//! `org.freedesktop.DBus.Mock.GetCalls`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use super::{run, stderr, stdout, wait_until, Child};

/// The variable that puts a process in a mock login session.
pub const SESSION_ENV: &str = "MOCK_LOGIND_SESSION";
/// logind's name and Manager object.
pub const LOGIN1: &str = "org.freedesktop.login1";
pub const LOGIN1_PATH: &str = "/org/freedesktop/login1";
pub const LOGIN1_MANAGER: &str = "org.freedesktop.login1.Manager";
const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
/// The Debian python that has python-dbusmock (a `python3` earlier in PATH may not).
const PYTHON: &str = "/usr/bin/python3";
const WAIT: Duration = Duration::from_secs(20);

/// `GetSessionByPID(u) -> o` for the mock: the session named by the process's
/// `MOCK_LOGIND_SESSION`, else NoSessionForPID (as logind answers for a process in no session).
const GET_SESSION_BY_PID: &str = include_str!("../../dbusmock/get-session-by-pid.py");

/// One call the mock logged: when (wall clock, ms resolution) and the line itself
/// (`LockSession "c1"`).
#[derive(Debug, Clone)]
pub struct LoggedCall {
    pub at: SystemTime,
    pub line: String,
}

/// The running mock; stopped when dropped.
pub struct MockLogind {
    child: Child,
    address: String,
}

impl MockLogind {
    /// Starts the mock on the system-type bus at `address` (its log goes to `dir`), waits until
    /// it owns `org.freedesktop.login1` and adds `GetSessionByPID`.
    pub fn start(address: &str, dir: &Path) -> MockLogind {
        let child = Child::spawn(
            "logind-mock",
            Command::new(PYTHON)
                .args(["-m", "dbusmock", "--system", "-t", "logind"])
                .env("DBUS_SYSTEM_BUS_ADDRESS", address)
                // Its call log is read line by line as it comes.
                .env("PYTHONUNBUFFERED", "1"),
            dir,
        );
        let mock = MockLogind {
            child,
            address: address.to_owned(),
        };
        let up = wait_until(WAIT, || {
            let out = mock.busctl(&["status", LOGIN1]);
            out.status.success()
        });
        assert!(up, "the logind mock did not take {LOGIN1} within {WAIT:?}");
        // Not in python-dbusmock's logind template (see the module comment).
        mock.mock_call(&[
            "AddMethod",
            "sssss",
            LOGIN1_MANAGER,
            "GetSessionByPID",
            "u",
            "o",
            GET_SESSION_BY_PID,
        ]);
        mock
    }

    /// Adds an active session `id` of `uid` (`user`) on `seat` (created if new).
    pub fn add_session(&self, id: &str, seat: &str, uid: u32, user: &str) {
        self.mock_call(&[
            "AddSession",
            "ssusb",
            id,
            seat,
            &uid.to_string(),
            user,
            "true",
        ]);
    }

    /// Ends session `id` as logind does: its object goes and `SessionRemoved(id, path)` is sent.
    pub fn remove_session(&self, id: &str) {
        let path = format!("{LOGIN1_PATH}/session/{id}");
        self.mock_call(&["RemoveObject", "s", &path]);
        self.mock_call(&[
            "EmitSignal",
            "sssav",
            LOGIN1_MANAGER,
            "SessionRemoved",
            "so",
            "2",
            "s",
            id,
            "o",
            &path,
        ]);
    }

    /// Makes the Manager's `method` (signature `in_sig` → `out_sig`) hang for `secs` seconds
    /// before failing: a logind that stopped answering. The mock answers nothing else meanwhile.
    pub fn hang(&self, method: &str, in_sig: &str, out_sig: &str, secs: u32) {
        let code = format!("time.sleep({secs})\nraise dbus.exceptions.DBusException('hung', name='org.freedesktop.DBus.Error.Failed')");
        self.mock_call(&[
            "AddMethod",
            "sssss",
            LOGIN1_MANAGER,
            method,
            in_sig,
            out_sig,
            &code,
        ]);
    }

    /// Forgets the calls logged so far (GetCalls; the log lines stay).
    pub fn clear_calls(&self) {
        self.mock_call(&["ClearCalls"]);
    }

    /// `org.freedesktop.DBus.Mock.GetCalls` as `gdbus` prints it: `([(uint64 <time>, 'LockSession',
    /// [<'c1'>]), ...],)`.
    pub fn calls(&self) -> String {
        let out = run(
            Command::new("gdbus").args([
                "call",
                "--address",
                &self.address,
                "--dest",
                LOGIN1,
                "--object-path",
                LOGIN1_PATH,
                "--method",
                "org.freedesktop.DBus.Mock.GetCalls",
            ]),
            b"",
            WAIT,
        );
        assert!(out.status.success(), "GetCalls: {}", stderr(&out));
        stdout(&out)
    }

    /// The logged calls of `method` so far (from the mock's log, with ms timestamps).
    pub fn logged(&self, method: &str) -> Vec<LoggedCall> {
        self.child
            .stdout_lines()
            .iter()
            .filter_map(|l| parse_log_line(l))
            .filter(|c| c.line.split(' ').next() == Some(method))
            .collect()
    }

    /// Waits until the mock logged a call of `method` whose line contains `args` (e.g. `"c1"`,
    /// quotes included) and returns it.
    pub fn wait_call(&self, method: &str, args: &str, timeout: Duration) -> LoggedCall {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = self
                .logged(method)
                .into_iter()
                .find(|c| c.line.contains(args));
            found.is_some()
        });
        assert!(
            ok,
            "the logind mock was not called {method} {args} within {timeout:?}; its log:\n{}",
            self.child.stdout_lines().join("\n")
        );
        found.expect("found")
    }

    /// Everything the mock logged.
    pub fn log(&self) -> String {
        self.child.stdout_lines().join("\n")
    }

    /// Stops the mock: logind leaves the bus.
    pub fn stop(mut self) {
        self.child.kill();
    }

    /// `busctl --address=<bus> <args>`, whatever its outcome.
    fn busctl(&self, args: &[&str]) -> Output {
        run(
            Command::new("busctl")
                .arg(format!("--address={}", self.address))
                .args(args),
            b"",
            WAIT,
        )
    }

    /// A method of the mock's `org.freedesktop.DBus.Mock` interface, with busctl's argument
    /// syntax (signature, then values); it must succeed.
    fn mock_call(&self, method_and_args: &[&str]) {
        let mut args = vec!["call", LOGIN1, LOGIN1_PATH, MOCK_IFACE];
        args.extend_from_slice(method_and_args);
        let out = self.busctl(&args);
        assert!(
            out.status.success(),
            "logind mock {method_and_args:?}: {}",
            stderr(&out)
        );
    }
}

/// `1764660000.123 LockSession "c1"` → the time and `LockSession "c1"`.
fn parse_log_line(line: &str) -> Option<LoggedCall> {
    let (stamp, rest) = line.split_once(' ')?;
    let secs: f64 = stamp.parse().ok()?;
    Some(LoggedCall {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs),
        line: rest.to_owned(),
    })
}

//! What the test suite changes on the machine, written down so that it is put back: the machine's
//! own pcscd (stopped by [`super::PcscGuard::restart_pcscd`], started again with the same command
//! line), the pcscd the harness started (stopped), the accounts the harness created (removed), and
//! the test PAM services in /etc/pam.d (removed).
//!
//! A test that ends normally puts things back itself (guards' `Drop`). A test killed or interrupted
//! runs no `Drop`, so everything is also recorded under [`STATE_DIR`], where the next
//! [`super::pcsc_lock`] and `scripts/test-cleanup.sh` (which `make test` runs at the end, also after
//! Ctrl-C) find it. The file formats are shared with that script.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;

use nix::fcntl::{Flock, FlockArg};

/// Root-only state of the harness; /run is emptied at boot, as are the processes it describes.
pub const STATE_DIR: &str = "/run/tessera-e2e";
/// The machine's pcscd stopped by a test: its executable, then its argv, NUL-separated.
const MACHINE_PCSCD: &str = "/run/tessera-e2e/machine-pcscd";
/// The pid of the pcscd the harness started, while it runs.
const HARNESS_PCSCD: &str = "/run/tessera-e2e/harness-pcscd.pid";
/// Held shared by every test process that uses a test account, for its whole life; the cleanup
/// takes it exclusively, so it removes accounts only when no test can be using them.
const ACCOUNTS_LOCK: &str = "/run/tessera-e2e/accounts.lock";
/// The comment (GECOS field) of every account the harness creates: what the cleanup removes.
pub const ACCOUNT_COMMENT: &str = "Tessera e2e test account";
/// Test PAM services are `/etc/pam.d/tessera-test-<pid>-<n>` ([`super::pam::PamService`]): the
/// name is the record. `scripts/test-cleanup.sh` removes those whose test process `<pid>` is gone.
pub const PAM_SERVICE_PREFIX: &str = "/etc/pam.d/tessera-test-";

/// A pcscd the harness did not start, as it was started: executable and argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePcscd {
    exe: PathBuf,
    argv: Vec<OsString>,
}

impl MachinePcscd {
    /// The running process `pid`, read from /proc (`None` if it is gone).
    pub fn of(pid: i32) -> Option<MachinePcscd> {
        let argv = cmdline(pid)?;
        // The executable as the kernel found it; argv[0] may be a bare name found through PATH.
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .filter(|p| p.is_file())
            .or_else(|| argv.first().map(PathBuf::from))?;
        Some(MachinePcscd { exe, argv })
    }

    /// Writes it down for whoever must start it again if this process cannot.
    pub fn record(&self) {
        let mut bytes = self.exe.as_os_str().as_bytes().to_vec();
        for arg in &self.argv {
            bytes.push(0);
            bytes.extend_from_slice(arg.as_bytes());
        }
        write_state(MACHINE_PCSCD, &bytes);
    }

    /// Starts it again with the same command line, detached: in its own process group (a Ctrl-C
    /// of the test run does not reach it) and not waited for by anyone but a reaper thread.
    pub fn start(&self) -> std::io::Result<()> {
        let mut cmd = Command::new(&self.exe);
        if let Some((arg0, args)) = self.argv.split_first() {
            cmd.arg0(arg0).args(args);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        // A daemonising pcscd exits at once, a foreground one runs on; either way no zombie stays.
        thread::spawn(move || child.wait());
        Ok(())
    }

    /// It runs again (or someone else took care of it): nothing left to restore.
    pub fn forget() {
        let _ = fs::remove_file(MACHINE_PCSCD);
    }

    /// The one recorded by a test that could not restore it, if any.
    pub fn recorded() -> Option<MachinePcscd> {
        let bytes = fs::read(MACHINE_PCSCD).ok()?;
        let mut parts = bytes
            .split(|b| *b == 0)
            .map(|p| OsStr::from_bytes(p).to_owned());
        let exe = PathBuf::from(parts.next()?);
        Some(MachinePcscd {
            exe,
            argv: parts.collect(),
        })
    }

    /// Its argv, for comparisons in tests.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }
}

/// argv of process `pid` (`None` if it is gone or a kernel thread).
pub fn cmdline(pid: i32) -> Option<Vec<OsString>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect(),
    )
}

/// Records that the harness runs pcscd `pid`.
pub fn record_harness_pcscd(pid: u32) {
    write_state(HARNESS_PCSCD, pid.to_string().as_bytes());
}

/// The harness's pcscd was stopped.
pub fn forget_harness_pcscd() {
    let _ = fs::remove_file(HARNESS_PCSCD);
}

/// The pid of a pcscd the harness started and did not stop (a killed test leaves it), if recorded.
pub fn harness_pcscd() -> Option<i32> {
    fs::read_to_string(HARNESS_PCSCD).ok()?.trim().parse().ok()
}

/// Takes the accounts lock shared for the rest of this process's life (see [`ACCOUNTS_LOCK`]).
/// The kernel releases it when the process ends, however it ends.
pub fn hold_accounts() {
    static HELD: OnceLock<Flock<File>> = OnceLock::new();
    HELD.get_or_init(|| {
        state_dir();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ACCOUNTS_LOCK)
            .unwrap_or_else(|e| panic!("open {ACCOUNTS_LOCK}: {e}"));
        // Blocks only while a cleanup removes accounts, which takes a moment.
        Flock::lock(file, FlockArg::LockShared)
            .unwrap_or_else(|(_, e)| panic!("flock {ACCOUNTS_LOCK}: {e}"))
    });
}

fn state_dir() {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(STATE_DIR)
        .unwrap_or_else(|e| panic!("create {STATE_DIR} (the e2e tests run as root): {e}"));
}

fn write_state(path: &str, bytes: &[u8]) {
    state_dir();
    let tmp = format!("{path}.{}", std::process::id());
    fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {tmp}: {e}"));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {tmp}: {e}"));
}

//! The processes the bench starts (dbus-daemon, tesserad, tessera-sim, pcscd when absent), each
//! stopped when dropped, and the machine-wide pcsc lock shared with the end-to-end tests.

use std::fs::{self, File, OpenOptions};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use pcsc::Scope;

use crate::stack::wait_for;
use crate::{PCSCD_SOCKET, POLL, READER, START_TIMEOUT, TERM_GRACE};

pub struct Proc {
    pub name: &'static str,
    pub child: Option<Child>,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, work: &Path) -> Result<Proc> {
        let out = work.join(format!("{name}.out"));
        let err = work.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()
            .with_context(|| {
                format!("starting {name} ({})", cmd.get_program().to_string_lossy())
            })?;
        Ok(Proc {
            name,
            child: Some(child),
            out,
            err,
        })
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().and_then(|c| child_pid(c).ok())
    }

    pub fn running(&self) -> bool {
        // Signal 0 probes without sending; an unreaped zombie still counts, which only delays the
        // report of an early exit to the timeout.
        self.pid()
            .is_some_and(|pid| signal::kill(pid, None).is_ok())
            && !self.is_zombie()
    }

    pub fn is_zombie(&self) -> bool {
        self.pid().is_some_and(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true)
        })
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = signal::kill(pid, sig);
        }
    }

    /// Hands the child over (e.g. to time its exit); the guard then has nothing left to stop.
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// Waits for a stdout line containing `needle`; fails early if the process exits.
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) -> Result<String> {
        let mut found = None;
        wait_for(timeout, self, &format!("{needle:?} on its stdout"), || {
            let text = fs::read_to_string(&self.out).unwrap_or_default();
            found = text
                .lines()
                .find(|l| l.contains(needle) && text.contains(&format!("{l}\n")))
                .map(str::to_owned);
            Ok(found.is_some())
        })?;
        found.ok_or_else(|| anyhow!("{}: line vanished", self.name))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.err).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// SIGTERM, then SIGKILL after [`TERM_GRACE`]; reaps the process.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(Signal::SIGTERM);
        if self.wait_exit(TERM_GRACE).is_none() {
            eprintln!("e2e: {} ignored SIGTERM; killing it", self.name);
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.child = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn child_pid(child: &Child) -> Result<Pid> {
    Ok(Pid::from_raw(i32::try_from(child.id())?))
}

/// pcscd for the bench: the machine's if one runs, else one started here and stopped on drop.
pub struct Pcscd {
    pub _own: Option<Proc>,
}

impl Pcscd {
    pub fn ensure(work: &Path) -> Result<Pcscd> {
        let own = if pcscd_running() {
            None
        } else {
            fs::create_dir_all("/run/pcscd").context("creating /run/pcscd (needs root)")?;
            Some(Proc::spawn(
                "pcscd",
                Command::new(tool("pcscd")).arg("-f"),
                work,
            )?)
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = UnixStream::connect(PCSCD_SOCKET).is_ok() && reader_listed();
            if ready {
                return Ok(Pcscd { _own: own });
            }
            if let Some(p) = &own {
                ensure!(
                    p.running(),
                    "pcscd exited while starting:\n{}",
                    p.stderr_tail()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "pcscd shows no reader {READER:?} after {START_TIMEOUT:?}; is vsmartcard-vpcd \
                 installed (scripts/install-deps.sh)?"
            );
            thread::sleep(POLL);
        }
    }
}

pub fn reader_listed() -> bool {
    let Ok(ctx) = pcsc::Context::establish(Scope::User) else {
        return false;
    };
    ctx.list_readers_owned()
        .is_ok_and(|readers| readers.iter().any(|r| r.as_c_str() == READER))
}

/// Whether a live (non-zombie) process named `pcscd` exists.
pub fn pcscd_running() -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            comm.trim_end() == "pcscd" && !matches!(state, Some('Z' | 'X') | None)
        })
}

/// A system tool by name; root's non-login shells do not always have the sbin directories in PATH.
pub fn tool(name: &str) -> PathBuf {
    find_in_path(name).unwrap_or_else(|| PathBuf::from(name))
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Opens (creating if needed) and exclusively flocks `path`, polling until `timeout`.
pub fn lock_file(path: &str, timeout: Duration) -> Result<Flock<File>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        // A lock file created by another user may be read-only for us; flock works on it anyway.
        .or_else(|_| File::open(path))
        .with_context(|| format!("opening {path}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => file = f,
            Err((_, e)) => return Err(e).with_context(|| format!("flock {path}")),
        }
        ensure!(
            Instant::now() < deadline,
            "{path} still locked after {timeout:?}: a test or `make demo` holds it"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

//! Which pcscd process the PC/SC monitor talks to. pcscd's per-reader event counters start again at
//! 0 when pcscd starts, so an event count names one insertion only within one pcscd instance; a
//! device session records the instance beside the count, and a session recorded under another
//! instance is taken as removed (a card can be pulled and put back while pcscd is restarted).
//!
//! The instance is pcscd's process identity: the kernel's boot id, its pid and its start time (clock
//! ticks after boot, field 22 of `/proc/<pid>/stat`, proc(5)); the pair (pid, start time) is unique
//! within one boot. Not the socket's inode or ctime: with systemd socket activation the socket
//! outlives pcscd, which exits when idle and starts again with fresh counters on the same socket.
//! Unknown (no pcscd process, more than one, `/proc` unreadable) is `None`, which never matches.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where libpcsclite connects to pcscd unless `PCSCLITE_CSOCK_NAME` says otherwise.
const DEFAULT_SOCKET: &str = "/run/pcscd/pcscd.comm";

/// One run of pcscd, as recorded with a device session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcscdInstance(String);

impl PcscdInstance {
    /// The running pcscd, if exactly one process can be it: named `pcscd` and owned by the owner
    /// of pcscd's socket. Another local user can name a process `pcscd` but cannot own the socket
    /// root made; such a process makes the instance unknown (fail closed), never another pcscd.
    pub fn current() -> Option<PcscdInstance> {
        let socket = std::env::var_os("PCSCLITE_CSOCK_NAME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        Self::serving(&socket)
    }

    /// The pcscd serving `socket` (see [`PcscdInstance::current`]).
    fn serving(socket: &Path) -> Option<PcscdInstance> {
        let owner = std::fs::metadata(socket).ok()?.uid();
        let boot = procfs::sys::kernel::random::boot_id().ok()?;
        let mut found = None;
        for process in procfs::process::all_processes().ok()? {
            // Processes come and go during the scan; one that is gone is not pcscd.
            let Ok(process) = process else { continue };
            let Ok(stat) = process.stat() else { continue };
            // A zombie is a pcscd that has ended and not yet been reaped.
            let alive = !matches!(stat.state, 'Z' | 'X' | 'x');
            if stat.comm != "pcscd" || !alive || process.uid().ok() != Some(owner) {
                continue;
            }
            if found.is_some() {
                tracing::warn!("more than one pcscd process; its identity is unknown");
                return None;
            }
            found = Some(format!("{}/{}/{}", boot.trim(), stat.pid, stat.starttime));
        }
        found.map(PcscdInstance)
    }

    /// The recorded form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PcscdInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_socket_is_no_pcscd() {
        assert_eq!(
            PcscdInstance::serving(Path::new("/nonexistent/pcscd.comm")),
            None
        );
    }
}

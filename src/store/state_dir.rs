//! The state directory: created owner-only if missing, refused unless it is a real directory of this
//! daemon's euid that nobody else can write to, and held with an exclusive lock for the service's
//! lifetime so two daemons can never share one (whatever bus each of them serves).
//!
//! Why these rules: whoever can write the directory can swap the database or its `-wal`/`-shm`
//! files for their own, i.e. issue or revive tokens. The files themselves are checked in
//! [`crate::store`]; the directory check is what makes those checks stick (nobody else can create,
//! rename or replace entries in it after they are done).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// The lock file in the state directory; it holds the pid of the daemon that holds the lock.
pub const LOCK_FILE: &str = "tesserad.lock";

/// An opened, checked and locked state directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates `path` (mode 0700, parents as needed) if it is missing, checks it and takes its lock.
    ///
    /// Errors: [`Error::Config`] naming the path and the problem (a symlink, not a directory, another
    /// owner, writable by group or others); [`Error::Busy`] when another daemon holds the lock.
    pub fn open(path: &Path) -> Result<StateDir> {
        match DirBuilder::new().recursive(true).mode(0o700).create(path) {
            Ok(()) => {}
            // A dangling symlink makes mkdir fail with EEXIST; the no-follow open below names it.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot create state directory {}: {e}",
                    path.display()
                )))
            }
        }
        // Checked on the open descriptor: O_NOFOLLOW refuses a symlink in the last component.
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
            .open(path)
            .map_err(|e| open_error("state directory", path, &e))?;
        check_private(&dir, "state directory", path, true)?;
        let lock = lock(path)?;
        Ok(StateDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuses `file` (already opened without following symlinks) unless it is of the expected type,
/// owned by this daemon's euid and not writable by group or others. `what` and `path` name it in
/// the message.
pub fn check_private(file: &File, what: &str, path: &Path, dir: bool) -> Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| Error::Config(format!("cannot inspect {what} {}: {e}", path.display())))?;
    let right_type = if dir { meta.is_dir() } else { meta.is_file() };
    if !right_type {
        let kind = if dir { "a directory" } else { "a regular file" };
        return Err(Error::Config(format!(
            "{what} {} is not {kind}",
            path.display()
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(Error::Config(format!(
            "{what} {} is owned by uid {}, not by this daemon's uid {euid}",
            path.display(),
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::Config(format!(
            "{what} {} is writable by group or others (mode {mode:04o})",
            path.display()
        )));
    }
    Ok(())
}

/// The error of a no-follow open, naming the path. A symlink fails with ELOOP, or with ENOTDIR when
/// a directory was asked for; the path itself tells which of them it is.
pub fn open_error(what: &str, path: &Path, e: &std::io::Error) -> Error {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link
        && matches!(
            e.raw_os_error(),
            Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
        )
    {
        Error::Config(format!("{what} {} is a symbolic link", path.display()))
    } else if e.raw_os_error() == Some(nix::libc::ENOTDIR) {
        Error::Config(format!("{what} {} is not a directory", path.display()))
    } else {
        Error::Config(format!("cannot open {what} {}: {e}", path.display()))
    }
}

/// Takes the exclusive lock on the directory's lock file and writes our pid into it.
fn lock(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| open_error("lock file", &path, &e))?;
    check_private(&file, "lock file", &path, false)?;
    // flock, not fcntl locks: it belongs to the open file, so no other descriptor of this process
    // can drop it by closing the same file, and the kernel releases it when the daemon dies.
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            // The holder may be writing its pid right now; an empty answer is then "unknown".
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.is_empty() { "unknown" } else { holder };
            return Err(Error::Busy(format!(
                "state directory {} is in use by another tesserad (pid {pid})",
                dir.display()
            )));
        }
        Err((_, e)) => {
            return Err(Error::Config(format!(
                "cannot lock {}: {e}",
                path.display()
            )))
        }
    };
    let write_pid = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())
    };
    write_pid(&mut lock)
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(lock)
}

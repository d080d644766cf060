//! Opening the database file: created owner-only, refused (with its `-wal`/`-shm` files) unless
//! it is a private regular file of this daemon's euid, then opened by SQLite without following
//! symlinks, in WAL mode with `synchronous=FULL` and foreign keys on.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::store::state_dir::{check_private, open_error};

pub(super) fn connect(path: &Path) -> Result<Connection> {
    // No CREATE flag: the file must be the one `create_owner_only` made. NOFOLLOW: SQLite refuses
    // the path if it is (or, swapped in later, becomes) a symlink.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "cannot enable WAL (journal_mode {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Creates `path` 0600 if absent (never following a symlink) and refuses it, or its WAL/SHM files,
/// unless each is a regular file of this daemon's euid that group and others cannot write (a
/// symlink is refused too). Files an older version left readable by others are tightened.
pub(super) fn create_owner_only(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| open_error("database", path, &e))?;
    check_private(&file, "database", path, false)?;
    tighten(&file, path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        // Absent is fine (SQLite creates them with the database's mode); anything else is opened
        // without following a symlink and checked on the descriptor.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&side)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(open_error("database file", &side, &e)),
        };
        check_private(&file, "database file", &side, false)?;
        tighten(&file, &side)?;
    }
    Ok(())
}

/// Drops the read bits of group and others (write bits were refused already), on the descriptor.
fn tighten(file: &fs::File, path: &Path) -> Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = %format!("{mode:o}"), "store file was not owner-only; fixing");
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(())
}

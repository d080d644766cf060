//! Writing a simulated device's state file: owner-only (0600, whatever the umask), replaced
//! atomically (a temporary file in the same directory, renamed over the old one), so that a crash
//! leaves the old device or the new one, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes`. `synced`: the file and its directory are fsynced too, so the new
/// state survives a machine crash (a PIN change must); otherwise only a process crash.
pub fn replace(path: &Path, bytes: &[u8], synced: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A stale temporary file from a crashed run may have other permissions: start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = write_new(&tmp, bytes, synced).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if synced {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Creates `path` (it must not exist) owner-only and writes `bytes` to it.
pub fn write_new(path: &Path, bytes: &[u8], synced: bool) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The mode given to open() is filtered by the umask; set it explicitly so that an odd umask
    // cannot change it.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    if synced {
        file.sync_all()?;
    }
    Ok(())
}

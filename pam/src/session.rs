//! setcred and the session phase: the token from `auth` is bound to the logind session, put where
//! the user's programs find it (`$XDG_RUNTIME_DIR/tessera/token`, the session keyring), and ended
//! at close_session.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_int;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use nix::unistd::User;
use zbus::zvariant::Value;
use zeroize::Zeroizing;

use crate::ffi::{self, AuthState, Handle, Level};
use crate::options::Options;
use crate::{bus, runtime};

/// The session keyring entry ("user" key) holding the token.
pub const KEY_DESCRIPTION: &str = "tessera:token";
/// Below the runtime directory.
const TOKEN_DIR: &str = "tessera";
const TOKEN_FILE: &str = "token";

/// PAM_SUCCESS only if `auth` succeeded in this handle; there are no credentials to set.
pub fn setcred(h: &Handle, _flags: c_int, args: &[String]) -> c_int {
    if let Err(e) = Options::parse(args) {
        ffi::syslog(Level::Err, &format!("setcred: {e}"));
        return ffi::PAM_SERVICE_ERR;
    }
    match h.state() {
        Some(_) => ffi::PAM_SUCCESS,
        None => ffi::PAM_CRED_ERR,
    }
}

/// Binds the token to the logind session named by XDG_SESSION_ID (the PAM environment), then
/// writes it for the user. Without a token from `auth` in this handle (a reuse, another module
/// authenticated) there is nothing to do: PAM_SUCCESS.
pub fn open_session(h: &Handle, _flags: c_int, args: &[String]) -> c_int {
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            ffi::syslog(Level::Err, &format!("open_session: {e}"));
            return ffi::PAM_SERVICE_ERR;
        }
    };
    let Some(AuthState {
        user,
        token: Some(mut token),
    }) = h.state()
    else {
        if opts.debug {
            ffi::syslog(
                Level::Debug,
                "open_session: no token from auth in this handle",
            );
        }
        return ffi::PAM_SUCCESS;
    };
    let account = match User::from_name(&user) {
        Ok(Some(a)) => a,
        _ => {
            ffi::syslog(Level::Err, &format!("open_session: no account {user:?}"));
            return ffi::PAM_SESSION_ERR;
        }
    };
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());

    if let Some(session) = h.getenv("XDG_SESSION_ID").filter(|s| !s.is_empty()) {
        match bind(&opts, &token, &session) {
            Ok(bound) => {
                token = bound;
                let kept = h.set_state(AuthState {
                    user: user.clone(),
                    token: Some(token.clone()),
                });
                if kept.is_err() {
                    ffi::syslog(Level::Err, "open_session: pam_set_data failed");
                    return ffi::PAM_SESSION_ERR;
                }
            }
            Err(e) => {
                // The token still works; only verify-once reuse needs the binding.
                ffi::syslog(
                    Level::Warning,
                    &format!("open_session: binding the token to session {session:?} failed: {e}"),
                );
            }
        }
    }

    let dir = h
        .getenv("XDG_RUNTIME_DIR")
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
    let written = write_token(&dir, uid, gid, &token);
    if let Err(e) = &written {
        ffi::syslog(
            Level::Err,
            &format!(
                "open_session: writing the token under {}: {e}",
                dir.display()
            ),
        );
    }
    if let Err(e) = add_to_keyring(&token, uid, gid) {
        ffi::syslog(
            Level::Warning,
            &format!("open_session: adding the token to the session keyring: {e}"),
        );
    }
    match written {
        Ok(()) => ffi::PAM_SUCCESS,
        Err(_) => ffi::PAM_SESSION_ERR,
    }
}

/// Ends the session's token (EndSession: TokenRevoked "logout") and removes its file.
pub fn close_session(h: &Handle, _flags: c_int, args: &[String]) -> c_int {
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            ffi::syslog(Level::Err, &format!("close_session: {e}"));
            return ffi::PAM_SERVICE_ERR;
        }
    };
    let Some(AuthState {
        user,
        token: Some(token),
    }) = h.state()
    else {
        return ffi::PAM_SUCCESS;
    };
    let ended = end(&opts, &token);
    if let Err(e) = &ended {
        ffi::syslog(Level::Err, &format!("close_session: ending the token: {e}"));
    }
    h.clear_state();
    if let Err(e) = remove_from_keyring(&token) {
        ffi::syslog(
            Level::Warning,
            &format!("close_session: the session keyring: {e}"),
        );
    }
    if let Ok(Some(account)) = User::from_name(&user) {
        let uid = account.uid.as_raw();
        let dir = h
            .getenv("XDG_RUNTIME_DIR")
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
        if let Err(e) = remove_token(&dir, uid, &token) {
            ffi::syslog(
                Level::Warning,
                &format!("close_session: removing the token file: {e}"),
            );
        }
    }
    match ended {
        Ok(()) => ffi::PAM_SUCCESS,
        Err(_) => ffi::PAM_SESSION_ERR,
    }
}

/// BindSession(token, {"session": id}) → the bound token.
fn bind(opts: &Options, token: &str, session: &str) -> Result<Zeroizing<String>, String> {
    let rt = runtime().map_err(|f| f.to_string())?;
    rt.block_on(async {
        let call = async {
            let conn = bus::connect().await.map_err(|f| f.to_string())?;
            let (manager, _) = bus::daemon(&conn).await.map_err(|f| f.to_string())?;
            let options = HashMap::from([("session", Value::from(session))]);
            manager
                .bind_session(token, options)
                .await
                .map(Zeroizing::new)
                .map_err(|e| tessera_client::Error::from(e).to_string())
        };
        tokio::time::timeout(opts.timeout, call)
            .await
            .map_err(|_| "no answer in time".to_owned())?
    })
}

/// EndSession(token).
fn end(opts: &Options, token: &str) -> Result<(), String> {
    let rt = runtime().map_err(|f| f.to_string())?;
    rt.block_on(async {
        let call = async {
            let conn = bus::connect().await.map_err(|f| f.to_string())?;
            let (manager, _) = bus::daemon(&conn).await.map_err(|f| f.to_string())?;
            manager
                .end_session(token)
                .await
                .map_err(|e| tessera_client::Error::from(e).to_string())
        };
        tokio::time::timeout(opts.timeout, call)
            .await
            .map_err(|_| "no answer in time".to_owned())?
    })
}

/// A directory opened without following a symlink at its last component; later paths go through
/// `/proc/self/fd/N/...`, which names the opened directory itself, so nothing the user renames or
/// links afterwards can redirect them (std has no openat; this keeps the module free of unsafe).
struct Dir {
    file: File,
}

impl Dir {
    fn open(path: &std::path::Path) -> std::io::Result<Dir> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Dir { file })
    }

    fn at(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.file.as_raw_fd()))
    }

    fn owner(&self) -> std::io::Result<(u32, u32)> {
        let m = self.file.metadata()?;
        Ok((m.uid(), m.mode()))
    }
}

fn refuse(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, what)
}

/// The tessera directory below the runtime directory `base`: both must be the user's (or root's)
/// and writable by nobody else; created 0700 and handed to the user if missing.
fn token_dir(base: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<Dir> {
    let base = Dir::open(base)?;
    let (owner, mode) = base.owner()?;
    if (owner != uid && owner != 0) || mode & 0o022 != 0 {
        return Err(refuse(format!(
            "the runtime directory belongs to uid {owner} with mode {:o}",
            mode & 0o7777
        )));
    }
    match fs::DirBuilder::new().mode(0o700).create(base.at(TOKEN_DIR)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let dir = Dir::open(&base.at(TOKEN_DIR))?;
    let (owner, mode) = dir.owner()?;
    if owner == 0 && uid != 0 {
        // Ours, just made: the user's from now on.
        std::os::unix::fs::fchown(&dir.file, Some(uid), Some(gid))?;
    } else if owner != uid {
        return Err(refuse(format!("{TOKEN_DIR}/ belongs to uid {owner}")));
    }
    if mode & 0o077 != 0 {
        dir.file
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    Ok(dir)
}

/// Writes `token` to `<base>/tessera/token`, mode 0600, owned by the user: a new file (O_EXCL,
/// never an existing one or a link) renamed over the old.
fn write_token(base: &std::path::Path, uid: u32, gid: u32, token: &str) -> std::io::Result<()> {
    let dir = token_dir(base, uid, gid)?;
    let tmp = format!(".{TOKEN_FILE}.{}", std::process::id());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.at(&tmp))?;
    let written = (|| {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(dir.at(&tmp), dir.at(TOKEN_FILE))
    })();
    if written.is_err() {
        let _ = fs::remove_file(dir.at(&tmp));
    }
    written
}

/// Removes `<base>/tessera/token` if it still holds `token`.
fn remove_token(base: &std::path::Path, uid: u32, token: &str) -> std::io::Result<()> {
    let base = Dir::open(base)?;
    let dir = Dir::open(&base.at(TOKEN_DIR))?;
    if dir.owner()?.0 != uid {
        return Err(refuse(format!("{TOKEN_DIR}/ is not the user's")));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dir.at(TOKEN_FILE))?;
    let mut held = Zeroizing::new(Vec::new());
    // A token is at most 8 KiB; a bigger file is not ours.
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 16 * 1024), &mut held)?;
    if held.trim_ascii() == token.as_bytes() {
        fs::remove_file(dir.at(TOKEN_FILE))?;
    }
    Ok(())
}

/// Adds the token to the session keyring as a "user" key, owned by the user, readable by its
/// possessors and by the user.
///
/// A process without a session keyring gets a new one (as pam_keyinit would make), so the key
/// never lands in the user's shared default keyring.
fn add_to_keyring(token: &str, uid: u32, gid: u32) -> Result<(), linux_keyutils::KeyError> {
    let ring = KeyRing::from_special_id(KeyRingIdentifier::Session, true)?;
    let key = ring.add_key(KEY_DESCRIPTION, token.as_bytes())?;
    key.chown(Some(uid), Some(gid))?;
    let perms = KeyPermissionsBuilder::builder()
        .posessor(Permission::ALL)
        .user(Permission::VIEW | Permission::READ | Permission::SEARCH)
        .build();
    key.set_perms(perms)
}

/// Unlinks our key from the session keyring if it holds `token` (not a later login's).
fn remove_from_keyring(token: &str) -> Result<(), linux_keyutils::KeyError> {
    let ring = KeyRing::from_special_id(KeyRingIdentifier::Session, false)?;
    let key = match ring.search(KEY_DESCRIPTION) {
        Ok(key) => key,
        Err(_) => return Ok(()),
    };
    let held = Zeroizing::new(key.read_to_vec()?);
    if held.as_slice() == token.as_bytes() {
        ring.unlink_key(key)?;
    }
    Ok(())
}

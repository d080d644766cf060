//! `tessera token`: the session token pam_tessera.so left for this login session, from the session
//! keyring (a "user" key "tessera:token") or else from `$XDG_RUNTIME_DIR/tessera/token`. No daemon
//! is asked: what is found is only as good as the daemon's CheckToken says.

use std::io::{self, Read};
use std::path::PathBuf;

use linux_keyutils::{KeyRing, KeyRingIdentifier};
use tessera_client::Error;
use zeroize::Zeroizing;

/// The keyring entry pam_tessera.so writes (its `session::KEY_DESCRIPTION`).
const KEY_DESCRIPTION: &str = "tessera:token";
/// A token is at most 8 KiB (the daemon's bound); anything bigger is not one.
const MAX_TOKEN: u64 = 8 * 1024;

/// The token, or an error naming both places looked at.
pub fn find() -> Result<Zeroizing<String>, Error> {
    if let Some(token) = from_keyring() {
        return Ok(token);
    }
    let path = token_file();
    match from_file(&path) {
        Ok(Some(token)) => Ok(token),
        Ok(None) => Err(none(&path, "is empty")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(none(&path, "does not exist")),
        Err(e) => Err(Error::Io(io::Error::new(
            e.kind(),
            format!("reading {}: {e}", path.display()),
        ))),
    }
}

fn none(path: &std::path::Path, why: &str) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no session token: none in the session keyring ({KEY_DESCRIPTION}) and {} {why} \
             (log in through pam_tessera.so with its session phase enabled)",
            path.display()
        ),
    ))
}

fn from_keyring() -> Option<Zeroizing<String>> {
    let ring = KeyRing::from_special_id(KeyRingIdentifier::Session, false).ok()?;
    let key = ring.search(KEY_DESCRIPTION).ok()?;
    let bytes = Zeroizing::new(key.read_to_vec().ok()?);
    let text = std::str::from_utf8(&bytes).ok()?.trim();
    (!text.is_empty()).then(|| Zeroizing::new(text.to_owned()))
}

fn token_file() -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix_uid())));
    dir.join("tessera").join("token")
}

fn nix_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn from_file(path: &std::path::Path) -> io::Result<Option<Zeroizing<String>>> {
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)?
        .take(MAX_TOKEN + 2)
        .read_to_string(&mut text)?;
    let token = text.trim();
    Ok((!token.is_empty()).then(|| Zeroizing::new(token.to_owned())))
}

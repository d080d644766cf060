//! The simulated key's durable state — master secret, PIN hash, PIN retries, signature counter,
//! AAGUID — and the JSON file that keeps it from one run to the next (`--state`, 0600, written
//! atomically after every change). Session state (key agreement key, pinUvAuthToken, the
//! three-wrong-PINs block) is in [`super::client_pin`], never here.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::FidoOptions;

/// Version of the state file layout; bump it when a field changes meaning.
const FORMAT: u32 = 1;

/// Size every state file is padded to, so that [`KeyState::save_counter`] can rewrite it in place
/// (one page: a few hundred bytes of JSON and room for the counter to grow).
const FILE_SIZE: usize = 1024;

/// CTAP 2.1 §6.5.2.2: "maximum of 8 retries".
pub(super) const MAX_PIN_RETRIES: u8 = 8;

/// CTAP 2.1 §6.5.1: the PIN is at least 4 Unicode code points (the default minPINLength).
pub(super) const MIN_PIN_CODE_POINTS: usize = 4;
/// CTAP 2.1 §6.5.1: at most 63 bytes of UTF-8, so that the 64-byte padded form ends in a zero.
pub(super) const MAX_PIN_BYTES: usize = 63;

/// Everything the key remembers across power cycles. Secrets are hex in `Zeroizing` strings so that
/// serialising and parsing never leave a plain copy behind in our own buffers.
#[derive(Serialize, Deserialize)]
pub(super) struct KeyState {
    format: u32,
    /// 32 random bytes, hex: the root of every credential wrap ([`super::key`]).
    master_secret: Zeroizing<String>,
    /// LEFT(SHA-256(PIN), 16), hex (CTAP 2.1 §6.5.5.5: what the authenticator stores), or none.
    pin_hash: Option<Zeroizing<String>>,
    pin_retries_max: u8,
    pin_retries: u8,
    /// The global signature counter (CTAP 2.1 §6.1.1 signCount), last value used.
    counter: u32,
    aaguid: String,
}

impl KeyState {
    /// A brand-new key with the PIN of `options`, checked against the PIN policy.
    pub(super) fn new(options: &FidoOptions) -> anyhow::Result<KeyState> {
        if let Some(pin) = &options.pin {
            check_pin_policy(pin.as_bytes()).map_err(|()| {
                anyhow::anyhow!("the PIN must be 4 to 63 bytes of UTF-8 with at least 4 characters")
            })?;
        }
        if !(1..=MAX_PIN_RETRIES).contains(&options.retries) {
            anyhow::bail!("PIN retries must be 1..=8 (CTAP 2.1 §6.5.2.2)");
        }
        Ok(KeyState::new_unchecked(options))
    }

    /// A brand-new key; the PIN is taken as it is and retries are clamped into 1..=8.
    pub(super) fn new_unchecked(options: &FidoOptions) -> KeyState {
        let retries = options.retries.clamp(1, MAX_PIN_RETRIES);
        let mut state = KeyState {
            format: FORMAT,
            master_secret: Zeroizing::new(String::new()),
            pin_hash: None,
            pin_retries_max: retries,
            pin_retries: retries,
            counter: 0,
            aaguid: hex::encode(options.aaguid),
        };
        state.new_master_secret();
        if let Some(pin) = &options.pin {
            state.set_pin(pin.as_bytes());
        }
        state
    }

    /// Reads a state file written by [`KeyState::save`].
    pub(super) fn load(path: &Path) -> anyhow::Result<KeyState> {
        let mode = fs::metadata(path)
            .with_context(|| path.display().to_string())?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} holds the key's master secret but is readable by others (mode {:o})",
                path.display(),
                mode & 0o777
            );
        }
        let bytes = Zeroizing::new(fs::read(path).with_context(|| path.display().to_string())?);
        let state: KeyState = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a FIDO key state", path.display()))?;
        if state.format != FORMAT {
            anyhow::bail!("{}: unknown format {}", path.display(), state.format);
        }
        if state.master_secret().is_none() {
            anyhow::bail!(
                "{}: the master secret is not 32 bytes of hex",
                path.display()
            );
        }
        Ok(state)
    }

    /// Writes the state atomically: a 0600 temporary file in the same directory, fsync, rename over
    /// `path`, fsync of the directory. A crash leaves either the old or the new key, never half.
    pub(super) fn save(&self, path: &Path) -> anyhow::Result<()> {
        self.replace(path, &self.padded_json()?, Durability::Synced)
    }

    /// Writes the state after the signature counter moved, which happens with every assertion: in
    /// place, one write of the whole file at offset 0, without waiting for the disk. Renaming a
    /// new file over the old one costs about 1.7 ms here (ext4 flushes a file renamed over
    /// another) and an fsync tens of milliseconds, both far more than the signature. Every file is
    /// padded to [`FILE_SIZE`], so the new text has the length of the old; a write of one page to
    /// the page cache is whole or not at all for a killed simulator, and only a crash of the
    /// machine could tear it or lose the last steps, which no test does. A file of another size
    /// (older, or edited by hand) is replaced atomically instead.
    pub(super) fn save_counter(&self, path: &Path) -> anyhow::Result<()> {
        let json = self.padded_json()?;
        let in_place = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|file| {
                let same_size = file.metadata()?.len() == json.len() as u64;
                if same_size {
                    file.write_all_at(&json, 0)?;
                }
                Ok(same_size)
            });
        match in_place {
            Ok(true) => Ok(()),
            _ => self.replace(path, &json, Durability::Atomic),
        }
    }

    /// The JSON text, padded with spaces to [`FILE_SIZE`] (JSON allows trailing whitespace).
    fn padded_json(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let mut json = Zeroizing::new(serde_json::to_vec_pretty(self)?);
        if json.len() < FILE_SIZE {
            json.resize(FILE_SIZE - 1, b' ');
            json.push(b'\n');
        }
        Ok(json)
    }

    fn replace(&self, path: &Path, json: &[u8], durability: Durability) -> anyhow::Result<()> {
        crate::state_file::replace(path, json, durability == Durability::Synced)
            .with_context(|| path.display().to_string())
    }

    /// The 32-byte master secret.
    pub(super) fn master_secret(&self) -> Option<Zeroizing<[u8; 32]>> {
        let bytes = Zeroizing::new(hex::decode(self.master_secret.as_str()).ok()?);
        let mut secret = Zeroizing::new([0u8; 32]);
        if bytes.len() != secret.len() {
            return None;
        }
        secret.copy_from_slice(&bytes);
        Some(secret)
    }

    /// Whether a PIN is set (getInfo clientPin true).
    pub(super) fn pin_set(&self) -> bool {
        self.pin_hash.is_some()
    }

    /// LEFT(SHA-256(PIN), 16), if a PIN is set.
    pub(super) fn pin_hash(&self) -> Option<Zeroizing<Vec<u8>>> {
        let hash = self.pin_hash.as_ref()?;
        hex::decode(hash.as_str()).ok().map(Zeroizing::new)
    }

    /// Sets the PIN (already checked against the policy) and fills the retries again.
    pub(super) fn set_pin(&mut self, pin: &[u8]) {
        let digest = Zeroizing::new(Sha256::digest(pin));
        let left: &[u8] = digest.get(..16).unwrap_or(&[]);
        self.pin_hash = Some(Zeroizing::new(hex::encode(left)));
        self.pin_retries = self.pin_retries_max;
    }

    pub(super) fn pin_retries(&self) -> u8 {
        self.pin_retries
    }

    pub(super) fn decrement_pin_retries(&mut self) {
        self.pin_retries = self.pin_retries.saturating_sub(1);
    }

    pub(super) fn reset_pin_retries(&mut self) {
        self.pin_retries = self.pin_retries_max;
    }

    pub(super) fn counter(&self) -> u32 {
        self.counter
    }

    pub(super) fn set_counter(&mut self, counter: u32) {
        self.counter = counter;
    }

    pub(super) fn aaguid(&self) -> [u8; 16] {
        let mut aaguid = [0u8; 16];
        if let Ok(bytes) = hex::decode(&self.aaguid) {
            if bytes.len() == 16 {
                aaguid.copy_from_slice(&bytes);
            }
        }
        aaguid
    }

    /// authenticatorReset (CTAP 2.1 §6.6): a new master secret (every credential gone), no PIN,
    /// counter zero. The AAGUID and the retry maximum are the model's, not the user's: kept.
    pub(super) fn wipe(&mut self) {
        self.new_master_secret();
        self.pin_hash = None;
        self.pin_retries = self.pin_retries_max;
        self.counter = 0;
    }

    fn new_master_secret(&mut self) {
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        self.master_secret = Zeroizing::new(hex::encode(secret.as_ref()));
    }
}

impl std::fmt::Debug for KeyState {
    /// Never prints the master secret or the PIN hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("pin_set", &self.pin_set())
            .field("pin_retries", &self.pin_retries)
            .field("counter", &self.counter)
            .field("aaguid", &self.aaguid)
            .finish_non_exhaustive()
    }
}

/// CTAP 2.1 §6.5.1 PIN policy: at least 4 Unicode code points, at most 63 bytes, UTF-8.
pub(super) fn check_pin_policy(pin: &[u8]) -> Result<(), ()> {
    let text = std::str::from_utf8(pin).map_err(|_| ())?;
    if text.chars().count() < MIN_PIN_CODE_POINTS || pin.len() > MAX_PIN_BYTES {
        return Err(());
    }
    Ok(())
}

/// How far [`KeyState::write`] goes before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// On the disk: file and directory synced.
    Synced,
    /// Whole and in place (rename), left to the page cache.
    Atomic,
}

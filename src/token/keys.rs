//! The daemon's ES256 token-signing keys: storage on disk (one owner-only PKCS#8 file per key), the key
//! ring (one active key plus previous ones still accepted), signing, verification and the public JWK Set.
//!
//! Verification here is cryptographic and structural only (signature, `alg`, `kid`, claim types); the
//! service checks `exp`/`nbf`/`aud` and revocation with its clock and store.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::ecdsa::Signature;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::OsRng;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::token::{ec_coordinates_b64, jwk_thumbprint, Claims, MAX_TOKEN_LEN};
use crate::{Error, Result};

/// Subdirectory of the state directory holding the key files.
const KEYS_DIR: &str = "keys";
/// Extension of a key file: `<kid>.p8` holds the PKCS#8 (RFC 5958) DER private key.
const KEY_EXT: &str = "p8";
/// Suffix of a key file being written; a leftover one is a crash remnant and is removed at load.
const TMP_SUFFIX: &str = ".p8.tmp";
/// A P-256 PKCS#8 key is ~140 bytes; anything much larger is not one, and is not read into memory.
const MAX_KEY_FILE_LEN: u64 = 1024;
/// Length of an ES256 signature: `r || s`, 32 bytes each (RFC 7518 §3.4).
const ES256_SIG_LEN: usize = 64;
/// Signed and verified at load, so a key the JWT backend cannot use fails at start-up, not at issue.
const SELF_TEST_MESSAGE: &[u8] = b"tessera signing key self-test";

/// One ES256 signing key of the daemon.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: p256::PublicKey,
    created: u64,
}

/// The daemon's signing keys: the `active` one signs, the `previous` ones (newest first) still verify
/// tokens issued before the last rotation until they are retired.
pub struct KeyRing {
    active: SigningKey,
    previous: Vec<SigningKey>,
    validation: Validation,
}

impl SigningKey {
    /// The key id: the RFC 7638 thumbprint of the public key, also the JWS `kid` (RFC 7515 §4.1.4).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn public_key(&self) -> &p256::PublicKey {
        &self.public
    }

    /// When the key was created, in seconds since the Unix epoch (stored as the file's mtime).
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Builds a key from PKCS#8 DER and checks the JWT backend can sign and verify with it. The error
    /// says what is wrong with the key; the caller knows whether that is a bad file or a bug.
    fn from_pkcs8_der(der: &[u8], created: u64) -> Result<Self, String> {
        let secret = p256::SecretKey::from_pkcs8_der(der)
            .map_err(|_| "not a P-256 PKCS#8 private key".to_string())?;
        let public = secret.public_key();
        let (x, y) = ec_coordinates_b64(&public);
        // `from_ec_components` builds the SEC1 uncompressed point both JWT backends expect.
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| format!("cannot build the verifying key: {e}"))?;
        // `EncodingKey` keeps its own copy of the DER and zeroizes it on drop.
        let encoding = EncodingKey::from_ec_der(der);
        let signature = jsonwebtoken::crypto::sign(SELF_TEST_MESSAGE, &encoding, Algorithm::ES256)
            .map_err(|e| format!("the JWT backend cannot sign with this key: {e}"))?;
        let verified = jsonwebtoken::crypto::verify(
            &signature,
            SELF_TEST_MESSAGE,
            &decoding,
            Algorithm::ES256,
        );
        if !matches!(verified, Ok(true)) {
            return Err("the key failed its sign-and-verify self-test".into());
        }
        Ok(Self {
            kid: jwk_thumbprint(&public),
            encoding,
            decoding,
            public,
            created,
        })
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads every key in `dir/keys/`, creating the directory (0700) and a first key if there is none.
    /// The newest key (by creation time, then kid) becomes active.
    ///
    /// Refuses ([`Error::Config`], naming the path) a key directory or file that group or others can
    /// access or that another user owns, a symlinked key file, a file that is not a P-256 PKCS#8 key,
    /// and a file whose name is not its key's thumbprint.
    pub fn load_or_create(dir: &Path, now_unix: u64) -> Result<KeyRing> {
        // Fail here, not on the first token: jsonwebtoken panics without exactly one crypto backend.
        if CryptoProvider::try_get_default().is_none() {
            return Err(Error::Internal(
                "jsonwebtoken has no crypto backend (enable exactly one)".into(),
            ));
        }
        let keys_dir = open_keys_dir(dir)?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(&keys_dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                tracing::warn!(path = %path.display(), "ignoring non-UTF-8 file in the key directory");
                continue;
            };
            if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                // Left by a crash between create and rename; the complete key was never used.
                fs::remove_file(&path)?;
            } else if let Some(kid) = name.strip_suffix(&format!(".{KEY_EXT}")) {
                keys.push(load_key_file(&path, kid)?);
            } else {
                tracing::warn!(path = %path.display(), "ignoring unexpected file in the key directory");
            }
        }
        // Newest first; the kid breaks ties so every start picks the same key.
        keys.sort_by(|a, b| (b.created, &b.kid).cmp(&(a.created, &a.kid)));
        let mut keys = keys.into_iter();
        let (active, previous) = match keys.next() {
            Some(active) => (active, keys.collect()),
            None => (create_key(&keys_dir, now_unix)?, Vec::new()),
        };
        Ok(KeyRing {
            active,
            previous,
            validation: validation(),
        })
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// Keys that still verify but no longer sign, newest first.
    pub fn previous(&self) -> &[SigningKey] {
        &self.previous
    }

    /// Creates a new active key in `dir/keys/`; the old active key moves to [`Self::previous`].
    ///
    /// `now` must be later than the active key's creation: keys are ordered by their creation second,
    /// so a second rotation within one second (or a clock that went back) would make the next start
    /// pick a different active key.
    pub fn rotate(&mut self, dir: &Path, now: u64) -> Result<()> {
        if now <= self.active.created {
            return Err(Error::InvalidArgument(format!(
                "cannot rotate at {now}: the active key was created at {}",
                self.active.created
            )));
        }
        let keys_dir = open_keys_dir(dir)?;
        let new = create_key(&keys_dir, now)?;
        let old = std::mem::replace(&mut self.active, new);
        self.previous.insert(0, old);
        Ok(())
    }

    /// Removes a previous key from the ring and deletes its file; tokens it signed stop verifying.
    /// The active key cannot be retired (rotate first).
    pub fn retire(&mut self, dir: &Path, kid: &str) -> Result<()> {
        if kid == self.active.kid {
            return Err(Error::InvalidArgument(
                "the active key cannot be retired".into(),
            ));
        }
        let Some(index) = self.previous.iter().position(|k| k.kid == kid) else {
            return Err(Error::InvalidArgument(format!("no previous key {kid}")));
        };
        let keys_dir = open_keys_dir(dir)?;
        // `kid` is a ring member's thumbprint (base64url), so it cannot name a path outside `keys_dir`.
        // Overwriting before unlinking would not reliably erase it on journaling or copy-on-write file
        // systems, so the file is only unlinked.
        match fs::remove_file(key_path(&keys_dir, kid)) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        File::open(&keys_dir)?.sync_all()?;
        self.previous.remove(index);
        Ok(())
    }

    /// Signs `claims` with the active key: a compact JWS (RFC 7515 §7.1) with header
    /// `{"typ":"JWT","alg":"ES256","kid":<active kid>}`.
    ///
    /// The signature is normalised to low-S, the only form [`Self::verify`] accepts, so each token
    /// has a single valid text and [`crate::token::token_hash`] identifies it.
    pub fn sign(&self, claims: &Claims) -> Result<Zeroizing<String>> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.active.kid.clone());
        let token = Zeroizing::new(
            jsonwebtoken::encode(&header, claims, &self.active.encoding)
                .map_err(|e| Error::Internal(format!("signing a token: {e}")))?,
        );
        let Some((signing_input, signature)) = token.rsplit_once('.') else {
            return Err(Error::Internal("signer produced no signature".into()));
        };
        let signature = decode_signature(signature)
            .ok_or_else(|| Error::Internal("signer produced a malformed signature".into()))?;
        match signature.normalize_s() {
            None => Ok(token),
            Some(low) => {
                let mut out = Zeroizing::new(String::with_capacity(token.len()));
                out.push_str(signing_input);
                out.push('.');
                out.push_str(&URL_SAFE_NO_PAD.encode(low.to_bytes()));
                Ok(out)
            }
        }
    }

    /// Verifies a token's signature and structure and returns its claims and the kid that signed it.
    ///
    /// Checks: compact form of exactly three base64url parts; a protected header of exactly `alg`
    /// `"ES256"`, `typ` `"JWT"` and a `kid` in this ring (anything else, e.g. `crit`, `jwk`, `jku`, is
    /// refused); a low-S ES256 signature by that key; claims that parse as [`Claims`]. Does NOT check
    /// `exp`, `nbf`, `aud` or revocation. Every failure is [`Error::TokenInvalid`].
    pub fn verify(&self, token: &str) -> Result<(Claims, String)> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::TokenInvalid);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::TokenInvalid);
        };
        let header = parse_header(header).ok_or(Error::TokenInvalid)?;
        let key = self.key(&header.kid).ok_or(Error::TokenInvalid)?;
        let signature = decode_signature(signature).ok_or(Error::TokenInvalid)?;
        if signature.normalize_s().is_some() {
            // A high-S twin of a valid signature: valid ECDSA, but not a text we issued.
            return Err(Error::TokenInvalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|_| Error::TokenInvalid)?;
        Ok((data.claims, header.kid))
    }

    /// The public keys of the ring as an RFC 7517 §5 JWK Set, active key first.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<serde_json::Value> = std::iter::once(&self.active)
            .chain(&self.previous)
            .map(|key| {
                let (x, y) = ec_coordinates_b64(&key.public);
                // RFC 7518 §6.2.1 (EC members), RFC 7517 §4.2-4.5 (use, alg, kid).
                serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": x,
                    "y": y,
                    "kid": key.kid,
                    "use": "sig",
                    "alg": "ES256",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn key(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
    }
}

/// The JOSE header we accept: exactly our three members (RFC 7515 §4.1.1, §4.1.4, §4.1.9).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwsHeader {
    alg: String,
    typ: String,
    kid: String,
}

fn parse_header(encoded: &str) -> Option<JwsHeader> {
    let json = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let header: JwsHeader = serde_json::from_slice(&json).ok()?;
    (header.alg == "ES256" && header.typ == "JWT").then_some(header)
}

/// Decodes the third JWS part as a fixed-size `r || s` signature with both scalars in `[1, n-1]`.
fn decode_signature(encoded: &str) -> Option<Signature> {
    // 64 bytes are 86 base64url characters; refuse anything longer before decoding.
    if encoded.len() > ES256_SIG_LEN.div_ceil(3) * 4 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    if bytes.len() != ES256_SIG_LEN {
        return None;
    }
    Signature::from_slice(&bytes).ok()
}

/// Verification is cryptographic and structural only; time and audience are the service's to check
/// with its clock, so all claim validation in jsonwebtoken is off.
fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.leeway = 0;
    v
}

fn key_path(keys_dir: &Path, kid: &str) -> PathBuf {
    keys_dir.join(format!("{kid}.{KEY_EXT}"))
}

/// Creates `dir/keys/` with mode 0700 if missing, and refuses it if it is not a directory owned by us
/// that only we can access.
fn open_keys_dir(dir: &Path) -> Result<PathBuf> {
    let keys_dir = dir.join(KEYS_DIR);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys_dir)?;
    let meta = fs::symlink_metadata(&keys_dir)?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "key directory {} is not a directory",
            keys_dir.display()
        )));
    }
    check_owner_only(&keys_dir, &meta)?;
    Ok(keys_dir)
}

fn check_owner_only(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} is accessible by group or others (mode {mode:03o}); it must be owner-only",
            path.display()
        )));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::Config(format!(
            "{} is owned by uid {}, not by this daemon",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

fn load_key_file(path: &Path, kid: &str) -> Result<SigningKey> {
    // O_NOFOLLOW: a symlink could point the daemon at a file someone else controls.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::Config(format!("cannot open key file {}: {e}", path.display())))?;
    // Checked on the open descriptor, so the file cannot be swapped between check and read.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::Config(format!(
            "key file {} is not a regular file",
            path.display()
        )));
    }
    check_owner_only(path, &meta)?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(Error::Config(format!(
            "key file {} is too large to be a P-256 key",
            path.display()
        )));
    }
    // Capacity for the whole bounded read up front, so the buffer never reallocates and leaves an
    // un-zeroized copy behind.
    let cap = usize::try_from(MAX_KEY_FILE_LEN + 1).unwrap_or(usize::MAX);
    let mut der = Zeroizing::new(Vec::with_capacity(cap));
    (&mut file)
        .take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut der)?;
    let created = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = SigningKey::from_pkcs8_der(&der, created)
        .map_err(|e| Error::Config(format!("key file {}: {e}", path.display())))?;
    if key.kid != kid {
        return Err(Error::Config(format!(
            "key file {} holds the key {}, not the one its name says",
            path.display(),
            key.kid
        )));
    }
    Ok(key)
}

/// Generates a key and stores it as `<kid>.p8`: written owner-only from creation to a temp file, its
/// mtime set to `now`, fsynced, renamed into place, then the directory fsynced, so a crash leaves
/// either no key or the whole key.
fn create_key(keys_dir: &Path, now: u64) -> Result<SigningKey> {
    let secret = p256::SecretKey::random(&mut OsRng);
    // `SecretDocument` zeroizes its buffer on drop.
    let der = secret
        .to_pkcs8_der()
        .map_err(|e| Error::Internal(format!("encoding a new key: {e}")))?;
    let key = SigningKey::from_pkcs8_der(der.as_bytes(), now)
        .map_err(|e| Error::Internal(format!("new signing key: {e}")))?;
    let tmp = keys_dir.join(format!(".{}{TMP_SUFFIX}", key.kid));
    let result = write_key_file(&tmp, der.as_bytes(), now)
        .and_then(|()| fs::rename(&tmp, key_path(keys_dir, &key.kid)))
        .and_then(|()| File::open(keys_dir)?.sync_all());
    if let Err(e) = result {
        // Best effort: do not leave a private key behind in a temp file.
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(key)
}

fn write_key_file(path: &Path, der: &[u8], created: u64) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(der)?;
    // The creation time travels as the mtime (rename keeps it), because the file name is the kid.
    file.set_modified(UNIX_EPOCH + Duration::from_secs(created))?;
    file.sync_all()
}

#[cfg(test)]
#[path = "keys_test.rs"]
mod tests;

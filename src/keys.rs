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

use crate::token::{ec_coordinates_b64, jwk_thumbprint, Claims};
use crate::{Error, Result};

/// Subdirectory of the state directory holding the key files.
const KEYS_DIR: &str = "keys";
/// Extension of a key file: `<kid>.p8` holds the PKCS#8 (RFC 5958) DER private key.
const KEY_EXT: &str = "p8";
/// Suffix of a key file being written; a leftover one is a crash remnant and is removed at load.
const TMP_SUFFIX: &str = ".p8.tmp";
/// A P-256 PKCS#8 key is ~140 bytes; anything much larger is not one, and is not read into memory.
const MAX_KEY_FILE_LEN: u64 = 1024;
/// Our tokens are well under 1 KiB; refusing larger input bounds the work a hostile caller can cause.
const MAX_TOKEN_LEN: usize = 8 * 1024;
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::fs::symlink;

    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use tempfile::TempDir;

    use super::*;
    use crate::token::{new_jti, Confirmation};

    const T0: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            iss: "tesserad".into(),
            sub: "alice".into(),
            aud: "tessera".into(),
            iat: T0,
            nbf: T0,
            exp: T0 + 900,
            jti: new_jti(),
            amr: vec!["hwk".into(), "sc".into(), "pin".into()],
            cnf: Confirmation {
                jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
            },
            sid: "ds-1".into(),
            enr: "en-1".into(),
        }
    }

    fn ring() -> (TempDir, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path(), T0).unwrap();
        (dir, ring)
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unb64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    fn parts(token: &str) -> (String, String, String) {
        let v: Vec<&str> = token.split('.').collect();
        assert_eq!(v.len(), 3);
        (v[0].into(), v[1].into(), v[2].into())
    }

    fn assert_invalid(ring: &KeyRing, token: &str) {
        match ring.verify(token) {
            Err(Error::TokenInvalid) => {}
            other => panic!("expected TokenInvalid for {token:?}, got {other:?}"),
        }
    }

    /// Signs arbitrary header and payload JSON with `key`, as a forger holding that key would.
    fn forge(key: &SigningKey, header: &serde_json::Value, payload: &serde_json::Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, Algorithm::ES256).unwrap();
        // Normalise to low-S so only the property under test differs from a valid token.
        let sig = decode_signature(&sig).unwrap();
        let sig = sig.normalize_s().unwrap_or(sig);
        format!("{input}.{}", b64(sig.to_bytes()))
    }

    fn our_header(ring: &KeyRing) -> serde_json::Value {
        serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": ring.active().kid()})
    }

    #[test]
    fn sign_verify_round_trip() {
        let (_dir, ring) = ring();
        let c = claims();
        let token = ring.sign(&c).unwrap();
        let (got, kid) = ring.verify(&token).unwrap();
        assert_eq!(got, c);
        assert_eq!(kid, ring.active().kid());

        let (h, _, s) = parts(&token);
        let header: serde_json::Value = serde_json::from_slice(&unb64(&h)).unwrap();
        assert_eq!(header, our_header(&ring));
        // Low-S only, always (RFC 7518 §3.4 r || s, 64 bytes).
        let sig = Signature::from_slice(&unb64(&s)).unwrap();
        assert!(sig.normalize_s().is_none());
    }

    #[test]
    fn every_signature_is_low_s() {
        let (_dir, ring) = ring();
        // aws-lc produces high S half of the time; 32 tokens all low-S means sign normalises.
        for _ in 0..32 {
            let token = ring.sign(&claims()).unwrap();
            let (_, _, s) = parts(&token);
            assert!(decode_signature(&s).unwrap().normalize_s().is_none());
            ring.verify(&token).unwrap();
        }
    }

    #[test]
    fn verify_does_not_check_time_or_audience() {
        let (_dir, ring) = ring();
        let mut c = claims();
        c.nbf = u64::MAX;
        c.exp = 1;
        c.aud = "someone-else".into();
        let token = ring.sign(&c).unwrap();
        assert_eq!(ring.verify(&token).unwrap().0, c);
    }

    #[test]
    fn tampered_payload_header_or_signature_is_invalid() {
        let (_dir, ring) = ring();
        let token = ring.sign(&claims()).unwrap();
        let (h, p, s) = parts(&token);

        let mut c = claims();
        c.sub = "root".into();
        let payload = b64(serde_json::to_vec(&c).unwrap());
        assert_invalid(&ring, &format!("{h}.{payload}.{s}"));

        let mut header: serde_json::Value = serde_json::from_slice(&unb64(&h)).unwrap();
        header["typ"] = "JWT ".into();
        assert_invalid(&ring, &format!("{}.{p}.{s}", b64(header.to_string())));
        // Same members, different serialisation: the signature covers the bytes, not the meaning.
        let reordered = format!(
            r#"{{"kid":"{}","alg":"ES256","typ":"JWT"}}"#,
            ring.active().kid()
        );
        assert_invalid(&ring, &format!("{}.{p}.{s}", b64(reordered)));

        let mut sig = unb64(&s);
        for i in [0, 31, 32, 63] {
            sig[i] ^= 0x01;
            assert_invalid(&ring, &format!("{h}.{p}.{}", b64(&sig)));
            sig[i] ^= 0x01;
        }
        assert_invalid(&ring, &format!("{h}.{p}.{}", b64([0u8; 64])));
        assert_invalid(&ring, &format!("{h}.{p}."));
        // Sanity: the untouched pieces still verify, so the failures above are the tampering's.
        ring.verify(&format!("{h}.{p}.{}", b64(&sig))).unwrap();
    }

    #[test]
    fn high_s_twin_of_a_valid_signature_is_invalid() {
        let (_dir, ring) = ring();
        let token = ring.sign(&claims()).unwrap();
        let (h, p, s) = parts(&token);
        let low = Signature::from_slice(&unb64(&s)).unwrap();
        let (r, s_scalar) = low.split_scalars();
        let high = Signature::from_scalars(r, -*s_scalar).unwrap();
        assert!(high.normalize_s().is_some());
        // The twin is a mathematically valid ECDSA signature over the same input...
        let vk = p256::ecdsa::VerifyingKey::from(ring.active().public_key());
        let input = format!("{h}.{p}");
        use p256::ecdsa::signature::Verifier as _;
        vk.verify(input.as_bytes(), &high).unwrap();
        // ...but not a token text we issued.
        assert_invalid(&ring, &format!("{input}.{}", b64(high.to_bytes())));
    }

    #[test]
    fn token_from_another_ring_is_invalid() {
        let (_dir, ring) = ring();
        let (_dir2, other) = self::ring();
        assert_invalid(&ring, &other.sign(&claims()).unwrap());
        // The other ring's key claiming to be ours.
        let payload = serde_json::to_value(claims()).unwrap();
        assert_invalid(&ring, &forge(other.active(), &our_header(&ring), &payload));
        // Control: the same forgery with our key verifies.
        ring.verify(&forge(ring.active(), &our_header(&ring), &payload))
            .unwrap();
    }

    #[test]
    fn alg_none_is_invalid() {
        let (_dir, ring) = ring();
        let payload = b64(serde_json::to_vec(&claims()).unwrap());
        for alg in ["none", "None", "NONE"] {
            let header = serde_json::json!({"typ": "JWT", "alg": alg, "kid": ring.active().kid()});
            let input = format!("{}.{payload}", b64(header.to_string()));
            assert_invalid(&ring, &format!("{input}."));
            assert_invalid(&ring, &input);
        }
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_invalid() {
        let (_dir, ring) = ring();
        let public = ring.active().public_key();
        let jwks = ring.jwks_json();
        let (x, _) = ec_coordinates_b64(public);
        let secrets: Vec<Vec<u8>> = vec![
            public.to_encoded_point(false).as_bytes().to_vec(),
            public.to_encoded_point(true).as_bytes().to_vec(),
            jwks.into_bytes(),
            x.into_bytes(),
        ];
        for secret in secrets {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(ring.active().kid().to_string());
            let key = EncodingKey::from_secret(&secret).unwrap();
            let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
            assert_invalid(&ring, &token);
        }
    }

    #[test]
    fn unknown_or_missing_kid_is_invalid() {
        let (_dir, ring) = ring();
        let payload = serde_json::to_value(claims()).unwrap();
        let mut header = our_header(&ring);
        header["kid"] = "not-a-key".into();
        assert_invalid(&ring, &forge(ring.active(), &header, &payload));
        header.as_object_mut().unwrap().remove("kid");
        assert_invalid(&ring, &forge(ring.active(), &header, &payload));
        header["kid"] = serde_json::json!(1);
        assert_invalid(&ring, &forge(ring.active(), &header, &payload));
    }

    #[test]
    fn header_with_extra_or_wrong_members_is_invalid() {
        let (_dir, ring) = ring();
        let payload = serde_json::to_value(claims()).unwrap();
        let extras = [
            ("crit", serde_json::json!(["b64"])),
            ("b64", serde_json::json!(false)),
            ("jku", serde_json::json!("https://evil.invalid/jwks")),
            ("jwk", serde_json::json!({"kty": "EC"})),
            ("cty", serde_json::json!("JWT")),
        ];
        for (name, value) in extras {
            let mut header = our_header(&ring);
            header[name] = value;
            assert_invalid(&ring, &forge(ring.active(), &header, &payload));
        }
        for (name, value) in [("typ", "at+jwt"), ("alg", "ES384"), ("alg", "es256")] {
            let mut header = our_header(&ring);
            header[name] = value.into();
            assert_invalid(&ring, &forge(ring.active(), &header, &payload));
        }
        let mut header = our_header(&ring);
        header.as_object_mut().unwrap().remove("typ");
        assert_invalid(&ring, &forge(ring.active(), &header, &payload));
    }

    #[test]
    fn correctly_signed_but_malformed_claims_are_invalid() {
        let (_dir, ring) = ring();
        let header = our_header(&ring);
        let mut extra = serde_json::to_value(claims()).unwrap();
        extra["admin"] = true.into();
        assert_invalid(&ring, &forge(ring.active(), &header, &extra));
        let mut missing = serde_json::to_value(claims()).unwrap();
        missing.as_object_mut().unwrap().remove("cnf");
        assert_invalid(&ring, &forge(ring.active(), &header, &missing));
        let mut wrong_type = serde_json::to_value(claims()).unwrap();
        wrong_type["exp"] = "soon".into();
        assert_invalid(&ring, &forge(ring.active(), &header, &wrong_type));
        assert_invalid(
            &ring,
            &forge(ring.active(), &header, &serde_json::json!([])),
        );
        // Control: the well-formed claims forged the same way verify.
        let good = serde_json::to_value(claims()).unwrap();
        ring.verify(&forge(ring.active(), &header, &good)).unwrap();
    }

    #[test]
    fn truncated_tokens_are_invalid() {
        let (_dir, ring) = ring();
        let token = ring.sign(&claims()).unwrap();
        for end in 0..token.len() {
            assert_invalid(&ring, &token[..end]);
        }
        assert_invalid(&ring, &token[1..]);
    }

    #[test]
    fn bad_base64_and_bad_shapes_are_invalid() {
        let (_dir, ring) = ring();
        let token = ring.sign(&claims()).unwrap();
        let (h, p, s) = parts(&token);
        let padded_sig = format!("{s}==");
        let std_alphabet = s.replace('-', "+").replace('_', "/");
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "!!!.###.$$$".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}."),
            format!(".{h}.{p}.{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{padded_sig}"),
            format!("{h} .{p}.{s}"),
            format!("{h}.{p}.{s}\n"),
            format!("{h}.{p}.{s}A"),
            format!("{h}.{p}.{}", &s[..s.len() - 1]),
            format!("{h}.{p}.{}", b64([0xffu8; 64])),
            format!("{h}.{p}.{}", b64([0u8; 65])),
            format!("{h}.{p}.{}", b64("x".repeat(10_000))),
            format!("{h}.{p}.{h}"),
        ];
        for case in &cases {
            assert_invalid(&ring, case);
        }
        if std_alphabet != s {
            assert_invalid(&ring, &format!("{h}.{p}.{std_alphabet}"));
        }
        // Non-canonical base64url: same bytes but nonzero unused trailing bits.
        let last = s.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let pos = alphabet.find(last).unwrap();
        let bumped = alphabet.chars().nth(pos ^ 1).unwrap();
        assert_invalid(&ring, &format!("{h}.{p}.{}{bumped}", &s[..s.len() - 1]));
    }

    #[test]
    fn huge_input_is_invalid() {
        let (_dir, ring) = ring();
        let token = ring.sign(&claims()).unwrap();
        let (h, _, s) = parts(&token);
        let mut c = serde_json::to_value(claims()).unwrap();
        c["sub"] = "a".repeat(MAX_TOKEN_LEN).into();
        assert_invalid(&ring, &forge(ring.active(), &our_header(&ring), &c));
        assert_invalid(&ring, &format!("{h}.{}.{s}", "A".repeat(4 << 20)));
        assert_invalid(&ring, &".".repeat(1 << 20));
        assert_invalid(&ring, &"a".repeat(1 << 20));
    }

    #[test]
    fn jwks_lists_every_key_and_rebuilds_them() {
        let (dir, mut ring) = ring();
        ring.rotate(dir.path(), T0 + 10).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&ring.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        let ring_keys = [ring.active(), &ring.previous()[0]];
        for (jwk, key) in keys.iter().zip(ring_keys) {
            assert_eq!(jwk.as_object().unwrap().len(), 7);
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], "P-256");
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["alg"], "ES256");
            assert_eq!(jwk["kid"], key.kid());
            let x = unb64(jwk["x"].as_str().unwrap());
            let y = unb64(jwk["y"].as_str().unwrap());
            assert_eq!((x.len(), y.len()), (32, 32));
            let sec1 = [&[0x04][..], &x, &y].concat();
            let rebuilt = p256::PublicKey::from_sec1_bytes(&sec1).unwrap();
            assert_eq!(&rebuilt, key.public_key());
            assert_eq!(jwk_thumbprint(&rebuilt), key.kid());
        }
        // Interoperability: a generic JOSE library reads the set and verifies our token with it.
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&ring.jwks_json()).unwrap();
        let token = ring.sign(&claims()).unwrap();
        let jwk = set.find(ring.active().kid()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        jsonwebtoken::decode::<Claims>(token.as_str(), &key, &validation()).unwrap();
    }

    fn key_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir.join(KEYS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn key_files_are_owner_only() {
        let (dir, ring) = ring();
        assert_eq!(mode(&dir.path().join(KEYS_DIR)), 0o700);
        let files = key_files(dir.path());
        assert_eq!(
            files,
            vec![key_path(&dir.path().join(KEYS_DIR), ring.active().kid())]
        );
        assert_eq!(mode(&files[0]), 0o600);
        // The file is PKCS#8 DER of the ring's key.
        let secret = p256::SecretKey::from_pkcs8_der(&fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(&secret.public_key(), ring.active().public_key());
        assert_eq!(ring.active().created(), T0);
    }

    #[test]
    fn group_or_world_accessible_key_file_is_refused() {
        let (dir, ring) = ring();
        let file = key_path(&dir.path().join(KEYS_DIR), ring.active().kid());
        for bad in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&file, fs::Permissions::from_mode(bad)).unwrap();
            match KeyRing::load_or_create(dir.path(), T0) {
                Err(Error::Config(msg)) => {
                    assert!(msg.contains(&file.display().to_string()), "{msg}");
                }
                other => panic!("mode {bad:o} accepted: {other:?}"),
            }
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        KeyRing::load_or_create(dir.path(), T0).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).unwrap();
        KeyRing::load_or_create(dir.path(), T0).unwrap();
    }

    #[test]
    fn group_or_world_accessible_key_directory_is_refused() {
        let (dir, _ring) = ring();
        let keys = dir.path().join(KEYS_DIR);
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o755)).unwrap();
        match KeyRing::load_or_create(dir.path(), T0) {
            Err(Error::Config(msg)) => assert!(msg.contains(&keys.display().to_string())),
            other => panic!("0755 key dir accepted: {other:?}"),
        }
    }

    #[test]
    fn non_key_content_is_refused() {
        // RFC 8410 §10.3: a valid PKCS#8 key, but Ed25519, not P-256.
        let ed25519 = base64::engine::general_purpose::STANDARD
            .decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC")
            .unwrap();
        let contents: [&[u8]; 4] = [b"", b"not a key", &ed25519, &[0u8; 2048]];
        for content in contents {
            let dir = tempfile::tempdir().unwrap();
            let keys = dir.path().join(KEYS_DIR);
            DirBuilder::new().mode(0o700).create(&keys).unwrap();
            let file = keys.join("abc.p8");
            write_key_file(&file, content, T0).unwrap();
            match KeyRing::load_or_create(dir.path(), T0) {
                Err(Error::Config(msg)) => {
                    assert!(msg.contains("abc.p8"), "{msg}");
                    assert!(!msg.contains("configuration error"), "nested: {msg}");
                }
                other => panic!("accepted {content:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn key_file_under_the_wrong_name_is_refused() {
        let (dir, ring) = ring();
        let keys = dir.path().join(KEYS_DIR);
        let renamed = keys.join("someone-else.p8");
        fs::rename(key_path(&keys, ring.active().kid()), &renamed).unwrap();
        match KeyRing::load_or_create(dir.path(), T0) {
            Err(Error::Config(msg)) => assert!(msg.contains("someone-else.p8"), "{msg}"),
            other => panic!("renamed key accepted: {other:?}"),
        }
    }

    #[test]
    fn symlinked_key_file_is_refused() {
        let (dir, ring) = ring();
        let keys = dir.path().join(KEYS_DIR);
        let real = key_path(&keys, ring.active().kid());
        let elsewhere = dir.path().join("elsewhere");
        fs::rename(&real, &elsewhere).unwrap();
        symlink(&elsewhere, &real).unwrap();
        assert!(matches!(
            KeyRing::load_or_create(dir.path(), T0),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn leftover_temp_file_is_removed() {
        let (dir, ring) = ring();
        let keys = dir.path().join(KEYS_DIR);
        let tmp = keys.join(format!(".crashed{TMP_SUFFIX}"));
        write_key_file(&tmp, b"half a key", T0).unwrap();
        let again = KeyRing::load_or_create(dir.path(), T0).unwrap();
        assert_eq!(again.active().kid(), ring.active().kid());
        assert!(!tmp.exists());
    }

    #[test]
    fn load_or_create_twice_gives_the_same_key() {
        let (dir, ring) = ring();
        let token = ring.sign(&claims()).unwrap();
        let again = KeyRing::load_or_create(dir.path(), T0 + 100).unwrap();
        assert_eq!(again.active().kid(), ring.active().kid());
        assert_eq!(again.active().created(), T0);
        assert!(again.previous().is_empty());
        assert_eq!(key_files(dir.path()).len(), 1);
        again.verify(&token).unwrap();
        ring.verify(&again.sign(&claims()).unwrap()).unwrap();
    }

    #[test]
    fn rotate_keeps_old_tokens_verifying_and_survives_restart() {
        let (dir, mut ring) = ring();
        let old_kid = ring.active().kid().to_string();
        let old_token = ring.sign(&claims()).unwrap();

        ring.rotate(dir.path(), T0 + 60).unwrap();
        let new_kid = ring.active().kid().to_string();
        assert_ne!(new_kid, old_kid);
        assert_eq!(ring.previous().len(), 1);
        assert_eq!(ring.previous()[0].kid(), old_kid);
        assert_eq!(ring.verify(&old_token).unwrap().1, old_kid);
        let new_token = ring.sign(&claims()).unwrap();
        assert_eq!(ring.verify(&new_token).unwrap().1, new_kid);

        let again = KeyRing::load_or_create(dir.path(), T0 + 120).unwrap();
        assert_eq!(again.active().kid(), new_kid);
        assert_eq!(again.active().created(), T0 + 60);
        assert_eq!(again.previous().len(), 1);
        assert_eq!(again.previous()[0].kid(), old_kid);
        again.verify(&old_token).unwrap();
        again.verify(&new_token).unwrap();
        for file in key_files(dir.path()) {
            assert_eq!(mode(&file), 0o600);
        }
    }

    #[test]
    fn rotate_refuses_a_time_not_after_the_active_key() {
        let (dir, mut ring) = ring();
        for now in [T0, T0 - 1] {
            assert!(matches!(
                ring.rotate(dir.path(), now),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(ring.previous().is_empty());
        assert_eq!(key_files(dir.path()).len(), 1);
    }

    #[test]
    fn retire_removes_the_key_and_its_file() {
        let (dir, mut ring) = ring();
        let old_kid = ring.active().kid().to_string();
        let old_token = ring.sign(&claims()).unwrap();
        ring.rotate(dir.path(), T0 + 60).unwrap();
        let active_kid = ring.active().kid().to_string();

        assert!(matches!(
            ring.retire(dir.path(), &active_kid),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ring.retire(dir.path(), "unknown"),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(key_files(dir.path()).len(), 2);

        ring.retire(dir.path(), &old_kid).unwrap();
        assert!(ring.previous().is_empty());
        assert_invalid(&ring, &old_token);
        assert_eq!(
            key_files(dir.path()),
            vec![key_path(&dir.path().join(KEYS_DIR), &active_kid)]
        );
        let jwks: serde_json::Value = serde_json::from_str(&ring.jwks_json()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);

        let again = KeyRing::load_or_create(dir.path(), T0 + 120).unwrap();
        assert_eq!(again.active().kid(), active_kid);
        assert!(again.previous().is_empty());
    }
}

//! The Tessera service: devices, enrollment, challenge-response, token issue, validation and
//! revocation, with no D-Bus types. The daemon wraps it in its bus interface; tests drive it in-process
//! with simulated cards.
//!
//! Consistency rules:
//! - Every change that decides whether a token is valid is durable in the [`Store`] before the call
//!   that caused it returns.
//! - A token is issued only while the card insertion (device session) that produced it is open; the
//!   store refuses the token row otherwise, so a card pulled mid-way can never leave a live token.
//! - The in-memory token index mirrors the store; validation reads only the index (a SHA-256 and a
//!   hash-map look-up), signature verification is needed only for tokens the index does not know.

mod devices;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::KeyRing;
use crate::piv::{Pin, Slot};
use crate::store::Store;
use crate::users::Account;
use crate::{Error, Result};

pub use devices::{DeviceAttach, DeviceInfo};
pub use tokens::TokenIndex;

/// Who is calling: the uid the bus (not the message) vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Unix uid of the calling process.
    pub uid: u32,
}

impl Caller {
    /// The superuser may act for any account.
    pub fn is_root(self) -> bool {
        self.uid == 0
    }
}

/// Options of [`Service::enroll`].
#[derive(Debug, Default)]
pub struct EnrollOptions {
    /// The card's PIN (required: enrollment always proves the user knows it).
    pub pin: Option<Pin>,
    /// The slot whose key is enrolled; 9A by default.
    pub slot: Option<Slot>,
}

/// Options of [`Service::authenticate`].
#[derive(Debug, Default)]
pub struct AuthOptions {
    /// The card's PIN, when the enrolled slot needs one.
    pub pin: Option<Pin>,
    /// A device id to use instead of the first present device enrolled for the user.
    pub device: Option<String>,
}

/// Something listeners (the D-Bus layer) must publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device is present and usable.
    DeviceAdded(DeviceInfo),
    /// The device with this id left.
    DeviceRemoved { id: String },
    /// A token died before its expiry.
    TokenRevoked {
        jti: String,
        user: String,
        reason: String,
    },
}

/// What the service is built from; tests pass a manual clock and a temporary state directory.
pub struct ServiceParts {
    /// Source of time for token lifetimes.
    pub clock: Arc<dyn Clock>,
    /// The administrator's configuration.
    pub config: Config,
    /// Directory for the database and signing keys (created owner-only if missing).
    pub state_dir: PathBuf,
}

/// The service. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    config: RwLock<Arc<Config>>,
    store: Store,
    keys: RwLock<KeyRing>,
    issuer: String,
    devices: Mutex<devices::Devices>,
    tokens: TokenIndex,
    events: broadcast::Sender<Event>,
}

/// How many events may wait for a slow listener before it misses some.
const EVENT_BACKLOG: usize = 4096;

impl Service {
    /// Opens the state directory (database, signing keys), loads the live tokens and open device
    /// sessions. Device sessions stay unconfirmed until the device source reports its first scan
    /// ([`Service::enumeration_complete`]).
    pub fn open(parts: ServiceParts) -> Result<Service> {
        create_private_dir(&parts.state_dir)?;
        let now = parts.clock.unix_secs();
        let store = Store::open(&parts.state_dir.join("tessera.db"))?;
        let keys = KeyRing::load_or_create(&parts.state_dir, now)?;
        tokens::record_keys(&store, &keys, now)?;
        store.apply_blocking(vec![crate::store::WriteOp::PruneExpired { now }])?;
        let index = TokenIndex::load(&store)?;
        let pending = store.open_device_sessions()?;
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        Ok(Service {
            inner: Arc::new(Inner {
                clock: parts.clock,
                config: RwLock::new(Arc::new(parts.config)),
                store,
                keys: RwLock::new(keys),
                issuer: format!("tessera:{host}"),
                devices: Mutex::new(devices::Devices::new(pending)),
                tokens: index,
                events,
            }),
        })
    }

    /// Subscribes to device and token events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        match self.inner.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The public signing keys as an RFC 7517 JWK Set.
    pub fn jwks(&self) -> String {
        match self.inner.keys.read() {
            Ok(k) => k.jwks_json(),
            Err(p) => p.into_inner().jwks_json(),
        }
    }

    /// The issuer (`iss`) of this daemon's tokens.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Enrolls the key in `opts.slot` of device `device_id` for `user` ("" = the caller), after checking
    /// the PIN and that the card holds the private key of the slot's certificate. Returns the
    /// enrollment id; enrolling the same key for the same user again returns the existing id.
    pub async fn enroll(
        &self,
        caller: Caller,
        user: &str,
        device_id: &str,
        opts: EnrollOptions,
    ) -> Result<String> {
        let account = self.resolve_user(caller, user)?;
        devices::enroll(self, &account, device_id, opts).await
    }

    /// Authenticates `user` ("" = the caller) with a present enrolled device and issues a token.
    pub async fn authenticate(
        &self,
        caller: Caller,
        user: &str,
        opts: AuthOptions,
    ) -> Result<Zeroizing<String>> {
        let account = self.resolve_user(caller, user)?;
        devices::authenticate(self, &account, opts).await
    }

    /// Checks a token; returns its claims when it is valid now.
    pub async fn validate(&self, token: &str) -> Result<crate::token::Claims> {
        tokens::validate(self, token)
    }

    /// Revokes a token (logout). Revoking a token that is already revoked is not an error.
    pub async fn revoke(&self, token: &str) -> Result<()> {
        tokens::revoke(self, token, "logout").await
    }

    /// The account `user` names, if `caller` may act for it ("" names the caller's own account).
    fn resolve_user(&self, caller: Caller, user: &str) -> Result<Account> {
        let account = if user.is_empty() {
            Account::by_uid(caller.uid)?
        } else {
            Account::by_name(user)?
        };
        if !caller.is_root() && caller.uid != account.uid {
            return Err(Error::AccessDenied(format!(
                "uid {} may not act for {}",
                caller.uid, account.name
            )));
        }
        Ok(account)
    }

    fn publish(&self, event: Event) {
        // No listener is fine (tests without a bus); a lagging one is told by the channel.
        let _ = self.inner.events.send(event);
    }
}

/// Creates `dir` (and parents) if missing, owner-only; refuses a directory others can write to.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(Error::Config(format!(
            "state directory {} is writable by group or others (mode {:o})",
            dir.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

//! Account look-ups for the service: run off the async runtime (NSS may be LDAP or SSSD and block
//! for seconds) and remembered for a few seconds, so a burst of calls costs one look-up.
//!
//! Only successful answers are kept, in bounded maps: an unknown name is looked up again each time,
//! and only root can make the daemon look names up at all (see `Service::resolve_user`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Account;
use crate::{Error, Result};

/// How long an answer is reused: short, so a changed account (uid, groups) is seen soon.
pub const TTL: Duration = Duration::from_secs(5);

/// Bound on remembered answers per map; past it the map starts over.
const MAX_ENTRIES: usize = 1024;

/// Accounts by name and by uid, and group lists by account name.
#[derive(Default)]
pub struct AccountCache {
    by_name: Memo<String, Account>,
    by_uid: Memo<u32, Account>,
    groups: Memo<String, Arc<[String]>>,
}

impl AccountCache {
    /// [`Account::by_name`], off the runtime, cached.
    pub async fn by_name(&self, name: &str) -> Result<Account> {
        if let Some(a) = self.by_name.get(name) {
            return Ok(a);
        }
        let owned = name.to_owned();
        let account = blocking(move || Account::by_name(&owned)).await?;
        self.by_name.put(name.to_owned(), account.clone());
        Ok(account)
    }

    /// [`Account::by_uid`], off the runtime, cached.
    pub async fn by_uid(&self, uid: u32) -> Result<Account> {
        if let Some(a) = self.by_uid.get(&uid) {
            return Ok(a);
        }
        let account = blocking(move || Account::by_uid(uid)).await?;
        self.by_uid.put(uid, account.clone());
        Ok(account)
    }

    /// [`Account::groups`], off the runtime, cached.
    pub async fn groups(&self, account: &Account) -> Result<Arc<[String]>> {
        if let Some(g) = self.groups.get(&account.name) {
            return Ok(g);
        }
        let owned = account.clone();
        let groups: Arc<[String]> = blocking(move || owned.groups()).await?.into();
        self.groups.put(account.name.clone(), groups.clone());
        Ok(groups)
    }
}

/// Runs a blocking look-up on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("account look-up did not finish: {e}")))?
}

/// A small map of answers that expire after [`TTL`].
struct Memo<K, V> {
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let map = self.lock();
        map.get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        // Each critical section is one map operation; a panic cannot leave it half done.
        crate::locks::lock(&self.map)
    }
}

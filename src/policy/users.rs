//! Unix accounts: Tessera's users are the machine's accounts, looked up by name or uid.

mod cache;

use nix::unistd::{Gid, Group, Uid, User};

use crate::{Error, Result};

pub use cache::{AccountCache, TTL as LOOKUP_CACHE_TTL};

/// The longest account name accepted from a caller (Linux allows 32; leave room for directories).
pub const MAX_NAME_LEN: usize = 256;

/// A Unix account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl Account {
    /// Looks an account up by name. Errors: [`Error::NoSuchUser`] for an unknown or malformed name.
    pub fn by_name(name: &str) -> Result<Account> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(Error::NoSuchUser(name.chars().take(64).collect()));
        }
        match User::from_name(name) {
            Ok(Some(u)) => Ok(Account::from(u)),
            Ok(None) => Err(Error::NoSuchUser(name.to_owned())),
            Err(e) => Err(Error::Internal(format!("account lookup of {name:?}: {e}"))),
        }
    }

    /// Looks an account up by uid. Errors: [`Error::NoSuchUser`] when no account has that uid.
    pub fn by_uid(uid: u32) -> Result<Account> {
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(u)) => Ok(Account::from(u)),
            Ok(None) => Err(Error::NoSuchUser(format!("uid {uid}"))),
            Err(e) => Err(Error::Internal(format!("account lookup of uid {uid}: {e}"))),
        }
    }

    /// Names of the groups this account belongs to (primary group first).
    pub fn groups(&self) -> Result<Vec<String>> {
        let name = std::ffi::CString::new(self.name.as_str())
            .map_err(|_| Error::NoSuchUser(self.name.clone()))?;
        let gids = nix::unistd::getgrouplist(&name, Gid::from_raw(self.gid))
            .map_err(|e| Error::Internal(format!("groups of {}: {e}", self.name)))?;
        let mut names = Vec::with_capacity(gids.len());
        for gid in gids {
            if let Ok(Some(g)) = Group::from_gid(gid) {
                if !names.contains(&g.name) {
                    names.push(g.name);
                }
            }
        }
        Ok(names)
    }
}

impl From<User> for Account {
    fn from(u: User) -> Self {
        Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn root_is_found_by_name_and_uid() {
        let by_name = Account::by_name("root").unwrap();
        assert_eq!(by_name.uid, 0);
        assert_eq!(Account::by_uid(0).unwrap(), by_name);
        assert!(by_name.groups().unwrap().contains(&"root".to_owned()));
    }

    #[test]
    fn unknown_and_malformed_names_are_no_such_user() {
        for name in ["", "no-such-user-tessera-xyz", "a\0b", &"x".repeat(300)] {
            assert!(
                matches!(Account::by_name(name), Err(Error::NoSuchUser(_))),
                "{name:?}"
            );
        }
    }
}

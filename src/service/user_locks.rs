//! One issue at a time per user: the lock that issuing, refreshing and removing an enrollment take,
//! so a user's live-token limit and an un-enrollment see every token of the user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::locks::lock;

/// Past this many users' locks, the ones nobody holds are dropped at the next look-up.
const PRUNE_AT: usize = 1024;

/// The lock of each user who issued or revoked lately.
#[derive(Debug, Default)]
pub(super) struct UserLocks {
    by_user: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl UserLocks {
    /// The lock of `user`; the same one for every caller while anyone holds (or waits for) it.
    pub(super) fn of(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.by_user);
        if locks.len() >= PRUNE_AT {
            // Only this map holds these: whoever asks next gets a new lock, which nobody else can
            // hold either. Bounds the map by the users active at once, not by every user ever seen.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(locks.entry(user.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_lock_per_user_while_held_and_unheld_ones_pruned() {
        let locks = UserLocks::default();
        let held = locks.of("alice");
        assert!(Arc::ptr_eq(&held, &locks.of("alice")));
        assert!(!Arc::ptr_eq(&held, &locks.of("bob")));
        for i in 0..PRUNE_AT * 2 {
            drop(locks.of(&format!("user{i}")));
        }
        let len = lock(&locks.by_user).len();
        assert!(len <= PRUNE_AT, "{len} locks kept");
        // The held one survived every prune.
        assert!(Arc::ptr_eq(&held, &locks.of("alice")));
    }
}

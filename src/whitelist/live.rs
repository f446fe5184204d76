//! The liste blanche in use, and whether it can still be trusted.
//!
//! Sessions read a snapshot without waiting ([`WhitelistState::snapshot`]); the refresher
//! swaps in a new list atomically. A list that has not been confirmed current for longer
//! than `max_age` is *stale*: decisions then answer 451 4.7.1 rather than judge peers on
//! an old list (a removed operator would otherwise keep its access).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::Guard;

use super::{LiveWhitelist, Whitelist};

/// The current list and its freshness.
#[derive(Debug)]
pub struct WhitelistState {
    list: LiveWhitelist,
    /// Unix time (seconds) at which the list in use was last confirmed current: verified
    /// download, `304 Not Modified`, or the cache file's modification time at start-up.
    confirmed_at: AtomicI64,
    /// A verified list has been installed.
    loaded: AtomicBool,
    /// Age past which the list is stale; `None` when the list is a fixed file.
    max_age: Option<Duration>,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl WhitelistState {
    /// No list yet (every decision is 451 until one is installed).
    pub fn new(max_age: Option<Duration>) -> Self {
        WhitelistState {
            list: Whitelist::empty().into_live(),
            confirmed_at: AtomicI64::new(0),
            loaded: AtomicBool::new(false),
            max_age,
        }
    }

    /// The list to decide with; cheap, never blocks.
    pub fn snapshot(&self) -> Guard<Arc<Whitelist>> {
        self.list.load()
    }

    /// The shared cell, for the fetcher's atomic swap.
    pub fn live(&self) -> &LiveWhitelist {
        &self.list
    }

    /// Installs a verified list confirmed current at `at`.
    pub fn install(&self, list: Arc<Whitelist>, at: SystemTime) {
        self.list.store(list);
        self.confirmed_at.store(unix(at), Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// The list in use was confirmed current at `at` (e.g. the server answered 304).
    pub fn confirm(&self, at: SystemTime) {
        if self.loaded.load(Ordering::Acquire) {
            self.confirmed_at.store(unix(at), Ordering::Release);
        }
    }

    /// Whether a verified list was ever installed.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Seconds since the list was last confirmed current (`None` before any list).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        if !self.is_loaded() {
            return None;
        }
        let secs = unix(now).saturating_sub(self.confirmed_at.load(Ordering::Acquire));
        Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
    }

    /// Whether the list can go stale: false for a fixed file (`whitelist.fetch = false`),
    /// which is the list in force until it is replaced by hand.
    pub fn can_go_stale(&self) -> bool {
        self.max_age.is_some()
    }

    /// Whether decisions must not rely on the list: none loaded, or too old.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        match (self.age(now), self.max_age) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(age), Some(max)) => age > max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_state_is_stale_until_a_list_is_installed() {
        let s = WhitelistState::new(Some(Duration::from_secs(3600)));
        let now = SystemTime::now();
        assert!(s.is_stale(now));
        s.install(Arc::new(Whitelist::empty()), now);
        assert!(!s.is_stale(now));
        assert!(s.is_stale(now + Duration::from_secs(3601)));
        s.confirm(now + Duration::from_secs(3601));
        assert!(!s.is_stale(now + Duration::from_secs(3601)));
    }

    #[test]
    fn a_fixed_file_never_goes_stale() {
        let s = WhitelistState::new(None);
        let now = SystemTime::now();
        s.install(Arc::new(Whitelist::empty()), UNIX_EPOCH);
        assert!(!s.is_stale(now));
    }
}

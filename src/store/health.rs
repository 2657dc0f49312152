//! [`StoreHealth`]: whether the shared store answered the last time anyone asked, one flag
//! every reader of it (`/healthz`, `/metrics`, the admin API) sees without touching the
//! store.
//!
//! It is set by those who talk to the store: the credential cache's watcher after every
//! read of the change feed, the admin API after a write that could not reach it. Serving
//! never depends on it: workers authenticate from the in-memory replica whatever it says
//! (README, "Fleet").

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the key store is reachable, as last seen.
#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreHealth {
    /// A store that is up: the gateway only starts after it opened its store.
    pub fn new() -> StoreHealth {
        StoreHealth {
            up: AtomicBool::new(true),
        }
    }

    /// Whether the store answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records what the last attempt to reach the store found. Returns whether that changes
    /// the state, so the caller logs one line per change rather than one per attempt.
    pub fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel) != up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_up_and_reports_only_changes() {
        let health = StoreHealth::new();
        assert!(health.is_up());
        assert!(!health.set(true), "up again is no change");
        assert!(health.set(false));
        assert!(!health.is_up());
        assert!(!health.set(false), "down again is no change");
        assert!(health.set(true));
        assert!(health.is_up());
    }
}

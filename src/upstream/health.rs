//! Passive health: a target that failed to connect cools down for a while and is skipped by
//! the balancer until then. No probes are sent; a later successful connect clears it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a target that refused or failed a connection is skipped by [`super::Upstream::pick`].
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// Milliseconds since the first call in this process: a small monotonic clock that fits in an
/// `AtomicU64`, so deadlines can be shared by all workers without a lock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u64
}

/// The passive health of one target, shared by every worker.
#[derive(Debug, Default)]
pub struct TargetHealth {
    /// `now_ms()` at which the cool-down ends; 0 = healthy. (`now_ms() + COOL_DOWN` is never 0.)
    cool_until_ms: AtomicU64,
}

impl TargetHealth {
    /// A healthy target.
    pub fn new() -> TargetHealth {
        TargetHealth::default()
    }

    /// Whether the target is cooling down at `now` (in `now_ms()` units).
    pub fn is_cooling_at(&self, now: u64) -> bool {
        let until = self.cool_until_ms.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Whether the target is cooling down now.
    pub fn is_cooling(&self) -> bool {
        // Most targets are healthy: skip reading the clock for them.
        self.cool_until_ms.load(Ordering::Relaxed) != 0 && self.is_cooling_at(now_ms())
    }

    /// Whether a cool-down deadline is set at all (expired or not): a cheap check that lets
    /// the balancer avoid reading the clock when every target is healthy.
    pub(crate) fn has_deadline(&self) -> bool {
        self.cool_until_ms.load(Ordering::Relaxed) != 0
    }

    /// Starts (or restarts) a cool-down of [`COOL_DOWN`] from now.
    pub fn mark_failed(&self) {
        self.mark_failed_at(now_ms());
    }

    /// Starts a cool-down of [`COOL_DOWN`] from `now` (in `now_ms()` units).
    pub fn mark_failed_at(&self, now: u64) {
        let until = now + COOL_DOWN.as_millis() as u64;
        self.cool_until_ms.store(until.max(1), Ordering::Relaxed);
    }

    /// Clears any cool-down. Reads first so that the common case, a healthy target, does not
    /// write to a cache line every worker reads.
    pub fn mark_ok(&self) {
        if self.cool_until_ms.load(Ordering::Relaxed) != 0 {
            self.cool_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_target_is_healthy() {
        assert!(!TargetHealth::new().is_cooling());
    }

    #[test]
    fn failed_target_cools_until_the_cool_down_ends() {
        let health = TargetHealth::new();
        health.mark_failed_at(1_000);
        let cool_ms = COOL_DOWN.as_millis() as u64;
        assert!(health.is_cooling_at(1_000));
        assert!(health.is_cooling_at(1_000 + cool_ms - 1));
        assert!(!health.is_cooling_at(1_000 + cool_ms));
    }

    #[test]
    fn mark_ok_ends_the_cool_down() {
        let health = TargetHealth::new();
        health.mark_failed();
        assert!(health.is_cooling());
        health.mark_ok();
        assert!(!health.is_cooling());
    }

    #[test]
    fn now_ms_never_goes_backwards() {
        let a = now_ms();
        let b = now_ms();
        assert!(b >= a);
    }
}

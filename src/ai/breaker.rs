//! A circuit breaker per provider, shared by every worker: after [`FAILURES_TO_OPEN`]
//! consecutive failed attempts the provider is skipped (its models fall back at once) for
//! [`COOL_DOWN_MS`]; then one attempt is let through, and its outcome closes or re-opens it.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;

/// How long an open breaker skips its provider before letting one probe through.
pub const COOL_DOWN_MS: i64 = 30_000;

/// One provider's breaker. Lock-free: two atomics.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive_failures: AtomicU32,
    /// Unix ms until which the provider is skipped; 0 = closed.
    open_until_ms: AtomicI64,
}

impl Breaker {
    /// Whether an attempt may go to the provider at `now_ms`. When the cool-down has passed,
    /// exactly one caller gets `true` (the probe) and the window restarts for the others.
    pub fn allows(&self, now_ms: i64) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now_ms < until {
            return false;
        }
        self.open_until_ms
            .compare_exchange(
                until,
                now_ms + COOL_DOWN_MS,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// An attempt got a usable answer: close.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }

    /// An attempt failed (connect error, timeout, 5xx, 429): open after enough in a row.
    pub fn record_failure(&self, now_ms: i64) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= FAILURES_TO_OPEN {
            self.open_until_ms
                .store(now_ms + COOL_DOWN_MS, Ordering::Release);
        }
    }

    /// Whether the breaker is open at `now_ms` (for metrics and tests).
    pub fn is_open(&self, now_ms: i64) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        until != 0 && now_ms < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.record_failure(1_000);
        }
        assert!(b.allows(1_000));
        b.record_success();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.record_failure(1_000);
        }
        assert!(!b.is_open(1_000), "a success in between resets the count");
        b.record_failure(1_000);
        assert!(b.is_open(1_000));
        assert!(!b.allows(1_000 + COOL_DOWN_MS - 1));
    }

    #[test]
    fn one_probe_after_the_cool_down_then_success_closes() {
        let b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN {
            b.record_failure(0);
        }
        assert!(b.allows(COOL_DOWN_MS), "the probe");
        assert!(!b.allows(COOL_DOWN_MS), "others wait while the probe runs");
        b.record_success();
        assert!(b.allows(COOL_DOWN_MS + 1));
        assert!(!b.is_open(COOL_DOWN_MS + 1));
    }
}

//! Time, in one place: the injectable monotonic clock, the duration grammar and the UTC
//! calendar.
//!
//! - This module: injectable monotonic time in nanoseconds, and [`unix_now_ms`] for the
//!   wall clock. Limiters never read the wall
//!   clock themselves: callers pass `now`, taken from a [`Clock`]. Production uses
//!   [`SystemClock`]; tests use [`ManualClock`] and move time by hand, so a one-minute window
//!   is tested exactly and without sleeping.
//! - [`duration`]: the one grammar for durations people type (`500ms`, `30s`, `15m`, `8h`,
//!   `30d`), used by every flag, admin field and query parameter that takes one.
//! - [`calendar`]: wall-clock dates in UTC through jiff: RFC 3339 text, and the day and month
//!   starts budgets reset on.
//!
//! The grammar and the calendar live beside the monotonic clock rather than in `limits/`
//! because their users are spread over the CLI, the admin API, the store, the usage report
//! and the budgets; what they share is being about time, not about admission.

pub mod calendar;
pub mod duration;

pub use duration::parse_duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Wall-clock time in unix milliseconds: what usage rows are stamped with, budget periods
/// and breaker windows are measured in, and `--since 24h` counts back from.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A source of monotonic time, in nanoseconds since an arbitrary fixed origin.
pub trait Clock: Send + Sync {
    /// Nanoseconds since this clock's origin; never decreases.
    fn now_nanos(&self) -> u64;
}

/// Monotonic time measured from the moment the clock was built (normally process start).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 {
        // u64 nanoseconds last 584 years past the origin.
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that only moves when told to: for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_nanos`.
    pub fn new(start_nanos: u64) -> Self {
        Self {
            nanos: AtomicU64::new(start_nanos),
        }
    }

    /// Sets the current reading.
    pub fn set(&self, nanos: u64) {
        self.nanos.store(nanos, Ordering::Release);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_reads_what_was_set() {
        let clock = ManualClock::new(5);
        assert_eq!(clock.now_nanos(), 5);
        clock.set(1_000);
        assert_eq!(clock.now_nanos(), 1_000);
    }

    #[test]
    fn manual_clock_advances_by_duration() {
        let clock = ManualClock::new(0);
        clock.advance(Duration::from_millis(3));
        assert_eq!(clock.now_nanos(), 3_000_000);
    }

    #[test]
    fn system_clock_never_goes_backwards() {
        let clock = SystemClock::new();
        let first = clock.now_nanos();
        let second = clock.now_nanos();
        assert!(second >= first);
    }
}

//! Concurrency limits: how many requests of one key may be in flight at once.
//!
//! An [`InFlight`] is one `AtomicU32`. [`InFlight::try_acquire`] raises it with a
//! compare-and-swap only while it is below the maximum, so concurrent callers never push it
//! past the limit, and the returned [`Permit`] lowers it again when dropped, on every path out
//! of a request (success, error, cancelled future).

use std::sync::atomic::{AtomicU32, Ordering};

/// A counter of requests in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
}

/// Proof that one request holds a slot of an [`InFlight`]; releases it on drop.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit<'a> {
    in_flight: &'a InFlight,
}

impl InFlight {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
        }
    }

    /// Takes a slot if fewer than `max` are taken; `None` means answer 429.
    pub fn try_acquire(&self, max: u32) -> Option<Permit<'_>> {
        if self.try_increment(max) {
            Some(Permit { in_flight: self })
        } else {
            None
        }
    }

    /// Requests in flight right now. `SeqCst`: the table's reclaim protocol reads it after
    /// retiring a TAT (see `table.rs`).
    pub fn current(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }

    /// Raises the count by one unless that would exceed `max`. `SeqCst` because the table's
    /// reclaim protocol pairs this increment with a later load of the key's TAT.
    pub(crate) fn try_increment(&self, max: u32) -> bool {
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return false;
            }
            match self.count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back one slot taken by [`InFlight::try_increment`].
    pub(crate) fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.in_flight.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn admits_up_to_max_then_refuses() {
        let in_flight = InFlight::new();
        let first = in_flight.try_acquire(2);
        let second = in_flight.try_acquire(2);
        assert!(first.is_some() && second.is_some());
        assert!(in_flight.try_acquire(2).is_none());
        assert_eq!(in_flight.current(), 2);
    }

    #[test]
    fn dropping_a_permit_releases_its_slot() {
        let in_flight = InFlight::new();
        let permit = in_flight.try_acquire(1).unwrap();
        assert!(in_flight.try_acquire(1).is_none());
        drop(permit);
        assert_eq!(in_flight.current(), 0);
        assert!(in_flight.try_acquire(1).is_some());
    }

    #[test]
    fn refused_acquire_leaves_the_count_unchanged() {
        let in_flight = InFlight::new();
        let _held = in_flight.try_acquire(1).unwrap();
        for _ in 0..10 {
            assert!(in_flight.try_acquire(1).is_none());
        }
        assert_eq!(in_flight.current(), 1);
    }

    #[test]
    fn contending_threads_never_exceed_max() {
        let in_flight = Arc::new(InFlight::new());
        let peak = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let in_flight = Arc::clone(&in_flight);
                let peak = Arc::clone(&peak);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(_permit) = in_flight.try_acquire(3) {
                            peak.fetch_max(in_flight.current() as usize, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(in_flight.current(), 0);
    }
}

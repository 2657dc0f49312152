//! Keyed limiter state shared by every worker: one TAT and one in-flight counter per key.
//!
//! A key is whatever a limit is scoped to: a key id (`LimiterTable<String>`, looked up by
//! `&str`), a route index (`LimiterTable<usize>`) or a client address
//! (`LimiterTable<IpAddr>`). The map is `papaya`'s lock-free hash map, so a key's limit is
//! the same on every core and a check for a known key neither locks nor allocates.
//!
//! Memory stays bounded under a flood of distinct keys (say, spoofed-looking client IPs):
//! - [`LimiterTable::sweep`] removes quiet keys: TAT not in the future (the key is back to full
//!   capacity, so forgetting it changes no decision) and nothing in flight. The lead's
//!   background thread calls it periodically.
//! - A hard cap on entries. A new key arriving at the cap first triggers a sweep on the spot
//!   (at most one at a time, and at most once per [`HOT_SWEEP_INTERVAL_NS`]); if the table is
//!   still full, the request is **admitted without state**: it gets the decision of a fresh key
//!   and nothing is stored, so a flood can neither grow memory nor lock legitimate new clients
//!   out. Such admissions are counted ([`LimiterTable::stateless_admits`]) for metrics.
//!   Concurrent inserters can overshoot the cap by at most one entry each.
//!
//! Reclaim vs. concurrent use: a sweep retires an entry by swapping its TAT for a marker
//! (`RETIRED`) before removing it, and re-checks the in-flight counter afterwards; acquirers
//! raise the counter before re-checking the TAT (both `SeqCst`, the store-then-load pattern of
//! Dekker's algorithm). So whichever of the two comes second sees the other: a check or permit
//! never lands on an entry that is being dropped, and no admitted request is forgotten.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use papaya::{Guard, HashMap, ResizeMode};

use super::concurrency::InFlight;
use super::gcra::{Decision, Gcra, RETIRED};

/// Least time between two sweeps started from the request path when the table is full, so a
/// flood of new keys against a full table costs one scan per interval, not one per request.
pub const HOT_SWEEP_INTERVAL_NS: u64 = 100_000_000;

/// One key's limiter state.
#[derive(Debug, Default)]
struct KeyState {
    /// GCRA theoretical arrival time, or `RETIRED` while a sweep removes the entry.
    tat: AtomicU64,
    in_flight: InFlight,
}

impl KeyState {
    /// Marks the state retired if it is quiet at `now`; `true` means "remove it".
    fn try_retire(&self, now: u64) -> bool {
        if self.in_flight.current() != 0 {
            return false;
        }
        let tat = self.tat.load(Ordering::SeqCst);
        if tat > now {
            return false;
        }
        if self
            .tat
            .compare_exchange(tat, RETIRED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // A check was admitted meanwhile: the key is not quiet.
            return false;
        }
        if self.in_flight.current() != 0 {
            // A permit was taken between our two reads; it will see RETIRED and retry, but
            // the key is busy, so undo. Only the retiring sweep writes over RETIRED.
            self.tat.store(tat, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn is_retired(&self) -> bool {
        self.tat.load(Ordering::SeqCst) == RETIRED
    }
}

/// Limiter state per key, shared by all workers; see the module docs for memory bounds.
pub struct LimiterTable<K> {
    map: HashMap<K, Arc<KeyState>>,
    max_entries: usize,
    /// Held by whoever is sweeping; sweeps never overlap.
    sweeping: AtomicBool,
    /// Clock reading of the last sweep started from the request path.
    last_hot_sweep_ns: AtomicU64,
    stateless_admits: AtomicU64,
}

/// A concurrency slot of one key in a [`LimiterTable`]; releases it on drop.
///
/// Owns a reference to the key's state, so it may be held across await points and outlive
/// the borrow of the table.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct KeyPermit {
    /// `None` when the request was admitted without state (table full).
    state: Option<Arc<KeyState>>,
}

impl KeyPermit {
    /// Whether this permit is counted (false when the table was full and the request was
    /// admitted without state).
    pub fn is_tracked(&self) -> bool {
        self.state.is_some()
    }
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.in_flight.release();
        }
    }
}

impl<K: Hash + Eq> LimiterTable<K> {
    /// An empty table holding at most about `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        Self {
            // Blocking resizes: with the default incremental mode a resize stays half-done
            // until enough writes finish it, and every read meanwhile probes two tables
            // (measured: ~300 ns instead of 40-80 ns per check on a 10k-key table). Keys
            // are read far more than inserted, so pay the copy once, on the inserting thread.
            map: HashMap::builder().resize_mode(ResizeMode::Blocking).build(),
            max_entries,
            sweeping: AtomicBool::new(false),
            last_hot_sweep_ns: AtomicU64::new(0),
            stateless_admits: AtomicU64::new(0),
        }
    }

    /// Checks one request of `key` against `gcra` at `now` and records it if admitted.
    ///
    /// No allocation for a key already in the table; look up with a borrowed form
    /// (`&str` for `String` keys).
    pub fn check<Q>(&self, key: &Q, gcra: &Gcra, now: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let guard = self.map.guard();
        let mut spins = 0;
        loop {
            let Some(state) = self.state_for(key, now, &guard) else {
                self.stateless_admits.fetch_add(1, Ordering::Relaxed);
                return gcra.check_fresh(now, 1);
            };
            if let Some(decision) = gcra.check_live(&state.tat, now) {
                return decision;
            }
            // Retired under us: a sweep is removing it right now; look it up again.
            spins = back_off(spins);
        }
    }

    /// Checks a request of `n` units (tokens) of `key` at once, as [`Gcra::check_n`], and
    /// records it if admitted.
    pub fn check_n<Q>(&self, key: &Q, gcra: &Gcra, now: u64, n: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let guard = self.map.guard();
        let mut spins = 0;
        loop {
            let Some(state) = self.state_for(key, now, &guard) else {
                self.stateless_admits.fetch_add(1, Ordering::Relaxed);
                return gcra.check_fresh(now, n);
            };
            if let Some(decision) = gcra.check_n_live(&state.tat, now, n) {
                return decision;
            }
            spins = back_off(spins);
        }
    }

    /// Settles a reservation of `key`, as [`Gcra::adjust`]: `delta > 0` charges more units,
    /// `delta < 0` refunds.
    ///
    /// A refund for a key no longer held (swept: it was back to full capacity) does nothing
    /// and inserts nothing. A charge for such a key starts a fresh state; when the table is
    /// full even after a sweep, the charge is dropped (counted as a stateless admission).
    pub fn adjust<Q>(&self, key: &Q, gcra: &Gcra, now: u64, delta: i64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if delta == 0 {
            return;
        }
        let guard = self.map.guard();
        let mut spins = 0;
        loop {
            let state = if delta < 0 {
                match self.map.get(key, &guard) {
                    Some(state) => state,
                    None => return,
                }
            } else {
                match self.state_for(key, now, &guard) {
                    Some(state) => state,
                    None => {
                        self.stateless_admits.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            if gcra.adjust_live(&state.tat, now, delta).is_some() {
                return;
            }
            spins = back_off(spins);
        }
    }

    /// Takes one in-flight slot of `key` if fewer than `max` are held; `None` means 429.
    ///
    /// `now` is only used to decide whether a full table may be swept.
    pub fn try_acquire<Q>(&self, key: &Q, max: u32, now: u64) -> Option<KeyPermit>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let guard = self.map.guard();
        let mut spins = 0;
        loop {
            let Some(state) = self.state_for(key, now, &guard) else {
                self.stateless_admits.fetch_add(1, Ordering::Relaxed);
                return Some(KeyPermit { state: None });
            };
            if !state.is_retired() {
                if !state.in_flight.try_increment(max) {
                    return None;
                }
                // Re-check after raising the counter: pairs with `KeyState::try_retire`.
                if !state.is_retired() {
                    return Some(KeyPermit {
                        state: Some(Arc::clone(state)),
                    });
                }
                state.in_flight.release();
            }
            spins = back_off(spins);
        }
    }

    /// Removes every quiet key (TAT not after `now`, nothing in flight) and returns how many
    /// were removed. Returns 0 at once if another sweep is running.
    pub fn sweep(&self, now: u64) -> usize {
        if self
            .sweeping
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return 0;
        }
        let mut removed = 0;
        let guard = self.map.guard();
        self.map.retain(
            |_, state| {
                // Already retired: this sweep retired it, but papaya's removal lost a race
                // with a resize and is now retrying in the new table. Sweeps never overlap,
                // so no one else could have; remove it, or lookups of this key would spin.
                if state.is_retired() {
                    return false;
                }
                let quiet = state.try_retire(now);
                removed += usize::from(quiet);
                !quiet
            },
            &guard,
        );
        self.sweeping.store(false, Ordering::Release);
        removed
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cap on keys held.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Requests admitted without state because the table was full, since it was built.
    pub fn stateless_admits(&self) -> u64 {
        self.stateless_admits.load(Ordering::Relaxed)
    }

    /// The state of `key`, inserted if new and there is room; `None` when the table is full
    /// even after a sweep.
    fn state_for<'g, Q>(
        &self,
        key: &Q,
        now: u64,
        guard: &'g impl Guard,
    ) -> Option<&'g Arc<KeyState>>
    where
        K: Borrow<Q> + 'g,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(state) = self.map.get(key, guard) {
            return Some(state);
        }
        if self.map.len() >= self.max_entries {
            self.sweep_from_request_path(now);
            if self.map.len() >= self.max_entries {
                return None;
            }
        }
        Some(
            self.map
                .get_or_insert_with(key.to_owned(), || Arc::new(KeyState::default()), guard),
        )
    }

    /// Sweeps unless one ran less than [`HOT_SWEEP_INTERVAL_NS`] ago.
    fn sweep_from_request_path(&self, now: u64) {
        let last = self.last_hot_sweep_ns.load(Ordering::Relaxed);
        let due = last == 0 || now >= last.saturating_add(HOT_SWEEP_INTERVAL_NS);
        if due
            && self
                .last_hot_sweep_ns
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
    }
}

/// Waits for a sweep to finish removing a retired entry (a few instructions, unless the
/// sweeping thread was descheduled in between: then give it the core).
fn back_off(spins: u32) -> u32 {
    if spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    spins.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn key_id_is_looked_up_by_borrowed_str() {
        let table: LimiterTable<String> = LimiterTable::new(16);
        let gcra = Gcra::per_second(1, 1).unwrap();
        let owned = String::from("key_abc");
        assert!(table.check(owned.as_str(), &gcra, SEC).allowed);
        assert!(!table.check("key_abc", &gcra, SEC).allowed);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn keys_are_limited_independently() {
        let table: LimiterTable<IpAddr> = LimiterTable::new(16);
        let gcra = Gcra::per_second(1, 1).unwrap();
        assert!(table.check(&ip(1), &gcra, SEC).allowed);
        assert!(!table.check(&ip(1), &gcra, SEC).allowed);
        assert!(table.check(&ip(2), &gcra, SEC).allowed);
    }

    #[test]
    fn table_check_admits_n_then_reports_retry_after() {
        let clock = ManualClock::new(SEC);
        let table: LimiterTable<usize> = LimiterTable::new(16);
        let gcra = Gcra::per_minute(3, 0).unwrap();
        for remaining in [2, 1, 0] {
            let d = table.check(&7, &gcra, clock.now_nanos());
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let rejected = table.check(&7, &gcra, clock.now_nanos());
        assert!(!rejected.allowed);
        assert_eq!(rejected.retry_after_secs(), 20);
        clock.advance(Duration::from_secs(20));
        assert!(table.check(&7, &gcra, clock.now_nanos()).allowed);
    }

    #[test]
    fn sweep_reclaims_quiet_keys_and_keeps_busy_ones() {
        let table: LimiterTable<IpAddr> = LimiterTable::new(16);
        let gcra = Gcra::per_second(1, 1).unwrap();
        assert!(table.check(&ip(1), &gcra, 0).allowed); // TAT = 1 s
        assert!(table.check(&ip(2), &gcra, SEC).allowed); // TAT = 2 s
        let permit = table.try_acquire(&ip(3), 1, 0).unwrap();
        assert_eq!(table.sweep(SEC), 1);
        assert_eq!(table.len(), 2);
        drop(permit);
        assert_eq!(table.sweep(2 * SEC), 2);
        assert!(table.is_empty());
    }

    #[test]
    fn reclaimed_key_starts_again_at_full_capacity() {
        let table: LimiterTable<IpAddr> = LimiterTable::new(16);
        let gcra = Gcra::per_second(2, 2).unwrap();
        assert!(table.check(&ip(1), &gcra, 0).allowed);
        assert_eq!(table.sweep(SEC), 1);
        let d = table.check(&ip(1), &gcra, SEC);
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
    }

    #[test]
    fn permit_is_released_on_drop() {
        let table: LimiterTable<String> = LimiterTable::new(16);
        let first = table.try_acquire("k", 2, 0).unwrap();
        let second = table.try_acquire("k", 2, 0).unwrap();
        assert!(first.is_tracked() && second.is_tracked());
        assert!(table.try_acquire("k", 2, 0).is_none());
        drop(first);
        assert!(table.try_acquire("k", 2, 0).is_some());
    }

    #[test]
    fn stays_under_cap_with_100k_distinct_ips() {
        let clock = ManualClock::new(SEC);
        let table: LimiterTable<IpAddr> = LimiterTable::new(10_000);
        let gcra = Gcra::per_second(1, 1).unwrap();
        for n in 0..100_000u32 {
            assert!(table.check(&ip(n), &gcra, clock.now_nanos()).allowed);
            assert!(table.len() <= table.max_entries());
            clock.advance(Duration::from_micros(200));
        }
        // Each key is quiet 1 s (5k requests) after its request, so every sweep triggered by
        // the full table frees half of it and every request was tracked.
        assert_eq!(table.stateless_admits(), 0);
        clock.advance(Duration::from_secs(1));
        table.sweep(clock.now_nanos());
        assert!(table.is_empty());
    }

    #[test]
    fn full_table_admits_new_keys_without_state() {
        let table: LimiterTable<IpAddr> = LimiterTable::new(2);
        let gcra = Gcra::per_second(1, 1).unwrap();
        assert!(table.check(&ip(1), &gcra, SEC).allowed);
        assert!(table.check(&ip(2), &gcra, SEC).allowed);
        // Both keys are busy until 2 s, so nothing can be reclaimed.
        let d = table.check(&ip(3), &gcra, SEC);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(table.len(), 2);
        assert_eq!(table.stateless_admits(), 1);
        let permit = table.try_acquire(&ip(4), 1, SEC).unwrap();
        assert!(!permit.is_tracked());
        // Known keys are still limited.
        assert!(!table.check(&ip(1), &gcra, SEC).allowed);
    }

    #[test]
    fn two_threads_on_one_key_admit_exactly_the_allowed_count() {
        let table: Arc<LimiterTable<String>> = Arc::new(LimiterTable::new(16));
        let gcra = Gcra::per_minute(5_000, 0).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter(|_| table.check("hot", &gcra, SEC).allowed)
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 5_000);
    }

    #[test]
    fn concurrent_sweeps_never_let_in_flight_exceed_max() {
        let table: Arc<LimiterTable<String>> = Arc::new(LimiterTable::new(16));
        let held = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sweeper = {
            let (table, stop) = (Arc::clone(&table), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    table.sweep(u64::MAX - 1);
                }
            })
        };
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (table, held, peak) =
                    (Arc::clone(&table), Arc::clone(&held), Arc::clone(&peak));
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        if let Some(permit) = table.try_acquire("k", 1, 0) {
                            let now_held = held.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now_held, Ordering::SeqCst);
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sweeper.join().unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn table_weighted_check_and_adjust_settle_a_reservation() {
        let table: LimiterTable<String> = LimiterTable::new(16);
        let gcra = Gcra::per_minute(600, 0).unwrap();
        let now = 100 * SEC;
        let d = table.check_n("key_a", &gcra, now, 500);
        assert!(d.allowed);
        assert_eq!(d.remaining, 100);
        assert!(!table.check_n("key_a", &gcra, now, 200).allowed);
        table.adjust("key_a", &gcra, now, -300);
        let d = table.check_n("key_a", &gcra, now, 200);
        assert!(d.allowed);
        assert_eq!(d.remaining, 200);
        table.adjust("key_a", &gcra, now, 400);
        assert!(!table.check_n("key_a", &gcra, now, 1).allowed);
    }

    #[test]
    fn table_refund_for_an_unknown_key_inserts_nothing() {
        let table: LimiterTable<String> = LimiterTable::new(16);
        let gcra = Gcra::per_minute(600, 0).unwrap();
        table.adjust("gone", &gcra, SEC, -50);
        assert!(table.is_empty());
    }

    #[test]
    fn table_charge_for_a_swept_key_starts_from_now() {
        let table: LimiterTable<String> = LimiterTable::new(16);
        let gcra = Gcra::per_minute(600, 0).unwrap();
        assert!(table.check_n("k", &gcra, 0, 10).allowed);
        assert_eq!(table.sweep(10 * SEC), 1);
        table.adjust("k", &gcra, 10 * SEC, 600);
        let d = table.check_n("k", &gcra, 10 * SEC, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, SEC / 10);
    }

    #[test]
    fn full_table_admits_weighted_request_without_state() {
        let table: LimiterTable<usize> = LimiterTable::new(1);
        let gcra = Gcra::per_minute(600, 0).unwrap();
        assert!(table.check_n(&1, &gcra, SEC, 600).allowed);
        let d = table.check_n(&2, &gcra, SEC, 100);
        assert!(d.allowed);
        assert_eq!(d.remaining, 500);
        assert_eq!(table.stateless_admits(), 1);
        assert_eq!(table.len(), 1);
    }
}

//! GCRA, the Generic Cell Rate Algorithm (ITU-T I.371 "virtual scheduling"; the same rate
//! limiter as a leaky bucket, but its whole state is one timestamp).
//!
//! Each limited thing keeps a theoretical arrival time (TAT) in one `AtomicU64`: the instant
//! at which it would be back to an empty bucket. A request at `now` is admitted when
//! `max(TAT, now) + T <= now + burst * T` (T = emission interval), and then TAT moves
//! to `max(TAT, now) + T`. A check is one load plus one compare-and-swap when uncontended;
//! a rejection stores nothing, so a refused request consumes no quota.
//!
//! Weighted use (tokens per minute): a request of `n` units is `n` cells arriving at once, so
//! it is admitted when `max(TAT, now) + n * T <= now + burst * T` ([`Gcra::check_n`]). A
//! reservation made on an estimate is settled afterwards with [`Gcra::adjust`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// TAT value that marks a state retired by [`LimiterTable::sweep`](super::LimiterTable::sweep):
/// whoever loads it must look the key up again. Real TATs saturate just below it.
pub(crate) const RETIRED: u64 = u64::MAX;

/// Largest TAT a check ever stores, so a live state can never look retired.
const MAX_TAT: u64 = RETIRED - 1;

/// One rate: `count` requests per `period`, with up to `burst` admitted back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// T: the steady-state spacing between two admitted requests (period / count).
    emission_interval_ns: u64,
    /// τ: how far ahead of schedule a caller may run: T * (burst - 1).
    tolerance_ns: u64,
}

/// The outcome of one check, with everything a 429 and the `x-ratelimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (and counted).
    pub allowed: bool,
    /// The burst capacity: requests admissible at once from rest
    /// (`x-ratelimit-limit-requests`).
    pub limit: u64,
    /// Requests still admissible right now after this one
    /// (`x-ratelimit-remaining-requests`).
    pub remaining: u64,
    /// Nanoseconds until the limiter is back to full capacity
    /// (`x-ratelimit-reset-requests`).
    pub reset_after_ns: u64,
    /// On rejection, nanoseconds until the same request would be admitted; 0 when allowed.
    pub retry_after_ns: u64,
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl Decision {
    /// `Retry-After` value in whole seconds, rounded up so a client that obeys it is
    /// admitted (RFC 9110 §10.2.3 allows only whole seconds).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ns.div_ceil(NANOS_PER_SEC)
    }

    /// Time until full capacity, in whole seconds rounded up.
    pub fn reset_after_secs(&self) -> u64 {
        self.reset_after_ns.div_ceil(NANOS_PER_SEC)
    }
}

impl Gcra {
    /// `count` requests per `period`, admitting up to `burst` at once from rest.
    ///
    /// `burst == 0` means "the whole period's quota at once" (`burst = count`), which is what
    /// a user of "N per minute" expects from a quiet client. Returns `None` when `count` or
    /// `period` is zero: the contract's "0 = no limit".
    pub fn new(count: u64, period: Duration, burst: u64) -> Option<Self> {
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if count == 0 || period_ns == 0 {
            return None;
        }
        let burst = if burst == 0 { count } else { burst };
        let emission_interval_ns = (period_ns / count).max(1);
        Some(Self {
            emission_interval_ns,
            tolerance_ns: emission_interval_ns.saturating_mul(burst - 1),
        })
    }

    /// `per_second` requests per second, which may be fractional (`0.5` = one request every
    /// 2 s), admitting up to `burst` at once from rest.
    ///
    /// `burst == 0` means one second's worth: `max(1, ceil(per_second))`. Returns `None`
    /// (no limit) when the rate is zero, negative, NaN or infinite. The emission interval is
    /// rounded to the nearest nanosecond (at least 1 ns).
    pub fn from_rate(per_second: f64, burst: u64) -> Option<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let burst = if burst == 0 {
            // `as` saturates, so an absurd rate gives a huge burst, not a wrap.
            (per_second.ceil() as u64).max(1)
        } else {
            burst
        };
        // `as` saturates: a rate below one per 584 years is simply "never again".
        let emission_interval_ns = ((NANOS_PER_SEC as f64 / per_second).round() as u64).max(1);
        Some(Self {
            emission_interval_ns,
            tolerance_ns: emission_interval_ns.saturating_mul(burst - 1),
        })
    }

    /// `rps` requests per second with the given burst (see [`Gcra::new`]).
    pub fn per_second(rps: u64, burst: u64) -> Option<Self> {
        Self::new(rps, Duration::from_secs(1), burst)
    }

    /// `rpm` requests per minute with the given burst (see [`Gcra::new`]).
    pub fn per_minute(rpm: u64, burst: u64) -> Option<Self> {
        Self::new(rpm, Duration::from_secs(60), burst)
    }

    /// The steady-state spacing between admitted requests, in nanoseconds.
    pub fn emission_interval_ns(&self) -> u64 {
        self.emission_interval_ns
    }

    /// Requests admissible back to back from rest.
    pub fn burst(&self) -> u64 {
        self.tolerance_ns / self.emission_interval_ns + 1
    }

    /// Checks one request against the TAT in `state` at time `now` (nanoseconds from the
    /// same [`Clock`](super::Clock) every caller of this state uses), and records it if admitted.
    ///
    /// A fresh state is `AtomicU64::new(0)`.
    pub fn check(&self, state: &AtomicU64, now: u64) -> Decision {
        self.check_live(state, now)
            .unwrap_or_else(|| self.retired_decision())
    }

    /// A standalone state is never retired; if someone stored the marker anyway, treat it as
    /// a state that is a full window ahead rather than admitting.
    fn retired_decision(&self) -> Decision {
        Decision {
            allowed: false,
            limit: self.burst(),
            remaining: 0,
            reset_after_ns: self.window_ns(),
            retry_after_ns: self.emission_interval_ns,
        }
    }

    /// Checks a request of `n` units (tokens) at once: admitted and recorded only if all `n`
    /// fit right now; a rejection consumes nothing. One compare-and-swap when uncontended.
    ///
    /// In the decision, `limit` is the capacity in units ([`Gcra::burst`]) and `remaining` the
    /// units still admissible now (after this request if admitted). When `n` fits the capacity
    /// but not now, `retry_after_ns` is the wait until it fits.
    ///
    /// A request larger than the whole capacity (`n > burst()`) can never pass: it is rejected
    /// with `retry_after_ns` = time until full capacity (0 if already full), which is not a
    /// useful wait. The caller tells this case apart with `n > gcra.burst()` and decides (for
    /// example, refuse with a message, or clamp the reservation to the capacity).
    pub fn check_n(&self, state: &AtomicU64, now: u64, n: u64) -> Decision {
        self.check_n_live(state, now, n)
            .unwrap_or_else(|| self.retired_decision())
    }

    /// Settles a reservation after the fact: `delta > 0` charges that many more units,
    /// `delta < 0` refunds units reserved but not used. One compare-and-swap loop, no lock.
    ///
    /// A charge is always applied, counted from `max(TAT, now)` (the units were spent; a full
    /// bucket holds no credit to absorb them), and may push the TAT past the tolerance: the
    /// next request then waits. A refund moves the TAT back, but never below `now`: a bucket
    /// cannot be more than full.
    pub fn adjust(&self, state: &AtomicU64, now: u64, delta: i64) {
        // A retired marker in a standalone state: nothing to settle against.
        let _ = self.adjust_live(state, now, delta);
    }

    /// Like [`Gcra::adjust`], but returns `None` without touching `state` when it holds the
    /// [`RETIRED`] marker, so the table can look the key up again.
    pub(crate) fn adjust_live(&self, state: &AtomicU64, now: u64, delta: i64) -> Option<()> {
        if delta == 0 {
            return Some(());
        }
        let shift = self
            .emission_interval_ns
            .saturating_mul(delta.unsigned_abs());
        let mut stored = state.load(Ordering::Acquire);
        loop {
            if stored == RETIRED {
                return None;
            }
            let new_tat = if delta > 0 {
                stored.max(now).saturating_add(shift).min(MAX_TAT)
            } else if stored <= now {
                // Already at full capacity: nothing to give back.
                return Some(());
            } else {
                stored.saturating_sub(shift).max(now)
            };
            match state.compare_exchange_weak(stored, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(()),
                Err(actual) => stored = actual,
            }
        }
    }

    /// Like [`Gcra::check`], but returns `None` without touching `state` when it holds the
    /// [`RETIRED`] marker, so the table can look the key up again.
    pub(crate) fn check_live(&self, state: &AtomicU64, now: u64) -> Option<Decision> {
        self.check_n_live(state, now, 1)
    }

    /// Like [`Gcra::check_n`], but returns `None` on the [`RETIRED`] marker.
    pub(crate) fn check_n_live(&self, state: &AtomicU64, now: u64, n: u64) -> Option<Decision> {
        let mut stored = state.load(Ordering::Acquire);
        loop {
            if stored == RETIRED {
                return None;
            }
            let (decision, new_tat) = self.decide(stored, now, n);
            if !decision.allowed {
                // Not stored: a rejected request consumes no quota.
                return Some(decision);
            }
            match state.compare_exchange_weak(stored, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(decision),
                Err(actual) => stored = actual,
            }
        }
    }

    /// burst * T: how far past `now` the TAT may reach.
    fn window_ns(&self) -> u64 {
        self.tolerance_ns.saturating_add(self.emission_interval_ns)
    }

    /// The decision for a first request of `n` units on a state that is not kept (full
    /// capacity).
    pub(crate) fn check_fresh(&self, now: u64, n: u64) -> Decision {
        self.decide(0, now, n).0
    }

    /// The pure GCRA step: the decision for `n` cells at `now` given the stored TAT, and the
    /// TAT to store if they are admitted.
    fn decide(&self, stored_tat: u64, now: u64, n: u64) -> (Decision, u64) {
        let tat = stored_tat.max(now);
        let cost = self.emission_interval_ns.saturating_mul(n);
        let new_tat = tat.saturating_add(cost).min(MAX_TAT);
        let window = self.window_ns();
        let horizon = now.saturating_add(window);
        let limit = self.burst();
        if new_tat > horizon {
            // What is left now, short of `n`: 0 for a single cell, since it did not fit.
            let remaining = horizon.saturating_sub(tat) / self.emission_interval_ns;
            let reset_after_ns = tat - now;
            // More than the whole capacity never fits: report the wait until full capacity.
            let retry_after_ns = if cost > window {
                reset_after_ns
            } else {
                new_tat - horizon
            };
            let decision = Decision {
                allowed: false,
                limit,
                remaining,
                reset_after_ns,
                retry_after_ns,
            };
            return (decision, stored_tat);
        }
        let decision = Decision {
            allowed: true,
            limit,
            remaining: (horizon - new_tat) / self.emission_interval_ns,
            reset_after_ns: new_tat - now,
            retry_after_ns: 0,
        };
        (decision, new_tat)
    }
}

/// A rate of `per_second` requests with `burst` at once, 0 = one second's worth (at least 1).
pub fn gcra_per_second(per_second: f64, burst: u32) -> Option<Gcra> {
    let burst = if burst == 0 {
        per_second.ceil().max(1.0) as u64
    } else {
        burst as u64
    };
    Gcra::from_rate(per_second, burst)
}

/// `per_minute` requests with a whole minute's quota admissible at once.
pub fn gcra_per_minute(per_minute: u64) -> Option<Gcra> {
    Gcra::per_minute(per_minute, per_minute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::sync::Arc;

    const SEC: u64 = NANOS_PER_SEC;

    #[test]
    fn zero_count_means_no_limit() {
        assert_eq!(Gcra::per_second(0, 5), None);
        assert_eq!(Gcra::new(5, Duration::ZERO, 5), None);
    }

    #[test]
    fn zero_burst_defaults_to_the_whole_period_quota() {
        let gcra = Gcra::per_minute(60, 0).unwrap();
        assert_eq!(gcra.burst(), 60);
        assert_eq!(gcra.emission_interval_ns(), SEC);
    }

    #[test]
    fn admits_exactly_n_per_window_then_rejects() {
        let clock = ManualClock::new(1_000 * SEC);
        let gcra = Gcra::per_minute(10, 0).unwrap();
        let state = AtomicU64::new(0);
        let now = clock.now_nanos();
        for i in 0..10u64 {
            let d = gcra.check(&state, now);
            assert!(d.allowed, "request {i} should be admitted");
            assert_eq!(d.limit, 10);
            assert_eq!(d.remaining, 9 - i);
            assert_eq!(d.retry_after_ns, 0);
            assert_eq!(d.reset_after_ns, (i + 1) * 6 * SEC);
        }
        let rejected = gcra.check(&state, now);
        assert!(!rejected.allowed);
        assert_eq!(rejected.remaining, 0);
        assert_eq!(rejected.limit, 10);
        // One slot frees up every 6 s (60 s / 10).
        assert_eq!(rejected.retry_after_ns, 6 * SEC);
        assert_eq!(rejected.retry_after_secs(), 6);
        assert_eq!(rejected.reset_after_ns, 60 * SEC);
        assert_eq!(rejected.reset_after_secs(), 60);
    }

    #[test]
    fn retry_after_seconds_round_up() {
        let gcra = Gcra::new(3, Duration::from_secs(1), 1).unwrap();
        let state = AtomicU64::new(0);
        assert!(gcra.check(&state, SEC).allowed);
        let rejected = gcra.check(&state, SEC);
        assert!(!rejected.allowed);
        assert_eq!(rejected.retry_after_ns, 333_333_333);
        assert_eq!(rejected.retry_after_secs(), 1);
    }

    #[test]
    fn admits_again_once_the_retry_after_has_passed() {
        let clock = ManualClock::new(0);
        let gcra = Gcra::per_second(2, 2).unwrap();
        let state = AtomicU64::new(0);
        assert!(gcra.check(&state, clock.now_nanos()).allowed);
        assert!(gcra.check(&state, clock.now_nanos()).allowed);
        let rejected = gcra.check(&state, clock.now_nanos());
        assert!(!rejected.allowed);
        clock.advance(Duration::from_nanos(rejected.retry_after_ns - 1));
        assert!(!gcra.check(&state, clock.now_nanos()).allowed);
        clock.advance(Duration::from_nanos(1));
        assert!(gcra.check(&state, clock.now_nanos()).allowed);
    }

    #[test]
    fn quota_refills_fully_after_a_quiet_window() {
        let clock = ManualClock::new(0);
        let gcra = Gcra::per_second(5, 5).unwrap();
        let state = AtomicU64::new(0);
        for _ in 0..5 {
            assert!(gcra.check(&state, clock.now_nanos()).allowed);
        }
        assert!(!gcra.check(&state, clock.now_nanos()).allowed);
        clock.advance(Duration::from_secs(1));
        let admitted = (0..10)
            .filter(|_| gcra.check(&state, clock.now_nanos()).allowed)
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn rejected_request_consumes_nothing() {
        let gcra = Gcra::per_second(1, 1).unwrap();
        let state = AtomicU64::new(0);
        assert!(gcra.check(&state, 0).allowed);
        let tat_after_admit = state.load(Ordering::Relaxed);
        for _ in 0..100 {
            assert!(!gcra.check(&state, SEC / 2).allowed);
        }
        assert_eq!(state.load(Ordering::Relaxed), tat_after_admit);
        // Exactly one interval after the admitted one, the next is admitted.
        assert!(gcra.check(&state, SEC).allowed);
    }

    #[test]
    fn burst_is_admitted_at_once_then_steady_rate_applies() {
        let gcra = Gcra::per_second(1, 3).unwrap();
        let state = AtomicU64::new(0);
        let now = 10 * SEC;
        let burst = (0..10).filter(|_| gcra.check(&state, now).allowed).count();
        assert_eq!(burst, 3);
        // After the burst, one more per second.
        assert!(!gcra.check(&state, now + SEC - 1).allowed);
        assert!(gcra.check(&state, now + SEC).allowed);
        assert!(!gcra.check(&state, now + SEC).allowed);
    }

    #[test]
    fn two_threads_on_one_state_admit_exactly_the_burst() {
        let gcra = Gcra::per_minute(1_000, 1_000).unwrap();
        let state = Arc::new(AtomicU64::new(0));
        let now = 5 * SEC;
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let state = Arc::clone(&state);
                std::thread::spawn(move || {
                    (0..2_000)
                        .filter(|_| gcra.check(&state, now).allowed)
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 1_000);
    }

    #[test]
    fn retired_state_is_reported_not_checked() {
        let gcra = Gcra::per_second(1, 1).unwrap();
        let state = AtomicU64::new(RETIRED);
        assert_eq!(gcra.check_live(&state, 0), None);
        assert!(!gcra.check(&state, 0).allowed);
        assert_eq!(state.load(Ordering::Relaxed), RETIRED);
    }

    #[test]
    fn fractional_rate_spaces_requests_two_seconds_apart() {
        let gcra = Gcra::from_rate(0.5, 0).unwrap();
        assert_eq!(gcra.emission_interval_ns(), 2 * SEC);
        assert_eq!(gcra.burst(), 1);
        let state = AtomicU64::new(0);
        assert!(gcra.check(&state, 10 * SEC).allowed);
        let rejected = gcra.check(&state, 11 * SEC);
        assert!(!rejected.allowed);
        assert_eq!(rejected.retry_after_ns, SEC);
        assert!(gcra.check(&state, 12 * SEC).allowed);
    }

    #[test]
    fn fractional_rate_zero_burst_is_one_seconds_worth_rounded_up() {
        let gcra = Gcra::from_rate(2.5, 0).unwrap();
        assert_eq!(gcra.emission_interval_ns(), 400_000_000);
        assert_eq!(gcra.burst(), 3);
        assert_eq!(Gcra::from_rate(2.5, 7).unwrap().burst(), 7);
    }

    #[test]
    fn fractional_rate_whole_number_matches_per_second() {
        assert_eq!(Gcra::from_rate(5.0, 5), Gcra::per_second(5, 5));
    }

    #[test]
    fn non_positive_or_nan_rate_means_no_limit() {
        assert_eq!(Gcra::from_rate(0.0, 1), None);
        assert_eq!(Gcra::from_rate(-1.0, 1), None);
        assert_eq!(Gcra::from_rate(f64::NAN, 1), None);
        assert_eq!(Gcra::from_rate(f64::INFINITY, 1), None);
    }

    /// 600 tokens per minute: one token every 100 ms, capacity 600.
    fn tpm_600() -> Gcra {
        Gcra::per_minute(600, 0).unwrap()
    }

    #[test]
    fn weighted_check_admits_n_units_that_fit_and_reports_tokens_left() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        let now = 100 * SEC;
        let d = gcra.check_n(&state, now, 250);
        assert!(d.allowed);
        assert_eq!(d.limit, 600);
        assert_eq!(d.remaining, 350);
        assert_eq!(d.reset_after_ns, 25 * SEC);
        assert_eq!(d.retry_after_ns, 0);
        assert_eq!(state.load(Ordering::Relaxed), now + 25 * SEC);
        let d = gcra.check_n(&state, now, 350);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after_ns, 60 * SEC);
    }

    #[test]
    fn weighted_check_rejects_what_does_not_fit_yet_and_stores_nothing() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        let now = 100 * SEC;
        assert!(gcra.check_n(&state, now, 500).allowed);
        let stored = state.load(Ordering::Relaxed);
        let d = gcra.check_n(&state, now, 150);
        assert!(!d.allowed);
        assert_eq!(d.limit, 600);
        assert_eq!(d.remaining, 100);
        // 50 more tokens refill in 5 s.
        assert_eq!(d.retry_after_ns, 5 * SEC);
        assert_eq!(d.reset_after_ns, 50 * SEC);
        assert_eq!(state.load(Ordering::Relaxed), stored);
        assert!(!gcra.check_n(&state, now + 5 * SEC - 1, 150).allowed);
        assert!(gcra.check_n(&state, now + 5 * SEC, 150).allowed);
    }

    #[test]
    fn weighted_check_of_one_unit_matches_check() {
        let gcra = Gcra::per_minute(10, 0).unwrap();
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        for i in 0..12 {
            let now = i * SEC;
            assert_eq!(gcra.check(&a, now), gcra.check_n(&b, now, 1));
        }
        assert_eq!(a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
    }

    #[test]
    fn weighted_check_bigger_than_capacity_never_passes() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        let now = 100 * SEC;
        let at_rest = gcra.check_n(&state, now, 601);
        assert!(!at_rest.allowed);
        assert_eq!(at_rest.remaining, 600);
        assert_eq!(at_rest.retry_after_ns, 0);
        assert!(gcra.check_n(&state, now, 100).allowed);
        let busy = gcra.check_n(&state, now, 10_000);
        assert!(!busy.allowed);
        // Retry-after is the time until full capacity: 100 tokens = 10 s.
        assert_eq!(busy.retry_after_ns, 10 * SEC);
        assert_eq!(busy.reset_after_ns, 10 * SEC);
        assert!(!gcra.check_n(&state, now + 3_600 * SEC, 601).allowed);
        assert_eq!(state.load(Ordering::Relaxed), now + 10 * SEC);
    }

    #[test]
    fn adjust_charge_moves_tat_past_the_tolerance_and_next_request_waits() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        let now = 100 * SEC;
        assert!(gcra.check_n(&state, now, 500).allowed);
        gcra.adjust(&state, now, 300);
        // 800 tokens charged against a capacity of 600: 200 over, 20 s of refill.
        assert_eq!(state.load(Ordering::Relaxed), now + 80 * SEC);
        let d = gcra.check_n(&state, now, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_ns, 20 * SEC + 100_000_000);
        assert!(
            gcra.check_n(&state, now + 20 * SEC + 100_000_000, 1)
                .allowed
        );
    }

    #[test]
    fn adjust_charge_on_a_full_bucket_counts_from_now() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        gcra.adjust(&state, 100 * SEC, 50);
        assert_eq!(state.load(Ordering::Relaxed), 105 * SEC);
    }

    #[test]
    fn adjust_refund_gives_back_unused_units() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        let now = 100 * SEC;
        assert!(gcra.check_n(&state, now, 600).allowed);
        assert!(!gcra.check_n(&state, now, 200).allowed);
        gcra.adjust(&state, now, -400);
        assert_eq!(state.load(Ordering::Relaxed), now + 20 * SEC);
        let d = gcra.check_n(&state, now, 200);
        assert!(d.allowed);
        assert_eq!(d.remaining, 200);
    }

    #[test]
    fn adjust_refund_never_goes_below_now() {
        let gcra = tpm_600();
        let state = AtomicU64::new(0);
        let now = 100 * SEC;
        assert!(gcra.check_n(&state, now, 100).allowed);
        // Half the reservation has refilled already; refunding all of it must not bank credit.
        gcra.adjust(&state, now + 5 * SEC, -100);
        assert_eq!(state.load(Ordering::Relaxed), now + 5 * SEC);
        let d = gcra.check_n(&state, now + 5 * SEC, 600);
        assert!(d.allowed);
        assert!(!gcra.check_n(&state, now + 5 * SEC, 1).allowed);
    }

    #[test]
    fn adjust_refund_on_a_full_bucket_changes_nothing() {
        let gcra = tpm_600();
        let state = AtomicU64::new(7 * SEC);
        gcra.adjust(&state, 100 * SEC, -50);
        assert_eq!(state.load(Ordering::Relaxed), 7 * SEC);
    }

    #[test]
    fn adjust_leaves_a_retired_state_alone() {
        let gcra = tpm_600();
        let state = AtomicU64::new(RETIRED);
        assert_eq!(gcra.adjust_live(&state, 0, 10), None);
        gcra.adjust(&state, 0, -10);
        assert_eq!(state.load(Ordering::Relaxed), RETIRED);
    }

    #[test]
    fn two_threads_weighted_admit_exactly_the_capacity() {
        let gcra = Gcra::per_minute(10_000, 0).unwrap();
        let state = Arc::new(AtomicU64::new(0));
        let now = 5 * SEC;
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let state = Arc::clone(&state);
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter(|_| gcra.check_n(&state, now, 7).allowed)
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 10_000 / 7);
    }

    #[test]
    fn default_burst_is_one_seconds_worth_and_at_least_one() {
        assert_eq!(gcra_per_second(5.0, 0).unwrap().burst(), 5);
        assert_eq!(gcra_per_second(0.5, 0).unwrap().burst(), 1);
        assert_eq!(gcra_per_second(2.0, 7).unwrap().burst(), 7);
        assert!(gcra_per_second(0.0, 0).is_none());
        assert_eq!(gcra_per_minute(30).unwrap().burst(), 30);
    }
}

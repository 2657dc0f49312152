//! Admission state shared by every worker: the limiter tables that keys, teams, routes and
//! client addresses are counted in, and the `x-ratelimit-*` headers their decisions report.
//!
//! One [`Admission`] lives in [`Shared`](crate::snapshot::Shared) for the life of the process,
//! so a key's quota survives config reloads and is the same on every core. Route limiter state
//! is looked up by route name when a snapshot is built (never on the request path), so a reload
//! that keeps a route keeps its counters too. A background thread sweeps quiet entries.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::budget::{usd_to_nano, BudgetLimit, Period};
use super::gcra::{Decision, Gcra};
use super::table::LimiterTable;
use crate::clock::{Clock, SystemClock};
use crate::http1::StrBuf;

/// Entries per keyed table before new keys are admitted without state (see
/// [`LimiterTable`]): far above any real key count, small enough to bound memory (~100 MB).
const MAX_ENTRIES: usize = 1_000_000;

/// How often quiet limiter entries are reclaimed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Limiter state of one route, kept across reloads by route name.
pub struct RouteLimiter {
    /// TAT of the route-wide `rate_limit`.
    pub tat: AtomicU64,
    /// Per client address, for `ip_rate_limit`.
    pub per_ip: LimiterTable<IpAddr>,
}

impl RouteLimiter {
    fn new() -> RouteLimiter {
        RouteLimiter {
            tat: AtomicU64::new(0),
            per_ip: LimiterTable::new(MAX_ENTRIES),
        }
    }
}

/// Every limiter the request path consults.
pub struct Admission {
    /// The time source of every GCRA check.
    pub clock: Arc<dyn Clock>,
    /// Per key id: `rps`, and the in-flight count for `max_concurrency`.
    pub key_second: LimiterTable<String>,
    /// Per key id: `rpm`.
    pub key_minute: LimiterTable<String>,
    /// Per key id: `tpm`.
    pub key_tokens: LimiterTable<String>,
    /// Per team: `[[team]] rpm`.
    pub team_minute: LimiterTable<String>,
    /// Per team: `[[team]] tpm`.
    pub team_tokens: LimiterTable<String>,
    routes: Mutex<HashMap<String, Arc<RouteLimiter>>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(Arc::new(SystemClock::new()))
    }
}

impl Admission {
    /// Empty tables over `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Admission {
        Admission {
            clock,
            key_second: LimiterTable::new(MAX_ENTRIES),
            key_minute: LimiterTable::new(MAX_ENTRIES),
            key_tokens: LimiterTable::new(MAX_ENTRIES),
            team_minute: LimiterTable::new(MAX_ENTRIES),
            team_tokens: LimiterTable::new(MAX_ENTRIES),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// Nanoseconds on the limiters' clock.
    pub fn now(&self) -> u64 {
        self.clock.now_nanos()
    }

    /// The limiter state of route `name` (created on first use; kept across reloads).
    /// Called while building a snapshot, off the request path.
    pub fn route(&self, name: &str) -> Arc<RouteLimiter> {
        Arc::clone(
            self.routes
                .lock()
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(RouteLimiter::new())),
        )
    }

    /// Drops the state of routes no longer configured (after a reload).
    pub fn retain_routes(&self, names: &[&str]) {
        self.routes
            .lock()
            .retain(|name, _| names.contains(&name.as_str()));
    }

    /// Removes quiet entries from every table; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let routes: Vec<Arc<RouteLimiter>> = self.routes.lock().values().cloned().collect();
        let mut removed = self.key_second.sweep(now)
            + self.key_minute.sweep(now)
            + self.key_tokens.sweep(now)
            + self.team_minute.sweep(now)
            + self.team_tokens.sweep(now);
        for route in routes {
            removed += route.per_ip.sweep(now);
        }
        removed
    }

    /// Starts the thread that sweeps every [`SWEEP_INTERVAL`] until `stop` is set.
    pub fn start_sweeper(
        self: &Arc<Self>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> JoinHandle<()> {
        let admission = Arc::clone(self);
        std::thread::Builder::new()
            .name("cf-limits-sweep".into())
            .spawn(move || {
                // Short naps so a stop is noticed quickly; a sweep every SWEEP_INTERVAL.
                let nap = SWEEP_INTERVAL / 10;
                let mut slept = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(nap);
                    slept += nap;
                    if slept >= SWEEP_INTERVAL {
                        slept = Duration::ZERO;
                        admission.sweep();
                    }
                }
            })
            .expect("failed to start the limiter sweeper thread")
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

/// A budget from its settings (a key's or a `[[team]]`'s); `None` when nothing is capped.
/// An unknown period counts as `total`: config validation and the key store refuse them.
pub fn budget_limit(
    usd: Option<f64>,
    tokens: Option<u64>,
    period: Option<&str>,
) -> Option<BudgetLimit> {
    let limit = BudgetLimit {
        tokens,
        nano_usd: usd.map(usd_to_nano),
        period: Period::from_setting(period).unwrap_or(Period::Total),
    };
    limit.is_limited().then_some(limit)
}

/// Budget scope names in the [`BudgetTable`](crate::limits::BudgetTable).
pub fn key_scope(id: &str) -> String {
    format!("key:{id}")
}

/// See [`key_scope`].
pub fn team_scope(team: &str) -> String {
    format!("team:{team}")
}

/// The decisions a response reports in its `x-ratelimit-*` headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateReport {
    /// The request limiter with the least remaining.
    pub requests: Option<Decision>,
    /// The token limiter with the least remaining.
    pub tokens: Option<Decision>,
}

impl RateReport {
    /// Records a request-limiter decision, keeping the most constraining one.
    pub fn requests(&mut self, d: Decision) {
        self.requests = Some(most_constraining(self.requests, d));
    }

    /// Records a token-limiter decision, keeping the most constraining one.
    pub fn tokens(&mut self, d: Decision) {
        self.tokens = Some(most_constraining(self.tokens, d));
    }

    /// Whether there is anything to report.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Appends the `x-ratelimit-*` header lines (OpenAI's names) to `out`.
    pub fn write_headers(&self, out: &mut Vec<u8>) {
        for (suffix, decision) in [("requests", self.requests), ("tokens", self.tokens)] {
            if let Some(d) = decision {
                let _ = write!(
                    StrBuf(out),
                    "x-ratelimit-limit-{suffix}: {}\r\nx-ratelimit-remaining-{suffix}: {}\r\nx-ratelimit-reset-{suffix}: {}\r\n",
                    d.limit,
                    d.remaining,
                    format_reset(d.reset_after_ns)
                );
            }
        }
    }
}

fn most_constraining(current: Option<Decision>, new: Decision) -> Decision {
    match current {
        Some(c) if c.remaining < new.remaining => c,
        Some(c) if c.remaining == new.remaining && c.reset_after_ns >= new.reset_after_ns => c,
        _ => new,
    }
}

/// A duration in the style OpenAI uses for `x-ratelimit-reset-*` (Go's `Duration.String`
/// rounded to milliseconds): `"0s"`, `"250ms"`, `"1s"`, `"1.5s"`, `"6m0s"`, `"1h2m3s"`.
pub fn format_reset(ns: u64) -> String {
    let ms = ns.div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let seconds_ms = ms % 60_000;
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let (whole, frac) = (seconds_ms / 1000, seconds_ms % 1000);
    if frac == 0 {
        let _ = write!(out, "{whole}s");
    } else {
        let frac = format!("{frac:03}");
        let _ = write!(out, "{whole}.{}s", frac.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ManualClock;

    fn decision(remaining: u64, reset_after_ns: u64) -> Decision {
        Decision {
            allowed: true,
            limit: 10,
            remaining,
            reset_after_ns,
            retry_after_ns: 0,
        }
    }

    #[test]
    fn reset_durations_read_like_openai_headers() {
        assert_eq!(format_reset(0), "0s");
        assert_eq!(format_reset(250_000_000), "250ms");
        assert_eq!(format_reset(1), "1ms");
        assert_eq!(format_reset(1_000_000_000), "1s");
        assert_eq!(format_reset(1_500_000_000), "1.5s");
        assert_eq!(format_reset(360_000_000_000), "6m0s");
        assert_eq!(format_reset(3_723_000_000_000), "1h2m3s");
        assert_eq!(format_reset(61_250_000_000), "1m1.25s");
    }

    #[test]
    fn report_keeps_the_limiter_with_least_remaining() {
        let mut report = RateReport::default();
        report.requests(decision(5, 1_000_000_000));
        report.requests(decision(2, 500_000_000));
        report.requests(decision(7, 9_000_000_000));
        assert_eq!(report.requests.unwrap().remaining, 2);
        let mut out = Vec::new();
        report.write_headers(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x-ratelimit-limit-requests: 10\r\nx-ratelimit-remaining-requests: 2\r\nx-ratelimit-reset-requests: 500ms\r\n"
        );
    }

    #[test]
    fn default_burst_is_one_seconds_worth_and_at_least_one() {
        assert_eq!(gcra_per_second(5.0, 0).unwrap().burst(), 5);
        assert_eq!(gcra_per_second(0.5, 0).unwrap().burst(), 1);
        assert_eq!(gcra_per_second(2.0, 7).unwrap().burst(), 7);
        assert!(gcra_per_second(0.0, 0).is_none());
        assert_eq!(gcra_per_minute(30).unwrap().burst(), 30);
    }

    #[test]
    fn route_state_survives_a_lookup_by_the_same_name() {
        let admission = Admission::new(Arc::new(ManualClock::new(0)));
        let a = admission.route("api");
        let b = admission.route("api");
        assert!(Arc::ptr_eq(&a, &b));
        admission.retain_routes(&["other"]);
        assert!(!Arc::ptr_eq(&a, &admission.route("api")));
    }

    #[test]
    fn sweep_reclaims_quiet_keys() {
        let clock = Arc::new(ManualClock::new(1_000));
        let admission = Admission::new(clock.clone());
        let gcra = gcra_per_second(10.0, 0).unwrap();
        admission.key_second.check("k1", &gcra, admission.now());
        assert_eq!(admission.key_second.len(), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(admission.sweep(), 1);
        assert!(admission.key_second.is_empty());
    }
}

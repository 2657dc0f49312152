//! Admission state shared by every worker: the limiter tables that keys, teams, routes and
//! client addresses are counted in.
//!
//! One [`Admission`] lives in [`Shared`](crate::snapshot::Shared) for the life of the process,
//! so a key's quota survives config reloads and is the same on every core. Route limiter state
//! is looked up by route name when a snapshot is built (never on the request path), so a reload
//! that keeps a route keeps its counters too. A background thread sweeps quiet entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::gcra::Gcra;
use super::table::LimiterTable;
use crate::clock::{Clock, SystemClock};
use crate::cluster::{FleetRates, RateKind};

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
    /// The fleet-wide rates, when `[cluster]` is on: keys' and teams' rates are then also
    /// taken from this node's fleet allowance. Unset: every rate is this node's alone.
    fleet_rates: OnceLock<Arc<FleetRates>>,
    routes: Mutex<HashMap<String, Arc<RouteLimiter>>>,
    /// Fleet-wide `max_concurrency` (leases in Redis), set once when `[cluster]` is on;
    /// unset, a key's concurrency is counted on this node alone (`key_second`).
    fleet_leases: OnceLock<Arc<crate::cluster::FleetLeases>>,
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
            fleet_rates: OnceLock::new(),
            routes: Mutex::new(HashMap::new()),
            fleet_leases: OnceLock::new(),
        }
    }

    /// Makes keys' and teams' rates fleet-wide. Called once, at start-up, before the workers
    /// serve; a second call is refused (the first table stays).
    pub fn set_fleet_rates(&self, rates: Arc<FleetRates>) -> Result<(), String> {
        self.fleet_rates
            .set(rates)
            .map_err(|_| "fleet rates are already set".to_string())
    }

    /// The fleet-wide rates, if the cluster is on.
    pub fn fleet_rates(&self) -> Option<&Arc<FleetRates>> {
        self.fleet_rates.get()
    }

    /// The table a key's or team's rate of `kind` is counted in on this node.
    pub fn rate_table(&self, kind: RateKind) -> &LimiterTable<String> {
        match kind {
            RateKind::KeyRps => &self.key_second,
            RateKind::KeyRpm => &self.key_minute,
            RateKind::KeyTpm => &self.key_tokens,
            RateKind::TeamRpm => &self.team_minute,
            RateKind::TeamTpm => &self.team_tokens,
        }
    }

    /// The rate this node's local check enforces for the fleet-wide rate `gcra`: the rate as
    /// is, or this node's share of it while the fleet's Redis is unreachable.
    pub fn local_gcra(&self, gcra: Gcra) -> Gcra {
        match self.fleet_rates.get() {
            Some(fleet) => fleet.local_gcra(&gcra),
            None => gcra,
        }
    }

    /// Switches `max_concurrency` to the fleet's leases. Called once, at start-up, before
    /// the workers serve; a second call is refused (the first table stays).
    pub fn set_fleet_leases(&self, leases: Arc<crate::cluster::FleetLeases>) -> Result<(), String> {
        self.fleet_leases
            .set(leases)
            .map_err(|_| "fleet leases are already set".to_string())
    }

    /// The fleet's leases when fleet mode is on.
    pub fn fleet_leases(&self) -> Option<&crate::cluster::FleetLeases> {
        self.fleet_leases.get().map(Arc::as_ref)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::limits::gcra_per_second;

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

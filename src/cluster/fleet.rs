//! [`Fleet`]: fleet mode switched on. With `[cluster] redis` set, `serve` starts one: it
//! builds every participant (the state the link keeps in step with Redis), starts the
//! [`Link`] thread with them, and points the request path at their shared tables through the
//! `OnceLock`s the limits expose. Stopping it (on the drain, after the last request) sends
//! the participants' farewells, so this node's leases go back to the fleet at once instead of
//! lapsing after their TTL.

use std::sync::Arc;

use super::budgets::{BudgetSync, FleetBudgets};
use super::leases::{FleetLeases, LeaseSync};
use super::link::{Link, LinkSettings, LinkStatus, Participant};
use super::rates::{FleetRates, RateSync};
use super::target::RedisTarget;
use crate::config::ClusterConfig;
use crate::limits::{Admission, BudgetTable};

/// The most keys (or teams) whose fleet concurrency, fleet rates of one kind or fleet budgets
/// one node tracks at once, like the local limiter tables: far above any real key count, a bound on
/// memory and on one tick's calls.
pub const MAX_FLEET_KEYS: usize = 1_000_000;

/// The running fleet mode of this node.
pub struct Fleet {
    link: Link,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("link", &self.link).finish()
    }
}

impl Fleet {
    /// The link settings `[cluster]` describes for node `node`: the Redis URL resolved and
    /// checked (errors name it only redacted), the sync interval as the tick. `None` when
    /// fleet mode is off.
    pub fn settings(cluster: &ClusterConfig, node: &str) -> Result<Option<LinkSettings>, String> {
        let Some(reference) = &cluster.redis else {
            return Ok(None);
        };
        let url = reference
            .resolve()
            .map_err(|e| format!("cluster.redis: cannot resolve secret: {e}"))?;
        let target = RedisTarget::parse(url.expose()).map_err(|e| format!("cluster.redis: {e}"))?;
        Ok(Some(LinkSettings {
            target,
            node: node.to_string(),
            tick: cluster.sync_interval(),
        }))
    }

    /// Builds the participants, starts the link (it connects in the background: an
    /// unreachable Redis only makes the node degraded) and switches the request path's
    /// limits to the fleet's tables.
    pub fn start(
        settings: LinkSettings,
        admission: &Admission,
        budgets: &BudgetTable,
    ) -> Result<Fleet, String> {
        let leases = FleetLeases::with_first_use_credit(MAX_FLEET_KEYS);
        let rates = FleetRates::new(MAX_FLEET_KEYS, settings.tick);
        let fleet_budgets = FleetBudgets::new(MAX_FLEET_KEYS);
        // Every piece of fleet state, in one list: the link loads their scripts and sends
        // their calls in this order.
        let participants: Vec<Box<dyn Participant>> = vec![
            Box::new(LeaseSync::new(
                Arc::clone(&leases),
                &settings.node,
                settings.tick,
            )?),
            Box::new(RateSync::new(Arc::clone(&rates), &settings.node)?),
            Box::new(BudgetSync::new(
                Arc::clone(&fleet_budgets),
                &settings.node,
                settings.tick,
            )?),
        ];
        log::info!(
            "cluster: fleet mode on as node {} with Redis at {}, syncing every {:?}",
            settings.node,
            settings.target,
            settings.tick
        );
        let link = Link::start(settings, participants)?;
        // Only after the link runs: a table the request path uses must have someone
        // obtaining its leases.
        admission.set_fleet_leases(leases)?;
        admission.set_fleet_rates(rates)?;
        // The budgets the ledger seeded become the fleet's starting view.
        budgets.set_fleet(fleet_budgets)?;
        Ok(Fleet { link })
    }

    /// The link's status (degraded, round trips, errors, live nodes), for metrics and
    /// `/healthz`.
    pub fn status(&self) -> &Arc<LinkStatus> {
        self.link.status()
    }

    /// Stops the link after one last round trip giving back what this node holds. Call once
    /// every request has finished (a lease given back under a running request would let
    /// another node exceed the limit).
    pub fn stop(self) {
        self.link.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretRef;

    #[test]
    fn settings_follow_the_section_and_never_show_the_password() {
        let off = ClusterConfig::default();
        assert!(Fleet::settings(&off, "edge-1").unwrap().is_none());

        std::env::set_var("CF_TEST_FLEET_REDIS", "redis://cf:pw-fleet-77@cache:6379/1");
        let on = ClusterConfig {
            redis: Some(SecretRef::Env("CF_TEST_FLEET_REDIS".into())),
            sync_interval_ms: 250,
        };
        let settings = Fleet::settings(&on, "edge-1").unwrap().unwrap();
        assert_eq!(settings.node, "edge-1");
        assert_eq!(settings.tick, std::time::Duration::from_millis(250));
        assert!(!format!("{settings:?}").contains("pw-fleet-77"));

        std::env::set_var(
            "CF_TEST_FLEET_BAD_REDIS",
            "http://cf:pw-fleet-78@cache:6379",
        );
        let bad = ClusterConfig {
            redis: Some(SecretRef::Env("CF_TEST_FLEET_BAD_REDIS".into())),
            ..ClusterConfig::default()
        };
        let error = Fleet::settings(&bad, "edge-1").unwrap_err();
        assert!(error.starts_with("cluster.redis: "), "{error}");
        assert!(!error.contains("pw-fleet-78"), "{error}");
    }

    #[test]
    fn starting_switches_concurrency_to_the_fleet_leases_once() {
        // An unreachable Redis is no error at start: the link connects in the background.
        let settings = LinkSettings {
            target: RedisTarget::parse("redis+unix:///nonexistent/cf-fleet-test.sock").unwrap(),
            node: "edge-1".into(),
            tick: std::time::Duration::from_millis(50),
        };
        let admission = Admission::default();
        let budgets = BudgetTable::new();
        assert!(admission.fleet_leases().is_none());
        let fleet = Fleet::start(settings, &admission, &budgets).unwrap();
        assert!(admission.fleet_leases().is_some());
        assert!(admission.fleet_rates().is_some());
        assert!(budgets.fleet().is_some());
        assert!(fleet.status().degraded());
        let again = admission.set_fleet_leases(FleetLeases::new(1));
        assert!(again.is_err(), "the first table stays");
        fleet.stop();
    }
}

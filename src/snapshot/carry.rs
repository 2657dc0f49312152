//! Runtime state that outlives one config load, found again by name when a reload builds the
//! next snapshot.
//!
//! Every piece of per-object runtime state is kept the same way: in a [`ByName`] registry that
//! hands out one shared `Arc` per identity, so the old and the new snapshot point at the same
//! counters and no update made between the build and the swap is lost. An identity includes
//! what the state is about, not just the name: a target's health is keyed by its upstream and
//! its `host:port`, a circuit breaker by its provider and endpoint. A reload that changes an
//! identity (a new target, a provider pointed elsewhere) starts that part fresh and keeps the
//! rest. Registries:
//!
//! - route limiters: [`crate::limits::Admission::route`] (by route name);
//! - route metrics: [`crate::metrics::Metrics::route`] (by route name);
//! - target health and provider circuit breakers: [`Carried`], here.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Snapshot;
use crate::ai::breaker::Breaker;
use crate::ai::Catalog;
use crate::upstream::{TargetHealth, Upstream};

/// Shared state per identity `K`: the same key always gives the same `Arc` until the entry is
/// dropped by [`ByName::retain`]. Locked only while building a snapshot, never per request.
pub struct ByName<K, T> {
    entries: Mutex<HashMap<K, Arc<T>>>,
}

impl<K, T> Default for ByName<K, T> {
    fn default() -> Self {
        ByName {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, T> ByName<K, T> {
    /// The state of `key`, made by `make` on first use.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> T) -> Arc<T> {
        Arc::clone(
            self.entries
                .lock()
                .entry(key)
                .or_insert_with(|| Arc::new(make())),
        )
    }

    /// Drops every entry `keep` says no to (state of things the current config no longer has).
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.lock().retain(|key, _| keep(key));
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash, T: Default> ByName<K, T> {
    /// The state of `key`, a default one on first use.
    pub fn get(&self, key: K) -> Arc<T> {
        self.get_or_insert_with(key, T::default)
    }
}

/// Whose targets a health entry belongs to: `[[upstream]]` and `[[provider]]` names are
/// separate namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Upstream,
    Provider,
}

/// A target's identity: its owner's kind and name, and its `host:port` as configured.
type TargetId = (Owner, String, String);

/// A circuit breaker's identity: the provider's name and endpoint ([`crate::ai::catalog::Provider::endpoint`]).
type ProviderId = (String, String);

/// The upstream-side state that a reload carries over: passive health per target and the
/// circuit breaker per provider. Owned by [`super::Shared`] for the life of the process.
#[derive(Default)]
pub struct Carried {
    health: ByName<TargetId, TargetHealth>,
    breakers: ByName<ProviderId, Breaker>,
}

impl Carried {
    /// Gives every target of `[[upstream]]` `up` its carried health.
    pub fn adopt_upstream(&self, up: &mut Upstream) {
        let name = up.name.clone();
        up.share_health(|authority| {
            self.health
                .get((Owner::Upstream, name.clone(), authority.to_string()))
        });
    }

    /// Gives every provider of `catalog` its carried circuit breaker, and its targets their
    /// carried health.
    pub fn adopt_catalog(&self, catalog: &mut Catalog) {
        for provider in catalog.providers_mut() {
            provider.breaker = self
                .breakers
                .get((provider.name.clone(), provider.endpoint()));
            let name = provider.name.clone();
            // Freshly built, so not shared yet: `get_mut` succeeds. Were it ever shared, the
            // provider would keep its fresh health, which is the safe side of the two.
            if let Some(up) = provider.upstream.as_mut().and_then(Arc::get_mut) {
                up.share_health(|authority| {
                    self.health
                        .get((Owner::Provider, name.clone(), authority.to_string()))
                });
            }
        }
    }

    /// Forgets the state of every target and provider `current` does not have, so the
    /// registries stay as large as the config.
    pub fn retain_for(&self, current: &Snapshot) {
        let mut targets: Vec<TargetId> = Vec::new();
        for up in &current.upstreams {
            for t in &up.targets {
                targets.push((Owner::Upstream, up.name.clone(), t.authority.clone()));
            }
        }
        let mut providers: Vec<ProviderId> = Vec::new();
        for p in current.catalog.providers() {
            providers.push((p.name.clone(), p.endpoint()));
            for t in p.upstream.iter().flat_map(|u| u.targets.iter()) {
                targets.push((Owner::Provider, p.name.clone(), t.authority.clone()));
            }
        }
        self.health.retain(|id| targets.contains(id));
        self.breakers.retain(|id| providers.contains(id));
    }

    /// How many target-health and breaker entries are held.
    pub fn entry_counts(&self) -> (usize, usize) {
        (self.health.len(), self.breakers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::breaker::FAILURES_TO_OPEN;
    use crate::config::{Config, ProviderConfig, ProviderKind, SecretWatcher};

    fn upstream(name: &str, targets: &[&str]) -> Upstream {
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        Upstream::from_parts(name, &targets, None, None).unwrap()
    }

    fn catalog(providers: &[(&str, &str)]) -> Catalog {
        let config = Config {
            provider: providers
                .iter()
                .map(|(name, base_url)| ProviderConfig {
                    name: name.to_string(),
                    kind: ProviderKind::Openai,
                    base_url: base_url.to_string(),
                    api_key: None,
                    entra: None,
                    project: String::new(),
                    region: String::new(),
                    service_account: None,
                    access_key_id: None,
                    secret_access_key: None,
                    session_token: None,
                    assume_role: None,
                    ca_file: String::new(),
                    api_version: String::new(),
                    mock: Default::default(),
                    keepalive: 1,
                    keepalive_timeout_ms: 1_000,
                    responses: None,
                })
                .collect(),
            ..Config::default()
        };
        Catalog::build(&config, &SecretWatcher::start()).unwrap()
    }

    fn open(breaker: &Breaker) {
        for _ in 0..FAILURES_TO_OPEN {
            breaker.record_failure(1_000);
        }
    }

    #[test]
    fn the_same_key_gives_the_same_state_until_retain_drops_it() {
        let registry: ByName<String, TargetHealth> = ByName::default();
        let a = registry.get("a".to_string());
        assert!(Arc::ptr_eq(&a, &registry.get("a".to_string())));
        assert!(!Arc::ptr_eq(&a, &registry.get("b".to_string())));
        registry.retain(|k| k == "b");
        assert_eq!(registry.len(), 1);
        assert!(!Arc::ptr_eq(&a, &registry.get("a".to_string())));
    }

    #[test]
    fn target_health_is_carried_to_a_rebuilt_upstream() {
        let carried = Carried::default();
        let mut before = upstream("backend", &["127.0.0.1:9000", "127.0.0.1:9001"]);
        carried.adopt_upstream(&mut before);
        before.mark_failed(1);
        let mut after = upstream("backend", &["127.0.0.1:9000", "127.0.0.1:9001"]);
        carried.adopt_upstream(&mut after);
        assert!(!after.targets[0].health.is_cooling());
        assert!(after.targets[1].health.is_cooling());
        // One shared state: what the old snapshot records after the build still counts.
        before.mark_ok(1);
        assert!(!after.targets[1].health.is_cooling());
    }

    #[test]
    fn changed_targets_start_fresh_and_kept_ones_do_not() {
        let carried = Carried::default();
        let mut before = upstream("backend", &["127.0.0.1:9000", "127.0.0.1:9001"]);
        carried.adopt_upstream(&mut before);
        before.mark_failed(0);
        before.mark_failed(1);
        let mut after = upstream("backend", &["127.0.0.1:9001", "127.0.0.1:9002"]);
        carried.adopt_upstream(&mut after);
        assert!(after.targets[0].health.is_cooling(), "9001 is kept");
        assert!(!after.targets[1].health.is_cooling(), "9002 is new");
    }

    #[test]
    fn health_is_per_upstream_name() {
        let carried = Carried::default();
        let mut a = upstream("a", &["127.0.0.1:9000"]);
        carried.adopt_upstream(&mut a);
        a.mark_failed(0);
        let mut b = upstream("b", &["127.0.0.1:9000"]);
        carried.adopt_upstream(&mut b);
        assert!(!b.targets[0].health.is_cooling());
    }

    #[test]
    fn an_open_breaker_is_carried_to_a_rebuilt_catalog() {
        let carried = Carried::default();
        let mut before = catalog(&[
            ("openai", "http://127.0.0.1:9000"),
            ("other", "http://127.0.0.1:9001"),
        ]);
        carried.adopt_catalog(&mut before);
        open(&before.providers()[0].breaker);
        let mut after = catalog(&[
            ("openai", "http://127.0.0.1:9000"),
            ("other", "http://127.0.0.1:9001"),
        ]);
        carried.adopt_catalog(&mut after);
        assert!(after.providers()[0].breaker.is_open(1_000));
        assert!(!after.providers()[1].breaker.is_open(1_000));
    }

    #[test]
    fn a_provider_pointed_elsewhere_starts_with_a_closed_breaker() {
        let carried = Carried::default();
        let mut before = catalog(&[("openai", "http://127.0.0.1:9000")]);
        carried.adopt_catalog(&mut before);
        open(&before.providers()[0].breaker);
        let mut after = catalog(&[("openai", "http://127.0.0.1:9002/v2")]);
        carried.adopt_catalog(&mut after);
        assert!(!after.providers()[0].breaker.is_open(1_000));
    }

    #[test]
    fn provider_target_health_is_carried_apart_from_upstreams_of_the_same_name() {
        let carried = Carried::default();
        let mut before = catalog(&[("api", "http://127.0.0.1:9000")]);
        carried.adopt_catalog(&mut before);
        before.providers()[0]
            .upstream
            .as_ref()
            .unwrap()
            .mark_failed(0);
        let mut after = catalog(&[("api", "http://127.0.0.1:9000")]);
        carried.adopt_catalog(&mut after);
        let up = after.providers()[0].upstream.as_ref().unwrap();
        assert!(up.targets[0].health.is_cooling());
        let mut same_name = upstream("api", &["127.0.0.1:9000"]);
        carried.adopt_upstream(&mut same_name);
        assert!(!same_name.targets[0].health.is_cooling());
    }
}

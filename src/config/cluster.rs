//! `[cluster]`: the fleet's Redis, which makes per-key and per-team limits hold across every
//! node (README, "Fleet"). Without `redis` each node enforces its limits on its own.
//!
//! The node's name in the fleet is `[store] node`; with `redis` set it must also be a name
//! the cluster link accepts (it is written into Redis members).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{self, SecretRef};

/// `sync_interval_ms` when the file leaves it out.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 100;

/// The shortest sync interval: below it the link would spend its time on round trips
/// (and a lease, three ticks, would lapse after one slow scheduling hiccup).
pub const MIN_SYNC_INTERVAL_MS: u64 = 10;

/// The longest sync interval: above it the fleet's overshoot bound (one interval's worth per
/// node) and the lease time after a `kill -9` (three intervals) stop meaning much.
pub const MAX_SYNC_INTERVAL_MS: u64 = 10_000;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The fleet's Redis: `redis://[user:password@]host:port[/db]` or
    /// `redis+unix:///path/to.sock`, as a secret reference (it may carry a password).
    /// Unset: limits and budgets are enforced per node.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub redis: Option<SecretRef>,
    /// How often a node reconciles its local counters with Redis, in milliseconds.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
}

fn default_sync_interval_ms() -> u64 {
    DEFAULT_SYNC_INTERVAL_MS
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            sync_interval_ms: DEFAULT_SYNC_INTERVAL_MS,
        }
    }
}

impl ClusterConfig {
    /// Whether fleet mode is on (`redis` is set).
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }

    /// The sync interval as a duration.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }

    /// The secret references the gateway uses, with their key paths.
    pub fn secrets(&self) -> Vec<(String, &SecretRef)> {
        self.redis
            .iter()
            .map(|redis| ("cluster.redis".to_string(), redis))
            .collect()
    }

    /// Makes a relative `file:` reference relative to `base_dir` (the config file's
    /// directory), like every other secret.
    pub(crate) fn anchor_secrets(&mut self, base_dir: &std::path::Path) {
        if let Some(redis) = &mut self.redis {
            redis.anchor(base_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_section_is_off_with_the_default_interval() {
        let cluster = ClusterConfig::default();
        assert!(!cluster.enabled());
        assert!(cluster.secrets().is_empty());
        assert_eq!(cluster.sync_interval(), Duration::from_millis(100));
    }

    #[test]
    fn redis_is_a_secret_reference_anchored_like_the_others() {
        let mut cluster: ClusterConfig =
            toml::from_str("redis = \"file:redis.url\"\nsync_interval_ms = 50").unwrap();
        cluster.anchor_secrets(std::path::Path::new("/etc/cf"));
        assert!(cluster.enabled());
        assert_eq!(cluster.sync_interval_ms, 50);
        let secrets: Vec<(String, String)> = cluster
            .secrets()
            .into_iter()
            .map(|(path, secret)| (path, secret.to_string()))
            .collect();
        assert_eq!(
            secrets,
            [(
                "cluster.redis".to_string(),
                "file:/etc/cf/redis.url".to_string()
            )]
        );
    }
}

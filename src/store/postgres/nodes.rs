//! The fleet's node registry: each gateway upserts its row on a heartbeat, so an operator can
//! see which nodes are alive, what they run and which configuration they serve.

use serde::Serialize;

use super::keys::unsigned;
use super::PgStore;
use crate::store::rules::check_text;
use crate::store::{unix_now, StoreError};

/// One node as last reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// The node's `[store] node` name.
    pub node: String,
    /// The gateway version it runs.
    pub version: String,
    /// Unix seconds of its last heartbeat.
    pub last_seen: i64,
    /// How many configurations it has loaded (1 at start, +1 per reload).
    pub config_generation: u64,
}

impl PgStore {
    /// Records that `node` is alive now, running `version` with configuration number
    /// `config_generation`.
    pub fn heartbeat(
        &self,
        node: &str,
        version: &str,
        config_generation: u64,
    ) -> Result<(), StoreError> {
        if node.trim().is_empty() {
            return Err(StoreError::invalid("node", "must not be empty"));
        }
        check_text("node", node)?;
        check_text("version", version)?;
        let generation = i64::try_from(config_generation)
            .map_err(|_| StoreError::invalid("config_generation", "is too large"))?;
        self.client()?.execute(
            "INSERT INTO nodes (node, version, config_generation, last_seen) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (node) DO UPDATE SET \
             version = EXCLUDED.version, config_generation = EXCLUDED.config_generation, \
             last_seen = EXCLUDED.last_seen",
            &[&node, &version, &generation, &unix_now()],
        )?;
        Ok(())
    }

    /// Every node that has sent a heartbeat, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self.client()?.query(
            "SELECT node, version, last_seen, config_generation FROM nodes ORDER BY node",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                Ok(NodeRecord {
                    node: row.try_get(0)?,
                    version: row.try_get(1)?,
                    last_seen: row.try_get(2)?,
                    config_generation: unsigned(row.try_get(3)?, "config_generation")?,
                })
            })
            .collect()
    }
}

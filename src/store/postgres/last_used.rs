//! When each key was last used, on PostgreSQL: the `key_last_used` table (migration "key
//! last used"), written by every node's credential-cache watcher.
//!
//! A narrow table rather than a column of `keys`: a write rewrites only a small row (not a
//! key's whole row version), takes no key write lock and sends no change notification, since
//! last use is not a key change. Times are max-merged, so nodes writing in any order never
//! move one back.

use std::collections::HashMap;

use super::PgStore;
use crate::store::StoreError;

/// The migration's statements.
pub(super) const SCHEMA: &str = "
CREATE TABLE key_last_used (
    key_id       TEXT PRIMARY KEY,
    last_used_at BIGINT NOT NULL
);
";

/// Most rows one statement writes.
const CHUNK: usize = 1000;

impl PgStore {
    /// Records `(id, unix seconds)` pairs; a stored time only moves forward.
    pub fn record_last_used(&mut self, used: &[(String, i64)]) -> Result<(), StoreError> {
        // In id order, so two nodes writing overlapping sets lock rows in the same order
        // and cannot deadlock.
        let mut sorted: Vec<&(String, i64)> = used.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        for chunk in sorted.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let times: Vec<i64> = chunk.iter().map(|(_, at)| *at).collect();
            tx.execute(
                "INSERT INTO key_last_used (key_id, last_used_at) \
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[]) \
                 ON CONFLICT (key_id) DO UPDATE \
                 SET last_used_at = GREATEST(key_last_used.last_used_at, EXCLUDED.last_used_at)",
                &[&ids, &times],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every recorded last use, unix seconds by key id.
    pub fn last_used(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows = self
            .client()?
            .query("SELECT key_id, last_used_at FROM key_last_used", &[])?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

//! When each key was last used, in SQLite: a narrow table of its own beside `keys`.
//!
//! Not a column of `keys`: key writes replace the whole row (`REPLACE INTO`), which would
//! reset it, and last use is not a key change (no sequence bump, no audit entry), so it must
//! not touch the rows the change feed follows.

use std::collections::HashMap;

use rusqlite::{params, TransactionBehavior};

use super::KeyStore;
use crate::store::StoreError;

/// Created on open, like the other tables sharing `keys.db`.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS key_last_used (
    key_id       TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL
) WITHOUT ROWID;
";

impl KeyStore {
    /// Records `(id, unix seconds)` pairs in one transaction; a stored time only moves
    /// forward.
    pub fn record_last_used(&mut self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let tx = self
            .connection_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO key_last_used (key_id, last_used_at) VALUES (?1, ?2) \
                 ON CONFLICT (key_id) DO UPDATE \
                 SET last_used_at = MAX(last_used_at, excluded.last_used_at)",
            )?;
            for (id, at) in used {
                upsert.execute(params![id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every recorded last use, unix seconds by key id.
    pub fn last_used(&self) -> Result<HashMap<String, i64>, StoreError> {
        let mut select = self
            .connection()
            .prepare_cached("SELECT key_id, last_used_at FROM key_last_used")?;
        let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_use_only_moves_forward_and_survives_reopening() {
        let dir =
            std::env::temp_dir().join(format!("cf-last-used-{}", crate::store::ids::new_key_id()));
        {
            let mut store = KeyStore::open(&dir).unwrap();
            assert!(store.last_used().unwrap().is_empty());
            store
                .record_last_used(&[("key_a".into(), 200), ("key_b".into(), 100)])
                .unwrap();
            // An older time (another node's late write) does not move it back.
            store
                .record_last_used(&[("key_a".into(), 150), ("key_b".into(), 300)])
                .unwrap();
        }
        let store = KeyStore::open(&dir).unwrap();
        let used = store.last_used().unwrap();
        assert_eq!(used.get("key_a"), Some(&200));
        assert_eq!(used.get("key_b"), Some(&300));
        assert_eq!(used.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

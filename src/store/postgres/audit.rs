//! The audit log as a table: the entries of `store::audit` (`{"time","actor","action",
//! "key_id","before","after"}`), plus the node that wrote each. Key changes write their entry
//! in the change's own transaction, so the log can neither miss a change nor record one that
//! did not happen.

use ::postgres::Transaction;

use super::PgStore;
use crate::clock::calendar::rfc3339;
use crate::store::audit::AuditEntry;
use crate::store::rules::check_text;
use crate::store::{unix_now, KeyRecord, StoreError};

/// Checks an actor or action name: bounded and printable, like every stored name.
pub(super) fn check_actor(actor: &str) -> Result<(), StoreError> {
    check_text("actor", actor)
}

/// Writes one entry in the caller's transaction.
pub(super) fn insert(
    tx: &mut Transaction<'_>,
    node: &str,
    actor: &str,
    action: &str,
    key_id: Option<&str>,
    before: Option<&KeyRecord>,
    after: Option<&KeyRecord>,
) -> Result<(), StoreError> {
    // The webhook event of a key write, in the same transaction as its audit entry.
    if let Some(record) = after {
        super::webhook_queue::queue_key_event(tx, action, record, actor)?;
    }
    // The serde form of a record has no hash, sequence or secret in it.
    let before = before.map(|r| serde_json::to_string(r).expect("records serialize"));
    let after = after.map(|r| serde_json::to_string(r).expect("records serialize"));
    tx.execute(
        "INSERT INTO audit_log (at, node, actor, action, key_id, before, after) \
         VALUES ($1, $2, $3, $4, $5, CAST($6::TEXT AS JSONB), CAST($7::TEXT AS JSONB))",
        &[
            &unix_now(),
            &node,
            &actor,
            &action,
            &key_id,
            &before,
            &after,
        ],
    )?;
    Ok(())
}

/// Writes the entry of a step of access request `request_id` in the caller's transaction.
pub(super) fn insert_access(
    tx: &mut Transaction<'_>,
    node: &str,
    actor: &str,
    action: &str,
    request_id: &str,
    key_id: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit_log (at, node, actor, action, key_id, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&unix_now(), &node, &actor, &action, &key_id, &request_id],
    )?;
    Ok(())
}

impl PgStore {
    /// Appends an entry for an action that is not a key change (`reload`, an access request)
    /// by `actor`.
    pub fn audit_append(
        &mut self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        before: Option<&KeyRecord>,
        after: Option<&KeyRecord>,
    ) -> Result<(), StoreError> {
        check_actor(actor)?;
        check_text("action", action)?;
        if let Some(id) = key_id {
            check_text("key_id", id)?;
        }
        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        insert(&mut tx, &node, actor, action, key_id, before, after)?;
        tx.commit()?;
        Ok(())
    }

    /// Every entry, oldest first, in the shape of `store::audit::read`.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.client()?.query(
            "SELECT at, actor, action, key_id, before::TEXT, after::TEXT, request_id \
             FROM audit_log ORDER BY id",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let record = |i: usize| -> Result<Option<KeyRecord>, StoreError> {
                    row.try_get::<_, Option<String>>(i)?
                        .map(|text| {
                            serde_json::from_str(&text).map_err(|e| {
                                super::PgError::new(
                                    super::PgErrorKind::Query,
                                    format!("an audit entry's record does not parse: {e}"),
                                )
                                .into()
                            })
                        })
                        .transpose()
                };
                Ok(AuditEntry {
                    time: rfc3339(row.try_get(0)?),
                    actor: row.try_get(1)?,
                    action: row.try_get(2)?,
                    key_id: row.try_get(3)?,
                    before: record(4)?,
                    after: record(5)?,
                    request_id: row.try_get(6)?,
                })
            })
            .collect()
    }
}

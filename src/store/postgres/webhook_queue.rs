//! The webhook queue on PostgreSQL: the rows of `store::webhook_queue`, shared by a fleet.
//!
//! Every node runs a delivery thread over the same table. A node claims due rows with
//! `FOR UPDATE SKIP LOCKED` and stamps a lease on them in one statement, so two nodes never
//! hold the same row: the other skips it while the claim is in flight and finds it leased
//! after. A node that stops mid-delivery leaves a lease that runs out, and the row is
//! claimed again. The unique `dedup_key` makes an event that must fire once (`key.expiring`,
//! `budget.threshold`) fire once whichever node sees it first.

use ::postgres::GenericClient;

use super::PgStore;
use crate::store::webhook_queue::{
    key_event, outcome_columns, Enqueued, QueuedWebhook, Row, WebhookEvent, WebhookOutcome,
    MAX_PENDING,
};
use crate::store::{KeyRecord, StoreError};

/// The table, as migration 5 creates it.
pub(super) const SCHEMA: &str = "
CREATE TABLE webhook_queue (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    dedup_key       TEXT NOT NULL UNIQUE,
    target          TEXT,
    data            TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    delivered_to    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX webhook_queue_due ON webhook_queue (state, next_attempt_ms);
";

/// Queues `event` unless its `dedup_key` was queued before or `cap` events wait already.
pub(super) fn enqueue<C: GenericClient>(
    client: &mut C,
    event: &WebhookEvent,
    cap: u64,
) -> Result<Enqueued, StoreError> {
    let data = serde_json::Value::Object(event.data.clone()).to_string();
    let data = if data.len() > crate::store::webhook_queue::MAX_DATA_BYTES {
        serde_json::json!({ "truncated": true }).to_string()
    } else {
        data
    };
    let inserted = client.execute(
        "INSERT INTO webhook_queue
            (event_id, kind, dedup_key, target, data, created_at_ms, next_attempt_ms)
         SELECT $1, $2, $3, $4, $5, $6, $6
         WHERE (SELECT COUNT(*) FROM webhook_queue WHERE state = 'pending') < $7
         ON CONFLICT (dedup_key) DO NOTHING",
        &[
            &event.id,
            &event.kind,
            &event.dedup_key,
            &event.target,
            &data,
            &event.created_at_ms,
            &(cap as i64),
        ],
    )?;
    if inserted == 1 {
        crate::store::webhook_queue::note_queued();
        return Ok(Enqueued::Queued);
    }
    let seen = client.query_opt(
        "SELECT seq FROM webhook_queue WHERE dedup_key = $1",
        &[&event.dedup_key],
    )?;
    Ok(if seen.is_some() {
        Enqueued::Duplicate
    } else {
        Enqueued::Full
    })
}

/// Queues the event of a key write in the write's transaction (called where it is audited).
pub(super) fn queue_key_event<C: GenericClient>(
    client: &mut C,
    action: &str,
    record: &KeyRecord,
    actor: &str,
) -> Result<(), StoreError> {
    if let Some(event) = key_event(action, record, actor) {
        let queued = enqueue(client, &event, MAX_PENDING)?;
        crate::metrics::global()
            .webhooks()
            .record_enqueue(&event.kind, queued);
    }
    Ok(())
}

impl PgStore {
    /// See [`crate::store::KeyBackend::enqueue_webhook`].
    pub fn enqueue_webhook(&mut self, event: &WebhookEvent) -> Result<Enqueued, StoreError> {
        enqueue(&mut *self.client()?, event, MAX_PENDING)
    }

    /// See [`crate::store::KeyBackend::claim_webhooks`]: one statement that locks the due
    /// rows no other node is claiming and leases them.
    pub fn claim_webhooks(
        &mut self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<QueuedWebhook>, StoreError> {
        let rows = self.client()?.query(
            "UPDATE webhook_queue SET lease_until_ms = $1 + $3
             WHERE seq IN (
                 SELECT seq FROM webhook_queue
                 WHERE state = 'pending' AND next_attempt_ms <= $1 AND lease_until_ms <= $1
                 ORDER BY seq LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING seq, event_id, kind, dedup_key, target, data, created_at_ms, attempts,
                 delivered_to",
            &[&now_ms, &(limit as i64), &lease_ms],
        )?;
        let mut claimed: Vec<QueuedWebhook> = rows
            .iter()
            .map(|row| {
                Row {
                    seq: row.get(0),
                    event_id: row.get(1),
                    kind: row.get(2),
                    dedup_key: row.get(3),
                    target: row.get(4),
                    data: row.get(5),
                    created_at_ms: row.get(6),
                    attempts: row.get(7),
                    delivered_to: row.get(8),
                }
                .into_queued()
            })
            .collect();
        // RETURNING has no order of its own.
        claimed.sort_by_key(|q| q.seq);
        Ok(claimed)
    }

    /// See [`crate::store::KeyBackend::finish_webhook`].
    pub fn finish_webhook(&mut self, seq: i64, outcome: &WebhookOutcome) -> Result<(), StoreError> {
        let (state, attempts, next, delivered) = outcome_columns(outcome);
        let mut client = self.client()?;
        match attempts {
            Some(attempts) => client.execute(
                "UPDATE webhook_queue SET state = $1, attempts = $2, next_attempt_ms = $3,
                     delivered_to = $4, lease_until_ms = 0 WHERE seq = $5",
                &[&state, &attempts, &next, &delivered, &seq],
            )?,
            None => client.execute(
                "UPDATE webhook_queue SET state = $1, lease_until_ms = 0 WHERE seq = $2",
                &[&state, &seq],
            )?,
        };
        Ok(())
    }

    /// See [`crate::store::KeyBackend::prune_webhooks`].
    pub fn prune_webhooks(&mut self, before_ms: i64) -> Result<(), StoreError> {
        self.client()?.execute(
            "DELETE FROM webhook_queue WHERE state <> 'pending' AND created_at_ms < $1",
            &[&before_ms],
        )?;
        Ok(())
    }
}

//! The webhook queue: lifecycle events waiting to be POSTed, persisted in the store so a
//! restart loses none. This file holds the types both backends share and the SQLite table
//! (in `keys.db`, beside the keys whose changes it records); the PostgreSQL table is in
//! `postgres::webhook_queue`.
//!
//! A row is written in the same transaction as the key change it reports (an outbox), or by
//! the background thread for events it detects (`key.expiring`, `budget.threshold`). Its
//! `dedup_key` is unique: an event that must fire once (once per key and expiry, once per
//! budget period and threshold) is inserted by whoever sees it first and ignored after, even
//! with several nodes sharing a PostgreSQL store. Rows stay after delivery (state
//! `delivered` or `failed`) for that reason and are pruned after [`RETAIN_MS`].
//!
//! The queue is bounded: at most [`MAX_PENDING`] rows wait at once; an event past that is
//! dropped with an error line and the `dropped` metric, never blocking the key write.

use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::ids::fill_random;
use super::keys::KeyRecord;

/// Most undelivered events held; see the module doc.
pub const MAX_PENDING: u64 = 10_000;

/// How long a delivered or failed row is kept for de-duplication: longer than the longest
/// budget period that resets (a month).
pub const RETAIN_MS: i64 = 40 * 86_400_000;

/// Most bytes of an event's data (its JSON), so a stored row and a request body stay small
/// whatever names an admin gave a key or a request.
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// One event to queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `evt_` and 20 random lowercase hex characters; the body's `id`, for receivers to
    /// de-duplicate.
    pub id: String,
    /// The type, as subscribed to in `events` (`key.created`).
    pub kind: String,
    /// When it happened, unix milliseconds.
    pub created_at_ms: i64,
    /// Unique across the queue: a second event with the same key is not queued.
    pub dedup_key: String,
    /// Only the receiver with this target id gets it (`key.expiring`, whose window is per
    /// receiver); `None`: every receiver subscribed to `kind`.
    pub target: Option<String>,
    /// The body's fields besides `id`, `type`, `created_at` and `timestamp`: an object
    /// naming the key, team or request. Never a secret or a hash.
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl WebhookEvent {
    /// An event of type `kind` happening now with a fresh id; de-duplicated by that id
    /// alone (it fires every time it happens) unless [`WebhookEvent::once_as`] says more.
    pub fn new(kind: &str, data: serde_json::Map<String, serde_json::Value>) -> WebhookEvent {
        let id = new_event_id();
        WebhookEvent {
            dedup_key: id.clone(),
            id,
            kind: kind.to_owned(),
            created_at_ms: crate::clock::unix_now_ms(),
            target: None,
            data,
        }
    }

    /// The same event, queued only if no event with `dedup_key` ever was.
    pub fn once_as(mut self, dedup_key: String) -> WebhookEvent {
        self.dedup_key = dedup_key;
        self
    }

    /// The data as stored, bounded by [`MAX_DATA_BYTES`]: a longer one keeps only its
    /// ids, so the row and the body stay small.
    fn data_json(&self) -> String {
        let text = serde_json::Value::Object(self.data.clone()).to_string();
        if text.len() <= MAX_DATA_BYTES {
            return text;
        }
        serde_json::json!({ "truncated": true }).to_string()
    }
}

/// A fresh event id.
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 10];
    fill_random(&mut bytes);
    let mut id = String::from("evt_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The event a key write reports, by the audit action that records it (`create`,
/// `rotate`, `revoke`); `None` for actions that have none (`update`).
pub fn key_event(action: &str, record: &KeyRecord, actor: &str) -> Option<WebhookEvent> {
    let kind = match action {
        "create" => "key.created",
        "rotate" => "key.rotated",
        "revoke" => "key.revoked",
        _ => return None,
    };
    let mut data = serde_json::Map::new();
    data.insert("key".into(), key_summary(record));
    data.insert("actor".into(), actor.into());
    Some(WebhookEvent::new(kind, data))
}

/// What every event says about a key: id, name, team and times, never its prefix (the
/// secret's first characters), hash or pepper.
pub fn key_summary(record: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "name": record.name,
        "team": record.team,
        "expires_at": record.expires_at_ms.map(|ms| ms.div_euclid(1000)),
        "revoked_at": record.revoked_at,
    })
}

/// A queued event as the delivery thread claims it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedWebhook {
    /// The row's number in the queue.
    pub seq: i64,
    /// The event.
    pub event: WebhookEvent,
    /// Attempts made so far (a failed attempt at any receiver counts once).
    pub attempts: u32,
    /// Target ids of the receivers that already accepted it.
    pub delivered_to: Vec<String>,
}

/// What became of a claimed event.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookOutcome {
    /// Every receiver accepted it (or none wants it).
    Delivered,
    /// Some receiver refused or was unreachable: try again at `next_attempt_ms`.
    Retry {
        /// Attempts made, this one included.
        attempts: u32,
        /// When the next may start, unix milliseconds.
        next_attempt_ms: i64,
        /// Receivers that accepted it so far (not sent to again).
        delivered_to: Vec<String>,
    },
    /// The last attempt failed: no more.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Receivers that accepted it.
        delivered_to: Vec<String>,
    },
}

/// Whether [`enqueue`] queued the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for delivery.
    Queued,
    /// An event with its `dedup_key` was queued before: nothing done.
    Duplicate,
    /// [`MAX_PENDING`] events wait already: dropped.
    Full,
}

/// The SQLite table; created on open (`CREATE ... IF NOT EXISTS`), so a store made by an
/// older binary gains it without a schema version of its own.
pub(crate) const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_queue (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    dedup_key       TEXT NOT NULL UNIQUE,
    target          TEXT,
    data            TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER NOT NULL DEFAULT 0,
    delivered_to    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS webhook_queue_due ON webhook_queue (state, next_attempt_ms);
";

/// Set when this process queues an event, so its delivery thread starts a turn within
/// [`QUEUED_POLL`] instead of after its idle wait. Events queued by another process (the
/// CLI, another node) are found by the thread's regular turns.
static QUEUED_HERE: AtomicBool = AtomicBool::new(false);

/// How often the idle delivery thread looks at [`QUEUED_HERE`].
pub const QUEUED_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Notes that this process queued an event (see [`QUEUED_HERE`]).
pub(crate) fn note_queued() {
    QUEUED_HERE.store(true, Ordering::Release);
}

/// Whether this process queued an event since the last call; clears the note.
pub fn take_queued_here() -> bool {
    QUEUED_HERE.swap(false, Ordering::AcqRel)
}

/// Queues `event` unless its `dedup_key` was queued before or `cap` events wait already.
/// One statement, so the count and the insert agree even with another writer.
pub(crate) fn enqueue(
    conn: &Connection,
    event: &WebhookEvent,
    cap: u64,
) -> rusqlite::Result<Enqueued> {
    let inserted = conn.execute(
        "INSERT INTO webhook_queue
            (event_id, kind, dedup_key, target, data, created_at_ms, next_attempt_ms)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6
         WHERE (SELECT COUNT(*) FROM webhook_queue WHERE state = 'pending') < ?7
         ON CONFLICT (dedup_key) DO NOTHING",
        params![
            event.id,
            event.kind,
            event.dedup_key,
            event.target,
            event.data_json(),
            event.created_at_ms,
            cap as i64
        ],
    )?;
    if inserted == 1 {
        note_queued();
        return Ok(Enqueued::Queued);
    }
    let seen: Option<i64> = conn
        .query_row(
            "SELECT seq FROM webhook_queue WHERE dedup_key = ?1",
            [&event.dedup_key],
            |row| row.get(0),
        )
        .optional()?;
    Ok(if seen.is_some() {
        Enqueued::Duplicate
    } else {
        Enqueued::Full
    })
}

/// Leases up to `limit` events due at `now_ms` for `lease_ms`, oldest first: a claimed row
/// is not claimed again until it is finished or its lease runs out (a node that stopped
/// mid-delivery).
pub(crate) fn claim(
    conn: &mut Connection,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
) -> rusqlite::Result<Vec<QueuedWebhook>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows = {
        let mut statement = tx.prepare_cached(
            "SELECT seq, event_id, kind, dedup_key, target, data, created_at_ms, attempts,
                    delivered_to
             FROM webhook_queue
             WHERE state = 'pending' AND next_attempt_ms <= ?1 AND lease_until_ms <= ?1
             ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![now_ms, limit as i64], |row| {
            Ok(Row {
                seq: row.get(0)?,
                event_id: row.get(1)?,
                kind: row.get(2)?,
                dedup_key: row.get(3)?,
                target: row.get(4)?,
                data: row.get(5)?,
                created_at_ms: row.get(6)?,
                attempts: row.get(7)?,
                delivered_to: row.get(8)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<Row>>>()?
    };
    for row in &rows {
        tx.execute(
            "UPDATE webhook_queue SET lease_until_ms = ?1 WHERE seq = ?2",
            params![now_ms + lease_ms, row.seq],
        )?;
    }
    tx.commit()?;
    Ok(rows.into_iter().map(Row::into_queued).collect())
}

/// Records what became of claimed event `seq`, ending its lease.
pub(crate) fn finish(
    conn: &Connection,
    seq: i64,
    outcome: &WebhookOutcome,
) -> rusqlite::Result<()> {
    let (state, attempts, next, delivered) = outcome_columns(outcome);
    match attempts {
        Some(attempts) => conn.execute(
            "UPDATE webhook_queue SET state = ?1, attempts = ?2, next_attempt_ms = ?3,
                 delivered_to = ?4, lease_until_ms = 0 WHERE seq = ?5",
            params![state, attempts, next, delivered, seq],
        )?,
        None => conn.execute(
            "UPDATE webhook_queue SET state = ?1, lease_until_ms = 0 WHERE seq = ?2",
            params![state, seq],
        )?,
    };
    Ok(())
}

/// Deletes finished rows created before `before_ms`.
pub(crate) fn prune(conn: &Connection, before_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM webhook_queue WHERE state <> 'pending' AND created_at_ms < ?1",
        [before_ms],
    )
}

/// `(state, attempts, next_attempt_ms, delivered_to as JSON)` of an outcome; attempts is
/// `None` for [`WebhookOutcome::Delivered`], which leaves those columns as they are.
pub(crate) fn outcome_columns(
    outcome: &WebhookOutcome,
) -> (&'static str, Option<i64>, i64, String) {
    match outcome {
        WebhookOutcome::Delivered => ("delivered", None, 0, String::new()),
        WebhookOutcome::Retry {
            attempts,
            next_attempt_ms,
            delivered_to,
        } => (
            "pending",
            Some(i64::from(*attempts)),
            *next_attempt_ms,
            serde_json::to_string(delivered_to).unwrap_or_else(|_| "[]".into()),
        ),
        WebhookOutcome::GaveUp {
            attempts,
            delivered_to,
        } => (
            "failed",
            Some(i64::from(*attempts)),
            0,
            serde_json::to_string(delivered_to).unwrap_or_else(|_| "[]".into()),
        ),
    }
}

/// A row as read, before its JSON columns are parsed.
pub(crate) struct Row {
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub dedup_key: String,
    pub target: Option<String>,
    pub data: String,
    pub created_at_ms: i64,
    pub attempts: i64,
    pub delivered_to: String,
}

impl Row {
    /// The claimed event; a JSON column that does not parse reads as empty (the row was
    /// written by this code, so only a hand edit gets here).
    pub(crate) fn into_queued(self) -> QueuedWebhook {
        QueuedWebhook {
            seq: self.seq,
            event: WebhookEvent {
                id: self.event_id,
                kind: self.kind,
                created_at_ms: self.created_at_ms,
                dedup_key: self.dedup_key,
                target: self.target,
                data: serde_json::from_str(&self.data).unwrap_or_default(),
            },
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            delivered_to: serde_json::from_str(&self.delivered_to).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SQLITE_SCHEMA).unwrap();
        conn
    }

    fn event(dedup: &str) -> WebhookEvent {
        let mut data = serde_json::Map::new();
        data.insert("n".into(), 1.into());
        WebhookEvent::new("key.expiring", data).once_as(dedup.into())
    }

    #[test]
    fn a_dedup_key_is_queued_once_even_after_delivery() {
        let mut conn = conn();
        assert_eq!(enqueue(&conn, &event("a"), 10).unwrap(), Enqueued::Queued);
        assert_eq!(
            enqueue(&conn, &event("a"), 10).unwrap(),
            Enqueued::Duplicate
        );
        let claimed = claim(&mut conn, i64::MAX / 2, 10, 1000).unwrap();
        assert_eq!(claimed.len(), 1);
        finish(&conn, claimed[0].seq, &WebhookOutcome::Delivered).unwrap();
        assert_eq!(
            enqueue(&conn, &event("a"), 10).unwrap(),
            Enqueued::Duplicate
        );
    }

    #[test]
    fn the_queue_is_bounded_by_pending_rows() {
        let mut conn = conn();
        for i in 0..3 {
            assert_eq!(
                enqueue(&conn, &event(&i.to_string()), 3).unwrap(),
                Enqueued::Queued
            );
        }
        assert_eq!(enqueue(&conn, &event("x"), 3).unwrap(), Enqueued::Full);
        // A finished row no longer counts.
        let claimed = claim(&mut conn, i64::MAX / 2, 1, 1000).unwrap();
        finish(&conn, claimed[0].seq, &WebhookOutcome::Delivered).unwrap();
        assert_eq!(enqueue(&conn, &event("x"), 3).unwrap(), Enqueued::Queued);
    }

    #[test]
    fn a_leased_row_is_not_claimed_again_until_its_lease_ends() {
        let mut conn = conn();
        enqueue(&conn, &event("a"), 10).unwrap();
        let now = crate::clock::unix_now_ms();
        assert_eq!(claim(&mut conn, now, 10, 1000).unwrap().len(), 1);
        assert!(claim(&mut conn, now + 500, 10, 1000).unwrap().is_empty());
        let again = claim(&mut conn, now + 1001, 10, 1000).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event.data["n"], 1);
    }

    #[test]
    fn a_retry_waits_for_its_time_and_keeps_who_accepted_it() {
        let mut conn = conn();
        enqueue(&conn, &event("a"), 10).unwrap();
        let now = crate::clock::unix_now_ms();
        let seq = claim(&mut conn, now, 10, 1000).unwrap()[0].seq;
        let retry = WebhookOutcome::Retry {
            attempts: 1,
            next_attempt_ms: now + 5000,
            delivered_to: vec!["t1".into()],
        };
        finish(&conn, seq, &retry).unwrap();
        assert!(claim(&mut conn, now + 10, 10, 1000).unwrap().is_empty());
        let again = claim(&mut conn, now + 5000, 10, 1000).unwrap();
        assert_eq!(again[0].attempts, 1);
        assert_eq!(again[0].delivered_to, ["t1"]);
        let gave_up = WebhookOutcome::GaveUp {
            attempts: 2,
            delivered_to: vec!["t1".into()],
        };
        finish(&conn, seq, &gave_up).unwrap();
        assert!(claim(&mut conn, i64::MAX / 2, 10, 1000).unwrap().is_empty());
        assert_eq!(prune(&conn, i64::MAX).unwrap(), 1);
    }

    #[test]
    fn oversized_data_is_cut_to_a_marker() {
        let mut data = serde_json::Map::new();
        data.insert("name".into(), "x".repeat(MAX_DATA_BYTES).into());
        let e = WebhookEvent::new("key.created", data);
        assert!(e.data_json().len() < 100);
    }
}

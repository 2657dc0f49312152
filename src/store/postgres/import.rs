//! Copying a single host's store into the shared one as it is (`credentialflow store
//! migrate`): key records with their ids, hashes, rotation grace, revocation and times, and
//! audit entries with their own times. The secrets are not known here and need not be: the
//! hashes are copied, and they authenticate on every node because the fleet's pepper is the
//! host's (the command checks that before calling in).
//!
//! One run is one transaction under the key write lock, so it is all or nothing, and nodes'
//! watchers see every copied key at once: each gets a fresh number from the store's change
//! sequence (the host's own numbers mean nothing here) and the run notifies the change
//! channel once, with the last of them.
//!
//! Idempotent: a key whose id is already stored with the same content is counted as present
//! and left alone; an audit entry is present when an entry with the same time, actor,
//! action, key id and records is stored (as many times as the host's log has it, so two
//! identical entries in one second are both copied). A key id stored with different content
//! is a conflict: it is never overwritten, and a run with any conflict writes nothing.
//!
//! Access requests (`access_requests`) are copied in the same transaction, row for row with
//! their claim token's hash, so a request approved on the host can be claimed on any node
//! and one pending there can be decided there. One already stored with the same content is
//! present; one stored with other content (decided on the fleet since) is a conflict, as a
//! key is.
//!
//! The usage ledger is copied after the keys, in a transaction of its own
//! ([`PgStore::import_usage`]): every row of the host's ledger with the id
//! [`crate::store::usage::source`] derives for it, stored once whatever the number of runs
//! (`ON CONFLICT (record_id) DO NOTHING`, as the nodes' own deliveries). The records carry
//! the node name of the config the command runs with: the host's name in the fleet.

use std::collections::HashMap;

use ::postgres::types::ToSql;
use ::postgres::Transaction;

use super::{PgStore, CHANNEL, WRITE_LOCK};
use crate::access::{self, AccessRequest};
use crate::clock::calendar::{parse_rfc3339_ms, rfc3339};
use crate::store::audit::AuditEntry;
use crate::store::rules::{check_text, validate};
use crate::store::usage::insert_records;
use crate::store::usage::source::{LedgerSource, SourceError};
use crate::store::{KeyRecord, StoreError};

/// The key columns in the order of [`key_params`]; `seq` is not among them (a copied key
/// gets a number of this store's sequence, and content comparisons ignore it).
const KEY_COLUMNS: [&str; 23] = [
    "id",
    "name",
    "team",
    "prefix",
    "hash",
    "previous_hash",
    "previous_valid_until_ms",
    "models",
    "routes",
    "scopes",
    "rps",
    "rpm",
    "tpm",
    "max_concurrency",
    "budget_usd",
    "budget_tokens",
    "budget_period",
    "metadata",
    "created_at",
    "updated_at",
    "expires_at_ms",
    "revoked_at",
    "mcp_tools",
];

/// The audit action recorded once for a run that copied anything.
pub const MIGRATE_ACTION: &str = "migrate";

/// What one import run found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Keys inserted by this run.
    pub keys_copied: usize,
    /// Keys whose id was already stored with the same content.
    pub keys_present: usize,
    /// Audit entries inserted by this run.
    pub audit_copied: usize,
    /// Audit entries already stored.
    pub audit_present: usize,
    /// Access requests inserted by this run.
    pub access_copied: usize,
    /// Access requests whose id was already stored with the same content.
    pub access_present: usize,
    /// Keys and access requests that cannot be copied as they are. When there is any, the
    /// run wrote nothing.
    pub conflicts: Vec<KeyConflict>,
}

/// What one copy of a host's usage ledger found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageImport {
    /// Records inserted by this run.
    pub copied: u64,
    /// Records whose id was already stored (copied by an earlier run).
    pub present: u64,
}

/// Why a usage ledger copy stopped. Nothing of the ledger was written.
#[derive(Debug)]
pub enum UsageImportError {
    /// The host's ledger could not be read, or holds a row the gateway never writes.
    Source(SourceError),
    /// The shared store failed.
    Store(StoreError),
}

impl From<::postgres::Error> for UsageImportError {
    fn from(e: ::postgres::Error) -> Self {
        UsageImportError::Store(e.into())
    }
}

/// A key (or an access request) the shared store cannot take as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict {
    /// What the id names: `key` or `access request`.
    pub what: &'static str,
    /// The key's (or request's) id.
    pub id: String,
    /// Why, in words that never quote a hash.
    pub reason: String,
}

/// How a key of the source stands against the shared store.
enum Standing {
    Absent,
    Same,
    Conflict(String),
}

impl PgStore {
    /// Copies `keys`, `requests` (access requests) and `audit` (a single host's store,
    /// oldest first) into this store as they are, in one transaction; `actor` is recorded
    /// on the one `migrate` audit entry a run that copied anything adds. Records that break
    /// this store's rules (bounds, control characters, an unreadable time) are refused
    /// before anything is written.
    pub fn import(
        &mut self,
        keys: &[KeyRecord],
        requests: &[AccessRequest],
        audit: &[AuditEntry],
        actor: &str,
    ) -> Result<ImportReport, StoreError> {
        super::audit::check_actor(actor)?;
        for record in keys {
            check_key(record)?;
        }
        for request in requests {
            check_access_request(request)?;
        }
        let audit_times = audit
            .iter()
            .enumerate()
            .map(|(i, entry)| check_audit_entry(i, entry))
            .collect::<Result<Vec<i64>, StoreError>>()?;

        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        // The write lock of every key write: sequence order stays commit order, and the
        // standing of each key cannot change under this run.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;

        let mut report = ImportReport::default();
        let mut absent = Vec::new();
        for record in keys {
            match standing(&mut tx, record)? {
                Standing::Absent => absent.push(record),
                Standing::Same => report.keys_present += 1,
                Standing::Conflict(reason) => report.conflicts.push(KeyConflict {
                    what: "key",
                    id: record.id.clone(),
                    reason,
                }),
            }
        }
        let mut absent_requests = Vec::new();
        for request in requests {
            match access_standing(&mut tx, request)? {
                Standing::Absent => absent_requests.push(request),
                Standing::Same => report.access_present += 1,
                Standing::Conflict(reason) => report.conflicts.push(KeyConflict {
                    what: "access request",
                    id: request.id.clone(),
                    reason,
                }),
            }
        }
        if !report.conflicts.is_empty() {
            // Dropping the transaction rolls it back: nothing of this run is kept.
            return Ok(ImportReport {
                conflicts: report.conflicts,
                ..ImportReport::default()
            });
        }

        let mut last_seq = None;
        for record in &absent {
            let seq: i64 = tx
                .query_one("SELECT nextval('key_change_seq')", &[])?
                .get(0);
            insert_key(&mut tx, record, seq)?;
            last_seq = Some(seq);
        }
        report.keys_copied = absent.len();
        for request in &absent_requests {
            super::access::write(&mut tx, request, true)?;
        }
        report.access_copied = absent_requests.len();

        let mut stored = stored_audit(&mut tx, &audit_times)?;
        for (entry, at) in audit.iter().zip(&audit_times) {
            if stored.take(entry, *at) {
                report.audit_present += 1;
            } else {
                insert_audit(&mut tx, &node, entry, *at)?;
                report.audit_copied += 1;
            }
        }

        if report.keys_copied + report.access_copied + report.audit_copied > 0 {
            super::audit::insert(&mut tx, &node, actor, MIGRATE_ACTION, None, None, None)?;
        }
        if let Some(seq) = last_seq {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])?;
        }
        tx.commit()?;
        Ok(report)
    }
}

impl PgStore {
    /// Copies every record `source` yields into the fleet's usage ledger, in one transaction:
    /// all of them or, on any error, none. Records already stored (by an earlier run) are
    /// counted as present and left alone.
    pub fn import_usage(
        &mut self,
        source: &mut LedgerSource,
    ) -> Result<UsageImport, UsageImportError> {
        let mut client = self.client().map_err(UsageImportError::Store)?;
        let mut tx = client.transaction()?;
        let mut report = UsageImport::default();
        loop {
            let batch = source.next_batch().map_err(UsageImportError::Source)?;
            if batch.is_empty() {
                break;
            }
            let inserted = insert_records(&mut tx, &batch)?;
            report.copied += inserted;
            report.present += batch.len() as u64 - inserted;
        }
        tx.commit()?;
        Ok(report)
    }
}

/// A copied key obeys the rules of a key written here, and its id and prefix are as bounded
/// as any other stored text.
fn check_key(record: &KeyRecord) -> Result<(), StoreError> {
    let in_key = |e: StoreError| match e {
        StoreError::Invalid { field, message } => StoreError::Invalid {
            field,
            message: format!("{message} (key {})", record.id),
        },
        other => other,
    };
    check_text("id", &record.id)?;
    if record.id.is_empty() {
        return Err(StoreError::invalid("id", "a key has an empty id"));
    }
    check_text("prefix", &record.prefix).map_err(in_key)?;
    validate(record).map_err(in_key)
}

/// A copied access request holds to the bounds of one made here (`access::NewAccessRequest`
/// bounds every field a requester sends; ids and actors are the key store's texts).
fn check_access_request(request: &AccessRequest) -> Result<(), StoreError> {
    let in_request = |e: access::FieldError| {
        StoreError::invalid(
            e.field,
            format!("{} (access request {})", e.message, request.id),
        )
    };
    check_text("id", &request.id)?;
    if request.id.is_empty() {
        return Err(StoreError::invalid(
            "id",
            "an access request has an empty id",
        ));
    }
    let texts = [
        ("name", Some(&request.name)),
        ("team", Some(&request.team)),
        ("ttl", Some(&request.ttl)),
        ("requester", Some(&request.requester)),
        ("decided_by", request.decided_by.as_ref()),
        ("key_id", request.key_id.as_ref()),
    ];
    for (field, text) in texts {
        if let Some(text) = text {
            access::check_text(field, text, access::MAX_TEXT).map_err(in_request)?;
        }
    }
    for (field, text) in [
        ("reason", Some(&request.reason)),
        ("note", request.note.as_ref()),
    ] {
        if let Some(text) = text {
            access::check_text(field, text, access::MAX_REASON).map_err(in_request)?;
        }
    }
    crate::store::rules::check_mcp_tools(&request.mcp_tools).map_err(|message| {
        in_request(access::FieldError {
            field: "mcp_tools",
            message,
        })
    })?;
    for (field, list) in [
        ("models", &request.models),
        ("routes", &request.routes),
        ("scopes", &request.scopes),
    ] {
        if list.len() > access::MAX_LIST {
            return Err(in_request(access::FieldError {
                field,
                message: format!("at most {} entries", access::MAX_LIST),
            }));
        }
        for item in list {
            access::check_text(field, item, access::MAX_TEXT).map_err(in_request)?;
        }
    }
    Ok(())
}

/// Whether `request`'s id is free, stored with the same content (its claim hash included),
/// or stored with other content.
fn access_standing(
    tx: &mut Transaction<'_>,
    request: &AccessRequest,
) -> Result<Standing, StoreError> {
    let row = tx.query_opt(
        &format!(
            "SELECT {} FROM access_requests WHERE id = $1",
            super::access::COLUMNS
        ),
        &[&request.id],
    )?;
    let Some(row) = row else {
        return Ok(Standing::Absent);
    };
    let stored = super::access::from_row(&row)?;
    Ok(if stored == *request {
        Standing::Same
    } else {
        Standing::Conflict(format!(
            "stored with other content (status {} here); not overwritten",
            stored.status.as_str()
        ))
    })
}

/// Checks entry `index` of the host's log and returns its time in unix seconds.
fn check_audit_entry(index: usize, entry: &AuditEntry) -> Result<i64, StoreError> {
    let at_entry = |e: StoreError| match e {
        StoreError::Invalid { field, message } => StoreError::Invalid {
            field,
            message: format!("{message} (audit entry {})", index + 1),
        },
        other => other,
    };
    check_text("actor", &entry.actor).map_err(at_entry)?;
    check_text("action", &entry.action).map_err(at_entry)?;
    if let Some(id) = &entry.key_id {
        check_text("key_id", id).map_err(at_entry)?;
    }
    // The records are stored as they are, so they are held to a stored key's bounds.
    for record in entry.before.iter().chain(&entry.after) {
        validate(record).map_err(at_entry)?;
    }
    parse_rfc3339_ms(&entry.time)
        .map(|ms| ms.div_euclid(1000))
        .ok_or_else(|| {
            StoreError::invalid(
                "time",
                format!("is not an RFC 3339 time (audit entry {})", index + 1),
            )
        })
}

/// Whether `record`'s id is free, stored with the same content, or taken by something else;
/// and, for a key that would be inserted, whether its name or hash is taken by another id.
fn standing(tx: &mut Transaction<'_>, record: &KeyRecord) -> Result<Standing, StoreError> {
    // `$n` is compared with its own column, so each parameter takes that column's type.
    let same: Vec<String> = KEY_COLUMNS[1..]
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{column} IS NOT DISTINCT FROM ${}", i + 2))
        .collect();
    let statement = format!("SELECT {} FROM keys WHERE id = $1", same.join(" AND "));
    let params = key_params(record);
    if let Some(row) = tx.query_opt(&statement, &params.refs())? {
        return Ok(if row.get::<_, bool>(0) {
            Standing::Same
        } else {
            Standing::Conflict("stored with different content; not overwritten".into())
        });
    }
    // Names identify unrevoked keys to Lua's ctx:set_consumer(name): unique among them.
    if record.revoked_at.is_none() {
        let holder = tx.query_opt(
            "SELECT id FROM keys WHERE name = $1 AND revoked_at IS NULL AND id <> $2 LIMIT 1",
            &[&record.name, &record.id],
        )?;
        if let Some(row) = holder {
            let other: String = row.get(0);
            return Ok(Standing::Conflict(format!(
                "its name {:?} is in use by key {other}",
                record.name
            )));
        }
    }
    let twin = tx.query_opt(
        "SELECT id FROM keys WHERE hash = $1 AND id <> $2 LIMIT 1",
        &[&&record.hash[..], &record.id],
    )?;
    if let Some(row) = twin {
        let other: String = row.get(0);
        return Ok(Standing::Conflict(format!(
            "its secret is already the secret of key {other}"
        )));
    }
    Ok(Standing::Absent)
}

fn insert_key(tx: &mut Transaction<'_>, record: &KeyRecord, seq: i64) -> Result<(), StoreError> {
    let placeholders: Vec<String> = (1..=KEY_COLUMNS.len() + 1)
        .map(|n| format!("${n}"))
        .collect();
    let statement = format!(
        "INSERT INTO keys ({}, seq) VALUES ({})",
        KEY_COLUMNS.join(", "),
        placeholders.join(", ")
    );
    let params = key_params(record);
    let mut refs = params.refs();
    refs.push(&seq);
    tx.execute(&statement, &refs)?;
    Ok(())
}

/// A key's column values in the order of [`KEY_COLUMNS`], in the column types of the
/// `keys` table (unsigned numbers as BIGINT, lists and maps as JSON text).
struct KeyParams<'a> {
    record: &'a KeyRecord,
    hash: &'a [u8],
    previous_hash: Option<&'a [u8]>,
    models: String,
    routes: String,
    scopes: String,
    rpm: Option<i64>,
    tpm: Option<i64>,
    max_concurrency: Option<i64>,
    budget_tokens: Option<i64>,
    metadata: String,
    mcp_tools: String,
}

fn key_params(record: &KeyRecord) -> KeyParams<'_> {
    // check_key() has bounded every unsigned field to i64::MAX.
    let signed = |v: Option<u64>| v.map(|v| v as i64);
    KeyParams {
        record,
        hash: &record.hash[..],
        previous_hash: record.previous_hash.as_ref().map(|h| &h[..]),
        models: json(&record.models),
        routes: json(&record.routes),
        scopes: json(&record.scopes),
        rpm: signed(record.rpm),
        tpm: signed(record.tpm),
        max_concurrency: record.max_concurrency.map(i64::from),
        budget_tokens: signed(record.budget_tokens),
        metadata: json(&record.metadata),
        mcp_tools: json(&record.mcp_tools),
    }
}

impl KeyParams<'_> {
    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        let r = self.record;
        vec![
            &r.id,
            &r.name,
            &r.team,
            &r.prefix,
            &self.hash,
            &self.previous_hash,
            &r.previous_valid_until_ms,
            &self.models,
            &self.routes,
            &self.scopes,
            &r.rps,
            &self.rpm,
            &self.tpm,
            &self.max_concurrency,
            &r.budget_usd,
            &self.budget_tokens,
            &r.budget_period,
            &self.metadata,
            &r.created_at,
            &r.updated_at,
            &r.expires_at_ms,
            &r.revoked_at,
            &self.mcp_tools,
        ]
    }
}

/// JSON text of a list or map column, as the key table stores it.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lists and maps of JSON values serialize")
}

/// The stored audit entries an import may find its own among, by (time, actor, action,
/// key id), each kept as many times as it is stored.
struct StoredAudit(HashMap<(i64, String, String, Option<String>), Vec<AuditEntry>>);

impl StoredAudit {
    /// Takes one stored entry equal to `entry` out of the set, if there is one.
    fn take(&mut self, entry: &AuditEntry, at: i64) -> bool {
        let bucket_key = (
            at,
            entry.actor.clone(),
            entry.action.clone(),
            entry.key_id.clone(),
        );
        let Some(bucket) = self.0.get_mut(&bucket_key) else {
            return false;
        };
        // Records are compared as typed values: JSONB reorders a record's keys and rewrites
        // its numbers, so the texts may differ where the records do not.
        match bucket
            .iter()
            .position(|stored| stored.before == entry.before && stored.after == entry.after)
        {
            Some(i) => {
                bucket.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// The stored entries in the time span of the host's log (the rest cannot match any).
fn stored_audit(tx: &mut Transaction<'_>, times: &[i64]) -> Result<StoredAudit, StoreError> {
    let mut stored = StoredAudit(HashMap::new());
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return Ok(stored);
    };
    let rows = tx.query(
        "SELECT at, actor, action, key_id, before::TEXT, after::TEXT, request_id \
         FROM audit_log WHERE at BETWEEN $1 AND $2",
        &[first, last],
    )?;
    for row in rows {
        let record = |i: usize| -> Result<Option<KeyRecord>, StoreError> {
            row.try_get::<_, Option<String>>(i)?
                .map(|text| {
                    serde_json::from_str(&text).map_err(|e| {
                        super::PgError::new(
                            super::PgErrorKind::Query,
                            format!("a stored audit entry's record does not parse: {e}"),
                        )
                        .into()
                    })
                })
                .transpose()
        };
        let at: i64 = row.try_get(0)?;
        let entry = AuditEntry {
            time: rfc3339(at),
            actor: row.try_get(1)?,
            action: row.try_get(2)?,
            key_id: row.try_get(3)?,
            before: record(4)?,
            after: record(5)?,
            request_id: row.try_get(6)?,
        };
        let bucket_key = (
            at,
            entry.actor.clone(),
            entry.action.clone(),
            entry.key_id.clone(),
        );
        stored.0.entry(bucket_key).or_default().push(entry);
    }
    Ok(stored)
}

fn insert_audit(
    tx: &mut Transaction<'_>,
    node: &str,
    entry: &AuditEntry,
    at: i64,
) -> Result<(), StoreError> {
    // The serde form of a record has no hash, sequence or secret in it.
    let before = entry.before.as_ref().map(json);
    let after = entry.after.as_ref().map(json);
    tx.execute(
        "INSERT INTO audit_log (at, node, actor, action, key_id, before, after, request_id) \
         VALUES ($1, $2, $3, $4, $5, CAST($6::TEXT AS JSONB), CAST($7::TEXT AS JSONB), $8)",
        &[
            &at,
            &node,
            &entry.actor,
            &entry.action,
            &entry.key_id,
            &before,
            &after,
            &entry.request_id,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: &str) -> AuditEntry {
        AuditEntry {
            time: time.into(),
            actor: "cli:alice".into(),
            action: "reload".into(),
            key_id: None,
            before: None,
            after: None,
            request_id: None,
        }
    }

    #[test]
    fn audit_times_are_rfc3339_read_as_unix_seconds() {
        assert_eq!(
            check_audit_entry(0, &entry("2023-11-14T22:13:20Z")).unwrap(),
            1_700_000_000
        );
        let err = check_audit_entry(4, &entry("yesterday")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "time: is not an RFC 3339 time (audit entry 5)"
        );
    }

    #[test]
    fn audit_entries_with_unbounded_or_control_text_are_refused() {
        let mut long = entry("2023-11-14T22:13:20Z");
        long.actor = "a".repeat(crate::store::rules::MAX_TEXT + 1);
        assert!(check_audit_entry(0, &long).is_err());
        let mut control = entry("2023-11-14T22:13:20Z");
        control.action = "re\u{1b}[2Jload".into();
        assert!(check_audit_entry(0, &control).is_err());
    }

    #[test]
    fn audit_records_are_held_to_a_stored_keys_bounds() {
        let mut oversized = entry("2023-11-14T22:13:20Z");
        let mut record = sample();
        record
            .metadata
            .insert("blob".into(), "x".repeat(64 * 1024).into());
        oversized.after = Some(record);
        let err = check_audit_entry(2, &oversized).unwrap_err();
        assert!(err.to_string().starts_with("metadata: "), "{err}");
        assert!(err.to_string().ends_with("(audit entry 3)"), "{err}");
        let mut fine = entry("2023-11-14T22:13:20Z");
        fine.before = Some(sample());
        assert!(check_audit_entry(0, &fine).is_ok());
    }

    #[test]
    fn equal_stored_entries_are_each_taken_once() {
        let one = entry("2023-11-14T22:13:20Z");
        let key = (1_700_000_000, one.actor.clone(), one.action.clone(), None);
        let mut stored = StoredAudit(HashMap::from([(key, vec![one.clone()])]));
        assert!(stored.take(&one, 1_700_000_000));
        // The host's log may hold the same entry twice in one second: the second is new.
        assert!(!stored.take(&one, 1_700_000_000));
    }

    #[test]
    fn key_columns_are_the_tables_but_seq() {
        assert_eq!(KEY_COLUMNS.len(), key_params(&sample()).refs().len());
        assert!(!KEY_COLUMNS.contains(&"seq"));
    }

    fn sample() -> KeyRecord {
        KeyRecord {
            id: "key_aaaaaaaaaaaaaaaaaaaa".into(),
            name: "ci".into(),
            team: String::new(),
            prefix: "cf_AbCdEfGhI".into(),
            models: Vec::new(),
            routes: Vec::new(),
            scopes: Vec::new(),
            mcp_tools: Vec::new(),
            rps: None,
            rpm: None,
            tpm: None,
            max_concurrency: None,
            budget_usd: None,
            budget_tokens: None,
            budget_period: None,
            metadata: serde_json::Map::new(),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            expires_at_ms: None,
            revoked_at: None,
            hash: [1; 32],
            previous_hash: None,
            previous_valid_until_ms: None,
            seq: 3,
        }
    }

    #[test]
    fn a_key_with_a_control_character_in_its_id_is_refused() {
        let mut record = sample();
        record.id = "key_\n".into();
        assert!(check_key(&record).is_err());
        assert!(check_key(&sample()).is_ok());
    }
}

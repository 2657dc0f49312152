//! The key table: virtual keys in SQLite (`data_dir/keys.db`), their life cycle, and the
//! change sequence the credential cache follows.
//!
//! Only HMAC-SHA256(pepper, secret) and a display prefix are stored, never the secret.
//! Every mutation runs in one `BEGIN IMMEDIATE` transaction that also bumps the store-wide
//! sequence in `meta` and stamps the changed row with it. Writers are serialised by SQLite,
//! so sequence order is commit order: a reader that has applied everything up to `n` only
//! needs the rows with `seq > n` ([`KeyStore::changes_since`]).

use std::fs;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::ids::{display_prefix, new_secret};
use super::pepper::Pepper;
use super::rules::{apply, deadline_after, issue, validate};
use super::{audit, unix_now, webhook_queue, StoreError};
use crate::clock::unix_now_ms;

/// File name of the key database inside the data directory.
pub const DB_FILE: &str = "keys.db";

/// How long a writer waits for another process's transaction (the CLI and a running gateway
/// share the file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema of a new store. Key expiry and rotation grace are unix milliseconds
/// (`expires_at_ms`, `previous_valid_until_ms`); a store made before kept them in whole
/// seconds under other names, and [`MIGRATE_TO_MS`] brings it up to date on open. A store
/// made before keys had MCP tool permissions gains `mcp_tools` on open ([`ADD_MCP_TOOLS`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('seq', 0);
CREATE TABLE IF NOT EXISTS keys (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    team                 TEXT NOT NULL,
    prefix               TEXT NOT NULL,
    hash                 BLOB NOT NULL UNIQUE,
    previous_hash        BLOB,
    previous_valid_until_ms INTEGER,
    models               TEXT NOT NULL,
    routes               TEXT NOT NULL,
    scopes               TEXT NOT NULL,
    rps                  REAL,
    rpm                  INTEGER,
    tpm                  INTEGER,
    max_concurrency      INTEGER,
    budget_usd           REAL,
    budget_tokens        INTEGER,
    budget_period        TEXT,
    metadata             TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    expires_at_ms        INTEGER,
    revoked_at           INTEGER,
    seq                  INTEGER NOT NULL,
    mcp_tools            TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS keys_by_seq ON keys (seq);
";

/// Gives a store made before keys had MCP tool permissions its `mcp_tools` columns, on keys
/// and on access requests: every existing key and request gets the empty list, which
/// permits every exposed tool, as such a key did before. The default also lets a writer
/// that does not know the column insert rows. `user_version` 3 marks this schema.
const ADD_MCP_TOOLS: [(&str, &str); 2] = [
    (
        "keys",
        "ALTER TABLE keys ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '[]'",
    ),
    (
        "access_requests",
        "ALTER TABLE access_requests ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '[]'",
    ),
];

/// A store whose expiry and grace are whole seconds (`expires_at`, `previous_valid_until`,
/// every store made before they were kept to the millisecond) to milliseconds: the columns
/// are renamed as well as converted, so a binary older than this one stops on the missing
/// column instead of reading milliseconds as seconds (keys that would never expire).
/// `user_version` 2 marks the millisecond schema.
const MIGRATE_TO_MS: &str = "
ALTER TABLE keys RENAME COLUMN expires_at TO expires_at_ms;
ALTER TABLE keys RENAME COLUMN previous_valid_until TO previous_valid_until_ms;
UPDATE keys SET expires_at_ms = expires_at_ms * 1000 WHERE expires_at_ms IS NOT NULL;
UPDATE keys SET previous_valid_until_ms = previous_valid_until_ms * 1000
    WHERE previous_valid_until_ms IS NOT NULL;
PRAGMA user_version = 2;
";

/// The schema version [`KeyStore::open`] brings a store to.
const USER_VERSION: i32 = 3;

const COLUMNS: &str = "id, name, team, prefix, hash, previous_hash, previous_valid_until_ms, \
    models, routes, scopes, rps, rpm, tpm, max_concurrency, budget_usd, budget_tokens, \
    budget_period, metadata, created_at, updated_at, expires_at_ms, revoked_at, seq, \
    mcp_tools";

/// [`COLUMNS`] as read from a store without `mcp_tools` that cannot be migrated because it
/// is opened read-only ([`KeyStore::open_read_only`]): every key permits every tool, as it
/// did in that store.
const COLUMNS_WITHOUT_MCP_TOOLS: &str = "id, name, team, prefix, hash, previous_hash, \
    previous_valid_until_ms, models, routes, scopes, rps, rpm, tpm, max_concurrency, \
    budget_usd, budget_tokens, budget_period, metadata, created_at, updated_at, \
    expires_at_ms, revoked_at, seq, '[]'";

/// [`COLUMNS`] as read from a read-only store still in whole seconds (which predates
/// `mcp_tools` too): the same records, converted.
const COLUMNS_IN_SECONDS: &str = "id, name, team, prefix, hash, previous_hash, \
    previous_valid_until * 1000, models, routes, scopes, rps, rpm, tpm, max_concurrency, \
    budget_usd, budget_tokens, budget_period, metadata, created_at, updated_at, \
    expires_at * 1000, revoked_at, seq, '[]'";

/// One virtual key as stored. Its serde form (admin API, CLI `--json`, audit log) leaves out
/// the hashes and the sequence, and its `Debug` redacts the hashes; the secret is never part
/// of it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `key_` and 20 random lowercase base32 characters.
    pub id: String,
    pub name: String,
    pub team: String,
    /// The secret's first 12 characters, for telling keys apart.
    pub prefix: String,
    /// Model-name globs the key may use (empty = all).
    pub models: Vec<String>,
    /// Route-name globs the key may use (empty = all).
    pub routes: Vec<String>,
    pub scopes: Vec<String>,
    /// Globs (`*`, `?`) of the exposed MCP tool names (`<prefix>__<tool>`) the key may list
    /// and call (empty = every exposed tool). A record written before keys had them (an
    /// older audit entry) reads as empty, which is what such a key permitted.
    #[serde(default)]
    pub mcp_tools: Vec<String>,
    pub rps: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// `day`, `month` or `total`.
    pub budget_period: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// When the key stops authenticating, in unix milliseconds (`None`: never), so a
    /// two-second key lives two seconds, not one to two. Its JSON form is `expires_at` in
    /// unix seconds (rounded down), like the record's other times.
    #[serde(default, rename = "expires_at", with = "unix_seconds")]
    pub expires_at_ms: Option<i64>,
    pub revoked_at: Option<i64>,
    /// HMAC-SHA256(pepper, current secret).
    #[serde(skip)]
    pub hash: [u8; 32],
    /// The hash of the secret before the last rotation, accepted until
    /// `previous_valid_until`.
    #[serde(skip)]
    pub previous_hash: Option<[u8; 32]>,
    /// End of the rotation grace in unix milliseconds; not secret, so shown (as
    /// `previous_valid_until`, unix seconds rounded down).
    #[serde(
        default,
        rename = "previous_valid_until",
        skip_serializing_if = "Option::is_none",
        with = "unix_seconds"
    )]
    pub previous_valid_until_ms: Option<i64>,
    /// Store-wide sequence number of the last change to this row.
    #[serde(skip)]
    pub seq: u64,
}

impl KeyRecord {
    /// Whether the key may authenticate at `now_ms` (unix milliseconds): not revoked and
    /// not expired.
    pub fn is_active_at_ms(&self, now_ms: i64) -> bool {
        // Revocation takes effect at once; expiry at the stamped millisecond.
        self.revoked_at.is_none() && self.expires_at_ms.is_none_or(|t| t > now_ms)
    }

    /// Whether the pre-rotation secret is still accepted at `now_ms` (unix milliseconds).
    pub fn previous_is_valid_at_ms(&self, now_ms: i64) -> bool {
        self.previous_hash.is_some() && self.previous_valid_until_ms.is_some_and(|t| t > now_ms)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
        Ok(KeyRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            team: row.get(2)?,
            prefix: row.get(3)?,
            hash: row.get(4)?,
            previous_hash: row.get(5)?,
            previous_valid_until_ms: row.get(6)?,
            models: json_column(row, 7)?,
            routes: json_column(row, 8)?,
            scopes: json_column(row, 9)?,
            rps: row.get(10)?,
            rpm: row.get(11)?,
            tpm: row.get(12)?,
            max_concurrency: row.get(13)?,
            budget_usd: row.get(14)?,
            budget_tokens: row.get(15)?,
            budget_period: row.get(16)?,
            metadata: json_column(row, 17)?,
            created_at: row.get(18)?,
            updated_at: row.get(19)?,
            expires_at_ms: row.get(20)?,
            revoked_at: row.get(21)?,
            seq: row.get(22)?,
            mcp_tools: json_column(row, 23)?,
        })
    }
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hashes are not the secret, but with the pepper they are a way to test guesses
        // offline: they stay out of logs and panic messages.
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("team", &self.team)
            .field("prefix", &self.prefix)
            .field("models", &self.models)
            .field("routes", &self.routes)
            .field("scopes", &self.scopes)
            .field("mcp_tools", &self.mcp_tools)
            .field("rps", &self.rps)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("max_concurrency", &self.max_concurrency)
            .field("budget_usd", &self.budget_usd)
            .field("budget_tokens", &self.budget_tokens)
            .field("budget_period", &self.budget_period)
            .field("metadata", &self.metadata)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at", &self.revoked_at)
            .field("hash", &"<redacted>")
            .field("previous_hash", &self.previous_hash.map(|_| "<redacted>"))
            .field("previous_valid_until_ms", &self.previous_valid_until_ms)
            .field("seq", &self.seq)
            .finish()
    }
}

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The fields of a new key (the body of `POST /admin/keys`, the flags of `keys create`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewKey {
    /// Required, non-empty; unique among keys that are not revoked.
    pub name: String,
    pub team: String,
    pub models: Vec<String>,
    pub routes: Vec<String>,
    pub scopes: Vec<String>,
    /// Globs of the exposed MCP tools the key may use (empty = all).
    pub mcp_tools: Vec<String>,
    pub rps: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    pub budget_period: Option<String>,
    /// Lifetime from now, like `30d`, `12h`, `90m`, `3600s`; `None` = never expires.
    pub expires_in: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl NewKey {
    /// A key named `name` with the fields a [`KeyPatch`] sets; unset fields take their defaults.
    pub fn from_patch(name: String, patch: KeyPatch) -> NewKey {
        NewKey {
            name,
            team: patch.team.unwrap_or_default(),
            models: patch.models.unwrap_or_default(),
            routes: patch.routes.unwrap_or_default(),
            scopes: patch.scopes.unwrap_or_default(),
            mcp_tools: patch.mcp_tools.unwrap_or_default(),
            rps: patch.rps.flatten(),
            rpm: patch.rpm.flatten(),
            tpm: patch.tpm.flatten(),
            max_concurrency: patch.max_concurrency.flatten(),
            budget_usd: patch.budget_usd.flatten(),
            budget_tokens: patch.budget_tokens.flatten(),
            budget_period: patch.budget_period.flatten(),
            expires_in: patch.expires_in.flatten(),
            metadata: patch.metadata.unwrap_or_default(),
        }
    }
}

/// A partial update (`PATCH /admin/keys/{id}`, `keys update`): `None` leaves a field alone;
/// for optional fields `Some(None)` clears it (JSON `null`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub team: Option<String>,
    pub models: Option<Vec<String>>,
    pub routes: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    /// Replaces the whole list; an empty list permits every exposed tool.
    pub mcp_tools: Option<Vec<String>>,
    pub rps: Option<Option<f64>>,
    pub rpm: Option<Option<u64>>,
    pub tpm: Option<Option<u64>>,
    pub max_concurrency: Option<Option<u32>>,
    pub budget_usd: Option<Option<f64>>,
    pub budget_tokens: Option<Option<u64>>,
    pub budget_period: Option<Option<String>>,
    /// A new lifetime counted from now; `Some(None)` makes the key never expire.
    pub expires_in: Option<Option<String>>,
    /// Replaces the whole metadata object.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The key store: one SQLite connection. Not shared across threads; open one per thread.
pub struct KeyStore {
    conn: Connection,
    pepper: Pepper,
    data_dir: std::path::PathBuf,
    /// How rows are read: [`COLUMNS`], or for a read-only store of an older schema
    /// [`COLUMNS_WITHOUT_MCP_TOOLS`] or [`COLUMNS_IN_SECONDS`].
    columns: &'static str,
    /// How access request rows are read: `access::COLUMNS`, or `access::COLUMNS_WITHOUT_MCP_TOOLS`
    /// for a read-only store made before requests had `mcp_tools`.
    access_columns: &'static str,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens (creating as needed) the data directory, `keys.db` in WAL mode with its schema,
    /// and the pepper.
    pub fn open(data_dir: &Path) -> Result<KeyStore, StoreError> {
        fs::create_dir_all(data_dir)?;
        let pepper = Pepper::load_or_create(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let is_new = !path.exists();
        let mut conn = Connection::open(&path)?;
        if is_new {
            // Key metadata is nobody else's business; SQLite gives the -wal and -shm files
            // the database file's permissions.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets the gateway's refresher read while the CLI writes (sqlite.org/wal.html);
        // NORMAL sync is durable across application crashes, which is what WAL needs.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate_to_ms(&mut conn)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(super::access::SCHEMA)?;
        add_mcp_tools(&mut conn)?;
        conn.execute_batch(webhook_queue::SQLITE_SCHEMA)?;
        conn.execute_batch(last_used::SCHEMA)?;
        Ok(KeyStore {
            conn,
            pepper,
            data_dir: data_dir.to_path_buf(),
            columns: COLUMNS,
            access_columns: super::access::COLUMNS,
        })
    }

    /// Opens an existing store for reading only: `keys.db` with SQLite's read-only flag and
    /// the pepper file as it is. Nothing in `data_dir` is created or changed (no schema, no
    /// pepper), so a store can be copied elsewhere (`store migrate`) while it stays exactly
    /// as it was. Writing through the returned store fails.
    pub fn open_read_only(data_dir: &Path) -> Result<KeyStore, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no {DB_FILE}", data_dir.display()),
            )));
        }
        let pepper = Pepper::load_existing(data_dir)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let columns = if in_seconds(&conn)? {
            COLUMNS_IN_SECONDS
        } else if !has_column(&conn, "keys", "mcp_tools")? {
            COLUMNS_WITHOUT_MCP_TOOLS
        } else {
            COLUMNS
        };
        let access_columns = if has_column(&conn, "access_requests", "mcp_tools")? {
            super::access::COLUMNS
        } else {
            super::access::COLUMNS_WITHOUT_MCP_TOOLS
        };
        Ok(KeyStore {
            conn,
            pepper,
            data_dir: data_dir.to_path_buf(),
            columns,
            access_columns,
        })
    }

    /// The pepper secrets are hashed under.
    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    /// The SQLite connection, for the tables that share `keys.db` (access requests, the
    /// webhook queue).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The columns access request rows are read with (see `access_columns`).
    pub(crate) fn access_columns(&self) -> &'static str {
        self.access_columns
    }

    /// [`KeyStore::connection`], for writes that open a transaction.
    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Issues a key. Returns the record and the secret, which is shown once and never
    /// stored. The action is audited as `create` by `actor`.
    pub fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError> {
        let (mut record, secret) = issue(new, &self.pepper, unix_now_ms())?;

        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_name_free(&tx, &record.name, None)?;
        record.seq = bump_seq(&tx)?;
        write_row(&tx, &record, true)?;
        queue_key_event(&tx, "create", &record, actor)?;
        tx.commit()?;
        self.audit(actor, "create", &record.id, None, Some(&record));
        Ok((record, secret.as_str().to_owned()))
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {} FROM keys ORDER BY created_at, id",
            self.columns
        ))?;
        let rows = statement.query_map([], KeyRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(get_row(&self.conn, self.columns, id)?)
    }

    /// Applies a partial update; audited as `update`.
    pub fn update(
        &mut self,
        id: &str,
        patch: KeyPatch,
        actor: &str,
    ) -> Result<KeyRecord, StoreError> {
        let now_ms = unix_now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before =
            get_row(&tx, COLUMNS, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let mut after = before.clone();
        apply(&mut after, patch, now_ms)?;
        validate(&after)?;
        if after.name != before.name {
            ensure_name_free(&tx, &after.name, Some(id))?;
        }
        after.updated_at = now_ms.div_euclid(1000);
        after.seq = bump_seq(&tx)?;
        write_row(&tx, &after, false)?;
        tx.commit()?;
        self.audit(actor, "update", id, Some(&before), Some(&after));
        Ok(after)
    }

    /// Revokes a key: it stops authenticating (once the credential cache applies the returned
    /// row, or its watcher reads it) but stays listed. Revoking a revoked key changes nothing and returns it. Audited as `revoke`.
    pub fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
        let now = unix_now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before =
            get_row(&tx, COLUMNS, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let mut after = before.clone();
        after.revoked_at = Some(now);
        after.updated_at = now;
        after.seq = bump_seq(&tx)?;
        write_row(&tx, &after, false)?;
        queue_key_event(&tx, "revoke", &after, actor)?;
        tx.commit()?;
        self.audit(actor, "revoke", id, Some(&before), Some(&after));
        Ok(after)
    }

    /// Gives a key a new secret, same id. The old secret keeps working for `grace` (zero:
    /// it dies now); a secret from an earlier rotation dies at once. Audited as `rotate`.
    pub fn rotate(
        &mut self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, String), StoreError> {
        let now_ms = unix_now_ms();
        let now = now_ms.div_euclid(1000);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before =
            get_row(&tx, COLUMNS, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if before.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "key {id} is revoked and cannot be rotated"
            )));
        }
        let secret = new_secret();
        let mut after = before.clone();
        after.previous_hash = Some(before.hash);
        after.previous_valid_until_ms = Some(deadline_after(now_ms, grace));
        after.hash = self.pepper.hash(secret.as_bytes());
        after.prefix = display_prefix(&secret);
        after.updated_at = now;
        after.seq = bump_seq(&tx)?;
        write_row(&tx, &after, false)?;
        queue_key_event(&tx, "rotate", &after, actor)?;
        tx.commit()?;
        self.audit(actor, "rotate", id, Some(&before), Some(&after));
        Ok((after, secret.as_str().to_owned()))
    }

    /// Rows changed after sequence `seq` (revoked ones included), in sequence order.
    pub fn changes_since(&self, seq: u64) -> Result<Vec<KeyRecord>, StoreError> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {} FROM keys WHERE seq > ?1 ORDER BY seq",
            self.columns
        ))?;
        let rows = statement.query_map([seq], KeyRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sequence number of the last change (0 for a new store). Cheap: one row.
    pub fn max_seq(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE name = 'seq'")?
            .query_row([], |row| row.get(0))?)
    }

    /// Appends to the audit log. The change is already committed, so a failing log write is
    /// reported, not undone.
    fn audit(
        &self,
        actor: &str,
        action: &str,
        id: &str,
        before: Option<&KeyRecord>,
        after: Option<&KeyRecord>,
    ) {
        if let Err(e) = audit::append(&self.data_dir, actor, action, Some(id), before, after) {
            log::error!("audit log write failed for {action} {id}: {e}");
        }
    }
}

/// Queues the webhook event of a key write in the write's own transaction, so the event
/// exists exactly when the change does. A full queue drops the event (logged and counted)
/// rather than refuse the write.
fn queue_key_event(
    conn: &Connection,
    action: &str,
    record: &KeyRecord,
    actor: &str,
) -> Result<(), StoreError> {
    if let Some(event) = webhook_queue::key_event(action, record, actor) {
        let queued = webhook_queue::enqueue(conn, &event, webhook_queue::MAX_PENDING)?;
        crate::metrics::global()
            .webhooks()
            .record_enqueue(&event.kind, queued);
    }
    Ok(())
}

fn get_row(conn: &Connection, columns: &str, id: &str) -> rusqlite::Result<Option<KeyRecord>> {
    conn.prepare_cached(&format!("SELECT {columns} FROM keys WHERE id = ?1"))?
        .query_row([id], KeyRecord::from_row)
        .optional()
}

/// Increments the change sequence inside the caller's transaction and returns the new value.
fn bump_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("UPDATE meta SET value = value + 1 WHERE name = 'seq' RETURNING value")?
        .query_row([], |row| row.get(0))
}

/// Names identify keys to Lua's `ctx:set_consumer(name)`, so no two unrevoked keys share one.
fn ensure_name_free(
    conn: &Connection,
    name: &str,
    except_id: Option<&str>,
) -> Result<(), StoreError> {
    let taken: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM keys WHERE name = ?1 AND revoked_at IS NULL \
             AND id IS NOT ?2)",
        )?
        .query_row(params![name, except_id], |row| row.get(0))?;
    if taken {
        return Err(StoreError::Conflict(format!(
            "a key named {name:?} already exists"
        )));
    }
    Ok(())
}

fn write_row(conn: &Connection, r: &KeyRecord, insert: bool) -> Result<(), StoreError> {
    let verb = if insert { "INSERT" } else { "REPLACE" };
    conn.prepare_cached(&format!(
        "{verb} INTO keys ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
          ?19, ?20, ?21, ?22, ?23, ?24)"
    ))?
    .execute(params![
        r.id,
        r.name,
        r.team,
        r.prefix,
        r.hash,
        r.previous_hash,
        r.previous_valid_until_ms,
        json(&r.models),
        json(&r.routes),
        json(&r.scopes),
        r.rps,
        r.rpm,
        r.tpm,
        r.max_concurrency,
        r.budget_usd,
        r.budget_tokens,
        r.budget_period,
        json(&r.metadata),
        r.created_at,
        r.updated_at,
        r.expires_at_ms,
        r.revoked_at,
        r.seq,
        json(&r.mcp_tools),
    ])?;
    Ok(())
}

/// Whether the key table is of the schema that kept expiry and grace in whole seconds.
fn in_seconds(conn: &Connection) -> rusqlite::Result<bool> {
    has_column(conn, "keys", "expires_at")
}

/// Whether `table` has a column named `column` (false when there is no such table).
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |row| row.get(0),
    )
}

/// Runs [`ADD_MCP_TOOLS`] on each table still without `mcp_tools`, in one transaction, and
/// marks the schema [`USER_VERSION`]. Two processes opening the same store at once add each
/// column once: the second finds it.
fn add_mcp_tools(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (table, statement) in ADD_MCP_TOOLS {
        if !has_column(&tx, table, "mcp_tools")? {
            tx.execute_batch(statement)?;
        }
    }
    tx.pragma_update(None, "user_version", USER_VERSION)?;
    tx.commit()
}

/// Runs [`MIGRATE_TO_MS`] on a store of the older schema, in one transaction; a store
/// already in milliseconds (or a new one) is left alone. Two processes opening the same
/// old store at once migrate it once: the second finds the new columns.
fn migrate_to_ms(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if in_seconds(&tx)? {
        tx.execute_batch(MIGRATE_TO_MS)?;
    }
    tx.commit()
}

/// The JSON form of the record's millisecond instants: unix seconds, rounded down, as the
/// admin API, `--json` and the audit log have always shown them (an entry written before
/// is read back the same way).
mod unix_seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => serializer.serialize_some(&ms.div_euclid(1000)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        Ok(Option::<i64>::deserialize(deserializer)?.map(|s| s.saturating_mul(1000)))
    }
}

/// JSON text of a list or map column.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lists and maps of JSON values serialize")
}

mod last_used;

#[cfg(test)]
mod tests;

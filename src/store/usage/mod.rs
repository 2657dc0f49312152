//! The usage ledger: one row per metered request, in `data_dir/usage.db` (one host) or in
//! the fleet's PostgreSQL `usage` table, and the reports read from it. It sits in the store
//! beside the keys and the audit log, written off the data plane.
//!
//! - [`ledger`]: workers hand [`UsageEvent`]s to a [`UsageSender`] (never blocks); one
//!   writer thread owned by the [`Ledger`] stores them in batches at least once a second.
//! - [`backend`]: the one interface both stores implement ([`UsageBackend`]): write a batch,
//!   report, and the totals budgets resume from. [`open_backend`] picks one from
//!   [`StoreSettings`].
//! - [`journal`] and [`delivery`]: on PostgreSQL the writer appends each batch to a local
//!   journal, and a delivery thread moves it to the database, so an edge node keeps
//!   metering through an outage and delivers every record exactly once afterwards.
//! - [`source`]: a single host's embedded ledger read for `credentialflow store migrate`,
//!   each row with an id that is the same on every run.
//! - [`series`]: usage over time in aligned buckets (`GET /admin/usage?bucket=..`).
//! - [`report`]: spend per key, team or model since a point in time (`credentialflow usage`,
//!   `GET /admin/usage`), the `--since` / `?since=` argument (`24h` or an RFC 3339
//!   timestamp), and the totals budgets resume from at start-up.
//!
//! The databases are touched only by the ledger's threads and by readers off the data plane
//! (CLI, admin thread, start-up); a worker only pushes onto a channel.

pub mod backend;
mod delivery;
pub mod journal;
pub mod ledger;
mod pg;
pub mod report;
mod rollup;
pub mod series;
pub mod source;

pub use backend::{open_backend, SqliteUsage, TotalsBy, UsageBackend};
pub use journal::{JOURNAL_DIR, MAX_JOURNAL_BYTES};
pub use ledger::{Ledger, LedgerOptions, LedgerStats, UsageSender};
pub(crate) use pg::insert_records;
pub use pg::PgUsage;
pub use report::{
    parse_since, report, report_for, totals_by_key, totals_by_key_for, totals_by_team,
    totals_by_team_for, GroupBy, SpendTotals, UsageRow,
};
pub(crate) use rollup::PG_MIGRATION as ROLLUP_MIGRATION;
pub use series::{Bucket, SeriesRow};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::config::StoreSettings;
use crate::store::postgres::PgError;
use crate::store::StoreError;

/// File name of the usage database inside the data directory.
pub const DB_FILE: &str = "usage.db";

/// How long a statement waits for another connection's write lock before failing. Readers
/// never wait in WAL mode; this covers a second process writing the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One row per request. Costs are integers in nano-USD (1e-9 USD) so that sums are exact;
/// tokens and costs are stored as SQLite's signed 64-bit integers.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    ts_ms             INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    team              TEXT NOT NULL DEFAULT '',
    model             TEXT,
    prompt            TEXT,
    route             TEXT,
    status            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_nano_usd     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (ts_ms);
CREATE INDEX IF NOT EXISTS usage_by_key ON usage (key_id, ts_ms);
CREATE INDEX IF NOT EXISTS usage_by_team ON usage (team, ts_ms);
";

/// One metered request, as a worker reports it after the response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// When the request finished, unix milliseconds.
    pub ts_ms: i64,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The virtual key that authenticated it, if any.
    pub key_id: Option<String>,
    /// The key's team (`""` when it has none).
    pub team: String,
    /// The client-facing model name (not the provider's), for AI requests.
    pub model: Option<String>,
    /// The prompt endpoint's name, for `/prompts/{name}` requests.
    pub prompt: Option<String>,
    /// The route's name, if the request matched one.
    pub route: Option<String>,
    /// The status sent to the client.
    pub status: u16,
    /// Prompt (input) tokens, as the provider reported them.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (a part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// What the request cost, in 1e-9 USD.
    pub cost_nano_usd: u64,
}

/// An event on its way to the store: the event, the ledger's own id for it, and the node
/// that metered it.
///
/// The id, not the request id, is what makes delivery idempotent: a client may send the
/// same `x-request-id` on every request, and keying on it would let a client erase its own
/// spend. The id is given once, when the writer takes the event, and travels with it
/// through the journal, so a batch delivered twice (a crash between commit and segment
/// deletion) is stored once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unique per record: a random per-process prefix and a counter.
    pub id: String,
    /// The gateway's name in the fleet (`[store] node`; empty on SQLite, which is one node).
    pub node: String,
    /// What was metered.
    pub event: UsageEvent,
}

/// Why the ledger could not be opened, written or read.
#[derive(Debug)]
pub enum LedgerError {
    /// SQLite failed (locked past the busy timeout, disk full, corrupt file).
    Db(rusqlite::Error),
    /// The data directory or the journal could not be written, or a thread could not start.
    Io(std::io::Error),
    /// PostgreSQL failed or could not be reached. Its text never holds the URL's password.
    Postgres(PgError),
    /// The store settings cannot be used (an unresolvable URL reference, a bad node name).
    Config(String),
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Db(e) => write!(f, "usage ledger: {e}"),
            LedgerError::Io(e) => write!(f, "usage ledger: {e}"),
            LedgerError::Postgres(e) => write!(f, "usage ledger: {e}"),
            LedgerError::Config(e) => write!(f, "usage ledger: {e}"),
        }
    }
}

impl From<PgError> for LedgerError {
    fn from(e: PgError) -> Self {
        LedgerError::Postgres(e)
    }
}

impl From<::postgres::Error> for LedgerError {
    fn from(e: ::postgres::Error) -> Self {
        LedgerError::Postgres(PgError::from_client(&e))
    }
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Postgres(e) => LedgerError::Postgres(e),
            StoreError::Db(e) => LedgerError::Db(e),
            StoreError::Io(e) => LedgerError::Io(e),
            other => LedgerError::Config(other.to_string()),
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Db(e)
    }
}

impl From<std::io::Error> for LedgerError {
    fn from(e: std::io::Error) -> Self {
        LedgerError::Io(e)
    }
}

/// The node name the ledger records: `[store] node`, else the host name.
fn node_of(settings: &StoreSettings) -> String {
    settings.store.node_name().unwrap_or_default()
}

/// The database's path in `data_dir`.
fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens (creating if needed) the database for the writer: WAL, so that reports read while
/// the ledger writes (sqlite.org/wal.html), and `synchronous=NORMAL`, which in WAL mode loses
/// no committed transaction when the process dies, only on power loss.
fn open_for_writing(data_dir: &Path) -> Result<Connection, LedgerError> {
    std::fs::create_dir_all(data_dir)?;
    let path = db_path(data_dir);
    let is_new = !path.exists();
    let mut conn = Connection::open(&path)?;
    if is_new {
        // Who spent what is nobody else's business; SQLite gives the -wal and -shm files the
        // database file's permissions.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    rollup::create_sqlite(&mut conn)?;
    Ok(conn)
}

/// Opens the database for a report, or `None` when there is no ledger yet (no database, or
/// one whose table the writer has not created yet). Readers never create the file.
fn open_for_reading(data_dir: &Path) -> Result<Option<Connection>, LedgerError> {
    let path = db_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    // Read-write without create: a read-only connection cannot always open a WAL database
    // whose -shm file is missing (sqlite.org/wal.html, "Read-Only Databases").
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage')",
        [],
        |row| row.get(0),
    )?;
    Ok(has_table.then_some(conn))
}

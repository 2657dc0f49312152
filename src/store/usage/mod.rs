//! The usage ledger: one row per metered request in `data_dir/usage.db`, and the reports
//! read from it. It sits in the store beside the keys and the audit log: all three are the
//! gateway's records in `data_dir`, written off the data plane.
//!
//! - [`ledger`]: workers hand [`UsageEvent`]s to a [`UsageSender`] (never blocks); one
//!   writer thread owned by the [`Ledger`] stores them in batches at least once a second.
//! - [`report`]: spend per key, team or model since a point in time (`credentialflow usage`,
//!   `GET /admin/usage`), the `--since` / `?since=` argument (`24h` or an RFC 3339
//!   timestamp), and the totals budgets resume from at start-up.
//!
//! SQLite is touched only by the writer thread and by readers off the data plane (CLI, admin
//! thread, start-up); a worker only pushes onto a channel.

pub mod ledger;
pub mod report;

pub use ledger::{Ledger, LedgerStats, UsageSender};
pub use report::{
    parse_since, report, totals_by_key, totals_by_team, GroupBy, SpendTotals, UsageRow,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

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
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Why the ledger could not be opened, written or read.
#[derive(Debug)]
pub enum LedgerError {
    /// SQLite failed (locked past the busy timeout, disk full, corrupt file).
    Db(rusqlite::Error),
    /// The data directory could not be created, or the writer thread could not start.
    Io(std::io::Error),
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Db(e) => write!(f, "usage ledger: {e}"),
            LedgerError::Io(e) => write!(f, "usage ledger: {e}"),
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
    let conn = Connection::open(&path)?;
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

//! Reading a single host's embedded ledger (`data_dir/usage.db`) for `credentialflow store
//! migrate`, as records with ids of their own, in batches, without changing the file.
//!
//! The embedded ledger keeps no record ids (one writer, one file, never a record twice), so a
//! copy must make them, and make the same ones on every run: the fleet's table stores a
//! record id once (`ON CONFLICT (record_id) DO NOTHING`), and that is what makes a second
//! run copy nothing. A row's id is `sqlite-` and the SHA-256 of three things:
//!
//! - the ledger's *first row* (lowest rowid), its full content: the source's identity. The
//!   gateway only ever appends to the ledger (it never updates or deletes a row), so the
//!   first row stays the first and a row keeps its rowid, run after run. It is the host's
//!   first metered request: its finish time to the millisecond, its request id and its key
//!   id, drawn at random on that host. Nothing configured is used (a data directory path, a
//!   pepper): those are the same on many hosts of a fleet built from one recipe, and the
//!   pepper must even be the same for `store migrate` to accept it.
//! - the row's rowid: identical rows (one client sending one `x-request-id` twice in a
//!   millisecond) stay two records.
//! - the row's full content: should two ledgers share a first row (one restored from the
//!   other's backup, both metering since), the rows they have in common are the same
//!   records and count once, and the rows metered since differ in content and stay apart.
//!
//! Live records' ids are 24 hex digits, `-` and a counter ([`super::ledger`]), so an
//! imported id never equals one.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Row};
use sha2::{Digest, Sha256};

use super::{db_path, UsageEvent, UsageRecord};

/// Rows read (and inserted) per batch: one round trip each, a bounded amount of memory.
pub const BATCH_ROWS: usize = 1000;

/// Longest text a copied row may hold in one field. Far above what the gateway records (a
/// request id is one header value, a model, route or prompt name a config name), and it
/// keeps a crafted file from feeding the database unbounded values.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// Prefix of every imported record id.
const ID_PREFIX: &str = "sqlite-";

/// Bumped if the id derivation ever changes (it must not, for copies already made).
const DOMAIN: &[u8] = b"credentialflow usage import v1\0";

const SELECT: &str = "SELECT rowid, ts_ms, request_id, key_id, team, model, prompt, route, \
    status, prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd \
    FROM usage WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";

/// A host's ledger opened read-only, read in rowid order.
pub struct LedgerSource {
    /// `None`: the host has no ledger, or no record in it.
    conn: Option<Connection>,
    /// SHA-256 of the first row's content (see the module documentation).
    identity: [u8; 32],
    /// The node name the copied records carry.
    node: String,
    /// The last rowid read.
    after: i64,
}

/// Why the ledger of a host cannot be copied.
#[derive(Debug)]
pub enum SourceError {
    /// SQLite could not read the file.
    Db(rusqlite::Error),
    /// A row holds what the gateway never records (a negative count, an oversized text);
    /// the file is not the gateway's ledger as written, and is not copied.
    Invalid {
        /// The row's rowid.
        rowid: i64,
        /// What is wrong with it.
        message: String,
    },
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Db(e) => write!(f, "{e}"),
            SourceError::Invalid { rowid, message } => write!(f, "row {rowid}: {message}"),
        }
    }
}

impl std::error::Error for SourceError {}

impl From<rusqlite::Error> for SourceError {
    fn from(e: rusqlite::Error) -> Self {
        SourceError::Db(e)
    }
}

impl LedgerSource {
    /// Opens the ledger in `data_dir` read-only; records read from it carry `node`. A
    /// directory without a ledger (or with an empty one) is a source of no records, and
    /// nothing is created in it.
    ///
    /// # Errors
    /// If the file exists but cannot be read as a ledger.
    pub fn open(data_dir: &Path, node: &str) -> Result<LedgerSource, SourceError> {
        let mut source = LedgerSource {
            conn: None,
            identity: [0; 32],
            node: node.to_owned(),
            after: 0,
        };
        let path = db_path(data_dir);
        if !path.is_file() {
            return Ok(source);
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let has_table: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage')",
            [],
            |row| row.get(0),
        )?;
        if !has_table {
            return Ok(source);
        }
        let first = {
            let mut statement = conn.prepare(SELECT)?;
            let mut rows = statement.query(rusqlite::params![i64::MIN, 1])?;
            match rows.next()? {
                Some(row) => Some(read_row(row)?),
                None => None,
            }
        };
        if let Some((rowid, event)) = first {
            source.identity = Sha256::digest(canonical(rowid, &event)).into();
            source.after = i64::MIN;
            source.conn = Some(conn);
        }
        Ok(source)
    }

    /// The next records in rowid order, at most [`BATCH_ROWS`]; empty when all are read.
    ///
    /// # Errors
    /// If the file cannot be read, or a row holds what the gateway never records.
    pub fn next_batch(&mut self) -> Result<Vec<UsageRecord>, SourceError> {
        let Some(conn) = &self.conn else {
            return Ok(Vec::new());
        };
        let mut statement = conn.prepare_cached(SELECT)?;
        let mut rows = statement.query(rusqlite::params![self.after, BATCH_ROWS as i64])?;
        let mut batch = Vec::new();
        while let Some(row) = rows.next()? {
            let (rowid, event) = read_row(row)?;
            check(rowid, &event)?;
            batch.push(UsageRecord {
                id: record_id(&self.identity, rowid, &event),
                node: self.node.clone(),
                event,
            });
            self.after = rowid;
        }
        Ok(batch)
    }
}

/// One row as its rowid and event. Counts are read as SQLite's signed integers and checked
/// here: a negative one was never written by the gateway.
fn read_row(row: &Row<'_>) -> Result<(i64, UsageEvent), SourceError> {
    let rowid: i64 = row.get(0)?;
    let invalid = |message: String| SourceError::Invalid { rowid, message };
    let count = |index: usize, name: &str| -> Result<u64, SourceError> {
        let value: i64 = row.get(index)?;
        u64::try_from(value).map_err(|_| invalid(format!("{name} is negative ({value})")))
    };
    let status: i64 = row.get(8)?;
    let status =
        u16::try_from(status).map_err(|_| invalid(format!("status {status} is not a status")))?;
    let event = UsageEvent {
        ts_ms: row.get(1)?,
        request_id: row.get(2)?,
        key_id: row.get(3)?,
        team: row.get(4)?,
        model: row.get(5)?,
        prompt: row.get(6)?,
        route: row.get(7)?,
        status,
        prompt_tokens: count(9, "prompt_tokens")?,
        completion_tokens: count(10, "completion_tokens")?,
        cached_tokens: count(11, "cached_tokens")?,
        cost_nano_usd: count(12, "cost_nano_usd")?,
    };
    Ok((rowid, event))
}

/// Every text of a copied row is bounded by [`MAX_TEXT_BYTES`].
fn check(rowid: i64, event: &UsageEvent) -> Result<(), SourceError> {
    let texts = [
        ("request_id", Some(&event.request_id)),
        ("key_id", event.key_id.as_ref()),
        ("team", Some(&event.team)),
        ("model", event.model.as_ref()),
        ("prompt", event.prompt.as_ref()),
        ("route", event.route.as_ref()),
    ];
    for (name, text) in texts {
        if let Some(text) = text.filter(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(SourceError::Invalid {
                rowid,
                message: format!(
                    "{name} is {} bytes long, more than {MAX_TEXT_BYTES}",
                    text.len()
                ),
            });
        }
    }
    Ok(())
}

/// The id of row `rowid` of the ledger whose first row hashes to `identity`.
fn record_id(identity: &[u8; 32], rowid: i64, event: &UsageEvent) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(identity);
    hasher.update(canonical(rowid, event));
    let digest = hasher.finalize();
    let mut id = String::with_capacity(ID_PREFIX.len() + 64);
    id.push_str(ID_PREFIX);
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// A row as bytes that differ whenever the row does: every field in a fixed order, numbers
/// as 8 bytes, texts with their length in front and `NULL` apart from `""`.
fn canonical(rowid: i64, e: &UsageEvent) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            None => out.push(0),
            Some(text) => {
                out.push(1);
                out.extend_from_slice(&(text.len() as u64).to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&rowid.to_be_bytes());
    out.extend_from_slice(&e.ts_ms.to_be_bytes());
    text(&mut out, Some(&e.request_id));
    text(&mut out, e.key_id.as_deref());
    text(&mut out, Some(&e.team));
    text(&mut out, e.model.as_deref());
    text(&mut out, e.prompt.as_deref());
    text(&mut out, e.route.as_deref());
    for number in [
        u64::from(e.status),
        e.prompt_tokens,
        e.completion_tokens,
        e.cached_tokens,
        e.cost_nano_usd,
    ] {
        out.extend_from_slice(&number.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::Ledger;
    use std::path::PathBuf;

    /// A data directory removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            Dir(std::env::temp_dir().join(format!(
                "cf-usage-source-{}",
                crate::store::ids::new_key_id()
            )))
        }

        /// Appends `events` to the ledger in this directory, as the gateway does.
        fn record(&self, events: &[UsageEvent]) {
            let (ledger, sender) = Ledger::start(&self.0).unwrap();
            for event in events {
                sender.record(event.clone());
            }
            ledger.stop();
        }

        fn all(&self) -> Vec<UsageRecord> {
            let mut source = LedgerSource::open(&self.0, "edge-1").unwrap();
            let mut all = Vec::new();
            loop {
                let batch = source.next_batch().unwrap();
                if batch.is_empty() {
                    return all;
                }
                all.extend(batch);
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(ts_ms: i64, request_id: &str) -> UsageEvent {
        UsageEvent {
            ts_ms,
            request_id: request_id.into(),
            key_id: Some("key_a".into()),
            team: "research".into(),
            model: Some("gpt-4o".into()),
            prompt: None,
            route: Some("ai".into()),
            status: 200,
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_tokens: 0,
            cost_nano_usd: 1_500,
        }
    }

    #[test]
    fn a_directory_without_a_ledger_is_a_source_of_nothing_and_stays_empty() {
        let dir = Dir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        assert!(dir.all().is_empty());
        assert!(!dir.0.join(super::super::DB_FILE).exists());
    }

    #[test]
    fn every_row_is_read_in_order_in_batches_with_the_node() {
        let dir = Dir::new();
        let events: Vec<UsageEvent> = (0..BATCH_ROWS as i64 + 5)
            .map(|i| event(1_000 + i, &format!("req-{i}")))
            .collect();
        dir.record(&events);
        let mut source = LedgerSource::open(&dir.0, "edge-1").unwrap();
        assert_eq!(source.next_batch().unwrap().len(), BATCH_ROWS);
        let rest = source.next_batch().unwrap();
        assert_eq!(rest.len(), 5);
        assert!(source.next_batch().unwrap().is_empty());
        let all = dir.all();
        assert_eq!(
            all.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
            events
        );
        assert!(all.iter().all(|r| r.node == "edge-1"));
    }

    #[test]
    fn ids_are_the_same_on_every_read_and_survive_appends() {
        let dir = Dir::new();
        dir.record(&[event(1, "a"), event(2, "b")]);
        let first: Vec<String> = dir.all().into_iter().map(|r| r.id).collect();
        dir.record(&[event(3, "c")]);
        let second: Vec<String> = dir.all().into_iter().map(|r| r.id).collect();
        assert_eq!(second.len(), 3);
        assert_eq!(&second[..2], &first[..]);
        assert!(second
            .iter()
            .all(|id| id.starts_with("sqlite-") && id.len() == 71));
    }

    #[test]
    fn identical_rows_are_two_records() {
        let dir = Dir::new();
        dir.record(&[event(1, "same"), event(1, "same")]);
        let ids: Vec<String> = dir.all().into_iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn two_hosts_with_the_same_rows_but_another_first_request_get_other_ids() {
        let a = Dir::new();
        let b = Dir::new();
        a.record(&[event(1, "first-on-a"), event(2, "x")]);
        b.record(&[event(1, "first-on-b"), event(2, "x")]);
        assert_ne!(a.all()[1].id, b.all()[1].id);
    }

    #[test]
    fn a_restored_copy_shares_its_common_rows_and_not_the_later_ones() {
        let a = Dir::new();
        a.record(&[event(1, "common")]);
        let b = Dir::new();
        std::fs::create_dir_all(&b.0).unwrap();
        std::fs::copy(
            a.0.join(super::super::DB_FILE),
            b.0.join(super::super::DB_FILE),
        )
        .unwrap();
        a.record(&[event(2, "later-on-a")]);
        b.record(&[event(2, "later-on-b")]);
        let (a, b) = (a.all(), b.all());
        assert_eq!(a[0].id, b[0].id);
        assert_ne!(a[1].id, b[1].id);
    }

    #[test]
    fn a_row_the_gateway_never_writes_is_refused_naming_its_rowid() {
        let dir = Dir::new();
        dir.record(&[event(1, "a"), event(2, "b")]);
        let conn = Connection::open(db_path(&dir.0)).unwrap();
        conn.execute("UPDATE usage SET cost_nano_usd = -5 WHERE rowid = 2", [])
            .unwrap();
        let mut source = LedgerSource::open(&dir.0, "edge-1").unwrap();
        let error = source.next_batch().unwrap_err().to_string();
        assert_eq!(error, "row 2: cost_nano_usd is negative (-5)");

        conn.execute(
            "UPDATE usage SET cost_nano_usd = 5, request_id = ?1 WHERE rowid = 2",
            [&"r".repeat(MAX_TEXT_BYTES + 1)],
        )
        .unwrap();
        let mut source = LedgerSource::open(&dir.0, "edge-1").unwrap();
        let error = source.next_batch().unwrap_err().to_string();
        assert!(
            error.starts_with("row 2: request_id is 8193 bytes"),
            "{error}"
        );
    }
}

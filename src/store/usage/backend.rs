//! [`UsageBackend`]: the one interface of the usage ledger's stores. The writer thread writes
//! batches through it, and the reports and the budget restore at start-up read through it, so
//! on PostgreSQL they see every node's records. [`SqliteUsage`] is the embedded ledger in
//! `data_dir/usage.db`; [`super::PgUsage`] the fleet's `usage` table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, TransactionBehavior};

use super::report::{count, GroupBy, SpendTotals, UsageRow, NANOS_PER_USD};
use super::rollup::{self, Span};
use super::series::{self, Bucket, SeriesRow, TOP_GROUPS};
use super::{
    node_of, open_for_reading, open_for_writing, LedgerError, PgUsage, UsageRecord, BUSY_TIMEOUT,
};
use crate::config::{StoreBackend, StoreSettings};

/// What budget totals add up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalsBy {
    /// The key id; requests without a key are not counted.
    Key,
    /// The team; requests by keys without a team are not counted.
    Team,
}

impl TotalsBy {
    /// The column summed on (from this fixed list, never from input).
    pub(super) fn column(self) -> &'static str {
        match self {
            TotalsBy::Key => "key_id",
            TotalsBy::Team => "team",
        }
    }
}

/// A store of usage records.
pub trait UsageBackend: Send {
    /// Stores `records` all or none. Storing a record whose id is already stored stores
    /// nothing more for it (PostgreSQL; SQLite is written once, by one writer, and never
    /// sees a record twice).
    ///
    /// # Errors
    /// If the store cannot be reached or refuses the write; nothing of the batch is stored.
    fn write_batch(&mut self, records: &[UsageRecord]) -> Result<(), LedgerError>;

    /// Usage grouped by `group_by` for requests at or after `since_ms` (unix ms; 0 = all
    /// time), most expensive first, then by group name (byte order).
    ///
    /// # Errors
    /// If the store cannot be read.
    fn report(&mut self, group_by: GroupBy, since_ms: i64) -> Result<Vec<UsageRow>, LedgerError>;

    /// Usage at or after `since_ms` in `bucket`-wide buckets, by `group_by`: the top groups
    /// by spend with their own rows, the rest summed into `group: None` (see
    /// [`super::series`]), ordered by bucket then group.
    ///
    /// # Errors
    /// If the store cannot be read.
    fn series(
        &mut self,
        group_by: GroupBy,
        since_ms: i64,
        bucket: Bucket,
    ) -> Result<Vec<SeriesRow>, LedgerError>;

    /// Spend per key or team since `since_ms`, for resuming budgets at start-up. Requests
    /// without a key (or with team `""`) are not counted.
    ///
    /// # Errors
    /// If the store cannot be read.
    fn totals(
        &mut self,
        by: TotalsBy,
        since_ms: i64,
    ) -> Result<HashMap<String, SpendTotals>, LedgerError>;
}

/// Opens the ledger store `settings` name, for reading (reports, budgets). SQLite's is opened
/// lazily (a directory without a ledger reads as no usage and is not created); PostgreSQL's
/// connects now, and applies pending migrations.
///
/// # Errors
/// If the URL reference does not resolve, or PostgreSQL cannot be reached.
pub fn open_backend(settings: &StoreSettings) -> Result<Box<dyn UsageBackend>, LedgerError> {
    match settings.store.backend {
        StoreBackend::Sqlite => Ok(Box::new(SqliteUsage::new(&settings.data_dir))),
        StoreBackend::Postgres => {
            let mut pg = PgUsage::from_settings(settings)?;
            pg.connect()?;
            Ok(Box::new(pg))
        }
    }
}

/// The embedded ledger: `data_dir/usage.db`.
pub struct SqliteUsage {
    data_dir: PathBuf,
    /// The writer's connection, opened on the first write (or by [`SqliteUsage::open`]).
    writer: Option<Connection>,
}

impl SqliteUsage {
    /// The ledger in `data_dir`, opened when first used.
    pub fn new(data_dir: &Path) -> SqliteUsage {
        SqliteUsage {
            data_dir: data_dir.to_owned(),
            writer: None,
        }
    }

    /// Creates (if needed) and opens the database for writing now, so that a ledger that
    /// cannot write fails at start rather than at the first batch.
    ///
    /// # Errors
    /// If the directory or the database cannot be created or opened.
    pub fn open(data_dir: &Path) -> Result<SqliteUsage, LedgerError> {
        Ok(SqliteUsage {
            data_dir: data_dir.to_owned(),
            writer: Some(open_for_writing(data_dir)?),
        })
    }

    /// How long a write waits for another connection's lock (tests shorten it).
    pub(super) fn set_busy_timeout(&mut self, timeout: std::time::Duration) {
        if let Some(conn) = &self.writer {
            let _ = conn.busy_timeout(timeout);
        }
    }

    fn writer(&mut self) -> Result<&mut Connection, LedgerError> {
        if self.writer.is_none() {
            let conn = open_for_writing(&self.data_dir)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            self.writer = Some(conn);
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }
}

const INSERT: &str = "INSERT INTO usage (ts_ms, request_id, key_id, team, model, prompt, route, \
    status, prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

impl UsageBackend for SqliteUsage {
    fn write_batch(&mut self, records: &[UsageRecord]) -> Result<(), LedgerError> {
        let conn = self.writer()?;
        // IMMEDIATE takes the write lock up front, so waiting for another writer goes through
        // the busy timeout rather than failing on a lock upgrade
        // (sqlite.org/lang_transaction.html).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for UsageRecord { event: e, .. } in records {
                insert.execute(params![
                    e.ts_ms,
                    e.request_id,
                    e.key_id,
                    e.team,
                    e.model,
                    e.prompt,
                    e.route,
                    e.status,
                    sql_integer(e.prompt_tokens),
                    sql_integer(e.completion_tokens),
                    sql_integer(e.cached_tokens),
                    sql_integer(e.cost_nano_usd),
                ])?;
            }
        }
        rollup::add_sqlite(&tx, records)?;
        Ok(tx.commit()?)
    }

    fn report(&mut self, group_by: GroupBy, since_ms: i64) -> Result<Vec<UsageRow>, LedgerError> {
        let Some(conn) = open_for_reading(&self.data_dir)? else {
            return Ok(Vec::new());
        };
        let span = Span::new(since_ms, None, rollup::has_table(&conn)?);
        Ok(sqlite_report(&conn, group_by, span)?)
    }

    fn series(
        &mut self,
        group_by: GroupBy,
        since_ms: i64,
        bucket: Bucket,
    ) -> Result<Vec<SeriesRow>, LedgerError> {
        let Some(conn) = open_for_reading(&self.data_dir)? else {
            return Ok(Vec::new());
        };
        let span = Span::new(since_ms, Some(bucket), rollup::has_table(&conn)?);
        Ok(sqlite_series(&conn, group_by, span, bucket)?)
    }

    fn totals(
        &mut self,
        by: TotalsBy,
        since_ms: i64,
    ) -> Result<HashMap<String, SpendTotals>, LedgerError> {
        let Some(conn) = open_for_reading(&self.data_dir)? else {
            return Ok(HashMap::new());
        };
        let column = by.column();
        let sql = format!(
            "SELECT {column}, SUM(prompt_tokens + completion_tokens), SUM(cost_nano_usd) \
             FROM usage WHERE ts_ms >= ?1 AND {column} IS NOT NULL AND {column} != '' \
             GROUP BY {column}"
        );
        let mut statement = conn.prepare(&sql)?;
        let rows = statement.query_map([since_ms], |row| {
            let totals = SpendTotals {
                tokens: count(row.get(1)?),
                cost_nano_usd: count(row.get(2)?),
            };
            Ok((row.get(0)?, totals))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The report over `span`'s sources (see [`rollup::Span`]).
pub(super) fn sqlite_report(
    conn: &Connection,
    group_by: GroupBy,
    span: Span,
) -> rusqlite::Result<Vec<UsageRow>> {
    let sql = series::report_sql(group_by, ["?1", "?2", "?3"], span, false);
    let mut statement = conn.prepare(&sql)?;
    let all = [span.since, span.hour_from, span.day_from];
    // Rows only: the query names `since` alone.
    let used = if span.reads_rollups() {
        &all[..]
    } else {
        &all[..1]
    };
    let rows = statement.query_map(rusqlite::params_from_iter(used), |row| {
        Ok(UsageRow {
            group: row.get(0)?,
            requests: count(row.get(1)?),
            prompt_tokens: count(row.get(2)?),
            completion_tokens: count(row.get(3)?),
            cost_usd: count(row.get(4)?) as f64 / NANOS_PER_USD,
        })
    })?;
    rows.collect()
}

/// The series over `span`'s sources (see [`rollup::Span`]).
pub(super) fn sqlite_series(
    conn: &Connection,
    group_by: GroupBy,
    span: Span,
    bucket: Bucket,
) -> rusqlite::Result<Vec<SeriesRow>> {
    let sql = series::sql(group_by, ["?1", "?2", "?3", "?4", "?5"], span, false);
    let mut statement = conn.prepare(&sql)?;
    let all = [
        span.since,
        bucket.millis(),
        TOP_GROUPS,
        span.hour_from,
        span.day_from,
    ];
    // Rows only: the query names since, width and top alone.
    let used = if span.reads_rollups() {
        &all[..]
    } else {
        &all[..3]
    };
    let rows = statement.query_map(rusqlite::params_from_iter(used), |row| {
        Ok(series::row(
            row.get(0)?,
            row.get(1)?,
            [
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ],
        ))
    })?;
    rows.collect()
}

/// SQLite and PostgreSQL integers are signed 64-bit; a count past that (never seen in
/// practice) is clamped rather than failing the whole batch.
pub(super) fn sql_integer(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The node name a ledger for `settings` records (used by [`super::Ledger`]).
pub(super) fn node_for(settings: &StoreSettings) -> String {
    match settings.store.backend {
        StoreBackend::Sqlite => String::new(),
        StoreBackend::Postgres => node_of(settings),
    }
}

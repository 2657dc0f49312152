//! Usage rolled up by hour and by day, so a month of the dashboard does not sum a million
//! ledger rows on every view.
//!
//! `usage_rollup` holds, per width (an hour, a day), dimension (`key`, `team`, `model`),
//! bucket and group, the sums a series or report needs. The ledger writer adds every batch to
//! it in the batch's own transaction (SQLite: summed in memory first, one upsert per group;
//! PostgreSQL: from the rows the batch actually inserted, so a batch delivered twice is
//! counted once), and both stores backfill it from the ledger when it is created.
//!
//! A query reads the part of its range before the first whole hour from the ledger, whole
//! hours from the hourly rollup and, for daily buckets and reports, whole days from the daily
//! one ([`Span`]); five-minute buckets read the ledger only. The sums are the same integers
//! either way, so the answers are identical to summing the rows (tested on both stores).

use std::collections::BTreeMap;

use rusqlite::{params, Transaction};

use super::backend::sql_integer;
use super::report::GroupBy;
use super::series::Bucket;
use super::UsageRecord;

/// An hour and a day, in milliseconds: the rollups' widths.
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// SQLite's table, created by the writer on open (and then [`BACKFILL`]ed).
pub(super) const SQLITE_SCHEMA: &str = "
CREATE TABLE usage_rollup (
    width_ms          INTEGER NOT NULL,
    dim               TEXT NOT NULL,
    bucket_ms         INTEGER NOT NULL,
    grp               TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_nano_usd     INTEGER NOT NULL,
    PRIMARY KEY (width_ms, dim, bucket_ms, grp)
) WITHOUT ROWID;
";

/// One backfill statement: the ledger summed for one width and dimension.
macro_rules! backfill {
    ($width:literal, $dim:literal, $column:literal) => {
        concat!(
            "INSERT INTO usage_rollup (width_ms, dim, bucket_ms, grp, requests, errors, \
             prompt_tokens, completion_tokens, cost_nano_usd) \
             SELECT ",
            $width,
            ", '",
            $dim,
            "', ts_ms - (ts_ms % ",
            $width,
            "), ",
            $column,
            ", COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens), \
             SUM(completion_tokens), SUM(cost_nano_usd) FROM usage WHERE ",
            $column,
            " IS NOT NULL GROUP BY 3, 4;\n"
        )
    };
}

/// Fills an empty rollup from the whole ledger (both stores' SQL).
pub(super) const BACKFILL: &str = concat!(
    backfill!("3600000", "key", "key_id"),
    backfill!("3600000", "team", "team"),
    backfill!("3600000", "model", "model"),
    backfill!("86400000", "key", "key_id"),
    backfill!("86400000", "team", "team"),
    backfill!("86400000", "model", "model"),
);

/// PostgreSQL's migration "usage rollups": the table and its backfill.
pub const PG_MIGRATION: &str = concat!(
    "CREATE TABLE usage_rollup (
    width_ms          BIGINT NOT NULL,
    dim               TEXT NOT NULL,
    bucket_ms         BIGINT NOT NULL,
    grp               TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_nano_usd     BIGINT NOT NULL,
    PRIMARY KEY (width_ms, dim, bucket_ms, grp)
);
",
    backfill!("3600000", "key", "key_id"),
    backfill!("3600000", "team", "team"),
    backfill!("3600000", "model", "model"),
    backfill!("86400000", "key", "key_id"),
    backfill!("86400000", "team", "team"),
    backfill!("86400000", "model", "model"),
);

/// PostgreSQL's batch insert with its rollup: the ledger rows go in as before (a record
/// already stored is skipped) and exactly the inserted ones are added to the rollup, in
/// one statement. In key order, so two nodes adding to the same rows lock them in the same
/// order. Answers how many ledger rows were inserted.
pub(super) const PG_INSERT: &str = "WITH inserted AS ( \
    INSERT INTO usage (record_id, node, ts_ms, request_id, key_id, team, \
    model, prompt, route, status, prompt_tokens, completion_tokens, cached_tokens, \
    cost_nano_usd) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::int[], $11::bigint[], $12::bigint[], \
    $13::bigint[], $14::bigint[]) \
    ON CONFLICT (record_id) DO NOTHING \
    RETURNING ts_ms, key_id, team, model, status, prompt_tokens, completion_tokens, \
    cost_nano_usd), \
  rolled AS ( \
    INSERT INTO usage_rollup (width_ms, dim, bucket_ms, grp, requests, errors, prompt_tokens, \
    completion_tokens, cost_nano_usd) \
    SELECT w.width_ms, d.dim, i.ts_ms - (i.ts_ms % w.width_ms), d.grp, COUNT(*), \
      SUM(CASE WHEN i.status >= 400 THEN 1 ELSE 0 END), SUM(i.prompt_tokens), \
      SUM(i.completion_tokens), SUM(i.cost_nano_usd) \
    FROM inserted i \
    CROSS JOIN (VALUES (3600000::BIGINT), (86400000::BIGINT)) AS w(width_ms) \
    CROSS JOIN LATERAL (VALUES ('key', i.key_id), ('team', i.team), ('model', i.model)) \
      AS d(dim, grp) \
    WHERE d.grp IS NOT NULL \
    GROUP BY 1, 2, 3, 4 \
    ORDER BY 1, 2, 3, 4 \
    ON CONFLICT (width_ms, dim, bucket_ms, grp) DO UPDATE SET \
      requests = usage_rollup.requests + EXCLUDED.requests, \
      errors = usage_rollup.errors + EXCLUDED.errors, \
      prompt_tokens = usage_rollup.prompt_tokens + EXCLUDED.prompt_tokens, \
      completion_tokens = usage_rollup.completion_tokens + EXCLUDED.completion_tokens, \
      cost_nano_usd = usage_rollup.cost_nano_usd + EXCLUDED.cost_nano_usd) \
  SELECT COUNT(*) FROM inserted";

/// The sums of one rollup row.
#[derive(Default)]
struct Sums {
    requests: u64,
    errors: u64,
    prompt: u64,
    completion: u64,
    cost: u64,
}

/// Adds `records` to SQLite's rollup inside the batch's transaction: summed in memory
/// first, so a batch of a thousand requests from a handful of keys is a handful of upserts.
pub(super) fn add_sqlite(tx: &Transaction<'_>, records: &[UsageRecord]) -> rusqlite::Result<()> {
    let mut sums: BTreeMap<(i64, &'static str, i64, &str), Sums> = BTreeMap::new();
    for UsageRecord { event: e, .. } in records {
        let groups = [
            ("key", e.key_id.as_deref()),
            ("team", Some(e.team.as_str())),
            ("model", e.model.as_deref()),
        ];
        for width in [HOUR_MS, DAY_MS] {
            // As the SQL computes it (`%` truncates in both).
            let bucket = e.ts_ms - e.ts_ms % width;
            for (dim, group) in groups {
                let Some(group) = group else { continue };
                let sum = sums.entry((width, dim, bucket, group)).or_default();
                sum.requests += 1;
                sum.errors += u64::from(e.status >= 400);
                sum.prompt = sum.prompt.saturating_add(e.prompt_tokens);
                sum.completion = sum.completion.saturating_add(e.completion_tokens);
                sum.cost = sum.cost.saturating_add(e.cost_nano_usd);
            }
        }
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO usage_rollup (width_ms, dim, bucket_ms, grp, requests, errors, \
         prompt_tokens, completion_tokens, cost_nano_usd) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (width_ms, dim, bucket_ms, grp) DO UPDATE SET \
           requests = requests + excluded.requests, errors = errors + excluded.errors, \
           prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
           completion_tokens = completion_tokens + excluded.completion_tokens, \
           cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd",
    )?;
    for ((width, dim, bucket, group), sum) in &sums {
        upsert.execute(params![
            width,
            dim,
            bucket,
            group,
            sql_integer(sum.requests),
            sql_integer(sum.errors),
            sql_integer(sum.prompt),
            sql_integer(sum.completion),
            sql_integer(sum.cost),
        ])?;
    }
    Ok(())
}

/// Creates SQLite's rollup and fills it from the ledger, once: in one transaction, so a
/// writer and a reader opening the ledger at once never see it half-filled.
pub(super) fn create_sqlite(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !has_table(&tx)? {
        tx.execute_batch(SQLITE_SCHEMA)?;
        tx.execute_batch(BACKFILL)?;
    }
    tx.commit()
}

/// Whether SQLite's ledger has its rollup (a ledger last written by an older binary may not;
/// it is then read from its rows only).
pub(super) fn has_table(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
         AND name = 'usage_rollup')",
        [],
        |row| row.get(0),
    )
}

/// Where a query's range `since..` is read from: ledger rows in `since..hour_from`, the
/// hourly rollup in `hour_from..day_from`, the daily one from `day_from`. A bound of
/// `i64::MAX` leaves the later sources out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub since: i64,
    pub hour_from: i64,
    pub day_from: i64,
}

impl Span {
    /// The span of a series in `bucket`s (`None`: a report, one sum per group) from
    /// `since_ms`; `rollups` false (a ledger without them) reads rows only.
    pub fn new(since_ms: i64, bucket: Option<Bucket>, rollups: bool) -> Span {
        let rows_only = Span {
            since: since_ms,
            hour_from: i64::MAX,
            day_from: i64::MAX,
        };
        match bucket {
            _ if !rollups => rows_only,
            Some(Bucket::FiveMinutes) => rows_only,
            Some(Bucket::Hour) => Span {
                hour_from: ceil(since_ms, HOUR_MS),
                ..rows_only
            },
            Some(Bucket::Day) | None => Span {
                since: since_ms,
                hour_from: ceil(since_ms, HOUR_MS),
                day_from: ceil(since_ms, DAY_MS),
            },
        }
    }
}

impl Span {
    /// Whether any of the range is read from the rollups.
    pub fn reads_rollups(&self) -> bool {
        self.hour_from != i64::MAX
    }
}

/// The first multiple of `width` at or after `ts_ms`.
fn ceil(ts_ms: i64, width: i64) -> i64 {
    match ts_ms.rem_euclid(width) {
        0 => ts_ms,
        r => ts_ms.saturating_add(width - r),
    }
}

/// The rows a series or report sums, as `ts, grp, requests, failed, prompt, completion,
/// cost`, from the three sources of a [`Span`] (placeholders: since, hour_from, day_from),
/// or, for a span that reads rows only ([`Span::reads_rollups`] false), from the ledger
/// alone (placeholder: since; the table may not even exist). `column` and the dimension
/// come from [`GroupBy`] (a fixed list, never input).
pub(super) fn source(group_by: GroupBy, [since, hour, day]: [&str; 3], rollups: bool) -> String {
    let column = group_by.column();
    let dim = group_by.as_str();
    if !rollups {
        return format!(
            "SELECT ts_ms AS ts, {column} AS grp, 1 AS requests, \
               CASE WHEN status >= 400 THEN 1 ELSE 0 END AS failed, prompt_tokens AS prompt, \
               completion_tokens AS completion, cost_nano_usd AS cost \
             FROM usage WHERE ts_ms >= {since} AND {column} IS NOT NULL"
        );
    }
    format!(
        "SELECT ts_ms AS ts, {column} AS grp, 1 AS requests, \
           CASE WHEN status >= 400 THEN 1 ELSE 0 END AS failed, prompt_tokens AS prompt, \
           completion_tokens AS completion, cost_nano_usd AS cost \
         FROM usage WHERE ts_ms >= {since} AND ts_ms < {hour} AND {column} IS NOT NULL \
         UNION ALL \
         SELECT bucket_ms, grp, requests, errors, prompt_tokens, completion_tokens, \
           cost_nano_usd \
         FROM usage_rollup WHERE width_ms = {HOUR_MS} AND dim = '{dim}' \
           AND bucket_ms >= {hour} AND bucket_ms < {day} \
         UNION ALL \
         SELECT bucket_ms, grp, requests, errors, prompt_tokens, completion_tokens, \
           cost_nano_usd \
         FROM usage_rollup WHERE width_ms = {DAY_MS} AND dim = '{dim}' AND bucket_ms >= {day}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::backend::{sqlite_report, sqlite_series};
    use crate::store::usage::{open_for_reading, SqliteUsage, UsageBackend, UsageEvent};

    /// 700 requests over three and a half days from 14 keys (so the top ten fold the rest),
    /// some without a key or a model, a team `""`, every seventh one failed.
    fn records(start: i64) -> Vec<UsageRecord> {
        (0..700_i64)
            .map(|i| UsageRecord {
                id: format!("rec-{i}"),
                node: String::new(),
                event: UsageEvent {
                    ts_ms: start + i * 431_111,
                    request_id: format!("req-{i}"),
                    key_id: (i % 23 != 0).then(|| format!("key_{:02}", i % 14)),
                    team: ["research", "ops", ""][(i % 3) as usize].into(),
                    model: (i % 11 != 0).then(|| ["gpt-4o", "claude"][(i % 2) as usize].into()),
                    prompt: None,
                    route: Some("ai".into()),
                    status: if i % 7 == 0 { 502 } else { 200 },
                    prompt_tokens: 10 + (i % 5) as u64,
                    completion_tokens: (i % 9) as u64,
                    cached_tokens: 0,
                    cost_nano_usd: 1_000 + (i * 37 % 1_000) as u64,
                },
            })
            .collect()
    }

    /// Every series and report the dashboard asks for, from rollups and from rows only,
    /// for starts on and off the hour and the day.
    fn assert_rollups_answer_as_rows(dir: &std::path::Path, start: i64) {
        let mut ledger = SqliteUsage::new(dir);
        let conn = open_for_reading(dir).unwrap().unwrap();
        assert!(has_table(&conn).unwrap());
        for since in [
            0,
            start,
            start + 1,
            start + 5 * HOUR_MS + 12_345,
            start + DAY_MS + 7,
        ] {
            for group_by in [GroupBy::Key, GroupBy::Team, GroupBy::Model] {
                for bucket in [Bucket::Hour, Bucket::Day] {
                    let rolled = ledger.series(group_by, since, bucket).unwrap();
                    let rows = Span::new(since, Some(bucket), false);
                    let raw = sqlite_series(&conn, group_by, rows, bucket).unwrap();
                    assert!(!raw.is_empty());
                    assert_eq!(rolled, raw, "{group_by} by {bucket} since {since}");
                }
                let rolled = ledger.report(group_by, since).unwrap();
                let raw = sqlite_report(&conn, group_by, Span::new(since, None, false)).unwrap();
                assert!(!raw.is_empty());
                assert_eq!(rolled, raw, "report by {group_by} since {since}");
            }
        }
    }

    #[test]
    fn rollups_answer_as_the_rows_do_and_are_backfilled() {
        let dir = std::env::temp_dir().join(format!(
            "cf-usage-rollup-{}",
            crate::store::ids::new_key_id()
        ));
        let start = 1_764_460_800_000 + 3 * HOUR_MS + 1_234;
        let mut ledger = SqliteUsage::open(&dir).unwrap();
        // Batches of 50: the rollup's rows are added to across batches.
        for batch in records(start).chunks(50) {
            ledger.write_batch(batch).unwrap();
        }
        drop(ledger);
        assert_rollups_answer_as_rows(&dir, start);

        // A ledger written before rollups existed gets them filled on the writer's open.
        open_for_reading(&dir)
            .unwrap()
            .unwrap()
            .execute_batch("DROP TABLE usage_rollup")
            .unwrap();
        drop(SqliteUsage::open(&dir).unwrap());
        assert_rollups_answer_as_rows(&dir, start);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spans_read_rows_before_the_first_whole_hour_and_rollups_after() {
        let since = 5 * DAY_MS + 3 * HOUR_MS + 17;
        assert_eq!(
            Span::new(since, Some(Bucket::Day), true),
            Span {
                since,
                hour_from: 5 * DAY_MS + 4 * HOUR_MS,
                day_from: 6 * DAY_MS
            }
        );
        assert_eq!(
            Span::new(since, Some(Bucket::Hour), true).day_from,
            i64::MAX,
            "hourly buckets never read days"
        );
        for rows_only in [
            Span::new(since, Some(Bucket::FiveMinutes), true),
            Span::new(since, Some(Bucket::Day), false),
        ] {
            assert_eq!(
                (rows_only.hour_from, rows_only.day_from),
                (i64::MAX, i64::MAX)
            );
        }
        // An aligned start reads no rows at all, and all time is all rollup.
        assert_eq!(Span::new(2 * DAY_MS, None, true).hour_from, 2 * DAY_MS);
        assert_eq!(Span::new(0, None, true).day_from, 0);
    }
}

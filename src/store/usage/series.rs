//! Usage over time: the ledger summed into fixed buckets (`GET /admin/usage?bucket=..`), the
//! dashboard's charts.
//!
//! Buckets are aligned to the unix epoch (so to UTC midnight for `1d`): a bucket's `ts_ms` is
//! `ts_ms - ts_ms % bucket`. The series is *sparse*: a bucket with no requests for a group has
//! no row (the reader fills the gaps with zeros). Only the [`TOP_GROUPS`] groups with the
//! highest spend over the whole range keep their own rows; every other group is summed into
//! rows whose `group` is `null`, so the answer is at most `buckets x (TOP_GROUPS + 1)` rows
//! however many keys there are.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::report::{count, GroupBy, NANOS_PER_USD};
use super::rollup::{self, Span};

/// Groups with rows of their own; the rest are summed into the `null` group.
pub const TOP_GROUPS: i64 = 10;

/// Most buckets one series may span (`since` to now): 1000 five-minute buckets is about
/// three and a half days, 1000 hours six weeks, 1000 days nearly three years.
pub const MAX_BUCKETS: i64 = 1000;

/// The width of a series' buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    FiveMinutes,
    Hour,
    Day,
}

impl Bucket {
    /// The width in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Bucket::FiveMinutes => 5 * 60_000,
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }

    /// The start of the bucket holding `ts_ms`.
    pub fn start_of(self, ts_ms: i64) -> i64 {
        ts_ms - ts_ms.rem_euclid(self.millis())
    }

    /// How many buckets `since_ms..=now_ms` touches.
    pub fn buckets_between(self, since_ms: i64, now_ms: i64) -> i64 {
        (self.start_of(now_ms) - self.start_of(since_ms)) / self.millis() + 1
    }
}

impl FromStr for Bucket {
    type Err = String;

    fn from_str(text: &str) -> Result<Bucket, String> {
        match text {
            "5m" => Ok(Bucket::FiveMinutes),
            "1h" => Ok(Bucket::Hour),
            "1d" => Ok(Bucket::Day),
            _ => Err(format!("{text:?} is not one of 5m, 1h, 1d")),
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bucket::FiveMinutes => "5m",
            Bucket::Hour => "1h",
            Bucket::Day => "1d",
        })
    }
}

/// One group's usage in one bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesRow {
    /// The bucket's start, unix milliseconds.
    pub ts_ms: i64,
    /// The key id, team or model; `null` for the groups past the top ones, summed.
    pub group: Option<String>,
    pub requests: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Spend in USD, summed in nano-USD and converted once.
    pub cost_usd: f64,
}

/// The series query; the rows come from [`rollup::source`] and `casts` adds PostgreSQL's
/// casts (SUM of BIGINT is NUMERIC there) and byte-order collation (SQLite orders by bytes
/// already). Parameters: since, bucket width, top groups, then the [`Span`]'s `hour_from`
/// and `day_from` when it reads rollups.
///
/// The ordering is on an outer query because PostgreSQL cannot apply a collation to an
/// output column's alias in the `ORDER BY` of the query that names it.
///
/// The range's rows are read once (materialized): the top groups are picked from their sums
/// per group, then every row is summed into its bucket and its group, or `NULL` past the top
/// ones. On 1,000,000 rows from 10,000 keys this is about 40% less work than summing per
/// (bucket, group) first and picking the top from those sums; the rollups spare a month's
/// view most of the rows (README, "Dashboard").
pub(super) fn sql(group_by: GroupBy, placeholders: [&str; 5], span: Span, casts: bool) -> String {
    let [since, width, top, hour, day] = placeholders;
    let source = rollup::source(group_by, [since, hour, day], span.reads_rollups());
    let (sum, collate) = if casts {
        ("::BIGINT", " COLLATE \"C\"")
    } else {
        ("", "")
    };
    format!(
        "WITH base AS MATERIALIZED ({source}), \
         top AS ( \
           SELECT grp FROM base GROUP BY grp \
           ORDER BY SUM(cost) DESC, grp{collate} ASC LIMIT {top}) \
         SELECT * FROM ( \
           SELECT ts - (ts % {width}) AS bucket, \
             CASE WHEN grp IN (SELECT grp FROM top) THEN grp END AS shown, \
             SUM(requests){sum}, SUM(failed){sum}, SUM(prompt){sum}, SUM(completion){sum}, \
             SUM(cost){sum} \
           FROM base GROUP BY bucket, shown) AS series \
         ORDER BY bucket ASC, shown{collate} ASC NULLS LAST"
    )
}

/// The report query (one row per group, most expensive first, then by group name in byte
/// order) over the same sources. Parameters: since, then the [`Span`]'s `hour_from` and
/// `day_from` when it reads rollups.
pub(super) fn report_sql(
    group_by: GroupBy,
    placeholders: [&str; 3],
    span: Span,
    casts: bool,
) -> String {
    let source = rollup::source(group_by, placeholders, span.reads_rollups());
    let (sum, collate) = if casts {
        ("::BIGINT", " COLLATE \"C\"")
    } else {
        ("", "")
    };
    format!(
        "SELECT grp, SUM(requests){sum}, SUM(prompt){sum}, SUM(completion){sum}, \
           SUM(cost){sum} AS cost \
         FROM ({source}) AS base GROUP BY grp ORDER BY cost DESC, grp{collate} ASC"
    )
}

/// A row of the query's columns.
pub(super) fn row(ts_ms: i64, group: Option<String>, numbers: [i64; 5]) -> SeriesRow {
    let [requests, errors, prompt, completion, cost] = numbers;
    SeriesRow {
        ts_ms,
        group,
        requests: count(requests),
        errors: count(errors),
        prompt_tokens: count(prompt),
        completion_tokens: count(completion),
        cost_usd: count(cost) as f64 / NANOS_PER_USD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_aligned_to_the_epoch() {
        assert_eq!(Bucket::Hour.start_of(3_600_000 * 5 + 59_999), 3_600_000 * 5);
        assert_eq!(Bucket::Day.start_of(86_400_000 + 1), 86_400_000);
        assert_eq!(Bucket::FiveMinutes.start_of(299_999), 0);
        assert_eq!(Bucket::Hour.buckets_between(0, 3_600_000 * 24 - 1), 24);
        assert_eq!(Bucket::Hour.buckets_between(3_599_999, 3_600_000), 2);
    }

    #[test]
    fn bucket_names_parse_and_print() {
        for name in ["5m", "1h", "1d"] {
            assert_eq!(name.parse::<Bucket>().unwrap().to_string(), name);
        }
        assert!("1m".parse::<Bucket>().is_err());
        assert!("".parse::<Bucket>().is_err());
    }

    /// The series query's cost on a large ledger: 1,000,000 rows from 10,000 keys over 30
    /// days. Ignored by default (it writes ~150 MB and takes a while); run it with
    /// `cargo test --lib series_on_a_million_rows -- --ignored --nocapture` to see the
    /// figures. It checks the answers' shape, not their timing.
    #[test]
    #[ignore]
    fn series_on_a_million_rows() {
        use crate::store::usage::{SqliteUsage, UsageBackend, UsageEvent, UsageRecord};
        use std::time::Instant;

        const ROWS: i64 = 1_000_000;
        const NOW: i64 = 1_764_460_800_000;
        const SPAN: i64 = 30 * 86_400_000;
        let dir = std::env::temp_dir().join(format!(
            "cf-series-million-{}",
            crate::store::ids::new_key_id()
        ));
        let mut ledger = SqliteUsage::open(&dir).unwrap();
        let started = Instant::now();
        let models = ["gpt-4o", "gpt-4o-mini", "claude", "gemini", "mistral"];
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..ROWS {
            // Spread evenly over the span, keys and teams cycling at different rates.
            batch.push(UsageRecord {
                id: format!("r{i}"),
                node: String::new(),
                event: UsageEvent {
                    ts_ms: NOW - SPAN + i * (SPAN / ROWS),
                    request_id: format!("req-{i}"),
                    key_id: Some(format!("key_{:05}", (i * 7919) % 10_000)),
                    team: format!("team-{}", i % 20),
                    model: Some(models[(i % 5) as usize].into()),
                    prompt: None,
                    route: Some("ai".into()),
                    status: if i % 50 == 0 { 500 } else { 200 },
                    prompt_tokens: 100,
                    completion_tokens: 20,
                    cached_tokens: 0,
                    cost_nano_usd: 1_000 + (i % 97) as u64,
                },
            });
            if batch.len() == 10_000 {
                ledger.write_batch(&batch).unwrap();
                batch.clear();
            }
        }
        eprintln!("wrote {ROWS} rows in {:?}", started.elapsed());
        for (group_by, since, bucket) in [
            (GroupBy::Model, 3_600_000, Bucket::FiveMinutes),
            (GroupBy::Model, 86_400_000, Bucket::Hour),
            (GroupBy::Key, 7 * 86_400_000, Bucket::Hour),
            (GroupBy::Team, 30 * 86_400_000, Bucket::Day),
            (GroupBy::Key, 30 * 86_400_000, Bucket::Day),
        ] {
            let mut reader = SqliteUsage::new(&dir);
            let started = Instant::now();
            let rows = reader.series(group_by, NOW - since, bucket).unwrap();
            let took = started.elapsed();
            let buckets = rows
                .iter()
                .map(|r| r.ts_ms)
                .collect::<std::collections::BTreeSet<_>>();
            let requests: u64 = rows.iter().map(|r| r.requests).sum();
            eprintln!(
                "series group_by={group_by} since={}h bucket={bucket}: {} rows, {} buckets, {requests} requests in {took:?}",
                since / 3_600_000,
                rows.len(),
                buckets.len(),
            );
            assert!(buckets.len() as i64 <= bucket.buckets_between(NOW - since, NOW));
            let groups = rows
                .iter()
                .map(|r| &r.group)
                .collect::<std::collections::BTreeSet<_>>();
            assert!(groups.len() as i64 <= TOP_GROUPS + 1);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

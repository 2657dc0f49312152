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

/// The series query; `{column}` comes from [`GroupBy::column`] (a fixed list, never input)
/// and `{collate}` is PostgreSQL's byte-order collation (empty on SQLite, which orders by
/// bytes). Parameters: since, bucket width, top groups. The top groups are chosen once over
/// the range (a non-correlated subquery), by spend then name, as the report orders them.
pub(super) fn sql(group_by: GroupBy, placeholders: [&str; 3], casts: bool) -> String {
    let column = group_by.column();
    let [since, width, top] = placeholders;
    let (sum, collate) = if casts {
        ("::BIGINT", " COLLATE \"C\"")
    } else {
        ("", "")
    };
    format!(
        "SELECT bucket, grp, COUNT(*), SUM(failed){sum}, SUM(prompt_tokens){sum}, \
         SUM(completion_tokens){sum}, SUM(cost_nano_usd){sum} FROM ( \
           SELECT ts_ms - (ts_ms % {width}) AS bucket, \
             CASE WHEN {column} IN ( \
               SELECT {column} FROM usage WHERE ts_ms >= {since} AND {column} IS NOT NULL \
               GROUP BY {column} ORDER BY SUM(cost_nano_usd) DESC, {column}{collate} ASC \
               LIMIT {top}) THEN {column} END AS grp, \
             CASE WHEN status >= 400 THEN 1 ELSE 0 END AS failed, \
             prompt_tokens, completion_tokens, cost_nano_usd \
           FROM usage WHERE ts_ms >= {since} AND {column} IS NOT NULL \
         ) AS bucketed \
         GROUP BY bucket, grp ORDER BY bucket ASC, grp{collate} ASC NULLS LAST"
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
}

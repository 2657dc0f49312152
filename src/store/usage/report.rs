//! Reading the ledger: spend per key, team or model since a point in time, and the totals
//! budgets resume from at start-up. Each call opens its own connection (the CLI, the admin
//! thread and start-up call these; never a worker). A data directory without a ledger yet
//! reads as no usage. The `*_for` forms read the ledger a config's [`StoreSettings`] name
//! (on PostgreSQL, the whole fleet's); the others the embedded one in a data directory.
//!
//! How far back a report goes is the `--since` / `?since=` argument ([`parse_since`]):
//! either a duration back from now in the project's one grammar ([`crate::clock::duration`]:
//! `90s`, `30m`, `24h`, `7d`, `1h30m`), or an RFC 3339 timestamp (`2026-11-30T00:00:00Z`,
//! `2026-11-30T09:30:00.250+05:30`), or an RFC 3339 full date (`2026-11-30`, midnight UTC).
//! When the argument is absent, callers report all time (`since_ms = 0`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use super::backend::{open_backend, SqliteUsage, TotalsBy, UsageBackend};
use super::LedgerError;
use crate::clock::calendar::parse_rfc3339_ms;
use crate::clock::parse_duration;
use crate::config::StoreSettings;

/// Nano-USD in one USD.
pub(super) const NANOS_PER_USD: f64 = 1e9;

/// What a usage report adds up by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// The virtual key's id; requests without a key are left out.
    #[default]
    Key,
    /// The key's team; requests by keys without a team are the group `""`.
    Team,
    /// The client-facing model name; requests without a model are left out.
    Model,
}

impl GroupBy {
    /// The name used by `--group-by` and `?group_by=`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Team => "team",
            GroupBy::Model => "model",
        }
    }

    /// The column grouped on. Rows where it is NULL are left out of the report: usage
    /// without a key (or a model) belongs to no key (or model).
    pub(super) fn column(self) -> &'static str {
        match self {
            GroupBy::Key => "key_id",
            GroupBy::Team => "team",
            GroupBy::Model => "model",
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(text: &str) -> Result<GroupBy, String> {
        match text {
            "key" => Ok(GroupBy::Key),
            "team" => Ok(GroupBy::Team),
            "model" => Ok(GroupBy::Model),
            _ => Err(format!("{text:?} is not one of key, team, model")),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a usage report; its JSON form is the contract's
/// `{"group","requests","prompt_tokens","completion_tokens","cost_usd"}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageRow {
    /// The key id, the team or the model name.
    pub group: String,
    /// Requests recorded.
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Spend in USD, summed exactly in nano-USD and converted once.
    pub cost_usd: f64,
}

/// Usage grouped by `group_by` for requests at or after `since_ms` (unix ms; 0 = all time),
/// most expensive first, then by group name, from the embedded ledger in `data_dir`.
///
/// # Errors
/// If the database exists but cannot be read.
pub fn report(
    data_dir: &Path,
    group_by: GroupBy,
    since_ms: i64,
) -> Result<Vec<UsageRow>, LedgerError> {
    SqliteUsage::new(data_dir).report(group_by, since_ms)
}

/// [`report`] from the ledger `settings` name: on PostgreSQL, the whole fleet's usage.
///
/// # Errors
/// If the ledger cannot be reached or read.
pub fn report_for(
    settings: &StoreSettings,
    group_by: GroupBy,
    since_ms: i64,
) -> Result<Vec<UsageRow>, LedgerError> {
    open_backend(settings)?.report(group_by, since_ms)
}

/// Settled spend of one key or team, as budgets count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpendTotals {
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// Cost in 1e-9 USD.
    pub cost_nano_usd: u64,
}

/// Spend per key id since `since_ms` (unix ms) in the embedded ledger in `data_dir`.
/// Requests without a key are not counted.
///
/// # Errors
/// If the database exists but cannot be read.
pub fn totals_by_key(
    data_dir: &Path,
    since_ms: i64,
) -> Result<HashMap<String, SpendTotals>, LedgerError> {
    SqliteUsage::new(data_dir).totals(TotalsBy::Key, since_ms)
}

/// Spend per team since `since_ms` (unix ms) in the embedded ledger in `data_dir`.
/// Requests by keys without a team (team `""`) are not counted.
///
/// # Errors
/// If the database exists but cannot be read.
pub fn totals_by_team(
    data_dir: &Path,
    since_ms: i64,
) -> Result<HashMap<String, SpendTotals>, LedgerError> {
    SqliteUsage::new(data_dir).totals(TotalsBy::Team, since_ms)
}

/// Spend per key id since `since_ms` in the ledger `settings` name, for resuming key
/// budgets at start-up (on PostgreSQL: what every node of the fleet recorded).
///
/// # Errors
/// If the ledger cannot be reached or read.
pub fn totals_by_key_for(
    settings: &StoreSettings,
    since_ms: i64,
) -> Result<HashMap<String, SpendTotals>, LedgerError> {
    open_backend(settings)?.totals(TotalsBy::Key, since_ms)
}

/// Spend per team since `since_ms` in the ledger `settings` name, for resuming team budgets.
///
/// # Errors
/// If the ledger cannot be reached or read.
pub fn totals_by_team_for(
    settings: &StoreSettings,
    since_ms: i64,
) -> Result<HashMap<String, SpendTotals>, LedgerError> {
    open_backend(settings)?.totals(TotalsBy::Team, since_ms)
}

/// A SUM or COUNT as unsigned (the writer never stores negative numbers).
pub(super) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// What a bad argument is told to look like.
const EXPECTED: &str = "use a duration like 24h, 30m, 7d or an RFC 3339 time like \
    2026-11-30T00:00:00Z";

/// Parses `text` into unix milliseconds, durations counting back from `now_ms`.
///
/// # Errors
/// One line saying what is wrong and what is expected.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if looks_like_date(text) {
        return parse_rfc3339_ms(text).ok_or_else(|| format!("bad since {text:?}: {EXPECTED}"));
    }
    // The grammar's own error names the units; the timestamp form is added here. A bare
    // number is refused there too: seconds, or a unix timestamp? The unit says which.
    let back = parse_duration(text)
        .map_err(|e| format!("{e}; or an RFC 3339 time like 2026-11-30T00:00:00Z"))?;
    let back_ms = i64::try_from(back.as_millis()).expect("durations are at most 36600 days");
    Ok(now_ms.saturating_sub(back_ms).max(0))
}

/// Whether `text` starts like `YYYY-`.
fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

#[cfg(test)]
mod since_tests {
    use super::*;

    const NOW: i64 = 1_764_460_800_000; // 2025-11-30T00:00:00Z

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_since("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_since("30m", NOW), Ok(NOW - 1_800_000));
        assert_eq!(parse_since("24h", NOW), Ok(NOW - 86_400_000));
        assert_eq!(parse_since("7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_since(" 1h ", NOW), Ok(NOW - 3_600_000));
    }

    #[test]
    fn duration_longer_than_the_epoch_means_all_time() {
        assert_eq!(parse_since("36500d", 1_000), Ok(0));
    }

    #[test]
    fn rfc3339_utc_timestamps_are_exact() {
        assert_eq!(parse_since("2025-11-30T00:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_since("1970-01-01T00:00:00Z", NOW), Ok(0));
        assert_eq!(parse_since("2000-02-29t12:30:15z", 0), Ok(951_827_415_000));
        assert_eq!(parse_since("2025-11-30 00:00:01Z", 0), Ok(NOW + 1000));
    }

    #[test]
    fn rfc3339_offsets_are_applied() {
        assert_eq!(parse_since("2025-11-30T01:00:00+01:00", 0), Ok(NOW));
        assert_eq!(parse_since("2025-11-29T18:30:00-05:30", 0), Ok(NOW));
        assert_eq!(parse_since("2025-11-30T00:00:00+00:00", 0), Ok(NOW));
    }

    #[test]
    fn rfc3339_fractions_keep_milliseconds() {
        assert_eq!(parse_since("2025-11-30T00:00:00.25Z", 0), Ok(NOW + 250));
        assert_eq!(
            parse_since("2025-11-30T00:00:00.123456789Z", 0),
            Ok(NOW + 123)
        );
    }

    #[test]
    fn full_date_is_midnight_utc() {
        assert_eq!(parse_since("2025-11-30", 0), Ok(NOW));
    }

    #[test]
    fn garbage_is_refused_with_one_line() {
        for bad in [
            "",
            "yesterday",
            "24",
            "24x",
            "h",
            "-5m",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-11-30T24:00:00Z",
            "2025-11-30T00:00:00",
            "2025-11-30T00:00:00+0100",
            "2025-11-30T00:00:00.Z",
            "2025-11-30T00:00:00Zjunk",
            "2025-11-30X00:00:00Z",
            "2025-1-30",
        ] {
            let error = parse_since(bad, NOW).unwrap_err();
            assert!(
                error.contains("24h") && !error.contains('\n'),
                "{bad:?}: {error}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::{Ledger, UsageEvent};
    use std::path::PathBuf;

    /// A data directory holding a ledger with the given events; removed on drop.
    struct Ledgered(PathBuf);

    impl Ledgered {
        fn with(events: &[UsageEvent]) -> Ledgered {
            let dir = std::env::temp_dir().join(format!(
                "cf-usage-report-{}",
                crate::store::ids::new_key_id()
            ));
            let (ledger, sender) = Ledger::start(&dir).unwrap();
            for event in events {
                sender.record(event.clone());
            }
            ledger.stop();
            Ledgered(dir)
        }
    }

    impl Drop for Ledgered {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(
        ts_ms: i64,
        key: Option<&str>,
        team: &str,
        model: Option<&str>,
        cost: u64,
    ) -> UsageEvent {
        UsageEvent {
            ts_ms,
            request_id: format!("req-{ts_ms}"),
            key_id: key.map(str::to_owned),
            team: team.into(),
            model: model.map(str::to_owned),
            prompt: None,
            route: Some("ai".into()),
            status: 200,
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_tokens: 0,
            cost_nano_usd: cost,
        }
    }

    fn sample() -> Vec<UsageEvent> {
        vec![
            event(1_000, Some("key_a"), "research", Some("gpt-4o"), 1_000_000),
            event(2_000, Some("key_a"), "research", Some("claude"), 2_000_000),
            event(3_000, Some("key_b"), "research", Some("gpt-4o"), 500_000),
            event(4_000, Some("key_c"), "", Some("gpt-4o"), 4_000_000),
            event(5_000, None, "", None, 0),
        ]
    }

    fn groups(rows: &[UsageRow]) -> Vec<&str> {
        rows.iter().map(|r| r.group.as_str()).collect()
    }

    #[test]
    fn report_groups_by_key_and_leaves_out_keyless_requests() {
        let dir = Ledgered::with(&sample());
        let rows = report(&dir.0, GroupBy::Key, 0).unwrap();
        assert_eq!(groups(&rows), ["key_c", "key_a", "key_b"]);
        assert_eq!(
            rows[1],
            UsageRow {
                group: "key_a".into(),
                requests: 2,
                prompt_tokens: 200,
                completion_tokens: 40,
                cost_usd: 0.003,
            }
        );
    }

    #[test]
    fn report_groups_by_team_with_no_team_as_empty_group() {
        let dir = Ledgered::with(&sample());
        let rows = report(&dir.0, GroupBy::Team, 0).unwrap();
        assert_eq!(groups(&rows), ["", "research"]);
        assert_eq!(rows[0].requests, 2);
        assert_eq!(rows[1].requests, 3);
        assert_eq!(rows[1].cost_usd, 0.0035);
    }

    #[test]
    fn report_groups_by_model_and_leaves_out_modelless_requests() {
        let dir = Ledgered::with(&sample());
        let rows = report(&dir.0, GroupBy::Model, 0).unwrap();
        assert_eq!(groups(&rows), ["gpt-4o", "claude"]);
        assert_eq!(rows[0].requests, 3);
        assert_eq!(rows[0].cost_usd, 0.0055);
    }

    #[test]
    fn report_counts_only_requests_since() {
        let dir = Ledgered::with(&sample());
        let rows = report(&dir.0, GroupBy::Key, 2_000).unwrap();
        assert_eq!(groups(&rows), ["key_c", "key_a", "key_b"]);
        assert_eq!(rows[1].requests, 1);
        assert_eq!(rows[1].cost_usd, 0.002);
        assert!(report(&dir.0, GroupBy::Key, 5_001).unwrap().is_empty());
    }

    #[test]
    fn report_orders_equal_costs_by_group_name() {
        let dir = Ledgered::with(&[
            event(1, Some("key_z"), "", None, 7),
            event(2, Some("key_m"), "", None, 7),
            event(3, Some("key_a"), "", None, 7),
            event(4, Some("key_q"), "", None, 9),
        ]);
        let rows = report(&dir.0, GroupBy::Key, 0).unwrap();
        assert_eq!(groups(&rows), ["key_q", "key_a", "key_m", "key_z"]);
    }

    #[test]
    fn report_without_a_ledger_is_empty() {
        let dir =
            std::env::temp_dir().join(format!("cf-usage-none-{}", crate::store::ids::new_key_id()));
        assert!(report(&dir, GroupBy::Key, 0).unwrap().is_empty());
        assert!(totals_by_key(&dir, 0).unwrap().is_empty());
        assert!(!dir.exists());
    }

    #[test]
    fn usage_row_serializes_to_the_contract_fields() {
        let row = UsageRow {
            group: "key_a".into(),
            requests: 2,
            prompt_tokens: 200,
            completion_tokens: 40,
            cost_usd: 0.003,
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({
                "group": "key_a",
                "requests": 2,
                "prompt_tokens": 200,
                "completion_tokens": 40,
                "cost_usd": 0.003,
            })
        );
    }

    #[test]
    fn totals_by_key_sum_tokens_and_cost_since() {
        let dir = Ledgered::with(&sample());
        let totals = totals_by_key(&dir.0, 0).unwrap();
        assert_eq!(totals.len(), 3);
        assert_eq!(
            totals["key_a"],
            SpendTotals {
                tokens: 240,
                cost_nano_usd: 3_000_000,
            }
        );
        let later = totals_by_key(&dir.0, 2_000).unwrap();
        assert_eq!(later["key_a"].cost_nano_usd, 2_000_000);
    }

    #[test]
    fn totals_by_team_leave_out_requests_without_a_team() {
        let dir = Ledgered::with(&sample());
        let totals = totals_by_team(&dir.0, 0).unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!(
            totals["research"],
            SpendTotals {
                tokens: 360,
                cost_nano_usd: 3_500_000,
            }
        );
    }

    #[test]
    fn group_by_parses_its_three_names() {
        assert_eq!("key".parse(), Ok(GroupBy::Key));
        assert_eq!("team".parse(), Ok(GroupBy::Team));
        assert_eq!("model".parse(), Ok(GroupBy::Model));
        assert!("Key".parse::<GroupBy>().is_err());
        assert!("".parse::<GroupBy>().is_err());
    }
}

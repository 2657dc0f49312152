//! `GET /admin/usage?group_by=key|team|model&since=..`: the spend report from the usage
//! ledger (README, "Admin API"), the array `credentialflow usage --json` prints (grouped by
//! key, each row also has the key's `name`).
//!
//! `group_by` defaults to `key`, `since` to all time. Values are percent-decoded
//! (RFC 3986 §2.1); a `+` stays a `+` (it is only a space in HTML forms, and RFC 3339 offsets
//! need it), so `since=2026-11-30T00:00:00+01:00` and `...%2B01:00` mean the same.
//! Unknown or repeated parameters are refused, like unknown fields in the keys API.
//!
//! With `bucket=5m|1h|1d` the answer is a time series instead (the dashboard's charts):
//! `[{"ts_ms","group","requests","errors","prompt_tokens","completion_tokens","cost_usd"}]`,
//! buckets aligned to the epoch, sparse (see [`crate::store::usage::series`]). `since`
//! then defaults to 24 hours back, and may reach at most [`MAX_BUCKETS`] buckets back.
//!
//! `limit=N` (1 to [`MAX_LIMIT`], report only) keeps the N most expensive groups: the
//! dashboard's top keys need ten rows, not one per key of ten thousand. Rows grouped by key
//! carry the key's `name`.
//!
//! The report reads the ledger `[store]` names ([`UsageReader`]): the embedded one in
//! `data_dir`, or on PostgreSQL the fleet's `usage` table, so any node answers for the
//! whole fleet.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::http::{Request, Response};
use super::routes::{error, json_response};
use super::AdminState;
use crate::config::{StoreBackend, StoreSettings};
use crate::store::usage::series::MAX_BUCKETS;
use crate::store::usage::{
    self, Bucket, GroupBy, LedgerError, PgUsage, SeriesRow, SqliteUsage, UsageBackend,
};

/// Largest `limit` of a report.
pub const MAX_LIMIT: usize = 10_000;

/// How far back a series reaches when `since` is not given.
const DEFAULT_SERIES_SINCE_MS: i64 = 24 * 3_600_000;

/// The ledger `GET /admin/usage` reads, shared by the admin connection threads, which take
/// turns with it. One reader rather than one per request: on PostgreSQL a fresh one would
/// connect, log in and check the schema on every call. It connects on first use and again
/// after any failure, so a gateway started while the database is down reports once it is
/// back.
pub struct UsageReader {
    /// `server.data_dir` (the embedded ledger's directory, or the journal's on PostgreSQL).
    data_dir: PathBuf,
    backend: Mutex<Box<dyn UsageBackend>>,
    /// Whether the ledger is SQLite's, whose reads each open their own connection: those
    /// run side by side (the overview's series and top keys at once) instead of queueing
    /// behind the lock that PostgreSQL's one client needs.
    embedded: bool,
}

impl UsageReader {
    /// The reader of the ledger `settings` name. Nothing is opened or connected yet.
    ///
    /// # Errors
    /// If `[store] url` does not resolve or the node name is not usable (PostgreSQL).
    pub fn new(settings: &StoreSettings) -> Result<UsageReader, LedgerError> {
        let backend: Box<dyn UsageBackend> = match settings.store.backend {
            StoreBackend::Sqlite => Box::new(SqliteUsage::new(&settings.data_dir)),
            StoreBackend::Postgres => Box::new(PgUsage::from_settings(settings)?),
        };
        Ok(UsageReader {
            data_dir: settings.data_dir.clone(),
            backend: Mutex::new(backend),
            embedded: settings.store.backend == StoreBackend::Sqlite,
        })
    }

    /// `server.data_dir` of the settings this reader was made from.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn report(
        &self,
        group_by: GroupBy,
        since_ms: i64,
    ) -> Result<Vec<usage::UsageRow>, LedgerError> {
        if self.embedded {
            return SqliteUsage::new(&self.data_dir).report(group_by, since_ms);
        }
        // A panic while reporting leaves nothing half-written: the backend is still usable.
        let mut backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        backend.report(group_by, since_ms)
    }

    fn series(
        &self,
        group_by: GroupBy,
        since_ms: i64,
        bucket: Bucket,
    ) -> Result<Vec<SeriesRow>, LedgerError> {
        if self.embedded {
            return SqliteUsage::new(&self.data_dir).series(group_by, since_ms, bucket);
        }
        let mut backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        backend.series(group_by, since_ms, bucket)
    }
}

/// What `GET /admin/usage` was asked for.
struct Query {
    group_by: GroupBy,
    /// Unix ms; `None` when not given.
    since_ms: Option<i64>,
    bucket: Option<Bucket>,
    /// Most report rows answered (`None`: all).
    limit: Option<usize>,
}

/// `GET /admin/usage`: 200 with the rows, 400 for a bad parameter.
pub(crate) fn usage(state: &AdminState, request: &Request) -> Response {
    usage_at(state, request, crate::clock::unix_now_ms())
}

fn usage_at(state: &AdminState, request: &Request, now_ms: i64) -> Response {
    let bad = |message: &str| error(400, "invalid_request_error", "invalid_parameter", message);
    let query = match parameters(request.query.as_deref(), now_ms) {
        Ok(query) => query,
        Err(message) => return bad(&message),
    };
    let answer = match query.bucket {
        None => state
            .usage
            .report(query.group_by, query.since_ms.unwrap_or(0))
            .map(|mut rows| {
                rows.truncate(query.limit.unwrap_or(usize::MAX));
                serde_json::json!(rows)
            }),
        Some(_) if query.limit.is_some() => {
            return bad("limit applies to a report, not to a series (bucket)");
        }
        Some(bucket) => {
            let since_ms = query
                .since_ms
                .unwrap_or(now_ms - DEFAULT_SERIES_SINCE_MS)
                .min(now_ms);
            if bucket.buckets_between(since_ms, now_ms) > MAX_BUCKETS {
                return bad(&format!(
                    "since reaches more than {MAX_BUCKETS} buckets of {bucket} back; \
                     use a wider bucket or a later since"
                ));
            }
            state
                .usage
                .series(query.group_by, since_ms, bucket)
                .map(|rows| serde_json::json!(rows))
        }
    };
    match answer {
        Ok(body) if query.group_by == GroupBy::Key => {
            json_response(200, &with_key_names(state, body))
        }
        Ok(body) => json_response(200, &body),
        Err(LedgerError::Postgres(e)) if e.is_unreachable() => {
            // The text names the failure, never the URL (see `store::postgres`).
            log::warn!("admin: usage report: {e}");
            error(
                503,
                "api_error",
                "store_unavailable",
                "the usage ledger is unreachable; retry later",
            )
        }
        Err(e) => {
            log::error!("admin: {e}");
            error(
                500,
                "api_error",
                "ledger_error",
                "the usage ledger is unavailable",
            )
        }
    }
}

/// Rows grouped by key with each key's `name` beside its id (`null` for the rows of the keys
/// past the top ones, and for an id the credential cache does not know), so the dashboard
/// labels keys by the names people gave them. Revoked keys keep their names.
fn with_key_names(state: &AdminState, mut rows: serde_json::Value) -> serde_json::Value {
    if let Some(rows) = rows.as_array_mut() {
        for row in rows.iter_mut().filter_map(|row| row.as_object_mut()) {
            let name = row
                .get("group")
                .and_then(|group| group.as_str())
                .and_then(|id| state.credentials.by_id(id))
                .map(|key| key.name.clone());
            row.insert("name".into(), serde_json::json!(name));
        }
    }
    rows
}

/// `group_by`, `since` (as unix ms) and `bucket` from the query string.
fn parameters(query: Option<&str>, now_ms: i64) -> Result<Query, String> {
    let mut group_by = None;
    let mut since = None;
    let mut bucket = None;
    let mut limit = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let slot = match name.as_str() {
            "group_by" => &mut group_by,
            "since" => &mut since,
            "bucket" => &mut bucket,
            "limit" => &mut limit,
            _ => {
                return Err(format!(
                    "unknown parameter {name:?}; use group_by, since, bucket and limit"
                ))
            }
        };
        if slot.replace(percent_decode(value)?).is_some() {
            return Err(format!("parameter {name} is given twice"));
        }
    }
    let group_by = match group_by {
        Some(text) => text.parse().map_err(|e| format!("group_by: {e}"))?,
        None => GroupBy::Key,
    };
    let since_ms = match since {
        Some(text) => Some(usage::parse_since(&text, now_ms).map_err(|e| format!("since: {e}"))?),
        None => None,
    };
    let bucket = match bucket {
        Some(text) => Some(text.parse().map_err(|e| format!("bucket: {e}"))?),
        None => None,
    };
    let limit = match limit {
        Some(text) => Some(
            text.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("limit: expected a whole number from 1 to {MAX_LIMIT}"))?,
        ),
        None => None,
    };
    Ok(Query {
        group_by,
        since_ms,
        bucket,
        limit,
    })
}

/// Decodes `%XX` escapes (RFC 3986 §2.1); the result must be UTF-8.
pub(super) fn percent_decode(text: &str) -> Result<String, String> {
    let bad = || format!("bad percent-encoding in {text:?}");
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CredentialCache;
    use crate::config::{LiveSecret, Secret};
    use crate::store::usage::{Ledger, UsageEvent};
    use serde_json::{json, Value};
    use std::sync::Arc;

    const NOW_MS: i64 = 1_764_460_800_000; // 2025-11-30T00:00:00Z

    /// Admin state over a data directory with a small ledger; removed on drop.
    struct Setup(AdminState);

    impl Setup {
        fn new() -> Setup {
            let data_dir: PathBuf = std::env::temp_dir().join(format!(
                "cf-admin-usage-{}",
                crate::store::ids::new_key_id()
            ));
            let (ledger, sender) = Ledger::start(&data_dir).unwrap();
            for (ago_ms, key, team, model, cost) in [
                (3_600_000, "key_a", "research", "gpt-4o", 2_000_000),
                (60_000, "key_b", "research", "claude", 1_000_000),
                (1_000, "key_b", "ops", "gpt-4o", 500_000),
            ] {
                sender.record(UsageEvent {
                    ts_ms: NOW_MS - ago_ms,
                    request_id: format!("req-{ago_ms}"),
                    key_id: Some(key.into()),
                    team: team.into(),
                    model: Some(model.into()),
                    prompt: None,
                    route: Some("ai".into()),
                    status: 200,
                    prompt_tokens: 10,
                    completion_tokens: 3,
                    cached_tokens: 0,
                    cost_nano_usd: cost,
                });
            }
            ledger.stop();
            Setup(AdminState {
                token: Some(LiveSecret::fixed(Secret::new("t"))),
                ready: Arc::new(|| true),
                reload: Arc::new(|| Ok(())),
                store: crate::store::open_shared(&crate::store::sqlite_settings(&data_dir))
                    .unwrap(),
                usage: Arc::new(
                    UsageReader::new(&crate::store::sqlite_settings(&data_dir)).unwrap(),
                ),
                credentials: Arc::new(CredentialCache::from_records(
                    crate::store::Pepper::from_bytes([0; 32]),
                    Vec::new(),
                )),
                cluster: None,
                access_policies: Arc::new(Vec::new),
                this_node: Arc::new(|| crate::store::NodeRecord {
                    node: "edge-test".into(),
                    version: "0.0.0".into(),
                    last_seen: 0,
                    config_generation: 1,
                }),
            })
        }

        /// `GET /admin/usage?<query>` at [`NOW_MS`]; returns the status and the JSON body.
        fn get(&self, query: Option<&str>) -> (u16, Value) {
            let request = Request {
                method: "GET".into(),
                path: "/admin/usage".into(),
                query: query.map(str::to_owned),
                headers: Vec::new(),
                body: Vec::new(),
                keep_alive: true,
            };
            let response = usage_at(&self.0, &request, NOW_MS);
            assert_eq!(response.content_type, "application/json");
            (
                response.status,
                serde_json::from_slice(&response.body).unwrap(),
            )
        }
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.usage.data_dir());
        }
    }

    fn groups(body: &Value) -> Vec<&str> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|row| row["group"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn default_is_every_request_grouped_by_key() {
        let setup = Setup::new();
        let (status, body) = setup.get(None);
        assert_eq!(status, 200);
        assert_eq!(
            body,
            // `name` is `null`: these ids are in the ledger but not in the key store.
            json!([
                {"group": "key_a", "name": null, "requests": 1, "prompt_tokens": 10,
                 "completion_tokens": 3, "cost_usd": 0.002},
                {"group": "key_b", "name": null, "requests": 2, "prompt_tokens": 20,
                 "completion_tokens": 6, "cost_usd": 0.0015},
            ])
        );
    }

    #[test]
    fn group_by_team_and_model() {
        let setup = Setup::new();
        assert_eq!(
            groups(&setup.get(Some("group_by=team")).1),
            ["research", "ops"]
        );
        assert_eq!(
            groups(&setup.get(Some("group_by=model")).1),
            ["gpt-4o", "claude"]
        );
    }

    #[test]
    fn since_duration_limits_the_report() {
        let setup = Setup::new();
        let (status, body) = setup.get(Some("group_by=key&since=30m"));
        assert_eq!(status, 200);
        assert_eq!(groups(&body), ["key_b"]);
        assert_eq!(body[0]["requests"], 2);
    }

    #[test]
    fn since_rfc3339_offset_may_be_plain_or_percent_encoded() {
        let setup = Setup::new();
        // 23:59:30Z, written with a +01:00 offset: only the last request is after it.
        for query in [
            "since=2025-11-30T00:59:30+01:00",
            "since=2025-11-30T00%3A59%3A30%2B01%3A00",
        ] {
            let (status, body) = setup.get(Some(query));
            assert_eq!(status, 200, "{query}: {body}");
            assert_eq!(body[0]["requests"], 1, "{query}");
            assert_eq!(body.as_array().unwrap().len(), 1, "{query}");
        }
    }

    fn assert_bad_parameter(setup: &Setup, query: &str, mentions: &str) {
        let (status, body) = setup.get(Some(query));
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "invalid_parameter");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{query}: {message}");
    }

    #[test]
    fn bad_group_by_is_400() {
        let setup = Setup::new();
        assert_bad_parameter(&setup, "group_by=route", "group_by");
        assert_bad_parameter(&setup, "group_by=", "group_by");
    }

    #[test]
    fn bad_since_is_400() {
        let setup = Setup::new();
        assert_bad_parameter(&setup, "since=yesterday", "since");
        assert_bad_parameter(&setup, "since=%ZZ", "percent-encoding");
    }

    #[test]
    fn since_without_a_unit_is_400_naming_the_grammar() {
        let setup = Setup::new();
        assert_bad_parameter(&setup, "since=24", "needs a unit");
        assert_bad_parameter(&setup, "since=1.5h", "30d");
        assert_bad_parameter(&setup, "since=2025-11-30T00:00:00%2B0100", "RFC 3339");
    }

    #[test]
    fn unknown_or_repeated_parameter_is_400() {
        let setup = Setup::new();
        assert_bad_parameter(&setup, "group=key", "unknown parameter");
        assert_bad_parameter(&setup, "since=1h&since=2h", "twice");
    }

    #[test]
    fn bucket_gives_a_sparse_aligned_series() {
        let setup = Setup::new();
        let (status, body) = setup.get(Some("group_by=model&bucket=1h&since=2h"));
        assert_eq!(status, 200, "{body}");
        // NOW_MS is midnight: the request an hour back opens the 23:00 bucket, the two in
        // the last minute are in the 23:00 bucket too (23:59); groups in byte order.
        let hour = NOW_MS - 3_600_000;
        assert_eq!(
            body,
            json!([
                {"ts_ms": hour, "group": "claude", "requests": 1, "errors": 0,
                 "prompt_tokens": 10, "completion_tokens": 3, "cost_usd": 0.001},
                {"ts_ms": hour, "group": "gpt-4o", "requests": 2, "errors": 0,
                 "prompt_tokens": 20, "completion_tokens": 6, "cost_usd": 0.0025},
            ])
        );
        let (_, five) = setup.get(Some("group_by=key&bucket=5m&since=2h"));
        let starts: Vec<i64> = five
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ts_ms"].as_i64().unwrap())
            .collect();
        assert_eq!(starts, [hour, NOW_MS - 300_000]);
    }

    #[test]
    fn series_past_the_bucket_bound_is_400() {
        let setup = Setup::new();
        assert_bad_parameter(&setup, "bucket=5m&since=30d", "1000 buckets");
        assert_bad_parameter(&setup, "bucket=1m", "bucket");
        let (status, _) = setup.get(Some("bucket=1d&since=900d"));
        assert_eq!(status, 200);
    }

    #[test]
    fn rows_grouped_by_key_carry_the_key_name() {
        let mut setup = Setup::new();
        let (mut named, _secret) = setup
            .0
            .store
            .lock()
            .create(
                crate::store::NewKey {
                    name: "research-bot".into(),
                    ..Default::default()
                },
                "test",
            )
            .unwrap();
        // The ledger's key is `key_b`; the record is the cache's only source of names.
        named.id = "key_b".into();
        let pepper = setup.0.store.lock().pepper().clone();
        setup.0.credentials = Arc::new(CredentialCache::from_records(pepper, vec![named]));

        for query in ["group_by=key", "group_by=key&bucket=1h&since=2h"] {
            let (status, body) = setup.get(Some(query));
            assert_eq!(status, 200, "{query}: {body}");
            let rows = body.as_array().unwrap();
            assert!(!rows.is_empty(), "{query}");
            for row in rows {
                let expected = match row["group"].as_str() {
                    Some("key_b") => json!("research-bot"),
                    _ => Value::Null,
                };
                assert_eq!(row["name"], expected, "{query}: {row}");
            }
            assert!(rows.iter().any(|r| r["name"] == "research-bot"), "{query}");
        }
        // Other groupings are unchanged.
        let (_, by_team) = setup.get(Some("group_by=team"));
        assert!(by_team
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("name").is_none()));
    }

    #[test]
    fn limit_keeps_the_most_expensive_groups_and_is_bounded() {
        let setup = Setup::new();
        let (status, all) = setup.get(Some("group_by=key"));
        assert_eq!(status, 200);
        assert_eq!(groups(&all), ["key_a", "key_b"]);
        let (status, top) = setup.get(Some("group_by=key&limit=1"));
        assert_eq!(status, 200);
        assert_eq!(groups(&top), ["key_a"]);
        assert_eq!(top[0], all[0]);
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "limit=",
            "limit=1&limit=2",
        ] {
            assert_bad_parameter(&setup, &format!("group_by=key&{bad}"), "limit");
        }
        assert_bad_parameter(&setup, "bucket=1h&limit=5", "limit");
    }

    #[test]
    fn empty_ledger_is_an_empty_array() {
        let setup = Setup::new();
        std::fs::remove_dir_all(setup.0.usage.data_dir()).unwrap();
        assert_eq!(setup.get(None), (200, json!([])));
    }

    #[test]
    fn percent_decode_decodes_escapes_and_keeps_plus() {
        assert_eq!(percent_decode("a%2Bb+c%3a").unwrap(), "a+b+c:");
        assert!(percent_decode("%2").is_err());
        assert!(percent_decode("%FF").is_err());
    }
}

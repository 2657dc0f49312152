//! The usage ledger on PostgreSQL: records written once each and summed over the fleet, a
//! journal under `data_dir` that carries them through an outage and delivers each exactly
//! once, leftovers from a previous process delivered on start, and a bounded journal that
//! drops (and counts) rather than blocks. The interface tests also run on SQLite, where the
//! behaviour is shared.
//!
//! Each test starts its own private PostgreSQL (`common::postgres`) and drives the ledger
//! in-process.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::postgres::PgServer;
use common::{wait_until, WAIT};
use credentialflow::config::{Secret, SecretRef, StoreBackend, StoreConfig, StoreSettings};
use credentialflow::store::ids::new_key_id;
use credentialflow::store::usage::{
    report_for, totals_by_key_for, totals_by_team_for, GroupBy, Ledger, LedgerOptions, UsageEvent,
    UsageRow, JOURNAL_DIR,
};

/// A data directory, removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        DataDir(std::env::temp_dir().join(format!("cf-usage-pg-{}", new_key_id())))
    }

    fn journal(&self) -> PathBuf {
        self.0.join(JOURNAL_DIR)
    }

    /// The journal's segment files, in name (= delivery) order.
    fn segments(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.journal())
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|p| p.extension().is_some_and(|e| e == "seg"));
        found.sort();
        found
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn postgres_settings(dir: &Path, url: &str, node: &str) -> StoreSettings {
    StoreSettings {
        data_dir: dir.to_owned(),
        store: StoreConfig {
            backend: StoreBackend::Postgres,
            url: Some(SecretRef::Literal(Secret::new(url))),
            pepper: None,
            node: node.into(),
        },
    }
}

fn sqlite_settings(dir: &Path) -> StoreSettings {
    StoreSettings {
        data_dir: dir.to_owned(),
        store: StoreConfig::default(),
    }
}

/// Request `n` of key `key` in `team`: 100 + n prompt tokens, 10 completion, n + 1 nano-USD.
fn event(n: u64, key: &str, team: &str) -> UsageEvent {
    UsageEvent {
        ts_ms: 1_700_000_000_000 + n as i64,
        request_id: format!("req-{n}"),
        key_id: Some(key.into()),
        team: team.into(),
        model: Some("gpt-4o".into()),
        prompt: None,
        route: Some("ai".into()),
        status: 200,
        prompt_tokens: 100 + n,
        completion_tokens: 10,
        cached_tokens: 0,
        cost_nano_usd: n + 1,
    }
}

/// Rows in the `usage` table, and how many distinct record ids they have.
fn stored(server: &PgServer) -> (i64, i64) {
    let row = server
        .client()
        .query_one("SELECT COUNT(*), COUNT(DISTINCT record_id) FROM usage", &[])
        .unwrap();
    (row.get(0), row.get(1))
}

fn start(settings: &StoreSettings) -> (Ledger, credentialflow::store::usage::UsageSender) {
    Ledger::start_for_with(settings, LedgerOptions::default()).unwrap()
}

#[test]
fn every_record_is_stored_once_with_its_node_even_when_request_ids_repeat() {
    let server = PgServer::start();
    let dir = DataDir::new();
    let settings = postgres_settings(&dir.0, &server.url(), "edge-1");
    let (ledger, sender) = start(&settings);
    let stats = ledger.stats();
    for n in 0..300 {
        let mut e = event(n, "key_a", "research");
        // A client may send the same x-request-id every time: each request still counts.
        if n % 3 == 0 {
            e.request_id = "chosen-by-the-client".into();
        }
        sender.record(e);
    }
    ledger.stop();
    assert_eq!(stored(&server), (300, 300));
    let nodes: Vec<String> = server
        .client()
        .query("SELECT DISTINCT node FROM usage", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(nodes, ["edge-1"]);
    assert_eq!(stats.flushed(), 300);
    assert_eq!(stats.journal_depth(), 0);
    assert!(dir.segments().is_empty(), "{:?}", dir.segments());
}

/// What one node's records add up to, checked against the reports.
fn expected_cost(range: std::ops::Range<u64>) -> u64 {
    range.map(|n| n + 1).sum()
}

#[test]
fn reports_and_budget_totals_sum_the_records_of_every_node() {
    let server = PgServer::start();
    let (dir_a, dir_b) = (DataDir::new(), DataDir::new());
    let a = postgres_settings(&dir_a.0, &server.url(), "edge-a");
    let b = postgres_settings(&dir_b.0, &server.url(), "edge-b");
    let (ledger_a, sender_a) = start(&a);
    let (ledger_b, sender_b) = start(&b);
    for n in 0..120 {
        sender_a.record(event(n, "key_shared", "research"));
    }
    for n in 1000..1080 {
        sender_b.record(event(n, "key_shared", "research"));
        sender_b.record(event(n + 10_000, "key_b", ""));
    }
    ledger_a.stop();
    ledger_b.stop();

    let cost_shared = expected_cost(0..120) + expected_cost(1000..1080);
    let cost_b = expected_cost(11_000..11_080);
    // Either node reads the same fleet-wide report.
    for settings in [&a, &b] {
        let rows = report_for(settings, GroupBy::Key, 0).unwrap();
        assert_eq!(
            rows,
            [
                UsageRow {
                    group: "key_b".into(),
                    requests: 80,
                    prompt_tokens: (11_000..11_080).map(|n| 100 + n).sum(),
                    completion_tokens: 800,
                    cost_usd: cost_b as f64 / 1e9,
                },
                UsageRow {
                    group: "key_shared".into(),
                    requests: 200,
                    prompt_tokens: (0..120).chain(1000..1080).map(|n| 100 + n).sum(),
                    completion_tokens: 2000,
                    cost_usd: cost_shared as f64 / 1e9,
                },
            ]
        );
    }
    let by_key = totals_by_key_for(&a, 0).unwrap();
    assert_eq!(by_key["key_shared"].cost_nano_usd, cost_shared);
    assert_eq!(
        by_key["key_shared"].tokens,
        (0..120).chain(1000..1080).map(|n| 110 + n).sum::<u64>()
    );
    let by_team = totals_by_team_for(&b, 0).unwrap();
    assert_eq!(by_team.len(), 1, "{by_team:?}");
    assert_eq!(by_team["research"].cost_nano_usd, cost_shared);
    // `since` counts only later requests, on every node.
    let later = totals_by_key_for(&b, 1_700_000_000_000 + 1000).unwrap();
    assert_eq!(later["key_shared"].cost_nano_usd, expected_cost(1000..1080));
}

#[test]
fn an_outage_is_journaled_and_every_record_is_delivered_once_when_the_database_is_back() {
    const N: u64 = 500;
    let mut server = PgServer::start();
    let dir = DataDir::new();
    let settings = postgres_settings(&dir.0, &server.url(), "edge-1");
    let (ledger, sender) = start(&settings);
    let stats = ledger.stats();
    // Connected and delivering before the outage.
    sender.record(event(0, "key_a", ""));
    assert!(wait_until(WAIT, || stats.flushed() == 1));

    server.stop();
    for n in 1..=N {
        sender.record(event(n, "key_a", ""));
    }
    assert!(
        wait_until(WAIT, || stats.journal_depth() == N),
        "depth {}",
        stats.journal_depth()
    );
    assert!(!dir.segments().is_empty());
    // Retries go on (with backoff) while the database is down; nothing is dropped.
    let errors_before = stats.write_errors();
    assert!(wait_until(WAIT, || stats.write_errors() >= errors_before + 2));
    assert_eq!(stats.failed(), 0);
    assert_eq!(stats.flushed(), 1);

    server.start_again();
    let back = Instant::now();
    assert!(
        wait_until(WAIT, || stats.journal_depth() == 0),
        "depth {}",
        stats.journal_depth()
    );
    eprintln!(
        "outage: {N} journaled records delivered {} ms after the database came back",
        back.elapsed().as_millis()
    );
    assert_eq!(stored(&server), (N as i64 + 1, N as i64 + 1));
    assert_eq!(stats.flushed(), N + 1);
    assert!(dir.segments().is_empty());
    ledger.stop();
    assert_eq!(stored(&server), (N as i64 + 1, N as i64 + 1));
}

#[test]
fn a_clean_stop_during_an_outage_keeps_everything_and_the_next_start_delivers_it() {
    let mut server = PgServer::start();
    server.stop();
    let dir = DataDir::new();
    let settings = postgres_settings(&dir.0, &server.url(), "edge-1");
    // A previous process: never reaches the database, stops cleanly.
    let (ledger, sender) = start(&settings);
    let stats = ledger.stats();
    for n in 0..250 {
        sender.record(event(n, "key_a", "research"));
    }
    ledger.stop();
    assert_eq!(stats.journal_depth(), 250);
    assert_eq!(stats.failed(), 0);
    assert!(!dir.segments().is_empty());

    server.start_again();
    // The next process delivers the leftovers on start, before anything new arrives.
    let (ledger, _sender) = start(&settings);
    let stats = ledger.stats();
    assert_eq!(
        stats.journal_depth(),
        250,
        "counted from the leftovers at start"
    );
    assert!(wait_until(WAIT, || stats.journal_depth() == 0));
    assert_eq!(stored(&server), (250, 250));
    assert!(dir.segments().is_empty());
    ledger.stop();
    let totals = totals_by_team_for(&settings, 0).unwrap();
    assert_eq!(totals["research"].cost_nano_usd, expected_cost(0..250));
}

#[test]
fn a_segment_delivered_again_after_a_crash_before_its_deletion_counts_once() {
    let mut server = PgServer::start();
    server.stop();
    let dir = DataDir::new();
    let settings = postgres_settings(&dir.0, &server.url(), "edge-1");
    let (ledger, sender) = start(&settings);
    for n in 0..40 {
        sender.record(event(n, "key_a", ""));
    }
    ledger.stop();
    // Keep copies of the segments as they were before delivery.
    let saved: Vec<(PathBuf, Vec<u8>)> = dir
        .segments()
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(!saved.is_empty());

    server.start_again();
    let (ledger, _sender) = start(&settings);
    let stats = ledger.stats();
    assert!(wait_until(WAIT, || stats.journal_depth() == 0));
    ledger.stop();
    assert_eq!(stored(&server), (40, 40));

    // The crash: the delivery committed but the process died before deleting the segments.
    for (path, bytes) in &saved {
        fs::write(path, bytes).unwrap();
    }
    let (ledger, _sender) = start(&settings);
    let stats = ledger.stats();
    assert_eq!(stats.journal_depth(), 40);
    assert!(wait_until(WAIT, || stats.journal_depth() == 0));
    ledger.stop();
    assert_eq!(stored(&server), (40, 40));
    assert!(dir.segments().is_empty());
    let totals = totals_by_key_for(&settings, 0).unwrap();
    assert_eq!(totals["key_a"].cost_nano_usd, expected_cost(0..40));
}

#[test]
fn past_the_journal_bound_records_are_dropped_and_counted_and_recording_never_blocks() {
    let mut server = PgServer::start();
    server.stop();
    let dir = DataDir::new();
    let settings = postgres_settings(&dir.0, &server.url(), "edge-1");
    // Fill the journal with one segment of 10 records.
    let (ledger, sender) = start(&settings);
    for n in 0..10 {
        sender.record(event(n, "key_a", ""));
    }
    ledger.stop();
    let segment_bytes: u64 = dir
        .segments()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();

    // Room for half a segment more: the next batches do not fit.
    let bound = segment_bytes + segment_bytes / 2;
    let options = LedgerOptions {
        journal_max_bytes: bound,
    };
    let (ledger, sender) = Ledger::start_for_with(&settings, options).unwrap();
    let stats = ledger.stats();
    const MORE: u64 = 50_000;
    let started = Instant::now();
    for n in 0..MORE {
        sender.record(event(100 + n, "key_a", ""));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "recording took {took:?}");
    assert!(
        wait_until(WAIT, || stats.failed() == MORE),
        "dropped {}",
        stats.failed()
    );
    ledger.stop();
    assert_eq!(stats.journal_depth(), 10);
    let on_disk: u64 = dir
        .segments()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= bound, "{on_disk} > {bound}");

    // What was journaled is still delivered.
    server.start_again();
    let (ledger, _sender) = start(&settings);
    let stats = ledger.stats();
    assert!(wait_until(WAIT, || stats.journal_depth() == 0));
    ledger.stop();
    assert_eq!(stored(&server), (10, 10));
}

/// The interface both backends share: what a ledger writes, the report and the budget totals
/// read back, exactly.
fn ledger_reports_what_it_wrote(settings: &StoreSettings) {
    let (ledger, sender) = Ledger::start_for_with(settings, LedgerOptions::default()).unwrap();
    let stats = ledger.stats();
    for n in 0..30 {
        sender.record(event(n, "key_a", "research"));
    }
    for n in 30..40 {
        sender.record(event(n, "key_b", ""));
    }
    let mut keyless = event(99, "unused", "");
    keyless.key_id = None;
    keyless.model = None;
    sender.record(keyless);
    ledger.stop();
    assert_eq!(stats.flushed(), 41);
    assert_eq!(stats.failed(), 0);
    assert_eq!(stats.journal_depth(), 0);

    let by_key = report_for(settings, GroupBy::Key, 0).unwrap();
    let groups: Vec<(&str, u64)> = by_key
        .iter()
        .map(|r| (r.group.as_str(), r.requests))
        .collect();
    assert_eq!(groups, [("key_a", 30), ("key_b", 10)]);
    assert_eq!(by_key[0].cost_usd, expected_cost(0..30) as f64 / 1e9);
    let by_team = report_for(settings, GroupBy::Team, 0).unwrap();
    let teams: Vec<(&str, u64)> = by_team
        .iter()
        .map(|r| (r.group.as_str(), r.requests))
        .collect();
    assert_eq!(teams, [("research", 30), ("", 11)]);
    let by_model = report_for(settings, GroupBy::Model, 0).unwrap();
    assert_eq!(by_model.len(), 1);
    assert_eq!(by_model[0].requests, 40);

    let since = 1_700_000_000_000 + 35;
    let totals = totals_by_key_for(settings, since).unwrap();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!(totals["key_b"].cost_nano_usd, expected_cost(35..40));
    assert_eq!(
        totals["key_b"].tokens,
        (35..40).map(|n| 110 + n).sum::<u64>()
    );
    let teams = totals_by_team_for(settings, 0).unwrap();
    assert_eq!(teams.len(), 1);
    assert_eq!(teams["research"].cost_nano_usd, expected_cost(0..30));
}

#[test]
fn sqlite_ledger_reports_what_it_wrote() {
    let dir = DataDir::new();
    ledger_reports_what_it_wrote(&sqlite_settings(&dir.0));
    assert!(!dir.journal().exists(), "SQLite keeps no journal");
}

#[test]
fn postgres_ledger_reports_what_it_wrote() {
    let server = PgServer::start();
    let dir = DataDir::new();
    ledger_reports_what_it_wrote(&postgres_settings(&dir.0, &server.url(), "edge-1"));
}

#[test]
fn an_unreachable_database_at_start_neither_fails_the_start_nor_shows_the_password() {
    let dir = DataDir::new();
    let url = "postgres://cf:hunter2-secret@127.0.0.1:1/cf";
    let settings = postgres_settings(&dir.0, url, "edge-1");
    // The ledger starts (records are journaled until the database is reachable).
    let (ledger, sender) = start(&settings);
    let stats = ledger.stats();
    sender.record(event(1, "key_a", ""));
    assert!(wait_until(WAIT, || stats.journal_depth() == 1));
    ledger.stop();
    // A report cannot be made, and says why without the password.
    let error = report_for(&settings, GroupBy::Key, 0)
        .unwrap_err()
        .to_string();
    assert!(!error.contains("hunter2"), "{error}");
    assert!(error.contains("PostgreSQL"), "{error}");
}

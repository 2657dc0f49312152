//! Startup with 1,000,000 keys: how long `CredentialCache::start` takes to load a store of
//! that size from SQLite, and the process's resident memory afterwards.
//!
//! Run with `cargo bench --bench startup_1m`. It builds the store in a scratch directory
//! first (one key through `KeyStore::create` for the schema and pepper, then the rest
//! inserted in one transaction straight into the `keys` table, which is far faster than a
//! million audited `create` calls), then times the load.

use std::path::PathBuf;
use std::time::Instant;

use credentialflow::auth::CredentialCache;
use credentialflow::store::{sqlite_settings, unix_now, KeyStore, NewKey, Pepper};
use rusqlite::{params, Connection};

/// The gateway binary's allocator, so memory and time match what `serve` would see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u64 = 1_000_000;

fn secret(i: u64) -> String {
    format!("cf_{i:043}")
}

/// A line of `/proc/self/status` (`VmRSS`, `VmHWM`), e.g. "812345 kB".
fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len() + 1..].trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn fill_store(dir: &std::path::Path) {
    let mut store = KeyStore::open(dir).expect("store");
    store
        .create(
            NewKey {
                name: "template".into(),
                ..NewKey::default()
            },
            "bench",
        )
        .expect("first key");
    drop(store);
    let pepper = Pepper::load_or_create(dir).expect("pepper");

    let mut conn = Connection::open(dir.join("keys.db")).expect("db");
    let tx = conn.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO keys (id, name, team, prefix, hash, models, routes, scopes, rpm, \
                 metadata, created_at, updated_at, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', '[\"chat\"]', ?7, '{}', ?8, ?8, ?9)",
            )
            .expect("statement");
        let now = unix_now();
        for i in 1..KEYS {
            let secret = secret(i);
            insert
                .execute(params![
                    format!("key_{i:020}"),
                    format!("bench-key-{i}"),
                    format!("team-{}", i % 100),
                    &secret[..12],
                    pepper.hash(secret.as_bytes()),
                    "[\"gpt-4o*\",\"claude-*\"]",
                    600_i64,
                    now,
                    (i + 1) as i64,
                ])
                .expect("insert");
        }
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'seq'",
        [KEYS as i64],
    )
    .expect("seq");
    tx.commit().expect("commit");
}

fn main() {
    let dir: PathBuf = std::env::temp_dir().join(format!("cf-startup-1m-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    let started = Instant::now();
    fill_store(&dir);
    println!("built a store of {KEYS} keys in {:.1?}", started.elapsed());
    let db_bytes = std::fs::metadata(dir.join("keys.db")).map_or(0, |m| m.len());
    println!("keys.db: {} MiB", db_bytes / (1024 * 1024));
    println!("before start: VmRSS {}", proc_status("VmRSS"));

    let started = Instant::now();
    let cache = CredentialCache::start(&sqlite_settings(&dir)).expect("start");
    let elapsed = started.elapsed();
    assert_eq!(cache.len() as u64, KEYS);
    let now = unix_now();
    for i in [1, KEYS / 2, KEYS - 1] {
        assert!(cache.authenticate(secret(i).as_bytes(), now).is_some());
    }
    println!("CredentialCache::start with {KEYS} keys: {elapsed:.2?}");
    println!(
        "after start: VmRSS {} (peak VmHWM {})",
        proc_status("VmRSS"),
        proc_status("VmHWM")
    );

    drop(cache);

    // For the breakdown: the SQLite read and row decoding alone, without building the indexes.
    let started = Instant::now();
    let rows = KeyStore::open(&dir)
        .and_then(|store| store.changes_since(0))
        .expect("read rows");
    println!(
        "of which reading and decoding {} rows: {:.2?}",
        rows.len(),
        started.elapsed()
    );
    drop(rows);
    let _ = std::fs::remove_dir_all(&dir);
}

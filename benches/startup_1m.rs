//! Startup with 1,000,000 keys: how long `CredentialCache::start` takes to load a store of
//! that size from SQLite, and the process's resident memory afterwards.
//!
//! Run with `cargo bench --bench startup_1m`. It builds the store in a scratch directory
//! first (one key through `KeyStore::create` for the schema and pepper, then the rest
//! inserted in one transaction straight into the `keys` table, which is far faster than a
//! million audited `create` calls), then times the load.

use std::alloc::{GlobalAlloc, Layout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use credentialflow::auth::CredentialCache;
use credentialflow::store::{sqlite_settings, unix_now, KeyStore, NewKey, Pepper};
use rusqlite::{params, Connection};

/// The gateway binary's allocator, so memory and time match what `serve` would see, counting
/// the bytes live on the heap: RSS also holds what the allocator keeps after the load's
/// temporary buffers are freed, and the count tells the two apart.
struct CountingMimalloc;

/// Bytes requested and not yet freed, by every thread.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to mimalloc; the counter only observes sizes.
unsafe impl GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = mimalloc::MiMalloc.alloc(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = mimalloc::MiMalloc.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = mimalloc::MiMalloc.realloc(ptr, layout, new_size);
        if !moved.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: CountingMimalloc = CountingMimalloc;

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

    let live_before = LIVE_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    let cache = CredentialCache::start(&sqlite_settings(&dir)).expect("start");
    let elapsed = started.elapsed();
    let cache_live = LIVE_BYTES
        .load(Ordering::Relaxed)
        .saturating_sub(live_before);
    assert_eq!(cache.len() as u64, KEYS);
    let now = credentialflow::clock::unix_now_ms();
    for i in [1, KEYS / 2, KEYS - 1] {
        assert!(cache
            .authenticate_at_ms(secret(i).as_bytes(), now)
            .is_some());
    }
    println!("CredentialCache::start with {KEYS} keys: {elapsed:.2?}");
    println!(
        "after start: VmRSS {} (peak VmHWM {})",
        proc_status("VmRSS"),
        proc_status("VmHWM")
    );
    println!(
        "live heap of the replica: {} MiB, {} bytes per key",
        cache_live / (1024 * 1024),
        cache_live as u64 / KEYS
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

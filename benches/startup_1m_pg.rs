//! Fleet mode with 1,000,000 keys on PostgreSQL: how long a node's full reconciliation takes
//! (`CredentialCache::start` on the postgres backend reads every key, as a node does at start
//! and, through `CredentialCache::reconcile`, after every reconnect), how much memory the
//! replica holds per key, and what one incremental safety-net tick costs when nothing changed.
//!
//! Run with `cargo bench --bench startup_1m_pg`; `cargo bench --bench startup_1m --bench
//! startup_1m_pg` gives the SQLite figures of the same table in the same run. Each bench is
//! its own process, so neither one's freed memory is counted in the other's RSS.
//!
//! It starts a private PostgreSQL (the test harness's `tests/common/postgres.rs`: initdb in a
//! temporary directory, Unix socket only, run as `nobody` under root), opens the store once
//! through `PgStore::open` (schema, pepper verifier) and issues one key through
//! `PgStore::create`, then streams the other 999,999 rows with `COPY ... FROM STDIN`. Their
//! hashes are HMAC-SHA256 under the store's pepper, computed by `Pepper::hash` as the store
//! does, so they are real keys: the bench authenticates some of them after the load. The rows
//! have the same shape as `startup_1m`'s SQLite rows.

#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod pg_server;

// The server starter's TLS variant names the test CA as `super::certs`.
#[allow(dead_code)]
#[path = "../tests/common/certs.rs"]
mod certs;

use std::alloc::{GlobalAlloc, Layout};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credentialflow::auth::CredentialCache;
use credentialflow::config::{SecretRef, StoreBackend, StoreConfig, StoreSettings};
use credentialflow::store::postgres::PgStore;
use credentialflow::store::{unix_now, KeyRecord, NewKey, Pepper};

/// The gateway binary's allocator, so memory and time match what `serve` would see, counting
/// the bytes live on the heap: RSS also holds what the allocator keeps after the load's
/// temporary buffers (rows, decoded JSON) are freed, and the count tells the two apart.
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

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

const KEYS: u64 = 1_000_000;

/// A fixed pepper: the keys are generated, so nothing here is a secret worth protecting.
const PEPPER_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// How many safety-net ticks to time. They run [`TICK_SPACING`] apart, as the watcher's do,
/// so each one pays the idle-connection check a real tick pays.
const TICKS: usize = 10;
const TICK_SPACING: Duration = Duration::from_millis(1050);

fn secret(i: u64) -> String {
    format!("cf_{i:043}")
}

/// A line of `/proc/self/status` (`VmRSS`, `VmHWM`) in kB.
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            line[field.len() + 1..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn pepper() -> Pepper {
    Pepper::from_hex(PEPPER_HEX).expect("a valid pepper")
}

/// The `[store]` of a node of this fleet.
fn settings(url: &str, data_dir: PathBuf) -> StoreSettings {
    StoreSettings {
        data_dir,
        store: StoreConfig {
            backend: StoreBackend::Postgres,
            url: Some(SecretRef::parse(url).expect("url")),
            pepper: Some(SecretRef::parse(PEPPER_HEX).expect("pepper")),
            node: "bench".into(),
        },
    }
}

/// Fills the store at `url` with [`KEYS`] keys: one through `PgStore::create` (schema,
/// verifier, sequence), the rest by `COPY`.
fn fill_store(pg: &pg_server::PgServer, url: &str) {
    let mut store = PgStore::open(url, pepper(), "bench").expect("open the store");
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

    let pepper = pepper();
    let now = unix_now();
    let mut client =
        postgres::Client::connect(&pg.url_for("cf"), postgres::NoTls).expect("connect");
    let mut tx = client.transaction().expect("transaction");
    {
        let copy = tx
            .copy_in(
                "COPY keys (id, name, team, prefix, hash, models, routes, scopes, rpm, metadata, \
                 created_at, updated_at, seq) FROM STDIN",
            )
            .expect("COPY");
        let mut out = BufWriter::with_capacity(1 << 20, copy);
        let mut hex = String::with_capacity(64);
        for i in 1..KEYS {
            let secret = secret(i);
            hex.clear();
            for b in pepper.hash(secret.as_bytes()) {
                use std::fmt::Write as _;
                let _ = write!(hex, "{b:02x}");
            }
            // COPY's text format: tab-separated; a backslash is escaped, so bytea's `\x` is
            // written `\\x`. None of the JSON texts holds a tab or a backslash.
            writeln!(
                out,
                "key_{i:020}\tbench-key-{i}\tteam-{}\t{}\t\\\\x{hex}\t\
                 [\"gpt-4o*\",\"claude-*\"]\t[]\t[\"chat\"]\t600\t{{}}\t{now}\t{now}\t{}",
                i % 100,
                &secret[..12],
                i + 1
            )
            .expect("COPY row");
        }
        out.into_inner()
            .map_err(|e| e.into_error())
            .expect("flush")
            .finish()
            .expect("finish COPY");
    }
    // The next write draws a sequence number above every row.
    tx.execute("SELECT setval('key_change_seq', $1)", &[&(KEYS as i64)])
        .expect("setval");
    tx.commit().expect("commit");
    client
        .batch_execute("VACUUM ANALYZE keys")
        .expect("analyze");
}

/// What one record of the bench's shape costs on the heap, beyond `size_of::<KeyRecord>()`:
/// each `String` and `Vec` buffer, rounded up to the allocator's 16-byte granule.
fn heap_bytes(r: &KeyRecord) -> usize {
    let round = |n: usize| if n == 0 { 0 } else { n.div_ceil(16) * 16 };
    let strings = [&r.id, &r.name, &r.team, &r.prefix]
        .iter()
        .map(|s| round(s.capacity()))
        .sum::<usize>();
    let lists = [&r.models, &r.routes, &r.scopes]
        .iter()
        .map(|v| {
            round(v.capacity() * std::mem::size_of::<String>())
                + v.iter().map(|s| round(s.capacity())).sum::<usize>()
        })
        .sum::<usize>();
    strings + lists + r.budget_period.as_ref().map_or(0, |s| round(s.capacity()))
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "min {:.2?}, median {:.2?}, max {:.2?} (of {})",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    )
}

fn main() {
    let started = Instant::now();
    let mut pg = pg_server::PgServer::start();
    // The harness runs many throwaway servers at once and gives each 16 MB of shared buffers;
    // a store holding a fleet's keys gets at least PostgreSQL's packaged default.
    pg.client()
        .batch_execute("ALTER SYSTEM SET shared_buffers = '128MB'")
        .expect("shared_buffers");
    pg.stop();
    pg.start_again();
    let url = pg.create_database("cf");
    println!("private PostgreSQL started in {:.1?}", started.elapsed());

    let started = Instant::now();
    fill_store(&pg, &url);
    println!("built a store of {KEYS} keys in {:.1?}", started.elapsed());
    let table_bytes: i64 = pg
        .client()
        .query_one("SELECT pg_database_size('cf')", &[])
        .expect("size")
        .get(0);
    println!("database cf: {} MiB", table_bytes / (1024 * 1024));

    let data_dir = std::env::temp_dir().join(format!("cf-startup-1m-pg-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).expect("scratch dir");
    let settings = settings(&url, data_dir.clone());

    let rss_before = proc_status_kb("VmRSS");
    let live_before = live_bytes();
    println!("before start: VmRSS {:.1} MiB", mib(rss_before));
    let started = Instant::now();
    let cache: Arc<CredentialCache> = CredentialCache::start(&settings).expect("start");
    let elapsed = started.elapsed();
    assert_eq!(cache.len() as u64, KEYS);
    let now = credentialflow::clock::unix_now_ms();
    for i in [1, KEYS / 2, KEYS - 1] {
        assert!(cache
            .authenticate_at_ms(secret(i).as_bytes(), now)
            .is_some());
    }
    assert!(cache
        .authenticate_at_ms(secret(KEYS).as_bytes(), now)
        .is_none());
    let rss_after = proc_status_kb("VmRSS");
    let cache_live = live_bytes().saturating_sub(live_before);
    println!("CredentialCache::start (postgres) with {KEYS} keys: {elapsed:.2?}");
    println!(
        "after start: VmRSS {:.1} MiB (peak VmHWM {:.1} MiB); replica {:.0} bytes per key",
        mib(rss_after),
        mib(proc_status_kb("VmHWM")),
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / KEYS as f64
    );
    println!(
        "live heap of the replica: {:.1} MiB, {:.0} bytes per key",
        cache_live as f64 / (1024.0 * 1024.0),
        cache_live as f64 / KEYS as f64
    );

    // A second connection, as the watcher holds its own: the reads below are the watcher's.
    let store = PgStore::open(&url, pepper(), "bench").expect("open");

    // Reading and decoding alone, without touching the cache.
    let live_before_rows = live_bytes();
    let started = Instant::now();
    let rows = store.changes_since(0).expect("read rows");
    let read = started.elapsed();
    let rows_live = live_bytes().saturating_sub(live_before_rows);
    println!(
        "of which reading and decoding {} rows: {read:.2?}",
        rows.len()
    );
    // What the cache holds beyond the records themselves (and each record's `Arc` counts):
    // the three indexes.
    println!(
        "live heap per key: the decoded record {:.0} bytes, the indexes {:.0} bytes",
        rows_live as f64 / KEYS as f64,
        cache_live.saturating_sub(rows_live + 16 * KEYS as usize) as f64 / KEYS as f64
    );
    let sample = rows[rows.len() / 2].clone();
    drop(rows);

    // The reload after a reconnect: every row read again and reconciled into a cache that
    // already holds them all (each is compared by sequence and left in place).
    let started = Instant::now();
    let rows = store.changes_since(0).expect("read rows");
    let read_seq = rows.iter().map(|r| r.seq).max().unwrap_or(0);
    let held = cache.reconcile(rows, read_seq);
    println!(
        "full reconciliation into the warm cache (read + reconcile, nothing changed): {:.2?}",
        started.elapsed()
    );
    assert_eq!(held as u64, KEYS);
    println!(
        "after reconciliation: VmRSS {:.1} MiB (peak VmHWM {:.1} MiB)",
        mib(proc_status_kb("VmRSS")),
        mib(proc_status_kb("VmHWM"))
    );

    // The safety-net tick with nothing changed: `changes_since(last_seq)` returns no row.
    let last_seq = store.max_seq().expect("max_seq");
    assert_eq!(last_seq, KEYS);
    let mut ticks = Vec::with_capacity(TICKS);
    for _ in 0..TICKS {
        std::thread::sleep(TICK_SPACING);
        let started = Instant::now();
        let rows = store.changes_since(last_seq).expect("tick");
        ticks.push(started.elapsed());
        assert!(rows.is_empty());
    }
    println!(
        "safety-net tick, nothing changed, 1 s apart: {}",
        summary(ticks)
    );
    let mut back_to_back = Vec::with_capacity(100);
    for _ in 0..100 {
        let started = Instant::now();
        let rows = store.changes_since(last_seq).expect("tick");
        back_to_back.push(started.elapsed());
        assert!(rows.is_empty());
    }
    println!(
        "the same read back to back (no idle check): {}",
        summary(back_to_back)
    );

    println!(
        "KeyRecord: {} bytes inline + {} on the heap for a row of this shape, \
         + 16 for its Arc's counts",
        std::mem::size_of::<KeyRecord>(),
        heap_bytes(&sample)
    );

    cache.stop();
    drop(cache);
    drop(store);
    drop(pg);
    let _ = std::fs::remove_dir_all(&data_dir);
}

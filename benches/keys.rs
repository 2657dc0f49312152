//! Key lookup in the credential cache with 1,000,000 keys in the table, on one core: a hit
//! (HMAC, probe, constant-time compare, `Arc` clone), a miss (HMAC and probe), and a
//! credential refused by its shape before any hashing.

use std::path::PathBuf;

use credentialflow::auth::{test_support, CredentialCache};
use credentialflow::store::Pepper;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// The gateway binary's allocator, so memory and time match what `serve` would see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 1_000_000;
/// Distinct keys the hit benchmark cycles through, so it is not one hot cache line.
const SAMPLE: usize = 4096;

/// A key-shaped secret (`cf_` + 43 characters, as the store issues).
fn secret(i: usize) -> String {
    format!("cf_{i:043}")
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cf-bench-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn lookup_1m(c: &mut Criterion) {
    let dir = scratch_dir();
    let pepper = Pepper::load_or_create(&dir).expect("pepper");
    let records: Vec<_> = (0..KEYS)
        .map(|i| {
            let mut record = test_support::record(&format!("key_{i:020}"), &format!("name-{i}"));
            record.hash = pepper.hash(secret(i).as_bytes());
            record
        })
        .collect();
    let cache = CredentialCache::from_records(pepper, records);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(cache.len(), KEYS);

    let now = 1_700_000_000_000;
    let hits: Vec<String> = (0..SAMPLE).map(|i| secret(i * (KEYS / SAMPLE))).collect();
    let misses: Vec<String> = (0..SAMPLE).map(|i| secret(KEYS + i)).collect();
    assert!(cache.authenticate_at_ms(hits[1].as_bytes(), now).is_some());
    assert!(cache
        .authenticate_at_ms(misses[1].as_bytes(), now)
        .is_none());

    let mut group = c.benchmark_group("credential cache, 1M keys");
    let mut i = 0;
    group.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 1) % SAMPLE;
            cache.authenticate_at_ms(black_box(hits[i].as_bytes()), now)
        })
    });
    group.bench_function("miss (unknown key)", |b| {
        b.iter(|| {
            i = (i + 1) % SAMPLE;
            cache.authenticate_at_ms(black_box(misses[i].as_bytes()), now)
        })
    });
    group.bench_function("refused by shape (no cf_ prefix)", |b| {
        b.iter(|| {
            cache.authenticate_at_ms(
                black_box(b"sk-not-a-gateway-key-0000000000000000000000"),
                now,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, lookup_1m);
criterion_main!(benches);

//! The limiter core on the request path: GCRA checks (alone and contended from two threads
//! on one key), weighted (token) checks, a keyed table lookup plus check, and concurrency
//! acquire plus release.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use credentialflow::limits::{Clock, Gcra, InFlight, LimiterTable, SystemClock};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// One admitted request per microsecond of simulated time: every check takes the CAS path.
fn admitting_gcra() -> Gcra {
    Gcra::per_second(1_000_000, 1_000).unwrap()
}

fn gcra_single_thread(c: &mut Criterion) {
    let gcra = admitting_gcra();
    let state = AtomicU64::new(0);
    let mut now = 0u64;
    c.bench_function("gcra/check, admitted, one thread", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(gcra.check(black_box(&state), now))
        })
    });
    let limited = Gcra::per_second(1, 1).unwrap();
    let full = AtomicU64::new(0);
    limited.check(&full, 0);
    c.bench_function("gcra/check, rejected, one thread", |b| {
        b.iter(|| black_box(limited.check(black_box(&full), 1)))
    });
}

fn gcra_weighted(c: &mut Criterion) {
    // 1e9 units per second: 1 000 units every simulated microsecond always fit.
    let gcra = Gcra::per_second(1_000_000_000, 0).unwrap();
    let state = AtomicU64::new(0);
    let mut now = 0u64;
    c.bench_function("gcra/check_n 1000 units, admitted, one thread", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(gcra.check_n(black_box(&state), now, 1_000))
        })
    });
    let mut now = 0u64;
    c.bench_function("gcra/adjust refund, one thread", |b| {
        b.iter(|| {
            now += 1_000;
            gcra.adjust(black_box(&state), now, -100);
        })
    });
}

fn gcra_contended(c: &mut Criterion) {
    // T = 1 ns: two threads cannot outrun it, so both keep compare-and-swapping one TAT.
    let gcra = Gcra::per_second(1_000_000_000, 1_000_000_000).unwrap();
    let clock = SystemClock::new();
    c.bench_function(
        "gcra/check incl. clock, contended by a second thread",
        |b| {
            b.iter_custom(|iters| {
                let state = Arc::new(AtomicU64::new(0));
                let stop = Arc::new(AtomicBool::new(false));
                let rival = {
                    let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            black_box(gcra.check(&state, clock.now_nanos()));
                        }
                    })
                };
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(gcra.check(&state, clock.now_nanos()));
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                rival.join().unwrap();
                elapsed
            })
        },
    );
    c.bench_function("clock/system now_nanos", |b| {
        b.iter(|| black_box(clock.now_nanos()))
    });
}

fn table_check(c: &mut Criterion) {
    let table: LimiterTable<String> = LimiterTable::new(100_000);
    let gcra = admitting_gcra();
    for i in 0..10_000 {
        table.check(format!("key_{i:08}").as_str(), &gcra, 0);
    }
    let mut now = 0u64;
    c.bench_function("table/lookup+check by key id, 10k keys", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(table.check(black_box("key_00005000"), &gcra, now))
        })
    });
}

fn concurrency(c: &mut Criterion) {
    let in_flight = InFlight::new();
    c.bench_function("concurrency/acquire+release", |b| {
        b.iter(|| drop(black_box(in_flight.try_acquire(black_box(8)))))
    });
    let table: LimiterTable<String> = LimiterTable::new(1_000);
    c.bench_function("table/acquire+release by key id", |b| {
        b.iter(|| drop(black_box(table.try_acquire(black_box("key_a"), 8, 0))))
    });
}

criterion_group!(
    benches,
    gcra_single_thread,
    gcra_weighted,
    gcra_contended,
    table_check,
    concurrency
);
criterion_main!(benches);

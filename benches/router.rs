//! Route matching: exact host, then longest prefix, over a table of realistic size.

use credentialflow::router::{RouteEntry, Router};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn route_table(c: &mut Criterion) {
    let prefixes: Vec<String> = (0..50).map(|i| format!("/service-{i}/v1/")).collect();
    let hosts: Vec<String> = (0..10).map(|i| format!("api{i}.example.com")).collect();
    let mut entries: Vec<RouteEntry> = prefixes
        .iter()
        .map(|p| RouteEntry {
            host: "",
            path_prefix: p,
        })
        .collect();
    for h in &hosts {
        entries.push(RouteEntry {
            host: h,
            path_prefix: "/",
        });
    }
    let router = Router::new(entries);

    c.bench_function("route/50 prefixes, hit", |b| {
        b.iter(|| {
            router.route(
                black_box("gateway.local"),
                black_box("/service-37/v1/users/42"),
            )
        })
    });
    c.bench_function("route/exact host", |b| {
        b.iter(|| router.route(black_box("api7.example.com:443"), black_box("/anything")))
    });
    c.bench_function("route/miss", |b| {
        b.iter(|| router.route(black_box("gateway.local"), black_box("/nothing/here")))
    });
}

criterion_group!(benches, route_table);
criterion_main!(benches);

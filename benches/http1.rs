//! HTTP/1.1 hot-path benchmarks: request head parse + validation, path normalization,
//! chunked decode.
//!
//! Kept short on purpose (small samples, 1 s measurement):
//! `cargo bench --bench http1`.

use std::hint::black_box;
use std::time::Duration;

use credentialflow::http1::{
    encode_chunk, encode_last_chunk, normalize_path, ChunkedDecoder, HeadParser,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A typical browser navigation: about 500 bytes, 10 header fields.
const BROWSER_HEAD: &[u8] = b"GET /dashboard/settings?tab=keys&page=2 HTTP/1.1\r\n\
Host: gateway.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://gateway.example.com/dashboard\r\n\
Cookie: session=3f9a1c2b7d4e8f60a1b2; theme=dark\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Cache-Control: max-age=0\r\n\r\n";

/// A small API call as an SDK sends it.
const API_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: api.example.com\r\n\
Authorization: Bearer cf-sk-0123456789abcdef0123456789abcdef\r\n\
Content-Type: application/json\r\n\
Content-Length: 142\r\n\r\n";

const MAX_HEAD: usize = 32 * 1024;

fn parse_heads(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_head");
    for (name, head) in [("browser", BROWSER_HEAD), ("api", API_HEAD)] {
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function(name, |b| {
            let mut parser = HeadParser::new();
            b.iter(|| {
                let parsed = parser.parse(black_box(head), MAX_HEAD);
                black_box(parsed.expect("valid head").expect("complete head"))
            });
        });
    }
    group.finish();
}

/// Path normalization: an ordinary path (one scan, borrowed) and one needing every rule
/// (escapes to decode and to upper-case, dot segments, `//`).
fn normalize_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_path");
    for (name, path) in [
        ("ordinary", "/v1/chat/completions"),
        (
            "needs_work",
            "/v1/%7eteam/./models//gpt-4o/%2E%2e/chat/x/../completions%3a",
        ),
    ] {
        group.throughput(Throughput::Bytes(path.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(normalize_path(black_box(path), true).expect("normalizable")));
        });
    }
    group.finish();
}

fn decode_chunked(c: &mut Criterion) {
    let body: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    for chunk in body.chunks(1024) {
        encode_chunk(chunk, &mut wire);
    }
    encode_last_chunk(&mut wire);

    let mut group = c.benchmark_group("http1_chunked");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode_16k_in_1k_chunks", |b| {
        let mut out = Vec::with_capacity(body.len());
        b.iter(|| {
            out.clear();
            let decoded = ChunkedDecoder::new()
                .decode(black_box(&wire), &mut out)
                .expect("valid body");
            assert!(decoded.done);
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = parse_heads, normalize_paths, decode_chunked
}
criterion_main!(benches);

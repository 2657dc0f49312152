//! The access-log path of one request as a worker pays for it: building the JSON line of a
//! metered AI request and handing it to the writer thread (here writing to /dev/null).

use std::path::Path;

use credentialflow::accesslog::{self, AccessEntry, UsageFields};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn entry() -> AccessEntry<'static> {
    AccessEntry {
        ts_ms: 1_796_025_152_876,
        request_id: "7c6371d9a4e659f00000000000000005",
        client: "203.0.113.7".to_string(),
        method: "POST",
        host: "gateway.example.com",
        path: "/v1/chat/completions",
        route: Some("/v1/chat/completions"),
        status: 200,
        duration_us: 1234,
        user_agent: Some(accesslog::user_agent(b"OpenAI/Python 1.54.0")),
        bytes_in: 412,
        bytes_out: 1187,
        upstream_addr: Some("198.51.100.20:443".to_string()),
        upstream_ms: Some(1180),
        error: None,
        stream: false,
        key_id: Some("key_433ls4mwmqobi66yeva6"),
        team: Some("research"),
        model: Some("gpt-4o-mini"),
        prompt: None,
        attempts: &[],
        extra: Default::default(),
        usage: Some(UsageFields {
            prompt_tokens: 812,
            completion_tokens: 164,
            cached_tokens: 0,
            cost_usd: 0.000220,
        }),
    }
}

fn access_log(c: &mut Criterion) {
    c.bench_function("accesslog/render one AI request line", |b| {
        b.iter(|| black_box(black_box(entry()).render()))
    });
    let (log, _writer) = accesslog::start(Path::new("/dev/null")).expect("open /dev/null");
    c.bench_function("accesslog/render and queue one line", |b| {
        b.iter(|| log.write(black_box(entry()).render()))
    });
}

criterion_group!(benches, access_log);
criterion_main!(benches);

//! Lua hook calls on the request path: a trivial `on_access`, one that reads a header and
//! sets a per-request var, and the shipped `scripts/redact_pii.lua` as `on_prompt` on a
//! 2 KiB chat full of emails and phone numbers (JSON -> Lua table -> gsub -> JSON).

use std::path::PathBuf;
use std::sync::Arc;

use credentialflow::lua::{Hook, HookRequest, LuaLimits, LuaRuntime, ScriptSet};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// A runtime with `source` loaded as script 0, written to a temp folder.
fn runtime(name: &str, source: &str) -> LuaRuntime {
    let dir: PathBuf = std::env::temp_dir().join(format!("cf-lua-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), source).unwrap();
    let limits = LuaLimits::default();
    let set = ScriptSet::from_files(&dir, &[name], limits).expect("bench script loads");
    let mut rt = LuaRuntime::new(limits);
    rt.sync(&Arc::new(set));
    rt
}

fn request() -> HookRequest {
    let mut req = HookRequest::new("POST", "/v1/chat/completions", None);
    req.client_ip = "10.1.2.3".into();
    req.headers = vec![
        ("host".into(), "gateway.local".into()),
        ("content-type".into(), "application/json".into()),
        ("x-tenant".into(), "acme".into()),
        ("user-agent".into(), "bench/1".into()),
    ];
    req
}

fn on_access(c: &mut Criterion) {
    let mut rt = runtime("trivial.lua", "function on_access(ctx) end");
    let mut req = request();
    c.bench_function("lua/on_access, empty hook", |b| {
        b.iter(|| rt.call(0, Hook::Access, black_box(&mut req)).unwrap())
    });

    let mut rt = runtime(
        "header.lua",
        "function on_access(ctx) ctx.vars.tenant = ctx:header('x-tenant') end",
    );
    let mut req = request();
    c.bench_function(
        "lua/on_access, read header + set var, then end_request",
        |b| {
            b.iter(|| {
                rt.call(0, Hook::Access, black_box(&mut req)).unwrap();
                rt.end_request(&mut req);
            })
        },
    );
}

fn on_prompt(c: &mut Criterion) {
    let mut rt = runtime("redact_pii.lua", include_str!("../scripts/redact_pii.lua"));
    let sentence = "Please contact jane.doe@example.com or call +1 415-555-0100 about order 42. ";
    let content: String = sentence.repeat(2048 / sentence.len() + 1)[..2048].to_owned();
    let chat = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": content},
        ],
        "temperature": 0.2,
    });
    let mut req = request();
    let out = rt.call_prompt(0, &mut req, &chat).unwrap().unwrap();
    let out = out.to_string();
    assert!(!out.contains("example.com") && !out.contains("555-0100"));
    c.bench_function(
        "lua/on_prompt, scripts/redact_pii.lua on a 2 KiB chat",
        |b| b.iter(|| black_box(rt.call_prompt(0, &mut req, black_box(&chat)).unwrap())),
    );
}

criterion_group!(benches, on_access, on_prompt);
criterion_main!(benches);

//! Lua hook calls on the request path: a trivial `on_access`, one that reads a header and
//! sets a per-request var, and the shipped `scripts/redact_pii.lua` as `on_prompt` on a
//! 2 KiB chat full of emails and phone numbers (JSON -> Lua table -> gsub -> JSON); and the
//! costliest single library calls a hook can make: capped calls at their caps and the
//! uncapped ones on the largest data the default memory limit leaves room for. Their time is
//! how long one call can hold the worker before the budget is checked (see `lua::caps`).

use std::path::PathBuf;
use std::sync::Arc;

use credentialflow::lua::{Hook, HookRequest, LuaLimits, LuaRuntime, ScriptSet};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// A runtime with `source` loaded as script 0, written to a temp folder.
fn runtime(name: &str, source: &str) -> LuaRuntime {
    runtime_with(name, source, LuaLimits::default())
}

fn runtime_with(name: &str, source: &str, limits: LuaLimits) -> LuaRuntime {
    let dir: PathBuf = std::env::temp_dir().join(format!("cf-lua-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), source).unwrap();
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

/// One library call per `on_access`, on data built once at the script's top level.
fn library_calls(c: &mut Criterion) {
    // A budget no single call reaches, so each call is timed to its end.
    let limits = LuaLimits {
        hook_timeout: std::time::Duration::from_secs(5),
        ..LuaLimits::default()
    };
    let span = "local t = table.create(65536, 1)";
    let text = "local s = string.rep('aB', 2097152) s = s .. s"; // 8 MiB
    let cases = [
        (
            "table.move at the span cap, into a hash part",
            span,
            "table.move(t, 1, 65536, 1e6, {})",
        ),
        (
            "table.concat at the span cap",
            "local t = table.create(65536, 0.1)",
            "table.concat(t, ',')",
        ),
        (
            "table.sort at its cap",
            "local t = {} for i = 1, 32768 do t[i] = -i end",
            "table.sort(table.clone(t))",
        ),
        (
            "string.rep at the byte cap",
            "",
            "string.rep('ab', 2097152)",
        ),
        (
            "string.char of 2^16 arguments",
            "local t = table.create(65536, 65)",
            "string.char(unpack(t))",
        ),
        ("string.lower of 8 MiB (uncapped)", text, "s:lower()"),
        ("string.reverse of 8 MiB (uncapped)", text, "s:reverse()"),
    ];
    let mut group = c.benchmark_group("lua/library call");
    group.sample_size(10);
    for (what, setup, call) in cases {
        let source = format!("{setup}\nfunction on_access(ctx) local r = {call} end");
        let mut rt = runtime_with("call.lua", &source, limits);
        let mut req = request();
        group.bench_function(what, |b| {
            b.iter(|| rt.call(0, Hook::Access, black_box(&mut req)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, on_access, on_prompt, library_calls);
criterion_main!(benches);

//! Lua hook calls on the request path: a trivial `on_access`, one that reads a header and
//! sets a per-request var, and an `on_prompt` that redacts emails and phone numbers in a
//! 2 KiB chat (JSON -> Lua table -> gsub -> JSON).

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
    let mut rt = runtime(
        "redact.lua",
        r#"
        local EMAIL = "[%w%.%-_+]+@[%w%.%-]+%.%a+"
        local PHONE = "%+?%d[%d%-%s]%d%d%d[%d%-%s]+%d"
        function on_prompt(ctx, chat)
          for _, m in ipairs(chat.messages) do
            if type(m.content) == "string" then
              m.content = m.content:gsub(EMAIL, "[email]"):gsub(PHONE, "[phone]")
            end
          end
          return chat
        end
        "#,
    );
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
    assert!(!out.to_string().contains("example.com"));
    c.bench_function("lua/on_prompt, redact emails+phones in a 2 KiB chat", |b| {
        b.iter(|| black_box(rt.call_prompt(0, &mut req, black_box(&chat)).unwrap()))
    });
}

/// The same redaction without the JSON round trip, to split the figure above.
fn gsub_only(c: &mut Criterion) {
    let sentence = "Please contact jane.doe@example.com or call +1 415-555-0100 about order 42. ";
    let content: String = sentence.repeat(2048 / sentence.len() + 1)[..2048].to_owned();
    let mut rt = runtime(
        "gsub.lua",
        &format!(
            r#"
            local EMAIL = "[%w%.%-_+]+@[%w%.%-]+%.%a+"
            local PHONE = "%+?%d[%d%-%s]%d%d%d[%d%-%s]+%d"
            local TEXT = "{content}"
            function on_access(ctx)
              local out = TEXT:gsub(EMAIL, "[email]"):gsub(PHONE, "[phone]")
            end
            "#
        ),
    );
    let mut req = request();
    c.bench_function(
        "lua/on_access, gsub emails+phones over 2 KiB, no JSON",
        |b| b.iter(|| rt.call(0, Hook::Access, black_box(&mut req)).unwrap()),
    );
}

criterion_group!(benches, on_access, on_prompt, gsub_only);
criterion_main!(benches);

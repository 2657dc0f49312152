//! Lua hooks end to end (issue 6): the example scripts in `scripts/` run by a
//! real gateway, each hook's effect on the wire and in the access log, and the
//! failure modes (an error, a runaway loop, a memory bomb, a pathological
//! pattern, a script that does not compile, reloads with broken and changed
//! scripts), after which the gateway must go on serving.
//!
//! The example scripts are used in place (absolute paths to the repository's
//! `scripts/` folder), so these tests check the files users copy. Throwaway
//! scripts live in a temp dir of the test.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::keys::*;
use common::*;
use serde_json::{json, Value};

/// The driver of every test here: hooks run above the I/O layer, so one driver
/// is enough (the suites of issues 1-2 cover both).
const DRIVER: Driver = Driver::Uring;

/// `[lua] hook_timeout_ms` of the failure-mode gateways.
const HOOK_TIMEOUT_MS: u64 = 50;

/// The virtual-key secret the fake OpenAI provider is configured with.
const OPENAI_KEY: &str = "sk-fake-openai-0123456789abcdef";

// ---------------------------------------------------------------------------
// Scripts and configs
// ---------------------------------------------------------------------------

/// The absolute path of an example script in the repository's `scripts/`.
fn example(name: &str) -> String {
    let path = format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&path).is_file(),
        "example script {path} is missing"
    );
    path
}

/// Writes `body` as `name` in `dir` and returns its absolute path.
fn script(dir: &TempDir, name: &str, body: &str) -> String {
    write_atomically(&dir.join(name), body.as_bytes());
    dir.file(name)
}

/// A `[server]` with `workers` workers and an access log in the gateway's
/// dir, `[lua]` limits for quick failures, then `rest`.
fn server(workers: usize, rest: &str) -> String {
    format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\n\
         data_dir = \"{DIR}/data\"\n\
         access_log = \"{DIR}/access.log\"\n\
         workers = {workers}\n\
         \n\
         [lua]\n\
         hook_timeout_ms = {HOOK_TIMEOUT_MS}\n\
         memory_limit_mb = 16\n\
         {rest}\n",
        DIR = gateway::DIR
    )
}

/// An upstream `backend` at `target` and a route `api` on `/` with `auth`
/// and the hook script `hooks`.
fn hooked_route(target: &str, auth: &str, hooks: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "backend"
targets = ["{target}"]

[[route]]
name = "api"
path_prefix = "/"
upstream = "backend"
auth = "{auth}"
hooks = "{hooks}"
"#
    )
}

/// A 2-worker gateway in front of `upstream` whose route runs `hooks`.
fn route_gateway(upstream: &Upstream, auth: &str, hooks: &str) -> Gateway {
    Gateway::start(
        &server(2, &hooked_route(&upstream.target(), auth, hooks)),
        DRIVER,
    )
}

/// Model names of the AI tests: an expensive one and its cheaper sibling.
const BIG_MODEL: &str = "gpt-4o";
const SMALL_MODEL: &str = "gpt-4o-mini";

/// The fake OpenAI provider, both models and `[ai] hooks = hooks`.
fn ai_tables(fake: &FakeOpenAi, hooks: &str) -> String {
    format!(
        r#"
[[provider]]
name = "openai"
kind = "openai"
base_url = "{base}"
api_key = "env:FAKE_OPENAI_KEY"

[[model]]
name = "{BIG_MODEL}"
provider = "openai"
upstream_model = "{BIG_MODEL}-upstream"
input_price_per_mtok = 10.0
output_price_per_mtok = 10.0

[[model]]
name = "{SMALL_MODEL}"
provider = "openai"
upstream_model = "{SMALL_MODEL}-upstream"
input_price_per_mtok = 0.01
output_price_per_mtok = 0.01

[ai]
auth = "api_key"
hooks = "{hooks}"
"#,
        base = fake.base_url()
    )
}

/// A 2-worker AI gateway in front of `fake` running `hooks`, and a key
/// created with `key_body` (in force on every worker once the admin API answers).
fn ai_gateway(fake: &FakeOpenAi, hooks: &str, key_body: &Value) -> (Gateway, IssuedKey) {
    let gw = Gateway::builder(&server(2, &ai_tables(fake, hooks)), DRIVER)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .start();
    let key = create_key(&gw, key_body);
    (gw, key)
}

// ---------------------------------------------------------------------------
// Requests and the access log
// ---------------------------------------------------------------------------

/// `method path` with `headers` on a new connection that closes after it.
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    roundtrip(addr, &request(method, path, &all, b""))
}

/// `POST /v1/chat/completions` with `body`, presenting `key`.
fn post_chat(gw: &Gateway, key: &str, body: &Value) -> Response {
    let auth = format!("Bearer {key}");
    let bytes = body.to_string().into_bytes();
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
        ("Authorization", auth.as_str()),
    ];
    roundtrip(
        gw.addr(),
        &request("POST", "/v1/chat/completions", &headers, &bytes),
    )
}

/// A chat request for `model` with `messages`.
fn chat(model: &str, messages: Value) -> Value {
    json!({ "model": model, "messages": messages, "max_tokens": 4 })
}

fn request_id_of(response: &Response) -> String {
    response
        .header("x-request-id")
        .expect("every response carries x-request-id")
        .to_string()
}

/// The access-log line of the request whose `x-request-id` is `request_id`.
fn access_log_line(gw: &Gateway, request_id: &str) -> Value {
    let path = gw.dir().join("access.log");
    let mut found = None;
    let seen = wait_until(WAIT, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["request_id"] == request_id);
        found.is_some()
    });
    assert!(
        seen,
        "no access-log line for {request_id}:\n{}",
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    found.unwrap()
}

/// Fails the test unless `response` is the contract's 500 `hook_error`.
fn assert_hook_error(response: &Response) {
    response.assert_error(500, "hook_error");
}

// ---------------------------------------------------------------------------
// scripts/hmac_auth.lua
// ---------------------------------------------------------------------------

/// The secret `scripts/hmac_auth.lua` holds for `partner-a`.
const PARTNER_A_SECRET: &str = "example-secret-of-partner-a-change-me";

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// hex(HMAC-SHA256(secret, method "\n" path "\n" timestamp)), as a client signs.
fn sign(secret: &str, method: &str, path: &str, timestamp: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{method}\n{path}\n{timestamp}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET path` signed as `client` with `secret` at `timestamp`.
fn signed_get(gw: &Gateway, path: &str, client: &str, secret: &str, timestamp: u64) -> Response {
    let timestamp = timestamp.to_string();
    let signature = sign(secret, "GET", path, &timestamp);
    send(
        gw.addr(),
        "GET",
        path,
        &[
            ("x-client", client),
            ("x-timestamp", timestamp.as_str()),
            ("x-signature", signature.as_str()),
        ],
    )
}

/// An echo upstream and a gateway whose `auth = "lua"` route runs the HMAC
/// example, with a key named `partner-a`.
fn hmac_gateway() -> (Upstream, Gateway, IssuedKey) {
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "lua", &example("hmac_auth.lua"));
    let key = create_key(&gw, &json!({ "name": "partner-a", "team": "partners" }));
    (upstream, gw, key)
}

#[test]
fn hmac_auth_accepts_a_good_signature_as_the_named_key() {
    let (upstream, gw, key) = hmac_gateway();
    let response = signed_get(&gw, "/orders", "partner-a", PARTNER_A_SECRET, unix_now_s());
    let echo = Echo::of(&response);
    assert_eq!(echo.path, "/orders");
    assert_eq!(upstream.request_count(), 1);
    let line = access_log_line(&gw, &request_id_of(&response));
    assert_eq!(line["key_id"], key.id.as_str(), "{line}");
    assert_eq!(line["team"], "partners", "{line}");
}

#[test]
fn hmac_auth_refuses_a_wrong_or_missing_signature_without_forwarding() {
    let (upstream, gw, _key) = hmac_gateway();
    let now = unix_now_s();
    let forged = signed_get(&gw, "/orders", "partner-a", "not-the-secret", now);
    assert_unauthenticated(&forged);
    // A signature for another path does not carry over.
    let timestamp = now.to_string();
    let other_path = sign(PARTNER_A_SECRET, "GET", "/other", &timestamp);
    let replayed = send(
        gw.addr(),
        "GET",
        "/orders",
        &[
            ("x-client", "partner-a"),
            ("x-timestamp", timestamp.as_str()),
            ("x-signature", other_path.as_str()),
        ],
    );
    assert_unauthenticated(&replayed);
    let unsigned = send(gw.addr(), "GET", "/orders", &[("x-client", "partner-a")]);
    assert_unauthenticated(&unsigned);
    assert_eq!(
        upstream.request_count(),
        0,
        "a refused request reached the upstream"
    );
}

#[test]
fn hmac_auth_refuses_a_stale_timestamp() {
    let (upstream, gw, _key) = hmac_gateway();
    let stale = signed_get(
        &gw,
        "/orders",
        "partner-a",
        PARTNER_A_SECRET,
        unix_now_s() - 301,
    );
    assert_unauthenticated(&stale);
    assert!(
        stale.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stale")),
        "{}",
        stale.text()
    );
    let future = signed_get(
        &gw,
        "/orders",
        "partner-a",
        PARTNER_A_SECRET,
        unix_now_s() + 301,
    );
    assert_unauthenticated(&future);
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn hmac_auth_refuses_a_client_without_a_live_key() {
    let (upstream, gw, _key) = hmac_gateway();
    // partner-b has a secret in the script but no key in the store.
    let response = signed_get(
        &gw,
        "/orders",
        "partner-b",
        "example-secret-of-partner-b-change-me",
        unix_now_s(),
    );
    assert_unauthenticated(&response);
    assert_eq!(upstream.request_count(), 0);
}

// ---------------------------------------------------------------------------
// scripts/tenant_header.lua
// ---------------------------------------------------------------------------

#[test]
fn tenant_header_makes_the_request_the_tenants_key() {
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "lua", &example("tenant_header.lua"));
    let key = create_key(&gw, &json!({ "name": "tenant-acme", "team": "acme" }));

    let response = send(gw.addr(), "GET", "/things", &[("x-tenant", "acme")]);
    Echo::of(&response);
    let line = access_log_line(&gw, &request_id_of(&response));
    assert_eq!(line["key_id"], key.id.as_str(), "{line}");

    assert_unauthenticated(&send(
        gw.addr(),
        "GET",
        "/things",
        &[("x-tenant", "globex")],
    ));
    assert_unauthenticated(&send(gw.addr(), "GET", "/things", &[]));
    assert_eq!(
        upstream.request_count(),
        1,
        "only the acme request is forwarded"
    );
}

// ---------------------------------------------------------------------------
// scripts/redact_pii.lua, scripts/system_prompt.lua, scripts/budget_downgrade.lua
// ---------------------------------------------------------------------------

#[test]
fn redact_pii_keeps_emails_phones_and_cards_from_the_provider() {
    let fake = FakeOpenAi::start();
    let (gw, key) = ai_gateway(
        &fake,
        &example("redact_pii.lua"),
        &json!({ "name": "redact" }),
    );
    let text = "Mail jane.doe@example.com or call +1 (555) 123-4567; card 4111 1111 1111 1111.";
    let body = chat(
        SMALL_MODEL,
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": text },
        ]),
    );
    let response = post_chat(&gw, &key.secret, &body);
    assert_eq!(response.status, 200, "{}", response.text());

    let sent = fake.last_request();
    let seen = String::from_utf8_lossy(&sent.body).into_owned();
    for secret in ["jane.doe@example.com", "555", "4111"] {
        assert!(
            !seen.contains(secret),
            "the provider saw {secret:?}: {seen}"
        );
    }
    let user = &sent.json()["messages"][1]["content"];
    assert_eq!(
        user, "Mail [EMAIL] or call [PHONE]; card [CARD].",
        "redacted text: {seen}"
    );
    assert_eq!(sent.json()["messages"][0]["content"], "Be brief.");
}

#[test]
fn system_prompt_is_inserted_first_only_when_the_chat_has_none() {
    let fake = FakeOpenAi::start();
    let (gw, key) = ai_gateway(
        &fake,
        &example("system_prompt.lua"),
        &json!({ "name": "sys" }),
    );

    let bare = chat(SMALL_MODEL, json!([{ "role": "user", "content": "Hi" }]));
    assert_eq!(post_chat(&gw, &key.secret, &bare).status, 200);
    let messages = fake.last_request().json()["messages"].clone();
    assert_eq!(messages.as_array().map(Vec::len), Some(2), "{messages}");
    assert_eq!(messages[0]["role"], "system", "{messages}");
    assert!(
        messages[0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Example Corp")),
        "{messages}"
    );
    assert_eq!(messages[1], json!({ "role": "user", "content": "Hi" }));

    let own = chat(
        SMALL_MODEL,
        json!([
            { "role": "system", "content": "Mine." },
            { "role": "user", "content": "Hi" },
        ]),
    );
    assert_eq!(post_chat(&gw, &key.secret, &own).status, 200);
    let messages = fake.last_request().json()["messages"].clone();
    assert_eq!(messages.as_array().map(Vec::len), Some(2), "{messages}");
    assert_eq!(messages[0]["content"], "Mine.", "{messages}");
}

#[test]
fn budget_downgrade_switches_to_the_cheaper_model_past_80_percent() {
    let fake = FakeOpenAi::start();
    // 85 + 1 tokens at $10/Mtok = $0.00086: 86% of the key's $0.001.
    fake.set_usage(85, 1, 0);
    let (gw, key) = ai_gateway(
        &fake,
        &example("budget_downgrade.lua"),
        &json!({ "name": "thrifty", "budget_usd": 0.001, "budget_period": "total" }),
    );
    let hello = json!([{ "role": "user", "content": "Hi" }]);

    let first = post_chat(&gw, &key.secret, &chat(BIG_MODEL, hello.clone()));
    assert_eq!(first.status, 200, "{}", first.text());
    // An OpenAI provider's answer names the upstream model; what was called
    // is what the provider received.
    assert_eq!(
        fake.last_request().json()["model"],
        "gpt-4o-upstream",
        "under 80%: unchanged"
    );
    let line = access_log_line(&gw, &request_id_of(&first));
    assert_eq!(line["model"], BIG_MODEL, "{line}");
    assert!(line.get("downgraded_from").is_none(), "{line}");

    // The spend is settled after the answer is written; give it a moment.
    sleep(Duration::from_millis(300));
    let second = post_chat(&gw, &key.secret, &chat(BIG_MODEL, hello));
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        fake.last_request().json()["model"],
        "gpt-4o-mini-upstream",
        "over 80% of the budget the cheaper model is called"
    );
    let line = access_log_line(&gw, &request_id_of(&second));
    assert_eq!(line["model"], SMALL_MODEL, "{line}");
    assert_eq!(line["downgraded_from"], BIG_MODEL, "{line}");
}

// ---------------------------------------------------------------------------
// scripts/log_enricher.lua
// ---------------------------------------------------------------------------

#[test]
fn log_enricher_adds_tenant_and_referer_to_the_access_log() {
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &example("log_enricher.lua"));
    let response = send(
        gw.addr(),
        "GET",
        "/",
        &[
            ("x-tenant", "acme"),
            ("Referer", "https://example.com/page"),
            ("User-Agent", "curl/8.5.0"),
        ],
    );
    Echo::of(&response);
    let line = access_log_line(&gw, &request_id_of(&response));
    assert_eq!(line["tenant"], "acme", "{line}");
    assert_eq!(line["referer"], "https://example.com/page", "{line}");
    assert_eq!(
        line["user_agent"], "curl/8.5.0",
        "the gateway's own: {line}"
    );
    assert_eq!(line["status"], 200, "the gateway's own fields stay: {line}");

    let anonymous = send(gw.addr(), "GET", "/", &[]);
    let line = access_log_line(&gw, &request_id_of(&anonymous));
    assert_eq!(
        (&line["tenant"], &line["referer"], &line["user_agent"]),
        (&json!("-"), &json!("-"), &Value::Null),
        "{line}"
    );
}

#[test]
fn on_log_fields_cannot_replace_the_gateways_own_fields() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "spoof.lua",
        "function on_log(ctx, entry)\n  entry.status = 999\n  entry.route = 'spoofed'\n  entry.note = 'kept'\nend\n",
    );
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &hooks);
    let response = send(gw.addr(), "GET", "/", &[]);
    Echo::of(&response);
    let id = request_id_of(&response);
    access_log_line(&gw, &id);
    let raw = std::fs::read_to_string(gw.dir().join("access.log")).unwrap();
    let text = raw
        .lines()
        .find(|l| l.contains(&id))
        .expect("the request's line");
    assert_eq!(
        text.matches("\"status\":").count(),
        1,
        "one status field per line: {text}"
    );
    let line: Value = serde_json::from_str(text).unwrap();
    assert_eq!(line["status"], 200, "{text}");
    assert_eq!(line["route"], "api", "{text}");
    assert_eq!(line["note"], "kept", "{text}");
}

// ---------------------------------------------------------------------------
// Each hook's effect
// ---------------------------------------------------------------------------

#[test]
fn on_request_rewrites_headers_path_and_query_the_upstream_sees() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "rewrite.lua",
        r#"
function on_request(ctx)
    ctx:set_header("x-tenant", ctx:header("x-tenant") .. "-checked")
    ctx:set_header("x-added", "by-lua")
    ctx:remove_header("x-drop-me")
    ctx.path = "/v2" .. ctx.path
    ctx.query = "rewritten=1"
end
"#,
    );
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &hooks);
    let response = send(
        gw.addr(),
        "GET",
        "/items?original=1",
        &[("x-tenant", "acme"), ("x-drop-me", "secret")],
    );
    let echo = Echo::of(&response);
    assert_eq!(echo.path, "/v2/items");
    assert_eq!(echo.query, "rewritten=1");
    assert_eq!(echo.headers_named("x-tenant"), ["acme-checked"]);
    assert_eq!(echo.header("x-added"), Some("by-lua"));
    assert_eq!(echo.header("x-drop-me"), None);
}

#[test]
fn on_response_changes_status_and_headers() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "response.lua",
        r#"
function on_response(ctx, resp)
    if resp.status == 404 then
        resp.status = 410
    end
    resp:set_header("x-served-by", "lua")
    resp:remove_header("x-internal")
end
"#,
    );
    let upstream = Upstream::replying(
        "backend",
        Reply::Fixed {
            status: 404,
            headers: vec![("x-internal".into(), "node-7".into())],
            body: b"gone".to_vec(),
        },
    );
    let gw = route_gateway(&upstream, "none", &hooks);
    let response = send(gw.addr(), "GET", "/old", &[]);
    assert_eq!(response.status, 410, "{:?}", response.headers);
    assert_eq!(response.header("x-served-by"), Some("lua"));
    assert_eq!(response.header("x-internal"), None);
    assert_eq!(response.body, b"gone");
}

#[test]
fn on_response_edits_the_text_of_ai_answers_and_the_head_of_streams() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "answer.lua",
        r#"
function on_response(ctx, resp)
    resp:set_header("x-reviewed", resp.text and "text" or "head")
    if resp.text then
        resp.text = string.gsub(resp.text, "secret%-%w+", "[hidden]")
    end
end
"#,
    );
    let fake = FakeOpenAi::start();
    fake.set_reply("the code is secret-abc123, keep it");
    let (gw, key) = ai_gateway(&fake, &hooks, &json!({ "name": "reviewed" }));

    // OpenAI front door, not streamed: the hook sees and rewrites the assistant's text.
    let plain = chat(SMALL_MODEL, json!([{ "role": "user", "content": "code?" }]));
    let response = post_chat(&gw, &key.secret, &plain);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-reviewed"), Some("text"));
    let body = response.json();
    assert_eq!(
        body["choices"][0]["message"]["content"], "the code is [hidden], keep it",
        "{body}"
    );
    assert!(
        body["usage"]["completion_tokens"].as_u64().is_some(),
        "{body}"
    );

    // Anthropic front door: the same text, in Anthropic's content blocks.
    let auth = format!("Bearer {}", key.secret);
    let messages = json!({ "model": SMALL_MODEL, "max_tokens": 16,
        "messages": [{ "role": "user", "content": "code?" }] })
    .to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
        ("Authorization", auth.as_str()),
    ];
    let response = roundtrip(
        gw.addr(),
        &request("POST", "/v1/messages", &headers, messages.as_bytes()),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["content"][0]["type"], "text", "{body}");
    assert_eq!(body["content"][0]["text"], "the code is [hidden], keep it");

    // Streamed: the head goes through the hook, the events are relayed as they come.
    let mut streamed = plain.clone();
    streamed["stream"] = json!(true);
    let response = post_chat(&gw, &key.secret, &streamed);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-reviewed"), Some("head"));
    let text: String = response
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "the code is secret-abc123, keep it");
}

#[test]
fn ctx_vars_are_shared_by_on_access_and_on_log_of_one_request_only() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "vars.lua",
        r#"
function on_access(ctx)
    ctx.vars.left_over = ctx.vars.trace
    ctx.vars.trace = ctx:header("x-trace")
end

function on_log(ctx, entry)
    entry.trace = ctx.vars.trace
    entry.fresh_vars = ctx.vars.left_over == nil
end
"#,
    );
    let upstream = Upstream::echo("backend");
    // One worker: both requests meet the same VM.
    let gw = Gateway::start(
        &server(1, &hooked_route(&upstream.target(), "none", &hooks)),
        DRIVER,
    );
    let mut client = Client::connect(gw.addr());
    let mut ids = Vec::new();
    for trace in ["t-1", "t-2"] {
        client.send(&request("GET", "/", &[("x-trace", trace)], b""));
        let response = client.read_final_response();
        Echo::of(&response);
        ids.push(request_id_of(&response));
    }
    for (id, trace) in ids.iter().zip(["t-1", "t-2"]) {
        let line = access_log_line(&gw, id);
        assert_eq!(line["trace"], trace, "{line}");
        assert_eq!(
            line["fresh_vars"], true,
            "vars leaked between requests: {line}"
        );
    }
}

// ---------------------------------------------------------------------------
// Failure modes: 500 hook_error, nothing forwarded, and the next request works
// ---------------------------------------------------------------------------

/// An `on_access` that misbehaves as `x-mode` asks and passes otherwise.
const MISBEHAVING: &str = r#"
function on_access(ctx)
    local mode = ctx:header("x-mode")
    if mode == "error" then
        error("deliberate failure")
    elseif mode == "loop" then
        while true do end
    elseif mode == "string-bomb" then
        local s = string.rep("x", 1e9)
        ctx.vars.size = #s
    elseif mode == "table-bomb" then
        local t = {}
        for i = 1, 1e8 do t[i] = { i } end
    elseif mode == "pattern" then
        string.rep("a", 1e5):find(".-.-.-.-.-.-.-.-b")
    end
end
"#;

/// A 1-worker gateway (so the next request meets the same VM) whose route
/// runs [`MISBEHAVING`].
fn misbehaving_gateway(dir: &TempDir) -> (Upstream, Gateway) {
    let hooks = script(dir, "misbehaving.lua", MISBEHAVING);
    let upstream = Upstream::echo("backend");
    let gw = Gateway::start(
        &server(1, &hooked_route(&upstream.target(), "none", &hooks)),
        DRIVER,
    );
    (upstream, gw)
}

/// Sends a request with `x-mode: mode`: it must fail with 500 `hook_error`
/// and reach no upstream; then plain requests must be served, on the same
/// connection if the gateway kept it open and on a new one. Returns how long
/// the failing request took.
fn fails_closed_then_serves(mode: &str) -> (Gateway, Duration) {
    let dir = TempDir::new("lua");
    let (upstream, gw) = misbehaving_gateway(&dir);
    let mut client = Client::connect(gw.addr());
    let started = Instant::now();
    client.send(&request("GET", "/", &[("x-mode", mode)], b""));
    let failed = client.read_final_response();
    let took = started.elapsed();
    assert_hook_error(&failed);
    assert_eq!(
        upstream.request_count(),
        0,
        "a failed on_access must not forward"
    );

    let raw = request("GET", "/", &[], b"");
    let same_connection = match client.try_send(&raw) {
        Ok(()) => client.try_read_final_response().ok(),
        Err(_) => None,
    };
    if let Some(next) = same_connection {
        Echo::of(&next);
    }
    Echo::of(&send(gw.addr(), "GET", "/", &[]));
    assert!(upstream.request_count() >= 1);
    (gw, took)
}

/// Waits until the gateway's log names a hook failure containing `what`.
fn assert_logged(gw: &Gateway, what: &str) {
    assert!(
        wait_until(WAIT, || gw.stderr().contains(what)),
        "the gateway's log never said {what:?}:\n{}",
        gw.stderr()
    );
}

#[test]
fn on_access_error_fails_closed_and_the_next_request_works() {
    let (gw, _) = fails_closed_then_serves("error");
    assert_logged(&gw, "misbehaving.lua:5");
    assert!(
        !gw.stderr().contains("x-mode"),
        "hook errors must not log request data"
    );
}

#[test]
fn on_access_infinite_loop_is_cut_off_near_the_timeout() {
    let (gw, took) = fails_closed_then_serves("loop");
    let budget = Duration::from_millis(HOOK_TIMEOUT_MS);
    assert!(
        took >= budget,
        "answered before the budget ran out: {took:?}"
    );
    // The whole request, on a loaded 2-core machine: well under a second.
    assert!(took < budget + Duration::from_millis(950), "took {took:?}");
    assert_logged(&gw, "time budget");
}

#[test]
fn on_access_string_memory_bomb_fails_and_the_next_request_works() {
    let (gw, _) = fails_closed_then_serves("string-bomb");
    assert_logged(&gw, "memory limit");
}

#[test]
fn on_access_table_memory_bomb_fails_and_the_next_request_works() {
    let (gw, _) = fails_closed_then_serves("table-bomb");
    // The table fills 16 MiB in a few ms; on a starved machine the time
    // budget may strike first, which is the same 500 to the client.
    assert!(
        wait_until(WAIT, || {
            let log = gw.stderr();
            log.contains("memory limit") || log.contains("time budget")
        }),
        "{}",
        gw.stderr()
    );
}

#[test]
fn on_access_pathological_pattern_is_bounded() {
    let (_gw, took) = fails_closed_then_serves("pattern");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn on_request_error_is_a_hook_error_and_nothing_is_forwarded() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "request.lua",
        "function on_request(ctx)\n  if ctx:header('x-fail') then error('no') end\nend\n",
    );
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &hooks);
    assert_hook_error(&send(gw.addr(), "GET", "/", &[("x-fail", "1")]));
    assert_eq!(upstream.request_count(), 0);
    Echo::of(&send(gw.addr(), "GET", "/", &[]));
}

#[test]
fn on_response_error_replaces_the_answer_with_a_hook_error() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "response.lua",
        "function on_response(ctx, resp)\n  if ctx:header('x-fail') then error('no') end\nend\n",
    );
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &hooks);
    assert_hook_error(&send(gw.addr(), "GET", "/", &[("x-fail", "1")]));
    Echo::of(&send(gw.addr(), "GET", "/", &[]));
}

#[test]
fn on_prompt_error_is_a_hook_error_and_the_provider_is_not_called() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "prompt.lua",
        "function on_prompt(ctx, chat)\n  if chat.model == 'gpt-4o' then error('no') end\nend\n",
    );
    let fake = FakeOpenAi::start();
    let (gw, key) = ai_gateway(&fake, &hooks, &json!({ "name": "prompt-error" }));
    let hello = json!([{ "role": "user", "content": "Hi" }]);
    assert_hook_error(&post_chat(
        &gw,
        &key.secret,
        &chat(BIG_MODEL, hello.clone()),
    ));
    assert_eq!(fake.request_count(), 0);
    let ok = post_chat(&gw, &key.secret, &chat(SMALL_MODEL, hello));
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn lua_auth_route_without_set_consumer_is_unauthenticated() {
    let dir = TempDir::new("lua");
    let hooks = script(&dir, "silent.lua", "function on_access(ctx) end\n");
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "lua", &hooks);
    assert_unauthenticated(&send(gw.addr(), "GET", "/", &[]));
    assert_eq!(upstream.request_count(), 0);
}

// ---------------------------------------------------------------------------
// Scripts that do not compile, and reloads
// ---------------------------------------------------------------------------

/// Line 3 has a syntax error.
const BROKEN: &str = "-- broken on purpose\nfunction on_access(ctx)\n  if then\nend\n";

#[test]
fn check_refuses_a_script_that_does_not_compile_naming_file_and_line() {
    let dir = TempDir::new("lua");
    let hooks = script(&dir, "broken.lua", BROKEN);
    let out = check_config(&config(&hooked_route("127.0.0.1:9", "none", &hooks)));
    assert_eq!(out.code, Some(1), "{}", out.output());
    assert!(
        out.output().contains("broken.lua:3"),
        "file and line expected: {}",
        out.output()
    );
}

/// A script whose `on_response` stamps `x-script: <version>`.
fn versioned(version: &str) -> String {
    format!("function on_response(ctx, resp)\n  resp:set_header('x-script', '{version}')\nend\n")
}

#[test]
fn sighup_with_a_broken_script_is_refused_and_the_old_script_keeps_running() {
    let dir = TempDir::new("lua");
    let hooks = script(&dir, "live.lua", &versioned("v1"));
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &hooks);
    assert_eq!(
        send(gw.addr(), "GET", "/", &[]).header("x-script"),
        Some("v1")
    );

    script(&dir, "live.lua", BROKEN);
    gw.reload_sighup();
    assert_logged(&gw, "reload refused");
    assert!(gw.stderr().contains("live.lua:3"), "{}", gw.stderr());
    for _ in 0..6 {
        let response = send(gw.addr(), "GET", "/", &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-script"), Some("v1"));
    }
}

#[test]
fn reload_with_a_changed_script_under_load_fails_no_request() {
    let dir = TempDir::new("lua");
    let hooks = script(&dir, "live.lua", &versioned("v1"));
    let upstream = Upstream::echo("backend");
    let gw = route_gateway(&upstream, "none", &hooks);
    let addr = gw.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<(u16, Option<String>)>::new()));
    let load = {
        let stop = stop.clone();
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                let raw = request("GET", "/", &[], b"");
                let response = match client.try_send(&raw) {
                    Ok(()) => client.try_read_final_response(),
                    Err(e) => panic!("send failed: {e}"),
                };
                let response = match response {
                    Ok(r) => r,
                    // A kept-alive connection may be closed between requests; a
                    // new one must then serve.
                    Err(client::ReadError::Closed) => {
                        client = Client::connect(addr);
                        client.send(&raw);
                        client.read_final_response()
                    }
                    Err(e) => panic!("request failed: {e}"),
                };
                let version = response.header("x-script").map(str::to_string);
                seen.lock().unwrap().push((response.status, version));
            }
        })
    };
    // Let the load run on v1 first.
    assert!(wait_until(WAIT, || seen.lock().unwrap().len() >= 20));
    script(&dir, "live.lua", &versioned("v2"));
    let reload = gw.reload_admin();
    assert_eq!(reload.status, 200, "{}", reload.text());
    let after_reload = seen.lock().unwrap().len();
    assert!(wait_until(WAIT, || seen.lock().unwrap().len() >= after_reload + 20));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load thread");

    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failed.is_empty(), "failed during the reload: {failed:?}");
    assert!(
        seen.iter()
            .all(|(_, v)| matches!(v.as_deref(), Some("v1" | "v2"))),
        "every answer ran one of the scripts"
    );
    // The one request in flight when the reload answered may have run v1.
    assert!(
        seen[after_reload + 1..]
            .iter()
            .all(|(_, v)| v.as_deref() == Some("v2")),
        "after the reload answered 200, every request runs the new script"
    );
    for _ in 0..6 {
        assert_eq!(send(addr, "GET", "/", &[]).header("x-script"), Some("v2"));
    }
}

// ---------------------------------------------------------------------------
// Redaction of what hooks log
// ---------------------------------------------------------------------------

/// The upstream credential of the redaction test.
const UPSTREAM_CANARY: &str = "canary-upstream-secret-4be1d07a93c2";
/// A client key shape (the route has no auth: any key-shaped value will do).
const CLIENT_KEY_CANARY: &str = "cf_canaryClientKeyQ7Lp2Vw9Rt4Zk8Mn3Bc6HdXs1";

#[test]
fn hooks_cannot_log_client_keys_or_configured_secrets() {
    let dir = TempDir::new("lua");
    let hooks = script(
        &dir,
        "leaky.lua",
        &format!(
            r#"
function on_access(ctx)
    cf.log("auth:", ctx:header("authorization"))
    print("raw key", ctx:header("x-key"), "upstream {UPSTREAM_CANARY}", "admin {ADMIN_TOKEN}")
end
function on_log(ctx, entry)
    entry.auth = ctx:header("authorization")
    entry.secrets = {{ "{UPSTREAM_CANARY}", "{ADMIN_TOKEN}", ctx:header("x-key") }}
end
function on_request(ctx)
    if ctx:header("x-fail") then error("leak " .. ctx:header("x-key")) end
end
"#
        ),
    );
    let upstream = Upstream::echo("backend");
    let route = hooked_route(&upstream.target(), "none", &hooks).replace(
        "targets = [",
        &format!(
            "credential = {{ header = \"x-upstream-auth\", value = \"{{secret}}\", \
             secret = \"{UPSTREAM_CANARY}\" }}\ntargets = ["
        ),
    );
    let gw = Gateway::start(&server(1, &route), DRIVER);
    let bearer = format!("Bearer {CLIENT_KEY_CANARY}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("x-key", CLIENT_KEY_CANARY),
    ];
    let ok = send(gw.addr(), "GET", "/", &headers);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let failing = [headers[0], headers[1], ("x-fail", "1")];
    assert_hook_error(&send(gw.addr(), "GET", "/", &failing));

    let entry = access_log_line(&gw, &request_id_of(&ok));
    assert_eq!(entry["auth"], "Bearer [redacted]");
    assert_logged(&gw, "leak [redacted]");
    assert!(wait_until(WAIT, || gw.stderr().contains("raw key")));
    let access_log = std::fs::read_to_string(gw.dir().join("access.log")).unwrap();
    let stderr = gw.stderr();
    for (what, text) in [("stderr", &stderr), ("access log", &access_log)] {
        for secret in [CLIENT_KEY_CANARY, UPSTREAM_CANARY, ADMIN_TOKEN] {
            assert!(!text.contains(secret), "{what} holds {secret}:\n{text}");
        }
        assert!(text.contains("[redacted]"), "{what}:\n{text}");
    }
}

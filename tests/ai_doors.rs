//! More of the AI front doors, end to end: `GET /v1/models/{id}`, the legacy
//! `POST /v1/completions`, Anthropic's `POST /v1/messages/count_tokens`, the mock provider's
//! tool calls, and the client-facing model name in every answer's body.
//!
//! The SDK tests run the official Python SDKs (`tests/sdk/*.py`, as `tests/sdk_clients.rs`
//! does) against the real gateway in front of the mock or a fake provider; the others send
//! raw requests and check errors, bounds and meters.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_openai::DEFAULT_REPLY;
use common::keys::{admin, create_key};
use common::*;
use serde_json::{json, Value};

/// The provider's own API key, given to the gateway as `env:PROVIDER_KEY`.
const PROVIDER_KEY: &str = "sk-provider-doors-0123456789abcdef";

/// The OpenAI-kind models: the key may use [`OPENAI_MODEL`] (sent upstream as
/// [`OPENAI_UPSTREAM`]), not [`OPENAI_OTHER`].
const OPENAI_MODEL: &str = "gpt-4o-mini";
const OPENAI_UPSTREAM: &str = "gpt-4o-mini-2024-07-18";
const OPENAI_OTHER: &str = "gpt-4o";

/// The Anthropic-kind model and its upstream name.
const CLAUDE_MODEL: &str = "claude-sonnet";
const CLAUDE_UPSTREAM: &str = "claude-sonnet-4-5-20250929";

/// The mock's models; the second one's name holds `/` and `:`, as hosted models' do.
const MOCK_MODEL: &str = "mock-chat";
const MOCK_SLASHED: &str = "org/mock:v1";
const MOCK_OTHER: &str = "mock-other";

/// Longest a script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------

fn provider_toml(name: &str, kind: &str, base_url: &str) -> String {
    if base_url.is_empty() {
        return format!("\n[[provider]]\nname = \"{name}\"\nkind = \"{kind}\"\n");
    }
    format!(
        "\n[[provider]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\n\
         api_key = \"env:PROVIDER_KEY\"\n"
    )
}

fn model_toml(name: &str, provider: &str, upstream_model: &str) -> String {
    format!(
        "\n[[model]]\nname = \"{name}\"\nprovider = \"{provider}\"\nupstream_model = \"{upstream_model}\"\n\
         input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n"
    )
}

/// A gateway with the mock provider, and an OpenAI-kind and an Anthropic-kind fake when
/// given, with no gateway-side retries.
fn gateway(openai: Option<&FakeOpenAi>, anthropic: Option<&FakeAnthropic>) -> Gateway {
    hooked_gateway(openai, anthropic, "")
}

/// [`gateway`] with `[ai] hooks = hooks` (none when empty).
fn hooked_gateway(
    openai: Option<&FakeOpenAi>,
    anthropic: Option<&FakeAnthropic>,
    hooks: &str,
) -> Gateway {
    let mut tables = format!("[ai]\nmax_retries = 0\nhooks = \"{hooks}\"\n");
    tables += &provider_toml("mock", "mock", "");
    tables += &model_toml(MOCK_MODEL, "mock", MOCK_MODEL);
    tables += &model_toml(MOCK_SLASHED, "mock", MOCK_SLASHED);
    tables += &model_toml(MOCK_OTHER, "mock", MOCK_OTHER);
    if let Some(fake) = openai {
        tables += &provider_toml("openai", "openai", &fake.base_url());
        tables += &model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM);
        tables += &model_toml(OPENAI_OTHER, "openai", OPENAI_OTHER);
    }
    if let Some(fake) = anthropic {
        tables += &provider_toml("anthropic", "anthropic", &fake.base_url());
        tables += &model_toml(CLAUDE_MODEL, "anthropic", CLAUDE_UPSTREAM);
    }
    Gateway::builder(&config(&tables), Driver::Uring)
        .env("PROVIDER_KEY", PROVIDER_KEY)
        .start()
}

/// A key for `models` with `extra` limits, in force on every worker once issued.
fn key_for(gw: &Gateway, models: &[&str], extra: Value) -> String {
    let mut body = json!({ "name": "doors", "models": models });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    create_key(gw, &body).secret
}

/// `method path` with `key` as a Bearer token and a JSON `body` (none when `Null`).
fn call(gw: &Gateway, method: &str, path: &str, key: Option<&str>, body: &Value) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    roundtrip(gw.addr(), &request(method, path, &headers, &bytes))
}

/// Fails unless `response` is a gateway error with `status`, `type` and `code` whose
/// message holds `says`.
fn assert_openai_error(response: &Response, status: u16, code: &str, says: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let error = &response.json()["error"];
    assert_eq!(error["code"], code, "{}", response.text());
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

/// The `group_by=model` usage row of `model` once it counts `requests` requests.
fn usage_row(gw: &Gateway, model: &str, requests: u64) -> Value {
    let mut last = Value::Null;
    let found = wait_until(WAIT, || {
        last = admin(gw, "GET", "/admin/usage?group_by=model", None).json();
        last.as_array()
            .and_then(|rows| rows.iter().find(|r| r["group"] == model))
            .is_some_and(|r| r["requests"] == requests)
    });
    assert!(
        found,
        "no usage row for {model} with {requests} requests: {last}"
    );
    last.as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == model)
        .unwrap()
        .clone()
}

/// The JSON data of every event of an SSE body but `[DONE]`.
fn sse_json(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("JSON event data"))
        .collect()
}

// ---------------------------------------------------------------------------
// SDK scripts
// ---------------------------------------------------------------------------

/// Runs `python3 tests/sdk/<name>.py` against `gw` with `key` and `model` (and `env`);
/// fails the test unless it exits 0 having printed one JSON line, which it returns.
fn run_script(name: &str, gw: &Gateway, key: &str, model: &str, env: &[(&str, &str)]) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = TempDir::new("sdk-doors");
    let stdout_path = out_dir.join("stdout");
    let stderr_path = out_dir.join("stderr");
    let mut child = Command::new("python3")
        .arg(root.join("tests/sdk").join(format!("{name}.py")))
        .env("CF_BASE_URL", format!("http://{}", gw.addr()))
        .env("CF_API_KEY", key)
        .env("CF_MODEL", model)
        .envs(env.iter().copied())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); the SDK tests need the SDKs"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait python3") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}.py ran past {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "{name}.py failed ({status}):\n{stderr}\n{stdout}\n--- gateway ---\n{}",
        gw.stderr()
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{name}.py printed no JSON ({e}): {stdout}"))
}

#[test]
fn sdk_models_retrieve_completions_and_model_names_through_fake_openai() {
    let fake = FakeOpenAi::start();
    fake.set_usage(23, 11, 0);
    let gw = gateway(Some(&fake), None);
    let key = key_for(&gw, &[OPENAI_MODEL], json!({}));
    let env = [("CF_OTHER_MODEL", OPENAI_OTHER), ("CF_COMPLETIONS", "1")];
    let seen = run_script("openai_doors", &gw, &key, OPENAI_MODEL, &env);

    assert_eq!(seen["retrieve"]["id"], OPENAI_MODEL, "{seen}");
    assert_eq!(seen["retrieve"]["object"], "model");
    assert_eq!(seen["retrieve"]["owned_by"], "credentialflow");
    // A model the key may not use is as absent as one that does not exist.
    let other = &seen["retrieve_other"];
    assert_eq!(other["exception"], "NotFoundError", "{seen}");
    assert_eq!(other["status"], 404);
    assert_eq!(other["code"], "model_not_found");
    // The provider answers with its own name; the client sees the one it asked for.
    assert_eq!(seen["chat_model"], OPENAI_MODEL, "{seen}");
    assert_eq!(seen["chat_stream_models"], json!([OPENAI_MODEL]), "{seen}");

    let whole = &seen["completion"];
    assert_eq!(whole["object"], "text_completion", "{seen}");
    assert_eq!(whole["model"], OPENAI_MODEL);
    assert_eq!(whole["text"], DEFAULT_REPLY);
    assert_eq!(whole["finish_reason"], "stop");
    assert_eq!(whole["usage"], json!([23, 11]));
    let streamed = &seen["completion_stream"];
    assert_eq!(streamed["text"], DEFAULT_REPLY, "{seen}");
    assert_eq!(streamed["models"], json!([OPENAI_MODEL]));
    assert_eq!(streamed["finish_reason"], "stop");
    assert_eq!(streamed["usage"], json!([23, 11]));

    let requests = fake.requests();
    let sent: Vec<Value> = requests
        .iter()
        .filter(|r| r.path == "/v1/completions")
        .map(|r| {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {PROVIDER_KEY}").as_str())
            );
            assert!(!String::from_utf8_lossy(&r.body).contains(&key));
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect();
    assert_eq!(sent.len(), 2, "whole and streamed");
    assert!(
        sent.iter().all(|b| b["model"] == OPENAI_UPSTREAM),
        "{sent:?}"
    );
    assert_eq!(sent[0]["prompt"], "Say this is a test");
    assert_eq!(sent[1]["prompt"], json!(["Say this is a test"]));
    assert_eq!(sent[1]["stream_options"]["include_usage"], true);
    // Metered from the reported usage, not the estimate.
    let row = usage_row(&gw, OPENAI_MODEL, 4);
    assert_eq!(row["prompt_tokens"], 4 * 23, "{row}");
    assert_eq!(row["completion_tokens"], 4 * 11, "{row}");
}

#[test]
fn sdk_models_retrieve_and_completions_refused_through_mock() {
    let gw = gateway(None, None);
    let key = key_for(&gw, &[MOCK_MODEL], json!({}));
    let env = [("CF_OTHER_MODEL", MOCK_OTHER), ("CF_COMPLETIONS", "0")];
    let seen = run_script("openai_doors", &gw, &key, MOCK_MODEL, &env);
    assert_eq!(seen["retrieve"]["id"], MOCK_MODEL, "{seen}");
    assert_eq!(seen["retrieve_other"]["status"], 404, "{seen}");
    assert_eq!(seen["retrieve_other"]["code"], "model_not_found", "{seen}");
    assert_eq!(seen["chat_model"], MOCK_MODEL);
    let refused = &seen["completion"];
    assert_eq!(refused["exception"], "BadRequestError", "{seen}");
    assert_eq!(refused["status"], 400);
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(MOCK_MODEL) && message.contains("kind = \"openai\""),
        "names the model and why: {message}"
    );
}

#[test]
fn sdk_anthropic_count_tokens_forwarded_to_fake_anthropic() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    fake.set_usage(321, 0, 0);
    let gw = gateway(None, Some(&fake));
    let key = key_for(&gw, &[CLAUDE_MODEL], json!({}));
    let seen = run_script("anthropic_count_tokens", &gw, &key, CLAUDE_MODEL, &[]);
    assert_eq!(
        seen["input_tokens"], 321,
        "the provider's own count: {seen}"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(sent.header("authorization"), None);
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["model"], CLAUDE_UPSTREAM);
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["tools"][0]["name"], "get_weather");
}

#[test]
fn sdk_anthropic_count_tokens_estimated_for_the_mock() {
    let gw = gateway(None, None);
    let key = key_for(&gw, &[MOCK_MODEL], json!({}));
    let seen = run_script("anthropic_count_tokens", &gw, &key, MOCK_MODEL, &[]);
    // The script's body, as the estimate reads it.
    let body = json!({
        "model": MOCK_MODEL,
        "system": "You are terse.",
        "tools": [{ "name": "get_weather", "description": "The weather in a city.",
            "input_schema": { "type": "object", "properties": { "city": { "type": "string" } },
                              "required": ["city"] } }],
        "messages": [{ "role": "user", "content": "What is the weather in Paris?" }],
    });
    let expected = credentialflow::ai::tokens::estimate_anthropic_prompt_tokens(MOCK_MODEL, &body);
    assert!(expected > 0);
    assert_eq!(seen["input_tokens"], expected, "{seen}");
}

#[test]
fn sdk_mock_tool_round_trip_with_both_sdks() {
    let gw = gateway(None, None);
    let key = key_for(&gw, &[MOCK_MODEL], json!({}));
    let seen = run_script("mock_tools", &gw, &key, MOCK_MODEL, &[]);
    let arguments = json!({ "city": "example", "unit": "celsius" });

    let openai = &seen["openai"];
    assert_eq!(openai["whole"]["finish_reason"], "tool_calls", "{seen}");
    assert_eq!(openai["whole"]["model"], MOCK_MODEL);
    let call = &openai["whole"]["tool_calls"][0];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], arguments);
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(openai["stream"]["finish_reason"], "tool_calls");
    assert_eq!(openai["stream"]["tool_calls"][0]["name"], "get_weather");
    assert_eq!(openai["stream"]["tool_calls"][0]["arguments"], arguments);
    assert_eq!(openai["stream"]["tool_calls"][0]["id"], call["id"]);
    assert_eq!(openai["followup"]["finish_reason"], "stop");
    assert_eq!(openai["followup"]["text"], "Tool result: Sunny, 21 C");

    let anthropic = &seen["anthropic"];
    assert_eq!(anthropic["whole"]["stop_reason"], "tool_use", "{seen}");
    assert_eq!(anthropic["whole"]["model"], MOCK_MODEL);
    assert_eq!(anthropic["whole"]["tool_uses"][0]["name"], "get_weather");
    assert_eq!(anthropic["whole"]["tool_uses"][0]["input"], arguments);
    assert_eq!(anthropic["stream"]["stop_reason"], "tool_use");
    assert_eq!(anthropic["stream"]["tool_uses"][0]["input"], arguments);
    assert_eq!(anthropic["followup"]["stop_reason"], "end_turn");
    assert_eq!(anthropic["followup"]["text"], "Tool result: Sunny, 21 C");
}

#[test]
fn embeddings_and_chat_answers_name_the_client_facing_model() {
    let fake = FakeOpenAi::start();
    let gw = gateway(Some(&fake), None);
    let key = key_for(&gw, &[OPENAI_MODEL], json!({}));
    let embedded = call(
        &gw,
        "POST",
        "/v1/embeddings",
        Some(&key),
        &json!({ "model": OPENAI_MODEL, "input": "hi" }),
    );
    assert_eq!(embedded.status, 200, "{}", embedded.text());
    assert_eq!(embedded.json()["model"], OPENAI_MODEL);
    let streamed = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        Some(&key),
        &json!({ "model": OPENAI_MODEL, "stream": true,
                 "messages": [{ "role": "user", "content": "hi" }] }),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let chunks = sse_json(&streamed.body);
    assert!(chunks.len() > 2);
    assert!(
        chunks.iter().all(|c| c["model"] == OPENAI_MODEL),
        "{chunks:?}"
    );
    // The provider was asked with its own name all the same.
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.json()["model"] == OPENAI_UPSTREAM));
}

// ---------------------------------------------------------------------------
// GET /v1/models/{id}
// ---------------------------------------------------------------------------

#[test]
fn models_retrieve_finds_names_with_slashes_and_colons_and_hides_what_the_key_may_not_use() {
    let gw = gateway(None, None);
    let key = key_for(&gw, &[MOCK_SLASHED], json!({}));
    let found = call(
        &gw,
        "GET",
        "/v1/models/org/mock:v1",
        Some(&key),
        &Value::Null,
    );
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["id"], MOCK_SLASHED);
    assert_eq!(found.json()["object"], "model");
    // A client may encode the colon. (An encoded slash, `%2F`, is refused for every path
    // before routing, by the path rules: a name with `/` is asked for with a raw `/`.)
    let encoded = call(
        &gw,
        "GET",
        "/v1/models/org/mock%3Av1",
        Some(&key),
        &Value::Null,
    );
    assert_eq!(encoded.status, 200, "{}", encoded.text());
    assert_eq!(encoded.json()["id"], MOCK_SLASHED);
    // Configured, but not for this key: the same 404 as a name that does not exist.
    let hidden = call(&gw, "GET", "/v1/models/mock-chat", Some(&key), &Value::Null);
    assert_openai_error(&hidden, 404, "model_not_found", "mock-chat");
    let missing = call(&gw, "GET", "/v1/models/nope", Some(&key), &Value::Null);
    assert_openai_error(&missing, 404, "model_not_found", "nope");
    assert_eq!(missing.json()["error"]["type"], "not_found_error");
    // Authenticated like the list.
    let anonymous = call(&gw, "GET", "/v1/models/org/mock:v1", None, &Value::Null);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

#[test]
fn models_retrieve_bounds_the_id_and_takes_only_get() {
    let gw = gateway(None, None);
    let key = key_for(&gw, &[MOCK_MODEL], json!({}));
    let long = format!("/v1/models/{}", "m".repeat(257));
    let refused = call(&gw, "GET", &long, Some(&key), &Value::Null);
    assert_openai_error(&refused, 400, "invalid_request", "longer than 256 bytes");
    assert!(
        !refused.text().contains(&"m".repeat(257)),
        "the id is not echoed"
    );
    let at_bound = format!("/v1/models/{}", "m".repeat(256));
    let absent = call(&gw, "GET", &at_bound, Some(&key), &Value::Null);
    assert_eq!(absent.status, 404, "{}", absent.text());
    let empty = call(&gw, "GET", "/v1/models/", Some(&key), &Value::Null);
    assert_eq!(empty.status, 400, "{}", empty.text());
    let post = call(&gw, "POST", "/v1/models/mock-chat", Some(&key), &json!({}));
    assert_eq!(post.status, 400, "{}", post.text());
}

// ---------------------------------------------------------------------------
// POST /v1/completions
// ---------------------------------------------------------------------------

#[test]
fn completions_refuse_what_they_cannot_serve_with_a_reason() {
    let fake = FakeOpenAi::start();
    let gw = gateway(Some(&fake), None);
    let key = key_for(&gw, &[OPENAI_MODEL, MOCK_MODEL], json!({}));
    let post = |body: Value| call(&gw, "POST", "/v1/completions", Some(&key), &body);
    let cases = [
        (
            json!({ "model": OPENAI_MODEL, "prompt": [1, 2, 3] }),
            "token arrays are not supported",
        ),
        (
            json!({ "model": OPENAI_MODEL, "prompt": [[1, 2]] }),
            "token arrays are not supported",
        ),
        (json!({ "model": OPENAI_MODEL }), "'prompt'"),
        (
            json!({ "model": OPENAI_MODEL, "prompt": "a", "suffix": "b" }),
            "suffix",
        ),
        (
            json!({ "model": OPENAI_MODEL, "prompt": vec!["p"; 65] }),
            "at most 64",
        ),
        (
            json!({ "model": OPENAI_MODEL, "prompt": "a", "n": 17 }),
            "'n'",
        ),
        (
            json!({ "model": OPENAI_MODEL, "prompt": "a", "best_of": 0 }),
            "'best_of'",
        ),
        (
            json!({ "model": OPENAI_MODEL, "prompt": "a", "stream": "yes" }),
            "'stream'",
        ),
        (
            json!({ "model": MOCK_MODEL, "prompt": "a" }),
            "kind = \"openai\"",
        ),
    ];
    for (body, says) in cases {
        let response = post(body.clone());
        assert_openai_error(&response, 400, "invalid_request", says);
        assert!(!response.text().contains(PROVIDER_KEY));
    }
    // The bounds themselves are accepted.
    let at_bounds = post(json!({ "model": OPENAI_MODEL, "prompt": vec!["p"; 64], "n": 16 }));
    assert_eq!(at_bounds.status, 200, "{}", at_bounds.text());
    let unknown = post(json!({ "model": "nope", "prompt": "a" }));
    assert_openai_error(&unknown, 404, "model_not_found", "nope");
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path == "/v1/completions")
            .count(),
        1,
        "only the acceptable request went upstream"
    );
}

#[test]
fn completions_are_metered_from_reported_usage_and_limited_like_chat() {
    let fake = FakeOpenAi::start();
    fake.set_usage(40, 7, 0);
    let gw = gateway(Some(&fake), None);
    let key = key_for(&gw, &[OPENAI_MODEL], json!({ "tpm": 2000 }));
    let post = |body: Value| call(&gw, "POST", "/v1/completions", Some(&key), &body);
    let whole = post(json!({ "model": OPENAI_MODEL, "prompt": "Hello", "max_tokens": 50 }));
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.json()["model"], OPENAI_MODEL);
    assert_eq!(whole.header("x-credentialflow-model"), Some(OPENAI_MODEL));
    let streamed = post(
        json!({ "model": OPENAI_MODEL, "prompt": "Hello", "max_tokens": 50,
                                "stream": true }),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let chunks = sse_json(&streamed.body);
    assert!(!chunks.is_empty());
    assert!(
        chunks.iter().all(|c| c["model"] == OPENAI_MODEL),
        "{chunks:?}"
    );
    // The client did not ask for usage: the chunk the gateway asked for is not relayed.
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, DEFAULT_REPLY);
    let row = usage_row(&gw, OPENAI_MODEL, 2);
    assert_eq!(
        (
            row["prompt_tokens"].as_u64(),
            row["completion_tokens"].as_u64()
        ),
        (Some(80), Some(14))
    );
    // The reservation is max_tokens per completion: 64 prompts × 50 tokens is past the
    // key's 2,000 tokens per minute, refused before anything goes upstream.
    let before = fake.request_count();
    let many = post(json!({ "model": OPENAI_MODEL, "prompt": vec!["p"; 64], "max_tokens": 50 }));
    assert_eq!(many.status, 429, "{}", many.text());
    assert_eq!(many.json()["error"]["code"], "tokens_limit_exceeded");
    assert_eq!(fake.request_count(), before);
}

#[test]
fn completions_go_through_on_prompt_as_a_chat_of_user_messages() {
    let dir = TempDir::new("doors-lua");
    let script = dir.join("prompt.lua");
    std::fs::write(
        &script,
        "function on_prompt(ctx, chat)\n\
         \x20 if chat.messages[1].content == 'deny me' then ctx:deny(403, 'not this prompt') end\n\
         \x20 chat.messages[1].content = '[' .. #chat.messages .. ' ' .. chat.messages[1].role\n\
         \x20   .. '] ' .. chat.messages[1].content\n\
         \x20 chat.max_tokens = 5\n\
         \x20 return chat\n\
         end\n",
    )
    .unwrap();
    let fake = FakeOpenAi::start();
    let gw = hooked_gateway(Some(&fake), None, script.to_str().unwrap());
    let key = key_for(&gw, &[OPENAI_MODEL], json!({}));
    let post = |body: Value| call(&gw, "POST", "/v1/completions", Some(&key), &body);
    let changed = post(json!({ "model": OPENAI_MODEL, "prompt": "Hello", "max_tokens": 50 }));
    assert_eq!(changed.status, 200, "{}", changed.text());
    let sent = fake.last_request().json();
    assert_eq!(sent["prompt"], "[1 user] Hello", "{sent}");
    assert_eq!(sent["max_tokens"], 5, "{sent}");
    assert_eq!(sent["model"], OPENAI_UPSTREAM);
    let denied = post(json!({ "model": OPENAI_MODEL, "prompt": "deny me" }));
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.json()["error"]["message"], "not this prompt");
    assert_eq!(
        fake.request_count(),
        1,
        "the denied prompt never went upstream"
    );
}

// ---------------------------------------------------------------------------
// POST /v1/messages/count_tokens
// ---------------------------------------------------------------------------

#[test]
fn count_tokens_counts_requests_but_no_tokens_and_speaks_anthropic_errors() {
    let gw = gateway(None, None);
    let key = key_for(&gw, &[MOCK_MODEL], json!({ "rpm": 4, "budget_tokens": 1 }));
    let body = json!({ "model": MOCK_MODEL,
                       "messages": [{ "role": "user", "content": "count me" }] });
    let path = "/v1/messages/count_tokens";
    // A one-token budget would refuse any chat; counting consumes none.
    for _ in 0..2 {
        let counted = call(&gw, "POST", path, Some(&key), &body);
        assert_eq!(counted.status, 200, "{}", counted.text());
        assert!(counted.json()["input_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0));
    }
    let bad = call(
        &gw,
        "POST",
        path,
        Some(&key),
        &json!({ "model": MOCK_MODEL, "messages": [] }),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(
        bad.json()["type"],
        "error",
        "Anthropic's error shape: {}",
        bad.text()
    );
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let unknown = call(
        &gw,
        "POST",
        path,
        Some(&key),
        &json!({ "model": "nope",
        "messages": [{ "role": "user", "content": "x" }] }),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    // Request rates count every call: the fifth in the minute is refused.
    let limited = call(&gw, "POST", path, Some(&key), &body);
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let anonymous = call(&gw, "POST", path, None, &body);
    assert_eq!(anonymous.status, 401);
    // Nothing reached the ledger: counting is not usage.
    std::thread::sleep(Duration::from_millis(1500));
    let rows = admin(&gw, "GET", "/admin/usage?group_by=model", None).json();
    assert_eq!(rows, json!([]), "{rows}");
}

//! The AI gateway end to end (issue 5): the real binary with 2 workers in
//! front of fake OpenAI, Azure OpenAI, Anthropic and Gemini servers that
//! speak each provider's real wire format. Each test checks both sides: what
//! the provider received (its own dialect, its own key header, the upstream
//! model, never the virtual key) and what the client got (its front door's
//! dialect), plus usage, retries, fallbacks, the circuit breaker, prompts and
//! the mock provider.
//!
//! The first tests drive the fakes themselves with a raw client, so a failure
//! further down is the gateway's and not the fake's.

mod common;

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::client::contains;
use common::fake_anthropic::{self, ANTHROPIC_VERSION};
use common::fake_gemini;
use common::fake_openai::{self, reply_pieces};
use common::gateway::DIR;
use common::keys::*;
use common::*;
use serde_json::{json, Value};

/// The providers' own API keys, given to the gateway through `env:`.
const OPENAI_KEY: &str = "sk-fake-openai-0123456789abcdef";
const AZURE_KEY: &str = "azure-fake-key-0123456789abcdef";
const ANTHROPIC_KEY: &str = "sk-ant-fake-0123456789abcdef";
const GEMINI_KEY: &str = "AIzaFakeGeminiKey0123456789abcdef";

/// The ledger is written at least once a second; with a margin.
const LEDGER_FLUSH: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// Raw requests
// ---------------------------------------------------------------------------

/// `POST path` with a JSON `body` and `headers` on a new connection.
fn post_json(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
    let mut all = vec![
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    all.extend_from_slice(headers);
    let bytes = body.to_string().into_bytes();
    roundtrip(addr, &request("POST", path, &all, &bytes))
}

/// The `data:` payloads of a server-sent event stream, in order.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.trim().to_string())
        .filter(|data| !data.is_empty())
        .collect()
}

/// The `event:` names of a server-sent event stream, in order.
fn sse_event_names(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| line.strip_prefix("event:"))
        .map(|name| name.trim().to_string())
        .collect()
}

/// Every `data:` payload but `[DONE]`, as JSON.
fn sse_json(body: &[u8]) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("event {e:?}: {err}")))
        .collect()
}

/// The text an OpenAI chunk stream carried: its content deltas in order.
fn openai_streamed_text(body: &[u8]) -> String {
    sse_json(body)
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The text an Anthropic event stream carried: its `text_delta`s in order.
fn anthropic_streamed_text(body: &[u8]) -> String {
    sse_json(body)
        .iter()
        .filter(|e| e["type"] == "content_block_delta" && e["delta"]["type"] == "text_delta")
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect()
}

// ---------------------------------------------------------------------------
// The fakes on their own
// ---------------------------------------------------------------------------

fn anthropic_headers(key: &str) -> Vec<(&str, &str)> {
    vec![("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)]
}

fn messages_body(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{ "role": "user", "content": "Say hello." }],
        "stream": stream,
    })
}

#[test]
fn fake_anthropic_answers_a_message_with_usage() {
    let fake = FakeAnthropic::start();
    fake.set_usage(11, 7, 3);
    let response = post_json(
        fake.addr(),
        "/v1/messages",
        &anthropic_headers("k"),
        &messages_body(false),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let message = response.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["content"][0]["text"], fake_anthropic::DEFAULT_REPLY);
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 11);
    assert_eq!(message["usage"]["output_tokens"], 7);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 3);
    assert_eq!(fake.last_request().header("x-api-key"), Some("k"));
}

#[test]
fn fake_anthropic_streams_the_event_sequence() {
    let fake = FakeAnthropic::start();
    fake.set_reply("one two three");
    let response = post_json(
        fake.addr(),
        "/v1/messages",
        &anthropic_headers("k"),
        &messages_body(true),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let names = sse_event_names(&response.body);
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(["content_block_delta"; 3]);
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, want);
    assert_eq!(anthropic_streamed_text(&response.body), "one two three");
}

#[test]
fn fake_anthropic_streams_a_tool_use_as_input_json_deltas() {
    let fake = FakeAnthropic::start();
    fake.set_tool_call("get_weather", r#"{"city":"Paris","unit":"c"}"#);
    let response = post_json(
        fake.addr(),
        "/v1/messages",
        &anthropic_headers("k"),
        &messages_body(true),
    );
    let events = sse_json(&response.body);
    assert_eq!(events[1]["content_block"]["type"], "tool_use");
    assert_eq!(events[1]["content_block"]["name"], "get_weather");
    let joined: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    let input: Value = serde_json::from_str(&joined).unwrap();
    assert_eq!(input, json!({"city": "Paris", "unit": "c"}));
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[test]
fn fake_anthropic_refuses_a_request_without_key_in_anthropic_shape() {
    let fake = FakeAnthropic::start();
    let response = post_json(
        fake.addr(),
        "/v1/messages",
        &[("anthropic-version", ANTHROPIC_VERSION)],
        &messages_body(false),
    );
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["type"], "error");
    assert_eq!(response.json()["error"]["type"], "authentication_error");
}

#[test]
fn fake_gemini_answers_generate_content_with_usage_metadata() {
    let fake = FakeGemini::start();
    fake.set_usage(12, 4, 2);
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let response = post_json(
        fake.addr(),
        "/v1beta/models/gemini-test:generateContent",
        &[("x-goog-api-key", "g")],
        &body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        fake_gemini::DEFAULT_REPLY
    );
    assert_eq!(answer["usageMetadata"]["promptTokenCount"], 12);
    assert_eq!(answer["usageMetadata"]["candidatesTokenCount"], 4);
    assert_eq!(answer["usageMetadata"]["cachedContentTokenCount"], 2);
}

#[test]
fn fake_gemini_streams_sse_chunks_with_the_usage_on_the_last() {
    let fake = FakeGemini::start();
    fake.set_reply("a b c");
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let response = post_json(
        fake.addr(),
        "/v1beta/models/gemini-test:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", "g")],
        &body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        contains(&response.body, b"\r\n\r\n"),
        "CRLF event separators"
    );
    let chunks = sse_json(&response.body);
    assert_eq!(chunks.len(), 3);
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "a b c");
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[2]["usageMetadata"]["candidatesTokenCount"], 5);
}

#[test]
fn fake_gemini_refuses_a_request_without_key_in_google_shape() {
    let fake = FakeGemini::start();
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let response = post_json(
        fake.addr(),
        "/v1beta/models/gemini-test:generateContent",
        &[],
        &body,
    );
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(response.json()["error"]["code"], 403);
}

#[test]
fn fake_openai_answers_azure_deployment_paths_with_api_key() {
    let fake = FakeOpenAi::start();
    let body = json!({ "messages": [{ "role": "user", "content": "hi" }] });
    let path = "/openai/deployments/my-dep/chat/completions?api-version=2024-10-21";
    let response = post_json(fake.addr(), path, &[("api-key", "a")], &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["object"], "chat.completion");
    assert_eq!(response.json()["model"], "my-dep");
    let refused = post_json(fake.addr(), path, &[], &body);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "401");
}

// ---------------------------------------------------------------------------
// The gateway in front of every fake
// ---------------------------------------------------------------------------

/// Client-facing models, one per provider.
const OPENAI_MODEL: &str = "gpt-mini";
const OPENAI_UPSTREAM: &str = "gpt-4o-mini-2024-07-18";
const AZURE_MODEL: &str = "azure-gpt";
/// The Azure deployment the gateway must put in the path.
const AZURE_DEPLOYMENT: &str = "prod-gpt4o";
const AZURE_API_VERSION: &str = "2024-10-21";
const CLAUDE_MODEL: &str = "claude";
const CLAUDE_UPSTREAM: &str = "claude-3-5-haiku-20241022";
const GEMINI_MODEL: &str = "gemini";
const GEMINI_UPSTREAM: &str = "gemini-1.5-flash";
const MOCK_MODEL: &str = "mock-gpt";

/// One fake per provider kind (Azure is a second FakeOpenAi on Azure paths).
struct Fakes {
    openai: FakeOpenAi,
    azure: FakeOpenAi,
    anthropic: FakeAnthropic,
    gemini: FakeGemini,
}

impl Fakes {
    fn start() -> Fakes {
        let fakes = Fakes {
            openai: FakeOpenAi::start(),
            azure: FakeOpenAi::start(),
            anthropic: FakeAnthropic::start(),
            gemini: FakeGemini::start(),
        };
        fakes.anthropic.require_key(ANTHROPIC_KEY);
        fakes.gemini.require_key(GEMINI_KEY);
        fakes
    }

    /// Every request any fake received, as (headers, body) text.
    fn everything_received(&self) -> Vec<String> {
        let mut all = self.openai.requests();
        all.extend(self.azure.requests());
        all.extend(self.anthropic.requests());
        all.extend(self.gemini.requests());
        all.iter()
            .map(|r| {
                format!(
                    "{} {:?} {}",
                    r.target,
                    r.headers,
                    String::from_utf8_lossy(&r.body)
                )
            })
            .collect()
    }

    /// Fails the test if `secret` reached any provider.
    fn assert_never_received(&self, secret: &str) {
        for seen in self.everything_received() {
            assert!(
                !seen.contains(secret),
                "a provider received the virtual key: {seen}"
            );
        }
    }
}

/// The `[[provider]]` and `[[model]]` tables for `fakes`, the mock provider
/// (with `mock_options`) and its model.
fn provider_tables(fakes: &Fakes, mock_options: &str) -> String {
    format!(
        r#"
[[provider]]
name = "openai"
kind = "openai"
base_url = "{openai}"
api_key = "env:FAKE_OPENAI_KEY"

[[provider]]
name = "azure"
kind = "azure_openai"
base_url = "{azure}"
api_key = "env:FAKE_AZURE_KEY"
api_version = "{AZURE_API_VERSION}"

[[provider]]
name = "anthropic"
kind = "anthropic"
base_url = "{anthropic}"
api_key = "env:FAKE_ANTHROPIC_KEY"

[[provider]]
name = "gemini"
kind = "gemini"
base_url = "{gemini}"
api_key = "env:FAKE_GEMINI_KEY"

[[provider]]
name = "mock"
kind = "mock"
base_url = "http://mock.invalid"
{mock_options}

[[model]]
name = "{OPENAI_MODEL}"
provider = "openai"
upstream_model = "{OPENAI_UPSTREAM}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0

[[model]]
name = "{AZURE_MODEL}"
provider = "azure"
upstream_model = "{AZURE_DEPLOYMENT}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0

[[model]]
name = "{CLAUDE_MODEL}"
provider = "anthropic"
upstream_model = "{CLAUDE_UPSTREAM}"
input_price_per_mtok = 1.0
output_price_per_mtok = 5.0

[[model]]
name = "{GEMINI_MODEL}"
provider = "gemini"
upstream_model = "{GEMINI_UPSTREAM}"
input_price_per_mtok = 0.5
output_price_per_mtok = 1.5

[[model]]
name = "{MOCK_MODEL}"
provider = "mock"
upstream_model = "mock-gpt"
input_price_per_mtok = 0.10
output_price_per_mtok = 0.40
"#,
        openai = fakes.openai.base_url(),
        azure = fakes.azure.base_url(),
        anthropic = fakes.anthropic.base_url(),
        gemini = fakes.gemini.base_url(),
    )
}

/// The standard test `[server]` (2 workers) with an access log in the
/// gateway's dir, the fakes' tables, then `extra` tables.
fn ai_config(fakes: &Fakes, extra: &str) -> String {
    format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\n\
         data_dir = \"{DIR}/data\"\n\
         access_log = \"{DIR}/access.log\"\n\
         workers = 2\n\
         {}\n{extra}\n",
        provider_tables(fakes, "")
    )
}

/// Starts a gateway on `config` with every provider key in its environment.
fn start_gateway(config: &str, driver: Driver) -> Gateway {
    Gateway::builder(config, driver)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .env("FAKE_AZURE_KEY", AZURE_KEY)
        .env("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
        .env("FAKE_GEMINI_KEY", GEMINI_KEY)
        .start()
}

/// A gateway in front of `fakes` with `extra` tables, and a virtual key
/// (allowed every model) known to every worker.
fn gateway_with_key(fakes: &Fakes, extra: &str, driver: Driver) -> (Gateway, IssuedKey) {
    let gw = start_gateway(&ai_config(fakes, extra), driver);
    let key = create_key(&gw, &json!({ "name": "ai-gateway-test", "team": "t" }));
    (gw, key)
}

/// A short OpenAI chat request for `model`.
fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": "Say hello." }
        ],
        "max_tokens": 32,
        "stream": stream,
    })
}

/// `POST /v1/chat/completions` with `Authorization: Bearer <key>`.
fn post_chat(gw: &Gateway, key: &str, body: &Value) -> Response {
    let auth = format!("Bearer {key}");
    post_json(
        gw.addr(),
        "/v1/chat/completions",
        &[("Authorization", auth.as_str())],
        body,
    )
}

/// `POST /v1/messages` with `x-api-key: <key>` (the Anthropic SDK's way).
fn post_messages(gw: &Gateway, key: &str, body: &Value) -> Response {
    post_json(
        gw.addr(),
        "/v1/messages",
        &[("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)],
        body,
    )
}

/// A short Anthropic Messages request for `model`.
fn anthropic_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "system": "You are terse.",
        "messages": [{ "role": "user", "content": "Say hello." }],
        "stream": stream,
    })
}

/// Fails the test unless `response` is a 200 `chat.completion` saying `text`.
fn expect_chat_completion(response: &Response, text: &str, model: &str) -> Value {
    assert_eq!(response.status, 200, "{}", response.text());
    let completion = response.json();
    assert_eq!(completion["object"], "chat.completion", "{completion}");
    assert_eq!(
        completion["model"], model,
        "the client-facing model: {completion}"
    );
    assert_eq!(
        completion["choices"][0]["message"]["content"], text,
        "{completion}"
    );
    completion
}

/// Fails the test unless `response` is a 200 OpenAI chunk stream saying
/// `text` and ending with `data: [DONE]`.
fn expect_chat_stream(response: &Response, text: &str) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{:?}",
        response.headers
    );
    let data = sse_data(&response.body);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        response.text()
    );
    for chunk in sse_json(&response.body) {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
    }
    assert_eq!(openai_streamed_text(&response.body), text);
}

/// The usage row of `model` in `/admin/usage?group_by=model`, once it has
/// `requests` requests (polled up to [`WAIT`]).
fn usage_of_model(gw: &Gateway, model: &str, requests: u64) -> Value {
    sleep(LEDGER_FLUSH);
    let mut last = Value::Null;
    let found = wait_until(WAIT, || {
        let response = admin(gw, "GET", "/admin/usage?group_by=model", None);
        assert_eq!(response.status, 200, "{}", response.text());
        last = response.json();
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

fn request_id_of(response: &Response) -> String {
    response
        .header("x-request-id")
        .expect("every response carries x-request-id")
        .to_string()
}

// ---------------------------------------------------------------------------
// OpenAI front door to each provider
// ---------------------------------------------------------------------------

on_default_driver! {
    fn openai_front_door_to_anthropic_provider_speaks_messages_both_ways(driver) {
        let fakes = Fakes::start();
        fakes.anthropic.set_usage(20, 6, 4);
        fakes.anthropic.set_reply("Hi there from Claude");
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let whole = post_chat(&gw, &key.secret, &chat_body(CLAUDE_MODEL, false));
        let completion = expect_chat_completion(&whole, "Hi there from Claude", CLAUDE_MODEL);
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
        assert_eq!(completion["usage"]["prompt_tokens"], 24, "input + cache reads: {completion}");
        assert_eq!(completion["usage"]["completion_tokens"], 6);

        let sent = fakes.anthropic.last_request();
        assert_eq!(sent.path, "/v1/messages");
        assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
        assert_eq!(sent.header("anthropic-version"), Some(ANTHROPIC_VERSION));
        assert_eq!(sent.header("authorization"), None);
        let body = sent.json();
        assert_eq!(body["model"], CLAUDE_UPSTREAM);
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["system"], json!("You are terse."), "system lifted out: {body}");
        assert_eq!(body["messages"][0]["role"], "user", "{body}");

        let streamed = post_chat(&gw, &key.secret, &chat_body(CLAUDE_MODEL, true));
        expect_chat_stream(&streamed, "Hi there from Claude");
        assert_eq!(fakes.anthropic.last_request().json()["stream"], true);

        fakes.assert_never_received(&key.secret);
        let row = usage_of_model(&gw, CLAUDE_MODEL, 2);
        assert_eq!(row["prompt_tokens"], 48, "{row}");
        assert_eq!(row["completion_tokens"], 12, "{row}");
    }
}

on_default_driver! {
    fn openai_front_door_to_gemini_provider_speaks_generate_content_both_ways(driver) {
        let fakes = Fakes::start();
        fakes.gemini.set_usage(17, 9, 0);
        fakes.gemini.set_reply("Hi there from Gemini");
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let whole = post_chat(&gw, &key.secret, &chat_body(GEMINI_MODEL, false));
        let completion = expect_chat_completion(&whole, "Hi there from Gemini", GEMINI_MODEL);
        assert_eq!(completion["usage"]["prompt_tokens"], 17);
        assert_eq!(completion["usage"]["completion_tokens"], 9);

        let sent = fakes.gemini.last_request();
        assert_eq!(
            sent.path,
            format!("/v1beta/models/{GEMINI_UPSTREAM}:generateContent")
        );
        assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
        assert_eq!(sent.header("authorization"), None);
        let body = sent.json();
        assert_eq!(body["contents"][0]["role"], "user", "{body}");
        assert_eq!(body["contents"][0]["parts"][0]["text"], "Say hello.", "{body}");
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "You are terse.", "{body}");
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 32, "{body}");

        let streamed = post_chat(&gw, &key.secret, &chat_body(GEMINI_MODEL, true));
        expect_chat_stream(&streamed, "Hi there from Gemini");
        let sent = fakes.gemini.last_request();
        assert_eq!(
            sent.path,
            format!("/v1beta/models/{GEMINI_UPSTREAM}:streamGenerateContent")
        );
        assert_eq!(sent.query, "alt=sse");

        fakes.assert_never_received(&key.secret);
        let row = usage_of_model(&gw, GEMINI_MODEL, 2);
        assert_eq!(row["prompt_tokens"], 34, "{row}");
        assert_eq!(row["completion_tokens"], 18, "{row}");
    }
}

on_default_driver! {
    fn openai_front_door_to_azure_provider_uses_the_deployment_path_and_api_key(driver) {
        let fakes = Fakes::start();
        fakes.azure.set_usage(13, 8, 0);
        fakes.azure.set_reply("Hi there from Azure");
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let whole = post_chat(&gw, &key.secret, &chat_body(AZURE_MODEL, false));
        assert_eq!(whole.status, 200, "{}", whole.text());
        let completion = whole.json();
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["choices"][0]["message"]["content"], "Hi there from Azure");

        let sent = fakes.azure.last_request();
        assert_eq!(
            sent.path,
            format!("/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions")
        );
        assert_eq!(sent.query, format!("api-version={AZURE_API_VERSION}"));
        assert_eq!(sent.header("api-key"), Some(AZURE_KEY));
        assert_eq!(sent.header("authorization"), None);

        let streamed = post_chat(&gw, &key.secret, &chat_body(AZURE_MODEL, true));
        expect_chat_stream(&streamed, "Hi there from Azure");

        fakes.assert_never_received(&key.secret);
        assert_eq!(fakes.openai.request_count(), 0);
        let row = usage_of_model(&gw, AZURE_MODEL, 2);
        assert_eq!(row["prompt_tokens"], 26, "{row}");
        assert_eq!(row["completion_tokens"], 16, "{row}");
    }
}

// ---------------------------------------------------------------------------
// Anthropic front door
// ---------------------------------------------------------------------------

/// Fails the test unless `response` is a 200 Anthropic `message` saying `text`.
fn expect_message(response: &Response, text: &str) -> Value {
    assert_eq!(response.status, 200, "{}", response.text());
    let message = response.json();
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["role"], "assistant", "{message}");
    assert_eq!(message["content"][0]["type"], "text", "{message}");
    assert_eq!(message["content"][0]["text"], text, "{message}");
    message
}

/// Fails the test unless `response` is a 200 Anthropic event stream in the
/// documented order saying `text`.
fn expect_message_stream(response: &Response, text: &str) {
    assert_eq!(response.status, 200, "{}", response.text());
    let names = sse_event_names(&response.body);
    assert_eq!(
        names.first().map(String::as_str),
        Some("message_start"),
        "{names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("message_stop"),
        "{names:?}"
    );
    let position = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no {name} in {names:?}"))
    };
    assert!(
        position("content_block_start") < position("content_block_delta"),
        "{names:?}"
    );
    assert!(
        position("content_block_delta") < position("content_block_stop"),
        "{names:?}"
    );
    assert!(
        position("content_block_stop") < position("message_delta"),
        "{names:?}"
    );
    assert!(
        !response.text().contains("[DONE]"),
        "no OpenAI sentinel: {}",
        response.text()
    );
    assert_eq!(anthropic_streamed_text(&response.body), text);
}

on_default_driver! {
    fn anthropic_front_door_to_openai_provider_answers_in_anthropic_format(driver) {
        let fakes = Fakes::start();
        fakes.openai.set_usage(15, 4, 0);
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let whole = post_messages(&gw, &key.secret, &anthropic_body(OPENAI_MODEL, false));
        let message = expect_message(&whole, fake_openai::DEFAULT_REPLY);
        assert_eq!(message["stop_reason"], "end_turn", "{message}");
        assert_eq!(message["usage"]["input_tokens"], 15, "{message}");
        assert_eq!(message["usage"]["output_tokens"], 4, "{message}");

        let sent = fakes.openai.last_request();
        assert_eq!(sent.path, "/v1/chat/completions");
        assert_eq!(sent.header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()));
        assert_eq!(sent.header("x-api-key"), None);
        let body = sent.json();
        assert_eq!(body["model"], OPENAI_UPSTREAM);
        assert_eq!(body["messages"][0], json!({ "role": "system", "content": "You are terse." }));

        let streamed = post_messages(&gw, &key.secret, &anthropic_body(OPENAI_MODEL, true));
        expect_message_stream(&streamed, fake_openai::DEFAULT_REPLY);
        let events = sse_json(&streamed.body);
        let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(delta["usage"]["output_tokens"], 4, "{delta}");

        fakes.assert_never_received(&key.secret);
        let row = usage_of_model(&gw, OPENAI_MODEL, 2);
        assert_eq!(row["prompt_tokens"], 30, "{row}");
        assert_eq!(row["completion_tokens"], 8, "{row}");
    }
}

on_default_driver! {
    fn anthropic_front_door_to_anthropic_provider_passes_messages_through(driver) {
        let fakes = Fakes::start();
        fakes.anthropic.set_usage(30, 12, 0);
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let mut body = anthropic_body(CLAUDE_MODEL, false);
        body["metadata"] = json!({ "user_id": "u-42" });
        body["top_k"] = json!(5);
        let whole = post_messages(&gw, &key.secret, &body);
        let message = expect_message(&whole, fake_anthropic::DEFAULT_REPLY);
        assert_eq!(message["usage"]["input_tokens"], 30);

        let sent = fakes.anthropic.last_request();
        assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
        let mut expected = body.clone();
        expected["model"] = json!(CLAUDE_UPSTREAM);
        assert_eq!(sent.json(), expected, "only the model is replaced");

        let streamed = post_messages(&gw, &key.secret, &anthropic_body(CLAUDE_MODEL, true));
        expect_message_stream(&streamed, fake_anthropic::DEFAULT_REPLY);
        let names = sse_event_names(&streamed.body);
        let words = reply_pieces(fake_anthropic::DEFAULT_REPLY).len();
        let mut want = vec!["message_start", "content_block_start", "ping"];
        want.extend(std::iter::repeat_n("content_block_delta", words));
        want.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, want, "the provider's events, untouched");

        fakes.assert_never_received(&key.secret);
        let row = usage_of_model(&gw, CLAUDE_MODEL, 2);
        assert_eq!(row["prompt_tokens"], 60, "{row}");
        assert_eq!(row["completion_tokens"], 24, "{row}");
    }
}

#[test]
fn anthropic_front_door_to_mock_provider_answers_both_ways() {
    let fakes = Fakes::start();
    let (gw, key) = gateway_with_key(&fakes, "", Driver::Uring);

    let whole = post_messages(&gw, &key.secret, &anthropic_body(MOCK_MODEL, false));
    assert_eq!(whole.status, 200, "{}", whole.text());
    let message = whole.json();
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["content"][0]["type"], "text", "{message}");
    assert!(message["content"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let streamed = post_messages(&gw, &key.secret, &anthropic_body(MOCK_MODEL, true));
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let names = sse_event_names(&streamed.body);
    assert_eq!(
        names.first().map(String::as_str),
        Some("message_start"),
        "{names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("message_stop"),
        "{names:?}"
    );
    assert!(!anthropic_streamed_text(&streamed.body).is_empty());
    assert_eq!(fakes.everything_received().len(), 0);
}

#[test]
fn anthropic_front_door_errors_are_in_anthropic_shape() {
    let fakes = Fakes::start();
    let (gw, key) = gateway_with_key(&fakes, "", Driver::Uring);

    let unknown = post_messages(&gw, &key.secret, &anthropic_body("no-such-model", false));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let body = unknown.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    let no_key = post_json(
        gw.addr(),
        "/v1/messages",
        &[("anthropic-version", ANTHROPIC_VERSION)],
        &anthropic_body(CLAUDE_MODEL, false),
    );
    assert_eq!(no_key.status, 401, "{}", no_key.text());
    assert_eq!(no_key.json()["type"], "error");
    assert_eq!(no_key.json()["error"]["type"], "authentication_error");

    // A provider's 400 reaches an Anthropic client as an Anthropic error.
    fakes.openai.fail_next(400, "invalid_request_error", 1);
    let refused = post_messages(&gw, &key.secret, &anthropic_body(OPENAI_MODEL, false));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["type"], "error", "{}", refused.text());
    assert_eq!(refused.json()["error"]["type"], "invalid_request_error");
    assert_eq!(fakes.everything_received().len(), 1);
}

// ---------------------------------------------------------------------------
// Tool calls
// ---------------------------------------------------------------------------

/// An OpenAI chat request offering one function tool.
fn chat_with_tools(model: &str, stream: bool) -> Value {
    let mut body = chat_body(model, stream);
    body["messages"] = json!([{ "role": "user", "content": "Weather in Paris?" }]);
    body["tools"] = json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"]
            }
        }
    }]);
    body
}

/// The tool calls of a streamed OpenAI answer: (name, concatenated arguments) by index.
fn streamed_tool_calls(body: &[u8]) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    for chunk in sse_json(body) {
        let Some(deltas) = chunk["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        for delta in deltas {
            let index = delta["index"].as_u64().expect("tool_calls[].index") as usize;
            if calls.len() <= index {
                calls.resize(index + 1, (String::new(), String::new()));
            }
            if let Some(name) = delta["function"]["name"].as_str() {
                calls[index].0.push_str(name);
            }
            if let Some(args) = delta["function"]["arguments"].as_str() {
                calls[index].1.push_str(args);
            }
        }
    }
    calls
}

/// The finish_reason of a streamed OpenAI answer.
fn streamed_finish_reason(body: &[u8]) -> Value {
    sse_json(body)
        .iter()
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .find(|r| !r.is_null())
        .unwrap_or(Value::Null)
}

on_default_driver! {
    fn openai_tools_reach_anthropic_as_tools_and_tool_use_comes_back_as_tool_calls(driver) {
        let fakes = Fakes::start();
        fakes.anthropic.set_tool_call("get_weather", r#"{"city":"Paris"}"#);
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let whole = post_chat(&gw, &key.secret, &chat_with_tools(CLAUDE_MODEL, false));
        assert_eq!(whole.status, 200, "{}", whole.text());
        let sent = fakes.anthropic.last_request().json();
        assert_eq!(sent["tools"][0]["name"], "get_weather", "{sent}");
        assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["city"]), "{sent}");
        let choice = &whole.json()["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function", "{call}");
        assert_eq!(call["function"]["name"], "get_weather", "{call}");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("arguments are JSON text: {e}: {call}"));
        assert_eq!(args, json!({ "city": "Paris" }));

        let streamed = post_chat(&gw, &key.secret, &chat_with_tools(CLAUDE_MODEL, true));
        assert_eq!(streamed.status, 200, "{}", streamed.text());
        assert_eq!(sse_data(&streamed.body).last().map(String::as_str), Some("[DONE]"));
        let calls = streamed_tool_calls(&streamed.body);
        assert_eq!(calls.len(), 1, "{}", streamed.text());
        assert_eq!(calls[0].0, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].1).unwrap();
        assert_eq!(args, json!({ "city": "Paris" }));
        assert_eq!(streamed_finish_reason(&streamed.body), "tool_calls");
    }
}

#[test]
fn openai_tools_reach_gemini_as_function_declarations_and_function_call_comes_back() {
    let fakes = Fakes::start();
    fakes
        .gemini
        .set_function_call("get_weather", r#"{"city":"Paris"}"#);
    let (gw, key) = gateway_with_key(&fakes, "", Driver::Uring);

    let whole = post_chat(&gw, &key.secret, &chat_with_tools(GEMINI_MODEL, false));
    assert_eq!(whole.status, 200, "{}", whole.text());
    let sent = fakes.gemini.last_request().json();
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["name"], "get_weather",
        "{sent}"
    );
    let choice = &whole.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "city": "Paris" }));

    let streamed = post_chat(&gw, &key.secret, &chat_with_tools(GEMINI_MODEL, true));
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let calls = streamed_tool_calls(&streamed.body);
    assert_eq!(calls.len(), 1, "{}", streamed.text());
    assert_eq!(calls[0].0, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].1).unwrap();
    assert_eq!(args, json!({ "city": "Paris" }));
    assert_eq!(streamed_finish_reason(&streamed.body), "tool_calls");
}

/// An Anthropic Messages request offering one tool.
fn messages_with_tools(model: &str, stream: bool) -> Value {
    let mut body = anthropic_body(model, stream);
    body["messages"] = json!([{ "role": "user", "content": "Weather in Paris?" }]);
    body["tools"] = json!([{
        "name": "get_weather",
        "description": "Current weather of a city",
        "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } }
    }]);
    body
}

on_default_driver! {
    fn anthropic_tools_reach_openai_as_functions_and_tool_calls_come_back_as_tool_use(driver) {
        let fakes = Fakes::start();
        fakes.openai.set_tool_call("get_weather", r#"{"city":"Paris"}"#);
        let (gw, key) = gateway_with_key(&fakes, "", driver);

        let whole = post_messages(&gw, &key.secret, &messages_with_tools(OPENAI_MODEL, false));
        assert_eq!(whole.status, 200, "{}", whole.text());
        let sent = fakes.openai.last_request().json();
        assert_eq!(sent["tools"][0]["type"], "function", "{sent}");
        assert_eq!(sent["tools"][0]["function"]["name"], "get_weather", "{sent}");
        assert_eq!(
            sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string",
            "{sent}"
        );
        let message = whole.json();
        assert_eq!(message["stop_reason"], "tool_use", "{message}");
        let block = message["content"]
            .as_array()
            .and_then(|c| c.iter().find(|b| b["type"] == "tool_use"))
            .unwrap_or_else(|| panic!("no tool_use block: {message}"));
        assert_eq!(block["name"], "get_weather", "{message}");
        assert_eq!(block["input"], json!({ "city": "Paris" }), "{message}");
        assert!(block["id"].is_string(), "{message}");

        let streamed = post_messages(&gw, &key.secret, &messages_with_tools(OPENAI_MODEL, true));
        assert_eq!(streamed.status, 200, "{}", streamed.text());
        let events = sse_json(&streamed.body);
        let start = events
            .iter()
            .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
            .unwrap_or_else(|| panic!("no tool_use block start: {}", streamed.text()));
        assert_eq!(start["content_block"]["name"], "get_weather");
        let joined: String = events
            .iter()
            .filter(|e| e["delta"]["type"] == "input_json_delta")
            .filter_map(|e| e["delta"]["partial_json"].as_str())
            .collect();
        let input: Value = serde_json::from_str(&joined)
            .unwrap_or_else(|e| panic!("input_json_delta pieces {joined:?}: {e}"));
        assert_eq!(input, json!({ "city": "Paris" }));
        let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use", "{delta}");
        assert_eq!(
            sse_event_names(&streamed.body).last().map(String::as_str),
            Some("message_stop")
        );
    }
}

// ---------------------------------------------------------------------------
// Provider errors
// ---------------------------------------------------------------------------

#[test]
fn provider_400_reaches_an_openai_client_as_400_in_openai_format() {
    let fakes = Fakes::start();
    let (gw, key) = gateway_with_key(&fakes, "[ai]\nmax_retries = 1\n", Driver::Uring);

    fakes.anthropic.fail_next(400, "invalid_request_error", 1);
    let from_anthropic = post_chat(&gw, &key.secret, &chat_body(CLAUDE_MODEL, false));
    from_anthropic.assert_error(400, "invalid_request_error");
    assert_eq!(fakes.anthropic.request_count(), 1, "a 400 is not retried");

    fakes.gemini.fail_next(400, "INVALID_ARGUMENT", 1);
    let from_gemini = post_chat(&gw, &key.secret, &chat_body(GEMINI_MODEL, false));
    from_gemini.assert_error(400, "invalid_request_error");
    assert_eq!(fakes.gemini.request_count(), 1, "a 400 is not retried");

    fakes.openai.fail_next(400, "invalid_request_error", 1);
    let from_openai = post_chat(&gw, &key.secret, &chat_body(OPENAI_MODEL, true));
    from_openai.assert_error(400, "invalid_request_error");
}

/// A provider that refuses the gateway's own key (a misconfigured `api_key`) is the
/// gateway's problem, not the client's: 502 `upstream_error`, never 401 (the client's virtual
/// key was fine). Like other provider failures it is retried, then falls back.
#[test]
fn provider_refusing_the_provider_key_is_a_502_not_the_clients_401() {
    let fakes = Fakes::start();
    fakes.anthropic.require_key("sk-ant-the-right-one");
    let (gw, key) = gateway_with_key(&fakes, "[ai]\nmax_retries = 1\n", Driver::Uring);

    let response = post_chat(&gw, &key.secret, &chat_body(CLAUDE_MODEL, false));
    response.assert_error(502, "upstream_error");
    assert_eq!(fakes.anthropic.request_count(), 2, "retried once");
}

// ---------------------------------------------------------------------------
// Retries, fallbacks, circuit breaker
// ---------------------------------------------------------------------------

/// A second OpenAI-compatible provider and the model `backup` on it, and the
/// model `primary` on the first fake falling back to `backup`.
fn fallback_tables(backup: &FakeOpenAi, max_retries: u32) -> String {
    format!(
        r#"
[[provider]]
name = "backup-openai"
kind = "openai"
base_url = "{}"
api_key = "env:FAKE_OPENAI_KEY"

[[model]]
name = "primary"
provider = "openai"
upstream_model = "primary-upstream"
fallbacks = ["backup"]

[[model]]
name = "backup"
provider = "backup-openai"
upstream_model = "backup-upstream"

[ai]
max_retries = {max_retries}
"#,
        backup.base_url()
    )
}

on_both_drivers! {
    fn a_500_is_retried_once_and_the_retry_answers(driver) {
        let fakes = Fakes::start();
        let (gw, key) = gateway_with_key(&fakes, "[ai]\nmax_retries = 1\n", driver);
        fakes.openai.fail_next(500, "server_error", 1);

        let response = post_chat(&gw, &key.secret, &chat_body(OPENAI_MODEL, false));
        expect_chat_completion(&response, fake_openai::DEFAULT_REPLY, OPENAI_MODEL);
        assert_eq!(fakes.openai.request_count(), 2);
        let entry = access_log_line(&gw, &request_id_of(&response));
        let attempts = entry["attempts"].as_array().expect("attempts array");
        assert_eq!(attempts.len(), 2, "{entry}");
        assert_eq!(attempts[0]["outcome"], "500", "{entry}");
        assert_eq!(attempts[1]["outcome"], "200", "{entry}");
    }
}

fn fallback_serves_when_primary_always_fails(status: u16, error_type: &str) {
    let fakes = Fakes::start();
    let backup = FakeOpenAi::start();
    backup.set_reply("from the backup");
    let (gw, key) = gateway_with_key(&fakes, &fallback_tables(&backup, 1), Driver::Uring);
    fakes.openai.fail_next(status, error_type, 100);

    let response = post_chat(&gw, &key.secret, &chat_body("primary", false));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "from the backup"
    );
    assert_eq!(response.header("x-credentialflow-model"), Some("backup"));
    assert_eq!(
        fakes.openai.request_count(),
        2,
        "the primary is tried, then retried once"
    );
    assert_eq!(backup.request_count(), 1);
    assert_eq!(backup.last_request().json()["model"], "backup-upstream");

    let entry = access_log_line(&gw, &request_id_of(&response));
    let attempts: Vec<(String, String)> = entry["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts array: {entry}"))
        .iter()
        .map(|a| {
            (
                a["model"].as_str().unwrap_or_default().to_string(),
                a["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let failed = status.to_string();
    assert_eq!(
        attempts,
        vec![
            ("primary".to_string(), failed.clone()),
            ("primary".to_string(), failed),
            ("backup".to_string(), "200".to_string()),
        ],
        "{entry}"
    );
    assert_eq!(entry["model"], "backup", "{entry}");
}

#[test]
fn fallback_serves_when_the_primary_answers_500_every_time() {
    fallback_serves_when_primary_always_fails(500, "server_error");
}

#[test]
fn fallback_serves_when_the_primary_answers_429_every_time() {
    fallback_serves_when_primary_always_fails(429, "requests");
}

#[test]
fn circuit_breaker_skips_a_provider_after_five_consecutive_failures() {
    let fakes = Fakes::start();
    let backup = FakeOpenAi::start();
    let (gw, key) = gateway_with_key(&fakes, &fallback_tables(&backup, 0), Driver::Uring);
    fakes.openai.fail_next(500, "server_error", 100);

    for i in 1..=5 {
        let response = post_chat(&gw, &key.secret, &chat_body("primary", false));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(response.header("x-credentialflow-model"), Some("backup"));
    }
    assert_eq!(fakes.openai.request_count(), 5);
    for i in 6..=10 {
        let response = post_chat(&gw, &key.secret, &chat_body("primary", false));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(response.header("x-credentialflow-model"), Some("backup"));
    }
    assert_eq!(
        fakes.openai.request_count(),
        5,
        "the open breaker must keep requests away from the failing provider"
    );
    assert_eq!(backup.request_count(), 10);
    let last = post_chat(&gw, &key.secret, &chat_body("primary", false));
    let entry = access_log_line(&gw, &request_id_of(&last));
    assert_eq!(entry["attempts"][0]["outcome"], "circuit open", "{entry}");
}

// ---------------------------------------------------------------------------
// Client disconnect mid-stream
// ---------------------------------------------------------------------------

on_both_drivers! {
    fn client_gone_mid_stream_with_drain_off_closes_the_provider_connection(driver) {
        let fakes = Fakes::start();
        let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
        fakes.openai.set_reply(&words.join(" "));
        fakes.openai.set_stream_delay(Duration::from_millis(100));
        // By default the gateway drains the provider's stream for its usage
        // (tests/stream_drain.rs); turned off, it hangs up at once.
        let no_drain = "[ai]\ndrain_after_disconnect_ms = 0\n";
        let (gw, key) = gateway_with_key(&fakes, no_drain, driver);

        let auth = format!("Bearer {}", key.secret);
        let body = chat_body(OPENAI_MODEL, true).to_string();
        let mut client = Client::connect(gw.addr());
        client.send(&request(
            "POST",
            "/v1/chat/completions",
            &[("Authorization", auth.as_str()), ("Content-Type", "application/json")],
            body.as_bytes(),
        ));
        let head = client.read_head();
        assert_eq!(head.status, 200);
        let mut reader = client.body_reader(&head);
        client.read_body_until(&mut reader, b"word0");
        let closed_at = Instant::now();
        drop(client);

        // 40 words at 100 ms take 4 s: the fake must see the gateway go away long before.
        let cut = wait_until(Duration::from_secs(3), || fakes.openai.cut_short_count() >= 1);
        assert!(
            cut,
            "the provider kept streaming to the gateway after the client left \
             (cut short: {}, answered: {})",
            fakes.openai.cut_short_count(),
            fakes.openai.answered_count()
        );
        assert!(closed_at.elapsed() < Duration::from_secs(3));
        assert_eq!(fakes.openai.answered_count(), 0, "the stream was not finished");
    }
}

// ---------------------------------------------------------------------------
// Prompt endpoints
// ---------------------------------------------------------------------------

const GREET_PROMPTS: &str = r#"
[[prompt]]
name = "greet"
version = 1
model = "gpt-mini"
template = "Hello {{name}}"

[[prompt]]
name = "greet"
version = 2
model = "gpt-mini"
system = "Be warm."
template = "Hi {{name}}, welcome"
"#;

/// `POST path` with a JSON object of variables and the key as a Bearer token.
fn post_prompt(gw: &Gateway, key: &str, path: &str, variables: &Value) -> Response {
    let auth = format!("Bearer {key}");
    post_json(
        gw.addr(),
        path,
        &[("Authorization", auth.as_str())],
        variables,
    )
}

/// The last user message the fake OpenAI received.
fn last_user_message(fake: &FakeOpenAi) -> Value {
    let body = fake.last_request().json();
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .cloned()
        .unwrap_or_else(|| panic!("no user message in {body}"))
}

#[test]
fn prompt_endpoint_serves_the_highest_version_and_each_pinned_version() {
    let fakes = Fakes::start();
    let (gw, key) = gateway_with_key(&fakes, GREET_PROMPTS, Driver::Uring);

    let latest = post_prompt(
        &gw,
        &key.secret,
        "/prompts/greet",
        &json!({ "name": "Ada", "unused": 1 }),
    );
    expect_chat_completion(&latest, fake_openai::DEFAULT_REPLY, OPENAI_MODEL);
    assert_eq!(
        last_user_message(&fakes.openai)["content"],
        "Hi Ada, welcome"
    );
    let sent = fakes.openai.last_request().json();
    assert_eq!(sent["model"], OPENAI_UPSTREAM);
    assert_eq!(
        sent["messages"][0],
        json!({ "role": "system", "content": "Be warm." })
    );

    let v1 = post_prompt(
        &gw,
        &key.secret,
        "/prompts/greet/v1",
        &json!({ "name": "Ada" }),
    );
    assert_eq!(v1.status, 200, "{}", v1.text());
    assert_eq!(last_user_message(&fakes.openai)["content"], "Hello Ada");

    let missing = post_prompt(&gw, &key.secret, "/prompts/greet", &json!({ "nom": "Ada" }));
    missing.assert_error(400, "invalid_request_error");
    assert!(
        missing.text().contains("name"),
        "the error names the variable: {}",
        missing.text()
    );
    assert_eq!(fakes.openai.request_count(), 2);

    let unknown = post_prompt(
        &gw,
        &key.secret,
        "/prompts/greet/v9",
        &json!({ "name": "Ada" }),
    );
    unknown.assert_error(404, "not_found_error");

    let entry = access_log_line(&gw, &request_id_of(&latest));
    assert_eq!(entry["prompt"], "greet", "{entry}");
    assert_eq!(entry["model"], OPENAI_MODEL, "{entry}");
}

#[test]
fn prompt_endpoint_streams_with_stream_true() {
    let fakes = Fakes::start();
    let (gw, key) = gateway_with_key(&fakes, GREET_PROMPTS, Driver::Uring);
    let response = post_prompt(
        &gw,
        &key.secret,
        "/prompts/greet?stream=true",
        &json!({ "name": "Ada" }),
    );
    expect_chat_stream(&response, fake_openai::DEFAULT_REPLY);
    assert_eq!(fakes.openai.last_request().json()["stream"], true);
    let entry = access_log_line(&gw, &request_id_of(&response));
    assert_eq!(entry["prompt"], "greet", "{entry}");
}

// ---------------------------------------------------------------------------
// The mock provider
// ---------------------------------------------------------------------------

#[test]
fn mock_latency_delays_the_first_byte() {
    let fakes = Fakes::start();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\ndata_dir = \"{DIR}/data\"\naccess_log = \"\"\n\
         workers = 2\n{}",
        provider_tables(&fakes, "mock = { latency_ms = 300 }")
    );
    let gw = start_gateway(&config, Driver::Uring);
    let key = create_key(&gw, &json!({ "name": "mock-latency" }));

    for stream in [false, true] {
        let auth = format!("Bearer {}", key.secret);
        let body = chat_body(MOCK_MODEL, stream).to_string();
        let mut client = Client::connect(gw.addr());
        let sent_at = Instant::now();
        client.send(&request(
            "POST",
            "/v1/chat/completions",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        ));
        let head = client.read_head();
        let first_byte = sent_at.elapsed();
        assert_eq!(head.status, 200, "stream {stream}");
        assert!(
            first_byte >= Duration::from_millis(300),
            "stream {stream}: first byte after {first_byte:?}"
        );
    }
}

/// The built-in default's providers and models (see `credentialflow`'s
/// `BUILTIN_DEFAULT_TOML`) on test ports with an admin token, since the
/// default itself binds fixed ports and has no admin token.
const DEFAULT_LIKE: &str = r#"
[[provider]]
name = "mock"
kind = "mock"
base_url = "http://mock.invalid"

[[model]]
name = "mock-gpt"
provider = "mock"
upstream_model = "mock-gpt"
input_price_per_mtok = 0.10
output_price_per_mtok = 0.40

[[model]]
name = "mock-claude"
provider = "mock"
upstream_model = "mock-claude"
input_price_per_mtok = 0.25
output_price_per_mtok = 1.25
cached_input_price_per_mtok = 0.025

[ai]
auth = "api_key"
"#;

#[test]
fn default_like_config_serves_mock_gpt_with_a_key() {
    let gw = Gateway::start(&config(DEFAULT_LIKE), Driver::Uring);
    let key = create_key(&gw, &json!({ "name": "mock-user" }));

    let response = post_chat(&gw, &key.secret, &chat_body("mock-gpt", false));
    assert_eq!(response.status, 200, "{}", response.text());
    let completion = response.json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "mock-gpt");
    assert!(completion["choices"][0]["message"]["content"].is_string());
    assert!(completion["usage"]["completion_tokens"]
        .as_u64()
        .is_some_and(|n| n > 0));

    let streamed = post_chat(&gw, &key.secret, &chat_body("mock-gpt", true));
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert_eq!(
        sse_data(&streamed.body).last().map(String::as_str),
        Some("[DONE]")
    );

    let anonymous = post_json(
        gw.addr(),
        "/v1/chat/completions",
        &[],
        &chat_body("mock-gpt", false),
    );
    anonymous.assert_error(401, "authentication_error");
}

// ---------------------------------------------------------------------------
// GET /v1/models
// ---------------------------------------------------------------------------

fn model_ids(response: &Response) -> Vec<String> {
    assert_eq!(response.status, 200, "{}", response.text());
    let list = response.json();
    assert_eq!(list["object"], "list", "{list}");
    let mut ids: Vec<String> = list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {list}"))
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model", "{m}");
            m["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn models_list_shows_only_the_models_the_key_may_use() {
    let fakes = Fakes::start();
    let gw = start_gateway(&ai_config(&fakes, ""), Driver::Uring);
    let limited = create_key(
        &gw,
        &json!({ "name": "limited", "models": ["claude", "gem*"] }),
    );
    let open = create_key(&gw, &json!({ "name": "open" }));

    let ids = model_ids(&get_with_key(
        gw.addr(),
        "/v1/models",
        Some(&limited.secret),
    ));
    assert_eq!(
        ids,
        vec![CLAUDE_MODEL.to_string(), GEMINI_MODEL.to_string()]
    );

    let mut all = vec![
        OPENAI_MODEL,
        AZURE_MODEL,
        CLAUDE_MODEL,
        GEMINI_MODEL,
        MOCK_MODEL,
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    all.sort();
    assert_eq!(
        model_ids(&get_with_key(gw.addr(), "/v1/models", Some(&open.secret))),
        all
    );

    let refused = post_chat(&gw, &limited.secret, &chat_body(OPENAI_MODEL, false));
    refused.assert_error(403, "permission_error");
    assert_eq!(fakes.openai.request_count(), 0);
}

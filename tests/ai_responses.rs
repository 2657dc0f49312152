//! `POST /v1/responses`, the OpenAI Responses API, end to end: the official OpenAI Python SDK
//! (`tests/sdk/openai_responses*.py`, run as `tests/sdk_clients.rs` runs its scripts) against
//! the real gateway in front of the mock provider, a fake OpenAI and a fake Anthropic
//! provider: plain, streamed (raw events and the SDK's stream helper) and a function tool
//! round trip. Then, with a raw client, the requests the door refuses (and never sends
//! upstream), and that a Responses request is metered, budgeted and written to the ledger
//! exactly as a chat request with the same reported usage.
//!
//! With `[[provider]] responses = "native"` the request goes to the fake OpenAI's own
//! `/v1/responses` instead (the same SDK script, the fake speaking the real Responses format),
//! unless an `on_prompt` hook must see it as a chat; a fallback to a translated model
//! translates. The mock provider runs a tool round trip offline.
//!
//! python3 and the SDKs are required (see `tests/sdk_clients.rs`): without them the SDK tests
//! fail, they do not skip.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::fake_openai::StreamEnd;
use common::fake_tools::{tool_fake, TOOL_ANSWER, TOOL_CALL_ID, TOOL_NAME};
use common::keys::{admin, create_key};
use common::*;
use serde_json::{json, Value};

/// What CI installs so the SDK tests can pass.
const PIP_INSTALL: &str = "pip install openai==3.57.0 anthropic==2.14.0";

/// Longest a script may run (each SDK call inside has its own 20 s timeout).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// The provider's own API key, given to the gateway as `env:PROVIDER_KEY`.
const PROVIDER_KEY: &str = "sk-provider-secret-0123456789abcdef";

/// The instructions and input of `openai_responses.py` (the mock echoes the input).
const INSTRUCTIONS: &str = "You are terse.";
const INPUT: &str = "Say hello to the gateway.";

const MOCK_MODEL: &str = "mock-chat";
const OPENAI_MODEL: &str = "gpt-4o-mini";
const OPENAI_UPSTREAM: &str = "gpt-4o-mini-2024-07-18";
const CLAUDE_MODEL: &str = "claude-sonnet";
const CLAUDE_UPSTREAM: &str = "claude-sonnet-4-5-20250929";
const TOOL_MODEL: &str = "gpt-4o-tools";

// ---------------------------------------------------------------------------
// Gateways, providers, scripts
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

/// A `[[model]]` priced 1.0 / 2.0 USD per Mtok.
fn model_toml(name: &str, provider: &str, upstream_model: &str) -> String {
    format!(
        "\n[[model]]\nname = \"{name}\"\nprovider = \"{provider}\"\nupstream_model = \"{upstream_model}\"\n\
         input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n"
    )
}

/// A gateway with `tables`, no gateway-side retries, and the provider key in its
/// environment.
fn start_gateway(tables: &str) -> Gateway {
    let config = config(&format!("[ai]\nmax_retries = 0\n{tables}"));
    Gateway::builder(&config, Driver::Uring)
        .env("PROVIDER_KEY", PROVIDER_KEY)
        .start()
}

fn openai_gateway(fake: &FakeOpenAi) -> Gateway {
    start_gateway(&format!(
        "{}{}",
        provider_toml("openai", "openai", &fake.base_url()),
        model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM)
    ))
}

fn anthropic_gateway(fake: &FakeAnthropic) -> Gateway {
    start_gateway(&format!(
        "{}{}",
        provider_toml("anthropic", "anthropic", &fake.base_url()),
        model_toml(CLAUDE_MODEL, "anthropic", CLAUDE_UPSTREAM)
    ))
}

/// A key named `name` for `model` alone, with `extra` settings (budgets); in force when the admin API
/// answers.
fn key_for(gw: &Gateway, name: &str, model: &str, extra: Value) -> String {
    let mut body = json!({ "name": name, "models": [model] });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    create_key(gw, &body).secret
}

/// Runs `python3 tests/sdk/<name>.py` against `gw` with `key` and `model`; fails the test
/// unless it exits 0 within [`SCRIPT_TIMEOUT`] having printed one JSON line, which it
/// returns.
fn run_script(name: &str, gw: &Gateway, key: &str, model: &str) -> Value {
    run_script_with(name, gw, key, model, &[])
}

/// [`run_script`] with `env` added to the script's environment.
fn run_script_with(
    name: &str,
    gw: &Gateway,
    key: &str,
    model: &str,
    env: &[(&str, &str)],
) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = TempDir::new("sdk");
    let stdout_path = out_dir.join("stdout");
    let stderr_path = out_dir.join("stderr");
    let mut child = Command::new("python3")
        .arg(root.join("tests/sdk").join(format!("{name}.py")))
        .env("CF_BASE_URL", format!("http://{}", gw.addr()))
        .env("CF_API_KEY", key)
        .env("CF_MODEL", model)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {PIP_INSTALL}"));
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
        sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "{name}.py failed ({status}); the SDK tests need {PIP_INSTALL}\n--- stderr ---\n{stderr}\n\
         --- stdout ---\n{stdout}\n--- gateway stderr ---\n{}",
        gw.stderr()
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{name}.py printed no JSON line ({e}):\n{stdout}\n{stderr}"))
}

/// The JSON bodies of the requests to `path` among `requests`, in order.
fn bodies(requests: &[RecordedRequest], path: &str) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON request body"))
        .collect()
}

// ---------------------------------------------------------------------------
// What the SDK saw
// ---------------------------------------------------------------------------

/// The usage as `openai_responses.py` prints it.
fn usage(input: u64, output: u64, cached: u64) -> Value {
    json!({ "input_tokens": input, "output_tokens": output,
            "total_tokens": input + output, "cached_tokens": cached })
}

/// The event types of a streamed text answer, in order.
const TEXT_STREAM_START: [&str; 4] = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
];
const TEXT_STREAM_END: [&str; 4] = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
];

/// Fails unless `openai_responses.py` saw `text` and `usage` (when given) as `model` in the
/// whole response, the raw stream and the SDK's stream helper.
fn assert_responses(seen: &Value, model: &str, text: &str, usage: Option<&Value>) {
    let responses = [
        ("whole", &seen["whole"]),
        ("stream", &seen["stream"]["completed"]),
        ("helper", &seen["helper"]["final"]),
    ];
    for (mode, response) in responses {
        assert!(
            response["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("resp_")),
            "{mode}: {seen}"
        );
        assert_eq!(response["object"], "response", "{mode}: {seen}");
        assert_eq!(
            response["model"], model,
            "{mode}: the client-facing name: {seen}"
        );
        assert_eq!(response["status"], "completed", "{mode}: {seen}");
        assert_eq!(response["output_text"], text, "{mode}: {seen}");
        assert_eq!(
            response["output_types"],
            json!(["message"]),
            "{mode}: {seen}"
        );
        assert_eq!(response["instructions"], INSTRUCTIONS, "{mode}: {seen}");
        if let Some(usage) = usage {
            assert_eq!(&response["usage"], usage, "{mode}: {seen}");
        }
    }
    assert_eq!(seen["whole"]["metadata"], json!({"run": "sdk"}), "{seen}");
    assert!(
        seen["whole"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{seen}"
    );
    let stream = &seen["stream"];
    assert_eq!(stream["text"], text, "{seen}");
    assert_eq!(seen["helper"]["text"], text, "{seen}");
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(types.starts_with(&TEXT_STREAM_START), "{types:?}");
    assert!(types.ends_with(&TEXT_STREAM_END), "{types:?}");
    let deltas = &types[TEXT_STREAM_START.len()..types.len() - TEXT_STREAM_END.len()];
    assert!(
        !deltas.is_empty() && deltas.iter().all(|t| *t == "response.output_text.delta"),
        "{types:?}"
    );
    let numbers: Vec<u64> = stream["sequence_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(
        numbers,
        (0..types.len() as u64).collect::<Vec<_>>(),
        "{seen}"
    );
}

// ---------------------------------------------------------------------------
// The SDK against each provider kind
// ---------------------------------------------------------------------------

#[test]
fn sdk_responses_plain_and_streamed_on_the_mock_provider() {
    let gw = start_gateway(&format!(
        "{}{}",
        provider_toml("mock", "mock", ""),
        model_toml(MOCK_MODEL, "mock", MOCK_MODEL)
    ));
    let key = key_for(&gw, "sdk", MOCK_MODEL, json!({}));
    let seen = run_script("openai_responses", &gw, &key, MOCK_MODEL);
    // The mock echoes the last user message.
    assert_responses(&seen, MOCK_MODEL, INPUT, None);
    let whole = &seen["whole"]["usage"];
    assert!(whole["input_tokens"].as_u64().unwrap() > 0, "{seen}");
    for mode in [&seen["stream"]["completed"], &seen["helper"]["final"]] {
        assert_eq!(
            &mode["usage"], whole,
            "the same request, the same usage: {seen}"
        );
    }
}

#[test]
fn sdk_responses_plain_and_streamed_through_an_openai_provider() {
    let fake = FakeOpenAi::start();
    fake.set_usage(123, 45, 6);
    fake.set_reply("Hello from the fake, word by word.");
    let gw = openai_gateway(&fake);
    let key = key_for(&gw, "sdk", OPENAI_MODEL, json!({}));
    let seen = run_script("openai_responses", &gw, &key, OPENAI_MODEL);
    assert_responses(
        &seen,
        OPENAI_MODEL,
        "Hello from the fake, word by word.",
        Some(&usage(123, 45, 6)),
    );
    let bodies = bodies(&fake.requests(), "/v1/chat/completions");
    assert_eq!(bodies.len(), 3, "whole, raw stream, stream helper");
    for body in &bodies {
        assert_eq!(body["model"], OPENAI_UPSTREAM);
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": INSTRUCTIONS})
        );
        assert_eq!(
            body.get("metadata"),
            None,
            "metadata is not stored upstream"
        );
    }
    assert_eq!(bodies[1]["stream"], true);
    assert_eq!(bodies[1]["stream_options"], json!({"include_usage": true}));
}

#[test]
fn sdk_responses_plain_and_streamed_through_an_anthropic_provider() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    // Anthropic counts cache reads apart from input tokens; the Responses API with them.
    fake.set_usage(117, 45, 6);
    fake.set_reply("Hello from Claude, word by word.");
    let gw = anthropic_gateway(&fake);
    let key = key_for(&gw, "sdk", CLAUDE_MODEL, json!({}));
    let seen = run_script("openai_responses", &gw, &key, CLAUDE_MODEL);
    assert_responses(
        &seen,
        CLAUDE_MODEL,
        "Hello from Claude, word by word.",
        Some(&usage(123, 45, 6)),
    );
    let bodies = bodies(&fake.requests(), "/v1/messages");
    assert_eq!(bodies.len(), 3, "whole, raw stream, stream helper");
    for body in &bodies {
        assert_eq!(body["model"], CLAUDE_UPSTREAM);
        assert_eq!(body["system"], INSTRUCTIONS, "{body}");
    }
}

#[test]
fn sdk_responses_function_tool_round_trip_through_an_openai_provider() {
    let fake = tool_fake();
    let gw = start_gateway(&format!(
        "{}{}",
        provider_toml("tools", "openai", &format!("http://{}", fake.addr())),
        model_toml(TOOL_MODEL, "tools", TOOL_MODEL)
    ));
    let key = key_for(&gw, "sdk", TOOL_MODEL, json!({}));
    let seen = run_script("openai_responses_tools", &gw, &key, TOOL_MODEL);
    let call = json!([{"call_id": TOOL_CALL_ID, "name": TOOL_NAME,
                       "arguments": {"city": "Paris"}}]);
    assert_eq!(seen["whole"]["calls"], call, "{seen}");
    assert_eq!(seen["whole"]["tools"], json!([TOOL_NAME]), "{seen}");
    assert_eq!(seen["stream"]["calls"], call, "{seen}");
    assert_eq!(seen["stream"]["argument_deltas"], "{\"city\":\"Paris\"}");
    assert_eq!(seen["stream"]["arguments_done"], "{\"city\":\"Paris\"}");
    assert_eq!(
        seen["stream"]["types"],
        json!([
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]),
        "{seen}"
    );
    assert_eq!(seen["followup"]["text"], TOOL_ANSWER, "{seen}");
    assert_eq!(seen["followup"]["status"], "completed", "{seen}");

    let bodies = bodies(&fake.requests(), "/v1/chat/completions");
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(
        bodies[0]["tools"][0],
        json!({"type": "function", "function": {"name": TOOL_NAME,
               "description": "The weather in a city.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}})
    );
    let followup = bodies[2]["messages"].as_array().unwrap();
    assert_eq!(followup.len(), 3, "{followup:?}");
    assert_eq!(followup[1]["tool_calls"][0]["id"], TOOL_CALL_ID);
    assert_eq!(
        followup[2],
        json!({"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "Sunny, 21 C"})
    );
}

#[test]
fn sdk_responses_function_tool_round_trip_through_an_anthropic_provider() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    fake.set_usage(42, 17, 0);
    fake.set_tool_call(TOOL_NAME, r#"{"city":"Paris"}"#);
    let gw = anthropic_gateway(&fake);
    let key = key_for(&gw, "sdk", CLAUDE_MODEL, json!({}));
    let seen = run_script("openai_responses_tools", &gw, &key, CLAUDE_MODEL);
    for mode in ["whole", "stream"] {
        let calls = &seen[mode]["calls"];
        assert_eq!(calls.as_array().map(Vec::len), Some(1), "{mode}: {seen}");
        assert_eq!(calls[0]["name"], TOOL_NAME, "{mode}: {seen}");
        assert_eq!(
            calls[0]["arguments"],
            json!({"city": "Paris"}),
            "{mode}: {seen}"
        );
    }
    assert_eq!(seen["stream"]["arguments_done"], "{\"city\":\"Paris\"}");
    // The fake keeps calling the tool; what matters is that the result reached it.
    let bodies = bodies(&fake.requests(), "/v1/messages");
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[0]["tools"][0]["name"], TOOL_NAME);
    let result = &bodies[2]["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{result}");
    assert_eq!(
        result["tool_use_id"], seen["whole"]["calls"][0]["call_id"],
        "{result}"
    );
}

// ---------------------------------------------------------------------------
// Refusals, meters, budgets and the ledger
// ---------------------------------------------------------------------------

/// `POST /v1/responses` with `body` by `key`, on a new connection.
fn post_responses(gw: &Gateway, key: &str, body: &Value) -> Response {
    let auth = format!("Bearer {key}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
        ("Authorization", auth.as_str()),
    ];
    let bytes = body.to_string().into_bytes();
    roundtrip(
        gw.addr(),
        &request("POST", "/v1/responses", &headers, &bytes),
    )
}

on_both_drivers! {
    fn refused_requests_get_a_clear_400_and_never_reach_the_provider(driver) {
        let fake = FakeOpenAi::start();
        let config = config(&format!(
            "{}{}",
            provider_toml("openai", "openai", &fake.base_url()),
            model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM)
        ));
        let gw = Gateway::builder(&config, driver)
            .env("PROVIDER_KEY", PROVIDER_KEY)
            .start();
        let key = key_for(&gw, "sdk", OPENAI_MODEL, json!({}));
        let cases = [
            (
                json!({"model": OPENAI_MODEL, "input": "Hi", "previous_response_id": "resp_1"}),
                "does not store responses",
            ),
            (
                json!({"model": OPENAI_MODEL, "input": "Hi",
                       "tools": [{"type": "web_search"}]}),
                "'web_search'",
            ),
            (
                json!({"model": OPENAI_MODEL, "input": "Hi",
                       "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
                "'file_search'",
            ),
            (json!({"model": OPENAI_MODEL, "input": 42}), "'input'"),
            (json!({"model": OPENAI_MODEL, "input": []}), "'input'"),
            (
                json!({"model": OPENAI_MODEL, "input": [{"type": "reasoning", "id": "rs_1"}]}),
                "'reasoning'",
            ),
            (
                json!({"model": OPENAI_MODEL,
                       "input": vec![json!({"role": "user", "content": "x"}); 4097]}),
                "at most 4096",
            ),
        ];
        for (body, says) in cases {
            let response = post_responses(&gw, &key, &body);
            response.assert_error(400, "invalid_request_error");
            let message = response.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.contains(says), "{body}: {message}");
            assert!(response.header("x-request-id").is_some());
        }
        // Nesting past the JSON parser's depth limit (128, as on every front door).
        let deep = format!(
            "{{\"model\":\"{OPENAI_MODEL}\",\"input\":\"Hi\",\"metadata\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let auth = format!("Bearer {key}");
        let headers = [
            ("Content-Type", "application/json"),
            ("Connection", "close"),
            ("Authorization", auth.as_str()),
        ];
        let response = roundtrip(gw.addr(), &request("POST", "/v1/responses", &headers, deep.as_bytes()));
        response.assert_error(400, "invalid_request_error");
        assert!(response.text().contains("not valid JSON"), "{}", response.text());
        assert_eq!(fake.request_count(), 0, "nothing refused reaches the provider");
    }
}

/// One row of `/admin/usage?group_by=model`: requests, prompt and completion tokens.
fn ledger_row(gw: &Gateway, model: &str) -> Option<(u64, u64, u64)> {
    let response = admin(gw, "GET", "/admin/usage?group_by=model", None);
    assert_eq!(response.status, 200, "{}", response.text());
    let rows = response.json();
    rows.as_array()?
        .iter()
        .find(|row| row["group"] == model)
        .map(|row| {
            let n = |f: &str| row[f].as_u64().unwrap_or(0);
            (n("requests"), n("prompt_tokens"), n("completion_tokens"))
        })
}

#[test]
fn responses_usage_reaches_budgets_and_the_ledger_as_a_chat_does() {
    let fake = FakeOpenAi::start();
    fake.set_usage(500, 500, 0);
    let config = config(&format!(
        "{}{}",
        provider_toml("openai", "openai", &fake.base_url()),
        model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM)
    ));
    let gw = Gateway::builder(&config, Driver::Uring)
        .env("PROVIDER_KEY", PROVIDER_KEY)
        .start();
    // Each key's budget is one answer's reported usage: the second request is refused
    // only if the first was charged what the provider reported.
    let whole_key = key_for(&gw, "whole", OPENAI_MODEL, json!({"budget_tokens": 1000}));
    let stream_key = key_for(&gw, "stream", OPENAI_MODEL, json!({"budget_tokens": 1000}));
    let ask = json!({"model": OPENAI_MODEL, "input": "Hi", "max_output_tokens": 10});

    let whole = post_responses(&gw, &whole_key, &ask);
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.json()["usage"]["total_tokens"], 1000);
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let stream = post_responses(&gw, &stream_key, &streamed);
    assert_eq!(stream.status, 200, "{}", stream.text());
    assert!(
        stream.text().contains("event: response.completed"),
        "{}",
        stream.text()
    );
    sleep(Duration::from_millis(100));

    for key in [&whole_key, &stream_key] {
        let refused = post_responses(&gw, key, &ask);
        refused.assert_error(429, "insufficient_quota");
        // The same budget refuses a chat: one meter for both doors.
        let chat = json!({"model": OPENAI_MODEL,
                          "messages": [{"role": "user", "content": "Hi"}]});
        let auth = format!("Bearer {key}");
        let headers = [
            ("Content-Type", "application/json"),
            ("Connection", "close"),
            ("Authorization", auth.as_str()),
        ];
        let bytes = chat.to_string().into_bytes();
        roundtrip(
            gw.addr(),
            &request("POST", "/v1/chat/completions", &headers, &bytes),
        )
        .assert_error(429, "insufficient_quota");
    }
    // Two answered requests at the reported usage; refusals are not in the ledger.
    let deadline = Instant::now() + WAIT;
    loop {
        let row = ledger_row(&gw, OPENAI_MODEL);
        if row == Some((2, 1000, 1000)) {
            break;
        }
        assert!(Instant::now() < deadline, "ledger: {row:?}");
        sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// Native passthrough (`[[provider]] responses = "native"`)
// ---------------------------------------------------------------------------

/// A fake OpenAI behind `name`, its Responses API served natively.
fn native_provider_toml(name: &str, fake: &FakeOpenAi) -> String {
    format!(
        "{}responses = \"native\"\n",
        provider_toml(name, "openai", &fake.base_url())
    )
}

/// The model name a fake OpenAI's Responses answers carry for `upstream`.
fn fake_served_model(upstream: &str) -> String {
    format!("{upstream}-2025-04-14")
}

#[test]
fn sdk_responses_plain_and_streamed_passed_through_to_a_native_openai_provider() {
    let fake = FakeOpenAi::start();
    fake.set_usage(123, 45, 6);
    fake.set_reply("Hello from the fake, word by word.");
    let gw = start_gateway(&format!(
        "{}{}",
        native_provider_toml("openai", &fake),
        model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM)
    ));
    let key = key_for(&gw, "sdk", OPENAI_MODEL, json!({}));
    let seen = run_script("openai_responses", &gw, &key, OPENAI_MODEL);
    // The provider's own Response and events, with the client-facing model name.
    assert_responses(
        &seen,
        OPENAI_MODEL,
        "Hello from the fake, word by word.",
        Some(&usage(123, 45, 6)),
    );
    let requests = fake.requests();
    assert!(bodies(&requests, "/v1/chat/completions").is_empty());
    let sent = bodies(&requests, "/v1/responses");
    assert_eq!(sent.len(), 3, "whole, raw stream, stream helper");
    for body in &sent {
        assert_eq!(body["model"], OPENAI_UPSTREAM, "{body}");
        assert_eq!(body["instructions"], INSTRUCTIONS, "{body}");
        assert_eq!(body.get("messages"), None, "not translated: {body}");
        assert_eq!(body.get("stream_options"), None, "nothing added: {body}");
    }
    // The client's body as it was, but for the model.
    assert_eq!(sent[0]["metadata"], json!({"run": "sdk"}));
    assert_eq!(sent[1]["stream"], true);
    assert_eq!(
        sent[1]["input"],
        json!([{"role": "user", "content": [{"type": "input_text", "text": INPUT}]}])
    );
    for request in requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str()),
            "the provider's credential, never the client's"
        );
    }
}

#[test]
fn native_responses_are_metered_exactly_into_budgets_and_the_ledger() {
    let fake = FakeOpenAi::start();
    fake.set_usage(500, 300, 200);
    let gw = start_gateway(&format!(
        "{}{}",
        native_provider_toml("openai", &fake),
        model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM)
    ));
    // Each key's budget is one answer's reported usage: the second request is refused
    // only if the first was charged what the provider reported.
    let whole_key = key_for(&gw, "whole", OPENAI_MODEL, json!({"budget_tokens": 800}));
    let stream_key = key_for(&gw, "stream", OPENAI_MODEL, json!({"budget_tokens": 800}));
    // A built-in tool goes through to a native provider as it is.
    let ask = json!({"model": OPENAI_MODEL, "input": "Hi", "max_output_tokens": 10,
                     "tools": [{"type": "web_search"}]});
    let whole = post_responses(&gw, &whole_key, &ask);
    assert_eq!(whole.status, 200, "{}", whole.text());
    let answer = whole.json();
    assert_eq!(answer["model"], OPENAI_MODEL, "{answer}");
    assert_eq!(answer["usage"]["input_tokens"], 500, "{answer}");
    assert_eq!(
        answer["usage"]["input_tokens_details"]["cached_tokens"], 200,
        "{answer}"
    );
    assert_eq!(whole.header("x-credentialflow-model"), Some(OPENAI_MODEL));
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let stream = post_responses(&gw, &stream_key, &streamed);
    assert_eq!(stream.status, 200, "{}", stream.text());
    let text = stream.text();
    assert!(text.contains("event: response.completed"), "{text}");
    assert!(
        text.contains(&format!(r#""model":"{OPENAI_MODEL}""#)),
        "{text}"
    );
    assert!(
        !text.contains(&fake_served_model(OPENAI_UPSTREAM)),
        "the provider's name for the model never reaches the client: {text}"
    );
    for body in bodies(&fake.requests(), "/v1/responses") {
        assert_eq!(body["tools"], json!([{"type": "web_search"}]), "{body}");
    }
    sleep(Duration::from_millis(100));
    for key in [&whole_key, &stream_key] {
        post_responses(&gw, key, &ask).assert_error(429, "insufficient_quota");
    }
    // Two answered requests at the reported usage; refusals are not in the ledger.
    let deadline = Instant::now() + WAIT;
    loop {
        let row = ledger_row(&gw, OPENAI_MODEL);
        if row == Some((2, 1000, 600)) {
            break;
        }
        assert!(Instant::now() < deadline, "ledger: {row:?}");
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_fallback_from_a_native_model_to_a_translated_one_translates() {
    const FALLBACK: &str = "gpt-fallback";
    let native = FakeOpenAi::start();
    let translated = FakeOpenAi::start();
    translated.set_reply("From the fallback.");
    let gw = start_gateway(&format!(
        "{}{}fallbacks = [\"{FALLBACK}\"]\n{}{}",
        native_provider_toml("native", &native),
        model_toml(OPENAI_MODEL, "native", OPENAI_UPSTREAM),
        // A fake on 127.0.0.1 is not OpenAI's own host: translated by default.
        provider_toml("compatible", "openai", &translated.base_url()),
        model_toml(FALLBACK, "compatible", FALLBACK)
    ));
    let key = key_for(&gw, "fallback", OPENAI_MODEL, json!({}));
    let key_both = create_key(
        &gw,
        &json!({"name": "both", "models": [OPENAI_MODEL, FALLBACK]}),
    )
    .secret;
    native.fail_next(503, "server_error", 1);
    let response = post_responses(
        &gw,
        &key_both,
        &json!({"model": OPENAI_MODEL, "input": "Hi"}),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(answer["object"], "response", "{answer}");
    assert_eq!(answer["model"], FALLBACK, "{answer}");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "From the fallback."
    );
    assert_eq!(bodies(&native.requests(), "/v1/responses").len(), 1);
    let chats = bodies(&translated.requests(), "/v1/chat/completions");
    assert_eq!(chats.len(), 1, "the fallback gets a chat");
    assert_eq!(
        chats[0]["messages"],
        json!([{"role": "user", "content": "Hi"}])
    );

    // A built-in tool has no translation: the fallback refuses it by name.
    native.fail_next(503, "server_error", 1);
    let refused = post_responses(
        &gw,
        &key,
        &json!({"model": OPENAI_MODEL, "input": "Hi", "tools": [{"type": "web_search"}]}),
    );
    refused.assert_error(400, "invalid_request_error");
    assert!(
        refused.text().contains("'web_search'"),
        "{}",
        refused.text()
    );
    assert_eq!(bodies(&native.requests(), "/v1/responses").len(), 2);
    assert_eq!(
        translated.request_count(),
        1,
        "nothing more reached the fallback"
    );

    // Items only the Responses API takes (a reasoning model's `reasoning` item, carried
    // over from its last answer) reach a native model as they are.
    let input = json!([
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"role": "user", "content": "And now?"}]);
    let answered = post_responses(&gw, &key, &json!({"model": OPENAI_MODEL, "input": input}));
    assert_eq!(answered.status, 200, "{}", answered.text());
    let sent = bodies(&native.requests(), "/v1/responses");
    assert_eq!(sent.last().unwrap()["input"], input);
}

#[test]
fn an_on_prompt_hook_sees_a_chat_and_its_edits_are_sent_even_to_a_native_provider() {
    let dir = TempDir::new("responses-lua");
    let script = dir.join("prompt.lua");
    std::fs::write(
        &script,
        "function on_prompt(ctx, chat)\n\
         \x20 local last = chat.messages[#chat.messages]\n\
         \x20 last.content = 'edited: ' .. last.content\n\
         \x20 return chat\n\
         end\n",
    )
    .unwrap();
    let fake = FakeOpenAi::start();
    let gw = start_gateway(&format!(
        "hooks = \"{}\"\n{}{}",
        script.display(),
        native_provider_toml("openai", &fake),
        model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM)
    ));
    let key = key_for(&gw, "hooked", OPENAI_MODEL, json!({}));
    for stream in [false, true] {
        let response = post_responses(
            &gw,
            &key,
            &json!({"model": OPENAI_MODEL, "input": "Hi", "stream": stream}),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.text().contains("resp_"), "{}", response.text());
    }
    let requests = fake.requests();
    assert!(bodies(&requests, "/v1/responses").is_empty());
    let chats = bodies(&requests, "/v1/chat/completions");
    assert_eq!(chats.len(), 2);
    for chat in chats {
        assert_eq!(
            chat["messages"],
            json!([{"role": "user", "content": "edited: Hi"}])
        );
    }
    // Translated, a built-in tool is refused; nothing is sent.
    let refused = post_responses(
        &gw,
        &key,
        &json!({"model": OPENAI_MODEL, "input": "Hi", "tools": [{"type": "web_search"}]}),
    );
    refused.assert_error(400, "invalid_request_error");
    assert_eq!(fake.request_count(), 2);
}

#[test]
fn sdk_responses_tool_round_trip_on_the_mock_provider() {
    let gw = start_gateway(&format!(
        "{}{}",
        provider_toml("mock", "mock", ""),
        model_toml(MOCK_MODEL, "mock", MOCK_MODEL)
    ));
    let key = key_for(&gw, "sdk", MOCK_MODEL, json!({}));
    // The mock calls a tool that the last user message names.
    let seen = run_script_with(
        "openai_responses_tools",
        &gw,
        &key,
        MOCK_MODEL,
        &[("CF_INPUT", "Use get_weather for Paris.")],
    );
    for mode in ["whole", "stream"] {
        let calls = seen[mode]["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 1, "{mode}: {seen}");
        assert_eq!(calls[0]["name"], TOOL_NAME, "{mode}: {seen}");
        assert!(
            calls[0]["arguments"]["city"].is_string(),
            "the required property is filled: {seen}"
        );
        assert!(calls[0]["call_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
    }
    assert_eq!(seen["whole"]["tools"], json!([TOOL_NAME]), "{seen}");
    let types: Vec<&str> = seen["stream"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        types.starts_with(&[
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]),
        "{types:?}"
    );
    assert!(
        types.ends_with(&[
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]),
        "{types:?}"
    );
    assert_eq!(
        seen["stream"]["argument_deltas"], seen["stream"]["arguments_done"],
        "{seen}"
    );
    // The tool's result goes back; the mock answers with it.
    assert_eq!(
        seen["followup"]["text"], "Tool result: Sunny, 21 C",
        "{seen}"
    );
    assert_eq!(seen["followup"]["status"], "completed", "{seen}");
}

#[test]
fn check_refuses_native_responses_on_a_provider_kind_without_them() {
    let dir = TempDir::new("responses-check");
    let path = dir.join("credentialflow.toml");
    let write = |kind: &str, responses: &str| {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
             data_dir = \"data\"\naccess_log = \"\"\n\
             [[provider]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"http://127.0.0.1:9\"\n\
             api_key = \"env:PROVIDER_KEY\"\nresponses = \"{responses}\"\n"
        );
        std::fs::write(&path, text).unwrap();
    };
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_credentialflow"))
            .args(["check", "--config"])
            .arg(&path)
            .env("PROVIDER_KEY", PROVIDER_KEY)
            .stdin(Stdio::null())
            .output()
            .expect("run credentialflow check")
    };
    for kind in ["anthropic", "gemini", "mock"] {
        write(kind, "native");
        let out = check();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{kind}: {stderr}");
        assert!(stderr.contains("responses"), "{kind}: {stderr}");
        assert!(stderr.contains("kind = \"openai\""), "{kind}: {stderr}");
        write(kind, "translate");
        let out = check();
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    write("openai", "native");
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write("openai", "sometimes");
    assert!(!check().status.success(), "an unknown value is refused");
}

#[test]
fn a_cut_native_stream_is_charged_as_a_cut_chat_stream_is() {
    const CHAT_MODEL: &str = "gpt-translated";
    let native = FakeOpenAi::start();
    let translated = FakeOpenAi::start();
    // Both providers break their streams off a few events in, before any usage.
    for fake in [&native, &translated] {
        fake.set_usage(10, 5, 0);
        fake.set_reply("one two three four five six seven eight nine ten");
        fake.set_stream_end(StreamEnd::CutAfter(6));
    }
    // The same upstream model, so the same prompt estimate on both.
    let gw = start_gateway(&format!(
        "{}{}{}{}",
        native_provider_toml("native", &native),
        model_toml(OPENAI_MODEL, "native", OPENAI_UPSTREAM),
        provider_toml("compatible", "openai", &translated.base_url()),
        model_toml(CHAT_MODEL, "compatible", OPENAI_UPSTREAM)
    ));
    let key = create_key(
        &gw,
        &json!({"name": "cut", "models": [OPENAI_MODEL, CHAT_MODEL]}),
    )
    .secret;
    for model in [OPENAI_MODEL, CHAT_MODEL] {
        let ask = json!({"model": model, "input": "Count to ten.", "stream": true,
                         "max_output_tokens": 50});
        let auth = format!("Bearer {key}");
        let headers = [
            ("Content-Type", "application/json"),
            ("Connection", "close"),
            ("Authorization", auth.as_str()),
        ];
        let bytes = ask.to_string().into_bytes();
        let mut client = Client::connect(gw.addr());
        client.send(&request("POST", "/v1/responses", &headers, &bytes));
        let head = client.read_head();
        assert_eq!(head.status, 200, "{model}");
        let mut reader = client.body_reader(&head);
        let mut raw = Vec::new();
        // The gateway ends the client's stream unfinished, as the provider's was.
        while let Ok(Some(piece)) = client.try_read_body_piece(&mut reader) {
            raw.extend_from_slice(&piece);
        }
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("response.created"), "{model}: {text}");
        assert!(!text.contains("response.completed"), "{model}: {text}");
    }
    assert_eq!(bodies(&native.requests(), "/v1/responses").len(), 1);
    assert_eq!(
        bodies(&translated.requests(), "/v1/chat/completions").len(),
        1
    );
    // Neither reported usage: each is charged its estimated prompt and the larger of the
    // reservation and the relayed text, the same on both.
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = (ledger_row(&gw, OPENAI_MODEL), ledger_row(&gw, CHAT_MODEL));
        if let (Some(native), Some(chat)) = rows {
            assert_eq!(native, chat, "native and translated cut streams");
            assert_eq!(native.0, 1);
            assert!(native.1 > 0, "{native:?}");
            assert_eq!(native.2, 50, "the completion reservation: {native:?}");
            break;
        }
        assert!(Instant::now() < deadline, "ledger: {rows:?}");
        sleep(Duration::from_millis(200));
    }
}

//! The gateway driven by the official OpenAI and Anthropic Python SDKs (issue 5): a stock SDK
//! client with only `base_url` and `api_key` changed must work through the gateway exactly as
//! it works against the provider, typed exceptions included.
//!
//! Each test starts the real gateway in front of the mock provider or a fake provider, runs one
//! of the scripts in `tests/sdk/` (`python3 tests/sdk/<script>.py`, settings in `CF_*`
//! environment variables, see `tests/sdk/sdk_env.py`), and asserts on the one JSON line the
//! script prints and on what the fakes received: the provider key, never the virtual key.
//!
//! python3 and the SDKs are required: CI installs them (see [`PIP_INSTALL`]); without them
//! every test here fails with that line, it does not skip.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::fake_anthropic::ANTHROPIC_VERSION;
use common::fake_tools::{tool_fake, TOOL_ANSWER, TOOL_CALL_ID, TOOL_NAME};
use common::keys::create_key;
use common::*;
use serde_json::{json, Value};

/// What CI runs so these tests can pass (the versions they were written against).
const PIP_INSTALL: &str = "pip install openai==3.57.0 anthropic==2.14.0";

/// Longest a script may run (each SDK call inside has its own 20 s timeout).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// The provider's own API key, given to the gateway as `env:PROVIDER_KEY`.
const PROVIDER_KEY: &str = "sk-provider-secret-0123456789abcdef";

/// The user message of `openai_chat.py` and `anthropic_messages.py` (the mock echoes it).
const GREETING: &str = "Say hello to the gateway.";

/// Their system prompt.
const SYSTEM: &str = "You are terse.";

/// The mock provider's models: the key may use [`MOCK_MODEL`], not [`MOCK_OTHER`].
const MOCK_MODEL: &str = "mock-chat";
const MOCK_OTHER: &str = "mock-other";

/// FakeOpenAi's models: the key may use [`OPENAI_MODEL`] (sent upstream as
/// [`OPENAI_UPSTREAM`]), not [`OPENAI_OTHER`].
const OPENAI_MODEL: &str = "gpt-4o-mini";
const OPENAI_UPSTREAM: &str = "gpt-4o-mini-2024-07-18";
const OPENAI_OTHER: &str = "gpt-4o";

/// The tool-calling fake's model.
const TOOL_MODEL: &str = "gpt-4o-tools";

/// FakeAnthropic's models: the key may use [`CLAUDE_MODEL`] (sent upstream as
/// [`CLAUDE_UPSTREAM`]), not [`CLAUDE_OTHER`].
const CLAUDE_MODEL: &str = "claude-sonnet";
const CLAUDE_UPSTREAM: &str = "claude-sonnet-4-5-20250929";
const CLAUDE_OTHER: &str = "claude-opus";

// ---------------------------------------------------------------------------
// Running the scripts
// ---------------------------------------------------------------------------

/// Fails the test, once per test binary, unless python3 can import both SDKs.
fn require_sdks() {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        let output = Command::new("python3")
            .args([
                "-c",
                "import openai, anthropic; print(openai.__version__, anthropic.__version__)",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run python3 ({e})"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "python3 cannot import the SDKs: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    });
    if let Err(why) = check {
        panic!("{why}\nthe SDK tests need python3 with the official SDKs: {PIP_INSTALL}");
    }
}

/// A script's settings: which gateway, key and model, and any extra `CF_*` variables.
struct Script<'a> {
    name: &'a str,
    gateway: &'a Gateway,
    key: &'a str,
    model: &'a str,
    env: Vec<(&'a str, String)>,
}

impl<'a> Script<'a> {
    fn new(name: &'a str, gateway: &'a Gateway, key: &'a str, model: &'a str) -> Script<'a> {
        Script {
            name,
            gateway,
            key,
            model,
            env: Vec::new(),
        }
    }

    /// The `[name, key, model]` cases an error script runs in order.
    fn cases(mut self, cases: &[(&str, &str, &str)]) -> Script<'a> {
        let list: Vec<Value> = cases.iter().map(|(n, k, m)| json!([n, k, m])).collect();
        self.env.push(("CF_CASES", Value::Array(list).to_string()));
        self
    }

    /// Runs `python3 tests/sdk/<name>.py`; fails the test unless it exits 0 within
    /// [`SCRIPT_TIMEOUT`] having printed one JSON line, which it returns.
    fn run(self) -> Value {
        require_sdks();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/sdk").join(format!("{}.py", self.name));
        let out_dir = TempDir::new("sdk");
        let stdout_path = out_dir.join("stdout");
        let stderr_path = out_dir.join("stderr");
        let mut child = Command::new("python3")
            .arg(&script)
            .env("CF_BASE_URL", format!("http://{}", self.gateway.addr()))
            .env("CF_API_KEY", self.key)
            .env("CF_MODEL", self.model)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            // Only what the test passes may reach the SDKs.
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            // No `__pycache__` left in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
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
                panic!(
                    "{}.py ran past {SCRIPT_TIMEOUT:?}; stderr:\n{}",
                    self.name,
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert!(
            status.success(),
            "{}.py failed ({status}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}\n\
             --- gateway stderr ---\n{}",
            self.name,
            self.gateway.stderr()
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "{}.py printed no JSON line ({e}):\n{stdout}\n--- stderr ---\n{stderr}",
                self.name
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Gateways and providers
// ---------------------------------------------------------------------------

/// A `[[provider]]` table; `base_url` empty for the mock.
fn provider_toml(name: &str, kind: &str, base_url: &str) -> String {
    if base_url.is_empty() {
        return format!("\n[[provider]]\nname = \"{name}\"\nkind = \"{kind}\"\n");
    }
    format!(
        "\n[[provider]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\n\
         api_key = \"env:PROVIDER_KEY\"\n"
    )
}

/// A `[[model]]` table.
fn model_toml(name: &str, provider: &str, upstream_model: &str) -> String {
    format!(
        "\n[[model]]\nname = \"{name}\"\nprovider = \"{provider}\"\nupstream_model = \"{upstream_model}\"\n\
         input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n"
    )
}

/// Starts a gateway with `tables`, no gateway-side retries (so a provider error reaches the
/// SDK as it was), and the provider key in its environment.
fn start_gateway(tables: &str) -> Gateway {
    let config = config(&format!("[ai]\nmax_retries = 0\n{tables}"));
    Gateway::builder(&config, Driver::Uring)
        .env("PROVIDER_KEY", PROVIDER_KEY)
        .start()
}

/// The mock provider with [`MOCK_MODEL`] and [`MOCK_OTHER`].
fn mock_gateway() -> Gateway {
    start_gateway(&format!(
        "{}{}{}",
        provider_toml("mock", "mock", ""),
        model_toml(MOCK_MODEL, "mock", MOCK_MODEL),
        model_toml(MOCK_OTHER, "mock", MOCK_OTHER)
    ))
}

/// `fake` as an OpenAI provider with [`OPENAI_MODEL`] and [`OPENAI_OTHER`].
fn fake_openai_gateway(fake: &FakeOpenAi) -> Gateway {
    start_gateway(&format!(
        "{}{}{}",
        provider_toml("openai", "openai", &fake.base_url()),
        model_toml(OPENAI_MODEL, "openai", OPENAI_UPSTREAM),
        model_toml(OPENAI_OTHER, "openai", OPENAI_OTHER)
    ))
}

/// `fake` as an Anthropic provider with [`CLAUDE_MODEL`] and [`CLAUDE_OTHER`].
fn fake_anthropic_gateway(fake: &FakeAnthropic) -> Gateway {
    start_gateway(&format!(
        "{}{}{}",
        provider_toml("anthropic", "anthropic", &fake.base_url()),
        model_toml(CLAUDE_MODEL, "anthropic", CLAUDE_UPSTREAM),
        model_toml(CLAUDE_OTHER, "anthropic", CLAUDE_OTHER)
    ))
}

/// Issues a key for `model` alone (with `extra` limits); it is in force on
/// every worker once the admin API answers.
fn key_for(gw: &Gateway, name: &str, model: &str, extra: Value) -> String {
    let mut body = json!({ "name": name, "models": [model] });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    create_key(gw, &body).secret
}

/// The tool-calling fake as an OpenAI provider with [`TOOL_MODEL`].
fn tool_gateway(fake: &Upstream) -> Gateway {
    start_gateway(&format!(
        "{}{}",
        provider_toml("tools", "openai", &format!("http://{}", fake.addr())),
        model_toml(TOOL_MODEL, "tools", TOOL_MODEL)
    ))
}

// ---------------------------------------------------------------------------
// What the fakes received
// ---------------------------------------------------------------------------

/// Fails unless no header and no body of `requests` carries the virtual key.
fn assert_virtual_key_never_sent(requests: &[RecordedRequest], virtual_key: &str) {
    assert!(!requests.is_empty(), "the provider received no request");
    for request in requests {
        for (name, value) in &request.headers {
            assert!(
                !value.contains(virtual_key),
                "{} {}: header {name} carries the virtual key",
                request.method,
                request.path
            );
        }
        assert!(
            !String::from_utf8_lossy(&request.body).contains(virtual_key),
            "{} {}: the body carries the virtual key",
            request.method,
            request.path
        );
    }
}

/// Fails unless every request carried the provider key OpenAI's way and nothing else of ours.
fn assert_openai_provider_key(requests: &[RecordedRequest], virtual_key: &str) {
    assert_virtual_key_never_sent(requests, virtual_key);
    let bearer = format!("Bearer {PROVIDER_KEY}");
    for request in requests {
        assert_eq!(
            request.headers_named("authorization"),
            vec![bearer.as_str()],
            "{} {}: the provider key, once",
            request.method,
            request.path
        );
        assert_eq!(
            request.header("x-api-key"),
            None,
            "no x-api-key toward OpenAI"
        );
    }
}

/// Fails unless every request carried the provider key Anthropic's way and nothing else of ours.
fn assert_anthropic_provider_key(requests: &[RecordedRequest], virtual_key: &str) {
    assert_virtual_key_never_sent(requests, virtual_key);
    for request in requests {
        assert_eq!(
            request.headers_named("x-api-key"),
            vec![PROVIDER_KEY],
            "{} {}: the provider key, once",
            request.method,
            request.path
        );
        assert_eq!(
            request.header("authorization"),
            None,
            "no Authorization toward Anthropic"
        );
        assert_eq!(request.header("anthropic-version"), Some(ANTHROPIC_VERSION));
    }
}

/// The chat requests among `requests`, in order, as JSON.
fn chat_bodies(requests: &[RecordedRequest], path: &str) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON request body"))
        .collect()
}

// ---------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------

/// The mock's usage for `openai_chat.py`'s messages: ceil(bytes / 4) + 3 per message prompt
/// tokens, ceil(reply bytes / 4) completion tokens (src/ai/providers/mock/reply.rs).
fn mock_chat_usage() -> (u64, u64) {
    let bytes = SYSTEM.len() + GREETING.len();
    (
        bytes.div_ceil(4) as u64 + 6,
        GREETING.len().div_ceil(4) as u64,
    )
}

/// An OpenAI `usage` as the scripts print it.
fn openai_usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": cached,
    })
}

/// An Anthropic `usage` as the scripts print it.
fn anthropic_usage(input: u64, output: u64, cache_read: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_read_input_tokens": cache_read,
    })
}

/// Fails unless `openai_chat.py` saw `text` and `usage` whole and in both streams, the usage
/// chunk only when it asked for it.
fn assert_openai_chat(seen: &Value, text: &str, usage: &Value) {
    let whole = &seen["whole"];
    assert_eq!(whole["text"], text, "{seen}");
    assert_eq!(whole["finish_reason"], "stop", "{seen}");
    assert_eq!(&whole["usage"], usage, "the usage the SDK sees: {seen}");
    assert!(
        whole["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "every response carries x-request-id: {seen}"
    );
    for mode in ["stream", "stream_usage"] {
        assert_eq!(seen[mode]["text"], text, "{mode}: {seen}");
        assert_eq!(
            seen[mode]["finish_reasons"],
            json!(["stop"]),
            "{mode}: {seen}"
        );
    }
    assert_eq!(
        seen["stream"]["usage_chunks"],
        json!([]),
        "no usage chunk unless asked: {seen}"
    );
    assert_eq!(seen["stream"]["empty_choice_chunks"], 0, "{seen}");
    assert_eq!(
        seen["stream_usage"]["usage_chunks"],
        json!([usage]),
        "one usage chunk when asked: {seen}"
    );
    assert_eq!(seen["stream_usage"]["empty_choice_chunks"], 1, "{seen}");
}

/// Fails unless `anthropic_messages.py` saw `text` and `usage` whole, through the stream
/// helper and in the raw events.
fn assert_anthropic_messages(seen: &Value, model: &str, text: &str, usage: &Value) {
    for mode in ["whole", "stream"] {
        let message = &seen[mode];
        assert_eq!(message["text"], text, "{mode}: {seen}");
        assert_eq!(message["model"], model, "{mode}: {seen}");
        assert_eq!(message["role"], "assistant", "{mode}: {seen}");
        assert_eq!(message["stop_reason"], "end_turn", "{mode}: {seen}");
        assert_eq!(
            &message["usage"], usage,
            "{mode}: the usage the SDK sees: {seen}"
        );
        assert!(
            message["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("msg_")),
            "{mode}: Anthropic message ids start with msg_: {seen}"
        );
    }
    assert_eq!(seen["stream"]["text_stream"], text, "{seen}");
    assert!(
        seen["whole"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "every response carries x-request-id: {seen}"
    );
    let raw = &seen["raw_stream"];
    let events: Vec<&str> = raw["events"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(events.first(), Some(&"message_start"), "{seen}");
    assert_eq!(events.last(), Some(&"message_stop"), "{seen}");
    for needed in [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
    ] {
        assert!(events.contains(&needed), "no {needed} event: {seen}");
    }
    assert_eq!(raw["text"], text, "{seen}");
    assert_eq!(
        raw["usage"]["output_tokens"], usage["output_tokens"],
        "{seen}"
    );
    assert_eq!(raw["usage"]["stop_reason"], "end_turn", "{seen}");
}

/// Fails unless case `name` of an error script raised `exception` with `status` and `error_type`.
fn assert_raised(seen: &Value, name: &str, exception: &str, status: u16, error_type: &str) {
    let case = &seen[name];
    assert_eq!(case["exception"], exception, "{name}: {seen}");
    assert_eq!(case["is_api_status_error"], true, "{name}: {seen}");
    assert_eq!(case["status"], status, "{name}: {seen}");
    assert_eq!(case["type"], error_type, "{name}: {seen}");
}

/// Runs `script` (an error script) through the gateway-made errors: an unknown model, a bad
/// key, a model outside the key, and a key with `rpm = 1` used twice.
fn gateway_errors(script: &str, gw: &Gateway, model: &str, other_model: &str) -> Value {
    let key = key_for(gw, "errors", model, json!({}));
    let limited = key_for(gw, "limited", model, json!({ "rpm": 1 }));
    let cases = [
        ("unknown_model", key.as_str(), "no-such-model"),
        ("bad_key", "cf_not-a-key-of-this-gateway", model),
        ("model_outside_key", key.as_str(), other_model),
        ("rpm_first", limited.as_str(), model),
        ("rpm_exhausted", limited.as_str(), model),
    ];
    let seen = Script::new(script, gw, &key, model).cases(&cases).run();
    assert_eq!(seen["rpm_first"]["exception"], Value::Null, "{seen}");
    let retry_after = seen["rpm_exhausted"]["retry_after"]
        .as_str()
        .unwrap_or_default();
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "a 429 carries Retry-After in whole seconds: {seen}"
    );
    seen
}

// ---------------------------------------------------------------------------
// OpenAI SDK
// ---------------------------------------------------------------------------

#[test]
fn openai_chat_whole_and_streamed_through_mock_provider() {
    let gw = mock_gateway();
    let key = key_for(&gw, "chat", MOCK_MODEL, json!({}));
    let seen = Script::new("openai_chat", &gw, &key, MOCK_MODEL).run();
    let (prompt, completion) = mock_chat_usage();
    assert_openai_chat(&seen, GREETING, &openai_usage(prompt, completion, 0));
    assert_eq!(seen["whole"]["model"], MOCK_MODEL, "{seen}");
}

#[test]
fn openai_chat_whole_and_streamed_through_fake_openai() {
    let fake = FakeOpenAi::start();
    fake.set_usage(123, 45, 6);
    fake.set_reply("Hello from the fake, word by word.");
    let gw = fake_openai_gateway(&fake);
    let key = key_for(&gw, "chat", OPENAI_MODEL, json!({}));
    let seen = Script::new("openai_chat", &gw, &key, OPENAI_MODEL).run();
    assert_openai_chat(
        &seen,
        "Hello from the fake, word by word.",
        &openai_usage(123, 45, 6),
    );
    // Passed through whole, the answer names the model the client asked for, not the
    // provider's name for it.
    assert_eq!(seen["whole"]["model"], OPENAI_MODEL, "{seen}");

    let requests = fake.requests();
    assert_openai_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/chat/completions");
    assert_eq!(bodies.len(), 3, "whole, streamed, streamed with usage");
    for body in &bodies {
        assert_eq!(body["model"], OPENAI_UPSTREAM, "the upstream model name");
        assert_eq!(
            body["messages"][0],
            json!({ "role": "system", "content": SYSTEM })
        );
        assert_eq!(
            body["messages"][1],
            json!({ "role": "user", "content": GREETING })
        );
        assert_eq!(body["max_tokens"], 50);
    }
    for body in &bodies[1..] {
        assert_eq!(
            body["stream_options"]["include_usage"], true,
            "streams are metered: the gateway asks for usage upstream"
        );
    }
}

#[test]
fn openai_tool_calls_whole_and_streamed_through_fake_openai() {
    let fake = tool_fake();
    let gw = tool_gateway(&fake);
    let key = key_for(&gw, "tools", TOOL_MODEL, json!({}));
    let seen = Script::new("openai_tools", &gw, &key, TOOL_MODEL).run();

    let call = json!([{ "id": TOOL_CALL_ID, "type": "function", "name": TOOL_NAME,
                        "arguments": { "city": "Paris" } }]);
    assert_eq!(seen["whole"]["finish_reason"], "tool_calls", "{seen}");
    assert_eq!(seen["whole"]["tool_calls"], call, "{seen}");
    assert_eq!(seen["whole"]["usage"], json!([42, 17]), "{seen}");
    assert_eq!(seen["stream"]["finish_reason"], "tool_calls", "{seen}");
    let streamed = json!([{ "id": TOOL_CALL_ID, "name": TOOL_NAME,
                            "arguments": { "city": "Paris" } }]);
    assert_eq!(seen["stream"]["tool_calls"], streamed, "{seen}");
    assert_eq!(seen["followup"]["text"], TOOL_ANSWER, "{seen}");
    assert_eq!(seen["followup"]["finish_reason"], "stop", "{seen}");

    let requests = fake.requests();
    assert_openai_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/chat/completions");
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], TOOL_NAME);
    let followup = &bodies[2]["messages"];
    assert_eq!(
        followup[1]["tool_calls"][0]["id"], TOOL_CALL_ID,
        "{followup}"
    );
    assert_eq!(
        followup[2],
        json!({ "role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "Sunny, 21 C" })
    );
}

#[test]
fn openai_embeddings_and_models_through_mock_provider() {
    let gw = mock_gateway();
    let key = key_for(&gw, "embed", MOCK_MODEL, json!({}));
    let seen = Script::new("openai_models", &gw, &key, MOCK_MODEL).run();
    // ceil(19 / 4) + ceil(23 / 4) tokens for the two inputs (src/ai/providers/mock/reply.rs).
    let embeddings = json!({ "count": 2, "indexes": [0, 1], "dimensions": [8, 8],
                             "prompt_tokens": 11, "total_tokens": 11 });
    assert_eq!(seen["embeddings"], embeddings, "{seen}");
    assert_eq!(
        seen["models"],
        json!([MOCK_MODEL]),
        "only the key's models: {seen}"
    );
}

#[test]
fn openai_embeddings_and_models_through_fake_openai() {
    let fake = FakeOpenAi::start();
    fake.set_usage(37, 0, 0);
    let gw = fake_openai_gateway(&fake);
    let key = key_for(&gw, "embed", OPENAI_MODEL, json!({}));
    let seen = Script::new("openai_models", &gw, &key, OPENAI_MODEL).run();
    let embeddings = json!({ "count": 2, "indexes": [0, 1], "dimensions": [8, 8],
                             "prompt_tokens": 37, "total_tokens": 37 });
    assert_eq!(seen["embeddings"], embeddings, "{seen}");
    assert_eq!(
        seen["models"],
        json!([OPENAI_MODEL]),
        "only the key's models: {seen}"
    );

    let requests = fake.requests();
    assert_openai_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/embeddings");
    assert_eq!(bodies.len(), 1, "{requests:?}");
    assert_eq!(bodies[0]["model"], OPENAI_UPSTREAM);
    assert_eq!(
        bodies[0]["input"],
        json!(["the quick brown fox", "jumps over the lazy dog"])
    );
}

#[test]
fn openai_errors_are_typed_exceptions_through_mock_provider() {
    let gw = mock_gateway();
    let seen = gateway_errors("openai_errors", &gw, MOCK_MODEL, MOCK_OTHER);
    assert_raised(
        &seen,
        "unknown_model",
        "NotFoundError",
        404,
        "not_found_error",
    );
    assert_raised(
        &seen,
        "bad_key",
        "AuthenticationError",
        401,
        "authentication_error",
    );
    assert_raised(
        &seen,
        "model_outside_key",
        "PermissionDeniedError",
        403,
        "permission_error",
    );
    assert_raised(
        &seen,
        "rpm_exhausted",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
}

#[test]
fn openai_errors_are_typed_exceptions_through_fake_openai() {
    let fake = FakeOpenAi::start();
    let gw = fake_openai_gateway(&fake);
    let seen = gateway_errors("openai_errors", &gw, OPENAI_MODEL, OPENAI_OTHER);
    assert_raised(
        &seen,
        "unknown_model",
        "NotFoundError",
        404,
        "not_found_error",
    );
    assert_raised(
        &seen,
        "bad_key",
        "AuthenticationError",
        401,
        "authentication_error",
    );
    assert_raised(
        &seen,
        "model_outside_key",
        "PermissionDeniedError",
        403,
        "permission_error",
    );
    assert_raised(
        &seen,
        "rpm_exhausted",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
    assert_eq!(
        fake.request_count(),
        1,
        "only the admitted request reaches the provider"
    );

    // The provider's own errors reach the SDK as its typed exceptions too.
    let key = key_for(&gw, "provider-errors", OPENAI_MODEL, json!({}));
    fake.fail_next(429, "requests", 1);
    fake.fail_next(400, "invalid_request_error", 1);
    let cases = [
        ("provider_rate_limit", key.as_str(), OPENAI_MODEL),
        ("provider_bad_request", key.as_str(), OPENAI_MODEL),
    ];
    let seen = Script::new("openai_errors", &gw, &key, OPENAI_MODEL)
        .cases(&cases)
        .run();
    assert_raised(
        &seen,
        "provider_rate_limit",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
    assert_raised(
        &seen,
        "provider_bad_request",
        "BadRequestError",
        400,
        "invalid_request_error",
    );
    assert_openai_provider_key(&fake.requests(), &key);
}

// ---------------------------------------------------------------------------
// Anthropic SDK
// ---------------------------------------------------------------------------

#[test]
fn anthropic_messages_whole_and_streamed_through_mock_provider() {
    let gw = mock_gateway();
    let key = key_for(&gw, "messages", MOCK_MODEL, json!({}));
    let seen = Script::new("anthropic_messages", &gw, &key, MOCK_MODEL).run();
    let (prompt, completion) = mock_chat_usage();
    let usage = anthropic_usage(prompt, completion, 0);
    assert_anthropic_messages(&seen, MOCK_MODEL, GREETING, &usage);
}

#[test]
fn anthropic_messages_whole_and_streamed_through_fake_openai() {
    let fake = FakeOpenAi::start();
    fake.set_usage(123, 45, 6);
    fake.set_reply("Hello from the fake, word by word.");
    let gw = fake_openai_gateway(&fake);
    let key = key_for(&gw, "messages", OPENAI_MODEL, json!({}));
    let seen = Script::new("anthropic_messages", &gw, &key, OPENAI_MODEL).run();
    // Anthropic counts cache reads apart from input_tokens.
    let usage = anthropic_usage(123 - 6, 45, 6);
    assert_anthropic_messages(
        &seen,
        OPENAI_MODEL,
        "Hello from the fake, word by word.",
        &usage,
    );

    let requests = fake.requests();
    assert_openai_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/chat/completions");
    assert_eq!(bodies.len(), 3, "whole, stream helper, raw stream");
    for body in &bodies {
        assert_eq!(body["model"], OPENAI_UPSTREAM);
        assert_eq!(body["messages"][0]["role"], "system", "{body}");
        assert_eq!(
            body["messages"][1],
            json!({ "role": "user", "content": GREETING })
        );
        // OpenAI takes the limit under either name (`max_tokens` is the older one).
        let limit = body.get("max_completion_tokens").or(body.get("max_tokens"));
        assert_eq!(limit, Some(&json!(50)), "{body}");
    }
}

#[test]
fn anthropic_tool_use_through_fake_openai() {
    let fake = tool_fake();
    let gw = tool_gateway(&fake);
    let key = key_for(&gw, "tools", TOOL_MODEL, json!({}));
    let seen = Script::new("anthropic_tools", &gw, &key, TOOL_MODEL).run();

    let tool_use = json!([{ "id": TOOL_CALL_ID, "name": TOOL_NAME, "input": { "city": "Paris" } }]);
    for mode in ["whole", "stream"] {
        assert_eq!(seen[mode]["stop_reason"], "tool_use", "{mode}: {seen}");
        assert_eq!(seen[mode]["tool_uses"], tool_use, "{mode}: {seen}");
    }
    assert_eq!(seen["whole"]["usage"], json!([42, 17]), "{seen}");
    assert_eq!(seen["followup"]["text"], TOOL_ANSWER, "{seen}");
    assert_eq!(seen["followup"]["stop_reason"], "end_turn", "{seen}");

    let requests = fake.requests();
    assert_openai_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/chat/completions");
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let tool = &bodies[0]["tools"][0];
    assert_eq!(tool["type"], "function", "{tool}");
    assert_eq!(tool["function"]["name"], TOOL_NAME, "{tool}");
    assert_eq!(
        tool["function"]["parameters"]["required"],
        json!(["city"]),
        "{tool}"
    );
    let followup = &bodies[2]["messages"];
    assert_eq!(
        followup[1]["tool_calls"][0]["id"], TOOL_CALL_ID,
        "{followup}"
    );
    assert_eq!(followup[2]["role"], "tool", "{followup}");
    assert_eq!(followup[2]["tool_call_id"], TOOL_CALL_ID, "{followup}");
}

#[test]
fn anthropic_errors_are_typed_exceptions_through_mock_provider() {
    let gw = mock_gateway();
    let seen = gateway_errors("anthropic_errors", &gw, MOCK_MODEL, MOCK_OTHER);
    assert_raised(
        &seen,
        "unknown_model",
        "NotFoundError",
        404,
        "not_found_error",
    );
    assert_raised(
        &seen,
        "bad_key",
        "AuthenticationError",
        401,
        "authentication_error",
    );
    assert_raised(
        &seen,
        "model_outside_key",
        "PermissionDeniedError",
        403,
        "permission_error",
    );
    assert_raised(
        &seen,
        "rpm_exhausted",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
}

#[test]
fn anthropic_errors_are_typed_exceptions_through_fake_openai() {
    let fake = FakeOpenAi::start();
    let gw = fake_openai_gateway(&fake);
    let seen = gateway_errors("anthropic_errors", &gw, OPENAI_MODEL, OPENAI_OTHER);
    assert_raised(
        &seen,
        "unknown_model",
        "NotFoundError",
        404,
        "not_found_error",
    );
    assert_raised(
        &seen,
        "bad_key",
        "AuthenticationError",
        401,
        "authentication_error",
    );
    assert_raised(
        &seen,
        "model_outside_key",
        "PermissionDeniedError",
        403,
        "permission_error",
    );
    assert_raised(
        &seen,
        "rpm_exhausted",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
    assert_eq!(
        fake.request_count(),
        1,
        "only the admitted request reaches the provider"
    );

    // An OpenAI provider's 429 is translated into Anthropic's error shape.
    let key = key_for(&gw, "provider-errors", OPENAI_MODEL, json!({}));
    fake.fail_next(429, "requests", 1);
    let cases = [("provider_rate_limit", key.as_str(), OPENAI_MODEL)];
    let seen = Script::new("anthropic_errors", &gw, &key, OPENAI_MODEL)
        .cases(&cases)
        .run();
    assert_raised(
        &seen,
        "provider_rate_limit",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
}

// ---------------------------------------------------------------------------
// Anthropic SDK against an Anthropic provider (passed through)
// ---------------------------------------------------------------------------

#[test]
fn anthropic_messages_whole_and_streamed_through_fake_anthropic() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    fake.set_usage(117, 45, 6);
    fake.set_reply("Hello from the fake, word by word.");
    let gw = fake_anthropic_gateway(&fake);
    let key = key_for(&gw, "messages", CLAUDE_MODEL, json!({}));
    let seen = Script::new("anthropic_messages", &gw, &key, CLAUDE_MODEL).run();
    let usage = anthropic_usage(117, 45, 6);
    // Passed through whole, the answer names the model the client asked for, not the
    // provider's name for it (streamed: in `message_start`).
    assert_anthropic_messages(
        &seen,
        CLAUDE_MODEL,
        "Hello from the fake, word by word.",
        &usage,
    );
    // Passed through, `message_start` carries the input tokens as Anthropic sends them.
    assert_eq!(seen["raw_stream"]["usage"]["input_tokens"], 117, "{seen}");

    let requests = fake.requests();
    assert_anthropic_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/messages");
    assert_eq!(bodies.len(), 3, "whole, stream helper, raw stream");
    for body in &bodies {
        assert_eq!(body["model"], CLAUDE_UPSTREAM, "{body}");
        assert_eq!(body["system"], SYSTEM, "{body}");
        assert_eq!(
            body["messages"],
            json!([{ "role": "user", "content": GREETING }])
        );
        assert_eq!(body["max_tokens"], 50, "{body}");
    }
}

#[test]
fn anthropic_tool_use_through_fake_anthropic() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    fake.set_usage(42, 17, 0);
    fake.set_tool_call(TOOL_NAME, r#"{"city":"Paris"}"#);
    let gw = fake_anthropic_gateway(&fake);
    let key = key_for(&gw, "tools", CLAUDE_MODEL, json!({}));
    let seen = Script::new("anthropic_tools", &gw, &key, CLAUDE_MODEL).run();

    for mode in ["whole", "stream"] {
        assert_eq!(seen[mode]["stop_reason"], "tool_use", "{mode}: {seen}");
        let uses = &seen[mode]["tool_uses"];
        assert_eq!(uses.as_array().map(Vec::len), Some(1), "{mode}: {seen}");
        assert_eq!(uses[0]["name"], TOOL_NAME, "{mode}: {seen}");
        assert_eq!(
            uses[0]["input"],
            json!({ "city": "Paris" }),
            "{mode}: {seen}"
        );
        assert!(
            uses[0]["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("toolu_")),
            "{mode}: {seen}"
        );
    }
    assert_eq!(seen["whole"]["usage"], json!([42, 17]), "{seen}");

    let requests = fake.requests();
    assert_anthropic_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/messages");
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[0]["tools"][0]["name"], TOOL_NAME);
    let result = &bodies[2]["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{result}");
    assert_eq!(
        result["tool_use_id"], seen["whole"]["tool_uses"][0]["id"],
        "{result}"
    );
}

#[test]
fn anthropic_errors_are_typed_exceptions_through_fake_anthropic() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    let gw = fake_anthropic_gateway(&fake);
    let seen = gateway_errors("anthropic_errors", &gw, CLAUDE_MODEL, CLAUDE_OTHER);
    assert_raised(
        &seen,
        "unknown_model",
        "NotFoundError",
        404,
        "not_found_error",
    );
    assert_raised(
        &seen,
        "bad_key",
        "AuthenticationError",
        401,
        "authentication_error",
    );
    assert_raised(
        &seen,
        "model_outside_key",
        "PermissionDeniedError",
        403,
        "permission_error",
    );
    assert_raised(
        &seen,
        "rpm_exhausted",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
    assert_eq!(
        fake.request_count(),
        1,
        "only the admitted request reaches the provider"
    );

    // The provider's own errors reach the SDK as its typed exceptions, as Anthropic sent them.
    let key = key_for(&gw, "provider-errors", CLAUDE_MODEL, json!({}));
    fake.fail_next(429, "rate_limit_error", 1);
    fake.fail_next(400, "invalid_request_error", 1);
    let cases = [
        ("provider_rate_limit", key.as_str(), CLAUDE_MODEL),
        ("provider_bad_request", key.as_str(), CLAUDE_MODEL),
    ];
    let seen = Script::new("anthropic_errors", &gw, &key, CLAUDE_MODEL)
        .cases(&cases)
        .run();
    assert_raised(
        &seen,
        "provider_rate_limit",
        "RateLimitError",
        429,
        "rate_limit_error",
    );
    assert_raised(
        &seen,
        "provider_bad_request",
        "BadRequestError",
        400,
        "invalid_request_error",
    );
    assert_anthropic_provider_key(&fake.requests(), &key);
}

#[test]
fn openai_chat_whole_and_streamed_through_fake_anthropic() {
    let fake = FakeAnthropic::start();
    fake.require_key(PROVIDER_KEY);
    fake.set_usage(117, 45, 6);
    fake.set_reply("Hello from the fake, word by word.");
    let gw = fake_anthropic_gateway(&fake);
    let key = key_for(&gw, "chat", CLAUDE_MODEL, json!({}));
    let seen = Script::new("openai_chat", &gw, &key, CLAUDE_MODEL).run();
    // OpenAI counts cache reads inside prompt_tokens.
    assert_openai_chat(
        &seen,
        "Hello from the fake, word by word.",
        &openai_usage(117 + 6, 45, 6),
    );
    // Translated, the answer names the model the client asked for.
    assert_eq!(seen["whole"]["model"], CLAUDE_MODEL, "{seen}");

    let requests = fake.requests();
    assert_anthropic_provider_key(&requests, &key);
    let bodies = chat_bodies(&requests, "/v1/messages");
    assert_eq!(bodies.len(), 3, "whole, streamed, streamed with usage");
    for body in &bodies {
        assert_eq!(body["model"], CLAUDE_UPSTREAM, "{body}");
        assert_eq!(
            body["messages"],
            json!([{ "role": "user", "content": GREETING }])
        );
    }
}

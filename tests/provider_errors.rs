//! Provider errors as clients see them: the real binary in front of fake OpenAI, Azure OpenAI,
//! Anthropic and Gemini servers whose error messages repeat the credential they received
//! (the whole key and fragments of it, an `Authorization` header line, a `?key=` URL).
//!
//! On every front door (`/v1/chat/completions`, `/v1/messages`, `/v1/embeddings`,
//! `/prompts/*`) the client must get the gateway's error shape, the provider's status class,
//! and nothing of the provider key; a provider refusing the gateway's key is 502
//! `upstream_error` everywhere.

mod common;

use std::net::SocketAddr;

use common::fake_anthropic::ANTHROPIC_VERSION;
use common::fake_openai::{send_json, KeyEcho, ECHO_RETRY_AFTER_SECS};
use common::keys::*;
use common::*;
use serde_json::{json, Value};

/// The providers' keys. None has a vendor's shape (`sk-`, `AIza`...) or is long enough to
/// look random by itself, so only the gateway's knowledge of its configured key can hide them.
const OPENAI_KEY: &str = "opn4Q7x2Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0";
const AZURE_KEY: &str = "azr7Q2x9LmTk4Wp8Rz3Vn6Yb1Hc5Jd0F";
const ANTHROPIC_KEY: &str = "ant5Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";
const GEMINI_KEY: &str = "gem6Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTeQ7x";

/// One fake per provider kind (Azure is a second FakeOpenAi on Azure paths).
struct Fakes {
    openai: FakeOpenAi,
    azure: FakeOpenAi,
    anthropic: FakeAnthropic,
    gemini: FakeGemini,
}

/// A provider kind under test: its client-facing chat model and embeddings model (if any).
#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::OpenAi, Kind::Azure, Kind::Anthropic, Kind::Gemini];

    fn chat_model(self) -> &'static str {
        match self {
            Kind::OpenAi => "gpt",
            Kind::Azure => "azure-gpt",
            Kind::Anthropic => "claude",
            Kind::Gemini => "gemini",
        }
    }

    fn embeddings_model(self) -> Option<&'static str> {
        match self {
            Kind::OpenAi => Some("embed-openai"),
            Kind::Azure => Some("embed-azure"),
            Kind::Anthropic => None,
            Kind::Gemini => Some("embed-gemini"),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::OpenAi => OPENAI_KEY,
            Kind::Azure => AZURE_KEY,
            Kind::Anthropic => ANTHROPIC_KEY,
            Kind::Gemini => GEMINI_KEY,
        }
    }

    /// The provider's own name for an error of `status` (its `type` or gRPC status).
    fn error_type(self, status: u16) -> &'static str {
        match (self, status) {
            (Kind::Gemini, 400) => "INVALID_ARGUMENT",
            (Kind::Gemini, 401) => "UNAUTHENTICATED",
            (Kind::Gemini, 403) => "PERMISSION_DENIED",
            (Kind::Gemini, 429) => "RESOURCE_EXHAUSTED",
            (Kind::Gemini, _) => "INTERNAL",
            (Kind::Anthropic, 401) => "authentication_error",
            (Kind::Anthropic, 403) => "permission_error",
            (Kind::Anthropic, 429) => "rate_limit_error",
            (Kind::Anthropic, 500) => "api_error",
            (_, 401) => "invalid_request_error",
            (_, 403) => "permission_error",
            (_, 429) => "requests",
            (_, 500) => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl Fakes {
    fn start() -> Fakes {
        Fakes {
            openai: FakeOpenAi::start(),
            azure: FakeOpenAi::start(),
            anthropic: FakeAnthropic::start(),
            gemini: FakeGemini::start(),
        }
    }

    /// The next request to `kind`'s fake fails with `status`, its message echoing the key.
    fn fail_next(&self, kind: Kind, status: u16, echo: KeyEcho) {
        let error_type = kind.error_type(status);
        match kind {
            Kind::OpenAi => self.openai.fail_next_echoing(status, error_type, echo, 1),
            Kind::Azure => self.azure.fail_next_echoing(status, error_type, echo, 1),
            Kind::Anthropic => self
                .anthropic
                .fail_next_echoing(status, error_type, echo, 1),
            Kind::Gemini => self.gemini.fail_next_echoing(status, error_type, echo, 1),
        }
    }

    fn request_count(&self) -> usize {
        self.openai.request_count()
            + self.azure.request_count()
            + self.anthropic.request_count()
            + self.gemini.request_count()
    }

    fn tables(&self) -> String {
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

[[model]]
name = "gpt"
provider = "openai"
upstream_model = "gpt-4o-mini"

[[model]]
name = "azure-gpt"
provider = "azure"
upstream_model = "prod-gpt4o"

[[model]]
name = "claude"
provider = "anthropic"
upstream_model = "claude-3-5-haiku-20241022"

[[model]]
name = "gemini"
provider = "gemini"
upstream_model = "gemini-1.5-flash"

[[model]]
name = "embed-openai"
provider = "openai"
upstream_model = "text-embedding-3-small"

[[model]]
name = "embed-azure"
provider = "azure"
upstream_model = "embed-small"

[[model]]
name = "embed-gemini"
provider = "gemini"
upstream_model = "text-embedding-004"

[[model]]
name = "gpt-then-claude"
provider = "openai"
upstream_model = "gpt-4o-mini"
fallbacks = ["claude"]

[[prompt]]
name = "greet"
version = 1
model = "gpt"
template = "Hello {{{{name}}}}"
"#,
            openai = self.openai.base_url(),
            azure = self.azure.base_url(),
            anthropic = self.anthropic.base_url(),
            gemini = self.gemini.base_url(),
        )
    }
}

/// A gateway (no retries, so each failure is answered as it is) in front of `fakes`, and a
/// virtual key allowed every model.
fn gateway(fakes: &Fakes, driver: Driver) -> (Gateway, String) {
    let config = format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\n\
         data_dir = \"{DIR}/data\"\n\
         workers = 2\n\
         [ai]\n\
         max_retries = 0\n\
         {}\n",
        fakes.tables(),
        DIR = common::gateway::DIR,
    );
    let gw = Gateway::builder(&config, driver)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .env("FAKE_AZURE_KEY", AZURE_KEY)
        .env("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
        .env("FAKE_GEMINI_KEY", GEMINI_KEY)
        .start();
    let key = create_key(&gw, &json!({ "name": "provider-errors", "team": "t" }));
    (gw, key.secret)
}

fn post_json(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
    let mut all = vec![
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    all.extend_from_slice(headers);
    let bytes = body.to_string().into_bytes();
    roundtrip(addr, &request("POST", path, &all, &bytes))
}

/// A front door and the request it is called with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Door {
    Chat,
    Messages,
    Embeddings,
    Prompt,
}

/// Calls `door` for `model` with the virtual key `key`.
fn call(gw: &Gateway, key: &str, door: Door, model: &str) -> Response {
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];
    match door {
        Door::Chat => post_json(
            gw.addr(),
            "/v1/chat/completions",
            &auth,
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Door::Messages => post_json(
            gw.addr(),
            "/v1/messages",
            &[("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)],
            &json!({"model": model, "max_tokens": 16,
                    "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Door::Embeddings => post_json(
            gw.addr(),
            "/v1/embeddings",
            &auth,
            &json!({"model": model, "input": "hi"}),
        ),
        Door::Prompt => post_json(gw.addr(), "/prompts/greet", &auth, &json!({"name": "Ada"})),
    }
}

/// A successful call on `door`, which also closes the provider's circuit breaker again (five
/// failures in a row open it, and these tests fail a provider many times).
/// (`/v1/embeddings` has no retries, fallbacks or breaker, and the fake Gemini no embeddings.)
fn succeed(gw: &Gateway, key: &str, door: Door, model: &str, what: &str) {
    if door == Door::Embeddings {
        return;
    }
    let response = call(gw, key, door, model);
    assert_eq!(response.status, 200, "{what}, then: {}", response.text());
}

/// Fails if any 8 consecutive characters of `secret` are anywhere in the response.
fn assert_nothing_of(secret: &str, response: &Response, what: &str) {
    let everything = format!("{:?} {}", response.headers, response.text());
    for window in secret.as_bytes().windows(8) {
        let window = std::str::from_utf8(window).unwrap();
        assert!(
            !everything.contains(window),
            "{what}: {window:?} of the provider key reached the client: {everything}"
        );
    }
}

/// Fails unless `response` is the gateway's error shape for `door` with `status` and the
/// error type `openai_type` (OpenAI shape) or `anthropic_type` (on `/v1/messages`).
fn assert_shape(
    response: &Response,
    door: Door,
    status: u16,
    openai_type: &str,
    anthropic_type: &str,
    what: &str,
) -> Value {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body = response.json();
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {body}"));
    assert!(error["message"].is_string(), "{what}: {body}");
    if door == Door::Messages {
        assert_eq!(body["type"], "error", "{what}: {body}");
        assert_eq!(error["type"], anthropic_type, "{what}: {body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{what}: {body}");
        assert_eq!(error.len(), 2, "{what}: {body}");
    } else {
        assert_eq!(error["type"], openai_type, "{what}: {body}");
        assert!(error["code"].is_string(), "{what}: {body}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
        assert_eq!(error.len(), 3, "{what}: {body}");
    }
    body
}

/// The front doors that reach `kind`'s provider, with the model each calls.
fn doors(kind: Kind) -> Vec<(Door, &'static str)> {
    let mut doors = vec![
        (Door::Chat, kind.chat_model()),
        (Door::Messages, kind.chat_model()),
    ];
    if let Some(model) = kind.embeddings_model() {
        doors.push((Door::Embeddings, model));
    }
    doors
}

on_default_driver! {
    fn provider_errors_keep_their_class_and_never_echo_the_provider_key(driver) {
        let fakes = Fakes::start();
        let (gw, key) = gateway(&fakes, driver);
        // (provider status, client status, OpenAI type, Anthropic type)
        let classes = [
            (400, 400, "invalid_request_error", "invalid_request_error"),
            (429, 429, "rate_limit_error", "rate_limit_error"),
            (500, 502, "upstream_error", "api_error"),
        ];
        for kind in Kind::ALL {
            for (door, model) in doors(kind) {
                for echo in KeyEcho::ALL {
                    for (status, client_status, openai_type, anthropic_type) in classes {
                        let what = format!("{kind:?} {door:?} {echo:?} {status}");
                        let before = fakes.request_count();
                        fakes.fail_next(kind, status, echo);
                        let response = call(&gw, &key, door, model);
                        assert_eq!(fakes.request_count(), before + 1, "{what}");
                        assert_nothing_of(kind.key(), &response, &what);
                        let body = assert_shape(
                            &response, door, client_status, openai_type, anthropic_type, &what,
                        );
                        let message = body["error"]["message"].as_str().unwrap();
                        assert!(message.contains("[redacted]"), "{what}: {body}");
                        assert!(message.chars().count() <= 513, "{what}: {body}");
                        let retry_after = response.header("retry-after");
                        if status == 429 {
                            let expected = ECHO_RETRY_AFTER_SECS.to_string();
                            assert_eq!(retry_after, Some(expected.as_str()), "{what}");
                        } else {
                            assert_eq!(retry_after, None, "{what}");
                        }
                        succeed(&gw, &key, door, model, &what);
                    }
                }
            }
        }
    }
}

on_default_driver! {
    fn a_provider_refusing_the_gateways_key_is_502_upstream_error_everywhere(driver) {
        let fakes = Fakes::start();
        let (gw, key) = gateway(&fakes, driver);
        for kind in Kind::ALL {
            let mut doors = doors(kind);
            doors.push((Door::Prompt, "gpt"));
            for (door, model) in doors {
                if door == Door::Prompt && !matches!(kind, Kind::OpenAi) {
                    continue;
                }
                for status in [401, 403] {
                    let what = format!("{kind:?} {door:?} {status}");
                    fakes.fail_next(kind, status, KeyEcho::Key);
                    let response = call(&gw, &key, door, model);
                    assert_nothing_of(kind.key(), &response, &what);
                    let body =
                        assert_shape(&response, door, 502, "upstream_error", "api_error", &what);
                    assert_eq!(
                        body["error"]["message"], "the provider refused the gateway's credential",
                        "{what}"
                    );
                    if door != Door::Messages {
                        assert_eq!(body["error"]["code"], "provider_credential_refused", "{what}");
                    }
                    succeed(&gw, &key, door, model, &what);
                }
            }
        }
        // Gemini says a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID: the same answer.
        fakes.gemini.require_key("another-key-than-the-gateways");
        for (door, model) in doors(Kind::Gemini) {
            let response = call(&gw, &key, door, model);
            assert_shape(&response, door, 502, "upstream_error", "api_error", "gemini bad key");
        }
        // `GET /v1/models` is the gateway's own list: no provider is asked.
        let before = fakes.request_count();
        let bearer = format!("Bearer {key}");
        let models = roundtrip(
            gw.addr(),
            &request("GET", "/v1/models", &[("Authorization", bearer.as_str()),
                ("Connection", "close")], b""),
        );
        assert_eq!(models.status, 200, "{}", models.text());
        assert_eq!(fakes.request_count(), before);
    }
}

/// A provider refusing its key is the provider's trouble: the model's fallback answers.
#[test]
fn a_refused_provider_key_falls_back_to_the_next_model() {
    let fakes = Fakes::start();
    let (gw, key) = gateway(&fakes, Driver::Uring);
    fakes.fail_next(Kind::OpenAi, 401, KeyEcho::Key);
    let response = call(&gw, &key, Door::Chat, "gpt-then-claude");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-credentialflow-model"), Some("claude"));
    assert_eq!(fakes.openai.request_count(), 1);
    assert_eq!(fakes.anthropic.request_count(), 1);
}

/// An error body larger than the gateway reads is not relayed (only its status is), and the
/// connection it came on is not reused for the next request.
#[test]
fn an_oversized_provider_error_body_is_not_relayed() {
    const HUGE: usize = 256 * 1024;
    let provider = FakeServer::start(Box::new(|conn, request, ordinal, keep_alive| {
        if ordinal == 1 {
            let key = common::fake_openai::received_key(request);
            let message = format!("{} {key}", "x".repeat(HUGE));
            let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
            send_json(conn, 400, &body, keep_alive, &[])
        } else {
            let body = json!({"error": {"message": "second", "type": "invalid_request_error"}});
            send_json(conn, 400, &body, keep_alive, &[])
        }
    }));
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\ndata_dir = \"{}/data\"\nworkers = 1\n\
         [ai]\nmax_retries = 0\n\
         [[provider]]\nname = \"big\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key = \"env:FAKE_OPENAI_KEY\"\n\
         [[model]]\nname = \"gpt\"\nprovider = \"big\"\nupstream_model = \"gpt-4o-mini\"\n",
        common::gateway::DIR,
        provider.base_url()
    );
    let gw = Gateway::builder(&config, Driver::Uring)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .start();
    let key = create_key(&gw, &json!({ "name": "big", "team": "t" })).secret;

    let response = call(&gw, &key, Door::Chat, "gpt");
    assert_nothing_of(OPENAI_KEY, &response, "oversized");
    let body = assert_shape(
        &response,
        Door::Chat,
        400,
        "invalid_request_error",
        "",
        "oversized",
    );
    assert_eq!(
        body["error"]["message"],
        "the provider answered with status 400"
    );
    assert!(response.body.len() < 1024, "{} bytes", response.body.len());
    // The next call gets the provider's next answer, not the rest of the first.
    let second = call(&gw, &key, Door::Chat, "gpt");
    let body = assert_shape(
        &second,
        Door::Chat,
        400,
        "invalid_request_error",
        "",
        "second",
    );
    assert_eq!(body["error"]["message"], "second");
    assert_eq!(provider.request_count(), 2);
}

/// Calls `door` for `model` with `"stream": true`.
fn call_stream(gw: &Gateway, key: &str, door: Door, model: &str) -> Response {
    let bearer = format!("Bearer {key}");
    match door {
        Door::Chat => post_json(
            gw.addr(),
            "/v1/chat/completions",
            &[("Authorization", bearer.as_str())],
            &json!({"model": model, "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Door::Messages => post_json(
            gw.addr(),
            "/v1/messages",
            &[("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)],
            &json!({"model": model, "max_tokens": 16, "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        ),
        _ => unreachable!("only chat and messages stream"),
    }
}

/// The `(event name, data)` of every event of a streamed body that has data.
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

/// A provider's error sent mid-stream, and what the client must get for it.
struct MidStream {
    /// The provider behind the model called.
    kind: Kind,
    door: Door,
    model: &'static str,
    /// `(status, provider's type or gRPC status)` of the provider's error event.
    error: (u16, &'static str),
    /// The client's `error.type` (in the door's dialect).
    client_type: &'static str,
}

impl Fakes {
    /// The next stream from `kind`'s fake breaks off after `after` events with an error
    /// event echoing the key.
    fn error_mid_stream_next(&self, kind: Kind, after: usize, error: (u16, &str), echo: KeyEcho) {
        let (status, error_type) = error;
        match kind {
            Kind::OpenAi => self.openai.error_mid_stream_next(after, error_type, echo),
            Kind::Azure => self.azure.error_mid_stream_next(after, error_type, echo),
            Kind::Anthropic => self
                .anthropic
                .error_mid_stream_next(after, error_type, echo),
            Kind::Gemini => self
                .gemini
                .error_mid_stream_next(after, status, error_type, echo),
        }
    }
}

on_default_driver! {
    fn errors_sent_mid_stream_reach_the_client_mapped_in_its_dialect_without_the_key(driver) {
        let fakes = Fakes::start();
        let (gw, key) = gateway(&fakes, driver);
        let cases = [
            // OpenAI-format streams relayed to OpenAI clients.
            MidStream { kind: Kind::OpenAi, door: Door::Chat, model: "gpt",
                        error: (500, "server_error"), client_type: "upstream_error" },
            MidStream { kind: Kind::Azure, door: Door::Chat, model: "azure-gpt",
                        error: (429, "requests"), client_type: "rate_limit_error" },
            // Anthropic's stream passed through to `/v1/messages`.
            MidStream { kind: Kind::Anthropic, door: Door::Messages, model: "claude",
                        error: (529, "overloaded_error"), client_type: "overloaded_error" },
            // Translated mid-stream.
            MidStream { kind: Kind::Anthropic, door: Door::Chat, model: "claude",
                        error: (529, "overloaded_error"), client_type: "upstream_error" },
            MidStream { kind: Kind::Gemini, door: Door::Chat, model: "gemini",
                        error: (429, "RESOURCE_EXHAUSTED"), client_type: "rate_limit_error" },
            MidStream { kind: Kind::OpenAi, door: Door::Messages, model: "gpt",
                        error: (500, "server_error"), client_type: "api_error" },
            MidStream { kind: Kind::Gemini, door: Door::Messages, model: "gemini",
                        error: (503, "UNAVAILABLE"), client_type: "overloaded_error" },
        ];
        for case in &cases {
            for echo in KeyEcho::ALL {
                let what = format!("{:?} via {:?} {echo:?}", case.kind, case.door);
                // After two events: the client has had content before the error.
                fakes.error_mid_stream_next(case.kind, 2, case.error, echo);
                let response = call_stream(&gw, &key, case.door, case.model);
                assert_eq!(response.status, 200, "{what}: {}", response.text());
                assert_nothing_of(case.kind.key(), &response, &what);
                let events = sse_events(&response.text());
                let errors: Vec<usize> = events
                    .iter()
                    .enumerate()
                    .filter(|(_, (name, data))| {
                        name.as_deref() == Some("error") || data.contains("\"error\"")
                    })
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(errors.len(), 1, "{what}: {events:?}");
                let at = errors[0];
                assert!(at > 0, "{what}: nothing before the error: {events:?}");
                let (name, data) = &events[at];
                let body: Value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("{what}: {e}: {data}"));
                let error = body["error"].as_object().unwrap_or_else(|| panic!("{what}: {body}"));
                if case.door == Door::Messages {
                    assert_eq!(name.as_deref(), Some("error"), "{what}");
                    assert_eq!(body["type"], "error", "{what}: {body}");
                    assert_eq!(body.as_object().unwrap().len(), 2, "{what}: {body}");
                    assert_eq!(error.len(), 2, "{what}: {body}");
                    // Nothing follows Anthropic's error event.
                    assert_eq!(at + 1, events.len(), "{what}: {events:?}");
                } else {
                    assert_eq!(name.as_deref(), None, "{what}");
                    assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
                    assert_eq!(error.len(), 3, "{what}: {body}");
                    assert!(error["code"].is_string(), "{what}: {body}");
                    // At most the end marker follows.
                    let after: Vec<&str> = events[at + 1..].iter().map(|(_, d)| d.as_str()).collect();
                    assert!(after.is_empty() || after == ["[DONE]"], "{what}: {events:?}");
                }
                assert_eq!(error["type"], case.client_type, "{what}: {body}");
                let message = error["message"].as_str().unwrap();
                assert!(message.contains("[redacted]"), "{what}: {body}");
                assert!(message.chars().count() <= 513, "{what}: {body}");
            }
        }
    }
}

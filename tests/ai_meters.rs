//! Token meters, budgets and the usage ledger end to end (issue 4): the real
//! gateway with 2 workers in front of a fake OpenAI server that reports the
//! usage each test chooses, keys issued through the admin API, and the spend
//! read back from `/admin/usage`, `credentialflow usage` and the access log.
//!
//! The first tests drive the fake itself with a raw client, so a failure
//! further down is the gateway's and not the fake's.

mod common;

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::client::contains;
use common::fake_openai::{error_body, reply_pieces, DEFAULT_REPLY, FAKE_TOKEN_LIMIT};
use common::gateway::DIR;
use common::keys::*;
use common::*;
use serde_json::{json, Value};

/// The provider's own API key, given to the gateway as `env:FAKE_OPENAI_KEY`.
const PROVIDER_KEY: &str = "sk-fake-provider-0123456789abcdef";

/// The client-facing model most tests use; priced 1.0 / 2.0 USD per Mtok
/// (0.5 for cached prompt tokens).
const MINI: &str = "gpt-4o-mini";

/// What the gateway must send upstream for [`MINI`].
const MINI_UPSTREAM: &str = "gpt-4o-mini-2024-07-18";

/// A second model, priced 2.5 / 10.0 USD per Mtok.
const BIG: &str = "gpt-4o";

/// A response is settled (its reservation corrected to the reported usage)
/// as the upstream's answer ends, which may trail the client's last byte by
/// a moment; the next request of a metering test waits this long first.
const SETTLE: Duration = Duration::from_millis(100);

/// The ledger is written at least once a second; the brief's margin on top.
const LEDGER_FLUSH: Duration = Duration::from_millis(1500);

/// A short prompt is estimated at well under 50 tokens, so a request with
/// `max_tokens = 10` reserves less than this.
const SMALL_RESERVATION: u64 = 60;

/// Tolerance for USD amounts: a ledger may round each request's cost to a
/// nano-USD, and a report sums a few of them.
const USD_EPSILON: f64 = 1e-8;

// ---------------------------------------------------------------------------
// Config and requests
// ---------------------------------------------------------------------------

/// A `[server]` section with 2 workers, the given `data_dir` and `access_log`.
fn server_toml(data_dir: &str, access_log: &str) -> String {
    format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\n\
         data_dir = \"{data_dir}\"\n\
         access_log = \"{access_log}\"\n\
         workers = 2\n"
    )
}

/// The fake as `[[provider]] openai`, and the models [`MINI`] and [`BIG`] on it.
fn ai_tables(fake: &FakeOpenAi) -> String {
    format!(
        r#"
[[provider]]
name = "openai"
kind = "openai"
base_url = "{base_url}"
api_key = "env:FAKE_OPENAI_KEY"

[[model]]
name = "{MINI}"
provider = "openai"
upstream_model = "{MINI_UPSTREAM}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
cached_input_price_per_mtok = 0.5

[[model]]
name = "{BIG}"
provider = "openai"
upstream_model = "{BIG}"
input_price_per_mtok = 2.5
output_price_per_mtok = 10.0
"#,
        base_url = fake.base_url()
    )
}

/// A whole gateway config: data in `data_dir`, `extra` tables (teams) appended.
fn ai_config(fake: &FakeOpenAi, data_dir: &str, access_log: &str, extra: &str) -> String {
    format!(
        "{}\n{}\n{extra}\n",
        server_toml(data_dir, access_log),
        ai_tables(fake)
    )
}

/// Starts a gateway with the provider key in its environment.
fn start_with(config_toml: &str, driver: Driver) -> Gateway {
    Gateway::builder(config_toml, driver)
        .env("FAKE_OPENAI_KEY", PROVIDER_KEY)
        .start()
}

/// A gateway in front of `fake` with its data in its own dir, no access log,
/// and `extra` tables.
fn ai_gateway(fake: &FakeOpenAi, extra: &str, driver: Driver) -> Gateway {
    let data_dir = format!("{DIR}/data");
    start_with(&ai_config(fake, &data_dir, "", extra), driver)
}

/// Issues keys through the admin API; each is in force on every worker when
/// its answer arrives.
fn create_keys(gw: &Gateway, bodies: &[Value]) -> Vec<IssuedKey> {
    bodies.iter().map(|body| create_key(gw, body)).collect()
}

/// One key through [`create_keys`].
fn create_one_key(gw: &Gateway, body: Value) -> IssuedKey {
    create_keys(gw, &[body]).remove(0)
}

/// How a chat request is streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `"stream"` absent: one JSON answer.
    Whole,
    /// `"stream": true` without `stream_options`.
    Stream,
    /// `"stream": true, "stream_options": {"include_usage": true}`.
    StreamWithUsage,
}

/// A short chat request for `model` with `max_tokens = 10`.
fn chat_body(model: &str, mode: Mode) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": "Say hello." }
        ],
        "max_tokens": 10,
        "temperature": 0.2
    });
    match mode {
        Mode::Whole => {}
        Mode::Stream => body["stream"] = json!(true),
        Mode::StreamWithUsage => {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
    }
    body
}

/// `POST /v1/chat/completions` with `body` on a new connection, presenting
/// `key` as a Bearer token (nothing when `None`).
fn post_chat(addr: std::net::SocketAddr, key: Option<&str>, body: &Value) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let bytes = body.to_string().into_bytes();
    roundtrip(
        addr,
        &request("POST", "/v1/chat/completions", &headers, &bytes),
    )
}

/// [`post_chat`] of a short request for `model` in `mode` by `key`.
fn chat(gw: &Gateway, key: &str, model: &str, mode: Mode) -> Response {
    post_chat(gw.addr(), Some(key), &chat_body(model, mode))
}

/// Fails the test unless `response` is a 200 carrying the fake's reply
/// (whole, or streamed to `data: [DONE]`), then waits [`SETTLE`].
fn expect_admitted(response: &Response, mode: Mode, what: &str) {
    assert_eq!(
        response.status,
        200,
        "{what}: expected 200, got {} {}",
        response.status,
        response.text()
    );
    match mode {
        Mode::Whole => assert_eq!(
            response.json()["choices"][0]["message"]["content"],
            json!(DEFAULT_REPLY),
            "{what}: {}",
            response.text()
        ),
        Mode::Stream | Mode::StreamWithUsage => {
            let events = sse_data(&response.body);
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "{what}: the stream must end with data: [DONE]: {}",
                response.text()
            );
            assert_eq!(streamed_text(&events), DEFAULT_REPLY, "{what}");
        }
    }
    sleep(SETTLE);
}

/// Fails the test unless `response` is the budget refusal:
/// 429 `insufficient_quota` / `insufficient_quota`.
fn expect_budget_refused(response: &Response, what: &str) {
    assert_eq!(
        response.status,
        429,
        "{what}: expected the budget's 429, got {} {}",
        response.status,
        response.text()
    );
    response.assert_error(429, "insufficient_quota");
    assert_eq!(
        response.json()["error"]["code"],
        json!("insufficient_quota"),
        "{what}: {}",
        response.text()
    );
}

/// The `data:` payloads of a server-sent event stream, in order.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.trim().to_string())
        .collect()
}

/// Every chunk of a stream but `[DONE]`, as JSON.
fn sse_chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("chunk {e:?}: {err}")))
        .collect()
}

/// The assistant text a stream carried: its content deltas in order.
fn streamed_text(events: &[String]) -> String {
    sse_chunks(events)
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Whether `chunk` is the usage-only chunk (`"choices": []`).
fn is_usage_chunk(chunk: &Value) -> bool {
    chunk["choices"].as_array().is_some_and(|c| c.is_empty())
}

/// Whether `value` is a Go-style duration as OpenAI sends in
/// `x-ratelimit-reset-*`: one or more number+unit groups ("250ms", "1s",
/// "1.5s", "6m0s").
fn is_go_duration(value: &str) -> bool {
    let mut rest = value;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 || rest[..digits].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "us", "µs", "ns", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
    }
    true
}

/// Fails the test unless `response` is the TPM refusal with OpenAI's token headers.
fn expect_tokens_limited(response: &Response, tpm: u64, what: &str) {
    assert_eq!(
        response.status,
        429,
        "{what}: expected the TPM 429, got {} {}",
        response.status,
        response.text()
    );
    response.assert_error(429, "rate_limit_error");
    assert_eq!(
        response.json()["error"]["code"],
        json!("tokens_limit_exceeded"),
        "{what}"
    );
    let retry_after: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Retry-After is not whole seconds: {e}"));
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    assert_eq!(
        response.headers_named("x-ratelimit-limit-tokens"),
        vec![tpm.to_string().as_str()],
        "{what}"
    );
    let remaining: u64 = response
        .header("x-ratelimit-remaining-tokens")
        .unwrap_or_else(|| panic!("{what}: no x-ratelimit-remaining-tokens"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{what}: x-ratelimit-remaining-tokens: {e}"));
    assert!(
        remaining < SMALL_RESERVATION,
        "{what}: refused although {remaining} tokens remain"
    );
    let reset = response
        .header("x-ratelimit-reset-tokens")
        .unwrap_or_else(|| panic!("{what}: no x-ratelimit-reset-tokens"));
    assert!(
        is_go_duration(reset),
        "{what}: x-ratelimit-reset-tokens {reset:?} is not a duration like 1.5s"
    );
}

// ---------------------------------------------------------------------------
// Usage reports
// ---------------------------------------------------------------------------

/// One row of a usage report, as the test expects it.
#[derive(Debug, Clone, PartialEq)]
struct UsageRow {
    group: String,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
}

impl UsageRow {
    fn new(group: &str, requests: u64, prompt: u64, completion: u64, cost_usd: f64) -> UsageRow {
        UsageRow {
            group: group.to_string(),
            requests,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_usd,
        }
    }

    /// Reads a row of `[{"group","requests","prompt_tokens","completion_tokens","cost_usd"}]`.
    fn of(json: &Value) -> UsageRow {
        let count = |name: &str| {
            json[name]
                .as_u64()
                .unwrap_or_else(|| panic!("usage row has no integer {name:?}: {json}"))
        };
        UsageRow {
            group: json["group"]
                .as_str()
                .unwrap_or_else(|| panic!("usage row has no string group: {json}"))
                .to_string(),
            requests: count("requests"),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            cost_usd: json["cost_usd"]
                .as_f64()
                .unwrap_or_else(|| panic!("usage row has no number cost_usd: {json}")),
        }
    }

    /// Equal, with USD compared to [`USD_EPSILON`].
    fn matches(&self, other: &UsageRow) -> bool {
        self.group == other.group
            && self.requests == other.requests
            && self.prompt_tokens == other.prompt_tokens
            && self.completion_tokens == other.completion_tokens
            && (self.cost_usd - other.cost_usd).abs() < USD_EPSILON
    }
}

/// Whether `report` has exactly the rows `expected`, in any order.
fn report_matches(report: &[UsageRow], expected: &[UsageRow]) -> bool {
    report.len() == expected.len()
        && expected
            .iter()
            .all(|want| report.iter().any(|got| got.matches(want)))
}

/// Parses a usage report (a JSON array of rows).
fn parse_report(json: &Value) -> Vec<UsageRow> {
    json.as_array()
        .unwrap_or_else(|| panic!("a usage report is a JSON array: {json}"))
        .iter()
        .map(UsageRow::of)
        .collect()
}

/// `GET /admin/usage?group_by=GROUP_BY` as rows.
fn admin_usage(gw: &Gateway, group_by: &str) -> Vec<UsageRow> {
    let response = admin(
        gw,
        "GET",
        &format!("/admin/usage?group_by={group_by}"),
        None,
    );
    assert_eq!(
        response.status,
        200,
        "/admin/usage?group_by={group_by}: {}",
        response.text()
    );
    parse_report(&response.json())
}

/// `credentialflow usage --config <gw's config> --group-by GROUP_BY --json` as rows.
fn cli_usage(gw: &Gateway, group_by: &str) -> Vec<UsageRow> {
    let out = run_cli(
        &config_path(gw),
        gw.dir(),
        &["usage", "--group-by", group_by, "--json"],
        &[("FAKE_OPENAI_KEY", PROVIDER_KEY)],
    );
    out.assert_ok("usage --json");
    let json: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`usage --json` printed no JSON ({e}): {:?}", out.stdout));
    parse_report(&json)
}

/// Waits for the ledger, then polls `report` until it has exactly `expected`
/// (up to [`WAIT`]); fails the test with the last report otherwise.
fn expect_report(what: &str, expected: &[UsageRow], mut report: impl FnMut() -> Vec<UsageRow>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = report();
        if report_matches(&rows, expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: expected {expected:#?}\ngot {rows:#?}"
        );
        sleep(Duration::from_millis(200));
    }
}

/// USD for `prompt` (of which `cached`) and `completion` tokens at per-Mtok prices.
fn cost(
    prompt: u64,
    cached: u64,
    completion: u64,
    input: f64,
    cached_input: f64,
    output: f64,
) -> f64 {
    ((prompt - cached) as f64 * input + cached as f64 * cached_input + completion as f64 * output)
        / 1e6
}

/// The cost of a [`MINI`] request without cached tokens.
fn mini_cost(prompt: u64, completion: u64) -> f64 {
    cost(prompt, 0, completion, 1.0, 0.5, 2.0)
}

/// The cost of a [`BIG`] request.
fn big_cost(prompt: u64, completion: u64) -> f64 {
    cost(prompt, 0, completion, 2.5, 2.5, 10.0)
}

// ---------------------------------------------------------------------------
// The fake itself
// ---------------------------------------------------------------------------

/// A raw `POST path` to the fake with its provider key, keep-alive.
fn fake_post(path: &str, body: &Value) -> Vec<u8> {
    let auth = format!("Bearer {PROVIDER_KEY}");
    request(
        "POST",
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("X-Extra-Header", "Kept"),
        ],
        body.to_string().as_bytes(),
    )
}

#[test]
fn fake_answers_a_chat_completion_with_the_usage_it_was_set_to_report() {
    let fake = FakeOpenAi::start();
    fake.set_usage(120, 30, 64);
    fake.set_reply("Hi there.");
    let response = roundtrip(
        fake.addr(),
        &fake_post("/v1/chat/completions", &chat_body(MINI, Mode::Whole)),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("content-length").is_some());
    assert_eq!(
        response.header("x-ratelimit-limit-tokens"),
        Some(FAKE_TOKEN_LIMIT.to_string().as_str())
    );
    let json = response.json();
    assert_eq!(json["object"], json!("chat.completion"));
    assert_eq!(json["model"], json!(MINI));
    assert_eq!(json["choices"][0]["message"]["role"], json!("assistant"));
    assert_eq!(json["choices"][0]["message"]["content"], json!("Hi there."));
    assert_eq!(json["choices"][0]["finish_reason"], json!("stop"));
    assert_eq!(json["usage"]["prompt_tokens"], json!(120));
    assert_eq!(json["usage"]["completion_tokens"], json!(30));
    assert_eq!(json["usage"]["total_tokens"], json!(150));
    assert_eq!(
        json["usage"]["prompt_tokens_details"]["cached_tokens"],
        json!(64)
    );
}

#[test]
fn fake_records_each_request_with_lowercased_headers_and_its_json_body() {
    let fake = FakeOpenAi::start();
    let body = chat_body(MINI, Mode::Whole);
    let mut client = Client::connect(fake.addr());
    // Two requests on one connection: the fake keeps it alive.
    for _ in 0..2 {
        client.send(&fake_post("/v1/chat/completions", &body));
        assert_eq!(client.read_final_response().status, 200);
    }
    assert_eq!(fake.request_count(), 2);
    let requests = fake.requests();
    assert_eq!(requests[0].connection, requests[1].connection);
    let last = fake.last_request();
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/v1/chat/completions");
    assert_eq!(last.header("x-extra-header"), Some("Kept"));
    assert!(last.headers.iter().any(|(n, _)| n == "x-extra-header"));
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert_eq!(last.json(), body);
}

#[test]
fn fake_streams_the_reply_in_pieces_without_usage_unless_asked() {
    let fake = FakeOpenAi::start();
    fake.set_reply("one two three four");
    fake.set_usage(11, 4, 0);
    let response = roundtrip(
        fake.addr(),
        &fake_post("/v1/chat/completions", &chat_body(MINI, Mode::Stream)),
    );
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/event-stream")));
    assert!(response.header_has_token("transfer-encoding", "chunked"));
    let events = sse_data(&response.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_chunks(&events);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == json!("chat.completion.chunk")));
    assert!(!chunks.iter().any(is_usage_chunk), "{}", response.text());
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(streamed_text(&events), "one two three four");
    // role chunk + one per word + the finish chunk
    assert_eq!(chunks.len(), 1 + 4 + 1);
    assert_eq!(reply_pieces("one two three four").len(), 4);
}

#[test]
fn fake_sends_the_usage_only_chunk_just_before_done_when_asked() {
    let fake = FakeOpenAi::start();
    fake.set_usage(11, 4, 2);
    let response = roundtrip(
        fake.addr(),
        &fake_post(
            "/v1/chat/completions",
            &chat_body(MINI, Mode::StreamWithUsage),
        ),
    );
    assert_eq!(response.status, 200);
    let events = sse_data(&response.body);
    let chunks = sse_chunks(&events);
    let (usage_chunk, others) = chunks.split_last().expect("chunks");
    assert!(is_usage_chunk(usage_chunk), "{usage_chunk}");
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], json!(11));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], json!(4));
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        json!(2)
    );
    assert!(others
        .iter()
        .all(|c| c["usage"].is_null() && !is_usage_chunk(c)));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(streamed_text(&events), DEFAULT_REPLY);
}

#[test]
fn fake_paces_stream_chunks_by_the_stream_delay() {
    let fake = FakeOpenAi::start();
    fake.set_reply("a b c");
    fake.set_stream_delay(Duration::from_millis(60));
    let started = Instant::now();
    let response = roundtrip(
        fake.addr(),
        &fake_post("/v1/chat/completions", &chat_body(MINI, Mode::Stream)),
    );
    assert_eq!(response.status, 200);
    // 6 events (role, a, b, c, finish, [DONE]): 5 pauses.
    assert!(
        started.elapsed() >= Duration::from_millis(5 * 60),
        "stream took only {:?}",
        started.elapsed()
    );
}

#[test]
fn fake_fail_next_answers_n_openai_errors_then_recovers() {
    let fake = FakeOpenAi::start();
    fake.fail_next(429, "insufficient_quota", 2);
    let body = chat_body(MINI, Mode::Whole);
    let mut client = Client::connect(fake.addr());
    for _ in 0..2 {
        client.send(&fake_post("/v1/chat/completions", &body));
        let response = client.read_final_response();
        assert_eq!(response.status, 429);
        assert_eq!(
            response.json(),
            error_body("insufficient_quota", "The fake was told to fail.")
        );
        assert_eq!(
            response.json()["error"]["code"],
            json!("insufficient_quota")
        );
    }
    client.send(&fake_post("/v1/chat/completions", &body));
    assert_eq!(client.read_final_response().status, 200);
    assert_eq!(fake.request_count(), 3);
}

#[test]
fn fake_answers_embeddings_with_one_vector_per_input_and_prompt_usage() {
    let fake = FakeOpenAi::start();
    fake.set_usage(9, 0, 0);
    let body = json!({ "model": "text-embedding-3-small", "input": ["a", "b"] });
    let response = roundtrip(fake.addr(), &fake_post("/v1/embeddings", &body));
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert_eq!(json["object"], json!("list"));
    assert_eq!(json["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["data"][1]["object"], json!("embedding"));
    assert_eq!(json["data"][1]["index"], json!(1));
    assert!(json["data"][0]["embedding"]
        .as_array()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(
        json["usage"],
        json!({ "prompt_tokens": 9, "total_tokens": 9 })
    );
}

#[test]
fn fake_refuses_a_request_without_an_api_key_like_openai() {
    let fake = FakeOpenAi::start();
    let body = chat_body(MINI, Mode::Whole).to_string();
    let response = roundtrip(
        fake.addr(),
        &request(
            "POST",
            "/v1/chat/completions",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        ),
    );
    assert_eq!(response.status, 401);
    assert_eq!(
        response.json()["error"]["type"],
        json!("invalid_request_error")
    );
}

// ---------------------------------------------------------------------------
// The front door
// ---------------------------------------------------------------------------

/// Fails the test if `secret` appears in any header or the body `fake` received.
fn assert_no_trace_of(fake: &FakeOpenAi, secret: &str) {
    for request in fake.requests() {
        for (name, value) in &request.headers {
            assert!(
                !value.contains(secret),
                "the provider saw the virtual key in {name}"
            );
        }
        assert!(
            request.header("x-api-key").is_none(),
            "{:?}",
            request.headers
        );
        assert!(
            !contains(&request.body, secret.as_bytes()),
            "the provider saw the virtual key in the body"
        );
    }
}

on_default_driver! {
    fn chat_reaches_the_provider_with_its_key_and_upstream_model_only(driver) {
        let fake = FakeOpenAi::start();
        let gw = ai_gateway(&fake, "", driver);
        let key = create_one_key(&gw, json!({ "name": "front-door" }));

        for mode in [Mode::Whole, Mode::Stream] {
            let sent = chat_body(MINI, mode);
            let before = fake.request_count();
            let response = post_chat(gw.addr(), Some(&key.secret), &sent);
            expect_admitted(&response, mode, &format!("{mode:?}"));
            assert_eq!(fake.request_count(), before + 1, "{mode:?}");

            let received = fake.last_request();
            assert_eq!(received.method, "POST");
            assert_eq!(received.path, "/v1/chat/completions");
            assert_eq!(
                received.headers_named("authorization"),
                vec![format!("Bearer {PROVIDER_KEY}").as_str()],
                "{mode:?}"
            );
            let body = received.json();
            assert_eq!(body["model"], json!(MINI_UPSTREAM), "{mode:?}");
            assert_eq!(body["messages"], sent["messages"], "{mode:?}");
            assert_eq!(body["max_tokens"], sent["max_tokens"], "{mode:?}");
            assert_eq!(body["temperature"], sent["temperature"], "{mode:?}");
        }
        assert_no_trace_of(&fake, &key.secret);
    }
}

on_default_driver! {
    fn missing_key_unknown_model_and_forbidden_model_never_reach_the_provider(driver) {
        let fake = FakeOpenAi::start();
        let gw = ai_gateway(&fake, "", driver);
        let big_only = create_one_key(&gw, json!({ "name": "big-only", "models": [BIG] }));

        post_chat(gw.addr(), None, &chat_body(MINI, Mode::Whole))
            .assert_error(401, "authentication_error");
        chat(&gw, &big_only.secret, "no-such-model", Mode::Whole)
            .assert_error(404, "not_found_error");
        chat(&gw, &big_only.secret, MINI, Mode::Whole).assert_error(403, "permission_error");
        chat(&gw, &big_only.secret, MINI, Mode::Stream).assert_error(403, "permission_error");
        assert_eq!(fake.request_count(), 0, "a refused request reached the provider");

        // The allowed model goes through.
        expect_admitted(&chat(&gw, &big_only.secret, BIG, Mode::Whole), Mode::Whole, "gpt-4o");
        assert_eq!(fake.request_count(), 1);
    }
}

// ---------------------------------------------------------------------------
// Streaming usage
// ---------------------------------------------------------------------------

on_default_driver! {
    fn stream_usage_is_requested_upstream_and_hidden_from_a_client_that_did_not_ask(driver) {
        let fake = FakeOpenAi::start();
        fake.set_usage(21, 7, 0);
        let gw = ai_gateway(&fake, "", driver);
        let key = create_one_key(&gw, json!({ "name": "quiet-stream" }));

        let response = chat(&gw, &key.secret, MINI, Mode::Stream);
        expect_admitted(&response, Mode::Stream, "stream without include_usage");
        assert_eq!(
            fake.last_request().json()["stream_options"]["include_usage"],
            json!(true),
            "the gateway must ask the provider for the usage chunk"
        );
        let events = sse_data(&response.body);
        let chunks = sse_chunks(&events);
        assert!(
            !chunks.iter().any(is_usage_chunk),
            "the client did not ask for usage but got a chunk with \"choices\": []: {}",
            response.text()
        );
        assert!(!chunks.is_empty());
    }
}

on_default_driver! {
    fn client_that_asked_for_stream_usage_gets_the_usage_chunk_before_done(driver) {
        let fake = FakeOpenAi::start();
        fake.set_usage(21, 7, 0);
        let gw = ai_gateway(&fake, "", driver);
        let key = create_one_key(&gw, json!({ "name": "usage-stream" }));

        let response = chat(&gw, &key.secret, MINI, Mode::StreamWithUsage);
        expect_admitted(&response, Mode::StreamWithUsage, "stream with include_usage");
        let events = sse_data(&response.body);
        let chunks = sse_chunks(&events);
        let usage_chunks: Vec<&Value> = chunks.iter().filter(|c| is_usage_chunk(c)).collect();
        assert_eq!(usage_chunks.len(), 1, "{}", response.text());
        let last = chunks.last().expect("chunks");
        assert!(is_usage_chunk(last), "the usage chunk comes last, before [DONE]");
        assert_eq!(last["usage"]["prompt_tokens"], json!(21));
        assert_eq!(last["usage"]["completion_tokens"], json!(7));
    }
}

// ---------------------------------------------------------------------------
// Tokens per minute
// ---------------------------------------------------------------------------

/// Key `tpm = 1000`; the fake reports 10 + 590 tokens a request, so two
/// requests (reserving < 60 each at admission) are admitted and leave the
/// key 200 tokens over its minute: the third is refused however slowly the
/// test runs (refill is 1000 / 60 s, about 17 tokens a second). The brief's
/// 10 + 490 would leave exactly 0, and a third request reserving ~20 tokens
/// would then be admitted after about a second of refill on a loaded
/// machine.
fn tpm_admits_two_then_refuses(driver: Driver, mode: Mode) {
    const TPM: u64 = 1000;
    let fake = FakeOpenAi::start();
    fake.set_usage(10, 590, 0);
    let gw = ai_gateway(&fake, "", driver);
    let key = create_one_key(&gw, json!({ "name": "tpm", "tpm": TPM }));

    for i in 1..=2 {
        let response = chat(&gw, &key.secret, MINI, mode);
        expect_admitted(&response, mode, &format!("request {i}"));
        assert_eq!(
            response.headers_named("x-ratelimit-limit-tokens"),
            vec![TPM.to_string().as_str()],
            "request {i}: the gateway's own token limit replaces the provider's"
        );
        assert!(response.header("x-ratelimit-remaining-tokens").is_some());
        assert!(response.header("x-ratelimit-reset-tokens").is_some());
    }
    let refused = chat(&gw, &key.secret, MINI, mode);
    expect_tokens_limited(&refused, TPM, "request 3");
    assert_eq!(
        fake.request_count(),
        2,
        "the refused request reached the provider"
    );
}

on_default_driver! {
    fn tpm_refuses_once_reported_usage_fills_the_minute(driver) {
        tpm_admits_two_then_refuses(driver, Mode::Whole);
    }
}

on_default_driver! {
    fn tpm_counts_streamed_usage_the_client_did_not_ask_for(driver) {
        tpm_admits_two_then_refuses(driver, Mode::Stream);
    }
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

#[test]
fn token_budget_refuses_once_reported_usage_reaches_it() {
    let fake = FakeOpenAi::start();
    fake.set_usage(400, 100, 0);
    let gw = ai_gateway(&fake, "", Driver::Uring);
    let key = create_one_key(&gw, json!({ "name": "tokens", "budget_tokens": 1000 }));

    // 500 + 500 settled = 1000; a third reservation would exceed the budget.
    for i in 1..=2 {
        expect_admitted(
            &chat(&gw, &key.secret, MINI, Mode::Whole),
            Mode::Whole,
            &format!("request {i}"),
        );
    }
    expect_budget_refused(&chat(&gw, &key.secret, MINI, Mode::Whole), "request 3");
    expect_budget_refused(
        &chat(&gw, &key.secret, MINI, Mode::Stream),
        "request 4 (stream)",
    );
    assert_eq!(fake.request_count(), 2);
}

#[test]
fn usd_budget_refuses_once_priced_usage_would_exceed_it() {
    let fake = FakeOpenAi::start();
    // 100000 * 1.0 / 1e6 + 50000 * 2.0 / 1e6 = 0.2 USD a request.
    fake.set_usage(100_000, 50_000, 0);
    let gw = ai_gateway(&fake, "", Driver::Uring);
    let key = create_one_key(&gw, json!({ "name": "usd", "budget_usd": 0.5 }));

    // Spent before each: 0, 0.2, 0.4 (+ a reservation of < 0.0002 USD) <= 0.5.
    for i in 1..=3 {
        expect_admitted(
            &chat(&gw, &key.secret, MINI, Mode::Whole),
            Mode::Whole,
            &format!("request {i}"),
        );
    }
    // 0.6 spent.
    expect_budget_refused(&chat(&gw, &key.secret, MINI, Mode::Whole), "request 4");
    assert_eq!(fake.request_count(), 3);
}

on_default_driver! {
    fn stream_that_crosses_the_budget_finishes_and_the_next_request_is_refused(driver) {
        let fake = FakeOpenAi::start();
        let gw = ai_gateway(&fake, "", driver);
        let key = create_one_key(&gw, json!({ "name": "crossing", "budget_tokens": 1000 }));

        fake.set_usage(500, 100, 0);
        expect_admitted(&chat(&gw, &key.secret, MINI, Mode::Whole), Mode::Whole, "first (600)");

        // 600 spent + a small reservation fits; the stream then reports 600 more.
        fake.set_usage(500, 100, 0);
        fake.set_reply("this stream runs past the budget in several chunks");
        fake.set_stream_delay(Duration::from_millis(30));
        let response = chat(&gw, &key.secret, MINI, Mode::Stream);
        assert_eq!(response.status, 200, "{}", response.text());
        let events = sse_data(&response.body);
        assert_eq!(
            streamed_text(&events),
            "this stream runs past the budget in several chunks",
            "the client must get every chunk of a stream that crosses the budget"
        );
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        sleep(SETTLE);

        fake.set_reply(DEFAULT_REPLY);
        expect_budget_refused(&chat(&gw, &key.secret, MINI, Mode::Whole), "after the stream");
        assert_eq!(fake.request_count(), 2);
    }
}

#[test]
fn team_budget_spent_by_one_key_refuses_the_other_keys_of_the_team() {
    let fake = FakeOpenAi::start();
    fake.set_usage(400, 700, 0);
    let teams = "\n[[team]]\nname = \"t\"\nbudget_tokens = 1000\n";
    let gw = ai_gateway(&fake, teams, Driver::Uring);
    let keys = create_keys(
        &gw,
        &[
            json!({ "name": "t-one", "team": "t" }),
            json!({ "name": "t-two", "team": "t" }),
            json!({ "name": "u-one", "team": "u" }),
        ],
    );
    let (one, two, other_team) = (&keys[0], &keys[1], &keys[2]);

    expect_admitted(
        &chat(&gw, &one.secret, MINI, Mode::Whole),
        Mode::Whole,
        "t-one spends 1100",
    );
    expect_budget_refused(
        &chat(&gw, &two.secret, MINI, Mode::Whole),
        "t-two after t-one spent",
    );
    expect_budget_refused(&chat(&gw, &one.secret, MINI, Mode::Whole), "t-one again");
    expect_admitted(
        &chat(&gw, &other_team.secret, MINI, Mode::Whole),
        Mode::Whole,
        "a key of another team",
    );
    assert_eq!(fake.request_count(), 2);
}

// ---------------------------------------------------------------------------
// The usage ledger
// ---------------------------------------------------------------------------

#[test]
fn usage_report_by_key_model_and_team_sums_provider_usage_and_cost() {
    let fake = FakeOpenAi::start();
    let gw = ai_gateway(&fake, "", Driver::Uring);
    let keys = create_keys(
        &gw,
        &[
            json!({ "name": "alpha-key", "team": "alpha" }),
            json!({ "name": "beta-key", "team": "beta" }),
        ],
    );
    let (alpha, beta) = (&keys[0], &keys[1]);

    fake.set_usage(1000, 500, 0);
    for mode in [Mode::Whole, Mode::Stream, Mode::StreamWithUsage] {
        expect_admitted(
            &chat(&gw, &alpha.secret, MINI, mode),
            mode,
            &format!("alpha {mode:?}"),
        );
    }
    fake.set_usage(2000, 1000, 0);
    for i in 1..=2 {
        expect_admitted(
            &chat(&gw, &beta.secret, BIG, Mode::Whole),
            Mode::Whole,
            &format!("beta {i}"),
        );
    }
    let alpha_cost = 3.0 * mini_cost(1000, 500);
    let beta_cost = 2.0 * big_cost(2000, 1000);
    assert!((alpha_cost - 0.006).abs() < USD_EPSILON);
    assert!((beta_cost - 0.03).abs() < USD_EPSILON);

    let reports = [
        (
            "key",
            vec![
                UsageRow::new(&alpha.id, 3, 3000, 1500, alpha_cost),
                UsageRow::new(&beta.id, 2, 4000, 2000, beta_cost),
            ],
        ),
        (
            "model",
            vec![
                UsageRow::new(MINI, 3, 3000, 1500, alpha_cost),
                UsageRow::new(BIG, 2, 4000, 2000, beta_cost),
            ],
        ),
        (
            "team",
            vec![
                UsageRow::new("alpha", 3, 3000, 1500, alpha_cost),
                UsageRow::new("beta", 2, 4000, 2000, beta_cost),
            ],
        ),
    ];
    sleep(LEDGER_FLUSH);
    for (group_by, expected) in &reports {
        expect_report(
            &format!("/admin/usage?group_by={group_by}"),
            expected,
            || admin_usage(&gw, group_by),
        );
        expect_report(
            &format!("credentialflow usage --group-by {group_by}"),
            expected,
            || cli_usage(&gw, group_by),
        );
    }
}

/// A config for a second gateway on `first`'s data dir (and the same fake).
fn config_on_same_data_dir(fake: &FakeOpenAi, first: &Gateway) -> String {
    let data_dir = first.dir().join("data");
    ai_config(fake, &data_dir.to_string_lossy(), "", "")
}

#[test]
fn spent_budget_and_usage_survive_a_clean_restart() {
    let fake = FakeOpenAi::start();
    fake.set_usage(400, 700, 0);
    let mut first = ai_gateway(&fake, "", Driver::Uring);
    let key = create_one_key(&first, json!({ "name": "restart", "budget_tokens": 1000 }));
    expect_admitted(
        &chat(&first, &key.secret, MINI, Mode::Whole),
        Mode::Whole,
        "spend 1100",
    );
    expect_budget_refused(
        &chat(&first, &key.secret, MINI, Mode::Whole),
        "before the restart",
    );

    // No wait for the ledger: a clean stop loses nothing.
    let status = first.stop();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let second = start_with(&config_on_same_data_dir(&fake, &first), Driver::Uring);
    expect_budget_refused(
        &chat(&second, &key.secret, MINI, Mode::Whole),
        "after the restart",
    );
    assert_eq!(fake.request_count(), 1);
    let spent = admin_usage(&second, "key");
    let row = spent
        .iter()
        .find(|r| r.group == key.id)
        .unwrap_or_else(|| panic!("no usage for {} after the restart: {spent:#?}", key.id));
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (400, 700),
        "{row:?}"
    );
    assert!(
        (row.cost_usd - mini_cost(400, 700)).abs() < USD_EPSILON,
        "{row:?}"
    );
}

#[test]
fn usage_older_than_a_second_survives_kill_9() {
    let fake = FakeOpenAi::start();
    fake.set_usage(123, 45, 0);
    let mut first = ai_gateway(&fake, "", Driver::Uring);
    let key = create_one_key(&first, json!({ "name": "killed" }));
    for i in 1..=2 {
        expect_admitted(
            &chat(&first, &key.secret, MINI, Mode::Whole),
            Mode::Whole,
            &format!("request {i}"),
        );
    }
    sleep(LEDGER_FLUSH);
    first.signal(libc::SIGKILL);
    first.wait_exit(WAIT);

    let second = start_with(&config_on_same_data_dir(&fake, &first), Driver::Uring);
    let expected = [UsageRow::new(&key.id, 2, 246, 90, 2.0 * mini_cost(123, 45))];
    let report = admin_usage(&second, "key");
    assert!(
        report_matches(&report, &expected),
        "after kill -9: expected {expected:#?}\ngot {report:#?}"
    );
}

// ---------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------

/// The first JSON line of the file at `path` whose `key_id` is `key_id`,
/// waiting for the log writer up to [`WAIT`].
fn access_log_line_of(path: &Path, key_id: &str) -> Value {
    let mut found = None;
    let seen = wait_until(WAIT, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["key_id"] == json!(key_id));
        found.is_some()
    });
    assert!(
        seen,
        "no access-log line with key_id {key_id} in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    found.unwrap()
}

#[test]
fn access_log_line_of_an_ai_request_has_key_team_model_and_usage() {
    let fake = FakeOpenAi::start();
    fake.set_usage(1000, 100, 400);
    let config = ai_config(
        &fake,
        &format!("{DIR}/data"),
        &format!("{DIR}/access.log"),
        "",
    );
    let gw = start_with(&config, Driver::Uring);
    let key = create_one_key(&gw, json!({ "name": "logged", "team": "t" }));
    expect_admitted(
        &chat(&gw, &key.secret, MINI, Mode::Whole),
        Mode::Whole,
        "logged request",
    );

    let log_path = gw.dir().join("access.log");
    let entry = access_log_line_of(&log_path, &key.id);
    assert_eq!(entry["team"], json!("t"), "{entry}");
    assert_eq!(
        entry["model"],
        json!(MINI),
        "the client-facing model: {entry}"
    );
    let usage = &entry["usage"];
    assert_eq!(usage["prompt_tokens"], json!(1000), "{entry}");
    assert_eq!(usage["completion_tokens"], json!(100), "{entry}");
    assert_eq!(usage["cached_tokens"], json!(400), "{entry}");
    // 600 uncached * 1.0 + 400 cached * 0.5 + 100 * 2.0, per million.
    let want = cost(1000, 400, 100, 1.0, 0.5, 2.0);
    assert!((want - 0.001).abs() < USD_EPSILON);
    let got = usage["cost_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("usage.cost_usd is not a number: {entry}"));
    assert!(
        (got - want).abs() < USD_EPSILON,
        "cost_usd {got}, want {want}: {entry}"
    );

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !log.contains(&key.secret),
        "the access log holds the virtual key"
    );
    assert!(
        !log.contains(PROVIDER_KEY),
        "the access log holds the provider key"
    );
}

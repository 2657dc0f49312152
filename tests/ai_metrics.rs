//! The AI families of `/metrics` end to end (issue 17, contract "Metrics"): the real gateway
//! with 2 workers in front of the fake OpenAI and Anthropic providers, plain and streamed
//! requests through both front doors, and the scrape compared with what the fakes reported,
//! with the ledger (`/admin/usage`) and with the attempts, breaker and limits the requests
//! went through.

mod common;

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::Duration;

use common::gateway::DIR;
use common::keys::*;
use common::*;
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-fake-openai-metrics-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-fake-metrics-0123456789";

/// On the fake OpenAI; priced 1.0 / 2.0 USD per Mtok. Falls back to [`CLAUDE`].
const MINI: &str = "gpt-mini";
/// On the fake Anthropic; priced 3.0 / 15.0 USD per Mtok.
const CLAUDE: &str = "claude";

/// How long the tests wait for a settled request to show in a scrape: a response is
/// settled as the provider's answer ends, which may trail the client's last byte.
const WAIT: Duration = Duration::from_secs(5);

/// The ledger is written at least once a second.
const LEDGER_FLUSH: Duration = Duration::from_millis(1500);

/// A config for both fakes: one model on each, `MINI` falling back to `CLAUDE`, no retries
/// (so each failing request is one attempt on the OpenAI fake), team `alpha`, and `extra`.
fn config(openai: &FakeOpenAi, anthropic: &FakeAnthropic, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "{DIR}/data"
access_log = ""
workers = 2

[ai]
max_retries = 0

[[provider]]
name = "openai"
kind = "openai"
base_url = "{openai_url}"
api_key = "env:FAKE_OPENAI_KEY"

[[provider]]
name = "anthropic"
kind = "anthropic"
base_url = "{anthropic_url}"
api_key = "env:FAKE_ANTHROPIC_KEY"

[[model]]
name = "{MINI}"
provider = "openai"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
fallbacks = ["{CLAUDE}"]

[[model]]
name = "{CLAUDE}"
provider = "anthropic"
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0

[[team]]
name = "alpha"

{extra}
"#,
        openai_url = openai.base_url(),
        anthropic_url = anthropic.base_url(),
    )
}

fn start(openai: &FakeOpenAi, anthropic: &FakeAnthropic, extra: &str) -> Gateway {
    Gateway::builder(&config(openai, anthropic, extra), Driver::Uring)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .env("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
        .forbid_in_output("the OpenAI key", OPENAI_KEY)
        .forbid_in_output("the Anthropic key", ANTHROPIC_KEY)
        .start()
}

/// `POST path` with `body`, presenting `key` as a Bearer token.
fn post(addr: SocketAddr, path: &str, key: &str, body: &Value) -> Response {
    let auth = format!("Bearer {key}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
        ("Authorization", auth.as_str()),
    ];
    roundtrip(
        addr,
        &request("POST", path, &headers, body.to_string().as_bytes()),
    )
}

/// A chat completion for `model`, streamed or not.
fn chat(gw: &Gateway, key: &str, model: &str, stream: bool) -> Response {
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": "Say hello." }],
        "max_tokens": 10,
        "stream": stream,
    });
    post(gw.addr(), "/v1/chat/completions", key, &body)
}

/// An Anthropic Messages request for `model`, streamed or not.
fn messages(gw: &Gateway, key: &str, model: &str, stream: bool) -> Response {
    let body = json!({
        "model": model,
        "max_tokens": 10,
        "messages": [{ "role": "user", "content": "Say hello." }],
        "stream": stream,
    });
    post(gw.addr(), "/v1/messages", key, &body)
}

fn expect_ok(response: &Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
}

/// `GET /metrics` on the admin listener.
fn scrape(gw: &Gateway) -> String {
    let response = gw.admin_get("/metrics");
    assert_eq!(response.status, 200, "/metrics: {}", response.text());
    response.text()
}

/// The value of the series `series` (name and labels exactly as rendered), if present.
fn value<'a>(scrape: &'a str, series: &str) -> Option<&'a str> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

/// Waits until `series` has `expected` in a scrape; fails with the last scrape otherwise.
fn expect_series(gw: &Gateway, series: &str, expected: &str) {
    let mut last = String::new();
    let seen = wait_until(WAIT, || {
        last = scrape(gw);
        value(&last, series) == Some(expected)
    });
    assert!(
        seen,
        "{series} should be {expected}, is {:?} in\n{last}",
        value(&last, series)
    );
}

/// Nano-USD as the metrics render USD.
fn usd(nano: u64) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

/// Nano-USD of `prompt` and `completion` tokens at `input` / `output` USD per Mtok.
fn cost_nano(prompt: u64, completion: u64, input_per_mtok: u64, output_per_mtok: u64) -> u64 {
    // USD per Mtok is nano-USD per 1000 tokens.
    (prompt * input_per_mtok + completion * output_per_mtok) * 1000
}

/// One row of `/admin/usage?group_by=model`: requests, prompt and completion tokens, USD.
fn ledger_row(gw: &Gateway, model: &str) -> Option<(u64, u64, u64, f64)> {
    let response = admin(gw, "GET", "/admin/usage?group_by=model", None);
    assert_eq!(response.status, 200, "/admin/usage: {}", response.text());
    let rows = response.json();
    let row = rows
        .as_array()?
        .iter()
        .find(|r| r["group"] == json!(model))?;
    Some((
        row["requests"].as_u64()?,
        row["prompt_tokens"].as_u64()?,
        row["completion_tokens"].as_u64()?,
        row["cost_usd"].as_f64()?,
    ))
}

#[test]
fn token_and_cost_counters_equal_the_provider_reported_usage_and_the_ledger() {
    let openai = FakeOpenAi::start();
    let anthropic = FakeAnthropic::start();
    let gw = start(&openai, &anthropic, "");
    let alpha = create_key(&gw, &json!({ "name": "alpha-key", "team": "alpha" }));
    let loner = create_key(
        &gw,
        &json!({ "name": "no-team-key", "team": "unconfigured" }),
    );

    // OpenAI: plain and streamed, for team alpha, 1000 + 500 tokens (200 cached) each.
    openai.set_usage(1000, 500, 200);
    expect_ok(&chat(&gw, &alpha.secret, MINI, false), "plain chat");
    expect_ok(&chat(&gw, &alpha.secret, MINI, true), "streamed chat");
    // Anthropic through the Messages door, plain and streamed, 300 + 40 tokens each, for a
    // key whose team is not configured (team="").
    anthropic.set_usage(300, 40, 0);
    expect_ok(
        &messages(&gw, &loner.secret, CLAUDE, false),
        "plain messages",
    );
    expect_ok(
        &messages(&gw, &loner.secret, CLAUDE, true),
        "streamed messages",
    );

    let mini = r#"model="gpt-mini",provider="openai",team="alpha""#;
    let claude = r#"model="claude",provider="anthropic",team="""#;
    expect_series(
        &gw,
        &format!("credentialflow_ai_tokens_total{{{mini},kind=\"prompt\"}}"),
        "2000",
    );
    expect_series(
        &gw,
        &format!("credentialflow_ai_tokens_total{{{claude},kind=\"completion\"}}"),
        "80",
    );
    let text = scrape(&gw);
    let expected = [
        (
            format!("credentialflow_ai_tokens_total{{{mini},kind=\"completion\"}}"),
            "1000".to_string(),
        ),
        (
            format!("credentialflow_ai_tokens_total{{{mini},kind=\"cached\"}}"),
            "400".to_string(),
        ),
        (
            format!("credentialflow_ai_tokens_total{{{claude},kind=\"prompt\"}}"),
            "600".to_string(),
        ),
        (
            format!("credentialflow_ai_tokens_total{{{claude},kind=\"cached\"}}"),
            "0".to_string(),
        ),
        (
            format!("credentialflow_ai_cost_usd_total{{{mini}}}"),
            usd(2 * cost_nano(1000, 500, 1, 2)),
        ),
        (
            format!("credentialflow_ai_cost_usd_total{{{claude}}}"),
            usd(2 * cost_nano(300, 40, 3, 15)),
        ),
        (
            r#"credentialflow_ai_requests_total{model="gpt-mini",provider="openai",status="2xx"}"#
                .to_string(),
            "2".to_string(),
        ),
        (
            r#"credentialflow_ai_requests_total{model="claude",provider="anthropic",status="2xx"}"#
                .to_string(),
            "2".to_string(),
        ),
        (
            r#"credentialflow_ai_time_to_first_token_seconds_count{model="gpt-mini"}"#.to_string(),
            "2".to_string(),
        ),
        (
            r#"credentialflow_ai_time_to_first_token_seconds_count{model="claude"}"#.to_string(),
            "2".to_string(),
        ),
        (
            r#"credentialflow_provider_attempts_total{provider="openai",outcome="200"}"#
                .to_string(),
            "2".to_string(),
        ),
        (
            r#"credentialflow_provider_attempts_total{provider="anthropic",outcome="200"}"#
                .to_string(),
            "2".to_string(),
        ),
        // The front doors are counted under their own paths.
        (
            r#"credentialflow_requests_total{route="/v1/chat/completions",status="200"}"#
                .to_string(),
            "2".to_string(),
        ),
        (
            r#"credentialflow_requests_total{route="/v1/messages",status="200"}"#.to_string(),
            "2".to_string(),
        ),
    ];
    for (series, want) in &expected {
        assert_eq!(
            value(&text, series),
            Some(want.as_str()),
            "{series} in\n{text}"
        );
    }
    assert!(!text.contains("(ai)"), "no route=\"(ai)\" left:\n{text}");
    assert!(
        !text.contains("unconfigured"),
        "a team that is not configured is no label value"
    );
    assert!(
        !text.contains("credentialflow_key_"),
        "no per-key series without [metrics] per_key"
    );
    assert!(
        !text.contains(&alpha.secret) && !text.contains(OPENAI_KEY),
        "no secret in a scrape"
    );

    // The ledger recorded the same requests, tokens and cost.
    sleep(LEDGER_FLUSH);
    let mut rows = (None, None);
    wait_until(WAIT, || {
        rows = (ledger_row(&gw, MINI), ledger_row(&gw, CLAUDE));
        rows.0.is_some_and(|r| r.0 == 2) && rows.1.is_some_and(|r| r.0 == 2)
    });
    let (mini_row, claude_row) = (
        rows.0.expect("gpt-mini in the ledger"),
        rows.1.expect("claude in the ledger"),
    );
    assert_eq!((mini_row.0, mini_row.1, mini_row.2), (2, 2000, 1000));
    assert_eq!((claude_row.0, claude_row.1, claude_row.2), (2, 600, 80));
    let metric_usd = |series: &str| -> f64 { value(&text, series).unwrap().parse().unwrap() };
    assert!((mini_row.3 - metric_usd(&expected[4].0)).abs() < 1e-9);
    assert!((claude_row.3 - metric_usd(&expected[5].0)).abs() < 1e-9);
}

#[test]
fn attempts_by_outcome_and_the_circuit_gauge_follow_a_failing_provider() {
    let openai = FakeOpenAi::start();
    let anthropic = FakeAnthropic::start();
    let gw = start(&openai, &anthropic, "");
    let key = create_key(&gw, &json!({ "name": "fallback" }));
    let circuit = r#"credentialflow_circuit_open{provider="openai"}"#;
    assert_eq!(value(&scrape(&gw), circuit), Some("0"), "closed at start");

    // Five requests: each fails once on OpenAI (503) and is answered by the fallback, and
    // five failures in a row open OpenAI's breaker.
    openai.fail_next(503, "server_error", 5);
    for i in 0..5 {
        expect_ok(&chat(&gw, &key.secret, MINI, i % 2 == 1), "fallback");
    }
    expect_series(&gw, circuit, "1");
    // With the circuit open, OpenAI is skipped at once.
    expect_ok(&chat(&gw, &key.secret, MINI, false), "circuit open");
    let attempts = |provider: &str, outcome: &str| {
        format!(
            r#"credentialflow_provider_attempts_total{{provider="{provider}",outcome="{outcome}"}}"#
        )
    };
    expect_series(&gw, &attempts("anthropic", "200"), "6");
    let text = scrape(&gw);
    assert_eq!(
        value(&text, &attempts("openai", "503")),
        Some("5"),
        "{text}"
    );
    assert_eq!(
        value(&text, &attempts("openai", "circuit open")),
        Some("1"),
        "{text}"
    );
    assert_eq!(value(&text, &attempts("openai", "200")), None, "{text}");
    assert_eq!(openai.request_count(), 5, "the open circuit sent nothing");
    // The requests are counted on the model that served them.
    assert_eq!(
        value(
            &text,
            r#"credentialflow_ai_requests_total{model="claude",provider="anthropic",status="2xx"}"#
        ),
        Some("6")
    );
    assert_eq!(
        value(
            &text,
            r#"credentialflow_circuit_open{provider="anthropic"}"#
        ),
        Some("0")
    );
}

#[test]
fn limit_rejections_are_counted_by_kind() {
    let openai = FakeOpenAi::start();
    let anthropic = FakeAnthropic::start();
    let gw = start(&openai, &anthropic, "");
    let rated = create_key(&gw, &json!({ "name": "rated", "rpm": 1 }));
    let tokens = create_key(&gw, &json!({ "name": "tokens", "tpm": 1 }));
    let budget = create_key(&gw, &json!({ "name": "budget", "budget_tokens": 1 }));

    expect_ok(&chat(&gw, &rated.secret, MINI, false), "first of rpm 1");
    for _ in 0..2 {
        assert_eq!(chat(&gw, &rated.secret, MINI, false).status, 429);
    }
    assert_eq!(chat(&gw, &tokens.secret, MINI, false).status, 429);
    // A budget of one token admits nothing the size of a request.
    let refused = chat(&gw, &budget.secret, MINI, false);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], json!("insufficient_quota"));

    let kind = |k: &str| format!(r#"credentialflow_limit_rejections_total{{kind="{k}"}}"#);
    expect_series(&gw, &kind("key_rate"), "2");
    let text = scrape(&gw);
    for (k, n) in [
        ("key_tokens", "1"),
        ("key_budget", "1"),
        ("concurrency", "0"),
        ("client_address", "0"),
        ("team_budget", "0"),
    ] {
        assert_eq!(value(&text, &kind(k)), Some(n), "{k} in\n{text}");
    }
    // Refused before any provider: no AI request, no attempt.
    assert_eq!(
        value(
            &text,
            r#"credentialflow_ai_requests_total{model="gpt-mini",provider="openai",status="2xx"}"#
        ),
        Some("1")
    );
    assert_eq!(
        value(
            &text,
            r#"credentialflow_requests_total{route="/v1/chat/completions",status="429"}"#
        ),
        Some("4")
    );
}

#[test]
fn per_key_series_are_capped_and_only_with_per_key_on() {
    let openai = FakeOpenAi::start();
    let anthropic = FakeAnthropic::start();
    let gw = start(
        &openai,
        &anthropic,
        "[metrics]\nper_key = true\nmax_keys = 1\n",
    );
    let first = create_key(&gw, &json!({ "name": "first" }));
    let second = create_key(&gw, &json!({ "name": "second" }));
    let third = create_key(&gw, &json!({ "name": "third" }));
    openai.set_usage(70, 30, 0);
    for key in [&first, &first, &second, &third] {
        expect_ok(&chat(&gw, &key.secret, MINI, false), "per-key");
    }
    let series = |key: &str, kind: &str| {
        format!(r#"credentialflow_key_tokens_total{{key="{key}",kind="{kind}"}}"#)
    };
    expect_series(&gw, &series(&first.id, "prompt"), "140");
    expect_series(&gw, &series("other", "prompt"), "140");
    let text = scrape(&gw);
    assert_eq!(value(&text, &series(&first.id, "completion")), Some("60"));
    assert_eq!(
        value(
            &text,
            &format!(r#"credentialflow_key_requests_total{{key="{}"}}"#, first.id)
        ),
        Some("2")
    );
    assert_eq!(
        value(&text, r#"credentialflow_key_cost_usd_total{key="other"}"#),
        Some(usd(2 * cost_nano(70, 30, 1, 2)).as_str())
    );
    assert!(
        !text.contains(&second.id) && !text.contains(&third.id),
        "past max_keys: other"
    );
    assert!(!text.contains(&first.secret), "ids, never secrets");
}

#[test]
fn build_info_and_process_series_are_present_and_sane() {
    let openai = FakeOpenAi::start();
    let anthropic = FakeAnthropic::start();
    let gw = start(&openai, &anthropic, "");
    let text = scrape(&gw);
    let build = format!(
        r#"credentialflow_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &build), Some("1"), "{text}");
    let number = |name: &str| -> f64 {
        value(&text, name)
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
            .parse()
            .unwrap()
    };
    let rss_kib = gw.proc_status_kib("VmRSS") as f64;
    let rss = number("process_resident_memory_bytes");
    assert!(
        rss > 0.5 * rss_kib * 1024.0 && rss < 2.0 * rss_kib * 1024.0,
        "RSS {rss} against /proc's {rss_kib} KiB"
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .unwrap()
        .count() as f64;
    let open_fds = number("process_open_fds");
    assert!(
        open_fds >= 5.0 && (open_fds - fds).abs() <= 4.0,
        "{open_fds} fds, /proc shows {fds}"
    );
    let cpu = number("process_cpu_seconds_total");
    assert!((0.0..60.0).contains(&cpu), "cpu {cpu}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = number("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "started {started}, now {now}"
    );
}

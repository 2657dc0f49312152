//! Streams a client leaves early are still charged (the real binary in front of
//! fake OpenAI, Anthropic and Gemini servers): after the client closes its
//! connection mid-stream, the gateway keeps reading the provider's stream to
//! the usage it reports at the end and settles budgets, TPM and the ledger
//! with it; a stream the provider never finishes is charged at least what it
//! relayed and what it reserved, and the drain stops at
//! `[ai] drain_after_disconnect_ms`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake_anthropic::ANTHROPIC_VERSION;
use common::fake_openai::StreamEnd;
use common::gateway::DIR;
use common::keys::*;
use common::*;
use credentialflow::ai::tokens::estimate_chat_prompt_tokens;
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-fake-openai-drain-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-fake-drain-0123456789";
const GEMINI_KEY: &str = "AIzaFakeGeminiDrain0123456789";

const OPENAI_MODEL: &str = "gpt-mini";
const CLAUDE_MODEL: &str = "claude";
const GEMINI_MODEL: &str = "gemini";

/// Words in the fakes' streamed replies: one event each.
const WORDS: usize = 100;

/// The pause between two events of a reply: 100 events take about 2 s.
const EVENT_DELAY: Duration = Duration::from_millis(20);

/// The completion tokens the fakes report at the end of a stream; nothing
/// else in these tests comes near it.
const REPORTED_COMPLETION: u64 = 777;

/// The prompt tokens the fakes report.
const REPORTED_PROMPT: u64 = 21;

/// How long a drained stream may take to be settled and reach the ledger
/// (the rest of the stream, then the ledger's once-a-second write).
const SETTLED: Duration = Duration::from_secs(15);

struct Fakes {
    openai: FakeOpenAi,
    anthropic: FakeAnthropic,
    gemini: FakeGemini,
}

impl Fakes {
    /// The three fakes, each streaming [`WORDS`] words at [`EVENT_DELAY`] and
    /// reporting [`REPORTED_PROMPT`] + [`REPORTED_COMPLETION`] tokens.
    fn start() -> Fakes {
        let reply = (0..WORDS)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let fakes = Fakes {
            openai: FakeOpenAi::start(),
            anthropic: FakeAnthropic::start(),
            gemini: FakeGemini::start(),
        };
        fakes.openai.set_reply(&reply);
        fakes.openai.set_stream_delay(EVENT_DELAY);
        fakes
            .openai
            .set_usage(REPORTED_PROMPT, REPORTED_COMPLETION, 0);
        fakes.anthropic.set_reply(&reply);
        fakes.anthropic.set_stream_delay(EVENT_DELAY);
        fakes
            .anthropic
            .set_usage(REPORTED_PROMPT, REPORTED_COMPLETION, 0);
        fakes.gemini.set_reply(&reply);
        fakes.gemini.set_stream_delay(EVENT_DELAY);
        fakes
            .gemini
            .set_usage(REPORTED_PROMPT, REPORTED_COMPLETION, 0);
        fakes
    }
}

/// A gateway (2 workers, access log) in front of `fakes`, `extra` appended.
fn start_gateway(fakes: &Fakes, extra: &str, driver: Driver) -> Gateway {
    start_config(
        &gateway_config(fakes, &format!("{DIR}/data"), extra),
        driver,
    )
}

/// Starts a gateway on `config` with the providers' keys in its environment.
fn start_config(config: &str, driver: Driver) -> Gateway {
    Gateway::builder(config, driver)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .env("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
        .env("FAKE_GEMINI_KEY", GEMINI_KEY)
        .start()
}

/// The config of a gateway in front of `fakes` keeping its data in
/// `data_dir`, `extra` appended.
fn gateway_config(fakes: &Fakes, data_dir: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "{data_dir}"
access_log = "{DIR}/access.log"
workers = 2

[[provider]]
name = "openai"
kind = "openai"
base_url = "{openai}"
api_key = "env:FAKE_OPENAI_KEY"

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
name = "{OPENAI_MODEL}"
provider = "openai"
upstream_model = "gpt-4o-mini-2024-07-18"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0

[[model]]
name = "{CLAUDE_MODEL}"
provider = "anthropic"
upstream_model = "claude-3-5-haiku-20241022"
input_price_per_mtok = 1.0
output_price_per_mtok = 5.0

[[model]]
name = "{GEMINI_MODEL}"
provider = "gemini"
upstream_model = "gemini-1.5-flash"
input_price_per_mtok = 0.5
output_price_per_mtok = 1.5

{extra}
"#,
        openai = fakes.openai.base_url(),
        anthropic = fakes.anthropic.base_url(),
        gemini = fakes.gemini.base_url(),
    )
}

/// A key made through the admin API (`body`), in force on every worker once
/// the admin API answers.
fn key_for(gw: &Gateway, body: Value) -> IssuedKey {
    create_key(gw, &body)
}

/// Which front door a request goes to.
#[derive(Clone, Copy, Debug)]
enum Dialect {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// A streamed request for `model` at `front`, asking for `max_tokens`.
fn stream_request(front: Dialect, model: &str, key: &str, max_tokens: u64) -> Vec<u8> {
    let auth = format!("Bearer {key}");
    let (path, headers, body) = match front {
        Dialect::OpenAi => (
            "/v1/chat/completions",
            vec![("Authorization", auth.as_str())],
            json!({
                "model": model,
                "messages": [{ "role": "user", "content": "Count for me." }],
                "max_tokens": max_tokens,
                "stream": true,
            }),
        ),
        Dialect::Anthropic => (
            "/v1/messages",
            vec![("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)],
            json!({
                "model": model,
                "max_tokens": max_tokens,
                "messages": [{ "role": "user", "content": "Count for me." }],
                "stream": true,
            }),
        ),
    };
    let mut all = vec![("Content-Type", "application/json")];
    all.extend(headers);
    request("POST", path, &all, body.to_string().as_bytes())
}

/// Sends `raw`, reads the streamed answer up to the word `w{last_word}`, then
/// closes the connection without reading further.
fn leave_mid_stream(addr: SocketAddr, raw: &[u8], last_word: usize) {
    let mut client = Client::connect(addr);
    client.send(raw);
    let head = client.read_head();
    assert_eq!(head.status, 200, "{}", head.text());
    let mut reader = client.body_reader(&head);
    // Every dialect puts the word last in a JSON string: `"... w50"`.
    let needle = format!("w{last_word}\"");
    client.read_body_until(&mut reader, needle.as_bytes());
    drop(client);
}

/// Polls `/admin/usage?group_by=model` until the row of `model` satisfies
/// `settled`; returns it, or fails the test with the last report seen.
fn usage_row_when(gw: &Gateway, model: &str, settled: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let mut row = None;
    let found = wait_until(SETTLED, || {
        let response = admin(gw, "GET", "/admin/usage?group_by=model", None);
        assert_eq!(response.status, 200, "{}", response.text());
        last = response.json();
        row = last
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["group"] == model))
            .filter(|r| settled(r))
            .cloned();
        row.is_some()
    });
    assert!(found, "usage of {model} never settled as expected: {last}");
    row.unwrap()
}

/// The access-log lines of `model`'s requests, once there are `n`.
fn access_log_lines(gw: &Gateway, model: &str, n: usize) -> Vec<Value> {
    let path = gw.dir().join("access.log");
    let mut lines = Vec::new();
    let found = wait_until(SETTLED, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        lines = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["model"] == model)
            .collect();
        lines.len() >= n
    });
    assert!(found, "{n} access-log lines for {model}: {lines:?}");
    lines
}

// ---------------------------------------------------------------------------
// A client that leaves is charged the provider's reported usage
// ---------------------------------------------------------------------------

/// A client reads half of a 100-event stream from `model` at `front` and
/// leaves; the ledger and the access log then show the usage the provider
/// reported at the end of the stream, which the gateway read to its end.
fn leaving_client_is_charged_the_reported_usage(
    fakes: &Fakes,
    front: Dialect,
    model: &str,
    driver: Driver,
) {
    let gw = start_gateway(fakes, "", driver);
    let key = key_for(&gw, json!({ "name": "leaver", "team": "t" }));
    leave_mid_stream(
        gw.addr(),
        &stream_request(front, model, &key.secret, 64),
        50,
    );

    let row = usage_row_when(&gw, model, |r| {
        r["requests"] == 1 && r["completion_tokens"] != 0
    });
    assert_eq!(row["completion_tokens"], REPORTED_COMPLETION, "{row}");
    assert_eq!(row["prompt_tokens"], REPORTED_PROMPT, "{row}");
    let line = &access_log_lines(&gw, model, 1)[0];
    assert_eq!(
        line["usage"]["completion_tokens"], REPORTED_COMPLETION,
        "{line}"
    );
}

on_both_drivers! {
    fn openai_client_leaving_an_openai_stream_is_charged_the_reported_usage(driver) {
        let fakes = Fakes::start();
        leaving_client_is_charged_the_reported_usage(&fakes, Dialect::OpenAi, OPENAI_MODEL, driver);
        assert_eq!(fakes.openai.answered_count(), 1, "the provider's stream was read to its end");
        assert_eq!(fakes.openai.cut_short_count(), 0);
    }
}

on_both_drivers! {
    fn anthropic_client_leaving_an_anthropic_stream_is_charged_the_reported_usage(driver) {
        let fakes = Fakes::start();
        leaving_client_is_charged_the_reported_usage(
            &fakes,
            Dialect::Anthropic,
            CLAUDE_MODEL,
            driver,
        );
        assert_eq!(fakes.anthropic.answered_count(), 1);
    }
}

#[test]
fn openai_client_leaving_a_gemini_stream_is_charged_the_reported_usage() {
    let fakes = Fakes::start();
    leaving_client_is_charged_the_reported_usage(
        &fakes,
        Dialect::OpenAi,
        GEMINI_MODEL,
        Driver::Uring,
    );
    assert_eq!(fakes.gemini.answered_count(), 1);
}

#[test]
fn anthropic_client_leaving_an_openai_stream_is_charged_the_reported_usage() {
    let fakes = Fakes::start();
    leaving_client_is_charged_the_reported_usage(
        &fakes,
        Dialect::Anthropic,
        OPENAI_MODEL,
        Driver::Epoll,
    );
    assert_eq!(fakes.openai.answered_count(), 1);
}

// ---------------------------------------------------------------------------
// A stream that cannot be finished is charged at least what it relayed and
// what it reserved, and the drain is bounded
// ---------------------------------------------------------------------------

/// The drain bound these tests configure: far below the fakes' stall limit
/// (60 s) and the default upstream timeout (300 s).
const SHORT_DRAIN: &str = "[ai]\ndrain_after_disconnect_ms = 300\n";

on_both_drivers! {
    fn stalled_stream_is_charged_its_reservation_and_the_drain_stops_at_its_bound(driver) {
        let fakes = Fakes::start();
        // 40 events, then silence until the gateway hangs up: no usage ever.
        fakes.openai.set_stream_end(StreamEnd::StallAfter(40));
        let gw = start_gateway(&fakes, SHORT_DRAIN, driver);
        let key = key_for(&gw, json!({ "name": "stall", "team": "t" }));
        let reservation = 500;
        let raw = stream_request(Dialect::OpenAi, OPENAI_MODEL, &key.secret, reservation);
        leave_mid_stream(gw.addr(), &raw, 20);

        // The gateway hangs up on the silent provider once the drain bound
        // passes, long before the provider's own stall limit would.
        let hung_up = wait_until(WAIT, || fakes.openai.cut_short_count() == 1);
        assert!(hung_up, "the drain did not stop at drain_after_disconnect_ms");
        assert_eq!(fakes.openai.answered_count(), 0);

        let row = usage_row_when(&gw, OPENAI_MODEL, |r| r["requests"] == 1);
        assert_eq!(row["completion_tokens"], reservation, "the reservation, not 0: {row}");
    }
}

on_both_drivers! {
    fn stream_cut_by_the_provider_is_charged_the_tokens_it_relayed(driver) {
        let fakes = Fakes::start();
        // The provider closes after 60 events; the request reserves 1 token.
        fakes.openai.set_stream_end(StreamEnd::CutAfter(60));
        let gw = start_gateway(&fakes, SHORT_DRAIN, driver);
        let key = key_for(&gw, json!({ "name": "cut", "team": "t" }));
        let raw = stream_request(Dialect::OpenAi, OPENAI_MODEL, &key.secret, 1);
        leave_mid_stream(gw.addr(), &raw, 30);

        let row = usage_row_when(&gw, OPENAI_MODEL, |r| r["requests"] == 1);
        // At least the 31 words the client saw, each one token or more.
        let charged = row["completion_tokens"].as_u64().unwrap();
        assert!(charged >= 31, "the relayed tokens, not the 1 reserved: {row}");
        // And no more than the 60 events the provider sent could hold.
        assert!(charged <= 3 * 60, "{row}");
        // No usage was reported, so the prompt is the gateway's estimate: made at settlement,
        // since this key has no tokens-per-minute limit or budget that needed it up front.
        let prompt = json!({ "messages": [{ "role": "user", "content": "Count for me." }] });
        let estimate = estimate_chat_prompt_tokens("gpt-4o-mini-2024-07-18", &prompt);
        assert_eq!(row["prompt_tokens"], estimate, "the prompt estimate: {row}");
    }
}

#[test]
fn anthropic_stream_cut_after_message_start_is_not_charged_its_partial_usage() {
    let fakes = Fakes::start();
    // `message_start` reports 1 output token; the stream stops 30 events later.
    fakes.anthropic.set_stream_end(StreamEnd::CutAfter(30));
    let gw = start_gateway(&fakes, SHORT_DRAIN, Driver::Uring);
    let key = key_for(&gw, json!({ "name": "cut-claude", "team": "t" }));
    let raw = stream_request(Dialect::Anthropic, CLAUDE_MODEL, &key.secret, 300);
    leave_mid_stream(gw.addr(), &raw, 10);

    let row = usage_row_when(&gw, CLAUDE_MODEL, |r| r["requests"] == 1);
    assert_eq!(row["completion_tokens"], 300, "the reservation: {row}");
    assert_eq!(
        row["prompt_tokens"], REPORTED_PROMPT,
        "message_start's input count: {row}"
    );
}

#[test]
fn shutdown_stops_a_drain_at_once_and_the_cut_stream_is_still_charged() {
    let fakes = Fakes::start();
    // The provider goes silent for up to a minute and the drain would wait
    // ten: only shutdown can end this drain early.
    fakes.openai.set_stream_end(StreamEnd::StallAfter(40));
    let long_drain = "[ai]\ndrain_after_disconnect_ms = 600000\n";
    let mut first = start_gateway(&fakes, long_drain, Driver::Uring);
    let key = key_for(&first, json!({ "name": "shutdown", "team": "t" }));
    let raw = stream_request(Dialect::OpenAi, OPENAI_MODEL, &key.secret, 400);
    leave_mid_stream(first.addr(), &raw, 20);
    assert!(
        fakes.openai.wait_for_requests(1, WAIT),
        "the request reached the provider"
    );

    // drain_timeout_ms is 30 s by default: exiting well within it means the
    // drain stopped as shutdown began rather than being dropped at the end.
    first.signal(libc::SIGTERM);
    let status = first.wait_exit(WAIT);
    assert!(status.success(), "SIGTERM exit: {status:?}");

    // The stopped drain was settled as a cut stream before the exit.
    let data_dir = first.dir().join("data");
    let config = gateway_config(&fakes, &data_dir.to_string_lossy(), "");
    let second = start_config(&config, Driver::Uring);
    let row = usage_row_when(&second, OPENAI_MODEL, |r| r["requests"] == 1);
    assert_eq!(row["completion_tokens"], 400, "the reservation: {row}");
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

on_both_drivers! {
    fn budget_spent_by_streams_the_client_left_refuses_the_next_request(driver) {
        let fakes = Fakes::start();
        let gw = start_gateway(&fakes, "", driver);
        // Two left streams cost 2 x (21 + 777) = 1596 tokens once drained, and
        // a third (about 10 prompt + 64 reserved) no longer fits in 1650;
        // charged their prompt estimates only, they would cost under 100.
        let key = key_for(&gw, json!({ "name": "budget", "team": "t", "budget_tokens": 1650 }));
        for _ in 0..2 {
            let raw = stream_request(Dialect::OpenAi, OPENAI_MODEL, &key.secret, 64);
            leave_mid_stream(gw.addr(), &raw, 10);
        }
        usage_row_when(&gw, OPENAI_MODEL, |r| r["requests"] == 2 && r["completion_tokens"] != 0);

        let mut client = Client::connect(gw.addr());
        client.send(&stream_request(Dialect::OpenAi, OPENAI_MODEL, &key.secret, 64));
        let refused = client.read_response();
        refused.assert_error(429, "insufficient_quota");
        assert_eq!(fakes.openai.request_count(), 2, "the refused request never went upstream");
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

#[test]
fn drain_after_disconnect_ms_in_bounds_is_accepted_and_out_of_bounds_or_misspelled_is_not() {
    let ok = check_config(&config("[ai]\ndrain_after_disconnect_ms = 0\n"));
    assert_eq!(ok.code, Some(0), "{}", ok.output());
    for (extra, named) in [
        (
            "[ai]\ndrain_after_disconnect_ms = 600001\n",
            "drain_after_disconnect_ms",
        ),
        (
            "[ai]\ndrain_after_disconect_ms = 100\n",
            "drain_after_disconect_ms",
        ),
    ] {
        let out = check_config(&config(extra));
        assert_eq!(out.code, Some(1), "{extra} was accepted: {}", out.output());
        assert!(out.output().contains(named), "{extra}: {}", out.output());
    }
}

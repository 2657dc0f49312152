//! `vertex` providers: Gemini and Claude models on Google Vertex AI, authenticated with a
//! service account's tokens (issue 16; README, "Credentials the gateway obtains"). The
//! gateway signs a JWT-bearer assertion with the key file's private key, trades it at the
//! file's `token_uri` for an access token (once for many calls, again at 80% of its
//! lifetime), sends it as `Authorization: Bearer` on every Vertex call, refreshes it once
//! when Vertex answers 401 and retries the call, keeps using a valid token while the token
//! endpoint is down and answers 502 `upstream_credential_unavailable` once it has none.
//! Claude models go to `publishers/anthropic/...:rawPredict` in Anthropic's Messages form
//! (`anthropic_version: vertex-2023-10-16`, no `model`), every other model to
//! `publishers/google/...:generateContent` in Gemini's form, from both front doors, plain and
//! streamed, with usage metered as the fake reports it. The fake Vertex accepts only tokens
//! the fake Google token endpoint issued (after verifying the assertion's signature); the
//! fake's Claude side is itself checked against the Anthropic SDK's Vertex client
//! (`tests/reference/anthropic_vertex.py`).

mod common;
#[path = "reference/run.rs"]
mod run;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_google::{parse_form, service_account_json, SERVICE_ACCOUNT_JSON};
use common::fake_vertex::{FakeVertex, VERTEX_ANTHROPIC_VERSION};
use common::*;
use run::run_reference;
use serde_json::{json, Value};

const PROJECT: &str = "cf-test-project";
const REGION: &str = "us-east5";
const GEMINI: &str = "vx-gemini";
const GEMINI_UPSTREAM: &str = "gemini-2.5-flash";
const CLAUDE: &str = "vx-claude";
const CLAUDE_UPSTREAM: &str = "claude-sonnet-4@20250514";

/// A gateway config with one `vertex` provider at `base_url` whose service account is the
/// file `sa_path`, its two models, client auth off on the AI front doors, `ai_extra` in
/// `[ai]` and an access log.
fn vertex_config(base_url: &str, sa_path: &str, ai_extra: &str) -> String {
    config(&format!(
        r#"
[ai]
auth = "none"
{ai_extra}

[[provider]]
name = "vertex"
kind = "vertex"
base_url = "{base_url}"
project = "{PROJECT}"
region = "{REGION}"
service_account = "file:{sa_path}"

[[model]]
name = "{GEMINI}"
provider = "vertex"
upstream_model = "{GEMINI_UPSTREAM}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0

[[model]]
name = "{CLAUDE}"
provider = "vertex"
upstream_model = "{CLAUDE_UPSTREAM}"
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0
"#
    ))
    .replace("access_log = \"\"", "access_log = \"@DIR@/access.log\"")
}

/// The fake Vertex (with its token endpoint issuing `lifetime_s`-second tokens), the
/// service-account file pointing at it, and a gateway in front.
struct Setup {
    vertex: FakeVertex,
    gw: Gateway,
    /// Holds the service-account file, which the gateway reads again for every token.
    _dir: TempDir,
}

fn setup(lifetime_s: u64, ai_extra: &str, driver: Driver) -> Setup {
    let vertex = FakeVertex::start(PROJECT, REGION);
    vertex.google.set_token_lifetime(lifetime_s);
    let dir = TempDir::new("vertex-sa");
    let sa_path = dir.file("sa.json");
    std::fs::write(&sa_path, vertex.service_account_json()).unwrap();
    let gw = Gateway::start(
        &vertex_config(&vertex.base_url(), &sa_path, ai_extra),
        driver,
    );
    Setup {
        vertex,
        gw,
        _dir: dir,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Chat,
    Messages,
}

/// The request for `model` through `door`, streamed or not, as raw bytes (keep-alive).
fn call_bytes(door: Door, model: &str, stream: bool) -> Vec<u8> {
    let (path, body) = match door {
        Door::Chat => (
            "/v1/chat/completions",
            json!({"model": model, "stream": stream,
                   "messages": [{"role": "user", "content": "Say hello."}]}),
        ),
        Door::Messages => (
            "/v1/messages",
            json!({"model": model, "stream": stream, "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Say hello."}]}),
        ),
    };
    request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn call(addr: SocketAddr, door: Door, model: &str, stream: bool) -> Response {
    roundtrip(addr, &call_bytes(door, model, stream))
}

/// The `data:` payloads of a server-sent event stream as JSON.
fn events(response: &Response) -> Vec<Value> {
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]" && !data.is_empty())
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

/// The assistant text of an answer from `door`, whole or streamed.
fn answer_text(door: Door, stream: bool, response: &Response) -> String {
    match (door, stream) {
        (Door::Chat, false) => response.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        (Door::Messages, false) => response.json()["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        (Door::Chat, true) => events(response)
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect(),
        (Door::Messages, true) => events(response)
            .iter()
            .filter(|e| e["type"] == "content_block_delta")
            .filter_map(|e| e["delta"]["text"].as_str().map(String::from))
            .collect(),
    }
}

/// `credentialflow_credential_refresh_total{credential="vertex",result}` from `/metrics`.
fn refreshes(gw: &Gateway, result: &str) -> u64 {
    let scrape = gw.admin_get("/metrics").text();
    let series = format!(
        "credentialflow_credential_refresh_total{{credential=\"vertex\",result=\"{result}\"}} "
    );
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0)
}

/// `GET /admin/usage?group_by=model` as `model → (requests, prompt, completion)`.
fn usage_by_model(gw: &Gateway) -> Vec<(String, u64, u64, u64)> {
    let response = gw.admin_request("GET", "/admin/usage?group_by=model");
    assert_eq!(response.status, 200, "{}", response.text());
    let mut rows: Vec<(String, u64, u64, u64)> = response
        .json()
        .as_array()
        .expect("a usage report is an array")
        .iter()
        .map(|row| {
            (
                row["group"].as_str().unwrap_or_default().to_string(),
                row["requests"].as_u64().unwrap(),
                row["prompt_tokens"].as_u64().unwrap(),
                row["completion_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

on_both_drivers! {
    fn both_doors_reach_gemini_and_claude_plain_and_streamed_metered_as_reported(driver) {
        let Setup { vertex, gw, _dir } = setup(3600, "", driver);
        vertex.gemini.set_usage(31, 17, 0);
        vertex.anthropic.set_usage(23, 11, 0);
        let gemini_text = common::fake_gemini::DEFAULT_REPLY;
        let claude_text = common::fake_anthropic::DEFAULT_REPLY;
        for door in [Door::Chat, Door::Messages] {
            for stream in [false, true] {
                for (model, text) in [(GEMINI, gemini_text), (CLAUDE, claude_text)] {
                    let what = format!("{door:?} {model} stream={stream}");
                    let response = call(gw.addr(), door, model, stream);
                    assert_eq!(response.status, 200, "{what}: {}", response.text());
                    assert_eq!(answer_text(door, stream, &response), text, "{what}");
                    if !stream {
                        let usage = &response.json()["usage"];
                        let expected = match (door, model == GEMINI) {
                            (Door::Chat, true) => json!([31, 17]),
                            (Door::Chat, false) => json!([23, 11]),
                            (Door::Messages, true) => json!([31, 17]),
                            (Door::Messages, false) => json!([23, 11]),
                        };
                        let got = match door {
                            Door::Chat => json!([usage["prompt_tokens"], usage["completion_tokens"]]),
                            Door::Messages => json!([usage["input_tokens"], usage["output_tokens"]]),
                        };
                        assert_eq!(got, expected, "{what}: {usage}");
                    }
                }
            }
        }
        // One token for every call, and it is the token endpoint's.
        assert_eq!(vertex.google.hits(), 1, "{:?}", vertex.google.refusals());
        let tokens = vertex.tokens_seen();
        assert_eq!(tokens.len(), 1, "one token for all calls");
        assert_eq!(vertex.unauthenticated_count(), 0);
        let location = format!("/v1/projects/{PROJECT}/locations/{REGION}/publishers/");
        let mut methods = Vec::new();
        for seen in vertex.requests() {
            assert_eq!(
                seen.header("authorization"),
                Some(format!("Bearer {}", tokens[0]).as_str())
            );
            for key_header in ["x-goog-api-key", "x-api-key", "api-key", "anthropic-version"] {
                assert_eq!(seen.header(key_header), None, "{key_header} on {}", seen.target);
            }
            let rest = seen.target.strip_prefix(&location).unwrap_or_else(|| panic!("{}", seen.target));
            methods.push(rest.to_string());
            if rest.starts_with("anthropic/") {
                let body = seen.json();
                assert_eq!(body["anthropic_version"], VERTEX_ANTHROPIC_VERSION);
                assert!(body.get("model").is_none(), "{body}");
            } else {
                assert!(seen.json()["contents"].is_array());
            }
        }
        let gemini_path = format!("google/models/{GEMINI_UPSTREAM}");
        let claude_path = format!("anthropic/models/{CLAUDE_UPSTREAM}");
        let plain = [
            format!("{gemini_path}:generateContent"),
            format!("{claude_path}:rawPredict"),
        ];
        let streamed = [
            format!("{gemini_path}:streamGenerateContent?alt=sse"),
            format!("{claude_path}:streamRawPredict"),
        ];
        let expected: Vec<String> = [plain.clone(), streamed.clone(), plain, streamed].concat();
        assert_eq!(methods, expected);
        // The ledger has exactly what the fakes reported, per model.
        let want = vec![
            (CLAUDE.to_string(), 4, 4 * 23, 4 * 11),
            (GEMINI.to_string(), 4, 4 * 31, 4 * 17),
        ];
        assert!(
            wait_until(WAIT, || usage_by_model(&gw) == want),
            "{:?}",
            usage_by_model(&gw)
        );
    }
}

on_default_driver! {
    fn tokens_expiring_every_2s_are_refreshed_under_10s_of_traffic(driver) {
        let Setup { vertex, gw, _dir } = setup(2, "", driver);
        let started = Instant::now();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut client = Client::connect(gw.addr());
        let mut n = 0usize;
        while started.elapsed() < Duration::from_secs(10) {
            let (door, model) = match n % 4 {
                0 => (Door::Chat, GEMINI),
                1 => (Door::Chat, CLAUDE),
                2 => (Door::Messages, GEMINI),
                _ => (Door::Messages, CLAUDE),
            };
            n += 1;
            client.send(&call_bytes(door, model, n % 8 >= 4));
            let response = client.read_response();
            if response.status == 200 {
                ok += 1;
            } else {
                failed += 1;
                eprintln!("failed: {} {}", response.status, response.text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let hits = vertex.google.hits();
        let expected = 10.0 / (0.8 * 2.0) + 1.0;
        println!(
            "10 s of traffic, 2 s tokens: {ok} requests ok, {failed} failed, \
             {hits} token requests (expected about {expected:.1}), {} refused by Vertex",
            vertex.unauthenticated_count()
        );
        assert_eq!(failed, 0, "every request passes");
        assert!(ok > 50, "enough traffic to mean something: {ok}");
        assert!((5..=10).contains(&hits), "token requests in proportion to lifetimes: {hits}");
        assert_eq!(vertex.unauthenticated_count(), 0, "no call went with an expired token");
        assert!(vertex.google.refusals().is_empty(), "{:?}", vertex.google.refusals());
        assert!(refreshes(&gw, "ok") as usize >= hits - 1);
        assert_eq!(refreshes(&gw, "error"), 0);
    }
}

on_both_drivers! {
    fn a_revoked_token_is_refreshed_once_and_the_call_retried(driver) {
        // No retries of the call's own: the second try is the refresh's.
        let Setup { vertex, gw, _dir } = setup(3600, "max_retries = 0", driver);
        assert_eq!(call(gw.addr(), Door::Chat, GEMINI, false).status, 200);
        vertex.revoke_seen_tokens();
        let response = call(gw.addr(), Door::Chat, CLAUDE, false);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(vertex.google.hits(), 2, "one forced refresh");
        let sent: Vec<String> = vertex
            .requests()
            .iter()
            .map(|r| r.header("authorization").unwrap_or_default().to_string())
            .collect();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(sent[0], sent[1], "the refused call went with the first token");
        assert_ne!(sent[1], sent[2], "and was retried with a new one");
        assert_eq!(vertex.unauthenticated_count(), 1);
        // Streamed calls through the other door keep using the new token.
        let response = call(gw.addr(), Door::Messages, GEMINI, true);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(vertex.last_request().header("authorization"), Some(sent[2].as_str()));
        assert_eq!(vertex.google.hits(), 2);
    }
}

on_default_driver! {
    fn a_down_token_endpoint_keeps_the_valid_token_then_answers_502(driver) {
        let Setup { vertex, gw, _dir } = setup(3, "", driver);
        let issued = Instant::now();
        // The refreshes at 2.4 s, 3.4 s and 5.4 s fail (backoff 1 s, 2 s), the next succeeds.
        vertex.google.fail_next(&[503, 503, 503]);
        while issued.elapsed() < Duration::from_millis(2000) {
            let response = call(gw.addr(), Door::Chat, GEMINI, false);
            assert_eq!(response.status, 200, "at {:?}: {}", issued.elapsed(), response.text());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(wait_until(WAIT, || refreshes(&gw, "error") >= 1), "a failed refresh counted");
        std::thread::sleep(
            Duration::from_millis(3300).saturating_sub(issued.elapsed()),
        );
        let before = vertex.request_count();
        let response = call(gw.addr(), Door::Chat, CLAUDE, false);
        assert_eq!(response.status, 502, "{}", response.text());
        assert_eq!(response.json()["error"]["code"], "upstream_credential_unavailable");
        let response = call(gw.addr(), Door::Messages, GEMINI, true);
        assert_eq!(response.status, 502, "{}", response.text());
        assert_eq!(vertex.request_count(), before, "nothing sent without a token");
        assert!(gw.stderr().contains("fetch failed"), "a log line per failure");
        // Back up: the retry with backoff finds a token.
        assert!(
            wait_until(WAIT, || call(gw.addr(), Door::Chat, GEMINI, false).status == 200),
            "recovers once the endpoint answers"
        );
    }
}

on_default_driver! {
    fn no_token_assertion_or_private_key_appears_in_any_output(driver) {
        // Without retries of the call's own, both refused calls below fall within the
        // forced-refresh interval.
        let Setup { vertex, gw, _dir } = setup(3600, "max_retries = 0", driver);
        let mut seen = Vec::new();
        for door in [Door::Chat, Door::Messages] {
            for model in [GEMINI, CLAUDE] {
                for stream in [false, true] {
                    seen.push(call(gw.addr(), door, model, stream).text());
                }
            }
        }
        // A 401 cured by a refresh, then one that is not (forced refreshes are rate-limited):
        // Vertex's refusal reaches the client as the gateway's error.
        vertex.revoke_seen_tokens();
        seen.push(call(gw.addr(), Door::Chat, GEMINI, false).text());
        vertex.revoke_seen_tokens();
        for door in [Door::Chat, Door::Messages] {
            let refused = call(gw.addr(), door, CLAUDE, false);
            assert_eq!(refused.status, 502, "{}", refused.text());
            seen.push(refused.text());
        }
        seen.push(gw.admin_get("/metrics").text());
        std::thread::sleep(Duration::from_millis(300));
        seen.push(gw.stderr());
        let access_log = std::fs::read_to_string(gw.dir().join("access.log")).unwrap_or_default();
        assert!(access_log.contains(GEMINI), "the access log was written: {access_log}");
        seen.push(access_log);
        let tokens = vertex.tokens_seen();
        assert!(tokens.len() >= 2, "{tokens:?}");
        let assertions: Vec<String> = vertex
            .google
            .requests()
            .iter()
            .filter_map(|r| parse_form(&r.body).get("assertion").cloned())
            .collect();
        assert!(assertions.len() >= 2, "{assertions:?}");
        let account: Value = serde_json::from_str(SERVICE_ACCOUNT_JSON).unwrap();
        let key_lines: Vec<&str> = account["private_key"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|line| line.len() >= 40 && !line.starts_with("-----"))
            .collect();
        assert!(key_lines.len() > 10);
        for text in &seen {
            for token in &tokens {
                assert!(!text.contains(token.as_str()), "token in {text}");
            }
            for assertion in &assertions {
                // The signature alone is as secret as the whole assertion.
                let signature = assertion.rsplit('.').next().unwrap();
                assert!(!text.contains(signature), "assertion in {text}");
            }
            assert!(!text.contains("PRIVATE KEY"), "key PEM in {text}");
            for line in &key_lines {
                assert!(!text.contains(line), "private key material in {text}");
            }
        }
    }
}

#[test]
fn check_refuses_vertex_settings_that_cannot_work_without_contacting_anything() {
    let vertex = FakeVertex::start(PROJECT, REGION);
    let dir = TempDir::new("vertex-check");
    let sa_path = dir.file("sa.json");
    std::fs::write(&sa_path, vertex.service_account_json()).unwrap();
    let good = vertex_config(&vertex.base_url(), &sa_path, "");
    let out = check_config(&good);
    assert_eq!(out.code, Some(0), "{}", out.output());
    // base_url defaults to the region's endpoint (which this machine may not resolve).
    let default_url = good.replace(&format!("base_url = \"{}\"\n", vertex.base_url()), "");
    assert_ne!(default_url, good);
    let out = check_config(&default_url);
    assert!(
        out.code == Some(0)
            || out
                .output()
                .contains("\"us-east5-aiplatform.googleapis.com:443\""),
        "{}",
        out.output()
    );

    // Key files that parse as JSON but cannot sign, or cannot be read.
    let account: Value = serde_json::from_str(SERVICE_ACCOUNT_JSON).unwrap();
    let mut no_key = account.clone();
    no_key.as_object_mut().unwrap().remove("private_key");
    let no_key_path = dir.file("no-key.json");
    std::fs::write(&no_key_path, no_key.to_string()).unwrap();
    let pkcs1_path = dir.file("pkcs1.json");
    let pkcs1 = include_str!("data/google/other-key-pkcs1.pem");
    std::fs::write(
        &pkcs1_path,
        service_account_json(&vertex.google.token_uri(), Some(pkcs1)),
    )
    .unwrap();
    let not_json_path = dir.file("not-json.json");
    std::fs::write(&not_json_path, "this is not JSON").unwrap();

    let cases = [
        (
            good.replace(&format!("project = \"{PROJECT}\"\n"), ""),
            "provider[0].project",
            "",
        ),
        (
            good.replace(&format!("project = \"{PROJECT}\""), "project = \"a/b\""),
            "provider[0].project",
            "",
        ),
        (
            good.replace(&format!("region = \"{REGION}\""), "region = \"\""),
            "provider[0].region",
            "",
        ),
        (
            good.replace(
                &format!("region = \"{REGION}\""),
                "region = \"us.evil.example/x\"",
            ),
            "provider[0].region",
            "",
        ),
        (
            good.replace(&sa_path, &dir.file("missing.json")),
            "provider[0].service_account",
            "missing.json",
        ),
        (
            good.replace(&sa_path, &no_key_path),
            "provider[0].service_account",
            "private_key",
        ),
        (
            good.replace(&sa_path, &pkcs1_path),
            "provider[0].service_account",
            "PKCS#1",
        ),
        (
            good.replace(&sa_path, &not_json_path),
            "provider[0].service_account",
            "not JSON",
        ),
        (
            good.replace(&format!("service_account = \"file:{sa_path}\"\n"), ""),
            "provider[0].service_account",
            "",
        ),
        (
            good.replace(&format!("file:{sa_path}"), "literal-vertex-check-key"),
            "provider[0].service_account",
            "",
        ),
        (
            good.replace(
                "region = ",
                "api_key = \"literal-vertex-check-key\"\nregion = ",
            ),
            "provider[0].api_key",
            "",
        ),
        (
            good.replace("kind = \"vertex\"", "kind = \"gemini\"")
                .replace(&format!("project = \"{PROJECT}\"\n"), ""),
            "provider[0].service_account",
            "",
        ),
    ];
    let pem_line = pkcs1.lines().nth(3).unwrap();
    for (config, path, words) in cases {
        assert_ne!(config, good, "{path}: the case changes the config");
        let out = check_config(&config);
        let output = out.output();
        assert_ne!(out.code, Some(0), "{path}: {output}");
        assert!(output.contains(path), "{path}: {output}");
        assert!(output.contains(words), "{path}: {words:?} in {output}");
        assert!(!output.contains("literal-vertex-check-key"), "{output}");
        assert!(!output.contains("PRIVATE KEY-----\n"), "{output}");
        assert!(!output.contains(pem_line), "{output}");
    }
    assert_eq!(vertex.google.hits(), 0, "check contacts nothing");
    assert_eq!(vertex.request_count(), 0, "check contacts nothing");
}

/// The fake Vertex's Claude side against the official Anthropic SDK's `AnthropicVertex`
/// client (python3 with `anthropic` and `pyjwt`, as scripts/test.sh installs them): a token
/// the script obtains itself from the fake token endpoint, a plain and a streamed message
/// on the SDK's own paths, and a token the endpoint never issued refused with 401.
#[test]
fn the_fake_vertex_answers_the_anthropic_sdks_vertex_client() {
    let vertex = FakeVertex::start(PROJECT, REGION);
    vertex.anthropic.set_usage(23, 11, 0);
    let dir = TempDir::new("vertex-sdk");
    let sa_path = dir.file("sa.json");
    std::fs::write(&sa_path, vertex.service_account_json()).unwrap();
    let out = run_reference(
        "anthropic_vertex",
        &[],
        &json!({
            "service_account": sa_path, "base_url": vertex.base_url(),
            "region": REGION, "project": PROJECT, "model": CLAUDE_UPSTREAM,
        }),
    );
    let reply = common::fake_anthropic::DEFAULT_REPLY;
    for (what, answer) in [("plain", &out["plain"]), ("stream", &out["stream"])] {
        assert_eq!(answer["text"], reply, "{what}: {out}");
        assert_eq!(answer["stop_reason"], "end_turn", "{what}: {out}");
        assert_eq!(answer["input_tokens"], 23, "{what}: {out}");
        assert_eq!(answer["output_tokens"], 11, "{what}: {out}");
    }
    let events = out["stream"]["events"].as_array().unwrap();
    assert_eq!(events.first(), Some(&json!("message_start")), "{out}");
    assert_eq!(events.last(), Some(&json!("message_stop")), "{out}");
    assert!(events.contains(&json!("content_block_delta")), "{out}");
    assert_eq!(
        out["wrong_token"],
        json!({"status": 401, "error": "AuthenticationError"})
    );
    // This SDK version's own `anthropic_version` is not the one Google documents for Vertex,
    // which the fake requires (and the gateway sends).
    assert_eq!(
        out["default_version"],
        json!({"status": 400, "error": "BadRequestError"})
    );
    // The SDK reached the fake on Vertex's paths, with the token the script obtained.
    let location = format!(
        "/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/{CLAUDE_UPSTREAM}"
    );
    let targets: Vec<String> = vertex.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        [
            format!("{location}:rawPredict"),
            format!("{location}:streamRawPredict"),
            format!("{location}:rawPredict"),
            format!("{location}:rawPredict"),
        ],
    );
    assert_eq!(vertex.google.hits(), 1, "{:?}", vertex.google.refusals());
    assert_eq!(vertex.unauthenticated_count(), 1, "only the wrong token");
    let requests = vertex.requests();
    for accepted in [&requests[0], &requests[1]] {
        assert_eq!(
            accepted.json()["anthropic_version"],
            VERTEX_ANTHROPIC_VERSION
        );
        assert!(accepted.json().get("model").is_none());
    }
    assert!(vertex
        .tokens_seen()
        .iter()
        .all(|t| t.starts_with("ya29.fake-") || t == "ya29.not-a-token-the-endpoint-issued"));
}

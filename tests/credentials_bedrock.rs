//! `bedrock` providers (issue 16; README, "Credentials the gateway obtains"): both front
//! doors, plain and streamed, reach a fake Bedrock that checks every request's SigV4
//! signature by recomputing it (the fake is itself checked against botocore's client in
//! `tests/bedrock_reference.rs`); the Converse JSON and the ConverseStream event-stream
//! frames are translated back with the usage exactly as the fake reported it; tool use goes
//! both ways; temporary credentials carry `x-amz-security-token`; an exception frame
//! mid-stream ends the client's stream with the door's error; a wrong secret reaches the
//! client as the gateway's error; `check` refuses what cannot work; and no secret key,
//! session token or signature appears in any output.

mod common;

use std::net::SocketAddr;

use common::fake_bedrock::{FakeBedrock, REGION};
use common::gateway::DIR;
use common::*;
use serde_json::{json, Value};

const ACCESS_KEY_ID: &str = "AKIAFAKEBEDROCK00001";
const SECRET_KEY: &str = "bedrock-secret-canary/9f8e7d6c5b4a3210ZZ";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzSESSIONTOKENCANARY0123456789";
const KEY_ENV: &str = "CF_TEST_BEDROCK_KEY_ID";
const SECRET_ENV: &str = "CF_TEST_BEDROCK_SECRET";
const TOKEN_ENV: &str = "CF_TEST_BEDROCK_TOKEN";
const MODEL: &str = "claude-on-bedrock";
const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";
/// The model id as it goes on the wire (`:` percent-encoded, as botocore sends it).
const MODEL_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0";

/// A gateway config with one Bedrock provider at `base_url`, an access log, and client auth
/// off on the AI front doors; `session` adds the session token.
fn bedrock_config(base_url: &str, session: bool) -> String {
    let token = if session {
        format!("session_token = \"env:{TOKEN_ENV}\"\n")
    } else {
        String::new()
    };
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "{DIR}/data"
access_log = "{DIR}/access.log"
workers = 2

[ai]
auth = "none"

[[provider]]
name = "bedrock"
kind = "bedrock"
base_url = "{base_url}"
region = "{REGION}"
access_key_id = "env:{KEY_ENV}"
secret_access_key = "env:{SECRET_ENV}"
{token}
[[model]]
name = "{MODEL}"
provider = "bedrock"
upstream_model = "{MODEL_ID}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
"#
    )
}

/// A gateway in front of `fake`, signing with `secret` (and the session token when
/// `session`).
fn start(fake: &FakeBedrock, secret: &str, session: bool, driver: Driver) -> Gateway {
    Gateway::builder(&bedrock_config(&fake.base_url(), session), driver)
        .env(KEY_ENV, ACCESS_KEY_ID)
        .env(SECRET_ENV, secret)
        .env(TOKEN_ENV, SESSION_TOKEN)
        .start()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Door {
    OpenAi,
    Anthropic,
}

/// One call through `door`, streamed or not, with `extra` merged into the body.
fn call(addr: SocketAddr, door: Door, stream: bool, extra: Value) -> Response {
    let (path, mut body) = match door {
        Door::OpenAi => (
            "/v1/chat/completions",
            json!({ "model": MODEL, "stream": stream,
                "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                "messages": [{ "role": "user", "content": "Say hello." }] }),
        ),
        Door::Anthropic => (
            "/v1/messages",
            json!({ "model": MODEL, "stream": stream, "max_tokens": 100,
                "messages": [{ "role": "user", "content": "Say hello." }] }),
        ),
    };
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    let headers = [
        ("Content-Type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("Connection", "close"),
    ];
    roundtrip(
        addr,
        &request("POST", path, &headers, body.to_string().as_bytes()),
    )
}

/// The data of each server-sent event of a streamed answer, `[DONE]` as a string.
fn events(response: &Response) -> Vec<Value> {
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| !data.is_empty())
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
        .collect()
}

/// The assistant text of an answer of `door`, whole or streamed.
fn text_of(response: &Response, door: Door, stream: bool) -> String {
    match (door, stream) {
        (Door::OpenAi, false) => response.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        (Door::Anthropic, false) => response.json()["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        (Door::OpenAi, true) => events(response)
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect(),
        (Door::Anthropic, true) => events(response)
            .iter()
            .filter(|e| e["type"] == "content_block_delta")
            .filter_map(|e| e["delta"]["text"].as_str().map(String::from))
            .collect(),
    }
}

/// The access-log line of the request `response` answered (by its `x-request-id`).
fn logged(gw: &Gateway, response: &Response) -> Value {
    let id = response
        .header("x-request-id")
        .expect("x-request-id on every answer")
        .to_string();
    let path = gw.dir().join("access.log");
    let mut found = None;
    let seen = wait_until(WAIT, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["request_id"] == json!(id));
        found.is_some()
    });
    assert!(
        seen,
        "no access-log line for request {id} in:\n{}",
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    found.unwrap()
}

on_both_drivers! {
    fn both_doors_plain_and_streamed_are_signed_and_metered_as_bedrock_reports(driver) {
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, None);
        fake.set_reply("Hello from Bedrock today");
        let gw = start(&fake, SECRET_KEY, false, driver);
        let cases = [
            (Door::OpenAi, false, 21, 8),
            (Door::OpenAi, true, 34, 13),
            (Door::Anthropic, false, 55, 21),
            (Door::Anthropic, true, 89, 34),
        ];
        for (door, stream, input, output) in cases {
            fake.set_usage(input, output);
            let response = call(gw.addr(), door, stream, json!({}));
            assert_eq!(response.status, 200, "{door:?} {stream}: {}", response.text());
            assert_eq!(text_of(&response, door, stream), "Hello from Bedrock today", "{door:?} {stream}");
            let sent = fake.last_request();
            let method = if stream { "converse-stream" } else { "converse" };
            assert_eq!(sent.path, format!("{MODEL_PATH}/{method}"));
            let body = sent.json();
            assert_eq!(body["messages"], json!([{"role": "user", "content": [{"text": "Say hello."}]}]));
            assert!(sent.header("authorization").unwrap().starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/"
            )));
            assert_eq!(sent.header("x-amz-security-token"), None, "long-lived keys carry no token");
            let usage = &logged(&gw, &response)["usage"];
            assert_eq!(usage["prompt_tokens"], json!(input), "{door:?} {stream}: {usage}");
            assert_eq!(usage["completion_tokens"], json!(output), "{door:?} {stream}: {usage}");
            // And the client sees the same numbers.
            match (door, stream) {
                (Door::OpenAi, false) => assert_eq!(response.json()["usage"]["prompt_tokens"], json!(input)),
                (Door::OpenAi, true) => {
                    let events = events(&response);
                    assert_eq!(events.last().unwrap(), "[DONE]");
                    assert_eq!(events[events.len() - 2]["usage"]["completion_tokens"], json!(output));
                }
                (Door::Anthropic, false) => assert_eq!(response.json()["usage"]["output_tokens"], json!(output)),
                (Door::Anthropic, true) => {
                    let delta = events(&response).into_iter().find(|e| e["type"] == "message_delta").unwrap();
                    assert_eq!(delta["usage"]["output_tokens"], json!(output));
                }
            }
        }
        assert_eq!(fake.refused(), 0, "every signature checked out");
        assert_eq!(fake.request_count(), 4);
    }
}

on_default_driver! {
    fn tool_use_goes_both_ways_on_both_doors(driver) {
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, None);
        fake.set_tool_use("get_weather", json!({"city": "Paris"}));
        let gw = start(&fake, SECRET_KEY, false, driver);
        let openai_tools = json!({"tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required"});
        // Bedrock → client: a toolUse block becomes a tool call, whole and streamed.
        let whole = call(gw.addr(), Door::OpenAi, false, openai_tools.clone());
        assert_eq!(whole.status, 200, "{}", whole.text());
        let choice = &whole.json()["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        let tool_call = &choice["message"]["tool_calls"][0];
        assert_eq!(tool_call["id"], "tooluse_fake1");
        assert_eq!(tool_call["function"]["name"], "get_weather");
        let arguments: Value = serde_json::from_str(tool_call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}));
        let sent = fake.last_request().json();
        assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["name"], "get_weather");
        assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["city"]["type"], "string");
        assert_eq!(sent["toolConfig"]["toolChoice"], json!({"any": {}}));

        let streamed = call(gw.addr(), Door::OpenAi, true, openai_tools.clone());
        let arguments: String = events(&streamed)
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(String::from))
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Paris"}));

        let anthropic_tools = json!({"tools": [{"name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
        let messages = call(gw.addr(), Door::Anthropic, false, anthropic_tools.clone());
        assert_eq!(messages.status, 200, "{}", messages.text());
        let block = &messages.json()["content"][0];
        assert_eq!((block["type"].as_str(), block["name"].as_str()), (Some("tool_use"), Some("get_weather")));
        assert_eq!(block["input"], json!({"city": "Paris"}));
        assert_eq!(messages.json()["stop_reason"], "tool_use");
        let streamed = call(gw.addr(), Door::Anthropic, true, anthropic_tools);
        assert!(events(&streamed).iter().any(|e| e["content_block"]["type"] == "tool_use"), "{}", streamed.text());

        // Client → Bedrock: the call and its result go back as toolUse and toolResult blocks.
        let follow_up = json!({"messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "tooluse_fake1",
                "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "tooluse_fake1", "content": "sunny, 21 C"},
        ]});
        let mut extra = openai_tools;
        extra["messages"] = follow_up["messages"].clone();
        extra["tool_choice"] = json!("auto");
        assert_eq!(call(gw.addr(), Door::OpenAi, false, extra).status, 200);
        let sent = fake.last_request().json();
        assert_eq!(sent["messages"][1]["content"][0]["toolUse"],
            json!({"toolUseId": "tooluse_fake1", "name": "get_weather", "input": {"city": "Paris"}}));
        assert_eq!(sent["messages"][2]["content"][0]["toolResult"],
            json!({"toolUseId": "tooluse_fake1", "content": [{"text": "sunny, 21 C"}]}));
        assert_eq!(fake.refused(), 0);
    }
}

on_both_drivers! {
    fn temporary_credentials_carry_their_session_token(driver) {
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, Some(SESSION_TOKEN));
        let gw = start(&fake, SECRET_KEY, true, driver);
        for stream in [false, true] {
            let response = call(gw.addr(), Door::OpenAi, stream, json!({}));
            assert_eq!(response.status, 200, "{}", response.text());
            let sent = fake.last_request();
            assert_eq!(sent.header("x-amz-security-token"), Some(SESSION_TOKEN));
            assert!(sent.header("authorization").unwrap().contains("x-amz-security-token"), "the token is signed");
        }
        assert_eq!(fake.refused(), 0);
    }
}

on_default_driver! {
    fn a_session_token_the_gateway_lacks_is_refused_by_bedrock(driver) {
        // The fake's key is temporary; the gateway was given no token.
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, Some(SESSION_TOKEN));
        let gw = start(&fake, SECRET_KEY, false, driver);
        let response = call(gw.addr(), Door::OpenAi, false, json!({}));
        assert_eq!(response.status, 502, "{}", response.text());
        assert!(fake.refused() >= 1);
    }
}

on_both_drivers! {
    fn an_exception_frame_mid_stream_ends_the_stream_with_the_doors_error(driver) {
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, None);
        let gw = start(&fake, SECRET_KEY, false, driver);
        // messageStart and one text delta, then a throttlingException frame.
        fake.fail_next_stream_after(2);
        let openai = call(gw.addr(), Door::OpenAi, true, json!({}));
        assert_eq!(openai.status, 200, "the stream had begun");
        let events_seen = events(&openai);
        let last = events_seen.last().unwrap();
        assert_eq!(last["error"]["type"], "rate_limit_error", "{}", openai.text());
        assert!(last["error"]["message"].as_str().unwrap().contains("Too many requests"));
        assert!(!openai.text().contains("[DONE]"));
        assert_eq!(text_of(&openai, Door::OpenAi, true), "Hello ");

        fake.fail_next_stream_after(2);
        let anthropic = call(gw.addr(), Door::Anthropic, true, json!({}));
        assert_eq!(anthropic.status, 200);
        let text = anthropic.text();
        assert!(text.contains("event: error"), "{text}");
        let last = events(&anthropic).pop().unwrap();
        assert_eq!(last["type"], "error", "{text}");
        assert_eq!(last["error"]["type"], "rate_limit_error", "{text}");
        assert!(!text.contains("message_stop"), "{text}");
    }
}

on_default_driver! {
    fn a_wrong_secret_reaches_the_client_as_the_doors_error_without_the_secret(driver) {
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, None);
        let wrong = "wrong-bedrock-secret-canary-31337";
        let gw = start(&fake, wrong, false, driver);
        for door in [Door::OpenAi, Door::Anthropic] {
            for stream in [false, true] {
                let response = call(gw.addr(), door, stream, json!({}));
                assert_eq!(response.status, 502, "{door:?}: {}", response.text());
                let body = response.json();
                match door {
                    Door::OpenAi => assert_eq!(body["error"]["code"], "provider_credential_refused", "{body}"),
                    Door::Anthropic => assert_eq!(body["type"], "error", "{body}"),
                }
                assert!(!response.text().contains(wrong));
                assert!(!response.text().contains("signature we calculated"), "AWS's message stays in the log");
            }
        }
        assert!(fake.refused() >= 4);
        assert!(!gw.stderr().contains(wrong));
        assert!(gw.stderr().contains("SigV4 signature"), "{}", gw.stderr());
    }
}

on_default_driver! {
    fn no_secret_key_session_token_or_signature_appears_in_any_output(driver) {
        let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, Some(SESSION_TOKEN));
        let gw = start(&fake, SECRET_KEY, true, driver);
        let mut seen = Vec::new();
        for door in [Door::OpenAi, Door::Anthropic] {
            for stream in [false, true] {
                let response = call(gw.addr(), door, stream, json!({}));
                assert_eq!(response.status, 200, "{}", response.text());
                seen.push(response.text());
            }
        }
        fake.fail_next_stream_after(1);
        seen.push(call(gw.addr(), Door::OpenAi, true, json!({})).text());
        // Bedrock refusing (a key it no longer knows) reaches the client as an error.
        let other = FakeBedrock::start("AKIAOTHERKEY00000000", SECRET_KEY, None);
        let gw_refused = Gateway::builder(&bedrock_config(&other.base_url(), true), driver)
            .env(KEY_ENV, ACCESS_KEY_ID)
            .env(SECRET_ENV, SECRET_KEY)
            .env(TOKEN_ENV, SESSION_TOKEN)
            .start();
        seen.push(call(gw_refused.addr(), Door::OpenAi, false, json!({})).text());
        seen.push(gw_refused.stderr());
        seen.push(gw.admin_get("/metrics").text());
        // Let the access log catch up with the last request before reading it.
        let last = call(gw.addr(), Door::OpenAi, false, json!({}));
        logged(&gw, &last);
        seen.push(std::fs::read_to_string(gw.dir().join("access.log")).unwrap());
        seen.push(gw.stderr());
        let signatures: Vec<String> = fake
            .requests()
            .iter()
            .chain(other.requests().iter())
            .filter_map(|r| r.header("authorization")?.split("Signature=").nth(1).map(String::from))
            .collect();
        assert!(signatures.len() >= 6, "{signatures:?}");
        for text in &seen {
            assert!(!text.contains(SECRET_KEY), "secret key in {text}");
            assert!(!text.contains(SESSION_TOKEN), "session token in {text}");
            for signature in &signatures {
                assert!(!text.contains(signature.as_str()), "signature in {text}");
            }
        }
    }
}

#[test]
fn check_refuses_bedrock_settings_that_cannot_work_without_contacting_anything() {
    let fake = FakeBedrock::start(ACCESS_KEY_ID, SECRET_KEY, None);
    let good = bedrock_config(&fake.base_url(), false)
        .replace(&format!("env:{SECRET_ENV}"), "literal-bedrock-check-secret")
        .replace(&format!("env:{KEY_ENV}"), "AKIALITERALCHECK0000");
    let out = check_config(&good);
    assert_eq!(out.code, Some(0), "{}", out.output());
    assert!(!out.output().contains("literal-bedrock-check-secret"));
    let role = "assume_role = { role_arn = \"arn:aws:iam::123456789012:role/gateway\", sts_url = \"https://sts.amazonaws.com\", session_name = \"cf\", duration_s = 3600 }\n";
    let with_role = good.replace("[[model]]", &format!("{role}\n[[model]]"));
    // A well-formed role is accepted without STS being asked for anything.
    let out = check_config(&with_role);
    assert_eq!(out.code, Some(0), "{}", out.output());
    assert!(!out.output().contains("literal-bedrock-check-secret"));
    let cases = [
        (
            good.replace(&format!("region = \"{REGION}\"\n"), ""),
            "provider[0].region",
            "is required",
        ),
        (
            good.replace(REGION, "us east 1"),
            "provider[0].region",
            "AWS region",
        ),
        (
            good.replace("secret_access_key = \"literal-bedrock-check-secret\"\n", ""),
            "provider[0].secret_access_key",
            "is required",
        ),
        (
            good.replace("access_key_id = \"AKIALITERALCHECK0000\"\n", ""),
            "provider[0].access_key_id",
            "is required",
        ),
        (
            good.replace(
                "region = ",
                "api_key = \"literal-bedrock-api-key\"\nregion = ",
            ),
            "provider[0].api_key",
            "takes no api_key",
        ),
        (
            good.replace("kind = \"bedrock\"", "kind = \"openai\""),
            "provider[0].access_key_id",
            "only kind = \"bedrock\"",
        ),
        (
            with_role.replace(
                "arn:aws:iam::123456789012:role/gateway",
                "arn:aws:iam::12345:user/x",
            ),
            "provider[0].assume_role.role_arn",
            "IAM role ARN",
        ),
        (
            with_role.replace("duration_s = 3600", "duration_s = 60"),
            "provider[0].assume_role.duration_s",
            "900",
        ),
        (
            with_role.replace("https://sts.amazonaws.com", "ftp://sts"),
            "provider[0].assume_role.sts_url",
            "URL",
        ),
        (
            with_role.replace("session_name = \"cf\"", "session_name = \"a b\""),
            "provider[0].assume_role.session_name",
            "RoleSessionName",
        ),
        (
            // A private endpoint is signed for the provider's region, which must be one.
            with_role
                .replace("https://sts.amazonaws.com", "https://sts.internal.example")
                .replace(&format!("region = \"{REGION}\"\n"), ""),
            "provider[0].assume_role.sts_url",
            "signing region",
        ),
        (
            with_role.replace(
                "https://sts.amazonaws.com",
                "https://sts.amazonaws.com/?Action=GetCallerIdentity",
            ),
            "provider[0].assume_role.sts_url",
            "query",
        ),
    ];
    for (config, path, words) in cases {
        assert_ne!(config, good, "{path}: the case changes the config");
        let out = check_config(&config);
        assert_ne!(out.code, Some(0), "{path}: {}", out.output());
        assert!(out.output().contains(path), "{path}: {}", out.output());
        assert!(
            out.output().contains(words),
            "{path} {words}: {}",
            out.output()
        );
        assert!(!out.output().contains("literal-bedrock-check-secret"));
        assert!(!out.output().contains("literal-bedrock-api-key"));
    }
    assert_eq!(fake.request_count(), 0, "check contacts nothing");
}

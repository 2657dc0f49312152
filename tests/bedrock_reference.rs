//! The fake Bedrock (`tests/common/fake_bedrock.rs`) checked against botocore's own
//! `bedrock-runtime` client (`tests/reference/botocore_bedrock.py`): the fake must accept
//! botocore's SigV4 signatures (static and session-token credentials), refuse a wrong secret
//! as AWS does, and answer Converse and ConverseStream in a form botocore parses to the text,
//! stop reason, usage and tool call the test set. So the fake is not merely agreeing with the
//! gateway's own signer and event-stream encoder.

mod common;
#[path = "reference/run.rs"]
mod run;

use common::fake_bedrock::{FakeBedrock, REGION};
use run::run_reference;
use serde_json::json;

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

fn check_with_botocore(token: Option<&str>) {
    let fake = FakeBedrock::start("AKIDBOTOCORE", "botocore-secret-key", token);
    fake.set_usage(21, 8);
    fake.set_reply("Hello from the fake");
    fake.set_tool_use("get_weather", json!({"city": "Paris"}));
    let out = run_reference(
        "botocore_bedrock",
        &[],
        &json!({
            "endpoint_url": fake.endpoint(), "region": REGION, "model_id": MODEL,
            "access_key": "AKIDBOTOCORE", "secret_key": "botocore-secret-key",
            "token": token, "wrong_secret": "not-the-secret",
        }),
    );
    let usage = json!({"inputTokens": 21, "outputTokens": 8, "totalTokens": 29});
    assert_eq!(out["converse"]["text"], "Hello from the fake");
    assert_eq!(out["converse"]["stop_reason"], "end_turn");
    assert_eq!(out["converse"]["usage"], usage);
    assert_eq!(out["stream"]["text"], "Hello from the fake");
    assert_eq!(out["stream"]["stop_reason"], "end_turn");
    assert_eq!(out["stream"]["usage"], usage);
    assert_eq!(
        out["stream"]["events"],
        json!([
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ])
    );
    assert_eq!(out["tool"]["name"], "get_weather");
    assert_eq!(out["tool"]["input"], json!({"city": "Paris"}));
    assert_eq!(out["tool"]["stop_reason"], "tool_use");
    assert_eq!(
        out["wrong_secret"],
        json!({"status": 403, "code": "InvalidSignatureException"})
    );
    assert_eq!(
        fake.refused(),
        1,
        "only the wrong secret's request was refused"
    );
    // botocore put the model id on the wire with `:` encoded, as the gateway does.
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse".to_string()),
        "{paths:?}"
    );
    let tokens: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.header("x-amz-security-token").map(str::to_string))
        .collect();
    assert!(tokens.iter().all(|t| t.as_deref() == token), "{tokens:?}");
}

#[test]
fn botocore_with_static_keys_gets_answers_and_a_wrong_secret_is_refused() {
    check_with_botocore(None);
}

#[test]
fn botocore_with_a_session_token_gets_answers_and_a_wrong_secret_is_refused() {
    check_with_botocore(Some("FwoGZXIvYXdzEXAMPLESESSIONTOKEN"));
}

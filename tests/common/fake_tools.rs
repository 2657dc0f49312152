//! A fake OpenAI provider that answers with a tool call, shared by the SDK tests and the
//! Responses door's tests: both check that a tool call and its result go both ways.

use serde_json::{json, Value};

use super::upstream::{Gate, Reply, Upstream};

/// The tool call every tool fake answers with, and the answer after its result.
pub const TOOL_NAME: &str = "get_weather";
/// The id of that call.
pub const TOOL_CALL_ID: &str = "call_fake_weather";
/// The answer once the last message is the tool's result.
pub const TOOL_ANSWER: &str = "It is sunny in Paris.";

/// A fake OpenAI provider that answers every chat request with a call of [`TOOL_NAME`]
/// (`{"city":"Paris"}`, usage 42 + 17), or with [`TOOL_ANSWER`] once the last message is the
/// tool's result; streamed as OpenAI streams tool calls (OpenAI API reference, "The chat
/// completion chunk object": the id and name first, then the arguments in pieces).
pub fn tool_fake() -> Upstream {
    Upstream::start("tools", |request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let after_tool = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool");
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let usage = json!({ "prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59 });
        let chunk = |choices: Value, usage: Option<&Value>| {
            let mut chunk = json!({
                "id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": choices,
            });
            if let Some(usage) = usage {
                chunk["usage"] = usage.clone();
            }
            format!("data: {chunk}\n\n")
        };
        if body["stream"] == json!(true) {
            let call = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
            let arguments = |piece: &str| json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] });
            let mut first = chunk(
                call(
                    json!({ "role": "assistant", "content": null, "tool_calls": [{
                        "index": 0, "id": TOOL_CALL_ID, "type": "function",
                        "function": { "name": TOOL_NAME, "arguments": "" } }] }),
                    Value::Null,
                ),
                None,
            );
            first += &chunk(call(arguments("{\"city\""), Value::Null), None);
            first += &chunk(call(arguments(":\"Paris\"}"), Value::Null), None);
            first += &chunk(call(json!({}), json!("tool_calls")), None);
            if body["stream_options"]["include_usage"] == json!(true) {
                first += &chunk(json!([]), Some(&usage));
            }
            let release = Gate::new();
            release.open();
            return Reply::Sse {
                first: first.into_bytes(),
                rest: b"data: [DONE]\n\n".to_vec(),
                release,
            };
        }
        let (message, finish) = if after_tool {
            (
                json!({ "role": "assistant", "content": TOOL_ANSWER, "refusal": null }),
                "stop",
            )
        } else {
            (
                json!({ "role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                    "id": TOOL_CALL_ID, "type": "function",
                    "function": { "name": TOOL_NAME, "arguments": "{\"city\":\"Paris\"}" } }] }),
                "tool_calls",
            )
        };
        let completion = json!({
            "id": "chatcmpl-tools", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
            "usage": usage,
        });
        Reply::Fixed {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: completion.to_string().into_bytes(),
        }
    })
}

//! A Bedrock `ConverseResponse` as an OpenAI `chat.completion`.

use serde_json::{json, Value};

use super::{finish_reason_for, tool_call, BedrockUsage};
use crate::ai::openai::Usage;
use crate::ai::TranslateError;

/// The canonical `chat.completion` for a Converse answer, with its usage; `model`, `id` and
/// `created` are the gateway's.
pub fn response_to_openai(
    body: &[u8],
    model: &str,
    id: &str,
    created: i64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError(format!("Bedrock answer is not JSON: {e}")))?;
    let content = response
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError("Bedrock answer has no output.message.content".into()))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        if let Some(piece) = block.get("text").and_then(Value::as_str) {
            text.push_str(piece);
        } else if let Some(tool_use) = block.get("toolUse") {
            calls.push(tool_call(tool_use));
        }
        // Reasoning, citations and guardrail blocks have no place in a chat.completion.
    }
    let stop_reason = response
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let usage = BedrockUsage::read(response.get("usage").unwrap_or(&Value::Null));
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason_for(stop_reason),
        }],
        "usage": usage.to_openai(),
    });
    Ok((
        serde_json::to_vec(&completion).expect("serialize JSON value"),
        usage.to_usage(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(answer: Value) -> (Value, Usage) {
        let (body, usage) =
            response_to_openai(answer.to_string().as_bytes(), "claude", "chatcmpl-1", 7).unwrap();
        (serde_json::from_slice(&body).unwrap(), usage)
    }

    #[test]
    fn text_answer_with_usage() {
        let (body, usage) = translate(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "Hel"}, {"text": "lo"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 11, "outputTokens": 4, "totalTokens": 15},
            "metrics": {"latencyMs": 100}
        }));
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["model"], "claude");
        assert_eq!(body["usage"]["total_tokens"], 15);
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 11,
                completion_tokens: 4,
                cached_tokens: 0
            }
        );
    }

    #[test]
    fn tool_use_becomes_tool_calls() {
        let (body, _) = translate(json!({
            "output": {"message": {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}
        }));
        let message = &body["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"][0],
            json!({"id": "tooluse_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}})
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn an_answer_without_output_is_refused() {
        for answer in [&b"nope"[..], br#"{"message":"x"}"#] {
            assert!(response_to_openai(answer, "m", "i", 0).is_err());
        }
    }
}

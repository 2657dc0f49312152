//! Non-streamed responses: an Anthropic `message` as an OpenAI `chat.completion`, and back.

use serde_json::{json, Map, Value};

use super::{
    chat_id_for, finish_reason_for, message_id_for, openai_usage_json, read_openai_usage,
    stop_reason_for, AnthropicUsage,
};
use crate::ai::openai::Usage;
use crate::ai::TranslateError;

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TranslateError("the body is not a JSON object".into())),
        Err(_) => Err(TranslateError("the body is not JSON".into())),
    }
}

/// An Anthropic `message` response → an OpenAI `chat.completion` (id `chatcmpl-<message
/// id>`, `model` as given), with its usage. Text blocks are joined into `content`,
/// `tool_use` blocks become `tool_calls`; thinking and server-tool blocks are left out.
pub fn response_to_openai(
    body: &[u8],
    model: &str,
    created: i64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let message = parse_object(body)?;
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err(TranslateError("not a message object".into()));
    }
    let blocks = message.get("content").and_then(Value::as_array);
    let blocks = blocks.ok_or_else(|| TranslateError("message without content".into()))?;
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let part = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                text.get_or_insert_with(String::new).push_str(part);
            }
            Some("tool_use") => {
                let field = |name: &str| block.get(name).and_then(Value::as_str);
                let (Some(id), Some(name)) = (field("id"), field("name")) else {
                    return Err(TranslateError("tool_use block without id or name".into()));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            _ => {}
        }
    }
    let usage = message
        .get("usage")
        .map(AnthropicUsage::read)
        .unwrap_or_default()
        .to_usage();
    let finish_reason = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason_for);
    let mut reply = Map::new();
    reply.insert("role".into(), "assistant".into());
    reply.insert("content".into(), text.map_or(Value::Null, Value::String));
    reply.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(calls));
    }
    let id = message
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let completion = json!({
        "id": chat_id_for(id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": openai_usage_json(usage),
    });
    let bytes = serde_json::to_vec(&completion).expect("serialize JSON value");
    Ok((bytes, usage))
}

/// An OpenAI `chat.completion` → an Anthropic `message` (id `msg_<completion id>`, `model`
/// as given), with its usage. The first choice is used. `content` (or a `refusal`) becomes
/// a text block, `tool_calls` become `tool_use` blocks; arguments that are not a JSON object
/// (a model cut off mid-call) become an empty input rather than failing the response.
pub fn response_from_openai(body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), TranslateError> {
    let completion = parse_object(body)?;
    let choice = completion
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(|| TranslateError("chat completion without choices".into()))?;
    let reply = choice
        .get("message")
        .ok_or_else(|| TranslateError("choice without message".into()))?;
    let mut blocks = Vec::new();
    let text = reply
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .or_else(|| reply.get("refusal").and_then(Value::as_str));
    if let Some(text) = text {
        blocks.push(json!({"type": "text", "text": text}));
    }
    let calls = reply.get("tool_calls").and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (call.get("id").and_then(Value::as_str), name) else {
            return Err(TranslateError("tool call without id or name".into()));
        };
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str);
        let input = arguments
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    let usage = completion
        .get("usage")
        .and_then(read_openai_usage)
        .unwrap_or_default();
    let stop_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map_or("end_turn", stop_reason_for);
    let id = completion
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = json!({
        "id": message_id_for(id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": AnthropicUsage::from_usage(usage).to_json(),
    });
    let bytes = serde_json::to_vec(&message).expect("serialize JSON value");
    Ok((bytes, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    /// A tool-use reply as the Messages API documents it, with prompt-cache usage.
    const MESSAGE: &str = r#"{
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "text", "text": "I'll check "},
            {"type": "text", "text": "the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
             "name": "get_weather", "input": {"location": "San Francisco, CA"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 472, "output_tokens": 91,
                  "cache_creation_input_tokens": 10, "cache_read_input_tokens": 2048}
    }"#;

    #[test]
    fn message_becomes_a_chat_completion_with_text_and_tool_calls() {
        let (body, _) = response_to_openai(MESSAGE.as_bytes(), "my-claude", 1_700_000_000).unwrap();
        let completion = json_of(&body);
        assert_eq!(completion["id"], "chatcmpl-msg_01Aq9w938a90dw8q");
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["created"], 1_700_000_000);
        assert_eq!(completion["model"], "my-claude");
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "I'll check the weather.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}}])
        );
    }

    #[test]
    fn message_usage_counts_cache_reads_and_writes_as_prompt_tokens() {
        let (body, usage) = response_to_openai(MESSAGE.as_bytes(), "m", 0).unwrap();
        let expected = Usage {
            prompt_tokens: 472 + 2048 + 10,
            completion_tokens: 91,
            cached_tokens: 2048,
        };
        assert_eq!(usage, expected);
        assert_eq!(
            json_of(&body)["usage"],
            json!({"prompt_tokens": 2530, "completion_tokens": 91, "total_tokens": 2621,
                   "prompt_tokens_details": {"cached_tokens": 2048}})
        );
    }

    #[test]
    fn message_with_only_tool_use_has_null_content() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}});
        let (body, _) = response_to_openai(message.to_string().as_bytes(), "m", 0).unwrap();
        assert_eq!(
            json_of(&body)["choices"][0]["message"]["content"],
            Value::Null
        );
    }

    #[test]
    fn body_that_is_not_a_message_is_an_error() {
        for body in [
            &b"nope"[..],
            b"[]",
            br#"{"type":"error"}"#,
            br#"{"type":"message"}"#,
        ] {
            assert!(response_to_openai(body, "m", 0).is_err());
        }
    }

    /// A chat completion as the OpenAI reference documents it, with a tool call.
    const COMPLETION: &str = r#"{
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Looking it up.",
                "refusal": null,
                "tool_calls": [{"id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Boston\"}"}}]
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                  "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0}}
    }"#;

    #[test]
    fn chat_completion_becomes_a_message_with_text_and_tool_use() {
        let (body, usage) = response_from_openai(COMPLETION.as_bytes(), "my-gpt").unwrap();
        assert_eq!(
            json_of(&body),
            json!({
                "id": "msg_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
                "type": "message",
                "role": "assistant",
                "model": "my-gpt",
                "content": [
                    {"type": "text", "text": "Looking it up."},
                    {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"city": "Boston"}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {"input_tokens": 93, "output_tokens": 46,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024}
            })
        );
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 1117,
                completion_tokens: 46,
                cached_tokens: 1024
            }
        );
    }

    #[test]
    fn refusal_becomes_text_with_the_refusal_stop_reason() {
        let completion = json!({"id": "c", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
            "finish_reason": "content_filter"}]});
        let (body, usage) = response_from_openai(completion.to_string().as_bytes(), "m").unwrap();
        let message = json_of(&body);
        assert_eq!(
            message["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        assert_eq!(message["stop_reason"], "refusal");
        assert_eq!(usage, Usage::default());
    }

    #[test]
    fn truncated_tool_arguments_become_an_empty_input() {
        let completion = json!({"id": "c", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]},
            "finish_reason": "length"}]});
        let (body, _) = response_from_openai(completion.to_string().as_bytes(), "m").unwrap();
        let message = json_of(&body);
        assert_eq!(message["content"][0]["input"], json!({}));
        assert_eq!(message["stop_reason"], "max_tokens");
    }

    #[test]
    fn chat_completion_without_choices_is_an_error() {
        for body in [
            &b"{"[..],
            br#"{"choices":[]}"#,
            br#"{"choices":[{"index":0}]}"#,
        ] {
            assert!(response_from_openai(body, "m").is_err());
        }
    }

    #[test]
    fn response_round_trips_through_anthropic_format() {
        let (message, usage) = response_from_openai(COMPLETION.as_bytes(), "m").unwrap();
        let (completion, usage_back) = response_to_openai(&message, "m", 1).unwrap();
        let completion = json_of(&completion);
        let original = json_of(COMPLETION.as_bytes());
        assert_eq!(
            completion["choices"][0]["message"]["tool_calls"],
            original["choices"][0]["message"]["tool_calls"]
        );
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            original["choices"][0]["message"]["content"]
        );
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(usage_back, usage);
    }
}

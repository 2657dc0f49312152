//! A Gemini `GenerateContentResponse` as an OpenAI `chat.completion`.

use serde_json::{json, Value};

use super::{
    candidate_index, finish_reason_for, prompt_block_reason, tool_call, tool_call_id, visible_text,
    GeminiUsage,
};
use crate::ai::openai::Usage;
use crate::ai::TranslateError;

/// The `chat.completion` for a `generateContent` response, with its usage; `model` is the
/// client-facing name, `id` and `created` the gateway's.
///
/// Each candidate is a choice: its visible text parts joined as `content` (`null` when it has
/// none), its `functionCall` parts as `tool_calls` with ids `call_0`, `call_1`, ... in
/// response order. A prompt Gemini blocked (no candidates, `promptFeedback.blockReason`) is
/// one empty choice with `finish_reason: "content_filter"`.
pub fn response_to_openai(
    body: &[u8],
    model: &str,
    id: &str,
    created: i64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| TranslateError("the Gemini response is not JSON".into()))?;
    if !response.is_object() {
        return Err(TranslateError(
            "the Gemini response is not a JSON object".into(),
        ));
    }
    let candidates = response
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    let mut calls_so_far = 0;
    for candidate in candidates {
        choices.push(choice(candidate, &mut calls_so_far));
    }
    if choices.is_empty() {
        if prompt_block_reason(&response).is_none() {
            return Err(TranslateError(
                "the Gemini response has no candidates".into(),
            ));
        }
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null, "refusal": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let counts = response
        .get("usageMetadata")
        .map(GeminiUsage::read)
        .unwrap_or_default();
    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": counts.to_openai(),
    });
    let body = serde_json::to_vec(&completion).expect("serialize chat completion");
    Ok((body, counts.to_usage()))
}

/// One candidate as a choice; `calls_so_far` numbers the tool calls across candidates.
fn choice(candidate: &Value, calls_so_far: &mut usize) -> Value {
    let parts = candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in parts {
        if let Some(piece) = visible_text(part) {
            text.get_or_insert_with(String::new).push_str(piece);
        } else if let Some(call) = part.get("functionCall") {
            tool_calls.push(tool_call(call, tool_call_id(*calls_so_far)));
            *calls_so_far += 1;
        }
    }
    let reason = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    let mut message = json!({ "role": "assistant", "content": text, "refusal": null });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let called_tools = message.get("tool_calls").is_some();
    json!({
        "index": candidate_index(candidate),
        "message": message,
        "logprobs": null,
        "finish_reason": finish_reason_for(reason, called_tools),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: &str) -> (Value, Usage) {
        let (out, usage) = response_to_openai(body.as_bytes(), "gem", "chatcmpl-1", 1_700_000_000)
            .expect("translatable");
        (serde_json::from_slice(&out).unwrap(), usage)
    }

    /// A text answer as `models.generateContent` returns it (Gemini API reference example).
    const TEXT: &str = r#"{
      "candidates": [{
        "content": {"parts": [{"text": "Hello"}, {"text": " there!"}], "role": "model"},
        "finishReason": "STOP",
        "avgLogprobs": -0.12
      }],
      "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3, "totalTokenCount": 24,
        "thoughtsTokenCount": 13, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]},
      "modelVersion": "gemini-2.5-flash",
      "responseId": "abc"
    }"#;

    #[test]
    fn text_answer_becomes_a_chat_completion() {
        let (out, _) = translate(TEXT);
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gem",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!", "refusal": null},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24,
                          "prompt_tokens_details": {"cached_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 13}}
            })
        );
    }

    #[test]
    fn usage_is_returned_for_metering() {
        let (_, usage) = translate(TEXT);
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 8,
                completion_tokens: 16,
                cached_tokens: 0
            }
        );
    }

    #[test]
    fn cached_tokens_are_reported() {
        let (out, usage) = translate(
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"finishReason":"STOP"}],
               "usageMetadata":{"promptTokenCount":5000,"candidatesTokenCount":1,"cachedContentTokenCount":4096}}"#,
        );
        assert_eq!(usage.cached_tokens, 4096);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4096);
        assert_eq!(out["usage"]["prompt_tokens"], 5000);
    }

    #[test]
    fn thoughts_are_not_shown() {
        let (out, _) = translate(
            r#"{"candidates":[{"content":{"parts":[{"text":"Let me think","thought":true},{"text":"42"}],"role":"model"},"finishReason":"STOP"}]}"#,
        );
        assert_eq!(out["choices"][0]["message"]["content"], "42");
    }

    #[test]
    fn function_calls_become_tool_calls() {
        let (out, _) = translate(
            r#"{"candidates":[{"content":{"parts":[
                 {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},
                 {"functionCall":{"name":"get_time","args":{}}}],"role":"model"},
               "finishReason":"STOP"}],
               "usageMetadata":{"promptTokenCount":40,"candidatesTokenCount":10}}"#,
        );
        assert_eq!(
            out["choices"][0],
            json!({"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                   "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]}})
        );
    }

    #[test]
    fn max_tokens_is_length_and_safety_is_content_filter() {
        let (out, _) = translate(
            r#"{"candidates":[{"content":{"parts":[{"text":"cut"}],"role":"model"},"finishReason":"MAX_TOKENS"}]}"#,
        );
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        let (out, _) = translate(
            r#"{"candidates":[{"finishReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH"}]}]}"#,
        );
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn several_candidates_are_several_choices() {
        let (out, _) = translate(
            r#"{"candidates":[
                {"content":{"parts":[{"text":"a"}],"role":"model"},"finishReason":"STOP"},
                {"content":{"parts":[{"text":"b"}],"role":"model"},"finishReason":"STOP","index":1}]}"#,
        );
        let choices = out["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[1]["index"], 1);
        assert_eq!(choices[1]["message"]["content"], "b");
    }

    #[test]
    fn blocked_prompt_is_an_empty_content_filter_choice() {
        let (out, usage) = translate(
            r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},
               "usageMetadata":{"promptTokenCount":12,"totalTokenCount":12}}"#,
        );
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(usage.prompt_tokens, 12);
    }

    #[test]
    fn missing_usage_is_zero() {
        let (out, usage) = translate(
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"finishReason":"STOP"}]}"#,
        );
        assert_eq!(usage, Usage::default());
        assert_eq!(out["usage"]["total_tokens"], 0);
    }

    #[test]
    fn untranslatable_bodies_are_errors() {
        for body in ["not json", "[1]", "{}"] {
            assert!(
                response_to_openai(body.as_bytes(), "m", "i", 0).is_err(),
                "{body}"
            );
        }
    }
}

//! A whole canonical chat completion as a Response object.

use serde_json::Value;

use super::{
    function_call_item, message_item, output_text_part, read_chat_usage, response_object,
    usage_object, Echo, Naming, Status,
};
use crate::ai::{TranslateError, Usage};

/// The Response object for the chat completion `chat`: its message's text as a `message`
/// item, its tool calls as `function_call` items, and `usage` (the provider's reported
/// usage, which is what the request is metered with) in the Responses names.
pub fn response_from_chat(
    chat: &[u8],
    usage: Option<Usage>,
    echo: &Echo,
    naming: &Naming<'_>,
) -> Result<Vec<u8>, TranslateError> {
    let chat: Value = serde_json::from_slice(chat)
        .map_err(|_| TranslateError("chat completion is not JSON".into()))?;
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| TranslateError("chat completion without choices".into()))?;
    let message = &choice["message"];
    let mut output = Vec::new();
    let text: String = ["content", "refusal"]
        .iter()
        .filter_map(|field| message.get(*field).and_then(Value::as_str))
        .collect();
    if !text.is_empty() {
        output.push(message_item(
            &naming.message_id(),
            vec![output_text_part(&text)],
            "completed",
        ));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (n, call) in calls.into_iter().flatten().enumerate() {
        let function = &call["function"];
        let str_of =
            |v: &Value, field: &str| v.get(field).and_then(Value::as_str).map(str::to_owned);
        output.push(function_call_item(
            &naming.call_item_id(n),
            &str_of(call, "id").unwrap_or_else(|| format!("call_{}_{n}", naming.request_id)),
            &str_of(function, "name").unwrap_or_default(),
            &str_of(function, "arguments").unwrap_or_default(),
            "completed",
        ));
    }
    let reported = chat.get("usage").and_then(read_chat_usage);
    let reasoning = reported.map_or(0, |(_, reasoning)| reasoning);
    let usage = usage
        .or(reported.map(|(u, _)| u))
        .map(|u| usage_object(&u, reasoning));
    let status = Status::of_finish(choice.get("finish_reason").and_then(Value::as_str));
    let object = response_object(naming, echo, status, output, usage);
    Ok(serde_json::to_vec(&object).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::responses::parse_request;
    use serde_json::json;

    const NAMING: Naming<'static> = Naming {
        model: "client-model",
        request_id: "r1",
        created_at: 1_700_000_000,
    };

    fn echo(body: Value) -> Echo {
        parse_request(body.to_string().as_bytes()).unwrap().echo
    }

    #[test]
    fn text_and_tool_calls_become_output_items_with_the_reported_usage() {
        let chat = json!({
            "id": "chatcmpl-x", "object": "chat.completion", "model": "upstream-name",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}},
        });
        let reported = Usage {
            prompt_tokens: 12,
            completion_tokens: 7,
            cached_tokens: 4,
        };
        let echo = echo(
            json!({"model": "m", "input": "hi", "instructions": "Be terse.",
                               "metadata": {"k": "v"}}),
        );
        let body = response_from_chat(chat.to_string().as_bytes(), Some(reported), &echo, &NAMING)
            .unwrap();
        let response: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(response["id"], "resp_r1");
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["model"], "client-model", "the client-facing name");
        assert_eq!(response["instructions"], "Be terse.");
        assert_eq!(response["metadata"], json!({"k": "v"}));
        assert_eq!(
            response["output"],
            json!([
                {"id": "msg_r1", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": [],
                              "logprobs": []}]},
                {"id": "fc_r1_0", "type": "function_call", "status": "completed",
                 "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            ])
        );
        assert_eq!(
            response["usage"],
            json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4},
                   "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
                   "total_tokens": 19})
        );
        assert!(
            response.get("output_text").is_none(),
            "no non-standard fields"
        );
    }

    #[test]
    fn an_answer_cut_by_the_token_limit_is_incomplete() {
        let chat = json!({"choices": [{"finish_reason": "length",
                                       "message": {"role": "assistant", "content": "Once"}}]});
        let body = response_from_chat(
            chat.to_string().as_bytes(),
            None,
            &echo(json!({"model": "m", "input": "hi"})),
            &NAMING,
        )
        .unwrap();
        let response: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(response["status"], "incomplete");
        assert_eq!(
            response["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(response["usage"], Value::Null);
    }

    #[test]
    fn a_body_without_choices_is_untranslatable() {
        let echo = echo(json!({"model": "m", "input": "hi"}));
        assert!(response_from_chat(b"{}", None, &echo, &NAMING).is_err());
        assert!(response_from_chat(b"not json", None, &echo, &NAMING).is_err());
    }
}

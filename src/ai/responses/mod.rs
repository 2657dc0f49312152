//! The OpenAI Responses API (`POST /v1/responses`) as a front door over the canonical chat
//! form: a Responses request becomes a chat completions request ([`parse_request`]), so it
//! goes through the same prompt hook, limits, meters, budgets and fallbacks as a chat, and
//! the provider's canonical answer becomes a Response object ([`response_from_chat`]) or the
//! Responses event stream ([`ResponsesStream`]).
//!
//! Responses are not stored: `previous_response_id`, `conversation` and input items by
//! reference are refused with a message saying so, and `store: true` is accepted (it is the
//! API's default) but nothing is kept. Only function tools and message, function call and
//! function call output items are translated; built-in tools (`web_search`, `file_search`,
//! ...) and other items (`reasoning`, ...) are refused by name unless the request goes to a
//! provider that has the Responses API itself ([`passthrough`]), which gets the client's
//! body with only the model renamed.

mod passthrough;
mod request;
mod response;
mod stream;

pub use passthrough::{usage_from_response, ResponsesRelay};
pub use request::{
    parse_request, RequestInvalid, ResponsesRequest, MAX_CONTENT_PARTS, MAX_INPUT_ITEMS,
    MAX_METADATA_ENTRIES, MAX_TOOLS,
};
pub use response::response_from_chat;
pub use stream::ResponsesStream;

use serde_json::{json, Map, Value};

use crate::ai::Usage;

/// What a Response object repeats of the request that asked for it (`instructions`,
/// `tools`, `tool_choice`, `temperature`, ...), as the API does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo(Map<String, Value>);

/// How one answer is named toward the client.
#[derive(Debug, Clone, Copy)]
pub struct Naming<'a> {
    /// The client-facing model name.
    pub model: &'a str,
    /// The gateway's request id, from which the response and item ids are made.
    pub request_id: &'a str,
    /// Unix seconds.
    pub created_at: i64,
}

impl Naming<'_> {
    /// The response id, `resp_...`.
    fn response_id(&self) -> String {
        format!("resp_{}", self.request_id)
    }

    /// The id of the answer's message item, `msg_...`.
    fn message_id(&self) -> String {
        format!("msg_{}", self.request_id)
    }

    /// The id of the answer's `n`th function call item, `fc_..._n`.
    fn call_item_id(&self, n: usize) -> String {
        format!("fc_{}_{n}", self.request_id)
    }
}

/// A Response's `status`, and why it is incomplete when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    status: &'static str,
    incomplete_reason: Option<&'static str>,
}

impl Status {
    const IN_PROGRESS: Status = Status {
        status: "in_progress",
        incomplete_reason: None,
    };
    const FAILED: Status = Status {
        status: "failed",
        incomplete_reason: None,
    };

    /// The status for a chat `finish_reason`: cut by the token limit or a content filter is
    /// `incomplete`, anything else `completed`.
    fn of_finish(finish_reason: Option<&str>) -> Status {
        let incomplete_reason = match finish_reason {
            Some("length") => Some("max_output_tokens"),
            Some("content_filter") => Some("content_filter"),
            _ => None,
        };
        Status {
            status: if incomplete_reason.is_some() {
                "incomplete"
            } else {
                "completed"
            },
            incomplete_reason,
        }
    }
}

/// A Response object: `status`, `output` and `usage` (or `null`) with the request's echo.
fn response_object(
    naming: &Naming<'_>,
    echo: &Echo,
    status: Status,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let incomplete = match status.incomplete_reason {
        Some(reason) => json!({ "reason": reason }),
        None => Value::Null,
    };
    let status = status.status;
    let mut object = json!({
        "id": naming.response_id(),
        "object": "response",
        "created_at": naming.created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "model": naming.model,
        "output": output,
        "usage": usage,
    });
    if let Value::Object(map) = &mut object {
        for (k, v) in &echo.0 {
            map.insert(k.clone(), v.clone());
        }
    }
    object
}

/// A Response `usage` object from the provider's reported usage; `reasoning_tokens` as the
/// chat answer's `completion_tokens_details` reported them.
fn usage_object(usage: &Usage, reasoning_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

/// An OpenAI chat `usage` object read: the usage, and the reasoning tokens among the
/// completion tokens.
fn read_chat_usage(usage: &Value) -> Option<(Usage, u64)> {
    let usage = usage.as_object()?;
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    let detail = |group: &str, field: &str| {
        usage
            .get(group)
            .and_then(|d| d.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Some((
        Usage {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            cached_tokens: detail("prompt_tokens_details", "cached_tokens"),
        },
        detail("completion_tokens_details", "reasoning_tokens"),
    ))
}

/// A message item with `content` (its `output_text` parts; none while it is being added).
fn message_item(id: &str, content: Vec<Value>, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// An `output_text` content part.
fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A function call item.
fn function_call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

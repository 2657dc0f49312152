//! Anthropic (`kind = "anthropic"`): the Messages API behind [`Provider`], and the translation
//! between it and the OpenAI chat-completions format, the gateway's canonical format. The
//! Anthropic front door's own body and stream pass through untouched; the OpenAI front door's
//! are translated. No embeddings. The translation is pure, synchronous functions; the caller
//! does the I/O.
//!
//! Two uses:
//! - the `POST /v1/messages` front door onto any provider: [`parse_messages_request`] and
//!   [`request_to_openai`] on the way in, [`response_from_openai`] / [`StreamFromOpenAi`] /
//!   [`error_from_openai`] on the way back;
//! - a `kind = "anthropic"` provider behind the OpenAI front door: [`request_from_openai`] on
//!   the way out, [`response_to_openai`] / [`StreamToOpenAi`] back (its whole error answers
//!   go through [`crate::ai::provider_error`], its mid-stream ones through [`stream_error`]).
//!
//! The front door's direction lives here, beside the provider's, because the two are one
//! mapping read both ways (stop reasons, usage, ids, error types, content blocks): keeping
//! them together keeps them from drifting apart, and the tests check them as round trips.
//!
//! Wire formats follow the Anthropic API reference ("Messages", "Streaming Messages",
//! "Errors", "Tool use", "Vision", "Prompt caching") and the OpenAI API reference ("Chat
//! Completions": request, `chat.completion`, `chat.completion.chunk`, tool calls).
//!
//! What does not survive translation (each is noted where it happens):
//! - Anthropic → OpenAI: `top_k`, `thinking`, `service_tier`, `cache_control` marks,
//!   `is_error` on tool results, thinking blocks in assistant turns, images inside tool
//!   results; the split between cache-creation and plain input tokens is folded into
//!   `prompt_tokens`.
//! - OpenAI → Anthropic: `response_format` (Anthropic has no such field: it is left out, so
//!   JSON output is only as good as the prompt asks for), `n`, `seed`, penalties, `logprobs`,
//!   `reasoning_effort`, message `name`s; `temperature` is clamped to Anthropic's 0..=1;
//!   system/developer messages anywhere in the conversation move to the top-level `system`.

mod error;
mod request;
mod response;
mod stream;

pub use error::{error_from_openai, stream_error};
pub use request::{
    body_from_openai, parse_count_tokens_request, parse_messages_request, request_from_openai,
    request_to_openai, MessagesRequest,
};
pub use response::{response_from_openai, response_to_openai};
pub use stream::{StreamFromOpenAi, StreamToOpenAi};

use serde_json::{json, Value};

use super::stage::AnthropicPassthrough;
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::openai::Usage;
use crate::ai::TokenCounter;
use crate::ai::{EmbeddingsRequest, RequestError, TranslateError};
use crate::http1::push_header;

/// Prefix of the ids of chat completions made from Anthropic messages.
const CHAT_ID_PREFIX: &str = "chatcmpl-";
/// Prefix of the ids of Anthropic messages made from chat completions.
const MESSAGE_ID_PREFIX: &str = "msg_";

/// The chat completion id for an Anthropic message id: the source id kept inside, so logs on
/// both sides can be matched.
fn chat_id_for(message_id: &str) -> String {
    format!("{CHAT_ID_PREFIX}{message_id}")
}

/// The Anthropic message id for a chat completion id (source id kept inside).
fn message_id_for(chat_id: &str) -> String {
    format!("{MESSAGE_ID_PREFIX}{chat_id}")
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`. `pause_turn` (a server tool paused a
/// long turn) is a normal end for the client; `refusal` is the closest thing to OpenAI's
/// `content_filter`; running out of context is a length stop.
fn finish_reason_for(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`. OpenAI does not say whether a stop
/// sequence ended the text, so `stop` is always `end_turn`.
fn stop_reason_for(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// The token counts of an Anthropic `usage` object (Messages API, "Prompt caching": the
/// input is split into plain, cache-read and cache-creation tokens).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct AnthropicUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl AnthropicUsage {
    /// Overwrites each count present in `usage` (a `message_delta` may carry only some).
    fn update(&mut self, usage: &Value) {
        let count = |field: &str| usage.get(field).and_then(Value::as_u64);
        if let Some(n) = count("input_tokens") {
            self.input = n;
        }
        if let Some(n) = count("output_tokens") {
            self.output = n;
        }
        if let Some(n) = count("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = count("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
    }

    fn read(usage: &Value) -> Self {
        let mut counts = AnthropicUsage::default();
        counts.update(usage);
        counts
    }

    /// Anthropic's `input_tokens` excludes cached input; OpenAI's `prompt_tokens` includes it.
    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.input + self.cache_read + self.cache_creation,
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
        }
    }

    /// The reverse: cache-creation tokens are not reported by OpenAI, so they stay in input.
    fn from_usage(usage: Usage) -> Self {
        AnthropicUsage {
            input: usage.prompt_tokens.saturating_sub(usage.cached_tokens),
            output: usage.completion_tokens,
            cache_read: usage.cached_tokens,
            cache_creation: 0,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
        })
    }
}

/// An OpenAI `usage` object.
fn openai_usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

/// Reads an OpenAI `usage` object; `None` when it is not an object.
fn read_openai_usage(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        cached_tokens: usage
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The Anthropic API version the gateway speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The Anthropic Messages API.
#[derive(Debug)]
pub struct Anthropic;

impl Provider for Anthropic {
    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        let body = match &call.anthropic_body {
            Some(original) => {
                let mut body = original.clone();
                body.insert("model".into(), target.upstream_model.into());
                serde_json::to_vec(&body).expect("JSON maps serialize")
            }
            None => request_from_openai(
                &call.request.body,
                target.upstream_model,
                default_max_tokens,
            )?,
        };
        Ok((format!("{}/v1/messages", target.base_path), body))
    }

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(key) = key {
            push_header(out, "x-api-key", key);
        }
        push_header(out, "anthropic-version", ANTHROPIC_VERSION.as_bytes());
    }

    fn chat_response(
        &self,
        body: Vec<u8>,
        front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        // Translated either way: it checks the answer and reads its usage.
        let (canonical, usage) = response_to_openai(&body, reply.model, reply.created)?;
        Ok(match front {
            // Passed through, with the client-facing model name.
            Dialect::Anthropic => Whole {
                body: crate::ai::model_name::rename_body(body, reply.model),
                usage: Some(usage),
                dialect: Dialect::Anthropic,
            },
            Dialect::OpenAi => Whole {
                body: canonical,
                usage: Some(usage),
                dialect: Dialect::OpenAi,
            },
        })
    }

    fn stream_stage(
        &self,
        front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        if front == Dialect::Anthropic {
            let mut meter = StreamToOpenAi::new(reply.model, reply.created, true);
            meter.set_token_counter(counter);
            return Stage {
                stage: Box::new(AnthropicPassthrough::new(meter, reply.model)),
                dialect: Dialect::Anthropic,
            };
        }
        let mut stage = StreamToOpenAi::new(reply.model, reply.created, canonical_usage);
        stage.set_token_counter(counter);
        Stage {
            stage: Box::new(stage),
            dialect: Dialect::OpenAi,
        }
    }

    fn embeddings_request(
        &self,
        _request: &EmbeddingsRequest,
        _target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        None
    }

    fn count_tokens_request(
        &self,
        body: &serde_json::Map<String, Value>,
        target: &Target<'_>,
    ) -> Option<(String, Vec<u8>)> {
        // The client's body as it is, with the upstream model: the API takes the same
        // members the front door accepts.
        let mut body = body.clone();
        body.insert("model".into(), target.upstream_model.into());
        let body = serde_json::to_vec(&body).expect("JSON maps serialize");
        Some((
            format!("{}/v1/messages/count_tokens", target.base_path),
            body,
        ))
    }

    fn count_tokens_response(&self, body: &[u8]) -> Result<u64, TranslateError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| TranslateError("count_tokens answer is not JSON".into()))?;
        value
            .get("input_tokens")
            .and_then(Value::as_u64)
            .ok_or_else(|| TranslateError("count_tokens answer has no input_tokens".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason_for(stop), finish, "{stop}");
        }
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(stop_reason_for(finish), stop, "{finish}");
        }
    }

    #[test]
    fn anthropic_usage_counts_cached_input_as_prompt_tokens() {
        let usage = AnthropicUsage::read(&json!({
            "input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20
        }));
        assert_eq!(
            usage.to_usage(),
            Usage {
                prompt_tokens: 130,
                completion_tokens: 5,
                cached_tokens: 100
            }
        );
    }

    #[test]
    fn openai_usage_splits_cached_tokens_out_of_input() {
        let usage = AnthropicUsage::from_usage(Usage {
            prompt_tokens: 130,
            completion_tokens: 5,
            cached_tokens: 100,
        });
        assert_eq!(
            usage.to_json(),
            json!({"input_tokens": 30, "output_tokens": 5,
                   "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100})
        );
    }

    #[test]
    fn usage_round_trips_without_cache_creation() {
        let usage = Usage {
            prompt_tokens: 42,
            completion_tokens: 7,
            cached_tokens: 12,
        };
        assert_eq!(AnthropicUsage::from_usage(usage).to_usage(), usage);
        assert_eq!(read_openai_usage(&openai_usage_json(usage)), Some(usage));
    }

    #[test]
    fn usage_update_keeps_counts_the_update_lacks() {
        let mut usage = AnthropicUsage::read(&json!({"input_tokens": 25, "output_tokens": 1}));
        usage.update(&json!({"output_tokens": 15}));
        assert_eq!(usage.input, 25);
        assert_eq!(usage.output, 15);
    }

    #[test]
    fn ids_keep_the_source_id() {
        assert_eq!(chat_id_for("msg_01AB"), "chatcmpl-msg_01AB");
        assert_eq!(message_id_for("chatcmpl-9x"), "msg_chatcmpl-9x");
    }
}

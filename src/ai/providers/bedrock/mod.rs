//! Amazon Bedrock (`kind = "bedrock"`) behind [`Provider`]: the Converse and ConverseStream
//! APIs (`POST /model/{modelId}/converse`, `/converse-stream`), every request SigV4-signed
//! (service `bedrock`, the provider's region; [`signing`]), the streamed answer in AWS
//! event-stream framing ([`frames`]); and the translation between the OpenAI chat-completions
//! format (the gateway's canonical one) and Converse's, in pure functions.
//!
//! Wire formats follow botocore's `bedrock-runtime` service model (`ConverseRequest`,
//! `ConverseResponse`, `ConverseStreamOutput`, `TokenUsage`, `StopReason`) and the Bedrock
//! API reference ("Converse", "ConverseStream").
//!
//! What does not survive translation:
//! - OpenAI → Bedrock: system messages anywhere move to `system`; image, audio and file parts
//!   are refused (Bedrock takes bytes, not URLs); `n`, penalties, `seed`, `logit_bias`,
//!   `logprobs`, `response_format`, `parallel_tool_calls` and `user` are not sent;
//!   `tool_choice = "none"` forces nothing (Bedrock has no "none").
//! - Bedrock → OpenAI: reasoning, citation and guardrail blocks are dropped; the blocking stop
//!   reasons become `content_filter`.

pub mod frames;
mod request;
mod response;
pub mod signing;
mod stream;

pub use request::request_from_openai;
pub use response::response_to_openai;
pub use signing::AwsSigning;
pub use stream::StreamToOpenAi;

use serde_json::{json, Map, Value};

use super::segment::encode_path_segment;
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::openai::Usage;
use crate::ai::TokenCounter;
use crate::ai::{EmbeddingsRequest, RequestError, TranslateError};

/// The content type of a ConverseStream answer.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// The path under the provider's `base_url` of a chat call on `model_id`:
/// `/model/{modelId}/converse`, or `/converse-stream`. The model id is percent-encoded as
/// one segment, as botocore renders the URI label (`:` in `...-v1:0` becomes `%3A`; the
/// SigV4 canonical URI then encodes it once more).
pub fn chat_path(model_id: &str, stream: bool) -> String {
    let method = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("/model/{}/{method}", encode_path_segment(model_id))
}

/// A present, non-null member (`null` means "not given" in OpenAI's API).
fn given<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

/// The token counts of a Bedrock `TokenUsage` object.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct BedrockUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl BedrockUsage {
    fn read(usage: &Value) -> Self {
        let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
        BedrockUsage {
            input: count("inputTokens"),
            output: count("outputTokens"),
            cache_read: count("cacheReadInputTokens"),
            cache_write: count("cacheWriteInputTokens"),
        }
    }

    /// Bedrock's `inputTokens` leaves out the tokens read from and written to the prompt
    /// cache (as Anthropic's `input_tokens` does); OpenAI's `prompt_tokens` holds every
    /// input token, cached ones included.
    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.input + self.cache_read + self.cache_write,
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
        }
    }

    fn to_openai(self) -> Value {
        let usage = self.to_usage();
        json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": { "cached_tokens": usage.cached_tokens },
        })
    }
}

/// Bedrock `stopReason` → OpenAI `finish_reason`.
fn finish_reason_for(reason: &str) -> &'static str {
    match reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence, malformed output, and anything newer.
        _ => "stop",
    }
}

/// The HTTP status an exception of the stream stands for (the status Bedrock answers the same
/// exception with as a whole error, per its API reference).
fn exception_status(exception: &str) -> u16 {
    match exception {
        "validationException" => 400,
        "accessDeniedException" => 403,
        "resourceNotFoundException" => 404,
        "modelTimeoutException" => 408,
        "modelStreamErrorException" | "modelErrorException" => 424,
        "throttlingException" => 429,
        "serviceUnavailableException" | "modelNotReadyException" => 503,
        _ => 500,
    }
}

/// A `toolUse` block as an OpenAI tool call: `input` (a JSON document) becomes the
/// `arguments` string.
fn tool_call(tool_use: &Value) -> Value {
    let id = tool_use
        .get("toolUseId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = tool_use
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let arguments = match tool_use.get("input") {
        Some(input) if !input.is_null() => input.to_string(),
        _ => "{}".to_string(),
    };
    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } })
}

/// The Bedrock runtime API. Its requests are signed by the caller with the provider's
/// [`AwsSigning`] (see `push_headers`: Bedrock takes no key header).
#[derive(Debug)]
pub struct Bedrock;

impl Provider for Bedrock {
    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        _default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        Ok((
            format!(
                "{}{}",
                target.base_path,
                chat_path(target.upstream_model, call.request.stream)
            ),
            request_from_openai(&call.request.body)?,
        ))
    }

    /// Nothing: Bedrock authenticates with the SigV4 signature, added per request.
    fn push_headers(&self, _key: Option<&[u8]>, _out: &mut Vec<u8>) {}

    fn chat_response(
        &self,
        body: Vec<u8>,
        _front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        let (canonical, usage) = response_to_openai(&body, reply.model, reply.id, reply.created)?;
        Ok(Whole {
            body: canonical,
            usage: Some(usage),
            dialect: Dialect::OpenAi,
        })
    }

    fn stream_stage(
        &self,
        _front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        let stage = StreamToOpenAi::new(
            reply.model,
            reply.id,
            reply.created,
            canonical_usage,
            counter,
        );
        Stage {
            stage: Box::new(stage),
            dialect: Dialect::OpenAi,
        }
    }

    /// Bedrock's embeddings models are reached through `InvokeModel`, not Converse.
    fn embeddings_request(
        &self,
        _request: &EmbeddingsRequest,
        _target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_path_encodes_the_model_id_as_botocore_does() {
        assert_eq!(
            chat_path("anthropic.claude-3-haiku-20240307-v1:0", false),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(
            chat_path("us.meta.llama3/x", true),
            "/model/us.meta.llama3%2Fx/converse-stream"
        );
    }

    #[test]
    fn usage_counts_cache_reads_and_writes_inside_the_prompt() {
        let usage = BedrockUsage::read(&json!({"inputTokens": 10, "outputTokens": 5,
            "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7, "totalTokens": 122}));
        assert_eq!(
            usage.to_usage(),
            Usage {
                prompt_tokens: 117,
                completion_tokens: 5,
                cached_tokens: 100
            }
        );
        assert_eq!(usage.to_openai()["total_tokens"], 122);
    }

    #[test]
    fn stop_reasons_and_exceptions_map() {
        assert_eq!(finish_reason_for("end_turn"), "stop");
        assert_eq!(finish_reason_for("stop_sequence"), "stop");
        assert_eq!(finish_reason_for("tool_use"), "tool_calls");
        assert_eq!(finish_reason_for("max_tokens"), "length");
        assert_eq!(finish_reason_for("guardrail_intervened"), "content_filter");
        assert_eq!(exception_status("throttlingException"), 429);
        assert_eq!(exception_status("validationException"), 400);
        assert_eq!(exception_status("somethingNew"), 500);
    }
}

//! Google Gemini (`kind = "gemini"`, Google AI's `generativelanguage.googleapis.com`) behind
//! [`Provider`]: `generateContent` and `streamGenerateContent?alt=sse`, `batchEmbedContents`,
//! the key in `x-goog-api-key`; and the translation between the OpenAI chat-completions format
//! (the gateway's canonical format) and Gemini's, in pure, synchronous functions (the caller
//! does the I/O).
//!
//! - [`chat_path`], [`request_from_openai`]: the `models.generateContent` /
//!   `models.streamGenerateContent?alt=sse` call for an OpenAI chat request;
//! - [`response_to_openai`], [`StreamToOpenAi`]: the answer back as a `chat.completion` or
//!   `chat.completion.chunk` events, with usage;
//! - errors: whole answers through [`crate::ai::provider_error`], mid-stream ones mapped by
//!   their HTTP status (`error.rs`);
//! - [`embeddings_path`], [`embeddings_request_from_openai`],
//!   [`embeddings_response_to_openai`]: `POST /v1/embeddings` onto `models.batchEmbedContents`.
//!
//! Wire formats follow the Gemini API reference ("Generating content": `GenerateContentRequest`,
//! `Content`/`Part`, `GenerationConfig`, `Tool`/`FunctionDeclaration`/`ToolConfig`,
//! `GenerateContentResponse`, `Candidate.FinishReason`, `UsageMetadata`; "Embeddings";
//! "Thought signatures"; "Troubleshooting" for errors) and the OpenAI API reference ("Chat
//! Completions", "Embeddings").
//!
//! What does not survive translation (each is noted where it happens):
//! - OpenAI → Gemini: system/developer messages anywhere in the conversation move to
//!   `systemInstruction`; message `name`s, `logprobs`/`top_logprobs`, `logit_bias`,
//!   `parallel_tool_calls`, `reasoning_effort`, `user`, `metadata`, `service_tier`,
//!   `prediction`, audio output; JSON-schema keywords outside Gemini's OpenAPI subset
//!   (`additionalProperties`, `$schema`, `strict`, `oneOf` becomes `anyOf`, non-string `enum`s,
//!   string `format`s other than `enum`/`date-time`; local `$ref`s are inlined); `file_id`
//!   file parts are refused.
//! - Gemini → OpenAI: thought parts (`thought: true`) and code-execution parts are dropped;
//!   Gemini's thought signatures cannot ride along an OpenAI tool call, so replayed tool calls
//!   carry Google's documented placeholder signature instead (see `request.rs`); safety
//!   ratings, citations, grounding and logprobs are dropped; the many blocking finish reasons
//!   all become `content_filter`.
//! - Embeddings: token-array inputs are refused; the usage is an estimate (Gemini reports
//!   none).

mod embeddings;
mod error;
mod request;
mod response;
mod schema;
mod stream;

pub use embeddings::{
    embeddings_path, embeddings_request_from_openai, embeddings_response_to_openai,
};
pub use request::request_from_openai;
pub use response::response_to_openai;
pub use stream::StreamToOpenAi;

use serde_json::{json, Map, Value};

use super::segment::encode_path_segment;
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::openai::{self, Usage};
use crate::ai::TokenCounter;
use crate::ai::{EmbeddingsRequest, RequestError, TranslateError};
use crate::http1::push_header;

/// The path under the provider's `base_url` of a chat call on `upstream_model`:
/// `/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse` for a stream
/// (`alt=sse` makes each chunk one server-sent event; without it Gemini streams one JSON array).
/// A `models/` prefix on the configured name is accepted and not doubled.
pub fn chat_path(upstream_model: &str, stream: bool) -> String {
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    format!("{}:{method}", model_resource(upstream_model))
}

/// `/v1beta/models/{model}` with the model name percent-encoded as one path segment (a `:` in
/// it would otherwise start the method name).
fn model_resource(upstream_model: &str) -> String {
    let name = upstream_model
        .strip_prefix("models/")
        .unwrap_or(upstream_model);
    format!("/v1beta/models/{}", encode_path_segment(name))
}

/// A present, non-null member (`null` means "not given" in OpenAI's API).
fn given<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

/// The token counts of a Gemini `usageMetadata` object.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct GeminiUsage {
    prompt: u64,
    candidates: u64,
    cached: u64,
    thoughts: u64,
    tool_use_prompt: u64,
}

impl GeminiUsage {
    /// Reads `usageMetadata`; a count Gemini leaves out is zero (proto3 JSON omits zeros).
    fn read(usage: &Value) -> Self {
        let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
        GeminiUsage {
            prompt: count("promptTokenCount"),
            candidates: count("candidatesTokenCount"),
            cached: count("cachedContentTokenCount"),
            thoughts: count("thoughtsTokenCount"),
            tool_use_prompt: count("toolUsePromptTokenCount"),
        }
    }

    /// Gemini's `promptTokenCount` already includes the cached tokens, as OpenAI's
    /// `prompt_tokens` does. Thinking tokens are billed as output, so they count as completion
    /// tokens (OpenAI counts reasoning tokens the same way); tool-use prompt tokens (e.g.
    /// search results fed back to the model) are billed as input.
    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt + self.tool_use_prompt,
            completion_tokens: self.candidates + self.thoughts,
            cached_tokens: self.cached,
        }
    }

    /// The OpenAI `usage` object, with the thinking tokens as `reasoning_tokens`.
    fn to_openai(self) -> Value {
        let usage = self.to_usage();
        json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": { "cached_tokens": usage.cached_tokens },
            "completion_tokens_details": { "reasoning_tokens": self.thoughts },
        })
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`. `STOP` is a natural end or a stop sequence;
/// every reason that blocks content (`SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`,
/// `SPII`, `IMAGE_SAFETY`, ...) is OpenAI's `content_filter`; the rest (`LANGUAGE`, `OTHER`,
/// `MALFORMED_FUNCTION_CALL`, and anything newer) has no OpenAI equivalent and is `stop`.
/// A candidate that called functions and stopped naturally ends with `tool_calls`.
fn finish_reason_for(reason: &str, called_tools: bool) -> &'static str {
    const BLOCKING: &[&str] = &["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED", "SPII"];
    match reason {
        "MAX_TOKENS" => "length",
        "STOP" if called_tools => "tool_calls",
        _ if BLOCKING.iter().any(|word| reason.contains(word)) => "content_filter",
        _ => "stop",
    }
}

/// The OpenAI tool call id for the `n`th function call of a response.
fn tool_call_id(n: usize) -> String {
    format!("call_{n}")
}

/// A `functionCall` part as an OpenAI tool call (without the stream's `index`): `args` (a JSON
/// object) becomes the `arguments` string.
fn tool_call(call: &Value, id: String) -> Value {
    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
    let arguments = match call.get("args") {
        Some(args) if !args.is_null() => args.to_string(),
        _ => "{}".to_string(),
    };
    json!({
        "id": id,
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    })
}

/// The text of a part the client should see: plain text, not the model's thoughts.
fn visible_text(part: &Value) -> Option<&str> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    part.get("text").and_then(Value::as_str)
}

/// A candidate's position among the choices (proto3 JSON leaves out `index: 0`).
fn candidate_index(candidate: &Value) -> u64 {
    candidate.get("index").and_then(Value::as_u64).unwrap_or(0)
}

/// The reason Gemini blocked the prompt itself (`promptFeedback.blockReason`), if it did.
fn prompt_block_reason(response: &Value) -> Option<&str> {
    response
        .get("promptFeedback")
        .and_then(|f| f.get("blockReason"))
        .and_then(Value::as_str)
}

/// The Gemini API.
#[derive(Debug)]
pub struct Gemini;

impl Provider for Gemini {
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

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(key) = key {
            push_header(out, "x-goog-api-key", key);
        }
    }

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
        let mut stage = StreamToOpenAi::new(reply.model, reply.id, reply.created, canonical_usage);
        stage.set_token_counter(counter);
        Stage {
            stage: Box::new(stage),
            dialect: Dialect::OpenAi,
        }
    }

    fn embeddings_request(
        &self,
        request: &EmbeddingsRequest,
        target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        Some(
            embeddings_request_from_openai(&request.body, target.upstream_model).map(|body| {
                (
                    format!(
                        "{}{}",
                        target.base_path,
                        embeddings_path(target.upstream_model)
                    ),
                    body,
                )
            }),
        )
    }

    fn embeddings_response(
        &self,
        body: Vec<u8>,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<(Vec<u8>, Option<Usage>), TranslateError> {
        let body = embeddings_response_to_openai(&body, model, &request.body)?;
        let usage = openai::usage_from_embeddings_response(&body);
        Ok((body, usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_path_names_the_method() {
        assert_eq!(
            chat_path("gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            chat_path("gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn chat_path_accepts_a_models_prefix_and_encodes_the_name() {
        assert_eq!(
            chat_path("models/gemini-2.0-flash", false),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            chat_path("a:b/c d", false),
            "/v1beta/models/a%3Ab%2Fc%20d:generateContent"
        );
    }

    #[test]
    fn usage_counts_thoughts_as_completion_and_cache_inside_prompt() {
        let usage = GeminiUsage::read(&json!({
            "promptTokenCount": 100, "candidatesTokenCount": 20,
            "cachedContentTokenCount": 60, "thoughtsTokenCount": 30,
            "toolUsePromptTokenCount": 5, "totalTokenCount": 155
        }));
        assert_eq!(
            usage.to_usage(),
            Usage {
                prompt_tokens: 105,
                completion_tokens: 50,
                cached_tokens: 60
            }
        );
        let wire = usage.to_openai();
        assert_eq!(wire["total_tokens"], 155);
        assert_eq!(wire["completion_tokens_details"]["reasoning_tokens"], 30);
        assert_eq!(wire["prompt_tokens_details"]["cached_tokens"], 60);
    }

    #[test]
    fn finish_reasons_map_to_openai() {
        assert_eq!(finish_reason_for("STOP", false), "stop");
        assert_eq!(finish_reason_for("STOP", true), "tool_calls");
        assert_eq!(finish_reason_for("MAX_TOKENS", true), "length");
        for blocked in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
        ] {
            assert_eq!(
                finish_reason_for(blocked, false),
                "content_filter",
                "{blocked}"
            );
        }
        for other in ["OTHER", "LANGUAGE", "MALFORMED_FUNCTION_CALL", "NEW_REASON"] {
            assert_eq!(finish_reason_for(other, false), "stop", "{other}");
        }
    }
}

//! The AI front doors' pure parts: what the pipeline calls between reading a request body and
//! relaying a provider's answer. Nothing here does I/O or blocks.
//!
//! - [`catalog`]: `[[provider]]` and `[[model]]` compiled for lookup per request.
//! - [`openai`]: the canonical dialect every front door and provider translates through (the
//!   OpenAI chat and embeddings requests the pipeline checks and meters, usage, the canonical
//!   stream relay, `GET /v1/models`); it lives here, not under [`providers`], because the
//!   front doors and every provider use it.
//! - [`model_name`]: the client-facing model name put in answers that pass through.
//! - [`sse`]: server-sent events, parsed incrementally and encoded (the load generator
//!   counts events with it too).
//! - [`providers`]: every provider behind the one trait the pipeline calls, each with its
//!   wire format (Anthropic's also serves the `/v1/messages` front door, see there); adding
//!   a provider touches only that directory and the config.
//! - [`responses`]: the OpenAI Responses API, rewritten as the canonical chat request and
//!   its answer (whole or streamed) rewritten as a Response.
//! - [`provider_error`]: a provider's error answer as the gateway's error, its message made
//!   safe by [`scrub`].
//! - [`tokens`]: prompt token estimates per request format (tiktoken for OpenAI model
//!   families, bytes/4 otherwise), made before a request goes upstream so the limits can
//!   admit it; [`relayed_tokens`]: completion tokens counted from a stream as it passes.

pub mod breaker;
pub mod catalog;
pub mod model_name;
pub mod openai;
pub mod prompt;
pub mod provider_error;
pub mod providers;
pub mod relayed_tokens;
pub mod responses;
pub mod scrub;
pub mod sse;
pub mod tokens;

pub use catalog::{Catalog, Model, Provider};
pub use openai::{ChatRequest, ChatStreamRelay, EmbeddingsRequest, RequestError, Usage};
pub use relayed_tokens::RelayedTokens;
pub use sse::{encode_event, SseError, SseEvent, SseParser};
pub use tokens::TokenCounter;

/// A provider response that cannot be translated into the front door's format (not the JSON
/// its API documents). The message names what was wrong, never request or response content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError(pub String);

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "untranslatable provider response: {}", self.0)
    }
}

impl std::error::Error for TranslateError {}

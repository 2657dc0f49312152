//! The AI front doors' pure parts: what the pipeline calls between reading a request body and
//! relaying a provider's answer. Nothing here does I/O or blocks.
//!
//! - [`catalog`]: `[[provider]]` and `[[model]]` compiled for lookup per request.
//! - [`openai`]: the OpenAI wire format: request checks, upstream bodies, usage, the stream
//!   relay, `GET /v1/models`.
//! - [`sse`]: server-sent events, parsed incrementally and encoded.
//! - [`mock`]: the in-process mock provider (deterministic replies and usage).

pub mod catalog;
pub mod mock;
pub mod openai;
pub mod sse;

pub use catalog::{Catalog, Model, Provider};
pub use mock::MockReply;
pub use openai::{ChatRequest, ChatStreamRelay, EmbeddingsRequest, RequestError, Usage};
pub use sse::{encode_event, SseError, SseEvent, SseParser};

//! Every provider behind one [`Provider`] trait: where a call goes and how it is
//! authenticated, how the canonical (OpenAI) request becomes the provider's, how its answer,
//! whole or streamed, becomes canonical again, how its errors map to the gateway's, and what
//! usage it reports. The pipeline calls only these methods and never asks which provider it
//! is talking to.
//!
//! One implementation is chosen per `[[provider]]` when the catalog is built
//! ([`for_kind`]); each is a unit struct, so the choice costs a `&'static` pointer and no
//! allocation. The wire formats themselves live in their own modules ([`crate::ai::openai`],
//! [`crate::ai::azure`], [`crate::ai::anthropic`], [`crate::ai::gemini`],
//! [`crate::ai::mock`]); the implementations here only put them together.
//!
//! Adding a provider: a module here with a unit struct implementing [`Provider`], its
//! `kind` in [`crate::config::ProviderKind`] (with its default `base_url`), and its arm in
//! [`for_kind`].

mod anthropic;
mod azure;
mod gemini;
mod mock;
mod openai;
pub mod stage;

use std::fmt;

use serde_json::{Map, Value};

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::{ChatRequest, EmbeddingsRequest, RequestError, TranslateError, Usage};
use crate::config::ProviderKind;
use crate::meter::TokenCounter;

pub use anthropic::Anthropic;
pub use azure::AzureOpenAi;
pub use gemini::Gemini;
pub use mock::Mock;
pub use openai::OpenAi;
pub use stage::{ClientStage, EventStage, ProviderStage};

/// Which dialect the client speaks (and, for an answer, which dialect a body is in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// `/v1/chat/completions` and `/prompts/*`: OpenAI chat, the canonical form.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

/// A chat call as the front door received it.
pub struct Call {
    /// The client's dialect.
    pub front: Front,
    /// The request in canonical (OpenAI chat) form, `model` as the client named it.
    pub request: ChatRequest,
    /// The client's Messages body, sent as it is (model replaced) to Anthropic providers.
    pub anthropic_body: Option<Map<String, Value>>,
}

/// Where on a provider a call goes: the parts of `[[provider]]` and `[[model]]` that shape
/// its path and body.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The path part of the provider's `base_url`, without a trailing slash.
    pub base_path: &'a str,
    /// The model name (or Azure deployment) the provider knows.
    pub upstream_model: &'a str,
    /// Azure's `api-version`.
    pub api_version: &'a str,
}

/// What a translated answer is labelled with toward the client.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The client-facing model name.
    pub model: &'a str,
    /// The completion id (`chatcmpl-...`).
    pub id: &'a str,
    /// Unix seconds.
    pub created: i64,
}

/// A whole answer translated by a provider: in the canonical dialect, or already in the
/// front door's own when the provider speaks it natively.
#[derive(Debug)]
pub struct Whole {
    /// The answer's body.
    pub body: Vec<u8>,
    /// The usage the provider reported, if any.
    pub usage: Option<Usage>,
    /// The dialect `body` is in: [`Front::OpenAi`] unless the provider speaks the front
    /// door's dialect.
    pub dialect: Front,
}

/// A provider-side stream stage and the dialect it emits.
pub struct Stage {
    /// Reads the provider's events, meters them, and emits `dialect`.
    pub stage: Box<dyn ProviderStage>,
    /// [`Front::OpenAi`] (canonical chunks) unless the provider's own events go to the
    /// client untouched.
    pub dialect: Front,
}

/// An answer made in-process, without a network call.
pub struct LocalChat {
    /// The usage the answer stands for, known before it is sent.
    pub usage: Usage,
    /// The answer in canonical form.
    pub body: LocalBody,
}

/// The shape of a local answer.
pub enum LocalBody {
    /// A `chat.completion`.
    Whole(Vec<u8>),
    /// Complete `chat.completion.chunk` server-sent events, `[DONE]` last.
    Events(Vec<Vec<u8>>),
}

/// One provider API. Implementations are stateless: everything per provider instance comes
/// in through [`Target`] and the key.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The path (under `base_path`) and body of a chat call.
    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError>;

    /// Appends the provider's authentication headers (the gateway's `key`, when configured)
    /// and any header every call needs, each ending in CRLF.
    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>);

    /// A whole successful chat answer translated toward `front`, with its usage.
    fn chat_response(
        &self,
        body: Vec<u8>,
        front: Front,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError>;

    /// The provider-side stage of a streamed chat answer toward `front`; `canonical_usage`
    /// asks for the usage chunk in canonical output, `counter` counts relayed text.
    fn stream_stage(
        &self,
        front: Front,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage;

    /// The path (under `base_path`) and body of an embeddings call; `None` when the provider
    /// has no embeddings endpoint.
    fn embeddings_request(
        &self,
        request: &EmbeddingsRequest,
        target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>>;

    /// A successful embeddings answer in OpenAI's form, with its usage; `model` is the
    /// client-facing name.
    fn embeddings_response(
        &self,
        body: Vec<u8>,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<(Vec<u8>, Option<Usage>), TranslateError> {
        let _ = (model, request);
        let usage = crate::ai::openai::usage_from_embeddings_response(&body);
        Ok((body, usage))
    }

    /// A provider's error answer as the gateway's error, `secrets` scrubbed from its message.
    fn error(
        &self,
        status: u16,
        body: &[u8],
        retry_after: Option<&[u8]>,
        secrets: &[&str],
    ) -> ProviderError {
        provider_error::from_response(status, body, retry_after, secrets)
    }

    /// Whether calls are answered in-process ([`Provider::local_chat`]) rather than sent.
    fn is_local(&self) -> bool {
        false
    }

    /// The in-process answer to `call`; `None` for a provider reached over the network.
    fn local_chat(&self, call: &Call, reply: &Reply<'_>, include_usage: bool) -> Option<LocalChat> {
        let _ = (call, reply, include_usage);
        None
    }

    /// The in-process embeddings answer for `input` and its usage; `None` for a provider
    /// reached over the network.
    fn local_embeddings(&self, model: &str, input: &Value) -> Option<(Vec<u8>, Option<Usage>)> {
        let _ = (model, input);
        None
    }
}

/// The implementation of `kind`: the one place a provider kind is matched on.
pub fn for_kind(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Openai => &OpenAi,
        ProviderKind::AzureOpenai => &AzureOpenAi,
        ProviderKind::Anthropic => &Anthropic,
        ProviderKind::Gemini => &Gemini,
        ProviderKind::Mock => &Mock,
    }
}

//! OpenAI (`kind = "openai"`): the canonical dialect, so requests and answers pass with only
//! the model replaced. Azure OpenAI and the mock share its bodies and streams.

use super::stage::OpenAiRelay;
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::TokenCounter;
use crate::ai::{openai, EmbeddingsRequest, RequestError, TranslateError};

/// The OpenAI API.
#[derive(Debug)]
pub struct OpenAi;

/// A canonical `chat.completion` with the usage it reports.
pub(super) fn canonical_whole(body: Vec<u8>) -> Whole {
    let usage = openai::usage_from_chat_response(&body);
    Whole {
        body,
        usage,
        dialect: Dialect::OpenAi,
    }
}

/// The stage for a stream that is canonical already: relayed, metered on the side.
pub(super) fn canonical_stage(canonical_usage: bool, counter: TokenCounter) -> Stage {
    Stage {
        stage: Box::new(OpenAiRelay::new(canonical_usage, counter)),
        dialect: Dialect::OpenAi,
    }
}

impl Provider for OpenAi {
    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        _default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        Ok((
            format!("{}/v1/chat/completions", target.base_path),
            openai::upstream_chat_body(&call.request, target.upstream_model),
        ))
    }

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(key) = key {
            out.extend_from_slice(b"authorization: Bearer ");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn chat_response(
        &self,
        body: Vec<u8>,
        _front: Dialect,
        _reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        Ok(canonical_whole(body))
    }

    fn stream_stage(
        &self,
        _front: Dialect,
        _reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        canonical_stage(canonical_usage, counter)
    }

    fn embeddings_request(
        &self,
        request: &EmbeddingsRequest,
        target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        Some(Ok((
            format!("{}/v1/embeddings", target.base_path),
            openai::upstream_embeddings_body(request, target.upstream_model),
        )))
    }
}

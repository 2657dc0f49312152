//! Azure OpenAI (`kind = "azure_openai"`): OpenAI's bodies and streams on Azure's deployment
//! paths (see [`crate::ai::azure`]), the key in `api-key`.

use super::openai::{canonical_stage, canonical_whole};
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::TokenCounter;
use crate::ai::{azure, openai, EmbeddingsRequest, RequestError, TranslateError};
use crate::http1::push_header;

/// The Azure OpenAI API.
#[derive(Debug)]
pub struct AzureOpenAi;

impl Provider for AzureOpenAi {
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
                azure::chat_path(target.upstream_model, target.api_version)
            ),
            openai::upstream_chat_body(&call.request, target.upstream_model),
        ))
    }

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(key) = key {
            push_header(out, "api-key", key);
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
            format!(
                "{}{}",
                target.base_path,
                azure::embeddings_path(target.upstream_model, target.api_version)
            ),
            openai::upstream_embeddings_body(request, target.upstream_model),
        )))
    }
}

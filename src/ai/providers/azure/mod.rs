//! Azure OpenAI (`kind = "azure_openai"`): OpenAI's bodies and streams on Azure's deployment
//! paths (see [`paths`]), the key in `api-key`.

pub mod paths;

use super::{Call, Provider, Target};
use crate::ai::{openai, EmbeddingsRequest, RequestError};
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
                paths::chat_path(target.upstream_model, target.api_version)
            ),
            openai::upstream_chat_body(&call.request, target.upstream_model),
        ))
    }

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(key) = key {
            push_header(out, "api-key", key);
        }
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
                paths::embeddings_path(target.upstream_model, target.api_version)
            ),
            openai::upstream_embeddings_body(request, target.upstream_model),
        )))
    }
}

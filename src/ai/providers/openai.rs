//! OpenAI (`kind = "openai"`): the canonical dialect, so requests and answers pass with only
//! the model replaced. Azure OpenAI and the mock share its bodies and streams.

use serde_json::{Map, Value};

use super::{Call, Provider, Target};
use crate::ai::{openai, EmbeddingsRequest, RequestError};

/// The OpenAI API.
#[derive(Debug)]
pub struct OpenAi;

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

    fn completions_request(
        &self,
        request: &openai::CompletionRequest,
        target: &Target<'_>,
    ) -> Option<(String, Vec<u8>)> {
        Some((
            format!("{}/v1/completions", target.base_path),
            openai::upstream_completion_body(request, target.upstream_model),
        ))
    }

    fn responses_request(
        &self,
        body: &Map<String, Value>,
        target: &Target<'_>,
    ) -> Option<(String, Vec<u8>)> {
        // The client's body as it is: every Responses parameter (built-in tools, `include`,
        // `reasoning`, ...) reaches the provider; only the model is the provider's name.
        let mut body = body.clone();
        body.insert("model".into(), target.upstream_model.into());
        Some((
            format!("{}/v1/responses", target.base_path),
            serde_json::to_vec(&body).expect("JSON maps serialize"),
        ))
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

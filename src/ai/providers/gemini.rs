//! Google Gemini (`kind = "gemini"`): `generateContent` and `streamGenerateContent?alt=sse`,
//! `batchEmbedContents`, the key in `x-goog-api-key` (see [`crate::ai::gemini`]).

use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::TokenCounter;
use crate::ai::{gemini, openai, EmbeddingsRequest, RequestError, TranslateError, Usage};
use crate::http1::push_header;

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
                gemini::chat_path(target.upstream_model, call.request.stream)
            ),
            gemini::request_from_openai(&call.request.body)?,
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
        let (canonical, usage) =
            gemini::response_to_openai(&body, reply.model, reply.id, reply.created)?;
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
        let mut stage =
            gemini::StreamToOpenAi::new(reply.model, reply.id, reply.created, canonical_usage);
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
            gemini::embeddings_request_from_openai(&request.body, target.upstream_model).map(
                |body| {
                    (
                        format!(
                            "{}{}",
                            target.base_path,
                            gemini::embeddings_path(target.upstream_model)
                        ),
                        body,
                    )
                },
            ),
        )
    }

    fn embeddings_response(
        &self,
        body: Vec<u8>,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<(Vec<u8>, Option<Usage>), TranslateError> {
        let body = gemini::embeddings_response_to_openai(&body, model, &request.body)?;
        let usage = openai::usage_from_embeddings_response(&body);
        Ok((body, usage))
    }
}

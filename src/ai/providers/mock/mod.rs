//! The in-process mock (`kind = "mock"`): deterministic OpenAI-format answers made without a
//! network call (see [`reply`]). Were it sent upstream, it would speak OpenAI.

pub mod reply;

use serde_json::Value;

use super::{Call, Dialect, LocalBody, LocalChat, OpenAi, Provider, Reply, Stage, Target, Whole};
use crate::ai::TokenCounter;
use crate::ai::{openai, EmbeddingsRequest, RequestError, TranslateError, Usage};

/// The mock provider.
#[derive(Debug)]
pub struct Mock;

impl Provider for Mock {
    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        OpenAi.chat_request(call, target, default_max_tokens)
    }

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        OpenAi.push_headers(key, out)
    }

    fn chat_response(
        &self,
        body: Vec<u8>,
        front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        OpenAi.chat_response(body, front, reply)
    }

    fn stream_stage(
        &self,
        front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        OpenAi.stream_stage(front, reply, canonical_usage, counter)
    }

    fn embeddings_request(
        &self,
        request: &EmbeddingsRequest,
        target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        OpenAi.embeddings_request(request, target)
    }

    fn is_local(&self) -> bool {
        true
    }

    fn local_chat(&self, call: &Call, reply: &Reply<'_>, include_usage: bool) -> Option<LocalChat> {
        let answer = reply::reply(&call.request.body);
        let body = if call.request.stream {
            LocalBody::Events(reply::chat_completion_chunks(
                reply.model,
                reply.id,
                reply.created,
                &answer,
                include_usage,
            ))
        } else {
            LocalBody::Whole(reply::chat_completion_body(
                reply.model,
                reply.id,
                reply.created,
                &answer,
            ))
        };
        Some(LocalChat {
            usage: answer.usage,
            body,
        })
    }

    fn local_embeddings(&self, model: &str, input: &Value) -> Option<(Vec<u8>, Option<Usage>)> {
        let body = reply::embeddings_body(model, input);
        let usage = openai::usage_from_embeddings_response(&body);
        Some((body, usage))
    }
}

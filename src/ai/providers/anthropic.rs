//! Anthropic (`kind = "anthropic"`): the Messages API (see [`crate::ai::anthropic`]). The
//! Anthropic front door's own body and stream pass through untouched; the OpenAI front door's
//! are translated. No embeddings.

use super::stage::AnthropicPassthrough;
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::TokenCounter;
use crate::ai::{anthropic, EmbeddingsRequest, RequestError, TranslateError};
use crate::http1::push_header;

/// The Anthropic API version the gateway speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The Anthropic Messages API.
#[derive(Debug)]
pub struct Anthropic;

impl Provider for Anthropic {
    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        let body = match &call.anthropic_body {
            Some(original) => {
                let mut body = original.clone();
                body.insert("model".into(), target.upstream_model.into());
                serde_json::to_vec(&body).expect("JSON maps serialize")
            }
            None => anthropic::request_from_openai(
                &call.request.body,
                target.upstream_model,
                default_max_tokens,
            )?,
        };
        Ok((format!("{}/v1/messages", target.base_path), body))
    }

    fn push_headers(&self, key: Option<&[u8]>, out: &mut Vec<u8>) {
        if let Some(key) = key {
            push_header(out, "x-api-key", key);
        }
        push_header(out, "anthropic-version", ANTHROPIC_VERSION.as_bytes());
    }

    fn chat_response(
        &self,
        body: Vec<u8>,
        front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        // Translated either way: it checks the answer and reads its usage.
        let (canonical, usage) = anthropic::response_to_openai(&body, reply.model, reply.created)?;
        Ok(match front {
            Dialect::Anthropic => Whole {
                body,
                usage: Some(usage),
                dialect: Dialect::Anthropic,
            },
            Dialect::OpenAi => Whole {
                body: canonical,
                usage: Some(usage),
                dialect: Dialect::OpenAi,
            },
        })
    }

    fn stream_stage(
        &self,
        front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        if front == Dialect::Anthropic {
            let mut meter = anthropic::StreamToOpenAi::new(reply.model, reply.created, true);
            meter.set_token_counter(counter);
            return Stage {
                stage: Box::new(AnthropicPassthrough::new(meter)),
                dialect: Dialect::Anthropic,
            };
        }
        let mut stage = anthropic::StreamToOpenAi::new(reply.model, reply.created, canonical_usage);
        stage.set_token_counter(counter);
        Stage {
            stage: Box::new(stage),
            dialect: Dialect::OpenAi,
        }
    }

    fn embeddings_request(
        &self,
        _request: &EmbeddingsRequest,
        _target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        None
    }
}

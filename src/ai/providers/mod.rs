//! Every provider behind one [`Provider`] trait: where a call goes and how it is
//! authenticated, how the canonical (OpenAI) request becomes the provider's, how its answer,
//! whole or streamed, becomes canonical again, how its errors map to the gateway's, and what
//! usage it reports. The pipeline calls only these methods and never asks which provider it
//! is talking to.
//!
//! One implementation is chosen per `[[provider]]` when the catalog is built
//! ([`for_kind`]); each is a unit struct, so the choice costs a `&'static` pointer and no
//! allocation. Each provider's module holds its implementation and its wire format
//! (`openai`, whose bodies are the canonical ones; [`azure`]; [`anthropic`];
//! [`gemini`]; [`vertex`], which reuses the last two; [`bedrock`]; [`mock`]); what several providers or the front doors share stays one level up:
//! the canonical (OpenAI) dialect in [`crate::ai::openai`], [`crate::ai::sse`],
//! [`crate::ai::provider_error`], [`crate::ai::scrub`], [`crate::ai::tokens`].
//!
//! Adding a provider touches only this directory and the config: a module here with a unit
//! struct implementing [`Provider`] and its translation beside it, its `kind` in
//! [`crate::config::ProviderKind`] (with its default `base_url`), and its arm in
//! [`for_kind`].

pub mod anthropic;
pub mod azure;
pub mod bedrock;
mod framing;
pub mod gemini;
pub mod mock;
mod openai;
mod segment;
pub mod stage;
pub mod vertex;

use std::fmt;

use serde_json::{Map, Value};

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::TokenCounter;
use crate::ai::{ChatRequest, EmbeddingsRequest, RequestError, TranslateError, Usage};
use crate::config::ProviderKind;
use stage::OpenAiRelay;

pub use anthropic::Anthropic;
pub use azure::AzureOpenAi;
pub use bedrock::Bedrock;
pub use framing::{is_aws_event_stream, StreamFraming};
pub use gemini::Gemini;
pub use mock::Mock;
pub use openai::OpenAi;
pub use stage::{ClientStage, EventStage, ProviderStage};

pub use crate::error::Dialect;

/// The `api-version` a `[[provider]]` without one gets (only Azure's paths carry one).
pub use azure::paths::DEFAULT_API_VERSION;

/// A chat call as the front door received it.
pub struct Call {
    /// The client's dialect.
    pub front: Dialect,
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
    /// The dialect `body` is in: [`Dialect::OpenAi`] unless the provider speaks the front
    /// door's dialect.
    pub dialect: Dialect,
}

/// A provider-side stream stage and the dialect it emits.
pub struct Stage {
    /// Reads the provider's events, meters them, and emits `dialect`.
    pub stage: Box<dyn ProviderStage>,
    /// [`Dialect::OpenAi`] (canonical chunks) unless the provider's own events go to the
    /// client untouched.
    pub dialect: Dialect,
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
/// A canonical `chat.completion` with the usage it reports, naming the client-facing `model`.
fn canonical_whole(body: Vec<u8>, model: &str) -> Whole {
    let usage = crate::ai::openai::usage_from_chat_response(&body);
    Whole {
        body: crate::ai::model_name::rename_body(body, model),
        usage,
        dialect: Dialect::OpenAi,
    }
}

/// The stage for a stream that is canonical already: relayed with the client-facing `model`
/// in its chunks, metered on the side.
fn canonical_stage(canonical_usage: bool, counter: TokenCounter, model: &str) -> Stage {
    Stage {
        stage: Box::new(OpenAiRelay::new(canonical_usage, counter).naming(model)),
        dialect: Dialect::OpenAi,
    }
}

pub trait Provider: Send + Sync + fmt::Debug {
    /// The implementation that serves `upstream_model` when it is not this one: a provider
    /// hosting models of several APIs (Vertex AI: Google's Gemini and Anthropic's Claude)
    /// answers with the one whose paths, bodies and answers fit the model. `None`: this one.
    fn for_model(&self, upstream_model: &str) -> Option<&'static dyn Provider> {
        let _ = upstream_model;
        None
    }

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
    /// The default suits a provider that answers in the canonical (OpenAI) form.
    fn chat_response(
        &self,
        body: Vec<u8>,
        _front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        Ok(canonical_whole(body, reply.model))
    }

    /// The provider-side stage of a streamed chat answer toward `front`; `canonical_usage`
    /// asks for the usage chunk in canonical output, `counter` counts relayed text.
    /// The default suits a provider that streams the canonical (OpenAI) form.
    fn stream_stage(
        &self,
        _front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        canonical_stage(canonical_usage, counter, reply.model)
    }

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
        let _ = request;
        let usage = crate::ai::openai::usage_from_embeddings_response(&body);
        Ok((crate::ai::model_name::rename_body(body, model), usage))
    }

    /// The path (under `base_path`) and body of a token count of an Anthropic Messages
    /// `body` (`POST /v1/messages/count_tokens`); `None` when the provider has no such
    /// endpoint, and the gateway answers from its own estimate.
    fn count_tokens_request(
        &self,
        body: &Map<String, Value>,
        target: &Target<'_>,
    ) -> Option<(String, Vec<u8>)> {
        let _ = (body, target);
        None
    }

    /// The `input_tokens` of a successful token-count answer.
    fn count_tokens_response(&self, body: &[u8]) -> Result<u64, TranslateError> {
        let _ = body;
        Err(TranslateError("the provider counts no tokens".into()))
    }

    /// The path (under `base_path`) and body of a legacy completion (`POST /v1/completions`,
    /// the client's checked body); `None` when the provider has no such endpoint.
    fn completions_request(
        &self,
        request: &crate::ai::openai::CompletionRequest,
        target: &Target<'_>,
    ) -> Option<(String, Vec<u8>)> {
        let _ = (request, target);
        None
    }

    /// The path (under `base_path`) and body of a Responses API call (`POST /v1/responses`,
    /// the client's checked body, sent as it is with the upstream model name); `None` when
    /// the provider has no such endpoint and the request is translated to its chat API.
    fn responses_request(
        &self,
        body: &Map<String, Value>,
        target: &Target<'_>,
    ) -> Option<(String, Vec<u8>)> {
        let _ = (body, target);
        None
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
        ProviderKind::Bedrock => &Bedrock,
        // Gemini unless the model is Claude ([`Provider::for_model`]).
        ProviderKind::Vertex => &vertex::VertexGemini,
        ProviderKind::Mock => &Mock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::openai::{parse_chat_request, parse_embeddings_request};

    const ALL: [ProviderKind; 5] = [
        ProviderKind::Openai,
        ProviderKind::AzureOpenai,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Mock,
    ];

    fn target() -> Target<'static> {
        Target {
            base_path: "/base",
            upstream_model: "up-model",
            api_version: "2024-10-21",
        }
    }

    fn call(stream: bool) -> Call {
        let body = format!(
            r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        Call {
            front: Dialect::OpenAi,
            request: parse_chat_request(body.as_bytes()).unwrap(),
            anthropic_body: None,
        }
    }

    fn headers(kind: ProviderKind, key: Option<&[u8]>) -> String {
        let mut out = Vec::new();
        for_kind(kind).push_headers(key, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_kind_sends_chat_to_its_own_path() {
        let expected = [
            (ProviderKind::Openai, false, "/base/v1/chat/completions"),
            (ProviderKind::Mock, false, "/base/v1/chat/completions"),
            (
                ProviderKind::AzureOpenai,
                false,
                "/base/openai/deployments/up-model/chat/completions?api-version=2024-10-21",
            ),
            (ProviderKind::Anthropic, false, "/base/v1/messages"),
            (
                ProviderKind::Gemini,
                false,
                "/base/v1beta/models/up-model:generateContent",
            ),
            (
                ProviderKind::Gemini,
                true,
                "/base/v1beta/models/up-model:streamGenerateContent?alt=sse",
            ),
        ];
        for (kind, stream, path) in expected {
            let (got, body) = for_kind(kind)
                .chat_request(&call(stream), &target(), 1024)
                .unwrap();
            assert_eq!(got, path, "{kind:?}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            match kind {
                // Gemini names the model in the path only.
                ProviderKind::Gemini => assert!(body.get("model").is_none(), "{body}"),
                _ => assert_eq!(body["model"], "up-model", "{kind:?}"),
            }
        }
    }

    #[test]
    fn each_kind_puts_the_key_in_its_own_header() {
        let key = Some(&b"sk-test"[..]);
        assert_eq!(
            headers(ProviderKind::Openai, key),
            "authorization: Bearer sk-test\r\n"
        );
        assert_eq!(
            headers(ProviderKind::AzureOpenai, key),
            "api-key: sk-test\r\n"
        );
        assert_eq!(
            headers(ProviderKind::Gemini, key),
            "x-goog-api-key: sk-test\r\n"
        );
        assert_eq!(
            headers(ProviderKind::Anthropic, key),
            "x-api-key: sk-test\r\nanthropic-version: 2023-06-01\r\n"
        );
        // Without a key, nothing but the headers every call needs.
        for kind in ALL {
            let expected = match kind {
                ProviderKind::Anthropic => "anthropic-version: 2023-06-01\r\n",
                _ => "",
            };
            assert_eq!(headers(kind, None), expected, "{kind:?}");
        }
    }

    #[test]
    fn the_anthropic_front_doors_body_goes_to_anthropic_as_it_is_with_the_model_replaced() {
        let mut call = call(false);
        call.front = Dialect::Anthropic;
        let original = serde_json::json!({"model": "m", "max_tokens": 7, "top_k": 3,
            "messages": [{"role": "user", "content": "hi"}]});
        call.anthropic_body = original.as_object().cloned();
        let (_, body) = Anthropic.chat_request(&call, &target(), 1024).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let mut expected = original;
        expected["model"] = "up-model".into();
        assert_eq!(body, expected);
    }

    #[test]
    fn embeddings_go_to_each_kinds_path_and_anthropic_has_none() {
        let request = parse_embeddings_request(br#"{"model":"e","input":"hi"}"#).unwrap();
        let path = |kind| {
            for_kind(kind)
                .embeddings_request(&request, &target())
                .map(|r| r.unwrap().0)
        };
        assert_eq!(
            path(ProviderKind::Openai).as_deref(),
            Some("/base/v1/embeddings")
        );
        assert_eq!(
            path(ProviderKind::AzureOpenai).as_deref(),
            Some("/base/openai/deployments/up-model/embeddings?api-version=2024-10-21")
        );
        assert_eq!(
            path(ProviderKind::Gemini).as_deref(),
            Some("/base/v1beta/models/up-model:batchEmbedContents")
        );
        assert_eq!(path(ProviderKind::Anthropic), None);
    }

    #[test]
    fn only_openai_has_a_native_responses_api_which_gets_the_body_with_the_upstream_model() {
        let body = serde_json::json!({"model": "m", "input": "hi", "store": false,
            "tools": [{"type": "web_search"}]});
        let body = body.as_object().unwrap();
        for kind in ALL {
            let request = for_kind(kind).responses_request(body, &target());
            match kind {
                ProviderKind::Openai => {
                    let (path, sent) = request.expect("OpenAI has /v1/responses");
                    assert_eq!(path, "/base/v1/responses");
                    let sent: Value = serde_json::from_slice(&sent).unwrap();
                    let mut expected = Value::Object(body.clone());
                    expected["model"] = "up-model".into();
                    assert_eq!(sent, expected);
                }
                _ => assert!(request.is_none(), "{kind:?}"),
            }
        }
    }

    #[test]
    fn only_the_mock_answers_in_process() {
        let reply = Reply {
            model: "m",
            id: "chatcmpl-1",
            created: 1_700_000_000,
        };
        for kind in ALL {
            let api = for_kind(kind);
            let local = kind == ProviderKind::Mock;
            assert_eq!(api.is_local(), local, "{kind:?}");
            assert_eq!(api.local_chat(&call(false), &reply, false).is_some(), local);
            assert_eq!(
                api.local_embeddings("m", &Value::from("hi")).is_some(),
                local
            );
        }
        let whole = Mock.local_chat(&call(false), &reply, false).unwrap();
        let LocalBody::Whole(body) = whole.body else {
            panic!("a request without `stream` gets a whole answer");
        };
        // The usage a local answer stands for is the one its body reports.
        assert_eq!(
            crate::ai::openai::usage_from_chat_response(&body),
            Some(whole.usage)
        );
        let streamed = Mock.local_chat(&call(true), &reply, true).unwrap();
        let LocalBody::Events(events) = streamed.body else {
            panic!("a streamed request gets events");
        };
        assert_eq!(events.last().unwrap(), b"data: [DONE]\n\n");
    }

    #[test]
    fn an_anthropic_answer_stays_native_for_the_anthropic_front_door_only() {
        let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"x",
            "content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn",
            "usage":{"input_tokens":3,"output_tokens":2}}"#;
        let reply = Reply {
            model: "m",
            id: "chatcmpl-1",
            created: 1,
        };
        let native = Anthropic
            .chat_response(answer.to_vec(), Dialect::Anthropic, &reply)
            .unwrap();
        assert_eq!(native.dialect, Dialect::Anthropic);
        // Passed through as it is, but for the client-facing model name.
        let renamed = String::from_utf8(answer.to_vec())
            .unwrap()
            .replace(r#""model":"x""#, r#""model":"m""#);
        assert_eq!(String::from_utf8(native.body.clone()).unwrap(), renamed);
        let canonical = Anthropic
            .chat_response(answer.to_vec(), Dialect::OpenAi, &reply)
            .unwrap();
        assert_eq!(canonical.dialect, Dialect::OpenAi);
        let body: Value = serde_json::from_slice(&canonical.body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hello");
        for whole in [native, canonical] {
            let usage = whole.usage.unwrap();
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 2));
        }
        // An answer that is not the provider's JSON is refused, not passed on.
        assert!(Anthropic
            .chat_response(b"not json".to_vec(), Dialect::Anthropic, &reply)
            .is_err());
    }
}

//! Google Vertex AI (`kind = "vertex"`): the models of one project and location, called with
//! a service account's access token (`Authorization: Bearer`, added by the pipeline from the
//! provider's token source; no key header).
//!
//! Vertex hosts models of several publishers under
//! `/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}` (Vertex AI
//! reference, "projects.locations.publishers.models"); the catalog puts the
//! `/v1/projects/{project}/locations/{region}` part in the provider's base path
//! ([`location_path`]). Two publishers are served, each by its own [`Provider`], picked per
//! model ([`publisher_of`], through [`Provider::for_model`]):
//! - Google's Gemini ([`VertexGemini`]): `:generateContent` and
//!   `:streamGenerateContent?alt=sse`, the body and answers of Google AI's Gemini API, so the
//!   translation is [`super::gemini`]'s;
//! - Anthropic's Claude ([`VertexAnthropic`], "Use Anthropic's Claude models" on Vertex AI):
//!   `:rawPredict` and `:streamRawPredict`, the Messages API body without `model` (it is in
//!   the path) and with `anthropic_version: "vertex-2023-10-16"` in the body instead of the
//!   header; answers and streams are Anthropic's own, so the translation is
//!   [`super::anthropic`]'s.
//!
//! Not served on Vertex: embeddings (Vertex's `:predict` has its own shape), token counting
//! (answered from the gateway's estimate) and legacy completions.

use serde_json::Value;

use super::segment::encode_path_segment;
use super::{anthropic, gemini};
use super::{Call, Dialect, Provider, Reply, Stage, Target, Whole};
use crate::ai::TokenCounter;
use crate::ai::{EmbeddingsRequest, RequestError, TranslateError};

/// The `anthropic_version` Vertex AI requires in the body of Claude calls.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The model-name prefix of Anthropic's models on Vertex (`claude-sonnet-4@20250514`).
const ANTHROPIC_MODEL_PREFIX: &str = "claude";

/// Who publishes a model on Vertex AI: which API its calls speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// Google (Gemini): `generateContent`.
    Google,
    /// Anthropic (Claude): `rawPredict`, the Messages API.
    Anthropic,
}

impl Publisher {
    /// The path segment after `publishers/`.
    fn segment(self) -> &'static str {
        match self {
            Publisher::Google => "google",
            Publisher::Anthropic => "anthropic",
        }
    }
}

/// The publisher of `upstream_model`: Anthropic for Claude models (their names start with
/// `claude`), Google for every other model.
pub fn publisher_of(upstream_model: &str) -> Publisher {
    if upstream_model.starts_with(ANTHROPIC_MODEL_PREFIX) {
        Publisher::Anthropic
    } else {
        Publisher::Google
    }
}

/// `/v1/projects/{project}/locations/{region}`, each encoded as one path segment: the part
/// of every call's path that the provider's settings fix.
pub fn location_path(project: &str, region: &str) -> String {
    format!(
        "/v1/projects/{}/locations/{}",
        encode_path_segment(project),
        encode_path_segment(region)
    )
}

/// `{base_path}/publishers/{publisher}/models/{model}:{method}`. The model is one path
/// segment; `@` stays as it is (Claude versions are spelled `claude-x@20250514`, and `@` is
/// a path character, RFC 3986 section 3.3).
fn model_method_path(
    target: &Target<'_>,
    publisher: Publisher,
    method: &str,
    query: &str,
) -> String {
    let model = encode_path_segment(target.upstream_model).replace("%40", "@");
    format!(
        "{}/publishers/{}/models/{model}:{method}{query}",
        target.base_path,
        publisher.segment()
    )
}

/// Gemini models on Vertex AI.
#[derive(Debug)]
pub struct VertexGemini;

/// Anthropic's Claude models on Vertex AI.
#[derive(Debug)]
pub struct VertexAnthropic;

/// The implementation for `upstream_model`'s publisher.
fn for_publisher(upstream_model: &str) -> &'static dyn Provider {
    match publisher_of(upstream_model) {
        Publisher::Google => &VertexGemini,
        Publisher::Anthropic => &VertexAnthropic,
    }
}

impl Provider for VertexGemini {
    fn for_model(&self, upstream_model: &str) -> Option<&'static dyn Provider> {
        Some(for_publisher(upstream_model))
    }

    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        _default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        let (method, query) = if call.request.stream {
            ("streamGenerateContent", "?alt=sse")
        } else {
            ("generateContent", "")
        };
        Ok((
            model_method_path(target, Publisher::Google, method, query),
            gemini::request_from_openai(&call.request.body)?,
        ))
    }

    /// Vertex takes no key: the pipeline adds the service account's token.
    fn push_headers(&self, _key: Option<&[u8]>, _out: &mut Vec<u8>) {}

    fn chat_response(
        &self,
        body: Vec<u8>,
        front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        gemini::Gemini.chat_response(body, front, reply)
    }

    fn stream_stage(
        &self,
        front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        gemini::Gemini.stream_stage(front, reply, canonical_usage, counter)
    }

    fn embeddings_request(
        &self,
        _request: &EmbeddingsRequest,
        _target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        None
    }
}

impl Provider for VertexAnthropic {
    fn for_model(&self, upstream_model: &str) -> Option<&'static dyn Provider> {
        Some(for_publisher(upstream_model))
    }

    fn chat_request(
        &self,
        call: &Call,
        target: &Target<'_>,
        default_max_tokens: u64,
    ) -> Result<(String, Vec<u8>), RequestError> {
        // The Anthropic front door's body goes as it is, as to Anthropic itself; the OpenAI
        // front door's is translated. Either way the model is in the path, not the body.
        let mut body = match &call.anthropic_body {
            Some(original) => original.clone(),
            None => anthropic::body_from_openai(&call.request.body, default_max_tokens)?,
        };
        body.remove("model");
        body.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
        let method = if call.request.stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        Ok((
            model_method_path(target, Publisher::Anthropic, method, ""),
            serde_json::to_vec(&Value::Object(body)).expect("JSON maps serialize"),
        ))
    }

    /// Vertex takes no key and wants the version in the body, not in a header.
    fn push_headers(&self, _key: Option<&[u8]>, _out: &mut Vec<u8>) {}

    fn chat_response(
        &self,
        body: Vec<u8>,
        front: Dialect,
        reply: &Reply<'_>,
    ) -> Result<Whole, TranslateError> {
        anthropic::Anthropic.chat_response(body, front, reply)
    }

    fn stream_stage(
        &self,
        front: Dialect,
        reply: &Reply<'_>,
        canonical_usage: bool,
        counter: TokenCounter,
    ) -> Stage {
        anthropic::Anthropic.stream_stage(front, reply, canonical_usage, counter)
    }

    fn embeddings_request(
        &self,
        _request: &EmbeddingsRequest,
        _target: &Target<'_>,
    ) -> Option<Result<(String, Vec<u8>), RequestError>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::openai::parse_chat_request;

    fn target(model: &'static str) -> Target<'static> {
        Target {
            base_path: "/v1/projects/my-project/locations/us-east5",
            upstream_model: model,
            api_version: "",
        }
    }

    fn call(stream: bool) -> Call {
        let body = format!(
            r#"{{"model":"m","stream":{stream},"max_tokens":9,"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        Call {
            front: Dialect::OpenAi,
            request: parse_chat_request(body.as_bytes()).unwrap(),
            anthropic_body: None,
        }
    }

    #[test]
    fn claude_models_are_anthropics_and_every_other_model_googles() {
        assert_eq!(
            publisher_of("claude-sonnet-4@20250514"),
            Publisher::Anthropic
        );
        assert_eq!(publisher_of("claude-3-5-haiku"), Publisher::Anthropic);
        assert_eq!(publisher_of("gemini-2.5-flash"), Publisher::Google);
        assert_eq!(publisher_of("my-claude"), Publisher::Google);
        // Whichever publisher the kind starts from, the model picks the implementation.
        for start in [&VertexGemini as &dyn Provider, &VertexAnthropic] {
            let pick = |m| start.for_model(m).unwrap();
            let mut out = Vec::new();
            let (path, _) = pick("claude-x")
                .chat_request(&call(false), &target("claude-x"), 1)
                .unwrap();
            assert!(path.contains("/publishers/anthropic/"), "{path}");
            let (path, _) = pick("gemini-x")
                .chat_request(&call(false), &target("gemini-x"), 1)
                .unwrap();
            assert!(path.contains("/publishers/google/"), "{path}");
            pick("claude-x").push_headers(Some(b"key"), &mut out);
            assert!(out.is_empty(), "no key header on Vertex");
        }
    }

    #[test]
    fn the_location_path_encodes_project_and_region_as_segments() {
        assert_eq!(
            location_path("my-project", "us-east5"),
            "/v1/projects/my-project/locations/us-east5"
        );
        assert_eq!(
            location_path("a/b", ".."),
            "/v1/projects/a%2Fb/locations/%2E%2E"
        );
    }

    #[test]
    fn gemini_calls_go_to_generate_content_with_geminis_body() {
        let (path, body) = VertexGemini
            .chat_request(&call(false), &target("gemini-2.5-flash"), 1024)
            .unwrap();
        assert_eq!(
            path,
            "/v1/projects/my-project/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["contents"][0]["parts"][0]["text"], "hi");
        assert!(body.get("model").is_none(), "{body}");
        let (path, _) = VertexGemini
            .chat_request(&call(true), &target("gemini-2.5-flash"), 1024)
            .unwrap();
        assert!(
            path.ends_with("/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            "{path}"
        );
    }

    #[test]
    fn claude_calls_go_to_raw_predict_with_the_vertex_version_and_no_model() {
        let (path, body) = VertexAnthropic
            .chat_request(&call(false), &target("claude-sonnet-4@20250514"), 1024)
            .unwrap();
        assert_eq!(
            path,
            "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
        assert!(body.get("model").is_none(), "{body}");
        assert_eq!(body["max_tokens"], 9);
        assert_eq!(body["messages"][0]["content"], "hi");
        let (path, body) = VertexAnthropic
            .chat_request(&call(true), &target("claude-sonnet-4@20250514"), 1024)
            .unwrap();
        assert!(path.ends_with(":streamRawPredict"), "{path}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn the_anthropic_front_doors_body_goes_as_it_is_without_its_model() {
        let mut call = call(false);
        call.front = Dialect::Anthropic;
        let original = serde_json::json!({"model": "m", "max_tokens": 7, "top_k": 3,
            "messages": [{"role": "user", "content": "hi"}]});
        call.anthropic_body = original.as_object().cloned();
        let (_, body) = VertexAnthropic
            .chat_request(&call, &target("claude-x"), 1024)
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 7,
                "top_k": 3, "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn a_model_name_cannot_change_the_path() {
        let (path, _) = VertexGemini
            .chat_request(&call(false), &target("../x:y?z"), 1)
            .unwrap();
        assert!(
            path.ends_with("/publishers/google/models/..%2Fx%3Ay%3Fz:generateContent"),
            "{path}"
        );
    }
}

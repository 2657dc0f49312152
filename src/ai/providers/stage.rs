//! The stages a streamed answer passes through, one event at a time: a provider-side stage
//! from the provider's event stream to canonical (OpenAI) chunks, which also meters the
//! stream, and a client-side stage from canonical chunks to the front door's dialect.
//!
//! An error the provider sends mid-stream ends the stream with the gateway's error: typed as
//! a whole error answer would be (see [`crate::ai::provider_error`]), its message scrubbed of
//! the provider's key. Ordinary chunks are not parsed for this: only an event named `error`,
//! or whose data holds `"error"`, is looked at.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{anthropic, gemini};
use crate::ai::provider_error::{self, ProviderError};
use crate::ai::{ChatStreamRelay, SseEvent, Usage};
use crate::ai::{RelayedTokens, TokenCounter};
use crate::config::Secret;
use crate::error::Dialect;

/// One translation stage over server-sent events.
pub trait EventStage {
    /// Appends what `event` becomes (zero or more complete events) to `out`.
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>);
    /// Appends whatever closes the stream properly if the source ended early.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Usage seen in the stream so far.
    fn usage(&self) -> Option<Usage>;
}

/// A provider-side stage, which also meters the stream.
pub trait ProviderStage: EventStage {
    /// Whether the stream got as far as the provider's final usage (or its end marker).
    fn reached_end(&self) -> bool;
    /// Completion tokens of the text and tool-call deltas seen so far.
    fn relayed_tokens(&self) -> u64;
    /// The values a provider's error message must not carry (its configured key).
    fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>);
    /// The provider's mid-stream error that the last event ended the stream with (already
    /// written to the output in this stage's dialect); `None` once taken.
    fn take_error(&mut self) -> Option<ProviderError>;
}

/// A client-side stage, from canonical chunks to the front door's dialect.
pub trait ClientStage: EventStage {
    /// Ends the stream with the provider's mid-stream `error`, in this stage's dialect.
    fn fail(&mut self, error: &ProviderError, out: &mut Vec<u8>);
}

/// Whether `event` is a provider's mid-stream error: an event named `error`, a chunk with an
/// `error` member (OpenAI, Azure, Gemini), or an Anthropic `{"type":"error"}`. Only an event
/// whose data holds `"error"` is parsed; a content delta's text cannot hold it unescaped.
fn is_error_event(event: &SseEvent) -> bool {
    if event.event.as_deref() == Some("error") {
        return true;
    }
    if !event.has_data || !event.data.contains("\"error\"") {
        return false;
    }
    let Ok(Value::Object(data)) = serde_json::from_str::<Value>(&event.data) else {
        return false;
    };
    matches!(data.get("error"), Some(Value::Object(_) | Value::String(_)))
        || data.get("type").and_then(Value::as_str) == Some("error")
}

/// The status an OpenAI-format error object stands for: a mid-stream error has none of its
/// own (the stream's was 200), so its `type` (else a numeric `code`, as Azure sends) names
/// the status it would have come with as a whole answer.
fn openai_error_status(data: &[u8]) -> u16 {
    let Ok(data) = serde_json::from_slice::<Value>(data) else {
        return 500;
    };
    let error = &data["error"];
    let field = |name: &str| error.get(name).and_then(Value::as_str);
    let by_type = match field("type") {
        Some("invalid_request_error") => Some(400),
        Some("authentication_error") => Some(401),
        Some("permission_error") => Some(403),
        Some("not_found_error") => Some(404),
        Some("timeout_error") => Some(408),
        Some("rate_limit_error" | "requests" | "tokens" | "insufficient_quota") => Some(429),
        Some("overloaded_error" | "service_unavailable") => Some(503),
        Some("server_error" | "api_error") => Some(500),
        _ => None,
    };
    let by_code = || match field("code") {
        Some("rate_limit_exceeded" | "insufficient_quota") => Some(429),
        Some("context_length_exceeded" | "content_filter") => Some(400),
        Some(code) => code.parse::<u16>().ok().filter(|s| (400..=599).contains(s)),
        None => error
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|s| (400..=599).contains(s)),
    };
    by_type.or_else(by_code).unwrap_or(500)
}

/// The `&str`s of `secrets`, for the scrubber.
fn exposed(secrets: &[Arc<Secret>]) -> Vec<&str> {
    secrets.iter().map(|s| s.expose()).collect()
}

/// The relay of an OpenAI-format stream (OpenAI, Azure OpenAI, the mock), counting the
/// completion text of its chunks on the side. A provider error ends what is relayed.
pub(crate) struct OpenAiRelay {
    relay: ChatStreamRelay,
    relayed: RelayedTokens,
    secrets: Vec<Arc<Secret>>,
    /// An error ended the stream: nothing more is relayed.
    failed: bool,
    /// That error, until [`ProviderStage::take_error`].
    error: Option<ProviderError>,
    /// The client-facing model name put in every chunk; `None` relays chunks as they are.
    model: Option<String>,
}

/// The parts of a `chat.completion.chunk` that are completion text; everything else is
/// skipped by the parser. Strings are borrowed unless they hold escapes.
#[derive(Deserialize)]
struct ChunkText<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceText<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceText<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaText<'a>>,
    /// A legacy completion chunk's text (`text_completion` objects have no `delta`).
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaText<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallText<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallText<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionText<'a>>,
}

#[derive(Deserialize)]
struct FunctionText<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// Adds the completion text of one OpenAI chunk (`data`) to `relayed`; data that is not a
/// chunk (the `[DONE]` marker, an error object, garbage) adds nothing.
fn count_chunk_text(data: &str, relayed: &mut RelayedTokens) {
    let Ok(chunk) = serde_json::from_str::<ChunkText<'_>>(data) else {
        return;
    };
    for choice in chunk.choices.iter().flatten() {
        relayed.add(choice.text.as_deref().unwrap_or_default());
    }
    for delta in chunk.choices.into_iter().flatten().filter_map(|c| c.delta) {
        relayed.add(delta.content.as_deref().unwrap_or_default());
        for call in delta.tool_calls.into_iter().flatten() {
            if let Some(function) = call.function {
                relayed.add(function.name.as_deref().unwrap_or_default());
                relayed.add(function.arguments.as_deref().unwrap_or_default());
            }
        }
    }
}

impl OpenAiRelay {
    /// A relay that reports usage in the relayed stream when `canonical_usage`; relayed
    /// text is counted with `counter`.
    pub(crate) fn new(canonical_usage: bool, counter: TokenCounter) -> OpenAiRelay {
        OpenAiRelay {
            relay: ChatStreamRelay::new(canonical_usage),
            relayed: RelayedTokens::new(counter),
            secrets: Vec::new(),
            failed: false,
            error: None,
            model: None,
        }
    }

    /// The same relay, putting the client-facing `model` in every chunk (providers answer
    /// with their own name for it).
    pub(crate) fn naming(mut self, model: &str) -> OpenAiRelay {
        self.model = Some(model.to_string());
        self
    }
}

impl EventStage for OpenAiRelay {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        if is_error_event(event) {
            let data = event.data.as_bytes();
            let status = openai_error_status(data);
            let error = provider_error::from_response(status, data, None, &exposed(&self.secrets));
            crate::ai::encode_event(None, &error.body(Dialect::OpenAi), out);
            self.failed = true;
            self.error = Some(error);
            return;
        }
        if event.has_data && !event.is_done() {
            count_chunk_text(&event.data, &mut self.relayed);
        }
        let renamed = self
            .model
            .as_deref()
            .and_then(|model| crate::ai::model_name::rename_event(event, model));
        self.relay.on_event(renamed.as_ref().unwrap_or(event), out)
    }
    fn finish(&mut self, _out: &mut Vec<u8>) {}
    fn usage(&self) -> Option<Usage> {
        self.relay.usage()
    }
}

impl ProviderStage for OpenAiRelay {
    /// The usage chunk is the last before `[DONE]`; a provider that never reports usage
    /// still ends with `[DONE]`.
    fn reached_end(&self) -> bool {
        !self.failed && (self.relay.saw_done() || self.relay.usage().is_some())
    }
    fn relayed_tokens(&self) -> u64 {
        self.relayed.tokens()
    }
    fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>) {
        self.secrets = secrets;
    }
    fn take_error(&mut self) -> Option<ProviderError> {
        self.error.take()
    }
}

impl EventStage for anthropic::StreamToOpenAi {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        anthropic::StreamToOpenAi::on_event(self, event, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        anthropic::StreamToOpenAi::finish(self, out)
    }
    fn usage(&self) -> Option<Usage> {
        anthropic::StreamToOpenAi::usage(self)
    }
}

impl ProviderStage for anthropic::StreamToOpenAi {
    fn reached_end(&self) -> bool {
        anthropic::StreamToOpenAi::reached_end(self)
    }
    fn relayed_tokens(&self) -> u64 {
        anthropic::StreamToOpenAi::relayed_tokens(self)
    }
    fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>) {
        anthropic::StreamToOpenAi::set_secrets(self, secrets)
    }
    fn take_error(&mut self) -> Option<ProviderError> {
        anthropic::StreamToOpenAi::take_error(self)
    }
}

impl EventStage for anthropic::StreamFromOpenAi {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        anthropic::StreamFromOpenAi::on_event(self, event, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        anthropic::StreamFromOpenAi::finish(self, out)
    }
    fn usage(&self) -> Option<Usage> {
        anthropic::StreamFromOpenAi::usage(self)
    }
}

impl ClientStage for anthropic::StreamFromOpenAi {
    fn fail(&mut self, error: &ProviderError, out: &mut Vec<u8>) {
        anthropic::StreamFromOpenAi::fail(self, error, out)
    }
}

impl EventStage for gemini::StreamToOpenAi {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        gemini::StreamToOpenAi::on_event(self, event, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        gemini::StreamToOpenAi::finish(self, out)
    }
    fn usage(&self) -> Option<Usage> {
        gemini::StreamToOpenAi::usage(self)
    }
}

impl ProviderStage for gemini::StreamToOpenAi {
    /// Gemini has no end marker: the last event carries the finish reason and full usage.
    fn reached_end(&self) -> bool {
        self.saw_finish()
    }
    fn relayed_tokens(&self) -> u64 {
        gemini::StreamToOpenAi::relayed_tokens(self)
    }
    fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>) {
        gemini::StreamToOpenAi::set_secrets(self, secrets)
    }
    fn take_error(&mut self) -> Option<ProviderError> {
        gemini::StreamToOpenAi::take_error(self)
    }
}

/// Forwards an Anthropic stream untouched to an Anthropic client, reading its usage on the
/// side (the translation's output is discarded). An `error` event is the exception: the
/// client gets the gateway's error instead, and nothing after it.
pub(crate) struct AnthropicPassthrough {
    meter: anthropic::StreamToOpenAi,
    scratch: Vec<u8>,
    secrets: Vec<Arc<Secret>>,
    /// An error ended the stream: nothing more is forwarded.
    failed: bool,
    /// That error, until [`ProviderStage::take_error`].
    error: Option<ProviderError>,
    /// The client-facing model name, put in `message_start` in place of the provider's.
    model: String,
}

impl AnthropicPassthrough {
    /// A passthrough metered by `meter` (a translation whose output is discarded), naming
    /// the client-facing `model`.
    pub(crate) fn new(meter: anthropic::StreamToOpenAi, model: &str) -> AnthropicPassthrough {
        AnthropicPassthrough {
            meter,
            scratch: Vec::new(),
            secrets: Vec::new(),
            failed: false,
            error: None,
            model: model.to_string(),
        }
    }
}

impl EventStage for AnthropicPassthrough {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        // The meter sees the error too: it ends the metered stream short of its end.
        self.scratch.clear();
        self.meter.on_event(event, &mut self.scratch);
        if is_error_event(event) {
            let error = anthropic::stream_error(event.data.as_bytes(), &exposed(&self.secrets));
            crate::ai::encode_event(Some("error"), &error.body(Dialect::Anthropic), out);
            self.failed = true;
            self.error = Some(error);
            return;
        }
        match crate::ai::model_name::rename_event(event, &self.model) {
            Some(renamed) => out.extend_from_slice(&renamed.raw),
            None => out.extend_from_slice(&event.raw),
        }
    }
    fn finish(&mut self, _out: &mut Vec<u8>) {}
    fn usage(&self) -> Option<Usage> {
        self.meter.usage()
    }
}

impl ProviderStage for AnthropicPassthrough {
    fn reached_end(&self) -> bool {
        self.meter.reached_end()
    }
    fn relayed_tokens(&self) -> u64 {
        self.meter.relayed_tokens()
    }
    fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>) {
        self.secrets = secrets;
    }
    fn take_error(&mut self) -> Option<ProviderError> {
        self.error.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::SseParser;

    #[test]
    fn chunk_text_counts_content_and_tool_call_deltas() {
        let mut relayed = RelayedTokens::default();
        count_chunk_text(
            r#"{"choices":[{"index":0,"delta":{"content":"abcd"}},{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"name":"efgh","arguments":"{\"x\":1}"}}]}}]}"#,
            &mut relayed,
        );
        // "abcd" + "efgh" + `{"x":1}` = 15 bytes: 4 tokens.
        assert_eq!(relayed.tokens(), 4);
    }

    #[test]
    fn chunk_text_ignores_nulls_usage_chunks_errors_and_garbage() {
        let mut relayed = RelayedTokens::default();
        for data in [
            r#"{"choices":[{"index":0,"delta":{"content":null,"role":"assistant"}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"choices":null}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            "[DONE]",
            "{broken",
        ] {
            count_chunk_text(data, &mut relayed);
        }
        assert_eq!(relayed.tokens(), 0);
    }

    #[test]
    fn chunk_text_with_escapes_counts_the_unescaped_text() {
        let mut relayed = RelayedTokens::default();
        count_chunk_text(
            r#"{"choices":[{"delta":{"content":"a\"b\ncd\u00e9"}}]}"#,
            &mut relayed,
        );
        // a " b LF c d é(2 bytes) = 8 bytes: 2 tokens.
        assert_eq!(relayed.tokens(), 2);
    }

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        let mut raw = Vec::new();
        crate::ai::encode_event(name, data, &mut raw);
        let mut parser = SseParser::new(1 << 20);
        parser.push(&raw).unwrap();
        parser.next_event().unwrap()
    }

    #[test]
    fn only_error_events_are_taken_for_errors() {
        for (name, data) in [
            (None, r#"{"error":{"message":"m","type":"server_error"}}"#),
            (None, r#"{"error":"overloaded"}"#),
            (
                None,
                r#"{"type":"error","error":{"type":"api_error","message":"m"}}"#,
            ),
            (Some("error"), "not even JSON"),
        ] {
            assert!(is_error_event(&event(name, data)), "{data}");
        }
        for (name, data) in [
            // The model's text saying "error", escaped in its JSON string.
            (
                None,
                r#"{"choices":[{"delta":{"content":"an \"error\" here"}}]}"#,
            ),
            // A tool named `error`.
            (
                None,
                r#"{"type":"content_block_start","content_block":{"type":"tool_use","name":"error"}}"#,
            ),
            (None, r#"{"choices":[],"error":null}"#),
            (None, "[DONE]"),
        ] {
            assert!(!is_error_event(&event(name, data)), "{data}");
        }
    }

    #[test]
    fn openai_error_objects_stand_for_the_status_of_their_type_or_code() {
        for (data, status) in [
            (r#"{"error":{"type":"invalid_request_error"}}"#, 400),
            (
                r#"{"error":{"type":"requests","code":"rate_limit_exceeded"}}"#,
                429,
            ),
            (r#"{"error":{"type":"insufficient_quota"}}"#, 429),
            (r#"{"error":{"code":"rate_limit_exceeded"}}"#, 429),
            (r#"{"error":{"code":"429","message":"Azure says"}}"#, 429),
            (r#"{"error":{"code":503}}"#, 503),
            (r#"{"error":{"type":"server_error"}}"#, 500),
            (r#"{"error":{"code":"200"}}"#, 500),
            ("not JSON", 500),
        ] {
            assert_eq!(openai_error_status(data.as_bytes()), status, "{data}");
        }
    }
}

//! Streamed answers, translated on the fly: the provider's event stream becomes OpenAI
//! chunks (the canonical form), and those become the front door's dialect. Each stage works
//! one event at a time, so nothing is held back beyond the event being translated.
//!
//! The provider-side stage also meters the stream: the usage the provider reports, whether
//! the stream got as far as its final usage, and the completion tokens of the deltas seen
//! (what a stream cut before its end is charged at least).
//!
//! An error the provider sends mid-stream ends the stream for the client with the gateway's
//! error in the front door's dialect: typed as a whole error answer would be (see
//! [`crate::ai::provider_error`]), its message scrubbed of the provider's key. A stream ended
//! by an error did not reach its end, so it is metered as cut. Ordinary chunks are not parsed
//! for this: only an event named `error`, or whose data holds `"error"`, is looked at.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::{anthropic, gemini, ChatStreamRelay, SseEvent, SseParser, Usage};
use crate::ai::{RelayedTokens, TokenCounter};
use crate::config::{ProviderKind, Secret};
use crate::error::ErrorDialect;
use crate::limits::Metered;

use super::call::Front;

/// Largest single event translated.
pub(super) const MAX_EVENT: usize = 4 * 1024 * 1024;

/// One translation stage over server-sent events.
pub(super) trait EventStage {
    /// Appends what `event` becomes (zero or more complete events) to `out`.
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>);
    /// Appends whatever closes the stream properly if the source ended early.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Usage seen in the stream so far.
    fn usage(&self) -> Option<Usage>;
}

/// A provider-side stage, which also meters the stream.
pub(super) trait ProviderStage: EventStage {
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
pub(super) trait ClientStage: EventStage {
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
struct OpenAiRelay {
    relay: ChatStreamRelay,
    relayed: RelayedTokens,
    secrets: Vec<Arc<Secret>>,
    /// An error ended the stream: nothing more is relayed.
    failed: bool,
    /// That error, until [`ProviderStage::take_error`].
    error: Option<ProviderError>,
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

impl EventStage for OpenAiRelay {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        if is_error_event(event) {
            let data = event.data.as_bytes();
            let status = openai_error_status(data);
            let error = provider_error::from_response(status, data, None, &exposed(&self.secrets));
            crate::ai::encode_event(None, &error.body(ErrorDialect::OpenAi), out);
            self.failed = true;
            self.error = Some(error);
            return;
        }
        if event.has_data && !event.is_done() {
            count_chunk_text(&event.data, &mut self.relayed);
        }
        self.relay.on_event(event, out)
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
struct AnthropicPassthrough {
    meter: anthropic::StreamToOpenAi,
    scratch: Vec<u8>,
    secrets: Vec<Arc<Secret>>,
    /// An error ended the stream: nothing more is forwarded.
    failed: bool,
    /// That error, until [`ProviderStage::take_error`].
    error: Option<ProviderError>,
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
            crate::ai::encode_event(Some("error"), &error.body(ErrorDialect::Anthropic), out);
            self.failed = true;
            self.error = Some(error);
            return;
        }
        out.extend_from_slice(&event.raw);
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

/// The provider-side stage, then (for the Anthropic front door) the client-side stage.
pub(super) struct Translation {
    provider: Box<dyn ProviderStage>,
    client: Option<(SseParser, Box<dyn ClientStage>)>,
    canonical: Vec<u8>,
}

impl Translation {
    /// The stages from a `kind` provider's stream to a `front` client, for `model` (the
    /// client-facing name put in translated events); relayed completion text is counted
    /// with `counter`, the upstream model's estimator.
    pub fn new(
        kind: ProviderKind,
        front: Front,
        model: &str,
        id: &str,
        created: i64,
        client_wants_usage: bool,
        counter: TokenCounter,
    ) -> Translation {
        // The Anthropic front door needs usage from the canonical stream for `message_delta`.
        let canonical_usage = client_wants_usage || front == Front::Anthropic;
        if kind == ProviderKind::Anthropic && front == Front::Anthropic {
            let mut meter = anthropic::StreamToOpenAi::new(model, created, true);
            meter.set_token_counter(counter);
            return Translation {
                provider: Box::new(AnthropicPassthrough {
                    meter,
                    scratch: Vec::new(),
                    secrets: Vec::new(),
                    failed: false,
                    error: None,
                }),
                client: None,
                canonical: Vec::new(),
            };
        }
        let provider: Box<dyn ProviderStage> = match kind {
            ProviderKind::Anthropic => {
                let mut stage = anthropic::StreamToOpenAi::new(model, created, canonical_usage);
                stage.set_token_counter(counter);
                Box::new(stage)
            }
            ProviderKind::Gemini => {
                let mut stage = gemini::StreamToOpenAi::new(model, id, created, canonical_usage);
                stage.set_token_counter(counter);
                Box::new(stage)
            }
            // OpenAI, Azure OpenAI and the mock speak the canonical form already.
            _ => Box::new(OpenAiRelay {
                relay: ChatStreamRelay::new(canonical_usage),
                relayed: RelayedTokens::new(counter),
                secrets: Vec::new(),
                failed: false,
                error: None,
            }),
        };
        let client = match front {
            Front::OpenAi => None,
            Front::Anthropic => {
                // Anthropic message ids read `msg_...`.
                let message_id = format!("msg_{}", id.trim_start_matches("chatcmpl-"));
                let stage = anthropic::StreamFromOpenAi::new(model, &message_id);
                Some((
                    SseParser::new(MAX_EVENT),
                    Box::new(stage) as Box<dyn ClientStage>,
                ))
            }
        };
        Translation {
            provider,
            client,
            canonical: Vec::new(),
        }
    }

    /// The same stages, with the values a provider's error message must not carry (the
    /// provider's configured key) scrubbed from every mid-stream error.
    pub fn with_secrets(mut self, secrets: Vec<Arc<Secret>>) -> Translation {
        self.provider.set_secrets(secrets);
        self
    }

    /// Translates one provider event into `out`.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match &mut self.client {
            None => self.provider.on_event(event, out),
            Some((parser, stage)) => {
                self.canonical.clear();
                self.provider.on_event(event, &mut self.canonical);
                if let Some(error) = self.provider.take_error() {
                    // The canonical output of an error event is that error in OpenAI's
                    // dialect: the client stage maps the provider's error itself, so that its
                    // type is the one a whole error answer gets on this front door.
                    stage.fail(&error, out);
                    return;
                }
                // Canonical events are complete and small; a parse error cannot happen here.
                let _ = parser.push(&self.canonical);
                while let Some(e) = parser.next_event() {
                    stage.on_event(&e, out);
                }
            }
        }
    }

    /// Closes both stages.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match &mut self.client {
            None => self.provider.finish(out),
            Some((parser, stage)) => {
                self.canonical.clear();
                self.provider.finish(&mut self.canonical);
                let _ = parser.push(&self.canonical);
                while let Some(e) = parser.next_event() {
                    stage.on_event(&e, out);
                }
                stage.finish(out);
            }
        }
    }

    /// What the stream tells about its usage once reading it stopped; `body_complete` says
    /// whether the provider's body was read to its end. A stream is complete only when its
    /// body ended and the events got as far as the final usage (or end marker); otherwise it
    /// was cut, and its reported usage (if any) is partial.
    pub fn metered(&self, body_complete: bool) -> Metered {
        let reported = self.provider.usage();
        let relayed_tokens = self.provider.relayed_tokens();
        if body_complete && self.provider.reached_end() {
            Metered::Complete {
                reported,
                relayed_tokens,
            }
        } else {
            Metered::Cut {
                reported,
                relayed_tokens,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Runs `stream` through a translation from `kind` to `front`; returns it and the client's
    /// bytes.
    fn translate(kind: ProviderKind, front: Front, stream: &str) -> (Translation, Vec<u8>) {
        let mut translation = Translation::new(
            kind,
            front,
            "model",
            "chatcmpl-1",
            1_700_000_000,
            false,
            TokenCounter::Bytes,
        );
        let mut parser = SseParser::new(1 << 20);
        parser.push(stream.as_bytes()).unwrap();
        let mut out = Vec::new();
        while let Some(event) = parser.next_event() {
            translation.on_event(&event, &mut out);
        }
        (translation, out)
    }

    fn openai_chunk(content: &str) -> String {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{content:?}}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        )
    }

    const OPENAI_USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":40,\"total_tokens\":49}}\n\n";

    fn usage(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: 0,
        }
    }

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

    #[test]
    fn complete_openai_stream_is_metered_with_its_reported_usage() {
        let stream = format!(
            "{}{}{OPENAI_USAGE}data: [DONE]\n\n",
            openai_chunk("Hello"),
            openai_chunk(" you")
        );
        let (translation, _) = translate(ProviderKind::Openai, Front::OpenAi, &stream);
        assert_eq!(
            translation.metered(true),
            Metered::Complete {
                reported: Some(usage(9, 40)),
                relayed_tokens: 3, // "Hello you": 9 bytes
            }
        );
    }

    #[test]
    fn openai_stream_whose_body_did_not_end_is_cut_even_with_its_usage() {
        let stream = format!("{}{OPENAI_USAGE}", openai_chunk("Hello"));
        let (translation, _) = translate(ProviderKind::Openai, Front::OpenAi, &stream);
        assert!(matches!(translation.metered(false), Metered::Cut { .. }));
    }

    #[test]
    fn openai_stream_cut_before_its_usage_is_cut_with_the_relayed_tokens() {
        let stream: String = (0..10).map(|_| openai_chunk("word ")).collect();
        let (translation, _) = translate(ProviderKind::Openai, Front::OpenAi, &stream);
        // Ended cleanly but without usage or [DONE]: still cut.
        assert_eq!(
            translation.metered(true),
            Metered::Cut {
                reported: None,
                relayed_tokens: 13, // 50 bytes
            }
        );
    }

    #[test]
    fn openai_stream_without_usage_but_with_done_is_complete() {
        let stream = format!("{}data: [DONE]\n\n", openai_chunk("Hello"));
        let (translation, _) = translate(ProviderKind::Openai, Front::OpenAi, &stream);
        assert_eq!(
            translation.metered(true),
            Metered::Complete {
                reported: None,
                relayed_tokens: 2,
            }
        );
    }

    #[test]
    fn openai_stream_to_the_anthropic_front_door_is_metered_on_the_provider_side() {
        let stream = format!("{}{OPENAI_USAGE}data: [DONE]\n\n", openai_chunk("Hello"));
        let (translation, out) = translate(ProviderKind::Openai, Front::Anthropic, &stream);
        assert!(String::from_utf8_lossy(&out).contains("event: message_delta"));
        assert_eq!(
            translation.metered(true),
            Metered::Complete {
                reported: Some(usage(9, 40)),
                relayed_tokens: 2,
            }
        );
    }

    const ANTHROPIC_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";

    fn anthropic_text(text: &str) -> String {
        format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{text:?}}}}}\n\n")
    }

    const ANTHROPIC_END: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":77}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn anthropic_passthrough_is_metered_like_a_translation() {
        for front in [Front::Anthropic, Front::OpenAi] {
            let whole = format!(
                "{ANTHROPIC_START}{}{ANTHROPIC_END}",
                anthropic_text("Hi there")
            );
            let (translation, _) = translate(ProviderKind::Anthropic, front, &whole);
            assert_eq!(
                translation.metered(true),
                Metered::Complete {
                    reported: Some(usage(25, 77)),
                    relayed_tokens: 2,
                },
                "{front:?}"
            );
            let cut = format!("{ANTHROPIC_START}{}", anthropic_text("Hi there"));
            let (translation, _) = translate(ProviderKind::Anthropic, front, &cut);
            assert_eq!(
                translation.metered(true),
                Metered::Cut {
                    reported: Some(usage(25, 1)),
                    relayed_tokens: 2,
                },
                "{front:?}"
            );
        }
    }

    #[test]
    fn gemini_stream_is_complete_only_with_its_finishing_event() {
        let first = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":4}}\n\n";
        let last = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":12,\"totalTokenCount\":16}}\n\n";
        let (cut, _) = translate(ProviderKind::Gemini, Front::OpenAi, first);
        assert_eq!(
            cut.metered(true),
            Metered::Cut {
                reported: Some(usage(4, 0)),
                relayed_tokens: 2,
            }
        );
        let (whole, _) = translate(
            ProviderKind::Gemini,
            Front::OpenAi,
            &format!("{first}{last}"),
        );
        assert_eq!(
            whole.metered(true),
            Metered::Complete {
                reported: Some(usage(4, 12)),
                relayed_tokens: 2,
            }
        );
    }

    const KEY: &str = "prv7Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";

    /// [`translate`] with the provider key `KEY` configured, also running `finish` (the
    /// provider's body ended).
    fn translate_keyed(kind: ProviderKind, front: Front, stream: &str) -> (Translation, String) {
        let mut translation = Translation::new(
            kind,
            front,
            "model",
            "chatcmpl-1",
            1_700_000_000,
            false,
            TokenCounter::Bytes,
        )
        .with_secrets(vec![Arc::new(Secret::new(KEY))]);
        let mut parser = SseParser::new(1 << 20);
        parser.push(stream.as_bytes()).unwrap();
        let mut out = Vec::new();
        while let Some(event) = parser.next_event() {
            translation.on_event(&event, &mut out);
        }
        translation.finish(&mut out);
        (translation, String::from_utf8(out).unwrap())
    }

    fn assert_no_key_part(text: &str) {
        for window in KEY.as_bytes().windows(8) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(!text.contains(window), "{window:?} leaked in {text}");
        }
    }

    /// The `(event name, data as JSON or the [DONE] marker)` of each event with data.
    fn client_events(out: &str) -> Vec<(Option<String>, Value)> {
        let mut parser = SseParser::new(1 << 20);
        parser.push(out.as_bytes()).unwrap();
        std::iter::from_fn(|| parser.next_event())
            .filter(|e| e.has_data)
            .map(|e| {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone()));
                (e.event, data)
            })
            .collect()
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

    #[test]
    fn openai_error_chunk_is_mapped_scrubbed_and_ends_the_relayed_stream() {
        let stream = format!(
            "{}data: {{\"error\":{{\"message\":\"Incorrect API key provided: {KEY}\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}}}\n\n{}{OPENAI_USAGE}data: [DONE]\n\n",
            openai_chunk("Hi"),
            openai_chunk("late"),
        );
        let (translation, out) = translate_keyed(ProviderKind::Openai, Front::OpenAi, &stream);
        assert_no_key_part(&out);
        let events = client_events(&out);
        assert_eq!(events.len(), 2, "{out}");
        assert_eq!(
            events[1].1,
            json!({"error": {"message": "Incorrect API key provided: [redacted]",
                             "type": "rate_limit_error", "code": "rate_limit_exceeded"}})
        );
        // Ended by an error: cut, whatever came after it.
        assert!(matches!(translation.metered(true), Metered::Cut { .. }));
    }

    #[test]
    fn anthropic_error_event_passed_through_is_the_gateways_error() {
        let stream = format!(
            "{ANTHROPIC_START}{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"key {KEY} is busy\"}}}}\n\n{ANTHROPIC_END}",
            anthropic_text("Hi")
        );
        let (translation, out) =
            translate_keyed(ProviderKind::Anthropic, Front::Anthropic, &stream);
        assert_no_key_part(&out);
        // Everything before the error is the provider's bytes; nothing after it goes out.
        let before = format!("{ANTHROPIC_START}{}", anthropic_text("Hi"));
        assert!(out.starts_with(&before), "{out}");
        let events = client_events(&out[before.len()..]);
        assert_eq!(
            events,
            [(
                Some("error".to_string()),
                json!({"type": "error", "error": {"type": "overloaded_error",
                                                  "message": "key [redacted] is busy"}})
            )]
        );
        assert!(matches!(translation.metered(true), Metered::Cut { .. }));
    }

    #[test]
    fn errors_translated_to_the_anthropic_front_door_get_its_mapped_type() {
        let openai = format!(
            "{}data: {{\"error\":{{\"message\":\"over quota for {KEY}\",\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}}}\n\n",
            openai_chunk("Hi")
        );
        let gemini = format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"Hi\"}}],\"role\":\"model\"}}}}]}}\n\n\
             data: {{\"error\":{{\"code\":503,\"message\":\"overloaded ?key={KEY}\",\"status\":\"UNAVAILABLE\"}}}}\n\n"
        );
        for (kind, stream, anthropic_type) in [
            (ProviderKind::Openai, openai, "billing_error"),
            (ProviderKind::Gemini, gemini, "overloaded_error"),
        ] {
            let (translation, out) = translate_keyed(kind, Front::Anthropic, &stream);
            assert_no_key_part(&out);
            let events = client_events(&out);
            let (name, data) = events.last().unwrap();
            assert_eq!(name.as_deref(), Some("error"), "{kind:?}: {out}");
            assert_eq!(data["error"]["type"], anthropic_type, "{kind:?}: {out}");
            assert!(
                data["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("[redacted]"),
                "{kind:?}: {out}"
            );
            // The text before the error was relayed; only one error, no message_stop.
            assert!(out.contains("\"Hi\""), "{kind:?}: {out}");
            assert_eq!(out.matches("event: error").count(), 1, "{kind:?}: {out}");
            assert!(!out.contains("message_stop"), "{kind:?}: {out}");
            assert!(matches!(translation.metered(true), Metered::Cut { .. }));
        }
    }
}

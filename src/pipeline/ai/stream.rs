//! Streamed answers, translated on the fly: the provider's event stream becomes OpenAI
//! chunks (the canonical form), and those become the front door's dialect. Each stage works
//! one event at a time, so nothing is held back beyond the event being translated.
//!
//! The provider-side stage also meters the stream: the usage the provider reports, whether
//! the stream got as far as its final usage, and the completion tokens of the deltas seen
//! (what a stream cut before its end is charged at least).

use std::borrow::Cow;

use serde::Deserialize;

use crate::ai::{anthropic, gemini, ChatStreamRelay, SseEvent, SseParser, Usage};
use crate::config::ProviderKind;
use crate::meter::{Metered, RelayedTokens, TokenCounter};

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
}

/// The relay of an OpenAI-format stream (OpenAI, Azure OpenAI, the mock), counting the
/// completion text of its chunks on the side.
struct OpenAiRelay {
    relay: ChatStreamRelay,
    relayed: RelayedTokens,
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
        self.relay.saw_done() || self.relay.usage().is_some()
    }
    fn relayed_tokens(&self) -> u64 {
        self.relayed.tokens()
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
}

/// Forwards an Anthropic stream untouched to an Anthropic client, reading its usage on the
/// side (the translation's output is discarded).
struct AnthropicPassthrough {
    meter: anthropic::StreamToOpenAi,
    scratch: Vec<u8>,
}

impl EventStage for AnthropicPassthrough {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        out.extend_from_slice(&event.raw);
        self.scratch.clear();
        self.meter.on_event(event, &mut self.scratch);
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
}

/// The provider-side stage, then (for the Anthropic front door) the client-side stage.
pub(super) struct Translation {
    provider: Box<dyn ProviderStage>,
    client: Option<(SseParser, Box<dyn EventStage>)>,
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
                    Box::new(stage) as Box<dyn EventStage>,
                ))
            }
        };
        Translation {
            provider,
            client,
            canonical: Vec::new(),
        }
    }

    /// Translates one provider event into `out`.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match &mut self.client {
            None => self.provider.on_event(event, out),
            Some((parser, stage)) => {
                self.canonical.clear();
                self.provider.on_event(event, &mut self.canonical);
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
}

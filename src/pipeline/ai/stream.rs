//! Streamed answers, translated on the fly: the provider's event stream becomes OpenAI
//! chunks (the canonical form), and those become the front door's dialect. Each stage works
//! one event at a time, so nothing is held back beyond the event being translated.

use crate::ai::{anthropic, gemini, ChatStreamRelay, SseEvent, SseParser, Usage};
use crate::config::ProviderKind;

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

impl EventStage for ChatStreamRelay {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        ChatStreamRelay::on_event(self, event, out)
    }
    fn finish(&mut self, _out: &mut Vec<u8>) {}
    fn usage(&self) -> Option<Usage> {
        ChatStreamRelay::usage(self)
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

/// The provider-side stage, then (for the Anthropic front door) the client-side stage.
pub(super) struct Translation {
    provider: Box<dyn EventStage>,
    client: Option<(SseParser, Box<dyn EventStage>)>,
    canonical: Vec<u8>,
}

impl Translation {
    /// The stages from a `kind` provider's stream to a `front` client, for `model` (the
    /// client-facing name put in translated events).
    pub fn new(
        kind: ProviderKind,
        front: Front,
        model: &str,
        id: &str,
        created: i64,
        client_wants_usage: bool,
    ) -> Translation {
        // The Anthropic front door needs usage from the canonical stream for `message_delta`.
        let canonical_usage = client_wants_usage || front == Front::Anthropic;
        if kind == ProviderKind::Anthropic && front == Front::Anthropic {
            return Translation {
                provider: Box::new(AnthropicPassthrough {
                    meter: anthropic::StreamToOpenAi::new(model, created, true),
                    scratch: Vec::new(),
                }),
                client: None,
                canonical: Vec::new(),
            };
        }
        let provider: Box<dyn EventStage> = match kind {
            ProviderKind::Anthropic => Box::new(anthropic::StreamToOpenAi::new(
                model,
                created,
                canonical_usage,
            )),
            ProviderKind::Gemini => Box::new(gemini::StreamToOpenAi::new(
                model,
                id,
                created,
                canonical_usage,
            )),
            // OpenAI, Azure OpenAI and the mock speak the canonical form already.
            _ => Box::new(ChatStreamRelay::new(canonical_usage)),
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

    /// Usage as the provider reported it.
    pub fn usage(&self) -> Option<Usage> {
        self.provider.usage()
    }
}

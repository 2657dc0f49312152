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

use std::sync::Arc;

use crate::ai::providers::anthropic;
use crate::ai::providers::{ClientStage, Provider, ProviderStage, Reply, Stage};
use crate::ai::TokenCounter;
use crate::ai::{SseEvent, SseParser};
use crate::config::Secret;
use crate::limits::Metered;

use crate::error::Dialect;

/// Largest single event translated.
pub(super) const MAX_EVENT: usize = 4 * 1024 * 1024;

/// The provider-side stage, then (for the Anthropic front door) the client-side stage.
pub(super) struct Translation {
    provider: Box<dyn ProviderStage>,
    client: Option<(SseParser, Box<dyn ClientStage>)>,
    canonical: Vec<u8>,
}

impl Translation {
    /// The stages from `api`'s stream to a `front` client, for `model` (the client-facing
    /// name put in translated events); relayed completion text is counted with `counter`,
    /// the upstream model's estimator.
    pub fn new(
        api: &dyn Provider,
        front: Dialect,
        model: &str,
        id: &str,
        created: i64,
        client_wants_usage: bool,
        counter: TokenCounter,
    ) -> Translation {
        // The Anthropic front door needs usage from the canonical stream for `message_delta`.
        let canonical_usage = client_wants_usage || front == Dialect::Anthropic;
        let reply = Reply { model, id, created };
        let Stage {
            stage: provider,
            dialect,
        } = api.stream_stage(front, &reply, canonical_usage, counter);
        // A provider stage emits the front door's dialect or the canonical one; only the
        // Anthropic front door has a client-side stage from canonical chunks.
        let client = match front {
            _ if dialect == front => None,
            Dialect::OpenAi => None,
            Dialect::Anthropic => {
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

    /// A provider stage that relays the provider's own stream to a client of the same API
    /// (a native Responses stream), metering it; no client-side stage.
    pub fn passthrough(stage: Box<dyn ProviderStage>) -> Translation {
        Translation {
            provider: stage,
            client: None,
            canonical: Vec::new(),
        }
    }

    /// The same stages, with the values a provider's error message must not carry (the
    /// provider's configured key) scrubbed from every mid-stream error.
    pub fn with_secrets(mut self, secrets: Vec<Arc<Secret>>) -> Translation {
        self.provider.set_secrets(secrets);
        self
    }

    /// The same provider stage with `stage` as the client-side stage (in place of any),
    /// for a front door whose dialect the provider stage does not know (the Responses API).
    pub fn with_client_stage(mut self, stage: Box<dyn ClientStage>) -> Translation {
        self.client = Some((SseParser::new(MAX_EVENT), stage));
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
    use crate::ai::providers;
    use crate::ai::Usage;
    use serde_json::{json, Value};

    /// Runs `stream` through a translation from `kind` to `front`; returns it and the client's
    /// bytes.
    fn translate(kind: &dyn Provider, front: Dialect, stream: &str) -> (Translation, Vec<u8>) {
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
    fn complete_openai_stream_is_metered_with_its_reported_usage() {
        let stream = format!(
            "{}{}{OPENAI_USAGE}data: [DONE]\n\n",
            openai_chunk("Hello"),
            openai_chunk(" you")
        );
        let (translation, _) = translate(&providers::OpenAi, Dialect::OpenAi, &stream);
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
        let (translation, _) = translate(&providers::OpenAi, Dialect::OpenAi, &stream);
        assert!(matches!(translation.metered(false), Metered::Cut { .. }));
    }

    #[test]
    fn openai_stream_cut_before_its_usage_is_cut_with_the_relayed_tokens() {
        let stream: String = (0..10).map(|_| openai_chunk("word ")).collect();
        let (translation, _) = translate(&providers::OpenAi, Dialect::OpenAi, &stream);
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
        let (translation, _) = translate(&providers::OpenAi, Dialect::OpenAi, &stream);
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
        let (translation, out) = translate(&providers::OpenAi, Dialect::Anthropic, &stream);
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
        for front in [Dialect::Anthropic, Dialect::OpenAi] {
            let whole = format!(
                "{ANTHROPIC_START}{}{ANTHROPIC_END}",
                anthropic_text("Hi there")
            );
            let (translation, _) = translate(&providers::Anthropic, front, &whole);
            assert_eq!(
                translation.metered(true),
                Metered::Complete {
                    reported: Some(usage(25, 77)),
                    relayed_tokens: 2,
                },
                "{front:?}"
            );
            let cut = format!("{ANTHROPIC_START}{}", anthropic_text("Hi there"));
            let (translation, _) = translate(&providers::Anthropic, front, &cut);
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
        let (cut, _) = translate(&providers::Gemini, Dialect::OpenAi, first);
        assert_eq!(
            cut.metered(true),
            Metered::Cut {
                reported: Some(usage(4, 0)),
                relayed_tokens: 2,
            }
        );
        let (whole, _) = translate(
            &providers::Gemini,
            Dialect::OpenAi,
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
    fn translate_keyed(kind: &dyn Provider, front: Dialect, stream: &str) -> (Translation, String) {
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

    #[test]
    fn openai_error_chunk_is_mapped_scrubbed_and_ends_the_relayed_stream() {
        let stream = format!(
            "{}data: {{\"error\":{{\"message\":\"Incorrect API key provided: {KEY}\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}}}\n\n{}{OPENAI_USAGE}data: [DONE]\n\n",
            openai_chunk("Hi"),
            openai_chunk("late"),
        );
        let (translation, out) = translate_keyed(&providers::OpenAi, Dialect::OpenAi, &stream);
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
    fn error_chunk_toward_the_responses_door_is_one_scrubbed_error_event() {
        use crate::ai::responses::{parse_request, Naming, ResponsesStream};
        let echo = parse_request(br#"{"model":"m","input":"hi","stream":true}"#)
            .unwrap()
            .echo;
        let naming = Naming {
            model: "model",
            request_id: "1",
            created_at: 1_700_000_000,
        };
        let stream = format!(
            "{}data: {{\"error\":{{\"message\":\"Incorrect API key provided: {KEY}\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}}}\n\n{}{OPENAI_USAGE}data: [DONE]\n\n",
            openai_chunk("Hi"),
            openai_chunk("late"),
        );
        let mut translation = Translation::new(
            &providers::OpenAi,
            Dialect::OpenAi,
            "model",
            "chatcmpl-1",
            1_700_000_000,
            true,
            TokenCounter::Bytes,
        )
        .with_secrets(vec![Arc::new(Secret::new(KEY))])
        .with_client_stage(Box::new(ResponsesStream::new(&naming, echo)));
        let mut parser = SseParser::new(1 << 20);
        parser.push(stream.as_bytes()).unwrap();
        let mut out = Vec::new();
        while let Some(event) = parser.next_event() {
            translation.on_event(&event, &mut out);
        }
        translation.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert_no_key_part(&out);
        let events = client_events(&out);
        let (name, error) = events.last().unwrap();
        assert_eq!(name.as_deref(), Some("error"), "{out}");
        assert_eq!(error["code"], "rate_limit_exceeded", "{out}");
        assert!(error["message"].as_str().unwrap().contains("[redacted]"));
        assert_eq!(out.matches("event: error").count(), 1, "{out}");
        assert!(!out.contains("response.completed"), "{out}");
        assert!(!out.contains("late"), "nothing after the error: {out}");
        assert!(matches!(translation.metered(true), Metered::Cut { .. }));
    }

    #[test]
    fn anthropic_error_event_passed_through_is_the_gateways_error() {
        let stream = format!(
            "{ANTHROPIC_START}{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"key {KEY} is busy\"}}}}\n\n{ANTHROPIC_END}",
            anthropic_text("Hi")
        );
        let (translation, out) =
            translate_keyed(&providers::Anthropic, Dialect::Anthropic, &stream);
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
            (&providers::OpenAi as &dyn Provider, openai, "billing_error"),
            (&providers::Gemini, gemini, "overloaded_error"),
        ] {
            let (translation, out) = translate_keyed(kind, Dialect::Anthropic, &stream);
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

//! A Responses request passed through to a provider that has the Responses API
//! (`[[provider]] responses = "native"`): its answer goes to the client as the provider sent
//! it, but for the client-facing model name, and is metered from the usage it reports.
//!
//! A whole Response reports `usage` (`input_tokens`, `output_tokens`,
//! `input_tokens_details.cached_tokens`); a stream reports it in its last event,
//! `response.completed`, `response.incomplete` or `response.failed`, and a stream that never
//! got there is cut, charged at least the text and arguments it relayed, as a chat stream is.
//!
//! Events are relayed byte for byte; only those naming a model are rewritten, and only the
//! event types that end a stream or carry text are parsed beyond their `type`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::providers::{EventStage, ProviderStage};
use crate::ai::{RelayedTokens, SseEvent, TokenCounter, Usage};
use crate::config::Secret;

/// The event types whose `delta` is completion text (or arguments) the model produced.
const TEXT_DELTAS: &[&str] = &[
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.refusal.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.custom_tool_call_input.delta",
];

/// The event types that end a Response stream, each with the Response and its usage.
const TERMINAL: &[&str] = &[
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// The usage of a whole Response object (`None` when it reports none).
pub fn usage_from_response(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Whole {
        #[serde(default)]
        usage: Option<Value>,
    }
    let whole: Whole = serde_json::from_slice(body).ok()?;
    read_usage(whole.usage.as_ref()?)
}

/// A Responses `usage` object read: `input_tokens` (cached ones included, as OpenAI counts
/// them), `output_tokens` (reasoning included) and `input_tokens_details.cached_tokens`.
fn read_usage(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: count("input_tokens"),
        completion_tokens: count("output_tokens"),
        cached_tokens: usage
            .get("input_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The parts of an event read for every event: its type and, for text, its delta.
#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
}

/// The Response a terminal event carries, for its usage.
#[derive(Deserialize)]
struct Terminal {
    response: TerminalResponse,
}

#[derive(Deserialize)]
struct TerminalResponse {
    #[serde(default)]
    usage: Option<Value>,
}

/// The provider-side stage of a native Responses stream: relays each event (the model
/// renamed), meters it, and ends it with the gateway's scrubbed error on a provider error.
pub struct ResponsesRelay {
    model: String,
    relayed: RelayedTokens,
    usage: Option<Usage>,
    /// A terminal event was seen.
    ended: bool,
    secrets: Vec<Arc<Secret>>,
    /// An error event ended the stream: nothing more is relayed.
    failed: bool,
    /// That error, until [`ProviderStage::take_error`].
    error: Option<ProviderError>,
}

impl ResponsesRelay {
    /// A relay naming the client-facing `model`; relayed text is counted with `counter`.
    pub fn new(model: &str, counter: TokenCounter) -> ResponsesRelay {
        ResponsesRelay {
            model: model.to_string(),
            relayed: RelayedTokens::new(counter),
            usage: None,
            ended: false,
            secrets: Vec::new(),
            failed: false,
            error: None,
        }
    }

    fn exposed(&self) -> Vec<&str> {
        self.secrets.iter().map(|s| s.expose()).collect()
    }

    /// The provider's `error` event as the gateway's, its message scrubbed of the provider's
    /// key; the provider's `sequence_number` is kept so the client's sequence stays whole.
    fn fail(&mut self, data: &str, out: &mut Vec<u8>) {
        let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        // Error events carry no status: their code names the one a whole answer would have.
        let status = match field("code") {
            Some("rate_limit_exceeded" | "insufficient_quota") => 429,
            Some("invalid_request_error" | "invalid_prompt") => 400,
            _ => 500,
        };
        let as_answer = json!({"error": {
            "message": field("message"),
            "type": field("code"),
            "code": field("code"),
        }});
        let body = serde_json::to_vec(&as_answer).expect("JSON values serialize");
        let error = provider_error::from_response(status, &body, None, &self.exposed());
        let mut shown = json!({
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": null,
        });
        if let Some(n) = event.get("sequence_number").and_then(Value::as_u64) {
            shown["sequence_number"] = n.into();
        }
        crate::ai::encode_event(Some("error"), &shown.to_string(), out);
        self.failed = true;
        self.error = Some(error);
    }

    /// `data` with every configured secret replaced, for the events that carry a provider
    /// message (`response.failed`'s `error`).
    fn without_secrets(&self, event: &SseEvent) -> Option<SseEvent> {
        let secrets = self.exposed();
        let leaked: Vec<&str> = secrets
            .into_iter()
            .filter(|s| s.len() >= 4 && event.data.contains(s))
            .collect();
        if leaked.is_empty() {
            return None;
        }
        let mut data = event.data.clone();
        for secret in leaked {
            data = data.replace(secret, crate::ai::scrub::REDACTED);
        }
        let mut raw = Vec::with_capacity(data.len() + 32);
        crate::ai::encode_event(event.event.as_deref(), &data, &mut raw);
        Some(SseEvent {
            event: event.event.clone(),
            data,
            has_data: true,
            raw,
        })
    }
}

impl EventStage for ResponsesRelay {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        if !event.has_data {
            out.extend_from_slice(&event.raw);
            return;
        }
        let head = serde_json::from_str::<EventHead<'_>>(&event.data).ok();
        let kind = head.as_ref().and_then(|h| h.kind.as_deref());
        if event.event.as_deref() == Some("error") || kind == Some("error") {
            self.fail(&event.data, out);
            return;
        }
        let mut scrubbed = None;
        if let (Some(kind), Some(head)) = (kind, &head) {
            if TEXT_DELTAS.contains(&kind) {
                self.relayed.add(head.delta.as_deref().unwrap_or_default());
            } else if TERMINAL.contains(&kind) {
                self.ended = true;
                if let Ok(terminal) = serde_json::from_str::<Terminal>(&event.data) {
                    self.usage = terminal.response.usage.as_ref().and_then(read_usage);
                }
                if kind == "response.failed" {
                    scrubbed = self.without_secrets(event);
                }
            }
        }
        let event = scrubbed.as_ref().unwrap_or(event);
        match crate::ai::model_name::rename_event(event, &self.model) {
            Some(renamed) => out.extend_from_slice(&renamed.raw),
            None => out.extend_from_slice(&event.raw),
        }
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl ProviderStage for ResponsesRelay {
    fn reached_end(&self) -> bool {
        self.ended && !self.failed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::SseParser;

    fn event(kind: &str, rest: &str, n: u64) -> String {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\",{rest}\"sequence_number\":{n}}}\n\n")
    }

    const USAGE: &str = r#""usage":{"input_tokens":31,"input_tokens_details":{"cached_tokens":12},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":40}"#;

    fn run(relay: &mut ResponsesRelay, stream: &str) -> String {
        let mut parser = SseParser::new(1 << 20);
        parser.push(stream.as_bytes()).unwrap();
        let mut out = Vec::new();
        while let Some(e) = parser.next_event() {
            relay.on_event(&e, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn stream(last: &str) -> String {
        let created = event(
            "response.created",
            r#""response":{"id":"resp_1","object":"response","model":"gpt-4o-2024-08-06","status":"in_progress","usage":null},"#,
            0,
        );
        let delta = event(
            "response.output_text.delta",
            r#""item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello there","#,
            1,
        );
        let end = event(
            last,
            &format!(
                r#""response":{{"id":"resp_1","object":"response","model":"gpt-4o-2024-08-06","status":"completed",{USAGE}}},"#
            ),
            2,
        );
        format!("{created}{delta}{end}")
    }

    #[test]
    fn a_whole_responses_usage_is_read_exactly() {
        let body = format!(r#"{{"id":"resp_1","object":"response","output":[],{USAGE}}}"#);
        assert_eq!(
            usage_from_response(body.as_bytes()),
            Some(Usage {
                prompt_tokens: 31,
                completion_tokens: 9,
                cached_tokens: 12,
            })
        );
        assert_eq!(usage_from_response(br#"{"usage":null}"#), None);
        assert_eq!(usage_from_response(b"not json"), None);
    }

    #[test]
    fn each_terminal_event_ends_the_stream_with_its_usage_and_the_model_is_renamed() {
        for last in TERMINAL {
            let mut relay = ResponsesRelay::new("client-model", TokenCounter::Bytes);
            let out = run(&mut relay, &stream(last));
            assert!(relay.reached_end(), "{last}");
            assert_eq!(
                relay.usage(),
                Some(Usage {
                    prompt_tokens: 31,
                    completion_tokens: 9,
                    cached_tokens: 12,
                }),
                "{last}"
            );
            assert!(!out.contains("gpt-4o-2024-08-06"), "{out}");
            assert_eq!(out.matches(r#""model":"client-model""#).count(), 2);
            // Everything else is relayed as it came.
            assert!(out.contains(r#""delta":"Hello there","sequence_number":1"#));
        }
    }

    #[test]
    fn a_stream_cut_before_its_end_is_metered_by_the_text_it_relayed() {
        let full = stream("response.completed");
        let cut = &full[..full.find("event: response.completed").unwrap()];
        let mut relay = ResponsesRelay::new("m", TokenCounter::Bytes);
        run(&mut relay, cut);
        assert!(!relay.reached_end());
        assert_eq!(relay.usage(), None);
        // "Hello there": 11 bytes, 3 tokens at 4 bytes a token.
        assert_eq!(relay.relayed_tokens(), 3);
    }

    #[test]
    fn a_provider_error_event_ends_the_stream_scrubbed_of_the_key() {
        const KEY: &str = "sk-prv7Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";
        let mut relay = ResponsesRelay::new("m", TokenCounter::Bytes);
        relay.set_secrets(vec![Arc::new(Secret::new(KEY))]);
        let error = format!(
            "event: error\ndata: {{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"failed for key {KEY}\",\"param\":null,\"sequence_number\":2}}\n\n"
        );
        let after = event("response.output_text.delta", r#""delta":"more","#, 3);
        let full = stream("response.completed");
        let head = &full[..full.find("event: response.completed").unwrap()];
        let out = run(&mut relay, &format!("{head}{error}{after}"));
        assert!(!out.contains(KEY) && !out.contains("Fg"), "{out}");
        assert!(out.contains("event: error\n"), "{out}");
        assert!(out.contains(r#""sequence_number":2"#), "{out}");
        assert!(!out.contains("more"), "nothing after the error: {out}");
        assert!(!relay.reached_end());
        assert!(relay.take_error().is_some());
    }

    #[test]
    fn a_failed_response_never_shows_the_key() {
        const KEY: &str = "sk-prv7Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";
        let mut relay = ResponsesRelay::new("m", TokenCounter::Bytes);
        relay.set_secrets(vec![Arc::new(Secret::new(KEY))]);
        let failed = event(
            "response.failed",
            &format!(
                r#""response":{{"id":"r","model":"x","status":"failed","error":{{"code":"server_error","message":"bad key {KEY}"}},"usage":null}},"#
            ),
            0,
        );
        let out = run(&mut relay, &failed);
        assert!(!out.contains(KEY), "{out}");
        assert!(out.contains("[redacted]"), "{out}");
        assert!(relay.reached_end());
    }
}

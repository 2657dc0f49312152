//! A Gemini `streamGenerateContent?alt=sse` stream as an OpenAI chat completion stream.
//!
//! With `alt=sse` every event's data is one complete `GenerateContentResponse` holding the
//! next piece of each candidate: text parts, whole `functionCall` parts (Gemini does not split
//! a call's arguments across events), the `finishReason` on the last, and the running
//! `usageMetadata` (complete on the last). There is no end marker: the HTTP body just ends.

use std::sync::Arc;

use serde_json::{json, Value};

use super::error::stream_error;
use super::{
    candidate_index, finish_reason_for, prompt_block_reason, tool_call, tool_call_id, visible_text,
    GeminiUsage,
};
use crate::ai::openai::Usage;
use crate::ai::provider_error::ProviderError;
use crate::ai::sse::{encode_event, SseEvent};
use crate::ai::{RelayedTokens, TokenCounter};
use crate::config::Secret;
use crate::error::Dialect;

/// Turns Gemini stream events into `chat.completion.chunk` events, as OpenAI streams them:
/// per choice a role chunk first, then content deltas and tool call deltas in the order Gemini
/// sent them, then a finish chunk; after the upstream stream ends ([`StreamToOpenAi::finish`]),
/// the usage-only chunk (`choices: []`) when the client asked for it, then `data: [DONE]`.
///
/// A stream that ends before any candidate finished is cut short: [`StreamToOpenAi::finish`]
/// then adds nothing, so the client sees no `[DONE]`, as with a cut OpenAI stream. An error
/// object inside the stream becomes one OpenAI error event (`data: {"error": {..}}`), mapped
/// and scrubbed as a whole error answer would be, and the stream ends there.
#[derive(Debug)]
pub struct StreamToOpenAi {
    model: String,
    id: String,
    created: i64,
    include_usage: bool,
    /// `(candidate index, state)` for each candidate seen.
    choices: Vec<(u64, ChoiceState)>,
    /// Function calls so far, across candidates: the next tool call id.
    calls_so_far: usize,
    usage: Option<GeminiUsage>,
    /// A finish chunk was sent (for any candidate, or for a blocked prompt).
    finished: bool,
    /// An error event was sent, or [`StreamToOpenAi::finish`] ran: nothing more is sent.
    closed: bool,
    /// Tokens of the text and function calls seen, for a stream cut before its last event.
    relayed: RelayedTokens,
    /// The provider's key (and any other value it must never echo): removed from the
    /// message of an error object.
    secrets: Vec<Arc<Secret>>,
    /// The provider's error object, mapped, until the caller takes it.
    error: Option<ProviderError>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ChoiceState {
    finished: bool,
    /// Tool calls of this choice so far: the next call's `index` in its deltas.
    tool_calls: usize,
}

/// Candidates tracked per stream at most; Gemini's `candidateCount` is small (1 to 8), so a
/// larger index is a broken upstream, not a reason to grow without bound.
const MAX_CHOICES: usize = 16;

impl StreamToOpenAi {
    /// A translator for one stream; `model` is the client-facing name, `id` and `created`
    /// the gateway's, `include_usage` the client's `stream_options.include_usage`.
    pub fn new(model: &str, id: &str, created: i64, include_usage: bool) -> Self {
        StreamToOpenAi {
            model: model.to_string(),
            id: id.to_string(),
            created,
            include_usage,
            choices: Vec::new(),
            calls_so_far: 0,
            usage: None,
            finished: false,
            closed: false,
            relayed: RelayedTokens::default(),
            secrets: Vec::new(),
            error: None,
        }
    }

    /// The values an error object's message must not carry (the provider's configured
    /// key): they are scrubbed from it with everything credential-shaped.
    pub fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>) {
        self.secrets = secrets;
    }

    /// The provider's error object that ended the stream, mapped to the gateway's error (its
    /// OpenAI form is already in the output); `None` once taken.
    pub fn take_error(&mut self) -> Option<ProviderError> {
        self.error.take()
    }

    /// Counts relayed completion text with `counter` (the upstream model's estimator) rather
    /// than the default 4 bytes per token.
    pub fn set_token_counter(&mut self, counter: TokenCounter) {
        self.relayed = RelayedTokens::new(counter);
    }

    /// Completion tokens in the text and function calls seen so far (estimated).
    pub fn relayed_tokens(&self) -> u64 {
        self.relayed.tokens()
    }

    /// Appends to `out` the client's events for one upstream event. Comments and events
    /// without data add nothing.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.closed || !event.has_data {
            return;
        }
        let response = match serde_json::from_str::<Value>(&event.data) {
            Ok(response @ Value::Object(_)) => response,
            _ => {
                let error = json!({
                    "message": "the Gemini stream sent an event that is not a JSON object",
                    "type": "server_error", "param": null, "code": null,
                });
                self.close_with_error(error, out);
                return;
            }
        };
        if let Some(error) = response.get("error").filter(|e| e.is_object()) {
            let secrets: Vec<&str> = self.secrets.iter().map(|s| s.expose()).collect();
            let error = stream_error(error, event.data.as_bytes(), &secrets);
            self.closed = true;
            encode_event(None, &error.body(Dialect::OpenAi), out);
            self.error = Some(error);
            return;
        }
        if let Some(usage) = response.get("usageMetadata") {
            self.usage = Some(GeminiUsage::read(usage));
        }
        let candidates = response
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for candidate in candidates {
            self.on_candidate(candidate, out);
        }
        if candidates.is_empty() && prompt_block_reason(&response).is_some() {
            if let Some(state) = self.choice(0, out) {
                state.finished = true;
                self.finished = true;
                self.emit_chunk(0, json!({}), Some("content_filter"), out);
            }
        }
    }

    /// Ends the stream once the upstream body has ended: the usage chunk (when asked for)
    /// and `data: [DONE]`, unless the stream was cut short or failed (see the type's docs).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if !self.finished {
            return;
        }
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.unwrap_or_default().to_openai(),
            });
            encode_event(None, &chunk.to_string(), out);
        }
        encode_event(None, "[DONE]", out);
    }

    /// The usage of the stream, once an event carried `usageMetadata` (the latest wins: Gemini
    /// repeats running totals, complete on the last event).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(GeminiUsage::to_usage)
    }

    /// Whether a candidate finished (the stream was not cut short before its end).
    pub fn saw_finish(&self) -> bool {
        self.finished
    }

    fn on_candidate(&mut self, candidate: &Value, out: &mut Vec<u8>) {
        let index = candidate_index(candidate);
        let Some(state) = self.choice(index, out) else {
            return;
        };
        if state.finished {
            return;
        }
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Consecutive text parts of one event go out as one content delta.
        let mut text = String::new();
        for part in parts {
            if let Some(piece) = visible_text(part) {
                text.push_str(piece);
            } else if let Some(call) = part.get("functionCall") {
                self.flush_text(index, &mut text, out);
                let id = tool_call_id(self.calls_so_far);
                self.calls_so_far += 1;
                let state = self.state(index);
                let call_index = state.tool_calls;
                state.tool_calls += 1;
                let mut delta = tool_call(call, id);
                delta["index"] = json!(call_index);
                let function = &delta["function"];
                for piece in ["name", "arguments"] {
                    self.relayed
                        .add(function[piece].as_str().unwrap_or_default());
                }
                self.emit_chunk(index, json!({ "tool_calls": [delta] }), None, out);
            }
        }
        self.flush_text(index, &mut text, out);
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            let state = self.state(index);
            state.finished = true;
            let called_tools = state.tool_calls > 0;
            self.finished = true;
            let reason = finish_reason_for(reason, called_tools);
            self.emit_chunk(index, json!({}), Some(reason), out);
        }
    }

    fn flush_text(&mut self, index: u64, text: &mut String, out: &mut Vec<u8>) {
        if !text.is_empty() {
            self.relayed.add(text);
            self.emit_chunk(index, json!({ "content": text }), None, out);
            text.clear();
        }
    }

    /// The state of choice `index`, sending its role chunk first when it is new; `None` past
    /// [`MAX_CHOICES`].
    fn choice(&mut self, index: u64, out: &mut Vec<u8>) -> Option<&mut ChoiceState> {
        if !self.choices.iter().any(|(i, _)| *i == index) {
            if self.choices.len() >= MAX_CHOICES {
                return None;
            }
            self.choices.push((index, ChoiceState::default()));
            let role = json!({ "role": "assistant", "content": "" });
            self.emit_chunk(index, role, None, out);
        }
        Some(self.state(index))
    }

    /// The state of a choice already known.
    fn state(&mut self, index: u64) -> &mut ChoiceState {
        let at = self
            .choices
            .iter()
            .position(|(i, _)| *i == index)
            .expect("choice registered before use");
        &mut self.choices[at].1
    }

    fn emit_chunk(&self, index: u64, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": index,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        // With `include_usage`, OpenAI puts `"usage": null` on every chunk but the last.
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        encode_event(None, &chunk.to_string(), out);
    }

    fn close_with_error(&mut self, error: Value, out: &mut Vec<u8>) {
        self.closed = true;
        encode_event(None, &json!({ "error": error }).to_string(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::sse::SseParser;

    /// Runs `stream`, delivered in pieces of `piece` bytes, through a translator; returns the
    /// translator and the data of each client event.
    fn run(stream: &[u8], piece: usize, include_usage: bool) -> (StreamToOpenAi, Vec<Value>) {
        let mut parser = SseParser::new(1 << 20);
        let mut translator = StreamToOpenAi::new("gem", "chatcmpl-1", 1_700_000_000, include_usage);
        let mut out = Vec::new();
        for chunk in stream.chunks(piece) {
            parser.push(chunk).unwrap();
            while let Some(event) = parser.next_event() {
                translator.on_event(&event, &mut out);
            }
        }
        translator.finish(&mut out);
        let mut client = SseParser::new(1 << 20);
        client.push(&out).unwrap();
        assert!(client.finish().is_empty(), "every client event is complete");
        let mut events = Vec::new();
        while let Some(event) = client.next_event() {
            events.push(if event.is_done() {
                json!("[DONE]")
            } else {
                serde_json::from_str(&event.data).unwrap()
            });
        }
        (translator, events)
    }

    fn deltas(events: &[Value]) -> Vec<Value> {
        events
            .iter()
            .filter_map(|e| e.get("choices")?.get(0))
            .map(|c| json!([c["delta"], c["finish_reason"]]))
            .collect()
    }

    /// A text stream as Gemini sends it with `alt=sse` (CRLF line ends; the last event has an
    /// empty text part carrying a thought signature, the finish reason and the full usage).
    const TEXT_STREAM: &[u8] = b"data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"Hello!\"}]}}],\"usageMetadata\": {\"promptTokenCount\": 1,\"totalTokenCount\": 1},\"modelVersion\": \"gemini-3-flash\",\"responseId\": \"tTCw\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \" How can I help you today\"}]}}],\"usageMetadata\": {\"promptTokenCount\": 1,\"totalTokenCount\": 1},\"modelVersion\": \"gemini-3-flash\",\"responseId\": \"tTCw\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"?\"}]}}],\"usageMetadata\": {\"promptTokenCount\": 1,\"totalTokenCount\": 1},\"modelVersion\": \"gemini-3-flash\",\"responseId\": \"tTCw\"}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"\",\"thoughtSignature\": \"AY89a18i\"}]},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 1,\"candidatesTokenCount\": 9,\"totalTokenCount\": 10,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 1}]},\"modelVersion\": \"gemini-3-flash\",\"responseId\": \"tTCw\"}\r\n\r\n";

    #[test]
    fn text_stream_becomes_role_content_finish_and_done() {
        let (_, events) = run(TEXT_STREAM, usize::MAX, false);
        assert_eq!(
            deltas(&events),
            vec![
                json!([{"role": "assistant", "content": ""}, null]),
                json!([{"content": "Hello!"}, null]),
                json!([{"content": " How can I help you today"}, null]),
                json!([{"content": "?"}, null]),
                json!([{}, "stop"]),
            ]
        );
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        assert_eq!(events.len(), 6);
    }

    #[test]
    fn chunks_carry_id_model_and_created_and_no_usage_when_not_asked() {
        let (_, events) = run(TEXT_STREAM, usize::MAX, false);
        let first = &events[0];
        assert_eq!(first["id"], "chatcmpl-1");
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["model"], "gem");
        assert_eq!(first["created"], 1_700_000_000);
        assert!(first.get("usage").is_none());
    }

    #[test]
    fn usage_chunk_comes_last_when_asked() {
        let (translator, events) = run(TEXT_STREAM, usize::MAX, true);
        assert!(events[..5].iter().all(|e| e["usage"].is_null()));
        assert_eq!(
            events[5],
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": "gem", "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 9, "total_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0}}})
        );
        assert_eq!(events[6], json!("[DONE]"));
        assert_eq!(
            translator.usage(),
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 9,
                cached_tokens: 0
            })
        );
    }

    #[test]
    fn stream_split_anywhere_translates_the_same() {
        let (_, whole) = run(TEXT_STREAM, usize::MAX, true);
        for piece in [1, 2, 7, 64] {
            let (_, split) = run(TEXT_STREAM, piece, true);
            assert_eq!(split, whole, "pieces of {piece} bytes");
        }
    }

    /// A function-calling stream: thinking text (hidden), then two parallel calls in one event.
    const TOOL_STREAM: &[u8] = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Planning\",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 60,\"totalTokenCount\": 60,\"thoughtsTokenCount\": 20}}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Checking.\"},{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"Q2lZ\"},{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Rome\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 60,\"candidatesTokenCount\": 14,\"totalTokenCount\": 94,\"thoughtsTokenCount\": 20}}\r\n\r\n";

    #[test]
    fn function_calls_become_tool_call_deltas_and_tool_calls_finish() {
        let (translator, events) = run(TOOL_STREAM, usize::MAX, false);
        assert_eq!(
            deltas(&events),
            vec![
                json!([{"role": "assistant", "content": ""}, null]),
                json!([{"content": "Checking."}, null]),
                json!([{"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}, null]),
                json!([{"tool_calls": [{"index": 1, "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]}, null]),
                json!([{}, "tool_calls"]),
            ]
        );
        assert_eq!(translator.usage().map(|u| u.completion_tokens), Some(34));
    }

    #[test]
    fn max_tokens_finish_is_length() {
        let stream = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Once upon\"}],\"role\": \"model\"},\"finishReason\": \"MAX_TOKENS\"}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,\"totalTokenCount\": 6}}\r\n\r\n";
        let (_, events) = run(stream, usize::MAX, false);
        assert_eq!(deltas(&events).last(), Some(&json!([{}, "length"])));
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_finish() {
        let stream = b"data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"},\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7}}\r\n\r\n";
        let (translator, events) = run(stream, usize::MAX, false);
        assert_eq!(
            deltas(&events),
            vec![
                json!([{"role": "assistant", "content": ""}, null]),
                json!([{}, "content_filter"]),
            ]
        );
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        assert_eq!(translator.usage().map(|u| u.prompt_tokens), Some(7));
    }

    #[test]
    fn stream_cut_before_a_finish_has_no_done() {
        let cut = &TEXT_STREAM[..TEXT_STREAM.len() / 2];
        let (translator, events) = run(cut, usize::MAX, true);
        assert!(!events.contains(&json!("[DONE]")));
        assert!(events.iter().all(|e| e["choices"] != json!([])));
        assert!(!translator.saw_finish());
        assert_eq!(translator.usage().map(|u| u.prompt_tokens), Some(1));
    }

    #[test]
    fn relayed_tokens_count_the_visible_text_of_a_cut_stream() {
        // Cut after the first two events: "Hello!" and " How can I help you today".
        let second_end = TEXT_STREAM
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"\r\n\r\n")
            .nth(1)
            .map(|(i, _)| i + 4)
            .unwrap();
        let (translator, _) = run(&TEXT_STREAM[..second_end], usize::MAX, false);
        assert!(!translator.saw_finish());
        let text = "Hello! How can I help you today";
        assert_eq!(translator.relayed_tokens(), (text.len() as u64).div_ceil(4));
        // The running usage before the last event has no completion count.
        assert_eq!(translator.usage().map(|u| u.completion_tokens), Some(0));
    }

    #[test]
    fn relayed_tokens_count_function_calls_but_not_thoughts() {
        let mut translator = StreamToOpenAi::new("gem", "chatcmpl-1", 1, false);
        translator.set_token_counter(TokenCounter::O200kBase);
        let mut parser = SseParser::new(1 << 20);
        parser.push(TOOL_STREAM).unwrap();
        while let Some(event) = parser.next_event() {
            translator.on_event(&event, &mut Vec::new());
        }
        // The pieces in stream order; "Planning" is a thought, not relayed.
        let relayed = "Checking.get_weather{\"city\":\"Paris\"}get_weather{\"city\":\"Rome\"}";
        assert_eq!(
            translator.relayed_tokens(),
            TokenCounter::O200kBase.count(relayed)
        );
    }

    #[test]
    fn error_event_becomes_an_openai_error_and_ends_the_stream() {
        let stream = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"}}]}\r\n\r\n\
data: {\"error\": {\"code\": 503,\"message\": \"The model is overloaded.\",\"status\": \"UNAVAILABLE\"}}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"late\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}]}\r\n\r\n";
        let (_, events) = run(stream, usize::MAX, false);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[2],
            json!({"error": {"message": "The model is overloaded.", "type": "upstream_error",
                             "code": "unavailable"}})
        );
    }

    #[test]
    fn error_object_is_scrubbed_of_the_configured_key_and_kept_for_the_caller() {
        const KEY: &str = "prv7Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";
        let stream = format!(
            "data: {{\"error\": {{\"code\": 429,\"message\": \"quota of {KEY} exceeded\",\"status\": \"RESOURCE_EXHAUSTED\"}}}}\r\n\r\n"
        );
        let mut parser = SseParser::new(1 << 20);
        let mut translator = StreamToOpenAi::new("gem", "chatcmpl-1", 1_700_000_000, false);
        translator.set_secrets(vec![Arc::new(Secret::new(KEY))]);
        parser.push(stream.as_bytes()).unwrap();
        let mut out = Vec::new();
        while let Some(event) = parser.next_event() {
            translator.on_event(&event, &mut out);
        }
        translator.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "data: {\"error\":{\"code\":\"resource_exhausted\",\"message\":\"quota of [redacted] exceeded\",\"type\":\"rate_limit_error\"}}\n\n"
        );
        let error = translator.take_error().expect("the error is kept");
        assert_eq!(error.provider_status, 429);
        assert_eq!(translator.take_error(), None);
    }

    #[test]
    fn event_that_is_not_json_ends_the_stream_with_an_error() {
        let (_, events) = run(b"data: {broken\r\n\r\n", usize::MAX, false);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["error"]["type"], "server_error");
    }

    #[test]
    fn comments_add_nothing() {
        let (_, events) = run(b": keep-alive\r\n\r\n", usize::MAX, false);
        assert!(events.is_empty());
    }

    #[test]
    fn several_candidates_stream_as_several_choices() {
        let stream = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"},{\"content\": {\"parts\": [{\"text\": \"b\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 1}]}\r\n\r\n";
        let (_, events) = run(stream, usize::MAX, false);
        let indexed: Vec<Value> = events
            .iter()
            .filter_map(|e| e.get("choices")?.get(0))
            .map(|c| json!([c["index"], c["delta"], c["finish_reason"]]))
            .collect();
        assert_eq!(
            indexed,
            vec![
                json!([0, {"role": "assistant", "content": ""}, null]),
                json!([0, {"content": "a"}, null]),
                json!([0, {}, "stop"]),
                json!([1, {"role": "assistant", "content": ""}, null]),
                json!([1, {"content": "b"}, null]),
                json!([1, {}, "stop"]),
            ]
        );
    }
}

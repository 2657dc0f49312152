//! A Bedrock `ConverseStream` answer as an OpenAI chat completion stream.
//!
//! The answer is AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded
//! frame by frame as bytes arrive ([`crate::ai::providers::StreamFraming`]); each frame
//! reaches this stage as one event named by its `:event-type` (`messageStart`,
//! `contentBlockStart`, `contentBlockDelta`, `contentBlockStop`, `messageStop`, `metadata`)
//! with its JSON payload as data, or, for an `exception` frame, named
//! `exception:{:exception-type}` (see [`super::frames`]).
//!
//! Order on the wire: `messageStart`; per content block an optional `contentBlockStart`
//! (tool use: id and name), `contentBlockDelta`s (text, or tool input JSON in pieces),
//! `contentBlockStop`; `messageStop` with the stop reason; `metadata` with the usage, last.

use std::sync::Arc;

use serde_json::{json, Value};

use super::frames::EXCEPTION_PREFIX;
use super::{exception_status, finish_reason_for, BedrockUsage};
use crate::ai::openai::Usage;
use crate::ai::provider_error::{self, ProviderError};
use crate::ai::providers::stage::{EventStage, ProviderStage};
use crate::ai::sse::{encode_event, SseEvent};
use crate::ai::{RelayedTokens, TokenCounter};
use crate::config::Secret;
use crate::error::Dialect;

/// Tool-use blocks tracked per stream at most: a model calls a handful; more is a broken
/// upstream, not a reason to grow without bound.
const MAX_TOOL_BLOCKS: usize = 128;

/// Turns Bedrock stream events into `chat.completion.chunk` events, as OpenAI streams them: a
/// role chunk first, then content and tool call deltas in order, a finish chunk at
/// `messageStop`; after the upstream stream ends ([`EventStage::finish`]) the usage-only
/// chunk (`choices: []`) when the client asked for it, then `data: [DONE]`.
///
/// A stream cut before `messageStop` ends with nothing more (no `[DONE]`), as a cut OpenAI
/// stream does. An exception frame becomes one OpenAI error event, mapped and scrubbed as a
/// whole error answer of its status would be, and nothing follows it.
#[derive(Debug)]
pub struct StreamToOpenAi {
    model: String,
    id: String,
    created: i64,
    include_usage: bool,
    /// The role chunk was sent.
    started: bool,
    /// `(contentBlockIndex, tool call index)` of each tool-use block.
    tool_blocks: Vec<(u64, usize)>,
    stop_reason: Option<&'static str>,
    usage: Option<BedrockUsage>,
    /// The `metadata` event (the stream's last, with the usage) arrived.
    saw_metadata: bool,
    /// An exception was sent, or the stream was finished: nothing more is sent.
    closed: bool,
    relayed: RelayedTokens,
    secrets: Vec<Arc<Secret>>,
    error: Option<ProviderError>,
}

impl StreamToOpenAi {
    /// A translator for one stream; `model` is the client-facing name, `id` and `created` the
    /// gateway's, `include_usage` whether the usage chunk is wanted; relayed text is counted
    /// with `counter`.
    pub fn new(
        model: &str,
        id: &str,
        created: i64,
        include_usage: bool,
        counter: TokenCounter,
    ) -> Self {
        StreamToOpenAi {
            model: model.to_string(),
            id: id.to_string(),
            created,
            include_usage,
            started: false,
            tool_blocks: Vec::new(),
            stop_reason: None,
            usage: None,
            saw_metadata: false,
            closed: false,
            relayed: RelayedTokens::new(counter),
            secrets: Vec::new(),
            error: None,
        }
    }

    fn on_frame(&mut self, name: &str, payload: &Value, out: &mut Vec<u8>) {
        match name {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                let index = block_index(payload);
                let Some(tool) = payload.pointer("/start/toolUse") else {
                    return;
                };
                if self.tool_blocks.len() >= MAX_TOOL_BLOCKS {
                    return;
                }
                self.start(out);
                let call_index = self.tool_blocks.len();
                self.tool_blocks.push((index, call_index));
                let id = tool.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
                self.relayed.add(name);
                let delta = json!({ "tool_calls": [{
                    "index": call_index, "id": id, "type": "function",
                    "function": { "name": name, "arguments": "" },
                }]});
                self.emit(delta, None, out);
            }
            "contentBlockDelta" => {
                let index = block_index(payload);
                let Some(delta) = payload.get("delta") else {
                    return;
                };
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    self.start(out);
                    self.relayed.add(text);
                    self.emit(json!({ "content": text }), None, out);
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    let Some(&(_, call_index)) = self.tool_blocks.iter().find(|b| b.0 == index)
                    else {
                        return;
                    };
                    self.relayed.add(input);
                    let delta = json!({ "tool_calls": [{
                        "index": call_index, "function": { "arguments": input },
                    }]});
                    self.emit(delta, None, out);
                }
                // Reasoning and citation deltas have no place in a chat.completion.chunk.
            }
            "messageStop" => {
                if self.stop_reason.is_some() {
                    return;
                }
                self.start(out);
                let reason = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                let reason = finish_reason_for(reason);
                self.stop_reason = Some(reason);
                self.emit(json!({}), Some(reason), out);
            }
            "metadata" => {
                if let Some(usage) = payload.get("usage") {
                    self.usage = Some(BedrockUsage::read(usage));
                }
                self.saw_metadata = true;
            }
            // `contentBlockStop` and anything newer carry nothing a chunk has.
            _ => {}
        }
    }

    /// Ends the stream with an exception frame's error.
    fn fail(&mut self, exception: &str, data: &[u8], out: &mut Vec<u8>) {
        let secrets: Vec<&str> = self.secrets.iter().map(|s| s.expose()).collect();
        let status = exception_status(exception);
        let error = provider_error::from_response(status, data, None, &secrets);
        self.closed = true;
        encode_event(None, &error.body(Dialect::OpenAi), out);
        self.error = Some(error);
    }

    /// The role chunk, once.
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.emit(json!({ "role": "assistant", "content": "" }), None, out);
        }
    }

    fn emit(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
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
}

/// A block event's `contentBlockIndex`.
fn block_index(payload: &Value) -> u64 {
    payload
        .get("contentBlockIndex")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

impl EventStage for StreamToOpenAi {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.closed || !event.has_data {
            return;
        }
        let name = event.event.as_deref().unwrap_or("");
        if let Some(exception) = name.strip_prefix(EXCEPTION_PREFIX) {
            self.fail(exception, event.data.as_bytes(), out);
            return;
        }
        match serde_json::from_str::<Value>(&event.data) {
            Ok(payload @ Value::Object(_)) => self.on_frame(name, &payload, out),
            _ => self.fail(
                "internalServerException",
                br#"{"message":"the Bedrock stream sent an event that is not a JSON object"}"#,
                out,
            ),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.stop_reason.is_none() {
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

    fn usage(&self) -> Option<Usage> {
        self.usage.map(BedrockUsage::to_usage)
    }
}

impl ProviderStage for StreamToOpenAi {
    /// `metadata`, with the usage, is the stream's last event.
    fn reached_end(&self) -> bool {
        self.saw_metadata && !self.failed()
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

impl StreamToOpenAi {
    /// An exception ended the stream (closed before it was finished).
    fn failed(&self) -> bool {
        self.closed && self.stop_reason.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::providers::bedrock::frames::event_from_message;
    use crate::ai::sse::SseParser;
    use crate::identity::eventstream::{Decoder, Header, HeaderValue, Message};

    fn frame(event_type: &str, payload: Value) -> Vec<u8> {
        let headers = [
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ];
        encode(&headers, payload.to_string().as_bytes())
    }

    fn exception(kind: &str, message: &str) -> Vec<u8> {
        let headers = [
            (":message-type", "exception"),
            (":exception-type", kind),
            (":content-type", "application/json"),
        ];
        encode(
            &headers,
            json!({ "message": message }).to_string().as_bytes(),
        )
    }

    fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        Message {
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: HeaderValue::String(v.to_string()),
                })
                .collect(),
            payload: payload.to_vec(),
        }
        .encode()
        .unwrap()
    }

    /// Decodes `wire` in pieces of `piece` bytes through a translator; returns it and the
    /// data of each client event.
    fn run(wire: &[u8], piece: usize, include_usage: bool) -> (StreamToOpenAi, Vec<Value>) {
        let mut decoder = Decoder::new();
        let mut stage = StreamToOpenAi::new(
            "claude",
            "chatcmpl-1",
            5,
            include_usage,
            TokenCounter::Bytes,
        );
        let mut out = Vec::new();
        for chunk in wire.chunks(piece) {
            decoder.push(chunk);
            while let Some(message) = decoder.next_message().unwrap() {
                stage.on_event(&event_from_message(&message), &mut out);
            }
        }
        // A cut stream leaves a partial frame behind; the stage only sees whole ones.
        stage.finish(&mut out);
        let mut client = SseParser::new(1 << 20);
        client.push(&out).unwrap();
        let mut events = Vec::new();
        while let Some(event) = client.next_event() {
            events.push(if event.is_done() {
                json!("[DONE]")
            } else {
                serde_json::from_str(&event.data).unwrap()
            });
        }
        (stage, events)
    }

    fn text_stream() -> Vec<u8> {
        [
            frame("messageStart", json!({"role": "assistant"})),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
            ),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
            ),
            frame("contentBlockStop", json!({"contentBlockIndex": 0})),
            frame("messageStop", json!({"stopReason": "end_turn"})),
            frame(
                "metadata",
                json!({"usage": {"inputTokens": 12, "outputTokens": 3,
                "totalTokens": 15}, "metrics": {"latencyMs": 5}}),
            ),
        ]
        .concat()
    }

    #[test]
    fn text_deltas_finish_and_usage_at_every_split() {
        let wire = text_stream();
        for piece in [1, 7, wire.len()] {
            let (stage, events) = run(&wire, piece, true);
            assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
            let text: String = events
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(text, "Hello");
            let finish = &events[events.len() - 3];
            assert_eq!(finish["choices"][0]["finish_reason"], "stop");
            let usage = &events[events.len() - 2]["usage"];
            assert_eq!(
                (
                    usage["prompt_tokens"].as_u64(),
                    usage["completion_tokens"].as_u64()
                ),
                (Some(12), Some(3))
            );
            assert_eq!(events.last().unwrap(), "[DONE]");
            assert!(stage.reached_end());
            assert_eq!(
                stage.usage(),
                Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 3,
                    cached_tokens: 0
                })
            );
        }
    }

    #[test]
    fn tool_use_blocks_become_tool_call_deltas() {
        let wire = [
            frame("messageStart", json!({"role": "assistant"})),
            frame(
                "contentBlockStart",
                json!({"contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}}),
            ),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1,
                "delta": {"toolUse": {"input": "{\"city\":"}}}),
            ),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1,
                "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
            ),
            frame("contentBlockStop", json!({"contentBlockIndex": 1})),
            frame("messageStop", json!({"stopReason": "tool_use"})),
            frame(
                "metadata",
                json!({"usage": {"inputTokens": 1, "outputTokens": 2}}),
            ),
        ]
        .concat();
        let (_, events) = run(&wire, 5, false);
        let first = &events[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["id"], "tooluse_9");
        assert_eq!(first["function"]["name"], "get_weather");
        let arguments: String = events
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(arguments, "{\"city\":\"Paris\"}");
        assert_eq!(
            events[events.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn an_exception_frame_ends_the_stream_with_a_scrubbed_error() {
        let mut wire = text_stream();
        wire.truncate(wire.len() / 2);
        let cut = run(&wire, 3, false);
        assert!(!cut.0.reached_end(), "no metadata: cut");
        let wire = [
            frame("messageStart", json!({"role": "assistant"})),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            exception("throttlingException", "slow down, token ASIA-SESSION-TOKEN"),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "more"}}),
            ),
        ]
        .concat();
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        let mut stage = StreamToOpenAi::new("m", "c", 0, false, TokenCounter::Bytes);
        stage.set_secrets(vec![Arc::new(Secret::new("ASIA-SESSION-TOKEN"))]);
        let mut out = Vec::new();
        while let Some(message) = decoder.next_message().unwrap() {
            stage.on_event(&event_from_message(&message), &mut out);
        }
        stage.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("more"), "nothing after the exception");
        assert!(!out.contains("ASIA-SESSION-TOKEN"));
        assert!(!out.contains("[DONE]"));
        let error = stage.take_error().expect("the exception as an error");
        assert_eq!(error.status, 429);
        assert!(!stage.reached_end());
    }
}

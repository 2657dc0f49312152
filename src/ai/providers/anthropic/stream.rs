//! Streamed responses, one server-sent event at a time: Anthropic's Messages stream as
//! OpenAI `chat.completion.chunk`s, and OpenAI chunks as Anthropic's stream.
//!
//! Anthropic ("Streaming Messages"): `message_start` (the message with empty content and
//! the input usage), per content block `content_block_start`, `content_block_delta`s
//! (`text_delta`, `input_json_delta` for tool input) and `content_block_stop`, then
//! `message_delta` (stop reason, output usage) and `message_stop`; `ping`s anywhere; an
//! `error` event may end the stream. OpenAI ("The chat completion chunk object"): a first
//! chunk with the assistant role, content and `tool_calls[i]` deltas (the id and name in the
//! first delta of a call, then `function.arguments` fragments), a chunk with
//! `finish_reason`, with `stream_options.include_usage` a chunk with empty `choices` and
//! the usage, then `data: [DONE]`.
//!
//! Each `on_event` appends only complete events and keeps nothing of the upstream's bytes;
//! the state is the block and tool-call bookkeeping.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::error::{error_from_openai, stream_error};
use super::{
    chat_id_for, finish_reason_for, openai_usage_json, read_openai_usage, stop_reason_for,
    AnthropicUsage,
};
use crate::ai::openai::Usage;
use crate::ai::provider_error::ProviderError;
use crate::ai::sse::{encode_event, SseEvent};
use crate::ai::{RelayedTokens, TokenCounter};
use crate::config::Secret;
use crate::error::Dialect;

/// The message of the error event sent when a stream ends before it is complete.
const CUT_SHORT: &str = "the provider's stream ended before the message was complete";

/// An `index`-like member as a number; absent or malformed is 0 (one block, one call).
fn index_of(value: &Value) -> u64 {
    value.get("index").and_then(Value::as_u64).unwrap_or(0)
}

fn str_of<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}

/// One `chat.completion.chunk`.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Value,
    logprobs: (),
    finish_reason: Option<&'a str>,
}

/// Anthropic Messages stream → OpenAI chat completion chunks (+ a final usage chunk when
/// the client asked for it, then `data: [DONE]`). Usage comes from `message_start` (input)
/// and `message_delta` (output; newer API versions repeat the input counts there too).
#[derive(Debug)]
pub struct StreamToOpenAi {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    usage: AnthropicUsage,
    saw_start: bool,
    /// (Anthropic block index, OpenAI `tool_calls` index) of each `tool_use` block so far.
    tool_calls: Vec<(u64, usize)>,
    /// The finish reason, once a chunk carried it.
    finish_reason: Option<&'static str>,
    /// `[DONE]` (or a terminal error) was written: nothing more goes out.
    ended: bool,
    /// A `message_delta` carried the usage: the output count is final.
    saw_final_usage: bool,
    /// Tokens of the text, tool names and tool input seen, for a stream cut before its usage.
    relayed: RelayedTokens,
    /// The provider's key (and any other value it must never echo): removed from the
    /// message of an `error` event.
    secrets: Vec<Arc<Secret>>,
    /// The provider's `error` event, mapped, until the caller takes it.
    error: Option<ProviderError>,
}

impl StreamToOpenAi {
    /// A translator answering as `model`, with `created` in every chunk; `include_usage` is
    /// the client's `stream_options.include_usage`.
    pub fn new(model: &str, created: i64, include_usage: bool) -> Self {
        StreamToOpenAi {
            id: chat_id_for("stream"),
            model: model.to_string(),
            created,
            include_usage,
            usage: AnthropicUsage::default(),
            saw_start: false,
            tool_calls: Vec::new(),
            finish_reason: None,
            ended: false,
            saw_final_usage: false,
            relayed: RelayedTokens::default(),
            secrets: Vec::new(),
            error: None,
        }
    }

    /// The values an `error` event's message must not carry (the provider's configured
    /// key): they are scrubbed from it with everything credential-shaped.
    pub fn set_secrets(&mut self, secrets: Vec<Arc<Secret>>) {
        self.secrets = secrets;
    }

    /// The provider's `error` event that ended the stream, mapped to the gateway's error
    /// (its OpenAI form is already in the output); `None` once taken.
    pub fn take_error(&mut self) -> Option<ProviderError> {
        self.error.take()
    }

    /// Counts relayed completion text with `counter` (the upstream model's estimator) rather
    /// than the default 4 bytes per token.
    pub fn set_token_counter(&mut self, counter: TokenCounter) {
        self.relayed = RelayedTokens::new(counter);
    }

    /// Appends the chunks for one upstream event. `ping`, comments, unknown events and
    /// blocks without an OpenAI counterpart (thinking) give nothing; an `error` event gives
    /// the gateway's OpenAI-format error event (`{"error":{..}}`, as OpenAI sends mid-stream
    /// errors; mapped and scrubbed as a whole error answer would be), then `data: [DONE]`,
    /// and ends the stream.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended || !event.has_data {
            return;
        }
        let data = match serde_json::from_str::<Value>(&event.data) {
            Ok(data) => data,
            // Still the provider's error, whatever its data: it must not pass unmapped.
            Err(_) if event.event.as_deref() == Some("error") => {
                self.fail(event.data.as_bytes(), out);
                return;
            }
            Err(_) => return,
        };
        let kind = str_of(&data, "type").or(event.event.as_deref());
        match kind {
            Some("message_start") => {
                let message = &data["message"];
                if let Some(id) = str_of(message, "id") {
                    self.id = chat_id_for(id);
                }
                if let Some(usage) = message.get("usage") {
                    self.usage.update(usage);
                }
                self.saw_start = true;
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            Some("content_block_start") => {
                let block = &data["content_block"];
                match str_of(block, "type") {
                    Some("text") => {
                        let text = str_of(block, "text").unwrap_or_default();
                        if !text.is_empty() {
                            self.relayed.add(text);
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("tool_use") => {
                        let call = self.tool_calls.len();
                        self.tool_calls.push((index_of(&data), call));
                        let id = str_of(block, "id").unwrap_or_default();
                        let name = str_of(block, "name").unwrap_or_default();
                        self.relayed.add(name);
                        let delta = json!({"tool_calls": [{
                            "index": call,
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }]});
                        self.chunk(delta, None, out);
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let delta = &data["delta"];
                match str_of(delta, "type") {
                    Some("text_delta") => {
                        let text = str_of(delta, "text").unwrap_or_default();
                        if !text.is_empty() {
                            self.relayed.add(text);
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = str_of(delta, "partial_json").unwrap_or_default();
                        self.relayed.add(partial);
                        let block = index_of(&data);
                        let call = self.tool_calls.iter().find(|(b, _)| *b == block);
                        if let (Some(&(_, call)), false) = (call, partial.is_empty()) {
                            let delta = json!({"tool_calls": [{
                                "index": call,
                                "function": {"arguments": partial},
                            }]});
                            self.chunk(delta, None, out);
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: no counterpart.
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(usage) = data.get("usage") {
                    self.usage.update(usage);
                    self.saw_final_usage = true;
                }
                if let Some(stop_reason) = str_of(&data["delta"], "stop_reason") {
                    let finish_reason = finish_reason_for(stop_reason);
                    self.finish_reason = Some(finish_reason);
                    self.chunk(json!({}), Some(finish_reason), out);
                }
            }
            Some("message_stop") => self.close(out),
            Some("error") => self.fail(event.data.as_bytes(), out),
            // ping, content_block_stop and events added after this was written.
            _ => {}
        }
    }

    /// Ends the stream if the upstream did not: after a stop reason, as `message_stop`
    /// would have; before one, with an `upstream_error` error event. Then `data: [DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.finish_reason.is_some() {
            self.close(out);
            return;
        }
        let error = json!({"error": {
            "message": CUT_SHORT, "type": "upstream_error", "code": "upstream_error",
        }});
        encode_event(None, &error.to_string(), out);
        self.done(out);
    }

    /// The usage reported so far (input from `message_start`, output from the last
    /// `message_delta`); `None` before `message_start`.
    pub fn usage(&self) -> Option<Usage> {
        self.saw_start.then(|| self.usage.to_usage())
    }

    /// Whether the stream got as far as its final usage (`message_delta`); a stream cut
    /// before it, or ended by an `error` event, did not.
    pub fn reached_end(&self) -> bool {
        self.saw_start && self.saw_final_usage
    }

    /// Completion tokens in the text and tool calls seen so far (estimated).
    pub fn relayed_tokens(&self) -> u64 {
        self.relayed.tokens()
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: (),
            finish_reason,
        };
        self.write_chunk(std::slice::from_ref(&choice), None, out);
    }

    fn write_chunk(&self, choices: &[ChunkChoice<'_>], usage: Option<Value>, out: &mut Vec<u8>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        let data = serde_json::to_string(&chunk).expect("serialize JSON value");
        encode_event(None, &data, out);
    }

    /// The normal end: the finish chunk if no `message_delta` gave one, the usage chunk
    /// when asked for, `[DONE]`.
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.finish_reason.is_none() {
            self.finish_reason = Some("stop");
            self.chunk(json!({}), Some("stop"), out);
        }
        if self.include_usage {
            let usage = openai_usage_json(self.usage.to_usage());
            self.write_chunk(&[], Some(usage), out);
        }
        self.done(out);
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        encode_event(None, "[DONE]", out);
        self.ended = true;
    }

    /// Ends the stream with the provider's error event `data`, mapped.
    fn fail(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let secrets: Vec<&str> = self.secrets.iter().map(|s| s.expose()).collect();
        let error = stream_error(data, &secrets);
        encode_event(None, &error.body(Dialect::OpenAi), out);
        self.error = Some(error);
        self.done(out);
    }
}

/// The content block open in the Anthropic stream being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(u64),
    Tool(u64),
}

impl OpenBlock {
    fn index(self) -> u64 {
        match self {
            OpenBlock::Text(index) | OpenBlock::Tool(index) => index,
        }
    }
}

/// OpenAI chat completion chunks → Anthropic Messages stream events. The upstream request
/// asked for usage (`stream_options.include_usage`), so the usage arrives in the last chunk
/// before `[DONE]`: `message_start` reports zero input tokens and the real counts (input,
/// cache read, output) go in `message_delta`'s usage, as current API versions do.
#[derive(Debug)]
pub struct StreamFromOpenAi {
    id: String,
    model: String,
    started: bool,
    open: Option<OpenBlock>,
    next_block: u64,
    /// (OpenAI `tool_calls` index, Anthropic block index) of each tool call so far.
    tool_blocks: Vec<(u64, u64)>,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
    /// `message_stop` (or a terminal error) was written: nothing more goes out.
    ended: bool,
}

impl StreamFromOpenAi {
    /// A translator answering as `model` with message id `id` (an Anthropic-style `msg_...`
    /// id chosen by the caller).
    pub fn new(model: &str, id: &str) -> Self {
        StreamFromOpenAi {
            id: id.to_string(),
            model: model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            stop_reason: None,
            usage: None,
            ended: false,
        }
    }

    /// Appends the Anthropic events for one upstream chunk. `[DONE]` ends the message; an
    /// `{"error": ..}` chunk becomes an Anthropic `error` event and ends the stream;
    /// comments and chunks that are not JSON give nothing.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended || !event.has_data {
            return;
        }
        if event.is_done() {
            self.close(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if chunk.get("error").is_some_and(Value::is_object) {
            let body = error_from_openai(500, event.data.as_bytes());
            encode_event(Some("error"), &String::from_utf8_lossy(&body), out);
            self.ended = true;
            return;
        }
        self.start(out);
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(choice) = choice {
            let delta = &choice["delta"];
            for field in ["content", "refusal"] {
                if let Some(text) = str_of(delta, field).filter(|t| !t.is_empty()) {
                    self.text(text, out);
                }
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                self.tool_call(call, out);
            }
            if let Some(finish_reason) = str_of(choice, "finish_reason") {
                self.stop_reason = Some(stop_reason_for(finish_reason));
                self.close_block(out);
            }
        }
        if let Some(usage) = chunk.get("usage").and_then(read_openai_usage) {
            self.usage = Some(usage);
            if self.stop_reason.is_some() {
                self.close(out);
            }
        }
    }

    /// Ends the stream if the upstream did not: after a finish reason, as `[DONE]` would
    /// have; before one, with an `api_error` error event.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.stop_reason.is_some() {
            self.close(out);
            return;
        }
        let error = json!({"type": "error", "error": {"type": "api_error", "message": CUT_SHORT}});
        encode_event(Some("error"), &error.to_string(), out);
        self.ended = true;
    }

    /// The usage of the stream, once a chunk carried it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Ends the stream with the provider's mid-stream `error`, as an Anthropic `error` event
    /// of the type the gateway maps it to (the same as for a whole error answer).
    pub fn fail(&mut self, error: &ProviderError, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        encode_event(Some("error"), &error.body(Dialect::Anthropic), out);
        self.ended = true;
    }

    fn emit(&self, data: &Value, out: &mut Vec<u8>) {
        let kind = str_of(data, "type");
        encode_event(kind, &data.to_string(), out);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let start = json!({"type": "message_start", "message": {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }});
        self.emit(&start, out);
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<u8>) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        let start = json!({"type": "content_block_start", "index": index, "content_block": block});
        self.emit(&start, out);
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(open) = self.open.take() {
            self.emit(
                &json!({"type": "content_block_stop", "index": open.index()}),
                out,
            );
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(OpenBlock::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(OpenBlock::Text(index));
                index
            }
        };
        let delta = json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": text}});
        self.emit(&delta, out);
    }

    /// A `tool_calls[i]` delta: the first one for an index opens a `tool_use` block (an id
    /// is made up if the upstream sent none), argument fragments become `input_json_delta`s
    /// of that call's block.
    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let call_index = index_of(call);
        let function = &call["function"];
        let known = self.tool_blocks.iter().find(|(c, _)| *c == call_index);
        let block = match known {
            Some(&(_, block)) => block,
            None => {
                let id = str_of(call, "id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("toolu_{}_{call_index}", self.id));
                let name = str_of(function, "name").unwrap_or_default();
                let start = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let block = self.open_block(start, out);
                self.open = Some(OpenBlock::Tool(block));
                self.tool_blocks.push((call_index, block));
                block
            }
        };
        if let Some(arguments) = str_of(function, "arguments").filter(|a| !a.is_empty()) {
            let delta = json!({"type": "content_block_delta", "index": block,
                               "delta": {"type": "input_json_delta", "partial_json": arguments}});
            self.emit(&delta, out);
        }
    }

    /// The normal end: the open block closed, `message_delta` with the stop reason and
    /// usage, `message_stop`.
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        self.close_block(out);
        let usage = AnthropicUsage::from_usage(self.usage.unwrap_or_default()).to_json();
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": usage});
        self.emit(&delta, out);
        self.emit(&json!({"type": "message_stop"}), out);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::sse::SseParser;

    fn events_of(stream: &[u8]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 20);
        parser.push(stream).unwrap();
        let mut events = Vec::new();
        while let Some(event) = parser.next_event() {
            events.push(event);
        }
        assert!(parser.finish().is_empty(), "only complete events");
        events
    }

    /// (event name, data) of each event with data; `[DONE]` as the string "[DONE]".
    fn decoded(out: &[u8]) -> Vec<(Option<String>, Value)> {
        events_of(out)
            .into_iter()
            .filter(|e| e.has_data)
            .map(|e| {
                let data = if e.is_done() {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(&e.data).unwrap()
                };
                (e.event, data)
            })
            .collect()
    }

    /// Feeds `stream` event by event, checking each call appends only complete events.
    fn to_openai(stream: &str, include_usage: bool, finish: bool) -> (StreamToOpenAi, Vec<Value>) {
        let mut translator = StreamToOpenAi::new("my-claude", 1_700_000_000, include_usage);
        let mut out = Vec::new();
        for event in events_of(stream.as_bytes()) {
            let mut piece = Vec::new();
            translator.on_event(&event, &mut piece);
            events_of(&piece);
            out.extend(piece);
        }
        if finish {
            translator.finish(&mut out);
        }
        let chunks = decoded(&out).into_iter().map(|(name, data)| {
            assert_eq!(name, None, "OpenAI chunks are unnamed events");
            data
        });
        (translator, chunks.collect())
    }

    /// A text reply, split into events as the Messages API sends it ("Streaming Messages",
    /// basic streaming request).
    const ANTHROPIC_TEXT: &str = "event: message_start\n\
data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-sonnet-4-5\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1, \"cache_read_input_tokens\": 5, \"cache_creation_input_tokens\": 0}}}\n\n\
event: content_block_start\n\
data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n\
event: content_block_stop\n\
data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n\
event: message_delta\n\
data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n\
event: message_stop\n\
data: {\"type\": \"message_stop\"}\n\n";

    /// Text, then a tool call whose input arrives as `input_json_delta` fragments
    /// ("Streaming Messages", streaming request with tool use), with a thinking block first.
    const ANTHROPIC_TOOL: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"The user wants weather.\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check.\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":2}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":3}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    fn delta(chunk: &Value) -> &Value {
        &chunk["choices"][0]["delta"]
    }

    #[test]
    fn anthropic_text_stream_becomes_role_content_finish_usage_and_done() {
        let (translator, chunks) = to_openai(ANTHROPIC_TEXT, true, false);
        assert_eq!(chunks.len(), 6, "{chunks:?}");
        assert_eq!(
            *delta(&chunks[0]),
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(delta(&chunks[1])["content"], "Hello");
        assert_eq!(delta(&chunks[2])["content"], "!");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(
            chunks[4]["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45,
                   "prompt_tokens_details": {"cached_tokens": 5}})
        );
        assert_eq!(chunks[5], "[DONE]");
        for chunk in &chunks[..5] {
            assert_eq!(
                chunk["id"],
                "chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
            );
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "my-claude");
            assert_eq!(chunk["created"], 1_700_000_000);
        }
        assert_eq!(
            translator.usage(),
            Some(Usage {
                prompt_tokens: 30,
                completion_tokens: 15,
                cached_tokens: 5
            })
        );
    }

    #[test]
    fn anthropic_stream_without_include_usage_has_no_usage_chunk() {
        let (translator, chunks) = to_openai(ANTHROPIC_TEXT, false, false);
        assert_eq!(chunks.len(), 5);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        assert_eq!(chunks[4], "[DONE]");
        assert_eq!(translator.usage().map(|u| u.completion_tokens), Some(15));
    }

    #[test]
    fn anthropic_tool_stream_becomes_text_then_indexed_tool_call_deltas() {
        let (translator, chunks) = to_openai(ANTHROPIC_TOOL, false, false);
        let deltas: Vec<&Value> = chunks[..chunks.len() - 2].iter().map(delta).collect();
        assert_eq!(
            deltas,
            [
                &json!({"role": "assistant", "content": ""}),
                &json!({"content": "Okay, let's check."}),
                &json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
                &json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}),
                &json!({"tool_calls": [{"index": 1, "id": "toolu_02",
                    "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
                &json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            ]
        );
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(chunks[chunks.len() - 1], "[DONE]");
        assert_eq!(
            translator.usage(),
            Some(Usage {
                prompt_tokens: 472,
                completion_tokens: 89,
                cached_tokens: 0
            })
        );
    }

    #[test]
    fn message_delta_input_counts_override_message_start() {
        let stream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":849,\"cache_read_input_tokens\":100,\"output_tokens\":47}}\n\n";
        let (translator, chunks) = to_openai(stream, false, false);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(
            translator.usage(),
            Some(Usage {
                prompt_tokens: 949,
                completion_tokens: 47,
                cached_tokens: 100
            })
        );
    }

    #[test]
    fn anthropic_error_event_becomes_an_openai_error_and_ends_the_stream() {
        let stream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: error\n\
data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";
        let (_, chunks) = to_openai(stream, true, true);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[1],
            json!({"error": {"message": "Overloaded", "type": "upstream_error", "code": "overloaded_error"}})
        );
        assert_eq!(chunks[2], "[DONE]");
    }

    const KEY: &str = "prv7Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";

    fn keyed(include_usage: bool) -> StreamToOpenAi {
        let mut translator = StreamToOpenAi::new("my-claude", 1_700_000_000, include_usage);
        translator.set_secrets(vec![Arc::new(Secret::new(KEY))]);
        translator
    }

    #[test]
    fn anthropic_error_event_is_scrubbed_of_the_configured_key_and_kept_for_the_caller() {
        let stream = format!(
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"rate_limit_error\",\"message\":\"slow down, {KEY}\"}}}}\n\n"
        );
        let mut translator = keyed(false);
        let mut out = Vec::new();
        for event in events_of(stream.as_bytes()) {
            translator.on_event(&event, &mut out);
        }
        let chunks = decoded(&out);
        assert_eq!(
            chunks[0].1,
            json!({"error": {"message": "slow down, [redacted]", "type": "rate_limit_error",
                             "code": "rate_limit_error"}})
        );
        assert_eq!(chunks[1].1, "[DONE]");
        let error = translator.take_error().expect("the error is kept");
        assert_eq!(
            error.kind,
            crate::ai::provider_error::ProviderErrorKind::RateLimited
        );
        assert_eq!(translator.take_error(), None);
    }

    #[test]
    fn error_event_whose_data_is_not_json_is_still_mapped() {
        let stream = format!("event: error\ndata: broken {KEY}\n\n");
        let mut translator = keyed(false);
        let mut out = Vec::new();
        for event in events_of(stream.as_bytes()) {
            translator.on_event(&event, &mut out);
        }
        assert!(!String::from_utf8_lossy(&out).contains(&KEY[..8]));
        let chunks = decoded(&out);
        assert_eq!(chunks[0].1["error"]["type"], "upstream_error");
        assert_eq!(
            chunks[0].1["error"]["message"],
            "the provider answered with status 500"
        );
        assert_eq!(chunks[1].1, "[DONE]");
    }

    #[test]
    fn anthropic_stream_cut_short_ends_with_an_error_then_done() {
        let cut = &ANTHROPIC_TEXT[..ANTHROPIC_TEXT.find("event: content_block_stop").unwrap()];
        let (translator, chunks) = to_openai(cut, true, true);
        let n = chunks.len();
        assert_eq!(chunks[n - 2]["error"]["type"], "upstream_error");
        assert_eq!(chunks[n - 1], "[DONE]");
        assert_eq!(translator.usage().map(|u| u.prompt_tokens), Some(30));
    }

    #[test]
    fn anthropic_stream_reaches_its_end_only_with_the_message_delta_usage() {
        let (whole, _) = to_openai(ANTHROPIC_TEXT, false, false);
        assert!(whole.reached_end());
        let cut = &ANTHROPIC_TEXT[..ANTHROPIC_TEXT.find("event: message_delta").unwrap()];
        let (translator, _) = to_openai(cut, false, false);
        assert!(!translator.reached_end());
        // The partial usage of `message_start` is there, but it is not the final one.
        assert_eq!(translator.usage().map(|u| u.completion_tokens), Some(1));
    }

    #[test]
    fn anthropic_stream_ended_by_an_error_event_did_not_reach_its_end() {
        let stream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: error\n\
data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let (translator, _) = to_openai(stream, false, true);
        assert!(!translator.reached_end());
    }

    #[test]
    fn relayed_tokens_count_the_text_deltas_seen() {
        // "Hello" and "!" are 6 bytes: 2 tokens at 4 bytes per token.
        let cut = &ANTHROPIC_TEXT[..ANTHROPIC_TEXT.find("event: content_block_stop").unwrap()];
        let (translator, _) = to_openai(cut, false, false);
        assert_eq!(translator.relayed_tokens(), 2);
        let mut bpe = StreamToOpenAi::new("my-claude", 1, false);
        bpe.set_token_counter(TokenCounter::O200kBase);
        for event in events_of(cut.as_bytes()) {
            bpe.on_event(&event, &mut Vec::new());
        }
        assert_eq!(
            bpe.relayed_tokens(),
            TokenCounter::O200kBase.count("Hello!")
        );
    }

    #[test]
    fn relayed_tokens_count_tool_names_and_input_json() {
        let (translator, _) = to_openai(ANTHROPIC_TOOL, false, false);
        // Tool input and names are completion tokens too: more than the text alone.
        let text_only = "Okay, let's check.".len() as u64;
        assert!(
            translator.relayed_tokens() > text_only.div_ceil(4),
            "{}",
            translator.relayed_tokens()
        );
    }

    #[test]
    fn anthropic_stream_missing_only_message_stop_is_closed_normally() {
        let cut = &ANTHROPIC_TEXT[..ANTHROPIC_TEXT.find("event: message_stop").unwrap()];
        let (_, chunks) = to_openai(cut, true, true);
        let n = chunks.len();
        assert_eq!(chunks[n - 3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[n - 2]["usage"]["completion_tokens"], 15);
        assert_eq!(chunks[n - 1], "[DONE]");
    }

    #[test]
    fn finish_after_a_complete_anthropic_stream_adds_nothing() {
        let (_, with_finish) = to_openai(ANTHROPIC_TEXT, true, true);
        let (_, without) = to_openai(ANTHROPIC_TEXT, true, false);
        assert_eq!(with_finish, without);
    }

    #[test]
    fn unknown_events_comments_and_bad_json_are_ignored() {
        let stream =
            ": comment\n\nevent: brand_new\ndata: {\"type\":\"brand_new\"}\n\ndata: not json\n\n";
        let (translator, chunks) = to_openai(stream, true, false);
        assert!(chunks.is_empty());
        assert_eq!(translator.usage(), None);
    }

    /// Feeds OpenAI `stream` event by event, checking each call appends only complete events.
    fn from_openai(stream: &str, finish: bool) -> (StreamFromOpenAi, Vec<(String, Value)>) {
        let mut translator = StreamFromOpenAi::new("my-gpt", "msg_gw_1");
        let mut out = Vec::new();
        for event in events_of(stream.as_bytes()) {
            let mut piece = Vec::new();
            translator.on_event(&event, &mut piece);
            events_of(&piece);
            out.extend(piece);
        }
        if finish {
            translator.finish(&mut out);
        }
        let events = decoded(&out).into_iter().map(|(name, data)| {
            let name = name.expect("Anthropic events are named");
            assert_eq!(data["type"], name.as_str(), "event name matches data type");
            (name, data)
        });
        (translator, events.collect())
    }

    fn names(events: &[(String, Value)]) -> Vec<&str> {
        events.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// A text reply as OpenAI streams it with `include_usage`.
    const OPENAI_TEXT: &str = "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2,\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
data: [DONE]\n\n";

    /// Text, then two tool calls as OpenAI streams them: id and name first, then argument
    /// fragments, each call by its `index`.
    const OPENAI_TOOLS: &str = "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Checking.\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"city\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":30,\"total_tokens\":110}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn openai_text_stream_becomes_message_events_with_usage() {
        let (translator, events) = from_openai(OPENAI_TEXT, false);
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            events[0].1,
            json!({"type": "message_start", "message": {"id": "msg_gw_1", "type": "message",
                "role": "assistant", "model": "my-gpt", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}})
        );
        assert_eq!(
            events[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            events[2].1["delta"],
            json!({"type": "text_delta", "text": "Hello"})
        );
        assert_eq!(events[3].1["delta"]["text"], " there");
        assert_eq!(
            events[4].1,
            json!({"type": "content_block_stop", "index": 0})
        );
        assert_eq!(
            events[5].1,
            json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"input_tokens": 15, "output_tokens": 2,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}})
        );
        assert_eq!(
            translator.usage(),
            Some(Usage {
                prompt_tokens: 19,
                completion_tokens: 2,
                cached_tokens: 4
            })
        );
    }

    #[test]
    fn openai_tool_call_stream_becomes_tool_use_blocks_with_input_json_deltas() {
        let (_, events) = from_openai(OPENAI_TOOLS, false);
        let datas: Vec<&Value> = events.iter().map(|(_, data)| data).collect();
        assert_eq!(
            datas[1..12],
            [
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
                &json!({"type": "content_block_stop", "index": 0}),
                &json!({"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "input": {}}}),
                &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\""}}),
                &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "city\":\"Paris\"}"}}),
                &json!({"type": "content_block_stop", "index": 1}),
                &json!({"type": "content_block_start", "index": 2, "content_block": {
                    "type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}}),
                &json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
                &json!({"type": "content_block_stop", "index": 2}),
                &json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"input_tokens": 80, "output_tokens": 30,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
            ]
        );
        assert_eq!(names(&events).last(), Some(&"message_stop"));
        assert_eq!(events.len(), 13);
    }

    #[test]
    fn openai_length_finish_becomes_max_tokens() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let (_, events) = from_openai(stream, true);
        let delta = events
            .iter()
            .find(|(name, _)| name == "message_delta")
            .unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], "max_tokens");
        assert_eq!(names(&events).last(), Some(&"message_stop"));
    }

    #[test]
    fn openai_error_chunk_becomes_an_error_event_and_ends_the_stream() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n\
data: [DONE]\n\n";
        let (_, events) = from_openai(stream, true);
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "error");
        assert_eq!(
            *data,
            json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error"}})
        );
        assert!(!names(&events).contains(&"message_stop"));
    }

    #[test]
    fn fail_ends_the_stream_with_the_mapped_anthropic_error() {
        let (mut translator, _) = from_openai(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            false,
        );
        let error = super::super::error::stream_error(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            &[],
        );
        let mut out = Vec::new();
        translator.fail(&error, &mut out);
        // Ended: neither more chunks nor `finish` add anything.
        for event in
            events_of(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n")
        {
            translator.on_event(&event, &mut out);
        }
        translator.finish(&mut out);
        let events: Vec<SseEvent> = events_of(&out);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.as_deref(), Some("error"));
        assert_eq!(
            serde_json::from_str::<Value>(&events[0].data).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
    }

    #[test]
    fn openai_stream_cut_short_ends_with_an_error_event() {
        let cut = &OPENAI_TEXT[..OPENAI_TEXT.find("{},").unwrap() - 70];
        let cut = &cut[..cut.rfind("\n\n").unwrap() + 2];
        let (_, events) = from_openai(cut, true);
        assert_eq!(names(&events).last(), Some(&"error"));
        assert_eq!(events.last().unwrap().1["error"]["type"], "api_error");
    }

    #[test]
    fn openai_stream_without_done_after_usage_is_already_complete() {
        let without_done = OPENAI_TEXT.trim_end_matches("data: [DONE]\n\n");
        let (_, complete) = from_openai(OPENAI_TEXT, true);
        let (translator, events) = from_openai(without_done, true);
        assert_eq!(events, complete);
        assert_eq!(translator.usage().map(|u| u.prompt_tokens), Some(19));
    }

    #[test]
    fn openai_stream_ending_after_finish_reason_without_usage_closes_normally() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\n";
        let (translator, events) = from_openai(stream, true);
        assert_eq!(names(&events).last(), Some(&"message_stop"));
        assert_eq!(translator.usage(), None);
    }

    #[test]
    fn tool_call_without_id_gets_one_made_up() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\ndata: [DONE]\n\n";
        let (_, events) = from_openai(stream, false);
        assert_eq!(events[1].1["content_block"]["id"], "toolu_msg_gw_1_0");
    }

    #[test]
    fn streams_round_trip_text_and_tool_calls() {
        let (_, anthropic_events) = from_openai(OPENAI_TOOLS, false);
        let mut anthropic = Vec::new();
        for (name, data) in &anthropic_events {
            encode_event(Some(name), &data.to_string(), &mut anthropic);
        }
        let (translator, chunks) = to_openai(std::str::from_utf8(&anthropic).unwrap(), true, false);
        let mut text = String::new();
        let mut arguments = vec![String::new(); 2];
        for chunk in &chunks[..chunks.len() - 1] {
            let delta = delta(chunk);
            text.push_str(delta["content"].as_str().unwrap_or_default());
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap() as usize;
                let fragment = call["function"]["arguments"].as_str().unwrap_or_default();
                arguments[index].push_str(fragment);
            }
        }
        assert_eq!(text, "Checking.");
        assert_eq!(arguments, ["{\"city\":\"Paris\"}", "{}"]);
        assert_eq!(
            translator.usage(),
            Some(Usage {
                prompt_tokens: 80,
                completion_tokens: 30,
                cached_tokens: 0
            })
        );
    }
}

//! Canonical chat completion chunks → the Responses event stream, one chunk at a time.
//!
//! The sequence is the API's: `response.created`, `response.in_progress`, then per output
//! item `response.output_item.added`; a message's text as `response.content_part.added`,
//! `response.output_text.delta`..., and a function call's arguments as
//! `response.function_call_arguments.delta`...; when the answer ends each item is closed
//! (`response.output_text.done`, `response.content_part.done` /
//! `response.function_call_arguments.done`, then `response.output_item.done`) and
//! `response.completed` (or `response.incomplete`) carries the whole Response with its usage.
//! Every event has `event:` and `data:` lines and a `sequence_number` counting from 0.
//!
//! Items stay open until the answer ends, so a tool call's arguments may arrive in any
//! order of chunks and each item's `done` events hold its whole content.

use serde_json::{json, Value};

use super::{
    function_call_item, message_item, output_text_part, read_chat_usage, response_object,
    usage_object, Echo, Naming, Status,
};
use crate::ai::provider_error::ProviderError;
use crate::ai::providers::{ClientStage, EventStage};
use crate::ai::{encode_event, SseEvent, Usage};

/// What a stream that ended before its answer was complete says (in `response.failed`).
const CUT_SHORT: &str = "the provider's stream ended before the answer was complete";

/// One output item being streamed.
#[derive(Debug)]
enum Item {
    Message {
        text: String,
    },
    Call {
        /// The chat stream's `tool_calls` index.
        index: u64,
        item_id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The client-side stage from canonical chunks to Responses events.
#[derive(Debug)]
pub struct ResponsesStream {
    model: String,
    request_id: String,
    created_at: i64,
    echo: Echo,
    next_sequence: u64,
    started: bool,
    /// `response.completed` (or a terminal error) was written: nothing more goes out.
    ended: bool,
    items: Vec<Item>,
    finish_reason: Option<String>,
    usage: Option<(Usage, u64)>,
}

impl ResponsesStream {
    /// A stage answering as `naming` says, the Response repeating `echo`.
    pub fn new(naming: &Naming<'_>, echo: Echo) -> ResponsesStream {
        ResponsesStream {
            model: naming.model.to_string(),
            request_id: naming.request_id.to_string(),
            created_at: naming.created_at,
            echo,
            next_sequence: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn naming(&self) -> Naming<'_> {
        Naming {
            model: &self.model,
            request_id: &self.request_id,
            created_at: self.created_at,
        }
    }

    /// Writes one event of type `data["type"]`, numbered.
    fn emit(&mut self, mut data: Value, out: &mut Vec<u8>) {
        data["sequence_number"] = self.next_sequence.into();
        self.next_sequence += 1;
        let kind = data["type"].as_str().unwrap_or_default().to_string();
        encode_event(Some(&kind), &data.to_string(), out);
    }

    fn response(&self, status: Status, output: Vec<Value>) -> Value {
        let usage = self
            .usage
            .map(|(usage, reasoning)| usage_object(&usage, reasoning));
        response_object(&self.naming(), &self.echo, status, output, usage)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.response(Status::IN_PROGRESS, Vec::new());
        self.emit(
            json!({"type": "response.created", "response": response}),
            out,
        );
        self.emit(
            json!({"type": "response.in_progress", "response": response}),
            out,
        );
    }

    /// Appends one canonical chunk's events. `[DONE]` ends the response; comments and
    /// chunks that are not JSON give nothing.
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended || !event.has_data {
            return;
        }
        if event.is_done() {
            self.complete(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        self.start(out);
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(choice) = choice {
            let delta = &choice["delta"];
            for field in ["content", "refusal"] {
                if let Some(text) = delta.get(field).and_then(Value::as_str) {
                    if !text.is_empty() {
                        self.text(text, out);
                    }
                }
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                self.tool_call(call, out);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
            }
        }
        if let Some(usage) = chunk.get("usage").and_then(read_chat_usage) {
            self.usage = Some(usage);
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let position = self
            .items
            .iter()
            .position(|i| matches!(i, Item::Message { .. }));
        let output_index = match position {
            Some(at) => at,
            None => {
                let item_id = self.naming().message_id();
                let output_index = self.items.len();
                self.items.push(Item::Message {
                    text: String::new(),
                });
                let item = message_item(&item_id, Vec::new(), "in_progress");
                self.emit(
                    json!({"type": "response.output_item.added", "output_index": output_index,
                           "item": item}),
                    out,
                );
                self.emit(
                    json!({"type": "response.content_part.added", "item_id": item_id,
                           "output_index": output_index, "content_index": 0,
                           "part": output_text_part("")}),
                    out,
                );
                output_index
            }
        };
        if let Some(Item::Message { text: all }) = self.items.get_mut(output_index) {
            all.push_str(text);
        }
        let item_id = self.naming().message_id();
        self.emit(
            json!({"type": "response.output_text.delta", "item_id": item_id,
                   "output_index": output_index, "content_index": 0, "delta": text,
                   "logprobs": []}),
            out,
        );
    }

    /// A `tool_calls[i]` delta: the first one for an index adds a function call item (a
    /// call id is made up if the upstream sent none), argument fragments become
    /// `response.function_call_arguments.delta` events of that item.
    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = &call["function"];
        let known = self
            .items
            .iter()
            .position(|i| matches!(i, Item::Call { index: at, .. } if *at == index));
        let output_index = match known {
            Some(at) => at,
            None => {
                let calls = self
                    .items
                    .iter()
                    .filter(|i| matches!(i, Item::Call { .. }))
                    .count();
                let item_id = self.naming().call_item_id(calls);
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("call_{}_{calls}", self.request_id));
                let name = function
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let item = function_call_item(&item_id, &call_id, &name, "", "in_progress");
                let output_index = self.items.len();
                self.items.push(Item::Call {
                    index,
                    item_id,
                    call_id,
                    name,
                    arguments: String::new(),
                });
                self.emit(
                    json!({"type": "response.output_item.added", "output_index": output_index,
                           "item": item}),
                    out,
                );
                output_index
            }
        };
        let Some(fragment) = function.get("arguments").and_then(Value::as_str) else {
            return;
        };
        if fragment.is_empty() {
            return;
        }
        let Some(Item::Call {
            item_id, arguments, ..
        }) = self.items.get_mut(output_index)
        else {
            return;
        };
        arguments.push_str(fragment);
        let item_id = item_id.clone();
        self.emit(
            json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                   "output_index": output_index, "delta": fragment}),
            out,
        );
    }

    /// The normal end: every item closed, then `response.completed` (or
    /// `response.incomplete`) with the whole Response.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        let items = std::mem::take(&mut self.items);
        let mut output = Vec::with_capacity(items.len());
        for (output_index, item) in items.iter().enumerate() {
            let done = match item {
                Item::Message { text } => {
                    let item_id = self.naming().message_id();
                    let part = output_text_part(text);
                    self.emit(
                        json!({"type": "response.output_text.done", "item_id": item_id,
                               "output_index": output_index, "content_index": 0,
                               "text": text, "logprobs": []}),
                        out,
                    );
                    self.emit(
                        json!({"type": "response.content_part.done", "item_id": item_id,
                               "output_index": output_index, "content_index": 0,
                               "part": part}),
                        out,
                    );
                    message_item(&item_id, vec![part], "completed")
                }
                Item::Call {
                    item_id,
                    call_id,
                    name,
                    arguments,
                    ..
                } => {
                    self.emit(
                        json!({"type": "response.function_call_arguments.done",
                               "item_id": item_id, "output_index": output_index,
                               "arguments": arguments}),
                        out,
                    );
                    function_call_item(item_id, call_id, name, arguments, "completed")
                }
            };
            self.emit(
                json!({"type": "response.output_item.done", "output_index": output_index,
                       "item": done}),
                out,
            );
            output.push(done);
        }
        self.items = items;
        let status = Status::of_finish(self.finish_reason.as_deref());
        let kind = match status.status {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        let response = self.response(status, output);
        self.emit(json!({"type": kind, "response": response}), out);
        self.ended = true;
    }

    /// Ends the stream if the upstream did not: after a finish reason, as `[DONE]` would
    /// have; before one, with `response.failed`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
            return;
        }
        self.start(out);
        let mut response = self.response(Status::FAILED, Vec::new());
        response["error"] = json!({"code": "server_error", "message": CUT_SHORT});
        self.emit(
            json!({"type": "response.failed", "response": response}),
            out,
        );
        self.ended = true;
    }

    /// Ends the stream with the provider's mid-stream `error` as an `error` event: the
    /// gateway's code and (scrubbed) message, as a whole error answer would carry them.
    pub fn fail(&mut self, error: &ProviderError, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let code = match error.code.as_str() {
            "" => error.openai_type(),
            code => code,
        };
        self.emit(
            json!({"type": "error", "code": code, "message": error.message, "param": null}),
            out,
        );
        self.ended = true;
    }

    /// The usage of the stream, once a chunk carried it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|(usage, _)| usage)
    }
}

impl EventStage for ResponsesStream {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        ResponsesStream::on_event(self, event, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        ResponsesStream::finish(self, out)
    }
    fn usage(&self) -> Option<Usage> {
        ResponsesStream::usage(self)
    }
}

impl ClientStage for ResponsesStream {
    fn fail(&mut self, error: &ProviderError, out: &mut Vec<u8>) {
        ResponsesStream::fail(self, error, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::responses::parse_request;
    use crate::ai::SseParser;

    fn stage() -> ResponsesStream {
        let naming = Naming {
            model: "client-model",
            request_id: "r1",
            created_at: 1_700_000_000,
        };
        let echo = parse_request(br#"{"model":"m","input":"hi","stream":true}"#)
            .unwrap()
            .echo;
        ResponsesStream::new(&naming, echo)
    }

    /// Runs canonical `chunks` (JSON values, then `[DONE]` when `done`) through a stage and
    /// returns the `(event name, data)` of every event it wrote.
    fn run(stage: &mut ResponsesStream, chunks: &[Value], done: bool) -> Vec<(String, Value)> {
        let mut input = String::new();
        for chunk in chunks {
            input.push_str(&format!("data: {chunk}\n\n"));
        }
        if done {
            input.push_str("data: [DONE]\n\n");
        }
        let mut parser = SseParser::new(1 << 20);
        parser.push(input.as_bytes()).unwrap();
        let mut out = Vec::new();
        while let Some(event) = parser.next_event() {
            stage.on_event(&event, &mut out);
        }
        stage.finish(&mut out);
        let mut parser = SseParser::new(1 << 20);
        parser.push(&out).unwrap();
        std::iter::from_fn(|| parser.next_event())
            .map(|e| {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!(
                    e.event.as_deref(),
                    data["type"].as_str(),
                    "event: names the type"
                );
                (e.event.unwrap(), data)
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "c", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn usage_chunk() -> Value {
        json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4,
               "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 3}}})
    }

    fn names(events: &[(String, Value)]) -> Vec<&str> {
        events.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn text_stream_is_the_responses_event_sequence_numbered_from_zero() {
        let events = run(
            &mut stage(),
            &[
                chunk(json!({"role": "assistant", "content": "Hel"}), Value::Null),
                chunk(json!({"content": "lo"}), Value::Null),
                chunk(json!({}), json!("stop")),
                usage_chunk(),
            ],
            true,
        );
        assert_eq!(
            names(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (n, (_, data)) in events.iter().enumerate() {
            assert_eq!(data["sequence_number"], n as u64);
        }
        assert_eq!(events[6].1["text"], "Hello");
        let response = &events[9].1["response"];
        assert_eq!(response["status"], "completed");
        assert_eq!(response["model"], "client-model");
        assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(
            response["usage"],
            json!({"input_tokens": 9, "input_tokens_details": {"cached_tokens": 3},
                   "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": 13})
        );
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        assert_eq!(events[0].1["response"]["usage"], Value::Null);
    }

    #[test]
    fn tool_call_deltas_become_a_function_call_item_with_its_whole_arguments() {
        let call = |v: Value| chunk(json!({"tool_calls": [v]}), Value::Null);
        let events = run(
            &mut stage(),
            &[
                call(json!({"index": 0, "id": "call_9", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}})),
                call(json!({"index": 0, "function": {"arguments": "{\"city\""}})),
                call(json!({"index": 0, "function": {"arguments": ":\"Paris\"}"}})),
                chunk(json!({}), json!("tool_calls")),
                usage_chunk(),
            ],
            true,
        );
        assert_eq!(
            names(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[2].1["item"]["call_id"], "call_9");
        assert_eq!(events[2].1["item"]["name"], "get_weather");
        assert_eq!(events[5].1["arguments"], "{\"city\":\"Paris\"}");
        let item = &events[7].1["response"]["output"][0];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(item["status"], "completed");
    }

    #[test]
    fn a_stream_cut_before_its_finish_reason_ends_with_response_failed() {
        let events = run(
            &mut stage(),
            &[chunk(json!({"content": "Hel"}), Value::Null)],
            false,
        );
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert!(!names(&events).contains(&"response.completed"));
    }

    #[test]
    fn an_answer_cut_by_the_token_limit_ends_with_response_incomplete() {
        let events = run(
            &mut stage(),
            &[chunk(json!({"content": "Once upon"}), json!("length"))],
            true,
        );
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }
}

//! A fake Anthropic API in the test process, speaking the real wire format of
//! the Messages API (Anthropic API reference: "Messages", "Streaming
//! Messages", "Errors"), so the gateway's translators and meters see exactly
//! what the real provider would send.
//!
//! - `POST /v1/messages` needs `x-api-key` (401 `authentication_error`
//!   without it, or when it differs from a key set with
//!   [`FakeAnthropic::require_key`]) and `anthropic-version` (400
//!   `invalid_request_error` without it, as the real API answers), and a
//!   body with `model`, `max_tokens` and `messages` (400 otherwise).
//! - `POST /v1/messages/count_tokens` needs the same headers and `model` and
//!   `messages`; it answers `{"input_tokens": N}`, N the input tokens set.
//! - A whole answer is a `message` object; a streamed one (`"stream": true`)
//!   is the event sequence `message_start`, `content_block_start`, `ping`,
//!   `content_block_delta`..., `content_block_stop`, `message_delta`,
//!   `message_stop`, each as `event: NAME` + `data: JSON`, one per HTTP chunk.
//! - Usage is `{input_tokens, cache_creation_input_tokens,
//!   cache_read_input_tokens, output_tokens}`; `input_tokens` excludes cache
//!   reads, as Anthropic counts them.
//! - Errors are `{"type":"error","error":{"type":..,"message":..}}`.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake_openai::reply_pieces;
use super::fake_server::{
    echo_failure_headers, send_event_stream, send_event_stream_ending, send_json, Conn, Failure,
    FakeServer, KeyEcho, MidStreamError, RecordedRequest, StreamEnd,
};

/// The assistant text answered until a test sets its own.
pub const DEFAULT_REPLY: &str = "Hello from the fake Anthropic server.";

/// The `anthropic-version` the fake accepts (any non-empty value is accepted;
/// this is the one the gateway is expected to send).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Token counts the fake reports as `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnthropicUsage {
    /// `input_tokens`: uncached prompt tokens.
    pub input: u64,
    /// `output_tokens`.
    pub output: u64,
    /// `cache_read_input_tokens`.
    pub cache_read: u64,
}

/// A `tool_use` block the fake answers with instead of text.
#[derive(Debug, Clone)]
struct ToolCall {
    name: String,
    /// The tool input as JSON text (an object).
    input_json: String,
}

/// What one request is answered with, read before the request is recorded:
/// the answer, a queued failure and the key the fake requires.
type Planned = (Answer, Option<Failure>, Option<String>);

struct Behaviour {
    usage: AnthropicUsage,
    reply: String,
    stream_delay: Duration,
    stream_end: StreamEnd,
    tool_call: Option<ToolCall>,
    failures: VecDeque<Failure>,
    required_key: Option<String>,
    /// Sent in the next streamed answer, then cleared.
    stream_error: Option<MidStreamError>,
}

/// A running fake Anthropic server; stops on drop. Dereferences to its
/// [`FakeServer`] for `requests()`, `request_count()`, `last_request()`,
/// `wait_for_requests()`, `connection_count()`, `closed_count()`,
/// `cut_short_count()` and `base_url()`.
pub struct FakeAnthropic {
    server: FakeServer,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Deref for FakeAnthropic {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeAnthropic {
    /// Binds 127.0.0.1:0 and serves with the defaults: usage 10 input + 5
    /// output tokens, no cache reads, [`DEFAULT_REPLY`], no stream delay, no
    /// tool call, no failures, any non-empty key accepted.
    pub fn start() -> FakeAnthropic {
        let behaviour = Arc::new(Mutex::new(Behaviour {
            usage: AnthropicUsage {
                input: 10,
                output: 5,
                cache_read: 0,
            },
            reply: DEFAULT_REPLY.to_string(),
            stream_delay: Duration::ZERO,
            stream_end: StreamEnd::Complete,
            tool_call: None,
            failures: VecDeque::new(),
            required_key: None,
            stream_error: None,
        }));
        let shared = behaviour.clone();
        let plan = move |request: &RecordedRequest| {
            let mut b = shared.lock().unwrap();
            let failure = b.failures.pop_front();
            let mut answer = Answer::of(&b);
            answer.stream_error = b.stream_error.take().map(|e| {
                let body = error_body(&e.error_type, &e.echo.message(request));
                (
                    e.after,
                    format!("event: error\ndata: {body}\n\n").into_bytes(),
                )
            });
            (answer, failure, b.required_key.clone())
        };
        let respond = |conn: &mut Conn,
                       request: &RecordedRequest,
                       (answer, failure, required_key): Planned,
                       ordinal: usize,
                       keep_alive: bool| {
            if let Some(failure) = failure {
                let message = match failure.echo {
                    Some(echo) => echo.message(request),
                    None => "The fake was told to fail.".to_string(),
                };
                let body = error_body(&failure.name, &message);
                let mut headers = request_id(ordinal);
                if failure.echo.is_some() {
                    headers.extend(echo_failure_headers(failure.status));
                }
                return send_json(conn, failure.status, &body, keep_alive, &headers);
            }
            answer.respond(conn, request, ordinal, keep_alive, required_key.as_deref())
        };
        let server = FakeServer::start_planned(plan, respond);
        FakeAnthropic { server, behaviour }
    }

    /// What the next answers report: `input` uncached input tokens, `output`
    /// output tokens and `cache_read` prompt-cache reads.
    pub fn set_usage(&self, input: u64, output: u64, cache_read: u64) {
        self.behaviour().usage = AnthropicUsage {
            input,
            output,
            cache_read,
        };
    }

    /// The usage the next answers report.
    pub fn usage(&self) -> AnthropicUsage {
        self.behaviour().usage
    }

    /// The assistant's text; streams send it in pieces, one per word.
    pub fn set_reply(&self, text: &str) {
        self.behaviour().reply = text.to_string();
    }

    /// The pause before each event of a streamed answer after the first.
    pub fn set_stream_delay(&self, per_event: Duration) {
        self.behaviour().stream_delay = per_event;
    }

    /// How the next streamed answers end (a cut or stalled provider stream).
    pub fn set_stream_end(&self, end: StreamEnd) {
        self.behaviour().stream_end = end;
    }

    /// The next answers are one `tool_use` block calling `name` with
    /// `input_json` (a JSON object as text; streamed as `input_json_delta`
    /// pieces), with `stop_reason: "tool_use"`.
    pub fn set_tool_call(&self, name: &str, input_json: &str) {
        serde_json::from_str::<Value>(input_json).expect("tool input must be JSON");
        self.behaviour().tool_call = Some(ToolCall {
            name: name.to_string(),
            input_json: input_json.to_string(),
        });
    }

    /// Back to text answers.
    pub fn clear_tool_call(&self) {
        self.behaviour().tool_call = None;
    }

    /// Only `key` is a valid `x-api-key`; any other gets 401
    /// `authentication_error` ("invalid x-api-key").
    pub fn require_key(&self, key: &str) {
        self.behaviour().required_key = Some(key.to_string());
    }

    /// The next `n` requests answer `status` with an Anthropic error of type
    /// `error_type` (e.g. `api_error`, `overloaded_error`,
    /// `rate_limit_error`, `invalid_request_error`).
    pub fn fail_next(&self, status: u16, error_type: &str, n: usize) {
        let mut b = self.behaviour();
        for _ in 0..n {
            b.failures.push_back(Failure {
                status,
                name: error_type.to_string(),
                echo: None,
            });
        }
    }

    /// The next request's streamed answer breaks off with an `error` event of type
    /// `error_type` (as Anthropic reports `overloaded_error` mid-stream) after `after`
    /// events, its message echoing the key as `echo` says.
    pub fn error_mid_stream_next(&self, after: usize, error_type: &str, echo: KeyEcho) {
        self.behaviour().stream_error = Some(MidStreamError {
            after,
            status: 500,
            error_type: error_type.to_string(),
            echo,
        });
    }

    /// Like [`FakeAnthropic::fail_next`], with a message that repeats the request's
    /// credential as `echo` says (and `Retry-After` on a 429).
    pub fn fail_next_echoing(&self, status: u16, error_type: &str, echo: KeyEcho, n: usize) {
        let mut b = self.behaviour();
        for _ in 0..n {
            b.failures.push_back(Failure {
                status,
                name: error_type.to_string(),
                echo: Some(echo),
            });
        }
    }

    fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.behaviour.lock().unwrap()
    }
}

/// Anthropic's error object: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": error_type, "message": message } })
}

/// The `request-id` header Anthropic puts on every answer.
fn request_id(ordinal: usize) -> Vec<(&'static str, String)> {
    vec![("request-id", format!("req_fake{ordinal}"))]
}

/// The behaviour one request is answered with, copied out of the lock.
struct Answer {
    usage: AnthropicUsage,
    reply: String,
    stream_delay: Duration,
    stream_end: StreamEnd,
    tool_call: Option<ToolCall>,
    /// `(events before it, the error event)` that breaks this answer's stream off.
    stream_error: Option<(usize, Vec<u8>)>,
}

impl Answer {
    fn of(b: &Behaviour) -> Answer {
        Answer {
            usage: b.usage,
            reply: b.reply.clone(),
            stream_delay: b.stream_delay,
            stream_end: b.stream_end,
            tool_call: b.tool_call.clone(),
            stream_error: None,
        }
    }

    fn respond(
        &self,
        conn: &mut Conn,
        request: &RecordedRequest,
        ordinal: usize,
        keep_alive: bool,
        required_key: Option<&str>,
    ) -> bool {
        let refuse = |conn: &mut Conn, status: u16, error_type: &str, message: &str| {
            send_json(
                conn,
                status,
                &error_body(error_type, message),
                keep_alive,
                &request_id(ordinal),
            )
        };
        let key = request.header("x-api-key").unwrap_or_default();
        if key.is_empty() {
            return refuse(
                conn,
                401,
                "authentication_error",
                "x-api-key header is required",
            );
        }
        if required_key.is_some_and(|k| k != key) {
            return refuse(conn, 401, "authentication_error", "invalid x-api-key");
        }
        if request
            .header("anthropic-version")
            .is_none_or(str::is_empty)
        {
            return refuse(
                conn,
                400,
                "invalid_request_error",
                "anthropic-version: header is required",
            );
        }
        if (request.method.as_str(), request.path.as_str()) == ("POST", "/v1/messages/count_tokens")
        {
            // Token counting takes a Messages body without `max_tokens` and answers
            // `{"input_tokens": N}` (Anthropic API reference, "Count Message tokens"): here
            // N is the input tokens set with `set_usage`.
            let body = serde_json::from_slice::<Value>(&request.body).unwrap_or(Value::Null);
            for field in ["model", "messages"] {
                if body.get(field).is_none() {
                    let message = format!("{field}: Field required");
                    return refuse(conn, 400, "invalid_request_error", &message);
                }
            }
            let count = json!({ "input_tokens": self.usage.input });
            return send_json(conn, 200, &count, keep_alive, &request_id(ordinal));
        }
        if (request.method.as_str(), request.path.as_str()) != ("POST", "/v1/messages") {
            return refuse(conn, 404, "not_found_error", "Not found");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return refuse(
                conn,
                400,
                "invalid_request_error",
                "There was an error parsing the body of your request.",
            );
        };
        for field in ["model", "max_tokens", "messages"] {
            if body.get(field).is_none() {
                return refuse(
                    conn,
                    400,
                    "invalid_request_error",
                    &format!("{field}: Field required"),
                );
            }
        }
        let model = body["model"].as_str().unwrap_or_default();
        let id = format!("msg_fake{ordinal}");
        if body["stream"].as_bool() == Some(true) {
            let mut events = self.events(&id, model, ordinal);
            if let Some((after, error)) = &self.stream_error {
                events.truncate(*after);
                events.push(error.clone());
            }
            send_event_stream_ending(
                conn,
                &events,
                self.stream_delay,
                keep_alive,
                &request_id(ordinal),
                self.stream_end,
            )
        } else {
            let message = self.message(&id, model, ordinal);
            send_json(conn, 200, &message, keep_alive, &request_id(ordinal))
        }
    }

    fn usage_json(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.usage.input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.usage.cache_read,
            "output_tokens": output_tokens,
        })
    }

    fn stop_reason(&self) -> &'static str {
        if self.tool_call.is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    /// A whole `message` object.
    fn message(&self, id: &str, model: &str, ordinal: usize) -> Value {
        let content = match &self.tool_call {
            Some(tool) => json!([{
                "type": "tool_use",
                "id": format!("toolu_fake{ordinal}"),
                "name": tool.name,
                "input": serde_json::from_str::<Value>(&tool.input_json).unwrap(),
            }]),
            None => json!([{ "type": "text", "text": self.reply }]),
        };
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": self.stop_reason(),
            "stop_sequence": null,
            "usage": self.usage_json(self.usage.output),
        })
    }

    /// The streamed answer's events, each `event: NAME\ndata: JSON\n\n`.
    fn events(&self, id: &str, model: &str, ordinal: usize) -> Vec<Vec<u8>> {
        let event =
            |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n").into_bytes();
        let mut events = vec![event(
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": self.usage_json(1),
                },
            }),
        )];
        let (block, deltas) = match &self.tool_call {
            Some(tool) => {
                let block = json!({
                    "type": "tool_use",
                    "id": format!("toolu_fake{ordinal}"),
                    "name": tool.name,
                    "input": {},
                });
                // The real API opens with an empty partial_json, then sends the
                // input in arbitrary pieces that only parse once joined.
                let mut pieces = vec![String::new()];
                pieces.extend(json_pieces(&tool.input_json));
                let deltas = pieces
                    .into_iter()
                    .map(|p| json!({ "type": "input_json_delta", "partial_json": p }))
                    .collect::<Vec<_>>();
                (block, deltas)
            }
            None => (
                json!({ "type": "text", "text": "" }),
                reply_pieces(&self.reply)
                    .into_iter()
                    .map(|p| json!({ "type": "text_delta", "text": p }))
                    .collect(),
            ),
        };
        events.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": block }),
        ));
        events.push(event("ping", json!({ "type": "ping" })));
        for delta in deltas {
            events.push(event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 0 }),
        ));
        events.push(event(
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": { "stop_reason": self.stop_reason(), "stop_sequence": null },
                "usage": { "output_tokens": self.usage.output },
            }),
        ));
        events.push(event("message_stop", json!({ "type": "message_stop" })));
        events
    }
}

/// `text` cut into up to 3 pieces of about equal length (on char boundaries).
fn json_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

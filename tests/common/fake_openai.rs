//! A fake OpenAI API in the test process: std threads on 127.0.0.1:0,
//! speaking the real wire format of the Chat Completions, Responses, legacy Completions
//! and Embeddings APIs
//! (OpenAI API reference: "The chat completion object", "The chat completion
//! chunk object", "The response object", "Streaming events" (Responses),
//! "Completions" (legacy), "Embeddings", "Error codes"), so the gateway's meters see
//! exactly what a real provider would send.
//!
//! Each test sets what the fake reports (usage, reply text, stream pacing,
//! injected errors) and reads back every request it received.
//!
//! - JSON answers carry `Content-Length`; streams are `text/event-stream`
//!   with chunked transfer coding, one server-sent event per HTTP chunk.
//! - Connections are HTTP/1.1 keep-alive unless the client says `close`.
//! - A streamed answer sends the final usage-only chunk (`"choices": []`)
//!   only when the request has `stream_options.include_usage = true`, just
//!   before `data: [DONE]`; every other chunk then has `"usage": null`.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake_oauth::TokenBook;

// The skeleton's pieces, re-exported where the tests have always found them.
pub use super::fake_server::{
    connection_token, echo_failure_headers, received_key, send_event_stream,
    send_event_stream_ending, send_json, status_line, unix_now, Conn, Failure, FakeServer, Handler,
    KeyEcho, MidStreamError, RecordedRequest, StreamEnd, ECHO_RETRY_AFTER_SECS,
};

/// The assistant text answered until a test sets its own.
pub const DEFAULT_REPLY: &str = "Hello from the fake OpenAI server.";

/// The `x-ratelimit-limit-tokens` the fake sends on every 2xx, like OpenAI
/// does: a gateway reporting its own token limit must replace it.
pub const FAKE_TOKEN_LIMIT: u64 = 150_000_000;

/// The `x-ratelimit-limit-requests` the fake sends on every 2xx.
pub const FAKE_REQUEST_LIMIT: u64 = 30_000;

/// Length of each embedding vector the fake returns.
const EMBEDDING_DIMENSIONS: usize = 8;

/// Token counts the fake reports as `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeUsage {
    /// `prompt_tokens` (cached tokens included, as OpenAI counts them).
    pub prompt: u64,
    /// `completion_tokens`.
    pub completion: u64,
    /// `prompt_tokens_details.cached_tokens`.
    pub cached: u64,
}

/// What the fake answers; set by the test.
struct Behaviour {
    usage: FakeUsage,
    reply: String,
    stream_delay: Duration,
    stream_end: StreamEnd,
    /// `(name, arguments JSON text)` of a function call answered instead of text.
    tool_call: Option<(String, String)>,
    failures: VecDeque<Failure>,
    /// Sent in the next streamed answer, then cleared.
    stream_error: Option<MidStreamError>,
    /// Azure calls need a Bearer token from this book instead of `api-key`.
    entra: Option<Arc<TokenBook>>,
}
/// A running fake OpenAI server; stops accepting and closes its connections
/// on drop. Dereferences to its [`FakeServer`] for `requests()`,
/// `request_count()`, `last_request()`, `wait_for_requests()`,
/// `answered_count()`, `connection_count()`, `closed_count()`,
/// `cut_short_count()`, `addr()` and `base_url()`.
pub struct FakeOpenAi {
    server: FakeServer,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Deref for FakeOpenAi {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeOpenAi {
    /// Binds 127.0.0.1:0 and starts serving with the defaults: usage 10
    /// prompt + 5 completion tokens, none cached, [`DEFAULT_REPLY`], no stream
    /// delay, no failures.
    pub fn start() -> FakeOpenAi {
        let behaviour = Arc::new(Mutex::new(Behaviour {
            usage: FakeUsage {
                prompt: 10,
                completion: 5,
                cached: 0,
            },
            reply: DEFAULT_REPLY.to_string(),
            stream_delay: Duration::ZERO,
            stream_end: StreamEnd::Complete,
            tool_call: None,
            failures: VecDeque::new(),
            stream_error: None,
            entra: None,
        }));
        let shared = behaviour.clone();
        let server = FakeServer::start_planned(
            move |request| {
                let mut behaviour = shared.lock().unwrap();
                let failure = behaviour.failures.pop_front();
                let mut snapshot = Snapshot::of(&behaviour);
                snapshot.stream_error = behaviour.stream_error.take().map(|e| {
                    let body = error_body(&e.error_type, &e.echo.message(request));
                    (e.after, format!("data: {body}\n\n").into_bytes())
                });
                (snapshot, failure)
            },
            |conn, request, (answer, failure), ordinal, keep_alive| match failure {
                Some(Failure {
                    status,
                    name,
                    echo: Some(echo),
                }) => {
                    let body = error_body(&name, &echo.message(request));
                    let headers = echo_failure_headers(status);
                    send_json(conn, status, &body, keep_alive, &headers)
                }
                Some(failure) => {
                    let body = error_body(&failure.name, "The fake was told to fail.");
                    send_json(conn, failure.status, &body, keep_alive, &[])
                }
                None => answer.respond(conn, request, ordinal, keep_alive),
            },
        );
        FakeOpenAi { server, behaviour }
    }

    /// Makes Azure calls authenticate as a resource locked to Entra ID does: with
    /// `Authorization: Bearer` and a token `book` holds as valid (issued, unexpired, not
    /// revoked), and no `api-key` header (a key is refused, as on a resource with local
    /// authentication disabled).
    pub fn require_entra(&self, book: Arc<TokenBook>) {
        self.behaviour.lock().unwrap().entra = Some(book);
    }

    /// What the next answers report as usage: `prompt` prompt tokens (of
    /// which `cached` were prompt-cache reads) and `completion` tokens.
    pub fn set_usage(&self, prompt: u64, completion: u64, cached: u64) {
        self.behaviour().usage = FakeUsage {
            prompt,
            completion,
            cached,
        };
    }

    /// The usage the next answers report.
    pub fn usage(&self) -> FakeUsage {
        self.behaviour().usage
    }

    /// The assistant's text; streams send it in pieces, one per word.
    pub fn set_reply(&self, text: &str) {
        self.behaviour().reply = text.to_string();
    }

    /// The pause before each chunk of a streamed answer after the first.
    pub fn set_stream_delay(&self, per_chunk: Duration) {
        self.behaviour().stream_delay = per_chunk;
    }

    /// How the next streamed answers end (events counted with `data: [DONE]`).
    pub fn set_stream_end(&self, end: StreamEnd) {
        self.behaviour().stream_end = end;
    }

    /// The next chat answers call the function `name` with `arguments_json`
    /// (a JSON object as text) instead of answering text: `tool_calls` with
    /// `finish_reason: "tool_calls"`; streamed as OpenAI does, the name in
    /// the first delta and the arguments in pieces.
    pub fn set_tool_call(&self, name: &str, arguments_json: &str) {
        serde_json::from_str::<Value>(arguments_json).expect("arguments must be JSON");
        self.behaviour().tool_call = Some((name.to_string(), arguments_json.to_string()));
    }

    /// Back to text answers.
    pub fn clear_tool_call(&self) {
        self.behaviour().tool_call = None;
    }

    /// The next `n` requests (of any path) answer `status` with an OpenAI
    /// error object of type `error_type`, instead of their normal answer.
    pub fn fail_next(&self, status: u16, error_type: &str, n: usize) {
        let mut behaviour = self.behaviour();
        for _ in 0..n {
            behaviour.failures.push_back(Failure {
                status,
                name: error_type.to_string(),
                echo: None,
            });
        }
    }

    /// The next request's streamed answer breaks off with an OpenAI error chunk
    /// (`data: {"error":{..}}`, as OpenAI reports a failure mid-stream) of type `error_type`
    /// after `after` chunks, its message echoing the key as `echo` says.
    pub fn error_mid_stream_next(&self, after: usize, error_type: &str, echo: KeyEcho) {
        self.behaviour().stream_error = Some(MidStreamError {
            after,
            status: 500,
            error_type: error_type.to_string(),
            echo,
        });
    }

    /// Like [`FakeOpenAi::fail_next`], with a message that repeats the request's credential
    /// as `echo` says (and `Retry-After` on a 429).
    pub fn fail_next_echoing(&self, status: u16, error_type: &str, echo: KeyEcho, n: usize) {
        let mut behaviour = self.behaviour();
        for _ in 0..n {
            behaviour.failures.push_back(Failure {
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

/// The behaviour a request is answered with, copied out of the lock so a
/// slow stream does not hold it.
struct Snapshot {
    usage: FakeUsage,
    reply: String,
    stream_delay: Duration,
    stream_end: StreamEnd,
    tool_call: Option<(String, String)>,
    /// `(events before it, the error event)` that breaks this answer's stream off.
    stream_error: Option<(usize, Vec<u8>)>,
    entra: Option<Arc<TokenBook>>,
}

impl Snapshot {
    fn of(behaviour: &Behaviour) -> Snapshot {
        Snapshot {
            usage: behaviour.usage,
            reply: behaviour.reply.clone(),
            stream_delay: behaviour.stream_delay,
            stream_end: behaviour.stream_end,
            tool_call: behaviour.tool_call.clone(),
            stream_error: None,
            entra: behaviour.entra.clone(),
        }
    }

    /// Answers one request; returns whether the connection is still usable.
    fn respond(
        &self,
        conn: &mut Conn,
        request: &RecordedRequest,
        ordinal: usize,
        keep_alive: bool,
    ) -> bool {
        if let Some(deployment) = azure_deployment(&request.path) {
            return self.respond_azure(conn, request, deployment, ordinal, keep_alive);
        }
        // OpenAI answers a request without an API key with 401 before anything else.
        let has_key = request
            .header("authorization")
            .is_some_and(|v| v.len() > "Bearer ".len() && v.starts_with("Bearer "));
        if !has_key {
            let body = error_body(
                "invalid_request_error",
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            );
            return send_json(conn, 401, &body, keep_alive, &[]);
        }
        let route = (request.method.as_str(), request.path.as_str());
        match route {
            ("POST", "/v1/chat/completions") => {
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    let body = error_body(
                        "invalid_request_error",
                        "We could not parse the JSON body of your request.",
                    );
                    return send_json(conn, 400, &body, keep_alive, &[]);
                };
                let model = body["model"].as_str().unwrap_or_default();
                let id = format!("chatcmpl-fake{ordinal}");
                if body["stream"].as_bool() == Some(true) {
                    let include_usage =
                        body["stream_options"]["include_usage"].as_bool() == Some(true);
                    self.stream_chat(conn, &id, model, include_usage, keep_alive)
                } else {
                    let completion = self.chat_completion(&id, model);
                    send_json(conn, 200, &completion, keep_alive, &rate_limit_headers())
                }
            }
            ("POST", "/v1/completions") => {
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    let body = error_body(
                        "invalid_request_error",
                        "We could not parse the JSON body of your request.",
                    );
                    return send_json(conn, 400, &body, keep_alive, &[]);
                };
                let model = body["model"].as_str().unwrap_or_default();
                // One choice per prompt: a string is one prompt, an array one per item.
                let prompts = body["prompt"].as_array().map_or(1, Vec::len);
                let id = format!("cmpl-fake{ordinal}");
                if body["stream"].as_bool() == Some(true) {
                    let include_usage =
                        body["stream_options"]["include_usage"].as_bool() == Some(true);
                    self.stream_completion(conn, &id, model, prompts, include_usage, keep_alive)
                } else {
                    let completion = self.text_completion(&id, model, prompts);
                    send_json(conn, 200, &completion, keep_alive, &rate_limit_headers())
                }
            }
            ("POST", "/v1/responses") => {
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    let body = error_body(
                        "invalid_request_error",
                        "We could not parse the JSON body of your request.",
                    );
                    return send_json(conn, 400, &body, keep_alive, &[]);
                };
                let id = format!("resp_fake{ordinal}");
                if body["stream"].as_bool() == Some(true) {
                    self.stream_response(conn, &id, &body, keep_alive)
                } else {
                    let response = self.response(&id, &body, "completed");
                    send_json(conn, 200, &response, keep_alive, &rate_limit_headers())
                }
            }
            ("POST", "/v1/embeddings") => {
                let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                    let body = error_body(
                        "invalid_request_error",
                        "We could not parse the JSON body of your request.",
                    );
                    return send_json(conn, 400, &body, keep_alive, &[]);
                };
                let answer = self.embeddings(&body);
                send_json(conn, 200, &answer, keep_alive, &rate_limit_headers())
            }
            ("GET", "/v1/models") => {
                let list = json!({
                    "object": "list",
                    "data": [{
                        "id": "gpt-4o-mini",
                        "object": "model",
                        "created": 1_721_172_741u64,
                        "owned_by": "system",
                    }],
                });
                send_json(conn, 200, &list, keep_alive, &[])
            }
            (method, path) => {
                let message = format!("Invalid URL ({method} {path})");
                send_json(
                    conn,
                    404,
                    &error_body("invalid_request_error", &message),
                    keep_alive,
                    &[],
                )
            }
        }
    }

    /// Answers an Azure OpenAI call on `deployment` (Azure OpenAI REST API
    /// reference, "Data plane - inference"): the key in `api-key`, the
    /// version in `?api-version=`, OpenAI bodies; the deployment, not the
    /// body's `model`, names the model.
    fn respond_azure(
        &self,
        conn: &mut Conn,
        request: &RecordedRequest,
        (deployment, operation): (&str, &str),
        ordinal: usize,
        keep_alive: bool,
    ) -> bool {
        if let Some(book) = &self.entra {
            let bearer = request
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "));
            let valid = bearer.is_some_and(|token| book.is_valid(token));
            if request.header("api-key").is_some() || !valid {
                // Azure's answer to a missing, expired or revoked Entra token.
                let body = azure_error_body(
                    "401",
                    "Unauthorized. Access token is missing, invalid, audience is incorrect \
                     (https://cognitiveservices.azure.com), or have expired.",
                );
                return send_json(conn, 401, &body, keep_alive, &[]);
            }
        } else if request.header("api-key").is_none_or(str::is_empty) {
            let body = azure_error_body(
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure \
                 to provide a valid key for an active subscription and use a correct regional \
                 API endpoint for your resource.",
            );
            return send_json(conn, 401, &body, keep_alive, &[]);
        }
        let has_version = request.query.split('&').any(|p| {
            p.strip_prefix("api-version=")
                .is_some_and(|v| !v.is_empty())
        });
        if !has_version {
            let body = azure_error_body("404", "Resource not found");
            return send_json(conn, 404, &body, keep_alive, &[]);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            let body = error_body(
                "invalid_request_error",
                "We could not parse the JSON body of your request.",
            );
            return send_json(conn, 400, &body, keep_alive, &[]);
        };
        match (request.method.as_str(), operation) {
            ("POST", "chat/completions") => {
                let id = format!("chatcmpl-azure{ordinal}");
                if body["stream"].as_bool() == Some(true) {
                    let include_usage =
                        body["stream_options"]["include_usage"].as_bool() == Some(true);
                    self.stream_chat(conn, &id, deployment, include_usage, keep_alive)
                } else {
                    let completion = self.chat_completion(&id, deployment);
                    send_json(conn, 200, &completion, keep_alive, &rate_limit_headers())
                }
            }
            ("POST", "embeddings") => {
                let answer = self.embeddings(&body);
                send_json(conn, 200, &answer, keep_alive, &rate_limit_headers())
            }
            _ => send_json(
                conn,
                404,
                &azure_error_body("404", "Resource not found"),
                keep_alive,
                &[],
            ),
        }
    }

    /// The `usage` object of a chat completion.
    fn usage_json(&self) -> Value {
        let u = self.usage;
        json!({
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.prompt + u.completion,
            "prompt_tokens_details": { "cached_tokens": u.cached, "audio_tokens": 0 },
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        })
    }

    /// A `chat.completion` object.
    fn chat_completion(&self, id: &str, model: &str) -> Value {
        let (message, finish_reason) = match &self.tool_call {
            Some((name, arguments)) => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "tool_calls": [{
                        "id": "call_fake0",
                        "type": "function",
                        "function": { "name": name, "arguments": arguments },
                    }],
                }),
                "tool_calls",
            ),
            None => (
                json!({ "role": "assistant", "content": self.reply, "refusal": null }),
                "stop",
            ),
        };
        json!({
            "id": id,
            "object": "chat.completion",
            "created": unix_now(),
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": self.usage_json(),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        })
    }

    /// One `chat.completion.chunk` with `choices`; `usage` is `null` on
    /// every chunk when the client asked for usage, absent otherwise.
    fn chunk(&self, id: &str, model: &str, choices: Value, usage: Option<Value>) -> Value {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": unix_now(),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    }

    /// Streams the reply as server-sent events, one HTTP chunk per event.
    fn stream_chat(
        &self,
        conn: &mut Conn,
        id: &str,
        model: &str,
        include_usage: bool,
        keep_alive: bool,
    ) -> bool {
        let null_usage = include_usage.then_some(Value::Null);
        let mut events = vec![self.chunk(
            id,
            model,
            stream_choice(
                json!({ "role": "assistant", "content": "", "refusal": null }),
                Value::Null,
            ),
            null_usage.clone(),
        )];
        let finish_reason = match &self.tool_call {
            Some((name, arguments)) => {
                let mut deltas = vec![json!({ "tool_calls": [{
                    "index": 0,
                    "id": "call_fake0",
                    "type": "function",
                    "function": { "name": name, "arguments": "" },
                }]})];
                let chars: Vec<char> = arguments.chars().collect();
                for piece in chars.chunks(chars.len().div_ceil(3).max(1)) {
                    let piece: String = piece.iter().collect();
                    deltas.push(json!({ "tool_calls": [{
                        "index": 0,
                        "function": { "arguments": piece },
                    }]}));
                }
                for delta in deltas {
                    events.push(self.chunk(
                        id,
                        model,
                        stream_choice(delta, Value::Null),
                        null_usage.clone(),
                    ));
                }
                "tool_calls"
            }
            None => {
                for piece in reply_pieces(&self.reply) {
                    events.push(self.chunk(
                        id,
                        model,
                        stream_choice(json!({ "content": piece }), Value::Null),
                        null_usage.clone(),
                    ));
                }
                "stop"
            }
        };
        events.push(self.chunk(
            id,
            model,
            stream_choice(json!({}), json!(finish_reason)),
            null_usage.clone(),
        ));
        if include_usage {
            events.push(self.chunk(id, model, json!([]), Some(self.usage_json())));
        }
        let mut data: Vec<Vec<u8>> = events
            .iter()
            .map(|e| format!("data: {e}\n\n").into_bytes())
            .collect();
        data.push(b"data: [DONE]\n\n".to_vec());
        if let Some((after, error)) = &self.stream_error {
            data.truncate(*after);
            data.push(error.clone());
        }
        send_event_stream_ending(
            conn,
            &data,
            self.stream_delay,
            keep_alive,
            &rate_limit_headers(),
            self.stream_end,
        )
    }

    /// The `usage` object of a Response (OpenAI API reference, "Responses": "The response
    /// object").
    fn responses_usage_json(&self) -> Value {
        let u = self.usage;
        json!({
            "input_tokens": u.prompt,
            "input_tokens_details": { "cached_tokens": u.cached },
            "output_tokens": u.completion,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": u.prompt + u.completion,
        })
    }

    /// The one output item of a Response: the reply as a message, or the function call
    /// when one is set; `done` says whether it is complete (else as first added).
    fn response_item(&self, id: &str, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match &self.tool_call {
            Some((name, arguments)) => json!({
                "id": format!("fc_{id}"),
                "type": "function_call",
                "status": status,
                "arguments": if done { arguments.as_str() } else { "" },
                "call_id": "call_fake0",
                "name": name,
            }),
            None => json!({
                "id": format!("msg_{id}"),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": if done {
                    json!([{ "type": "output_text", "text": self.reply, "annotations": [],
                             "logprobs": [] }])
                } else {
                    json!([])
                },
            }),
        }
    }

    /// A Response object (OpenAI API reference, "Responses": "The response object") with
    /// `status`: the output and usage once it is done, none while `in_progress`. The model
    /// is the request's with a snapshot date, as OpenAI names the model that served it.
    fn response(&self, id: &str, request: &Value, status: &str) -> Value {
        let done = status != "in_progress";
        let or = |field: &str, default: Value| match &request[field] {
            Value::Null => default,
            v => v.clone(),
        };
        json!({
            "id": id,
            "object": "response",
            "created_at": unix_now(),
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": or("instructions", Value::Null),
            "max_output_tokens": or("max_output_tokens", Value::Null),
            "max_tool_calls": null,
            "model": format!("{}-2025-04-14", request["model"].as_str().unwrap_or_default()),
            "output": if done { json!([self.response_item(id, true)]) } else { json!([]) },
            "parallel_tool_calls": or("parallel_tool_calls", json!(true)),
            "previous_response_id": null,
            "reasoning": { "effort": null, "summary": null },
            "service_tier": "default",
            "store": or("store", json!(true)),
            "temperature": or("temperature", json!(1.0)),
            "text": { "format": { "type": "text" } },
            "tool_choice": or("tool_choice", json!("auto")),
            "tools": or("tools", json!([])),
            "top_p": or("top_p", json!(1.0)),
            "truncation": "disabled",
            "usage": if done { self.responses_usage_json() } else { Value::Null },
            "user": null,
            "metadata": or("metadata", json!({})),
        })
    }

    /// Streams a Response as OpenAI does (OpenAI API reference, "Streaming events"): each
    /// event named by its `type`, numbered by `sequence_number`, one HTTP chunk per event,
    /// the usage in `response.completed`.
    fn stream_response(
        &self,
        conn: &mut Conn,
        id: &str,
        request: &Value,
        keep_alive: bool,
    ) -> bool {
        let in_progress = self.response(id, request, "in_progress");
        let item_id = self.response_item(id, false)["id"].clone();
        let mut events = vec![
            json!({"type": "response.created", "response": in_progress}),
            json!({"type": "response.in_progress", "response": in_progress}),
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": self.response_item(id, false)}),
        ];
        match &self.tool_call {
            Some((_, arguments)) => {
                let chars: Vec<char> = arguments.chars().collect();
                for piece in chars.chunks(chars.len().div_ceil(3).max(1)) {
                    let piece: String = piece.iter().collect();
                    events.push(json!({"type": "response.function_call_arguments.delta",
                        "item_id": item_id, "output_index": 0, "delta": piece}));
                }
                events.push(json!({"type": "response.function_call_arguments.done",
                    "item_id": item_id, "output_index": 0, "arguments": arguments}));
            }
            None => {
                let part = |text: &str| {
                    json!({"type": "output_text", "text": text,
                                               "annotations": [], "logprobs": []})
                };
                events.push(
                    json!({"type": "response.content_part.added", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "part": part("")}),
                );
                for piece in reply_pieces(&self.reply) {
                    events.push(json!({"type": "response.output_text.delta",
                        "item_id": item_id, "output_index": 0, "content_index": 0,
                        "delta": piece, "logprobs": []}));
                }
                events.push(
                    json!({"type": "response.output_text.done", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "text": self.reply,
                    "logprobs": []}),
                );
                events.push(
                    json!({"type": "response.content_part.done", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "part": part(&self.reply)}),
                );
            }
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": 0,
                           "item": self.response_item(id, true)}),
        );
        events.push(json!({"type": "response.completed",
                           "response": self.response(id, request, "completed")}));
        let data: Vec<Vec<u8>> = events
            .into_iter()
            .enumerate()
            .map(|(n, mut event)| {
                event["sequence_number"] = n.into();
                let kind = event["type"].as_str().unwrap_or_default().to_string();
                format!("event: {kind}\ndata: {event}\n\n").into_bytes()
            })
            .collect();
        send_event_stream_ending(
            conn,
            &data,
            self.stream_delay,
            keep_alive,
            &rate_limit_headers(),
            self.stream_end,
        )
    }

    /// A legacy `text_completion` object (OpenAI API reference, "Completions": "The
    /// completion object"): the reply once per prompt.
    fn text_completion(&self, id: &str, model: &str, prompts: usize) -> Value {
        let choices: Vec<Value> = (0..prompts)
            .map(|index| {
                json!({ "text": self.reply, "index": index, "logprobs": null,
                        "finish_reason": "stop" })
            })
            .collect();
        let u = self.usage;
        json!({
            "id": id,
            "object": "text_completion",
            "created": unix_now(),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": {
                "prompt_tokens": u.prompt,
                "completion_tokens": u.completion,
                "total_tokens": u.prompt + u.completion,
            },
        })
    }

    /// Streams a legacy completion: `text_completion` chunks with `choices[].text` word by
    /// word, a finish chunk per prompt, then (with `include_usage`) the usage-only chunk
    /// (`"choices": []`), every other chunk then carrying `"usage": null`.
    fn stream_completion(
        &self,
        conn: &mut Conn,
        id: &str,
        model: &str,
        prompts: usize,
        include_usage: bool,
        keep_alive: bool,
    ) -> bool {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut chunk = json!({
                "id": id, "object": "text_completion", "created": unix_now(),
                "model": model, "system_fingerprint": "fp_fake", "choices": choices,
            });
            if let Some(usage) = usage {
                chunk["usage"] = usage;
            } else if include_usage {
                chunk["usage"] = Value::Null;
            }
            chunk
        };
        let choice = |index: usize, text: &str, finish: Value| json!([{ "text": text, "index": index, "logprobs": null, "finish_reason": finish }]);
        let mut events = Vec::new();
        for index in 0..prompts {
            for piece in reply_pieces(&self.reply) {
                events.push(chunk(choice(index, &piece, Value::Null), None));
            }
            events.push(chunk(choice(index, "", json!("stop")), None));
        }
        if include_usage {
            let u = self.usage;
            let usage = json!({ "prompt_tokens": u.prompt, "completion_tokens": u.completion,
                                "total_tokens": u.prompt + u.completion });
            events.push(chunk(json!([]), Some(usage)));
        }
        let mut data: Vec<Vec<u8>> = events
            .iter()
            .map(|e| format!("data: {e}\n\n").into_bytes())
            .collect();
        data.push(b"data: [DONE]\n\n".to_vec());
        send_event_stream_ending(
            conn,
            &data,
            self.stream_delay,
            keep_alive,
            &rate_limit_headers(),
            self.stream_end,
        )
    }

    /// An embeddings `list`: one vector per input, usage = the prompt tokens set.
    fn embeddings(&self, body: &Value) -> Value {
        let inputs = match &body["input"] {
            Value::Array(items) if !items.is_empty() && !items[0].is_number() => items.len(),
            _ => 1,
        };
        let data: Vec<Value> = (0..inputs)
            .map(|index| {
                let vector: Vec<f64> = (0..EMBEDDING_DIMENSIONS)
                    .map(|d| ((index + d) as f64 + 1.0) / 100.0)
                    .collect();
                json!({ "object": "embedding", "index": index, "embedding": vector })
            })
            .collect();
        json!({
            "object": "list",
            "data": data,
            "model": body["model"].as_str().unwrap_or_default(),
            "usage": { "prompt_tokens": self.usage.prompt, "total_tokens": self.usage.prompt },
        })
    }
}

/// `(deployment, operation)` of an Azure OpenAI path
/// `/openai/deployments/{deployment}/{operation}`.
fn azure_deployment(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    let (deployment, operation) = rest.split_once('/')?;
    (!deployment.is_empty()).then_some((deployment, operation))
}

/// Azure's own error object for what its front end refuses (bad key,
/// unknown deployment): `{"error":{"code":"401","message":..}}`.
fn azure_error_body(code: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message } })
}

/// The `choices` of a streamed chunk: one choice with `delta`.
fn stream_choice(delta: Value, finish_reason: Value) -> Value {
    json!([{
        "index": 0,
        "delta": delta,
        "logprobs": null,
        "finish_reason": finish_reason,
    }])
}

/// The reply split after each word, whitespace kept with the word that
/// follows it, so the pieces concatenate back to the reply.
pub fn reply_pieces(reply: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in reply.chars() {
        if c.is_whitespace() && in_word {
            pieces.push(std::mem::take(&mut current));
            in_word = false;
        }
        if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// The OpenAI error object. `code` is what OpenAI sends for the types that
/// have one, `null` otherwise.
pub fn error_body(error_type: &str, message: &str) -> Value {
    let code = match error_type {
        "insufficient_quota" => json!("insufficient_quota"),
        "requests" | "tokens" => json!("rate_limit_exceeded"),
        _ => Value::Null,
    };
    json!({ "error": { "message": message, "type": error_type, "param": null, "code": code } })
}

/// The rate-limit headers OpenAI puts on every answer.
fn rate_limit_headers() -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit-requests", FAKE_REQUEST_LIMIT.to_string()),
        (
            "x-ratelimit-remaining-requests",
            (FAKE_REQUEST_LIMIT - 1).to_string(),
        ),
        ("x-ratelimit-reset-requests", "2ms".to_string()),
        ("x-ratelimit-limit-tokens", FAKE_TOKEN_LIMIT.to_string()),
        (
            "x-ratelimit-remaining-tokens",
            (FAKE_TOKEN_LIMIT - 1000).to_string(),
        ),
        ("x-ratelimit-reset-tokens", "0s".to_string()),
    ]
}

//! A fake Gemini API in the test process, speaking the real wire format of
//! `generateContent` and `streamGenerateContent` (Gemini API reference:
//! "Generating content", "GenerateContentResponse", "UsageMetadata", and the
//! Google API error model), so the gateway's translators and meters see
//! exactly what the real provider would send.
//!
//! - `POST /v1beta/models/{model}:generateContent` answers one
//!   `GenerateContentResponse`; `:streamGenerateContent?alt=sse` answers
//!   server-sent events `data: JSON` separated by CRLF CRLF, as Google's
//!   front end sends them (without `alt=sse`, a JSON array of the chunks).
//! - The key goes in `x-goog-api-key` (or `?key=`): without one, 403
//!   `PERMISSION_DENIED`; with one other than [`FakeGemini::require_key`]'s,
//!   400 `INVALID_ARGUMENT` "API key not valid", as Google answers.
//! - `usageMetadata` is `{promptTokenCount, candidatesTokenCount,
//!   totalTokenCount[, cachedContentTokenCount]}`; streamed chunks before the
//!   last carry only `promptTokenCount` and `totalTokenCount`.
//! - Errors are `{"error":{"code":N,"message":..,"status":"STATUS_NAME"}}`.

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
pub const DEFAULT_REPLY: &str = "Hello from the fake Gemini server.";

/// Token counts the fake reports as `usageMetadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeminiUsage {
    /// `promptTokenCount` (cached tokens included, as Gemini counts them).
    pub prompt: u64,
    /// `candidatesTokenCount`.
    pub candidates: u64,
    /// `cachedContentTokenCount` (sent only when not 0).
    pub cached: u64,
}

#[derive(Debug, Clone)]
struct FunctionCall {
    name: String,
    args_json: String,
}

/// What one request is answered with, read before the request is recorded:
/// the answer, a queued failure and the key the fake requires.
type Planned = (Answer, Option<Failure>, Option<String>);

struct Behaviour {
    usage: GeminiUsage,
    reply: String,
    stream_delay: Duration,
    stream_end: StreamEnd,
    function_call: Option<FunctionCall>,
    failures: VecDeque<Failure>,
    required_key: Option<String>,
    /// Sent in the next streamed answer, then cleared.
    stream_error: Option<MidStreamError>,
}

/// A running fake Gemini server; stops on drop. Dereferences to its
/// [`FakeServer`] for `requests()`, `request_count()`, `last_request()`,
/// `wait_for_requests()`, `connection_count()`, `closed_count()`,
/// `cut_short_count()` and `base_url()`.
pub struct FakeGemini {
    server: FakeServer,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Deref for FakeGemini {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeGemini {
    /// Binds 127.0.0.1:0 and serves with the defaults: usage 10 prompt + 5
    /// candidates tokens, none cached, [`DEFAULT_REPLY`], no stream delay, no
    /// function call, no failures, any non-empty key accepted.
    pub fn start() -> FakeGemini {
        let behaviour = Arc::new(Mutex::new(Behaviour {
            usage: GeminiUsage {
                prompt: 10,
                candidates: 5,
                cached: 0,
            },
            reply: DEFAULT_REPLY.to_string(),
            stream_delay: Duration::ZERO,
            stream_end: StreamEnd::Complete,
            function_call: None,
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
                let message = e.echo.message(request);
                let body = error_body(e.status, &e.error_type, &message);
                (e.after, format!("data: {body}\r\n\r\n").into_bytes())
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
                let body = error_body(failure.status, &failure.name, &message);
                let headers = match failure.echo {
                    Some(_) => echo_failure_headers(failure.status),
                    None => Vec::new(),
                };
                return send_json(conn, failure.status, &body, keep_alive, &headers);
            }
            answer.respond(conn, request, ordinal, keep_alive, required_key.as_deref())
        };
        let server = FakeServer::start_planned(plan, respond);
        FakeGemini { server, behaviour }
    }

    /// What the next answers report: `prompt` prompt tokens (of which
    /// `cached` came from cached content) and `candidates` output tokens.
    pub fn set_usage(&self, prompt: u64, candidates: u64, cached: u64) {
        self.behaviour().usage = GeminiUsage {
            prompt,
            candidates,
            cached,
        };
    }

    /// The usage the next answers report.
    pub fn usage(&self) -> GeminiUsage {
        self.behaviour().usage
    }

    /// The model's text; streams send it in pieces, one per word.
    pub fn set_reply(&self, text: &str) {
        self.behaviour().reply = text.to_string();
    }

    /// The pause before each streamed chunk after the first.
    pub fn set_stream_delay(&self, per_chunk: Duration) {
        self.behaviour().stream_delay = per_chunk;
    }

    /// How the next streamed answers end (a cut or stalled provider stream).
    pub fn set_stream_end(&self, end: StreamEnd) {
        self.behaviour().stream_end = end;
    }

    /// The next answers are one `functionCall` part calling `name` with
    /// `args_json` (a JSON object as text), sent whole (streams too, as
    /// Gemini does).
    pub fn set_function_call(&self, name: &str, args_json: &str) {
        serde_json::from_str::<Value>(args_json).expect("function args must be JSON");
        self.behaviour().function_call = Some(FunctionCall {
            name: name.to_string(),
            args_json: args_json.to_string(),
        });
    }

    /// Back to text answers.
    pub fn clear_function_call(&self) {
        self.behaviour().function_call = None;
    }

    /// Only `key` is valid; any other gets 400 `INVALID_ARGUMENT`
    /// ("API key not valid"), as Google answers a bad key.
    pub fn require_key(&self, key: &str) {
        self.behaviour().required_key = Some(key.to_string());
    }

    /// The next `n` requests answer `status` with a Google error whose
    /// `status` is `status_name` (e.g. `INTERNAL`, `RESOURCE_EXHAUSTED`,
    /// `INVALID_ARGUMENT`, `UNAVAILABLE`).
    pub fn fail_next(&self, status: u16, status_name: &str, n: usize) {
        let mut b = self.behaviour();
        for _ in 0..n {
            b.failures.push_back(Failure {
                status,
                name: status_name.to_string(),
                echo: None,
            });
        }
    }

    /// The next request's streamed answer (`alt=sse`) breaks off with an error object
    /// (`data: {"error":{"code","message","status"}}`) of `status` and gRPC status
    /// `status_name` after `after` chunks, its message echoing the key as `echo` says.
    pub fn error_mid_stream_next(
        &self,
        after: usize,
        status: u16,
        status_name: &str,
        echo: KeyEcho,
    ) {
        self.behaviour().stream_error = Some(MidStreamError {
            after,
            status,
            error_type: status_name.to_string(),
            echo,
        });
    }

    /// Like [`FakeGemini::fail_next`], with a message that repeats the request's credential
    /// as `echo` says (and `Retry-After` on a 429).
    pub fn fail_next_echoing(&self, status: u16, status_name: &str, echo: KeyEcho, n: usize) {
        let mut b = self.behaviour();
        for _ in 0..n {
            b.failures.push_back(Failure {
                status,
                name: status_name.to_string(),
                echo: Some(echo),
            });
        }
    }

    fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.behaviour.lock().unwrap()
    }
}

/// The Google API error object: `{"error":{"code","message","status"}}`.
pub fn error_body(code: u16, status_name: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message, "status": status_name } })
}

/// The behaviour one request is answered with, copied out of the lock.
struct Answer {
    usage: GeminiUsage,
    reply: String,
    stream_delay: Duration,
    stream_end: StreamEnd,
    function_call: Option<FunctionCall>,
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
            function_call: b.function_call.clone(),
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
        let refuse = |conn: &mut Conn, status: u16, name: &str, message: &str| {
            send_json(
                conn,
                status,
                &error_body(status, name, message),
                keep_alive,
                &[],
            )
        };
        let query_key = request
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("key="))
            .unwrap_or_default();
        let key = request.header("x-goog-api-key").unwrap_or(query_key);
        if key.is_empty() {
            return refuse(
                conn,
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established \
                 identity). Please use API Key or other form of API consumer identity to call \
                 this API.",
            );
        }
        if required_key.is_some_and(|k| k != key) {
            let mut body = error_body(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            );
            body["error"]["details"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": { "service": "generativelanguage.googleapis.com" },
            }]);
            return send_json(conn, 400, &body, keep_alive, &[]);
        }
        let Some((model, method)) = request
            .path
            .strip_prefix("/v1beta/models/")
            .and_then(|rest| rest.split_once(':'))
        else {
            return refuse(conn, 404, "NOT_FOUND", "Requested entity was not found.");
        };
        let streamed = match (request.method.as_str(), method) {
            ("POST", "generateContent") => false,
            ("POST", "streamGenerateContent") => true,
            _ => return refuse(conn, 404, "NOT_FOUND", "Requested entity was not found."),
        };
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return refuse(
                conn,
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received.",
            );
        };
        if body["contents"].as_array().is_none_or(|c| c.is_empty()) {
            return refuse(
                conn,
                400,
                "INVALID_ARGUMENT",
                "* GenerateContentRequest.contents: contents is not specified\n",
            );
        }
        let response_id = format!("fakeResponse{ordinal}");
        if !streamed {
            let whole = self.chunk(self.parts_whole(), true, model, &response_id);
            return send_json(conn, 200, &whole, keep_alive, &[]);
        }
        let chunks = self.chunks(model, &response_id);
        let sse = request.query.split('&').any(|p| p == "alt=sse");
        if sse {
            let mut events: Vec<Vec<u8>> = chunks
                .iter()
                .map(|c| format!("data: {c}\r\n\r\n").into_bytes())
                .collect();
            if let Some((after, error)) = &self.stream_error {
                events.truncate(*after);
                events.push(error.clone());
            }
            send_event_stream_ending(
                conn,
                &events,
                self.stream_delay,
                keep_alive,
                &[],
                self.stream_end,
            )
        } else {
            send_json(conn, 200, &Value::Array(chunks), keep_alive, &[])
        }
    }

    /// The parts of a whole answer: the reply text or the function call.
    fn parts_whole(&self) -> Value {
        match &self.function_call {
            Some(call) => json!([{ "functionCall": {
                "name": call.name,
                "args": serde_json::from_str::<Value>(&call.args_json).unwrap(),
            }}]),
            None => json!([{ "text": self.reply }]),
        }
    }

    fn usage_json(&self, last: bool) -> Value {
        let u = self.usage;
        if !last {
            return json!({ "promptTokenCount": u.prompt, "totalTokenCount": u.prompt });
        }
        let mut usage = json!({
            "promptTokenCount": u.prompt,
            "candidatesTokenCount": u.candidates,
            "totalTokenCount": u.prompt + u.candidates,
            "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": u.prompt }],
        });
        if u.cached > 0 {
            usage["cachedContentTokenCount"] = json!(u.cached);
        }
        usage
    }

    /// One `GenerateContentResponse` with `parts`; the last one has
    /// `finishReason` and the full usage.
    fn chunk(&self, parts: Value, last: bool, model: &str, response_id: &str) -> Value {
        let mut candidate = json!({
            "content": { "parts": parts, "role": "model" },
            "index": 0,
        });
        if last {
            candidate["finishReason"] = json!("STOP");
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": self.usage_json(last),
            "modelVersion": model,
            "responseId": response_id,
        })
    }

    /// The streamed chunks: one per word of the reply, or the function call whole.
    fn chunks(&self, model: &str, response_id: &str) -> Vec<Value> {
        if self.function_call.is_some() {
            return vec![self.chunk(self.parts_whole(), true, model, response_id)];
        }
        let pieces = reply_pieces(&self.reply);
        let n = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                self.chunk(json!([{ "text": piece }]), i + 1 == n, model, response_id)
            })
            .collect()
    }
}

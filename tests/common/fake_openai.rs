//! A fake OpenAI API in the test process: std threads on 127.0.0.1:0,
//! speaking the real wire format of the Chat Completions and Embeddings APIs
//! (OpenAI API reference: "The chat completion object", "The chat completion
//! chunk object", "Embeddings", "Error codes"), so the gateway's meters see
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
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub use super::upstream::RecordedRequest;

/// How long a connection waits for the gateway's next bytes.
const CONN_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head the fake accepts.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The assistant text answered until a test sets its own.
pub const DEFAULT_REPLY: &str = "Hello from the fake OpenAI server.";

/// The `x-ratelimit-limit-tokens` the fake sends on every 2xx, like OpenAI
/// does: a gateway reporting its own token limit must replace it.
pub const FAKE_TOKEN_LIMIT: u64 = 150_000_000;

/// The `x-ratelimit-limit-requests` the fake sends on every 2xx.
pub const FAKE_REQUEST_LIMIT: u64 = 30_000;

/// Length of each embedding vector the fake returns.
const EMBEDDING_DIMENSIONS: usize = 8;

/// Longest a stalled stream waits for the peer to close before giving up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// How a fake's streamed answer ends; tests of streams the provider never
/// finishes set the other variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every event, then the end of the chunked body.
    Complete,
    /// After the first `n` events the connection is closed, the body unfinished.
    CutAfter(usize),
    /// After the first `n` events nothing more is sent; the connection stays
    /// open until the peer closes it (at most [`STALL_LIMIT`]).
    StallAfter(usize),
}

impl RecordedRequest {
    /// The body as JSON (fails the test if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} body is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

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

/// An error the next requests answer with.
#[derive(Debug, Clone)]
struct Failure {
    status: u16,
    error_type: String,
    /// Whether (and how) the message repeats the credential the request carried.
    echo: Option<KeyEcho>,
}

/// How a misbehaving provider repeats the credential it received in an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEcho {
    /// The whole key, then its first 10 and last 8 characters (as OpenAI's 401 quotes
    /// fragments of a key).
    Key,
    /// The `Authorization: Bearer <key>` header line.
    AuthorizationHeader,
    /// A Google-style request URL with `?key=<key>`.
    KeyUrl,
}

impl KeyEcho {
    /// Every way of echoing, for tests that try them all.
    pub const ALL: [KeyEcho; 3] = [KeyEcho::Key, KeyEcho::AuthorizationHeader, KeyEcho::KeyUrl];

    /// The error message for a request that carried `request`'s credential.
    pub fn message(self, request: &RecordedRequest) -> String {
        let key = received_key(request);
        match self {
            KeyEcho::Key => {
                let first: String = key.chars().take(10).collect();
                let last: String = key
                    .chars()
                    .skip(key.chars().count().saturating_sub(8))
                    .collect();
                format!(
                    "Incorrect API key provided: {key}. It starts {first}... and ends ...{last}."
                )
            }
            KeyEcho::AuthorizationHeader => {
                format!("Request rejected. Headers were: Authorization: Bearer {key}; accept: */*")
            }
            KeyEcho::KeyUrl => format!(
                "Error calling POST https://generativelanguage.googleapis.com/v1beta/models/                 m:generateContent?key={key}&alt=sse"
            ),
        }
    }
}

/// The provider key a request carried, in whichever header (or `?key=`) its provider uses.
pub fn received_key(request: &RecordedRequest) -> String {
    if let Some(bearer) = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return bearer.to_string();
    }
    for name in ["api-key", "x-api-key", "x-goog-api-key"] {
        if let Some(v) = request.header(name) {
            return v.to_string();
        }
    }
    request
        .query
        .split('&')
        .find_map(|p| p.strip_prefix("key="))
        .unwrap_or_default()
        .to_string()
}

/// `Retry-After` sent with echoing 429 failures.
pub const ECHO_RETRY_AFTER_SECS: u64 = 7;

/// The extra headers of an echoing failure: `Retry-After` on a 429.
pub fn echo_failure_headers(status: u16) -> Vec<(&'static str, String)> {
    if status == 429 {
        vec![("retry-after", ECHO_RETRY_AFTER_SECS.to_string())]
    } else {
        Vec::new()
    }
}

/// An error event a fake sends in the middle of its next streamed answer: the first `after`
/// events of the answer, then the error (its message echoing the request's credential as
/// `echo` says), then the end of the body.
#[derive(Debug, Clone)]
pub struct MidStreamError {
    /// Events of the answer sent before the error.
    pub after: usize,
    /// The error's status (Gemini's `code`; the others say it by `error_type` only).
    pub status: u16,
    /// The provider's name for the error: its `type` (OpenAI, Anthropic) or gRPC status.
    pub error_type: String,
    /// How the message repeats the credential.
    pub echo: KeyEcho,
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
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<RecordedRequest>>,
    requests_changed: Condvar,
    /// Open connections, so drop can close them and the gateway sees the fake go away.
    open: Mutex<Vec<TcpStream>>,
    connections: AtomicUsize,
    served: AtomicUsize,
    /// Connections that ended (either side closed).
    closed: AtomicUsize,
    /// Answers whose writing failed because the peer went away.
    cut_short: AtomicUsize,
}

/// A running fake OpenAI server; stops accepting and closes its connections on drop.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeOpenAi {
    /// Binds 127.0.0.1:0 and starts serving with the defaults: usage 10
    /// prompt + 5 completion tokens, none cached, [`DEFAULT_REPLY`], no stream
    /// delay, no failures.
    pub fn start() -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake OpenAI");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
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
            }),
            requests: Mutex::new(Vec::new()),
            requests_changed: Condvar::new(),
            open: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            cut_short: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || accept_loop(listener, shared, stop))
        };
        FakeOpenAi {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`, for a `[[provider]] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
                error_type: error_type.to_string(),
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
                error_type: error_type.to_string(),
                echo: Some(echo),
            });
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// The last request received (fails if none).
    pub fn last_request(&self) -> RecordedRequest {
        self.requests()
            .pop()
            .expect("the fake OpenAI server has received no request")
    }

    /// Waits until at least `n` requests were received; returns whether they were.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let guard = self.shared.requests.lock().unwrap();
        let (guard, _) = self
            .shared
            .requests_changed
            .wait_timeout_while(guard, timeout, |r| r.len() < n)
            .unwrap();
        guard.len() >= n
    }

    /// How many answers were written to the end (streams included).
    pub fn answered_count(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// How many connections were accepted.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many connections have ended (closed by either side).
    pub fn closed_count(&self) -> usize {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// How many answers (typically streams) could not be written to the end
    /// because the gateway closed the connection.
    pub fn cut_short_count(&self) -> usize {
        self.shared.cut_short.load(Ordering::SeqCst)
    }

    fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.shared.behaviour.lock().unwrap()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let connection = shared.connections.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            shared.open.lock().unwrap().push(clone);
        }
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(CONN_READ_TIMEOUT));
            let _ = stream.set_nodelay(true);
            serve(stream, connection, &shared);
            shared.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// A connection's read side: the stream and what was read past the last request.
/// Shared with the other fakes (see [`FakeServer`]).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes; false at EOF or error.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A CRLF-terminated line without the CRLF.
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Exactly `n` bytes.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Writes `bytes` and flushes; false once the peer is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok() && self.stream.flush().is_ok()
    }

    /// Closes the connection in both directions now (the server's list of
    /// open connections keeps a clone, so dropping this one would not).
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Sends nothing and waits until the peer closes the connection (or
    /// `limit` passes); returns whether the peer closed it.
    pub fn wait_for_peer_close(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(50)));
        let mut scratch = [0u8; 4096];
        let closed = loop {
            if std::time::Instant::now() >= deadline {
                break false;
            }
            match self.stream.read(&mut scratch) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(Some(CONN_READ_TIMEOUT));
        closed
    }

    /// Reads one request; None at EOF or on bytes that are not a request.
    pub fn read_request(&mut self, connection: usize) -> Option<RecordedRequest> {
        let head_len = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > MAX_HEAD_BYTES || !self.fill() {
                return None;
            }
        };
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut fields);
        let Ok(httparse::Status::Complete(_)) = parsed.parse(&self.buf[..head_len]) else {
            return None;
        };
        let method = parsed.method?.to_string();
        let target = parsed.path?.to_string();
        let version = parsed.version?;
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect();
        self.buf.drain(..head_len);

        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let chunked = value("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        if chunked {
            // RFC 9112 section 7.1: chunk-size [ext] CRLF data CRLF ... 0 CRLF trailers CRLF.
            loop {
                let line = String::from_utf8_lossy(&self.line()?).into_owned();
                let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    loop {
                        let line = self.line()?;
                        if line.is_empty() {
                            break;
                        }
                        let line = String::from_utf8_lossy(&line).into_owned();
                        if let Some((n, v)) = line.split_once(':') {
                            trailers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    break;
                }
                body.extend_from_slice(&self.take(size)?);
                if self.take(2)? != b"\r\n" {
                    return None;
                }
            }
        } else {
            let length = value("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            body = self.take(length)?;
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        Some(RecordedRequest {
            method,
            target,
            path,
            query,
            version,
            headers,
            body_len: body.len() as u64,
            body,
            trailers,
            connection,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn serve(stream: TcpStream, connection: usize, shared: &Shared) {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    while let Some(request) = conn.read_request(connection) {
        // RFC 9112 section 9.3: HTTP/1.1 persists unless either side says close.
        let keep_alive = request.version >= 1 && !request.header_has_token("connection", "close");
        let (answer, failure) = {
            let mut behaviour = shared.behaviour.lock().unwrap();
            let failure = behaviour.failures.pop_front();
            let mut snapshot = Snapshot::of(&behaviour);
            snapshot.stream_error = behaviour.stream_error.take().map(|e| {
                let body = error_body(&e.error_type, &e.echo.message(&request));
                (e.after, format!("data: {body}\n\n").into_bytes())
            });
            (snapshot, failure)
        };
        {
            let mut requests = shared.requests.lock().unwrap();
            requests.push(request.clone());
            shared.requests_changed.notify_all();
        }
        let ordinal = shared.requests.lock().unwrap().len();
        let ok = match failure {
            Some(Failure {
                status,
                error_type,
                echo: Some(echo),
            }) => {
                let body = error_body(&error_type, &echo.message(&request));
                let headers = echo_failure_headers(status);
                send_json(&mut conn, status, &body, keep_alive, &headers)
            }
            Some(failure) => {
                let body = error_body(&failure.error_type, "The fake was told to fail.");
                send_json(&mut conn, failure.status, &body, keep_alive, &[])
            }
            None => answer.respond(&mut conn, &request, ordinal, keep_alive),
        };
        if !ok {
            shared.cut_short.fetch_add(1, Ordering::SeqCst);
            return;
        }
        shared.served.fetch_add(1, Ordering::SeqCst);
        if !keep_alive {
            return;
        }
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
        if request.header("api-key").is_none_or(str::is_empty) {
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

/// `keep-alive` or `close`, for a `Connection` header.
pub fn connection_token(keep_alive: bool) -> &'static str {
    if keep_alive {
        "keep-alive"
    } else {
        "close"
    }
}

/// `HTTP/1.1 {status} {reason}` with its CRLF.
pub fn status_line(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    };
    format!("HTTP/1.1 {status} {reason}\r\n")
}

/// Writes a JSON answer with Content-Length; returns whether it was sent.
pub fn send_json(
    conn: &mut Conn,
    status: u16,
    body: &Value,
    keep_alive: bool,
    extra: &[(&str, String)],
) -> bool {
    let body = serde_json::to_vec(body).unwrap();
    let mut head = status_line(status);
    head.push_str("Content-Type: application/json\r\n");
    head.push_str(&format!("x-request-id: req_fake{}\r\n", unix_now()));
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        connection_token(keep_alive)
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    conn.send(&bytes)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The serving loop shared with the other fakes (Anthropic, Gemini)
// ---------------------------------------------------------------------------

/// Writes a `200 text/event-stream` answer, chunked, one HTTP chunk per
/// event, pausing `delay` before every event after the first; `extra` headers
/// go in the head. Returns whether every byte was sent.
pub fn send_event_stream(
    conn: &mut Conn,
    events: &[Vec<u8>],
    delay: Duration,
    keep_alive: bool,
    extra: &[(&str, String)],
) -> bool {
    send_event_stream_ending(conn, events, delay, keep_alive, extra, StreamEnd::Complete)
}

/// [`send_event_stream`], ending as `end` says: complete, cut (the
/// connection closed after some events) or stalled (nothing more sent until
/// the peer closes). Returns whether every byte was sent.
pub fn send_event_stream_ending(
    conn: &mut Conn,
    events: &[Vec<u8>],
    delay: Duration,
    keep_alive: bool,
    extra: &[(&str, String)],
    end: StreamEnd,
) -> bool {
    let mut head = status_line(200);
    head.push_str(
        "Content-Type: text/event-stream; charset=utf-8\r\n\
         Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n",
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Connection: {}\r\n\r\n",
        connection_token(keep_alive)
    ));
    if !conn.send(head.as_bytes()) {
        return false;
    }
    for (i, event) in events.iter().enumerate() {
        match end {
            StreamEnd::CutAfter(n) if i == n => {
                conn.close();
                return false;
            }
            StreamEnd::StallAfter(n) if i == n => {
                conn.wait_for_peer_close(STALL_LIMIT);
                conn.close();
                return false;
            }
            _ => {}
        }
        if i > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut chunk = format!("{:x}\r\n", event.len()).into_bytes();
        chunk.extend_from_slice(event);
        chunk.extend_from_slice(b"\r\n");
        if !conn.send(&chunk) {
            return false;
        }
    }
    conn.send(b"0\r\n\r\n")
}

/// Answers one request: writes the whole answer on the connection and returns
/// whether the connection is still usable. Arguments: the connection, the
/// request, its 1-based ordinal among all requests the server received, and
/// whether the connection stays open afterwards.
pub type Handler = dyn Fn(&mut Conn, &RecordedRequest, usize, bool) -> bool + Send + Sync;

/// What the serving threads share.
struct Core {
    handler: Box<Handler>,
    requests: Mutex<Vec<RecordedRequest>>,
    requests_changed: Condvar,
    open: Mutex<Vec<TcpStream>>,
    connections: AtomicUsize,
    served: AtomicUsize,
    closed: AtomicUsize,
    cut_short: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1:0 with one thread per
/// connection that records every request and lets a [`Handler`] answer it;
/// stops accepting and closes its connections on drop. The fakes of other
/// providers are built on it.
pub struct FakeServer {
    addr: SocketAddr,
    core: Arc<Core>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Binds 127.0.0.1:0 and serves every request with `handler`.
    pub fn start(handler: Box<Handler>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let addr = listener.local_addr().unwrap();
        let core = Arc::new(Core {
            handler,
            requests: Mutex::new(Vec::new()),
            requests_changed: Condvar::new(),
            open: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            cut_short: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let core = core.clone();
            let stop = stop.clone();
            std::thread::spawn(move || core_accept_loop(listener, core, stop))
        };
        FakeServer {
            addr,
            core,
            stop,
            accept: Some(accept),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core.requests.lock().unwrap().clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.core.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests were received; returns whether they were.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let guard = self.core.requests.lock().unwrap();
        let (guard, _) = self
            .core
            .requests_changed
            .wait_timeout_while(guard, timeout, |r| r.len() < n)
            .unwrap();
        guard.len() >= n
    }

    /// The last request received (fails if none).
    pub fn last_request(&self) -> RecordedRequest {
        self.requests()
            .pop()
            .expect("the fake server has received no request")
    }

    /// How many answers were written to the end (streams included).
    pub fn answered_count(&self) -> usize {
        self.core.served.load(Ordering::SeqCst)
    }

    /// How many connections were accepted.
    pub fn connection_count(&self) -> usize {
        self.core.connections.load(Ordering::SeqCst)
    }

    /// How many connections have ended (closed by either side).
    pub fn closed_count(&self) -> usize {
        self.core.closed.load(Ordering::SeqCst)
    }

    /// How many answers could not be written to the end because the peer
    /// closed the connection.
    pub fn cut_short_count(&self) -> usize {
        self.core.cut_short.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self.core.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn core_accept_loop(listener: TcpListener, core: Arc<Core>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let connection = core.connections.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            core.open.lock().unwrap().push(clone);
        }
        let core = core.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(CONN_READ_TIMEOUT));
            let _ = stream.set_nodelay(true);
            core_serve(Conn::new(stream), connection, &core);
            core.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

fn core_serve(mut conn: Conn, connection: usize, core: &Core) {
    while let Some(request) = conn.read_request(connection) {
        // RFC 9112 section 9.3: HTTP/1.1 persists unless either side says close.
        let keep_alive = request.version >= 1 && !request.header_has_token("connection", "close");
        let ordinal = {
            let mut requests = core.requests.lock().unwrap();
            requests.push(request.clone());
            core.requests_changed.notify_all();
            requests.len()
        };
        if !(core.handler)(&mut conn, &request, ordinal, keep_alive) {
            core.cut_short.fetch_add(1, Ordering::SeqCst);
            return;
        }
        core.served.fetch_add(1, Ordering::SeqCst);
        if !keep_alive {
            return;
        }
    }
}

//! The one server skeleton every fake provider is built on: std threads on
//! 127.0.0.1:0, one per connection, that read HTTP/1.1 requests, record every
//! one of them, and let the provider's handler write the answer.
//!
//! Also here, because every provider's fake needs them: the pieces of an
//! answer (status line, JSON and event-stream writers), and failure injection
//! (errors queued for the next requests, errors that echo the credential, a
//! stream broken off mid-way). What each provider answers lives in its own
//! module (`fake_openai`, `fake_anthropic`, `fake_gemini`).
//!
//! The order of work per request is fixed: the handler's *plan* (what the
//! fake's settings say about this request) is read first, then the request is
//! recorded, then the answer is written. So a test that sees a request
//! recorded and then changes the fake's settings changes only later requests.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use super::upstream::RecordedRequest;

/// How long a connection waits for the gateway's next bytes.
const CONN_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head the fake accepts.
const MAX_HEAD_BYTES: usize = 64 * 1024;

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

/// An error a fake answers the next requests with, instead of their normal answer.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// The provider's name for the error: its `type` (OpenAI, Anthropic) or
    /// its status name (Gemini).
    pub name: String,
    /// Whether (and how) the message repeats the credential the request carried.
    pub echo: Option<KeyEcho>,
}

/// A connection's read side: the stream and what was read past the last request.
/// Handlers write their answers through it.
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

/// Serves one request: gets the connection, the request, a function that
/// records the request and returns its ordinal, and whether the connection
/// stays open; returns whether the connection is still usable.
type Serve = dyn Fn(&mut Conn, &RecordedRequest, &dyn Fn() -> usize, bool) -> bool + Send + Sync;

/// What the serving threads share.
struct Core {
    serve: Box<Serve>,
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

/// A keep-alive HTTP/1.1 server on 127.0.0.1:0 with one thread per
/// connection that records every request and lets a handler answer it;
/// stops accepting and closes its connections on drop. Every fake provider
/// is built on it, and a test can start one with its own [`Handler`].
pub struct FakeServer {
    addr: SocketAddr,
    core: Arc<Core>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Binds 127.0.0.1:0 and serves every request with `handler`, called
    /// after the request is recorded.
    pub fn start(handler: Box<Handler>) -> FakeServer {
        FakeServer::start_planned(
            |_| (),
            move |conn, request, (), ordinal, keep_alive| {
                handler(conn, request, ordinal, keep_alive)
            },
        )
    }

    /// Binds 127.0.0.1:0 and serves every request in two steps: `plan` reads
    /// what the fake's settings say about the request *before* it is recorded
    /// (taking queued failures, copying the reply), then `answer` writes the
    /// answer with that plan, the request's ordinal and whether the connection
    /// stays open. The order keeps settings a test changes after seeing a
    /// request recorded from reaching that request.
    pub fn start_planned<P>(
        plan: impl Fn(&RecordedRequest) -> P + Send + Sync + 'static,
        answer: impl Fn(&mut Conn, &RecordedRequest, P, usize, bool) -> bool + Send + Sync + 'static,
    ) -> FakeServer {
        let serve: Box<Serve> = Box::new(move |conn, request, record, keep_alive| {
            let planned = plan(request);
            let ordinal = record();
            answer(conn, request, planned, ordinal, keep_alive)
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let addr = listener.local_addr().unwrap();
        let core = Arc::new(Core {
            serve,
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
            std::thread::spawn(move || accept_loop(listener, core, stop))
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

fn accept_loop(listener: TcpListener, core: Arc<Core>, stop: Arc<AtomicBool>) {
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
            serve(Conn::new(stream), connection, &core);
            core.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

fn serve(mut conn: Conn, connection: usize, core: &Core) {
    while let Some(request) = conn.read_request(connection) {
        // RFC 9112 section 9.3: HTTP/1.1 persists unless either side says close.
        let keep_alive = request.version >= 1 && !request.header_has_token("connection", "close");
        let record = || {
            let mut requests = core.requests.lock().unwrap();
            requests.push(request.clone());
            core.requests_changed.notify_all();
            requests.len()
        };
        if !(core.serve)(&mut conn, &request, &record, keep_alive) {
            core.cut_short.fetch_add(1, Ordering::SeqCst);
            return;
        }
        core.served.fetch_add(1, Ordering::SeqCst);
        if !keep_alive {
            return;
        }
    }
}

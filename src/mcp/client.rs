//! The gateway as an MCP client of each `[[mcp_server]]`: Streamable HTTP requests with the
//! server's credential, its session managed here so clients never see it.
//!
//! Each worker keeps its own session per server ([`SESSIONS`], a thread-local: workers share
//! nothing on the hot path). A session is opened lazily by the first request that needs it
//! (`initialize`, then `notifications/initialized`), and opened again when the server answers
//! 404 to its id (the server restarted, or expired the session). A server that cannot be
//! reached fails only the calls that go to it.
//!
//! Every request gets an id unique in its worker ([`next_id`]): clients' ids may collide
//! within one shared upstream session, and the gateway puts the client's id back on the
//! answer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::jsonrpc;
use super::McpServer;
use crate::ai::SseParser;
use crate::error::GatewayError;
use crate::http1::{push_header, StrBuf};
use crate::pipeline::exchange::{self, BodyDecoder, Exchange};
use crate::pipeline::ThreadState;
use crate::snapshot::RequestBounds;

/// Largest answer read whole from a server (a JSON body): a tool's result included.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Largest event of a server's event stream (one message: a result, a notification).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Most bytes read from one event stream, all events together (a server flooding
/// notifications is cut off).
pub const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// The revision the gateway asks servers for.
const UPSTREAM_REVISION: &str = "2025-11-25";

/// Why a request to a server got no answer the client can be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not reachable, timed out or cut the answer short.
    Unavailable(&'static str),
    /// Refused the gateway's credential (401/403).
    CredentialRefused,
    /// Answered something the gateway will not relay (too large, not MCP).
    Bad(&'static str),
    /// A bound of the gateway's own (no credential to send).
    Gateway(&'static str),
}

impl CallError {
    /// The reason shown to the client (nothing of the server's own answer, which might echo
    /// a credential).
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Unavailable(why) | CallError::Bad(why) | CallError::Gateway(why) => why,
            CallError::CredentialRefused => "the server refused the gateway's credential",
        }
    }

    /// The `outcome` label of the metrics and the log.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Unavailable(_) => "unavailable",
            CallError::CredentialRefused => "credential_refused",
            CallError::Bad(_) | CallError::Gateway(_) => "upstream_error",
        }
    }
}

/// Longest wait for an event stream's end after its response (see
/// [`Pending::finish_after_end`]); past it the connection is closed rather than reused.
pub const END_WAIT: Duration = Duration::from_millis(20);

/// Most bytes read after a response while waiting for its stream's end.
const MAX_TRAILING_BYTES: usize = 64 * 1024;

/// One worker's session with one server.
#[derive(Debug, Clone)]
struct UpstreamSession {
    /// The server's `Mcp-Session-Id` (`None` for a stateless server).
    id: Option<String>,
    /// The revision the server settled on.
    revision: String,
    /// The `capabilities` the server reported at `initialize`.
    capabilities: Value,
}

thread_local! {
    /// This worker's sessions, by [`McpServer::session_key`].
    static SESSIONS: RefCell<HashMap<String, UpstreamSession>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// A fresh request id for this worker.
fn next_id() -> u64 {
    NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    })
}

fn session_of(server: &McpServer) -> Option<UpstreamSession> {
    SESSIONS.with(|s| s.borrow().get(&server.session_key).cloned())
}

fn forget_session(server: &McpServer) {
    SESSIONS.with(|s| s.borrow_mut().remove(&server.session_key));
}

/// One step of a server's answer.
#[derive(Debug)]
pub enum Step {
    /// A notification (progress, log) sent while the request runs.
    Notification(Value),
    /// The response to the request (the server's `id` still on it).
    Response(Value),
}

/// A request sent, its answer being read.
pub struct Pending {
    /// Upstream id of the request.
    pub id: u64,
    source: Source,
    deadline: Instant,
}

enum Source {
    /// The whole answer was one JSON body.
    Whole(Option<Value>),
    /// An event stream.
    Events(Box<EventStream>),
}

struct EventStream {
    exchange: Exchange,
    decoder: BodyDecoder,
    parser: SseParser,
    read: usize,
    upstream: Arc<crate::upstream::Upstream>,
}

impl Pending {
    /// The next notification, or the response; `Err` when the server fails before it.
    pub async fn next(&mut self) -> Result<Step, CallError> {
        match &mut self.source {
            Source::Whole(value) => match value.take() {
                Some(v) => Ok(Step::Response(v)),
                None => Err(CallError::Bad("no response")),
            },
            Source::Events(stream) => loop {
                while let Some(event) = stream.parser.next_event() {
                    if !event.has_data {
                        continue;
                    }
                    if !jsonrpc::depth_within(event.data.as_bytes(), jsonrpc::MAX_DEPTH) {
                        return Err(CallError::Bad("an event nested too deep"));
                    }
                    let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                        return Err(CallError::Bad("an event that is not JSON"));
                    };
                    let is_ours = message.get("id").and_then(Value::as_u64) == Some(self.id)
                        && message.get("method").is_none();
                    if is_ours {
                        return Ok(Step::Response(message));
                    }
                    // Requests from the server (sampling, elicitation) cannot be routed to a
                    // client through an aggregating gateway; only notifications are relayed.
                    if message.get("id").is_none() && message.get("method").is_some() {
                        return Ok(Step::Notification(message));
                    }
                }
                let left = self.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CallError::Unavailable("the server did not answer in time"));
                }
                let mut chunk = Vec::new();
                let more = stream
                    .decoder
                    .next(&mut stream.exchange.conn, &mut chunk, left)
                    .await
                    .map_err(|_| CallError::Unavailable("the server cut its answer short"))?;
                if !more {
                    return Err(CallError::Unavailable(
                        "the server ended its answer without a response",
                    ));
                }
                stream.read += chunk.len();
                if stream.read > MAX_STREAM_BYTES {
                    return Err(CallError::Bad(
                        "the server's answer is larger than the gateway relays",
                    ));
                }
                stream
                    .parser
                    .push(&chunk)
                    .map_err(|_| CallError::Bad("an event larger than the gateway relays"))?;
            },
        }
    }

    /// Reads to the response, dropping notifications.
    pub async fn response(mut self, worker: &ThreadState) -> Result<Value, CallError> {
        loop {
            if let Step::Response(v) = self.next().await? {
                self.finish(worker);
                return Ok(v);
            }
        }
    }

    /// Waits a little ([`END_WAIT`]) for the end of an event stream whose response arrived,
    /// then returns the connection to the pool when the stream ended, else closes it. A
    /// server writes the stream's end just after the response, often in a write of its own,
    /// so [`Pending::finish`] alone would close most connections; call this once the
    /// client has its answer.
    pub async fn finish_after_end(self, worker: &ThreadState) {
        let Source::Events(stream) = self.source else {
            return;
        };
        let mut stream = *stream;
        let until = Instant::now() + END_WAIT;
        let mut trailing = 0;
        let done = loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || trailing > MAX_TRAILING_BYTES {
                break false;
            }
            let mut chunk = Vec::new();
            match stream
                .decoder
                .next(&mut stream.exchange.conn, &mut chunk, left)
                .await
            {
                Ok(false) => break true,
                Ok(true) => trailing += chunk.len(),
                Err(_) => break false,
            }
        };
        stream.exchange.finish(worker, &stream.upstream, done);
    }

    /// Returns the connection to the pool when the answer ended cleanly (an event stream
    /// still open is closed: its server may still write to it).
    pub fn finish(self, worker: &ThreadState) {
        if let Source::Events(stream) = self.source {
            let mut stream = *stream;
            // A server ends the stream right after the response, usually in the same read:
            // when its end is already here the connection is reused, else it is closed.
            let done = stream.decoder.take_buffered(&mut stream.exchange.conn);
            stream.exchange.finish(worker, &stream.upstream, done);
        }
    }
}

/// Sends `method` with `params` to `server` in this worker's session (opened first when
/// there is none; opened again once when the server no longer knows it).
pub async fn request(
    worker: &ThreadState,
    server: &McpServer,
    method: &str,
    params: Map<String, Value>,
) -> Result<Pending, CallError> {
    request_within(worker, server, method, params, server.timeout).await
}

/// [`request`] with the whole answer due within `wait` (at most the server's `timeout_ms`).
pub async fn request_within(
    worker: &ThreadState,
    server: &McpServer,
    method: &str,
    params: Map<String, Value>,
    wait: Duration,
) -> Result<Pending, CallError> {
    let deadline = Instant::now() + server.timeout.min(wait);
    let mut reopened = false;
    loop {
        let session = match session_of(server) {
            Some(s) => s,
            None => {
                reopened = true;
                open_session(worker, server, deadline).await?
            }
        };
        let id = next_id();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        match send(worker, server, &body, Some(&session), deadline).await {
            Err(Sent::Status(404)) if session.id.is_some() && !reopened => {
                // The server forgot the session (it restarted): a new one, once.
                forget_session(server);
                reopened = true;
            }
            Err(Sent::Status(401 | 403)) => {
                if let Some(source) = server.upstream.token_source() {
                    source.request_refresh();
                }
                return Err(CallError::CredentialRefused);
            }
            Err(Sent::Status(_)) => {
                return Err(CallError::Bad("the server answered an HTTP error"))
            }
            Err(Sent::Failed(e)) => {
                // Unreachable or broken: the next call starts a new session.
                forget_session(server);
                return Err(e);
            }
            Ok(source) => {
                return Ok(Pending {
                    id,
                    source,
                    deadline,
                })
            }
        }
    }
}

/// Sends a notification (no answer awaited beyond its status) in this worker's session, if
/// it has one with `server` (a notification about a request belongs to that request's
/// session; `session_id` names it when known).
pub async fn notify(
    worker: &ThreadState,
    server: &McpServer,
    message: &Value,
    session_id: Option<&str>,
    revision: &str,
) -> Result<(), CallError> {
    let session = UpstreamSession {
        id: session_id.map(str::to_string),
        revision: revision.to_string(),
        capabilities: Value::Null,
    };
    let deadline = Instant::now() + server.timeout.min(Duration::from_secs(10));
    match send(worker, server, message, Some(&session), deadline).await {
        Ok(_) => Ok(()),
        Err(Sent::Status(_)) => Err(CallError::Bad("the server refused the notification")),
        Err(Sent::Failed(e)) => Err(e),
    }
}

/// The `capabilities` `server` reported when this worker's session with it opened (the
/// session is opened first when there is none), waiting at most `wait`.
pub async fn capabilities(
    worker: &ThreadState,
    server: &McpServer,
    wait: Duration,
) -> Result<Value, CallError> {
    if let Some(session) = session_of(server) {
        return Ok(session.capabilities);
    }
    let deadline = Instant::now() + server.timeout.min(wait);
    open_session(worker, server, deadline)
        .await
        .map(|s| s.capabilities)
}

/// This worker's session id and revision with `server`, for a cancellation sent later.
pub fn current_session(server: &McpServer) -> (Option<String>, String) {
    session_of(server)
        .map(|s| (s.id, s.revision))
        .unwrap_or((None, UPSTREAM_REVISION.to_string()))
}

/// `initialize` and `notifications/initialized`; the session is kept for this worker.
async fn open_session(
    worker: &ThreadState,
    server: &McpServer,
    deadline: Instant,
) -> Result<UpstreamSession, CallError> {
    let id = next_id();
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": UPSTREAM_REVISION,
            "capabilities": {},
            "clientInfo": {"name": "credentialflow", "version": env!("CARGO_PKG_VERSION")},
        },
    });
    let (source, session_id) = match send_capturing(worker, server, &body, None, deadline).await {
        Ok(sent) => sent,
        Err(Sent::Status(401 | 403)) => return Err(CallError::CredentialRefused),
        Err(Sent::Status(_)) => return Err(CallError::Bad("the server refused initialize")),
        Err(Sent::Failed(e)) => return Err(e),
    };
    let pending = Pending {
        id,
        source,
        deadline,
    };
    let answer = pending.response(worker).await?;
    let revision = answer
        .pointer("/result/protocolVersion")
        .and_then(Value::as_str)
        .ok_or(CallError::Bad(
            "the server's initialize answer has no protocolVersion",
        ))?
        .to_string();
    let capabilities = answer
        .pointer("/result/capabilities")
        .cloned()
        .unwrap_or(Value::Null);
    let session = UpstreamSession {
        id: session_id,
        revision,
        capabilities,
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    match send(worker, server, &initialized, Some(&session), deadline).await {
        Ok(_) => {}
        Err(Sent::Status(_)) => {
            return Err(CallError::Bad(
                "the server refused notifications/initialized",
            ))
        }
        Err(Sent::Failed(e)) => return Err(e),
    }
    SESSIONS.with(|s| {
        s.borrow_mut()
            .insert(server.session_key.clone(), session.clone())
    });
    Ok(session)
}

/// What a POST came back with, when not an answer.
enum Sent {
    /// An HTTP status other than 200/202.
    Status(u16),
    Failed(CallError),
}

async fn send(
    worker: &ThreadState,
    server: &McpServer,
    body: &Value,
    session: Option<&UpstreamSession>,
    deadline: Instant,
) -> Result<Source, Sent> {
    send_capturing(worker, server, body, session, deadline)
        .await
        .map(|(source, _)| source)
}

/// POSTs `body` and reads the answer's head; the answer's `Mcp-Session-Id` is returned
/// beside it.
async fn send_capturing(
    worker: &ThreadState,
    server: &McpServer,
    body: &Value,
    session: Option<&UpstreamSession>,
    deadline: Instant,
) -> Result<(Source, Option<String>), Sent> {
    let payload =
        serde_json::to_vec(body).map_err(|_| Sent::Failed(CallError::Gateway("unencodable")))?;
    let upstream = &server.upstream;
    if upstream
        .token_source()
        .is_some_and(|s| s.current().is_none())
    {
        return Err(Sent::Failed(CallError::Gateway(
            "the gateway has no credential for the server yet",
        )));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let bounds = RequestBounds {
        max_header_bytes: 32 * 1024,
        max_body_bytes: 0,
        header_timeout: left,
        idle_timeout: left,
        upstream_connect_timeout: left.min(Duration::from_secs(10)),
        upstream_timeout: left,
        merge_slashes: false,
    };
    let sent = exchange::send(worker, upstream, &bounds, |target| {
        request_bytes(server, &target.authority, &payload, session)
    })
    .await;
    let mut exchange = match sent {
        Ok(e) => e,
        Err(GatewayError::UpstreamTimeout) => {
            return Err(Sent::Failed(CallError::Unavailable(
                "the server did not answer in time",
            )))
        }
        Err(_) => {
            return Err(Sent::Failed(CallError::Unavailable(
                "the server is unreachable",
            )))
        }
    };
    let status = exchange.response.status();
    let session_id = exchange
        .response
        .header("mcp-session-id")
        .filter(|v| v.len() <= 256 && v.iter().all(|b| (0x21..=0x7e).contains(b)))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let content_type = exchange
        .response
        .header("content-type")
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        .unwrap_or_default();
    if status == 202 {
        let _ = exchange::read_response_body(&mut exchange, "POST", 64 * 1024, left).await;
        exchange.finish(worker, upstream, true);
        return Ok((Source::Whole(None), session_id));
    }
    if status != 200 {
        // The body is not read (it may be anything): the connection is not reused.
        return Err(Sent::Status(status));
    }
    if content_type.starts_with("text/event-stream") {
        let decoder = BodyDecoder::new(exchange.response.body("POST"));
        return Ok((
            Source::Events(Box::new(EventStream {
                exchange,
                decoder,
                parser: SseParser::new(MAX_EVENT_BYTES),
                read: 0,
                upstream: Arc::clone(upstream),
            })),
            session_id,
        ));
    }
    let whole = exchange::read_response_body(&mut exchange, "POST", MAX_ANSWER_BYTES, left).await;
    let whole = match whole {
        Ok(b) => b,
        Err(GatewayError::Upstream("response body too large")) => {
            return Err(Sent::Failed(CallError::Bad(
                "the server's answer is larger than the gateway relays",
            )))
        }
        Err(_) => {
            return Err(Sent::Failed(CallError::Unavailable(
                "the server cut its answer short",
            )))
        }
    };
    exchange.finish(worker, upstream, true);
    if !jsonrpc::depth_within(&whole, jsonrpc::MAX_DEPTH) {
        return Err(Sent::Failed(CallError::Bad("an answer nested too deep")));
    }
    let value = serde_json::from_slice::<Value>(&whole)
        .map_err(|_| Sent::Failed(CallError::Bad("an answer that is not JSON")))?;
    Ok((Source::Whole(Some(value)), session_id))
}

/// The POST toward `server`: its credential injected, the client's never (the request is
/// composed here from nothing of the client's headers).
fn request_bytes(
    server: &McpServer,
    authority: &str,
    body: &[u8],
    session: Option<&UpstreamSession>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 512);
    let _ = write!(
        StrBuf(&mut out),
        "POST {} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n",
        server.target,
        body.len()
    );
    if let Some(session) = session {
        if let Some(id) = &session.id {
            push_header(&mut out, "mcp-session-id", id.as_bytes());
        }
        push_header(
            &mut out,
            "mcp-protocol-version",
            session.revision.as_bytes(),
        );
    }
    if let Some((name, value)) = server.upstream.credential_header() {
        push_header(&mut out, name, value.as_bytes());
    }
    if let Some(current) = server.upstream.token_source().and_then(|s| s.current()) {
        out.extend_from_slice(b"authorization: Bearer ");
        out.extend_from_slice(current.credential.expose().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

//! A small blocking HTTP/1.1 server side for the admin listener: read one request (head with
//! the gateway's strict [`HeadParser`], body by `Content-Length`), write one response, keep the
//! connection alive.
//!
//! The head is held to the same grammar and framing rules as the data plane's (one parser, so
//! one answer to every smuggling shape), with two differences for a server that answers for a
//! single host: Host is optional, and a head carries at most [`MAX_HEADERS`] fields.
//!
//! The admin API is low-volume and off the hot path, so plain blocking sockets are enough.
//! Reads poll with a short socket timeout so the connection notices shutdown and its deadlines
//! without a second thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::http1::{BodyFraming, HeadParser, RequestHead};

/// Bounds on what one admin connection may cost. Every deadline is cheap to keep: reads wake
/// every [`Limits::poll_interval`] to check it.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Largest request head (request line and headers).
    pub max_head_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time a new connection may take to send its first byte. Short: a connection that says
    /// nothing holds a slot for nothing.
    pub first_byte_timeout: Duration,
    /// Time allowed for a whole request head: from the accept for a connection's first
    /// request, from the request's first byte for later ones. A head trickled a byte at a
    /// time (slow loris) is cut here however steady the trickle.
    pub head_timeout: Duration,
    /// Time allowed for a whole request (head and body) from its first byte.
    pub request_timeout: Duration,
    /// Time a keep-alive connection may sit after an answer without starting a request.
    pub idle_timeout: Duration,
    /// Time allowed for writing one response to a client that does not read.
    pub write_timeout: Duration,
    /// How often a blocked read wakes up to check shutdown and deadlines.
    pub poll_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 32 * 1024,
            max_body_bytes: 1024 * 1024,
            first_byte_timeout: Duration::from_secs(2),
            head_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// How long [`Connection::linger_close`] keeps reading after a rejection.
const LINGER: Duration = Duration::from_secs(1);

/// Most headers accepted in one request head; more is 431. Well below the data plane's cap:
/// admin clients send a handful.
const MAX_HEADERS: usize = 64;

/// A parsed admin request.
#[derive(Debug)]
pub(crate) struct Request {
    /// The method as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub method: String,
    /// The request target's path, without the query.
    pub path: String,
    /// The query string after `?`, if any.
    pub query: Option<String>,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, exactly `Content-Length` bytes.
    pub body: Vec<u8>,
    /// Whether the client lets the connection stay open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response ready to be written.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header fields (`allow`, `www-authenticate`, ...).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
}

/// Why no request could be read from a connection.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed, went idle past the idle timeout, or shutdown began between
    /// requests: close without answering.
    Closed,
    /// The request is unacceptable: answer with this status, then close, because the rest of
    /// the byte stream can no longer be trusted as request boundaries (RFC 9112 §11.2).
    Reject { status: u16, message: &'static str },
}

/// One client connection and the bytes read from it but not yet consumed (a pipelined next
/// request may already be there).
pub(crate) struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When the connection was accepted: the first request's deadlines count from here.
    accepted_at: Instant,
    /// Requests read so far.
    requests_read: usize,
    /// Resumes the head in progress across reads, so a trickled head is scanned once.
    parser: HeadParser,
}

impl Connection {
    /// Wraps an accepted stream, in blocking mode with the limits' socket timeouts.
    pub fn new(stream: TcpStream, limits: &Limits) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(limits.poll_interval))?;
        stream.set_write_timeout(Some(limits.write_timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
            accepted_at: Instant::now(),
            requests_read: 0,
            parser: head_parser(),
        })
    }

    /// Reads the next request. Between requests, a set `shutdown` flag ends the connection.
    pub fn read_request(
        &mut self,
        limits: &Limits,
        shutdown: &AtomicBool,
    ) -> Result<Request, ReadError> {
        let first = self.requests_read == 0;
        // Until the request's first byte: silence past this closes without an answer.
        let wait_deadline = if first {
            self.accepted_at + limits.first_byte_timeout
        } else {
            Instant::now() + limits.idle_timeout
        };
        // The first request's head counts from the accept, so waiting and trickling share
        // one budget; a later request's head counts from its first byte (set below).
        let mut head_deadline = first.then(|| self.accepted_at + limits.head_timeout);
        // From the request's first byte: the whole request, head and body.
        let mut request_deadline = None;
        // Leftover pipelined bytes mean the next request has already started.
        if !self.buf.is_empty() {
            let now = Instant::now();
            request_deadline = Some(now + limits.request_timeout);
            head_deadline.get_or_insert(now + limits.head_timeout);
        }

        let (head, head_len) = loop {
            // The parser answers 431 for a head past `max_head_bytes` even before it ends.
            if !self.buf.is_empty() {
                if let Some(parsed) = parse_head(&mut self.parser, &self.buf, limits)? {
                    break parsed;
                }
            }
            let idle = request_deadline.is_none();
            let deadline = request_deadline.unwrap_or(wait_deadline);
            let deadline = head_deadline.map_or(deadline, |head| head.min(deadline));
            self.fill(deadline, idle, shutdown)?;
            if request_deadline.is_none() {
                let now = Instant::now();
                request_deadline = Some(now + limits.request_timeout);
                head_deadline.get_or_insert(now + limits.head_timeout);
            }
        };

        let body_len = body_length(head.body(), limits.max_body_bytes)?;
        let end = head_len + body_len;
        if head.expects_continue() && body_len > 0 && self.buf.len() < end {
            // RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` waits for this
            // interim response before sending the body.
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| ReadError::Closed)?;
        }
        let deadline = request_deadline.unwrap_or(wait_deadline);
        while self.buf.len() < end {
            self.fill(deadline, false, shutdown)?;
        }
        let body = self.buf[head_len..end].to_vec();
        self.buf.drain(..end);
        self.requests_read += 1;

        Ok(Request::new(&head, body))
    }

    /// Writes a complete response. `head_only` leaves the body out (answers to HEAD).
    pub fn write_response(
        &mut self,
        response: &Response,
        request_id: &str,
        head_only: bool,
    ) -> io::Result<()> {
        let mut out = Vec::with_capacity(256 + response.body.len());
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\ncontent-type: {}\r\nx-request-id: {request_id}\r\ncache-control: no-store\r\n",
                response.status,
                crate::error::reason_phrase(response.status),
                response.content_type,
            )
            .as_bytes(),
        );
        // RFC 9110 §8.6: no Content-Length on a 204.
        if response.status != 204 {
            out.extend_from_slice(
                format!("content-length: {}\r\n", response.body.len()).as_bytes(),
            );
        }
        for (name, value) in &response.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if response.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&response.body);
        }
        self.write_all(&out)
    }

    /// Closes after a rejection without destroying the response: shut our sending side, then
    /// read and drop what the client is still sending (at most `max_bytes`, for at most a
    /// second). Closing with unread input makes the kernel send a reset, which can discard the
    /// response before the client reads it (RFC 9112 §9.6).
    pub fn linger_close(mut self, max_bytes: usize) {
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut discarded = 0;
        let mut chunk = [0u8; 8192];
        while Instant::now() < deadline && discarded < max_bytes {
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => discarded += n,
                Err(e) if is_retryable(&e) => {}
                Err(_) => return,
            }
        }
    }

    /// Writes bytes as they are: a response whose body is streamed (`/admin/live`) writes
    /// its own head and then its events through this.
    ///
    /// All of `bytes` must go within the write timeout in total, not per system call: the
    /// socket's timeout restarts whenever a call makes any progress, and a client that
    /// stopped reading still lets a few bytes through now and then (the kernel grows the
    /// send buffer on each window probe), which kept a stalled stream alive for many
    /// timeouts. Fails with `TimedOut` past it.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(timeout) = self.stream.write_timeout()? else {
            return self.write_all(bytes);
        };
        let deadline = Instant::now() + timeout;
        let mut rest = bytes;
        let written = loop {
            if rest.is_empty() {
                break Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read too slowly",
                ));
            }
            // The remaining time, so no single call can outlast the deadline.
            self.stream.set_write_timeout(Some(left))?;
            match self.stream.write(rest) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.stream.set_write_timeout(Some(timeout))?;
        written
    }

    /// Waits up to the poll interval for the client to close: `true` once it has (or the
    /// socket failed). Whatever the client sends meanwhile is read and dropped; a streamed
    /// response expects no request.
    pub fn client_closed(&mut self) -> bool {
        let mut chunk = [0u8; 512];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_retryable(&e),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads more bytes into the buffer, waking every poll interval to check the deadline and,
    /// when `idle` (no request started), the shutdown flag.
    fn fill(
        &mut self,
        deadline: Instant,
        idle: bool,
        shutdown: &AtomicBool,
    ) -> Result<(), ReadError> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if is_retryable(&e) => {
                    if idle && shutdown.load(Ordering::Relaxed) {
                        return Err(ReadError::Closed);
                    }
                    if Instant::now() >= deadline {
                        return Err(if idle {
                            ReadError::Closed
                        } else {
                            reject(408, "request not received in time")
                        });
                    }
                }
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }
}

/// Whether a read error only means "nothing yet": the poll timeout passed, or a signal
/// interrupted the call.
fn is_retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The admin server's head parser: Host optional (the admin API answers for one host whatever
/// the client calls it) and at most [`MAX_HEADERS`] fields; every other rule is the gateway's.
fn head_parser() -> HeadParser {
    HeadParser::new()
        .require_host(false)
        .max_headers(MAX_HEADERS)
}

/// Feeds `buf` (which starts at the request's first byte) to `parser`: the complete head and
/// its length including any leading empty lines, or `None` if more bytes are needed. A refused
/// head is answered with the parser's status: 400 malformed, 431 too large, 501 unsupported.
fn parse_head(
    parser: &mut HeadParser,
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, ReadError> {
    parser
        .parse(buf, limits.max_head_bytes)
        .map_err(|e| reject(e.status(), e.reason()))
}

impl Request {
    /// The request from its validated head and its body. Names are lowercased so handlers
    /// compare them directly; values are already trimmed of surrounding whitespace.
    fn new(head: &RequestHead, body: Vec<u8>) -> Request {
        Request {
            method: head.method().to_owned(),
            path: head.path().to_owned(),
            query: head.query().map(str::to_owned),
            headers: head
                .headers()
                .map(|(name, value)| {
                    (
                        name.to_ascii_lowercase(),
                        String::from_utf8_lossy(value).into_owned(),
                    )
                })
                .collect(),
            body,
            keep_alive: head.keep_alive(),
        }
    }
}

/// The body length of a validated head. The parser has already refused ambiguous framing
/// (Content-Length with Transfer-Encoding, repeated, signed or listed lengths) with 400.
fn body_length(framing: BodyFraming, max_body_bytes: usize) -> Result<usize, ReadError> {
    match framing {
        BodyFraming::None => Ok(0),
        BodyFraming::Length(length) => usize::try_from(length)
            .ok()
            .filter(|&length| length <= max_body_bytes)
            .ok_or(reject(413, "request body too large")),
        // The admin API reads bodies by Content-Length only. RFC 9110 §15.5.12: 411 asks the
        // client to resend with a Content-Length.
        BodyFraming::Chunked => Err(reject(411, "send the body with a content-length")),
    }
}

fn reject(status: u16, message: &'static str) -> ReadError {
    ReadError::Reject { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `buf` with a fresh admin parser and the default limits.
    fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ReadError> {
        super::parse_head(&mut head_parser(), buf, &Limits::default())
    }

    /// A POST head with the given field lines.
    fn headers(pairs: &[(&str, &str)]) -> String {
        let fields: String = pairs.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        format!("POST /admin/reload HTTP/1.1\r\n{fields}\r\n")
    }

    /// The body length the admin server reads for `head`, or why it refuses.
    fn body_length_of(head: &str) -> Result<usize, ReadError> {
        let (head, _) = parse_head(head.as_bytes())?.expect("test heads are complete");
        body_length(head.body(), Limits::default().max_body_bytes)
    }

    fn rejected_status<T: std::fmt::Debug>(result: Result<T, ReadError>) -> u16 {
        match result {
            Err(ReadError::Reject { status, .. }) => status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        assert!(parse_head(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
    }

    #[test]
    fn head_splits_path_and_query() {
        let (head, len) = parse_head(b"GET /admin/usage?group_by=key HTTP/1.1\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(head.path(), "/admin/usage");
        assert_eq!(head.query(), Some("group_by=key"));
        assert_eq!(len, 42);
    }

    #[test]
    fn http11_keeps_alive_unless_connection_close() {
        let (open, _) = parse_head(b"GET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        let (closed, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(open.keep_alive());
        assert!(!closed.keep_alive());
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (closed, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        let (open, _) = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!closed.keep_alive());
        assert!(open.keep_alive());
    }

    #[test]
    fn garbage_head_is_rejected_with_400() {
        assert!(matches!(
            parse_head(b"GET\x01 / HTTP/1.1\r\n\r\n"),
            Err(ReadError::Reject { status: 400, .. })
        ));
    }

    #[test]
    fn request_lowercases_names_and_keeps_values() {
        let (head, _) = parse_head(b"GET /x?q HTTP/1.1\r\nX-Request-Id:  abc \r\n\r\n")
            .unwrap()
            .unwrap();
        let request = Request::new(&head, Vec::new());
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/x");
        assert_eq!(request.query.as_deref(), Some("q"));
        assert_eq!(request.header("x-request-id"), Some("abc"));
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        assert_eq!(body_length_of(&headers(&[("host", "x")])).unwrap(), 0);
    }

    #[test]
    fn content_length_gives_the_body_length() {
        assert_eq!(
            body_length_of(&headers(&[("content-length", "5")])).unwrap(),
            5
        );
    }

    #[test]
    fn repeated_content_lengths_are_rejected_even_when_identical() {
        // RFC 9110 §8.6 lets a recipient take identical lengths as one; the gateway's parser
        // refuses any repeat, and the admin API agrees with the data plane on every framing.
        let h = headers(&[("content-length", "5"), ("content-length", "5, 5")]);
        assert_eq!(rejected_status(body_length_of(&h)), 400);
        let h = headers(&[("content-length", "5, 5")]);
        assert_eq!(rejected_status(body_length_of(&h)), 400);
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let h = headers(&[("content-length", "5"), ("content-length", "6")]);
        assert_eq!(rejected_status(body_length_of(&h)), 400);
    }

    #[test]
    fn signed_content_length_is_rejected() {
        assert_eq!(
            rejected_status(body_length_of(&headers(&[("content-length", "+5")]))),
            400
        );
    }

    #[test]
    fn content_length_past_the_body_cap_is_413() {
        let over = (Limits::default().max_body_bytes + 1).to_string();
        let h = headers(&[("content-length", &over)]);
        assert_eq!(rejected_status(body_length_of(&h)), 413);
    }

    #[test]
    fn content_length_past_u64_is_rejected_with_400() {
        let h = headers(&[("content-length", "99999999999999999999999")]);
        assert_eq!(rejected_status(body_length_of(&h)), 400);
    }

    #[test]
    fn transfer_encoding_with_content_length_is_rejected() {
        let h = headers(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        assert_eq!(rejected_status(body_length_of(&h)), 400);
    }

    #[test]
    fn transfer_encoding_is_answered_411() {
        let h = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(rejected_status(body_length_of(&h)), 411);
    }

    #[test]
    fn transfer_coding_other_than_chunked_is_answered_501() {
        let h = headers(&[("transfer-encoding", "gzip, chunked")]);
        assert_eq!(rejected_status(body_length_of(&h)), 501);
    }

    #[test]
    fn head_with_more_than_64_fields_is_431() {
        let head = headers(&[("x", "1"); MAX_HEADERS + 1]);
        assert_eq!(rejected_status(parse_head(head.as_bytes())), 431);
        let head = headers(&[("x", "1"); MAX_HEADERS]);
        assert!(parse_head(head.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn incomplete_head_past_32_kib_is_431() {
        let head = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(32 * 1024));
        assert_eq!(rejected_status(parse_head(head.as_bytes())), 431);
    }

    #[test]
    fn shapes_outside_the_strict_grammar_are_rejected_with_400() {
        for head in [
            // Bare LF line endings.
            &b"GET / HTTP/1.1\nX: 1\n\n"[..],
            // A fragment and an invalid percent-escape in the target.
            b"GET /a#b HTTP/1.1\r\n\r\n",
            b"GET /a%zz HTTP/1.1\r\n\r\n",
            // Two Host fields.
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            // Transfer-Encoding on HTTP/1.0 is faulty framing (RFC 9112 §6.1), not a 411.
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                rejected_status(parse_head(head)),
                400,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}

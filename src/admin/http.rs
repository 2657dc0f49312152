//! A small blocking HTTP/1.1 server side for the admin listener: read one request (head with
//! httparse, body by `Content-Length`), write one response, keep the connection alive.
//!
//! The admin API is low-volume and off the hot path, so plain blocking sockets are enough.
//! Reads poll with a short socket timeout so the connection notices shutdown and its deadlines
//! without a second thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Most headers accepted in one request head.
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
            if !self.buf.is_empty() {
                match parse_head(&self.buf)? {
                    Some(parsed) => break parsed,
                    None if self.buf.len() > limits.max_head_bytes => {
                        return Err(reject(431, "request headers too large"))
                    }
                    None => {}
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
        if head_len > limits.max_head_bytes {
            return Err(reject(431, "request headers too large"));
        }

        let body_len = body_length(&head.headers)?;
        if body_len > limits.max_body_bytes {
            return Err(reject(413, "request body too large"));
        }
        let wants_continue = head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let end = head_len + body_len;
        if wants_continue && body_len > 0 && self.buf.len() < end {
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

        Ok(Request {
            method: head.method,
            path: head.path,
            query: head.query,
            keep_alive: head.keep_alive,
            headers: head.headers,
            body,
        })
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

/// The parts of a request head the admin API uses.
struct Head {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a complete head, returning it and its length, or `None` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ReadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(reject(431, "too many headers")),
        Err(_) => return Err(reject(400, "malformed request")),
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(reject(400, "malformed request"));
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    // RFC 9112 §9.3: HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive".
    let connection_has = |token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = if version >= 1 {
        !connection_has("close")
    } else {
        connection_has("keep-alive")
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    Ok(Some((
        Head {
            method: method.to_owned(),
            path,
            query,
            headers,
            keep_alive,
        },
        head_len,
    )))
}

/// The body length from `Content-Length`, rejecting framings that are ambiguous or that this
/// server does not read.
fn body_length(headers: &[(String, String)]) -> Result<usize, ReadError> {
    let has = |name: &str| headers.iter().any(|(n, _)| n == name);
    if has("transfer-encoding") && has("content-length") {
        // RFC 9112 §6.1: both together is the request-smuggling shape; never guess.
        return Err(reject(400, "both transfer-encoding and content-length"));
    }
    if has("transfer-encoding") {
        // The admin API reads bodies by Content-Length only. RFC 9110 §15.5.12: 411 asks the
        // client to resend with a Content-Length.
        return Err(reject(411, "send the body with a content-length"));
    }
    let mut length: Option<usize> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        // RFC 9112 §6.3: a list of identical values may be taken as one; anything else is an
        // unrecoverable framing error.
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(reject(400, "invalid content-length"));
            }
            let parsed: usize = item
                .parse()
                .map_err(|_| reject(413, "request body too large"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(reject(400, "conflicting content-length"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.unwrap_or(0))
}

fn reject(status: u16, message: &'static str) -> ReadError {
    ReadError::Reject { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn rejected_status(result: Result<usize, ReadError>) -> u16 {
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
        assert_eq!(head.path, "/admin/usage");
        assert_eq!(head.query.as_deref(), Some("group_by=key"));
        assert_eq!(len, 42);
    }

    #[test]
    fn http11_keeps_alive_unless_connection_close() {
        let (open, _) = parse_head(b"GET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        let (closed, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(open.keep_alive);
        assert!(!closed.keep_alive);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (closed, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        let (open, _) = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!closed.keep_alive);
        assert!(open.keep_alive);
    }

    #[test]
    fn garbage_head_is_rejected_with_400() {
        assert!(matches!(
            parse_head(b"GET\x01 / HTTP/1.1\r\n\r\n"),
            Err(ReadError::Reject { status: 400, .. })
        ));
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        assert_eq!(body_length(&headers(&[("host", "x")])).unwrap(), 0);
    }

    #[test]
    fn identical_repeated_content_lengths_are_one() {
        let h = headers(&[("content-length", "5"), ("content-length", "5, 5")]);
        assert_eq!(body_length(&h).unwrap(), 5);
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let h = headers(&[("content-length", "5"), ("content-length", "6")]);
        assert_eq!(rejected_status(body_length(&h)), 400);
    }

    #[test]
    fn signed_content_length_is_rejected() {
        assert_eq!(
            rejected_status(body_length(&headers(&[("content-length", "+5")]))),
            400
        );
    }

    #[test]
    fn transfer_encoding_with_content_length_is_rejected() {
        let h = headers(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        assert_eq!(rejected_status(body_length(&h)), 400);
    }

    #[test]
    fn transfer_encoding_is_answered_411() {
        let h = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(rejected_status(body_length(&h)), 411);
    }
}

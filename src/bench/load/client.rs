//! One keep-alive client connection: connect (TCP, then TLS for `https://`), send a
//! pre-encoded request, read the response to its end by its framing (RFC 9112 section 6.3:
//! none, Content-Length, chunked, or until close), and reuse the connection when the
//! response allows it (RFC 9112 section 9.3).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::framing::{self, BodyFraming, ChunkedBody};
use crate::ai::sse::{SseError, SseParser};
use crate::upstream::{TlsConn, UpstreamStream};

/// The read buffer's size, and what it grows by while a long head arrives.
const READ_CHUNK: usize = 16 * 1024;
/// The largest server-sent event counted: the gateway's own bound on a relayed event, so a
/// stream it relays is never refused here, and a runaway one cannot grow the client's memory.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Where and how to connect; shared by every connection of a thread.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    /// The resolved address of the target.
    pub addr: SocketAddr,
    /// The TLS configuration and server name for `https://` targets.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Limit for the TCP connect and TLS handshake together.
    pub timeout: Duration,
}

/// The kinds of failed request the summary counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// The TLS handshake failed (certificate refused, protocol error).
    Tls,
    /// Writing the request failed.
    Write,
    /// Reading the response failed or the connection closed before its end.
    Read,
    /// The request (connect included) took longer than `--timeout`.
    Timeout,
    /// The response was not valid HTTP/1.1.
    Protocol,
}

impl ErrorKind {
    /// Every kind, in summary order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Write,
        ErrorKind::Read,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
    ];

    /// The kind's name in the summary and its JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Write => "write",
            ErrorKind::Read => "read",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
        }
    }
}

/// A failed request: its kind and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What failed.
    pub kind: ErrorKind,
    /// The detail, e.g. the OS error.
    pub message: String,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl fmt::Display) -> Failure {
        Failure {
            kind,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The final status code (interim 1xx responses are skipped).
    pub status: u16,
    /// Every byte read for this exchange, heads included.
    pub bytes_read: u64,
    /// Body bytes after chunked decoding.
    pub body_bytes: u64,
    /// Server-sent events completed in the body (when counting them).
    pub events: u64,
    /// When the first event was complete.
    pub first_event: Option<Instant>,
    /// When the last event was complete.
    pub last_event: Option<Instant>,
}

/// One client connection, opened on first use and reopened after any failure or a response
/// that ends the connection.
///
/// Nothing is allocated per request: the request bytes stay in `out` while the same request
/// is sent again (a new one is copied in only when `--keys` rotates it), responses are read
/// into `buf`, which keeps its capacity, and [`framing`](super::framing) finds each
/// response's end in place.
#[derive(Default)]
pub struct Connection {
    stream: Option<UpstreamStream>,
    /// Bytes read and not yet consumed: at most a partial head between reads.
    buf: Vec<u8>,
    /// The request last written, and which one it is.
    out: Vec<u8>,
    out_id: Option<usize>,
}

impl Connection {
    /// A connection not yet opened.
    pub fn new() -> Connection {
        Connection {
            buf: Vec::with_capacity(READ_CHUNK),
            ..Connection::default()
        }
    }

    /// Closes the connection (after a timeout, the exchange may have stopped anywhere).
    pub fn close(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// Opens the connection unless it is open.
    pub async fn ensure_open(&mut self, settings: &ConnectSettings) -> Result<(), Failure> {
        if self.stream.is_none() {
            self.stream = Some(connect(settings).await?);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends `request` and reads the whole response. `request_id` names the request among
    /// the run's encoded ones, so the same request is not copied again; `head_request` says
    /// the method was HEAD (its response has no body); `count_events` feeds the body to an
    /// SSE event counter. On failure the connection is closed.
    pub async fn exchange(
        &mut self,
        settings: &ConnectSettings,
        request_id: usize,
        request: &[u8],
        head_request: bool,
        count_events: bool,
    ) -> Result<Response, Failure> {
        self.ensure_open(settings).await?;
        let result = self
            .send_and_read(request_id, request, head_request, count_events)
            .await;
        if result.is_err() {
            self.close();
        }
        result
    }

    async fn send_and_read(
        &mut self,
        request_id: usize,
        request: &[u8],
        head_request: bool,
        count_events: bool,
    ) -> Result<Response, Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::new(ErrorKind::Connect, "not connected"));
        };
        if self.out_id != Some(request_id) {
            self.out.clear();
            self.out.extend_from_slice(request);
            self.out_id = Some(request_id);
        }
        let (written, out) = stream.write_all(std::mem::take(&mut self.out)).await;
        self.out = out;
        written.map_err(|e| Failure::new(ErrorKind::Write, e))?;

        let mut response = Response {
            status: 0,
            bytes_read: 0,
            body_bytes: 0,
            events: 0,
            first_event: None,
            last_event: None,
        };
        // The head; interim 1xx heads are read past (RFC 9110 section 15.2).
        let head = loop {
            match framing::parse_head(&self.buf, head_request) {
                Ok(Some((head, len))) => {
                    self.consume(len);
                    match head.status {
                        101 => {
                            return Err(Failure::new(
                                ErrorKind::Protocol,
                                "101 Switching Protocols: upgrades are not load-tested",
                            ))
                        }
                        100..=199 => continue,
                        _ => break head,
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::new(ErrorKind::Protocol, e)),
            }
            if self.read_more(&mut response).await? == 0 {
                return Err(Failure::new(
                    ErrorKind::Read,
                    "connection closed before the response head",
                ));
            }
        };
        response.status = head.status;

        let mut counter = count_events.then(|| SseParser::new(MAX_EVENT_BYTES));
        match head.body {
            BodyFraming::None => {}
            BodyFraming::Length(mut remaining) => loop {
                let take =
                    usize::try_from(remaining).map_or(self.buf.len(), |r| r.min(self.buf.len()));
                observe_body(&self.buf[..take], &mut response, &mut counter)?;
                self.consume(take);
                remaining -= take as u64;
                if remaining == 0 {
                    break;
                }
                if self.read_more(&mut response).await? == 0 {
                    return Err(Failure::new(ErrorKind::Read, "connection closed mid-body"));
                }
            },
            BodyFraming::Chunked => {
                let mut body = ChunkedBody::new();
                loop {
                    let mut seen = Ok(());
                    let (consumed, done) = body
                        .advance(&self.buf, |data| {
                            if seen.is_ok() {
                                seen = observe_body(data, &mut response, &mut counter);
                            }
                        })
                        .map_err(|e| Failure::new(ErrorKind::Protocol, e))?;
                    seen?;
                    self.consume(consumed);
                    if done {
                        break;
                    }
                    if self.read_more(&mut response).await? == 0 {
                        return Err(Failure::new(
                            ErrorKind::Read,
                            "connection closed mid-chunked-body",
                        ));
                    }
                }
            }
            BodyFraming::UntilClose => loop {
                observe_body(&self.buf, &mut response, &mut counter)?;
                self.buf.clear();
                if self.read_more(&mut response).await? == 0 {
                    break;
                }
            },
        }
        // Anything past the response is unsolicited (we never pipeline): the framing can no
        // longer be trusted, so the connection is not reused.
        if !head.keep_alive || !self.buf.is_empty() {
            self.close();
        }
        Ok(response)
    }

    /// Drops the first `len` bytes of the buffer: usually all of it, which costs nothing.
    fn consume(&mut self, len: usize) {
        if len == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..len);
        }
    }

    /// Reads once into the buffer; returns the count (0 at end of stream). The buffer grows
    /// only while a head is incomplete, and never far past [`framing::MAX_HEAD`], which the
    /// head parser refuses.
    async fn read_more(&mut self, response: &mut Response) -> Result<usize, Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::new(ErrorKind::Read, "not connected"));
        };
        let mut buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        if buf.capacity() == len {
            buf.reserve(READ_CHUNK);
        }
        let (result, slice) = stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        let n = result.map_err(|e| Failure::new(ErrorKind::Read, e))?;
        response.bytes_read += n as u64;
        Ok(n)
    }
}

/// Counts body bytes and, when counting events, notes when events complete (only blocks
/// with a `data` field are events: comments and keep-alives dispatch nothing). An event over
/// [`MAX_EVENT_BYTES`] fails the response as a protocol error.
fn observe_body(
    bytes: &[u8],
    response: &mut Response,
    parser: &mut Option<SseParser>,
) -> Result<(), Failure> {
    response.body_bytes += bytes.len() as u64;
    let Some(parser) = parser else {
        return Ok(());
    };
    parser
        .push(bytes)
        .map_err(|e: SseError| Failure::new(ErrorKind::Protocol, e))?;
    let mut completed = 0;
    while let Some(event) = parser.next_event() {
        completed += u64::from(event.has_data);
    }
    if completed > 0 {
        let now = Instant::now();
        response.events += completed;
        response.first_event.get_or_insert(now);
        response.last_event = Some(now);
    }
    Ok(())
}

/// Opens a TCP connection (`TCP_NODELAY`: requests are written whole, Nagle would only add
/// latency) and, for `https://`, the TLS session, both within `settings.timeout`.
pub async fn connect(settings: &ConnectSettings) -> Result<UpstreamStream, Failure> {
    let started = Instant::now();
    let tcp = match monoio::time::timeout(settings.timeout, TcpStream::connect_addr(settings.addr))
        .await
    {
        Err(_) => return Err(Failure::new(ErrorKind::Timeout, "connect timed out")),
        Ok(Err(e)) => return Err(Failure::new(ErrorKind::Connect, e)),
        Ok(Ok(tcp)) => tcp,
    };
    tcp.set_nodelay(true)
        .map_err(|e| Failure::new(ErrorKind::Connect, e))?;
    let Some((config, name)) = &settings.tls else {
        return Ok(UpstreamStream::Plain(tcp));
    };
    let fd = tcp.as_raw_fd();
    let remaining = settings.timeout.saturating_sub(started.elapsed());
    let connector = monoio_rustls::TlsConnector::from(config.clone());
    match monoio::time::timeout(remaining, connector.connect(name.clone(), tcp)).await {
        Err(_) => Err(Failure::new(ErrorKind::Timeout, "tls handshake timed out")),
        Ok(Err(monoio_rustls::TlsError::Io(e))) => Err(Failure::new(ErrorKind::Tls, e)),
        Ok(Err(monoio_rustls::TlsError::Rustls(e))) => Err(Failure::new(ErrorKind::Tls, e)),
        Ok(Ok(stream)) => Ok(UpstreamStream::Tls(Box::new(TlsConn::new(stream, fd)))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::JoinHandle;

    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";

    /// What the scripted server does after reading a request head.
    #[derive(Clone, Copy)]
    enum Step {
        /// Writes the reply (in two pieces, to split it across reads) and keeps the
        /// connection.
        Reply(&'static [u8]),
        /// Writes the reply, then closes the connection.
        ReplyAndClose(&'static [u8]),
    }

    /// A blocking server taking the next step for each request head, on as many connections
    /// as the client opens; returns the accepted-connection count with it.
    fn scripted_server(steps: Vec<Step>) -> (ConnectSettings, Arc<AtomicUsize>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let handle = std::thread::spawn(move || {
            let mut steps = steps.into_iter();
            'accept: while let Ok((mut conn, _)) = listener.accept() {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    if conn.read(&mut byte).unwrap_or(0) == 0 {
                        continue 'accept;
                    }
                    head.push(byte[0]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    let Some(step) = steps.next() else { return };
                    let (Step::Reply(reply) | Step::ReplyAndClose(reply)) = step;
                    let (a, b) = reply.split_at(reply.len() / 2);
                    conn.write_all(a).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                    conn.write_all(b).unwrap();
                    if matches!(step, Step::ReplyAndClose(_)) {
                        continue 'accept;
                    }
                }
            }
        });
        let settings = ConnectSettings {
            addr,
            tls: None,
            timeout: Duration::from_secs(5),
        };
        (settings, accepted, handle)
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn content_length_responses_reuse_the_connection() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let (settings, accepted, _server) =
            scripted_server(vec![Step::Reply(reply), Step::Reply(reply)]);
        block_on(async {
            let mut conn = Connection::new();
            for _ in 0..2 {
                let r = conn
                    .exchange(&settings, 0, GET, false, false)
                    .await
                    .unwrap();
                assert_eq!((r.status, r.body_bytes), (200, 5));
                assert_eq!(r.bytes_read, reply.len() as u64);
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn chunked_body_is_decoded_and_counted() {
        let reply: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
        let (settings, accepted, _server) =
            scripted_server(vec![Step::Reply(reply), Step::Reply(reply)]);
        block_on(async {
            let mut conn = Connection::new();
            for _ in 0..2 {
                let r = conn
                    .exchange(&settings, 0, GET, false, false)
                    .await
                    .unwrap();
                assert_eq!(r.body_bytes, 7);
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn close_delimited_body_ends_at_close_and_reconnects() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        let (settings, accepted, _server) =
            scripted_server(vec![Step::ReplyAndClose(reply), Step::ReplyAndClose(reply)]);
        block_on(async {
            let mut conn = Connection::new();
            for _ in 0..2 {
                let r = conn
                    .exchange(&settings, 0, GET, false, false)
                    .await
                    .unwrap();
                assert_eq!(r.body_bytes, 13);
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn connection_close_response_is_not_reused() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        let (settings, accepted, _server) =
            scripted_server(vec![Step::Reply(reply), Step::Reply(reply)]);
        block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, GET, false, false)
                .await
                .unwrap();
            conn.exchange(&settings, 0, GET, false, false)
                .await
                .unwrap();
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn interim_1xx_response_is_skipped() {
        let reply: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
        let (settings, _accepted, _server) = scripted_server(vec![Step::Reply(reply)]);
        let r = block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, GET, false, false)
                .await
                .unwrap()
        });
        assert_eq!(r.status, 201);
    }

    #[test]
    fn head_response_has_no_body_despite_its_length() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
        let (settings, _accepted, _server) = scripted_server(vec![Step::Reply(reply)]);
        let r = block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, b"HEAD / HTTP/1.1\r\n\r\n", true, false)
                .await
                .unwrap()
        });
        assert_eq!((r.status, r.body_bytes), (200, 0));
    }

    #[test]
    fn malformed_response_is_a_protocol_error() {
        let reply: &[u8] = b"HTTP/9 nonsense\r\n\r\n";
        let (settings, _accepted, _server) = scripted_server(vec![Step::Reply(reply)]);
        let err = block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, GET, false, false)
                .await
                .unwrap_err()
        });
        assert_eq!(err.kind, ErrorKind::Protocol);
    }

    #[test]
    fn close_mid_body_is_a_read_error() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort";
        let (settings, _accepted, _server) = scripted_server(vec![Step::ReplyAndClose(reply)]);
        let err = block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, GET, false, false)
                .await
                .unwrap_err()
        });
        assert_eq!(err.kind, ErrorKind::Read);
    }

    #[test]
    fn refused_connection_is_a_connect_error() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let settings = ConnectSettings {
            addr,
            tls: None,
            timeout: Duration::from_secs(5),
        };
        let err = block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, GET, false, false)
                .await
                .unwrap_err()
        });
        assert_eq!(err.kind, ErrorKind::Connect);
    }

    #[test]
    fn an_event_up_to_the_bound_counts_and_one_past_it_fails_the_response() {
        let empty = || Response {
            status: 200,
            bytes_read: 0,
            body_bytes: 0,
            events: 0,
            first_event: None,
            last_event: None,
        };
        let event = |len: usize| {
            let mut event = b"data: ".to_vec();
            event.resize(len - 2, b'a');
            event.extend_from_slice(b"\n\n");
            event
        };
        let mut response = empty();
        let mut parser = Some(SseParser::new(MAX_EVENT_BYTES));
        observe_body(&event(MAX_EVENT_BYTES), &mut response, &mut parser).unwrap();
        assert_eq!(response.events, 1);

        let mut response = empty();
        let mut parser = Some(SseParser::new(MAX_EVENT_BYTES));
        let err =
            observe_body(&event(MAX_EVENT_BYTES + 1), &mut response, &mut parser).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert_eq!(response.events, 0);
    }

    #[test]
    fn stream_events_are_counted_and_timed() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n8\r\n: ping\n\n\r\nb\r\ndata: two\n\n\r\n0\r\n\r\n";
        let (settings, _accepted, _server) = scripted_server(vec![Step::Reply(reply)]);
        let r = block_on(async {
            let mut conn = Connection::new();
            conn.exchange(&settings, 0, GET, false, true).await.unwrap()
        });
        assert_eq!(r.events, 2);
        let (first, last) = (r.first_event.unwrap(), r.last_event.unwrap());
        assert!(first <= last);
    }
}

//! A test upstream in the test process: std threads on 127.0.0.1:0. It records
//! every byte it receives (so a test can prove the gateway forwarded nothing)
//! and every request it parsed, and answers each request with the `Reply`
//! its handler picks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::Response;
use super::{checksum, pattern_block};

/// How long a held reply waits for its gate before giving up.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an upstream connection waits for the gateway's next bytes.
const CONN_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A one-shot latch a test opens to let a held reply go on.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Opens the gate, releasing every waiter now and later.
    pub fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Waits until the gate opens or `timeout` passes; returns whether it opened.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (open, cv) = &*self.0;
        let guard = open.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |open| !*open)
            .unwrap();
        *guard
    }
}

/// How the upstream answers one request.
#[derive(Clone)]
pub enum Reply {
    /// A fixed response with Content-Length.
    Fixed {
        /// Status code.
        status: u16,
        /// Extra header fields.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// 200 with a JSON description of the request (see [`Echo`]).
    Echo,
    /// 200 with `Transfer-Encoding: chunked`, one chunk per element.
    Chunked(Vec<Vec<u8>>),
    /// 200 with neither Content-Length nor chunked: the body ends at close.
    CloseDelimited(Vec<u8>),
    /// `text/event-stream`, chunked: `first`, then wait for `release`, then
    /// `rest`, then the end of the stream.
    Sse {
        /// Sent at once.
        first: Vec<u8>,
        /// Sent after the gate opens.
        rest: Vec<u8>,
        /// The gate the test opens.
        release: Gate,
    },
    /// Sleeps before answering with the inner reply (a slow response head).
    Delayed(Duration, Box<Reply>),
    /// Waits for the gate before answering with the inner reply.
    Held(Gate, Box<Reply>),
    /// Optionally waits for a gate, then answers 101 Switching Protocols,
    /// sends `greeting`, then echoes every byte back until EOF.
    Upgrade {
        /// Held before the 101 when set.
        release: Option<Gate>,
        /// Raw bytes sent right after the 101 head.
        greeting: Vec<u8>,
    },
    /// 200 with Content-Length `len`, a body of the test pattern written in
    /// large pieces.
    Large(u64),
}

impl Reply {
    /// `200 OK` with a text body.
    pub fn text(body: &str) -> Reply {
        Reply::Fixed {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// One request as the upstream parsed it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Request target as received.
    pub target: String,
    /// Target up to `?`.
    pub path: String,
    /// Target after `?` (empty if none).
    pub query: String,
    /// Minor HTTP version.
    pub version: u8,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty when the upstream only counts).
    pub body: Vec<u8>,
    /// The decoded body's length.
    pub body_len: u64,
    /// Trailer fields of a chunked body, names lower-cased.
    pub trailers: Vec<(String, String)>,
    /// Which upstream connection (0-based, in accept order) carried it.
    pub connection: usize,
}

impl RecordedRequest {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether header `name` lists `token`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// The JSON an `Reply::Echo` upstream answers with, parsed back.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The upstream's name.
    pub upstream: String,
    /// Method it saw.
    pub method: String,
    /// Path it saw.
    pub path: String,
    /// Query it saw.
    pub query: String,
    /// Headers it saw (lower-cased names).
    pub headers: Vec<(String, String)>,
    /// Body length it saw.
    pub body_len: u64,
    /// FNV-1a checksum of the body it saw.
    pub body_checksum: String,
}

impl Echo {
    /// Parses an echo response (fails the test if it is not 200 echo JSON).
    pub fn of(response: &Response) -> Echo {
        assert_eq!(
            response.status,
            200,
            "expected an echo from the upstream, got {} {:?}",
            response.status,
            response.text()
        );
        let json = response.json();
        let text = |key: &str| json[key].as_str().unwrap_or_default().to_string();
        Echo {
            upstream: text("upstream"),
            method: text("method"),
            path: text("path"),
            query: text("query"),
            headers: json["headers"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|pair| {
                            (
                                pair[0].as_str().unwrap_or_default().to_string(),
                                pair[1].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            body_len: json["body_len"].as_u64().unwrap_or(u64::MAX),
            body_checksum: text("body_checksum"),
        }
    }

    /// The first value of header `name` the upstream saw.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` the upstream saw.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Handler = dyn Fn(&RecordedRequest) -> Reply + Send + Sync;

struct Shared {
    name: String,
    handler: Box<Handler>,
    /// False for byte-counting upstreams: bodies and raw bytes are not kept.
    keep_bytes: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    raw: Mutex<Vec<u8>>,
    bytes_received: AtomicU64,
    connections: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    requests_changed: Condvar,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        self.requests.lock().unwrap().push(request);
        self.requests_changed.notify_all();
    }
}

/// Options for an upstream beyond its handler.
pub struct UpstreamBuilder {
    name: String,
    keep_bytes: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl UpstreamBuilder {
    /// Serve TLS with this config.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> UpstreamBuilder {
        self.tls = Some(config);
        self
    }

    /// Count body bytes without keeping them (for very large bodies).
    pub fn count_only(mut self) -> UpstreamBuilder {
        self.keep_bytes = false;
        self
    }

    /// Binds 127.0.0.1:0 and starts accepting.
    pub fn start(
        self,
        handler: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: self.name,
            handler: Box::new(handler),
            keep_bytes: self.keep_bytes,
            tls: self.tls,
            raw: Mutex::new(Vec::new()),
            bytes_received: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            requests_changed: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || accept_loop(listener, shared, stop))
        };
        Upstream {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }
}

/// A running test upstream; stops accepting on drop.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    /// A builder for an upstream named `name` (it answers with `x-upstream: name`).
    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.to_string(),
            keep_bytes: true,
            tls: None,
        }
    }

    /// A plain upstream answering every request with `handler`'s reply.
    pub fn start(
        name: &str,
        handler: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Upstream::builder(name).start(handler)
    }

    /// A plain upstream answering every request with `reply`.
    pub fn replying(name: &str, reply: Reply) -> Upstream {
        Upstream::start(name, move |_| reply.clone())
    }

    /// A plain upstream that echoes every request as JSON.
    pub fn echo(name: &str) -> Upstream {
        Upstream::replying(name, Reply::Echo)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its address as a config target (`127.0.0.1:PORT`).
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request parsed so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests were parsed so far.
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// The last request parsed (fails if none).
    pub fn last_request(&self) -> RecordedRequest {
        self.requests()
            .pop()
            .expect("the upstream has received no request")
    }

    /// Waits until at least `n` requests were parsed; returns whether they were.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let guard = self.shared.requests.lock().unwrap();
        let (guard, _) = self
            .shared
            .requests_changed
            .wait_timeout_while(guard, timeout, |r| r.len() < n)
            .unwrap();
        guard.len() >= n
    }

    /// How many connections were accepted.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many bytes were received over all connections (after TLS).
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_received.load(Ordering::SeqCst)
    }

    /// Every byte received over all connections, in arrival order per read
    /// (empty for a count-only upstream).
    pub fn raw_received(&self) -> Vec<u8> {
        self.shared.raw.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// An address on which nothing listens: connecting is refused.
///
/// The port stays bound, by a socket that never listens, for the rest of the
/// test process: a port bound and then freed could be taken by anything else
/// starting meanwhile (another test's server), which would then answer.
pub fn refused_addr() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("create a socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the bound address");
    // Held, never listened on: a connect gets a reset, and the port is not free.
    Box::leak(Box::new(socket));
    addr
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(CONN_READ_TIMEOUT));
            let _ = stream.set_nodelay(true);
            match shared.tls.clone() {
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    serve(rustls::StreamOwned::new(conn, stream), id, &shared);
                }
                None => serve(stream, id, &shared),
            }
        });
    }
}

/// One upstream connection: a read buffer over the stream.
struct Conn<'a, S> {
    stream: S,
    buf: Vec<u8>,
    shared: &'a Shared,
}

impl<S: Read + Write> Conn<'_, S> {
    /// Reads more bytes into the buffer; false at EOF or error.
    fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 256 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.note_received(&chunk[..n], true);
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn note_received(&self, bytes: &[u8], keep: bool) {
        self.shared
            .bytes_received
            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        if keep && self.shared.keep_bytes {
            self.shared.raw.lock().unwrap().extend_from_slice(bytes);
        }
    }

    /// A CRLF-terminated line without the CRLF.
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Exactly `n` bytes, kept.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Exactly `n` bytes, counted but not kept (reads straight past the buffer).
    fn skip(&mut self, mut n: u64) -> Option<()> {
        let from_buf = (n as usize).min(self.buf.len());
        self.buf.drain(..from_buf);
        n -= from_buf as u64;
        let mut scratch = vec![0u8; 1024 * 1024];
        while n > 0 {
            let want = (n as usize).min(scratch.len());
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) | Err(_) => return None,
                Ok(got) => {
                    self.note_received(&scratch[..got], false);
                    n -= got as u64;
                }
            }
        }
        Some(())
    }

    /// A body part of `n` bytes: kept, or skipped for a count-only upstream.
    fn body_part(&mut self, n: u64, body: &mut Vec<u8>) -> Option<()> {
        if self.shared.keep_bytes {
            body.extend_from_slice(&self.take(n as usize)?);
        } else {
            self.skip(n)?;
        }
        Some(())
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok() && self.stream.flush().is_ok()
    }
}

/// The parsed head of a request, before its body.
struct Head {
    method: String,
    target: String,
    version: u8,
    headers: Vec<(String, String)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn is_chunked(&self) -> bool {
        self.values("transfer-encoding")
            .flat_map(|v| v.split(','))
            .last()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
    }

    fn content_length(&self) -> u64 {
        self.values("content-length")
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the connection stays open after this exchange (RFC 9112 9.3).
    fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.version >= 1 || self.has_token("connection", "keep-alive")
    }
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => Some(Head {
            method: request.method?.to_string(),
            target: request.path?.to_string(),
            version: request.version?,
            headers: request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        }),
        _ => None,
    }
}

fn serve<S: Read + Write>(stream: S, connection: usize, shared: &Shared) {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        shared,
    };
    loop {
        // The head ends at the first empty line.
        let head_len = loop {
            if let Some(pos) = conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if !conn.fill() {
                return;
            }
        };
        let Some(head) = parse_head(&conn.buf[..head_len]) else {
            conn.send(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        conn.buf.drain(..head_len);

        // RFC 9110 10.1.1: answer 100 before reading a body the client holds back.
        if head.has_token("expect", "100-continue") && !conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        {
            return;
        }

        let mut body = Vec::new();
        let mut body_len = 0u64;
        let mut trailers = Vec::new();
        if head.is_chunked() {
            loop {
                let Some(line) = conn.line() else { return };
                let line = String::from_utf8_lossy(&line).into_owned();
                let size_text = line.split(';').next().unwrap_or("").trim();
                let Ok(size) = u64::from_str_radix(size_text, 16) else {
                    return;
                };
                if size == 0 {
                    loop {
                        let Some(line) = conn.line() else { return };
                        if line.is_empty() {
                            break;
                        }
                        let line = String::from_utf8_lossy(&line).into_owned();
                        if let Some((name, value)) = line.split_once(':') {
                            trailers
                                .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                        }
                    }
                    break;
                }
                if conn.body_part(size, &mut body).is_none() {
                    return;
                }
                body_len += size;
                if conn.take(2).as_deref() != Some(b"\r\n".as_slice()) {
                    return;
                }
            }
        } else {
            let length = head.content_length();
            if conn.body_part(length, &mut body).is_none() {
                return;
            }
            body_len = length;
        }

        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (head.target.clone(), String::new()),
        };
        let request = RecordedRequest {
            method: head.method.clone(),
            target: head.target.clone(),
            path,
            query,
            version: head.version,
            headers: head.headers.clone(),
            body,
            body_len,
            trailers,
            connection,
        };
        let reply = (shared.handler)(&request);
        shared.record(request.clone());
        let keep_alive = head.keep_alive();
        if !write_reply(&mut conn, reply, &request, keep_alive) || !keep_alive {
            return;
        }
    }
}

fn status_line(status: u16) -> String {
    let reason = match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    format!("HTTP/1.1 {status} {reason}\r\n")
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `reply`; returns whether the connection may carry another request.
fn write_reply<S: Read + Write>(
    conn: &mut Conn<'_, S>,
    reply: Reply,
    request: &RecordedRequest,
    keep_alive: bool,
) -> bool {
    let name = conn.shared.name.clone();
    let connection = if keep_alive { "keep-alive" } else { "close" };
    match reply {
        Reply::Fixed {
            status,
            headers,
            body,
        } => {
            let mut head = status_line(status);
            for (n, v) in &headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str(&format!(
                "x-upstream: {name}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
                body.len()
            ));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            conn.send(&bytes)
        }
        Reply::Echo => {
            let json = serde_json::json!({
                "upstream": name,
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "version": request.version,
                "headers": request.headers.iter().map(|(n, v)| vec![n.clone(), v.clone()]).collect::<Vec<_>>(),
                "trailers": request.trailers.iter().map(|(n, v)| vec![n.clone(), v.clone()]).collect::<Vec<_>>(),
                "body_len": request.body_len,
                "body_checksum": checksum(&request.body),
            });
            let body = serde_json::to_vec(&json).unwrap();
            write_reply(
                conn,
                Reply::Fixed {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body,
                },
                request,
                keep_alive,
            )
        }
        Reply::Chunked(chunks) => {
            let head = format!(
                "{}x-upstream: {name}\r\nTransfer-Encoding: chunked\r\nConnection: {connection}\r\n\r\n",
                status_line(200)
            );
            if !conn.send(head.as_bytes()) {
                return false;
            }
            for data in &chunks {
                if !conn.send(&chunk(data)) {
                    return false;
                }
            }
            conn.send(b"0\r\n\r\n")
        }
        Reply::CloseDelimited(body) => {
            let mut bytes = format!(
                "{}x-upstream: {name}\r\nConnection: close\r\n\r\n",
                status_line(200)
            )
            .into_bytes();
            bytes.extend_from_slice(&body);
            conn.send(&bytes);
            false
        }
        Reply::Sse {
            first,
            rest,
            release,
        } => {
            let head = format!(
                "{}x-upstream: {name}\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                 Transfer-Encoding: chunked\r\nConnection: {connection}\r\n\r\n",
                status_line(200)
            );
            if !conn.send(head.as_bytes()) || !conn.send(&chunk(&first)) {
                return false;
            }
            release.wait(GATE_TIMEOUT);
            conn.send(&chunk(&rest)) && conn.send(b"0\r\n\r\n")
        }
        Reply::Delayed(delay, inner) => {
            std::thread::sleep(delay);
            write_reply(conn, *inner, request, keep_alive)
        }
        Reply::Held(gate, inner) => {
            gate.wait(GATE_TIMEOUT);
            write_reply(conn, *inner, request, keep_alive)
        }
        Reply::Upgrade { release, greeting } => {
            if let Some(gate) = release {
                gate.wait(GATE_TIMEOUT);
            }
            let protocol = request.header("upgrade").unwrap_or("websocket").to_string();
            let mut bytes = format!(
                "{}x-upstream: {name}\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n",
                status_line(101)
            )
            .into_bytes();
            bytes.extend_from_slice(&greeting);
            if !conn.send(&bytes) {
                return false;
            }
            echo_until_eof(conn);
            false
        }
        Reply::Large(len) => {
            let head = format!(
                "{}x-upstream: {name}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {len}\r\nConnection: {connection}\r\n\r\n",
                status_line(200)
            );
            if !conn.send(head.as_bytes()) {
                return false;
            }
            let block = pattern_block();
            let mut left = len;
            while left > 0 {
                let n = (left as usize).min(block.len());
                if !conn.send(&block[..n]) {
                    return false;
                }
                left -= n as u64;
            }
            true
        }
    }
}

/// After a 101: every byte read is written back, until EOF.
fn echo_until_eof<S: Read + Write>(conn: &mut Conn<'_, S>) {
    let deadline = Instant::now() + GATE_TIMEOUT;
    loop {
        if !conn.buf.is_empty() {
            let pending = std::mem::take(&mut conn.buf);
            if !conn.send(&pending) {
                return;
            }
        }
        if Instant::now() >= deadline || !conn.fill() {
            return;
        }
    }
}

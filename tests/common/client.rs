//! A raw HTTP/1.1 client: sends exact bytes, reads responses framed by
//! Content-Length, chunked coding or connection close (RFC 9112 section 6.3),
//! and tells a closed connection from a silent one.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

use super::WAIT;

/// Anything a client can talk HTTP over (plain TCP or TLS).
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// The minor HTTP version of the status line (1 for HTTP/1.1).
    pub version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty for 1xx, 204, 304).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether header `name` lists `token` (comma-separated, case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (fails the test if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// `error.type` of a gateway-made JSON error.
    pub fn error_type(&self) -> String {
        let json = self.json();
        json["error"]["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.type in {json}"))
            .to_string()
    }

    /// Fails the test unless this is a gateway error with `status` and `error.type`.
    pub fn assert_error(&self, status: u16, error_type: &str) {
        assert_eq!(
            self.status,
            status,
            "expected {status} {error_type}, got {} {:?}",
            self.status,
            self.text()
        );
        assert_eq!(self.error_type(), error_type, "body: {}", self.text());
        let json = self.json();
        assert!(
            json["error"]["message"].is_string(),
            "error.message missing: {json}"
        );
    }
}

/// What `fill_more` is reading when a clean close before any byte means
/// "closed" rather than "failed".
const HEAD: &str = "a response head";

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Where a chunked body reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
}

/// Reads one response body piece by piece, as the bytes arrive.
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    remaining: u64,
    chunk: ChunkState,
    done: bool,
}

/// The outcome of waiting on a connection for its close.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseState {
    /// EOF or a reset: the peer closed.
    Closed,
    /// Nothing arrived and nothing closed within the wait.
    StillOpen,
    /// Bytes arrived instead.
    Data(Vec<u8>),
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (EOF or reset) before the first byte of the response.
    Closed,
    /// Anything else: a timeout, a close mid-response, bytes that are not HTTP.
    Failed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed before a response"),
            ReadError::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// Fails the test with a read error.
fn fail<T>(result: Result<T, ReadError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A client connection with a read buffer.
pub struct Client {
    stream: Box<dyn Stream>,
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (fails the test if it cannot).
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects to `addr`, returning the error instead of failing.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let tcp = TcpStream::connect_timeout(&addr, WAIT)?;
        tcp.set_read_timeout(Some(WAIT))?;
        tcp.set_write_timeout(Some(WAIT))?;
        tcp.set_nodelay(true)?;
        Ok(Client {
            stream: Box::new(tcp.try_clone()?),
            tcp,
            buf: Vec::new(),
        })
    }

    /// Connects with TLS, completes the handshake and returns the client with
    /// the certificate chain the server presented.
    pub fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> (Client, Vec<CertificateDer<'static>>) {
        let mut tcp = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from(server_name.to_string()).expect("server name");
        let mut conn = rustls::ClientConnection::new(config, name).expect("client connection");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        }
        let chain = conn
            .peer_certificates()
            .expect("server presented no certificate")
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        let tcp_handle = tcp.try_clone().unwrap();
        let client = Client {
            stream: Box::new(rustls::StreamOwned::new(conn, tcp)),
            tcp: tcp_handle,
            buf: Vec::new(),
        };
        (client, chain)
    }

    /// Sends `bytes` (fails the test on error).
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Sends `bytes`, returning the error.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends `bytes` one byte per write, with `pause` between writes; stops at
    /// the first error. Returns how many bytes were written.
    pub fn send_trickle(&mut self, bytes: &[u8], pause: Duration) -> usize {
        for (i, b) in bytes.iter().enumerate() {
            if self.try_send(std::slice::from_ref(b)).is_err() {
                return i;
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        bytes.len()
    }

    /// A second handle on the socket, e.g. to write from another thread.
    pub fn tcp_handle(&self) -> TcpStream {
        self.tcp.try_clone().expect("clone socket")
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&self) {
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    /// Sets the read timeout.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.tcp.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads more bytes; EOF, timeout and errors are failures naming `what`,
    /// except that a close before the first byte of a head is `Closed`.
    fn fill_more(&mut self, what: &str) -> Result<(), ReadError> {
        let nothing_read_yet = self.buf.is_empty() && what == HEAD;
        let outcome = match self.fill() {
            Ok(0) => "connection closed".to_string(),
            Ok(_) => return Ok(()),
            Err(e) => {
                let reset = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                );
                if !reset {
                    let timed_out = matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    );
                    let why = if timed_out {
                        "timed out waiting for bytes".to_string()
                    } else {
                        e.to_string()
                    };
                    return Err(ReadError::Failed(format!(
                        "reading {what}: {why}; unread bytes: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )));
                }
                format!("connection reset ({e})")
            }
        };
        if nothing_read_yet {
            return Err(ReadError::Closed);
        }
        Err(ReadError::Failed(format!(
            "{outcome} while reading {what}; unread bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        )))
    }

    /// Reads one response head (a 1xx included), leaving its body unread.
    pub fn read_head(&mut self) -> Response {
        fail(self.try_read_head())
    }

    /// `read_head`, returning failures.
    pub fn try_read_head(&mut self) -> Result<Response, ReadError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let response = Response {
                        version: parsed.version.unwrap_or(1),
                        status: parsed.code.unwrap_or(0),
                        reason: parsed.reason.unwrap_or("").to_string(),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: Vec::new(),
                    };
                    self.buf.drain(..len);
                    return Ok(response);
                }
                Ok(httparse::Status::Partial) => self.fill_more(HEAD)?,
                Err(e) => {
                    return Err(ReadError::Failed(format!(
                        "unparseable response head ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )))
                }
            }
        }
    }

    /// Reads the next response, 1xx included, with its body.
    pub fn read_response(&mut self) -> Response {
        fail(self.try_read_response())
    }

    /// `read_response`, returning failures.
    pub fn try_read_response(&mut self) -> Result<Response, ReadError> {
        let mut response = self.try_read_head()?;
        response.body = self.try_read_body(&response)?;
        Ok(response)
    }

    /// Reads responses until one that is final (or 101), skipping 100/102/103.
    pub fn read_final_response(&mut self) -> Response {
        fail(self.try_read_final_response())
    }

    /// `read_final_response`, returning failures.
    pub fn try_read_final_response(&mut self) -> Result<Response, ReadError> {
        loop {
            let response = self.try_read_response()?;
            if response.status >= 200 || response.status == 101 {
                return Ok(response);
            }
        }
    }

    /// A reader for the body that follows `head`.
    pub fn body_reader(&self, head: &Response) -> BodyReader {
        let framing = framing_of(head);
        BodyReader {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: ChunkState::Size,
            done: matches!(framing, Framing::None | Framing::Length(0)),
        }
    }

    /// The next piece of body as it arrives; None once the body is complete.
    pub fn read_body_piece(&mut self, reader: &mut BodyReader) -> Option<Vec<u8>> {
        fail(self.try_read_body_piece(reader))
    }

    /// `read_body_piece`, returning failures.
    pub fn try_read_body_piece(
        &mut self,
        reader: &mut BodyReader,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        if reader.done {
            return Ok(None);
        }
        match reader.framing {
            Framing::None => Ok(None),
            Framing::Length(_) => {
                if self.buf.is_empty() {
                    self.fill_more("a Content-Length body")?;
                }
                let n = (reader.remaining as usize).min(self.buf.len());
                reader.remaining -= n as u64;
                reader.done = reader.remaining == 0;
                Ok(Some(self.buf.drain(..n).collect()))
            }
            Framing::UntilClose => {
                if self.buf.is_empty() {
                    match self.fill() {
                        Ok(0) => {
                            reader.done = true;
                            return Ok(None);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(ReadError::Failed(format!(
                                "reading a close-delimited body: {e}"
                            )))
                        }
                    }
                }
                Ok(Some(std::mem::take(&mut self.buf)))
            }
            Framing::Chunked => self.read_chunk_piece(reader),
        }
    }

    fn read_chunk_piece(&mut self, reader: &mut BodyReader) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            match reader.chunk {
                ChunkState::Size => {
                    let line = self.read_line("a chunk-size line")?;
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_text, 16)
                        .map_err(|e| ReadError::Failed(format!("bad chunk size {line:?}: {e}")))?;
                    if size == 0 {
                        // The trailer section ends with an empty line (RFC 9112 7.1.2).
                        while !self.read_line("the trailer section")?.is_empty() {}
                        reader.done = true;
                        return Ok(None);
                    }
                    reader.chunk = ChunkState::Data(size);
                }
                ChunkState::Data(left) => {
                    if self.buf.is_empty() {
                        self.fill_more("chunk data")?;
                    }
                    let n = (left as usize).min(self.buf.len());
                    let piece: Vec<u8> = self.buf.drain(..n).collect();
                    reader.chunk = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Some(piece));
                }
                ChunkState::DataEnd => {
                    let end = self.read_line("the CRLF after chunk data")?;
                    if !end.is_empty() {
                        return Err(ReadError::Failed(format!(
                            "chunk data overran its size: {end:?}"
                        )));
                    }
                    reader.chunk = ChunkState::Size;
                }
            }
        }
    }

    /// Reads a CRLF-terminated line (without the CRLF).
    fn read_line(&mut self, what: &str) -> Result<String, ReadError> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            self.fill_more(what)?;
        }
    }

    /// Reads the whole body that follows `head`.
    pub fn read_body(&mut self, head: &Response) -> Vec<u8> {
        fail(self.try_read_body(head))
    }

    /// `read_body`, returning failures.
    pub fn try_read_body(&mut self, head: &Response) -> Result<Vec<u8>, ReadError> {
        let mut reader = self.body_reader(head);
        let mut body = Vec::new();
        while let Some(piece) = self.try_read_body_piece(&mut reader)? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    /// Reads body pieces until the decoded body so far contains `needle`;
    /// returns what was read. Fails if the body ends first.
    pub fn read_body_until(&mut self, reader: &mut BodyReader, needle: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        while !contains(&body, needle) {
            match self.read_body_piece(reader) {
                Some(piece) => body.extend_from_slice(&piece),
                None => panic!(
                    "body ended before {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        body
    }

    /// Reads exactly `n` raw bytes (e.g. after a 101).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            fail(self.fill_more("raw bytes"));
        }
        self.buf.drain(..n).collect()
    }

    /// Waits up to `timeout` for the connection to close.
    pub fn wait_close(&mut self, timeout: Duration) -> CloseState {
        if !self.buf.is_empty() {
            return CloseState::Data(std::mem::take(&mut self.buf));
        }
        self.set_read_timeout(timeout);
        let result = self.fill();
        self.set_read_timeout(WAIT);
        match result {
            Ok(0) => CloseState::Closed,
            Ok(_) => CloseState::Data(std::mem::take(&mut self.buf)),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CloseState::StillOpen,
                _ => CloseState::Closed,
            },
        }
    }

    /// Fails the test unless the server closes the connection (with no
    /// further bytes) within the standard wait.
    pub fn expect_closed(&mut self) {
        match self.wait_close(WAIT) {
            CloseState::Closed => {}
            CloseState::StillOpen => panic!("connection still open after {WAIT:?}"),
            CloseState::Data(d) => panic!(
                "expected the connection to close, got bytes: {:?}",
                String::from_utf8_lossy(&d)
            ),
        }
    }

    /// Fails the test if any byte arrives (or the connection closes) within `quiet`.
    pub fn expect_silent_for(&mut self, quiet: Duration) {
        let start = Instant::now();
        match self.wait_close(quiet) {
            CloseState::StillOpen => {}
            other => panic!(
                "expected silence for {quiet:?}, got {other:?} after {:?}",
                start.elapsed()
            ),
        }
    }
}

fn framing_of(head: &Response) -> Framing {
    if head.status < 200 || head.status == 204 || head.status == 304 {
        return Framing::None;
    }
    let te = head.headers_named("transfer-encoding");
    if !te.is_empty() {
        let last = te
            .last()
            .and_then(|v| v.split(',').next_back())
            .map(|t| t.trim().to_ascii_lowercase());
        return if last.as_deref() == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
    }
    match head.header("content-length") {
        Some(v) => Framing::Length(
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("bad Content-Length {v:?} from the gateway: {e}")),
        ),
        None => Framing::UntilClose,
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The Host every test request carries unless it sets its own.
pub const TEST_HOST: &str = "test.local";

/// `GET path` with only a Host header.
pub fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[], b"")
}

/// An HTTP/1.1 request: adds `Host: test.local` unless `headers` has a Host,
/// and `Content-Length` when there is a body and no framing header given.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.push_str(&format!("Host: {TEST_HOST}\r\n"));
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A chunked body of `chunks` with the last-chunk and an empty trailer section.
pub fn chunked_body(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Sends `raw` on a new connection and reads the final response.
pub fn roundtrip(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut client = Client::connect(addr);
    client.send(raw);
    client.read_final_response()
}

/// `GET path` on a new connection.
pub fn http_get(addr: SocketAddr, path: &str) -> Response {
    roundtrip(addr, &get(path))
}

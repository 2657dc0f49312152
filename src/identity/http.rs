//! A minimal blocking HTTP/1.1 client (RFC 9112) for the gateway's background threads: the
//! JWKS fetcher, the credential sources and webhook deliveries. Never used on the data plane.
//!
//! One request per connection (`Connection: close`), over std sockets and the gateway's own
//! rustls client configuration. Redirects are not followed: a 3xx is returned as it is, so a
//! token endpoint cannot send a client secret somewhere else. Every exchange is bounded: the
//! response head and body by size, the whole exchange by one deadline (a server trickling a
//! byte at a time cannot hold the thread longer than that).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::config::HttpUrl;
use crate::http1::{ChunkedDecoder, HeadError, ResponseParser};

/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Bounds of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connect, send and receive together: past it the exchange fails.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

/// A response read whole.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// `Cache-Control: max-age`, when the response has a usable one.
    pub max_age: Option<Duration>,
    /// The `Date` header (RFC 9110 §6.6.1) as sent, when there is one of a sane length: the
    /// server's clock, against which a credential's absolute expiry is measured.
    pub date: Option<String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Where requests go: a checked URL and the TLS configuration it needs.
#[derive(Clone)]
pub struct Endpoint {
    url: HttpUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.url)
    }
}

impl Endpoint {
    /// Parses `url` (see [`HttpUrl::parse`]) and builds the TLS client configuration for an
    /// `https://` one. Contacts nothing.
    pub fn new(url: &str) -> Result<Endpoint, String> {
        let url = HttpUrl::parse(url)?;
        let tls = if url.tls() {
            Some(crate::tls::client_config(None)?)
        } else {
            None
        };
        Ok(Endpoint { url, tls })
    }

    /// The URL, for log lines (its `Display` hides a query).
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// `GET` asking for JSON.
    pub fn get(&self, limits: Limits) -> Result<HttpResponse, String> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: credentialflow\r\nConnection: close\r\n\r\n",
            self.url.request_target(),
            self.url.host_header()
        );
        self.send(request.as_bytes(), limits)
    }

    /// `POST` of an `application/x-www-form-urlencoded` body made of `form`, with HTTP Basic
    /// authentication when `basic` is given (RFC 7617; the user id must not contain `:`).
    /// The request bytes, which may hold a secret, are wiped once sent.
    pub fn post_form(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
        limits: Limits,
    ) -> Result<HttpResponse, String> {
        let body = Zeroizing::new(form_encode(form));
        let mut request = Zeroizing::new(format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: credentialflow\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.url.request_target(),
            self.url.host_header(),
            body.len()
        ));
        if let Some((user, password)) = basic {
            let pair = Zeroizing::new(format!("{user}:{password}"));
            let encoded =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
            request.push_str("Authorization: Basic ");
            request.push_str(&encoded);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(&body);
        self.send(request.as_bytes(), limits)
    }

    /// `POST` of a JSON `body` with the extra `headers` (names and values the caller
    /// built: no CR, LF or NUL in them). For webhook deliveries.
    pub fn post_json(
        &self,
        body: &[u8],
        headers: &[(&str, &str)],
        limits: Limits,
    ) -> Result<HttpResponse, String> {
        let mut all = Vec::with_capacity(headers.len() + 1);
        all.push(("Content-Type", "application/json"));
        all.extend_from_slice(headers);
        self.post(body, &all, limits)
    }

    /// `POST` of `body` with the caller's `headers` (e.g. `Content-Type`, `Accept` and a
    /// request signature); `Host`, `User-Agent`, `Content-Length` and `Connection` are
    /// written here. For requests signed over their headers (AWS SigV4), whose `Host` must be
    /// [`HttpUrl::host_header`]. Header values must already be checked for CR, LF and NUL;
    /// one that is not is refused. The request bytes are wiped once sent.
    pub fn post(
        &self,
        body: &[u8],
        headers: &[(&str, &str)],
        limits: Limits,
    ) -> Result<HttpResponse, String> {
        let mut request = Zeroizing::new(format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: credentialflow\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.url.request_target(),
            self.url.host_header(),
            body.len()
        ));
        for (name, value) in headers {
            let splits = |text: &str| text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
            if name.is_empty() || splits(name) || name.contains(':') || splits(value) {
                return Err(format!("header {name:?} cannot be sent"));
            }
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let mut bytes = Zeroizing::new(std::mem::take(&mut *request).into_bytes());
        bytes.extend_from_slice(body);
        self.send(&bytes, limits)
    }

    fn send(&self, request: &[u8], limits: Limits) -> Result<HttpResponse, String> {
        let deadline = Instant::now() + limits.timeout;
        let tcp = connect(&self.url, limits.timeout)?;
        let stream = DeadlineStream { tcp, deadline };
        match &self.tls {
            None => exchange(stream, request, limits.max_body),
            Some(config) => {
                let name = self.url.server_name()?;
                let connection = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| format!("TLS: {e}"))?;
                exchange(
                    rustls::StreamOwned::new(connection, stream),
                    request,
                    limits.max_body,
                )
            }
        }
    }
}

/// `application/x-www-form-urlencoded` (WHATWG URL, "urlencoded serializing"): `*-._` and
/// ASCII alphanumerics as they are, space as `+`, every other byte `%XX`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode_into(name, &mut out);
        out.push('=');
        form_encode_into(value, &mut out);
    }
    out
}

/// One name or value of [`form_encode`].
pub fn form_encode_into(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
        }
    }
}

/// A socket whose every read and write waits at most until one deadline for the whole
/// exchange.
struct DeadlineStream {
    tcp: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn remaining(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "deadline passed",
            ));
        }
        Ok(left)
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.remaining()?;
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.remaining()?;
        self.tcp.set_write_timeout(Some(left))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

fn connect(url: &HttpUrl, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (url.host(), url.port())
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host()))?;
    let mut last_error = format!("{} resolved to no address", url.host());
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                // The request goes in one write; no-delay keeps a peer's answer written in
                // pieces from waiting on our delayed ACK (~40 ms per exchange).
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last_error)
}

/// Sends `request` and reads one response, framed by `Content-Length`, chunked coding or
/// connection close (RFC 9112 §6.3), its body at most `max_body` bytes.
fn exchange(
    mut stream: impl Read + Write,
    request: &[u8],
    max_body: usize,
) -> Result<HttpResponse, String> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(8192);
    // The gateway's own response-head parser, resumed across reads so a trickled head is
    // scanned once; it bounds the head at MAX_HEAD_BYTES while it is still incomplete.
    let mut parser = ResponseParser::new();
    let (head_len, status, framing, max_age, date) = loop {
        if read_more(&mut stream, &mut buf)? == 0 {
            return Err("connection closed before the response head".to_string());
        }
        match parser.parse(&buf, MAX_HEAD_BYTES) {
            Ok(Some((head, len))) => {
                let (framing, max_age) = read_headers(head.headers(), max_body)?;
                let date = date_header(head.headers());
                break (len, head.status(), framing, max_age, date);
            }
            Ok(None) => {}
            Err(HeadError::TooLarge) => return Err("response head too large".to_string()),
            Err(HeadError::Malformed(why) | HeadError::NotImplemented(why)) => {
                return Err(format!("malformed response head: {why}"))
            }
        }
    };
    let rest = buf.split_off(head_len);
    let body = match framing {
        Framing::Length(len) => read_length(&mut stream, rest, len)?,
        Framing::Chunked => read_chunked(&mut stream, &rest, max_body)?,
        Framing::Close => read_to_close(&mut stream, rest, max_body)?,
    };
    Ok(HttpResponse {
        status,
        max_age,
        date,
        body,
    })
}

/// Longest `Date` value kept: an IMF-fixdate is 29 bytes; a longer one is not a date.
const MAX_DATE_BYTES: usize = 64;

/// The first `Date` header, when it is short UTF-8.
fn date_header<'a>(mut headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Option<String> {
    let (_, value) = headers.find(|(name, _)| name.eq_ignore_ascii_case("date"))?;
    let value = std::str::from_utf8(value).ok()?.trim();
    (value.len() <= MAX_DATE_BYTES).then(|| value.to_string())
}

fn read_more(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    let n = stream
        .read(&mut chunk)
        .map_err(|e| format!("reading the response: {e}"))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

fn read_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    max_body: usize,
) -> Result<(Framing, Option<Duration>), String> {
    let mut framing = Framing::Close;
    let mut max_age = None;
    for (name, value) in headers {
        let value = std::str::from_utf8(value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse::<usize>()
                .map_err(|_| "bad Content-Length".to_string())?;
            if len > max_body {
                return Err("response too large".to_string());
            }
            if framing == Framing::Close {
                framing = Framing::Length(len);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3: chunked, when last, wins over Content-Length.
            if value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            {
                framing = Framing::Chunked;
            } else {
                return Err("unsupported Transfer-Encoding".to_string());
            }
        } else if name.eq_ignore_ascii_case("cache-control") {
            max_age = max_age.or(parse_max_age(value));
        }
    }
    Ok((framing, max_age))
}

/// `max-age` of a `Cache-Control` value (RFC 9111 §5.2.2.1); `no-store`/`no-cache` give
/// `None`, which means "use the default period".
fn parse_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return None;
        }
        if name.eq_ignore_ascii_case("max-age") {
            max_age = argument
                .trim()
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

fn read_length(stream: &mut impl Read, mut body: Vec<u8>, len: usize) -> Result<Vec<u8>, String> {
    while body.len() < len {
        if read_more(stream, &mut body)? == 0 {
            return Err("connection closed before the end of the body".to_string());
        }
    }
    body.truncate(len);
    Ok(body)
}

fn read_chunked(stream: &mut impl Read, first: &[u8], max_body: usize) -> Result<Vec<u8>, String> {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut input = first.to_vec();
    loop {
        decoder
            .decode(&input, &mut body)
            .map_err(|e| format!("bad chunked body: {}", e.reason()))?;
        if decoder.is_done() {
            return Ok(body);
        }
        if decoder.declared_bytes() > max_body as u64 {
            return Err("response too large".to_string());
        }
        input.clear();
        if read_more(stream, &mut input)? == 0 {
            return Err("connection closed before the end of the body".to_string());
        }
    }
}

fn read_to_close(
    stream: &mut impl Read,
    mut body: Vec<u8>,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    // Checked before every read too: the whole body may have come with the head.
    loop {
        if body.len() > max_body {
            return Err("response too large".to_string());
        }
        if read_more(stream, &mut body)? == 0 {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;

    /// A stream that reads from a fixed response and keeps what is written.
    struct Canned(Cursor<Vec<u8>>);

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn exchange_with(response: &str) -> Result<HttpResponse, String> {
        exchange(
            Canned(Cursor::new(response.as_bytes().to_vec())),
            b"GET",
            1 << 20,
        )
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_max_age("max-age=60, no-cache"), None);
        assert_eq!(parse_max_age("public"), None);
    }

    #[test]
    fn content_length_body_is_read_exactly() {
        let response = exchange_with(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=42\r\n\r\nhelloEXTRA",
        )
        .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        assert_eq!(response.max_age, Some(Duration::from_secs(42)));
    }

    #[test]
    fn the_date_header_is_kept_when_it_is_short() {
        let response = exchange_with(
            "HTTP/1.1 200 OK\r\nDate: Wed, 10 Jan 2024 10:34:45 GMT\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            response.date.as_deref(),
            Some("Wed, 10 Jan 2024 10:34:45 GMT")
        );
        let long = format!(
            "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Length: 0\r\n\r\n",
            "x".repeat(MAX_DATE_BYTES + 1)
        );
        assert_eq!(exchange_with(&long).unwrap().date, None);
    }

    #[test]
    fn post_refuses_a_header_that_would_split_the_request() {
        let endpoint = Endpoint::new("http://127.0.0.1:9/").unwrap();
        let limits = Limits {
            timeout: Duration::from_millis(200),
            max_body: 1024,
        };
        for headers in [
            [("x-evil", "a\r\nHost: elsewhere")],
            [("x-a\r\nb", "v")],
            [("x:y", "v")],
        ] {
            let err = endpoint.post(b"", &headers, limits).unwrap_err();
            assert!(err.contains("cannot be sent"), "{err}");
        }
    }

    #[test]
    fn chunked_body_is_decoded() {
        let response = exchange_with(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn close_delimited_body_is_read_to_the_end() {
        let response = exchange_with("HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (404, &b"nope"[..])
        );
    }

    #[test]
    fn truncated_body_is_an_error() {
        let err = exchange_with("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").unwrap_err();
        assert!(err.contains("before the end"), "{err}");
    }

    #[test]
    fn oversized_content_length_is_refused() {
        let err = exchange_with("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn oversized_close_delimited_body_is_refused() {
        let big = format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(100));
        let err = exchange(Canned(Cursor::new(big.into_bytes())), b"GET", 64).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn a_redirect_is_returned_not_followed() {
        let response = exchange_with(
            "HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.status, 302);
    }

    #[test]
    fn form_encoding_escapes_everything_but_unreserved() {
        assert_eq!(
            form_encode(&[
                ("grant_type", "client_credentials"),
                ("scope", "read write")
            ]),
            "grant_type=client_credentials&scope=read+write"
        );
        assert_eq!(
            form_encode(&[("s", "a&b=c/d:é")]),
            "s=a%26b%3Dc%2Fd%3A%C3%A9"
        );
    }

    /// One connection's request bytes, and `answer` written back.
    fn serve_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            // Head, then the body its Content-Length announces.
            loop {
                let n = conn.read(&mut chunk).unwrap();
                got.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            conn.write_all(answer).unwrap();
            got
        });
        (url, handle)
    }

    #[test]
    fn post_form_sends_the_body_and_basic_credentials() {
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        let endpoint = Endpoint::new(&url).unwrap();
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_body: 1024,
        };
        let response = endpoint
            .post_form(
                &[("grant_type", "client_credentials")],
                Some(("id", "pw")),
                limits,
            )
            .unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"{}"[..])
        );
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(sent.starts_with("POST /token HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
        // base64("id:pw")
        assert!(sent.contains("Authorization: Basic aWQ6cHc=\r\n"), "{sent}");
        assert!(
            sent.ends_with("\r\n\r\ngrant_type=client_credentials"),
            "{sent}"
        );
    }

    #[test]
    fn a_silent_server_fails_the_exchange_at_its_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        let hold = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            drop(conn);
        });
        let started = Instant::now();
        let limits = Limits {
            timeout: Duration::from_millis(300),
            max_body: 1024,
        };
        let err = Endpoint::new(&url).unwrap().get(limits).unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("reading the response"), "{err}");
        assert!(took < Duration::from_millis(1200), "took {took:?}");
        hold.join().unwrap();
    }
}

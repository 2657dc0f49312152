//! A JWKS endpoint kept fresh by a background thread, read lock-free on the hot path.
//!
//! The thread fetches the key set at start, again when it expires (`Cache-Control: max-age`,
//! else every 5 minutes) and when a verifier asks because a token named an unknown `kid`
//! (key rotation at the IdP). Asking is rate-limited on the hot path (one atomic, at most
//! one request per minimum interval), so a flood of made-up `kid`s cannot turn the gateway
//! into a load generator against the IdP. A failed fetch keeps the last good keys and
//! retries with backoff.
//!
//! The HTTP client is a minimal blocking HTTP/1.1 GET (RFC 9112) over std sockets and the
//! gateway's own rustls client config: one request per connection, no redirects.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::keys::{keys_from_jwks, PublicKey};
use crate::config::HttpUrl;
use crate::http1::{ChunkedDecoder, HeadError, ResponseParser};

/// Timing of a JWKS source. [`JwksTiming::default`] is what the gateway uses; tests shorten it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksTiming {
    /// Least time between two refresh requests from the hot path (unknown `kid`), and the
    /// first retry delay after a failed fetch; also the floor of a server-given `max-age`.
    pub min_refresh: Duration,
    /// Refresh period when the response has no usable `Cache-Control: max-age`.
    pub default_ttl: Duration,
    /// Upper bound on a server-given `max-age`.
    pub max_ttl: Duration,
    /// Connect, read and write timeout of one fetch.
    pub io_timeout: Duration,
    /// How long starting a source waits for the first fetch, so the first requests after
    /// start find keys. A slower or failed fetch does not fail the start.
    pub startup_wait: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        JwksTiming {
            min_refresh: Duration::from_secs(10),
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(24 * 3600),
            io_timeout: Duration::from_secs(5),
            startup_wait: Duration::from_secs(5),
        }
    }
}

/// Largest JWKS response accepted; real ones are a few KiB.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The hot-path side of a JWKS endpoint: the current keys and a way to ask for a refresh.
/// Dropping it stops the fetch thread (at its next wake-up).
pub struct JwksSource {
    keys: Arc<ArcSwap<Vec<PublicKey>>>,
    wake: Sender<()>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last refresh request, plus one (0 = never).
    last_request_ms: AtomicU64,
    min_refresh_ms: u64,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl JwksSource {
    /// Checks `url`, starts the fetch thread and waits up to `timing.startup_wait` for the
    /// first fetch. Errors are about the URL or the TLS setup, never about the fetch itself.
    pub fn start(url: &str, timing: JwksTiming) -> Result<JwksSource, String> {
        let (target, tls) = checked_target(url)?;
        let keys = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let (wake, woken) = crossbeam_channel::bounded(1);
        let (first_done, first_seen) = crossbeam_channel::bounded(1);
        let fetcher = Fetcher {
            target,
            tls,
            timing,
            keys: Arc::clone(&keys),
            woken,
        };
        std::thread::Builder::new()
            .name("cf-jwks".to_string())
            .spawn(move || fetcher.run(first_done))
            .map_err(|e| format!("cannot start the JWKS thread: {e}"))?;
        let _ = first_seen.recv_timeout(timing.startup_wait);
        Ok(JwksSource {
            keys,
            wake,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            min_refresh_ms: u64::try_from(timing.min_refresh.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// A source for `url` with the same checks as [`JwksSource::start`] but no fetch thread:
    /// it never has keys. For `credentialflow check`, which must refuse what `serve` refuses
    /// without reaching out to the network.
    pub fn unstarted(url: &str) -> Result<JwksSource, String> {
        checked_target(url)?;
        let (wake, _) = crossbeam_channel::bounded(1);
        Ok(JwksSource {
            keys: Arc::new(ArcSwap::from_pointee(Vec::new())),
            wake,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            min_refresh_ms: u64::MAX,
        })
    }

    /// The current keys: one atomic load.
    pub fn keys(&self) -> Guard<Arc<Vec<PublicKey>>> {
        self.keys.load()
    }

    /// Asks the thread to fetch now; ignored when the last request is younger than the
    /// minimum interval. Never blocks.
    pub fn request_refresh(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_request_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.min_refresh_ms {
            return;
        }
        // One winner per interval even when several workers miss at the same moment.
        if self
            .last_request_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let _ = self.wake.try_send(());
        }
    }
}

/// The thread side: fetches, parses and swaps in key sets.
struct Fetcher {
    target: HttpUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    timing: JwksTiming,
    keys: Arc<ArcSwap<Vec<PublicKey>>>,
    woken: Receiver<()>,
}

impl Fetcher {
    fn run(self, first_done: Sender<()>) {
        let mut first_done = Some(first_done);
        let mut next_due = Instant::now();
        let mut failures = 0u32;
        loop {
            let now = Instant::now();
            if now >= next_due {
                if let Err(TryRecvError::Disconnected) = self.woken.try_recv() {
                    return;
                }
                match self.fetch_once() {
                    Ok(ttl) => {
                        failures = 0;
                        next_due = now + ttl;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        log::warn!(
                            "jwks {}: {e}; keeping the last {} key(s)",
                            self.target,
                            self.keys.load().len()
                        );
                        next_due = now + self.backoff(failures);
                    }
                }
                if let Some(done) = first_done.take() {
                    let _ = done.send(());
                }
                continue;
            }
            match self.woken.recv_timeout(next_due - now) {
                // Requests are already rate-limited by `request_refresh`.
                Ok(()) => next_due = now,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Retry delay after `failures` failed fetches in a row: the minimum interval doubling
    /// up to the normal refresh period.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.timing
            .min_refresh
            .saturating_mul(factor)
            .min(self.timing.default_ttl)
    }

    /// One fetch; on success the keys are live and the time to the next refresh returned.
    fn fetch_once(&self) -> Result<Duration, String> {
        let response = http_get(&self.target, self.tls.as_ref(), self.timing.io_timeout)?;
        if response.status != 200 {
            return Err(format!("HTTP status {}", response.status));
        }
        let (keys, skipped) = keys_from_jwks(&response.body)?;
        for why in &skipped {
            log::debug!("jwks {}: skipped {why}", self.target);
        }
        if keys.is_empty() {
            log::warn!("jwks {}: no usable signing key", self.target);
        }
        let ttl = response
            .max_age
            .unwrap_or(self.timing.default_ttl)
            .clamp(self.timing.min_refresh, self.timing.max_ttl);
        log::info!(
            "jwks {}: {} key(s), next refresh in {}s",
            self.target,
            keys.len(),
            ttl.as_secs()
        );
        self.keys.store(Arc::new(keys));
        Ok(ttl)
    }
}

/// `url` parsed, with the TLS client configuration it needs (`None` for `http://`).
fn checked_target(url: &str) -> Result<(HttpUrl, Option<Arc<rustls::ClientConfig>>), String> {
    let target = HttpUrl::parse(url)?;
    let tls = if target.tls() {
        Some(crate::tls::client_config(None)?)
    } else {
        None
    };
    Ok((target, tls))
}

/// What a fetch returns.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    max_age: Option<Duration>,
    body: Vec<u8>,
}

fn http_get(
    url: &HttpUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let tcp = connect(url, timeout)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: credentialflow\r\nConnection: close\r\n\r\n",
        url.request_target(),
        url.host_header()
    );
    match tls {
        None => exchange(tcp, request.as_bytes()),
        Some(config) => {
            let name = url.server_name()?;
            let connection = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(
                rustls::StreamOwned::new(connection, tcp),
                request.as_bytes(),
            )
        }
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
                stream
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| stream.set_write_timeout(Some(timeout)))
                    .map_err(|e| format!("socket setup: {e}"))?;
                return Ok(stream);
            }
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last_error)
}

/// Sends `request` and reads one response, framed by `Content-Length`, chunked coding or
/// connection close (RFC 9112 §6.3).
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<HttpResponse, String> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::with_capacity(8192);
    // The gateway's own response-head parser, resumed across reads so a trickled head is
    // scanned once; it bounds the head at MAX_HEAD_BYTES while it is still incomplete.
    let mut parser = ResponseParser::new();
    let (head_len, status, framing, max_age) = loop {
        if read_more(&mut stream, &mut buf)? == 0 {
            return Err("connection closed before the response head".to_string());
        }
        match parser.parse(&buf, MAX_HEAD_BYTES) {
            Ok(Some((head, len))) => {
                let (framing, max_age) = read_headers(head.headers())?;
                break (len, head.status(), framing, max_age);
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
        Framing::Chunked => read_chunked(&mut stream, &rest)?,
        Framing::Close => read_to_close(&mut stream, rest)?,
    };
    Ok(HttpResponse {
        status,
        max_age,
        body,
    })
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
) -> Result<(Framing, Option<Duration>), String> {
    let mut framing = Framing::Close;
    let mut max_age = None;
    for (name, value) in headers {
        let value = std::str::from_utf8(value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse::<usize>()
                .map_err(|_| "bad Content-Length".to_string())?;
            if len > MAX_RESPONSE_BYTES {
                return Err("JWKS response too large".to_string());
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

fn read_chunked(stream: &mut impl Read, first: &[u8]) -> Result<Vec<u8>, String> {
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
        if decoder.declared_bytes() > MAX_RESPONSE_BYTES as u64 {
            return Err("JWKS response too large".to_string());
        }
        input.clear();
        if read_more(stream, &mut input)? == 0 {
            return Err("connection closed before the end of the body".to_string());
        }
    }
}

fn read_to_close(stream: &mut impl Read, mut body: Vec<u8>) -> Result<Vec<u8>, String> {
    while read_more(stream, &mut body)? > 0 {
        if body.len() > MAX_RESPONSE_BYTES {
            return Err("JWKS response too large".to_string());
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that reads from a fixed response and discards writes.
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
        exchange(Canned(Cursor::new(response.as_bytes().to_vec())), b"GET")
    }

    #[test]
    fn a_refused_url_fails_the_start_before_any_thread() {
        for url in [
            "ftp://idp/jwks",
            "http://idp/jwks#k",
            "http://u:pw@idp/jwks",
        ] {
            assert!(JwksSource::unstarted(url).is_err(), "{url}");
        }
        assert!(JwksSource::unstarted("https://idp.example.com/jwks?x=1").is_ok());
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
}

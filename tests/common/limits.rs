//! Rate and concurrency limits in tests: reading `x-ratelimit-*`, `Retry-After`
//! and 429 bodies, firing requests from many threads at once, sending from a
//! second loopback address, and seeing which workers hold connections.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::Duration;

use super::client::{request, Response};
use super::gateway::Gateway;
use super::keys::get_with_key;
use super::{wait_until, WAIT};

/// The three `x-ratelimit-*-requests` headers of one response, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimitHeaders {
    /// `x-ratelimit-limit-requests`: the limiter's burst capacity.
    pub limit: u64,
    /// `x-ratelimit-remaining-requests`: still admissible right after this request.
    pub remaining: u64,
    /// `x-ratelimit-reset-requests`: time until back to full capacity.
    pub reset: Duration,
}

/// Whether the response carries any `x-ratelimit-*` header.
pub fn has_rate_limit_headers(response: &Response) -> bool {
    response
        .headers
        .iter()
        .any(|(name, _)| name.to_ascii_lowercase().starts_with("x-ratelimit-"))
}

/// The `x-ratelimit-*-requests` headers; fails the test if one is missing,
/// repeated or malformed.
pub fn request_limit_headers(response: &Response) -> RequestLimitHeaders {
    let only = |name: &str| -> &str {
        let values = response.headers_named(name);
        assert_eq!(
            values.len(),
            1,
            "expected exactly one {name} on {} {:?}; headers: {:?}",
            response.status,
            response.text(),
            response.headers
        );
        values[0].trim()
    };
    let number = |name: &str| -> u64 {
        let value = only(name);
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {value:?} is not a whole number ({e})"))
    };
    let reset_text = only("x-ratelimit-reset-requests");
    RequestLimitHeaders {
        limit: number("x-ratelimit-limit-requests"),
        remaining: number("x-ratelimit-remaining-requests"),
        reset: parse_go_duration(reset_text).unwrap_or_else(|| {
            panic!("x-ratelimit-reset-requests: {reset_text:?} is not a duration like 1.5s or 6m0s")
        }),
    }
}

/// Parses a duration the way OpenAI (and Go's `time.Duration`) writes it:
/// one or more `<decimal><unit>` pairs, units `h`, `m`, `s`, `ms`, `us`/`µs`,
/// `ns` ("250ms", "1.5s", "6m0s"), or a bare "0".
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        seconds += number * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(seconds))
}

/// The `Retry-After` value in whole seconds; fails the test unless there is
/// exactly one and it is a delay-seconds of at least 1 (RFC 9110 section 10.2.3).
pub fn retry_after_secs(response: &Response) -> u64 {
    let values = response.headers_named("retry-after");
    assert_eq!(
        values.len(),
        1,
        "expected exactly one Retry-After on {} {:?}; headers: {:?}",
        response.status,
        response.text(),
        response.headers
    );
    let value = values[0].trim();
    let secs: u64 = value
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After {value:?} is not whole seconds ({e})"));
    assert!(secs >= 1, "Retry-After must be at least 1, got {secs}");
    secs
}

/// Fails the test unless the response is a 429 `rate_limit_error` in the
/// OpenAI shape with `error.code == code` and a `Retry-After` of at least 1 s;
/// returns the `Retry-After` seconds.
pub fn assert_rate_limited(response: &Response, code: &str) -> u64 {
    response.assert_error(429, "rate_limit_error");
    let json = response.json();
    assert_eq!(
        json["error"]["code"].as_str(),
        Some(code),
        "error.code of the 429: {json}"
    );
    retry_after_secs(response)
}

/// Runs `job(i)` for `i` in `0..threads`, all released at once by a barrier,
/// and returns the results in index order.
pub fn concurrently<T: Send>(threads: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, job) = (&barrier, &job);
                scope.spawn(move || {
                    barrier.wait();
                    job(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread panicked"))
            .collect()
    })
}

/// How many responses have `status`.
pub fn count_status(responses: &[Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status == status).count()
}

/// `GET path` with `Connection: close` on a new connection whose source
/// address is `source` (any of 127/8 works on Linux: the whole block is
/// routed to `lo`), so the gateway sees a different client IP.
pub fn get_from(
    source: IpAddr,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind the client to {source}: {e}"));
    socket
        .connect_timeout(&addr.into(), WAIT)
        .unwrap_or_else(|e| panic!("connect {source} -> {addr}: {e}"));
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut all_headers = vec![("Connection", "close")];
    all_headers.extend_from_slice(headers);
    stream
        .write_all(&request("GET", path, &all_headers, b""))
        .expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to GET {path} from {source}: {e}"));
    parse_closed_response(&raw)
}

/// Parses one response read up to the connection's close (body framed by
/// Content-Length when present, else by the close).
fn parse_closed_response(raw: &[u8]) -> Response {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut head = httparse::Response::new(&mut fields);
    let head_len = match head.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!(
            "no complete response head ({other:?}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    };
    let headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &raw[head_len..];
    let body_len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(rest.len())
        .min(rest.len());
    Response {
        version: head.version.unwrap_or(1),
        status: head.code.unwrap_or(0),
        reason: head.reason.unwrap_or("").to_string(),
        headers,
        body: rest[..body_len].to_vec(),
    }
}

/// The `credentialflow_open_connections{worker="N"}` gauges from `/metrics`,
/// indexed by worker.
pub fn open_connections_by_worker(gw: &Gateway) -> Vec<u64> {
    let metrics = gw.admin_get("/metrics");
    assert_eq!(metrics.status, 200, "/metrics: {}", metrics.text());
    let mut gauges: Vec<(usize, u64)> = metrics
        .text()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("credentialflow_open_connections{worker=\"")?;
            let (worker, rest) = rest.split_once("\"}")?;
            Some((worker.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect();
    gauges.sort_unstable();
    gauges.into_iter().map(|(_, value)| value).collect()
}

/// Waits until a request presenting `secret` on `probe_path` gets
/// `known_status` instead of 401, i.e. until the new key has reached the
/// gateway's credential cache (one replica shared by every worker). Callers
/// pick a probe that consumes none of the quota under test, e.g. a route the
/// key may not use (403: rejected requests never consume quota).
pub fn wait_until_key_known(gw: &Gateway, secret: &str, probe_path: &str, known_status: u16) {
    let mut last = 0;
    let known = wait_until(WAIT, || {
        last = get_with_key(gw.addr(), probe_path, Some(secret)).status;
        last == known_status
    });
    assert!(
        known,
        "the new key never got {known_status} on {probe_path} within {WAIT:?} (last: {last})"
    );
}

/// Sleeps until `duration` has passed since `since`.
pub fn sleep_until(since: std::time::Instant, duration: Duration) {
    std::thread::sleep(duration.saturating_sub(since.elapsed()));
}

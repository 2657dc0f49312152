//! One request/response exchange with an upstream, for every caller: the reverse proxy,
//! which streams the client's body, and the AI front doors, whose requests the gateway
//! composes whole. [`run`] owns the loop they share: pick a target, take a pooled connection
//! or open one, send the request, read the response head, and try again where that is safe.
//! What differs between callers is an [`Outgoing`]. Also the readers of complete bodies.

use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::ThreadState;
use super::{Failure, UPSTREAM_BUFFER};
use crate::error::GatewayError;
use crate::http1::{parse_response, BufConn, ReadError};
use crate::http1::{BodyFraming, ChunkedDecoder, RequestHead, ResponseBody, ResponseHead, Version};
use crate::snapshot::RequestBounds;
use crate::upstream::{self, Acquired, ConnectError, Pool, Target, Upstream, UpstreamStream};

/// An upstream response whose head has been read; the body is still on `conn`.
pub(crate) struct Exchange {
    pub conn: BufConn<UpstreamStream>,
    pub response: ResponseHead,
    /// Index of the target that answered, to return the connection to its pool.
    pub target: usize,
    /// The address of that target, for the access log's `upstream_addr`.
    pub addr: std::net::SocketAddr,
    /// When the request started on the connection that answered (`upstream_ms`).
    pub sent: Instant,
}

/// A request as [`run`] sends it: what one caller's requests have that another's do not.
pub(super) trait Outgoing {
    /// What a failed exchange ends with; the loop's own failures are [`GatewayError`]s.
    type Error: From<GatewayError>;

    /// The bytes written first on a connection to `target`: the head (whose `Host` is the
    /// target's) and as much of the body as is at hand. Called once per attempt.
    fn first_bytes(&mut self, target: &Target) -> Vec<u8>;

    /// Sends what [`Outgoing::first_bytes`] did not hold, once those bytes were written.
    async fn send_rest(&mut self, conn: &mut BufConn<UpstreamStream>) -> Result<(), Self::Error>;

    /// Whether the request may be sent again on a fresh connection after a reused one was
    /// closed before a byte of the response arrived (RFC 9112 9.3.1): the upstream may have
    /// acted on it, so only a request that is safe to repeat, and still whole at hand, is.
    fn resendable(&self) -> bool;
}

/// Sends `request` to `upstream` and reads the response head (skipping 1xx other than 101).
///
/// - A target is picked by the balancer; a connect failure (which cools the target down,
///   see [`upstream::connect`]) moves on to the next target, for any method: nothing was sent.
/// - A pooled connection whose first write fails was closed under us and delivered nothing:
///   the request goes again on a fresh connection. One that closes before answering does so
///   only when [`Outgoing::resendable`].
/// - At most one attempt per target plus one: a stale pooled connection may cost one.
///
/// Connect failures and bad responses are [`GatewayError::Upstream`] (502), connect and
/// response-head timeouts [`GatewayError::UpstreamTimeout`] (504).
pub(super) async fn run<R: Outgoing>(
    pool: &Pool,
    upstream: &Upstream,
    limits: &RequestBounds,
    request: &mut R,
) -> Result<Exchange, R::Error> {
    let connect_timeout = limits.upstream_connect_timeout;
    let mut target = upstream.pick();
    let mut attempts_left = upstream.targets.len() + 1;
    // After a stale pooled connection, the pool's other idle ones are likely stale too.
    let mut fresh_only = false;
    loop {
        attempts_left -= 1;
        let acquired = if fresh_only {
            upstream::connect(upstream, target, connect_timeout)
                .await
                .map(|stream| Acquired {
                    stream,
                    reused: false,
                })
        } else {
            upstream::acquire(pool, upstream, target, connect_timeout).await
        };
        let Acquired { stream, reused } = match acquired {
            Ok(acquired) => acquired,
            Err(e) => {
                // Nothing was sent, so another target is safe for any method.
                if attempts_left > 0 {
                    if let Some(next) = upstream.next_after(target) {
                        target = next;
                        continue;
                    }
                }
                return Err(connect_failure(e).into());
            }
        };
        let mut conn = BufConn::new(stream, UPSTREAM_BUFFER);
        let sent = Instant::now();
        let (res, _) = conn
            .write_all(request.first_bytes(&upstream.targets[target]))
            .await;
        if res.is_err() {
            // A stale pooled connection: the kernel refused the write, nothing was delivered.
            if reused && attempts_left > 0 {
                fresh_only = true;
                continue;
            }
            return Err(GatewayError::Upstream("write failed").into());
        }
        request.send_rest(&mut conn).await?;
        match read_response_head(&mut conn, limits).await {
            Ok(response) => {
                return Ok(Exchange {
                    conn,
                    response,
                    target,
                    addr: upstream.targets[target].addr,
                    sent,
                })
            }
            Err(HeadFailure::Timeout) => return Err(GatewayError::UpstreamTimeout.into()),
            Err(HeadFailure::ClosedBeforeResponse)
                if reused && attempts_left > 0 && request.resendable() =>
            {
                // The upstream closed an idle keep-alive connection as we reused it.
                fresh_only = true;
            }
            Err(_) => return Err(GatewayError::Upstream("invalid or missing response").into()),
        }
    }
}

/// The error toward the client when no target could be connected to.
fn connect_failure(e: ConnectError) -> GatewayError {
    match e {
        ConnectError::Timeout => GatewayError::UpstreamTimeout,
        ConnectError::Refused(_) => GatewayError::Upstream("connect failed"),
        ConnectError::Tls(_) => GatewayError::Upstream("TLS handshake failed"),
    }
}

/// Sends the request that `build` writes whole for a target (its `Host` differs per target)
/// and reads the response head; see [`run`].
pub(crate) async fn send(
    worker: &ThreadState,
    upstream: &Upstream,
    limits: &RequestBounds,
    build: impl Fn(&Target) -> Vec<u8>,
) -> Result<Exchange, GatewayError> {
    run(&worker.pool, upstream, limits, &mut Composed(build)).await
}

/// A request the gateway composed itself, held whole in memory.
struct Composed<F>(F);

impl<F: Fn(&Target) -> Vec<u8>> Outgoing for Composed<F> {
    type Error = GatewayError;

    fn first_bytes(&mut self, target: &Target) -> Vec<u8> {
        (self.0)(target)
    }

    async fn send_rest(&mut self, _: &mut BufConn<UpstreamStream>) -> Result<(), GatewayError> {
        Ok(())
    }

    /// Always: these are model calls, which the AI layer retries on any connection trouble
    /// anyway; sending again at once on a fresh connection only saves its backoff.
    fn resendable(&self) -> bool {
        true
    }
}

/// Why no response head could be read.
enum HeadFailure {
    /// None within `upstream_timeout`.
    Timeout,
    /// The connection closed (or reset) before a byte of a response arrived.
    ClosedBeforeResponse,
    /// Not a valid response, or cut short.
    Invalid,
}

/// Reads the upstream's final response head (skipping 1xx interim responses other than 101).
async fn read_response_head(
    conn: &mut BufConn<UpstreamStream>,
    limits: &RequestBounds,
) -> Result<ResponseHead, HeadFailure> {
    let deadline = Instant::now() + limits.upstream_timeout;
    let mut got_bytes = false;
    loop {
        match parse_response(conn.buffered(), limits.max_header_bytes) {
            Ok(Some((head, used))) => {
                conn.consume(used);
                let status = head.status();
                if (100..200).contains(&status) && status != 101 {
                    got_bytes = true;
                    continue;
                }
                return Ok(head);
            }
            Ok(None) => {}
            Err(_) => return Err(HeadFailure::Invalid),
        }
        match conn.fill_until(deadline).await {
            Ok(0) if !got_bytes && conn.buffered().is_empty() => {
                return Err(HeadFailure::ClosedBeforeResponse)
            }
            Ok(0) => return Err(HeadFailure::Invalid),
            Ok(_) => got_bytes = true,
            Err(ReadError::Timeout) => return Err(HeadFailure::Timeout),
            Err(ReadError::Io(_)) if !got_bytes => return Err(HeadFailure::ClosedBeforeResponse),
            Err(ReadError::Io(_)) => return Err(HeadFailure::Invalid),
        }
    }
}

impl Exchange {
    /// Returns the connection to the worker's pool if the response ended cleanly and the
    /// upstream keeps it open.
    pub fn finish(self, worker: &ThreadState, upstream: &Upstream, body_finished: bool) {
        if body_finished && self.response.keep_alive() && self.conn.buffered().is_empty() {
            let (stream, _) = self.conn.into_parts();
            worker
                .pool
                .checkin(upstream.targets[self.target].pool_key().clone(), stream);
        }
    }
}

/// Decodes a response body as it arrives (Content-Length, chunked or until close).
pub(crate) struct BodyDecoder {
    kind: ResponseBody,
    remaining: u64,
    chunked: ChunkedDecoder,
    finished: bool,
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`.
    pub fn new(kind: ResponseBody) -> BodyDecoder {
        BodyDecoder {
            kind,
            remaining: match kind {
                ResponseBody::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedDecoder::new(),
            finished: matches!(kind, ResponseBody::None | ResponseBody::Length(0)),
        }
    }

    /// Moves what `conn` has buffered into `out`, decoded; reads more first when nothing is
    /// buffered. `Ok(false)` once the body is complete and nothing was added.
    pub async fn next(
        &mut self,
        conn: &mut BufConn<UpstreamStream>,
        out: &mut Vec<u8>,
        silence: Duration,
    ) -> Result<bool, Failure> {
        loop {
            if self.finished {
                return Ok(false);
            }
            let before = out.len();
            self.take(conn, out)?;
            if out.len() > before || self.finished {
                return Ok(true);
            }
            match conn.fill_within(silence).await {
                Ok(n) if n > 0 => {}
                Ok(_) if self.kind == ResponseBody::UntilClose => self.finished = true,
                _ => return Err(Failure::Abort), // truncated
            }
        }
    }

    /// Decodes what `conn` has buffered without reading more, dropping it; whether the body
    /// is then complete (the connection may be reused).
    pub fn take_buffered(&mut self, conn: &mut BufConn<UpstreamStream>) -> bool {
        let mut rest = Vec::new();
        self.take(conn, &mut rest).is_ok() && self.finished
    }

    fn take(
        &mut self,
        conn: &mut BufConn<UpstreamStream>,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        match self.kind {
            ResponseBody::None => self.finished = true,
            ResponseBody::Length(_) => {
                let n = (conn.buffered().len() as u64).min(self.remaining) as usize;
                out.extend_from_slice(&conn.buffered()[..n]);
                conn.consume(n);
                self.remaining -= n as u64;
                self.finished = self.remaining == 0;
            }
            ResponseBody::Chunked => {
                let d = self
                    .chunked
                    .decode(conn.buffered(), out)
                    .map_err(|_| Failure::Abort)?;
                conn.consume(d.consumed);
                self.finished = d.done;
            }
            ResponseBody::UntilClose => {
                let n = conn.buffered().len();
                out.extend_from_slice(conn.buffered());
                conn.consume(n);
            }
        }
        Ok(())
    }
}

/// Reads a whole response body of at most `max` bytes.
pub(crate) async fn read_response_body(
    exchange: &mut Exchange,
    method: &str,
    max: usize,
    silence: Duration,
) -> Result<Vec<u8>, GatewayError> {
    let mut decoder = BodyDecoder::new(exchange.response.body(method));
    let mut body = Vec::new();
    while decoder
        .next(&mut exchange.conn, &mut body, silence)
        .await
        .map_err(|_| GatewayError::Upstream("response body cut short"))?
    {
        if body.len() > max {
            return Err(GatewayError::Upstream("response body too large"));
        }
    }
    Ok(body)
}

/// Reads the whole request body (at most `max` bytes, else 413), answering
/// `Expect: 100-continue` first.
pub(crate) async fn read_request_body<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    max: u64,
    idle: Duration,
) -> Result<Vec<u8>, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let framing = head.body();
    if let BodyFraming::Length(n) = framing {
        if n > max {
            return Err(GatewayError::BodyTooLarge.into());
        }
    }
    let buffered_all = match framing {
        BodyFraming::None => return Ok(Vec::new()),
        BodyFraming::Length(n) => client.buffered().len() as u64 >= n,
        BodyFraming::Chunked => false,
    };
    if head.expects_continue() && head.version() == Version::Http11 && !buffered_all {
        let (res, _) = client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        res.map_err(|_| Failure::Abort)?;
    }
    let mut body = Vec::new();
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            body.reserve(n as usize);
            while (body.len() as u64) < n {
                if client.buffered().is_empty() {
                    match client.fill_within(idle).await {
                        Ok(k) if k > 0 => {}
                        _ => return Err(Failure::Abort),
                    }
                }
                let take = (client.buffered().len() as u64).min(n - body.len() as u64) as usize;
                body.extend_from_slice(&client.buffered()[..take]);
                client.consume(take);
            }
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let d = decoder
                    .decode(client.buffered(), &mut body)
                    .map_err(|_| GatewayError::BadRequest("invalid chunked body"))?;
                client.consume(d.consumed);
                if decoder.body_bytes() > max {
                    return Err(GatewayError::BodyTooLarge.into());
                }
                if d.done {
                    break;
                }
                match client.fill_within(idle).await {
                    Ok(k) if k > 0 => {}
                    _ => return Err(Failure::Abort),
                }
            }
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::thread::JoinHandle;

    use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

    use super::*;
    use crate::upstream::test_support::{
        on_each_driver, plain_upstream, refusing_addr, wait_readable,
    };

    const GENEROUS: Duration = Duration::from_secs(10);

    fn bounds(upstream_timeout: Duration) -> RequestBounds {
        RequestBounds {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            header_timeout: GENEROUS,
            idle_timeout: GENEROUS,
            upstream_connect_timeout: GENEROUS,
            upstream_timeout,
            merge_slashes: false,
        }
    }

    /// A bodyless GET that counts how often it was written.
    struct Get {
        resendable: bool,
        written: usize,
    }

    impl Get {
        fn new(resendable: bool) -> Get {
            Get {
                resendable,
                written: 0,
            }
        }
    }

    impl Outgoing for Get {
        type Error = GatewayError;

        fn first_bytes(&mut self, target: &Target) -> Vec<u8> {
            self.written += 1;
            format!("GET /x HTTP/1.1\r\nhost: {}\r\n\r\n", target.authority).into_bytes()
        }

        async fn send_rest(&mut self, _: &mut BufConn<UpstreamStream>) -> Result<(), GatewayError> {
            Ok(())
        }

        fn resendable(&self) -> bool {
            self.resendable
        }
    }

    /// Accepts one connection, reads a request head, answers 200 and waits for the close;
    /// returns the request head it read.
    fn answer_once(listener: TcpListener) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(GENEROUS)).expect("read timeout");
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read request");
                assert!(n > 0, "closed before a whole request head");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .expect("write response");
            // Until the client closes: a test that forgets to fails instead of hanging.
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            String::from_utf8_lossy(&seen).into_owned()
        })
    }

    /// A pool holding one connection to `listener` that the upstream has closed, the close
    /// already seen by the kernel (as when an upstream's keep-alive timeout ends). With
    /// `reset`, the upstream had unread bytes, so it reset the connection instead.
    async fn pool_with_a_closed_connection(
        listener: &TcpListener,
        upstream: &Upstream,
        reset: bool,
    ) -> Pool {
        let mut stream = upstream::connect(upstream, 0, GENEROUS)
            .await
            .expect("connect");
        if reset {
            let (res, _) = stream.write_all(b"unread".to_vec()).await;
            res.expect("write");
        }
        let fd = stream.raw_fd();
        let (accepted, _) = listener.accept().expect("accept");
        if reset {
            // The bytes must have arrived for the close to be a reset.
            accepted.set_read_timeout(Some(GENEROUS)).unwrap();
            let mut probe = [0u8; 1];
            assert_eq!(accepted.peek(&mut probe).expect("peek"), 1);
        }
        drop(accepted);
        wait_readable(fd);
        let pool = Pool::default();
        pool.checkin(upstream.targets[0].pool_key().clone(), stream);
        pool
    }

    /// Closes the exchange's connection (under io_uring a dropped socket closes only later).
    async fn close(exchange: Exchange) {
        let (mut stream, _) = exchange.conn.into_parts();
        stream.shutdown().await.expect("shutdown");
    }

    /// Whether `listener` has a connection nobody accepted.
    fn has_pending_connection(listener: &TcpListener) -> bool {
        listener.set_nonblocking(true).unwrap();
        match listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    #[test]
    fn pooled_connection_closed_under_us_is_replaced_for_a_resendable_request() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let up = plain_upstream(&[listener.local_addr().unwrap()]);
            let pool = pool_with_a_closed_connection(&listener, &up, false).await;
            let server = answer_once(listener);
            let mut get = Get::new(true);
            let exchange = run(&pool, &up, &bounds(GENEROUS), &mut get)
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(exchange.response.status(), 200);
            assert_eq!(
                get.written, 2,
                "sent on the pooled connection, then a new one"
            );
            close(exchange).await;
            assert!(server.join().unwrap().starts_with("GET /x HTTP/1.1\r\n"));
        });
    }

    #[test]
    fn pooled_connection_closed_under_us_fails_a_request_that_may_not_be_resent() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let up = plain_upstream(&[listener.local_addr().unwrap()]);
            let pool = pool_with_a_closed_connection(&listener, &up, false).await;
            let mut get = Get::new(false);
            let err = run(&pool, &up, &bounds(GENEROUS), &mut get)
                .await
                .err()
                .expect("no response");
            assert_eq!(err, GatewayError::Upstream("invalid or missing response"));
            assert_eq!(get.written, 1);
            assert!(!has_pending_connection(&listener), "the request was resent");
        });
    }

    #[test]
    fn pooled_connection_reset_before_the_write_is_replaced_for_any_request() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let up = plain_upstream(&[listener.local_addr().unwrap()]);
            let pool = pool_with_a_closed_connection(&listener, &up, true).await;
            let server = answer_once(listener);
            // Not resendable: but a refused write delivered nothing, so a new connection is.
            let mut get = Get::new(false);
            let exchange = run(&pool, &up, &bounds(GENEROUS), &mut get)
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(exchange.response.status(), 200);
            assert_eq!(get.written, 2);
            close(exchange).await;
            server.join().unwrap();
        });
    }

    #[test]
    fn refused_target_cools_down_and_the_next_target_answers() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let live: SocketAddr = listener.local_addr().unwrap();
            let up = plain_upstream(&[refusing_addr(), live]);
            let server = answer_once(listener);
            let mut get = Get::new(false);
            // The balancer's first pick is target 0, the refusing one.
            let exchange = run(&Pool::default(), &up, &bounds(GENEROUS), &mut get)
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(exchange.target, 1);
            assert_eq!(exchange.response.status(), 200);
            assert!(up.targets[0].health.is_cooling());
            assert!(!up.targets[1].health.is_cooling());
            close(exchange).await;
            server.join().unwrap();
        });
    }

    #[test]
    fn every_target_refusing_is_an_upstream_error() {
        on_each_driver(|| async {
            let up = plain_upstream(&[refusing_addr(), refusing_addr()]);
            let mut get = Get::new(true);
            let err = run(&Pool::default(), &up, &bounds(GENEROUS), &mut get)
                .await
                .err()
                .expect("no target");
            assert_eq!(err, GatewayError::Upstream("connect failed"));
            assert_eq!(get.written, 0);
        });
    }

    #[test]
    fn upstream_silent_past_upstream_timeout_is_a_timeout() {
        on_each_driver(|| async {
            // The kernel completes the handshake; nobody ever answers.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let up = plain_upstream(&[listener.local_addr().unwrap()]);
            let mut get = Get::new(true);
            let err = run(
                &Pool::default(),
                &up,
                &bounds(Duration::from_millis(200)),
                &mut get,
            )
            .await
            .err()
            .expect("no response");
            assert_eq!(err, GatewayError::UpstreamTimeout);
            assert_eq!(get.written, 1, "a timeout is not retried");
        });
    }
}

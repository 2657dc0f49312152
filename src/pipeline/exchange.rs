//! One request/response exchange with an upstream for requests the gateway composes itself
//! (the AI front doors): the whole request is in memory, so it can be sent again on a fresh
//! connection when a pooled one turns out to be stale. Also the readers of complete bodies.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::proxy::{read_response_head, HeadFailure};
use super::ThreadState;
use super::{Failure, UPSTREAM_BUFFER};
use crate::error::GatewayError;
use crate::http1::BufConn;
use crate::http1::{BodyFraming, ChunkedDecoder, RequestHead, ResponseBody, ResponseHead, Version};
use crate::snapshot::RequestBounds;
use crate::upstream::{self, ConnectError, Target, Upstream, UpstreamStream};

/// An upstream response whose head has been read; the body is still on `conn`.
pub(super) struct Exchange {
    pub conn: BufConn<UpstreamStream>,
    pub response: ResponseHead,
    /// Index of the target that answered, to return the connection to its pool.
    pub target: usize,
}

/// Sends the request that `build` writes for a target (its `Host` differs per target) and
/// reads the response head. Connect failures move on to the next target; a pooled connection
/// that was closed under us is replaced by a fresh one and the request sent again, since the
/// upstream never saw it.
pub(super) async fn send(
    worker: &ThreadState,
    upstream: &Upstream,
    limits: &RequestBounds,
    build: impl Fn(&Target) -> Vec<u8>,
) -> Result<Exchange, GatewayError> {
    let mut target = upstream.pick();
    let mut attempts_left = upstream.targets.len() + 1;
    let mut fresh_only = false;
    loop {
        attempts_left -= 1;
        let key = upstream.targets[target].pool_key();
        let pooled = if fresh_only {
            None
        } else {
            worker.pool.checkout(key)
        };
        let reused = pooled.is_some();
        let stream = match pooled {
            Some(s) => s,
            None => {
                match upstream::connect(upstream, target, limits.upstream_connect_timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        if attempts_left > 0 {
                            if let Some(next) = upstream.next_after(target) {
                                target = next;
                                continue;
                            }
                        }
                        return Err(match e {
                            ConnectError::Timeout => GatewayError::UpstreamTimeout,
                            ConnectError::Refused(_) => GatewayError::Upstream("connect failed"),
                            ConnectError::Tls(_) => GatewayError::Upstream("TLS handshake failed"),
                        });
                    }
                }
            }
        };
        let mut conn = BufConn::new(stream, UPSTREAM_BUFFER);
        let (res, _) = conn.write_all(build(&upstream.targets[target])).await;
        if res.is_err() {
            if reused && attempts_left > 0 {
                fresh_only = true;
                continue;
            }
            return Err(GatewayError::Upstream("write failed"));
        }
        match read_response_head(&mut conn, limits).await {
            Ok(response) => {
                return Ok(Exchange {
                    conn,
                    response,
                    target,
                })
            }
            Err(HeadFailure::Timeout) => return Err(GatewayError::UpstreamTimeout),
            Err(HeadFailure::ClosedBeforeResponse) if reused && attempts_left > 0 => {
                fresh_only = true;
            }
            Err(_) => return Err(GatewayError::Upstream("invalid or missing response")),
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
pub(super) struct BodyDecoder {
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
pub(super) async fn read_response_body(
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
pub(super) async fn read_request_body<S>(
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

//! One client connection: TLS handshake, then requests in order until close.
//!
//! Between requests a plain connection holds no read buffer: it keeps its read in flight for
//! a moment after each response (the next request of a busy client usually comes within it,
//! and then costs one read, as it would without any of this), then cancels that read, gives the
//! buffer back to the worker's [`BufferPool`] and waits for readability with nothing lent to
//! the kernel. When bytes arrive it takes a buffer again and reads them.

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Canceller, Split, Splitable};
use monoio::net::TcpStream;
use monoio_rustls::ServerTlsStream;

use super::buffers::BufferPool;
use super::Worker;
use crate::error::GatewayError;
use crate::http1::{BufConn, ReadError};
use crate::http1::{HeadError, HeadParser};
use crate::pipeline::{self, Outcome};
use crate::upstream::UpstreamStream;

/// Read buffer per client connection while bytes arrive: enough for nearly every request
/// head; longer heads grow it up to `max_header_bytes` and request bodies grow it as they
/// stream, and a grown one is swapped for a pooled one before the next wait.
pub(super) const READ_BUFFER: usize = 4 * 1024;

/// Free read buffers a worker keeps for reuse (1 MiB of them at most): enough for the
/// connections that are mid-request at once on a busy worker; the rest go back to the
/// allocator when a crowd of connections goes idle together.
pub(super) const POOLED_READ_BUFFERS: usize = 256;

/// How long a plain connection keeps a read (and its buffer) in flight after a response before
/// it parks without a buffer. Long enough that back-to-back keep-alive requests never pay the
/// park (a cancel, a readiness wait and a second read), short enough that an idle crowd
/// holds its buffers only briefly.
const HOT_WAIT: Duration = Duration::from_millis(200);

/// Serves one accepted connection until it closes.
pub async fn serve_connection(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, tls: bool) {
    // `header_timeout` covers the first request's whole head counted from here, the TLS
    // handshake and the wait for the first byte included: one deadline, not one per phase,
    // so a client cannot stretch it by spending it on the first byte and then trickling.
    let first_head_deadline = Instant::now() + worker.state.snapshot().limits.header_timeout;
    if tls {
        // Boxed: a TLS session's state is large, and plain connections should not carry room
        // for it in every task.
        Box::pin(serve_tls(worker, stream, peer, first_head_deadline)).await;
    } else {
        let client = BufConn::with_buffer(stream, worker.read_buffers.take());
        serve_http(worker, client, peer, false, first_head_deadline).await;
    }
}

/// The TLS handshake, then the keep-alive loop over the session; the handshake spends the
/// first head's deadline.
async fn serve_tls(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr, deadline: Instant) {
    let Some(config) = worker.state.snapshot().tls.clone() else {
        return;
    };
    let acceptor = monoio_rustls::TlsAcceptor::from(config);
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let client = BufConn::with_buffer(tls_stream, worker.read_buffers.take());
            serve_http(worker, client, peer, true, deadline).await
        }
        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
    }
}

/// A client stream as the keep-alive loop sees it: reads, writes, and how it waits for the
/// first bytes of the next request.
trait ClientStream: AsyncReadRent + AsyncWriteRent + Split + Sized + 'static {
    /// What the stream keeps across its waits (the plain stream's read canceller).
    type WaitState: Default;

    /// Waits up to `wait` for the next request's first bytes and reads them into `client`'s
    /// buffer; `Ok(0)` means the peer closed. Called with nothing buffered.
    async fn next_bytes(
        client: &mut BufConn<Self>,
        pool: &BufferPool,
        state: &mut Self::WaitState,
        wait: Duration,
    ) -> Result<usize, ReadError>;
}

impl ClientStream for TcpStream {
    /// One canceller for the connection's life: its set of in-flight reads keeps its
    /// allocation, so a hot read costs no allocation for cancelling.
    type WaitState = Canceller;

    async fn next_bytes(
        client: &mut BufConn<Self>,
        pool: &BufferPool,
        canceller: &mut Canceller,
        wait: Duration,
    ) -> Result<usize, ReadError> {
        if wait.is_zero() {
            return Err(ReadError::Timeout);
        }
        let deadline = Instant::now() + wait;
        lend_buffer(client, pool);
        {
            let mut read = pin!(client.fill_cancelable(canceller.handle()));
            monoio::select! {
                r = &mut read => return r.map_err(ReadError::Io),
                _ = monoio::time::sleep(wait.min(HOT_WAIT)) => {}
            }
            *canceller = std::mem::take(canceller).cancel();
            // A cancelled read still completes, and bytes that beat the cancel are kept. Any
            // error (ECANCELED, or a real one) parks: a failed socket reports readable at once
            // and its next read returns the error.
            if let Ok(n) = read.await {
                return Ok(n);
            }
        }
        if let Some(buf) = client.take_buffer() {
            pool.put(buf);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // Not relaxed: on epoll a stale "ready" from the last read is checked with poll(2),
        // so an idle connection does not take a buffer back for nothing.
        match monoio::time::timeout(left, client.io.readable(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Err(_) => return Err(ReadError::Timeout),
        }
        lend_buffer(client, pool);
        client.fill_until(deadline).await
    }
}

impl ClientStream for ServerTlsStream<TcpStream> {
    type WaitState = ();

    /// The TLS session buffers records of its own, below this loop, so readiness of the socket
    /// says nothing about whether a request is waiting: a TLS connection keeps its read (and
    /// buffer) in flight while idle.
    async fn next_bytes(
        client: &mut BufConn<Self>,
        pool: &BufferPool,
        _: &mut (),
        wait: Duration,
    ) -> Result<usize, ReadError> {
        lend_buffer(client, pool);
        client.fill_within(wait).await
    }
}

/// Gives `client` a pooled buffer when it holds none, or swaps one that grew (a long head, a
/// body read through it) for a pooled one, so a connection never waits on a grown buffer.
fn lend_buffer<S: AsyncReadRent + AsyncWriteRent>(client: &mut BufConn<S>, pool: &BufferPool) {
    if client.buffer_capacity() != pool.buffer_size() {
        if let Some(old) = client.take_buffer() {
            pool.put(old);
            client.put_buffer(pool.take());
        }
    }
}

/// Serves requests on `client` until it closes, then gives its read buffer back to the pool
/// (or hands the connection to a tunnel after a 101).
async fn serve_http<S: ClientStream>(
    worker: Rc<Worker>,
    mut client: BufConn<S>,
    peer: SocketAddr,
    https: bool,
    first_head_deadline: Instant,
) {
    if let Some(upstream) = keep_alive(&worker, &mut client, peer, https, first_head_deadline).await
    {
        return Box::pin(tunnel(client, upstream)).await;
    }
    if let Some(buf) = client.take_buffer() {
        worker.read_buffers.put(buf);
    }
}

/// The keep-alive loop: read a head, run the pipeline, repeat. The first head must be
/// complete by `first_head_deadline`. Returns the upstream of a 101 to tunnel to.
async fn keep_alive<S: ClientStream>(
    worker: &Worker,
    client: &mut BufConn<S>,
    peer: SocketAddr,
    https: bool,
    first_head_deadline: Instant,
) -> Option<BufConn<UpstreamStream>> {
    let mut parser = HeadParser::new();
    let mut wait_state = S::WaitState::default();
    let mut first_head_deadline = Some(first_head_deadline);
    loop {
        let limits = worker.state.snapshot().limits;
        // A later head may wait up to the idle timeout for its first byte, then has the
        // header timeout from that byte on; bytes already buffered when the previous
        // response ended start that clock now.
        let first_head = first_head_deadline.take();
        if client.buffered().is_empty() {
            let wait = match first_head {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => limits.idle_timeout,
            };
            let pool = &worker.read_buffers;
            let read = monoio::select! {
                r = S::next_bytes(client, pool, &mut wait_state, wait) => Some(r),
                _ = worker.state.shutdown.notified() => None,
            };
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return None, // closed, idle too long, failed, or shutting down
            }
        }
        let head_deadline = first_head.unwrap_or_else(|| Instant::now() + limits.header_timeout);
        let request_id_for_errors = || worker.state.next_request_id();
        parser.reset();
        let head = loop {
            match parser.parse(client.buffered(), limits.max_header_bytes) {
                Ok(Some((head, used))) => {
                    client.consume(used);
                    break head;
                }
                Ok(None) => match client.fill_until(head_deadline).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) | Err(ReadError::Io(_)) => return None,
                    Err(ReadError::Timeout) => {
                        // The cancelled read took the buffer with it; answer on the raw stream.
                        let err = GatewayError::HeaderTimeout;
                        let id = request_id_for_errors();
                        Box::pin(pipeline::reject(&worker.state, client, &err, &id)).await;
                        return None;
                    }
                },
                Err(e) => {
                    let err = match e {
                        HeadError::TooLarge => GatewayError::HeadersTooLarge,
                        HeadError::NotImplemented(why) => GatewayError::NotImplemented(why),
                        HeadError::Malformed(why) => GatewayError::BadRequest(why),
                    };
                    let id = request_id_for_errors();
                    Box::pin(pipeline::reject(&worker.state, client, &err, &id)).await;
                    return None;
                }
            }
        };
        // Boxed: the request's state (several KiB across the phases) lives only while a
        // request is in flight, not for the whole life of an idle keep-alive connection.
        match Box::pin(pipeline::handle(&worker.state, client, head, peer, https)).await {
            Outcome::KeepAlive if !worker.state.shutting_down() => continue,
            Outcome::Tunnel(upstream) => return Some(upstream),
            _ => return None,
        }
    }
}

/// After a 101, relays bytes both ways until either side closes (RFC 9110 7.8).
async fn tunnel<S>(client: BufConn<S>, upstream: BufConn<UpstreamStream>)
where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let (client_io, client_early) = client.into_parts();
    let (upstream_io, upstream_early) = upstream.into_parts();
    let (mut client_rx, mut client_tx) = client_io.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream_io.into_split();
    // Bytes that arrived with the heads belong to the new protocol.
    if !client_early.is_empty() && upstream_tx.write_all(client_early).await.0.is_err() {
        return;
    }
    if !upstream_early.is_empty() && client_tx.write_all(upstream_early).await.0.is_err() {
        return;
    }
    let to_upstream = monoio::io::copy(&mut client_rx, &mut upstream_tx);
    let to_client = monoio::io::copy(&mut upstream_rx, &mut client_tx);
    monoio::select! {
        _ = to_upstream => {},
        _ = to_client => {},
    }
}

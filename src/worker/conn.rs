//! One client connection: TLS handshake, then requests in order until close.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;

use super::Worker;
use crate::error::GatewayError;
use crate::http1::{BufConn, ReadError};
use crate::http1::{HeadError, HeadParser};
use crate::pipeline::{self, Outcome};
use crate::upstream::UpstreamStream;

/// Read buffer per client connection, held while it waits idle between requests: enough for
/// nearly every request head; longer heads grow it up to `max_header_bytes` and request
/// bodies grow it as they stream, and it shrinks back before the next idle wait.
const READ_BUFFER: usize = 4 * 1024;

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
        let client = BufConn::new(stream, READ_BUFFER);
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
            let client = BufConn::new(tls_stream, READ_BUFFER);
            serve_http(worker, client, peer, true, deadline).await
        }
        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
    }
}

/// The keep-alive loop: read a head, run the pipeline, repeat. The first head must be
/// complete by `first_head_deadline`.
async fn serve_http<S>(
    worker: Rc<Worker>,
    mut client: BufConn<S>,
    peer: SocketAddr,
    https: bool,
    first_head_deadline: Instant,
) where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let mut parser = HeadParser::new();
    let mut first_head_deadline = Some(first_head_deadline);
    loop {
        let limits = worker.state.snapshot().limits;
        // A later head may wait up to the idle timeout for its first byte, then has the
        // header timeout from that byte on; bytes already buffered when the previous
        // response ended start that clock now.
        let first_head = first_head_deadline.take();
        if client.buffered().is_empty() {
            client.shrink_to(READ_BUFFER);
            let wait = match first_head {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => limits.idle_timeout,
            };
            let read = monoio::select! {
                r = client.fill_within(wait) => Some(r),
                _ = worker.state.shutdown.notified() => None,
            };
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return, // closed, idle too long, failed, or shutting down
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
                    Ok(_) | Err(ReadError::Io(_)) => return,
                    Err(ReadError::Timeout) => {
                        // The cancelled read took the buffer with it; answer on the raw stream.
                        let err = GatewayError::HeaderTimeout;
                        let id = request_id_for_errors();
                        Box::pin(pipeline::reject(&worker.state, &mut client, &err, &id)).await;
                        return;
                    }
                },
                Err(e) => {
                    let err = match e {
                        HeadError::TooLarge => GatewayError::HeadersTooLarge,
                        HeadError::NotImplemented(why) => GatewayError::NotImplemented(why),
                        HeadError::Malformed(why) => GatewayError::BadRequest(why),
                    };
                    let id = request_id_for_errors();
                    Box::pin(pipeline::reject(&worker.state, &mut client, &err, &id)).await;
                    return;
                }
            }
        };
        // Boxed: the request's state (several KiB across the phases) lives only while a
        // request is in flight, not for the whole life of an idle keep-alive connection.
        match Box::pin(pipeline::handle(
            &worker.state,
            &mut client,
            head,
            peer,
            https,
        ))
        .await
        {
            Outcome::KeepAlive if !worker.state.shutting_down() => continue,
            Outcome::Tunnel(upstream) => return Box::pin(tunnel(client, upstream)).await,
            _ => return,
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

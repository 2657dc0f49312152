//! A provider's event stream relayed to the client, event by event through the translation
//! stages; and, when the client leaves mid-stream, drained: the gateway keeps reading the
//! provider's stream (relaying nothing) so the usage the provider reports at its end is
//! captured and the request is charged what it really used.
//!
//! A drain is just more awaited reads on the request's own task, bounded three ways: by
//! `[ai] drain_after_disconnect_ms` from the moment the client was found gone, by
//! [`DRAIN_MAX_BYTES`] of provider body, and by graceful shutdown (a drain stops as soon as
//! the worker starts shutting down, so it never holds the process past `drain_timeout_ms`).
//! A drain that stops early leaves the stream cut, charged as such (see [`crate::limits::charge`]).

use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::stream::{Translation, MAX_EVENT};
use super::{note_first_byte, EventStream, RequestCtx};
use crate::ai::providers::StreamFraming;
use crate::http1::BufConn;
use crate::http1::RequestHead;
use crate::limits::Metered;
use crate::pipeline::exchange::{BodyDecoder, Exchange};
use crate::pipeline::ThreadState;
use crate::pipeline::{Failure, Outcome};
use crate::snapshot::Snapshot;

/// Most provider body bytes read after the client left. A completion's tail is far smaller;
/// this bounds what one abandoned stream can cost the gateway in reads and translation.
pub(super) const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The outcome of relaying one stream.
pub(super) struct Relayed {
    /// What the client got.
    pub result: Result<Outcome, Failure>,
    /// What the stream tells about its usage.
    pub metered: Metered,
    /// The provider's body was read to its end (its connection may be reused).
    pub body_complete: bool,
}

/// The bounds of a drain in progress.
struct Drain {
    deadline: Instant,
    bytes_left: u64,
}

impl Drain {
    /// A drain starting now; `None` when draining is turned off (`drain_after_disconnect_ms
    /// = 0`).
    fn begin(snapshot: &Snapshot, request_id: &str) -> Option<Drain> {
        let ms = snapshot.config.ai.drain_after_disconnect_ms;
        if ms == 0 {
            return None;
        }
        log::debug!("request {request_id}: client left mid-stream, draining the provider");
        Some(Drain {
            deadline: Instant::now() + Duration::from_millis(ms),
            bytes_left: DRAIN_MAX_BYTES,
        })
    }

    /// Time left, if any.
    fn remaining(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Accounts for `n` more bytes; false once past the cap.
    fn take(&mut self, n: usize) -> bool {
        match self.bytes_left.checked_sub(n as u64) {
            Some(left) => {
                self.bytes_left = left;
                true
            }
            None => false,
        }
    }
}

/// One read of the provider's body.
enum Read {
    /// `piece` got more of the body.
    More,
    /// The body ended cleanly.
    End,
    /// The body cannot be read further: cut by the provider, silent too long, or the drain
    /// ran out of time or the worker is shutting down.
    Stop,
}

impl Read {
    fn of(result: Result<bool, Failure>) -> Read {
        match result {
            Ok(true) => Read::More,
            Ok(false) => Read::End,
            Err(_) => Read::Stop,
        }
    }
}

/// Relays the provider's stream in `exchange` to the client through `translation`; when
/// the client goes away, drains it (see the module docs).
pub(super) async fn relay<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    exchange: &mut Exchange,
    translation: &mut Translation,
) -> Relayed
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let mut stream = match EventStream::start(worker, snapshot, client, head, ctx).await {
        Ok(stream) => Some(stream),
        // The head could not be written: the client is gone already.
        Err(Failure::Abort) => None,
        // `on_response` refused the answer: the client got that error, nothing was relayed.
        Err(e) => {
            return Relayed {
                result: Err(e),
                metered: Metered::whole(None),
                body_complete: false,
            }
        }
    };
    let mut drain = match stream {
        Some(_) => None,
        None => Drain::begin(snapshot, &ctx.request_id),
    };
    let silence = snapshot.limits.upstream_timeout;
    let mut decoder = BodyDecoder::new(exchange.response.body("POST"));
    // Server-sent events, or binary event-stream frames (Bedrock): each becomes one event.
    let mut parser =
        StreamFraming::for_content_type(exchange.response.header("content-type"), MAX_EVENT);
    let mut piece = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    let body_complete = loop {
        if stream.is_none() && drain.is_none() {
            break false;
        }
        let read = match &drain {
            None => Read::of(decoder.next(&mut exchange.conn, &mut piece, silence).await),
            Some(d) => match d.remaining() {
                None => Read::Stop,
                Some(_) if worker.shutting_down() => Read::Stop,
                Some(left) => monoio::select! {
                    r = decoder.next(&mut exchange.conn, &mut piece, silence) => Read::of(r),
                    _ = monoio::time::sleep(left) => Read::Stop,
                    _ = worker.shutdown.notified() => Read::Stop,
                },
            },
        };
        match read {
            Read::More => {}
            Read::End => break true,
            Read::Stop => break false,
        }
        if let Some(d) = &mut drain {
            if !d.take(piece.len()) {
                break false;
            }
        }
        if parser.push(&piece).is_err() {
            break false;
        }
        piece.clear();
        out.clear();
        // Events go through the translation even while draining: that is where usage and
        // the relayed completion text are read.
        let mut broken = false;
        loop {
            match parser.next_event() {
                Ok(Some(event)) => translation.on_event(&event, &mut out),
                Ok(None) => break,
                Err(e) => {
                    log::warn!(
                        "request {}: provider stream unreadable: {e}",
                        ctx.request_id
                    );
                    broken = true;
                    break;
                }
            }
        }
        if let Some(s) = &stream {
            note_first_byte(ctx, &out);
            if s.send(client, &out).await.is_err() {
                stream = None;
                drain = Drain::begin(snapshot, &ctx.request_id);
            }
        }
        if broken {
            break false;
        }
    };
    let metered = translation.metered(body_complete);
    let result = match stream {
        Some(s) if body_complete => {
            out.clear();
            translation.finish(&mut out);
            note_first_byte(ctx, &out);
            s.end(client, head, &out).await
        }
        // The provider's stream broke off: the client's stream just ends, unfinished, as the
        // provider's did.
        Some(_) => Err(Failure::Abort),
        None => Err(Failure::Abort),
    };
    Relayed {
        result,
        metered,
        body_complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(ms: u64, bytes: u64) -> Drain {
        Drain {
            deadline: Instant::now() + Duration::from_millis(ms),
            bytes_left: bytes,
        }
    }

    #[test]
    fn drain_takes_bytes_up_to_its_cap_then_refuses() {
        let mut d = drain(1000, 10);
        assert!(d.take(4));
        assert!(d.take(6));
        assert!(!d.take(1));
    }

    #[test]
    fn drain_has_time_left_until_its_deadline() {
        assert!(drain(60_000, 1).remaining().is_some());
        let past = Drain {
            deadline: Instant::now() - Duration::from_millis(1),
            bytes_left: 1,
        };
        assert_eq!(past.remaining(), None);
    }
}

//! `credentialflow bench-upstream`: a fixed-response HTTP/1.1 server for load tests, built
//! like the gateway (one monoio runtime per core, SO_REUSEPORT), so it is not the bottleneck.
//!
//! Every request gets the same response, encoded once at start: a body of `--size` bytes
//! with Content-Length (default) or chunked (`--chunked`), or a server-sent event stream
//! (`--sse N --sse-interval-ms M`: N events of `--size` bytes of data, M ms apart, the first
//! with the head, then the last chunk that ends the body). `--delay-ms` delays each answer.
//!
//! Requests are answered as soon as their head is complete (pipelined heads in one read
//! are answered together). Heads are read by the gateway's own [`HeadParser`] (Host
//! optional: this server answers for any name), at most `MAX_HEAD_BYTES` (64 KiB) long. A request
//! body framed by Content-Length is read past; a chunked request body is answered 411 and a
//! refused head with the parser's status (400, 431, 501), then the connection is closed.

use std::net::SocketAddr;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::http1::{encode_chunk, encode_last_chunk, BodyFraming, HeadParser};

/// The largest piece of a chunked body (one chunk each).
const CHUNK_BYTES: usize = 16 * 1024;

/// The longest request head accepted; a longer one is answered 431. Twice the gateway's
/// default `[limits].max_header_bytes`, so whatever the gateway forwards fits, while a
/// client that never ends its head cannot grow the read buffer without bound.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the response body is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` and the body.
    Fixed,
    /// `Transfer-Encoding: chunked`, in chunks of up to 16 KiB (RFC 9112 section 7.1).
    Chunked,
    /// A `text/event-stream` of `events` events, `interval` apart, chunked.
    Sse {
        /// How many events.
        events: u32,
        /// The pause between two events.
        interval: Duration,
    },
}

/// Options for the fixed-response upstream.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on (port 0 picks one; the chosen one is printed).
    pub listen: SocketAddr,
    /// Response body size in bytes (for `Sse`: the data of each event).
    pub body_bytes: usize,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Delay before each response.
    pub delay: Duration,
    /// How the body is sent.
    pub body: Body,
}

/// The complete response with a Content-Length body of `body_bytes` bytes.
pub fn encode_response(body_bytes: usize) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {body_bytes}\r\n\r\n"
    )
    .into_bytes();
    out.extend(std::iter::repeat_n(b'x', body_bytes));
    out
}

/// The complete response with a chunked body of `body_bytes` bytes.
pub fn encode_chunked_response(body_bytes: usize) -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    let body = vec![b'x'; body_bytes];
    for piece in body.chunks(CHUNK_BYTES) {
        encode_chunk(piece, &mut out);
    }
    encode_last_chunk(&mut out);
    out
}

/// The writes of one event-stream response, each after its pause: the head with the first
/// event, every further event `interval` after the previous one, and the last chunk with
/// the last event (so the body ends as soon as the last event is out).
pub fn encode_sse_writes(
    events: u32,
    interval: Duration,
    data_bytes: usize,
) -> Vec<(Duration, Vec<u8>)> {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    // WHATWG HTML 9.2.6: one `data:` line, then the empty line that dispatches the event.
    let mut event_text = b"data: ".to_vec();
    event_text.extend(std::iter::repeat_n(b'x', data_bytes));
    event_text.extend_from_slice(b"\n\n");
    let mut event = Vec::new();
    encode_chunk(&event_text, &mut event);

    let mut writes: Vec<(Duration, Vec<u8>)> = vec![(Duration::ZERO, head.to_vec())];
    for i in 0..events {
        if i > 0 {
            writes.push((interval, Vec::new()));
        }
        writes
            .last_mut()
            .expect("never empty")
            .1
            .extend_from_slice(&event);
    }
    encode_last_chunk(&mut writes.last_mut().expect("never empty").1);
    writes
}

/// What every connection sends, encoded once and kept for the life of the process.
struct Reply {
    /// `(pause before, bytes)` per write of one response.
    writes: Vec<(Duration, &'static [u8])>,
}

impl Reply {
    fn new(opts: &Options) -> Reply {
        let writes = match &opts.body {
            Body::Fixed => vec![(Duration::ZERO, encode_response(opts.body_bytes))],
            Body::Chunked => vec![(Duration::ZERO, encode_chunked_response(opts.body_bytes))],
            Body::Sse { events, interval } => {
                encode_sse_writes(*events, *interval, opts.body_bytes)
            }
        };
        Reply {
            writes: writes
                .into_iter()
                .map(|(pause, bytes)| (pause, &*Box::leak(bytes.into_boxed_slice())))
                .collect(),
        }
    }

    /// One write without pauses: several pipelined answers can go out together.
    fn single(&self) -> Option<&'static [u8]> {
        match self.writes.as_slice() {
            [(_, bytes)] => Some(bytes),
            _ => None,
        }
    }
}

/// Runs until the process is killed. Prints `bench-upstream listening on ADDR` once bound.
pub fn run(opts: Options) -> std::io::Result<()> {
    let probe = std::net::TcpListener::bind(opts.listen)?;
    let addr = probe.local_addr()?;
    drop(probe);
    let workers = match opts.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let reply: &'static Reply = Box::leak(Box::new(Reply::new(&opts)));
    let mut threads = Vec::new();
    for _ in 0..workers {
        let delay = opts.delay;
        threads.push(std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .expect("runtime");
            rt.block_on(serve(addr, reply, delay))
        }));
    }
    eprintln!("bench-upstream listening on {addr}");
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("worker panicked"))??;
    }
    Ok(())
}

async fn serve(addr: SocketAddr, reply: &'static Reply, delay: Duration) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    let listener = monoio::net::TcpListener::from_std(socket.into())?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        monoio::spawn(connection(stream, reply, delay));
    }
}

async fn connection(mut stream: monoio::net::TcpStream, reply: &'static Reply, delay: Duration) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(reply.single().map_or(0, |r| r.len() * 4));
    let mut requests = RequestSplitter::default();
    loop {
        let len = buf.len();
        if buf.capacity() - len < 4096 {
            buf.reserve(16 * 1024);
        }
        let (res, slice) = stream.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Split {
            complete,
            consumed,
            refused,
        } = requests.split(&buf);
        buf.drain(..consumed);
        if complete > 0 && !answer(&mut stream, reply, delay, complete, &mut out).await {
            return;
        }
        if let Some(status) = refused {
            // The bytes after a refused head cannot be trusted as request boundaries
            // (RFC 9112 section 11.2): answer, then close.
            let refusal = format!(
                "HTTP/1.1 {status} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                crate::error::reason_phrase(status)
            );
            let _ = stream.write_all(refusal.into_bytes()).await;
            return;
        }
    }
}

/// Sends `complete` responses after the configured delay; `false` if the client is gone.
async fn answer(
    stream: &mut monoio::net::TcpStream,
    reply: &'static Reply,
    delay: Duration,
    complete: usize,
    out: &mut Vec<u8>,
) -> bool {
    if !delay.is_zero() {
        monoio::time::sleep(delay).await;
    }
    if let Some(response) = reply.single() {
        // Every complete head in the buffer (pipelining) is answered in one write.
        for _ in 0..complete {
            out.extend_from_slice(response);
        }
        let (res, written) = stream.write_all(std::mem::take(out)).await;
        *out = written;
        out.clear();
        return res.is_ok();
    }
    for _ in 0..complete {
        for &(pause, bytes) in &reply.writes {
            if !pause.is_zero() {
                monoio::time::sleep(pause).await;
            }
            if stream.write_all(bytes).await.0.is_err() {
                return false;
            }
        }
    }
    true
}

/// What one look at the received bytes found.
#[derive(Debug, PartialEq, Eq)]
struct Split {
    /// Requests whose heads completed: each is owed a response.
    complete: usize,
    /// Bytes used; the rest is an incomplete head, kept for the next read.
    consumed: usize,
    /// The status to refuse the request after the complete ones with, then close.
    refused: Option<u16>,
}

/// Finds where requests end in the received bytes: each head where [`HeadParser`] says,
/// then its Content-Length body (RFC 9112 section 6.3), which may span reads.
#[derive(Debug)]
struct RequestSplitter {
    /// Keeps its place in a head that spans reads, so no byte is scanned twice.
    parser: HeadParser,
    /// Body bytes of the last request still to come.
    body_left: u64,
}

impl Default for RequestSplitter {
    fn default() -> Self {
        RequestSplitter {
            parser: HeadParser::new().require_host(false),
            body_left: 0,
        }
    }
}

impl RequestSplitter {
    /// Splits `buf`, which starts where the last call's `consumed` ended: an incomplete
    /// head is offered again from its first byte once more bytes have arrived.
    fn split(&mut self, buf: &[u8]) -> Split {
        let mut split = Split {
            complete: 0,
            consumed: 0,
            refused: None,
        };
        loop {
            if self.body_left > 0 {
                let available = (buf.len() - split.consumed) as u64;
                let take = self.body_left.min(available);
                split.consumed += take as usize;
                self.body_left -= take;
                if self.body_left > 0 {
                    break;
                }
            }
            let head = match self.parser.parse(&buf[split.consumed..], MAX_HEAD_BYTES) {
                Ok(Some((head, len))) => {
                    split.consumed += len;
                    head
                }
                Ok(None) => break,
                Err(refused) => {
                    split.refused = Some(refused.status());
                    break;
                }
            };
            self.body_left = match head.body() {
                BodyFraming::None => 0,
                BodyFraming::Length(length) => length,
                // RFC 9110 section 15.5.12: ask for the body with a Content-Length.
                BodyFraming::Chunked => {
                    split.refused = Some(411);
                    break;
                }
            };
            split.complete += 1;
        }
        split
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_response, ChunkedDecoder, ResponseBody};

    #[test]
    fn response_has_exact_length() {
        let r = encode_response(128);
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-length: 128"));
        assert_eq!(body.len(), 128);
    }

    #[test]
    fn chunked_response_decodes_to_the_body_size() {
        let r = encode_chunked_response(40_000);
        let (head, len) = parse_response(&r, 4096).unwrap().unwrap();
        assert_eq!(head.body("GET"), ResponseBody::Chunked);
        let mut body = Vec::new();
        let decoded = ChunkedDecoder::new().decode(&r[len..], &mut body).unwrap();
        assert!(decoded.done);
        assert_eq!(decoded.consumed, r.len() - len);
        assert_eq!(body.len(), 40_000);
    }

    #[test]
    fn sse_stream_sends_the_head_with_the_first_event_and_ends_the_body() {
        let writes = encode_sse_writes(3, Duration::from_millis(40), 4);
        let pauses: Vec<Duration> = writes.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            pauses,
            vec![
                Duration::ZERO,
                Duration::from_millis(40),
                Duration::from_millis(40)
            ]
        );
        let all: Vec<u8> = writes.iter().flat_map(|(_, b)| b.clone()).collect();
        let (head, len) = parse_response(&all, 4096).unwrap().unwrap();
        assert_eq!(head.header("content-type"), Some(&b"text/event-stream"[..]));
        let mut body = Vec::new();
        let decoded = ChunkedDecoder::new()
            .decode(&all[len..], &mut body)
            .unwrap();
        assert!(decoded.done);
        assert_eq!(body, b"data: xxxx\n\n".repeat(3));
        assert!(writes[0].1.ends_with(b"data: xxxx\n\n\r\n"));
        assert!(writes[2].1.ends_with(b"0\r\n\r\n"));
    }

    #[test]
    fn sse_stream_of_zero_events_is_an_empty_body() {
        let writes = encode_sse_writes(0, Duration::from_millis(40), 4);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].1.ends_with(b"\r\n\r\n0\r\n\r\n"));
    }

    /// A split that answers `complete` requests after using `consumed` bytes.
    fn answered(complete: usize, consumed: usize) -> Split {
        Split {
            complete,
            consumed,
            refused: None,
        }
    }

    #[test]
    fn pipelined_heads_are_found_one_by_one() {
        let two = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
        let first = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".len();
        let mut splitter = RequestSplitter::default();
        assert_eq!(splitter.split(two), answered(1, first));
        assert_eq!(splitter.split(&two[first..]), answered(0, 0));
    }

    #[test]
    fn request_bodies_are_read_past_by_content_length() {
        let mut splitter = RequestSplitter::default();
        let input =
            b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n\r\n\r\nabcdGET / HTTP/1.1\r\n\r\n";
        assert_eq!(splitter.split(input), answered(2, input.len()));
    }

    #[test]
    fn request_body_split_over_reads_is_skipped_across_them() {
        let mut splitter = RequestSplitter::default();
        let first = b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\n12345";
        assert_eq!(splitter.split(first), answered(1, first.len()));
        let second = b"67890GET / HTTP/1.1\r\n";
        assert_eq!(splitter.split(second), answered(0, 5));
    }

    #[test]
    fn head_split_over_reads_completes_when_offered_again() {
        let mut splitter = RequestSplitter::default();
        let head = b"GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n";
        for len in 1..head.len() {
            assert_eq!(splitter.split(&head[..len]), answered(0, 0), "at {len}");
        }
        assert_eq!(splitter.split(head), answered(1, head.len()));
    }

    #[test]
    fn content_length_is_found_case_insensitively() {
        let mut splitter = RequestSplitter::default();
        splitter.split(b"POST / HTTP/1.1\r\nCONTENT-LENGTH:  42 \r\n\r\n");
        assert_eq!(splitter.body_left, 42);
        splitter.body_left = 0;
        splitter.split(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(splitter.body_left, 0);
    }

    #[test]
    fn malformed_head_after_good_ones_is_refused_with_400() {
        let mut splitter = RequestSplitter::default();
        let good = b"GET / HTTP/1.1\r\n\r\n";
        let input = [&good[..], b"GET / HTTP/1.1\nX: 1\n\n"].concat();
        let split = splitter.split(&input);
        assert_eq!(split.complete, 1);
        assert_eq!(split.refused, Some(400));
    }

    #[test]
    fn smuggling_framing_is_refused_with_400() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        ] {
            assert_eq!(RequestSplitter::default().split(head).refused, Some(400));
        }
    }

    #[test]
    fn chunked_request_body_is_refused_with_411() {
        let mut splitter = RequestSplitter::default();
        let split = splitter.split(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n");
        assert_eq!(split.complete, 0);
        assert_eq!(split.refused, Some(411));
    }

    #[test]
    fn head_that_never_ends_is_refused_with_431_past_the_limit() {
        let mut splitter = RequestSplitter::default();
        let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
        buf.resize(MAX_HEAD_BYTES, b'v');
        assert_eq!(splitter.split(&buf), answered(0, 0));
        buf.push(b'v');
        assert_eq!(splitter.split(&buf).refused, Some(431));
    }
}

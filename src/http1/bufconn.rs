//! A connection with its read buffer, for monoio's owned-buffer ("rent") I/O.
//!
//! io_uring takes ownership of a buffer for the duration of a read, so the buffer lives in the
//! connection and is lent to each read. Unconsumed bytes stay at `buf[start..]`; parsers look at
//! [`BufConn::buffered`] and say how much they used with [`BufConn::consume`].

use std::io;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};

/// Smallest free space worth handing to a read.
const MIN_READ: usize = 4096;
/// A read that fills all the room it was given doubles the buffer for the next one, up to
/// this: small buffers for small messages, few reads for large bodies.
const GROWN_READ_LIMIT: usize = 64 * 1024;

/// Why a timed read did not deliver bytes.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed first. The connection's buffer is gone with the cancelled read, so
    /// the connection must not be used again.
    Timeout,
    /// The socket failed.
    Io(io::Error),
}

/// A stream plus the bytes read from it that nobody has consumed yet.
pub struct BufConn<S> {
    /// The underlying stream, for writes and for taking it apart (tunnels, pool check-in).
    pub io: S,
    buf: Vec<u8>,
    start: usize,
    /// Bytes consumed since the connection opened (the access log's `bytes_in`).
    consumed: u64,
    /// Bytes written since the connection opened (the access log's `bytes_out`).
    written: u64,
}

impl<S: AsyncReadRent + AsyncWriteRent> BufConn<S> {
    /// Wraps `io` with a read buffer of `capacity` bytes (grown on demand for long heads).
    pub fn new(io: S, capacity: usize) -> Self {
        BufConn {
            io,
            buf: Vec::with_capacity(capacity),
            start: 0,
            consumed: 0,
            written: 0,
        }
    }

    /// Bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks the first `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.start);
        self.start += n;
        self.consumed += n as u64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes after the buffered ones; `Ok(0)` means the peer closed.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice) = self.io.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        self.grow_after(&res);
        res
    }

    /// Wraps `io` with `buf` (cleared) as its read buffer, e.g. one from a pool.
    pub fn with_buffer(io: S, mut buf: Vec<u8>) -> Self {
        buf.clear();
        BufConn {
            io,
            buf,
            start: 0,
            consumed: 0,
            written: 0,
        }
    }

    /// Takes the read buffer out, empty, when nothing is buffered, leaving the connection with
    /// none (no allocation) until [`put_buffer`](Self::put_buffer) or the next read gives it
    /// one. `None` while unconsumed bytes remain.
    pub fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if self.start != self.buf.len() {
            return None;
        }
        self.start = 0;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Some(buf)
    }

    /// Gives a connection that holds no buffer (see [`take_buffer`](Self::take_buffer)) `buf`
    /// to read into. A connection that still has one keeps it, and `buf` is dropped.
    pub fn put_buffer(&mut self, mut buf: Vec<u8>) {
        if self.buf.capacity() == 0 {
            buf.clear();
            self.buf = buf;
            self.start = 0;
        }
    }

    /// Capacity of the read buffer held now (0 when it was taken out).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Doubles a buffer that a read filled, for the next read, up to `GROWN_READ_LIMIT`.
    fn grow_after(&mut self, res: &io::Result<usize>) {
        if matches!(res, Ok(n) if *n > 0)
            && self.buf.len() == self.buf.capacity()
            && self.buf.capacity() < GROWN_READ_LIMIT
        {
            self.buf.reserve(self.buf.capacity());
        }
    }

    /// [`fill`](Self::fill) that gives up at `deadline`.
    pub async fn fill_until(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.fill_within(left).await
    }

    /// [`fill`](Self::fill) that gives up after `limit`.
    pub async fn fill_within(&mut self, limit: Duration) -> Result<usize, ReadError> {
        if limit.is_zero() {
            return Err(ReadError::Timeout);
        }
        match monoio::time::timeout(limit, self.fill()).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// Bytes marked used with [`consume`](Self::consume) so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes written with [`write_all`](Self::write_all) so far (a failed write counts none).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes all of `data` and hands the buffer back for reuse (cleared).
    pub async fn write_all(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, mut data) = self.io.write_all(data).await;
        if res.is_ok() {
            self.written += data.len() as u64;
        }
        data.clear();
        (res.map(|_| ()), data)
    }

    /// Takes the stream back, with any bytes still buffered.
    pub fn into_parts(mut self) -> (S, Vec<u8>) {
        let rest = self.buf.split_off(self.start);
        (self.io, rest)
    }

    /// Moves unconsumed bytes to the front, or grows the buffer, so a read has room.
    fn make_room(&mut self) {
        if self.start > 0 && self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(self.buf.capacity().max(MIN_READ));
        }
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + CancelableAsyncReadRent> BufConn<S> {
    /// [`fill`](Self::fill) that `cancel` can stop. Unlike dropping a read in flight, a
    /// cancelled read still completes here and hands the buffer back, with any bytes that
    /// arrived before the cancel took effect (then it returns their count, not an error);
    /// a read that the cancel did stop returns an error (`ECANCELED`).
    pub async fn fill_cancelable(&mut self, cancel: CancelHandle) -> io::Result<usize> {
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice) = self.io.cancelable_read(buf.slice_mut(len..), cancel).await;
        self.buf = slice.into_inner();
        self.grow_after(&res);
        res
    }
}

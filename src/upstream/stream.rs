//! One connection to an upstream, plain or TLS, behind monoio's rent-based I/O traits.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::ClientTlsStream;

/// A connection to an upstream target. Read and write it through [`AsyncReadRent`] and
/// [`AsyncWriteRent`]; which variant it is only matters for logging and pooling.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Cleartext HTTP/1.1 over TCP.
    Plain(TcpStream),
    /// HTTP/1.1 over TLS (boxed: the TLS session state is large).
    Tls(Box<TlsConn>),
}

/// A TLS session over TCP, with the socket's descriptor kept aside: monoio-rustls does not
/// expose the inner stream, and the pool needs the descriptor to see whether an idle
/// connection was closed by the peer.
#[derive(Debug)]
pub struct TlsConn {
    /// The TLS session.
    pub stream: ClientTlsStream<TcpStream>,
    fd: RawFd,
}

impl TlsConn {
    /// Wraps an established TLS session; `fd` must be the descriptor of its TCP stream.
    pub(crate) fn new(stream: ClientTlsStream<TcpStream>, fd: RawFd) -> TlsConn {
        TlsConn { stream, fd }
    }
}

impl UpstreamStream {
    /// Whether this connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamStream::Tls(_))
    }

    /// The descriptor of the underlying TCP socket.
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            UpstreamStream::Plain(s) => s.as_raw_fd(),
            UpstreamStream::Tls(t) => t.fd,
        }
    }

    /// The local address of the underlying TCP socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&BorrowedSocket(self.raw_fd()))
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }

    /// The peer (upstream target) address of the underlying TCP socket.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&BorrowedSocket(self.raw_fd()))
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }

    /// Whether an idle connection can still carry a request: the peer has not closed or reset
    /// it and, for cleartext, has not sent anything unsolicited (an HTTP/1.1 server sends
    /// nothing between responses except, perhaps, a 408 before closing: RFC 9112 9.5). For
    /// TLS, pending bytes are allowed: TLS 1.3 servers send session tickets after the
    /// handshake (RFC 8446 4.6.1), which sit unread until the next response is read.
    ///
    /// One non-blocking `poll(2)` with a zero timeout; it cannot see a close that is still in
    /// flight, so a request on a reused connection can still meet a closed one.
    pub fn is_reusable(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1, zero timeout: never blocks.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ready < 0 {
            return false;
        }
        if ready == 0 {
            return true;
        }
        let gone = libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP | libc::POLLNVAL;
        if pfd.revents & gone != 0 {
            return false;
        }
        // Only POLLIN is left: unsolicited bytes.
        self.is_tls()
    }
}

/// A borrowed descriptor for `socket2::SockRef` (which needs `AsFd`).
struct BorrowedSocket(RawFd);

impl std::os::fd::AsFd for BorrowedSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to a stream borrowed for as long as this value lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.read(buf).await,
            UpstreamStream::Tls(t) => t.stream.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.readv(buf).await,
            UpstreamStream::Tls(t) => t.stream.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.write(buf).await,
            UpstreamStream::Tls(t) => t.stream.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.writev(buf_vec).await,
            UpstreamStream::Tls(t) => t.stream.writev(buf_vec).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.flush().await,
            UpstreamStream::Tls(t) => t.stream.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.shutdown().await,
            UpstreamStream::Tls(t) => t.stream.shutdown().await,
        }
    }
}

// SAFETY: both variants are declared `Split` by their own crates (monoio's `TcpStream`;
// monoio-rustls's `Stream` over a `Split` I/O, which is how monoio-rustls builds its own read and
// write halves), and this enum only delegates to them. The one overlap is monoio-rustls's: a TLS
// protocol error met while reading makes it try to send an alert, after which the connection is
// dead anyway. Used for upgraded (101) connections, where bytes flow both ways at once.
unsafe impl Split for UpstreamStream {}

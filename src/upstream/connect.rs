//! Opening a connection to one target: TCP, then TLS when configured, within one deadline.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio_rustls::{TlsConnector, TlsError};

use super::pool::Pool;
use super::stream::{TlsConn, UpstreamStream};
use super::Upstream;

/// Why a connection to a target could not be opened. The request never reached the upstream,
/// so any request may be retried on another target after one of these.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect failed: refused, unreachable, reset.
    Refused(io::Error),
    /// TCP connect and TLS handshake together took longer than the connect timeout.
    Timeout,
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol error).
    Tls(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Tls(e) => write!(f, "tls handshake failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Opens a connection to `up.targets[target]`: TCP (with `TCP_NODELAY`: requests and
/// responses are written whole, Nagle would only add latency), then the TLS handshake if the
/// upstream speaks TLS, both within `connect_timeout`.
///
/// Passive health: any failure starts the target's cool-down, success clears it. The caller's
/// runtime must have its timer enabled.
pub async fn connect(
    up: &Upstream,
    target: usize,
    connect_timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let result = connect_target(up, target, connect_timeout).await;
    match &result {
        Ok(_) => up.mark_ok(target),
        Err(e) => {
            log::debug!(
                "upstream {} target {}: {e}",
                up.name,
                up.targets[target].authority
            );
            up.mark_failed(target);
        }
    }
    result
}

/// A connection from [`acquire`].
#[derive(Debug)]
pub struct Acquired {
    /// The connection.
    pub stream: UpstreamStream,
    /// Whether it came from the pool. A pooled connection can have been closed by the upstream
    /// just before it was reused (RFC 9112 9.3.1); when a request on it fails before any byte
    /// of the response arrived, a retry on a new connection is safe for idempotent requests.
    pub reused: bool,
}

/// A connection to `up.targets[target]`: the worker's most recent idle one when there is one,
/// else a new one from [`connect`]. Return it with [`Pool::checkin`] under
/// `up.targets[target].pool_key()` after a clean keep-alive exchange.
pub async fn acquire(
    pool: &Pool,
    up: &Upstream,
    target: usize,
    connect_timeout: Duration,
) -> Result<Acquired, ConnectError> {
    if let Some(stream) = pool.checkout(up.targets[target].pool_key()) {
        return Ok(Acquired {
            stream,
            reused: true,
        });
    }
    let stream = connect(up, target, connect_timeout).await?;
    Ok(Acquired {
        stream,
        reused: false,
    })
}

async fn connect_target(
    up: &Upstream,
    target: usize,
    connect_timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let started = Instant::now();
    let t = &up.targets[target];
    let tcp = match monoio::time::timeout(connect_timeout, TcpStream::connect_addr(t.addr)).await {
        Err(_elapsed) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Ok(Ok(tcp)) => tcp,
    };
    tcp.set_nodelay(true).map_err(ConnectError::Refused)?;

    let (Some(config), Some(server_name)) = (&up.tls, &t.server_name) else {
        return Ok(UpstreamStream::Plain(tcp));
    };
    let fd = tcp.as_raw_fd();
    let remaining = connect_timeout.saturating_sub(started.elapsed());
    let connector = TlsConnector::from(config.clone());
    match monoio::time::timeout(remaining, connector.connect(server_name.clone(), tcp)).await {
        Err(_elapsed) => Err(ConnectError::Timeout),
        Ok(Err(e)) => Err(ConnectError::Tls(describe_tls_error(e))),
        Ok(Ok(stream)) => Ok(UpstreamStream::Tls(Box::new(TlsConn::new(stream, fd)))),
    }
}

/// monoio-rustls's own messages are only "io error" / "rustls error": say what happened.
fn describe_tls_error(e: TlsError) -> String {
    match e {
        TlsError::Io(e) => e.to_string(),
        TlsError::Rustls(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use monoio::io::{AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};

    use super::*;
    use crate::tls::test_pki::TestPki;
    use crate::upstream::test_support::{
        echo_server_once, on_each_driver, plain_upstream, refusing_addr,
    };
    use crate::upstream::{Pool, TlsSettings};

    const GENEROUS: Duration = Duration::from_secs(10);

    /// Writes `msg` and reads as many bytes back.
    async fn round_trip(stream: &mut UpstreamStream, msg: &'static [u8]) -> Vec<u8> {
        let (written, _) = stream.write_all(msg).await;
        written.expect("write");
        let (read, echoed) = stream.read_exact(vec![0u8; msg.len()]).await;
        read.expect("read");
        echoed
    }

    #[test]
    fn connect_to_a_refusing_port_is_refused_and_cools_the_target() {
        on_each_driver(|| async {
            let up = plain_upstream(&[refusing_addr()]);
            let err = connect(&up, 0, GENEROUS).await.unwrap_err();
            assert!(matches!(err, ConnectError::Refused(_)), "{err}");
            assert!(up.targets[0].health.is_cooling());
        });
    }

    #[test]
    fn connect_times_out_when_the_target_never_answers() {
        on_each_driver(|| async {
            // A listener whose accept queue (backlog 0 = one connection) is full: the kernel
            // drops further SYNs, so a connect neither succeeds nor fails in time.
            let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            listener.bind(&any.into()).expect("bind");
            listener.listen(0).expect("listen");
            let addr = listener.local_addr().unwrap().as_socket().unwrap();
            let mut queued = Vec::new();
            loop {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                    Ok(conn) => queued.push(conn),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                    Err(e) => panic!("filling the accept queue: {e}"),
                }
                assert!(queued.len() < 16, "accept queue never filled");
            }

            let up = plain_upstream(&[addr]);
            let err = connect(&up, 0, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::Timeout), "{err}");
            assert!(up.targets[0].health.is_cooling());
        });
    }

    #[test]
    fn plain_connection_carries_bytes_both_ways() {
        on_each_driver(|| async {
            let (addr, server) = echo_server_once();
            let up = plain_upstream(&[addr]);
            let mut stream = connect(&up, 0, GENEROUS).await.expect("connect");
            assert!(!stream.is_tls());
            assert_eq!(
                round_trip(&mut stream, b"hello upstream").await,
                b"hello upstream"
            );
            stream.shutdown().await.expect("shutdown");
            server.join().unwrap();
        });
    }

    #[test]
    fn connection_has_tcp_nodelay() {
        on_each_driver(|| async {
            let (addr, server) = echo_server_once();
            let up = plain_upstream(&[addr]);
            let mut stream = connect(&up, 0, GENEROUS).await.expect("connect");
            let UpstreamStream::Plain(tcp) = &stream else {
                panic!("expected a plain stream");
            };
            assert!(tcp.nodelay().unwrap());
            stream.shutdown().await.expect("shutdown");
            server.join().unwrap();
        });
    }

    #[test]
    fn acquire_connects_when_the_pool_is_empty_then_reuses_the_returned_connection() {
        on_each_driver(|| async {
            let (addr, server) = echo_server_once();
            let up = plain_upstream(&[addr]);
            let pool = Pool::default();
            let first = acquire(&pool, &up, 0, GENEROUS).await.expect("connect");
            assert!(!first.reused);
            let port = first.stream.local_addr().unwrap().port();
            pool.checkin(up.targets[0].pool_key().clone(), first.stream);

            let mut second = acquire(&pool, &up, 0, GENEROUS).await.expect("pooled");
            assert!(second.reused);
            assert_eq!(second.stream.local_addr().unwrap().port(), port);
            assert_eq!(round_trip(&mut second.stream, b"again").await, b"again");
            second.stream.shutdown().await.expect("shutdown");
            server.join().unwrap();
        });
    }

    #[test]
    fn successful_connect_ends_the_cool_down() {
        on_each_driver(|| async {
            let (addr, server) = echo_server_once();
            let up = plain_upstream(&[addr]);
            up.mark_failed(0);
            let mut stream = connect(&up, 0, GENEROUS).await.expect("connect");
            assert!(!up.targets[0].health.is_cooling());
            stream.shutdown().await.expect("shutdown");
            server.join().unwrap();
        });
    }

    /// A blocking rustls server for one connection that echoes until the client closes.
    /// Returns the server's error, if any (e.g. the client refused its certificate).
    fn tls_echo_server_once(pki: &TestPki) -> (SocketAddr, JoinHandle<Result<(), String>>) {
        let config = crate::tls::server_config(&pki.leaf_cert, &pki.leaf_key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
            tcp.set_read_timeout(Some(GENEROUS)).unwrap();
            let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => tls.write_all(&buf[..n]).map_err(|e| e.to_string())?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        (addr, handle)
    }

    fn tls_upstream(addr: SocketAddr, ca_file: Option<&std::path::Path>) -> Upstream {
        let tls = TlsSettings {
            config: crate::tls::client_config(ca_file).unwrap(),
            sni: Some("localhost".to_string()),
        };
        Upstream::from_parts("tls", &[addr.to_string()], Some(tls), None).unwrap()
    }

    #[test]
    fn tls_connection_verified_with_the_ca_file_carries_bytes_both_ways() {
        let pki = Arc::new(TestPki::generate());
        on_each_driver(|| {
            let pki = pki.clone();
            async move {
                let (addr, server) = tls_echo_server_once(&pki);
                let up = tls_upstream(addr, Some(&pki.ca_cert));
                let mut stream = connect(&up, 0, GENEROUS).await.expect("tls connect");
                assert!(stream.is_tls());
                assert_eq!(round_trip(&mut stream, b"over tls").await, b"over tls");
                let UpstreamStream::Tls(tls) = &stream else {
                    panic!("expected a TLS stream");
                };
                assert_eq!(tls.stream.alpn_protocol(), Some(b"http/1.1".to_vec()));
                stream.shutdown().await.expect("close_notify");
                server.join().unwrap().expect("server side");
            }
        });
    }

    #[test]
    fn tls_connection_without_the_ca_fails_verification() {
        let pki = Arc::new(TestPki::generate());
        on_each_driver(|| {
            let pki = pki.clone();
            async move {
                let (addr, server) = tls_echo_server_once(&pki);
                let up = tls_upstream(addr, None);
                let err = connect(&up, 0, GENEROUS).await.unwrap_err();
                let ConnectError::Tls(message) = &err else {
                    panic!("expected a TLS error, got {err}");
                };
                assert!(message.contains("certificate"), "{message}");
                assert!(up.targets[0].health.is_cooling());
                // The server thread ends on its own once the refused socket closes.
                drop(server);
            }
        });
    }

    #[test]
    fn tls_connection_for_another_name_fails_verification() {
        let pki = Arc::new(TestPki::generate());
        on_each_driver(|| {
            let pki = pki.clone();
            async move {
                let (addr, server) = tls_echo_server_once(&pki);
                let tls = TlsSettings {
                    config: crate::tls::client_config(Some(&pki.ca_cert)).unwrap(),
                    sni: Some("other.example".to_string()),
                };
                let up = Upstream::from_parts("tls", &[addr.to_string()], Some(tls), None).unwrap();
                let err = connect(&up, 0, GENEROUS).await.unwrap_err();
                assert!(matches!(err, ConnectError::Tls(_)), "{err}");
                // The server thread ends on its own once the refused socket closes.
                drop(server);
            }
        });
    }
}

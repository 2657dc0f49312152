//! Helpers for the upstream tests: running a test under each monoio driver, and small
//! blocking servers on loopback.
//!
//! A test body runs on the runtime's thread, so it must not block on anything that needs the
//! runtime to make progress: under io_uring even closing a dropped socket is an operation the
//! runtime submits later. Tests close their side with `shutdown().await` before they join a
//! server thread that waits for that close.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::RawFd;
use std::thread::JoinHandle;

use super::Upstream;

/// Runs `test` on a fresh epoll (legacy) runtime, then on an io_uring one when the kernel
/// allows io_uring, both with the timer enabled.
pub(crate) fn on_each_driver<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    legacy.block_on(test());
    if monoio::utils::detect_uring() {
        let mut uring = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime");
        uring.block_on(test());
    }
}

/// A cleartext upstream of one or more targets.
pub(crate) fn plain_upstream(addrs: &[SocketAddr]) -> Upstream {
    let targets: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Upstream::from_parts("test", &targets, None, None).expect("upstream")
}

/// A loopback address nothing listens on: bound, then released.
pub(crate) fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

/// Accepts one connection and echoes what it reads until the peer closes.
pub(crate) fn echo_server_once() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        // A test that forgets to close its side fails instead of hanging.
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (addr, handle)
}

/// Accepts one connection, writes `bytes` (if any) and closes it when `close` is set, else
/// hands it back so the test decides when it closes.
pub(crate) fn serve_one(
    listener: TcpListener,
    bytes: &'static [u8],
    close: bool,
) -> JoinHandle<Option<TcpStream>> {
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(bytes).expect("write");
        if close {
            None
        } else {
            Some(conn)
        }
    })
}

/// Blocks until `fd` is readable or hung up (at most 10 s): the readiness signal a test needs
/// before it checks that an idle connection was seen to close.
pub(crate) fn wait_readable(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; blocks at most 10 s.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(ready, 1, "socket did not become readable");
}

//! `credentialflow bench-upstream`: a fixed-response HTTP/1.1 server for load tests, built
//! like the gateway (one monoio runtime per core, SO_REUSEPORT), so it is not the bottleneck.
//!
//! Every request gets the same pre-encoded response. Request bodies are not supported: it
//! answers each head as soon as its blank line arrives (GET load).

use std::net::SocketAddr;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

/// Options for the fixed-response upstream.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on (port 0 picks one; the chosen one is printed).
    pub listen: SocketAddr,
    /// Response body size in bytes.
    pub body_bytes: usize,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Delay before each response.
    pub delay: Duration,
}

/// The complete response sent for every request.
pub fn encode_response(body_bytes: usize) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {body_bytes}\r\n\r\n"
    )
    .into_bytes();
    out.extend(std::iter::repeat_n(b'x', body_bytes));
    out
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
    let response = encode_response(opts.body_bytes);
    let mut threads = Vec::new();
    for _ in 0..workers {
        let response = response.clone();
        let delay = opts.delay;
        threads.push(std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .expect("runtime");
            rt.block_on(serve(addr, response, delay))
        }));
    }
    eprintln!("bench-upstream listening on {addr}");
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("worker panicked"))??;
    }
    Ok(())
}

async fn serve(addr: SocketAddr, response: Vec<u8>, delay: Duration) -> std::io::Result<()> {
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
    let response: &'static [u8] = Box::leak(response.into_boxed_slice());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        monoio::spawn(connection(stream, response, delay));
    }
}

async fn connection(mut stream: monoio::net::TcpStream, response: &'static [u8], delay: Duration) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(response.len() * 4);
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
        // Answer every complete head in the buffer (pipelining), keep the partial rest.
        let mut consumed = 0;
        while let Some(end) = find_head_end(&buf[consumed..]) {
            consumed += end;
            out.extend_from_slice(response);
        }
        buf.drain(..consumed);
        if !out.is_empty() {
            if !delay.is_zero() {
                monoio::time::sleep(delay).await;
            }
            let (res, o) = stream.write_all(out).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_exact_length() {
        let r = encode_response(128);
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-length: 128"));
        assert_eq!(body.len(), 128);
    }

    #[test]
    fn pipelined_heads_are_found_one_by_one() {
        let two = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
        let first = find_head_end(two).unwrap();
        assert_eq!(&two[..first], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(find_head_end(&two[first..]).is_none());
    }
}

//! `header_timeout_ms` covers the whole first request head, counted from the connection's
//! start: the wait for the first byte (and, on HTTPS, the TLS handshake) spends the same
//! deadline as the rest of the head, so a slow client cannot stretch it to twice its length.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// The configured header timeout.
const HEADER_TIMEOUT_MS: u64 = 1500;
/// When the slow client sends its first byte: inside the timeout, but late enough that a
/// second, fresh timeout from there would end well after the first one.
const FIRST_BYTE_AFTER: Duration = Duration::from_millis(1200);
/// The earliest a 408 may come: the timeout, less scheduling jitter.
const EARLIEST: Duration = Duration::from_millis(1300);
/// The latest the connection may be closed: the timeout plus slack, well before the
/// ~2.7 s a timeout restarted at the first byte would give.
const LATEST: Duration = Duration::from_millis(2600);

/// A gateway with `header_timeout_ms = 1500` in front of an echo upstream; `extra` adds
/// tables (the TLS listener).
fn gateway(extra: &str, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let cfg = config(&format!(
        "{extra}\n[limits]\nheader_timeout_ms = {HEADER_TIMEOUT_MS}\n{}",
        proxy_config(&upstream.target())
    ));
    (upstream, Gateway::start(&cfg, driver))
}

/// Writes one byte of a never-ending head every 50 ms from another thread, until the
/// connection fails.
fn trickle_forever(mut writer: impl Write + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = writer.write_all(b"GET /slow HTTP/1.1\r\nHost: test.local\r\n");
        for _ in 0..200 {
            if writer.write_all(b"X").and_then(|_| writer.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Fails unless `elapsed` is within the one header timeout, not a restarted one.
fn assert_within_one_timeout(what: &str, elapsed: Duration) {
    assert!(
        elapsed > EARLIEST,
        "{what} after {elapsed:?}, before the header timeout could have passed"
    );
    assert!(
        elapsed < LATEST,
        "{what} after {elapsed:?}: the header timeout was counted again from the first byte"
    );
}

on_both_drivers! {
    fn late_first_byte_then_trickle_is_408_within_one_timeout(driver) {
        let (upstream, gw) = gateway("", driver);
        let started = Instant::now();
        let mut client = Client::connect(gw.addr());
        std::thread::sleep(FIRST_BYTE_AFTER);
        let trickle = trickle_forever(client.tcp_handle());
        client
            .read_final_response()
            .assert_error(408, "timeout_error");
        client.expect_closed();
        let closed = started.elapsed();
        assert_within_one_timeout("closed", closed);
        trickle.join().unwrap();
        assert_eq!(upstream.bytes_received(), 0);
    }
}

on_both_drivers! {
    fn silent_client_is_closed_at_the_header_timeout(driver) {
        let (_upstream, gw) = gateway("", driver);
        let started = Instant::now();
        let mut client = Client::connect(gw.addr());
        match client.wait_close(WAIT) {
            client::CloseState::Closed => {}
            other => panic!("expected a close, got {other:?}"),
        }
        assert_within_one_timeout("closed", started.elapsed());
    }
}

on_both_drivers! {
    fn tls_handshake_counts_within_the_first_head_deadline(driver) {
        let ca = TestCa::new();
        let leaf = ca.issue(&["localhost"]);
        let files = TempDir::new("header-timeout-tls");
        leaf.write(&files.join("cert.pem"), &files.join("key.pem"));
        let tls = format!(
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            files.file("cert.pem"),
            files.file("key.pem"),
        );
        let (upstream, gw) = gateway(&tls, driver);

        let started = Instant::now();
        let mut tcp = TcpStream::connect(gw.tls_addr()).expect("connect");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        // Handshake late, then trickle the head: all of it shares one deadline.
        std::thread::sleep(FIRST_BYTE_AFTER);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).expect("TLS handshake");
        }
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: test.local\r\n")
            .unwrap();
        // Trickle on this thread with short reads between bytes, until the answer comes.
        stream.sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let closed = loop {
            assert!(started.elapsed() < WAIT, "no answer: {answer:?}");
            let _ = stream.write_all(b"X");
            match stream.read(&mut chunk) {
                Ok(0) => break started.elapsed(),
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
                // A close without close_notify, or a reset after the answer: closed.
                Err(_) => break started.elapsed(),
            }
        };
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "answer: {text:?}");
        assert!(text.contains("timeout_error"), "answer: {text:?}");
        assert_within_one_timeout("closed", closed);
        assert_eq!(upstream.bytes_received(), 0);
    }
}

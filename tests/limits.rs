//! Limits from `[limits]` and `[server]`: header timeout, body and header
//! sizes, idle keep-alive timeout and the per-worker connection cap.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::client::{contains, CloseState, ReadError};
use common::*;

/// An echo upstream and a gateway with extra `[limits]` lines.
fn limited_gateway(limits: &str, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let cfg = config(&format!(
        "[limits]\n{limits}\n{}",
        proxy_config(&upstream.target())
    ));
    (upstream, Gateway::start(&cfg, driver))
}

on_both_drivers! {
    fn header_timeout_answers_408_then_closes(driver) {
        let (upstream, gw) = limited_gateway("header_timeout_ms = 500", driver);
        let mut client = Client::connect(gw.addr());
        client.send(b"GET /slow-head HTTP/1.1\r\nHost: test.local\r\n");
        // Keep trickling: the timeout covers the whole head, however slowly it comes.
        let mut writer = client.tcp_handle();
        let trickle = std::thread::spawn(move || {
            for _ in 0..200 {
                if writer.write_all(b"X").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        client
            .read_final_response()
            .assert_error(408, "timeout_error");
        client.expect_closed();
        trickle.join().unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "408 came before the header timeout could have passed"
        );
        assert_eq!(upstream.bytes_received(), 0);
    }
}

on_both_drivers! {
    fn body_over_max_body_bytes_by_content_length_is_413_and_never_parsed_as_a_request(driver) {
        let (upstream, gw) = limited_gateway("max_body_bytes = 1024", driver);
        // The oversized body is itself a request: if the gateway ever parsed it
        // as one, the upstream would see /smuggled.
        let mut body = b"GET /smuggled HTTP/1.1\r\nHost: test.local\r\nX-Pad: ".to_vec();
        body.resize(2048 - 4, b'p');
        body.extend_from_slice(b"\r\n\r\n");
        let mut client = Client::connect(gw.addr());
        client.send(&request("POST", "/upload", &[], &body));
        client
            .read_final_response()
            .assert_error(413, "invalid_request_error");

        // Either the connection is closed, or the body was drained and the next
        // request is the one we send now.
        let _ = client.try_send(&get("/after"));
        match client.try_read_final_response() {
            Err(ReadError::Closed) => {}
            Ok(next) => assert_eq!(Echo::of(&next).path, "/after"),
            Err(e) => panic!("after the 413: {e}"),
        }
        let raw = upstream.raw_received();
        assert!(
            !contains(&raw, b"smuggled"),
            "the oversized body reached the upstream: {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert!(upstream
            .requests()
            .iter()
            .all(|r| r.path != "/upload" && r.path != "/smuggled"));
    }
}

on_both_drivers! {
    fn chunked_body_over_max_body_bytes_is_413(driver) {
        let (upstream, gw) = limited_gateway("max_body_bytes = 1024", driver);
        let piece = [b'c'; 512];
        let mut raw = request("POST", "/upload", &[("Transfer-Encoding", "chunked")], b"");
        raw.extend(chunked_body(&[&piece, &piece, &piece, &piece]));
        let mut client = Client::connect(gw.addr());
        client.send(&raw);
        client
            .read_final_response()
            .assert_error(413, "invalid_request_error");
        assert_eq!(
            upstream.request_count(),
            0,
            "the upstream received the whole oversized body"
        );
    }
}

on_both_drivers! {
    fn headers_over_max_header_bytes_are_431(driver) {
        let (upstream, gw) = limited_gateway("max_header_bytes = 1024", driver);
        let big = "h".repeat(2000);
        let raw = request("GET", "/big-head", &[("X-Big", big.as_str())], b"");
        roundtrip(gw.addr(), &raw).assert_error(431, "invalid_request_error");
        assert_eq!(upstream.bytes_received(), 0);
    }
}

on_both_drivers! {
    fn idle_keep_alive_connection_is_closed_after_idle_timeout(driver) {
        let (_upstream, gw) = limited_gateway("idle_timeout_ms = 500", driver);
        let mut client = Client::connect(gw.addr());
        client.send(&get("/once"));
        assert_eq!(client.read_final_response().status, 200);
        let idle_since = Instant::now();
        assert_eq!(client.wait_close(WAIT), CloseState::Closed);
        assert!(
            idle_since.elapsed() >= Duration::from_millis(300),
            "closed after {:?}, before the idle timeout",
            idle_since.elapsed()
        );
    }
}

on_both_drivers! {
    fn connection_over_connections_per_worker_waits_until_one_closes(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config_with(
            1,
            "connections_per_worker = 2",
            &proxy_config(&upstream.target()),
        );
        let gw = Gateway::start(&cfg, driver);
        let mut first = Client::connect(gw.addr());
        let mut second = Client::connect(gw.addr());
        for client in [&mut first, &mut second] {
            client.send(&get("/held"));
            assert_eq!(client.read_final_response().status, 200);
        }

        // The kernel completes the handshake, but the gateway must not serve it yet.
        let mut third = Client::connect(gw.addr());
        third.send(&get("/third"));
        third.expect_silent_for(Duration::from_secs(1));

        // The two admitted connections keep working meanwhile.
        for client in [&mut first, &mut second] {
            client.send(&get("/still-served"));
            assert_eq!(client.read_final_response().status, 200);
        }

        drop(first);
        assert_eq!(Echo::of(&third.read_final_response()).path, "/third");
    }
}

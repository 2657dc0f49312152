//! Bodies that stream: chunked both ways, close-delimited responses, SSE,
//! protocol upgrades and bodies far larger than the gateway's memory budget.

mod common;

use std::time::Duration;

use common::client::contains;
use common::*;

/// A gateway routing everything to `upstream`, with extra `[limits]` lines.
fn gateway_for(upstream: &Upstream, limits: &str, driver: Driver) -> Gateway {
    let cfg = config(&format!(
        "[limits]\n{limits}\n{}",
        proxy_config(&upstream.target())
    ));
    Gateway::start(&cfg, driver)
}

on_both_drivers! {
    /// A chunked request body (with a chunk extension) arrives decoded and intact.
    fn chunked_request_body_reaches_the_upstream_intact(driver) {
        let upstream = Upstream::echo("backend");
        let gw = gateway_for(&upstream, "", driver);
        let big = pattern(70_000);
        let parts: [&[u8]; 4] = [b"a", b"0123456789", &big, b"end"];
        let mut raw = request("POST", "/chunked", &[("Transfer-Encoding", "chunked")], b"");
        // RFC 9112 7.1.1: unknown chunk extensions are ignored.
        raw.extend_from_slice(b"1;name=value\r\na\r\n");
        raw.extend(chunked_body(&parts[1..]));
        let echo = Echo::of(&roundtrip(gw.addr(), &raw));
        let expected: Vec<u8> = parts.concat();
        assert_eq!(echo.body_len, expected.len() as u64);
        assert_eq!(echo.body_checksum, checksum(&expected));
    }
}

on_both_drivers! {
    /// A chunked response from the upstream reaches the client byte for byte.
    fn chunked_response_reaches_the_client_intact(driver) {
        let big = pattern(100_000);
        let chunks = vec![b"alpha".to_vec(), big.clone(), b"omega".to_vec()];
        let upstream = Upstream::replying("backend", Reply::Chunked(chunks.clone()));
        let gw = gateway_for(&upstream, "", driver);
        let response = http_get(gw.addr(), "/chunks");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, chunks.concat());
    }
}

on_both_drivers! {
    fn close_delimited_response_reaches_the_client_intact(driver) {
        let body = pattern(300_000);
        let upstream = Upstream::replying("backend", Reply::CloseDelimited(body.clone()));
        let gw = gateway_for(&upstream, "", driver);
        let response = http_get(gw.addr(), "/until-close");
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), body.len());
        assert!(response.body == body, "close-delimited body corrupted");
    }
}

on_both_drivers! {
    fn large_response_streams_through_intact(driver) {
        let len = 64 * 1024 * 1024;
        let upstream = Upstream::replying("backend", Reply::Large(len as u64));
        let gw = gateway_for(&upstream, "", driver);
        let response = http_get(gw.addr(), "/large");
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), len);
        assert!(response.body == pattern(len), "large body corrupted");
    }
}

on_both_drivers! {
    /// An SSE event is relayed as soon as it arrives, not when the stream ends.
    fn sse_first_event_reaches_the_client_before_the_upstream_sends_the_rest(driver) {
        let release = Gate::new();
        let upstream = Upstream::replying(
            "events",
            Reply::Sse {
                first: b"data: first\n\n".to_vec(),
                rest: b"data: second\n\n".to_vec(),
                release: release.clone(),
            },
        );
        let gw = gateway_for(&upstream, "", driver);
        let mut client = Client::connect(gw.addr());
        client.send(&request("GET", "/events", &[("Accept", "text/event-stream")], b""));
        let head = client.read_head();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        let mut body = client.body_reader(&head);

        // The upstream is still holding the rest back: this only returns if the
        // gateway relayed the first event on its own.
        let early = client.read_body_until(&mut body, b"data: first\n\n");
        assert!(!contains(&early, b"second"));

        release.open();
        let mut whole = early;
        while let Some(piece) = client.read_body_piece(&mut body) {
            whole.extend_from_slice(&piece);
        }
        assert_eq!(String::from_utf8_lossy(&whole), "data: first\n\ndata: second\n\n");
    }
}

on_both_drivers! {
    /// No 101 reaches the client until the upstream sends one; then bytes flow both ways.
    fn upgrade_is_relayed_after_the_upstream_answers_101(driver) {
        let release = Gate::new();
        let upstream = Upstream::replying(
            "ws",
            Reply::Upgrade {
                release: Some(release.clone()),
                greeting: b"hello-from-upstream".to_vec(),
            },
        );
        let gw = gateway_for(&upstream, "", driver);
        let mut client = Client::connect(gw.addr());
        client.send(&request(
            "GET",
            "/ws",
            &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
            b"",
        ));
        assert!(upstream.wait_for_requests(1, WAIT), "the upgrade request never reached the upstream");
        let seen = upstream.last_request();
        assert_eq!(seen.header("upgrade"), Some("websocket"));
        assert!(seen.header_has_token("connection", "upgrade"), "{:?}", seen.headers);

        // The upstream holds its 101: the gateway must not answer for it.
        client.expect_silent_for(Duration::from_millis(500));
        release.open();

        let head = client.read_head();
        assert_eq!(head.status, 101);
        assert_eq!(head.header("upgrade"), Some("websocket"));
        assert_eq!(client.read_exact_bytes(19), b"hello-from-upstream");
        client.send(b"ping-123");
        assert_eq!(client.read_exact_bytes(8), b"ping-123");
        client.send(b"second-message");
        assert_eq!(client.read_exact_bytes(14), b"second-message");
    }
}

/// Size of the big streamed body: 1 GiB unless `CF_TEST_BIG_BODY_MIB` says otherwise.
fn big_body_bytes() -> u64 {
    let mib: u64 = std::env::var("CF_TEST_BIG_BODY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    mib * 1024 * 1024
}

on_both_drivers! {
    fn huge_request_body_streams_through_with_bounded_gateway_memory(driver) {
        let total = big_body_bytes();
        let upstream = Upstream::builder("sink")
            .count_only()
            .start(|_| Reply::Echo);
        let gw = gateway_for(
            &upstream,
            &format!("max_body_bytes = {}", total * 2),
            driver,
        );
        let mut client = Client::connect(gw.addr());
        let length = total.to_string();
        client.send(&request(
            "POST",
            "/sink",
            &[
                ("Content-Length", length.as_str()),
                ("Content-Type", "application/octet-stream"),
            ],
            b"",
        ));
        let block = pattern_block();
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(block.len() as u64) as usize;
            client.send(&block[..n]);
            sent += n as u64;
        }
        let echo = Echo::of(&client.read_final_response());
        assert_eq!(echo.body_len, total);

        let peak_kib = gw.proc_status_kib("VmHWM");
        assert!(
            peak_kib < 64 * 1024,
            "gateway peak RSS {peak_kib} KiB while streaming {total} bytes (limit 64 MiB)"
        );
    }
}

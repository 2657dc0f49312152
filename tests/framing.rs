//! Request framing: every ambiguous or malformed shape (the request-smuggling
//! family of RFC 9112 sections 2.2, 5, 6 and 7) is answered 400
//! `invalid_request_error`, the connection is closed, and the upstream
//! receives not a single byte.

mod common;

use common::*;

/// A POST to `/framing` with `fields` (each ending in CRLF) and `body`.
fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /framing HTTP/1.1\r\nHost: test.local\r\n{fields}\r\n{body}").into_bytes()
}

/// A chunked POST whose chunked body is `body` as given.
fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

/// A GET to `/framing` with `fields` (each ending in CRLF).
fn get_with(fields: &str) -> Vec<u8> {
    format!("GET /framing HTTP/1.1\r\nHost: test.local\r\n{fields}\r\n").into_bytes()
}

/// Sends `raw` to a fresh gateway; the answer must have one of `statuses`
/// with a JSON error (400 must be `invalid_request_error`), the connection
/// must close, and the upstream must receive nothing.
fn assert_rejected_with(raw: &[u8], driver: Driver, statuses: &[u16]) {
    let upstream = Upstream::echo("backend");
    let gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
    let mut client = Client::connect(gw.addr());
    client.send(raw);
    let response = client.read_final_response();
    assert!(
        statuses.contains(&response.status),
        "expected one of {statuses:?} for {:?}, got {} {:?}",
        String::from_utf8_lossy(raw),
        response.status,
        response.text()
    );
    if response.status == 400 {
        response.assert_error(400, "invalid_request_error");
    } else {
        assert!(
            response.json()["error"]["type"].is_string(),
            "{}",
            response.text()
        );
    }
    client.expect_closed();
    assert_eq!(
        upstream.bytes_received(),
        0,
        "the upstream received: {:?}",
        String::from_utf8_lossy(&upstream.raw_received())
    );
}

/// `assert_rejected_with` for a plain 400.
fn assert_rejected(raw: impl AsRef<[u8]>, driver: Driver) {
    assert_rejected_with(raw.as_ref(), driver, &[400]);
}

/// One test per driver that the request `$raw` is answered 400, closed, and
/// never forwarded.
macro_rules! rejected {
    ($(#[$meta:meta])* $name:ident: $raw:expr) => {
        on_both_drivers! {
            $(#[$meta])*
            fn $name(driver) {
                assert_rejected($raw, driver);
            }
        }
    };
}

// Content-Length (RFC 9110 8.6, RFC 9112 6.3).

rejected! {
    /// RFC 9112 6.1: Content-Length with Transfer-Encoding is the classic smuggling shape.
    content_length_with_transfer_encoding_is_rejected:
        post(
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n",
        )
}

rejected! {
    two_different_content_lengths_are_rejected:
        post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")
}

rejected! {
    content_length_list_is_rejected: post("Content-Length: 5, 10\r\n", "hello")
}

rejected! {
    content_length_with_plus_sign_is_rejected: post("Content-Length: +5\r\n", "hello")
}

rejected! {
    negative_content_length_is_rejected: post("Content-Length: -5\r\n", "hello")
}

rejected! {
    hex_content_length_is_rejected: post("Content-Length: 0x5\r\n", "hello")
}

rejected! {
    content_length_with_inner_space_is_rejected: post("Content-Length: 5 0\r\n", "hello")
}

rejected! {
    empty_content_length_is_rejected: post("Content-Length: \r\n", "hello")
}

rejected! {
    overflowing_content_length_is_rejected:
        post("Content-Length: 99999999999999999999999\r\n", "hello")
}

// Transfer-Encoding (RFC 9112 6.1).

on_both_drivers! {
    /// Chunked is final, so the framing is clear, but gzip is not supported:
    /// 400 or 501 (RFC 9112 6.1).
    fn transfer_coding_before_chunked_is_rejected_or_not_implemented(driver) {
        let raw = post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n");
        assert_rejected_with(&raw, driver, &[400, 501]);
    }
}

rejected! {
    /// RFC 9112 6.3 rule 4: chunked not final means the length is unknowable.
    chunked_not_last_is_rejected:
        post("Transfer-Encoding: chunked, gzip\r\n", "5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    xchunked_transfer_encoding_is_rejected:
        post("Transfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    transfer_encoding_with_a_control_byte_is_rejected:
        post("Transfer-Encoding: \x0bchunked\r\n", "5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    transfer_encoding_with_leading_comma_is_rejected:
        post("Transfer-Encoding: ,chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    /// A name some servers normalise to Transfer-Encoding and others ignore.
    transfer_encoding_with_underscore_is_rejected:
        post("Transfer_Encoding: chunked\r\n", "0\r\n\r\n")
}

rejected! {
    /// RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
    transfer_encoding_on_http_1_0_is_rejected:
        b"POST /framing HTTP/1.0\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
}

// Field syntax (RFC 9112 2.2, 5).

rejected! {
    /// RFC 9112 5.1: a server MUST reject whitespace between field name and colon.
    whitespace_before_the_colon_is_rejected:
        post("Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    obs_fold_is_rejected: get_with("X-Folded: first\r\n second\r\n")
}

rejected! {
    bare_lf_line_endings_are_rejected: b"GET /framing HTTP/1.1\nHost: test.local\n\n"
}

rejected! {
    bare_cr_in_a_field_value_is_rejected: get_with("X-Bad: a\rb\r\n")
}

rejected! {
    nul_in_a_field_value_is_rejected: get_with("X-Bad: a\0b\r\n")
}

rejected! {
    field_line_without_a_colon_is_rejected: get_with("X-No-Colon\r\n")
}

// Chunked coding (RFC 9112 7.1).

rejected! {
    hex_prefixed_chunk_size_is_rejected: chunked("0x5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    chunk_size_with_plus_sign_is_rejected: chunked("+5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    chunk_size_with_leading_space_is_rejected: chunked(" 5\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    chunk_size_with_trailing_space_is_rejected: chunked("5 \r\nhello\r\n0\r\n\r\n")
}

rejected! {
    chunk_size_with_underscore_is_rejected: chunked("5_0\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    overflowing_chunk_size_is_rejected: chunked("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    empty_chunk_size_line_is_rejected: chunked("\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    bare_lf_after_chunk_size_is_rejected: chunked("5\nhello\r\n0\r\n\r\n")
}

rejected! {
    nul_in_a_chunk_extension_is_rejected: chunked("5;ext=a\0b\r\nhello\r\n0\r\n\r\n")
}

rejected! {
    chunk_data_longer_than_declared_is_rejected: chunked("5\r\nhelloEXTRA\r\n0\r\n\r\n")
}

rejected! {
    chunk_missing_its_crlf_is_rejected: chunked("5\r\nhello0\r\n\r\n")
}

rejected! {
    chunk_extension_over_4_kib_is_rejected:
        chunked(&format!("5;ext={}\r\nhello\r\n0\r\n\r\n", "a".repeat(5000)))
}

// Request line and Host (RFC 9112 3).

rejected! {
    /// RFC 9112 3.2: an HTTP/1.1 request without Host gets 400.
    missing_host_is_rejected: b"GET /framing HTTP/1.1\r\nX-Any: 1\r\n\r\n"
}

rejected! {
    duplicate_host_is_rejected:
        b"GET /framing HTTP/1.1\r\nHost: test.local\r\nHost: other.example\r\n\r\n"
}

rejected! {
    absolute_form_with_a_different_host_is_rejected:
        b"GET http://other.example/framing HTTP/1.1\r\nHost: test.local\r\n\r\n"
}

rejected! {
    /// The request line is complete at its CRLF and has no version.
    http_0_9_request_line_is_rejected: b"GET /\r\n"
}

on_both_drivers! {
    fn trailer_fields_cannot_smuggle_framing_host_or_credentials(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
        let raw = chunked(
            "5\r\nhello\r\n0\r\n\
             Content-Length: 99\r\nHost: evil.example\r\nAuthorization: Bearer smuggled\r\n\r\n",
        );
        let echo = Echo::of(&roundtrip(gw.addr(), &raw));
        assert_eq!(echo.body_checksum, checksum(b"hello"));
        let seen = upstream.last_request();
        assert_eq!(seen.headers_named("host").len(), 1, "{:?}", seen.headers);
        assert_ne!(seen.header("host"), Some("evil.example"));
        assert_eq!(seen.header("authorization"), None);
        assert_ne!(seen.header("content-length"), Some("99"));
        for (name, _) in &seen.trailers {
            assert!(
                !["content-length", "host", "authorization"].contains(&name.as_str()),
                "trailer {name} was forwarded: {:?}",
                seen.trailers
            );
        }
    }
}

on_both_drivers! {
    fn head_trickled_byte_by_byte_past_max_header_bytes_gets_431(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config(&format!(
            "[limits]\nmax_header_bytes = 1024\n{}",
            proxy_config(&upstream.target())
        ));
        let gw = Gateway::start(&cfg, driver);
        let mut client = Client::connect(gw.addr());
        let head = format!(
            "GET /framing HTTP/1.1\r\nHost: test.local\r\nX-Long: {}\r\n\r\n",
            "a".repeat(2000)
        );
        // One byte per write: the limit must hold across reads, not per read.
        client.send_trickle(head.as_bytes(), std::time::Duration::ZERO);
        client
            .read_final_response()
            .assert_error(431, "invalid_request_error");
        client.expect_closed();
        assert_eq!(upstream.bytes_received(), 0);
    }
}

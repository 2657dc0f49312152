//! Proxying through the gateway: routing, connection management, header
//! rewriting toward the upstream and credential handling.

mod common;

use common::*;

/// An echo upstream and a gateway routing everything to it.
fn echo_gateway(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let gateway = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
    (upstream, gateway)
}

on_both_drivers! {
    /// A GET reaches the upstream with its method, path and query.
    fn get_is_proxied_to_the_upstream(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let response = http_get(gw.addr(), "/items/42?color=red&size=xl");
        let echo = Echo::of(&response);
        assert_eq!(echo.upstream, "backend");
        assert_eq!(echo.method, "GET");
        assert_eq!(echo.path, "/items/42");
        assert_eq!(echo.query, "color=red&size=xl");
    }
}

on_both_drivers! {
    fn post_with_content_length_reaches_the_upstream_intact(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let body = pattern(200_000);
        let raw = request(
            "POST",
            "/upload",
            &[("Content-Type", "application/octet-stream")],
            &body,
        );
        let echo = Echo::of(&roundtrip(gw.addr(), &raw));
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.body_len, body.len() as u64);
        assert_eq!(echo.body_checksum, checksum(&body));
    }
}

on_both_drivers! {
    fn longest_path_prefix_wins(driver) {
        let short = Upstream::echo("short");
        let long = Upstream::echo("long");
        // The shorter prefix comes first, so "first match wins" would fail this test.
        let cfg = config(&format!(
            "{}{}{}{}",
            upstream_toml("short", &short.target(), ""),
            upstream_toml("long", &long.target(), ""),
            route_toml("api", "/api/", "short", ""),
            route_toml("api_v2", "/api/v2/", "long", ""),
        ));
        let gw = Gateway::start(&cfg, driver);
        assert_eq!(
            Echo::of(&http_get(gw.addr(), "/api/v2/users")).upstream,
            "long"
        );
        assert_eq!(
            Echo::of(&http_get(gw.addr(), "/api/v1/users")).upstream,
            "short"
        );
    }
}

on_both_drivers! {
    fn route_with_a_host_matches_only_that_exact_host(driver) {
        let hosted = Upstream::echo("hosted");
        let fallback = Upstream::echo("fallback");
        let cfg = config(&format!(
            "{}{}{}{}",
            upstream_toml("hosted", &hosted.target(), ""),
            upstream_toml("fallback", &fallback.target(), ""),
            route_toml("by_host", "/", "hosted", "host = \"api.example.com\""),
            route_toml("any_host", "/", "fallback", ""),
        ));
        let gw = Gateway::start(&cfg, driver);
        let for_host = |host: &str| {
            let raw = request("GET", "/x", &[("Host", host)], b"");
            Echo::of(&roundtrip(gw.addr(), &raw)).upstream
        };
        assert_eq!(for_host("api.example.com"), "hosted");
        assert_eq!(for_host("other.example.com"), "fallback");
        assert_eq!(for_host("sub.api.example.com"), "fallback");
    }
}

on_both_drivers! {
    fn strip_prefix_removes_the_route_prefix_toward_the_upstream(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config(&format!(
            "{}{}",
            upstream_toml("backend", &upstream.target(), ""),
            route_toml("svc", "/svc/", "backend", "strip_prefix = true"),
        ));
        let gw = Gateway::start(&cfg, driver);
        let echo = Echo::of(&http_get(gw.addr(), "/svc/users/7?full=1"));
        assert_eq!(echo.path, "/users/7");
        assert_eq!(echo.query, "full=1");
    }
}

on_both_drivers! {
    fn unknown_route_is_a_404_not_found_error(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config(&format!(
            "{}{}",
            upstream_toml("backend", &upstream.target(), ""),
            route_toml("api", "/api/", "backend", ""),
        ));
        let gw = Gateway::start(&cfg, driver);
        let response = http_get(gw.addr(), "/elsewhere");
        response.assert_error(404, "not_found_error");
        assert_eq!(upstream.bytes_received(), 0);
    }
}

on_both_drivers! {
    /// Several requests in turn on one connection are all answered.
    fn keep_alive_serves_several_requests_on_one_connection(driver) {
        let (upstream, gw) = echo_gateway(driver);
        let mut client = Client::connect(gw.addr());
        for i in 0..5 {
            client.send(&get(&format!("/ka/{i}")));
            let echo = Echo::of(&client.read_final_response());
            assert_eq!(echo.path, format!("/ka/{i}"));
        }
        assert_eq!(upstream.request_count(), 5);
    }
}

on_both_drivers! {
    /// Three requests sent in one write are answered in order (RFC 9112 9.3.2).
    fn pipelined_requests_are_answered_in_order(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let mut client = Client::connect(gw.addr());
        let mut batch = get("/p1");
        batch.extend(request("POST", "/p2", &[], b"second"));
        batch.extend(get("/p3"));
        client.send(&batch);
        let paths: Vec<String> = (0..3)
            .map(|_| Echo::of(&client.read_final_response()).path)
            .collect();
        assert_eq!(paths, ["/p1", "/p2", "/p3"]);
    }
}

on_both_drivers! {
    fn http_1_0_request_is_answered_then_closed(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let mut client = Client::connect(gw.addr());
        client.send(b"GET /old HTTP/1.0\r\nHost: test.local\r\n\r\n");
        let response = client.read_final_response();
        assert_eq!(Echo::of(&response).path, "/old");
        assert!(
            response.header("transfer-encoding").is_none(),
            "an HTTP/1.0 client cannot read chunked coding"
        );
        client.expect_closed();
    }
}

on_both_drivers! {
    fn http_1_0_request_asking_keep_alive_keeps_the_connection(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let mut client = Client::connect(gw.addr());
        for path in ["/first", "/second"] {
            client.send(
                format!("GET {path} HTTP/1.0\r\nHost: test.local\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            );
            let response = client.read_final_response();
            assert_eq!(Echo::of(&response).path, path);
            assert!(
                response.header("content-length").is_some(),
                "a kept-alive HTTP/1.0 response needs Content-Length"
            );
        }
    }
}

on_both_drivers! {
    fn connection_close_request_is_answered_then_closed(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let mut client = Client::connect(gw.addr());
        client.send(&request("GET", "/bye", &[("Connection", "close")], b""));
        let response = client.read_final_response();
        assert_eq!(Echo::of(&response).path, "/bye");
        assert!(response.header_has_token("connection", "close"));
        client.expect_closed();
    }
}

on_both_drivers! {
    fn hop_by_hop_headers_are_not_forwarded(driver) {
        let (upstream, gw) = echo_gateway(driver);
        // RFC 9110 7.6.1: Connection and the fields it names are for this hop only,
        // as are Keep-Alive, Proxy-Connection, TE, Trailer and Upgrade.
        let raw = request(
            "GET",
            "/hop",
            &[
                ("Connection", "keep-alive, X-Hop-Custom"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Trailer", "X-Checksum"),
                ("Upgrade", "h2c"),
                ("X-Hop-Custom", "for-the-gateway-only"),
                ("X-End-To-End", "kept"),
            ],
            b"",
        );
        assert_eq!(roundtrip(gw.addr(), &raw).status, 200);
        let seen = upstream.last_request();
        for name in [
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "x-hop-custom",
        ] {
            assert_eq!(
                seen.header(name),
                None,
                "{name} reached the upstream: {:?}",
                seen.headers
            );
        }
        assert!(
            !seen.header_has_token("connection", "x-hop-custom"),
            "the client's Connection tokens reached the upstream: {:?}",
            seen.headers
        );
        assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    }
}

on_both_drivers! {
    fn x_forwarded_headers_describe_the_client(driver) {
        let (upstream, gw) = echo_gateway(driver);
        assert_eq!(http_get(gw.addr(), "/fwd").status, 200);
        let seen = upstream.last_request();
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("x-forwarded-host"), Some(client::TEST_HOST));
    }
}

on_both_drivers! {
    fn every_response_carries_an_x_request_id(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config(&format!(
            "{}{}",
            upstream_toml("backend", &upstream.target(), ""),
            route_toml("api", "/api/", "backend", ""),
        ));
        let gw = Gateway::start(&cfg, driver);
        let proxied = http_get(gw.addr(), "/api/ok");
        let not_found = http_get(gw.addr(), "/nowhere");
        let malformed = roundtrip(
            gw.addr(),
            b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        );
        for (what, response) in [("proxied", proxied), ("404", not_found), ("400", malformed)] {
            let id = response.header("x-request-id").unwrap_or("");
            assert!(
                !id.is_empty(),
                "{what} response ({}) has no x-request-id",
                response.status
            );
        }
    }
}

on_both_drivers! {
    fn well_formed_client_request_id_is_kept(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let raw = request(
            "GET",
            "/id",
            &[("X-Request-Id", "client-req-0042_abc")],
            b"",
        );
        let response = roundtrip(gw.addr(), &raw);
        assert_eq!(response.header("x-request-id"), Some("client-req-0042_abc"));
    }
}

/// Sends `id` as X-Request-Id and returns the id the gateway answered with.
fn answered_request_id(gw: &Gateway, id: &str) -> String {
    let raw = request("GET", "/id", &[("X-Request-Id", id)], b"");
    let response = roundtrip(gw.addr(), &raw);
    assert_eq!(response.status, 200);
    response
        .header("x-request-id")
        .expect("no x-request-id")
        .to_string()
}

on_both_drivers! {
    fn request_id_with_spaces_is_replaced(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let answered = answered_request_id(&gw, "has spaces in it");
        assert_ne!(answered, "has spaces in it");
        assert!(
            !answered.is_empty() && !answered.contains(' '),
            "{answered:?}"
        );
    }
}

on_both_drivers! {
    fn overlong_request_id_is_replaced(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let long = "a".repeat(300);
        let answered = answered_request_id(&gw, &long);
        assert_ne!(answered, long);
        assert!(!answered.is_empty() && answered.len() < 300, "{answered:?}");
    }
}

/// The client credential headers the gateway must never forward when it
/// injects its own.
const CLIENT_CREDENTIALS: [(&str, &str); 3] = [
    ("Authorization", "Bearer client-secret-1"),
    ("X-Api-Key", "client-secret-2"),
    ("Api-Key", "client-secret-3"),
];

on_both_drivers! {
    fn client_credentials_are_replaced_by_the_upstream_env_credential(driver) {
        let upstream = Upstream::echo("backend");
        let credential = r#"credential = { header = "authorization", value = "Bearer {secret}", secret = "env:CF_TEST_BACKEND_TOKEN" }"#;
        let cfg = config(&format!(
            "{}{}",
            upstream_toml("backend", &upstream.target(), credential),
            route_toml("api", "/", "backend", ""),
        ));
        let gw = Gateway::builder(&cfg, driver)
            .env("CF_TEST_BACKEND_TOKEN", "backend-token-123")
            .start();
        let raw = request("GET", "/secure", &CLIENT_CREDENTIALS, b"");
        assert_eq!(roundtrip(gw.addr(), &raw).status, 200);
        let seen = upstream.last_request();
        assert_eq!(
            seen.headers_named("authorization"),
            ["Bearer backend-token-123"]
        );
        assert_eq!(seen.header("x-api-key"), None);
        assert_eq!(seen.header("api-key"), None);
    }
}

on_both_drivers! {
    fn file_secret_is_reread_when_the_file_changes(driver) {
        let upstream = Upstream::echo("backend");
        let secrets = TempDir::new("secret");
        let secret_path = secrets.join("backend-token");
        std::fs::write(&secret_path, "first-token\n").unwrap();
        let credential = format!(
            r#"credential = {{ header = "authorization", value = "Bearer {{secret}}", secret = "file:{}" }}"#,
            secret_path.display()
        );
        let cfg = config(&format!(
            "{}{}",
            upstream_toml("backend", &upstream.target(), &credential),
            route_toml("api", "/", "backend", ""),
        ));
        let gw = Gateway::start(&cfg, driver);
        let authorization_seen = || {
            assert_eq!(http_get(gw.addr(), "/secure").status, 200);
            upstream
                .last_request()
                .header("authorization")
                .unwrap_or("")
                .to_string()
        };
        // Trailing newline and spaces are trimmed.
        assert_eq!(authorization_seen(), "Bearer first-token");

        std::fs::write(&secret_path, "second-token  \n").unwrap();
        let mut last = String::new();
        let switched = wait_until(WAIT, || {
            last = authorization_seen();
            last == "Bearer second-token"
        });
        assert!(
            switched,
            "the new secret was never used; last seen {last:?}"
        );
    }
}

on_both_drivers! {
    fn client_credentials_pass_through_on_an_auth_none_route_without_credential(driver) {
        let (upstream, gw) = echo_gateway(driver);
        let raw = request("GET", "/open", &CLIENT_CREDENTIALS, b"");
        assert_eq!(roundtrip(gw.addr(), &raw).status, 200);
        let seen = upstream.last_request();
        assert_eq!(
            seen.headers_named("authorization"),
            ["Bearer client-secret-1"]
        );
        assert_eq!(seen.headers_named("x-api-key"), ["client-secret-2"]);
        assert_eq!(seen.headers_named("api-key"), ["client-secret-3"]);
    }
}

on_both_drivers! {
    fn expect_100_continue_gets_100_then_the_final_response(driver) {
        let (_upstream, gw) = echo_gateway(driver);
        let mut client = Client::connect(gw.addr());
        // RFC 9110 10.1.1: the client holds the body back until 100 Continue.
        client.send(&request(
            "POST",
            "/upload",
            &[("Content-Length", "11"), ("Expect", "100-continue")],
            b"",
        ));
        let interim = client.read_response();
        assert_eq!(interim.status, 100, "expected 100 Continue first");
        client.send(b"hello world");
        let echo = Echo::of(&client.read_final_response());
        assert_eq!(echo.body_len, 11);
        assert_eq!(echo.body_checksum, checksum(b"hello world"));
    }
}

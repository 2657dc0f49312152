//! Request paths are normalized before routing (README, "Reverse proxy behaviour",
//! "Paths"): routing, auth, hooks, the access log and the upstream all see one spelling of
//! the path, and a path that cannot be normalized safely is refused with 400 before anything
//! is forwarded. The shapes come from nginx's and Envoy's path-normalization cases and from
//! the dot-segment auth bypass (`/public/../api/secret`).

mod common;

use std::time::Duration;

use common::keys::*;
use common::*;
use serde_json::{json, Value};

/// What the gateway must do with a request-target.
enum Expect {
    /// Forward it with exactly this request-target.
    Forward(&'static str),
    /// Answer 400 `invalid_request_error` and forward nothing.
    Refuse,
}

use Expect::{Forward, Refuse};

/// Request-targets and their outcome with `merge_slashes` at its default (true).
const SHAPES: &[(&str, Expect)] = &[
    // Already normal: forwarded byte for byte.
    ("/", Forward("/")),
    ("/a/b", Forward("/a/b")),
    ("/a/b/", Forward("/a/b/")),
    ("/a;v=1/b", Forward("/a;v=1/b")),
    ("/a%20b", Forward("/a%20b")),
    // Dot segments (RFC 3986 5.2.4).
    ("/a/./b", Forward("/a/b")),
    ("/a/b/..", Forward("/a/")),
    ("/a/b/../", Forward("/a/")),
    ("/a/b/../c", Forward("/a/c")),
    ("/a/.", Forward("/a/")),
    ("/.", Forward("/")),
    ("/./", Forward("/")),
    ("/a/..", Forward("/")),
    ("/a/b/c/./../../g", Forward("/a/g")),
    // Segments that only look like dot segments.
    ("/a/.../b", Forward("/a/.../b")),
    ("/a/b..", Forward("/a/b..")),
    ("/a/..b/c.", Forward("/a/..b/c.")),
    ("/a/b./.c", Forward("/a/b./.c")),
    // Encoded dots, any case.
    ("/a/%2E%2e/b", Forward("/b")),
    ("/a/%2e%2E/b", Forward("/b")),
    ("/a/.%2E/b", Forward("/b")),
    ("/a/%2e./b", Forward("/b")),
    ("/%2e/", Forward("/")),
    ("/a/%2e", Forward("/a/")),
    ("/a/b/%2e%2e", Forward("/a/")),
    // Other unreserved escapes are decoded; reserved ones kept with upper-case hex.
    ("/%7euser", Forward("/~user")),
    ("/%7Euser", Forward("/~user")),
    ("/%41%62%2D%5f%39", Forward("/Ab-_9")),
    ("/a%3ab", Forward("/a%3Ab")),
    // Double encoding stays literal: `%25` is not unreserved.
    ("/%25%32%65", Forward("/%252e")),
    ("/%252e%252e/x", Forward("/%252e%252e/x")),
    // Runs of slashes fold into one.
    ("/a//b", Forward("/a/b")),
    ("//a", Forward("/a")),
    ("/a///", Forward("/a/")),
    ("/a//../b", Forward("/b")),
    // The query is never touched.
    ("/a/..?x=/../y", Forward("/?x=/../y")),
    ("/?q=%2e%2e", Forward("/?q=%2e%2e")),
    ("/a/./b/../c/?k=..&j=%7e", Forward("/a/c/?k=..&j=%7e")),
    // Climbing above the root.
    ("/..", Refuse),
    ("/../", Refuse),
    ("/../a", Refuse),
    ("/a/../..", Refuse),
    ("/a/../../b", Refuse),
    ("/%2e%2e/", Refuse),
    ("/.%2e/", Refuse),
    ("/%2E./x", Refuse),
    // Encoded slashes and backslashes, raw backslashes.
    ("/a%2fb", Refuse),
    ("/a%2Fb", Refuse),
    ("/a/..%2F..", Refuse),
    ("/a%5cb", Refuse),
    ("/a%5Cb", Refuse),
    ("/a\\b", Refuse),
    ("/a/..\\b", Refuse),
    // NUL.
    ("/a/%00", Refuse),
    ("/a%00b", Refuse),
    // Parameters on a dot segment.
    ("/a/..;/b", Refuse),
    ("/a/.;x/b", Refuse),
    ("/a/%2e%2e;/b", Refuse),
    ("/a/..%3b/b", Refuse),
    ("/a/..;", Refuse),
];

/// An echo upstream behind a route on `/` without auth, with `limits` as `[limits]` lines.
fn echo_gateway(limits: &str, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!("[limits]\n{limits}\n{}", proxy_config(&upstream.target()));
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

on_both_drivers! {
    fn every_path_shape_is_forwarded_normalized_or_refused(driver) {
        assert!(SHAPES.len() >= 40);
        let (upstream, gw) = echo_gateway("", driver);
        let mut forwarded = 0;
        for (target, expect) in SHAPES {
            let response = http_get(gw.addr(), target);
            match expect {
                Forward(expected) => {
                    assert_eq!(response.status, 200, "{target}: {}", response.text());
                    forwarded += 1;
                    assert!(upstream.wait_for_requests(forwarded, WAIT), "{target}");
                    assert_eq!(upstream.last_request().target, *expected, "{target}");
                }
                Refuse => {
                    response.assert_error(400, "invalid_request_error");
                    assert_eq!(upstream.request_count(), forwarded, "{target} was forwarded");
                }
            }
        }
    }
}

on_both_drivers! {
    fn merge_slashes_false_keeps_double_slashes(driver) {
        let (upstream, gw) = echo_gateway("merge_slashes = false", driver);
        for (target, expected) in [
            ("/a//b", "/a//b"),
            ("//a", "//a"),
            ("/a//./b/", "/a//b/"),
            ("/a//b/..", "/a//"),
        ] {
            assert_eq!(Echo::of(&http_get(gw.addr(), target)).path, expected, "{target}");
        }
        // Dot segments are still resolved and still may not climb out.
        http_get(gw.addr(), "/a/../..").assert_error(400, "invalid_request_error");
        assert_eq!(upstream.request_count(), 4);
    }
}

on_both_drivers! {
    fn absolute_form_targets_have_their_path_normalized(driver) {
        let (upstream, gw) = echo_gateway("", driver);
        let raw = "GET http://test.local/a/./b/%2e%2e/c?x=.. HTTP/1.1\r\nHost: test.local\r\n\r\n";
        let response = roundtrip(gw.addr(), raw.as_bytes());
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(upstream.last_request().target, "/a/c?x=..");
        let raw = "GET http://test.local/../x HTTP/1.1\r\nHost: test.local\r\n\r\n";
        roundtrip(gw.addr(), raw.as_bytes()).assert_error(400, "invalid_request_error");
        assert_eq!(upstream.request_count(), 1);
    }
}

on_both_drivers! {
    fn options_asterisk_is_not_taken_for_a_bad_path(driver) {
        // `*` is no path: it matches no route prefix (404), as before normalization.
        let (upstream, gw) = echo_gateway("", driver);
        let raw = "OPTIONS * HTTP/1.1\r\nHost: test.local\r\n\r\n";
        roundtrip(gw.addr(), raw.as_bytes()).assert_error(404, "not_found_error");
        assert_eq!(upstream.request_count(), 0);
    }
}

/// An echo upstream behind `/public/` (no auth) and `/api/` (api_key), both on it.
fn public_and_private(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}{}{}",
        upstream_toml("backend", &upstream.target(), ""),
        route_toml("public", "/public/", "backend", ""),
        "\n[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"backend\"\nauth = \"api_key\"\n",
    );
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

/// The attack shapes that reached `/api/secret` through `/public/`'s missing auth.
const BYPASSES: [&str; 4] = [
    "/public/../api/secret",
    "/public/%2e%2e/api/secret",
    "/public/..%2fapi/secret",
    "/public/..;/api/secret",
];

on_both_drivers! {
    fn dot_segments_do_not_bypass_route_auth(driver) {
        let (upstream, gw) = public_and_private(driver);
        assert_eq!(Echo::of(&http_get(gw.addr(), "/public/page")).path, "/public/page");
        for target in BYPASSES {
            let response = get_with_key(gw.addr(), target, None);
            assert!(
                matches!(response.status, 400 | 401),
                "{target} answered {} {}",
                response.status,
                response.text()
            );
            assert_ne!(response.status, 200, "{target} reached the upstream");
        }
        assert_eq!(upstream.request_count(), 1, "an attack shape was forwarded");
        // Routed as what it is: `/public/../api/secret` is `/api/secret`, so a key opens it.
        // (A new key reaches every worker within the credential cache's refresh.)
        let key = create_key(&gw, &json!({"name": "paths"}));
        let mut response = None;
        let served = wait_until(WAIT, || {
            let answer = get_with_key(gw.addr(), BYPASSES[0], Some(&key.secret));
            let ok = answer.status == 200;
            response = Some(answer);
            ok
        });
        assert!(served, "the key never opened /api/: {:?}", response.map(|r| r.text()));
        assert_eq!(upstream.last_request().target, "/api/secret");
    }
}

#[test]
fn check_accepts_merge_slashes_and_refuses_unknown_limits_keys() {
    {
        let routes = proxy_config("127.0.0.1:9");
        let accepted = check_config(&config(&format!(
            "[limits]\nmerge_slashes = false\n{routes}"
        )));
        assert_eq!(accepted.code, Some(0), "{}", accepted.output());
        let wrong_type = check_config(&config(&format!(
            "[limits]\nmerge_slashes = \"no\"\n{routes}"
        )));
        assert_eq!(wrong_type.code, Some(1));
        assert!(
            wrong_type.output().contains("limits.merge_slashes"),
            "{}",
            wrong_type.output()
        );
        let unknown = check_config(&config(&format!("[limits]\nmerge_slash = true\n{routes}")));
        assert_eq!(unknown.code, Some(1));
        assert!(
            unknown.output().contains("merge_slash"),
            "{}",
            unknown.output()
        );
    }
}

// ---------------------------------------------------------------------------
// Hooks and the access log see the normalized path
// ---------------------------------------------------------------------------

/// A gateway writing its access log to `{DIR}/access.log`, with a route on `/` that runs
/// `hooks` in front of `upstream`.
fn hooked_gateway(upstream: &Upstream, hooks: &str, driver: Driver) -> Gateway {
    let toml = format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\n\
         data_dir = \"{dir}/data\"\n\
         access_log = \"{dir}/access.log\"\n\
         workers = 1\n\
         \n\
         [[upstream]]\nname = \"backend\"\ntargets = [\"{target}\"]\n\
         \n\
         [[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"none\"\nhooks = \"{hooks}\"\n",
        dir = gateway::DIR,
        target = upstream.target(),
    );
    Gateway::start(&toml, driver)
}

/// The access-log entry whose `request_id` is `id`, waiting for it to be written.
fn access_entry(gw: &Gateway, id: &str) -> Value {
    let path = gw.dir().join("access.log");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["request_id"] == id);
        if let Some(entry) = found {
            return entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access-log line for {id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

on_both_drivers! {
    fn hooks_and_the_access_log_see_the_normalized_path(driver) {
        let dir = TempDir::new("paths-lua");
        let script = dir.join("paths.lua");
        std::fs::write(
            &script,
            "function on_access(ctx)\n\
             \x20   ctx:set_header(\"x-access-path\", ctx.path)\n\
             end\n\
             function on_request(ctx)\n\
             \x20   ctx:set_header(\"x-request-path\", ctx.path)\n\
             end\n",
        )
        .unwrap();
        let upstream = Upstream::echo("backend");
        let gw = hooked_gateway(&upstream, &script.to_string_lossy(), driver);
        let response = http_get(gw.addr(), "/x/%2e%2E/v1//items/./%7eme?q=/../");
        let echo = Echo::of(&response);
        assert_eq!(echo.path, "/v1/items/~me");
        assert_eq!(echo.query, "q=/../");
        assert_eq!(echo.header("x-access-path"), Some("/v1/items/~me"));
        assert_eq!(echo.header("x-request-path"), Some("/v1/items/~me"));
        let id = response.header("x-request-id").expect("x-request-id").to_string();
        assert_eq!(access_entry(&gw, &id)["path"], "/v1/items/~me");
    }
}

on_both_drivers! {
    fn ai_front_doors_are_matched_on_the_normalized_path(driver) {
        // A catch-all route too: a raw-path match would send these to the echo upstream.
        let upstream = Upstream::echo("backend");
        let rest = format!(
            "[ai]\nauth = \"none\"\n\n\
             [[provider]]\nname = \"mock\"\nkind = \"mock\"\n\n\
             [[model]]\nname = \"m\"\nprovider = \"mock\"\n{}",
            proxy_config(&upstream.target())
        );
        let gw = Gateway::start(&config(&rest), driver);
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let body = body.to_string();
        for target in ["/v1/x/../chat/completions", "/v1/%63hat//completions"] {
            let headers = [("Content-Type", "application/json")];
            let response = roundtrip(
                gw.addr(),
                &request("POST", target, &headers, body.as_bytes()),
            );
            assert_eq!(response.status, 200, "{target}: {}", response.text());
            assert_eq!(response.json()["object"], "chat.completion", "{target}");
        }
        assert_eq!(upstream.request_count(), 0);
    }
}

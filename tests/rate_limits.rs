//! Rate and concurrency limits end to end (issue 4): key `rpm`/`rps`, route
//! `rate_limit`, route `ip_rate_limit` and key `max_concurrency`, enforced
//! over every worker of a real 2-worker gateway, answered with 429 +
//! `Retry-After` and the OpenAI `x-ratelimit-*-requests` headers.
//!
//! Timing: every window here is long enough (rpm, or rps well below 1) that
//! a slow, shared CI machine cannot refill a slot in the middle of a burst;
//! counts over concurrent requests allow ±1 only where a refill is possible.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::keys::*;
use common::limits::*;
use common::*;
use serde_json::json;

/// Another client address: Linux routes all of 127/8 to `lo`, so a socket
/// bound here reaches the gateway on 127.0.0.1 as a second client IP.
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The contract's bound for a key change to reach every worker.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Routes behind `auth = "api_key"`: `api` (everything) and `probe`
/// (`/probe/`), which the test keys are not allowed on, so a 403 there proves
/// the key is known without consuming any of its quota.
fn keyed_routes(target: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "backend"
targets = ["{target}"]

[[route]]
name = "api"
path_prefix = "/"
upstream = "backend"
auth = "api_key"

[[route]]
name = "probe"
path_prefix = "/probe/"
upstream = "backend"
auth = "api_key"
"#
    )
}

/// An echo upstream and a 2-worker gateway with the keyed routes.
fn keyed_gateway(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let gw = Gateway::start(&config(&keyed_routes(&upstream.target())), driver);
    (upstream, gw)
}

/// Creates a key allowed only on route `api` with the extra `limits` fields,
/// and waits until every worker knows it (without spending its quota).
fn limited_key(gw: &Gateway, name: &str, limits: serde_json::Value) -> IssuedKey {
    let mut body = json!({ "name": name, "routes": ["api"] });
    for (field, value) in limits.as_object().expect("limits is a JSON object") {
        body[field] = value.clone();
    }
    let key = create_key(gw, &body);
    wait_until_key_known(gw, &key.secret, "/probe/ready", 403);
    key
}

/// `GET path` with `Authorization: Bearer <secret>` on a new connection.
fn get_keyed(gw: &Gateway, path: &str, secret: &str) -> Response {
    get_with_key(gw.addr(), path, Some(secret))
}

/// `GET path` with `Authorization: Bearer <secret>` on an open connection,
/// reconnecting if the gateway closed it (closing after a 429 is allowed).
fn get_keep_alive(client: &mut Client, gw: &Gateway, path: &str, secret: &str) -> Response {
    let bearer = format!("Bearer {secret}");
    let raw = request("GET", path, &[("Authorization", bearer.as_str())], b"");
    if client.try_send(&raw).is_ok() {
        match client.try_read_final_response() {
            Ok(response) => return response,
            Err(client::ReadError::Closed) => {}
            Err(e) => panic!("GET {path}: {e}"),
        }
    }
    *client = Client::connect(gw.addr());
    client.send(&raw);
    client.read_final_response()
}

/// Fails the test unless `ok` is within one of `expected`.
fn assert_about(ok: usize, expected: usize, what: &str) {
    assert!(
        ok + 1 >= expected && ok <= expected + 1,
        "{what}: admitted {ok}, expected {expected} ±1"
    );
}

/// Checks the headers of a burst's answers against a limiter of capacity
/// `limit` and emission interval `interval`: every 200 and 429 reports the
/// limit, 429s report nothing remaining, admitted requests each took a slot
/// of their own (remaining counts down from `limit - 1`), and every reset is
/// a positive duration no longer than a full window.
fn assert_burst_headers(responses: &[Response], limit: u64, interval: Duration) {
    let full_window = interval * limit as u32;
    let mut remaining_of_admitted = Vec::new();
    for response in responses {
        let headers = request_limit_headers(response);
        assert_eq!(
            headers.limit, limit,
            "x-ratelimit-limit-requests on {}",
            response.status
        );
        assert!(
            headers.reset <= full_window,
            "reset {:?} exceeds the full window {full_window:?}",
            headers.reset
        );
        match response.status {
            200 => {
                assert!(
                    headers.remaining < limit,
                    "remaining {headers:?} after an admission"
                );
                assert!(
                    !headers.reset.is_zero(),
                    "a request was just admitted: {headers:?}"
                );
                remaining_of_admitted.push(headers.remaining);
            }
            429 => assert_eq!(headers.remaining, 0, "remaining on a 429"),
            other => panic!("unexpected status {other}: {}", response.text()),
        }
    }
    remaining_of_admitted.sort_unstable();
    let admitted = remaining_of_admitted.len();
    remaining_of_admitted.dedup();
    assert!(
        remaining_of_admitted.len() + 1 >= admitted,
        "admitted requests shared remaining values (each takes a slot): {remaining_of_admitted:?}"
    );
    assert_eq!(
        remaining_of_admitted.last().copied(),
        Some(limit - 1),
        "the first admission from rest leaves limit - 1"
    );
}

#[test]
fn reset_values_parse_as_go_durations() {
    let ms = Duration::from_millis;
    assert_eq!(parse_go_duration("250ms"), Some(ms(250)));
    assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
    assert_eq!(parse_go_duration("1.5s"), Some(ms(1500)));
    assert_eq!(parse_go_duration("6m0s"), Some(ms(360_000)));
    assert_eq!(parse_go_duration("1h2m3.5s"), Some(ms(3_723_500)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("12"), None);
    assert_eq!(parse_go_duration("1.5 s"), None);
    assert_eq!(parse_go_duration(""), None);
}

on_default_driver! {
    fn key_rpm_admits_n_of_3n_concurrent_requests_and_answers_the_rest_429(driver) {
        const N: usize = 20;
        const THREADS: usize = 16;
        let (upstream, gw) = keyed_gateway(driver);
        let key = limited_key(&gw, "rpm-burst", json!({ "rpm": N }));

        // 3N requests from 16 threads, each on fresh connections (spread over workers).
        let next = AtomicUsize::new(0);
        let responses: Vec<Response> = concurrently(THREADS, |_| {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < 3 * N {
                mine.push(get_keyed(&gw, "/burst", &key.secret));
            }
            mine
        })
        .into_iter()
        .flatten()
        .collect();

        assert_eq!(responses.len(), 3 * N);
        let ok = count_status(&responses, 200);
        assert_about(ok, N, "rpm burst");
        assert_eq!(
            count_status(&responses, 429),
            3 * N - ok,
            "every other answer is a 429"
        );
        assert_eq!(
            upstream
                .requests()
                .iter()
                .filter(|r| r.path == "/burst")
                .count(),
            ok
        );

        let interval = Duration::from_secs(60) / N as u32;
        for rejected in responses.iter().filter(|r| r.status == 429) {
            let retry_after = assert_rate_limited(rejected, "rate_limit_exceeded");
            assert!(
                retry_after <= interval.as_secs_f64().ceil() as u64,
                "Retry-After {retry_after} s is longer than one slot ({interval:?})"
            );
        }
        assert_burst_headers(&responses, N as u64, interval);
    }
}

on_default_driver! {
    fn key_rpm_headers_count_down_one_slot_per_request(driver) {
        const N: u64 = 5;
        let slot = Duration::from_secs(60 / N);
        let (_upstream, gw) = keyed_gateway(driver);
        let key = limited_key(&gw, "rpm-sequential", json!({ "rpm": N }));
        let mut client = Client::connect(gw.addr());

        for used in 1..=N {
            let response = get_keep_alive(&mut client, &gw, "/seq", &key.secret);
            assert_eq!(response.status, 200, "request {used}: {}", response.text());
            let headers = request_limit_headers(&response);
            assert_eq!(headers.limit, N);
            assert_eq!(
                headers.remaining,
                N - used,
                "remaining after {used} requests"
            );
            // Full capacity comes back one slot per request used.
            let full = slot * used as u32;
            assert!(
                headers.reset <= full && headers.reset > full - Duration::from_secs(2),
                "reset after {used} requests: {:?}, expected just under {full:?}",
                headers.reset
            );
        }

        let rejected = get_keep_alive(&mut client, &gw, "/seq", &key.secret);
        let retry_after = assert_rate_limited(&rejected, "rate_limit_exceeded");
        assert!(
            (slot.as_secs() - 1..=slot.as_secs()).contains(&retry_after),
            "Retry-After {retry_after} s; the next slot frees in about {slot:?}"
        );
        let headers = request_limit_headers(&rejected);
        assert_eq!((headers.limit, headers.remaining), (N, 0));
    }
}

on_default_driver! {
    fn key_rps_bursts_then_admits_again_after_retry_after(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        let key = limited_key(&gw, "rps", json!({ "rps": 2 }));

        // rps = 2 has a burst of max(1, ceil(2)) = 2: two at once, not three.
        let responses = concurrently(3, |_| get_keyed(&gw, "/rps", &key.secret));
        assert_eq!(
            count_status(&responses, 200),
            2,
            "statuses: {:?}",
            statuses(&responses)
        );
        let rejected = responses.iter().find(|r| r.status == 429).expect("one 429");
        let retry_after = assert_rate_limited(rejected, "rate_limit_exceeded");
        assert_eq!(
            retry_after, 1,
            "half a second to the next slot rounds up to 1 s"
        );
        assert_burst_headers(&responses, 2, Duration::from_millis(500));

        std::thread::sleep(Duration::from_secs(retry_after));
        let again = get_keyed(&gw, "/rps", &key.secret);
        assert_eq!(again.status, 200, "after Retry-After: {}", again.text());
    }
}

/// The statuses of `responses`, for failure messages.
fn statuses(responses: &[Response]) -> Vec<u16> {
    responses.iter().map(|r| r.status).collect()
}

/// Routes without auth: `limited` and `sibling` (same route-wide limit: 3 at
/// once, one more every 10 s), `tiny` (rps 0.5, burst 0) and `free` (no limit).
fn route_limited_config(target: &str) -> String {
    let mut cfg = upstream_toml("backend", target, "");
    let limit = "rate_limit = { rps = 0.1, burst = 3 }";
    cfg.push_str(&route_toml("limited", "/limited/", "backend", limit));
    cfg.push_str(&route_toml("sibling", "/sibling/", "backend", limit));
    cfg.push_str(&route_toml(
        "tiny",
        "/tiny/",
        "backend",
        "rate_limit = { rps = 0.5, burst = 0 }",
    ));
    cfg.push_str(&route_toml("free", "/free/", "backend", ""));
    config(&cfg)
}

on_default_driver! {
    fn route_rate_limit_admits_its_burst_then_429s_everyone_and_spares_other_routes(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&route_limited_config(&upstream.target()), driver);

        let burst = concurrently(8, |i| http_get(gw.addr(), &format!("/limited/{i}")));
        assert_eq!(
            count_status(&burst, 200),
            3,
            "statuses: {:?}",
            statuses(&burst)
        );
        for rejected in burst.iter().filter(|r| r.status != 200) {
            let retry_after = assert_rate_limited(rejected, "rate_limit_exceeded");
            assert!(
                retry_after <= 10,
                "Retry-After {retry_after} s; a slot frees every 10 s"
            );
        }
        assert_burst_headers(&burst, 3, Duration::from_secs(10));

        // Route-wide: whoever comes next, on whichever connection, is refused.
        let later = concurrently(4, |i| http_get(gw.addr(), &format!("/limited/later-{i}")));
        for rejected in &later {
            assert_rate_limited(rejected, "rate_limit_exceeded");
        }
        let forwarded = upstream
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/limited/"))
            .count();
        assert_eq!(forwarded, 3, "only admitted requests reach the upstream");

        // A route with the same limit has its own, untouched.
        let sibling: Vec<Response> = (0..4)
            .map(|i| http_get(gw.addr(), &format!("/sibling/{i}")))
            .collect();
        assert_eq!(statuses(&sibling), [200, 200, 200, 429]);
        let remaining: Vec<u64> = sibling[..3]
            .iter()
            .map(|r| request_limit_headers(r).remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);

        // A route without limits answers without x-ratelimit headers.
        for i in 0..5 {
            let free = http_get(gw.addr(), &format!("/free/{i}"));
            assert_eq!(free.status, 200, "{}", free.text());
            assert!(
                !has_rate_limit_headers(&free),
                "unlimited route: {:?}",
                free.headers
            );
        }
    }
}

on_default_driver! {
    fn route_rate_limit_with_burst_0_admits_one_seconds_worth_of_a_fractional_rps(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&route_limited_config(&upstream.target()), driver);
        // rps 0.5, burst 0: max(1, ceil(0.5)) = 1 at once, the next slot in 2 s.
        let first = http_get(gw.addr(), "/tiny/1");
        assert_eq!(first.status, 200, "{}", first.text());
        let headers = request_limit_headers(&first);
        assert_eq!((headers.limit, headers.remaining), (1, 0));
        let second = http_get(gw.addr(), "/tiny/2");
        let retry_after = assert_rate_limited(&second, "rate_limit_exceeded");
        assert_eq!(retry_after, 2, "the next slot of 0.5 rps is 2 s away");
    }
}

on_default_driver! {
    fn upstream_x_ratelimit_headers_are_replaced_by_the_gateways_own(driver) {
        let upstream = Upstream::replying(
            "backend",
            Reply::Fixed {
                status: 200,
                headers: vec![
                    ("x-ratelimit-limit-requests".into(), "999".into()),
                    ("x-ratelimit-remaining-requests".into(), "998".into()),
                    ("x-ratelimit-reset-requests".into(), "7h0m0s".into()),
                ],
                body: b"from upstream".to_vec(),
            },
        );
        let gw = Gateway::start(&route_limited_config(&upstream.target()), driver);
        let answer = http_get(gw.addr(), "/limited/own-headers");
        assert_eq!(answer.text(), "from upstream");
        // Exactly one of each (checked by `request_limit_headers`), the gateway's.
        let headers = request_limit_headers(&answer);
        assert_eq!(
            (headers.limit, headers.remaining),
            (3, 2),
            "{:?}",
            answer.headers
        );
        assert!(headers.reset <= Duration::from_secs(10), "{headers:?}");
    }
}

/// Routes with a per-client-IP limit of 2 at once (one more every 10 s):
/// `per_ip` without auth, `keyed_ip` behind api_key.
fn ip_limited_config(target: &str) -> String {
    let mut cfg = upstream_toml("backend", target, "");
    let limit = "ip_rate_limit = { rps = 0.1, burst = 2 }";
    cfg.push_str(&route_toml("per_ip", "/ip/", "backend", limit));
    cfg.push_str(&format!(
        "\n[[route]]\nname = \"keyed_ip\"\npath_prefix = \"/keyed/\"\nupstream = \"backend\"\n\
         auth = \"api_key\"\n{limit}\n"
    ));
    config(&cfg)
}

on_default_driver! {
    fn ip_rate_limit_limits_one_client_address_and_not_another(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&ip_limited_config(&upstream.target()), driver);

        let from_local: Vec<Response> = (0..4)
            .map(|i| http_get(gw.addr(), &format!("/ip/a{i}")))
            .collect();
        assert_eq!(statuses(&from_local), [200, 200, 429, 429]);
        for rejected in &from_local[2..] {
            assert_rate_limited(rejected, "rate_limit_exceeded");
        }

        // 127.0.0.1 is exhausted; 127.0.0.2 still has its own full burst.
        let from_other: Vec<Response> = (0..3)
            .map(|i| get_from(OTHER_CLIENT, gw.addr(), &format!("/ip/b{i}"), &[]))
            .collect();
        assert_eq!(statuses(&from_other), [200, 200, 429]);
        assert_rate_limited(&from_other[2], "rate_limit_exceeded");
        assert_eq!(http_get(gw.addr(), "/ip/a-again").status, 429);
        assert_eq!(upstream.request_count(), 4, "two admitted per address");
    }
}

on_default_driver! {
    fn ip_rate_limit_is_checked_before_auth_so_bad_credentials_are_limited_too(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&ip_limited_config(&upstream.target()), driver);
        let bad = format!("cf_{}", "B".repeat(43));
        let bearer = format!("Bearer {bad}");

        let flood: Vec<Response> = (0..4).map(|_| get_keyed(&gw, "/keyed/x", &bad)).collect();
        assert_unauthenticated(&flood[0]);
        assert_unauthenticated(&flood[1]);
        for rejected in &flood[2..] {
            assert_rate_limited(rejected, "rate_limit_exceeded");
        }
        // Another address is still only refused for its bad credential.
        let other = get_from(
            OTHER_CLIENT,
            gw.addr(),
            "/keyed/x",
            &[("Authorization", bearer.as_str())],
        );
        assert_unauthenticated(&other);
        assert_eq!(upstream.request_count(), 0);
    }
}

on_default_driver! {
    fn rejected_requests_do_not_consume_the_key_quota(driver) {
        // rpm 30: 30 at once, then one slot every 2 s.
        const N: u64 = 30;
        let slot = Duration::from_secs(2);
        let (_upstream, gw) = keyed_gateway(driver);
        let key = limited_key(&gw, "no-charge-for-429", json!({ "rpm": N }));
        let mut client = Client::connect(gw.addr());

        let first_sent = Instant::now();
        for i in 0..N {
            let response = get_keep_alive(&mut client, &gw, "/q", &key.secret);
            assert_eq!(
                response.status,
                200,
                "request {i} of the quota: {}",
                response.text()
            );
        }
        for i in 0..10 {
            let response = get_keep_alive(&mut client, &gw, "/q", &key.secret);
            assert_rate_limited(&response, "rate_limit_exceeded");
            assert!(
                first_sent.elapsed() < slot,
                "machine too slow: rejection {i} came after a refill"
            );
        }

        // One slot after the first admission exactly one more is admissible:
        // had the 10 rejections counted, the next slot would be 20 s away.
        sleep_until(first_sent, slot + Duration::from_millis(300));
        let refilled = get_keep_alive(&mut client, &gw, "/q", &key.secret);
        assert_eq!(refilled.status, 200, "one slot after: {}", refilled.text());
        assert_eq!(request_limit_headers(&refilled).remaining, 0);
        let next = get_keep_alive(&mut client, &gw, "/q", &key.secret);
        assert_rate_limited(&next, "rate_limit_exceeded");
        assert!(
            first_sent.elapsed() < slot * 2,
            "machine too slow: the second probe came after another refill"
        );
    }
}

/// `guarded` (`/guarded/`, api_key, 2 at once route-wide, one more every 10 s)
/// and `open` (`/open/`, api_key, no limit).
fn guarded_config(target: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "backend"
targets = ["{target}"]

[[route]]
name = "guarded"
path_prefix = "/guarded/"
upstream = "backend"
auth = "api_key"
rate_limit = {{ rps = 0.1, burst = 2 }}

[[route]]
name = "open"
path_prefix = "/open/"
upstream = "backend"
auth = "api_key"
"#
    )
}

on_default_driver! {
    fn requests_refused_by_auth_do_not_consume_the_route_rate_limit(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&guarded_config(&upstream.target())), driver);
        let good = create_key(&gw, &json!({ "name": "good" }));
        let elsewhere = create_key(&gw, &json!({ "name": "elsewhere", "routes": ["open"] }));
        wait_until_key_known(&gw, &good.secret, "/open/ready", 200);
        wait_until_key_known(&gw, &elsewhere.secret, "/open/ready", 200);

        let unknown = format!("cf_{}", "C".repeat(43));
        for _ in 0..10 {
            assert_unauthenticated(&get_keyed(&gw, "/guarded/x", &unknown));
        }
        for _ in 0..5 {
            assert_forbidden(&get_keyed(&gw, "/guarded/x", &elsewhere.secret));
        }

        let answers: Vec<Response> = (0..3)
            .map(|_| get_keyed(&gw, "/guarded/x", &good.secret))
            .collect();
        assert_eq!(
            statuses(&answers),
            [200, 200, 429],
            "the 401s and 403s spent the route's burst"
        );
        assert_rate_limited(&answers[2], "rate_limit_exceeded");
    }
}

on_default_driver! {
    fn a_request_refused_by_the_key_limit_does_not_consume_the_route_limit(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&guarded_config(&upstream.target())), driver);
        let tight = create_key(&gw, &json!({ "name": "tight", "rpm": 1 }));
        let other = create_key(&gw, &json!({ "name": "other" }));
        wait_until_key_known(&gw, &other.secret, "/open/ready", 200);
        // `tight` may spend its one request on `open`; that also proves it is known.
        wait_until_key_known(&gw, &tight.secret, "/open/ready", 200);

        for _ in 0..5 {
            let refused = get_keyed(&gw, "/guarded/x", &tight.secret);
            assert_rate_limited(&refused, "rate_limit_exceeded");
        }
        let answers: Vec<Response> = (0..3)
            .map(|_| get_keyed(&gw, "/guarded/y", &other.secret))
            .collect();
        assert_eq!(
            statuses(&answers),
            [200, 200, 429],
            "the key's 429s spent the route's burst"
        );
    }
}

on_default_driver! {
    fn the_limiter_with_the_lowest_remaining_is_reported(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&guarded_config(&upstream.target())), driver);
        // Route: 2 at once. Key: rpm 5, 5 at once.
        let key = create_key(
            &gw,
            &json!({ "name": "roomy", "rpm": 5, "routes": ["guarded"] }),
        );
        wait_until_key_known(&gw, &key.secret, "/open/ready", 403);

        let first = get_keyed(&gw, "/guarded/1", &key.secret);
        assert_eq!(first.status, 200, "{}", first.text());
        let headers = request_limit_headers(&first);
        assert_eq!(
            (headers.limit, headers.remaining),
            (2, 1),
            "route (1 of 2 left) is tighter than the key (4 of 5 left)"
        );
    }
}

on_both_drivers! {
    fn max_concurrency_refuses_the_third_request_in_flight_at_once_and_frees_on_completion(driver) {
        let rounds = [Gate::new(), Gate::new()];
        let gates = rounds.clone();
        let upstream = Upstream::start("backend", move |request| {
            match request.path.strip_prefix("/held-") {
                Some(rest) if rest.starts_with('0') => {
                    Reply::Held(gates[0].clone(), Box::new(Reply::Echo))
                }
                Some(_) => Reply::Held(gates[1].clone(), Box::new(Reply::Echo)),
                None => Reply::Echo,
            }
        });
        let gw = Gateway::start(&config(&keyed_routes(&upstream.target())), driver);
        let key = limited_key(&gw, "two-at-a-time", json!({ "max_concurrency": 2 }));

        for (round, gate) in rounds.iter().enumerate() {
            let before = upstream.request_count();
            std::thread::scope(|scope| {
                let held: Vec<_> = (0..2)
                    .map(|i| {
                        let (gw, secret) = (&gw, &key.secret);
                        scope.spawn(move || get_keyed(gw, &format!("/held-{round}/{i}"), secret))
                    })
                    .collect();
                assert!(
                    upstream.wait_for_requests(before + 2, WAIT),
                    "round {round}: two requests never reached the upstream"
                );

                let sent = Instant::now();
                let third = get_keyed(&gw, &format!("/held-{round}/third"), &key.secret);
                let waited = sent.elapsed();
                assert_rate_limited(&third, "concurrency_limit_exceeded");
                // Waiting for a slot would mean waiting for the gate, which opens
                // only after this check: any bound short of the client's read
                // timeout tells the two apart, so a loaded machine cannot flake it.
                assert!(
                    waited < WAIT / 2,
                    "round {round}: the 429 took {waited:?}; it must not wait for a slot"
                );
                assert_eq!(
                    upstream.request_count(),
                    before + 2,
                    "the third was forwarded"
                );

                gate.open();
                for handle in held {
                    let response = handle.join().expect("held request thread");
                    assert_eq!(response.status, 200, "round {round}: {}", response.text());
                }
            });
            // Both finished: their permits are back. The release may trail the
            // last byte by a moment, so the first new request may retry briefly.
            let mut last = 0;
            let freed = wait_until(PROPAGATION, || {
                last = get_keyed(&gw, "/after", &key.secret).status;
                last == 200
            });
            assert!(freed, "round {round}: after both finished, still {last}");
        }
    }
}

on_default_driver! {
    fn key_rpm_is_shared_by_connections_on_every_worker(driver) {
        const N: usize = 16;
        const CONNECTIONS: usize = 16;
        let (upstream, gw) = keyed_gateway(driver);
        assert_eq!(gw.ready().workers, 2);
        let key = limited_key(&gw, "shared", json!({ "rpm": N }));

        // Open keep-alive connections until both workers hold some: the
        // kernel spreads them over the SO_REUSEPORT listeners.
        let mut clients: Vec<Client> = Vec::new();
        let mut spread = Vec::new();
        while clients.len() < 4 * CONNECTIONS {
            clients.extend((0..CONNECTIONS).map(|_| Client::connect(gw.addr())));
            let open = clients.len() as u64;
            wait_until(WAIT, || {
                open_connections_by_worker(&gw).iter().sum::<u64>() >= open
            });
            spread = open_connections_by_worker(&gw);
            if spread.len() == 2 && spread.iter().all(|&n| n > 0) {
                break;
            }
        }
        assert!(
            spread.len() == 2 && spread.iter().all(|&n| n > 0),
            "connections never landed on both workers: {spread:?}"
        );

        // Every connection sends 3 requests, all connections at once: 3N in all.
        let per_connection = 3 * N / clients.len().max(1);
        let per_connection = per_connection.max(1);
        let total = per_connection * clients.len();
        let slots: Vec<std::sync::Mutex<Client>> =
            clients.into_iter().map(std::sync::Mutex::new).collect();
        let responses: Vec<Response> = concurrently(slots.len(), |i| {
            let mut client = slots[i].lock().unwrap();
            (0..per_connection)
                .map(|j| get_keep_alive(&mut client, &gw, &format!("/w/{i}/{j}"), &key.secret))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();

        assert_eq!(responses.len(), total);
        let ok = count_status(&responses, 200);
        assert_about(ok, N, "one rpm over both workers");
        assert_eq!(count_status(&responses, 429), total - ok);
        assert_eq!(
            upstream
                .requests()
                .iter()
                .filter(|r| r.path.starts_with("/w/"))
                .count(),
            ok
        );
    }
}

on_default_driver! {
    fn key_limit_changed_through_the_admin_api_applies_within_1s_without_restart(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        let key = limited_key(&gw, "raised", json!({ "rpm": 1 }));
        assert_eq!(get_keyed(&gw, "/before", &key.secret).status, 200);
        let refused = get_keyed(&gw, "/before", &key.secret);
        assert_rate_limited(&refused, "rate_limit_exceeded");
        assert_eq!(request_limit_headers(&refused).limit, 1);

        let patched = admin(
            &gw,
            "PATCH",
            &format!("/admin/keys/{}", key.id),
            Some(&json!({ "rpm": 600 })),
        );
        assert_eq!(patched.status, 200, "PATCH: {}", patched.text());
        let since = Instant::now();

        // Every worker must report the new limit, and requests must be admitted
        // again: under 1 rpm the next slot is a minute away. Whether the slot the
        // old rate spent carries over (GCRA's TAT does) is left open, so only one
        // admission is required, not a burst.
        let (streak_started, first_admitted) = time_until_new_limit(&gw, &key.secret, 600, since);
        assert!(
            streak_started < PROPAGATION,
            "the new rpm took {streak_started:?} to reach every worker"
        );
        assert!(
            first_admitted < PROPAGATION,
            "first admission under the new rpm came {first_admitted:?} after the PATCH"
        );
    }
}

/// Sends requests with `secret` on fresh connections until 12 answers in a row
/// (admitted or not) report `x-ratelimit-limit-requests: limit` and at least
/// one was admitted. Returns when that streak began and when the first
/// admission came, both measured from `since`. With 2 workers, 12 in a row on
/// one worker has odds 1 in 2048.
fn time_until_new_limit(
    gw: &Gateway,
    secret: &str,
    limit: u64,
    since: Instant,
) -> (Duration, Duration) {
    const STREAK: usize = 12;
    let mut run = 0;
    let mut run_started = Duration::ZERO;
    let mut first_admitted = None;
    let mut last = String::new();
    while since.elapsed() < WAIT {
        let sent_at = since.elapsed();
        let response = get_keyed(gw, "/after", secret);
        let reported = request_limit_headers(&response).limit;
        if response.status == 200 && first_admitted.is_none() {
            first_admitted = Some(sent_at);
        }
        if reported == limit {
            if run == 0 {
                run_started = sent_at;
            }
            run += 1;
        } else {
            run = 0;
            last = format!("{} {:?}", response.status, response.headers);
        }
        if let (true, Some(first)) = (run >= STREAK, first_admitted) {
            return (run_started, first);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "the new limit {limit} never applied within {WAIT:?} (first admission: \
         {first_admitted:?}); last answer with another limit: {last}"
    );
}

//! A reload carries every piece of runtime state over by name and applies every section:
//! target health and circuit breakers survive a reload that does not change them (and start
//! fresh when their identity changes), `[lua]` limits and the pools' `keepalive` settings
//! take effect on reload.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Reloads through the admin API and insists it was accepted.
fn reload(gw: &Gateway, config_toml: &str) {
    gw.write_config(config_toml);
    let answer = gw.reload_admin();
    assert_eq!(answer.status, 200, "reload refused: {}", answer.text());
}

/// A target that refuses connections (a bound socket that does not listen) until
/// [`Dormant::wake`], then answers every request with 200 `dormant` and counts connections.
struct Dormant {
    socket: Option<socket2::Socket>,
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dormant {
    fn bind() -> Dormant {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).expect("bind");
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        Dormant {
            socket: Some(socket),
            addr,
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Starts listening on the same address: from now on connections succeed.
    fn wake(&mut self) {
        let socket = self.socket.take().expect("already awake");
        socket.listen(16).expect("listen");
        socket.set_nonblocking(true).unwrap();
        let listener: TcpListener = socket.into();
        let (accepted, stop) = (self.accepted.clone(), self.stop.clone());
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(WAIT)).unwrap();
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1
                        {
                            head.push(byte[0]);
                        }
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\ndormant",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Dormant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An upstream `name` over the dormant target then `alive`, a route `/` to it and an
/// optional second route (a change elsewhere in the config).
fn health_config(name: &str, dormant: SocketAddr, alive: &Upstream, extra_route: bool) -> String {
    let mut rest = format!(
        "\n[[upstream]]\nname = \"{name}\"\ntargets = [\"{dormant}\", \"{}\"]\n{}",
        alive.target(),
        route_toml("api", "/", name, "")
    );
    if extra_route {
        rest.push_str(&route_toml("other", "/other/", name, ""));
    }
    config_with(1, "", &rest)
}

#[test]
fn an_unhealthy_target_stays_unhealthy_across_a_reload_that_keeps_it() {
    let mut dormant = Dormant::bind();
    let alive = Upstream::echo("alive");
    let gw = Gateway::start(
        &health_config("backend", dormant.addr, &alive, false),
        Driver::Uring,
    );
    // Round-robin starts at the dormant target: refused, so it cools down and the request
    // goes to the other one.
    assert_eq!(Echo::of(&http_get(gw.addr(), "/first")).upstream, "alive");
    dormant.wake();

    reload(&gw, &health_config("backend", dormant.addr, &alive, true));
    for i in 0..4 {
        let response = http_get(gw.addr(), &format!("/after-reload/{i}"));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        dormant.accepted(),
        0,
        "the reload reset the cooling target's health"
    );

    // Its identity changed (another upstream name): fresh health, so it gets traffic again.
    reload(&gw, &health_config("renamed", dormant.addr, &alive, true));
    for i in 0..4 {
        assert_eq!(http_get(gw.addr(), &format!("/renamed/{i}")).status, 200);
    }
    assert!(
        dormant.accepted() > 0,
        "a renamed upstream's targets start healthy"
    );
}

/// A provider `primary` at `base_url` (no retries, no fallbacks), its model `m`, and AI
/// front doors without authentication.
fn breaker_config(base_url: &str, extra: &str) -> String {
    config_with(
        1,
        "",
        &format!(
            "\n[[provider]]\nname = \"primary\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\n\
             [[model]]\nname = \"m\"\nprovider = \"primary\"\n\n\
             [ai]\nauth = \"none\"\nmax_retries = 0\n{extra}\n"
        ),
    )
}

fn chat(gw: &Gateway) -> Response {
    let body = json!({
        "model": "m",
        "messages": [{ "role": "user", "content": "Say hello." }],
        "max_tokens": 16,
    })
    .to_string();
    roundtrip(
        gw.addr(),
        &request(
            "POST",
            "/v1/chat/completions",
            &[
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ],
            body.as_bytes(),
        ),
    )
}

#[test]
fn an_open_circuit_breaker_stays_open_across_a_reload() {
    let fake = FakeOpenAi::start();
    fake.fail_next(500, "server_error", 100);
    let gw = Gateway::start(&breaker_config(&fake.base_url(), ""), Driver::Uring);
    for i in 0..5 {
        let response = chat(&gw);
        assert!(response.status >= 500, "request {i}: {}", response.text());
    }
    assert_eq!(fake.request_count(), 5);
    assert!(chat(&gw).status >= 500);
    assert_eq!(fake.request_count(), 5, "five failures open the breaker");

    reload(
        &gw,
        &breaker_config(&fake.base_url(), "default_max_tokens = 512"),
    );
    assert!(chat(&gw).status >= 500);
    assert_eq!(
        fake.request_count(),
        5,
        "the reload closed the open breaker"
    );

    // The same provider name pointed elsewhere (here: another base path on the same server)
    // is a new identity: its breaker starts closed.
    let elsewhere = format!("{}/elsewhere", fake.base_url());
    reload(&gw, &breaker_config(&elsewhere, "default_max_tokens = 512"));
    chat(&gw);
    assert_eq!(fake.request_count(), 6);
}

/// A route `/` to `backend` with hooks: `on_access` busy-waits 1 s of wall time. The budget
/// counts CPU time, so on a loaded machine the wait may use far less of it; 1 s is past the
/// 50 ms budget's wall-clock cap (10 budgets) however little CPU it got, and within 2 s of
/// CPU however much.
fn slow_hook_config(dir: &TempDir, target: &str, hook_timeout_ms: u64) -> String {
    let hooks = dir.join("slow.lua");
    write_atomically(
        &hooks,
        b"function on_access(ctx)\n\
          local start = cf.now_ms()\n\
          while cf.now_ms() - start < 1000 do end\n\
          end\n",
    );
    config_with(
        1,
        "",
        &format!(
            "[lua]\nhook_timeout_ms = {hook_timeout_ms}\n{}{}",
            upstream_toml("backend", target, ""),
            route_toml(
                "api",
                "/",
                "backend",
                &format!("hooks = \"{}\"", hooks.display())
            ),
        ),
    )
}

#[test]
fn a_reload_applies_new_lua_hook_timeouts() {
    let dir = TempDir::new("reload-lua");
    let upstream = Upstream::echo("backend");
    let gw = Gateway::start(
        &slow_hook_config(&dir, &upstream.target(), 2_000),
        Driver::Uring,
    );
    let first = http_get(gw.addr(), "/generous");
    assert_eq!(first.status, 200, "{}", first.text());

    reload(&gw, &slow_hook_config(&dir, &upstream.target(), 50));
    http_get(gw.addr(), "/tight").assert_error(500, "hook_error");

    reload(&gw, &slow_hook_config(&dir, &upstream.target(), 2_000));
    let again = http_get(gw.addr(), "/generous-again");
    assert_eq!(again.status, 200, "{}", again.text());
}

/// The standard proxy pair with `extra` lines in the upstream table, one worker.
fn pool_config(target: &str, extra: &str) -> String {
    config_with(
        1,
        "",
        &format!(
            "{}{}",
            upstream_toml("backend", target, extra),
            route_toml("api", "/", "backend", "")
        ),
    )
}

/// Sends `n` requests, each on its own client connection, and checks they succeed.
fn send(gw: &Gateway, n: usize, label: &str) {
    for i in 0..n {
        let response = http_get(gw.addr(), &format!("/{label}/{i}"));
        assert_eq!(response.status, 200, "{label} {i}: {}", response.text());
    }
}

on_both_drivers! {
    fn keepalive_zero_opens_a_connection_per_request_and_a_reload_changes_it(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&pool_config(&upstream.target(), "keepalive = 0"), driver);
        send(&gw, 4, "no-reuse");
        assert_eq!(upstream.connection_count(), 4, "keepalive = 0 reused a connection");

        reload(&gw, &pool_config(&upstream.target(), "keepalive = 4"));
        send(&gw, 4, "reuse");
        assert_eq!(upstream.connection_count(), 5, "one new connection, then reuse");

        reload(&gw, &pool_config(&upstream.target(), "keepalive = 0"));
        send(&gw, 3, "no-reuse-again");
        assert_eq!(upstream.connection_count(), 8);
    }
}

on_both_drivers! {
    fn keepalive_timeout_from_a_reload_expires_idle_connections(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&pool_config(&upstream.target(), ""), driver);
        send(&gw, 1, "before");
        std::thread::sleep(Duration::from_millis(400));
        send(&gw, 1, "kept");
        assert_eq!(upstream.connection_count(), 1, "the default keeps it 30 s");

        reload(&gw, &pool_config(&upstream.target(), "keepalive_timeout_ms = 100"));
        send(&gw, 1, "after-reload");
        std::thread::sleep(Duration::from_millis(400));
        send(&gw, 1, "expired");
        assert_eq!(upstream.connection_count(), 2, "the idle connection outlived 100 ms");
    }
}

#[test]
fn check_accepts_keepalive_settings_and_refuses_bad_ones() {
    let ok = check_config(&config(&format!(
        "{}{}",
        upstream_toml(
            "backend",
            "127.0.0.1:9",
            "keepalive = 0\nkeepalive_timeout_ms = 5000"
        ),
        route_toml("api", "/", "backend", ""),
    )));
    assert_eq!(ok.code, Some(0), "{}", ok.output());

    let misspelt = check_config(&config(&format!(
        "{}{}",
        upstream_toml("backend", "127.0.0.1:9", "keepalive_timeout = 5000"),
        route_toml("api", "/", "backend", ""),
    )));
    assert_eq!(misspelt.code, Some(1), "{}", misspelt.output());
    assert!(misspelt.output().contains("keepalive_timeout"));

    let unbounded = check_config(&config(&format!(
        "{}{}",
        upstream_toml("backend", "127.0.0.1:9", "keepalive = 1000000"),
        route_toml("api", "/", "backend", ""),
    )));
    assert_eq!(unbounded.code, Some(1), "{}", unbounded.output());
    assert!(unbounded.output().contains("upstream[0].keepalive"));
}

//! The admin listener cannot be locked out from the network: idle and slow
//! connections are cut by short deadlines and make room for new ones, one
//! client address holds at most its share of the connections, and `/healthz`
//! and key revocation are served while a flood holds the listener.
//!
//! Every loopback address 127.0.0.0/8 reaches the admin listener on Linux, so a
//! test can act as several clients by binding distinct source addresses.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::keys::*;
use common::*;
use serde_json::json;
use socket2::{Domain, Socket, Type};

/// The admin listener's deadline for a new connection's first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);

/// The admin listener's deadline for a connection's first request head, from the accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Allowance on top of a deadline for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

/// The admin listener's cap on connections per client address.
const PER_CLIENT: usize = 8;

/// A gateway whose only route needs a virtual key.
fn keyed_gateway(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\nauth = \"api_key\"\n",
        upstream_toml("backend", &upstream.target(), "")
    );
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

/// A gateway for tests of the admin listener alone. The admin listener runs on
/// its own threads whatever the data plane's driver, so one driver is enough.
fn admin_gateway() -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let gw = Gateway::start(&config(&proxy_config(&upstream.target())), Driver::Epoll);
    (upstream, gw)
}

/// A TCP connection to `to` from source address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect(&to.into())
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// `GET /healthz` on `stream` (kept alive); returns the status of the answer.
fn healthz_on(stream: &mut TcpStream) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .expect("send /healthz");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 1024];
    // The answer is small and framed by content-length; its head and body
    // arrive in one write.
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).expect("read /healthz answer");
        assert!(n > 0, "connection closed before the /healthz answer");
        raw.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&raw);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

/// What a connection shows right now, without waiting.
#[derive(Debug, PartialEq)]
enum Seen {
    /// Nothing to read: the server holds it open.
    Open,
    /// The server closed it without a word.
    Closed,
    /// The server sent bytes (an answer such as a 503).
    Data,
}

fn peek(stream: &TcpStream) -> Seen {
    stream.set_nonblocking(true).unwrap();
    let seen = match (&*stream).read(&mut [0u8; 512]) {
        Ok(0) => Seen::Closed,
        Ok(_) => Seen::Data,
        Err(e) if e.kind() == ErrorKind::WouldBlock => Seen::Open,
        Err(_) => Seen::Closed,
    };
    stream.set_nonblocking(false).unwrap();
    seen
}

on_both_drivers! {
    fn healthz_and_revocation_are_served_while_64_idle_connections_are_held(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        let key = create_key(&gw, &json!({ "name": "flood-victim" }));
        // Workers see a new key within a store poll or so.
        let accepted = time_until_status(
            gw.addr(), "/", Some(&key.secret), 200, 12, Instant::now(), WAIT,
        );
        assert!(accepted.is_some(), "the new key never worked on the data plane");

        let localhost = Ipv4Addr::LOCALHOST;
        let idle: Vec<TcpStream> = (0..64).map(|_| connect_from(localhost, gw.admin_addr())).collect();
        // The listener accepts in arrival order, so these requests come after
        // the whole flood and well inside its first-byte deadline.
        let started = Instant::now();
        let health = gw.admin_get("/healthz");
        assert_eq!(health.status, 200, "/healthz under the flood: {}", health.text());
        revoke_key(&gw, &key.id);
        assert!(
            started.elapsed() < FIRST_BYTE_TIMEOUT,
            "the requests must prove eviction, not the idle deadline"
        );
        let rejected = time_until_status(
            gw.addr(), "/", Some(&key.secret), 401, 12, Instant::now(), WAIT,
        );
        assert!(rejected.is_some(), "the revoked key still works on the data plane");
        drop(idle);
    }
}

#[test]
fn slow_loris_head_is_cut_at_the_header_timeout() {
    let (_upstream, gw) = admin_gateway();
    let mut loris = connect_from(Ipv4Addr::LOCALHOST, gw.admin_addr());
    // A valid head long enough that trickling it takes far longer than any deadline.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(200)
    );
    let started = Instant::now();
    let mut sent = 0;
    let mut answer = Vec::new();
    loris
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cut_after = loop {
        assert!(
            started.elapsed() < HEAD_TIMEOUT + SLACK,
            "still open after {:?} with {sent} head bytes trickled",
            started.elapsed()
        );
        if sent < head.len() && loris.write_all(&head.as_bytes()[sent..=sent]).is_ok() {
            sent += 1;
        }
        // The pause between bytes is this read's timeout.
        let mut chunk = [0u8; 512];
        match loris.read(&mut chunk) {
            Ok(0) => break started.elapsed(),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(
        sent < head.len(),
        "the whole head got through ({sent} bytes)"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "unexpected answer to a slow loris: {answer:?}"
    );
    assert!(
        cut_after >= HEAD_TIMEOUT - Duration::from_millis(500),
        "cut too early: {cut_after:?}"
    );
}

#[test]
fn idle_unauthenticated_connection_is_closed_after_the_first_byte_timeout() {
    let (_upstream, gw) = admin_gateway();
    let mut idle = connect_from(Ipv4Addr::LOCALHOST, gw.admin_addr());
    idle.set_read_timeout(Some(FIRST_BYTE_TIMEOUT + SLACK))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    match idle.read_to_end(&mut rest) {
        Ok(0) => {}
        Ok(_) => panic!(
            "an idle connection got bytes: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => panic!(
            "idle connection still open after {:?} ({e})",
            started.elapsed()
        ),
    }
    // Served afterwards: the listener is not wedged.
    assert_eq!(gw.admin_get("/healthz").status, 200);
}

#[test]
fn a_flooding_address_does_not_starve_other_clients() {
    let (_upstream, gw) = admin_gateway();
    let admin = gw.admin_addr();
    // A client with a keep-alive connection, older than the whole flood.
    let mut patient = connect_from(Ipv4Addr::new(127, 0, 0, 3), admin);
    assert_eq!(healthz_on(&mut patient), 200);

    // Five flooding addresses with ten idle connections each: more than the
    // per-address cap each, more than the listener's total together.
    let flooders: Vec<Ipv4Addr> = (10..15)
        .map(|last| Ipv4Addr::new(127, 0, 0, last))
        .collect();
    let flood: Vec<(Ipv4Addr, TcpStream)> = flooders
        .iter()
        .flat_map(|&from| (0..10).map(move |_| (from, connect_from(from, admin))))
        .collect();

    // A newcomer arrives after the flood (accepts are in arrival order) and is served.
    let mut newcomer = connect_from(Ipv4Addr::new(127, 0, 0, 4), admin);
    assert_eq!(
        healthz_on(&mut newcomer),
        200,
        "a newcomer was refused under the flood"
    );
    // The patient client's connection, the oldest of all, was left alone.
    assert_eq!(
        healthz_on(&mut patient),
        200,
        "the patient client was evicted"
    );

    // The flood holds at most its share: each address at most the cap. The
    // rest were closed to make room, not answered with a refusal.
    let seen: Vec<(Ipv4Addr, Seen)> = flood.iter().map(|(from, s)| (*from, peek(s))).collect();
    for from in &flooders {
        let open = seen
            .iter()
            .filter(|(f, state)| f == from && *state == Seen::Open)
            .count();
        assert!(
            open <= PER_CLIENT,
            "{from} holds {open} admin connections (cap {PER_CLIENT})"
        );
    }
    let refused = seen
        .iter()
        .filter(|(_, state)| *state == Seen::Data)
        .count();
    assert_eq!(
        refused, 0,
        "flood connections were answered instead of evicted"
    );
}

/// The harness's secret sweep (run when a `Gateway` is dropped) is what keeps
/// every test file honest about leaks, so it is proven here: a full key that
/// reaches the access log (a client put it in the path) fails the test, and
/// the failure names the key by its display prefix only.
#[test]
fn the_secret_sweep_fails_a_test_whose_access_log_holds_a_full_key() {
    let upstream = Upstream::echo("backend");
    let gw = Gateway::start(
        &config_with(
            2,
            "access_log = \"@DIR@/data/access.log\"",
            &proxy_config(&upstream.target()),
        )
        .replace("access_log = \"\"\n", ""),
        Driver::Epoll,
    );
    let key = create_key(&gw, &json!({ "name": "sweep-probe" }));
    let logged = get_with_key(gw.addr(), &format!("/leak/{}", key.secret), None);
    assert_eq!(logged.status, 200);
    let mut gw = gw;
    // A clean stop flushes the access log.
    assert!(gw.stop().success());
    let swept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(gw)));
    let message = match swept {
        Ok(()) => panic!("the sweep missed a full key in the access log"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .expect("a formatted failure"),
    };
    let prefix: String = key.secret.chars().take(12).collect();
    assert!(
        message.contains(&format!("full virtual key {prefix}... in access log")),
        "{message}"
    );
    assert!(
        !message.contains(&key.secret),
        "the failure printed the secret"
    );
}

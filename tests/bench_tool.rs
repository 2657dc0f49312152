//! `credentialflow bench`, the bundled load generator, against the real binary: the fixed
//! `bench-upstream` (plain, chunked, delayed, SSE) and the recording test upstream (keys,
//! bodies, warm-up, TLS). Every run uses `--json` and checks the documented fields.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// A running `credentialflow bench-upstream` on the port it chose; killed on drop.
struct BenchUpstream {
    child: Child,
    addr: SocketAddr,
}

impl BenchUpstream {
    /// Starts one worker with `args` on `127.0.0.1:0` and reads the address it
    /// bound from its `listening on ADDR` line (no port picked here and freed
    /// for it: another process could take that port in between).
    fn start(args: &[&str]) -> BenchUpstream {
        let mut child = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
            .args([
                "bench-upstream",
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "1",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bench-upstream");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .expect("read bench-upstream stderr");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("bench-upstream listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("bench-upstream said {line:?}"));
        assert_ne!(addr.port(), 0, "bench-upstream reported port 0: {line:?}");
        // The workers bind right after the line; give them a moment.
        assert!(wait_until(WAIT, || std::net::TcpStream::connect(addr).is_ok()));
        BenchUpstream { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for BenchUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of one `credentialflow bench` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The `--json` summary.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

fn bench(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run bench");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs bench with `--json`, expects exit 0 and returns the summary.
fn bench_ok(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let run = bench(&all);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    run.json()
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Fails unless `latency` has every percentile the summary documents, each a
/// number, in order: min <= p50 <= p90 <= p99 <= p99.9 <= max. Orders, not
/// speeds: how fast a shared test machine answers is no part of the contract
/// (speed targets live in `scripts/bench-matrix.sh`).
fn assert_ordered_latency(latency: &Value, summary: &Value) {
    let fields = ["min", "p50", "p90", "p99", "p99_9", "max"];
    let values: Vec<f64> = fields.iter().map(|f| ms(&latency[*f])).collect();
    for (pair, names) in values.windows(2).zip(fields.windows(2)) {
        assert!(
            pair[0] <= pair[1],
            "{} > {} in {summary}",
            names[0],
            names[1]
        );
    }
}

#[test]
fn closed_loop_sends_exactly_n_requests_and_counts_every_byte() {
    let upstream = BenchUpstream::start(&["--size", "128"]);
    let s = bench_ok(&[&upstream.url(), "-n", "2000", "-c", "8"]);
    assert_eq!(s["mode"], "closed");
    assert_eq!(s["requests"], 2000, "{s}");
    assert_eq!(s["responses"], 2000, "{s}");
    assert_eq!(s["status"]["200"], 2000, "{s}");
    assert_eq!(s["errors_total"], 0, "{s}");
    assert_eq!(s["body_bytes"], 2000 * 128, "{s}");
    let response_len = credentialflow::bench::upstream::encode_response(128).len() as u64;
    assert_eq!(s["bytes_read"], 2000 * response_len, "{s}");
    assert!(ms(&s["rps"]) > 0.0, "{s}");
}

#[test]
fn chunked_responses_are_decoded_and_connections_reused() {
    let upstream = BenchUpstream::start(&["--size", "40000", "--chunked"]);
    let s = bench_ok(&[&upstream.url(), "-n", "200", "-c", "2"]);
    assert_eq!(s["status"]["200"], 200, "{s}");
    assert_eq!(s["body_bytes"], 200 * 40000, "{s}");
}

#[test]
fn open_loop_sends_the_offered_rate() {
    let upstream = BenchUpstream::start(&[]);
    let s = bench_ok(&[&upstream.url(), "--rate", "500", "-d", "3s", "-c", "4"]);
    assert_eq!(s["mode"], "open");
    // 500/s for 3 s schedules 1500 sends. An open loop never sends ahead of its
    // schedule, so the count is at most that (a slot per connection of rounding
    // at the window's edges allowed); a loaded machine may send fewer, but not
    // fewer than a tenth of it.
    let scheduled = 500 * 3;
    let requests = s["requests"].as_u64().unwrap();
    assert!((scheduled / 10..=scheduled + 4).contains(&requests), "{s}");
    // The achieved rate is the count over the run's duration, never above the
    // offered rate (give or take the edges of the measured window).
    let rps = ms(&s["rps"]);
    assert!(rps > 0.0 && rps <= 500.0 * 1.05, "{s}");
    assert_eq!(s["errors_total"], 0, "{s}");
}

#[test]
fn latency_percentiles_reflect_a_known_server_delay() {
    let upstream = BenchUpstream::start(&["--delay-ms", "50"]);
    let s = bench_ok(&[&upstream.url(), "-d", "2s", "-c", "4"]);
    let latency = &s["latency_ms"];
    // The server waits 50 ms before every answer: no request can be faster.
    assert!(ms(&latency["p50"]) >= 50.0, "{s}");
    assert!(ms(&latency["p99"]) >= 50.0, "{s}");
    assert!(ms(&latency["min"]) >= 50.0, "{s}");
    assert_ordered_latency(latency, &s);
}

#[test]
fn open_loop_counts_queueing_behind_a_slow_server() {
    // One connection, 50 ms per response: at most 20 req/s against 100 offered. Each
    // request's latency counts from its intended send time, so the queue shows.
    let upstream = BenchUpstream::start(&["--delay-ms", "50"]);
    let open = bench_ok(&[&upstream.url(), "--rate", "100", "-d", "2s", "-c", "1"]);
    assert!(ms(&open["latency_ms"]["p99"]) > 500.0, "{open}");
    assert!(open["unsent"].as_u64().unwrap() > 100, "{open}");
    let closed = bench_ok(&[&upstream.url(), "-d", "1s", "-c", "1"]);
    // A closed loop never queues: its latency is the server's own, far below the
    // open loop's queue of a second or more.
    assert!(ms(&closed["latency_ms"]["p99"]) >= 50.0, "{closed}");
    assert!(
        ms(&closed["latency_ms"]["p99"]) < ms(&open["latency_ms"]["p99"]),
        "closed {closed}\nopen {open}"
    );
    assert_ordered_latency(&closed["latency_ms"], &closed);
    assert_eq!(closed["unsent"], 0, "{closed}");
}

#[test]
fn stream_times_the_first_and_the_last_event() {
    let upstream = BenchUpstream::start(&["--sse", "5", "--sse-interval-ms", "40", "--size", "16"]);
    let s = bench_ok(&[&upstream.url(), "--stream", "-n", "20", "-c", "2"]);
    let stream = &s["stream"];
    assert_eq!(stream["events"], 100, "{s}");
    assert_eq!(stream["responses_with_events"], 20, "{s}");
    // Five events 40 ms apart: the last comes at least 160 ms after the first,
    // and never before it.
    assert!(ms(&stream["last_event_ms"]["p50"]) >= 160.0, "{s}");
    assert_ordered_latency(&stream["first_event_ms"], &s);
    assert_ordered_latency(&stream["last_event_ms"], &s);
    assert!(
        ms(&stream["first_event_ms"]["p50"]) + 160.0 <= ms(&stream["last_event_ms"]["p50"]),
        "{s}"
    );
}

#[test]
fn without_stream_there_is_no_stream_section() {
    let upstream = BenchUpstream::start(&[]);
    let s = bench_ok(&[&upstream.url(), "-n", "10", "-c", "1"]);
    assert!(s["stream"].is_null(), "{s}");
}

#[test]
fn keys_are_rotated_evenly_as_bearer_credentials() {
    let upstream = Upstream::replying("keys", Reply::text("ok"));
    let dir = TempDir::new("bench-keys");
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, "# test keys\nkey-a\nkey-b\n\nkey-c\n").unwrap();
    let url = format!("http://{}/", upstream.addr());
    let s = bench_ok(&[
        &url,
        "-n",
        "300",
        "-c",
        "1",
        "--keys",
        keys.to_str().unwrap(),
    ]);
    assert_eq!(s["status"]["200"], 300, "{s}");
    let requests = upstream.requests();
    for key in ["key-a", "key-b", "key-c"] {
        let bearer = format!("Bearer {key}");
        let n = requests
            .iter()
            .filter(|r| r.header("authorization") == Some(bearer.as_str()))
            .count();
        assert_eq!(n, 100, "{key}");
    }
}

#[test]
fn method_headers_and_body_come_from_the_flags() {
    let upstream = Upstream::replying("body", Reply::text("ok"));
    let url = format!("http://{}/v1/x?q=1", upstream.addr());
    let s = bench_ok(&[
        &url,
        "-n",
        "3",
        "-c",
        "1",
        "-m",
        "PUT",
        "-H",
        "content-type: application/json",
        "-b",
        "{\"a\":1}",
    ]);
    assert_eq!(s["status"]["200"], 3, "{s}");
    let request = upstream.last_request();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.target, "/v1/x?q=1");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body, b"{\"a\":1}");
}

#[test]
fn warm_up_requests_are_sent_but_not_recorded() {
    let upstream = Upstream::replying("warm", Reply::text("ok"));
    let url = format!("http://{}/", upstream.addr());
    let s = bench_ok(&[&url, "--warmup", "500ms", "-n", "50", "-c", "1"]);
    assert_eq!(s["requests"], 50, "{s}");
    assert!(
        upstream.request_count() > 50,
        "{}",
        upstream.request_count()
    );
}

#[test]
fn https_with_insecure_accepts_a_self_signed_certificate() {
    let leaf = TestCa::new().issue(&["localhost", "127.0.0.1"]);
    let upstream = Upstream::builder("tls")
        .tls(leaf.server_config())
        .start(|_| Reply::text("secure"));
    let url = format!("https://{}/", upstream.addr());
    let s = bench_ok(&[&url, "-n", "20", "-c", "2", "--insecure"]);
    assert_eq!(s["status"]["200"], 20, "{s}");
    assert_eq!(s["body_bytes"], 20 * 6, "{s}");
}

#[test]
fn https_certificate_from_an_unknown_ca_fails_every_request_with_exit_2() {
    let leaf = TestCa::new().issue(&["localhost", "127.0.0.1"]);
    let upstream = Upstream::builder("tls")
        .tls(leaf.server_config())
        .start(|_| Reply::text("secure"));
    let url = format!("https://{}/", upstream.addr());
    let run = bench(&[&url, "-n", "5", "-c", "1", "--json"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["errors"]["tls"], 5, "{s}");
    assert_eq!(s["responses"], 0, "{s}");
}

#[test]
fn refused_connections_are_counted_and_exit_2() {
    let url = format!("http://{}/", refused_addr());
    let run = bench(&[&url, "-n", "20", "-c", "2", "--json"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["errors"]["connect"], 20, "{s}");
    assert_eq!(s["requests"], 20, "{s}");
    assert!(
        s["first_error"].as_str().unwrap().starts_with("connect:"),
        "{s}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].starts_with("error: bench:"), "{}", run.stderr);
}

#[test]
fn bad_url_exits_1_with_one_line() {
    let run = bench(&["localhost:8080/"]);
    assert_eq!(run.code, Some(1));
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].contains("bad URL"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn unknown_flag_exits_1() {
    let run = bench(&["http://127.0.0.1:1/", "--no-such-flag"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.starts_with("error:"), "{}", run.stderr);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
}

#[test]
fn text_summary_names_the_figures() {
    let upstream = BenchUpstream::start(&[]);
    let run = bench(&[&upstream.url(), "-n", "100", "-c", "2"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for word in [
        "requests", "req/s", "200: 100", "p50", "p99.9", "max", "read",
    ] {
        assert!(run.stdout.contains(word), "no {word:?} in:\n{}", run.stdout);
    }
}

/// A blocking server on `127.0.0.1:0`: every connection gets its own thread, which reads
/// request heads and, for each one, writes what `reply` returns for it (`None`: stay silent
/// and keep the connection open). Returns the URL.
fn scripted_server(reply: fn() -> Option<Vec<u8>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    match reply() {
                        Some(bytes) => {
                            if conn.write_all(&bytes).is_err() {
                                return;
                            }
                        }
                        // Hold the connection without answering until the client leaves.
                        None => {
                            let _ = conn.read(&mut byte);
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

#[test]
fn non_2xx_responses_are_counted_by_status_and_are_not_errors() {
    let url = scripted_server(|| {
        Some(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".to_vec())
    });
    let s = bench_ok(&[&url, "-n", "50", "-c", "2"]);
    assert_eq!(s["status"]["503"], 50, "{s}");
    assert_eq!(
        (s["responses"].clone(), s["errors_total"].clone()),
        (50.into(), 0.into()),
        "{s}"
    );
    assert_eq!(s["body_bytes"], 50 * 4, "{s}");
}

#[test]
fn a_silent_server_times_out_every_request_and_exits_2() {
    let url = scripted_server(|| None);
    let run = bench(&[&url, "-n", "3", "-c", "1", "--timeout", "200ms", "--json"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["errors"]["timeout"], 3, "{s}");
    assert_eq!(s["requests"], 3, "{s}");
    assert!(
        s["first_error"].as_str().unwrap().starts_with("timeout:"),
        "{s}"
    );
}

#[test]
fn an_endless_response_head_is_a_protocol_error_not_a_growing_buffer() {
    // 1 MiB of one header line: the client gives up at its 64 KiB bound on a head.
    let url = scripted_server(|| {
        let mut reply = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        reply.resize(1 << 20, b'a');
        Some(reply)
    });
    let run = bench(&[&url, "-n", "4", "-c", "1", "--json"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["errors"]["protocol"], 4, "{s}");
    assert!(
        s["first_error"]
            .as_str()
            .unwrap()
            .contains("longer than 64 KiB"),
        "{s}"
    );
}

#[test]
fn a_hostile_chunked_body_is_a_protocol_error() {
    let url = scripted_server(|| {
        Some(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n".to_vec(),
        )
    });
    let run = bench(&[&url, "-n", "2", "-c", "1", "--json"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["errors"]["protocol"], 2, "{s}");
    assert!(
        s["first_error"]
            .as_str()
            .unwrap()
            .contains("chunk size overflows"),
        "{s}"
    );
}

#[test]
fn the_timeout_is_per_request_not_per_connection() {
    // Ten 50 ms answers in a row on one connection take 500 ms, far past the 200 ms timeout:
    // only a request that alone outlasts it may time out.
    let upstream = BenchUpstream::start(&["--delay-ms", "50"]);
    let s = bench_ok(&[&upstream.url(), "-n", "10", "-c", "1", "--timeout", "200ms"]);
    assert_eq!(s["status"]["200"], 10, "{s}");
    assert_eq!(s["errors_total"], 0, "{s}");
}

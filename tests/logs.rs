//! The operator's logs (README, "Logs"): the access log reopened on SIGUSR1 after logrotate
//! renamed it, its fields (user agent, bytes, upstream address and time, error code, stream
//! flag, the front door as route), and the gateway's own lines in RFC 3339 text or JSON.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::gateway::DIR;
use common::*;
use serde_json::{json, Value};

/// A gateway proxying `/` to `upstream` with its access log at `{DIR}/logs/access.log`.
fn logged_gateway(upstream: &Upstream, server_extra: &str, driver: Driver) -> Gateway {
    let rest = format!(
        "{}{}",
        upstream_toml("backend", &upstream.target(), ""),
        route_toml("api", "/", "backend", "")
    );
    let extra = format!("access_log = \"{DIR}/logs/access.log\"\n{server_extra}");
    // `config_with` writes `access_log = ""` first; the later key would be a duplicate.
    let text = config_with(2, &extra, &rest).replace("access_log = \"\"\n", "");
    Gateway::start(&text, driver)
}

/// The access log's lines, each parsed (a line that is not JSON fails the test: no line may
/// be cut or interleaved).
fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn ids_of(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect()
}

/// `GET /` with our own request id (so each line can be found), answered 200.
fn get_with_id(addr: SocketAddr, id: &str) {
    let raw = request("GET", "/", &[("x-request-id", id)], b"");
    let response = roundtrip(addr, &raw);
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Waits for `needle` on the gateway's stderr and returns that line.
fn stderr_line(gw: &Gateway, needle: &str) -> String {
    let mut line = None;
    let seen = wait_until(WAIT, || {
        line = gw
            .stderr()
            .lines()
            .find(|l| l.contains(needle))
            .map(String::from);
        line.is_some()
    });
    assert!(seen, "no {needle:?} on stderr:\n{}", gw.stderr());
    line.unwrap()
}

on_both_drivers! {
    fn sigusr1_reopens_the_access_log_after_a_rename_and_loses_no_line(driver) {
        let upstream = Upstream::echo("backend");
        let mut gw = logged_gateway(&upstream, "", driver);
        let path = gw.dir().join("logs/access.log");
        let rotated = gw.dir().join("logs/access.log.1");

        let before: Vec<String> = (0..40).map(|i| format!("before-{i}")).collect();
        for id in &before {
            get_with_id(gw.addr(), id);
        }
        assert!(
            wait_until(WAIT, || lines_of(&path).len() == before.len()),
            "the first lines never reached the file"
        );
        std::fs::rename(&path, &rotated).unwrap();

        // Requests keep coming while the log is reopened: their lines may land on either
        // side of it, but each exactly once.
        let addr = gw.addr();
        let during = std::thread::spawn(move || {
            let ids: Vec<String> = (0..60).map(|i| format!("during-{i}")).collect();
            for id in &ids {
                get_with_id(addr, id);
            }
            ids
        });
        std::thread::sleep(Duration::from_millis(20));
        gw.signal(libc::SIGUSR1);
        stderr_line(&gw, "access log reopened");
        let during = during.join().unwrap();
        let after: Vec<String> = (0..40).map(|i| format!("after-{i}")).collect();
        for id in &after {
            get_with_id(gw.addr(), id);
        }
        assert!(gw.stop().success());

        let old = ids_of(&lines_of(&rotated));
        let new = ids_of(&lines_of(&path));
        // The old file is complete: everything written before the rename, nothing after the
        // reopen was confirmed. (In any order: a worker writes its line after answering, so
        // two workers' lines can swap places even for requests sent one after the other.)
        let mut first: Vec<String> = old[..before.len()].to_vec();
        first.sort();
        let mut expected = before.clone();
        expected.sort();
        assert_eq!(first, expected);
        assert!(old.iter().all(|id| !id.starts_with("after-")), "{old:?}");
        // Every request after the reopen is in the new file.
        for id in &after {
            assert!(new.contains(id), "{id} not in the new file");
        }
        // None lost, none twice.
        let mut all: Vec<String> = old.iter().chain(&new).cloned().collect();
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(total, all.len(), "a line was written twice");
        let mut sent: Vec<String> = before.iter().chain(&during).chain(&after).cloned().collect();
        sent.sort();
        assert_eq!(all, sent, "lines lost");
        println!(
            "old file {} lines, new file {} lines, {} sent",
            old.len(),
            new.len(),
            total
        );
    }
}

on_default_driver! {
    fn a_failed_reopen_keeps_writing_to_the_file_already_open(driver) {
        let upstream = Upstream::echo("backend");
        let mut gw = logged_gateway(&upstream, "", driver);
        get_with_id(gw.addr(), "first");
        let logs = gw.dir().join("logs");
        let moved = gw.dir().join("moved");
        assert!(wait_until(WAIT, || lines_of(&logs.join("access.log")).len() == 1));
        // The directory is gone from its path: the file cannot be opened there again.
        std::fs::rename(&logs, &moved).unwrap();
        gw.signal(libc::SIGUSR1);
        let warning = stderr_line(&gw, "cannot reopen");
        assert!(warning.contains(" warn "), "{warning}");
        get_with_id(gw.addr(), "second");
        assert!(gw.stop().success());
        assert_eq!(ids_of(&lines_of(&moved.join("access.log"))), ["first", "second"]);
        assert!(!logs.exists(), "the reopen recreated the directory");
    }
}

/// Sends `raw` on a fresh connection and returns every byte the gateway wrote back (the
/// request asks for `connection: close`).
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

/// The access-log line of request `id`.
fn line_of(path: &Path, id: &str) -> Value {
    let mut found = None;
    let seen = wait_until(WAIT, || {
        found = lines_of(path).into_iter().find(|l| l["request_id"] == id);
        found.is_some()
    });
    assert!(seen, "no line for {id}");
    found.unwrap()
}

on_both_drivers! {
    fn route_lines_carry_agent_bytes_upstream_and_no_error(driver) {
        let upstream = Upstream::echo("backend");
        let gw = logged_gateway(&upstream, "", driver);
        let path = gw.dir().join("logs/access.log");
        let body = b"hello body!";
        let mut raw = b"POST /in HTTP/1.1\r\nhost: a\r\nx-request-id: ua-1\r\nconnection: close\r\n\
                        content-length: 11\r\nuser-agent: curl/8 \xc3\xa9\tx\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(body);
        let answer = raw_exchange(gw.addr(), &raw);
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

        let line = line_of(&path, "ua-1");
        assert_eq!(line["route"], "api");
        assert_eq!(line["user_agent"], "curl/8 \\xc3\\xa9\\x09x");
        assert_eq!(line["bytes_in"], body.len() as u64);
        assert_eq!(line["bytes_out"], answer.len() as u64, "head and body, as sent");
        assert_eq!(line["upstream_addr"], upstream.addr().to_string());
        let upstream_ms = line["upstream_ms"].as_u64().expect("upstream_ms");
        assert!(upstream_ms * 1000 <= line["duration_us"].as_u64().unwrap() + 1000);
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["stream"], false);

        // A long agent is cut, and no agent at all is null.
        let long = "a".repeat(5000);
        let raw = request("GET", "/", &[("x-request-id", "ua-2"), ("user-agent", &long)], b"");
        assert_eq!(roundtrip(gw.addr(), &raw).status, 200);
        let logged = line_of(&path, "ua-2")["user_agent"].as_str().unwrap().to_string();
        assert_eq!(logged, format!("{}...", "a".repeat(256)));
        get_with_id(gw.addr(), "ua-3");
        assert_eq!(line_of(&path, "ua-3")["user_agent"], Value::Null);
    }
}

on_default_driver! {
    fn gateway_made_errors_carry_their_code_and_no_upstream(driver) {
        // A route to a port nobody listens on, beside the working one.
        let upstream = Upstream::echo("backend");
        let dead = refused_addr();
        let rest = format!(
            "{}{}{}{}",
            upstream_toml("backend", &upstream.target(), ""),
            upstream_toml("dead", &dead.to_string(), ""),
            route_toml("api", "/api/", "backend", ""),
            route_toml("gone", "/gone/", "dead", "")
        );
        let extra = format!("access_log = \"{DIR}/logs/access.log\"\n");
        let text = config_with(2, &extra, &rest).replace("access_log = \"\"\n", "");
        let gw = Gateway::start(&text, driver);
        let path = gw.dir().join("logs/access.log");

        let nowhere = request("GET", "/nowhere", &[("x-request-id", "e-404")], b"");
        assert_eq!(roundtrip(gw.addr(), &nowhere).status, 404);
        let refused = request("GET", "/gone/x", &[("x-request-id", "e-502")], b"");
        assert_eq!(roundtrip(gw.addr(), &refused).status, 502);

        let line = line_of(&path, "e-404");
        assert_eq!(line["error"], "route_not_found");
        assert_eq!(line["route"], Value::Null);
        assert_eq!(line["upstream_addr"], Value::Null);
        assert_eq!(line["upstream_ms"], Value::Null);
        let line = line_of(&path, "e-502");
        assert_eq!(line["error"], "upstream_unavailable");
        assert_eq!(line["route"], "gone");
        assert_eq!(line["upstream_addr"], Value::Null, "no target answered");
        assert!(line["bytes_out"].as_u64().unwrap() > 0);
    }
}

on_default_driver! {
    fn event_stream_answers_are_marked_stream(driver) {
        let upstream = Upstream::replying(
            "backend",
            Reply::Fixed {
                status: 200,
                headers: vec![("Content-Type".into(), "text/event-stream".into())],
                body: b"data: 1\n\n".to_vec(),
            },
        );
        let gw = logged_gateway(&upstream, "", driver);
        get_with_id(gw.addr(), "sse-1");
        let line = line_of(&gw.dir().join("logs/access.log"), "sse-1");
        assert_eq!(line["stream"], true);
    }
}

const OPENAI_KEY: &str = "sk-fake-openai-logs-test-key-0123";

on_both_drivers! {
    fn ai_lines_name_the_door_the_provider_endpoint_and_the_stream(driver) {
        let fake = FakeOpenAi::start();
        let rest = format!(
            "[ai]\nauth = \"none\"\n\n\
             [[provider]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             api_key = \"env:FAKE_OPENAI_KEY\"\n\n\
             [[provider]]\nname = \"mock\"\nkind = \"mock\"\nbase_url = \"http://mock.invalid\"\n\n\
             [[model]]\nname = \"gpt-test\"\nprovider = \"openai\"\n\n\
             [[model]]\nname = \"mock-gpt\"\nprovider = \"mock\"\n",
            fake.base_url()
        );
        let extra = format!("access_log = \"{DIR}/logs/access.log\"\n");
        let text = config_with(2, &extra, &rest).replace("access_log = \"\"\n", "");
        let gw = Gateway::builder(&text, driver)
            .env("FAKE_OPENAI_KEY", OPENAI_KEY)
            .start();
        let path = gw.dir().join("logs/access.log");
        let chat = |id: &str, model: &str, stream: bool| {
            let body = json!({
                "model": model,
                "stream": stream,
                "messages": [{ "role": "user", "content": "hi" }],
            })
            .to_string();
            let raw = request(
                "POST",
                "/v1/chat/completions",
                &[("x-request-id", id), ("content-type", "application/json")],
                body.as_bytes(),
            );
            let response = roundtrip(gw.addr(), &raw);
            assert_eq!(response.status, 200, "{}", response.text());
            body.len() as u64
        };

        let sent = chat("ai-1", "gpt-test", true);
        let line = line_of(&path, "ai-1");
        assert_eq!(line["route"], "/v1/chat/completions");
        assert_eq!(line["stream"], true);
        assert_eq!(line["bytes_in"], sent);
        assert_eq!(line["upstream_addr"], fake.addr().to_string());
        assert!(line["upstream_ms"].is_u64(), "{line}");
        assert_eq!(line["error"], Value::Null);

        chat("ai-2", "mock-gpt", false);
        let line = line_of(&path, "ai-2");
        assert_eq!(line["stream"], false);
        // The mock answers in-process: no endpoint, no upstream time.
        assert_eq!(line["upstream_addr"], Value::Null);
        assert_eq!(line["upstream_ms"], Value::Null);

        // A gateway-made error on a door: the unknown model.
        let body = json!({ "model": "nope", "messages": [{ "role": "user", "content": "hi" }] })
            .to_string();
        let raw = request(
            "POST",
            "/v1/chat/completions",
            &[("x-request-id", "ai-3"), ("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(roundtrip(gw.addr(), &raw).status, 404);
        let line = line_of(&path, "ai-3");
        assert_eq!(line["error"], "model_not_found");
        assert_eq!(line["route"], "/v1/chat/completions");
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_rfc3339_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

on_default_driver! {
    fn gateway_lines_are_rfc3339_text_by_default(driver) {
        let upstream = Upstream::echo("backend");
        let gw = logged_gateway(&upstream, "", driver);
        gw.signal(libc::SIGUSR1);
        let line = stderr_line(&gw, "access log reopened");
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(is_rfc3339_millis(ts), "{line}");
        assert!(
            rest.starts_with("info credentialflow::accesslog: access log reopened: "),
            "{line}"
        );
    }
}

on_default_driver! {
    fn log_format_json_writes_one_object_per_line(driver) {
        let upstream = Upstream::echo("backend");
        let gw = logged_gateway(&upstream, "log_format = \"json\"", driver);
        gw.signal(libc::SIGUSR1);
        let line = stderr_line(&gw, "access log reopened");
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(is_rfc3339_millis(value["ts"].as_str().unwrap()), "{line}");
        assert_eq!(value["level"], "info");
        assert_eq!(value["target"], "credentialflow::accesslog");
        assert!(value["msg"].as_str().unwrap().starts_with("access log reopened: "));
        assert_eq!(value.as_object().unwrap().len(), 4);
    }
}

#[test]
fn check_refuses_an_unknown_log_format_by_its_key() {
    let out = check_config(&config_with(2, "log_format = \"xml\"", ""));
    assert_ne!(out.code, Some(0), "{}", out.output());
    assert!(
        out.output().contains("server.log_format"),
        "{}",
        out.output()
    );
}

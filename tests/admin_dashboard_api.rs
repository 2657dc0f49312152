//! The admin API the dashboard reads (issue 19, contract "Dashboard"): usage as a time
//! series, provider stats, the live feed of the access log, paged keys and the embedded UI
//! with its security headers, against the real gateway on the in-process mock provider.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::gateway::DIR;
use common::keys::*;
use common::*;
use serde_json::{json, Value};

/// A gateway config with the mock provider's two models behind API keys, and `server_extra`
/// lines in `[server]` (the access log, when a test reads it).
fn ai_config(server_extra: &str) -> String {
    config_with(
        2,
        server_extra,
        r#"
[[provider]]
name = "mock"
kind = "mock"
base_url = "http://mock.invalid"

[[model]]
name = "mock-gpt"
provider = "mock"
input_price_per_mtok = 0.10
output_price_per_mtok = 0.40

[[model]]
name = "mock-claude"
provider = "mock"
input_price_per_mtok = 0.25
output_price_per_mtok = 1.25

[ai]
auth = "api_key"
"#,
    )
}

/// The access log on, in the gateway's directory (the live feed and latency read it).
fn with_access_log() -> String {
    ai_config(&format!("access_log = \"{DIR}/access.log\"")).replace("access_log = \"\"\n", "")
}

/// `POST /v1/chat/completions` for `model` with `key`, and `path_suffix` (a query) appended.
fn chat(gw: &Gateway, key: &str, model: &str, path_suffix: &str) -> Response {
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": "Hello, dashboard." }],
    })
    .to_string();
    let auth = format!("Bearer {key}");
    let path = format!("/v1/chat/completions{path_suffix}");
    roundtrip(
        gw.addr(),
        &request(
            "POST",
            &path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ],
            body.as_bytes(),
        ),
    )
}

/// Polls `GET path` until `done` holds for its JSON (the ledger is written at least once a
/// second, and settles trail the client's last byte).
fn wait_for_json(gw: &Gateway, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = admin(gw, "GET", path, None);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let body = response.json();
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sum_requests(rows: &Value, group: &str) -> u64 {
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"] == group)
        .map(|r| r["requests"].as_u64().unwrap())
        .sum()
}

on_default_driver! {
    fn usage_series_buckets_ai_traffic_by_model_and_key(driver) {
        let gw = Gateway::start(&ai_config(""), driver);
        let key = create_key(&gw, &json!({ "name": "series", "team": "research" }));
        for model in ["mock-gpt", "mock-gpt", "mock-gpt", "mock-claude"] {
            assert_eq!(chat(&gw, &key.secret, model, "").status, 200);
        }
        let path = "/admin/usage?group_by=model&since=1h&bucket=5m";
        let rows = wait_for_json(&gw, path, |rows| {
            sum_requests(rows, "mock-gpt") == 3 && sum_requests(rows, "mock-claude") == 1
        });
        for row in rows.as_array().unwrap() {
            let ts = row["ts_ms"].as_i64().unwrap();
            assert_eq!(ts % 300_000, 0, "bucket starts are aligned: {row}");
            assert_eq!(row["errors"], 0);
            assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{row}");
            assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{row}");
        }
        let by_key = admin(&gw, "GET", "/admin/usage?group_by=key&bucket=1d", None).json();
        assert_eq!(sum_requests(&by_key, &key.id), 4, "{by_key}");
        let by_team = admin(&gw, "GET", "/admin/usage?group_by=team&bucket=1h&since=2h", None);
        assert_eq!(sum_requests(&by_team.json(), "research"), 4);
        // The report without a bucket is unchanged.
        let report = admin(&gw, "GET", "/admin/usage?group_by=model", None).json();
        assert_eq!(report[0]["group"], "mock-gpt", "{report}");
        assert!(report[0].get("ts_ms").is_none());
    }
}

on_default_driver! {
    fn usage_series_bounds_are_enforced(driver) {
        let gw = Gateway::start(&ai_config(""), driver);
        for (query, mentions) in [
            ("bucket=5m&since=30d", "1000 buckets"),
            ("bucket=1m", "bucket"),
            ("bucket=1h&bucket=1d", "twice"),
            ("bucket=1h&limit=5", "limit applies to a report"),
            ("limit=0", "limit"),
            ("limit=10001", "limit"),
            ("bucket=1h&top=5", "unknown parameter"),
        ] {
            let response = admin(&gw, "GET", &format!("/admin/usage?{query}"), None);
            response.assert_error(400, "invalid_request_error");
            assert!(response.text().contains(mentions), "{query}: {}", response.text());
        }
        let ok = admin(&gw, "GET", "/admin/usage?bucket=1d&since=365d", None);
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.json(), json!([]));
        let anonymous = admin_call(gw.admin_addr(), "GET", "/admin/usage?bucket=1h", None, None);
        assert_eq!(anonymous.status, 401);
    }
}

on_default_driver! {
    fn providers_report_attempts_first_tokens_latency_and_circuit(driver) {
        let gw = Gateway::start(&with_access_log(), driver);
        let key = create_key(&gw, &json!({ "name": "providers" }));
        for _ in 0..5 {
            assert_eq!(chat(&gw, &key.secret, "mock-gpt", "").status, 200);
        }
        let providers = wait_for_json(&gw, "/admin/providers", |body| {
            body[0]["requests"].as_u64() == Some(5)
                && body[0]["latency_ms"]["p50"].is_number()
        });
        let mock = &providers[0];
        assert_eq!(providers.as_array().unwrap().len(), 1, "{providers}");
        assert_eq!(mock["provider"], "mock");
        assert_eq!(mock["errors"], 0);
        assert_eq!(mock["error_rate"], 0.0);
        assert_eq!(mock["circuit"], "closed");
        assert!(mock["first_token_ms"]["p50"].as_f64().unwrap() > 0.0, "{mock}");
        assert!(mock["latency_ms"]["p99"].as_f64().unwrap() >= mock["latency_ms"]["p50"].as_f64().unwrap());
        let anonymous = admin_call(gw.admin_addr(), "GET", "/admin/providers", None, None);
        assert_eq!(anonymous.status, 401);
        assert_eq!(admin(&gw, "POST", "/admin/providers", None).status, 405);
    }
}

/// An open `GET /admin/live` stream.
struct Live {
    stream: TcpStream,
    text: String,
    /// How far `text` was searched by the last [`Live::read_until`], so a long stream is not
    /// searched from the start on every read.
    searched: usize,
}

impl Live {
    fn open(admin: SocketAddr, token: &str) -> Live {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let head = format!(
            "GET /admin/live HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        Live {
            stream,
            text: String::new(),
            searched: 0,
        }
    }

    /// Reads until the text holds `needle` (or fails after [`WAIT`]).
    fn read_until(&mut self, needle: &str) -> &str {
        self.read_until_within(needle, WAIT)
    }

    /// [`Live::read_until`], failing after `limit`.
    fn read_until_within(&mut self, needle: &str, limit: Duration) -> &str {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 65536];
        loop {
            // The needle may straddle the boundary of what was searched before.
            let mut from = self.searched.saturating_sub(needle.len());
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            if self.text[from..].contains(needle) {
                break;
            }
            self.searched = self.text.len();
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.text
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("stream closed before {needle:?}:\n{}", self.text),
                Ok(n) => self.text.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Err(_) => {}
            }
        }
        &self.text
    }
}

on_default_driver! {
    fn live_feed_streams_access_log_entries_without_secrets(driver) {
        let gw = Gateway::start(&with_access_log(), driver);
        let key = create_key(&gw, &json!({ "name": "live" }));
        let mut live = Live::open(gw.admin_addr(), ADMIN_TOKEN);
        let head = live.read_until("\r\n\r\n").to_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        // A query string may carry a credential: the feed shows the path without it.
        let marker = "sk-not-for-the-feed-0123456789";
        assert_eq!(chat(&gw, &key.secret, "mock-gpt", &format!("?api_key={marker}")).status, 200);
        let text = live.read_until("\"model\":\"mock-gpt\"").to_owned();
        let event = text
            .split("\n\n")
            .find(|e| e.contains("mock-gpt"))
            .unwrap();
        let data: Value = serde_json::from_str(
            event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap(),
        )
        .unwrap();
        assert_eq!(data["path"], "/v1/chat/completions");
        assert_eq!(data["key_id"], key.id.as_str());
        assert_eq!(data["status"], 200);
        assert!(data.get("user_agent").is_none() && data.get("host").is_none(), "{data}");
        assert!(!text.contains(marker), "the query reached the feed");
        assert!(!text.contains(&key.secret), "a key secret reached the feed");
        assert!(!text.contains(ADMIN_TOKEN));
    }
}

on_default_driver! {
    fn live_feed_needs_the_token_and_caps_its_streams(driver) {
        let gw = Gateway::start(&with_access_log(), driver);
        let mut refused = Live::open(gw.admin_addr(), "wrong-token");
        assert!(refused.read_until("\r\n\r\n").starts_with("HTTP/1.1 401"));
        // Four streams run; the fifth is told to come back later.
        let mut open: Vec<Live> = (0..4).map(|_| Live::open(gw.admin_addr(), ADMIN_TOKEN)).collect();
        for live in &mut open {
            assert!(live.read_until("\r\n\r\n").starts_with("HTTP/1.1 200"));
        }
        let mut fifth = Live::open(gw.admin_addr(), ADMIN_TOKEN);
        assert!(fifth.read_until("\r\n\r\n").starts_with("HTTP/1.1 503"), "{}", fifth.text);
        // A stream that ends gives its place back.
        drop(open.pop());
        let deadline = Instant::now() + WAIT;
        loop {
            let mut again = Live::open(gw.admin_addr(), ADMIN_TOKEN);
            if again.read_until("\r\n\r\n").starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "the stream's place was never given back");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Meanwhile the API answers: streams hold no protected slot.
        assert_eq!(admin(&gw, "GET", "/admin/providers", None).status, 200);
    }
}

on_default_driver! {
    fn keys_are_paged_and_filtered_on_the_server(driver) {
        let gw = Gateway::start(&ai_config(""), driver);
        let mut ids = Vec::new();
        for i in 0..60 {
            let team = if i % 3 == 0 { "alpha" } else { "beta" };
            ids.push(create_key(&gw, &json!({ "name": format!("bulk-{i:02}"), "team": team })).id);
        }
        let page = admin(&gw, "GET", "/admin/keys?limit=25&offset=50", None);
        assert_eq!(page.status, 200);
        assert_eq!(page.header("x-total-count"), Some("60"));
        let rows = page.json();
        assert_eq!(rows.as_array().unwrap().len(), 10);
        for row in rows.as_array().unwrap() {
            assert!(row.get("key").is_none() && row.get("hash").is_none(), "{row}");
        }
        let alpha = admin(&gw, "GET", "/admin/keys?q=ALPHA&limit=500", None);
        assert_eq!(alpha.header("x-total-count"), Some("20"));
        assert!(alpha.json().as_array().unwrap().iter().all(|k| k["team"] == "alpha"));
        let one = admin(&gw, "GET", &format!("/admin/keys?q={}", ids[7]), None).json();
        assert_eq!(one.as_array().unwrap().len(), 1);
        assert_eq!(one[0]["name"], "bulk-07");
        // Without paging parameters the answer is the whole array, as before.
        let all = admin(&gw, "GET", "/admin/keys", None);
        assert_eq!(all.json().as_array().unwrap().len(), 60);
        assert_eq!(all.header("x-total-count"), None);
        for bad in ["limit=501", "limit=-1", "offset=x", "sort=name"] {
            let response = admin(&gw, "GET", &format!("/admin/keys?{bad}"), None);
            response.assert_error(400, "invalid_request_error");
        }
        let empty_filter = admin(&gw, "GET", "/admin/keys?q=", None);
        assert_eq!(empty_filter.header("x-total-count"), Some("60"));
        let long = format!("/admin/keys?q={}", "a".repeat(257));
        admin(&gw, "GET", &long, None).assert_error(400, "invalid_request_error");
    }
}

on_default_driver! {
    fn ui_is_served_without_a_token_with_strict_headers(driver) {
        let gw = Gateway::start(&ai_config(""), driver);
        let mut total = 0;
        for (path, content_type) in [
            ("/ui/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
            ("/ui/vendor/uPlot.iife.min.js", "text/javascript"),
            ("/ui/vendor/uPlot.LICENSE", "text/plain"),
            ("/ui/missing.js", "application/json"),
        ] {
            let response = admin_call(gw.admin_addr(), "GET", path, None, None);
            let expected = if path == "/ui/missing.js" { 404 } else { 200 };
            assert_eq!(response.status, expected, "{path}");
            assert!(response.header("content-type").unwrap().starts_with(content_type), "{path}");
            let csp = response.header("content-security-policy").unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert_eq!(response.header("x-frame-options"), Some("DENY"));
            assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
            assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
            total += response.body.len();
        }
        let index = admin_call(gw.admin_addr(), "GET", "/ui/", None, None).text();
        for hook in ["login-token", "login-submit", "nav-keys", "nav-usage", "nav-access"] {
            assert!(index.contains(&format!("data-testid=\"{hook}\"")), "{hook}");
        }
        assert!(total < 300 * 1024, "{total} bytes");
        let post = admin_call(gw.admin_addr(), "POST", "/ui/", None, None);
        assert_eq!(post.status, 405);
        assert!(post.header("content-security-policy").is_some());
    }
}

/// The series on both ledger stores from the same records: 13 keys over three hours, so the
/// top ten are kept and three are folded into the `null` group; equal spends tie-break by
/// name. The answers must be identical.
#[test]
fn usage_series_agree_on_sqlite_and_postgres() {
    use credentialflow::store::usage::{
        Bucket, GroupBy, PgUsage, SqliteUsage, UsageBackend, UsageEvent, UsageRecord,
    };

    const HOUR: i64 = 3_600_000;
    let start = 1_764_460_800_000; // midnight UTC
    let records: Vec<UsageRecord> = (0..39)
        .map(|i: i64| UsageRecord {
            id: format!("rec-{i}"),
            node: "edge-a".into(),
            event: UsageEvent {
                ts_ms: start + (i % 3) * HOUR + i * 1_000,
                request_id: format!("req-{i}"),
                key_id: Some(format!("key_{:02}", i % 13)),
                team: if i % 2 == 0 {
                    "even".into()
                } else {
                    "odd".into()
                },
                model: Some("gpt-4o".into()),
                prompt: None,
                route: Some("ai".into()),
                status: if i % 5 == 0 { 502 } else { 200 },
                prompt_tokens: 10,
                completion_tokens: 2,
                cached_tokens: 0,
                // Keys 00..=09 spend more than 10..=12, and 00/01 tie.
                cost_nano_usd: if i % 13 < 10 {
                    5_000 - (i % 13).max(1) as u64
                } else {
                    10
                },
            },
        })
        .collect();

    let dir = TempDir::new("series-sqlite");
    let mut sqlite = SqliteUsage::open(dir.path()).unwrap();
    sqlite.write_batch(&records).unwrap();
    let pg_server = common::postgres::PgServer::start();
    let mut pg = PgUsage::new(&pg_server.url(), "edge-a");
    pg.write_batch(&records).unwrap();

    for (group_by, bucket) in [
        (GroupBy::Key, Bucket::Hour),
        (GroupBy::Team, Bucket::FiveMinutes),
        (GroupBy::Model, Bucket::Day),
    ] {
        let on_sqlite = sqlite.series(group_by, start, bucket).unwrap();
        let on_pg = pg.series(group_by, start, bucket).unwrap();
        assert_eq!(on_sqlite, on_pg, "{group_by} by {bucket}");
        let requests: u64 = on_pg.iter().map(|r| r.requests).sum();
        assert_eq!(requests, 39);
        assert!(on_pg.iter().all(|r| r.ts_ms % bucket.millis() == 0));
    }
    let by_key = pg.series(GroupBy::Key, start, Bucket::Hour).unwrap();
    let named: std::collections::BTreeSet<_> =
        by_key.iter().filter_map(|r| r.group.clone()).collect();
    assert_eq!(named.len(), 10, "{named:?}");
    assert!(!named.contains("key_10") && !named.contains("key_12"));
    let folded: u64 = by_key
        .iter()
        .filter(|r| r.group.is_none())
        .map(|r| r.requests)
        .sum();
    assert_eq!(folded, 9, "keys 10..=12, three requests each");
    let errors: u64 = by_key.iter().map(|r| r.errors).sum();
    assert_eq!(errors, 8, "every fifth request failed");
    // The first hour's rows come first, groups in byte order, the folded row last.
    let first_hour: Vec<_> = by_key.iter().take_while(|r| r.ts_ms == start).collect();
    assert_eq!(first_hour.last().unwrap().group, None);
    assert_eq!(first_hour[0].group.as_deref(), Some("key_00"));
}

/// Now in unix seconds.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `last_used_at` of the key `id` as `GET /admin/keys/{id}` shows it.
fn last_used(gw: &Gateway, id: &str) -> Value {
    let response = admin(gw, "GET", &format!("/admin/keys/{id}"), None);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["last_used_at"].clone()
}

on_default_driver! {
    fn key_last_use_moves_with_a_request_and_survives_a_restart(driver) {
        let mut gw = Gateway::start(&ai_config(""), driver);
        let used = create_key(&gw, &json!({ "name": "used" }));
        let idle = create_key(&gw, &json!({ "name": "idle" }));
        assert_eq!(last_used(&gw, &used.id), Value::Null);

        let before = now_secs();
        assert_eq!(chat(&gw, &used.secret, "mock-gpt", "").status, 200);
        // At once on this node (from the credential cache), in the single key and the list.
        let at = last_used(&gw, &used.id).as_i64().expect("a request sets last_used_at");
        assert!((before..=now_secs()).contains(&at), "{at} not in {before}..");
        let page = admin(&gw, "GET", "/admin/keys?limit=10&q=used", None).json();
        assert_eq!(page[0]["id"], used.id.as_str());
        assert_eq!(page[0]["last_used_at"], at);
        assert_eq!(last_used(&gw, &idle.id), Value::Null);
        assert_eq!(
            admin(&gw, "GET", "/admin/keys", None).json().as_array().unwrap().len(),
            2
        );

        // The key watcher writes it to the store within a few seconds.
        let db = gw.dir().join("data").join("keys.db");
        let deadline = Instant::now() + WAIT;
        loop {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let stored: Option<i64> = conn
                .query_row(
                    "SELECT last_used_at FROM key_last_used WHERE key_id = ?1",
                    [&used.id],
                    |row| row.get(0),
                )
                .ok();
            if stored == Some(at) {
                break;
            }
            assert!(Instant::now() < deadline, "last use never reached the store: {stored:?}");
            std::thread::sleep(Duration::from_millis(200));
        }

        // A new process over the same data directory shows it, and only for the used key.
        gw.stop();
        let data_dir = gw.dir().join("data");
        let same_store = ai_config("").replace(
            &format!("{DIR}/data"),
            &data_dir.to_string_lossy(),
        );
        let again = Gateway::start(&same_store, driver);
        assert_eq!(last_used(&again, &used.id), at);
        assert_eq!(last_used(&again, &idle.id), Value::Null);
    }
}

/// A `GET /admin/live` client that sends its request and never reads, with a receive buffer
/// as small as the kernel allows, so the gateway's writes to it block soon.
fn stalled_live(admin_addr: SocketAddr) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&admin_addr.into()).unwrap();
    let head = format!(
        "GET /admin/live HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    let mut writer: &Socket = &socket;
    writer.write_all(head.as_bytes()).unwrap();
    socket
}

on_default_driver! {
    fn live_client_that_stops_reading_is_dropped_while_the_others_keep_receiving(driver) {
        let gw = Gateway::start(&with_access_log(), driver);
        let stalled = stalled_live(gw.admin_addr());
        let mut reader = Live::open(gw.admin_addr(), ADMIN_TOKEN);
        assert!(reader.read_until("\r\n\r\n").starts_with("HTTP/1.1 200"));

        // Long paths make long events (about 12 KB each, under the feed's 16 KB cut): 800 of
        // them are about twice what the largest send buffer the kernel autotunes to (4 MB)
        // and the stalled client's receive buffer hold, so the stream's writes to it block.
        let padding = "p".repeat(12_000);
        let started = Instant::now();
        // The reader reads all along, as a browser does: 800 events are more than its own
        // buffers hold, and a reader that stopped would be a stalled client too.
        let reading = std::thread::spawn(move || {
            // The whole sending phase, however slow a loaded machine makes it.
            reader.read_until_within("/nowhere/799/", Duration::from_secs(120));
            (reader, started.elapsed())
        });
        for i in 0..800 {
            let path = format!("/nowhere/{i}/{padding}");
            let response = roundtrip(gw.addr(), &request("GET", &path, &[("Connection", "close")], b""));
            assert_eq!(response.status, 404);
        }
        let sent_in = started.elapsed();
        // The access log's writer never waited for the stalled stream: the reading client has
        // every entry, the last one within moments of the request.
        let (mut reader, streamed_in) = reading.join().expect("the reader got every entry");
        assert!(
            streamed_in < sent_in + Duration::from_secs(2),
            "requests took {sent_in:?}, the feed {streamed_in:?}"
        );

        // Within the admin listener's write timeout (10 s, for the whole of a write, however
        // the client trickles) the stalled stream is dropped: its place is free, so three
        // more streams run beside the reader (four at most). Its last write began before the
        // traffic ended; three seconds of slack for a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(13);
        let mut extra: Vec<Live> = Vec::new();
        while extra.len() < 3 {
            let mut live = Live::open(gw.admin_addr(), ADMIN_TOKEN);
            if live.read_until("\r\n\r\n").starts_with("HTTP/1.1 200") {
                extra.push(live);
            } else {
                assert!(Instant::now() < deadline, "the stalled stream was never dropped");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        // The stalled client finds its connection closed once it drains what was buffered.
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut drained = 0usize;
        let mut chunk = [0u8; 65536];
        let closed = loop {
            match (&stalled).read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => drained += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "the stalled stream is still open after {drained} bytes");
        // And the reader still receives new entries after all this.
        let response = roundtrip(gw.addr(), &request("GET", "/nowhere/after", &[("Connection", "close")], b""));
        assert_eq!(response.status, 404);
        reader.read_until("/nowhere/after");
    }
}

/// Keys' last use on PostgreSQL, written by two nodes: a time only ever moves forward, so a
/// node's late write of an older time does not move it back.
#[test]
fn key_last_use_is_max_merged_across_nodes_on_postgres() {
    use credentialflow::store::pepper::Pepper;
    use credentialflow::store::postgres::PgStore;
    use credentialflow::store::KeyBackend;

    let server = common::postgres::PgServer::start();
    let pepper = Pepper::from_hex(&"ab".repeat(32)).unwrap();
    let mut edge_a = PgStore::open(&server.url(), pepper.clone(), "edge-a").unwrap();
    let mut edge_b = PgStore::open(&server.url(), pepper, "edge-b").unwrap();
    assert!(KeyBackend::last_used(&mut edge_a).unwrap().is_empty());

    KeyBackend::record_last_used(
        &mut edge_a,
        &[("key_x".into(), 2_000), ("key_y".into(), 10)],
    )
    .unwrap();
    KeyBackend::record_last_used(
        &mut edge_b,
        &[("key_x".into(), 1_500), ("key_y".into(), 20)],
    )
    .unwrap();
    for store in [&mut edge_a, &mut edge_b] {
        let used = KeyBackend::last_used(store).unwrap();
        assert_eq!(
            used.get("key_x"),
            Some(&2_000),
            "an older write moved it back"
        );
        assert_eq!(used.get("key_y"), Some(&20));
        assert_eq!(used.len(), 2);
    }
    // More rows than one statement writes.
    let many: Vec<(String, i64)> = (0..2_500).map(|i| (format!("key_{i:05}"), i)).collect();
    KeyBackend::record_last_used(&mut edge_b, &many).unwrap();
    let used = KeyBackend::last_used(&mut edge_a).unwrap();
    assert_eq!(used.len(), 2_502);
    assert_eq!(used.get("key_02499"), Some(&2_499));
}

/// Usage records for the rollup tests: 900 requests over four days from 14 keys (so the top
/// ten fold the rest), some without a key or a model, a team `""`, every seventh failed.
fn spread_records(start: i64) -> Vec<credentialflow::store::usage::UsageRecord> {
    use credentialflow::store::usage::{UsageEvent, UsageRecord};
    (0..900_i64)
        .map(|i| UsageRecord {
            id: format!("rec-{i}"),
            node: "edge-a".into(),
            event: UsageEvent {
                ts_ms: start + i * 383_333,
                request_id: format!("req-{i}"),
                key_id: (i % 23 != 0).then(|| format!("key_{:02}", i % 14)),
                team: ["research", "ops", ""][(i % 3) as usize].into(),
                model: (i % 11 != 0).then(|| ["gpt-4o", "claude"][(i % 2) as usize].into()),
                prompt: None,
                route: Some("ai".into()),
                status: if i % 7 == 0 { 502 } else { 200 },
                prompt_tokens: 10 + (i % 5) as u64,
                completion_tokens: (i % 9) as u64,
                cached_tokens: 0,
                cost_nano_usd: 1_000 + (i * 37 % 1_000) as u64,
            },
        })
        .collect()
}

/// The series the ledger's rows give, summed here rather than by a store: the top ten
/// groups by spend (ties by name, in bytes) with their own rows, the rest folded into `None`.
fn series_from_rows(
    records: &[credentialflow::store::usage::UsageRecord],
    group_by: credentialflow::store::usage::GroupBy,
    since_ms: i64,
    bucket: credentialflow::store::usage::Bucket,
) -> Vec<credentialflow::store::usage::SeriesRow> {
    use credentialflow::store::usage::{GroupBy, SeriesRow};
    use std::collections::{BTreeMap, HashMap};
    // bucket -> group -> [requests, errors, prompt, completion, cost]
    let mut sums: BTreeMap<i64, BTreeMap<String, [u64; 5]>> = BTreeMap::new();
    let mut spend: HashMap<String, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.event.ts_ms >= since_ms) {
        let e = &r.event;
        let group = match group_by {
            GroupBy::Key => e.key_id.clone(),
            GroupBy::Team => Some(e.team.clone()),
            GroupBy::Model => e.model.clone(),
        };
        let Some(group) = group else { continue };
        let at = bucket.start_of(e.ts_ms);
        let s = sums
            .entry(at)
            .or_default()
            .entry(group.clone())
            .or_default();
        let add = [
            1,
            u64::from(e.status >= 400),
            e.prompt_tokens,
            e.completion_tokens,
            e.cost_nano_usd,
        ];
        for (total, n) in s.iter_mut().zip(add) {
            *total += n;
        }
        *spend.entry(group).or_default() += e.cost_nano_usd;
    }
    let mut ranked: Vec<(String, u64)> = spend.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = ranked.into_iter().take(10).map(|(g, _)| g).collect();
    let mut rows = Vec::new();
    for (at, groups) in sums {
        let mut shown: BTreeMap<Option<String>, [u64; 5]> = BTreeMap::new();
        for (group, s) in groups {
            let key = top.contains(&group).then_some(group);
            let t = shown.entry(key).or_default();
            for (total, n) in t.iter_mut().zip(s) {
                *total += n;
            }
        }
        // Named groups in byte order, the folded one last.
        let (named, folded): (Vec<_>, Vec<_>) = shown.into_iter().partition(|(g, _)| g.is_some());
        for (group, [requests, errors, prompt, completion, cost]) in named.into_iter().chain(folded)
        {
            rows.push(SeriesRow {
                ts_ms: at,
                group,
                requests,
                errors,
                prompt_tokens: prompt,
                completion_tokens: completion,
                cost_usd: cost as f64 / 1e9,
            });
        }
    }
    rows
}

/// Series and reports answered from the hourly and daily rollups equal the sums of the
/// ledger's rows, on SQLite and on PostgreSQL, for starts on and off the hour and the day;
/// a batch delivered twice to PostgreSQL is counted once in the rollups as in the rows.
#[test]
fn usage_rollups_answer_as_the_rows_do_on_sqlite_and_postgres() {
    use credentialflow::store::usage::{Bucket, GroupBy, PgUsage, SqliteUsage, UsageBackend};

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let start = 1_764_460_800_000 + 5 * HOUR + 4_321;
    let records = spread_records(start);

    let dir = TempDir::new("rollup-sqlite");
    let mut sqlite = SqliteUsage::open(dir.path()).unwrap();
    let pg_server = common::postgres::PgServer::start();
    let mut pg = PgUsage::new(&pg_server.url(), "edge-a");
    for batch in records.chunks(64) {
        sqlite.write_batch(batch).unwrap();
        pg.write_batch(batch).unwrap();
    }
    // Redelivered from the journal: stored once.
    pg.write_batch(&records[100..200]).unwrap();

    for since in [
        0,
        start,
        start + 1,
        start + 7 * HOUR + 99,
        start + DAY + 13,
        start + 2 * DAY,
    ] {
        for group_by in [GroupBy::Key, GroupBy::Team, GroupBy::Model] {
            for bucket in [Bucket::FiveMinutes, Bucket::Hour, Bucket::Day] {
                let expected = series_from_rows(&records, group_by, since, bucket);
                assert!(!expected.is_empty());
                let what = format!("{group_by} by {bucket} since {since}");
                assert_eq!(
                    sqlite.series(group_by, since, bucket).unwrap(),
                    expected,
                    "SQLite {what}"
                );
                assert_eq!(
                    pg.series(group_by, since, bucket).unwrap(),
                    expected,
                    "PostgreSQL {what}"
                );
            }
            // A report is the series of one bucket: every group, most expensive first.
            let on_sqlite = sqlite.report(group_by, since).unwrap();
            assert_eq!(
                pg.report(group_by, since).unwrap(),
                on_sqlite,
                "report by {group_by}"
            );
            let mut sums: std::collections::HashMap<String, (u64, u64)> = Default::default();
            for r in records.iter().filter(|r| r.event.ts_ms >= since) {
                let group = match group_by {
                    GroupBy::Key => r.event.key_id.clone(),
                    GroupBy::Team => Some(r.event.team.clone()),
                    GroupBy::Model => r.event.model.clone(),
                };
                if let Some(group) = group {
                    let s = sums.entry(group).or_default();
                    s.0 += 1;
                    s.1 += r.event.cost_nano_usd;
                }
            }
            let mut ranked: Vec<(String, (u64, u64))> = sums.into_iter().collect();
            ranked.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
            let from_rows: Vec<(String, u64, f64)> = ranked
                .into_iter()
                .map(|(group, (requests, cost))| (group, requests, cost as f64 / 1e9))
                .collect();
            let answered: Vec<(String, u64, f64)> = on_sqlite
                .iter()
                .map(|r| (r.group.clone(), r.requests, r.cost_usd))
                .collect();
            assert_eq!(answered, from_rows, "report by {group_by} since {since}");
        }
    }
}

//! `GET /admin/live`: the last requests as a stream of server-sent events (the dashboard's
//! live view), read from the access log's [`LiveFeed`](crate::accesslog::LiveFeed).
//!
//! Each event's `data` is one entry cut down to a fixed list of fields ([`FIELDS`]): what
//! `on_log` hooks add, the user agent and any query string never leave the gateway this way.
//! The writer of the access log never waits for a stream: streams poll the feed's ring, and a
//! stream that falls more than the ring behind skips ahead with an `event: missed` telling
//! how many entries it lost. A client that stops reading is dropped when a write has waited
//! [`super::http::Limits::write_timeout`]. At most [`MAX_STREAMS`] streams run at once; a
//! stream holds no protected slot (a new connection may close it to make room) and ends
//! after [`MAX_STREAM_TIME`], so the browser reconnects rather than pinning a thread.
//!
//! The browser's `EventSource` cannot send an `Authorization` header, so the dashboard reads
//! this stream with `fetch`; the admin token is required like everywhere under `/admin/`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::http::{Connection, Request};
use super::routes;
use crate::accesslog::{live, LIVE_ENTRIES};

/// Streams served at once; more are answered 503.
pub const MAX_STREAMS: usize = 4;

/// How long one stream lasts before the gateway ends it (the client reconnects).
pub const MAX_STREAM_TIME: Duration = Duration::from_secs(30 * 60);

/// Entries already in the ring sent when a stream starts.
const BACKLOG: usize = 50;

/// A comment line this often keeps proxies from closing a quiet stream and finds clients that
/// went away.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The access-log fields an event carries; everything else is left out.
pub const FIELDS: [&str; 16] = [
    "ts_ms",
    "request_id",
    "client",
    "method",
    "path",
    "route",
    "status",
    "duration_us",
    "upstream_ms",
    "error",
    "stream",
    "key_id",
    "team",
    "model",
    "usage",
    "attempts",
];

/// Streams running now.
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Whether `request` asks for the live stream (it is answered by [`stream`], not the router).
pub(crate) fn is_live(request: &Request) -> bool {
    request.method == "GET" && request.path == "/admin/live"
}

/// Serves the stream on `connection` until the client goes, the stream's time is up or
/// shutdown begins. The connection is closed afterwards (the stream has no length).
pub(crate) fn stream(connection: &mut Connection, request_id: &str, shutdown: &AtomicBool) {
    let Some(_running) = StreamCount::enter() else {
        let mut response = routes::error(
            503,
            "overloaded_error",
            "too_many_live_streams",
            "too many live streams; retry later",
        );
        response.close = true;
        let _ = connection.write_response(&response, request_id, false);
        return;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: {request_id}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n\
         retry: 2000\n\n"
    );
    if connection.write_raw(head.as_bytes()).is_err() {
        return;
    }
    let feed = live();
    let started = Instant::now();
    let mut last_write = started;
    // Start with the last BACKLOG entries.
    let mut after = feed.newest().saturating_sub(BACKLOG as u64);
    while !shutdown.load(Ordering::Relaxed) && started.elapsed() < MAX_STREAM_TIME {
        let batch = feed.since(after, LIVE_ENTRIES);
        let mut out = String::new();
        if batch.missed > 0 {
            out.push_str(&format!(
                "event: missed\ndata: {{\"missed\":{}}}\n\n",
                batch.missed
            ));
        }
        for (seq, line) in &batch.lines {
            after = *seq;
            if let Some(entry) = entry_json(line) {
                out.push_str(&format!("id: {seq}\ndata: {entry}\n\n"));
            }
        }
        if out.is_empty() && last_write.elapsed() >= KEEPALIVE {
            out.push_str(": keep-alive\n\n");
        }
        if !out.is_empty() {
            if connection.write_raw(out.as_bytes()).is_err() {
                return;
            }
            last_write = Instant::now();
        }
        // The wait between polls of the feed is a read on the socket (one poll interval of
        // the admin listener), so a client that goes away frees its place at once.
        if connection.client_closed() {
            return;
        }
    }
}

/// One access-log line as an event's data: only [`FIELDS`], the path without its query.
/// `None` for a line that is not a JSON object.
pub fn entry_json(line: &str) -> Option<String> {
    let Value::Object(mut entry) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    let mut kept = Map::new();
    for field in FIELDS {
        if let Some(value) = entry.remove(field) {
            kept.insert(field.to_owned(), value);
        }
    }
    if let Some(Value::String(path)) = kept.get_mut("path") {
        if let Some(at) = path.find('?') {
            path.truncate(at);
        }
    }
    Some(Value::Object(kept).to_string())
}

/// A place among the [`MAX_STREAMS`], given back on drop.
struct StreamCount;

impl StreamCount {
    fn enter() -> Option<StreamCount> {
        STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamCount)
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_only_the_listed_fields_and_no_query() {
        let line = r#"{"ts_ms":1,"request_id":"r","client":"127.0.0.1","method":"GET","host":"h","path":"/v1/x?api_key=sk-secret","status":200,"user_agent":"ua","secret_field":"sk-from-lua","key_id":"key_1"}"#;
        let entry: Value = serde_json::from_str(&entry_json(line).unwrap()).unwrap();
        assert_eq!(entry["path"], "/v1/x");
        assert_eq!(entry["key_id"], "key_1");
        assert_eq!(entry["status"], 200);
        for gone in ["host", "user_agent", "secret_field"] {
            assert!(entry.get(gone).is_none(), "{gone} in {entry}");
        }
        assert!(!entry.to_string().contains("sk-"));
    }

    #[test]
    fn lines_that_are_not_objects_are_skipped() {
        assert_eq!(entry_json("not json"), None);
        assert_eq!(entry_json("[1]"), None);
    }

    #[test]
    fn streams_past_the_cap_are_refused_until_one_ends() {
        let held: Vec<StreamCount> = std::iter::from_fn(StreamCount::enter).take(100).collect();
        assert!(held.len() <= MAX_STREAMS);
        assert!(StreamCount::enter().is_none());
        drop(held);
        assert!(StreamCount::enter().is_some());
    }
}

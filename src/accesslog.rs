//! The access log: one JSON line per request, written by its own thread.
//!
//! Workers hand finished lines over a bounded channel and never wait: if the writer falls
//! behind, lines are dropped and counted (`credentialflow_access_log_dropped_total`).
//!
//! The writer reopens its file by path when asked ([`Writer::reopen`], on `SIGUSR1`), so
//! logrotate can rename the file and have the next lines start a new one.
//!
//! After writing a line the writer hands it to the [`LiveFeed`] (`GET /admin/live`): a ring
//! of the last [`LIVE_ENTRIES`] lines that readers poll. The writer never waits for a reader:
//! if one holds the ring at that moment, the line is left out of the feed (and counted). It
//! also keeps each AI provider's latency histogram from the lines' `upstream_ms` (or
//! `duration_us` for an in-process provider), for `GET /admin/providers`.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};

use crate::metrics;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// The workers' side of the access log. Cloning is cheap; `Off` logs nothing.
#[derive(Clone)]
pub enum AccessLog {
    /// `access_log = ""`.
    Off,
    /// Lines go to the writer thread.
    On {
        tx: Sender<String>,
        dropped: Arc<AtomicU64>,
    },
}

impl AccessLog {
    /// Whether lines are wanted (so workers skip formatting them when off).
    pub fn enabled(&self) -> bool {
        matches!(self, AccessLog::On { .. })
    }

    /// Queues one line (without its newline); never blocks.
    pub fn write(&self, line: String) {
        if let AccessLog::On { tx, dropped } = self {
            if let Err(TrySendError::Full(_)) = tx.try_send(line) {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One request's access-log line. Serialized straight to JSON text (no intermediate map),
/// with absent optional fields left out.
#[derive(Debug, Default, serde::Serialize)]
pub struct AccessEntry<'a> {
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    pub request_id: &'a str,
    /// The client's IP address.
    pub client: String,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// The matched route's name; for an AI front door its path (`/v1/chat/completions`);
    /// `null` for unrouted requests.
    pub route: Option<&'a str>,
    pub status: u16,
    pub duration_us: u64,
    /// The client's `User-Agent`, escaped and cut (see [`user_agent`]); `null` when absent.
    pub user_agent: Option<String>,
    /// Request body bytes read from the client, as framed on the wire.
    pub bytes_in: u64,
    /// Response bytes written to the client, head included.
    pub bytes_out: u64,
    /// `ip:port` of the upstream target or provider endpoint that answered; `null` when none.
    pub upstream_addr: Option<String>,
    /// Milliseconds from sending to that endpoint to the end of its answer; `null` when none.
    pub upstream_ms: Option<u64>,
    /// The gateway's error code when the gateway made the answer (`rate_limit_exceeded`,
    /// `upstream_timeout`, ...); `null` for upstream and provider answers, errors included.
    pub error: Option<&'static str>,
    /// Whether the answer was a stream of events.
    pub stream: bool,
    /// The virtual key, when one authenticated the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a str>,
    /// The caller's team, when authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<&'a str>,
    /// The client-facing model of an AI request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    /// The prompt endpoint called, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<&'a str>,
    /// Tokens and cost of an AI request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageFields>,
    /// Every provider attempt of an AI request (retries and fallbacks), in order.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub attempts: &'a [AttemptLog],
    /// Fields a Lua `on_log` hook added (they cannot replace the fields above).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One attempt of an AI request on a provider (retries and fallbacks each add one).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptLog {
    /// The client-facing model tried.
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// The provider's status, or what went wrong.
    pub outcome: String,
}

/// The `usage` object of an AI request's line.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UsageFields {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
}

/// The names of the fields the gateway writes itself; `on_log` fields with these names are
/// dropped, so a script cannot spoof what the gateway recorded.
pub const OWN_FIELDS: &[&str] = &[
    "ts_ms",
    "request_id",
    "client",
    "method",
    "host",
    "path",
    "route",
    "status",
    "duration_us",
    "user_agent",
    "bytes_in",
    "bytes_out",
    "upstream_addr",
    "upstream_ms",
    "error",
    "stream",
    "key_id",
    "team",
    "model",
    "prompt",
    "usage",
    "attempts",
];

/// Longest `User-Agent` logged, in bytes of the header: a client cannot grow every line.
pub const MAX_USER_AGENT: usize = 256;

/// A `User-Agent` value as logged: printable ASCII as it is, every other byte (controls,
/// DEL, anything non-ASCII) as `\xNN`, so no header can forge a line or confuse a terminal;
/// cut after [`MAX_USER_AGENT`] bytes of the header, marked with a trailing `...`.
pub fn user_agent(raw: &[u8]) -> String {
    let kept = &raw[..raw.len().min(MAX_USER_AGENT)];
    let mut out = String::with_capacity(kept.len() + 3);
    for &b in kept {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if raw.len() > MAX_USER_AGENT {
        out.push_str("...");
    }
    out
}

impl AccessEntry<'_> {
    /// The JSON line, without its newline.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("access-log entries serialize")
    }
}

/// One JSON-RPC call through the MCP gateway (`tools/call`, `prompts/get`,
/// `resources/read`), refused ones included: a line of its own beside its HTTP request's.
/// The arguments are never logged, only their SHA-256 (hex), so equal calls can be matched
/// without storing what they carried.
#[derive(serde::Serialize)]
pub struct McpCallEntry<'a> {
    /// Always `"mcp_call"`, to tell these lines from request lines.
    pub kind: &'static str,
    pub ts_ms: u64,
    pub request_id: &'a str,
    /// The JSON-RPC method.
    pub method: &'a str,
    /// The `[[mcp_server]]` name (`null` when the name matched no server).
    pub server: Option<&'a str>,
    /// The upstream tool, prompt or resource name, as the server knows it.
    pub tool: &'a str,
    /// `ok`, `error` (the server's own), `refused`, `rate_limited`, `unavailable`, ...
    pub status: &'a str,
    pub duration_us: u64,
    pub args_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<&'a str>,
}

impl McpCallEntry<'_> {
    /// The JSON line, without its newline.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("access-log entries serialize")
    }
}

/// The writer thread's handle, kept by the main thread: asks for reopens (`SIGUSR1`) and
/// waits for the last lines at shutdown.
pub struct Writer {
    thread: JoinHandle<()>,
    reopen: Sender<()>,
}

impl Writer {
    /// Asks the writer to close its file and open it again by path (after logrotate renamed
    /// it). Lines queued before or during the reopen all go to the file open afterwards.
    pub fn reopen(&self) {
        // A request already pending will serve this one too.
        let _ = self.reopen.try_send(());
    }

    /// Waits until every line queued before the last [`AccessLog`] clone was dropped is written.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

/// Where lines go: stdout, or a file that can be reopened by its path.
enum Output {
    Stdout(BufWriter<std::io::Stdout>),
    File { path: PathBuf, out: BufWriter<File> },
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File { out, .. } => out,
        }
    }

    /// Flushes the current file and opens `path` again (a new file after a rename). When the
    /// open fails, the old descriptor stays in use: lines keep being written somewhere.
    fn reopen(&mut self) {
        let Output::File { path, out } = self else {
            return;
        };
        let _ = out.flush();
        match open_append(path) {
            Ok(file) => {
                *out = BufWriter::with_capacity(BUFFER, file);
                log::info!("access log reopened: {}", path.display());
            }
            Err(e) => log::warn!(
                "access log {}: cannot reopen ({e}); still writing to the file open before",
                path.display()
            ),
        }
    }
}

/// The writer's buffer: a busy log flushes in big writes.
const BUFFER: usize = 64 * 1024;

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts the writer for `target` ("-" = stdout, "" = off, else a file appended to).
/// The returned [`Writer`] finishes once every [`AccessLog`] clone is dropped and the queue
/// is written.
pub fn start(target: &Path) -> std::io::Result<(AccessLog, Option<Writer>)> {
    if target.as_os_str().is_empty() {
        return Ok((AccessLog::Off, None));
    }
    let out = if target == Path::new("-") {
        Output::Stdout(BufWriter::with_capacity(BUFFER, std::io::stdout()))
    } else {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Output::File {
            path: target.to_path_buf(),
            out: BufWriter::with_capacity(BUFFER, open_append(target)?),
        }
    };
    let (tx, rx) = bounded(QUEUE);
    let (reopen, reopen_rx) = bounded(1);
    let dropped = metrics::global().counter(
        "credentialflow_access_log_dropped_total",
        "Access-log lines dropped because the writer fell behind.",
    );
    let thread = std::thread::Builder::new()
        .name("cf-access-log".into())
        .spawn(move || write_lines(rx, reopen_rx, out))?;
    Ok((
        AccessLog::On { tx, dropped },
        Some(Writer { thread, reopen }),
    ))
}

fn write_lines(rx: Receiver<String>, reopen: Receiver<()>, mut out: Output) {
    let write = |out: &mut Output, line: String| {
        let w = out.writer();
        let _ = w.write_all(line.as_bytes());
        let _ = w.write_all(b"\n");
        live().offer(line);
    };
    loop {
        select! {
            recv(rx) -> line => match line {
                Ok(line) => {
                    write(&mut out, line);
                    // Drain what is queued before flushing, so a busy log flushes in big writes.
                    while let Ok(line) = rx.try_recv() {
                        write(&mut out, line);
                    }
                    let _ = out.writer().flush();
                }
                Err(_) => {
                    let _ = out.writer().flush();
                    return;
                }
            },
            // Only this thread writes, so every line is in the old file or the new one.
            recv(reopen) -> asked => {
                if asked.is_ok() {
                    out.reopen();
                }
            }
        }
    }
}

/// Lines the live feed keeps: a reader that falls further behind skips ahead and is told
/// how many it missed.
pub const LIVE_ENTRIES: usize = 256;

/// Longest line the live feed keeps; longer ones (large `on_log` additions) are left out of
/// it rather than cut into invalid JSON.
pub const MAX_LIVE_LINE: usize = 16 * 1024;

/// Most providers the latency histograms track (provider names come from the config; a
/// long run of reloads renaming them cannot grow the table past this).
const MAX_LATENCY_PROVIDERS: usize = 256;

/// The feed of recent access-log lines behind `GET /admin/live`, and per-provider latency.
/// Written only by the access-log writer thread; read by admin connection threads.
#[derive(Default)]
pub struct LiveFeed {
    ring: Mutex<Ring>,
    /// Lines left out of the feed because a reader held the ring.
    contended: AtomicU64,
    latency: Mutex<HashMap<String, metrics::Histogram>>,
}

#[derive(Default)]
struct Ring {
    /// Sequence number the next line gets (the first is 1).
    next: u64,
    lines: VecDeque<(u64, String)>,
}

/// Lines a reader gets from [`LiveFeed::since`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LiveLines {
    /// New lines, oldest first, with their sequence numbers.
    pub lines: Vec<(u64, String)>,
    /// Lines after the reader's position that left the ring before it read them.
    pub missed: u64,
}

/// The process's live feed.
pub fn live() -> &'static LiveFeed {
    static LIVE: OnceLock<LiveFeed> = OnceLock::new();
    LIVE.get_or_init(LiveFeed::default)
}

/// The fields of an AI line the latency histograms read.
#[derive(serde::Deserialize)]
struct Timed {
    upstream_ms: Option<u64>,
    #[serde(default)]
    duration_us: u64,
    #[serde(default)]
    attempts: Vec<TimedAttempt>,
}

#[derive(serde::Deserialize)]
struct TimedAttempt {
    provider: String,
}

impl LiveFeed {
    /// Takes one written line. Never waits: a reader holding the ring costs the feed this
    /// line, not the writer its time.
    pub fn offer(&self, line: String) {
        // Only AI lines name attempts; their last attempt is the one `upstream_ms` timed.
        if line.contains("\"attempts\":[") {
            self.time_provider(&line);
        }
        if line.len() > MAX_LIVE_LINE {
            return;
        }
        let Some(mut ring) = self.ring.try_lock() else {
            self.contended.fetch_add(1, Ordering::Relaxed);
            return;
        };
        ring.next += 1;
        let seq = ring.next;
        if ring.lines.len() == LIVE_ENTRIES {
            ring.lines.pop_front();
        }
        ring.lines.push_back((seq, line));
    }

    fn time_provider(&self, line: &str) {
        let Ok(timed) = serde_json::from_str::<Timed>(line) else {
            return;
        };
        let Some(last) = timed.attempts.last() else {
            return;
        };
        // The provider's own answer time when it is across the network; an in-process
        // provider (the mock) has none, and the gateway's time for the request stands in.
        let elapsed = match timed.upstream_ms {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_micros(timed.duration_us),
        };
        let mut latency = self.latency.lock();
        if !latency.contains_key(&last.provider) && latency.len() >= MAX_LATENCY_PROVIDERS {
            return;
        }
        latency
            .entry(last.provider.clone())
            .or_default()
            .observe(elapsed);
    }

    /// Lines after sequence number `after` (0: from the oldest kept), at most `max`, oldest
    /// first.
    pub fn since(&self, after: u64, max: usize) -> LiveLines {
        let ring = self.ring.lock();
        let oldest = ring.lines.front().map_or(ring.next + 1, |(seq, _)| *seq);
        let missed = if after == 0 {
            0
        } else {
            oldest.saturating_sub(after + 1)
        };
        let lines = ring
            .lines
            .iter()
            .filter(|(seq, _)| *seq > after)
            .take(max)
            .cloned()
            .collect();
        LiveLines { lines, missed }
    }

    /// The sequence number of the newest line (0 before any).
    pub fn newest(&self) -> u64 {
        self.ring.lock().next
    }

    /// Lines left out of the feed because a reader held the ring when they were written.
    pub fn contended(&self) -> u64 {
        self.contended.load(Ordering::Relaxed)
    }

    /// The latency histogram of `provider`'s answers (the final attempt of each request).
    pub fn provider_latency(&self, provider: &str) -> Option<metrics::Histogram> {
        self.latency.lock().get(provider).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_the_writer_finishes_when_senders_drop() {
        let dir = std::env::temp_dir().join(format!("cf-accesslog-{}", std::process::id()));
        let path = dir.join("access.log");
        let (log, handle) = start(&path).unwrap();
        assert!(log.enabled());
        log.write("{\"a\":1}".into());
        log.write("{\"a\":2}".into());
        drop(log);
        handle.unwrap().finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Waits until `path` holds `want` (the writer runs on its own thread).
    fn wait_for(path: &Path, want: &str) {
        for _ in 0..200 {
            if std::fs::read_to_string(path).is_ok_and(|t| t == want) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{} never held {want:?}", path.display());
    }

    #[test]
    fn reopen_after_a_rename_starts_a_new_file_at_the_path() {
        let dir = std::env::temp_dir().join(format!("cf-accesslog-reopen-{}", std::process::id()));
        let path = dir.join("access.log");
        let rotated = dir.join("access.log.1");
        let (log, writer) = start(&path).unwrap();
        let writer = writer.unwrap();
        log.write("before".into());
        wait_for(&path, "before\n");
        std::fs::rename(&path, &rotated).unwrap();
        writer.reopen();
        // Queued right behind the request: whichever the writer takes first, no line is lost
        // and none is written twice.
        log.write("after".into());
        drop(log);
        writer.finish();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(old.starts_with("before\n"), "{old:?}");
        assert_eq!(format!("{old}{new}"), "before\nafter\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_reopen_keeps_writing_to_the_open_file() {
        let base = std::env::temp_dir().join(format!("cf-accesslog-gone-{}", std::process::id()));
        let dir = base.join("logs");
        let moved = base.join("moved");
        let path = dir.join("access.log");
        let (log, writer) = start(&path).unwrap();
        let writer = writer.unwrap();
        log.write("one".into());
        wait_for(&path, "one\n");
        // The log's directory is gone from its path: the reopen cannot create the file.
        std::fs::rename(&dir, &moved).unwrap();
        writer.reopen();
        log.write("two".into());
        drop(log);
        writer.finish();
        assert_eq!(
            std::fs::read_to_string(moved.join("access.log")).unwrap(),
            "one\ntwo\n"
        );
        assert!(!dir.exists(), "the reopen must not recreate the directory");
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn live_feed_keeps_the_last_lines_and_tells_a_late_reader_what_it_missed() {
        let feed = LiveFeed::default();
        assert_eq!(feed.since(0, 10), LiveLines::default());
        for i in 0..LIVE_ENTRIES + 10 {
            feed.offer(format!("{{\"n\":{i}}}"));
        }
        assert_eq!(feed.newest(), (LIVE_ENTRIES + 10) as u64);
        let all = feed.since(0, usize::MAX);
        assert_eq!(all.lines.len(), LIVE_ENTRIES);
        assert_eq!(all.lines[0], (11, "{\"n\":10}".to_string()));
        // A reader that had seen line 5 missed 6..=10, which left the ring.
        let late = feed.since(5, 2);
        assert_eq!(late.missed, 5);
        assert_eq!(late.lines.iter().map(|l| l.0).collect::<Vec<_>>(), [11, 12]);
        let current = feed.since(feed.newest(), 10);
        assert_eq!(current, LiveLines::default());
    }

    #[test]
    fn live_feed_never_waits_for_a_reader_and_drops_oversized_lines() {
        let feed = LiveFeed::default();
        let held = feed.ring.lock();
        feed.offer("{}".into());
        drop(held);
        assert_eq!(feed.contended(), 1);
        feed.offer("x".repeat(MAX_LIVE_LINE + 1));
        assert_eq!(feed.newest(), 0);
    }

    #[test]
    fn live_feed_times_the_provider_of_the_last_attempt() {
        let feed = LiveFeed::default();
        feed.offer(
            r#"{"upstream_ms":40,"attempts":[{"model":"m","provider":"a","outcome":"503"},{"model":"m","provider":"b","outcome":"200"}]}"#.into(),
        );
        feed.offer(r#"{"upstream_ms":7,"status":200}"#.into());
        feed.offer(
            r#"{"duration_us":3000,"attempts":[{"model":"m","provider":"mock","outcome":"200"}]}"#
                .into(),
        );
        assert!(feed.provider_latency("a").is_none());
        let mock = feed
            .provider_latency("mock")
            .unwrap()
            .quantile_ms(0.5)
            .unwrap();
        assert!(mock > 2.5 && mock <= 5.0, "{mock}");
        let b = feed.provider_latency("b").unwrap();
        assert_eq!(b.count(), 1);
        let p50 = b.quantile_ms(0.5).unwrap();
        assert!(p50 > 25.0 && p50 <= 50.0, "{p50}");
    }

    #[test]
    fn user_agents_are_escaped_and_bounded() {
        assert_eq!(user_agent(b"curl/8.5.0"), "curl/8.5.0");
        assert_eq!(
            user_agent(b"a\r\n{\"x\":1}\x1b\x7f\xc3\xa9"),
            "a\\x0d\\x0a{\"x\":1}\\x1b\\x7f\\xc3\\xa9"
        );
        let long = vec![b'a'; 10_000];
        let logged = user_agent(&long);
        assert_eq!(logged.len(), MAX_USER_AGENT + 3);
        assert!(logged.ends_with("a..."));
        // In a line, the JSON stays one line and the quote stays inside the string.
        let entry = AccessEntry {
            user_agent: Some(user_agent(b"x\n\"}")),
            ..AccessEntry::default()
        };
        let line = entry.render();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["user_agent"], "x\\x0a\"}");
    }

    #[test]
    fn every_field_the_gateway_writes_is_protected_from_on_log() {
        let line = AccessEntry::default().render();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for name in value.as_object().unwrap().keys() {
            assert!(
                OWN_FIELDS.contains(&name.as_str()),
                "{name} not in OWN_FIELDS"
            );
        }
        for name in [
            "user_agent",
            "bytes_in",
            "bytes_out",
            "upstream_addr",
            "upstream_ms",
        ] {
            assert!(value.get(name).is_some(), "{name} missing: {line}");
        }
        assert_eq!(value["error"], serde_json::Value::Null);
        assert_eq!(value["stream"], false);
    }

    #[test]
    fn empty_target_is_off() {
        let (log, handle) = start(Path::new("")).unwrap();
        assert!(!log.enabled());
        assert!(handle.is_none());
        log.write("ignored".into());
    }
}

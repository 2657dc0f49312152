//! The access log: one JSON line per request, written by its own thread.
//!
//! Workers hand finished lines over a bounded channel and never wait: if the writer falls
//! behind, lines are dropped and counted (`credentialflow_access_log_dropped_total`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::metrics;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;
/// The writer flushes at least this often, so a crash loses at most about this much.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

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
    /// The matched route's name (`null` for the AI front doors and unrouted requests).
    pub route: Option<&'a str>,
    pub status: u16,
    pub duration_us: u64,
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
    "key_id",
    "team",
    "model",
    "prompt",
    "usage",
    "attempts",
];

impl AccessEntry<'_> {
    /// The JSON line, without its newline.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("access-log entries serialize")
    }
}

/// Starts the writer for `target` ("-" = stdout, "" = off, else a file appended to).
/// The returned handle finishes once every [`AccessLog`] clone is dropped and the queue is written.
pub fn start(target: &Path) -> std::io::Result<(AccessLog, Option<JoinHandle<()>>)> {
    if target.as_os_str().is_empty() {
        return Ok((AccessLog::Off, None));
    }
    let out: Box<dyn Write + Send> = if target == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Box::new(OpenOptions::new().create(true).append(true).open(target)?)
    };
    let (tx, rx) = bounded(QUEUE);
    let dropped = metrics::global().counter(
        "credentialflow_access_log_dropped_total",
        "Access-log lines dropped because the writer fell behind.",
    );
    let handle = std::thread::Builder::new()
        .name("cf-access-log".into())
        .spawn(move || write_lines(rx, BufWriter::with_capacity(64 * 1024, out)))?;
    Ok((AccessLog::On { tx, dropped }, Some(handle)))
}

fn write_lines(rx: Receiver<String>, mut out: BufWriter<Box<dyn Write + Send>>) {
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(line) => {
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
                // Drain what is queued before flushing, so a busy log flushes in big writes.
                while let Ok(line) = rx.try_recv() {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
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
        handle.unwrap().join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_target_is_off() {
        let (log, handle) = start(Path::new("")).unwrap();
        assert!(!log.enabled());
        assert!(handle.is_none());
        log.write("ignored".into());
    }
}

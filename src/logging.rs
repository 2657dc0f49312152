//! The gateway's own log: one line per event on stderr.
//!
//! `CF_LOG` sets the level (error, warn, info, debug, trace; default info). Lines are text,
//! `2026-12-07T19:02:29.123Z info credentialflow::serve: message` (RFC 3339, UTC, milliseconds),
//! or JSON objects with `ts`, `level`, `target` and `msg`, chosen by `[server] log_format`
//! once the config is loaded. `CF_LOG_FORMAT` (text or json), when set, overrides the config
//! and also applies to the lines written before the config is read.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::LogFormat;

/// The format in use, as a `u8` so every thread reads it without a lock.
static FORMAT: AtomicU8 = AtomicU8::new(TEXT);
const TEXT: u8 = 0;
const JSON: u8 = 1;

struct StderrLog {
    level: log::LevelFilter,
}

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = render(
            format(),
            jiff::Timestamp::now(),
            record.level(),
            record.target(),
            &record.args().to_string(),
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = match std::env::var("CF_LOG").as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    if let Some(format) = env_format() {
        store(format);
    }
    if log::set_boxed_logger(Box::new(StderrLog { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// Applies `[server] log_format` from a loaded config, unless `CF_LOG_FORMAT` chose one.
pub fn set_format(configured: LogFormat) {
    store(env_format().unwrap_or(configured));
}

/// `CF_LOG_FORMAT`, when it names a format (anything else is ignored, as for `CF_LOG`).
fn env_format() -> Option<LogFormat> {
    match std::env::var("CF_LOG_FORMAT").as_deref() {
        Ok("text") => Some(LogFormat::Text),
        Ok("json") => Some(LogFormat::Json),
        _ => None,
    }
}

fn store(format: LogFormat) {
    let value = match format {
        LogFormat::Text => TEXT,
        LogFormat::Json => JSON,
    };
    FORMAT.store(value, Ordering::Relaxed);
}

fn format() -> LogFormat {
    match FORMAT.load(Ordering::Relaxed) {
        JSON => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

/// One log line, newline included.
fn render(
    format: LogFormat,
    ts: jiff::Timestamp,
    level: log::Level,
    target: &str,
    msg: &str,
) -> String {
    let level = level.as_str().to_ascii_lowercase();
    // `{:.3}` always prints three fraction digits: lines sort and align as text.
    let ts = format!("{ts:.3}");
    match format {
        LogFormat::Json => {
            let mut line = serde_json::json!({
                "ts": ts,
                "level": level,
                "target": target,
                "msg": msg,
            })
            .to_string();
            line.push('\n');
            line
        }
        LogFormat::Text => {
            let mut line = String::with_capacity(ts.len() + target.len() + msg.len() + 16);
            let _ = write!(line, "{ts} {level} {target}: ");
            escape_controls(msg, &mut line);
            line.push('\n');
            line
        }
    }
}

/// Appends `msg` with control characters escaped, so no message (a hook's text, a peer's
/// bytes quoted in an error) can start a forged line of its own.
fn escape_controls(msg: &str, out: &mut String) {
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn text_lines_carry_an_rfc3339_utc_timestamp_with_milliseconds() {
        let line = render(
            LogFormat::Text,
            at("2026-12-07T19:02:29.123456Z"),
            log::Level::Warn,
            "credentialflow::serve",
            "config: something",
        );
        assert_eq!(
            line,
            "2026-12-07T19:02:29.123Z warn credentialflow::serve: config: something\n"
        );
        // Whole seconds still print three digits.
        let line = render(
            LogFormat::Text,
            at("2026-01-02T03:04:05Z"),
            log::Level::Info,
            "lua",
            "x",
        );
        assert_eq!(line, "2026-01-02T03:04:05.000Z info lua: x\n");
    }

    #[test]
    fn json_lines_are_one_object_with_ts_level_target_msg() {
        let line = render(
            LogFormat::Json,
            at("2026-12-07T19:02:29.004Z"),
            log::Level::Error,
            "credentialflow::admin",
            "quote \" and\nnewline",
        );
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(value["ts"], "2026-12-07T19:02:29.004Z");
        assert_eq!(value["level"], "error");
        assert_eq!(value["target"], "credentialflow::admin");
        assert_eq!(value["msg"], "quote \" and\nnewline");
        assert_eq!(value.as_object().unwrap().len(), 4);
    }

    #[test]
    fn text_messages_cannot_start_a_line_of_their_own() {
        let line = render(
            LogFormat::Text,
            at("2026-12-07T19:02:29Z"),
            log::Level::Info,
            "lua",
            "a\n2026-12-07T19:02:29.000Z error forged: b\r\x1b[31m",
        );
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        assert!(line.contains("a\\n2026"), "{line}");
        assert!(line.contains("\\r\\u{1b}[31m"), "{line}");
    }
}

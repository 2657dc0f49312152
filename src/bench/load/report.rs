//! The run's summary: as text for people, or (`--json`) as one JSON object on stdout whose
//! fields are documented on [`Summary`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::ErrorKind;
use super::stats::Stats;

/// Latency percentiles in milliseconds (microsecond precision).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a microsecond histogram; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles {
                min: 0.0,
                mean: 0.0,
                stdev: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
            };
        }
        let ms = |micros: f64| (micros).round() / 1000.0;
        let q = |quantile: f64| ms(h.value_at_quantile(quantile) as f64);
        Percentiles {
            min: ms(h.min() as f64),
            mean: ms(h.mean()),
            stdev: ms(h.stdev()),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            max: ms(h.max() as f64),
        }
    }
}

/// Stream timings (`--stream`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamSummary {
    /// Server-sent events seen over all responses.
    pub events: u64,
    /// Responses with at least one event.
    pub responses_with_events: u64,
    /// From the request's start to its first complete event, in ms.
    pub first_event_ms: Percentiles,
    /// From the request's start to its last complete event, in ms.
    pub last_event_ms: Percentiles,
}

/// The summary of a run. `--json` prints exactly these fields, in this order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The URL under test.
    pub url: String,
    /// `"closed"` (each connection sends its next request when the last one is answered)
    /// or `"open"` (`--rate`: requests are sent on a fixed schedule).
    pub mode: &'static str,
    /// Connections (`-c`).
    pub connections: usize,
    /// Load threads, each with its own runtime and share of the connections.
    pub threads: usize,
    /// The offered rate in requests per second (open loop), else null.
    pub rate: Option<f64>,
    /// Warm-up seconds (requests sent, not recorded).
    pub warmup_s: f64,
    /// Seconds measured: from the end of the warm-up to the end of the last recorded request.
    pub duration_s: f64,
    /// Requests recorded: `responses` plus `errors_total`.
    pub requests: u64,
    /// Complete responses, any status.
    pub responses: u64,
    /// Responses per second over `duration_s`.
    pub rps: f64,
    /// Responses by status code (keys are the codes as strings).
    pub status: BTreeMap<String, u64>,
    /// Failed requests by kind: `connect`, `tls`, `write`, `read`, `timeout`, `protocol`.
    pub errors: BTreeMap<&'static str, u64>,
    /// Sum of `errors`.
    pub errors_total: u64,
    /// The first failure, as `kind: detail`, or null.
    pub first_error: Option<String>,
    /// Open loop with `-d`: requests due before the end that were never sent because every
    /// connection was busy (0 in closed loop).
    pub unsent: u64,
    /// Bytes read from the sockets for recorded requests, heads included (after TLS).
    pub bytes_read: u64,
    /// Response body bytes, after chunked decoding.
    pub body_bytes: u64,
    /// Latency to the end of each response, in ms: from the send in closed loop, from the
    /// intended send time in open loop (so time spent waiting for a free connection counts).
    pub latency_ms: Percentiles,
    /// Stream timings with `--stream`, else null.
    pub stream: Option<StreamSummary>,
}

/// What the summary needs to know about the run besides its stats.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// The URL under test.
    pub url: String,
    /// Open loop.
    pub open_loop: bool,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// Offered rate.
    pub rate: Option<f64>,
    /// Warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub measured: Duration,
    /// Whether `--stream` was set.
    pub stream: bool,
}

impl Summary {
    /// Builds the summary from the merged stats.
    pub fn new(info: &RunInfo, stats: &Stats) -> Summary {
        let duration_s = info.measured.as_secs_f64();
        let responses = stats.responses();
        Summary {
            url: info.url.clone(),
            mode: if info.open_loop { "open" } else { "closed" },
            connections: info.connections,
            threads: info.threads,
            rate: info.rate,
            warmup_s: info.warmup.as_secs_f64(),
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            requests: stats.requests,
            responses,
            rps: if duration_s > 0.0 {
                (responses as f64 / duration_s * 10.0).round() / 10.0
            } else {
                0.0
            },
            status: stats
                .statuses
                .iter()
                .map(|(code, n)| (code.to_string(), *n))
                .collect(),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| (k.name(), stats.errors.get(k).copied().unwrap_or(0)))
                .collect(),
            errors_total: stats.error_count(),
            first_error: stats.first_error.clone(),
            unsent: stats.unsent,
            bytes_read: stats.bytes_read,
            body_bytes: stats.body_bytes,
            latency_ms: Percentiles::of(&stats.latency),
            stream: info.stream.then(|| StreamSummary {
                events: stats.events,
                responses_with_events: stats.first_event.len(),
                first_event_ms: Percentiles::of(&stats.first_event),
                last_event_ms: Percentiles::of(&stats.last_event),
            }),
        }
    }

    /// The process exit code: 2 when requests were made and not one got a response (the
    /// target is down or refuses us: a runtime failure), else 0. Error statuses such as 500
    /// are responses, not failures of the tool.
    pub fn exit_code(&self) -> i32 {
        if self.requests > 0 && self.responses == 0 {
            2
        } else {
            0
        }
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serializes")
    }

    /// The summary as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            out,
            "{}: {mode}, {} connections, {} threads, {:.2} s measured{}",
            self.url,
            self.connections,
            self.threads,
            self.duration_s,
            if self.warmup_s > 0.0 {
                format!(" after {:.2} s warm-up", self.warmup_s)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  requests     {} ({} responses, {} errors), {:.1} req/s",
            self.requests, self.responses, self.errors_total, self.rps
        );
        if !self.status.is_empty() {
            let statuses: Vec<String> = self
                .status
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            let _ = writeln!(out, "  status       {}", statuses.join(", "));
        }
        if self.errors_total > 0 {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  errors       {}", kinds.join(", "));
            if let Some(first) = &self.first_error {
                let _ = writeln!(out, "  first error  {first}");
            }
        }
        if self.unsent > 0 {
            let _ = writeln!(
                out,
                "  unsent       {} (due, but every connection was busy)",
                self.unsent
            );
        }
        let _ = writeln!(out, "  latency      {}", percentiles_line(&self.latency_ms));
        if let Some(stream) = &self.stream {
            let _ = writeln!(
                out,
                "  events       {} in {} responses",
                stream.events, stream.responses_with_events
            );
            let _ = writeln!(
                out,
                "  first event  {}",
                percentiles_line(&stream.first_event_ms)
            );
            let _ = writeln!(
                out,
                "  last event   {}",
                percentiles_line(&stream.last_event_ms)
            );
        }
        let _ = writeln!(
            out,
            "  read         {} (bodies {})",
            human_bytes(self.bytes_read),
            human_bytes(self.body_bytes)
        );
        out
    }
}

fn percentiles_line(p: &Percentiles) -> String {
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (mean {:.3}, stdev {:.3})",
        p.p50, p.p90, p.p99, p.p99_9, p.max, p.mean, p.stdev
    )
}

/// Bytes with a binary unit, e.g. `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The live progress line: seconds since the start, the last second's response rate, errors
/// so far and the p99 of the requests recorded so far.
pub fn progress_line(
    elapsed: Duration,
    rate: f64,
    errors: u64,
    p99: Option<Duration>,
    warming_up: bool,
) -> String {
    let p99 = match p99 {
        Some(p) => format!("{:.3} ms", p.as_secs_f64() * 1000.0),
        None => "-".to_string(),
    };
    format!(
        "[{:>4.0}s] {rate:>10.1} req/s  errors {errors}  p99 {p99}{}",
        elapsed.as_secs_f64(),
        if warming_up { "  (warm-up)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::client::{Failure, Response};

    fn info() -> RunInfo {
        RunInfo {
            url: "http://h/".into(),
            open_loop: false,
            connections: 2,
            threads: 1,
            rate: None,
            warmup: Duration::ZERO,
            measured: Duration::from_secs(2),
            stream: false,
        }
    }

    fn stats_with(statuses: &[u16], errors: usize) -> Stats {
        let mut stats = Stats::default();
        for &status in statuses {
            let response = Response {
                status,
                bytes_read: 100,
                body_bytes: 10,
                events: 0,
                first_event: None,
                last_event: None,
            };
            stats.record(&Ok(response), Duration::from_millis(5), |_| Duration::ZERO);
        }
        for _ in 0..errors {
            let failure = Failure {
                kind: ErrorKind::Connect,
                message: "refused".into(),
            };
            stats.record(&Err(failure), Duration::ZERO, |_| Duration::ZERO);
        }
        stats
    }

    #[test]
    fn json_has_the_documented_fields() {
        let summary = Summary::new(&info(), &stats_with(&[200, 200, 404], 1));
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        for field in [
            "url",
            "mode",
            "connections",
            "threads",
            "rate",
            "warmup_s",
            "duration_s",
            "requests",
            "responses",
            "rps",
            "status",
            "errors",
            "errors_total",
            "first_error",
            "unsent",
            "bytes_read",
            "body_bytes",
            "latency_ms",
            "stream",
        ] {
            assert!(json.get(field).is_some(), "missing {field}: {json}");
        }
        assert_eq!(json["requests"], 4);
        assert_eq!(json["responses"], 3);
        assert_eq!(json["status"]["200"], 2);
        assert_eq!(json["errors"]["connect"], 1);
        assert_eq!(json["errors"]["timeout"], 0);
        assert_eq!(json["rps"], 1.5);
        assert_eq!(json["mode"], "closed");
        assert!(json["stream"].is_null());
        for p in ["min", "mean", "stdev", "p50", "p90", "p99", "p99_9", "max"] {
            assert!(json["latency_ms"][p].is_number(), "{p}");
        }
    }

    #[test]
    fn latency_percentiles_are_in_milliseconds() {
        let summary = Summary::new(&info(), &stats_with(&[200], 0));
        assert!(
            (summary.latency_ms.p50 - 5.0).abs() < 0.01,
            "{:?}",
            summary.latency_ms
        );
    }

    #[test]
    fn stream_section_is_present_with_stream() {
        let mut with_stream = info();
        with_stream.stream = true;
        let summary = Summary::new(&with_stream, &stats_with(&[200], 0));
        let stream = summary.stream.expect("stream section");
        assert_eq!(stream.responses_with_events, 0);
    }

    #[test]
    fn exit_code_is_2_only_when_no_request_got_a_response() {
        assert_eq!(Summary::new(&info(), &stats_with(&[], 3)).exit_code(), 2);
        assert_eq!(Summary::new(&info(), &stats_with(&[500], 3)).exit_code(), 0);
        assert_eq!(Summary::new(&info(), &stats_with(&[200], 0)).exit_code(), 0);
    }

    #[test]
    fn text_names_requests_statuses_errors_and_percentiles() {
        let text = Summary::new(&info(), &stats_with(&[200, 503], 1)).to_text();
        assert!(text.contains("3 (2 responses, 1 errors)"), "{text}");
        assert!(text.contains("200: 1, 503: 1"), "{text}");
        assert!(text.contains("connect 1"), "{text}");
        assert!(text.contains("first error  connect: refused"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn progress_line_shows_rate_errors_p99_and_warm_up() {
        let line = progress_line(
            Duration::from_secs(3),
            1234.5,
            2,
            Some(Duration::from_micros(1500)),
            true,
        );
        assert!(line.contains("1234.5 req/s"), "{line}");
        assert!(line.contains("errors 2"), "{line}");
        assert!(line.contains("p99 1.500 ms"), "{line}");
        assert!(line.contains("warm-up"), "{line}");
    }
}

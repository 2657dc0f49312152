//! The `x-ratelimit-*` response headers (OpenAI's names): the most constraining request and
//! token decisions a request met on its way through the limits, and when each resets.

use std::fmt::Write as _;

use super::gcra::Decision;
use crate::http1::StrBuf;

/// The decisions a response reports in its `x-ratelimit-*` headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateReport {
    /// The request limiter with the least remaining.
    pub requests: Option<Decision>,
    /// The token limiter with the least remaining.
    pub tokens: Option<Decision>,
}

impl RateReport {
    /// Records a request-limiter decision, keeping the most constraining one.
    pub fn requests(&mut self, d: Decision) {
        self.requests = Some(most_constraining(self.requests, d));
    }

    /// Records a token-limiter decision, keeping the most constraining one.
    pub fn tokens(&mut self, d: Decision) {
        self.tokens = Some(most_constraining(self.tokens, d));
    }

    /// Whether there is anything to report.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Appends the `x-ratelimit-*` header lines (OpenAI's names) to `out`.
    pub fn write_headers(&self, out: &mut Vec<u8>) {
        for (suffix, decision) in [("requests", self.requests), ("tokens", self.tokens)] {
            if let Some(d) = decision {
                let _ = write!(
                    StrBuf(out),
                    "x-ratelimit-limit-{suffix}: {}\r\nx-ratelimit-remaining-{suffix}: {}\r\nx-ratelimit-reset-{suffix}: {}\r\n",
                    d.limit,
                    d.remaining,
                    format_reset(d.reset_after_ns)
                );
            }
        }
    }
}

fn most_constraining(current: Option<Decision>, new: Decision) -> Decision {
    match current {
        Some(c) if c.remaining < new.remaining => c,
        Some(c) if c.remaining == new.remaining && c.reset_after_ns >= new.reset_after_ns => c,
        _ => new,
    }
}

/// A duration in the style OpenAI uses for `x-ratelimit-reset-*` (Go's `Duration.String`
/// rounded to milliseconds): `"0s"`, `"250ms"`, `"1s"`, `"1.5s"`, `"6m0s"`, `"1h2m3s"`.
pub fn format_reset(ns: u64) -> String {
    let ms = ns.div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let seconds_ms = ms % 60_000;
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let (whole, frac) = (seconds_ms / 1000, seconds_ms % 1000);
    if frac == 0 {
        let _ = write!(out, "{whole}s");
    } else {
        let frac = format!("{frac:03}");
        let _ = write!(out, "{whole}.{}s", frac.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(remaining: u64, reset_after_ns: u64) -> Decision {
        Decision {
            allowed: true,
            limit: 10,
            remaining,
            reset_after_ns,
            retry_after_ns: 0,
        }
    }

    #[test]
    fn reset_durations_read_like_openai_headers() {
        assert_eq!(format_reset(0), "0s");
        assert_eq!(format_reset(250_000_000), "250ms");
        assert_eq!(format_reset(1), "1ms");
        assert_eq!(format_reset(1_000_000_000), "1s");
        assert_eq!(format_reset(1_500_000_000), "1.5s");
        assert_eq!(format_reset(360_000_000_000), "6m0s");
        assert_eq!(format_reset(3_723_000_000_000), "1h2m3s");
        assert_eq!(format_reset(61_250_000_000), "1m1.25s");
    }

    #[test]
    fn report_keeps_the_limiter_with_least_remaining() {
        let mut report = RateReport::default();
        report.requests(decision(5, 1_000_000_000));
        report.requests(decision(2, 500_000_000));
        report.requests(decision(7, 9_000_000_000));
        assert_eq!(report.requests.unwrap().remaining, 2);
        let mut out = Vec::new();
        report.write_headers(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x-ratelimit-limit-requests: 10\r\nx-ratelimit-remaining-requests: 2\r\nx-ratelimit-reset-requests: 500ms\r\n"
        );
    }
}

//! What one load thread measured; merged into the run's totals at the end.
//!
//! Latencies go into HDR histograms (microseconds, 1 µs to 1 hour, 3 significant digits:
//! every percentile is within 0.1% of the recorded value, whatever the distribution).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::client::{ErrorKind, Failure, Response};

/// The largest latency recorded exactly: one hour, in microseconds. Longer ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records `latency` into `histogram`, in microseconds (at least 1).
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.clamp(1, MAX_MICROS));
}

/// Counts and histograms of recorded requests (warm-up requests are not recorded).
#[derive(Clone, Debug)]
pub struct Stats {
    /// Requests attempted: responses plus errors.
    pub requests: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first failure's text, to show what went wrong.
    pub first_error: Option<String>,
    /// Bytes read from the sockets, heads included.
    pub bytes_read: u64,
    /// Response body bytes, after chunked decoding.
    pub body_bytes: u64,
    /// Latency from the request's start (intended start in open loop) to the end of the
    /// response.
    pub latency: Histogram<u64>,
    /// Server-sent events seen (with `--stream`).
    pub events: u64,
    /// Time to the first event of each response that had one.
    pub first_event: Histogram<u64>,
    /// Time to the last event of each response that had one.
    pub last_event: Histogram<u64>,
    /// Open loop: requests that were due before the end but never sent (every connection
    /// was busy).
    pub unsent: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            first_error: None,
            bytes_read: 0,
            body_bytes: 0,
            latency: new_histogram(),
            events: 0,
            first_event: new_histogram(),
            last_event: new_histogram(),
            unsent: 0,
        }
    }
}

impl Stats {
    /// Records one request that ended with `outcome` after `latency`; `since_start` turns an
    /// event's instant into the time since the request's (intended) start.
    pub fn record(
        &mut self,
        outcome: &Result<Response, Failure>,
        latency: Duration,
        since_start: impl Fn(std::time::Instant) -> Duration,
    ) {
        self.requests += 1;
        match outcome {
            Ok(response) => {
                *self.statuses.entry(response.status).or_default() += 1;
                self.bytes_read += response.bytes_read;
                self.body_bytes += response.body_bytes;
                record_latency(&mut self.latency, latency);
                self.events += response.events;
                if let Some(first) = response.first_event {
                    record_latency(&mut self.first_event, since_start(first));
                }
                if let Some(last) = response.last_event {
                    record_latency(&mut self.last_event, since_start(last));
                }
            }
            Err(failure) => {
                *self.errors.entry(failure.kind).or_default() += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(failure.to_string());
                }
            }
        }
    }

    /// Responses received, any status.
    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Failed requests, any kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.requests += other.requests;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.bytes_read += other.bytes_read;
        self.body_bytes += other.body_bytes;
        self.events += other.events;
        self.unsent += other.unsent;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.first_event.add(&other.first_event);
        let _ = self.last_event.add(&other.last_event);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ok(status: u16, bytes: u64) -> Result<Response, Failure> {
        Ok(Response {
            status,
            bytes_read: bytes + 40,
            body_bytes: bytes,
            events: 0,
            first_event: None,
            last_event: None,
        })
    }

    fn failed(kind: ErrorKind) -> Result<Response, Failure> {
        Err(Failure {
            kind,
            message: "boom".into(),
        })
    }

    fn zero(_: Instant) -> Duration {
        Duration::ZERO
    }

    #[test]
    fn responses_count_by_status_and_errors_by_kind() {
        let mut stats = Stats::default();
        stats.record(&ok(200, 10), Duration::from_millis(1), zero);
        stats.record(&ok(200, 10), Duration::from_millis(1), zero);
        stats.record(&ok(503, 0), Duration::from_millis(1), zero);
        stats.record(&failed(ErrorKind::Read), Duration::from_millis(1), zero);
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.responses(), 3);
        assert_eq!(stats.statuses.get(&200), Some(&2));
        assert_eq!(stats.statuses.get(&503), Some(&1));
        assert_eq!(stats.error_count(), 1);
        assert_eq!(stats.first_error.as_deref(), Some("read: boom"));
        assert_eq!((stats.body_bytes, stats.bytes_read), (20, 140));
    }

    #[test]
    fn failed_requests_are_not_in_the_latency_histogram() {
        let mut stats = Stats::default();
        stats.record(&failed(ErrorKind::Connect), Duration::from_secs(5), zero);
        assert_eq!(stats.latency.len(), 0);
    }

    #[test]
    fn percentiles_are_within_a_tenth_of_a_percent() {
        let mut stats = Stats::default();
        for ms in 1..=1000u64 {
            stats.record(&ok(200, 0), Duration::from_millis(ms), zero);
        }
        let p99 = stats.latency.value_at_quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() <= 990.0, "{p99}");
        assert_eq!(
            stats.latency.max(),
            stats.latency.highest_equivalent(1_000_000)
        );
    }

    #[test]
    fn latency_over_an_hour_saturates() {
        let mut h = new_histogram();
        record_latency(&mut h, Duration::from_secs(7200));
        assert_eq!(h.len(), 1);
        assert!(h.max() >= MAX_MICROS);
    }

    #[test]
    fn event_times_are_recorded_relative_to_the_start() {
        let start = Instant::now();
        let response = Response {
            status: 200,
            bytes_read: 0,
            body_bytes: 0,
            events: 3,
            first_event: Some(start + Duration::from_millis(10)),
            last_event: Some(start + Duration::from_millis(90)),
        };
        let mut stats = Stats::default();
        stats.record(&Ok(response), Duration::from_millis(100), |t| {
            t.duration_since(start)
        });
        assert_eq!(stats.events, 3);
        let first = stats.first_event.value_at_quantile(0.5);
        let last = stats.last_event.value_at_quantile(0.5);
        assert!(first.abs_diff(10_000) <= 10, "{first}");
        assert!(last.abs_diff(90_000) <= 90, "{last}");
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Stats::default();
        a.record(&ok(200, 5), Duration::from_millis(1), zero);
        let mut b = Stats::default();
        b.record(&ok(200, 5), Duration::from_millis(3), zero);
        b.record(&failed(ErrorKind::Timeout), Duration::ZERO, zero);
        b.unsent = 2;
        a.merge(&b);
        assert_eq!((a.requests, a.responses(), a.error_count()), (3, 2, 1));
        assert_eq!(a.latency.len(), 2);
        assert_eq!((a.body_bytes, a.unsent), (10, 2));
    }
}

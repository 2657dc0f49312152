//! `credentialflow_webhook_deliveries_total{event,result}`: what became of each webhook
//! delivery. `result` is `delivered` (a receiver answered 2xx), `failed` (an attempt that
//! will be retried), `gave_up` (the last attempt failed) or `dropped` (the queue was full).
//! The delivery thread and the store's writers count; a scrape reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{escape_label_value, family_header};
use crate::store::webhook_queue::Enqueued;

/// Name of the family rendered here, which a registered counter may not take.
pub(super) const FAMILIES: [&str; 1] = ["credentialflow_webhook_deliveries_total"];

/// Delivery outcomes by event type and result. Event types are the few the gateway
/// defines, results the four above, so the map stays small.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// `budget.threshold` reports lost before reaching the queue (the settlement's channel
    /// to the delivery thread was full). Counted without a lock: it happens on a worker.
    crossings_dropped: AtomicU64,
}

impl WebhookMetrics {
    /// Counts one outcome of an event of type `event`.
    pub fn record(&self, event: &str, result: &'static str) {
        *self
            .counts
            .lock()
            .entry((event.to_owned(), result))
            .or_insert(0) += 1;
    }

    /// Counts an event the queue refused for want of room (`dropped`); a queued or
    /// duplicate one is not a delivery yet.
    pub fn record_enqueue(&self, event: &str, queued: Enqueued) {
        if queued == Enqueued::Full {
            log::error!("webhook queue full: {event} event dropped");
            self.record(event, "dropped");
        }
    }

    /// Counts a `budget.threshold` report a worker could not hand to the delivery thread
    /// (its channel was full): shown as `dropped`, like an event the queue refused.
    pub fn record_crossing_dropped(&self) {
        self.crossings_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The count for `event` and `result` so far.
    pub fn count(&self, event: &str, result: &'static str) -> u64 {
        let counted = self
            .counts
            .lock()
            .get(&(event.to_owned(), result))
            .copied()
            .unwrap_or(0);
        counted + self.lost_crossings(event, result)
    }

    /// The lock-free part of [`WebhookMetrics::count`].
    fn lost_crossings(&self, event: &str, result: &str) -> u64 {
        if event == "budget.threshold" && result == "dropped" {
            self.crossings_dropped.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        let mut counts = self.counts.lock().clone();
        let lost = self.crossings_dropped.load(Ordering::Relaxed);
        if lost > 0 {
            *counts
                .entry(("budget.threshold".to_owned(), "dropped"))
                .or_insert(0) += lost;
        }
        if counts.is_empty() {
            return;
        }
        family_header(
            out,
            FAMILIES[0],
            "counter",
            "Webhook deliveries by event type and result (delivered, failed, gave_up, dropped).",
        );
        for ((event, result), count) in counts.iter() {
            let _ = writeln!(
                out,
                "{}{{event=\"{}\",result=\"{result}\"}} {count}",
                FAMILIES[0],
                escape_label_value(event)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossings_lost_before_the_queue_render_as_dropped_threshold_events() {
        let metrics = WebhookMetrics::default();
        metrics.record_crossing_dropped();
        metrics.record_crossing_dropped();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains(
                "credentialflow_webhook_deliveries_total{event=\"budget.threshold\",result=\"dropped\"} 2"
            ),
            "{out}"
        );
        assert_eq!(metrics.count("budget.threshold", "dropped"), 2);
    }

    #[test]
    fn outcomes_render_per_event_and_result() {
        let metrics = WebhookMetrics::default();
        metrics.record("key.created", "delivered");
        metrics.record("key.created", "delivered");
        metrics.record_enqueue("key.revoked", Enqueued::Full);
        metrics.record_enqueue("key.revoked", Enqueued::Queued);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains(
            "credentialflow_webhook_deliveries_total{event=\"key.created\",result=\"delivered\"} 2"
        ));
        assert!(out.contains(
            "credentialflow_webhook_deliveries_total{event=\"key.revoked\",result=\"dropped\"} 1"
        ));
        assert_eq!(metrics.count("key.revoked", "dropped"), 1);
    }
}

//! The delivery thread: one per gateway, beside the workers, never on them.
//!
//! Each turn it
//! 1. turns the budget table's threshold crossings into `budget.threshold` events;
//! 2. scans the keys for `key.expiring` when the store changed or a minute passed;
//! 3. claims due events from the store's queue and POSTs each to the receivers subscribed
//!    to it that have not accepted it yet; a failure is retried after `backoff` doubled per
//!    attempt (at most an hour), and after `max_attempts` the event is given up on, audited
//!    as `webhook_give_up`.
//!
//! Every step is bounded: a claim takes at most [`CLAIM_BATCH`] events, an attempt lasts at
//! most the receiver's `timeout`, and the thread waits on the crossings channel between
//! turns, so a receiver that is slow or down delays only other deliveries, never a request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::event::{budget_threshold, key_expiring, render_body};
use super::sign::{signature, target_id};
use crate::config::{Secret, StoreSettings, WebhookConfig};
use crate::identity::http::{Endpoint, Limits};
use crate::limits::BudgetCrossing;
use crate::store::webhook_queue::{
    take_queued_here, QueuedWebhook, WebhookOutcome, QUEUED_POLL, RETAIN_MS,
};
use crate::store::{self, KeyBackend};

/// Most events claimed per turn.
pub const CLAIM_BATCH: usize = 32;

/// How long the thread waits between turns when there is nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Turns run [`QUEUED_POLL`] apart after this process queued an event.
const QUICK_TURNS: u32 = 4;

/// How often the keys are scanned for `key.expiring` when nothing changed.
const EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How often finished rows past [`RETAIN_MS`] are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// The longest wait between attempts, however many there were.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Largest response body read from a receiver (its content is not used).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Crossings turned into events per turn, so a flood cannot starve delivery.
const MAX_CROSSINGS_PER_TURN: usize = 1024;

/// Actor of the audit entries the thread writes.
pub const AUDIT_ACTOR: &str = "webhook";

/// Audit action of an event given up on.
pub const GIVE_UP_ACTION: &str = "webhook_give_up";

/// One receiver, ready to call.
struct Target {
    /// [`target_id`] of its URL.
    id: String,
    config: WebhookConfig,
    endpoint: Endpoint,
    secret: Secret,
}

/// The running thread; [`Delivery::stop`] ends it.
pub struct Delivery {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Delivery {
    /// Opens the store `settings` name (a connection of the thread's own) and starts the
    /// thread delivering to `webhooks`, reading threshold crossings from `crossings`. With
    /// no webhooks it still runs, marking queued events delivered to nobody so the queue
    /// does not fill. Fails on a URL or secret that cannot be used (`check` refuses them).
    pub fn start(
        settings: &StoreSettings,
        webhooks: &[WebhookConfig],
        crossings: Receiver<BudgetCrossing>,
    ) -> Result<Delivery, String> {
        let targets = webhooks
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let endpoint = Endpoint::new(&config.url)
                    .map_err(|e| format!("webhook[{i}].url {}: {e}", config.shown_url()))?;
                let secret = config
                    .secret
                    .as_ref()
                    .ok_or_else(|| format!("webhook[{i}].secret is required"))?
                    .resolve()
                    .map_err(|e| format!("webhook[{i}].secret: {e}"))?;
                Ok(Target {
                    id: target_id(&config.url),
                    config: config.clone(),
                    endpoint,
                    secret,
                })
            })
            .collect::<Result<Vec<Target>, String>>()?;
        let backend = store::open(settings).map_err(|e| format!("webhook queue: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("cf-webhooks".into())
                .spawn(move || {
                    Worker {
                        backend,
                        targets,
                        crossings,
                        last_seq: None,
                        last_scan: None,
                        last_prune: None,
                    }
                    .run(&stop)
                })
                .map_err(|e| format!("cannot start the webhook thread: {e}"))?
        };
        Ok(Delivery { stop, thread })
    }

    /// Ends the thread after the delivery under way (bounded by its timeout). Events not
    /// delivered yet stay queued for the next start.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// The thread's state.
struct Worker {
    backend: Box<dyn KeyBackend>,
    targets: Vec<Target>,
    crossings: Receiver<BudgetCrossing>,
    /// The key store's change sequence at the last expiry scan.
    last_seq: Option<u64>,
    last_scan: Option<Instant>,
    last_prune: Option<Instant>,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        // Turns still to run at the quick pace after an event was queued here: a key write
        // notes its event inside its transaction, so the first turn may come before the
        // commit and find nothing.
        let mut quick_turns = 0u32;
        while !stop.load(Ordering::SeqCst) {
            self.take_crossings();
            self.scan_expiring();
            self.prune();
            let delivered = self.deliver_due(stop);
            if delivered == 0 {
                quick_turns = quick_turns.saturating_sub(1);
                if quick_turns == 0 {
                    quick_turns = self.idle(stop);
                } else {
                    std::thread::sleep(QUEUED_POLL);
                }
            }
        }
    }

    /// Waits up to [`IDLE_WAIT`] for something to do: a threshold crossing (queued at
    /// once), or an event queued by this process (seen within [`QUEUED_POLL`]). Returns how
    /// many quick turns to run next.
    fn idle(&mut self, stop: &AtomicBool) -> u32 {
        let until = Instant::now() + IDLE_WAIT;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            if take_queued_here() {
                return QUICK_TURNS;
            }
            match self.crossings.recv_timeout(QUEUED_POLL) {
                Ok(crossing) => {
                    self.queue_crossing(&crossing);
                    return QUICK_TURNS;
                }
                Err(RecvTimeoutError::Timeout) => {}
                // No sender: the budget table reports nothing (no budget.threshold
                // subscriber); sleep instead.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(QUEUED_POLL),
            }
        }
        0
    }

    fn take_crossings(&mut self) {
        for _ in 0..MAX_CROSSINGS_PER_TURN {
            match self.crossings.try_recv() {
                Ok(crossing) => self.queue_crossing(&crossing),
                Err(_) => return,
            }
        }
    }

    fn queue_crossing(&mut self, crossing: &BudgetCrossing) {
        if !self
            .targets
            .iter()
            .any(|t| t.config.wants("budget.threshold"))
        {
            return;
        }
        let key = match crossing.scope.strip_prefix("key:") {
            Some(id) => self.backend.get(id).ok().flatten(),
            None => None,
        };
        let event = budget_threshold(crossing, key.as_ref());
        if let Err(e) = super::emit(self.backend.as_mut(), &event) {
            log::warn!(
                "webhook: budget.threshold for {} not queued: {e}",
                crossing.scope
            );
        }
    }

    /// Queues `key.expiring` for every active key whose expiry is within a subscriber's
    /// window; the queue's de-duplication makes it once per key, expiry and receiver.
    fn scan_expiring(&mut self) {
        let windows: Vec<(String, i64)> = self
            .targets
            .iter()
            .filter(|t| t.config.wants("key.expiring"))
            .map(|t| {
                let window = t.config.expiring_window().as_millis();
                (t.id.clone(), i64::try_from(window).unwrap_or(i64::MAX))
            })
            .collect();
        if windows.is_empty() {
            return;
        }
        let seq = match self.backend.max_seq() {
            Ok(seq) => seq,
            Err(e) => {
                log::warn!("webhook: key.expiring scan: {e}");
                return;
            }
        };
        let due = self
            .last_scan
            .is_none_or(|at| at.elapsed() >= EXPIRY_SCAN_INTERVAL);
        if !due && self.last_seq == Some(seq) {
            return;
        }
        let keys = match self.backend.list() {
            Ok(keys) => keys,
            Err(e) => {
                log::warn!("webhook: key.expiring scan: {e}");
                return;
            }
        };
        let now_ms = crate::clock::unix_now_ms();
        for key in keys.iter().filter(|k| k.is_active_at_ms(now_ms)) {
            let Some(expires_at_ms) = key.expires_at_ms else {
                continue;
            };
            for (target, window) in &windows {
                if expires_at_ms <= now_ms.saturating_add(*window) {
                    let event = key_expiring(key, expires_at_ms, target);
                    if let Err(e) = super::emit(self.backend.as_mut(), &event) {
                        log::warn!("webhook: key.expiring for {} not queued: {e}", key.id);
                    }
                }
            }
        }
        self.last_seq = Some(seq);
        self.last_scan = Some(Instant::now());
    }

    fn prune(&mut self) {
        if self
            .last_prune
            .is_some_and(|at| at.elapsed() < PRUNE_INTERVAL)
        {
            return;
        }
        let before = crate::clock::unix_now_ms() - RETAIN_MS;
        if let Err(e) = self.backend.prune_webhooks(before) {
            log::warn!("webhook: pruning the queue: {e}");
        }
        self.last_prune = Some(Instant::now());
    }

    /// Claims and delivers the due events; returns how many were claimed.
    fn deliver_due(&mut self, stop: &AtomicBool) -> usize {
        let now_ms = crate::clock::unix_now_ms();
        let claimed = match self
            .backend
            .claim_webhooks(now_ms, CLAIM_BATCH, self.lease_ms())
        {
            Ok(claimed) => claimed,
            Err(e) => {
                log::warn!("webhook: reading the queue: {e}");
                return 0;
            }
        };
        let count = claimed.len();
        for queued in claimed {
            let outcome = if stop.load(Ordering::SeqCst) {
                // Stopping: hand the rest back at once (no attempt counted) rather than
                // leave them leased until the lease runs out.
                WebhookOutcome::Retry {
                    attempts: queued.attempts,
                    next_attempt_ms: now_ms,
                    delivered_to: queued.delivered_to.clone(),
                }
            } else {
                self.deliver(&queued)
            };
            if let Err(e) = self.backend.finish_webhook(queued.seq, &outcome) {
                log::warn!(
                    "webhook: recording {} {}: {e}",
                    queued.event.kind,
                    queued.event.id
                );
            }
        }
        count
    }

    /// A claim's lease: long enough for every receiver's timeout on every event claimed,
    /// so a live node's claim never runs out under it.
    fn lease_ms(&self) -> i64 {
        let per_event: Duration = self
            .targets
            .iter()
            .map(|t| t.config.attempt_timeout())
            .sum();
        let lease = per_event * CLAIM_BATCH as u32 + Duration::from_secs(30);
        i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// One attempt at every subscribed receiver that has not accepted `queued` yet.
    fn deliver(&mut self, queued: &QueuedWebhook) -> WebhookOutcome {
        let event = &queued.event;
        let mut delivered_to = queued.delivered_to.clone();
        let mut failed: Vec<usize> = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            let subscribed = match &event.target {
                Some(id) => *id == target.id,
                None => target.config.wants(&event.kind),
            };
            if !subscribed || delivered_to.contains(&target.id) {
                continue;
            }
            match post(target, event) {
                Ok(()) => {
                    crate::metrics::global()
                        .webhooks()
                        .record(&event.kind, "delivered");
                    delivered_to.push(target.id.clone());
                }
                Err(why) => {
                    log::warn!(
                        "webhook {}: {} {} attempt {}: {why}",
                        target.config.shown_url(),
                        event.kind,
                        event.id,
                        queued.attempts + 1
                    );
                    failed.push(i);
                }
            }
        }
        if failed.is_empty() {
            return WebhookOutcome::Delivered;
        }
        let attempts = queued.attempts.saturating_add(1);
        let failing = || failed.iter().map(|&i| &self.targets[i].config);
        let max_attempts = failing().map(|c| c.max_attempts).max().unwrap_or(1);
        if attempts >= max_attempts {
            for _ in &failed {
                crate::metrics::global()
                    .webhooks()
                    .record(&event.kind, "gave_up");
            }
            self.audit_give_up(queued, attempts);
            return WebhookOutcome::GaveUp {
                attempts,
                delivered_to,
            };
        }
        for _ in &failed {
            crate::metrics::global()
                .webhooks()
                .record(&event.kind, "failed");
        }
        let base = failing()
            .map(|c| c.backoff_base())
            .min()
            .unwrap_or(Duration::from_secs(1));
        let wait = backoff(base, attempts);
        WebhookOutcome::Retry {
            attempts,
            next_attempt_ms: crate::clock::unix_now_ms()
                + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
            delivered_to,
        }
    }

    fn audit_give_up(&mut self, queued: &QueuedWebhook, attempts: u32) {
        let event = &queued.event;
        log::error!(
            "webhook: gave up on {} {} after {attempts} attempts",
            event.kind,
            event.id
        );
        let key_id = event
            .data
            .get("key")
            .and_then(|k| k.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        if let Err(e) =
            self.backend
                .append_audit(AUDIT_ACTOR, GIVE_UP_ACTION, key_id.as_deref(), None, None)
        {
            log::error!("webhook: auditing the give-up of {}: {e}", event.id);
        }
    }
}

/// The wait before attempt `attempts + 1`: `base * 2^(attempts-1)`, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// One signed POST of `event` to `target`; `Ok` on a 2xx answer.
fn post(target: &Target, event: &crate::store::webhook_queue::WebhookEvent) -> Result<(), String> {
    let timestamp = crate::clock::unix_now_ms().div_euclid(1000);
    let body = render_body(event, timestamp);
    let signed = signature(target.secret.expose().as_bytes(), &body);
    let timestamp = timestamp.to_string();
    let headers = [
        ("x-credentialflow-signature", signed.as_str()),
        ("x-credentialflow-timestamp", timestamp.as_str()),
        ("x-credentialflow-event", event.kind.as_str()),
        ("x-credentialflow-delivery", event.id.as_str()),
    ];
    let limits = Limits {
        timeout: target.config.attempt_timeout(),
        max_body: MAX_RESPONSE_BYTES,
    };
    let response = target.endpoint.post_json(&body, &headers, limits)?;
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(format!("answered {}", response.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, 4), Duration::from_millis(800));
        assert_eq!(backoff(base, 60), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(3000), 3), MAX_BACKOFF);
    }
}

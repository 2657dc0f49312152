//! Signed webhooks: lifecycle events (`key.*`, `budget.threshold`, `access.*`) POSTed to
//! the `[[webhook]]` receivers from a background thread.
//!
//! - [`event`]: the events and their JSON bodies (`{"id","type","created_at","timestamp",
//!   ...}`), which name keys, teams and requests but never a secret or a hash.
//! - [`sign`]: `x-credentialflow-signature: sha256=<hex HMAC-SHA256 of the raw body>`.
//! - [`delivery`]: the thread that finds `key.expiring` and `budget.threshold` events,
//!   claims queued events and delivers them with retries and exponential backoff.
//!
//! Events are queued in the store (`store::webhook_queue`) before anything is sent, so a
//! restart loses none and a fleet sharing PostgreSQL delivers each once. Key writes queue
//! their events themselves, in the write's transaction; everything else goes through
//! [`emit`]. Nothing here runs on a worker: the request path's only part is the budget
//! table's non-blocking channel send when a settlement crosses a threshold.

pub mod delivery;
pub mod event;
pub mod sign;

pub use delivery::Delivery;
pub use event::{access_event, AccessEvent, AccessEventInfo};

use crate::store::webhook_queue::{Enqueued, WebhookEvent};
use crate::store::{KeyBackend, StoreError};

/// Queues `event` for delivery to every receiver subscribed to its type (an event whose
/// `dedup_key` was queued before is ignored). For events that are not key writes, which
/// queue their own: the access-request flow calls it with [`access_event`] after each
/// step commits:
///
/// ```ignore
/// let event = webhook::access_event(AccessEvent::Approved, AccessEventInfo { .. });
/// webhook::emit(&mut **store, &event)?;
/// ```
///
/// A full queue drops the event (logged, counted as `dropped`) and is not an error: an
/// alert lost is better than an approval refused. A store error is returned.
pub fn emit(backend: &mut dyn KeyBackend, event: &WebhookEvent) -> Result<Enqueued, StoreError> {
    let queued = backend.enqueue_webhook(event)?;
    crate::metrics::global()
        .webhooks()
        .record_enqueue(&event.kind, queued);
    Ok(queued)
}

//! The PostgreSQL store as a [`KeyBackend`]: every key and audit call delegates to the
//! [`PgStore`] method of the same name; [`KeyBackend::wait_for_change`] sleeps on a
//! [`PgChangeListener`] the instance opens the first time it is asked to wait (only the
//! credential cache's watcher waits, so only it holds the second connection), and the node
//! registry answers `heartbeat` and `nodes`.

use std::time::Duration;

use super::{NodeRecord, PgChangeListener, PgStore};
use crate::access::{AccessRequest, AccessStatus};
use crate::store::audit::AuditEntry;
use crate::store::webhook_queue::{Enqueued, QueuedWebhook, WebhookEvent, WebhookOutcome};
use crate::store::{KeyBackend, KeyPatch, KeyRecord, NewKey, Pepper, StoreError};

impl KeyBackend for PgStore {
    fn pepper(&self) -> &Pepper {
        PgStore::pepper(self)
    }

    fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError> {
        PgStore::create(self, new, actor)
    }

    fn list(&mut self) -> Result<Vec<KeyRecord>, StoreError> {
        PgStore::list(self)
    }

    fn get(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        PgStore::get(self, id)
    }

    fn update(&mut self, id: &str, patch: KeyPatch, actor: &str) -> Result<KeyRecord, StoreError> {
        PgStore::update(self, id, patch, actor)
    }

    fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
        PgStore::revoke(self, id, actor)
    }

    fn rotate(
        &mut self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, String), StoreError> {
        PgStore::rotate(self, id, grace, actor)
    }

    fn changes_since(&mut self, seq: u64) -> Result<Vec<KeyRecord>, StoreError> {
        PgStore::changes_since(self, seq)
    }

    fn max_seq(&mut self) -> Result<u64, StoreError> {
        PgStore::max_seq(self)
    }

    fn append_audit(
        &mut self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        before: Option<&KeyRecord>,
        after: Option<&KeyRecord>,
    ) -> Result<(), StoreError> {
        PgStore::audit_append(self, actor, action, key_id, before, after)
    }

    fn read_audit(&mut self) -> Result<Vec<AuditEntry>, StoreError> {
        PgStore::audit_entries(self)
    }

    fn access_insert(&mut self, request: &AccessRequest, actor: &str) -> Result<(), StoreError> {
        PgStore::access_insert(self, request, actor)
    }

    fn access_get(&mut self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        PgStore::access_get(self, id)
    }

    fn access_list(
        &mut self,
        status: Option<AccessStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        PgStore::access_list(self, status)
    }

    fn access_transition(
        &mut self,
        from: AccessStatus,
        after: &AccessRequest,
        action: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        PgStore::access_transition(self, from, after, action, actor)
    }

    fn notifies(&self) -> bool {
        true
    }

    /// Returns true at once when it (re)opens the change feed: whatever changed while no
    /// listener was connected has not been announced, so the caller must read. When the
    /// feed cannot be opened it sleeps `timeout` (the caller's backoff) and returns false;
    /// the caller's next read finds the store unreachable.
    fn wait_for_change(&mut self, timeout: Duration) -> bool {
        let Some(listener) = self.listener.as_mut() else {
            match PgChangeListener::connect(self.url.expose()) {
                Ok(listener) => {
                    self.listener = Some(listener);
                    return true;
                }
                Err(_) => {
                    std::thread::sleep(timeout);
                    return false;
                }
            }
        };
        match listener.wait(timeout) {
            Ok(notified) => notified,
            Err(_) => {
                // Reopened by the next wait; the caller reads now, and its read says whether
                // the store itself is gone.
                self.listener = None;
                false
            }
        }
    }

    fn heartbeat(
        &mut self,
        node: &str,
        version: &str,
        config_generation: u64,
    ) -> Result<(), StoreError> {
        PgStore::heartbeat(self, node, version, config_generation)
    }

    fn nodes(&mut self) -> Result<Option<Vec<NodeRecord>>, StoreError> {
        PgStore::nodes(self).map(Some)
    }

    fn record_last_used(&mut self, used: &[(String, i64)]) -> Result<(), StoreError> {
        PgStore::record_last_used(self, used)
    }

    fn last_used(&mut self) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        PgStore::last_used(self)
    }

    fn enqueue_webhook(&mut self, event: &WebhookEvent) -> Result<Enqueued, StoreError> {
        PgStore::enqueue_webhook(self, event)
    }

    fn claim_webhooks(
        &mut self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<QueuedWebhook>, StoreError> {
        PgStore::claim_webhooks(self, now_ms, limit, lease_ms)
    }

    fn finish_webhook(&mut self, seq: i64, outcome: &WebhookOutcome) -> Result<(), StoreError> {
        PgStore::finish_webhook(self, seq, outcome)
    }

    fn prune_webhooks(&mut self, before_ms: i64) -> Result<(), StoreError> {
        PgStore::prune_webhooks(self, before_ms)
    }
}

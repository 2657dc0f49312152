//! The one interface the rest of the gateway uses to reach the store of keys and the audit
//! log, [`KeyBackend`], and [`open`], which picks the backend the config names.
//!
//! Two backends: the embedded one ([`KeyStore`]: SQLite and the audit file in `data_dir`)
//! and the PostgreSQL store a fleet shares ([`PgStore`]). [`open`] reads the config's
//! `[store]` and `server.data_dir` ([`StoreSettings`]) and picks one: the admin API, the
//! CLI, the signal handler and the credential cache's watcher hold a `Box<dyn KeyBackend>`
//! and never name the concrete store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::audit::{self, AuditEntry};
use super::keys::{KeyPatch, KeyRecord, KeyStore, NewKey};
use super::pepper::Pepper;
use super::postgres::{NodeRecord, PgStore};
use super::webhook_queue::{self, Enqueued, QueuedWebhook, WebhookEvent, WebhookOutcome};
use super::StoreError;
use crate::access::{AccessRequest, AccessStatus};
use crate::config::{Config, StoreBackend, StoreConfig, StoreSettings};

/// The key store and audit log, whichever engine holds them.
///
/// Every method is slow-path work (admin threads, the CLI, the watcher thread); none is ever
/// called while serving a request. A backend is `Send` but need not be `Sync`: each holder
/// (the watcher, the CLI) owns its own, and threads that share one (the admin connections)
/// take turns through a [`SharedBackend`]. Queries take `&mut self` because a database
/// client's connection is used mutably even to read; every holder has exclusive access
/// anyway.
///
/// Mutations are audited by the backend itself, after the commit, with the `actor` given.
pub trait KeyBackend: Send {
    /// The pepper presented secrets are hashed under; the credential cache hashes with a
    /// copy of it, so both agree on every key.
    fn pepper(&self) -> &Pepper;

    /// Issues a key. Returns the record and the secret, which is shown once and never
    /// stored. Audited as `create`.
    fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError>;

    /// Every key, revoked ones included, oldest first.
    fn list(&mut self) -> Result<Vec<KeyRecord>, StoreError>;

    /// The key with this id, if any.
    fn get(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Applies a partial update. Audited as `update`.
    fn update(&mut self, id: &str, patch: KeyPatch, actor: &str) -> Result<KeyRecord, StoreError>;

    /// Revokes a key (it stays listed); revoking a revoked key changes nothing and returns
    /// it. Audited as `revoke`.
    fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError>;

    /// Gives a key a new secret, same id; the old one keeps working for `grace`. Audited as
    /// `rotate`.
    fn rotate(
        &mut self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, String), StoreError>;

    /// Rows changed after change sequence `seq` (revoked ones included), in sequence order:
    /// what the credential cache applies to stay a complete replica.
    fn changes_since(&mut self, seq: u64) -> Result<Vec<KeyRecord>, StoreError>;

    /// The sequence number of the last change (0 for a new store).
    fn max_seq(&mut self) -> Result<u64, StoreError>;

    /// Appends one entry to the audit log, for actions that are not key writes (`reload`).
    fn append_audit(
        &mut self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        before: Option<&KeyRecord>,
        after: Option<&KeyRecord>,
    ) -> Result<(), StoreError>;

    /// Every audit entry, oldest first.
    fn read_audit(&mut self) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores a new access request (`crate::access`). Audited as `access.request`.
    fn access_insert(&mut self, request: &AccessRequest, actor: &str) -> Result<(), StoreError>;

    /// The access request with this id, if any.
    fn access_get(&mut self, id: &str) -> Result<Option<AccessRequest>, StoreError>;

    /// Every access request, or those in `status`, oldest first.
    fn access_list(
        &mut self,
        status: Option<AccessStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError>;

    /// Writes `after` over its access request if that is still in status `from` and says
    /// whether it was (a compare-and-set: of two racing steps, one wins). Audited as
    /// `action` by `actor` when written.
    fn access_transition(
        &mut self,
        from: AccessStatus,
        after: &AccessRequest,
        action: &str,
        actor: &str,
    ) -> Result<bool, StoreError>;

    /// Blocks until the store may have changed or `timeout` has passed, and says whether a
    /// change notification arrived. The watcher calls [`KeyBackend::changes_since`] after
    /// every return, so a backend that can push notifications returns at once on one and a
    /// change is in force without waiting out the poll interval. Without notifications (the
    /// default, and SQLite, whose writers may be other processes) it sleeps the whole
    /// `timeout` and returns false.
    fn wait_for_change(&mut self, timeout: Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }

    /// Whether [`KeyBackend::wait_for_change`] returns on a change notification (PostgreSQL's
    /// `NOTIFY`). The watcher then reads the change feed only as a safety net, at a longer
    /// interval, instead of polling for every change.
    fn notifies(&self) -> bool {
        false
    }

    /// Records in the fleet's node registry that `node` is alive, running `version` with
    /// configuration number `config_generation`. A store without a registry (SQLite: one
    /// node) records nothing.
    fn heartbeat(
        &mut self,
        node: &str,
        version: &str,
        config_generation: u64,
    ) -> Result<(), StoreError> {
        let _ = (node, version, config_generation);
        Ok(())
    }

    /// The fleet's nodes as last reported, by name; `None` for a store without a registry,
    /// whose only node is the caller.
    fn nodes(&mut self) -> Result<Option<Vec<NodeRecord>>, StoreError> {
        Ok(None)
    }

    /// Records when keys were last used (`(id, unix seconds)` pairs). A key's time only ever
    /// moves forward (the larger of the stored and the given one), so nodes writing the same
    /// store in any order never move it back. Not a key change: no sequence bump, no audit
    /// entry, no notification. A store that keeps no last use (a test double) records
    /// nothing.
    fn record_last_used(&mut self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let _ = used;
        Ok(())
    }

    /// When each key was last used as recorded, in unix seconds, by id; keys never used are
    /// absent.
    fn last_used(&mut self) -> Result<HashMap<String, i64>, StoreError> {
        Ok(HashMap::new())
    }

    /// Queues a webhook event unless one with its `dedup_key` ever was or the queue is full
    /// (see [`webhook_queue`]). Key writes queue their own events; this is for the rest
    /// (`crate::webhook::emit`).
    fn enqueue_webhook(&mut self, event: &WebhookEvent) -> Result<Enqueued, StoreError> {
        let _ = event;
        Err(no_webhook_queue())
    }

    /// Leases up to `limit` queued events due at `now_ms` for `lease_ms`, oldest first; on
    /// a shared store no two nodes hold the same one.
    fn claim_webhooks(
        &mut self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<QueuedWebhook>, StoreError> {
        let _ = (now_ms, limit, lease_ms);
        Err(no_webhook_queue())
    }

    /// Records what became of claimed event `seq`.
    fn finish_webhook(&mut self, seq: i64, outcome: &WebhookOutcome) -> Result<(), StoreError> {
        let _ = (seq, outcome);
        Err(no_webhook_queue())
    }

    /// Deletes finished events created before `before_ms`.
    fn prune_webhooks(&mut self, before_ms: i64) -> Result<(), StoreError> {
        let _ = before_ms;
        Err(no_webhook_queue())
    }
}

/// What a backend without a webhook queue (a test double) answers.
fn no_webhook_queue() -> StoreError {
    StoreError::invalid("webhook", "this store has no webhook queue")
}

/// One opened backend shared by threads that take turns with it: the admin API's connection
/// threads and the signal handler.
pub type SharedBackend = Arc<Mutex<Box<dyn KeyBackend>>>;

/// The settings of the store a fully loaded config names (what `serve` opens; the store
/// commands load only these, with [`crate::config::load_store`]).
pub fn settings_of(config: &Config) -> StoreSettings {
    StoreSettings {
        data_dir: config.resolve_path(&config.server.data_dir),
        store: config.store.clone(),
    }
}

/// The settings of the embedded store in `data_dir`, for callers that name a directory
/// rather than load a config (tests, benchmarks).
pub fn sqlite_settings(data_dir: impl Into<PathBuf>) -> StoreSettings {
    StoreSettings {
        data_dir: data_dir.into(),
        store: StoreConfig::default(),
    }
}

/// Opens the store `settings` name: an embedded one in `data_dir` (created, with its
/// pepper, on first use), or the PostgreSQL store at `store.url` with the pepper
/// `store.pepper` (64 hex characters, the pepper file's format), migrated on open and
/// checked against the pepper it was first opened with. Missing or unreadable settings are
/// invalid `store.*` fields; errors never hold the URL's password or the pepper.
pub fn open(settings: &StoreSettings) -> Result<Box<dyn KeyBackend>, StoreError> {
    match settings.store.backend {
        StoreBackend::Sqlite => Ok(Box::new(KeyStore::open(&settings.data_dir)?)),
        StoreBackend::Postgres => Ok(Box::new(open_postgres(&settings.store)?)),
    }
}

/// The PostgreSQL arm of [`open`].
fn open_postgres(store: &StoreConfig) -> Result<PgStore, StoreError> {
    let resolve = |field: &'static str, secret: &Option<crate::config::SecretRef>| {
        secret
            .as_ref()
            .ok_or_else(|| StoreError::invalid(field, "is required with backend = \"postgres\""))?
            .resolve()
            .map_err(|why| StoreError::invalid(field, why))
    };
    let url = resolve("store.url", &store.url)?;
    let pepper = Pepper::from_hex(resolve("store.pepper", &store.pepper)?.expose())
        .map_err(|why| StoreError::invalid("store.pepper", why))?;
    let node = store
        .node_name()
        .ok_or_else(|| StoreError::invalid("store.node", "the host name could not be read"))?;
    PgStore::open(url.expose(), pepper, &node)
}

/// [`open`], wrapped to be shared by threads that take turns with it.
pub fn open_shared(settings: &StoreSettings) -> Result<SharedBackend, StoreError> {
    Ok(Arc::new(Mutex::new(open(settings)?)))
}

/// The embedded store: the key operations are `KeyStore`'s own, the audit log is the
/// JSON-lines file in `data_dir`.
impl KeyBackend for KeyStore {
    fn pepper(&self) -> &Pepper {
        KeyStore::pepper(self)
    }

    fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError> {
        KeyStore::create(self, new, actor)
    }

    fn list(&mut self) -> Result<Vec<KeyRecord>, StoreError> {
        KeyStore::list(self)
    }

    fn get(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        KeyStore::get(self, id)
    }

    fn update(&mut self, id: &str, patch: KeyPatch, actor: &str) -> Result<KeyRecord, StoreError> {
        KeyStore::update(self, id, patch, actor)
    }

    fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
        KeyStore::revoke(self, id, actor)
    }

    fn rotate(
        &mut self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, String), StoreError> {
        KeyStore::rotate(self, id, grace, actor)
    }

    fn changes_since(&mut self, seq: u64) -> Result<Vec<KeyRecord>, StoreError> {
        KeyStore::changes_since(self, seq)
    }

    fn max_seq(&mut self) -> Result<u64, StoreError> {
        KeyStore::max_seq(self)
    }

    fn append_audit(
        &mut self,
        actor: &str,
        action: &str,
        key_id: Option<&str>,
        before: Option<&KeyRecord>,
        after: Option<&KeyRecord>,
    ) -> Result<(), StoreError> {
        Ok(audit::append(
            self.data_dir(),
            actor,
            action,
            key_id,
            before,
            after,
        )?)
    }

    fn read_audit(&mut self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(audit::read(self.data_dir())?)
    }

    fn access_insert(&mut self, request: &AccessRequest, actor: &str) -> Result<(), StoreError> {
        KeyStore::access_insert(self, request, actor)
    }

    fn access_get(&mut self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        KeyStore::access_get(self, id)
    }

    fn access_list(
        &mut self,
        status: Option<AccessStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        KeyStore::access_list(self, status)
    }

    fn access_transition(
        &mut self,
        from: AccessStatus,
        after: &AccessRequest,
        action: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        KeyStore::access_transition(self, from, after, action, actor)
    }

    fn record_last_used(&mut self, used: &[(String, i64)]) -> Result<(), StoreError> {
        KeyStore::record_last_used(self, used)
    }

    fn last_used(&mut self) -> Result<HashMap<String, i64>, StoreError> {
        KeyStore::last_used(self)
    }

    fn enqueue_webhook(&mut self, event: &WebhookEvent) -> Result<Enqueued, StoreError> {
        Ok(webhook_queue::enqueue(
            self.connection(),
            event,
            webhook_queue::MAX_PENDING,
        )?)
    }

    fn claim_webhooks(
        &mut self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<QueuedWebhook>, StoreError> {
        Ok(webhook_queue::claim(
            self.connection_mut(),
            now_ms,
            limit,
            lease_ms,
        )?)
    }

    fn finish_webhook(&mut self, seq: i64, outcome: &WebhookOutcome) -> Result<(), StoreError> {
        Ok(webhook_queue::finish(self.connection(), seq, outcome)?)
    }

    fn prune_webhooks(&mut self, before_ms: i64) -> Result<(), StoreError> {
        webhook_queue::prune(self.connection(), before_ms)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

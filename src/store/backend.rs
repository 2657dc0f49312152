//! The one interface the rest of the gateway uses to reach the store of keys and the audit
//! log, [`KeyBackend`], and [`open`], which picks the backend the config names.
//!
//! Today the only backend is the embedded one ([`KeyStore`]: SQLite and the audit file in
//! `data_dir`). A second backend is one `impl KeyBackend` and one arm in [`open`], which
//! reads the config's `[store]` and `server.data_dir` ([`StoreSettings`]): the admin
//! API, the CLI, the signal handler and the credential cache's watcher hold a
//! `Box<dyn KeyBackend>` and never name the concrete store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::audit::{self, AuditEntry};
use super::keys::{KeyPatch, KeyRecord, KeyStore, NewKey};
use super::pepper::Pepper;
use super::StoreError;
use crate::config::store::unwired_backend;
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

/// Opens the store `settings` name (creating an embedded one in `data_dir` on first use).
/// A backend this build cannot use is refused as an invalid `store.backend`, with the reason
/// [`unwired_backend`] gives (config validation refuses it earlier, with the same words).
pub fn open(settings: &StoreSettings) -> Result<Box<dyn KeyBackend>, StoreError> {
    match settings.store.backend {
        StoreBackend::Sqlite => Ok(Box::new(KeyStore::open(&settings.data_dir)?)),
        backend @ StoreBackend::Postgres => Err(StoreError::invalid(
            "store.backend",
            unwired_backend(backend).unwrap_or("is not available in this build"),
        )),
    }
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
}

#[cfg(test)]
mod tests;

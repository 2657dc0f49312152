//! The PostgreSQL store: what a fleet of gateways shares. The same keys, change sequence and
//! audit log as the embedded SQLite store ([`crate::store::KeyStore`]), with the same method
//! names and semantics, plus a change feed ([`PgChangeListener`]) and a registry of the
//! fleet's nodes.
//!
//! - Secrets are stored only as HMAC-SHA256 under the pepper, which every node is given and
//!   the database never sees; a verifier catches a node given another one ([`verifier`]).
//! - The schema is versioned ([`migrations`]); an older binary refuses a newer schema.
//! - Every write takes one advisory lock for its transaction, draws the next value of the
//!   `key_change_seq` sequence, and `NOTIFY`s [`CHANNEL`] with it before committing. The lock
//!   makes sequence order commit order, so, as in SQLite, a reader that has applied
//!   everything up to `n` needs only the rows with `seq > n`: without it a writer holding a
//!   lower number could commit after a reader had already moved past it.
//! - Connections use TLS as libpq's `sslmode` asks (`verify-full` recommended across
//!   networks); see [`connect`] and [`tls`].
//!
//! Like SQLite's, this is slow-path work on the store's own threads: the synchronous client
//! blocks, and is never used on a worker.

mod access;
mod audit;
mod backend;
pub(crate) mod connect;
mod error;
pub mod import;
mod keys;
mod last_used;
mod listener;
pub mod migrations;
mod nodes;
mod tls;
mod verifier;
mod webhook_queue;

use std::cell::{RefCell, RefMut};
use std::time::Duration;

use ::postgres::Client;

pub use error::{PgError, PgErrorKind};
pub use listener::PgChangeListener;
pub use migrations::SCHEMA_VERSION;
pub use nodes::NodeRecord;

use super::{Pepper, StoreError};
use crate::config::Secret;

/// The channel every key write notifies, with the write's sequence number as payload.
pub const CHANNEL: &str = "cf_keys";

/// Advisory lock held while migrating (two nodes starting at once apply the schema once).
const MIGRATION_LOCK: i64 = 0x6366_7374_6d69_6772; // "cfstmigr"
/// Advisory lock held by every key write until it commits (sequence order = commit order).
const WRITE_LOCK: i64 = 0x6366_7374_7772_6974; // "cfstwrit"

/// How long the round trip that checks a connection before each use may take before the
/// store counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the shared store. Like [`crate::store::KeyStore`], not shared across
/// threads: open one per thread that needs it.
///
/// A lost connection is opened again by the next call that needs it ([`PgStore::client`]),
/// so a holder (the admin API, the watcher) outlives an outage without reopening the store.
pub struct PgStore {
    // The synchronous client wants `&mut` for every statement; readers take `&self` as
    // SQLite's do, and a store is used by one thread at a time.
    client: RefCell<Client>,
    /// The connection URL, kept to reconnect. A secret: it may hold a password.
    url: Secret,
    pepper: Pepper,
    node: String,
    /// The change feed, opened by the first [`crate::store::KeyBackend::wait_for_change`]:
    /// only the instance that waits (the watcher's) holds the second connection.
    listener: Option<PgChangeListener>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PgStore")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url`, applies any pending migrations, and checks `pepper` against the
    /// store's verifier (storing it on the first open). `node` names this gateway in audit
    /// entries and migration records. Errors never hold the URL's password or the pepper.
    pub fn open(url: &str, pepper: Pepper, node: &str) -> Result<PgStore, StoreError> {
        if node.trim().is_empty() {
            return Err(StoreError::invalid("node", "must not be empty"));
        }
        crate::store::rules::check_text("node", node)?;
        let mut client = connect::connect(url)?;
        migrations::migrate(&mut client, node)?;
        verifier::check(&mut client, &pepper)?;
        Ok(PgStore {
            client: RefCell::new(client),
            url: Secret::new(url),
            pepper,
            node: node.to_owned(),
            listener: None,
        })
    }

    /// The connection, opened again first if it is closed or no longer answers. A server
    /// restarted since the last use has closed it without the client always knowing yet, and
    /// the first statement after an outage must not fail for that alone; so every use starts
    /// with one round trip (the store serves the admin API and the watcher's once-a-second
    /// read, never a request). A failure to reopen is an unreachable store; the closed
    /// connection stays for the next call to retry.
    fn client(&self) -> Result<RefMut<'_, Client>, StoreError> {
        let mut client = self.client.borrow_mut();
        if client.is_closed() || client.is_valid(CHECK_TIMEOUT).is_err() {
            *client = connect::connect(self.url.expose())?;
        }
        Ok(client)
    }

    /// The pepper secrets are hashed under.
    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    /// This gateway's name in the fleet.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The schema version the database is at (after [`PgStore::open`], [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        Ok(self
            .client()?
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )?
            .get(0))
    }
}

// A store is moved to the thread that owns it (the store interface requires `Send`).
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<PgStore>();
    is_send::<PgChangeListener>();
};

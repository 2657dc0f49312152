//! The store: virtual keys, their pepper, the audit log and the usage ledger.
//!
//! - [`backend`]: [`KeyBackend`], the one interface the admin API, the CLI and the credential
//!   cache reach the keys and the audit log through, and [`open`], which picks the backend
//!   the config names (today the embedded one in `server.data_dir`).
//! - [`keys`]: the embedded backend's key table in SQLite ([`KeyStore`], [`KeyRecord`]) and
//!   its change sequence, which the credential cache follows to see every change within a
//!   second.
//! - [`pepper`]: the secret HMAC key under which presented credentials are hashed.
//! - [`audit`]: the append-only JSON-lines log of admin actions.
//! - [`usage`]: the usage ledger (`usage.db`, one row per metered request) and the spend
//!   reports read from it.
//! - [`postgres`]: the same keys, audit log and change sequence in a PostgreSQL database that
//!   a fleet of gateways shares ([`postgres::PgStore`]).
//! - [`webhook_queue`]: lifecycle events waiting to be POSTed to `[[webhook]]` receivers.
//! - [`health`]: whether the store is reachable, for `/healthz`, `/metrics` and the admin API.
//! - [`ids`]: key ids, key secrets and durations such as `30d`.
//! - [`ownership`]: files a root-run store command leaves in `data_dir` go to its owner.
//!
//! Everything here is slow-path work (CLI, admin thread, the cache's refresher thread, the
//! ledger's writer thread): SQLite is never touched while serving a request.

mod access;
pub mod audit;
pub mod backend;
pub mod health;
pub mod ids;
pub mod keys;
pub mod ownership;
pub mod pepper;
pub mod postgres;
pub(crate) mod rules;
pub mod usage;
pub mod webhook_queue;

pub use backend::{open, open_shared, settings_of, sqlite_settings, KeyBackend, SharedBackend};
pub use health::StoreHealth;
pub use keys::{KeyPatch, KeyRecord, KeyStore, NewKey};
pub use pepper::Pepper;
pub use postgres::NodeRecord;

use std::fmt;

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// No key has this id.
    NotFound(String),
    /// A field's value is not acceptable; `field` names it as in the admin API body.
    Invalid {
        /// The field, as named in `POST /admin/keys`.
        field: &'static str,
        /// What is wrong with it (never the value of a secret).
        message: String,
    },
    /// The change conflicts with the stored state (a second active key with the same name).
    Conflict(String),
    /// SQLite failed (locked past the busy timeout, disk full, corrupt file).
    Db(rusqlite::Error),
    /// A file in the data directory could not be read or written.
    Io(std::io::Error),
    /// The PostgreSQL store failed or refused to open (unreachable, newer schema, another
    /// pepper). Its text never holds the connection URL's password.
    Postgres(postgres::PgError),
}

impl StoreError {
    /// Whether the error is the caller's fault (bad input, unknown id) rather than a failure
    /// of the machine: the CLI exits 1 for these and 2 for the rest.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_) | StoreError::Invalid { .. } | StoreError::Conflict(_)
        )
    }

    /// Whether the store could not be reached (PostgreSQL down, connection lost): the
    /// edge keeps serving from its replica, and admin writes answer 503 `store_unavailable`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Postgres(e) if e.is_unreachable())
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(id) => write!(f, "no key with id {id:?}"),
            StoreError::Invalid { field, message } => write!(f, "{field}: {message}"),
            StoreError::Conflict(message) => f.write_str(message),
            StoreError::Db(e) => write!(f, "key store: {e}"),
            StoreError::Io(e) => write!(f, "key store: {e}"),
            StoreError::Postgres(e) => write!(f, "key store: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// The current time in unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

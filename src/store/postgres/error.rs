//! [`PgError`]: why the PostgreSQL store failed, in words that never hold the connection
//! URL's password, a key hash or a pepper.

use std::fmt;

/// What kind of failure a [`PgError`] is, so a caller can tell an outage (retry, serve from
/// the replica) from a refusal (stop and tell the operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgErrorKind {
    /// The URL or the store settings are not acceptable (malformed, an unknown
    /// `sslmode`, an unreadable `sslrootcert`).
    Config,
    /// The server could not be reached, refused the login, or the connection dropped.
    Unreachable,
    /// The database holds a schema newer than this binary knows.
    SchemaTooNew,
    /// The store's keys were hashed under another pepper.
    PepperMismatch,
    /// A statement failed (constraint, corrupt row, server-side error).
    Query,
}

/// A PostgreSQL store failure. Built only by this module, from texts it has scrubbed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgError {
    kind: PgErrorKind,
    message: String,
}

impl PgError {
    pub(crate) fn new(kind: PgErrorKind, message: impl Into<String>) -> PgError {
        PgError {
            kind,
            message: message.into(),
        }
    }

    /// Describes a client error without anything the server echoed about row values: for a
    /// server error only its severity, message and SQLSTATE, never its DETAIL (a unique
    /// violation's DETAIL quotes the conflicting value, which may be a key hash).
    pub(crate) fn from_client(e: &::postgres::Error) -> PgError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let kind = if ["28", "08", "57P"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "3D000"
            {
                // Class 28 is "invalid authorization specification", 08 "connection
                // exception", 57P the server shutting down or starting (an outage, not a
                // refusal); 3D000 an unknown database.
                PgErrorKind::Unreachable
            } else {
                PgErrorKind::Query
            };
            return PgError::new(
                kind,
                format!(
                    "{}: {} (SQLSTATE {})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                ),
            );
        }
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        let unreachable = e.is_closed()
            || ["error connecting", "error communicating", "timeout"]
                .iter()
                .any(|start| message.starts_with(start));
        let kind = if unreachable {
            PgErrorKind::Unreachable
        } else {
            PgErrorKind::Query
        };
        PgError::new(kind, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> PgErrorKind {
        self.kind
    }

    /// Whether the database could not be reached (as opposed to refusing something).
    pub fn is_unreachable(&self) -> bool {
        self.kind == PgErrorKind::Unreachable
    }

    /// Removes every occurrence of `secret` (and its percent-decoded form) from the text.
    pub(crate) fn scrub(mut self, secrets: &[String]) -> PgError {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            self.message = self.message.replace(secret.as_str(), "<redacted>");
        }
        self
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL: {}", self.message)
    }
}

impl std::error::Error for PgError {}

impl From<PgError> for super::super::StoreError {
    fn from(e: PgError) -> Self {
        super::super::StoreError::Postgres(e)
    }
}

impl From<::postgres::Error> for super::super::StoreError {
    fn from(e: ::postgres::Error) -> Self {
        super::super::StoreError::Postgres(PgError::from_client(&e))
    }
}

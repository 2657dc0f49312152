//! The versioned schema. Each migration runs once, in order, inside one transaction that holds
//! a transaction-scoped advisory lock, so two nodes starting at once apply it once between
//! them (the second waits for the first to commit, then finds nothing left to do). Applied
//! versions are recorded in `schema_migrations`; a database whose newest version is past
//! [`SCHEMA_VERSION`] was migrated by a newer binary, and this one refuses to touch it.

use ::postgres::Client;

use super::error::{PgError, PgErrorKind};
use super::MIGRATION_LOCK;
use crate::store::{unix_now, StoreError};

/// One schema step.
pub(crate) struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Append only: a released migration is never edited.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "keys, change sequence, audit log, nodes, pepper verifier",
        sql: "
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE SEQUENCE key_change_seq AS BIGINT MINVALUE 1;
CREATE TABLE keys (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    team                 TEXT NOT NULL,
    prefix               TEXT NOT NULL,
    hash                 BYTEA NOT NULL UNIQUE,
    previous_hash        BYTEA,
    previous_valid_until BIGINT,
    models               TEXT NOT NULL,
    routes               TEXT NOT NULL,
    scopes               TEXT NOT NULL,
    rps                  DOUBLE PRECISION,
    rpm                  BIGINT,
    tpm                  BIGINT,
    max_concurrency      BIGINT,
    budget_usd           DOUBLE PRECISION,
    budget_tokens        BIGINT,
    budget_period        TEXT,
    metadata             TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    expires_at           BIGINT,
    revoked_at           BIGINT,
    seq                  BIGINT NOT NULL UNIQUE
);
-- Names identify keys to Lua's ctx:set_consumer(name): unique among unrevoked keys.
CREATE UNIQUE INDEX keys_active_name ON keys (name) WHERE revoked_at IS NULL;
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    node    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    key_id  TEXT,
    before  JSONB,
    after   JSONB
);
CREATE INDEX audit_log_by_key ON audit_log (key_id);
CREATE TABLE nodes (
    node              TEXT PRIMARY KEY,
    version           TEXT NOT NULL,
    config_generation BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL
);
",
    },
    Migration {
        version: 2,
        name: "usage ledger",
        sql: include_str!("0002_usage.sql"),
    },
    // Renamed as well as converted, so a node older than this one (refused anyway by the
    // version check) could never read milliseconds as seconds.
    Migration {
        version: 3,
        name: "key expiry and rotation grace in milliseconds",
        sql: "
ALTER TABLE keys RENAME COLUMN expires_at TO expires_at_ms;
ALTER TABLE keys RENAME COLUMN previous_valid_until TO previous_valid_until_ms;
UPDATE keys SET expires_at_ms = expires_at_ms * 1000,
    previous_valid_until_ms = previous_valid_until_ms * 1000
    WHERE expires_at_ms IS NOT NULL OR previous_valid_until_ms IS NOT NULL;
",
    },
    Migration {
        version: 4,
        name: "access requests",
        sql: include_str!("0004_access_requests.sql"),
    },
    Migration {
        version: 5,
        name: "webhook queue",
        sql: super::webhook_queue::SCHEMA,
    },
    // Existing keys and requests get the empty list, which permits every exposed tool, as
    // they did before; the default also keeps inserts that do not name the column working.
    Migration {
        version: 6,
        name: "key mcp tools",
        sql: "
ALTER TABLE keys ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '[]';
ALTER TABLE access_requests ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '[]';
",
    },
    Migration {
        version: 7,
        name: "key last used",
        sql: super::last_used::SCHEMA,
    },
    Migration {
        version: 8,
        name: "usage rollups",
        sql: crate::store::usage::ROLLUP_MIGRATION,
    },
];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the database to [`SCHEMA_VERSION`], recording `node` as the one that applied each
/// step. Returns the version found before.
pub(crate) fn migrate(client: &mut Client, node: &str) -> Result<i32, StoreError> {
    let mut tx = client.transaction()?;
    // Taken before any DDL: concurrent `CREATE TABLE IF NOT EXISTS` can fail on the catalog's
    // unique indexes, and two nodes must not both apply a step.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at BIGINT NOT NULL,
            applied_by TEXT NOT NULL
        )",
    )?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::new(
            PgErrorKind::SchemaTooNew,
            format!(
                "the database schema is at version {found}, newer than version \
                 {SCHEMA_VERSION} that this credentialflow understands; upgrade this node \
                 (a newer node migrated the store)"
            ),
        )
        .into());
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at, applied_by) \
             VALUES ($1, $2, $3, $4)",
            &[&migration.version, &migration.name, &unix_now(), &node],
        )?;
    }
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_from_one() {
        assert_eq!(MIGRATIONS[0].version, 1);
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.last().unwrap().version);
    }
}

//! The access request table of the embedded store (`access_requests` in `keys.db`): what
//! `crate::access` keeps of each request, the claim token only as its hash.
//!
//! Every change is a compare-and-set on the request's status in one `BEGIN IMMEDIATE`
//! transaction, so two processes (the CLI and a running gateway) deciding or claiming the
//! same request at once cannot both succeed. Steps are audited after the commit, like key
//! changes.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{audit, KeyStore, StoreError};
use crate::access::{AccessRequest, AccessStatus};

/// The table, created on open when missing (a store made before it gains it then).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_requests (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    team          TEXT NOT NULL,
    models        TEXT NOT NULL,
    routes        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    limits        TEXT NOT NULL,
    ttl           TEXT NOT NULL,
    reason        TEXT NOT NULL,
    requester     TEXT NOT NULL,
    status        TEXT NOT NULL,
    decided_by    TEXT,
    note          TEXT,
    created_at    INTEGER NOT NULL,
    decided_at    INTEGER,
    claimed_at    INTEGER,
    expires_at_ms INTEGER,
    key_id        TEXT,
    claim_hash    BLOB NOT NULL,
    mcp_tools     TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS access_requests_by_status ON access_requests (status);
";

pub(super) const COLUMNS: &str = "id, name, team, models, routes, scopes, limits, ttl, reason, \
    requester, status, decided_by, note, created_at, decided_at, claimed_at, expires_at_ms, \
    key_id, claim_hash, mcp_tools";

/// [`COLUMNS`] as read from a read-only store made before requests had `mcp_tools`
/// (`store migrate` reading a host's store): such a request asked for every tool.
pub(super) const COLUMNS_WITHOUT_MCP_TOOLS: &str = "id, name, team, models, routes, scopes, \
    limits, ttl, reason, requester, status, decided_by, note, created_at, decided_at, \
    claimed_at, expires_at_ms, key_id, claim_hash, '[]'";

impl KeyStore {
    /// Stores a new request; audited as `access.request` by `actor`.
    pub fn access_insert(
        &mut self,
        request: &AccessRequest,
        actor: &str,
    ) -> Result<(), StoreError> {
        write(self.connection(), request, true)?;
        self.audit_access(actor, "access.request", request);
        Ok(())
    }

    /// The request with this id.
    pub fn access_get(&mut self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        Ok(self
            .connection()
            .prepare_cached(&format!(
                "SELECT {} FROM access_requests WHERE id = ?1",
                self.access_columns()
            ))?
            .query_row([id], from_row)
            .optional()?)
    }

    /// Every request, or those in `status`, oldest first.
    pub fn access_list(
        &mut self,
        status: Option<AccessStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let mut statement = self.connection().prepare_cached(&format!(
            "SELECT {} FROM access_requests WHERE ?1 IS NULL OR status = ?1 \
             ORDER BY created_at, id",
            self.access_columns()
        ))?;
        let rows = statement.query_map([status.map(AccessStatus::as_str)], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes `after` over its request if that is still in status `from`; returns whether
    /// it was. A write is audited as `action` by `actor`.
    pub fn access_transition(
        &mut self,
        from: AccessStatus,
        after: &AccessRequest,
        action: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let tx = self
            .connection_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .prepare_cached("SELECT status FROM access_requests WHERE id = ?1")?
            .query_row([&after.id], |row| row.get(0))
            .optional()?;
        match current {
            None => return Err(StoreError::NotFound(after.id.clone())),
            Some(status) if status != from.as_str() => return Ok(false),
            Some(_) => {}
        }
        write(&tx, after, false)?;
        tx.commit()?;
        self.audit_access(actor, action, after);
        Ok(true)
    }

    /// Appends an access step to the audit log. The change is committed, so a failing log
    /// write is reported, not undone.
    fn audit_access(&self, actor: &str, action: &str, request: &AccessRequest) {
        let logged = audit::append_access(
            self.data_dir(),
            actor,
            action,
            &request.id,
            request.key_id.as_deref(),
        );
        if let Err(e) = logged {
            log::error!("audit log write failed for {action} {}: {e}", request.id);
        }
    }
}

fn write(conn: &Connection, r: &AccessRequest, insert: bool) -> Result<(), StoreError> {
    let verb = if insert { "INSERT" } else { "REPLACE" };
    conn.prepare_cached(&format!(
        "{verb} INTO access_requests ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
          ?20)"
    ))?
    .execute(params![
        r.id,
        r.name,
        r.team,
        json(&r.models),
        json(&r.routes),
        json(&r.scopes),
        json(&r.limits),
        r.ttl,
        r.reason,
        r.requester,
        r.status.as_str(),
        r.decided_by,
        r.note,
        r.created_at,
        r.decided_at,
        r.claimed_at,
        r.expires_at_ms,
        r.key_id,
        r.claim_hash,
        json(&r.mcp_tools),
    ])?;
    Ok(())
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<AccessRequest> {
    let status: String = row.get(10)?;
    Ok(AccessRequest {
        id: row.get(0)?,
        name: row.get(1)?,
        team: row.get(2)?,
        models: json_column(row, 3)?,
        routes: json_column(row, 4)?,
        scopes: json_column(row, 5)?,
        limits: json_column(row, 6)?,
        ttl: row.get(7)?,
        reason: row.get(8)?,
        requester: row.get(9)?,
        status: AccessStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                10,
                rusqlite::types::Type::Text,
                format!("unknown access request status {status:?}").into(),
            )
        })?,
        decided_by: row.get(11)?,
        note: row.get(12)?,
        created_at: row.get(13)?,
        decided_at: row.get(14)?,
        claimed_at: row.get(15)?,
        expires_at_ms: row.get(16)?,
        key_id: row.get(17)?,
        claim_hash: row.get(18)?,
        mcp_tools: json_column(row, 19)?,
    })
}

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lists and limits serialize")
}

//! The access request table on PostgreSQL (migration 4): `store::access`, statement for
//! statement. A change is a compare-and-set on the row's status under `SELECT .. FOR
//! UPDATE`, audited in the same transaction, so two nodes deciding or claiming the same
//! request at once cannot both succeed.

use ::postgres::{GenericClient, Row};

use super::error::{PgError, PgErrorKind};
use super::PgStore;
use crate::access::{AccessRequest, AccessStatus};
use crate::store::StoreError;

/// `mcp_tools` came with migration 6.
pub(super) const COLUMNS: &str =
    "id, name, team, models, routes, scopes, limits, ttl, reason, requester, \
    status, decided_by, note, created_at, decided_at, claimed_at, expires_at_ms, key_id, \
    claim_hash, mcp_tools";

impl PgStore {
    /// Stores a new request; audited as `access.request` by `actor`.
    pub fn access_insert(
        &mut self,
        request: &AccessRequest,
        actor: &str,
    ) -> Result<(), StoreError> {
        super::audit::check_actor(actor)?;
        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        write(&mut tx, request, true)?;
        super::audit::insert_access(&mut tx, &node, actor, "access.request", &request.id, None)?;
        tx.commit()?;
        Ok(())
    }

    /// The request with this id.
    pub fn access_get(&mut self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let row = self.client()?.query_opt(
            &format!("SELECT {COLUMNS} FROM access_requests WHERE id = $1"),
            &[&id],
        )?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every request, or those in `status`, oldest first.
    pub fn access_list(
        &mut self,
        status: Option<AccessStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let status = status.map(AccessStatus::as_str);
        let rows = self.client()?.query(
            &format!(
                "SELECT {COLUMNS} FROM access_requests \
                 WHERE $1::TEXT IS NULL OR status = $1 ORDER BY created_at, id"
            ),
            &[&status],
        )?;
        rows.iter().map(from_row).collect()
    }

    /// Writes `after` over its request if that is still in status `from`; returns whether
    /// it was. A write is audited as `action` by `actor`, in the same transaction.
    pub fn access_transition(
        &mut self,
        from: AccessStatus,
        after: &AccessRequest,
        action: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        super::audit::check_actor(actor)?;
        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let current = tx.query_opt(
            "SELECT status FROM access_requests WHERE id = $1 FOR UPDATE",
            &[&after.id],
        )?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(after.id.clone()));
        };
        let status: String = current.try_get(0)?;
        if status != from.as_str() {
            return Ok(false);
        }
        write(&mut tx, after, false)?;
        super::audit::insert_access(
            &mut tx,
            &node,
            actor,
            action,
            &after.id,
            after.key_id.as_deref(),
        )?;
        tx.commit()?;
        Ok(true)
    }
}

/// Inserts `r` (`insert`), or writes over it what a step changes.
pub(super) fn write(
    client: &mut impl GenericClient,
    r: &AccessRequest,
    insert: bool,
) -> Result<(), StoreError> {
    if insert {
        let (models, routes, scopes) = (json(&r.models), json(&r.routes), json(&r.scopes));
        let (limits, hash) = (json(&r.limits), r.claim_hash.to_vec());
        let mcp_tools = json(&r.mcp_tools);
        client.execute(
            &format!(
                "INSERT INTO access_requests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                 $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ),
            &[
                &r.id,
                &r.name,
                &r.team,
                &models,
                &routes,
                &scopes,
                &limits,
                &r.ttl,
                &r.reason,
                &r.requester,
                &r.status.as_str(),
                &r.decided_by,
                &r.note,
                &r.created_at,
                &r.decided_at,
                &r.claimed_at,
                &r.expires_at_ms,
                &r.key_id,
                &hash,
                &mcp_tools,
            ],
        )?;
    } else {
        // Only what a step changes (a policy may set the budget); what was asked for stays.
        let limits = json(&r.limits);
        client.execute(
            "UPDATE access_requests SET limits = $2, status = $3, decided_by = $4, note = $5, \
             decided_at = $6, claimed_at = $7, expires_at_ms = $8, key_id = $9 WHERE id = $1",
            &[
                &r.id,
                &limits,
                &r.status.as_str(),
                &r.decided_by,
                &r.note,
                &r.decided_at,
                &r.claimed_at,
                &r.expires_at_ms,
                &r.key_id,
            ],
        )?;
    }
    Ok(())
}

pub(super) fn from_row(row: &Row) -> Result<AccessRequest, StoreError> {
    let text = |i: usize| -> Result<String, StoreError> { Ok(row.try_get(i)?) };
    let column = |i: usize, what: &str| -> Result<String, StoreError> {
        text(i).map_err(|e| -> StoreError {
            PgError::new(
                PgErrorKind::Query,
                format!("an access request's {what}: {e}"),
            )
            .into()
        })
    };
    let status = text(10)?;
    let hash: Vec<u8> = row.try_get(18)?;
    Ok(AccessRequest {
        id: text(0)?,
        name: text(1)?,
        team: text(2)?,
        models: parse_json(&column(3, "models")?, "models")?,
        routes: parse_json(&column(4, "routes")?, "routes")?,
        scopes: parse_json(&column(5, "scopes")?, "scopes")?,
        limits: parse_json(&column(6, "limits")?, "limits")?,
        ttl: text(7)?,
        reason: text(8)?,
        requester: text(9)?,
        status: AccessStatus::parse(&status).ok_or_else(|| -> StoreError {
            PgError::new(
                PgErrorKind::Query,
                format!("unknown access request status {status:?}"),
            )
            .into()
        })?,
        decided_by: row.try_get(11)?,
        note: row.try_get(12)?,
        created_at: row.try_get(13)?,
        decided_at: row.try_get(14)?,
        claimed_at: row.try_get(15)?,
        expires_at_ms: row.try_get(16)?,
        key_id: row.try_get(17)?,
        claim_hash: hash.try_into().map_err(|_| -> StoreError {
            PgError::new(
                PgErrorKind::Query,
                "an access request's claim hash is not 32 bytes",
            )
            .into()
        })?,
        mcp_tools: parse_json(&column(19, "mcp_tools")?, "mcp_tools")?,
    })
}

/// A JSON column of an access request row.
fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        PgError::new(
            PgErrorKind::Query,
            format!("an access request's {what} does not parse: {e}"),
        )
        .into()
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lists and limits serialize")
}

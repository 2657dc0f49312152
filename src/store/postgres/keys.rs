//! The key table on PostgreSQL: the life cycle of `store::keys`, statement for statement.

use std::time::Duration;

use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row, Transaction};

use super::error::{PgError, PgErrorKind};
use super::{PgStore, CHANNEL, WRITE_LOCK};
use crate::clock::unix_now_ms;
use crate::store::ids::{display_prefix, new_secret};
use crate::store::rules::{apply, deadline_after, issue, validate};
use crate::store::{unix_now, KeyPatch, KeyRecord, NewKey, StoreError};

/// Expiry and grace are unix milliseconds (migration 3 converted the seconds before);
/// `mcp_tools` came with migration 6.
const COLUMNS: &str = "id, name, team, prefix, hash, previous_hash, previous_valid_until_ms, \
    models, routes, scopes, rps, rpm, tpm, max_concurrency, budget_usd, budget_tokens, \
    budget_period, metadata, created_at, updated_at, expires_at_ms, revoked_at, seq, \
    mcp_tools";

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

impl PgStore {
    /// Issues a key. Returns the record and the secret, which is shown once and never
    /// stored. The action is audited as `create` by `actor`, in the same transaction.
    pub fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError> {
        let (mut record, secret) = issue(new, &self.pepper, unix_now_ms())?;
        super::audit::check_actor(actor)?;

        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = begin_write(&mut client)?;
        ensure_name_free(&mut tx, &record.name, None)?;
        record.seq = next_seq(&mut tx)?;
        write_row(&mut tx, &record, true)?;
        super::audit::insert(
            &mut tx,
            &node,
            actor,
            "create",
            Some(&record.id),
            None,
            Some(&record),
        )?;
        commit(tx, record.seq)?;
        Ok((record, secret.as_str().to_owned()))
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.client()?.query(
            &format!("SELECT {COLUMNS} FROM keys ORDER BY created_at, id"),
            &[],
        )?;
        rows.iter().map(from_row).collect()
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        get_row(&mut *self.client()?, id)
    }

    /// Applies a partial update; audited as `update`.
    pub fn update(
        &mut self,
        id: &str,
        patch: KeyPatch,
        actor: &str,
    ) -> Result<KeyRecord, StoreError> {
        super::audit::check_actor(actor)?;
        let now_ms = unix_now_ms();
        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = begin_write(&mut client)?;
        let before = get_row(&mut tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let mut after = before.clone();
        apply(&mut after, patch, now_ms)?;
        validate(&after)?;
        if after.name != before.name {
            ensure_name_free(&mut tx, &after.name, Some(id))?;
        }
        after.updated_at = now_ms.div_euclid(1000);
        after.seq = next_seq(&mut tx)?;
        write_row(&mut tx, &after, false)?;
        super::audit::insert(
            &mut tx,
            &node,
            actor,
            "update",
            Some(id),
            Some(&before),
            Some(&after),
        )?;
        commit(tx, after.seq)?;
        Ok(after)
    }

    /// Revokes a key: it stops authenticating on every node once their replicas apply the
    /// change, but stays listed. Revoking a revoked key changes nothing and returns it.
    /// Audited as `revoke`.
    pub fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
        super::audit::check_actor(actor)?;
        let now = unix_now();
        let node = self.node.clone();
        let mut client = self.client()?;
        let mut tx = begin_write(&mut client)?;
        let before = get_row(&mut tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let mut after = before.clone();
        after.revoked_at = Some(now);
        after.updated_at = now;
        after.seq = next_seq(&mut tx)?;
        write_row(&mut tx, &after, false)?;
        super::audit::insert(
            &mut tx,
            &node,
            actor,
            "revoke",
            Some(id),
            Some(&before),
            Some(&after),
        )?;
        commit(tx, after.seq)?;
        Ok(after)
    }

    /// Gives a key a new secret, same id. The old secret keeps working for `grace` (zero:
    /// it dies now); a secret from an earlier rotation dies at once. Audited as `rotate`.
    pub fn rotate(
        &mut self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, String), StoreError> {
        super::audit::check_actor(actor)?;
        let now_ms = unix_now_ms();
        let now = now_ms.div_euclid(1000);
        let node = self.node.clone();
        let secret = new_secret();
        let new_hash = self.pepper.hash(secret.as_bytes());
        let mut client = self.client()?;
        let mut tx = begin_write(&mut client)?;
        let before = get_row(&mut tx, id)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if before.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "key {id} is revoked and cannot be rotated"
            )));
        }
        let mut after = before.clone();
        after.previous_hash = Some(before.hash);
        after.previous_valid_until_ms = Some(deadline_after(now_ms, grace));
        after.hash = new_hash;
        after.prefix = display_prefix(&secret);
        after.updated_at = now;
        after.seq = next_seq(&mut tx)?;
        write_row(&mut tx, &after, false)?;
        super::audit::insert(
            &mut tx,
            &node,
            actor,
            "rotate",
            Some(id),
            Some(&before),
            Some(&after),
        )?;
        commit(tx, after.seq)?;
        Ok((after, secret.as_str().to_owned()))
    }

    /// Rows changed after sequence `seq` (revoked ones included), in sequence order.
    pub fn changes_since(&self, seq: u64) -> Result<Vec<KeyRecord>, StoreError> {
        // Sequence numbers are drawn from a BIGINT sequence, so anything past i64::MAX is
        // past every row.
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(Vec::new());
        };
        let rows = self.client()?.query(
            &format!("SELECT {COLUMNS} FROM keys WHERE seq > $1 ORDER BY seq"),
            &[&seq],
        )?;
        rows.iter().map(from_row).collect()
    }

    /// The sequence number of the last committed change (0 for a new store). Cheap: the
    /// top of the `seq` index. Read from the rows rather than the sequence, which a writer
    /// advances before it commits: a reader taking that as its mark could skip the write.
    pub fn max_seq(&self) -> Result<u64, StoreError> {
        let seq: i64 = self
            .client()?
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM keys", &[])?
            .get(0);
        unsigned(seq, "seq")
    }
}

/// Starts a key write: a transaction holding the write lock until it ends.
fn begin_write(client: &mut ::postgres::Client) -> Result<Transaction<'_>, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
    Ok(tx)
}

/// Announces `seq` on the change channel and commits; the notification is delivered only if
/// the commit succeeds, and never before the row is visible.
fn commit(mut tx: Transaction<'_>, seq: u64) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])?;
    tx.commit()?;
    Ok(())
}

fn next_seq(tx: &mut Transaction<'_>) -> Result<u64, StoreError> {
    let seq: i64 = tx
        .query_one("SELECT nextval('key_change_seq')", &[])?
        .get(0);
    unsigned(seq, "seq")
}

fn get_row<C: GenericClient>(client: &mut C, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    client
        .query_opt(&format!("SELECT {COLUMNS} FROM keys WHERE id = $1"), &[&id])?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Names identify keys to Lua's `ctx:set_consumer(name)`, so no two unrevoked keys share one.
fn ensure_name_free(
    tx: &mut Transaction<'_>,
    name: &str,
    except_id: Option<&str>,
) -> Result<(), StoreError> {
    let taken: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM keys WHERE name = $1 AND revoked_at IS NULL \
             AND id IS DISTINCT FROM $2)",
            &[&name, &except_id],
        )?
        .get(0);
    if taken {
        return Err(name_taken(name));
    }
    Ok(())
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("a key named {name:?} already exists"))
}

fn write_row(tx: &mut Transaction<'_>, r: &KeyRecord, insert: bool) -> Result<(), StoreError> {
    let statement = if insert {
        format!(
            "INSERT INTO keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
        )
    } else {
        "UPDATE keys SET name = $2, team = $3, prefix = $4, hash = $5, previous_hash = $6, \
         previous_valid_until_ms = $7, models = $8, routes = $9, scopes = $10, rps = $11, \
         rpm = $12, tpm = $13, max_concurrency = $14, budget_usd = $15, budget_tokens = $16, \
         budget_period = $17, metadata = $18, created_at = $19, updated_at = $20, \
         expires_at_ms = $21, revoked_at = $22, seq = $23, mcp_tools = $24 WHERE id = $1"
            .to_owned()
    };
    // validate() has bounded every unsigned field to i64::MAX.
    let signed = |v: Option<u64>| v.map(|v| v as i64);
    let previous_hash = r.previous_hash.as_ref().map(|h| &h[..]);
    let mcp_tools = json(&r.mcp_tools);
    let params: [&(dyn ToSql + Sync); 24] = [
        &r.id,
        &r.name,
        &r.team,
        &r.prefix,
        &&r.hash[..],
        &previous_hash,
        &r.previous_valid_until_ms,
        &json(&r.models),
        &json(&r.routes),
        &json(&r.scopes),
        &r.rps,
        &signed(r.rpm),
        &signed(r.tpm),
        &r.max_concurrency.map(i64::from),
        &r.budget_usd,
        &signed(r.budget_tokens),
        &r.budget_period,
        &json(&r.metadata),
        &r.created_at,
        &r.updated_at,
        &r.expires_at_ms,
        &r.revoked_at,
        &(r.seq as i64),
        &mcp_tools,
    ];
    match tx.execute(&statement, &params) {
        Ok(_) => Ok(()),
        // The partial unique index on active names backs ensure_name_free; a hash collision
        // of 256-bit HMACs does not happen.
        Err(e) if e.code().is_some_and(|c| c.code() == UNIQUE_VIOLATION) => {
            Err(name_taken(&r.name))
        }
        Err(e) => Err(e.into()),
    }
}

fn from_row(row: &Row) -> Result<KeyRecord, StoreError> {
    let hash: Vec<u8> = row.try_get(4)?;
    let previous_hash: Option<Vec<u8>> = row.try_get(5)?;
    let optional_unsigned = |i: usize, column: &'static str| -> Result<Option<u64>, StoreError> {
        row.try_get::<_, Option<i64>>(i)?
            .map(|v| unsigned(v, column))
            .transpose()
    };
    Ok(KeyRecord {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        team: row.try_get(2)?,
        prefix: row.try_get(3)?,
        hash: hash_column(hash, "hash")?,
        previous_hash: previous_hash
            .map(|h| hash_column(h, "previous_hash"))
            .transpose()?,
        previous_valid_until_ms: row.try_get(6)?,
        models: json_column(row, 7, "models")?,
        routes: json_column(row, 8, "routes")?,
        scopes: json_column(row, 9, "scopes")?,
        rps: row.try_get(10)?,
        rpm: optional_unsigned(11, "rpm")?,
        tpm: optional_unsigned(12, "tpm")?,
        max_concurrency: row
            .try_get::<_, Option<i64>>(13)?
            .map(|v| u32::try_from(v).map_err(|_| corrupt("max_concurrency")))
            .transpose()?,
        budget_usd: row.try_get(14)?,
        budget_tokens: optional_unsigned(15, "budget_tokens")?,
        budget_period: row.try_get(16)?,
        metadata: json_column(row, 17, "metadata")?,
        created_at: row.try_get(18)?,
        updated_at: row.try_get(19)?,
        expires_at_ms: row.try_get(20)?,
        revoked_at: row.try_get(21)?,
        seq: unsigned(row.try_get(22)?, "seq")?,
        mcp_tools: json_column(row, 23, "mcp_tools")?,
    })
}

fn hash_column(bytes: Vec<u8>, column: &'static str) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| corrupt(column))
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row,
    i: usize,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(i)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column))
}

pub(super) fn unsigned(value: i64, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(column))
}

fn corrupt(column: &'static str) -> StoreError {
    // The value is not quoted: the column may be a hash.
    PgError::new(
        PgErrorKind::Query,
        format!("a stored key has an unreadable {column} column"),
    )
    .into()
}

/// JSON text of a list or map column.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lists and maps of JSON values serialize")
}

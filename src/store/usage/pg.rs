//! [`PgUsage`]: the fleet's usage ledger, the `usage` table of the shared PostgreSQL store
//! (created by migration 2, `src/store/postgres/0002_usage.sql`). Every node writes its own
//! records, each with its `node`; reports and budget totals sum every node's.
//!
//! A batch is one `INSERT .. SELECT FROM UNNEST(..)` (one round trip, atomic on its own)
//! with `ON CONFLICT (record_id) DO NOTHING`: delivering a batch again stores nothing twice.
//! The connection is opened on first use and dropped on any error, so the next call
//! reconnects (the delivery thread paces those calls with its backoff).

use std::collections::HashMap;

use ::postgres::types::ToSql;
use ::postgres::{Client, GenericClient};

use super::backend::{sql_integer, TotalsBy, UsageBackend};
use super::report::{count, GroupBy, SpendTotals, UsageRow, NANOS_PER_USD};
use super::rollup::{self, Span};
use super::series::{self, Bucket, SeriesRow, TOP_GROUPS};
use super::{node_of, LedgerError, UsageRecord};
use crate::config::store::is_node_name;
use crate::config::StoreSettings;
use crate::store::postgres::{connect, migrations};

/// The ledger in the fleet's PostgreSQL database. Used by one thread at a time.
pub struct PgUsage {
    /// The connection URL. A secret (it may hold a password): never logged or shown.
    url: String,
    /// This gateway's name, recorded by migrations it applies.
    node: String,
    client: Option<Client>,
}

impl std::fmt::Debug for PgUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PgUsage")
            .field("node", &self.node)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl PgUsage {
    /// The ledger at `url`, connected when first used. `node` names this gateway.
    pub fn new(url: &str, node: &str) -> PgUsage {
        PgUsage {
            url: url.to_owned(),
            node: node.to_owned(),
            client: None,
        }
    }

    /// The ledger `settings` name (`[store] url` resolved, `node`), not yet connected.
    ///
    /// # Errors
    /// If the URL is missing or its reference does not resolve, or the node name is not
    /// usable.
    pub fn from_settings(settings: &StoreSettings) -> Result<PgUsage, LedgerError> {
        let url = settings
            .store
            .url
            .as_ref()
            .ok_or_else(|| LedgerError::Config("store.url is required for postgres".into()))?
            .resolve()
            .map_err(|e| LedgerError::Config(format!("store.url: {e}")))?;
        let node = node_of(settings);
        if !is_node_name(&node) {
            return Err(LedgerError::Config(
                "store.node must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        Ok(PgUsage::new(url.expose(), &node))
    }

    /// This gateway's name in the fleet.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Connects (if not connected) and brings the schema up to date.
    ///
    /// # Errors
    /// If the database cannot be reached, or holds a newer schema than this binary's.
    pub fn connect(&mut self) -> Result<&mut Client, LedgerError> {
        if self.client.is_none() {
            let mut client = connect::connect(&self.url)?;
            migrations::migrate(&mut client, &self.node)?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `work` on the connection; any failure drops the connection so the next call
    /// starts afresh (a dropped connection is the common failure, and a fresh one costs
    /// little next to an outage).
    fn with_client<T>(
        &mut self,
        work: impl FnOnce(&mut Client) -> Result<T, ::postgres::Error>,
    ) -> Result<T, LedgerError> {
        let client = self.connect()?;
        let result = work(client);
        if result.is_err() {
            self.client = None;
        }
        Ok(result?)
    }
}

/// Inserts `records` in one statement (atomic on its own), skipping those whose id is
/// already stored, and adds the inserted ones to the hourly and daily rollups
/// ([`rollup::PG_INSERT`]); returns how many were inserted. Used by the writer's deliveries and by
/// `store migrate`'s ledger copy, inside its transaction.
pub(crate) fn insert_records(
    client: &mut impl GenericClient,
    records: &[UsageRecord],
) -> Result<u64, ::postgres::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let text = |f: fn(&UsageRecord) -> &str| records.iter().map(f).collect::<Vec<&str>>();
    let optional =
        |f: fn(&UsageRecord) -> Option<&str>| records.iter().map(f).collect::<Vec<Option<&str>>>();
    let number = |f: fn(&UsageRecord) -> u64| {
        records
            .iter()
            .map(|r| sql_integer(f(r)))
            .collect::<Vec<i64>>()
    };
    let ids = text(|r| &r.id);
    let nodes = text(|r| &r.node);
    let ts: Vec<i64> = records.iter().map(|r| r.event.ts_ms).collect();
    let request_ids = text(|r| &r.event.request_id);
    let key_ids = optional(|r| r.event.key_id.as_deref());
    let teams = text(|r| &r.event.team);
    let models = optional(|r| r.event.model.as_deref());
    let prompts = optional(|r| r.event.prompt.as_deref());
    let routes = optional(|r| r.event.route.as_deref());
    let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.event.status)).collect();
    let prompt_tokens = number(|r| r.event.prompt_tokens);
    let completion_tokens = number(|r| r.event.completion_tokens);
    let cached_tokens = number(|r| r.event.cached_tokens);
    let costs = number(|r| r.event.cost_nano_usd);
    let inserted = client.query_one(
        rollup::PG_INSERT,
        &[
            &ids,
            &nodes,
            &ts,
            &request_ids,
            &key_ids,
            &teams,
            &models,
            &prompts,
            &routes,
            &statuses,
            &prompt_tokens,
            &completion_tokens,
            &cached_tokens,
            &costs,
        ],
    )?;
    Ok(u64::try_from(inserted.get::<_, i64>(0)).unwrap_or(0))
}

impl UsageBackend for PgUsage {
    fn write_batch(&mut self, records: &[UsageRecord]) -> Result<(), LedgerError> {
        if records.is_empty() {
            return Ok(());
        }
        self.with_client(|client| insert_records(client, records))?;
        Ok(())
    }

    fn report(&mut self, group_by: GroupBy, since_ms: i64) -> Result<Vec<UsageRow>, LedgerError> {
        // SUM of BIGINT is NUMERIC in PostgreSQL, cast back (a sum past 2^63 fails rather
        // than wraps). Groups of equal cost are ordered by bytes (COLLATE "C"), as SQLite
        // orders them, whatever the database's locale. The schema always has the rollups.
        let span = Span::new(since_ms, None, true);
        let sql = series::report_sql(group_by, ["$1", "$2", "$3"], span, true);
        let all = [span.since, span.hour_from, span.day_from];
        let used = if span.reads_rollups() {
            &all[..]
        } else {
            &all[..1]
        };
        let parameters: Vec<&(dyn ToSql + Sync)> = used.iter().map(|p| p as _).collect();
        let rows = self.with_client(|client| client.query(&sql, &parameters))?;
        Ok(rows
            .iter()
            .map(|row| UsageRow {
                group: row.get(0),
                requests: count(row.get(1)),
                prompt_tokens: count(row.get(2)),
                completion_tokens: count(row.get(3)),
                cost_usd: count(row.get(4)) as f64 / NANOS_PER_USD,
            })
            .collect())
    }

    fn series(
        &mut self,
        group_by: GroupBy,
        since_ms: i64,
        bucket: Bucket,
    ) -> Result<Vec<SeriesRow>, LedgerError> {
        // The same query as SQLite's, with PostgreSQL's casts (SUM of BIGINT is NUMERIC) and
        // byte-order collation so both stores order groups alike.
        let span = Span::new(since_ms, Some(bucket), true);
        let sql = series::sql(group_by, ["$1", "$2", "$3", "$4", "$5"], span, true);
        let all = [
            span.since,
            bucket.millis(),
            TOP_GROUPS,
            span.hour_from,
            span.day_from,
        ];
        // Five-minute buckets read rows only: the query names since, width and top alone.
        let used = if span.reads_rollups() {
            &all[..]
        } else {
            &all[..3]
        };
        let parameters: Vec<&(dyn ToSql + Sync)> = used.iter().map(|p| p as _).collect();
        let rows = self.with_client(|client| client.query(&sql, &parameters))?;
        Ok(rows
            .iter()
            .map(|row| {
                series::row(
                    row.get(0),
                    row.get(1),
                    [row.get(2), row.get(3), row.get(4), row.get(5), row.get(6)],
                )
            })
            .collect())
    }

    fn totals(
        &mut self,
        by: TotalsBy,
        since_ms: i64,
    ) -> Result<HashMap<String, SpendTotals>, LedgerError> {
        let column = by.column();
        let sql = format!(
            "SELECT {column}, SUM(prompt_tokens + completion_tokens)::BIGINT, \
             SUM(cost_nano_usd)::BIGINT \
             FROM usage WHERE ts_ms >= $1 AND {column} IS NOT NULL AND {column} != '' \
             GROUP BY {column}"
        );
        let rows = self.with_client(|client| client.query(&sql, &[&since_ms]))?;
        Ok(rows
            .iter()
            .map(|row| {
                let totals = SpendTotals {
                    tokens: count(row.get(1)),
                    cost_nano_usd: count(row.get(2)),
                };
                (row.get(0), totals)
            })
            .collect())
    }
}

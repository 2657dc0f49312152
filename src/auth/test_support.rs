//! Builders for tests and benchmarks (hidden from the docs; not for production code).

use crate::store::KeyRecord;

/// A key record with the given id and name, every list empty, no limits, created at time 0,
/// never expiring, not revoked, and an all-zero hash (set `hash` to `pepper.hash(secret)` for
/// a record that authenticates).
pub fn record(id: &str, name: &str) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        team: String::new(),
        prefix: String::new(),
        models: Vec::new(),
        routes: Vec::new(),
        scopes: Vec::new(),
        mcp_tools: Vec::new(),
        rps: None,
        rpm: None,
        tpm: None,
        max_concurrency: None,
        budget_usd: None,
        budget_tokens: None,
        budget_period: None,
        metadata: serde_json::Map::new(),
        created_at: 0,
        updated_at: 0,
        expires_at_ms: None,
        revoked_at: None,
        hash: [0; 32],
        previous_hash: None,
        previous_valid_until_ms: None,
        seq: 0,
    }
}

//! The per-request identity that authentication establishes.

use std::sync::Arc;

use crate::store::KeyRecord;

/// Who is making a request: set by the auth phase (a virtual key, a JWT's claims or a Lua
/// `ctx:set_consumer`) and read by limits, hooks, the usage ledger and the access log.
#[derive(Clone, Debug, Default)]
pub struct Consumer {
    /// The virtual key's id; `None` for a consumer without a key (for example from a JWT).
    pub id: Option<String>,
    /// Display name (the key's name, or a JWT's subject claim).
    pub name: String,
    /// The team spend and limits are grouped under; may be empty.
    pub team: String,
    /// Scopes granted, checked against a route's required `scopes`.
    pub scopes: Vec<String>,
    /// Free-form metadata, exposed to Lua as `ctx.consumer.metadata`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The key whose limits and budgets apply to this request, if any.
    pub key: Option<Arc<KeyRecord>>,
}

impl Consumer {
    /// The consumer a virtual key stands for: its id, name, team, scopes and metadata, with
    /// the key itself kept for the limits and budget phases.
    pub fn from_key(key: &Arc<KeyRecord>) -> Consumer {
        Consumer {
            id: Some(key.id.clone()),
            name: key.name.clone(),
            team: key.team.clone(),
            scopes: key.scopes.clone(),
            metadata: key.metadata.clone(),
            key: Some(Arc::clone(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_key_copies_identity_and_keeps_the_key() {
        let mut record = crate::auth::test_support::record("key_c1", "alice");
        record.team = "research".into();
        record.scopes = vec!["chat".into()];
        record
            .metadata
            .insert("tier".into(), serde_json::Value::from("gold"));
        let key = Arc::new(record);

        let consumer = Consumer::from_key(&key);
        assert_eq!(consumer.id.as_deref(), Some("key_c1"));
        assert_eq!(consumer.name, "alice");
        assert_eq!(consumer.team, "research");
        assert_eq!(consumer.scopes, vec!["chat".to_string()]);
        assert_eq!(consumer.metadata["tier"], "gold");
        assert!(Arc::ptr_eq(consumer.key.as_ref().unwrap(), &key));
    }
}

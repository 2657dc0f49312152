//! The events and their bodies.
//!
//! A body is one JSON object: `id` (`evt_...`, the same on every attempt), `type`,
//! `created_at` (RFC 3339, when the event happened), `timestamp` (unix seconds of this
//! attempt, signed with the rest; see [`super::sign`]) and the event's own fields:
//! `key` (`{"id","name","team","expires_at","revoked_at"}`), `team`, `budget` or
//! `request`. No body holds a key's secret, its prefix, a hash or the pepper.

use serde_json::{json, Map, Value};

use crate::clock::calendar::rfc3339;
use crate::limits::{nano_to_usd, BudgetCrossing, BudgetDimension};
use crate::store::webhook_queue::{key_summary, WebhookEvent};
use crate::store::KeyRecord;

/// The bytes POSTed for `event` at unix second `timestamp`.
pub fn render_body(event: &WebhookEvent, timestamp: i64) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("id".into(), event.id.clone().into());
    body.insert("type".into(), event.kind.clone().into());
    body.insert(
        "created_at".into(),
        rfc3339(event.created_at_ms.div_euclid(1000)).into(),
    );
    body.insert("timestamp".into(), timestamp.into());
    for (name, value) in &event.data {
        // The envelope's fields are the gateway's; data cannot overwrite them.
        body.entry(name.clone()).or_insert_with(|| value.clone());
    }
    Value::Object(body).to_string().into_bytes()
}

/// `key.expiring` for `record`, for the receiver `target` only: once per key, expiry and
/// receiver (a new `expires_at` is a new event).
pub fn key_expiring(record: &KeyRecord, expires_at_ms: i64, target: &str) -> WebhookEvent {
    let mut data = Map::new();
    data.insert("key".into(), key_summary(record));
    data.insert(
        "expires_at".into(),
        rfc3339(expires_at_ms.div_euclid(1000)).into(),
    );
    let mut event = WebhookEvent::new("key.expiring", data).once_as(format!(
        "key.expiring:{}:{expires_at_ms}:{target}",
        record.id
    ));
    event.target = Some(target.to_owned());
    event
}

/// `budget.threshold` for a crossing; `key` is the key of a `key:` scope when the store
/// still has it. Once per scope, period, limit and threshold.
pub fn budget_threshold(crossing: &BudgetCrossing, key: Option<&KeyRecord>) -> WebhookEvent {
    let (scope_kind, scope_name) = crossing
        .scope
        .split_once(':')
        .unwrap_or(("key", crossing.scope.as_str()));
    let mut budget = Map::new();
    budget.insert("scope".into(), scope_kind.into());
    budget.insert("period".into(), crossing.period.as_str().into());
    budget.insert(
        "period_start".into(),
        rfc3339(crossing.period_start_ms.div_euclid(1000)).into(),
    );
    budget.insert("threshold_percent".into(), crossing.percent.into());
    let dimension = match crossing.dimension {
        BudgetDimension::Tokens => {
            budget.insert("limit_tokens".into(), crossing.limit.into());
            budget.insert("spent_tokens".into(), crossing.spent.into());
            "tokens"
        }
        BudgetDimension::Cost => {
            budget.insert("limit_usd".into(), nano_to_usd(crossing.limit).into());
            budget.insert("spent_usd".into(), nano_to_usd(crossing.spent).into());
            "usd"
        }
    };
    budget.insert("dimension".into(), dimension.into());
    let mut data = Map::new();
    data.insert("budget".into(), Value::Object(budget));
    match (scope_kind, key) {
        ("key", Some(record)) => {
            data.insert("key".into(), key_summary(record));
            data.insert("team".into(), record.team.clone().into());
        }
        ("key", None) => {
            data.insert("key".into(), json!({ "id": scope_name }));
        }
        _ => {
            data.insert("team".into(), scope_name.into());
        }
    }
    WebhookEvent::new("budget.threshold", data).once_as(format!(
        "budget.threshold:{}:{}:{}:{dimension}:{}",
        crossing.scope,
        crossing.period.as_str(),
        crossing.period_start_ms,
        crossing.percent
    ))
}

/// The steps of an access request that send an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessEvent {
    /// `access.requested`: a request was made (pending, or approved at once by a policy:
    /// then `access.approved` follows).
    Requested,
    /// `access.approved`: a person or a policy approved it and a key was minted.
    Approved,
    /// `access.denied`.
    Denied,
}

impl AccessEvent {
    /// The event type, as subscribed to.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessEvent::Requested => "access.requested",
            AccessEvent::Approved => "access.approved",
            AccessEvent::Denied => "access.denied",
        }
    }
}

/// What an access event says about its request. Never the claim token or the key's secret.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessEventInfo<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The key name asked for.
    pub name: &'a str,
    /// The team asked for.
    pub team: &'a str,
    /// Who made this step: `admin`, `cli:<user>`, a key's id, or `policy`.
    pub actor: &'a str,
    /// Who asked: `admin`, `cli:<user>`, or the id of the key that asked for itself.
    pub requester: &'a str,
    /// The request's status after this step (`pending`, `approved`, `denied`).
    pub status: &'a str,
    /// Who decided (approval, denial).
    pub decided_by: Option<&'a str>,
    /// The approver's or denier's note, if any.
    pub note: Option<&'a str>,
    /// The requester's reason, if any.
    pub reason: Option<&'a str>,
    /// The minted key's id (approval).
    pub key_id: Option<&'a str>,
    /// When the minted key expires, unix seconds (approval).
    pub expires_at: Option<i64>,
}

/// Longest free text (note, reason) carried in a body; the rest is cut.
const MAX_TEXT_CHARS: usize = 1000;

/// The event of one step of an access request.
pub fn access_event(kind: AccessEvent, info: AccessEventInfo<'_>) -> WebhookEvent {
    let cut = |text: &str| text.chars().take(MAX_TEXT_CHARS).collect::<String>();
    let mut request = Map::new();
    request.insert("id".into(), info.request_id.into());
    request.insert("name".into(), info.name.into());
    request.insert("team".into(), info.team.into());
    request.insert("requester".into(), info.requester.into());
    request.insert("status".into(), info.status.into());
    request.insert("decided_by".into(), info.decided_by.into());
    if let Some(reason) = info.reason {
        request.insert("reason".into(), cut(reason).into());
    }
    if let Some(note) = info.note {
        request.insert("note".into(), cut(note).into());
    }
    let mut data = Map::new();
    data.insert("request".into(), Value::Object(request));
    data.insert("team".into(), info.team.into());
    data.insert("actor".into(), info.actor.into());
    if let Some(id) = info.key_id {
        data.insert(
            "key".into(),
            json!({ "id": id, "name": info.name, "team": info.team, "expires_at": info.expires_at }),
        );
    }
    WebhookEvent::new(kind.as_str(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Period;

    fn record() -> KeyRecord {
        KeyRecord {
            id: "key_aaaaaaaaaaaaaaaaaaaa".into(),
            name: "ci".into(),
            team: "platform".into(),
            prefix: "cf_PrEfIxSeCr".into(),
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
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            expires_at_ms: Some(1_700_000_360_000),
            revoked_at: None,
            hash: [0x5a; 32],
            previous_hash: None,
            previous_valid_until_ms: None,
            seq: 1,
        }
    }

    #[test]
    fn a_body_has_the_envelope_and_never_the_prefix_or_hash() {
        let record = record();
        let event = crate::store::webhook_queue::key_event("create", &record, "admin").unwrap();
        let body: Value = serde_json::from_slice(&render_body(&event, 1_800_000_000)).unwrap();
        assert_eq!(body["type"], "key.created");
        assert_eq!(body["id"], event.id);
        assert_eq!(body["timestamp"], 1_800_000_000);
        assert_eq!(body["key"]["name"], "ci");
        assert_eq!(body["key"]["team"], "platform");
        let text = body.to_string();
        assert!(!text.contains(&record.prefix), "prefix leaked: {text}");
        assert!(!text.contains("hash"));
    }

    #[test]
    fn budget_events_are_once_per_scope_period_dimension_and_threshold() {
        let crossing = BudgetCrossing {
            scope: "team:ml".into(),
            period: Period::Month,
            period_start_ms: 1_700_000_000_000,
            dimension: BudgetDimension::Cost,
            percent: 80,
            spent: 4_000_000_000,
            limit: 5_000_000_000,
        };
        let a = budget_threshold(&crossing, None);
        let b = budget_threshold(&crossing, None);
        assert_eq!(a.dedup_key, b.dedup_key);
        assert_ne!(a.id, b.id);
        assert_eq!(a.data["team"], "ml");
        assert_eq!(a.data["budget"]["limit_usd"], 5.0);
        let next = BudgetCrossing {
            percent: 100,
            ..crossing
        };
        assert_ne!(budget_threshold(&next, None).dedup_key, a.dedup_key);
    }

    #[test]
    fn expiring_is_once_per_key_expiry_and_receiver() {
        let record = record();
        let a = key_expiring(&record, 5_000, "t1");
        assert_eq!(a.dedup_key, key_expiring(&record, 5_000, "t1").dedup_key);
        assert_ne!(a.dedup_key, key_expiring(&record, 6_000, "t1").dedup_key);
        assert_ne!(a.dedup_key, key_expiring(&record, 5_000, "t2").dedup_key);
        assert_eq!(a.target.as_deref(), Some("t1"));
    }

    #[test]
    fn access_events_bound_free_text() {
        let long = "n".repeat(5000);
        let event = access_event(
            AccessEvent::Denied,
            AccessEventInfo {
                request_id: "req_1",
                name: "ci",
                team: "ml",
                actor: "admin",
                note: Some(&long),
                ..Default::default()
            },
        );
        assert_eq!(event.kind, "access.denied");
        assert_eq!(
            event.data["request"]["note"].as_str().unwrap().len(),
            MAX_TEXT_CHARS
        );
    }
}

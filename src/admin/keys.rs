//! `/admin/keys*`: the key life cycle over HTTP (README, "Admin API").
//!
//! Every call goes through the one store backend the admin API holds ([`AdminState::store`]),
//! taking its lock for the length of the store call only. Every write, once committed, is applied to the credential cache
//! before the answer is sent ([`in_force`]), so the change is in force on this node's very
//! next request; the cache's watcher only carries changes made by other processes.

use serde_json::{json, Map, Value};

use super::http::{Request, Response};
use super::routes::{error, json_response};
use super::AdminState;
use crate::clock::parse_duration;
use crate::store::{KeyPatch, KeyRecord, NewKey, StoreError};

/// Actor recorded in the audit log for admin API calls.
const ACTOR: &str = "admin";

/// `POST /admin/keys`: 201 with the record and `key`, the only time the secret is shown.
pub(crate) fn create(state: &AdminState, request: &Request) -> Response {
    if let Some(refused) = unavailable(state) {
        return refused;
    }
    let result = body_object(request)
        .and_then(|body| new_key(&body))
        .and_then(|new| state.store.lock().create(new, ACTOR));
    match result {
        Ok((record, secret)) => {
            in_force(state, &record);
            let mut body = record_json(&record);
            body.insert("key".into(), Value::String(secret));
            json_response(201, &Value::Object(body))
        }
        Err(e) => store_error(state, &e),
    }
}

/// Most keys one page of `GET /admin/keys?limit=` holds.
pub const MAX_PAGE: usize = 500;

/// Longest `q` filter accepted.
const MAX_FILTER_BYTES: usize = 256;

/// `GET /admin/keys`: every key, revoked ones included, without secrets. With
/// `?limit=&offset=` one page of them (newest first; `x-total-count` says how many match),
/// and with `q=` only keys whose id, name, team or prefix contains it (ASCII case folded):
/// what the dashboard pages through at 10,000 keys without shipping them all.
pub(crate) fn list(state: &AdminState, request: &Request) -> Response {
    let page = match page_query(request.query.as_deref()) {
        Ok(page) => page,
        Err(message) => return error(400, "invalid_request_error", "invalid_parameter", &message),
    };
    let (records, stored_use) = {
        let mut store = state.store.lock();
        match store
            .list()
            .and_then(|records| Ok((records, store.last_used()?)))
        {
            Ok(read) => read,
            Err(e) => return store_error(state, &e),
        }
    };
    let listed = |records: &[&KeyRecord]| -> Value {
        let shown: Vec<Value> = records
            .iter()
            .map(|r| Value::Object(with_last_used(state, r, stored_use.get(&r.id).copied())))
            .collect();
        Value::Array(shown)
    };
    let Some(page) = page else {
        return json_response(200, &listed(&records.iter().collect::<Vec<_>>()));
    };
    let needle = page.filter.to_ascii_lowercase();
    let mut matching: Vec<&KeyRecord> = records
        .iter()
        .filter(|r| {
            needle.is_empty()
                || [&r.id, &r.name, &r.team, &r.prefix]
                    .iter()
                    .any(|field| field.to_ascii_lowercase().contains(&needle))
        })
        .collect();
    matching.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let total = matching.len();
    let shown: Vec<&KeyRecord> = matching
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    let mut response = json_response(200, &listed(&shown));
    response.headers.push(("x-total-count", total.to_string()));
    response
}

/// One page of keys: `limit` (1 to [`MAX_PAGE`], default 50), `offset`, filter `q`.
struct Page {
    limit: usize,
    offset: usize,
    filter: String,
}

/// The paging parameters; `None` when none is given (the whole list, as before paging).
fn page_query(query: Option<&str>) -> Result<Option<Page>, String> {
    let mut page = Page {
        limit: 50,
        offset: 0,
        filter: String::new(),
    };
    let mut paged = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // A form-encoded space in the filter box arrives as `+`.
        let value = super::usage::percent_decode(&value.replace('+', " "))?;
        let number = |max: usize| -> Result<usize, String> {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{name}: expected a whole number up to {max}"))
        };
        match name {
            "limit" => page.limit = number(MAX_PAGE)?.max(1),
            "offset" => page.offset = number(usize::MAX)?,
            "q" if value.len() <= MAX_FILTER_BYTES => page.filter = value,
            "q" => return Err(format!("q: at most {MAX_FILTER_BYTES} bytes")),
            _ => {
                return Err(format!(
                    "unknown parameter {name:?}; use limit, offset and q"
                ))
            }
        }
        paged = true;
    }
    Ok(paged.then_some(page))
}

/// `GET /admin/keys/{id}`.
pub(crate) fn show(state: &AdminState, id: &str) -> Response {
    let read = {
        let mut store = state.store.lock();
        store
            .get(id)
            .and_then(|record| Ok((record, store.last_used()?.remove(id))))
    };
    match read {
        Ok((Some(record), stored_use)) => json_response(
            200,
            &Value::Object(with_last_used(state, &record, stored_use)),
        ),
        Ok((None, _)) => store_error(state, &StoreError::NotFound(id.to_owned())),
        Err(e) => store_error(state, &e),
    }
}

/// `PATCH /admin/keys/{id}`: any field of create; `null` clears an optional one.
pub(crate) fn update(state: &AdminState, id: &str, request: &Request) -> Response {
    if let Some(refused) = unavailable(state) {
        return refused;
    }
    let result = body_object(request)
        .and_then(|body| key_patch(&body))
        .and_then(|patch| state.store.lock().update(id, patch, ACTOR));
    match result {
        Ok(record) => {
            in_force(state, &record);
            json_response(200, &json!(record))
        }
        Err(e) => store_error(state, &e),
    }
}

/// `POST /admin/keys/{id}/rotate` with an optional `{"grace":"1h"}` (default: no grace).
pub(crate) fn rotate(state: &AdminState, id: &str, request: &Request) -> Response {
    if let Some(refused) = unavailable(state) {
        return refused;
    }
    let result =
        rotate_grace(request).and_then(|grace| state.store.lock().rotate(id, grace, ACTOR));
    match result {
        Ok((record, secret)) => {
            in_force(state, &record);
            json_response(200, &json!({ "id": record.id, "key": secret }))
        }
        Err(e) => store_error(state, &e),
    }
}

/// `DELETE /admin/keys/{id}`: revokes (the key stays listed); 204.
pub(crate) fn revoke(state: &AdminState, id: &str) -> Response {
    if let Some(refused) = unavailable(state) {
        return refused;
    }
    let result = state.store.lock().revoke(id, ACTOR);
    match result {
        Ok(record) => {
            in_force(state, &record);
            Response {
                status: 204,
                content_type: "application/json",
                headers: Vec::new(),
                body: Vec::new(),
                close: false,
            }
        }
        Err(e) => store_error(state, &e),
    }
}

/// Puts a committed key row in force on this node: the cache the workers authenticate
/// against takes it now, not at the watcher's next poll. A row the cache already holds (the
/// watcher got there first, or a revoke of a revoked key) or one older than what it holds
/// changes nothing.
fn in_force(state: &AdminState, record: &KeyRecord) {
    state.credentials.apply_change(record.clone());
}

/// A key's JSON with `last_used_at`: when it last authenticated, in unix seconds (`null`:
/// never), the later of the store's record (every node's, written every few seconds) and
/// this node's memory (this very second).
fn with_last_used(
    state: &AdminState,
    record: &KeyRecord,
    stored: Option<i64>,
) -> Map<String, Value> {
    let mut body = record_json(record);
    let here = state.credentials.last_used(&record.id);
    body.insert("last_used_at".into(), json!(stored.max(here)));
    body
}

fn record_json(record: &KeyRecord) -> Map<String, Value> {
    match json!(record) {
        Value::Object(map) => map,
        _ => unreachable!("a key record serializes to an object"),
    }
}

/// 503 `store_unavailable` when the key store is known to be unreachable: a write is refused
/// at once rather than after a connection attempt, and the watcher says when it is back.
fn unavailable(state: &AdminState) -> Option<Response> {
    (!state.credentials.store_health().is_up()).then(store_unavailable)
}

fn store_unavailable() -> Response {
    error(
        503,
        "api_error",
        "store_unavailable",
        "the key store is unreachable; keys already issued keep working, retry later",
    )
}

/// The store's errors as the contract's statuses. Failures of the machine are logged here and
/// answered without detail; an unreachable store is recorded in the store health (one log
/// line when that changes) and answered 503 `store_unavailable`.
pub(crate) fn store_error(state: &AdminState, e: &StoreError) -> Response {
    if e.is_unavailable() {
        if state.credentials.store_health().set(false) {
            log::warn!("admin: key store unreachable: {e}");
        }
        return store_unavailable();
    }
    match e {
        StoreError::NotFound(_) => error(404, "not_found_error", "key_not_found", "no such key"),
        StoreError::Invalid { .. } => error(
            400,
            "invalid_request_error",
            "invalid_field",
            &e.to_string(),
        ),
        StoreError::Conflict(message) => error(409, "invalid_request_error", "conflict", message),
        StoreError::Db(_) | StoreError::Io(_) | StoreError::Postgres(_) => {
            log::error!("admin: {e}");
            error(
                500,
                "api_error",
                "store_error",
                "the key store is unavailable",
            )
        }
    }
}

/// The body as a JSON object; an empty body is an empty object.
fn body_object(request: &Request) -> Result<Map<String, Value>, StoreError> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&request.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(StoreError::invalid("body", "must be a JSON object")),
        Err(e) => Err(StoreError::invalid("body", format!("not valid JSON: {e}"))),
    }
}

fn rotate_grace(request: &Request) -> Result<std::time::Duration, StoreError> {
    let body = body_object(request)?;
    if let Some(unknown) = body.keys().find(|k| k.as_str() != "grace") {
        return Err(unknown_field(unknown));
    }
    match body.get("grace") {
        None | Some(Value::Null) => Ok(std::time::Duration::ZERO),
        Some(Value::String(text)) => {
            parse_duration(text).map_err(|e| StoreError::invalid("grace", e))
        }
        Some(_) => Err(StoreError::invalid(
            "grace",
            "must be a duration like \"1h\"",
        )),
    }
}

/// Fields a key body may hold, as `POST /admin/keys` names them.
const FIELDS: &[&str] = &[
    "name",
    "team",
    "models",
    "routes",
    "scopes",
    "mcp_tools",
    "rps",
    "rpm",
    "tpm",
    "max_concurrency",
    "budget_usd",
    "budget_tokens",
    "budget_period",
    "expires_in",
    "metadata",
];

fn unknown_field(name: &str) -> StoreError {
    // The message quotes the name escaped, so a hostile name cannot break the log line.
    StoreError::Invalid {
        field: "body",
        message: format!("unknown field {name:?}"),
    }
}

/// A body of `POST /admin/keys` as a [`NewKey`].
fn new_key(body: &Map<String, Value>) -> Result<NewKey, StoreError> {
    let patch = key_patch(body)?;
    let name = patch
        .name
        .clone()
        .ok_or_else(|| StoreError::invalid("name", "is required"))?;
    Ok(NewKey::from_patch(name, patch))
}

/// A body of `PATCH /admin/keys/{id}` as a [`KeyPatch`]: absent fields stay, `null` clears
/// the optional ones. Every type error names its field.
fn key_patch(body: &Map<String, Value>) -> Result<KeyPatch, StoreError> {
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(unknown_field(unknown));
    }
    Ok(KeyPatch {
        name: required(body, "name", string)?,
        team: required(body, "team", string)?,
        models: required(body, "models", strings)?,
        routes: required(body, "routes", strings)?,
        scopes: required(body, "scopes", strings)?,
        mcp_tools: required(body, "mcp_tools", strings)?,
        rps: nullable(body, "rps", number)?,
        rpm: nullable(body, "rpm", unsigned)?,
        tpm: nullable(body, "tpm", unsigned)?,
        max_concurrency: nullable(body, "max_concurrency", |v| {
            unsigned(v).and_then(|n| u32::try_from(n).ok())
        })?,
        budget_usd: nullable(body, "budget_usd", number)?,
        budget_tokens: nullable(body, "budget_tokens", unsigned)?,
        budget_period: nullable(body, "budget_period", string)?,
        expires_in: nullable(body, "expires_in", string)?,
        metadata: required(body, "metadata", |v| v.as_object().cloned())?,
    })
}

/// What each field must be, for error messages.
fn expected(field: &str) -> &'static str {
    match field {
        "models" | "routes" | "scopes" | "mcp_tools" => "must be an array of strings",
        "rps" | "budget_usd" => "must be a number",
        "rpm" | "tpm" | "budget_tokens" | "max_concurrency" => "must be a non-negative integer",
        "metadata" => "must be an object",
        _ => "must be a string",
    }
}

/// A field that may be absent but not `null`.
fn required<T>(
    body: &Map<String, Value>,
    field: &'static str,
    parse: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    match body.get(field) {
        None => Ok(None),
        Some(value) => parse(value)
            .map(Some)
            .ok_or_else(|| StoreError::invalid(field, expected(field))),
    }
}

/// A field that may be absent (`None`) or `null` (`Some(None)`).
fn nullable<T>(
    body: &Map<String, Value>,
    field: &'static str,
    parse: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Option<T>>, StoreError> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => parse(value)
            .map(|v| Some(Some(v)))
            .ok_or_else(|| StoreError::invalid(field, expected(field))),
    }
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array()?.iter().map(string).collect()
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn unsigned(value: &Value) -> Option<u64> {
    value.as_u64()
}

#[cfg(test)]
mod tests;

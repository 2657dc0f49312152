//! `/admin/access-requests*`: just-in-time access over HTTP (README, "Just-in-time access").
//!
//! Three callers besides the admin token holder reach these endpoints, each with its own
//! credential, checked here before the router's admin-token check ([`without_admin_token`]):
//! - a key holding scope `access:request` may `POST /admin/access-requests` for itself (its
//!   own team; the request records the key's id as requester);
//! - a key holding scope `access:approve` may approve or deny, but never a request it made;
//! - anyone holding a request's claim token may claim it: the token is the credential.
//!
//! The steps themselves are `crate::access::flow`'s, shared with the CLI.

use serde::Deserialize;
use serde_json::json;

use super::http::{Request, Response};
use super::keys::store_error;
use super::routes::{error, json_response};
use super::AdminState;
use crate::access::flow::{self, AccessError, Requester};
use crate::access::{AccessStatus, KeyLimits, NewAccessRequest};
use crate::clock::unix_now_ms;
use crate::store::KeyRecord;

/// The scope that lets a key ask for access for itself.
pub const SCOPE_REQUEST: &str = "access:request";
/// The scope that lets a key approve or deny other requesters' requests.
pub const SCOPE_APPROVE: &str = "access:approve";

/// Answers the access calls that need no admin token (a claim, or a key's own request or
/// decision); `None` leaves the request to the router's admin-token check.
pub(crate) fn without_admin_token(
    state: &AdminState,
    request: &Request,
    segments: &[&str],
) -> Option<Response> {
    match (request.method.as_str(), segments) {
        ("POST", ["admin", "access-requests", id, "claim"]) => Some(claim(state, id, request)),
        _ if super::routes::authorized(state, request) => None,
        ("POST", ["admin", "access-requests"]) => {
            let key = presented_key(state, request)?;
            Some(match holds(&key, SCOPE_REQUEST) {
                Ok(()) => create(
                    state,
                    request,
                    &Requester::Key {
                        id: key.id.clone(),
                        team: key.team.clone(),
                    },
                ),
                Err(refused) => refused,
            })
        }
        ("POST", ["admin", "access-requests", id, verb @ ("approve" | "deny")]) => {
            let key = presented_key(state, request)?;
            Some(match holds(&key, SCOPE_APPROVE) {
                Ok(()) => decide(state, id, verb, request, &key.id),
                Err(refused) => refused,
            })
        }
        _ => None,
    }
}

/// The key a request presents (`Authorization: Bearer` or `x-api-key`) if it is one the
/// gateway would accept now; `None` otherwise, and the router answers 401.
fn presented_key(state: &AdminState, request: &Request) -> Option<std::sync::Arc<KeyRecord>> {
    let presented = request
        .header("authorization")
        .and_then(super::auth::bearer_token)
        .or_else(|| request.header("x-api-key"))?;
    state
        .credentials
        .authenticate_at_ms(presented.as_bytes(), unix_now_ms())
}

fn holds(key: &KeyRecord, scope: &str) -> Result<(), Response> {
    if key.scopes.iter().any(|s| s == scope) {
        Ok(())
    } else {
        Err(error(
            403,
            "permission_error",
            "missing_scope",
            &format!("this key does not hold scope {scope:?}"),
        ))
    }
}

/// The body of `POST /admin/access-requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    mcp_tools: Vec<String>,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    reason: String,
    #[serde(flatten)]
    limits: KeyLimits,
}

/// The body of approve and deny.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    note: Option<String>,
}

/// The body of claim.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    claim_token: String,
}

/// `POST /admin/access-requests`: 201 `{"id","status","claim_token"}` (and `key_id`,
/// `expires_at` when a policy approved it at once).
pub(crate) fn create(state: &AdminState, request: &Request, requester: &Requester) -> Response {
    let body: CreateBody = match parse(request) {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let new = NewAccessRequest {
        name: body.name,
        team: body.team,
        models: body.models,
        routes: body.routes,
        scopes: body.scopes,
        mcp_tools: body.mcp_tools,
        limits: body.limits,
        ttl: body.ttl,
        reason: body.reason,
    };
    let policies = (state.access_policies)();
    let submitted = flow::submit(
        &mut **state.store.lock(),
        new,
        requester,
        &policies,
        unix_now_ms(),
    );
    match submitted {
        Ok(submitted) => {
            if let Some(key) = submitted.minted {
                state.credentials.apply_change(key);
            }
            let mut answer = json!({
                "id": submitted.request.id,
                "status": submitted.request.status,
                "claim_token": submitted.claim_token.expose(),
            });
            if submitted.request.status == AccessStatus::Approved {
                answer["key_id"] = json!(submitted.request.key_id);
                answer["expires_at"] = json!(submitted.request.expires_at_ms.map(|ms| ms / 1000));
            }
            json_response(201, &answer)
        }
        Err(e) => access_error(state, &e),
    }
}

/// `GET /admin/access-requests[?status=..]`: the requests, oldest first, without tokens.
pub(crate) fn list(state: &AdminState, request: &Request) -> Response {
    let mut status = None;
    for pair in request.query.as_deref().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("status", value)) => match AccessStatus::parse(value) {
                Some(s) => status = Some(s),
                None => {
                    return error(
                        400,
                        "invalid_request_error",
                        "invalid_field",
                        "status: must be pending, approved, denied, claimed or expired",
                    )
                }
            },
            _ if pair.is_empty() => {}
            _ => {
                return error(
                    400,
                    "invalid_request_error",
                    "invalid_field",
                    "unknown query parameter; only status is accepted",
                )
            }
        }
    }
    match flow::list(&mut **state.store.lock(), status, unix_now_ms()) {
        Ok(requests) => json_response(200, &json!(requests)),
        Err(e) => access_error(state, &e),
    }
}

/// `POST /admin/access-requests/{id}/approve` or `/deny` with `{"note"}`, by `approver`
/// (`admin`, or the id of a key holding [`SCOPE_APPROVE`]): 200 with the request.
pub(crate) fn decide(
    state: &AdminState,
    id: &str,
    verb: &str,
    request: &Request,
    approver: &str,
) -> Response {
    let body: DecisionBody = match parse_or_empty(request) {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let now_ms = unix_now_ms();
    let mut store = state.store.lock();
    let decided = if verb == "approve" {
        flow::approve(&mut **store, id, approver, body.note, now_ms).map(|(request, key)| {
            state.credentials.apply_change(key);
            request
        })
    } else {
        flow::deny(&mut **store, id, approver, body.note, now_ms)
    };
    drop(store);
    match decided {
        Ok(request) => json_response(200, &json!(request)),
        Err(e) => access_error(state, &e),
    }
}

/// `POST /admin/access-requests/{id}/claim` with `{"claim_token"}`: 200 `{"id","key",
/// "expires_at"}` once (`id` is the key's), then 410.
pub(crate) fn claim(state: &AdminState, id: &str, request: &Request) -> Response {
    let body: ClaimBody = match parse(request) {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let claimed = flow::claim(
        &mut **state.store.lock(),
        id,
        &body.claim_token,
        unix_now_ms(),
    );
    match claimed {
        Ok((request, key, secret)) => {
            let answer = json!({
                "id": key.id,
                "key": secret,
                "expires_at": key.expires_at_ms.map(|ms| ms.div_euclid(1000)),
                "request_id": request.id,
            });
            state.credentials.apply_change(key);
            json_response(200, &answer)
        }
        Err(e) => access_error(state, &e),
    }
}

fn parse<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Response> {
    serde_json::from_slice(&request.body).map_err(|e| {
        // serde's message names an unknown or missing field, never echoes a long value.
        error(
            400,
            "invalid_request_error",
            "invalid_field",
            &format!("body: {e}"),
        )
    })
}

fn parse_or_empty<T: serde::de::DeserializeOwned + Default>(
    request: &Request,
) -> Result<T, Response> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(request)
}

/// A refused step as the contract's status and error body.
fn access_error(state: &AdminState, e: &AccessError) -> Response {
    let message = e.to_string();
    match e {
        AccessError::Invalid(_) => error(400, "invalid_request_error", "invalid_field", &message),
        AccessError::Policy(_) => {
            error(422, "invalid_request_error", "ttl_beyond_policy", &message)
        }
        AccessError::Forbidden(_) => error(403, "permission_error", "forbidden", &message),
        AccessError::NotFound => {
            error(404, "not_found_error", "access_request_not_found", &message)
        }
        AccessError::AlreadyDecided(_) => {
            error(409, "invalid_request_error", "already_decided", &message)
        }
        AccessError::NotApproved => error(409, "invalid_request_error", "not_approved", &message),
        AccessError::ClaimRefused => {
            error(403, "permission_error", "invalid_claim_token", &message)
        }
        AccessError::Gone(code) => error(410, "invalid_request_error", code, &message),
        AccessError::TooManyPending => error(429, "rate_limit_error", "too_many_pending", &message),
        AccessError::Store(e) => store_error(state, e),
    }
}

//! The admin API's router and handlers. Every endpoint is one arm of the match in
//! [`dispatch`]: to add one (`/admin/keys/{id}`, `/admin/usage`), add an arm for its method and
//! path segments, and an arm answering 405 for its other methods.

use serde_json::json;

use super::auth;
use super::http::{Request, Response};
use super::{access, keys, nodes, providers, ui, usage, AdminState};
use crate::access::flow::{Requester, ADMIN_ACTOR};

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";

/// Answers one admin request. Everything under `/admin/` needs the admin token, checked
/// before the path is resolved so that callers without it learn nothing about which paths
/// exist.
pub(crate) fn dispatch(state: &AdminState, request: &Request) -> Response {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    if let Some(response) = access::without_admin_token(state, request, &segments) {
        return response;
    }
    if segments.first() == Some(&"admin") && !authorized(state, request) {
        return unauthorized();
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2); the writer drops the body.
    let method = match request.method.as_str() {
        "HEAD" => "GET",
        other => other,
    };
    match (method, segments.as_slice()) {
        ("GET", ["ui", ..]) => ui::serve(&request.path),
        ("GET", ["healthz"]) => healthz(state),
        ("GET", ["metrics"]) => metrics(),
        ("POST", ["admin", "reload"]) => reload(state),
        ("POST", ["admin", "keys"]) => keys::create(state, request),
        ("GET", ["admin", "keys"]) => keys::list(state, request),
        ("GET", ["admin", "keys", id]) => keys::show(state, id),
        ("PATCH", ["admin", "keys", id]) => keys::update(state, id, request),
        ("DELETE", ["admin", "keys", id]) => keys::revoke(state, id),
        ("POST", ["admin", "keys", id, "rotate"]) => keys::rotate(state, id, request),
        ("GET", ["admin", "usage"]) => usage::usage(state, request),
        ("GET", ["admin", "nodes"]) => nodes::list(state),
        ("GET", ["admin", "providers"]) => providers::list(),
        ("POST", ["admin", "access-requests"]) => {
            access::create(state, request, &Requester::Operator(ADMIN_ACTOR.into()))
        }
        ("GET", ["admin", "access-requests"]) => access::list(state, request),
        ("POST", ["admin", "access-requests", id, verb @ ("approve" | "deny")]) => {
            access::decide(state, id, verb, request, ADMIN_ACTOR)
        }
        ("POST", ["admin", "access-requests", id, "claim"]) => access::claim(state, id, request),

        (_, ["ui", ..]) => {
            let mut response = method_not_allowed("GET, HEAD");
            ui::with_security_headers(&mut response);
            response
        }
        (_, ["healthz"] | ["metrics"]) => method_not_allowed("GET, HEAD"),
        // GET with the token is streamed before routing (`live::stream`).
        (_, ["admin", "live"]) => method_not_allowed("GET"),
        (_, ["admin", "reload"]) => method_not_allowed("POST"),
        (_, ["admin", "keys"]) => method_not_allowed("GET, HEAD, POST"),
        (_, ["admin", "keys", _]) => method_not_allowed("GET, HEAD, PATCH, DELETE"),
        (_, ["admin", "keys", _, "rotate"]) => method_not_allowed("POST"),
        (_, ["admin", "usage"] | ["admin", "nodes"] | ["admin", "providers"]) => {
            method_not_allowed("GET, HEAD")
        }
        (_, ["admin", "access-requests"]) => method_not_allowed("GET, HEAD, POST"),
        (_, ["admin", "access-requests", _, "approve" | "deny" | "claim"]) => {
            method_not_allowed("POST")
        }
        _ => error(
            404,
            "not_found_error",
            "not_found",
            "no such admin endpoint",
        ),
    }
}

/// `GET /healthz`: 200 once every worker is serving, 503 before. While the key store is
/// unreachable the node still serves from its replica, and while the fleet's Redis is (in
/// fleet mode) it enforces its share of each limit locally: either way it answers 200
/// `degraded`, naming what is (`"store":"unreachable"`, `"cluster":"degraded"`).
fn healthz(state: &AdminState) -> Response {
    if !(state.ready)() {
        return json_response(503, &json!({ "status": "starting" }));
    }
    let store_down = !state.credentials.store_health().is_up();
    let cluster_degraded = state.cluster.as_ref().is_some_and(|c| c.degraded());
    if !store_down && !cluster_degraded {
        return json_response(200, &json!({ "status": "ok" }));
    }
    let mut body = json!({ "status": "degraded" });
    if store_down {
        body["store"] = json!("unreachable");
    }
    if cluster_degraded {
        body["cluster"] = json!("degraded");
    }
    json_response(200, &body)
}

/// `GET /metrics`: the Prometheus scrape.
fn metrics() -> Response {
    Response {
        status: 200,
        content_type: PROMETHEUS_TEXT,
        headers: Vec::new(),
        body: crate::metrics::global().render().into_bytes(),
        close: false,
    }
}

/// `POST /admin/reload`: answers after the new config is live on every worker, or with the
/// config's errors (the old config stays).
fn reload(state: &AdminState) -> Response {
    match (state.reload)() {
        Ok(()) => {
            let logged = state
                .store
                .lock()
                .append_audit("admin", "reload", None, None, None);
            if let Err(e) = logged {
                log::error!("audit log write failed for reload: {e}");
            }
            json_response(200, &json!({ "status": "reloaded" }))
        }
        Err(errors) => json_response(
            400,
            &json!({
                "error": {
                    "message": errors.join("; "),
                    "type": "invalid_request_error",
                    "code": "invalid_config",
                },
                "errors": errors,
            }),
        ),
    }
}

/// Whether `request` carries the admin token.
pub(crate) fn authorized(state: &AdminState, request: &Request) -> bool {
    let current = state.token.as_ref().map(|token| token.current());
    let configured = current.as_ref().map(|secret| secret.expose());
    auth::is_authorized(configured, request.header("authorization"))
}

/// 401 with the challenge RFC 9110 §15.5.2 requires on every 401 (scheme per RFC 6750 §3).
fn unauthorized() -> Response {
    let mut response = error(
        401,
        "authentication_error",
        "invalid_admin_token",
        "missing or invalid admin token",
    );
    response.headers.push((
        "www-authenticate",
        "Bearer realm=\"credentialflow-admin\"".into(),
    ));
    response
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = error(
        405,
        "invalid_request_error",
        "method_not_allowed",
        "method not allowed on this endpoint",
    );
    response.headers.push(("allow", allow.into()));
    response
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &serde_json::Value) -> Response {
    Response {
        status,
        content_type: JSON,
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
        close: false,
    }
}

/// The contract's error body: `{"error":{"message":..,"type":..,"code":..}}`.
pub(crate) fn error(status: u16, error_type: &str, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": { "message": message, "type": error_type, "code": code } }),
    )
}

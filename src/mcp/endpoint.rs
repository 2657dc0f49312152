//! The endpoint clients talk to: MCP's Streamable HTTP transport at `[mcp] path`, after the
//! access and auth phases every route has.
//!
//! - `POST`: one JSON-RPC message (or, in 2025-03-26, a batch). `Accept` must allow
//!   `application/json`; an answer is an event stream only when the client also accepts
//!   `text/event-stream` and the owning server sends notifications (progress) before its
//!   response. Notifications and client responses alone are answered 202.
//! - The stateless revision ([`STATELESS`]): each POST is one request with its envelope
//!   (`params._meta`, `MCP-Protocol-Version`, `Mcp-Method`), no session; `server/discover`
//!   is answered by the gateway.
//! - `initialize` is answered by the gateway, which issues the session id ([`session`]);
//!   every later request must carry it (400 without, 404 when it is not valid for the
//!   caller) and an `MCP-Protocol-Version` that is the session's, when it sends one.
//! - `DELETE` ends the session; `GET` (a server-initiated stream) is 405: the gateway has
//!   nothing to push outside a request.
//!
//! Each `tools/call`, `prompts/get` and `resources/read` is one line in the access log and
//! counted in the metrics, whatever became of it. A `tools/call` is permitted
//! ([`McpGateway::permits`]) and limited (the key's rates and concurrency) before anything
//! reaches its server; then `on_tool_call` may deny it or rewrite its arguments, and
//! `on_tool_result` may change its result before the client sees it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::aggregate::{self, ListError, Listing};
use super::client::{self, Step};
use super::jsonrpc::{self, Body, BodyError, Incoming, Parsed};
use super::revision::{
    Revision, CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY, STATELESS,
};
use super::session::{self, SessionKeys};
use super::{names, McpGateway, McpServer};
use crate::accesslog::McpCallEntry;
use crate::http1::{BufConn, RequestHead, StrBuf, Version};
use crate::pipeline::{Failure, Outcome, RequestCtx, ThreadState};
use crate::snapshot::Snapshot;

/// Largest request body accepted (also within `[limits] max_body_bytes`).
pub const MAX_REQUEST_BODY: u64 = 1024 * 1024;

/// Most calls in flight remembered for cancellation, process-wide.
const MAX_IN_FLIGHT: usize = 65_536;

/// The label the session key is derived under (see [`crate::auth::CredentialCache::derived_key`]).
const SESSION_KEY_PURPOSE: &str = "mcp session id";

/// Serves one request to the MCP endpoint.
pub(crate) async fn serve<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    gateway: &McpGateway,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let keys = SessionKeys::new(worker.shared.credentials.derived_key(SESSION_KEY_PURPOSE));
    let key_id = ctx.consumer.as_ref().and_then(|c| c.id.clone());
    let now_ms = crate::clock::unix_now_ms();
    match head.method() {
        "POST" => {}
        "DELETE" => {
            let session = header_str(head, "mcp-session-id")
                .and_then(|id| keys.check(id, key_id.as_deref(), now_ms).map(|s| (id, s)));
            return match session {
                Some((id, s)) => {
                    session::end(id, s, now_ms);
                    respond(client, head, ctx, 200, &[], None).await
                }
                None => {
                    respond_error(
                        client,
                        head,
                        ctx,
                        404,
                        None,
                        jsonrpc::INVALID_REQUEST,
                        "unknown session",
                    )
                    .await
                }
            };
        }
        _ => {
            return respond(client, head, ctx, 405, &[("allow", "POST, DELETE")], None).await;
        }
    }
    let accept = header_str(head, "accept")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(accept.contains("application/json") || accept.contains("*/*")) {
        return respond_error(
            client,
            head,
            ctx,
            406,
            None,
            jsonrpc::INVALID_REQUEST,
            "Accept must allow application/json (and text/event-stream)",
        )
        .await;
    }
    let streams_ok = accept.contains("text/event-stream") && head.version() == Version::Http11;
    let content_type = header_str(head, "content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/json") {
        return respond_error(
            client,
            head,
            ctx,
            415,
            None,
            jsonrpc::INVALID_REQUEST,
            "Content-Type must be application/json",
        )
        .await;
    }
    let max = MAX_REQUEST_BODY.min(snapshot.limits.max_body_bytes);
    let body = crate::pipeline::exchange::read_request_body(
        client,
        head,
        max,
        snapshot.limits.idle_timeout,
    )
    .await?;
    ctx.body_done = true;
    let parsed = match jsonrpc::parse_body(&body) {
        Ok(b) => b,
        Err(BodyError::Parse(why)) => {
            return respond_error(client, head, ctx, 400, None, jsonrpc::PARSE_ERROR, why).await
        }
        Err(BodyError::Batch(why)) => {
            return respond_error(client, head, ctx, 400, None, jsonrpc::INVALID_REQUEST, why).await
        }
    };
    if is_stateless(head, &parsed) {
        return serve_stateless(
            worker, snapshot, gateway, client, head, ctx, parsed, streams_ok,
        )
        .await;
    }
    // `initialize` opens a session: answered by the gateway, which issues the session id.
    if let Body::Single(Parsed::Message(m)) = &parsed {
        if m.method == "initialize" {
            let Some(id) = &m.id else {
                return respond_error(
                    client,
                    head,
                    ctx,
                    400,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "initialize is a request",
                )
                .await;
            };
            let requested = m
                .params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let revision = Revision::negotiate(requested);
            let session_id = keys.issue(revision, key_id.as_deref(), now_ms);
            let result = aggregate::initialize_result(worker, gateway, revision).await;
            let answer = jsonrpc::result(id, result);
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            return respond(
                client,
                head,
                ctx,
                200,
                &[
                    ("mcp-session-id", &session_id),
                    ("content-type", "application/json"),
                ],
                Some(&body),
            )
            .await;
        }
    }
    let Some(session_id) = header_str(head, "mcp-session-id").map(str::to_string) else {
        return respond_error(
            client,
            head,
            ctx,
            400,
            None,
            jsonrpc::INVALID_REQUEST,
            "Mcp-Session-Id is required after initialize",
        )
        .await;
    };
    let Some(session) = keys.check(&session_id, key_id.as_deref(), now_ms) else {
        // 404: the client starts a new session with `initialize`.
        return respond_error(
            client,
            head,
            ctx,
            404,
            None,
            jsonrpc::INVALID_REQUEST,
            "unknown or expired session",
        )
        .await;
    };
    if let Some(version) = header_str(head, "mcp-protocol-version") {
        match Revision::parse(version) {
            Some(r) if r == session.revision => {}
            Some(_) => {
                return respond_error(
                    client,
                    head,
                    ctx,
                    400,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "MCP-Protocol-Version is not the session's",
                )
                .await
            }
            None => {
                return respond_error(
                    client,
                    head,
                    ctx,
                    400,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "unsupported MCP-Protocol-Version",
                )
                .await
            }
        }
    }
    let (messages, single) = match parsed {
        Body::Single(p) => (vec![p], true),
        Body::Batch(batch) => {
            if !session.revision.allows_batches() {
                return respond_error(
                    client,
                    head,
                    ctx,
                    400,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "batches are not part of this protocol revision",
                )
                .await;
            }
            (batch, false)
        }
    };
    let mut call = CallCtx {
        worker,
        snapshot,
        gateway,
        session_id: &session_id,
        out: EventOut {
            allowed: streams_ok && single,
            started: false,
        },
        finishing: Vec::new(),
    };
    let mut answers = Vec::new();
    for message in messages {
        match message {
            Parsed::Response => {}
            Parsed::Invalid(id, why) => {
                answers.push(jsonrpc::error(id.as_ref(), jsonrpc::INVALID_REQUEST, why))
            }
            Parsed::Message(m) if m.id.is_none() => call.notification(&m).await,
            Parsed::Message(m) => {
                if m.method == "initialize" {
                    answers.push(jsonrpc::error(
                        m.id.as_ref(),
                        jsonrpc::INVALID_REQUEST,
                        "initialize may not be batched",
                    ));
                    continue;
                }
                let answer = call.request(client, head, ctx, m).await?;
                answers.push(answer);
            }
        }
    }
    if call.out.started {
        // The stream's last event is the response; then the stream ends.
        let mut last = Vec::new();
        for answer in &answers {
            push_event(&mut last, answer);
        }
        last.extend_from_slice(b"0\r\n\r\n");
        let (res, _) = client.write_all(last).await;
        res.map_err(|_| Failure::Abort)?;
        call.finish_upstreams().await;
        return Ok(if head.keep_alive() {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        });
    }
    if answers.is_empty() {
        return respond(client, head, ctx, 202, &[], None).await;
    }
    let body = if single {
        serde_json::to_vec(&answers[0])
    } else {
        serde_json::to_vec(&answers)
    }
    .unwrap_or_default();
    let outcome = respond(
        client,
        head,
        ctx,
        200,
        &[("content-type", "application/json")],
        Some(&body),
    )
    .await;
    call.finish_upstreams().await;
    outcome
}

/// Whether a POST is of the stateless revision: its `MCP-Protocol-Version` says so, or,
/// without a handshake revision's header or a session, its envelope names a revision.
fn is_stateless(head: &RequestHead, parsed: &Body) -> bool {
    if let Some(version) = header_str(head, "mcp-protocol-version") {
        if version == STATELESS {
            return true;
        }
        if Revision::parse(version).is_some() {
            return false;
        }
    }
    if head.header("mcp-session-id").is_some() {
        return false;
    }
    match parsed {
        Body::Single(Parsed::Message(m)) => {
            m.method != "initialize"
                && m.params
                    .get("_meta")
                    .and_then(|meta| meta.get(PROTOCOL_VERSION_META_KEY))
                    .is_some()
        }
        _ => false,
    }
}

/// Why a stateless request's envelope is refused: the error's code, message and data.
type EnvelopeError = (i64, &'static str, Option<Value>);

/// Checks the envelope of a stateless request: `params._meta` names the revision and the
/// client's capabilities, `MCP-Protocol-Version` and `Mcp-Method` repeat what the body says,
/// and the revision is one served. (`Mcp-Name` is not compared: requests are routed by the
/// body, never by that header.)
fn check_envelope(head: &RequestHead, m: &Incoming) -> Result<(), EnvelopeError> {
    let meta = m.params.get("_meta").and_then(Value::as_object);
    let version = meta.and_then(|meta| meta.get(PROTOCOL_VERSION_META_KEY));
    let has_capabilities = meta.is_some_and(|meta| meta.contains_key(CLIENT_CAPABILITIES_META_KEY));
    let (Some(version), true) = (version, has_capabilities) else {
        return Err((
            jsonrpc::INVALID_PARAMS,
            "params._meta must carry the protocol version and the client capabilities",
            None,
        ));
    };
    if header_str(head, "mcp-protocol-version") != version.as_str() {
        return Err((
            jsonrpc::HEADER_MISMATCH,
            "MCP-Protocol-Version does not match the request's protocol version",
            None,
        ));
    }
    if header_str(head, "mcp-method") != Some(m.method.as_str()) {
        return Err((
            jsonrpc::HEADER_MISMATCH,
            "Mcp-Method does not match the request's method",
            None,
        ));
    }
    match version.as_str() {
        Some(STATELESS) => Ok(()),
        Some(requested) => Err((
            jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            "unsupported protocol version",
            Some(json!({
                "supported": super::revision::all_names(),
                "requested": requested.chars().take(64).collect::<String>(),
            })),
        )),
        None => Err((
            jsonrpc::INVALID_PARAMS,
            "the protocol version must be a string",
            None,
        )),
    }
}

/// A POST of the stateless revision: one request answered on its own (no session; a
/// notification is acknowledged and dropped, since cancelling is closing the response).
#[allow(clippy::too_many_arguments)]
async fn serve_stateless<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    gateway: &McpGateway,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    parsed: Body,
    streams_ok: bool,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let m = match parsed {
        Body::Batch(_) => {
            return respond_error(
                client,
                head,
                ctx,
                400,
                None,
                jsonrpc::INVALID_REQUEST,
                "batches are not part of this protocol revision",
            )
            .await
        }
        Body::Single(Parsed::Response) => return respond(client, head, ctx, 202, &[], None).await,
        Body::Single(Parsed::Invalid(id, why)) => {
            return respond_error(
                client,
                head,
                ctx,
                400,
                id.as_ref(),
                jsonrpc::INVALID_REQUEST,
                why,
            )
            .await
        }
        Body::Single(Parsed::Message(m)) => m,
    };
    let Some(id) = m.id.clone() else {
        return respond(client, head, ctx, 202, &[], None).await;
    };
    if let Err((code, message, data)) = check_envelope(head, &m) {
        let mut answer = jsonrpc::error(Some(&id), code, message);
        if let Some(data) = data {
            answer["error"]["data"] = data;
        }
        ctx.error = Some("mcp_request_refused");
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        let status = jsonrpc::stateless_status(code);
        let headers = [("content-type", "application/json")];
        return respond(client, head, ctx, status, &headers, Some(&body)).await;
    }
    let mut finishing = Vec::new();
    let answer = match m.method.as_str() {
        "server/discover" => {
            let mut result = aggregate::discover_result(worker, gateway).await;
            if let Some(result) = result.as_object_mut() {
                stamp_stateless_result(result, true);
            }
            jsonrpc::result(&id, result)
        }
        "initialize" => jsonrpc::error(
            Some(&id),
            jsonrpc::METHOD_NOT_FOUND,
            "initialize is not part of this protocol revision",
        ),
        _ => {
            // No session: the request's own id keys it for the time it runs.
            let flight_scope = format!("stateless.{}", ctx.request_id);
            let mut call = CallCtx {
                worker,
                snapshot,
                gateway,
                session_id: &flight_scope,
                out: EventOut {
                    allowed: streams_ok,
                    started: false,
                },
                finishing: Vec::new(),
            };
            let cacheable = is_cacheable(&m.method);
            let mut answer = call.request(client, head, ctx, m).await?;
            if let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) {
                stamp_stateless_result(result, cacheable);
            }
            if call.out.started {
                let mut last = Vec::new();
                push_event(&mut last, &answer);
                last.extend_from_slice(b"0\r\n\r\n");
                let (res, _) = client.write_all(last).await;
                res.map_err(|_| Failure::Abort)?;
                call.finish_upstreams().await;
                return Ok(if head.keep_alive() {
                    Outcome::KeepAlive
                } else {
                    Outcome::Close
                });
            }
            finishing = std::mem::take(&mut call.finishing);
            answer
        }
    };
    let status = answer
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .map_or(200, jsonrpc::stateless_status);
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let headers = [("content-type", "application/json")];
    let outcome = respond(client, head, ctx, status, &headers, Some(&body)).await;
    for pending in finishing {
        pending.finish_after_end(worker).await;
    }
    outcome
}

/// Whether `method`'s result carries caching directives in the stateless revision.
fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// What the stateless revision requires of a result: `resultType`, and for the cacheable
/// ones `ttlMs` and `cacheScope`. The gateway's answers depend on the caller's key, so they
/// are never for shared caches, and are stale at once (servers' own hints are not relayed:
/// they speak a handshake revision to the gateway).
fn stamp_stateless_result(result: &mut Map<String, Value>, cacheable: bool) {
    result
        .entry("resultType")
        .or_insert_with(|| Value::String("complete".into()));
    if cacheable {
        result.insert("ttlMs".into(), Value::from(0));
        result.insert("cacheScope".into(), Value::String("private".into()));
    }
}

/// What one POST's calls share.
struct CallCtx<'a> {
    worker: &'a ThreadState,
    snapshot: &'a Snapshot,
    gateway: &'a McpGateway,
    session_id: &'a str,
    out: EventOut,
    /// Answered upstream requests whose event streams may still be ending.
    finishing: Vec<client::Pending>,
}

impl CallCtx<'_> {
    /// Lets each answered upstream stream end, so its connection can be reused; after the
    /// client's answer is written.
    async fn finish_upstreams(&mut self) {
        for pending in std::mem::take(&mut self.finishing) {
            pending.finish_after_end(self.worker).await;
        }
    }
}

/// Whether (and since when) the answer is an event stream.
struct EventOut {
    /// The client accepts one and sent a single message.
    allowed: bool,
    /// The stream's head is sent.
    started: bool,
}

/// A call routed to a server: which one, under what upstream name, with what parameters.
struct Routed<'g> {
    server: &'g McpServer,
    /// The name (or URI) the server knows.
    upstream_name: String,
    params: Map<String, Value>,
}

impl CallCtx<'_> {
    /// A notification: `notifications/cancelled` goes to the server running the request;
    /// the others concern the gateway's session only.
    async fn notification(&mut self, m: &Incoming) {
        if m.method != "notifications/cancelled" {
            return;
        }
        let Some(request_id) = m.params.get("requestId") else {
            return;
        };
        let key = (self.session_id.to_string(), request_id.to_string());
        let Some(flight) = in_flight().lock().get(&key).cloned() else {
            return;
        };
        let Some(server) = self.gateway.server(&flight.prefix) else {
            return;
        };
        let reason = m.params.get("reason").and_then(Value::as_str);
        cancel_upstream(self.worker, server, &flight, reason).await;
    }

    /// A request: answered by the gateway (listings, ping) or routed to its server.
    async fn request<S>(
        &mut self,
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
        m: Incoming,
    ) -> Result<Value, Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let id = m.id.clone().unwrap_or(Value::Null);
        if let Some(listing) = Listing::of(&m.method) {
            let cursor = m.params.get("cursor").and_then(Value::as_str);
            return Ok(
                match aggregate::list(
                    self.worker,
                    self.gateway,
                    listing,
                    cursor,
                    ctx.consumer.as_ref(),
                )
                .await
                {
                    Ok(result) => jsonrpc::result(&id, result),
                    Err(ListError::BadCursor) => {
                        jsonrpc::error(Some(&id), jsonrpc::INVALID_PARAMS, "invalid cursor")
                    }
                },
            );
        }
        match m.method.as_str() {
            "ping" => Ok(jsonrpc::result(&id, json!({}))),
            "resources/templates/list" => {
                Ok(jsonrpc::result(&id, json!({"resourceTemplates": []})))
            }
            "tools/call" | "prompts/get" | "resources/read" => {
                self.routed(client, head, ctx, m).await
            }
            _ => Ok(jsonrpc::error(
                Some(&id),
                jsonrpc::METHOD_NOT_FOUND,
                "method not found",
            )),
        }
    }

    /// `tools/call`, `prompts/get` or `resources/read`: permitted, limited, sent to the
    /// owning server, its answer relayed; logged and counted in every case.
    async fn routed<S>(
        &mut self,
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
        m: Incoming,
    ) -> Result<Value, Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let started = Instant::now();
        let id = m.id.clone().unwrap_or(Value::Null);
        let args_hash = match m.method.as_str() {
            "resources/read" => None,
            _ => Some(arguments_hash(m.params.get("arguments"))),
        };
        let routed = route(self.gateway, &m);
        let (answer, status) = match routed {
            Err(why) => (
                jsonrpc::error(Some(&id), jsonrpc::INVALID_PARAMS, why),
                "unknown",
            ),
            Ok(Routed {
                server,
                upstream_name,
                params,
            }) => {
                let (answer, status) = if m.method == "tools/call"
                    && !self
                        .gateway
                        .permits(ctx.consumer.as_ref(), server, &upstream_name)
                {
                    // Hidden tools look exactly like unknown ones.
                    (
                        jsonrpc::error(
                            Some(&id),
                            jsonrpc::INVALID_PARAMS,
                            &format!("unknown tool: {}", shown_name(&m)),
                        ),
                        "refused",
                    )
                } else if let Some(refusal) = self.limit(ctx, &m) {
                    (
                        jsonrpc::error(Some(&id), jsonrpc::RATE_LIMITED, &refusal),
                        "rate_limited",
                    )
                } else if m.method == "tools/call" {
                    self.hooked_call(client, head, ctx, server, &upstream_name, &m, params, &id)
                        .await?
                } else {
                    self.forward(client, head, ctx, server, &m, params, &id)
                        .await?
                };
                ctx.permit = None;
                self.record(
                    ctx,
                    &m.method,
                    Some(server),
                    &upstream_name,
                    status,
                    started,
                    args_hash,
                );
                return Ok(answer);
            }
        };
        self.record(ctx, &m.method, None, "", status, started, args_hash);
        Ok(answer)
    }

    /// A permitted, limited `tools/call` through the endpoint's hooks: `on_tool_call` may
    /// deny it or rewrite its arguments before it is forwarded, `on_tool_result` may change
    /// its result before the client sees it. A hook that fails fails this call alone (a
    /// JSON-RPC error; the details go to the gateway's log), so a redaction that could not
    /// run never lets the unredacted result through.
    #[allow(clippy::too_many_arguments)]
    async fn hooked_call<S>(
        &mut self,
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
        server: &McpServer,
        upstream_name: &str,
        m: &Incoming,
        mut params: Map<String, Value>,
        id: &Value,
    ) -> Result<(Value, &'static str), Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let hook_failed = || {
            (
                jsonrpc::error(
                    Some(id),
                    jsonrpc::INTERNAL_ERROR,
                    "hook_error: the gateway's tool hook failed",
                ),
                "hook_error",
            )
        };
        let call = json!({
            "server": server.name,
            "tool": upstream_name,
            "name": shown_name(m),
            "arguments": params.get("arguments").cloned().unwrap_or_else(|| json!({})),
        });
        match crate::pipeline::hooks::tool_call(self.worker, self.snapshot, ctx, &call) {
            Ok(None) => {}
            Ok(Some(verdict)) => {
                if let Some(message) = verdict.denied {
                    let message = if message.is_empty() {
                        "denied by the gateway's policy".to_string()
                    } else {
                        message
                    };
                    return Ok((
                        jsonrpc::error(Some(id), jsonrpc::DENIED, &message),
                        "denied",
                    ));
                }
                match verdict.arguments {
                    Some(arguments) => params.insert("arguments".into(), arguments),
                    None => params.remove("arguments"),
                };
            }
            Err(_) => return Ok(hook_failed()),
        }
        let (mut answer, status) = self
            .forward(client, head, ctx, server, m, params, id)
            .await?;
        if let Some(result) = answer.get("result") {
            let call = json!({"server": server.name, "tool": upstream_name, "name": shown_name(m)});
            match crate::pipeline::hooks::tool_result(
                self.worker,
                self.snapshot,
                ctx,
                &call,
                result,
            ) {
                Ok(None) => {}
                Ok(Some(shown)) => answer["result"] = shown,
                Err(_) => return Ok(hook_failed()),
            }
        }
        Ok((answer, status))
    }

    /// The key's rates and concurrency for a `tools/call`; the refusal's message if refused.
    fn limit(&self, ctx: &mut RequestCtx, m: &Incoming) -> Option<String> {
        if m.method != "tools/call" {
            return None;
        }
        ctx.permit = None;
        match crate::pipeline::limits::requests(self.worker, self.snapshot, None, ctx) {
            Ok(_) => None,
            Err(e) => Some(e.message()),
        }
    }

    /// Sends the call to `server` and relays its answer (notifications as events when the
    /// client takes a stream).
    #[allow(clippy::too_many_arguments)]
    async fn forward<S>(
        &mut self,
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
        server: &McpServer,
        m: &Incoming,
        params: Map<String, Value>,
        id: &Value,
    ) -> Result<(Value, &'static str), Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let unavailable = |why: &str| {
            jsonrpc::error(
                Some(id),
                jsonrpc::SERVER_UNAVAILABLE,
                &format!("MCP server {} is unavailable: {why}", server.name),
            )
        };
        let mut pending = match client::request(self.worker, server, &m.method, params).await {
            Ok(p) => p,
            Err(e) => return Ok((unavailable(e.reason()), e.outcome())),
        };
        let flight_key = (self.session_id.to_string(), id.to_string());
        let (upstream_session, revision) = client::current_session(server);
        remember_flight(
            flight_key.clone(),
            Flight {
                prefix: server.prefix.clone(),
                upstream_session,
                revision,
                upstream_id: pending.id,
            },
        );
        let result = loop {
            match pending.next().await {
                Ok(Step::Notification(note)) => {
                    let relayed = matches!(
                        note.get("method").and_then(Value::as_str),
                        Some("notifications/progress" | "notifications/message")
                    );
                    if relayed && self.out.allowed {
                        if let Err(f) = self.event(client, head, ctx, &note).await {
                            // The client is gone: the server need not finish the call.
                            let flight = in_flight().lock().remove(&flight_key);
                            if let Some(flight) = flight {
                                let reason = Some("the client disconnected");
                                cancel_upstream(self.worker, server, &flight, reason).await;
                            }
                            return Err(f);
                        }
                    }
                }
                Ok(Step::Response(mut answer)) => {
                    // Its stream's end is awaited once the client has the answer.
                    self.finishing.push(pending);
                    answer["id"] = id.clone();
                    let status = if answer.get("error").is_some() {
                        "error"
                    } else if answer.pointer("/result/isError") == Some(&Value::Bool(true)) {
                        "tool_error"
                    } else {
                        "ok"
                    };
                    break (answer, status);
                }
                Err(e) => break (unavailable(e.reason()), e.outcome()),
            }
        };
        in_flight().lock().remove(&flight_key);
        Ok(result)
    }

    /// Writes one event, sending the stream's head first.
    async fn event<S>(
        &mut self,
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
        message: &Value,
    ) -> Result<(), Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let mut out = Vec::with_capacity(512);
        if !self.out.started {
            self.out.started = true;
            ctx.status = 200;
            ctx.stream = true;
            let _ = write!(
                StrBuf(&mut out),
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nx-request-id: {}\r\n",
                ctx.request_id
            );
            out.extend_from_slice(&ctx.rate_headers());
            if !head.keep_alive() {
                out.extend_from_slice(b"connection: close\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        push_event(&mut out, message);
        let (res, _) = client.write_all(out).await;
        res.map_err(|_| Failure::Abort)
    }

    /// One access-log line and the metrics of a routed call.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &RequestCtx,
        method: &str,
        server: Option<&McpServer>,
        upstream_name: &str,
        status: &'static str,
        started: Instant,
        args_hash: Option<String>,
    ) {
        let took = started.elapsed();
        let server_name = server.map(|s| s.name.as_str());
        let metrics = crate::metrics::global().mcp();
        if method == "tools/call" {
            // A tool its server answered exists: its name may become a label (capped). A
            // name that was refused or unknown never does.
            if let (Some(server), "ok") = (server_name, status) {
                metrics.note_tools(server, std::iter::once(upstream_name));
            }
            metrics.record(server_name, upstream_name, status, took);
        } else {
            metrics.record(server_name, "other", status, took);
        }
        if self.worker.access_log.enabled() {
            let consumer = ctx.consumer.as_ref();
            let entry = McpCallEntry {
                kind: "mcp_call",
                ts_ms: crate::clock::unix_now_ms().max(0) as u64,
                request_id: &ctx.request_id,
                method,
                server: server_name,
                tool: upstream_name,
                status,
                duration_us: took.as_micros() as u64,
                args_sha256: args_hash,
                key_id: consumer.and_then(|c| c.id.as_deref()),
                team: consumer.map(|c| c.team.as_str()).filter(|t| !t.is_empty()),
            };
            self.worker.access_log.write(entry.render());
        }
    }
}

/// Splits a name (or URI) clients sent into the server's prefix and the upstream name.
type SplitName = fn(&str) -> Option<(&str, &str)>;

/// The owning server of a routed call and the parameters it is sent (the name or URI
/// without the gateway's prefix).
fn route<'g>(gateway: &'g McpGateway, m: &Incoming) -> Result<Routed<'g>, &'static str> {
    let mut params = m.params.clone();
    let (field, split): (&str, SplitName) = match m.method.as_str() {
        "resources/read" => ("uri", names::split_resource_uri),
        _ => ("name", names::split),
    };
    let Some(shown) = params.get(field).and_then(Value::as_str) else {
        return Err("params lack their name");
    };
    let (prefix, upstream) = split(shown).ok_or(match m.method.as_str() {
        "tools/call" => "unknown tool",
        "prompts/get" => "unknown prompt",
        _ => "unknown resource",
    })?;
    let server = gateway.server(prefix).ok_or(match m.method.as_str() {
        "tools/call" => "unknown tool",
        "prompts/get" => "unknown prompt",
        _ => "unknown resource",
    })?;
    let upstream = upstream.to_string();
    params.insert(field.to_string(), Value::String(upstream.clone()));
    Ok(Routed {
        server,
        upstream_name: upstream,
        params,
    })
}

/// The name a client called, for an error message (cut short: it is the client's text).
fn shown_name(m: &Incoming) -> String {
    m.params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(128)
        .collect()
}

/// SHA-256 (hex) of the call's arguments as JSON (`{}` when absent): logged instead of them.
pub fn arguments_hash(arguments: Option<&Value>) -> String {
    let empty = Value::Object(Map::new());
    let bytes = serde_json::to_vec(arguments.unwrap_or(&empty)).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Appends `message` as one chunk holding one `message` event.
fn push_event(out: &mut Vec<u8>, message: &Value) {
    let data = serde_json::to_string(message).unwrap_or_default();
    let event = format!("event: message\ndata: {data}\n\n");
    let _ = write!(StrBuf(out), "{:x}\r\n", event.len());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Sends `notifications/cancelled` for `flight` to `server`, in the upstream session the
/// call runs in; a failure is only logged (the call then runs to its end on the server).
async fn cancel_upstream(
    worker: &ThreadState,
    server: &McpServer,
    flight: &Flight,
    reason: Option<&str>,
) {
    let mut params = json!({"requestId": flight.upstream_id});
    if let Some(reason) = reason {
        params["reason"] = Value::String(reason.chars().take(256).collect());
    }
    let message = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params});
    if let Err(e) = client::notify(
        worker,
        server,
        &message,
        flight.upstream_session.as_deref(),
        &flight.revision,
    )
    .await
    {
        log::debug!(
            "mcp_server {}: cancellation not delivered: {}",
            server.name,
            e.reason()
        );
    }
}

/// A call in flight, for a cancellation from its client.
#[derive(Clone, Debug)]
struct Flight {
    prefix: String,
    upstream_session: Option<String>,
    revision: String,
    upstream_id: u64,
}

type FlightKey = (String, String);

fn in_flight() -> &'static Mutex<HashMap<FlightKey, Flight>> {
    static IN_FLIGHT: std::sync::OnceLock<Mutex<HashMap<FlightKey, Flight>>> =
        std::sync::OnceLock::new();
    IN_FLIGHT.get_or_init(|| Mutex::new(HashMap::new()))
}

fn remember_flight(key: FlightKey, flight: Flight) {
    let mut map = in_flight().lock();
    // Bounded: past the cap a call simply cannot be cancelled (it still completes).
    if map.len() < MAX_IN_FLIGHT {
        map.insert(key, flight);
    }
}

/// A header's value as text, when it is valid UTF-8.
fn header_str<'h>(head: &'h RequestHead, name: &str) -> Option<&'h str> {
    head.header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// Answers `status` with a JSON-RPC error body.
async fn respond_error<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    status: u16,
    id: Option<&Value>,
    code: i64,
    message: &str,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    ctx.error = Some("mcp_request_refused");
    let body = serde_json::to_vec(&jsonrpc::error(id, code, message)).unwrap_or_default();
    respond(
        client,
        head,
        ctx,
        status,
        &[("content-type", "application/json")],
        Some(&body),
    )
    .await
}

/// Writes a whole response.
async fn respond<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    status: u16,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let close = !head.keep_alive() || !ctx.body_done;
    let body = body.unwrap_or(b"");
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        StrBuf(&mut out),
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\nx-request-id: {}\r\n",
        reason(status),
        body.len(),
        ctx.request_id
    );
    for (name, value) in headers {
        let _ = write!(StrBuf(&mut out), "{name}: {value}\r\n");
    }
    out.extend_from_slice(&ctx.rate_headers());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    ctx.status = status;
    let (res, _) = client.write_all(out).await;
    res.map_err(|_| Failure::Abort)?;
    Ok(if close {
        Outcome::Close
    } else {
        Outcome::KeepAlive
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_hashed_not_kept() {
        let hash = arguments_hash(Some(&json!({"password": "hunter2"})));
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("hunter2"));
        assert_eq!(hash, arguments_hash(Some(&json!({"password": "hunter2"}))));
        assert_ne!(hash, arguments_hash(None));
    }

    #[test]
    fn events_are_chunks_of_one_message_event() {
        let mut out = Vec::new();
        push_event(&mut out, &json!({"a": 1}));
        let text = String::from_utf8(out).unwrap();
        let (size, rest) = text.split_once("\r\n").unwrap();
        let event = "event: message\ndata: {\"a\":1}\n\n";
        assert_eq!(usize::from_str_radix(size, 16).unwrap(), event.len());
        assert_eq!(rest, format!("{event}\r\n"));
    }
}

//! The request path, in order. Read this file top to bottom to follow one request:
//!
//! 1. **route**: the path is normalized (dot segments, unreserved escapes, `//`; 400 when it
//!    cannot be safely), then an AI front door by its path, else host + longest path prefix
//!    picks a `[[route]]` (404 if none). A front door is a kind of route ([`Door`]) whose
//!    settings are `[ai]`'s; every later shared phase serves both.
//! 2. **access**: client-address rules, the per-address limit, the `on_access` hook.
//! 3. **auth**: the consumer a hook named, else the route's `auth` (or `[ai].auth`).
//! 4. for a route, **limits** (request rates, concurrency), then **upstream** (pick a target,
//!    reuse or open a connection, send the rewritten head and stream the body; chunked bodies
//!    are validated before any byte goes out) and **response** (streamed back as it arrives,
//!    re-framed for the client); for a front door, the AI phases of [`ai`]: **prompt**,
//!    **limits** (requests, then tokens and budgets), **upstream**, **settle**.
//! 5. **log**: metrics (and the access log) for every request, including rejected ones.
//!
//! Phases return `Err(Failure)` (or a `GatewayError`, which converts); [`handle`] turns a
//! failure into a response in one place.

mod ai;
pub(crate) mod exchange;
pub(crate) mod hooks;
pub(crate) mod limits;
mod notify;
mod proxy;
mod state;

pub use notify::LocalNotify;
pub use state::ThreadState;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use crate::accesslog::{self, AccessEntry, AttemptLog, UsageFields};
use crate::auth::{self, Consumer, IpRules};
use crate::cluster::LeasePermit;
use crate::config::AuthKind;
use crate::error::{Dialect, GatewayError};
use crate::http1::BufConn;
use crate::http1::{BodyFraming, RequestHead};
use crate::limits::{KeyPermit, RateReport};
use crate::lua::ScriptId;
use crate::snapshot::{Route, Snapshot};
use crate::store::KeyRecord;
use crate::upstream::UpstreamStream;

/// What the connection does after a request.
pub enum Outcome {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
    /// The upstream switched protocols (101): relay bytes both ways until either side closes.
    Tunnel(BufConn<UpstreamStream>),
}

/// Why a phase stopped the request.
pub enum Failure {
    /// Answer with this error (nothing of a response has been sent yet).
    Respond(GatewayError),
    /// A response was already under way, or the client went away: just close.
    Abort,
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Respond(e)
    }
}

/// Everything known about one request as it moves through the phases.
pub struct RequestCtx {
    /// The `x-request-id`: the client's if well-formed, else ours.
    pub request_id: String,
    /// When the head was parsed, for latency.
    pub started: Instant,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// Whether the client connection is TLS.
    pub https: bool,
    /// Index of the matched route, once routed.
    pub route: Option<usize>,
    /// The status sent to the client.
    pub status: u16,
    /// Whether the request body has been fully read; if not, the connection cannot be reused.
    pub body_done: bool,
    /// Who is calling, once authenticated.
    pub consumer: Option<Consumer>,
    /// What the limits decided, for the `x-ratelimit-*` headers of whatever response is sent.
    pub rate: RateReport,
    /// The key's concurrency slot, held until the request is finished.
    pub permit: Option<ConcurrencySlot>,
    /// The dialect gateway-made errors are written in.
    pub dialect: Dialect,
    /// Whether the request is for an AI front door.
    pub front_door: bool,
    /// The front door's `route` label in the metrics (its path, e.g. `/v1/chat/completions`).
    pub door_label: &'static str,
    /// When the first byte of an AI answer's content went to the client, for the time to
    /// first token.
    pub first_byte: Option<Instant>,
    /// Model and usage of an AI request, for the access log.
    pub ai: Option<ai::AiRecord>,
    /// Every provider attempt of an AI request, for the access log.
    pub attempts: Vec<AttemptLog>,
    /// Lua hook state, when the route or front door has a script.
    pub hooked: Option<Box<hooks::Hooked>>,
    /// The code of the gateway-made error answered, if one was (`error` in the access log).
    pub error: Option<&'static str>,
    /// Whether the answer is a stream of events: an AI request with `stream: true`, or a
    /// route whose upstream answered `text/event-stream`.
    pub stream: bool,
    /// The upstream or provider endpoint of the last attempt that got an answer.
    pub upstream: Option<UpstreamUse>,
    /// The `WWW-Authenticate` value sent with a 401 (the MCP endpoint's challenge).
    pub challenge: Option<String>,
}

/// Which upstream endpoint answered a request and for how long, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamUse {
    /// The target's resolved address.
    pub addr: SocketAddr,
    /// When the request started toward it.
    pub sent: Instant,
    /// From `sent` to the end of its answer, once that end was reached.
    pub took: Option<Duration>,
}

/// A key's `max_concurrency` slot; dropping it gives the slot back.
pub enum ConcurrencySlot {
    /// Counted on this node alone (`[cluster]` off).
    Local(KeyPermit),
    /// Backed by a lease of the fleet's (`[cluster]` on; see [`crate::cluster::leases`]).
    Fleet(LeasePermit),
}

impl RequestCtx {
    /// Records that `exchange`'s target is answering this request.
    fn upstream_began(&mut self, exchange: &exchange::Exchange) {
        self.upstream = Some(UpstreamUse {
            addr: exchange.addr,
            sent: exchange.sent,
            took: None,
        });
    }

    /// Records that the upstream's answer ended (its last byte read).
    fn upstream_ended(&mut self) {
        if let Some(used) = &mut self.upstream {
            used.took.get_or_insert_with(|| used.sent.elapsed());
        }
    }

    /// The `x-ratelimit-*` header lines for this request's response (empty when unlimited).
    pub fn rate_headers(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.rate.write_headers(&mut out);
        out
    }
}

/// Read buffer for each upstream exchange: a response head plus a few KiB of body in one
/// read; larger bodies grow it as they stream (see `BufConn::fill`).
const UPSTREAM_BUFFER: usize = 8 * 1024;

/// Runs one request through every phase and answers it.
pub async fn handle<S>(
    worker: &ThreadState,
    client: &mut BufConn<S>,
    head: RequestHead,
    client_addr: SocketAddr,
    https: bool,
) -> Outcome
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let snapshot = worker.snapshot();
    let mut ctx = RequestCtx {
        request_id: client_request_id(&head).unwrap_or_else(|| worker.next_request_id()),
        started: Instant::now(),
        client_addr,
        https,
        route: None,
        status: 0,
        body_done: matches!(head.body(), BodyFraming::None),
        consumer: None,
        rate: RateReport::default(),
        permit: None,
        dialect: Dialect::OpenAi,
        front_door: false,
        door_label: "",
        first_byte: None,
        ai: None,
        attempts: Vec::new(),
        hooked: None,
        error: None,
        stream: false,
        upstream: None,
        challenge: None,
    };
    // The head is consumed already: what is consumed from here on is the body.
    let (consumed_before, written_before) = (client.bytes_consumed(), client.bytes_written());
    let mut head = head;
    // Every later phase, the access log and the upstream see the normalized path; a path
    // that cannot be normalized safely is refused before it is routed anywhere.
    let routed = match head.normalize_path(snapshot.limits.merge_slashes) {
        Ok(()) => run_phases(worker, &snapshot, client, &head, &mut ctx).await,
        Err(e) => Err(Failure::Respond(GatewayError::BadRequest(e.reason()))),
    };
    let outcome = match routed {
        Ok(outcome) => outcome,
        Err(Failure::Abort) => Outcome::Close,
        Err(Failure::Respond(err)) => {
            if let Some(kind) = crate::metrics::LimitKind::of(&err) {
                crate::metrics::global()
                    .ai()
                    .limit_rejected(worker.id, kind);
            }
            discard_buffered_body(client, &head, &mut ctx);
            let close = err.closes_connection()
                || !ctx.body_done
                || !head.keep_alive()
                || worker.shutting_down();
            ctx.status = err.status();
            ctx.error = Some(err.code());
            let mut out = Vec::with_capacity(256);
            let mut extra = ctx.rate_headers();
            if let (401, Some(challenge)) = (err.status(), &ctx.challenge) {
                extra.extend_from_slice(format!("www-authenticate: {challenge}\r\n").as_bytes());
            }
            err.write_response_with(&ctx.request_id, close, ctx.dialect, &extra, &mut out);
            let (res, _) = client.write_all(out).await;
            if close || res.is_err() {
                Outcome::Close
            } else {
                Outcome::KeepAlive
            }
        }
    };
    let bytes = Bytes {
        read: client.bytes_consumed() - consumed_before,
        written: client.bytes_written() - written_before,
    };
    log_phase(worker, &snapshot, &head, &mut ctx, bytes);
    // Dropping the context releases the concurrency slot.
    outcome
}

/// Answers a request whose head could not be parsed (or did not arrive in time), then the
/// connection closes: after a framing error nothing more on it can be trusted.
pub async fn reject<S>(worker: &ThreadState, client: &mut BufConn<S>, err: &GatewayError, id: &str)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let started = Instant::now();
    let mut out = Vec::with_capacity(256);
    err.write_response(id, true, &mut out);
    let _ = client.write_all(out).await;
    worker
        .shared
        .snapshot()
        .unrouted
        .record(err.status(), started.elapsed());
}

/// What a request was routed to: a `[[route]]`, or an AI front door, a route whose settings
/// (IP rules, hooks, auth) are `[ai]`'s. Both go through the same access and auth phases.
#[derive(Clone, Copy)]
enum Door<'s> {
    Route(&'s Route),
    Ai(ai::Endpoint),
    /// The MCP gateway's endpoint (`[mcp] path`).
    Mcp(&'s crate::mcp::McpGateway),
    /// The MCP endpoint's protected-resource metadata (RFC 9728): public, no hooks nor auth.
    McpMetadata(&'s crate::mcp::McpGateway),
}

impl<'s> Door<'s> {
    /// The client-address rules (`None` = everyone).
    fn ip_rules(self, snapshot: &'s Snapshot) -> Option<&'s IpRules> {
        match self {
            Door::Route(route) => route.ip_rules.as_ref(),
            Door::Ai(_) => snapshot.ai_ip_rules.as_ref(),
            Door::Mcp(mcp) | Door::McpMetadata(mcp) => mcp.ip_rules.as_ref(),
        }
    }

    /// The Lua script of the route or of `[ai]`.
    fn hooks(self, snapshot: &Snapshot) -> Option<ScriptId> {
        match self {
            Door::Route(route) => route.hooks,
            Door::Ai(_) => snapshot.ai_hooks,
            Door::Mcp(mcp) => mcp.hooks,
            Door::McpMetadata(_) => None,
        }
    }

    /// How callers authenticate.
    fn auth(self, snapshot: &Snapshot) -> AuthKind {
        match self {
            Door::Route(route) => route.auth,
            Door::Ai(_) => snapshot.config.ai.auth,
            Door::Mcp(mcp) => mcp.auth,
            Door::McpMetadata(_) => AuthKind::None,
        }
    }

    /// The JWT verifier of an `auth = "jwt"` route or of `[mcp]`.
    fn jwt(self) -> Option<(&'s str, &'s crate::auth::jwt::JwtVerifier)> {
        match self {
            Door::Route(route) => route.jwt.as_deref().map(|v| (route.name.as_str(), v)),
            Door::Ai(_) => None,
            Door::Mcp(mcp) => mcp.jwt.as_deref().map(|v| ("mcp", v)),
            Door::McpMetadata(_) => None,
        }
    }

    /// The `[[route]]`, if the request is for one.
    fn route(self) -> Option<&'s Route> {
        match self {
            Door::Route(route) => Some(route),
            Door::Ai(_) | Door::Mcp(_) | Door::McpMetadata(_) => None,
        }
    }
}

/// The phases, in order. The route and the AI front doors share route, access, auth and
/// log; they differ in what comes after auth.
async fn run_phases<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let door = route_phase(snapshot, head, ctx)?;
    access_phase(worker, snapshot, door, head, ctx)?;
    ctx.consumer = match auth_phase(worker, snapshot, door, head, ctx) {
        Err(GatewayError::Unauthorized) => {
            // MCP clients learn from the challenge where to get a token (RFC 9728).
            if let Door::Mcp(mcp) = door {
                ctx.challenge = Some(crate::mcp::authz::challenge(mcp, head, ctx.https));
            }
            return Err(Failure::Respond(GatewayError::Unauthorized));
        }
        other => other?,
    };
    match door {
        // Limits apply per tool call, inside the MCP endpoint.
        Door::Mcp(mcp) => {
            crate::mcp::endpoint::serve(worker, snapshot, mcp, client, head, ctx).await
        }
        Door::McpMetadata(mcp) => crate::mcp::authz::serve(mcp, client, head, ctx).await,
        Door::Route(route) => {
            // Phase limits: route, key and team request rates, then the key's concurrency.
            let _counts = limits::requests(worker, snapshot, Some(route), ctx)?;
            // Phases upstream and response.
            proxy::proxy(worker, snapshot, route, client, head, ctx).await
        }
        Door::Ai(ai::Endpoint::Models) => {
            // Phase limits (requests only: listing models uses no tokens), then the answer
            // from the catalog.
            let _counts = limits::requests(worker, snapshot, None, ctx)?;
            ai::models(snapshot, client, head, ctx).await
        }
        Door::Ai(ai::Endpoint::Model) => {
            // As for the list: request rates only, then the answer from the catalog.
            let _counts = limits::requests(worker, snapshot, None, ctx)?;
            ai::model(snapshot, client, head, ctx).await
        }
        Door::Ai(endpoint) => {
            let body = ai::read_body(snapshot, client, head, ctx).await?;
            match endpoint {
                // Its own prompt, limits, upstream and settle phases: one model, no `on_prompt`.
                ai::Endpoint::Embeddings => {
                    return ai::embeddings(worker, snapshot, client, head, ctx, &body).await
                }
                // Its own phases: a prompt, not a chat, to OpenAI-kind providers only.
                ai::Endpoint::Completions => {
                    return ai::completions(worker, snapshot, client, head, ctx, &body).await
                }
                // Request rates only: counting uses no tokens and no budget.
                ai::Endpoint::CountTokens => {
                    return ai::count_tokens(worker, snapshot, client, head, ctx, &body).await
                }
                _ => {}
            }
            // Phase prompt: parse into the canonical chat, `on_prompt`, the model, the
            // token estimate and reservation.
            let prompt = ai::prompt_phase(worker, snapshot, head, ctx, endpoint, &body)?;
            // Phase limits: request rates and concurrency, then tokens per minute and budgets.
            let hold = ai::limits_phase(worker, snapshot, ctx, &prompt)?;
            // Phases upstream and response: the model's provider, with retries and fallbacks.
            let served = ai::upstream_phase(worker, snapshot, client, head, ctx, &prompt).await;
            // Phase settle: limits, budgets and the ledger corrected to the reported usage.
            ai::settle_phase(worker, ctx, prompt, hold, served)
        }
    }
}

/// Phase route: an AI front door by its path (where models are configured), else host +
/// longest path prefix picks a `[[route]]` (404 if none).
fn route_phase<'s>(
    snapshot: &'s Snapshot,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Door<'s>, GatewayError> {
    if let Some(mcp) = snapshot.mcp.as_deref() {
        if head.path() == mcp.path {
            ctx.front_door = true;
            ctx.door_label = "mcp";
            return Ok(Door::Mcp(mcp));
        }
        if crate::mcp::authz::is_metadata_path(mcp, head.path()) {
            ctx.front_door = true;
            ctx.door_label = "mcp_metadata";
            return Ok(Door::McpMetadata(mcp));
        }
    }
    if !snapshot.catalog.is_empty() {
        if let Some(endpoint) = ai::Endpoint::at(head.path()) {
            ctx.front_door = true;
            ctx.door_label = endpoint.route_label();
            ai::route(endpoint, head, ctx)?;
            return Ok(Door::Ai(endpoint));
        }
    }
    let route_index = snapshot
        .router
        .route(head.host(), head.path())
        .ok_or(GatewayError::NotFound)?;
    ctx.route = Some(route_index);
    Ok(Door::Route(&snapshot.routes[route_index]))
}

/// Phase access: client-address rules and limits come before anything about credentials, so
/// a flood of bad credentials from one address is throttled too; then the `on_access` hook.
fn access_phase(
    worker: &ThreadState,
    snapshot: &Snapshot,
    door: Door,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    if let Some(rules) = door.ip_rules(snapshot) {
        if !rules.permits(ctx.client_addr.ip()) {
            return Err(GatewayError::Forbidden("client address"));
        }
    }
    if let Some(route) = door.route() {
        limits::client_address(worker, route, ctx)?;
    }
    let name = door.route().map(|r| r.name.as_str());
    ctx.hooked = hooks::begin(door.hooks(snapshot), head, ctx, name);
    hooks::access(worker, snapshot, ctx)
}

/// Phase auth: who is calling, and may they use this route? An `on_access` hook may have
/// named the consumer (custom auth); an `auth = "lua"` route or front door needs it to.
/// Otherwise the caller is authenticated per the route's `auth` (or `[ai].auth`) and what the
/// identity may do is checked. Any credential problem is the same 401, so a client learns
/// nothing about which keys exist; a valid identity without the route or its scopes is 403.
/// A front door has no route to permit nor scopes to require: its models are checked once
/// the request names one.
fn auth_phase(
    worker: &ThreadState,
    snapshot: &Snapshot,
    door: Door,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Option<Consumer>, GatewayError> {
    // Keys expire to the millisecond; JWT times are whole seconds (RFC 7519 NumericDate).
    let now_ms = crate::clock::unix_now_ms();
    let now = now_ms.div_euclid(1000);
    let route = door.route();
    if let Some(consumer) = hooks::chosen_consumer(worker, ctx, now_ms)? {
        return Ok(Some(match route {
            Some(route) => permit_route(route, consumer)?,
            None => consumer,
        }));
    }
    let consumer = match door.auth(snapshot) {
        AuthKind::None => return Ok(None),
        AuthKind::ApiKey => {
            let key = api_key(worker, head, now_ms)?;
            if let Some(route) = route {
                if !auth::key_permits_route(&key, &route.name) {
                    return Err(GatewayError::Forbidden("route"));
                }
            }
            Consumer::from_key(&key)
        }
        AuthKind::Jwt => match mcp_virtual_key(worker, door, head, now_ms) {
            Some(key) => Consumer::from_key(&key),
            None => jwt_consumer(worker, door, head, now, now_ms)?,
        },
        // Its `on_access` hook did not name a consumer: fail closed.
        AuthKind::Lua => return Err(GatewayError::Unauthorized),
    };
    let required = route.map_or(&[][..], |r| r.scopes.as_slice());
    if !auth::has_scopes(&consumer.scopes, required) {
        return Err(GatewayError::Forbidden("scope"));
    }
    Ok(Some(consumer))
}

/// The MCP endpoint takes a virtual key as its Bearer token under `auth = "jwt"` too (the
/// contract's "virtual keys and JWTs are both accepted"); `None` elsewhere or without one.
fn mcp_virtual_key(
    worker: &ThreadState,
    door: Door,
    head: &RequestHead,
    now_ms: i64,
) -> Option<Arc<KeyRecord>> {
    match door {
        Door::Mcp(_) => api_key(worker, head, now_ms).ok(),
        _ => None,
    }
}

/// The consumer a valid JWT names, for `auth = "jwt"`.
fn jwt_consumer(
    worker: &ThreadState,
    door: Door,
    head: &RequestHead,
    now: i64,
    now_ms: i64,
) -> Result<Consumer, GatewayError> {
    // Routes and `[mcp]` have JWT settings (`check` refuses `jwt` for `[ai]`).
    let (name, verifier) = door.jwt().ok_or(GatewayError::Unauthorized)?;
    let token = bearer_token(head).ok_or(GatewayError::Unauthorized)?;
    let claims = verifier.verify(token, now).map_err(|e| {
        log::debug!("JWT rejected on {name}: {}", e.reason());
        GatewayError::Unauthorized
    })?;
    // A token may name a virtual key whose limits apply; a dead key fails closed.
    let key = match &claims.key_id {
        Some(id) => {
            let key = worker.shared.credentials.by_id(id);
            match key {
                Some(k) if k.is_active_at_ms(now_ms) => Some(k),
                _ => return Err(GatewayError::Unauthorized),
            }
        }
        None => None,
    };
    Ok(Consumer {
        id: claims.key_id,
        name: claims.subject,
        team: claims.team,
        scopes: claims.scopes,
        metadata: Default::default(),
        key,
    })
}

/// The route checks for a consumer named by a hook: the key's routes and the route's scopes.
fn permit_route(route: &Route, consumer: Consumer) -> Result<Consumer, GatewayError> {
    if let Some(key) = &consumer.key {
        if !auth::key_permits_route(key, &route.name) {
            return Err(GatewayError::Forbidden("route"));
        }
    }
    if !auth::has_scopes(&consumer.scopes, &route.scopes) {
        return Err(GatewayError::Forbidden("scope"));
    }
    Ok(consumer)
}

/// The live virtual key the request presents (`Authorization: Bearer` or `x-api-key`).
fn api_key(
    worker: &ThreadState,
    head: &RequestHead,
    now_ms: i64,
) -> Result<Arc<KeyRecord>, GatewayError> {
    let presented = auth::presented_key(head).ok_or(GatewayError::Unauthorized)?;
    worker
        .shared
        .credentials
        .authenticate_at_ms(presented, now_ms)
        .ok_or(GatewayError::Unauthorized)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 11.1).
fn bearer_token(head: &RequestHead) -> Option<&str> {
    let value = std::str::from_utf8(head.header("authorization")?).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What one request moved on the client connection.
struct Bytes {
    /// Request body bytes read, as framed on the wire (chunk framing included).
    read: u64,
    /// Response bytes written, head included.
    written: u64,
}

/// Phase log: every request, answered or rejected, is counted on its route and written to
/// the access log.
fn log_phase(
    worker: &ThreadState,
    snapshot: &Snapshot,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    bytes: Bytes,
) {
    let extra = hooks::log(worker, snapshot, ctx);
    let elapsed = ctx.started.elapsed();
    let route = ctx.route.map(|i| &snapshot.routes[i]);
    match route {
        Some(r) => r.metrics.record(ctx.status, elapsed),
        None if ctx.front_door => {
            crate::metrics::global().record_door(ctx.door_label, ctx.status, elapsed)
        }
        None => snapshot.unrouted.record(ctx.status, elapsed),
    }
    if worker.access_log.enabled() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let consumer = ctx.consumer.as_ref();
        // A front door is named by its label, as in the metrics (the path is logged too).
        let route_name = match route {
            Some(r) => Some(r.name.as_str()),
            None if ctx.front_door => Some(ctx.door_label),
            None => None,
        };
        let entry = AccessEntry {
            ts_ms: now.as_millis() as u64,
            request_id: &ctx.request_id,
            client: ctx.client_addr.ip().to_string(),
            method: head.method(),
            host: head.host(),
            path: head.path(),
            route: route_name,
            status: ctx.status,
            duration_us: elapsed.as_micros() as u64,
            user_agent: head.header("user-agent").map(accesslog::user_agent),
            bytes_in: bytes.read,
            bytes_out: bytes.written,
            // An answer cut short (the client went away) ends its upstream time here.
            upstream_addr: ctx.upstream.map(|u| u.addr.to_string()),
            upstream_ms: ctx
                .upstream
                .map(|u| u.took.unwrap_or_else(|| u.sent.elapsed()).as_millis() as u64),
            error: ctx.error,
            stream: ctx.stream,
            key_id: consumer.and_then(|c| c.id.as_deref()),
            team: consumer.map(|c| c.team.as_str()),
            model: ctx.ai.as_ref().map(|ai| ai.model.as_str()),
            prompt: ctx.ai.as_ref().and_then(|ai| ai.prompt.as_deref()),
            attempts: &ctx.attempts,
            extra,
            usage: ctx.ai.as_ref().map(|ai| UsageFields {
                prompt_tokens: ai.usage.prompt_tokens,
                completion_tokens: ai.usage.completion_tokens,
                cached_tokens: ai.usage.cached_tokens,
                cost_usd: crate::limits::nano_to_usd(ai.cost_nano_usd),
            }),
        };
        worker.access_log.write(entry.render());
    }
}

/// The client's `x-request-id` if it is well-formed: 1 to 128 visible token characters.
fn client_request_id(head: &RequestHead) -> Option<String> {
    let value = head.header("x-request-id")?;
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b));
    ok.then(|| String::from_utf8_lossy(value).into_owned())
}

/// After an early answer, skip a Content-Length body that is already fully buffered so the
/// connection can be reused; anything else means the connection closes.
fn discard_buffered_body<S>(client: &mut BufConn<S>, head: &RequestHead, ctx: &mut RequestCtx)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    if ctx.body_done {
        return;
    }
    if let BodyFraming::Length(n) = head.body() {
        if (client.buffered().len() as u64) >= n && n <= 64 * 1024 {
            client.consume(n as usize);
            ctx.body_done = true;
        }
    }
}

//! The request path, in order. Read this file top to bottom to follow one request:
//!
//! 1. **route**: the path is normalized (dot segments, unreserved escapes, `//`; 400 when it
//!    cannot be safely), then host + longest path prefix picks a `[[route]]` (404 if none).
//! 2. **access / auth / limits / prompt**: arrive with the credentials, limits, Lua and AI
//!    features; each is a phase function called here, in this order.
//! 3. **upstream**: pick a target, reuse or open a connection, send the rewritten head and
//!    stream the body (chunked bodies are validated before any byte goes out).
//! 4. **response**: stream the upstream's response back as it arrives, re-framed for the client.
//! 5. **log**: metrics (and the access log) for every request, including rejected ones.
//!
//! Phases return `Err(Failure)`; [`handle`] turns a failure into a response in one place.

mod ai;
mod exchange;
mod hooks;
mod limits;
mod notify;
mod proxy;
mod state;

pub use notify::LocalNotify;
pub use state::ThreadState;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use crate::accesslog::{AccessEntry, AttemptLog, UsageFields};
use crate::auth::{self, Consumer};
use crate::config::AuthKind;
use crate::error::{Dialect, GatewayError};
use crate::http1::BufConn;
use crate::http1::{BodyFraming, RequestHead};
use crate::limits::{KeyPermit, RateReport};
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
    pub permit: Option<KeyPermit>,
    /// The dialect gateway-made errors are written in.
    pub dialect: Dialect,
    /// Whether the request is for an AI front door.
    pub front_door: bool,
    /// Model and usage of an AI request, for the access log.
    pub ai: Option<ai::AiRecord>,
    /// Every provider attempt of an AI request, for the access log.
    pub attempts: Vec<AttemptLog>,
    /// Lua hook state, when the route or front door has a script.
    pub hooked: Option<Box<hooks::Hooked>>,
}

impl RequestCtx {
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
        ai: None,
        attempts: Vec::new(),
        hooked: None,
    };
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
            discard_buffered_body(client, &head, &mut ctx);
            let close = err.closes_connection()
                || !ctx.body_done
                || !head.keep_alive()
                || worker.shutting_down();
            ctx.status = err.status();
            let mut out = Vec::with_capacity(256);
            let extra = ctx.rate_headers();
            err.write_response_with(&ctx.request_id, close, ctx.dialect, &extra, &mut out);
            let (res, _) = client.write_all(out).await;
            if close || res.is_err() {
                Outcome::Close
            } else {
                Outcome::KeepAlive
            }
        }
    };
    log_phase(worker, &snapshot, &head, &mut ctx);
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
    // Phase: route. The AI front doors' paths come first where models are configured.
    if !snapshot.catalog.is_empty() {
        if let Some(endpoint) = ai::Endpoint::at(head.path()) {
            ctx.front_door = true;
            return ai::serve(worker, snapshot, client, head, ctx, endpoint).await;
        }
    }
    let route_index = snapshot
        .router
        .route(head.host(), head.path())
        .ok_or(GatewayError::NotFound)?;
    ctx.route = Some(route_index);
    let route = &snapshot.routes[route_index];

    // Phase access: client-address rules and limits come before anything about credentials,
    // so a flood of bad credentials from one address is throttled too.
    if let Some(rules) = &route.ip_rules {
        if !rules.permits(ctx.client_addr.ip()) {
            return Err(GatewayError::Forbidden("client address").into());
        }
    }
    limits::client_address(worker, route, ctx)?;
    ctx.hooked = hooks::begin(route.hooks, head, ctx, Some(&route.name));
    hooks::access(worker, snapshot, ctx)?;

    // Phase auth: who is calling, and may they use this route? An `on_access` hook may have
    // named the consumer (custom auth); an `auth = "lua"` route needs it to.
    ctx.consumer = match hooks::chosen_consumer(worker, ctx, unix_now())? {
        Some(consumer) => Some(permit_route(route, consumer)?),
        None => auth_phase(worker, route, head)?,
    };

    // Phase limits: route, key and team request rates, then the key's concurrency.
    let _counts = limits::requests(worker, snapshot, Some(route), ctx)?;

    // Phases upstream and response.
    proxy::proxy(worker, snapshot, route, client, head, ctx).await
}

/// Phase auth: authenticates the caller per the route's `auth` and checks what the identity
/// may do. Any credential problem is the same 401, so a client learns nothing about which
/// keys exist; a valid identity without the route or its scopes is 403.
fn auth_phase(
    worker: &ThreadState,
    route: &Route,
    head: &RequestHead,
) -> Result<Option<Consumer>, GatewayError> {
    let now = unix_now();
    let consumer = match route.auth {
        AuthKind::None => return Ok(None),
        AuthKind::ApiKey => {
            let key = api_key(worker, head, now)?;
            if !auth::key_permits_route(&key, &route.name) {
                return Err(GatewayError::Forbidden("route"));
            }
            Consumer::from_key(&key)
        }
        AuthKind::Jwt => {
            let verifier = route.jwt.as_ref().ok_or(GatewayError::Unauthorized)?;
            let token = bearer_token(head).ok_or(GatewayError::Unauthorized)?;
            let claims = verifier.verify(token, now).map_err(|e| {
                log::debug!("JWT rejected on route {}: {}", route.name, e.reason());
                GatewayError::Unauthorized
            })?;
            // A token may name a virtual key whose limits apply; a dead key fails closed.
            let key = match &claims.key_id {
                Some(id) => {
                    let key = worker.shared.credentials.by_id(id);
                    match key {
                        Some(k) if k.is_active(now) => Some(k),
                        _ => return Err(GatewayError::Unauthorized),
                    }
                }
                None => None,
            };
            Consumer {
                id: claims.key_id,
                name: claims.subject,
                team: claims.team,
                scopes: claims.scopes,
                metadata: Default::default(),
                key,
            }
        }
        // Its `on_access` hook did not name a consumer: fail closed.
        AuthKind::Lua => return Err(GatewayError::Unauthorized),
    };
    if !auth::has_scopes(&consumer.scopes, &route.scopes) {
        return Err(GatewayError::Forbidden("scope"));
    }
    Ok(Some(consumer))
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
    now: i64,
) -> Result<Arc<KeyRecord>, GatewayError> {
    let presented = auth::presented_key(head).ok_or(GatewayError::Unauthorized)?;
    worker
        .shared
        .credentials
        .authenticate(presented, now)
        .ok_or(GatewayError::Unauthorized)
}

/// Phase auth for the AI front doors, per `[ai].auth`. With `lua`, the `on_access` hook names
/// the caller before this phase; reaching it means the hook named none, so it fails closed,
/// like JWT (which `check` refuses for `[ai]`).
fn ai_auth(
    worker: &ThreadState,
    snapshot: &Snapshot,
    head: &RequestHead,
) -> Result<Option<Consumer>, GatewayError> {
    match snapshot.config.ai.auth {
        AuthKind::None => Ok(None),
        AuthKind::ApiKey => Ok(Some(Consumer::from_key(&api_key(
            worker,
            head,
            unix_now(),
        )?))),
        // `auth = "lua"`: the `on_access` hook did not name a consumer.
        AuthKind::Jwt | AuthKind::Lua => Err(GatewayError::Unauthorized),
    }
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Phase log: every request, answered or rejected, is counted on its route and written to
/// the access log.
fn log_phase(worker: &ThreadState, snapshot: &Snapshot, head: &RequestHead, ctx: &mut RequestCtx) {
    let extra = hooks::log(worker, snapshot, ctx);
    let elapsed = ctx.started.elapsed();
    let route = ctx.route.map(|i| &snapshot.routes[i]);
    match route {
        Some(r) => r.metrics.record(ctx.status, elapsed),
        None if ctx.front_door => snapshot.ai_metrics.record(ctx.status, elapsed),
        None => snapshot.unrouted.record(ctx.status, elapsed),
    }
    if worker.access_log.enabled() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let consumer = ctx.consumer.as_ref();
        let entry = AccessEntry {
            ts_ms: now.as_millis() as u64,
            request_id: &ctx.request_id,
            client: ctx.client_addr.ip().to_string(),
            method: head.method(),
            host: head.host(),
            path: head.path(),
            route: route.map(|r| r.name.as_str()),
            status: ctx.status,
            duration_us: elapsed.as_micros() as u64,
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

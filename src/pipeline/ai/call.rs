//! One model call, from the canonical request to the client's answer: retries with backoff on
//! the same model, then its fallbacks in order, each provider behind its circuit breaker,
//! while nothing has reached the client; then the answer, translated to the front door's
//! dialect (streamed event by event when the client asked for a stream).

use std::fmt::Write as _;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::relay::{relay, Relayed};
use super::responses::ResponsesDoor;
use super::stream::{Translation, MAX_EVENT};
use super::{attempt_log, note_first_byte, reply, send_whole, EventStream, RequestCtx};
use crate::ai::model_name::rename_body;
use crate::ai::provider_error::{self, ProviderError, MAX_ERROR_BODY};
use crate::ai::providers::anthropic;
use crate::ai::providers::{LocalBody, Reply, Whole};
use crate::ai::responses::{self, Naming, ResponsesRelay};
use crate::ai::TokenCounter;
use crate::ai::{Model, Provider, SseParser, Usage};
use crate::error::{Dialect, GatewayError};
use crate::http1::BufConn;
use crate::http1::{push_header, RequestHead, StrBuf};
use crate::limits::Metered;
use crate::pipeline::exchange::{self, Exchange};
use crate::pipeline::ThreadState;
use crate::pipeline::{Failure, Outcome};
use crate::snapshot::{RequestBounds, Snapshot};

/// Largest provider response body read whole.
const MAX_PROVIDER_BODY: usize = 64 * 1024 * 1024;

pub(super) use crate::ai::providers::Call;

/// The outcome of one call: what the client got, and what it used on which model.
pub(super) struct Served<'s> {
    pub result: Result<Outcome, Failure>,
    /// The model that answered (the primary when none did).
    pub model: &'s Model,
    /// What the answer tells about its usage.
    pub metered: Metered,
}

/// Why an attempt did not produce an answer.
enum Miss {
    /// The gateway could not get an answer (connect error, timeout, bad response).
    Gateway(GatewayError),
    /// The provider answered with an error status.
    Provider(ProviderError),
}

enum Attempt {
    Answer(Exchange),
    /// The provider answers in-process (see [`crate::ai::providers::Provider::local_chat`]).
    Local,
    /// Worth another try (the provider's key, limits or failures; connection trouble).
    Retry(Miss),
    /// Final: the request itself is at fault (most 4xx), or it cannot be sent.
    Fail(Miss),
    /// This provider cannot serve the call now (it has no valid credential): no retry on
    /// it, but the fallbacks are tried; with none left the miss is the answer.
    Skip(Miss),
}

/// Runs `call` on `primary` and, when it keeps failing, on its fallbacks; the answer is
/// rewritten as a Response when `responses` says how.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<'s, S>(
    worker: &ThreadState,
    snapshot: &'s Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    call: &Call,
    primary: &'s Model,
    responses: Option<&ResponsesDoor>,
) -> Served<'s>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let catalog = &snapshot.catalog;
    let chain =
        std::iter::once(primary).chain(primary.fallbacks.iter().map(|&i| &catalog.models()[i]));
    let retries = snapshot.config.ai.max_retries;
    let mut last = Miss::Gateway(GatewayError::Upstream("no provider available"));
    let mut last_model = primary;
    ctx.stream = call.request.stream;
    for model in chain {
        let provider = catalog.provider(model.provider);
        if !provider.breaker.allows(crate::clock::unix_now_ms()) {
            ctx.attempts
                .push(attempt_log(model, provider, "circuit open"));
            last = Miss::Gateway(GatewayError::Upstream("provider circuit open"));
            last_model = model;
            continue;
        }
        for attempt in 0..=retries {
            if attempt > 0 {
                monoio::time::sleep(backoff(attempt, &ctx.request_id)).await;
            }
            match try_once(worker, snapshot, call, model, provider, responses, ctx).await {
                Attempt::Answer(exchange) => {
                    provider.breaker.record_success();
                    ctx.upstream_began(&exchange);
                    ctx.attempts.push(attempt_log(
                        model,
                        provider,
                        &exchange.response.status().to_string(),
                    ));
                    let (result, metered) = deliver(
                        worker, snapshot, client, head, ctx, call, model, provider, exchange,
                        responses,
                    )
                    .await;
                    ctx.upstream_ended();
                    return Served {
                        result,
                        model,
                        metered,
                    };
                }
                Attempt::Local => {
                    ctx.attempts.push(attempt_log(model, provider, "200"));
                    let (result, usage) = deliver_local(
                        worker, snapshot, client, head, ctx, call, model, provider, responses,
                    )
                    .await;
                    return Served {
                        result,
                        model,
                        // A local answer's usage is known before it is sent, streamed or not.
                        metered: Metered::whole(usage),
                    };
                }
                Attempt::Retry(miss) => {
                    provider.breaker.record_failure(crate::clock::unix_now_ms());
                    ctx.attempts
                        .push(attempt_log(model, provider, &miss.describe()));
                    last = miss;
                    last_model = model;
                }
                Attempt::Skip(miss) => {
                    ctx.attempts
                        .push(attempt_log(model, provider, &miss.describe()));
                    last = miss;
                    last_model = model;
                    break;
                }
                Attempt::Fail(miss) => {
                    ctx.attempts
                        .push(attempt_log(model, provider, &miss.describe()));
                    let result = answer_miss(client, head, ctx, call.front, miss).await;
                    return Served {
                        result,
                        model,
                        metered: Metered::whole(None),
                    };
                }
            }
        }
    }
    let result = answer_miss(client, head, ctx, call.front, last).await;
    Served {
        result,
        model: last_model,
        metered: Metered::whole(None),
    }
}

impl Miss {
    fn describe(&self) -> String {
        match self {
            Miss::Gateway(e) => e.message(),
            Miss::Provider(e) => e.provider_status.to_string(),
        }
    }
}

/// Exponential backoff with full jitter: up to 100 ms, 200 ms, 400 ms ... capped at 2 s.
fn backoff(attempt: u32, seed: &str) -> Duration {
    let cap_ms = (100u64 << attempt.min(5)).min(2_000);
    // A cheap hash of the request id and the clock: jitter only needs to differ per request.
    let mut x = crate::clock::unix_now_ms() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    for b in seed.bytes() {
        x = (x ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    Duration::from_millis(cap_ms / 2 + x % (cap_ms / 2 + 1))
}

/// One attempt on `model`: sends the request and reads the response head (and the body of
/// an error answer).
async fn try_once(
    worker: &ThreadState,
    snapshot: &Snapshot,
    call: &Call,
    model: &Model,
    provider: &Provider,
    responses: Option<&ResponsesDoor>,
    ctx: &mut RequestCtx,
) -> Attempt {
    // The access log names the endpoint of the last attempt that got an answer.
    ctx.upstream = None;
    let native = native_body(responses, provider);
    if native.is_none() {
        // A Responses request only a provider's own Responses API can serve.
        if let Some(refused) = responses.and_then(ResponsesDoor::translation_refused) {
            return Attempt::Fail(Miss::Gateway(refused));
        }
    }
    if provider.api.is_local() {
        return Attempt::Local;
    }
    let Some(upstream) = &provider.upstream else {
        return Attempt::Fail(Miss::Gateway(GatewayError::Upstream(
            "provider has no address",
        )));
    };
    let parts = match native {
        Some(native) => provider
            .api
            .responses_request(native, &provider.target(&model.upstream_model))
            .ok_or(GatewayError::Upstream("provider has no Responses API")),
        None => provider_body(snapshot, call, model, provider),
    };
    let (path, body) = match parts {
        Ok(parts) => parts,
        Err(e) => return Attempt::Fail(Miss::Gateway(e)),
    };
    let limits = attempt_limits(snapshot);
    let mut refreshed = false;
    loop {
        let used = match token_in_force(provider) {
            Ok(generation) => generation,
            // Retrying cannot help until the source fetches again; the fallbacks may.
            Err(e) => return Attempt::Skip(Miss::Gateway(e)),
        };
        let sent = exchange::send(worker, upstream, &limits, |target| {
            provider_request(provider, &target.authority, &path, &body, &ctx.request_id)
        })
        .await;
        let exchange = match sent {
            Ok(e) => e,
            Err(e) => return Attempt::Retry(Miss::Gateway(e)),
        };
        let status = exchange.response.status();
        if (200..300).contains(&status) {
            return Attempt::Answer(exchange);
        }
        let stale = credential_stale(provider, status, &exchange);
        ctx.upstream_began(&exchange);
        let error = read_provider_error(worker, upstream, provider, exchange, &limits).await;
        ctx.upstream_ended();
        // The provider refused the credential (a token revoked before its expiry, temporary
        // AWS credentials expired or revoked): nothing has reached the client, so the call
        // is sent once more with a newer credential, without spending one of the call's
        // retries on a failure a fresh credential cures.
        if let (true, false, Some(used)) = (stale, refreshed, used) {
            refreshed = true;
            if fresher_credential(provider, used).await {
                continue;
            }
        }
        return if error.worth_retrying() {
            Attempt::Retry(Miss::Provider(error))
        } else {
            Attempt::Fail(Miss::Provider(error))
        };
    }
}

/// The AWS error types (`x-amzn-ErrorType`, before its `:`) with which Bedrock refuses
/// credentials that a newer set from the same source can replace: temporary credentials
/// past their expiry, or ones it no longer recognises (revoked, say). A bad signature or a
/// denied permission is not among them: new credentials of the same role would not cure it.
const STALE_CREDENTIAL_ERRORS: [&[u8]; 2] =
    [b"ExpiredTokenException", b"UnrecognizedClientException"];

/// Whether `provider`'s error answer says the credential the call went with is stale, so a
/// refreshed one may succeed: a 401 to a token, or a 403 `ExpiredTokenException` /
/// `UnrecognizedClientException` to SigV4 credentials from a source that refreshes them
/// (static keys do not change: there is nothing to wait for).
fn credential_stale(provider: &Provider, status: u16, exchange: &Exchange) -> bool {
    if provider.token.is_some() {
        return status == 401;
    }
    let Some(aws) = &provider.aws else {
        return false;
    };
    let error_type = exchange
        .response
        .header("x-amzn-errortype")
        .map(|v| v.split(|&b| b == b':').next().unwrap_or_default());
    status == 403
        && aws.source().refreshes()
        && error_type.is_some_and(|t| STALE_CREDENTIAL_ERRORS.contains(&t))
}

/// Asks `provider`'s credential source for a credential newer than generation `used` and
/// waits (briefly, see [`crate::pipeline::proxy::fresher_token`]) for it; whether one came.
async fn fresher_credential(provider: &Provider, used: u64) -> bool {
    if let Some(source) = &provider.token {
        return crate::pipeline::proxy::fresher_token(source, used)
            .await
            .is_some();
    }
    match &provider.aws {
        Some(aws) => crate::pipeline::proxy::fresher_token(aws.source(), used)
            .await
            .is_some(),
        None => false,
    }
}

/// The generation of the credential `provider` is sent or signed with now (`None` when it
/// takes none), or 502 `upstream_credential_unavailable` when it takes one and has none: the
/// provider would refuse the call, and the client could do nothing about it.
pub(super) fn token_in_force(provider: &Provider) -> Result<Option<u64>, GatewayError> {
    if let Some(aws) = &provider.aws {
        // Signing credentials: static keys (one generation for good) or temporary ones.
        return aws
            .in_force()
            .map(Some)
            .ok_or(GatewayError::CredentialUnavailable);
    }
    match &provider.token {
        None => Ok(None),
        Some(source) => source
            .current()
            .map(|current| Some(current.generation))
            .ok_or(GatewayError::CredentialUnavailable),
    }
}

/// Reads a provider's error answer (at most [`MAX_ERROR_BODY`] bytes of it) and maps it to
/// the gateway's error, the provider's key scrubbed from the message. Every front door and
/// endpoint answers provider errors through this.
pub(super) async fn read_provider_error(
    worker: &ThreadState,
    upstream: &crate::upstream::Upstream,
    provider: &Provider,
    mut exchange: Exchange,
    limits: &RequestBounds,
) -> ProviderError {
    let status = exchange.response.status();
    let retry_after = exchange.response.header("retry-after").map(<[u8]>::to_vec);
    let body = exchange::read_response_body(
        &mut exchange,
        "POST",
        MAX_ERROR_BODY,
        limits.upstream_timeout,
    )
    .await;
    // A body too large or cut short leaves bytes on the connection: it is not reused.
    exchange.finish(worker, upstream, body.is_ok());
    let body = body.unwrap_or_default();
    let secrets = provider_secrets(provider);
    let secrets: Vec<&str> = secrets.iter().map(|k| k.expose()).collect();
    let error = provider
        .api
        .error(status, &body, retry_after.as_deref(), &secrets);
    if error.kind == provider_error::ProviderErrorKind::CredentialRefused {
        // The provider refused the gateway's own credential: a gateway problem, not the
        // client's (whose virtual key was fine), so not an authentication error toward the
        // client.
        let what = if provider.token.is_some() {
            "token"
        } else if provider.aws.is_some() {
            "SigV4 signature"
        } else {
            "api_key"
        };
        log::warn!(
            "provider {} refused the gateway's {what} ({status})",
            provider.name
        );
        if status == 401 {
            // Whichever endpoint saw it, the next calls should find a newer token (asking
            // is rate-limited by the source).
            if let Some(source) = &provider.token {
                source.request_refresh();
            }
        }
    }
    error
}

/// The client's Responses body when it goes to `provider`'s own Responses API as it is.
fn native_body<'a>(
    responses: Option<&'a ResponsesDoor>,
    provider: &Provider,
) -> Option<&'a serde_json::Map<String, serde_json::Value>> {
    responses?.native_body(provider)
}

/// `[limits]` with the per-attempt time to the response head.
fn attempt_limits(snapshot: &Snapshot) -> RequestBounds {
    let mut limits = snapshot.limits;
    let attempt_ms = snapshot.config.ai.attempt_timeout_ms;
    if attempt_ms > 0 {
        limits.upstream_timeout = Duration::from_millis(attempt_ms);
    }
    limits
}

/// The path (under `base_url`) and body of the request to `provider` for `model`.
fn provider_body(
    snapshot: &Snapshot,
    call: &Call,
    model: &Model,
    provider: &Provider,
) -> Result<(String, Vec<u8>), GatewayError> {
    provider
        .api_for(&model.upstream_model)
        .chat_request(
            call,
            &provider.target(&model.upstream_model),
            snapshot.config.ai.default_max_tokens,
        )
        .map_err(|e| GatewayError::InvalidRequest(e.to_string()))
}

/// The complete request toward a provider: its path, JSON body and the provider key in the
/// provider's own header. The client's credential never goes upstream.
pub(super) fn provider_request(
    provider: &Provider,
    authority: &str,
    path: &str,
    body: &[u8],
    request_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 512);
    let _ = write!(
        StrBuf(&mut out),
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    let key = provider.api_key.as_ref().map(|k| k.current());
    provider
        .api
        .push_headers(key.as_ref().map(|k| k.expose().as_bytes()), &mut out);
    // A token the gateway obtains (`entra`) replaces the key: `Authorization: Bearer`.
    // Callers check first that there is one ([`token_in_force`]).
    if let Some(current) = provider.token.as_ref().and_then(|source| source.current()) {
        out.extend_from_slice(b"authorization: Bearer ");
        out.extend_from_slice(current.credential.expose().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    push_header(&mut out, "x-request-id", request_id.as_bytes());
    // A SigV4-signed provider (`bedrock`): signed last, over the path, host and body as sent.
    if let Some(aws) = &provider.aws {
        let now = crate::clock::unix_now_ms() / 1000;
        if let Err(e) = aws.push_headers(authority, path, "application/json", body, now, &mut out) {
            // Unsigned, the request is refused by the provider, which the client sees as the
            // provider's credential error; the reason (no secret in it) is logged here.
            log::warn!("provider {}: cannot sign the request: {e}", provider.name);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Answers the client with a failed call's last error, in the front door's dialect.
async fn answer_miss<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    front: Dialect,
    miss: Miss,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    match miss {
        Miss::Gateway(e) => Err(e.into()),
        Miss::Provider(e) => answer_provider_error(client, head, ctx, front, &e).await,
    }
}

/// Answers the client with a provider's error, mapped: the gateway's error shape in
/// `dialect`, with `Retry-After` when the provider gave one.
pub(super) async fn answer_provider_error<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    dialect: Dialect,
    error: &ProviderError,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let body = error.body(dialect);
    let headers = |out: &mut Vec<u8>| {
        push_header(out, "content-type", b"application/json");
        if let Some(secs) = error.retry_after_secs {
            push_header(out, "retry-after", secs.to_string().as_bytes());
        }
    };
    send_whole(client, head, ctx, error.status, headers, body.as_bytes()).await
}

/// Whether the answer is a stream: server-sent events, or AWS event-stream frames (Bedrock).
pub(super) fn is_event_stream(exchange: &Exchange) -> bool {
    let content_type = exchange.response.header("content-type");
    content_type.is_some_and(|v| v.starts_with(b"text/event-stream"))
        || crate::ai::providers::is_aws_event_stream(content_type)
}

/// Relays a provider's successful answer.
#[allow(clippy::too_many_arguments)]
async fn deliver<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    call: &Call,
    model: &Model,
    provider: &Provider,
    mut exchange: Exchange,
    responses: Option<&ResponsesDoor>,
) -> (Result<Outcome, Failure>, Metered)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let upstream = provider
        .upstream
        .as_deref()
        .expect("network providers have an upstream");
    let created = crate::clock::unix_now_ms() / 1000;
    let id = format!("chatcmpl-{}", ctx.request_id);
    let silence = snapshot.limits.upstream_timeout;
    let native = native_body(responses, provider).is_some();
    if native && (!call.request.stream || !is_event_stream(&exchange)) {
        // The provider's own Response: relayed with the client-facing model name, metered
        // from its usage.
        let body =
            match exchange::read_response_body(&mut exchange, "POST", MAX_PROVIDER_BODY, silence)
                .await
            {
                Ok(b) => b,
                Err(e) => return (Err(e.into()), Metered::whole(None)),
            };
        let status = exchange.response.status();
        exchange.finish(worker, upstream, true);
        let usage = responses::usage_from_response(&body);
        let body = rename_body(body, &model.name);
        let r = reply::answer(worker, snapshot, client, head, ctx, status, body).await;
        return (r, Metered::whole(usage));
    }
    if !call.request.stream || !is_event_stream(&exchange) {
        let body =
            match exchange::read_response_body(&mut exchange, "POST", MAX_PROVIDER_BODY, silence)
                .await
            {
                Ok(b) => b,
                Err(e) => return (Err(e.into()), Metered::whole(None)),
            };
        let status = exchange.response.status();
        exchange.finish(worker, upstream, true);
        let translated = translate_whole(provider, call.front, body, model, &id, created)
            .and_then(|whole| as_response(responses, whole, model, &ctx.request_id, created));
        return match translated {
            Ok((body, usage)) => {
                let r = reply::answer(worker, snapshot, client, head, ctx, status, body).await;
                (r, Metered::whole(usage))
            }
            Err(e) => {
                log::warn!("provider {}: {e}", provider.name);
                (
                    Err(GatewayError::Upstream("untranslatable provider response").into()),
                    Metered::whole(None),
                )
            }
        };
    }
    let counter = TokenCounter::for_model(&model.upstream_model);
    let mut translation = if native {
        let relay = ResponsesRelay::new(&model.name, counter);
        Translation::passthrough(Box::new(relay))
    } else {
        Translation::new(
            provider.api_for(&model.upstream_model),
            call.front,
            &model.name,
            &id,
            created,
            call.request.client_wants_usage,
            counter,
        )
    }
    // A provider may echo its key in an error it sends mid-stream.
    .with_secrets(provider_secrets(provider));
    if let (Some(door), false) = (responses, native) {
        translation = translation.with_client_stage(door.stage(&naming(model, ctx, created)));
    }
    let Relayed {
        result,
        metered,
        body_complete,
    } = relay(
        worker,
        snapshot,
        client,
        head,
        ctx,
        &mut exchange,
        &mut translation,
    )
    .await;
    // A body read to its end leaves the connection reusable, whether or not the client
    // stayed for it.
    if body_complete {
        exchange.finish(worker, upstream, true);
    }
    (result, metered)
}

/// The values no provider error may show a client: the provider's key or token as it is now.
pub(super) fn provider_secrets(provider: &Provider) -> Vec<std::sync::Arc<crate::config::Secret>> {
    let token = provider
        .token
        .as_ref()
        .and_then(|source| source.current())
        .map(|current| {
            std::sync::Arc::new(crate::config::Secret::new(current.credential.expose()))
        });
    // The session token of temporary AWS credentials goes on the wire, so it could come back.
    let session_token = provider
        .aws
        .as_ref()
        .and_then(|aws| aws.session_token())
        .map(std::sync::Arc::new);
    provider
        .api_key
        .iter()
        .map(|key| arc_swap::Guard::into_inner(key.current()))
        .chain(token)
        .chain(session_token)
        .collect()
}

/// A whole provider answer in the front door's dialect, with its usage.
fn translate_whole(
    provider: &Provider,
    front: Dialect,
    body: Vec<u8>,
    model: &Model,
    id: &str,
    created: i64,
) -> Result<(Vec<u8>, Option<Usage>), crate::ai::TranslateError> {
    let reply = Reply {
        model: &model.name,
        id,
        created,
    };
    let Whole {
        body,
        usage,
        dialect,
    } = provider
        .api_for(&model.upstream_model)
        .chat_response(body, front, &reply)?;
    if dialect == front {
        return Ok((body, usage));
    }
    // Otherwise the answer is canonical and the client speaks Anthropic.
    let (body, from_body) = anthropic::response_from_openai(&body, &model.name)?;
    Ok((body, usage.or(Some(from_body))))
}

/// How an answer of `model` to the request in `ctx` is named as a Response.
fn naming<'a>(model: &'a Model, ctx: &'a RequestCtx, created: i64) -> Naming<'a> {
    Naming {
        model: &model.name,
        request_id: &ctx.request_id,
        created_at: created,
    }
}

/// A whole canonical answer rewritten as a Response when the client asked `/v1/responses`;
/// its usage stays the provider's.
fn as_response(
    responses: Option<&ResponsesDoor>,
    (body, usage): (Vec<u8>, Option<Usage>),
    model: &Model,
    request_id: &str,
    created: i64,
) -> Result<(Vec<u8>, Option<Usage>), crate::ai::TranslateError> {
    let Some(door) = responses else {
        return Ok((body, usage));
    };
    let naming = Naming {
        model: &model.name,
        request_id,
        created_at: created,
    };
    Ok((door.answer(&body, usage, &naming)?, usage))
}

/// A provider's in-process answer, paced by the provider's `mock` options and translated for
/// the front door like any provider's.
#[allow(clippy::too_many_arguments)]
async fn deliver_local<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    call: &Call,
    model: &Model,
    provider: &Provider,
    responses: Option<&ResponsesDoor>,
) -> (Result<Outcome, Failure>, Option<Usage>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let id = format!("chatcmpl-{}", ctx.request_id);
    let created = crate::clock::unix_now_ms() / 1000;
    let reply = Reply {
        model: &model.name,
        id: &id,
        created,
    };
    let include_usage = call.request.client_wants_usage || call.front == Dialect::Anthropic;
    let Some(local) = provider.api.local_chat(call, &reply, include_usage) else {
        return (
            Err(GatewayError::Upstream("provider has no address").into()),
            None,
        );
    };
    let usage = Some(local.usage);
    if provider.mock.latency_ms > 0 {
        monoio::time::sleep(Duration::from_millis(provider.mock.latency_ms)).await;
    }
    let events = match local.body {
        LocalBody::Whole(canonical) => {
            let translated = translate_whole(provider, call.front, canonical, model, &id, created)
                .and_then(|w| as_response(responses, w, model, &ctx.request_id, created));
            let result = match translated {
                Ok((body, _)) => {
                    reply::answer(worker, snapshot, client, head, ctx, 200, body).await
                }
                Err(_) => Err(GatewayError::Upstream("mock answer untranslatable").into()),
            };
            return (result, usage);
        }
        LocalBody::Events(events) => events,
    };
    // Spread the completion's tokens evenly over the events at `tokens_per_second`.
    let pause = match provider.mock.tokens_per_second {
        0 => Duration::ZERO,
        tps => Duration::from_secs_f64(
            local.usage.completion_tokens as f64 / tps as f64 / events.len().max(1) as f64,
        ),
    };
    let mut translation = Translation::new(
        provider.api,
        call.front,
        &model.name,
        &id,
        created,
        call.request.client_wants_usage,
        TokenCounter::for_model(&model.upstream_model),
    );
    if let Some(door) = responses {
        translation = translation.with_client_stage(door.stage(&naming(model, ctx, created)));
    }
    let result = async {
        let stream = EventStream::start(worker, snapshot, client, head, ctx).await?;
        let mut parser = SseParser::new(MAX_EVENT);
        let mut out = Vec::with_capacity(4096);
        for event in events {
            parser.push(&event).map_err(|_| Failure::Abort)?;
            while let Some(e) = parser.next_event() {
                translation.on_event(&e, &mut out);
            }
            // Unpaced, the whole answer goes out in one write.
            if !pause.is_zero() {
                monoio::time::sleep(pause).await;
                note_first_byte(ctx, &out);
                stream.send(client, &out).await?;
                out.clear();
            }
        }
        translation.finish(&mut out);
        note_first_byte(ctx, &out);
        stream.end(client, head, &out).await
    }
    .await;
    (result, usage)
}

//! The AI front doors (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`): the same
//! phases as a route, with the prompt phase in the middle.
//!
//! route (by path) → auth (`[ai].auth`) → read and parse the body, pick the model → limits
//! (request rates, concurrency, then tokens per minute and budgets on the request's estimated
//! tokens) → upstream (the model's provider: in-process mock, or an OpenAI-format server with
//! the provider key injected) → response (relayed event by event when streamed, usage captured)
//! → settle (token limits and budgets corrected to the reported usage; usage to the ledger).

use std::fmt::Write as _;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde_json::Value;

use super::exchange::{self, BodyDecoder, Exchange};
use super::limits::{self, TokenAsk, TokenHold};
use super::{Failure, Outcome, RequestCtx};
use crate::ai::{mock, openai, ChatRequest, Model, Provider, SseParser, Usage};
use crate::auth;
use crate::config::ProviderKind;
use crate::error::GatewayError;
use crate::http1::{encode_chunk, encode_last_chunk, push_header, RequestHead, StrBuf, Version};
use crate::meter::{self, cost_nano_usd, Prices};
use crate::snapshot::Snapshot;
use crate::usage::UsageEvent;
use crate::worker::{BufConn, Worker};

/// Largest provider response body read whole (non-streamed completions, embeddings).
const MAX_PROVIDER_BODY: usize = 64 * 1024 * 1024;

/// Largest single server-sent event relayed.
const MAX_SSE_EVENT: usize = 4 * 1024 * 1024;

/// Which front door a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    ChatCompletions,
    Embeddings,
    Models,
}

impl Endpoint {
    /// The front door at `path`, if any.
    pub fn at(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
            "/v1/embeddings" => Some(Endpoint::Embeddings),
            "/v1/models" => Some(Endpoint::Models),
            _ => None,
        }
    }

    fn method(self) -> &'static str {
        match self {
            Endpoint::Models => "GET",
            _ => "POST",
        }
    }
}

/// What an AI request used, for the access log.
#[derive(Debug, Clone, Default)]
pub struct AiRecord {
    /// The client-facing model name.
    pub model: String,
    /// Reported (or, when the provider reported nothing, estimated) usage.
    pub usage: Usage,
    /// Cost in nano-USD.
    pub cost_nano_usd: u64,
}

/// Serves one request to an AI front door.
pub(super) async fn serve<S>(
    worker: &Worker,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    if head.method() != endpoint.method() {
        return Err(GatewayError::InvalidRequest(format!(
            "{} needs method {}",
            head.path(),
            endpoint.method()
        ))
        .into());
    }
    ctx.consumer = super::ai_auth(worker, snapshot, head)?;
    match endpoint {
        Endpoint::Models => {
            let _counts = limits::requests(worker, snapshot, None, ctx)?;
            let key = ctx.consumer.as_ref().and_then(|c| c.key.as_deref());
            let names: Vec<&str> = snapshot
                .catalog
                .models()
                .iter()
                .map(|m| m.name.as_str())
                .filter(|name| key.is_none_or(|k| auth::key_permits_model(k, name)))
                .collect();
            let body = openai::models_list_body(&names, crate::usage::unix_now_ms() / 1000);
            respond(client, head, ctx, 200, "application/json", &body).await
        }
        Endpoint::ChatCompletions => {
            let limits_cfg = &snapshot.limits;
            let body = exchange::read_request_body(
                client,
                head,
                limits_cfg.max_body_bytes,
                limits_cfg.idle_timeout,
            )
            .await?;
            ctx.body_done = true;
            let mut request = openai::parse_chat_request(&body)
                .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
            let model = pick_model(snapshot, ctx, &request.model)?;
            let prompt_tokens = {
                // Estimate over the body in place (moved, not copied, into a Value).
                let value = Value::Object(std::mem::take(&mut request.body));
                let n = meter::estimate_chat_prompt_tokens(&model.upstream_model, &value);
                if let Value::Object(map) = value {
                    request.body = map;
                }
                n
            };
            let completion = meter::completion_reservation(
                request.max_tokens,
                snapshot.config.ai.default_max_tokens,
            );
            let hold = admit(worker, snapshot, ctx, model, prompt_tokens, completion)?;
            let provider = snapshot.catalog.provider(model.provider);
            let (result, usage) = match provider.kind {
                ProviderKind::Mock => mock_chat(client, head, ctx, &request, model).await,
                ProviderKind::Openai => {
                    openai_chat(
                        worker, snapshot, client, head, ctx, &request, model, provider,
                    )
                    .await
                }
                _ => (
                    Err(GatewayError::Upstream("provider kind not available yet").into()),
                    None,
                ),
            };
            settle(worker, ctx, model, hold, usage, prompt_tokens);
            result
        }
        Endpoint::Embeddings => {
            let limits_cfg = &snapshot.limits;
            let body = exchange::read_request_body(
                client,
                head,
                limits_cfg.max_body_bytes,
                limits_cfg.idle_timeout,
            )
            .await?;
            ctx.body_done = true;
            let request = openai::parse_embeddings_request(&body)
                .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
            let model = pick_model(snapshot, ctx, &request.model)?;
            let input = request.body.get("input").unwrap_or(&Value::Null);
            let prompt_tokens = meter::estimate_embedding_tokens(&model.upstream_model, input);
            let hold = admit(worker, snapshot, ctx, model, prompt_tokens, 0)?;
            let provider = snapshot.catalog.provider(model.provider);
            let (result, usage) = match provider.kind {
                ProviderKind::Mock => {
                    let body = mock::embeddings_body(&model.name, input);
                    let usage = openai::usage_from_embeddings_response(&body);
                    let r = respond(client, head, ctx, 200, "application/json", &body).await;
                    (r, usage)
                }
                ProviderKind::Openai => {
                    let upstream_body =
                        openai::upstream_embeddings_body(&request, &model.upstream_model);
                    forward_whole(
                        worker,
                        snapshot,
                        client,
                        head,
                        ctx,
                        provider,
                        "/v1/embeddings",
                        upstream_body,
                        openai::usage_from_embeddings_response,
                    )
                    .await
                }
                _ => (
                    Err(GatewayError::Upstream("provider kind not available yet").into()),
                    None,
                ),
            };
            settle(worker, ctx, model, hold, usage, prompt_tokens);
            result
        }
    }
}

/// The requested model, if it exists and the caller's key may use it.
fn pick_model<'s>(
    snapshot: &'s Snapshot,
    ctx: &RequestCtx,
    name: &str,
) -> Result<&'s Model, GatewayError> {
    let (_, model) = snapshot
        .catalog
        .model(name)
        .ok_or_else(|| GatewayError::UnknownModel(name.to_string()))?;
    if let Some(key) = ctx.consumer.as_ref().and_then(|c| c.key.as_deref()) {
        if !auth::key_permits_model(key, &model.name) {
            return Err(GatewayError::Forbidden("model"));
        }
    }
    Ok(model)
}

fn prices(model: &Model) -> Prices {
    Prices {
        input_per_mtok: model.input_price_per_mtok,
        output_per_mtok: model.output_price_per_mtok,
        cached_input_per_mtok: model.cached_input_price_per_mtok,
    }
}

/// Phase limits for an AI request: request rates and concurrency, then tokens per minute and
/// budgets on the estimated prompt plus the completion reservation.
fn admit(
    worker: &Worker,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    model: &Model,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> Result<TokenHold, GatewayError> {
    let ask = TokenAsk {
        tokens: prompt_tokens + completion_tokens,
        nano_usd: cost_nano_usd(&prices(model), prompt_tokens, completion_tokens, 0),
    };
    let counts = limits::requests(worker, snapshot, None, ctx)?;
    limits::tokens(worker, snapshot, ctx, &ask).inspect_err(|_| {
        // A refused request consumes no quota: give back its request counts and its slot.
        counts.give_back(worker);
        ctx.permit = None;
    })
}

/// Settles the token limits and budgets against what the request really used, records it in
/// the ledger and keeps it for the access log. Without reported usage, a request that got no
/// answer costs nothing, and one cut short costs its estimated prompt.
fn settle(
    worker: &Worker,
    ctx: &mut RequestCtx,
    model: &Model,
    hold: TokenHold,
    usage: Option<Usage>,
    prompt_estimate: u64,
) {
    let usage = usage.unwrap_or(Usage {
        prompt_tokens: if (200..300).contains(&ctx.status) {
            prompt_estimate
        } else {
            0
        },
        ..Usage::default()
    });
    let cost = cost_nano_usd(
        &prices(model),
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
    );
    limits::settle_tokens(
        worker,
        hold,
        usage.prompt_tokens + usage.completion_tokens,
        cost,
    );
    let consumer = ctx.consumer.as_ref();
    worker.shared.usage.record(UsageEvent {
        ts_ms: crate::usage::unix_now_ms(),
        request_id: ctx.request_id.clone(),
        key_id: consumer.and_then(|c| c.id.clone()),
        team: consumer.map(|c| c.team.clone()).unwrap_or_default(),
        model: Some(model.name.clone()),
        prompt: None,
        route: None,
        status: ctx.status,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_tokens: usage.cached_tokens,
        cost_nano_usd: cost,
    });
    ctx.ai = Some(AiRecord {
        model: model.name.clone(),
        usage,
        cost_nano_usd: cost,
    });
}

/// Answers with a complete body made by the gateway.
async fn respond<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let close = !head.keep_alive();
    let mut out = Vec::with_capacity(body.len() + 256);
    let _ = write!(
        StrBuf(&mut out),
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        crate::error::reason_phrase(status),
        body.len()
    );
    finish_head(&mut out, ctx, close, head.version() == Version::Http10);
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

/// The end of every front-door response head: request id, limit headers, connection.
fn finish_head(out: &mut Vec<u8>, ctx: &RequestCtx, close: bool, http10: bool) {
    push_header(out, "x-request-id", ctx.request_id.as_bytes());
    ctx.rate.write_headers(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A streamed response toward the client: SSE, chunked (or until close for HTTP/1.0).
struct EventStream {
    chunked: bool,
}

impl EventStream {
    /// Writes the head of a `200 text/event-stream` response.
    async fn start<S>(
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
    ) -> Result<EventStream, Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let chunked = head.version() == Version::Http11;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n",
        );
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        finish_head(&mut out, ctx, !chunked || !head.keep_alive(), false);
        ctx.status = 200;
        let (res, _) = client.write_all(out).await;
        res.map_err(|_| Failure::Abort)?;
        Ok(EventStream { chunked })
    }

    /// Sends `data` (complete events) at once.
    async fn send<S>(&self, client: &mut BufConn<S>, data: &[u8]) -> Result<(), Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(data.len() + 16);
        if self.chunked {
            encode_chunk(data, &mut out);
        } else {
            out.extend_from_slice(data);
        }
        let (res, _) = client.write_all(out).await;
        res.map_err(|_| Failure::Abort)
    }

    /// Ends the stream.
    async fn end<S>(&self, client: &mut BufConn<S>, head: &RequestHead) -> Result<Outcome, Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        if !self.chunked {
            return Ok(Outcome::Close);
        }
        let mut out = Vec::with_capacity(8);
        encode_last_chunk(&mut out);
        let (res, _) = client.write_all(out).await;
        res.map_err(|_| Failure::Abort)?;
        Ok(if head.keep_alive() {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        })
    }
}

/// The in-process mock provider.
async fn mock_chat<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    request: &ChatRequest,
    model: &Model,
) -> (Result<Outcome, Failure>, Option<Usage>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let reply = mock::reply(&request.body);
    let usage = Some(reply.usage);
    let id = format!("chatcmpl-{}", ctx.request_id);
    let created = crate::usage::unix_now_ms() / 1000;
    if !request.stream {
        let body = mock::chat_completion_body(&model.name, &id, created, &reply);
        let r = respond(client, head, ctx, 200, "application/json", &body).await;
        return (r, usage);
    }
    let result = async {
        let stream = EventStream::start(client, head, ctx).await?;
        for event in mock::chat_completion_chunks(
            &model.name,
            &id,
            created,
            &reply,
            request.client_wants_usage,
        ) {
            stream.send(client, &event).await?;
        }
        stream.end(client, head).await
    }
    .await;
    (result, usage)
}

/// A chat completion through an OpenAI-format provider.
#[allow(clippy::too_many_arguments)]
async fn openai_chat<S>(
    worker: &Worker,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    request: &ChatRequest,
    model: &Model,
    provider: &Provider,
) -> (Result<Outcome, Failure>, Option<Usage>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let body = openai::upstream_chat_body(request, &model.upstream_model);
    if !request.stream {
        return forward_whole(
            worker,
            snapshot,
            client,
            head,
            ctx,
            provider,
            "/v1/chat/completions",
            body,
            openai::usage_from_chat_response,
        )
        .await;
    }
    let Some(upstream) = &provider.upstream else {
        return (
            Err(GatewayError::Upstream("provider has no address").into()),
            None,
        );
    };
    let limits = &snapshot.limits;
    let mut exchange = match exchange::send(worker, upstream, limits, |target| {
        provider_request(
            provider,
            &target.authority,
            "/v1/chat/completions",
            &body,
            ctx,
        )
    })
    .await
    {
        Ok(e) => e,
        Err(e) => return (Err(e.into()), None),
    };
    let status = exchange.response.status();
    let is_stream = exchange
        .response
        .header("content-type")
        .is_some_and(|v| v.starts_with(b"text/event-stream"));
    if status != 200 || !is_stream {
        // An error (or a provider that ignored `stream`): pass it on whole.
        return relay_whole(worker, upstream, exchange, client, head, ctx, |_| None).await;
    }
    let mut relay = openai::ChatStreamRelay::new(request.client_wants_usage);
    let result = async {
        let stream = EventStream::start(client, head, ctx).await?;
        let mut decoder = BodyDecoder::new(exchange.response.body("POST"));
        let mut parser = SseParser::new(MAX_SSE_EVENT);
        let mut piece = Vec::with_capacity(16 * 1024);
        let mut out = Vec::with_capacity(16 * 1024);
        loop {
            piece.clear();
            let more = decoder
                .next(&mut exchange.conn, &mut piece, limits.upstream_timeout)
                .await?;
            if !more {
                break;
            }
            parser.push(&piece).map_err(|_| Failure::Abort)?;
            out.clear();
            while let Some(event) = parser.next_event() {
                relay.on_event(&event, &mut out);
            }
            stream.send(client, &out).await?;
        }
        let rest = parser.finish();
        stream.send(client, &rest).await?;
        stream.end(client, head).await
    }
    .await;
    let usage = relay.usage();
    if result.is_ok() {
        exchange.finish(worker, upstream, true);
    }
    (result, usage)
}

/// Sends a request whose response is read whole, then relays it.
#[allow(clippy::too_many_arguments)]
async fn forward_whole<S>(
    worker: &Worker,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    provider: &Provider,
    path: &str,
    body: Vec<u8>,
    usage_of: fn(&[u8]) -> Option<Usage>,
) -> (Result<Outcome, Failure>, Option<Usage>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let Some(upstream) = &provider.upstream else {
        return (
            Err(GatewayError::Upstream("provider has no address").into()),
            None,
        );
    };
    let exchange = match exchange::send(worker, upstream, &snapshot.limits, |target| {
        provider_request(provider, &target.authority, path, &body, ctx)
    })
    .await
    {
        Ok(e) => e,
        Err(e) => return (Err(e.into()), None),
    };
    relay_whole(worker, upstream, exchange, client, head, ctx, usage_of).await
}

/// Reads the provider's whole response and answers the client with its status and body.
async fn relay_whole<S>(
    worker: &Worker,
    upstream: &crate::upstream::Upstream,
    mut exchange: Exchange,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    usage_of: fn(&[u8]) -> Option<Usage>,
) -> (Result<Outcome, Failure>, Option<Usage>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let silence = worker.shared.snapshot().limits.upstream_timeout;
    let body = match exchange::read_response_body(&mut exchange, "POST", MAX_PROVIDER_BODY, silence)
        .await
    {
        Ok(b) => b,
        Err(e) => return (Err(e.into()), None),
    };
    let status = exchange.response.status();
    let usage = if (200..300).contains(&status) {
        usage_of(&body)
    } else {
        None
    };
    let content_type = exchange
        .response
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("application/json")
        .to_string();
    exchange.finish(worker, upstream, true);
    let r = respond(client, head, ctx, status, &content_type, &body).await;
    (r, usage)
}

/// The request toward an OpenAI-format provider: its path under `base_url`, JSON body, and
/// the provider key as a bearer token (the client's credential never goes upstream).
fn provider_request(
    provider: &Provider,
    authority: &str,
    path: &str,
    body: &[u8],
    ctx: &RequestCtx,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 512);
    let _ = write!(
        StrBuf(&mut out),
        "POST {}{path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        provider.base_path,
        body.len()
    );
    if let Some(key) = &provider.api_key {
        let secret = key.current();
        out.extend_from_slice(b"authorization: Bearer ");
        out.extend_from_slice(secret.expose().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    push_header(&mut out, "x-request-id", ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

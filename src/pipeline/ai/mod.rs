//! The AI front doors' own phases, called from the one phase list in [`super`] after the
//! shared route, access and auth phases (a front door is a route whose settings are `[ai]`'s):
//!
//! route, front-door part (by path: `/v1/chat/completions`, `/v1/messages`, `/v1/embeddings`,
//! `/v1/responses`, `/v1/models`, `/v1/models/{id}`, `/v1/completions`,
//! `/v1/messages/count_tokens`, `/prompts/{name}[/v{N}]`: [`route`]) → prompt (read and parse
//! the body into
//! the canonical OpenAI chat form, `on_prompt`, pick the model, estimate: [`prompt_phase`]) →
//! limits (request rates, concurrency, then tokens per minute and budgets on the request's
//! estimated tokens: [`limits_phase`]) → upstream (the model's provider, with retries and
//! fallbacks: [`call`]) → response (translated, streamed event by event: [`stream`]) → settle
//! (token limits and budgets corrected to the reported usage; usage to the ledger and the
//! access log: [`settle_phase`]). `/v1/models` ([`models`]), `/v1/models/{id}`
//! ([`model_info`]), `/v1/embeddings` ([`embeddings`]), `/v1/completions` ([`completions`])
//! and `/v1/messages/count_tokens` ([`count_tokens`]) have their own phases after auth.

mod call;
mod completions;
mod count_tokens;
mod model_info;
mod relay;
mod reply;
mod responses;
mod stream;

pub(super) use completions::completions;
pub(super) use count_tokens::count_tokens;
pub(super) use model_info::retrieve as model;

use std::fmt::Write as _;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde_json::Value;

use super::limits::{self, TokenAsk};
use super::{exchange, hooks};
use super::{Failure, Outcome, RequestCtx};
use crate::accesslog::AttemptLog;
use crate::ai::providers::anthropic;
use crate::ai::tokens;
use crate::ai::{openai, prompt, Model, Provider, Usage};
use crate::auth;
use crate::error::{Dialect, GatewayError};
use crate::http1::BufConn;
use crate::http1::{encode_chunk, encode_last_chunk, push_header, RequestHead, StrBuf, Version};
use crate::limits::{
    charged_usage, completion_reservation, cost_nano_usd, Metered, Prices, TokenHold,
};
use crate::pipeline::ThreadState;
use crate::snapshot::Snapshot;
use crate::store::usage::UsageEvent;

/// Which front door a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    ChatCompletions,
    Messages,
    Embeddings,
    Models,
    /// `GET /v1/models/{id}`.
    Model,
    /// `POST /v1/completions` (legacy).
    Completions,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    Prompt,
    Responses,
}

impl Endpoint {
    /// The front door at `path`, if any.
    pub fn at(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
            "/v1/messages" => Some(Endpoint::Messages),
            "/v1/embeddings" => Some(Endpoint::Embeddings),
            "/v1/models" => Some(Endpoint::Models),
            "/v1/responses" => Some(Endpoint::Responses),
            "/v1/completions" => Some(Endpoint::Completions),
            "/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
            p if p.starts_with(model_info::PREFIX) => Some(Endpoint::Model),
            p if p.starts_with("/prompts/") => Some(Endpoint::Prompt),
            _ => None,
        }
    }

    /// The `route` label of the door's requests in `credentialflow_requests_total` and
    /// `credentialflow_request_duration_seconds`: its path, with `{name}` standing for the
    /// prompt's name and `{id}` for the model's so that callers cannot make new series.
    pub fn route_label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Models => "/v1/models",
            Endpoint::Model => "/v1/models/{id}",
            Endpoint::Completions => "/v1/completions",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Prompt => "/prompts/{name}",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Endpoint::Models | Endpoint::Model => "GET",
            _ => "POST",
        }
    }
}

/// The access-log record of one attempt of `model` on `provider`.
fn attempt_log(model: &Model, provider: &Provider, outcome: &str) -> AttemptLog {
    AttemptLog {
        model: model.name.clone(),
        provider: provider.name.clone(),
        outcome: outcome.to_string(),
    }
}

/// What an AI request used, for the access log.
#[derive(Debug, Clone, Default)]
pub struct AiRecord {
    /// The client-facing model that served the request.
    pub model: String,
    /// The prompt endpoint called, if any.
    pub prompt: Option<String>,
    /// Reported (or, when the provider reported nothing, estimated) usage.
    pub usage: Usage,
    /// Cost in nano-USD.
    pub cost_nano_usd: u64,
}

/// Phase route, front-door part: the dialect its errors are written in, and the method it
/// takes (before the access phase, as for a route nothing about the caller is known yet).
pub(super) fn route(
    endpoint: Endpoint,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    if matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens) {
        ctx.dialect = Dialect::Anthropic;
    }
    if head.method() != endpoint.method() {
        return Err(GatewayError::InvalidRequest(format!(
            "{} needs method {}",
            head.path(),
            endpoint.method()
        )));
    }
    Ok(())
}

/// `GET /v1/models`: the catalog's models the caller's key may use.
pub(super) async fn models<S>(
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let key = ctx.consumer.as_ref().and_then(|c| c.key.as_deref());
    let names: Vec<&str> = snapshot
        .catalog
        .models()
        .iter()
        .map(|m| m.name.as_str())
        .filter(|name| key.is_none_or(|k| auth::key_permits_model(k, name)))
        .collect();
    let body = openai::models_list_body(&names, crate::clock::unix_now_ms() / 1000);
    respond(client, head, ctx, 200, "application/json", &body).await
}

/// Reads the whole request body, bounded by `[limits] max_body_bytes`.
pub(super) async fn read_body<S>(
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Vec<u8>, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let bounds = &snapshot.limits;
    let body =
        exchange::read_request_body(client, head, bounds.max_body_bytes, bounds.idle_timeout)
            .await?;
    ctx.body_done = true;
    Ok(body)
}

/// A chat-like request after the prompt phase: what is to be sent, to which model, and what
/// it reserves.
pub(super) struct Prompt<'s> {
    call: call::Call,
    model: &'s Model,
    /// The `[[prompt]]` called, if any.
    name: Option<String>,
    /// How the answer is rewritten for `POST /v1/responses`.
    responses: Option<responses::ResponsesDoor>,
    reserved: Reserved,
}

/// Phase prompt: the body parsed into the canonical chat form, what `on_prompt` returns in
/// its place, the model (which the caller's key must be allowed), and the tokens to reserve:
/// the estimated prompt plus the completion reservation.
pub(super) fn prompt_phase<'s>(
    worker: &ThreadState,
    snapshot: &'s Snapshot,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<Prompt<'s>, GatewayError> {
    let (mut call, name, mut responses) = parse_call(snapshot, head, endpoint, body)?;
    if let Some(door) = responses.as_mut() {
        // The hook sees (and edits) the Responses request as a chat: only the translated
        // request carries its edits, so it is translated for every provider.
        if hooks::wants_prompt(snapshot, ctx) {
            door.translate_only();
        }
    }
    // What `on_prompt` returns is what is forwarded. The body is moved into a JSON value
    // for the hook and back, never copied.
    let chat = Value::Object(std::mem::take(&mut call.request.body));
    let changed = hooks::prompt(worker, snapshot, ctx, &chat);
    if let Value::Object(body) = chat {
        call.request.body = body;
    }
    if let Some(changed) = changed? {
        let bytes = serde_json::to_vec(&changed).expect("JSON values serialize");
        call.request = openai::parse_chat_request(&bytes).map_err(|e| {
            GatewayError::InvalidRequest(format!("on_prompt returned an invalid chat: {e}"))
        })?;
        // The client's Anthropic body no longer says what is to be sent.
        call.anthropic_body = None;
    }
    let model = pick_model(snapshot, ctx, &call.request.model)?;
    // Only a tokens-per-minute limit or a budget needs the prompt's size before it is sent;
    // otherwise nothing is reserved and settlement charges the provider's reported usage (the
    // estimate is made then, only if the provider reported none).
    let prompt_tokens = if limits::TokenLimits::of_request(snapshot, ctx).is_empty() {
        None
    } else {
        Some(estimate_prompt(&mut call, model))
    };
    let completion_tokens = completion_reservation(
        call.request.max_tokens,
        snapshot.config.ai.default_max_tokens,
    );
    Ok(Prompt {
        call,
        model,
        name,
        responses,
        reserved: Reserved {
            prompt_tokens,
            completion_tokens,
        },
    })
}

/// The estimated prompt tokens of `call` for `model`: of the client's Anthropic body when it
/// is still what is sent, else of the canonical chat. Counted over the body moved into a JSON
/// value and back, not a copy of it.
fn estimate_prompt(call: &mut call::Call, model: &Model) -> u64 {
    match call.anthropic_body.take() {
        Some(original) => {
            let value = Value::Object(original);
            let n = tokens::estimate_anthropic_prompt_tokens(&model.upstream_model, &value);
            if let Value::Object(original) = value {
                call.anthropic_body = Some(original);
            }
            n
        }
        None => {
            let value = Value::Object(std::mem::take(&mut call.request.body));
            let n = tokens::estimate_chat_prompt_tokens(&model.upstream_model, &value);
            if let Value::Object(body) = value {
                call.request.body = body;
            }
            n
        }
    }
}

/// Phase limits for a chat-like request: see [`admit`].
pub(super) fn limits_phase(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    prompt: &Prompt,
) -> Result<TokenHold, GatewayError> {
    let reserved = prompt.reserved;
    admit(
        worker,
        snapshot,
        ctx,
        prompt.model,
        reserved.prompt_tokens.unwrap_or(0),
        reserved.completion_tokens,
    )
}

/// What the upstream phase produced, for the settle phase.
pub(super) struct Answered<'s>(call::Served<'s>);

/// Phases upstream and response: the model's provider, with retries and fallbacks
/// ([`call::run`]), its answer translated and streamed back.
pub(super) async fn upstream_phase<'s, S>(
    worker: &ThreadState,
    snapshot: &'s Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    prompt: &Prompt<'s>,
) -> Answered<'s>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    Answered(
        call::run(
            worker,
            snapshot,
            client,
            head,
            ctx,
            &prompt.call,
            prompt.model,
            prompt.responses.as_ref(),
        )
        .await,
    )
}

/// Phase settle: token limits, budgets and the ledger corrected to what the model that
/// answered reported (see [`settle_metered`]); returns how the response went.
pub(super) fn settle_phase(
    worker: &ThreadState,
    ctx: &mut RequestCtx,
    prompt: Prompt,
    hold: TokenHold,
    answered: Answered,
) -> Result<Outcome, Failure> {
    let served = answered.0;
    let Prompt {
        mut call,
        model,
        name,
        reserved,
        ..
    } = prompt;
    settle_metered(
        worker,
        ctx,
        served.model,
        hold,
        served.metered,
        reserved,
        || estimate_prompt(&mut call, model),
        name,
    );
    served.result
}

/// The body of a chat-like request in canonical form: an OpenAI chat request as it is, an
/// Anthropic Messages request translated (and kept for Anthropic providers), a prompt call
/// rendered from its template, a Responses request rewritten (with how to rewrite its
/// answer).
#[allow(clippy::type_complexity)]
fn parse_call(
    snapshot: &Snapshot,
    head: &RequestHead,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<(call::Call, Option<String>, Option<responses::ResponsesDoor>), GatewayError> {
    let invalid = |e: openai::RequestError| GatewayError::InvalidRequest(e.to_string());
    Ok(match endpoint {
        Endpoint::Messages => {
            let messages = anthropic::parse_messages_request(body).map_err(invalid)?;
            let canonical = anthropic::request_to_openai(&messages).map_err(invalid)?;
            let bytes = serde_json::to_vec(&canonical).expect("JSON maps serialize");
            let request = openai::parse_chat_request(&bytes).map_err(invalid)?;
            let call = call::Call {
                front: Dialect::Anthropic,
                request,
                anthropic_body: Some(messages.body),
            };
            (call, None, None)
        }
        Endpoint::Responses => {
            let (call, door) = responses::parse(body)?;
            (call, None, Some(door))
        }
        Endpoint::Prompt => {
            let (name, version) = prompt::parse_path(head.path())
                .ok_or_else(|| GatewayError::UnknownPrompt(head.path().to_string()))?;
            let config = snapshot
                .prompts
                .get(name, version)
                .ok_or_else(|| GatewayError::UnknownPrompt(name.to_string()))?;
            let variables: Value = serde_json::from_slice(body).map_err(|e| {
                GatewayError::InvalidRequest(format!("the request body is not valid JSON: {e}"))
            })?;
            let stream = head
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "stream=true"));
            let canonical = prompt::render(config, &variables, stream)
                .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
            let bytes = serde_json::to_vec(&canonical).expect("JSON maps serialize");
            let request = openai::parse_chat_request(&bytes).map_err(invalid)?;
            let call = call::Call {
                front: Dialect::OpenAi,
                request,
                anthropic_body: None,
            };
            (call, Some(config.name.clone()), None)
        }
        _ => {
            let request = openai::parse_chat_request(body).map_err(invalid)?;
            let call = call::Call {
                front: Dialect::OpenAi,
                request,
                anthropic_body: None,
            };
            (call, None, None)
        }
    })
}

/// `POST /v1/embeddings`, after auth: its own prompt (parse, model, estimate), limits,
/// upstream and settle phases. One model (retried by the caller's client, not here), any
/// provider that has embeddings; no `on_prompt` (there is no chat to show it).
pub(super) async fn embeddings<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let request = openai::parse_embeddings_request(body)
        .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
    let model = pick_model(snapshot, ctx, &request.model)?;
    let input = request.body.get("input").unwrap_or(&Value::Null);
    let prompt_tokens = tokens::estimate_embedding_tokens(&model.upstream_model, input);
    let hold = admit(worker, snapshot, ctx, model, prompt_tokens, 0)?;
    let provider = snapshot.catalog.provider(model.provider);
    let local = provider.api.local_embeddings(&model.name, input);
    let (result, usage) = match local {
        Some((body, usage)) => {
            let r = respond(client, head, ctx, 200, "application/json", &body).await;
            (r, usage)
        }
        None => match provider
            .api
            .embeddings_request(&request, &provider.target(&model.upstream_model))
        {
            None => (
                Err(GatewayError::InvalidRequest(format!(
                    "the model `{}` has no embeddings",
                    model.name
                ))
                .into()),
                None,
            ),
            Some(Err(e)) => (
                Err(GatewayError::InvalidRequest(e.to_string()).into()),
                None,
            ),
            Some(Ok((path, body))) => {
                embeddings_upstream(
                    worker, snapshot, client, head, ctx, provider, model, &request, path, body,
                )
                .await
            }
        },
    };
    settle(worker, ctx, model, hold, usage, prompt_tokens, None);
    result
}

#[allow(clippy::too_many_arguments)]
async fn embeddings_upstream<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    provider: &Provider,
    model: &Model,
    request: &openai::EmbeddingsRequest,
    path: String,
    body: Vec<u8>,
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
    if let Err(e) = call::token_in_force(provider) {
        return (Err(e.into()), None);
    }
    let sent = exchange::send(worker, upstream, &snapshot.limits, |target| {
        call::provider_request(provider, &target.authority, &path, &body, &ctx.request_id)
    })
    .await;
    let mut exchange = match sent {
        Ok(e) => e,
        Err(e) => return (Err(e.into()), None),
    };
    ctx.upstream_began(&exchange);
    let status = exchange.response.status();
    if !(200..300).contains(&status) {
        // Mapped like a chat call's: a provider 401/403 is the gateway's 502, never passed on.
        let error =
            call::read_provider_error(worker, upstream, provider, exchange, &snapshot.limits).await;
        ctx.upstream_ended();
        let r = call::answer_provider_error(client, head, ctx, Dialect::OpenAi, &error).await;
        return (r, None);
    }
    let body = match exchange::read_response_body(
        &mut exchange,
        "POST",
        64 * 1024 * 1024,
        snapshot.limits.upstream_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return (Err(e.into()), None),
    };
    ctx.upstream_ended();
    exchange.finish(worker, upstream, true);
    let (body, usage) = match provider.api.embeddings_response(body, &model.name, request) {
        Ok(translated) => translated,
        Err(_) => {
            return (
                Err(GatewayError::Upstream("untranslatable provider response").into()),
                None,
            )
        }
    };
    let r = respond(client, head, ctx, status, "application/json", &body).await;
    (r, usage)
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
/// budgets on the estimated prompt plus the completion reservation, priced at the model's
/// prices.
fn admit(
    worker: &ThreadState,
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
    limits::ai_request(worker, snapshot, ctx, &ask)
}

/// Settles a whole answer (or none) with the provider's reported `usage`, if any: see
/// [`settle_metered`].
fn settle(
    worker: &ThreadState,
    ctx: &mut RequestCtx,
    model: &Model,
    hold: TokenHold,
    usage: Option<Usage>,
    prompt_estimate: u64,
    prompt: Option<String>,
) {
    let reserved = Reserved {
        prompt_tokens: Some(prompt_estimate),
        completion_tokens: 0,
    };
    let metered = Metered::whole(usage);
    settle_metered(worker, ctx, model, hold, metered, reserved, || 0, prompt);
}

/// What a request was admitted with: its estimated prompt and its completion reservation.
#[derive(Debug, Clone, Copy)]
struct Reserved {
    /// `None` when nothing needed the estimate at admission (no tokens-per-minute limit and
    /// no budget applied): settlement makes it only if the provider reports no usage.
    prompt_tokens: Option<u64>,
    completion_tokens: u64,
}

/// Settles the token limits and budgets against what the request really used, records it in
/// the ledger and keeps it for the access log. The charge is [`charged_usage`]'s: reported
/// usage when the answer was complete; without it, a request that got no answer costs
/// nothing and a complete one its estimated prompt and relayed completion; a stream cut
/// short (by the provider, or a client that left before the drain could finish it) costs at
/// least its completion reservation. `estimate_prompt` makes the prompt estimate when it was
/// not made at admission and the charge needs it.
#[allow(clippy::too_many_arguments)]
fn settle_metered(
    worker: &ThreadState,
    ctx: &mut RequestCtx,
    model: &Model,
    hold: TokenHold,
    metered: Metered,
    reserved: Reserved,
    estimate_prompt: impl FnOnce() -> u64,
    prompt: Option<String>,
) {
    let answered = (200..300).contains(&ctx.status);
    let usage = charged_usage(
        metered,
        answered,
        || reserved.prompt_tokens.unwrap_or_else(estimate_prompt),
        reserved.completion_tokens,
    );
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
        ts_ms: crate::clock::unix_now_ms(),
        request_id: ctx.request_id.clone(),
        key_id: consumer.and_then(|c| c.id.clone()),
        team: consumer.map(|c| c.team.clone()).unwrap_or_default(),
        model: Some(model.name.clone()),
        prompt: prompt.clone(),
        route: None,
        status: ctx.status,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_tokens: usage.cached_tokens,
        cost_nano_usd: cost,
    });
    count_settled(worker, ctx, model, usage, cost);
    ctx.ai = Some(AiRecord {
        model: model.name.clone(),
        prompt,
        usage,
        cost_nano_usd: cost,
    });
}

/// Counts a settled request in the AI metrics, with what the ledger got: the request by the
/// model that served it, its tokens and cost, its time to first token and its attempts.
fn count_settled(
    worker: &ThreadState,
    ctx: &RequestCtx,
    model: &Model,
    usage: Usage,
    cost_nano_usd: u64,
) {
    let consumer = ctx.consumer.as_ref();
    let answered = (200..300).contains(&ctx.status);
    let settled = crate::metrics::Settled {
        model: &model.name,
        team: consumer.map_or("", |c| c.team.as_str()),
        key: consumer.and_then(|c| c.id.as_deref()),
        status: ctx.status,
        usage,
        cost_nano_usd,
        first_byte: ctx
            .first_byte
            .filter(|_| answered)
            .map(|at| at.saturating_duration_since(ctx.started)),
        attempts: &ctx.attempts,
    };
    let snapshot = worker.snapshot();
    crate::metrics::global()
        .ai()
        .settled(worker.id, &snapshot.ai_series, &settled);
}

/// Notes that the first bytes of an answer's content, `data`, are going to the client (for
/// the time to first token).
fn note_first_byte(ctx: &mut RequestCtx, data: &[u8]) {
    if !data.is_empty() && ctx.first_byte.is_none() {
        ctx.first_byte = Some(std::time::Instant::now());
    }
}

/// Answers with a complete body made by the gateway.
pub(super) async fn respond<S>(
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
    let content_type =
        |out: &mut Vec<u8>| push_header(out, "content-type", content_type.as_bytes());
    send_whole(client, head, ctx, status, content_type, body).await
}

/// Writes a whole response in one write: status line, length, the header lines `headers`
/// writes, the gateway's own headers, then `body`.
pub(super) async fn send_whole<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    status: u16,
    headers: impl FnOnce(&mut Vec<u8>),
    body: &[u8],
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let close = !head.keep_alive();
    let mut out = Vec::with_capacity(body.len() + 256);
    let _ = write!(
        StrBuf(&mut out),
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
        crate::error::reason_phrase(status),
        body.len()
    );
    headers(&mut out);
    finish_head(&mut out, ctx, close, head.version() == Version::Http10);
    out.extend_from_slice(body);
    ctx.status = status;
    if (200..300).contains(&status) {
        note_first_byte(ctx, body);
    }
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
    // Which model answered (after retries and fallbacks, the last one tried).
    if let Some(attempt) = ctx.attempts.last() {
        push_header(out, "x-credentialflow-model", attempt.model.as_bytes());
    }
    ctx.rate.write_headers(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A streamed response toward the client: SSE, chunked (or until close for HTTP/1.0).
pub(super) struct EventStream {
    chunked: bool,
}

impl EventStream {
    /// Writes the head of a `200 text/event-stream` response (after `on_response`, which
    /// may change its status and headers).
    pub(super) async fn start<S>(
        worker: &ThreadState,
        snapshot: &Snapshot,
        client: &mut BufConn<S>,
        head: &RequestHead,
        ctx: &mut RequestCtx,
    ) -> Result<EventStream, Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        let edited = reply::stream_head(worker, snapshot, ctx)?;
        let chunked = head.version() == Version::Http11;
        let mut out = Vec::with_capacity(256);
        match &edited {
            None => out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n",
            ),
            Some(info) => {
                let reason = crate::error::reason_phrase(info.status);
                let _ = write!(StrBuf(&mut out), "HTTP/1.1 {} {reason}\r\n", info.status);
                reply::push_edited_headers(&mut out, info);
            }
        }
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        finish_head(&mut out, ctx, !chunked || !head.keep_alive(), false);
        ctx.status = edited.map_or(200, |info| info.status);
        let (res, _) = client.write_all(out).await;
        res.map_err(|_| Failure::Abort)?;
        Ok(EventStream { chunked })
    }

    /// Sends `data` (complete events) at once.
    pub(super) async fn send<S>(&self, client: &mut BufConn<S>, data: &[u8]) -> Result<(), Failure>
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
    /// Sends the last events, `data`, and ends the stream, in one write.
    pub(super) async fn end<S>(
        &self,
        client: &mut BufConn<S>,
        head: &RequestHead,
        data: &[u8],
    ) -> Result<Outcome, Failure>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        if !self.chunked {
            self.send(client, data).await?;
            return Ok(Outcome::Close);
        }
        let mut out = Vec::with_capacity(data.len() + 16);
        if !data.is_empty() {
            encode_chunk(data, &mut out);
        }
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
